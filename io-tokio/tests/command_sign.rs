//! `aliot sign`: the credentials it prints are the ones `aliot_auth` signs, and verify.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use aliot_auth::{
    ClientId, ConnectFields, DeviceIdentity, DeviceSecret, MemoryRegistry, SecureMode, SignMethod,
    VerifyOptions, sign, verify,
};
use aliot_topic::ProductCategories;

fn aliot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aliot"))
        .args(args)
        .output()
        .expect("run aliot")
}

/// The `key=value` lines of `sign`'s output, in order.
fn key_values(output: &Output) -> Vec<(String, String)> {
    String::from_utf8(output.stdout.clone())
        .expect("UTF-8 output")
        .lines()
        .map(|line| {
            let (key, value) = line.split_once('=').expect("a key=value line");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

const VECTOR_ARGS: [&str; 14] = [
    "sign",
    "--product-key",
    "a1TestPK001",
    "--device-name",
    "dev-001",
    "--device-secret",
    "0123456789abcdef0123456789abcdef",
    "--sign-method",
    "hmacsha256",
    "--timestamp",
    "2524608000000",
    "--secure-mode",
    "2",
    "--client-id=a1TestPK001.dev-001",
];

#[test]
fn sign_prints_the_c_sdk_vector() {
    let output = aliot(&VECTOR_ARGS);
    assert!(output.status.success(), "{output:?}");
    let lines = key_values(&output);
    // SPEC §2, the platform's C SDK vector: content
    // clientIda1TestPK001.dev-001deviceNamedev-001productKeya1TestPK001timestamp2524608000000.
    assert_eq!(
        lines,
        [
            (
                "client_id".to_owned(),
                "a1TestPK001.dev-001|securemode=2,signmethod=hmacsha256,timestamp=2524608000000|"
                    .to_owned()
            ),
            ("username".to_owned(), "dev-001&a1TestPK001".to_owned()),
            (
                "password".to_owned(),
                "CC10D0112DBAFA9A6FC0D8FC3E5B6BA3FF9CB258D2F77C0E9153A83E4BCAE470".to_lowercase()
            ),
        ]
    );
    let expected = sign(
        &DeviceIdentity::new("a1TestPK001", "dev-001"),
        &DeviceSecret::new("0123456789abcdef0123456789abcdef"),
        SignMethod::HmacSha256,
        "a1TestPK001.dev-001",
        Some("2524608000000"),
        SecureMode::Tls,
    );
    assert_eq!(lines[0].1, expected.client_id);
    assert_eq!(lines[1].1, expected.username);
    assert!(lines[2].1.eq_ignore_ascii_case(&expected.password));
}

#[test]
fn sign_json_holds_the_same_fields() {
    let mut args = VECTOR_ARGS.to_vec();
    args.push("--json");
    let output = aliot(&args);
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(
        json,
        serde_json::json!({
            "client_id": "a1TestPK001.dev-001|securemode=2,signmethod=hmacsha256,timestamp=2524608000000|",
            "username": "dev-001&a1TestPK001",
            "password": "cc10d0112dbafa9a6fc0d8fc3e5b6ba3ff9cb258d2f77c0e9153a83e4bcae470",
        })
    );
}

#[test]
fn sign_defaults_verify_against_the_registry() {
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let output = aliot(&[
        "sign",
        "--product-key",
        "a1TestPK001",
        "--device-name",
        "dev-001",
        "--device-secret",
        "s3cr3t",
    ]);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(output.status.success(), "{output:?}");
    let lines = key_values(&output);
    let keys: Vec<&str> = lines.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["client_id", "username", "password"]);

    // The documented defaults: id PK.DN, hmacsha256, securemode 3, timestamp now in ms.
    let client_id = ClientId::parse(&lines[0].1).expect("a platform client id");
    assert_eq!(client_id.id, "a1TestPK001.dev-001");
    assert_eq!(client_id.sign_method, Some(SignMethod::HmacSha256));
    assert_eq!(client_id.secure_mode, Some(SecureMode::Tcp));
    let timestamp: u128 = client_id
        .timestamp
        .as_deref()
        .expect("a timestamp by default")
        .parse()
        .expect("a decimal timestamp");
    assert!(
        (before..=after).contains(&timestamp),
        "{before} <= {timestamp} <= {after}"
    );

    let mut registry = MemoryRegistry::new();
    registry.add_product("a1TestPK001", ProductCategories::defaults());
    registry
        .add_device("a1TestPK001", "dev-001", DeviceSecret::new("s3cr3t"))
        .unwrap();
    let fields = ConnectFields {
        client_id: &lines[0].1,
        username: Some(&lines[1].1),
        password: Some(lines[2].1.as_bytes()),
    };
    let options = VerifyOptions {
        max_timestamp_skew_ms: Some(60_000),
        now_ms: Some(u64::try_from(after).unwrap()),
    };
    let verified = verify(&fields, &registry, &options).expect("the printed credentials verify");
    assert_eq!(
        verified.identity,
        DeviceIdentity::new("a1TestPK001", "dev-001")
    );
}

#[test]
fn sign_without_timestamp_and_with_other_methods() {
    for method in ["hmacsha1", "hmacmd5", "hmacsha256"] {
        let output = aliot(&[
            "sign",
            "--product-key",
            "pk",
            "--device-name",
            "dn",
            "--device-secret",
            "secret",
            "--client-id",
            "12345",
            "--timestamp",
            "none",
            "--sign-method",
            method,
        ]);
        assert!(output.status.success(), "{output:?}");
        let lines = key_values(&output);
        let expected = sign(
            &DeviceIdentity::new("pk", "dn"),
            &DeviceSecret::new("secret"),
            method.parse().unwrap(),
            "12345",
            None,
            SecureMode::Tcp,
        );
        assert_eq!(
            lines[0].1,
            format!("12345|securemode=3,signmethod={method}|")
        );
        assert_eq!(lines[0].1, expected.client_id);
        assert_eq!(lines[2].1, expected.password);
    }
    // SPEC §2's vector without timestamp: content clientId12345deviceNamedeviceproductKeypk.
    let output = aliot(&[
        "sign",
        "--product-key",
        "pk",
        "--device-name",
        "device",
        "--device-secret",
        "secret",
        "--client-id",
        "12345",
        "--timestamp",
        "none",
        "--sign-method",
        "hmacsha1",
    ]);
    assert_eq!(
        key_values(&output)[2].1,
        "3504e4df7ce4766d30f796ee973c9ce7fc5425cb"
    );
}

#[test]
fn sign_refuses_bad_arguments_with_exit_2() {
    let base = [
        "sign",
        "--product-key",
        "pk",
        "--device-name",
        "dn",
        "--device-secret",
        "s",
    ];
    let cases: [(&[&str], &str); 6] = [
        (&["--sign-method", "hmacsha512"], "hmacsha512"),
        (&["--secure-mode=-2"], "securemode `-2` is not supported"),
        (&["--secure-mode=8"], "securemode `8` is not supported"),
        (&["--client-id", "a|b"], "|"),
        (&["--client-id", &"x".repeat(65)], "64"),
        (&["--timestamp", "1,2"], "1,2"),
    ];
    for (extra, needle) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let output = aliot(&args);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(output.stdout.is_empty(), "nothing printed on stdout");
    }

    let output = aliot(&[
        "sign",
        "--product-key",
        "pk",
        "--device-name",
        "dn",
        "--device-secret=",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--device-secret is empty"));

    let output = aliot(&[
        "sign",
        "--product-key",
        "p&k",
        "--device-name",
        "dn",
        "--device-secret",
        "s",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`&`"));

    let output = aliot(&["sign", "--product-key", "pk"]);
    assert_eq!(output.status.code(), Some(2), "missing arguments");
}
