//! `aliot serve`: from a file and as the built-in demo, it starts, admits devices with signed
//! credentials, and stops with exit 0 on SIGTERM; bad files and busy addresses are refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use aliot_auth::{
    ConnectFields, DeviceIdentity, DeviceSecret, MemoryRegistry, SecureMode, SignMethod,
    VerifyOptions, sign, verify,
};
use aliot_core::codec::{
    ConnAck, Connect, ConnectReturnCode, Decoder, Packet, ProtocolVersion, Utf8Bytes,
};
use aliot_topic::ProductCategories;
use bytes::{Bytes, BytesMut};

mod shell;
use shell::shell_words;

/// How long anything the tests wait for may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// The demo's product and secrets, as README.md documents them.
const DEMO_PRODUCT_KEY: &str = "a1DemoProd01";
const DEMO_SECRETS: [(&str, &str); 3] = [
    ("dev-001", "DemoSecret0001aliotNotForProduct"),
    ("dev-002", "DemoSecret0002aliotNotForProduct"),
    ("dev-003", "DemoSecret0003aliotNotForProduct"),
];

/// A running `aliot serve`, its stdout read line by line; killed if a test fails midway.
struct Served {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aliot"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aliot");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        Served {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Reads stdout up to the first line starting with `prefix`, and gives that line.
    fn line_starting_with(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line {prefix:?} on stdout; so far: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let stderr = self.stderr_text();
                    panic!(
                        "aliot ended before printing {prefix:?}; stdout: {:#?}; stderr: {stderr}",
                        self.seen
                    )
                }
            }
        }
    }

    /// The address of the first `aliot: listening for MQTT on ADDR (…)` line.
    fn mqtt_addr(&mut self) -> (SocketAddr, String) {
        let line = self.line_starting_with("aliot: listening for MQTT on ");
        let rest = line
            .strip_prefix("aliot: listening for MQTT on ")
            .unwrap_or_default();
        let (addr, transport) = rest.split_once(' ').expect("ADDR (TRANSPORT)");
        (
            addr.parse().expect("a socket address"),
            transport.to_owned(),
        )
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(self) -> (ExitStatus, String) {
        self.signal("TERM")
    }

    /// Sends a signal (`TERM`, `INT`) with `kill` and waits for the exit.
    fn signal(mut self, name: &str) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -{name} {pid}");
        let status = self.wait();
        (status, self.stderr_text())
    }

    /// Waits for the process to end by itself.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "aliot did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connects over MQTT 3.1.1 with these credentials and gives the CONNACK code.
fn mqtt_connect(
    addr: SocketAddr,
    client_id: &str,
    username: &str,
    password: &str,
) -> ConnectReturnCode {
    mqtt_session(addr, client_id, username, password, true).code
}

/// Connects with this cleanSession flag, disconnects, and gives the CONNACK.
fn mqtt_session(
    addr: SocketAddr,
    client_id: &str,
    username: &str,
    password: &str,
    clean_session: bool,
) -> ConnAck {
    let mut stream = TcpStream::connect(addr).expect("connect to the broker");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let connect = Connect {
        protocol: ProtocolVersion::V3_1_1,
        client_id: Utf8Bytes::try_from(client_id).expect("a valid client id"),
        clean_session,
        keep_alive: 60,
        username: Some(Utf8Bytes::try_from(username).expect("a valid username")),
        password: Some(Bytes::copy_from_slice(password.as_bytes())),
        will: None,
    };
    let mut out = BytesMut::new();
    Packet::from(connect)
        .encode(&mut out)
        .expect("encode CONNECT");
    stream.write_all(&out).expect("send CONNECT");

    let decoder = Decoder::default();
    let mut read = BytesMut::new();
    let mut chunk = [0u8; 256];
    loop {
        match decoder.decode(&mut read).expect("a well-formed answer") {
            Some(Packet::ConnAck(connack)) => {
                if connack.code == ConnectReturnCode::Accepted {
                    let mut disconnect = BytesMut::new();
                    Packet::Disconnect.encode(&mut disconnect).unwrap();
                    let _ = stream.write_all(&disconnect);
                }
                return connack;
            }
            Some(other) => panic!("expected CONNACK, got {other:?}"),
            None => {
                let n = stream.read(&mut chunk).expect("read the CONNACK");
                assert!(n > 0, "the broker closed without CONNACK");
                read.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Writes a configuration file of its own and gives its path.
fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("command_serve");
    std::fs::create_dir_all(&dir).expect("create the test folder");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the configuration");
    path
}

const DEVICE_CONFIG: &str = r#"
[[listener]]
bind = "127.0.0.1:0"

[[product]]
key = "a1TestPK001"
categories = [{ topic = "/${productKey}/${deviceName}/user/get", permission = "sub" }]

[[product.device]]
name = "dev-001"
secret = "0123456789abcdef0123456789abcdef"
"#;

#[test]
fn serve_with_a_file_admits_a_signed_device_and_stops_on_sigterm() {
    let path = write_config("device.toml", DEVICE_CONFIG);
    let mut served = Served::start(&["serve", "--config", path.to_str().unwrap()]);
    let (addr, transport) = served.mqtt_addr();
    assert_ne!(addr.port(), 0, "the bound port is printed, not 0");
    assert_eq!(transport, "(TCP)");
    served.line_starting_with("aliot: running");

    let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
    let secret = DeviceSecret::new("0123456789abcdef0123456789abcdef");
    let credentials = sign(
        &identity,
        &secret,
        SignMethod::HmacSha256,
        "a1TestPK001.dev-001",
        Some("2524608000000"),
        SecureMode::Tcp,
    );
    assert_eq!(
        mqtt_connect(
            addr,
            &credentials.client_id,
            &credentials.username,
            &credentials.password
        ),
        ConnectReturnCode::Accepted
    );
    let wrong = sign(
        &identity,
        &DeviceSecret::new("not the secret"),
        SignMethod::HmacSha256,
        "a1TestPK001.dev-001",
        None,
        SecureMode::Tcp,
    );
    assert_eq!(
        mqtt_connect(addr, &wrong.client_id, &wrong.username, &wrong.password),
        ConnectReturnCode::NotAuthorized
    );

    let (status, stderr) = served.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit 0 on SIGTERM; stderr: {stderr}"
    );
    assert!(stderr.contains("SIGTERM: shutting down"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn serve_with_tls_says_so() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("command_serve-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("server.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        dir.join("server.key"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let path = dir.join("tls.toml");
    std::fs::write(
        &path,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\ntls = { cert = \"server.pem\", key = \"server.key\" }\n",
    )
    .unwrap();
    // Port 0 twice is two different free ports, not one address bound twice.
    let mut served = Served::start(&["serve", "--config", path.to_str().unwrap()]);
    let (tcp, transport) = served.mqtt_addr();
    assert_eq!(transport, "(TCP)");
    let (tls, transport) = served.mqtt_addr();
    assert_eq!(transport, "(TLS)");
    assert_ne!(tcp, tls);
    // At once, before the "running" line: the signal handlers are in place before the
    // addresses are printed. SIGINT is what Ctrl-C sends.
    let (status, stderr) = served.signal("INT");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Ctrl-C: shutting down"), "{stderr}");
}

/// The value after `flag` in a command's words.
fn option<'a>(words: &'a [String], flag: &str) -> &'a str {
    let at = words
        .iter()
        .position(|word| word == flag)
        .unwrap_or_else(|| panic!("no {flag} in {words:?}"));
    words.get(at + 1).expect("a value after the flag")
}

/// Posts a JSON body over HTTP/1.1 and gives the status code and the JSON answer.
fn http_post(url: &str, body: &str) -> (u16, serde_json::Value) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = TcpStream::connect(authority).expect("connect to the API");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, serde_json::from_str(body).expect("a JSON body"))
}

#[test]
fn the_demo_prints_commands_whose_credentials_work() {
    let mut served = Served::start(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--api-bind",
        "127.0.0.1:0",
        "--amqp-bind",
        "127.0.0.1:0",
        "--in-memory",
    ]);
    let (addr, _) = served.mqtt_addr();
    let api_line = served.line_starting_with("aliot: HTTP API on http://");
    let api = api_line
        .strip_prefix("aliot: HTTP API on http://")
        .unwrap()
        .parse::<SocketAddr>()
        .expect("the API address");
    assert_ne!(api.port(), 0);
    served.line_starting_with("aliot: running");
    let printed = served.seen.clone();

    let mut registry = MemoryRegistry::new();
    let mut categories = ProductCategories::defaults();
    categories
        .add_custom(
            "/${productKey}/${deviceName}/user/get",
            aliot_topic::Permission::Sub,
        )
        .unwrap();
    registry.add_product(DEMO_PRODUCT_KEY, categories);
    for (name, secret) in DEMO_SECRETS {
        registry
            .add_device(DEMO_PRODUCT_KEY, name, DeviceSecret::new(secret))
            .unwrap();
    }

    // Before any device connects, the printed RRPC call finds dev-001 offline.
    let curl = printed
        .iter()
        .find(|line| line.starts_with("curl ") && line.contains("/rrpc"))
        .expect("an RRPC curl line");
    let words = shell_words(curl);
    let url = words
        .iter()
        .find(|word| word.starts_with("http://"))
        .expect("a URL");
    assert_eq!(url, &format!("http://{api}/rrpc"));
    let (status, answer) = http_post(url, option(&words, "-d"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["RrpcCode"], "OFFLINE", "{answer}");

    // The printed thing-model calls answer too: dev-003 is not online yet, and nobody has
    // posted a property.
    let printed_call = |action: &str| {
        let curl = printed
            .iter()
            .find(|line| line.starts_with("curl ") && line.contains(&format!("/{action} ")))
            .unwrap_or_else(|| panic!("a {action} curl line"));
        let words = shell_words(curl);
        let url = words
            .iter()
            .find(|word| word.starts_with("http://"))
            .expect("a URL")
            .clone();
        http_post(&url, option(&words, "-d"))
    };
    let (status, answer) = printed_call("SetDeviceProperty");
    assert_eq!(
        (status, answer["Code"].as_str()),
        (409, Some("DeviceOffline")),
        "{answer}"
    );
    let (status, answer) = printed_call("QueryDevicePropertyStatus");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["Data"]["List"]["PropertyStatusInfo"],
        serde_json::json!([])
    );
    let (status, answer) = printed_call("UpdateDeviceShadow");
    assert_eq!(
        (status, answer["Data"]["Version"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    let mut devices_seen = std::collections::BTreeSet::new();
    let mut commands = 0;
    for line in printed.iter().filter(|line| line.starts_with("mosquitto_")) {
        // The RRPC line pipes two commands; the first is checked like the others.
        let first_command = line.split(" | ").next().unwrap_or(line);
        let words = shell_words(first_command);
        assert_eq!(option(&words, "-V"), "mqttv311");
        assert_eq!(option(&words, "-q"), "1");
        let keepalive: u16 = option(&words, "-k").parse().unwrap();
        assert!((30..=1200).contains(&keepalive));
        assert_eq!(option(&words, "-h"), "127.0.0.1");
        assert_eq!(option(&words, "-p"), addr.port().to_string());
        let client_id = option(&words, "-i");
        let username = option(&words, "-u");
        let password = option(&words, "-P");
        let fields = ConnectFields {
            client_id,
            username: Some(username),
            password: Some(password.as_bytes()),
        };
        let verified = verify(&fields, &registry, &VerifyOptions::default())
            .unwrap_or_else(|error| panic!("{line}: {error}"));
        let topic = option(&words, "-t");
        let own = format!(
            "/{}/{}/",
            verified.identity.product_key, verified.identity.device_name
        );
        assert!(
            topic.starts_with(&own)
                || topic.starts_with(&format!("/broadcast/{DEMO_PRODUCT_KEY}/"))
                || topic.starts_with(&format!("/sys{own}rrpc/request/"))
                || topic.starts_with(&format!("/sys{own}thing/")),
            "{topic} is a topic of {}",
            verified.identity
        );
        assert_eq!(
            mqtt_connect(addr, client_id, username, password),
            ConnectReturnCode::Accepted,
            "{line}"
        );
        devices_seen.insert(verified.identity.device_name.clone());
        commands += 1;
    }
    assert_eq!(devices_seen.len(), 3, "every demo device has its commands");
    assert!(commands >= 6, "a sub and a pub per device at least");
    for (name, _) in DEMO_SECRETS {
        assert!(
            printed.iter().any(|line| line.starts_with("mosquitto_sub")
                && line.contains(&format!("-t /{DEMO_PRODUCT_KEY}/{name}/user/get "))),
            "{name} subscribes to its user/get"
        );
        assert!(
            printed.iter().any(|line| line.starts_with("mosquitto_pub")
                && line.contains(&format!("-t /{DEMO_PRODUCT_KEY}/{name}/user/update "))),
            "{name} publishes to its user/update"
        );
    }

    // The printed server-side publish reaches nobody now (every device has disconnected).
    let curl = printed
        .iter()
        .find(|line| line.starts_with("curl ") && line.contains("/pub"))
        .expect("a publish curl line");
    let words = shell_words(curl);
    let url = words
        .iter()
        .find(|word| word.starts_with("http://"))
        .expect("a URL");
    let (status, answer) = http_post(url, option(&words, "-d"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["Success"], true, "{answer}");

    let (status, stderr) = served.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn a_busy_address_exits_1_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("take a port");
    let addr = taken.local_addr().unwrap().to_string();
    let mut served = Served::start(&[
        "serve",
        "--bind",
        &addr,
        "--api-bind",
        "127.0.0.1:0",
        "--amqp-bind",
        "127.0.0.1:0",
        "--in-memory",
    ]);
    let status = served.wait();
    let stderr = served.stderr_text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for MQTT on {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_bad_file_exits_2_naming_the_line() {
    let path = write_config(
        "bad.toml",
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[[product]]\nkey = \"pk\"\n[[product.device]]\nname = \"dn\"\nsecret = \"\"\n",
    );
    let mut served = Served::start(&["serve", "--config", path.to_str().unwrap()]);
    let status = served.wait();
    let stderr = served.stderr_text();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}, line 7, column 10", path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("the secret of device pk/dn is empty"),
        "{stderr}"
    );
}

#[test]
fn demo_addresses_do_not_mix_with_a_file() {
    let path = write_config("mixed.toml", DEVICE_CONFIG);
    let mut served = Served::start(&[
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ]);
    let status = served.wait();
    let stderr = served.stderr_text();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

/// The value of the demo's printed `#   {label}: VALUE` line for the device before it.
fn printed_credential(printed: &[String], device: &str, label: &str) -> String {
    let start = printed
        .iter()
        .position(|line| line == &format!("# {DEMO_PRODUCT_KEY}/{device}"))
        .expect("the device's block");
    printed[start..]
        .iter()
        .find_map(|line| line.strip_prefix(&format!("#   {label}:")))
        .map(|value| value.trim().to_owned())
        .expect("the credential line")
}

#[test]
fn the_demo_keeps_its_sessions_in_its_data_dir_across_a_restart() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("command_serve")
        .join(format!("demo-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let start = || {
        let mut served = Served::start(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--api-bind",
            "127.0.0.1:0",
            "--amqp-bind",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        let said = served.line_starting_with("aliot: keeping sessions and queued messages in ");
        assert!(said.contains(dir.to_str().unwrap()), "{said}");
        let (addr, _) = served.mqtt_addr();
        served.line_starting_with("aliot: running");
        (served, addr)
    };
    let (served, addr) = start();
    let credential = |label| printed_credential(&served.seen, "dev-001", label);
    let (client_id, username, password) = (
        credential("client id"),
        credential("username"),
        credential("password"),
    );
    let first = mqtt_session(addr, &client_id, &username, &password, false);
    assert_eq!(first.code, ConnectReturnCode::Accepted);
    assert!(!first.session_present);
    let (status, stderr) = served.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("store restored"), "{stderr}");

    let (served, addr) = start();
    let again = mqtt_session(addr, &client_id, &username, &password, false);
    assert!(
        again.session_present,
        "the kept session is back after the restart"
    );
    let (status, stderr) = served.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("sessions=1"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
