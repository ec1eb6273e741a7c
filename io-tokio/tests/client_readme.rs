//! The README's device client example is the example that builds: `io-tokio/examples/device.rs`.

use std::path::Path;

#[test]
fn the_readme_device_example_is_examples_device_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).expect("README.md");
    let example = std::fs::read_to_string(root.join("examples/device.rs")).expect("device.rs");

    let section = readme
        .split("\n## Device client\n")
        .nth(1)
        .expect("README.md has a Device client section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section shows the example in a rust block");

    let code: Vec<&str> = example
        .lines()
        .filter(|line| !line.starts_with("//!"))
        .collect();
    assert_eq!(block.lines().collect::<Vec<_>>(), code);
}
