//! Each kind of bad configuration is refused, and the message names the line it is on.

use std::path::{Path, PathBuf};

use aliot_tokio::config::{Config, ConfigError, ConfigProblem, Location};

/// Parses `text`, which must be refused, and gives the error.
fn refuse(text: &str) -> ConfigError {
    match Config::parse(text, "bad.toml", Path::new(".")) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(error) => error,
    }
}

/// Checks the error's line, that its message names the file and that line, and that the
/// message says `needle`.
fn assert_refused_at(error: &ConfigError, line: usize, needle: &str) {
    let message = error.to_string();
    assert_eq!(
        error.location.map(|at| at.line),
        Some(line),
        "wrong line in: {message}"
    );
    assert!(
        message.starts_with(&format!("bad.toml, line {line}, column ")),
        "the message names the file and line: {message}"
    );
    assert!(
        message.contains(needle),
        "the message says {needle:?}: {message}"
    );
}

const LISTENER: &str = "[[listener]]\nbind = \"127.0.0.1:1883\"\n";

#[test]
fn an_unknown_top_level_key_is_refused() {
    let error = refuse(&format!("{LISTENER}\nverbose = true\n"));
    assert!(matches!(*error.problem, ConfigProblem::Toml(_)));
    assert_refused_at(&error, 4, "unknown field `verbose`");
}

#[test]
fn an_unknown_key_in_a_table_is_refused() {
    let error = refuse("[[listener]]\nbind = \"127.0.0.1:1883\"\nport = 1883\n");
    assert_refused_at(&error, 3, "unknown field `port`");

    let error = refuse(&format!("{LISTENER}[limits]\nmax_packet = 10\n"));
    assert_refused_at(&error, 4, "unknown field `max_packet`");

    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\n[[product.device]]\nname = \"dn\"\nsecret = \"s\"\nsecrte = \"s\"\n"
    ));
    assert_refused_at(&error, 8, "unknown field `secrte`");
}

#[test]
fn a_device_outside_a_product_is_refused() {
    // Devices live in their product's table, so a device cannot name an unknown product: a
    // top-level [[device]] is an unknown key.
    let error = refuse(&format!(
        "{LISTENER}\n[[device]]\nproduct = \"pk\"\nname = \"dn\"\nsecret = \"s\"\n"
    ));
    assert_refused_at(&error, 4, "unknown field `device`");
}

#[test]
fn a_value_of_the_wrong_type_is_refused() {
    let error = refuse("[[listener]]\nbind = 1883\n");
    assert!(matches!(*error.problem, ConfigProblem::Toml(_)));
    assert_refused_at(&error, 2, "invalid type");

    let error = refuse(&format!("{LISTENER}[auth]\nopen = \"yes\"\n"));
    assert_refused_at(&error, 4, "invalid type");

    let error = refuse(&format!("{LISTENER}[limits]\ninflight_window = -1\n"));
    assert_refused_at(&error, 4, "-1");
}

#[test]
fn a_missing_key_is_refused() {
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\n[[product.device]]\nname = \"dn\"\n"
    ));
    assert!(
        error.to_string().contains("missing field `secret`"),
        "{error}"
    );
    assert!(error.location.is_some(), "{error}");
}

#[test]
fn broken_syntax_is_refused() {
    let error = refuse("[[listener]]\nbind = \"127.0.0.1:1883\n");
    assert!(matches!(*error.problem, ConfigProblem::Toml(_)));
    assert_eq!(error.location.map(|at| at.line), Some(2), "{error}");
}

#[test]
fn a_bad_bind_address_is_refused() {
    let error = refuse(
        "[[listener]]\nbind = \"127.0.0.1:1883\"\n\n[[listener]]\nbind = \"localhost:1883\"\n",
    );
    assert!(matches!(
        *error.problem,
        ConfigProblem::BadBindAddress { .. }
    ));
    assert_refused_at(
        &error,
        5,
        "\"localhost:1883\" is not an IP address and port",
    );
    assert_eq!(
        error.location,
        Some(Location { line: 5, column: 8 }),
        "the column is where the value starts"
    );
    assert!(
        error
            .to_string()
            .ends_with("    5 | bind = \"localhost:1883\""),
        "the offending line is shown: {error}"
    );

    let error = refuse(&format!("{LISTENER}[api]\nbind = \"127.0.0.1\"\n"));
    assert_refused_at(&error, 4, "is not an IP address and port");
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let error = refuse(&format!("{LISTENER}{LISTENER}"));
    assert!(matches!(
        *error.problem,
        ConfigProblem::DuplicateListener(_)
    ));
    assert_refused_at(&error, 4, "binds 127.0.0.1:1883 already");
}

#[test]
fn a_websocket_path_that_is_no_absolute_path_is_refused() {
    for path in ["mqtt", "/mqtt?x=1", "/my mqtt", ""] {
        let error = refuse(&format!(
            "[[listener]]\nbind = \"127.0.0.1:8083\"\nwebsocket = {{ path = {path:?} }}\n"
        ));
        assert!(
            matches!(*error.problem, ConfigProblem::BadWebSocketPath(_)),
            "{path:?}: {error}"
        );
        assert_refused_at(&error, 3, "is not an absolute path");
    }
}

#[test]
fn a_websocket_listener_takes_the_default_path_or_its_own() {
    let text = "[[listener]]\nbind = \"127.0.0.1:8083\"\nwebsocket = {}\n\n\
                [[listener]]\nbind = \"127.0.0.1:8084\"\nwebsocket = { path = \"/\" }\n";
    let config = Config::parse(text, "ws.toml", Path::new(".")).expect("valid");
    let paths: Vec<_> = config
        .broker_config()
        .listeners
        .iter()
        .map(|listener| listener.websocket.clone().map(|websocket| websocket.path))
        .collect();
    assert_eq!(paths, [Some("/mqtt".to_owned()), Some("/".to_owned())]);
    assert!(
        config
            .summary()
            .contains("MQTT listener 127.0.0.1:8083 (WebSocket at /mqtt, no TLS)"),
        "{}",
        config.summary()
    );
}

#[test]
fn no_listener_is_refused() {
    let error = refuse("[auth]\nopen = true\n");
    assert!(matches!(*error.problem, ConfigProblem::NoListener));
    assert_eq!(error.location, None);
    assert!(
        error.to_string().starts_with("bad.toml: no [[listener]]"),
        "{error}"
    );
}

#[test]
fn a_bad_permission_is_refused() {
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\ncategories = [\n  {{ topic = \"/${{productKey}}/${{deviceName}}/user/get\", permission = \"sub\" }},\n  {{ topic = \"/${{productKey}}/${{deviceName}}/user/x\", permission = \"pubsub\" }},\n]\n"
    ));
    assert!(matches!(*error.problem, ConfigProblem::BadPermission(_)));
    assert_refused_at(&error, 7, "unknown topic permission \"pubsub\"");
}

#[test]
fn an_invalid_custom_category_is_refused() {
    let cases = [
        ("/sys/${productKey}/${deviceName}/x", "sub", "/sys/"),
        (
            "/${productKey}/${deviceName}/user/+",
            "pub",
            "wildcards are only allowed",
        ),
        ("/${productKey}/user/get", "sub", "must start with"),
        (
            "/${productKey}/${deviceName}/user-get",
            "sub",
            "letters, digits and `_`",
        ),
        (
            "/${productKey}/${deviceName}/a/#/b",
            "sub",
            "misplaced wildcard",
        ),
    ];
    for (topic, permission, needle) in cases {
        let error = refuse(&format!(
            "{LISTENER}[[product]]\nkey = \"pk\"\ncategories = [{{ topic = \"{topic}\", permission = \"{permission}\" }}]\n"
        ));
        assert!(
            matches!(*error.problem, ConfigProblem::InvalidCategory { .. }),
            "{error}"
        );
        assert_refused_at(&error, 5, needle);
    }

    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\ncategories = [\n  {{ topic = \"/${{productKey}}/${{deviceName}}/user/get\", permission = \"sub\" }},\n  {{ topic = \"/${{productKey}}/${{deviceName}}/user/get\", permission = \"pub\" }},\n]\n"
    ));
    assert_refused_at(&error, 7, "already has a category");
}

#[test]
fn a_duplicate_device_is_refused() {
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\n\n[[product.device]]\nname = \"dn\"\nsecret = \"a\"\n\n[[product.device]]\nname = \"dn\"\nsecret = \"b\"\n"
    ));
    assert!(matches!(
        *error.problem,
        ConfigProblem::DuplicateDevice { first_line: 7, .. }
    ));
    assert_refused_at(&error, 11, "device pk/dn is defined already, on line 7");
}

#[test]
fn the_same_device_name_in_two_products_is_two_devices() {
    let text = format!(
        "{LISTENER}[[product]]\nkey = \"pk1\"\n[[product.device]]\nname = \"dn\"\nsecret = \"a\"\n[[product]]\nkey = \"pk2\"\n[[product.device]]\nname = \"dn\"\nsecret = \"b\"\n"
    );
    let config = Config::parse(&text, "ok.toml", Path::new(".")).expect("valid");
    assert_eq!(config.registry.device_count(), 2);
}

#[test]
fn a_duplicate_product_is_refused() {
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\n[[product]]\nkey = \"pk\"\n"
    ));
    assert!(matches!(
        *error.problem,
        ConfigProblem::DuplicateProduct { first_line: 4, .. }
    ));
    assert_refused_at(&error, 6, "product \"pk\" is defined already, on line 4");
}

#[test]
fn an_empty_device_secret_is_refused() {
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\n[[product.device]]\nname = \"dn\"\nsecret = \"\"\n"
    ));
    assert!(matches!(
        *error.problem,
        ConfigProblem::EmptyDeviceSecret(_)
    ));
    assert_refused_at(&error, 7, "the secret of device pk/dn is empty");
}

#[test]
fn a_bad_device_name_is_refused() {
    let cases = [
        ("dev/1", "'/'"),
        ("dev+", "'+'"),
        ("", "the device name is empty"),
        ("a&b", "`&` cannot appear"),
    ];
    for (name, needle) in cases {
        let error = refuse(&format!(
            "{LISTENER}[[product]]\nkey = \"pk\"\n[[product.device]]\nname = \"{name}\"\nsecret = \"s\"\n"
        ));
        assert_refused_at(&error, 6, needle);
    }
}

#[test]
fn a_bad_product_key_is_refused() {
    let cases = [
        ("sys", "reserved first level"),
        ("p/k", "'/'"),
        ("", "the product key is empty"),
        ("p&k", "`&` cannot appear"),
    ];
    for (key, needle) in cases {
        let error = refuse(&format!("{LISTENER}[[product]]\nkey = \"{key}\"\n"));
        assert_refused_at(&error, 4, needle);
    }
}

#[test]
fn unreadable_tls_files_are_refused() {
    let error = refuse(
        "[[listener]]\nbind = \"127.0.0.1:8883\"\ntls = { cert = \"no-such.pem\", key = \"no-such.key\" }\n",
    );
    assert!(matches!(*error.problem, ConfigProblem::Tls { .. }));
    assert_refused_at(&error, 3, "no-such.pem");

    // A file that is there but holds no certificate.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_errors-tls");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    std::fs::write(dir.join("empty.key"), "").unwrap();
    let text = "[[listener]]\nbind = \"127.0.0.1:8883\"\n\n\ntls = { cert = \"empty.pem\", key = \"empty.key\" }\n";
    let error = Config::parse(text, "bad.toml", &dir).expect_err("no certificate in the file");
    assert_refused_at(&error, 5, "empty.pem");
}

#[test]
fn a_limit_out_of_range_is_refused() {
    let cases = [
        (
            "max_connections = 0",
            "limits.max_connections = 0 is below the minimum of 1",
        ),
        (
            "max_connections = 100000001",
            "limits.max_connections = 100000001 is above the maximum of 100000000",
        ),
        ("max_connections = -1", "invalid value"),
        ("max_packet_size = 0", "below the minimum of 1"),
        (
            "max_packet_size = 268435461",
            "above the maximum of 268435460",
        ),
        ("max_topic_len = 65536", "above the maximum of 65535"),
        ("inflight_window = 0", "below the minimum of 1"),
        ("inflight_window = 70000", "above the maximum of 65535"),
        ("connect_timeout_secs = 0", "below the minimum of 1"),
        ("connect_timeout_secs = 3601", "above the maximum of 3600"),
        ("max_pending_output = 0", "below the minimum of 1"),
        ("max_ack_hold_ms = 0", "below the minimum of 1"),
        ("max_ack_hold_ms = 60001", "above the maximum of 60000"),
        ("max_message_age_secs = 0", "or \"never\""),
        ("session_expiry_secs = \"forever\"", "or \"never\""),
    ];
    for (line, needle) in cases {
        let error = refuse(&format!("{LISTENER}\n[limits]\n{line}\n"));
        assert_refused_at(&error, 5, needle);
    }
}

#[test]
fn an_empty_token_or_zero_skew_is_refused() {
    let error = refuse(&format!("{LISTENER}[api]\ntoken = \"\"\n"));
    assert!(matches!(*error.problem, ConfigProblem::EmptyApiToken));
    assert_refused_at(&error, 4, "the API token is empty");

    let error = refuse(&format!("{LISTENER}[auth]\nmax_timestamp_skew_ms = 0\n"));
    assert!(matches!(*error.problem, ConfigProblem::ZeroTimestampSkew));
    assert_refused_at(&error, 4, "max_timestamp_skew_ms must be above 0");
}

#[test]
fn an_unreadable_file_is_refused_with_its_name() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-aliot.toml");
    let error = Config::from_file(&path).expect_err("there is no such file");
    assert!(matches!(*error.problem, ConfigProblem::Read(_)));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read", path.display())),
        "{error}"
    );
}

#[test]
fn columns_count_characters() {
    // The permission is checked before the template, so the error points after the `é`: one
    // column for it, not its two bytes.
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"pk\"\ncategories = [{{ topic = \"/${{productKey}}/${{deviceName}}/é\", permission = \"bad\" }}]\n"
    ));
    assert_eq!(
        error.location,
        Some(Location {
            line: 5,
            column: 72
        }),
        "{error}"
    );
}

#[test]
fn a_bad_store_table_is_refused() {
    let error = refuse(&format!(
        "{LISTENER}[store]\npath = \"d\"\ndurability = \"always\"\n"
    ));
    assert!(matches!(*error.problem, ConfigProblem::BadDurability(_)));
    assert_refused_at(&error, 5, "use \"immediate\", \"periodic\" or \"none\"");

    let error = refuse(&format!(
        "{LISTENER}[store]\npath = \"d\"\ndurability = \"periodic\"\n"
    ));
    assert!(matches!(
        *error.problem,
        ConfigProblem::FlushWithoutPeriodic
    ));
    assert_refused_at(&error, 3, "flush_ms goes with durability = \"periodic\"");

    let error = refuse(&format!(
        "{LISTENER}[store]\npath = \"d\"\nflush_ms = 100\n"
    ));
    assert!(matches!(
        *error.problem,
        ConfigProblem::FlushWithoutPeriodic
    ));

    let error = refuse(&format!(
        "{LISTENER}[store]\npath = \"d\"\ndurability = \"periodic\"\nflush_ms = 0\n"
    ));
    assert!(matches!(*error.problem, ConfigProblem::BadFlushMs(0)));
    assert_refused_at(&error, 6, "store.flush_ms = 0 is not within 1..=60000");

    let error = refuse(&format!("{LISTENER}[store]\ndurability = \"none\"\n"));
    assert_refused_at(&error, 3, "path");
}

#[test]
fn a_bad_access_key_is_refused() {
    let error = refuse(&format!(
        "{LISTENER}[[access_key]]\nid = \"\"\nsecret = \"s\"\n"
    ));
    assert!(matches!(*error.problem, ConfigProblem::BadAccessKey(_)));
    assert_refused_at(&error, 3, "the id is empty");
    let error = refuse(&format!(
        "{LISTENER}[[access_key]]\nid = \"a\"\nsecret = \"\"\n"
    ));
    assert_refused_at(&error, 3, "the secret is empty");
    let twice = "[[access_key]]\nid = \"a\"\nsecret = \"s\"\n";
    let error = refuse(&format!("{LISTENER}{twice}{twice}"));
    assert_refused_at(&error, 6, "given twice");
}

#[test]
fn dynamic_registration_needs_a_product_secret() {
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"a1Dyn\"\ndynamic_registration = true\n"
    ));
    assert!(matches!(
        *error.problem,
        ConfigProblem::DynamicRegistrationWithoutSecret
    ));
    assert_refused_at(&error, 4, "needs a product_secret");
    let error = refuse(&format!(
        "{LISTENER}[[product]]\nkey = \"a1Dyn\"\nproduct_secret = \"\"\n"
    ));
    assert_refused_at(&error, 5, "the product secret is empty");
}
