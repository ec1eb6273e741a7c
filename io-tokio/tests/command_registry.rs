//! `aliot product ...` and `aliot device ...` against a running `aliot serve` (the demo, in
//! memory): a product made, a device added, listed, shown (as a table and as JSON), disabled,
//! enabled, reset and deleted; a failure exits 1 with the API's code.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

/// `aliot serve` (the demo) on free ports; its API's URL.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve() -> (Served, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aliot"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--api-bind",
            "127.0.0.1:0",
            "--amqp-bind",
            "127.0.0.1:0",
            "--in-memory",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aliot");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut api = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("aliot's stdout");
        if let Some(url) = line.strip_prefix("aliot: HTTP API on ") {
            api = Some(url.to_owned());
        }
        if line.starts_with("aliot: running") {
            break;
        }
    }
    (Served(child), api.expect("the API's address"))
}

fn aliot(api: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aliot"))
        .args(args)
        .env("ALIOT_API", api)
        .output()
        .expect("run aliot")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

/// The value of a `key: value` line.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_owned()
}

#[test]
fn products_and_devices_are_managed_from_the_command_line() {
    let (_served, api) = serve();
    let made = stdout(&aliot(
        &api,
        &["product", "create", "lamp", "--description", "a lamp"],
    ));
    let pk = field(&made, "ProductKey");
    assert_eq!(field(&made, "ProductName"), "lamp");

    let added = stdout(&aliot(&api, &["device", "add", &pk, "lamp-01"]));
    assert_eq!(field(&added, "DeviceName"), "lamp-01");
    assert_eq!(field(&added, "DeviceSecret").len(), 32);

    let list = stdout(&aliot(&api, &["device", "list", &pk]));
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("DEVICE NAME"), "{list}");
    assert!(
        lines[1].starts_with("lamp-01") && lines[1].contains("UNACTIVE"),
        "{list}"
    );

    let products = stdout(&aliot(&api, &["product", "list"]));
    assert!(
        products.contains(&pk) && products.contains("a1DemoProd01"),
        "{products}"
    );

    stdout(&aliot(&api, &["device", "disable", &pk, "lamp-01"]));
    let shown = stdout(&aliot(&api, &["device", "show", &pk, "lamp-01", "--json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown["Data"]["Status"], "DISABLE", "{shown}");
    stdout(&aliot(&api, &["device", "enable", &pk, "lamp-01"]));
    stdout(&aliot(&api, &["device", "reset", &pk, "lamp-01"]));
    let shown = stdout(&aliot(&api, &["device", "show", &pk, "lamp-01"]));
    assert_eq!(field(&shown, "Status"), "UNACTIVE");

    let refused = aliot(&api, &["product", "delete", &pk]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ProductHasDevices"),
        "{refused:?}"
    );
    stdout(&aliot(&api, &["device", "delete", &pk, "lamp-01"]));
    stdout(&aliot(&api, &["product", "delete", &pk]));
    let gone = aliot(&api, &["device", "show", &pk, "lamp-01"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("DeviceNotFound"),
        "{gone:?}"
    );
}
