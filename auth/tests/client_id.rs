//! Client id parsing and formatting, over the SDKs' forms and over arbitrary text.

use aliot_auth::{ClientId, ClientIdError, SecureMode, SignMethod};
use proptest::prelude::*;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(key, value)| (String::from(*key), String::from(*value)))
        .collect()
}

#[test]
fn c_sdk_client_id_keeps_every_pair_in_order() {
    let parsed = ClientId::parse(
        "a1TestPK001.dev-001|timestamp=2524608000000,_ss=1,_v=sdk-c-4.1.0,securemode=2,signmethod=hmacsha256,ext=3,|",
    )
    .unwrap();
    assert_eq!(parsed.id, "a1TestPK001.dev-001");
    assert_eq!(parsed.secure_mode, Some(SecureMode::Tls));
    assert_eq!(parsed.sign_method, Some(SignMethod::HmacSha256));
    assert_eq!(parsed.timestamp.as_deref(), Some("2524608000000"));
    assert_eq!(
        parsed.params,
        pairs(&[
            ("timestamp", "2524608000000"),
            ("_ss", "1"),
            ("_v", "sdk-c-4.1.0"),
            ("securemode", "2"),
            ("signmethod", "hmacsha256"),
            ("ext", "3"),
        ])
    );
}

#[test]
fn node_sdk_client_id_with_a_newline_inside_parses() {
    let parsed = ClientId::parse(
        "a1NodePK001&node-01|securemode=3,\n        signmethod=hmacsha1,timestamp=1700000000000|",
    )
    .unwrap();
    assert_eq!(parsed.id, "a1NodePK001&node-01");
    assert_eq!(
        parsed.params,
        pairs(&[
            ("securemode", "3"),
            ("signmethod", "hmacsha1"),
            ("timestamp", "1700000000000"),
        ])
    );
    assert_eq!(
        parsed.to_string(),
        "a1NodePK001&node-01|securemode=3,signmethod=hmacsha1,timestamp=1700000000000|"
    );
}

#[test]
fn python_sdk_client_id_parses() {
    let parsed = ClientId::parse(
        "pk&dn|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,_v=1.2.13,timestamp=1700000000|",
    )
    .unwrap();
    assert_eq!(parsed.secure_mode, Some(SecureMode::Tcp));
    assert_eq!(parsed.sign_method, Some(SignMethod::HmacSha1));
    assert_eq!(parsed.timestamp.as_deref(), Some("1700000000"));
    assert_eq!(parsed.param("lan"), Some("Python"));
    assert_eq!(parsed.params.len(), 7);
}

#[test]
fn each_malformation_has_its_own_error() {
    let cases = [
        ("plain", ClientIdError::MissingExtension("plain".into())),
        ("", ClientIdError::MissingExtension(String::new())),
        ("id|a=1", ClientIdError::MissingClosingBar),
        ("id|a=1||", ClientIdError::TextAfterClosingBar("|".into())),
        ("id|a=1| ", ClientIdError::TextAfterClosingBar(" ".into())),
        ("||", ClientIdError::EmptyId),
        ("id|a=1,,|", ClientIdError::EmptyPair),
        ("id|a|", ClientIdError::MalformedPair("a".into())),
        ("id| =1|", ClientIdError::EmptyKey("=1".into())),
        (
            "id|securemode=|",
            ClientIdError::UnsupportedSecureMode(String::new()),
        ),
        (
            "id|securemode=1|",
            ClientIdError::UnsupportedSecureMode("1".into()),
        ),
        (
            "id|signmethod=HmacSha1|",
            ClientIdError::UnknownSignMethod("HmacSha1".into()),
        ),
        (
            "id|signmethod=sha1|",
            ClientIdError::UnknownSignMethod("sha1".into()),
        ),
        (
            "id|timestamp=1,securemode=3,timestamp=2|",
            ClientIdError::DuplicateKey("timestamp".into()),
        ),
    ];
    for (text, error) in cases {
        assert_eq!(ClientId::parse(text), Err(error), "{text:?}");
    }
    let long = format!("{}||", "x".repeat(200));
    assert_eq!(
        ClientId::parse(&long),
        Err(ClientIdError::IdTooLong { len: 200 })
    );
}

#[test]
fn every_error_message_says_what_was_wrong() {
    let error = ClientId::parse("id|securemode=8|").unwrap_err();
    assert_eq!(
        error.to_string(),
        "securemode `8` is not supported: only 2 (TLS), 3 (plain TCP) and -2 (dynamic registration) are"
    );
    let error = ClientId::parse("x".repeat(65).as_str()).unwrap_err();
    assert!(error.to_string().contains("plain MQTT client id"));
}

/// Client ids shaped like the grammar, with white space, odd values and stray characters mixed
/// in, so that both accepted and refused inputs are common.
fn grammar_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("securemode".to_string()),
        Just("signmethod".to_string()),
        Just("timestamp".to_string()),
        "[a-z_]{0,4}",
        "\\PC{0,3}",
    ];
    let value = prop_oneof![
        Just("2".to_string()),
        Just("3".to_string()),
        Just("-2".to_string()),
        Just("hmacsha1".to_string()),
        Just("hmacmd5".to_string()),
        "[0-9]{0,13}",
        "[a-z=. ]{0,5}",
        "\\PC{0,3}",
    ];
    let space = prop_oneof![
        Just(""),
        Just(""),
        Just(" "),
        Just("\n        "),
        Just("\t")
    ];
    let pair = (
        space.clone(),
        key,
        prop_oneof![Just("="), Just("="), Just("")],
        value,
        space,
    );
    (
        "[^|]{0,66}",
        proptest::collection::vec(pair, 0..6),
        prop_oneof![Just(""), Just(","), Just(", \n")],
        prop_oneof![Just("|"), Just("|"), Just("|"), Just(""), Just("|x")],
    )
        .prop_map(|(id, pairs, trailing, closing)| {
            let pairs: Vec<String> = pairs
                .into_iter()
                .map(|(before, key, equals, value, after)| {
                    format!("{before}{key}{equals}{value}{after}")
                })
                .collect();
            format!("{id}|{}{trailing}{closing}", pairs.join(","))
        })
}

proptest! {
    // About one in eight of these inputs parses; run enough that hundreds do.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn formatting_a_parsed_client_id_parses_back_the_same(text in grammar_text()) {
        if let Ok(parsed) = ClientId::parse(&text) {
            let formatted = parsed.to_string();
            prop_assert_eq!(ClientId::parse(&formatted), Ok(parsed));
        }
    }
}

proptest! {

    #[test]
    fn arbitrary_text_never_panics_and_round_trips(text in "\\PC{0,200}") {
        if let Ok(parsed) = ClientId::parse(&text) {
            prop_assert_eq!(ClientId::parse(&parsed.to_string()), Ok(parsed));
        }
    }

    #[test]
    fn built_client_ids_parse_back_the_same(
        id in "[^|]{1,64}",
        mode in proptest::option::of(prop::sample::select(vec![SecureMode::Tls, SecureMode::Tcp])),
        method in proptest::option::of(prop::sample::select(SignMethod::ALL.to_vec())),
        timestamp in proptest::option::of("[0-9]{1,13}"),
        extra in proptest::collection::vec(("[a-z_]{1,8}", "[A-Za-z0-9.=]{0,8}"), 0..5),
    ) {
        let mut built = ClientId::new(id).unwrap();
        if let Some(mode) = mode {
            built = built.with_secure_mode(mode);
        }
        if let Some(method) = method {
            built = built.with_sign_method(method);
        }
        if let Some(timestamp) = timestamp {
            built = built.with_timestamp(timestamp).unwrap();
        }
        for (key, value) in extra {
            if !["securemode", "signmethod", "timestamp"].contains(&key.as_str()) {
                built = built.with_param(key, value).unwrap();
            }
        }
        prop_assert_eq!(ClientId::parse(&built.to_string()), Ok(built));
    }
}
