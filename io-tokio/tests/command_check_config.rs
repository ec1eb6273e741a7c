//! `aliot check-config FILE`: exit 0 with a summary, or 2 with the file, line and problem.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aliot"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run aliot")
}

/// Writes `text` to a file of its own and gives its path.
fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("command_check_config");
    std::fs::create_dir_all(&dir).expect("create the test folder");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the configuration");
    path
}

#[test]
fn a_good_file_exits_0_with_a_summary() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/aliot.toml");
    let output = check_config(&example);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        stdout.starts_with(&format!("{}: OK\n", example.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("MQTT listener 127.0.0.1:1883 (TCP)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("MQTT listener 127.0.0.1:8083 (WebSocket at /mqtt, no TLS)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("HTTP API 127.0.0.1:8080 (no token)"),
        "{stdout}"
    );
    assert!(stdout.contains("open mode off"), "{stdout}");
    assert!(
        stdout.contains("product a1ExamplePK1: 2 device(s), 3 custom categories"),
        "{stdout}"
    );
}

#[test]
fn the_demo_file_checks_too() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../io-common/src/demo.toml");
    let output = check_config(&demo);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        stdout.contains("product a1DemoProd01: 3 device(s), 2 custom categories"),
        "{stdout}"
    );
}

#[test]
fn a_bad_file_exits_2_naming_the_line() {
    let path = write_config(
        "bad-permission.toml",
        r#"[[listener]]
bind = "127.0.0.1:1883"

[[product]]
key = "a1TestPK001"
categories = [
  { topic = "/${productKey}/${deviceName}/user/get", permission = "read" },
]
"#,
    );
    let output = check_config(&path);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.contains(&format!("{}, line 7, column ", path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown topic permission \"read\""),
        "{stderr}"
    );
}

#[test]
fn an_unknown_key_exits_2_naming_the_line() {
    let path = write_config(
        "unknown-key.toml",
        "[[listener]]\nbind = \"127.0.0.1:1883\"\n\n[limits]\nmax_packet_bytes = 1000\n",
    );
    let output = check_config(&path);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(stderr.contains("line 5, column 1"), "{stderr}");
    assert!(
        stderr.contains("unknown field `max_packet_bytes`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_exits_2() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("there-is-no-such-config.toml");
    let output = check_config(&path);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.contains("cannot read the configuration file"),
        "{stderr}"
    );
    assert!(stderr.contains("there-is-no-such-config.toml"), "{stderr}");
}
