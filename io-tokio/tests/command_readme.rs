//! README.md stays true: its demo command lines are the ones `aliot serve` prints, and its
//! `aliot sign` and `aliot check-config` examples print what it shows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use aliot_tokio::demo::{DEMO_DEVICES, demo_config, instructions};

mod shell;
use shell::shell_words;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("io-tokio is in the repository")
        .to_owned()
}

/// The fenced code blocks of README.md: their language and lines.
fn readme_blocks() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    // The open block: its language, its lines, and the indentation of its fence (a block in
    // a list item is indented; its lines lose that much).
    let mut current: Option<(String, Vec<String>, usize)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(language) = trimmed.strip_prefix("```") {
            match current.take() {
                Some((language, lines, _)) => blocks.push((language, lines)),
                None => current = Some((language.to_owned(), Vec::new(), indent)),
            }
        } else if let Some((_, lines, fence_indent)) = current.as_mut() {
            let cut = indent.min(*fence_indent);
            lines.push(line.get(cut..).unwrap_or_default().to_owned());
        }
    }
    assert!(current.is_none(), "README.md has an unclosed code block");
    blocks
}

/// What the demo prints at its default addresses.
fn demo_output() -> Vec<String> {
    let config = demo_config(None, None, None).expect("the demo is valid");
    let mqtt: SocketAddr = "127.0.0.1:1883".parse().unwrap();
    let api: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    instructions(&config, mqtt, Some(api))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The MQTT and API ports of the cluster example's nodes (io-tokio/examples/cluster/), each
/// with the demo's own: the README's cluster section runs the demo's commands on them.
fn cluster_example_ports() -> Vec<(String, String)> {
    let dir = repo_root().join("io-tokio/examples/cluster");
    let mut ports = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let text = std::fs::read_to_string(dir.join(format!("{node}.toml"))).expect("a node file");
        let binds: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("bind = \"127.0.0.1:"))
            .filter_map(|rest| rest.strip_suffix('"'))
            .collect();
        assert_eq!(binds.len(), 2, "{node}: an MQTT and an API bind");
        ports.push((format!("-p {} ", binds[0]), "-p 1883 ".to_owned()));
        ports.push((
            format!("http://127.0.0.1:{}/", binds[1]),
            "http://127.0.0.1:8080/".to_owned(),
        ));
    }
    ports
}

#[test]
fn the_readme_demo_commands_are_the_printed_ones() {
    let printed = demo_output();
    let cluster_ports = cluster_example_ports();
    let mut checked = 0;
    for (language, lines) in readme_blocks() {
        if language != "sh" && language != "console" {
            continue;
        }
        for line in lines {
            let command = line.strip_prefix("$ ").unwrap_or(&line);
            if command.starts_with("mosquitto_") || command.starts_with("curl ") {
                // On a node of the cluster example: the demo's command on the demo's ports.
                let mut command = command.to_owned();
                for (node, demo) in &cluster_ports {
                    command = command.replace(node.as_str(), demo);
                }
                assert!(
                    printed.contains(&command),
                    "README.md has a command the demo does not print:\n{command}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 7,
        "the README's session: sub, pub, broadcast pair, report, RRPC pair ({checked})"
    );
}

#[test]
fn the_readme_demo_excerpt_is_printed() {
    let printed = demo_output();
    let (_, lines) = readme_blocks()
        .into_iter()
        .find(|(_, lines)| {
            lines
                .first()
                .is_some_and(|line| line.ends_with("aliot -- serve"))
        })
        .expect("the README shows `aliot serve`");
    for line in lines.iter().filter(|line| line.starts_with('#')) {
        assert!(
            printed.contains(line),
            "README.md shows a line the demo does not print: {line}"
        );
    }
}

#[test]
fn the_readme_demo_secrets_are_the_demos() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    for (name, secret) in DEMO_DEVICES {
        assert!(
            readme.contains(&format!("| `{name}` | `{secret}` |")),
            "README.md documents {name}'s secret"
        );
    }
}

#[test]
fn the_readme_aliot_examples_print_what_it_shows() {
    let mut checked = 0;
    for (language, lines) in readme_blocks() {
        if language != "console" {
            continue;
        }
        let Some(first) = lines.first() else { continue };
        let Some(args) = first.strip_prefix("$ cargo run --release --bin aliot -- ") else {
            continue;
        };
        let args = shell_words(args);
        if args.first().is_some_and(|command| command == "serve") {
            continue; // runs until stopped; its lines are checked above
        }
        let output = Command::new(env!("CARGO_BIN_EXE_aliot"))
            .args(&args)
            .current_dir(repo_root())
            .output()
            .expect("run aliot");
        assert!(output.status.success(), "{args:?}: {output:?}");
        let stdout = String::from_utf8(output.stdout).expect("UTF-8");
        let shown: Vec<&str> = lines[1..].iter().map(String::as_str).collect();
        let printed: Vec<&str> = stdout.lines().collect();
        assert_eq!(printed, shown, "README.md's output of aliot {args:?}");
        checked += 1;
    }
    assert_eq!(
        checked, 3,
        "the sign and check-config examples, and the cluster node's check-config"
    );
}
