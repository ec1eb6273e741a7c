//! Verifying whole CONNECTs: the platform SDKs' forms, round trips, and every refusal with its
//! CONNACK code.

use std::sync::Arc;

use aliot_auth::{
    AuthError, ClientIdError, ConnectFields, DeviceIdentity, DeviceRegistry, DeviceSecret,
    MemoryRegistry, RefusalCode, SecureMode, SignMethod, SignRequest, Verified, VerifyOptions,
    sign, verify,
};
use aliot_topic::ProductCategories;
use proptest::prelude::*;

const C_SDK_CLIENT_ID: &str = "a1TestPK001.dev-001|timestamp=2524608000000,_ss=1,_v=sdk-c-4.1.0,securemode=2,signmethod=hmacsha256,ext=3,|";
const C_SDK_USERNAME: &str = "dev-001&a1TestPK001";
const C_SDK_SECRET: &str = "0123456789abcdef0123456789abcdef";
const C_SDK_PASSWORD: &str = "CC10D0112DBAFA9A6FC0D8FC3E5B6BA3FF9CB258D2F77C0E9153A83E4BCAE470";

/// The Node SDK's form: `pk&dn` as id, a newline and spaces inside the extension, ms timestamp.
const NODE_CLIENT_ID: &str =
    "a1NodePK001&node-01|securemode=3,\n        signmethod=hmacsha1,timestamp=1700000000000|";
const NODE_USERNAME: &str = "node-01&a1NodePK001";
const NODE_SECRET: &str = "nodeSecretValue0123456789abcdef0";
/// HMAC-SHA1 of `clientIda1NodePK001&node-01deviceNamenode-01productKeya1NodePK001timestamp1700000000000`,
/// computed independently with Python's `hmac` module.
const NODE_PASSWORD: &str = "95584710c56594f5090c70f93cc88d9820c3e938";

/// The Python SDK's form: `pk&dn` as id, extra keys, a timestamp in seconds.
const PYTHON_CLIENT_ID: &str = "a1PyPK00001&py-dev-01|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,_v=1.2.13,timestamp=1700000000|";
const PYTHON_USERNAME: &str = "py-dev-01&a1PyPK00001";
const PYTHON_SECRET: &str = "pySecretValue0123456789abcdef012";
/// HMAC-SHA1 of `clientIda1PyPK00001&py-dev-01deviceNamepy-dev-01productKeya1PyPK00001timestamp1700000000`,
/// computed independently with Python's `hmac` module.
const PYTHON_PASSWORD: &str = "6f2a1f57abea827ca9fe7997691e23edc95c21eb";

/// A client id with no `signmethod` and no `timestamp`: signed with the default hmacmd5.
const MD5_DEFAULT_CLIENT_ID: &str = "default-md5|securemode=3|";
const MD5_DEFAULT_USERNAME: &str = "dev-md5&a1Md5PK0001";
const MD5_DEFAULT_SECRET: &str = "md5secret";
/// HMAC-MD5 of `clientIddefault-md5deviceNamedev-md5productKeya1Md5PK0001`, computed with Python.
const MD5_DEFAULT_PASSWORD: &str = "3cd6597842f2d7c834b737f095d90e7f";

fn registry() -> MemoryRegistry {
    let mut registry = MemoryRegistry::new();
    for (product_key, device_name, secret) in [
        ("a1TestPK001", "dev-001", C_SDK_SECRET),
        ("a1NodePK001", "node-01", NODE_SECRET),
        ("a1PyPK00001", "py-dev-01", PYTHON_SECRET),
        ("a1Md5PK0001", "dev-md5", MD5_DEFAULT_SECRET),
    ] {
        registry.add_product(product_key, ProductCategories::defaults());
        registry
            .add_device(product_key, device_name, DeviceSecret::new(secret))
            .unwrap();
    }
    registry
}

fn fields<'a>(client_id: &'a str, username: &'a str, password: &'a str) -> ConnectFields<'a> {
    ConnectFields {
        client_id,
        username: Some(username),
        password: Some(password.as_bytes()),
    }
}

fn verify_default(fields: &ConnectFields<'_>) -> Result<Verified, AuthError> {
    verify(fields, &registry(), &VerifyOptions::default())
}

#[test]
fn c_sdk_connect_with_uppercase_digest_is_accepted() {
    let registry = registry();
    let verified = verify(
        &fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, C_SDK_PASSWORD),
        &registry,
        &VerifyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        verified.identity,
        DeviceIdentity::new("a1TestPK001", "dev-001")
    );
    assert_eq!(verified.client_id.id, "a1TestPK001.dev-001");
    assert_eq!(verified.client_id.secure_mode, Some(SecureMode::Tls));
    assert_eq!(verified.client_id.sign_method, Some(SignMethod::HmacSha256));
    assert_eq!(
        verified.client_id.timestamp.as_deref(),
        Some("2524608000000")
    );
    assert_eq!(verified.client_id.param("_v"), Some("sdk-c-4.1.0"));
    assert_eq!(verified.client_id.param("ext"), Some("3"));
    let categories = registry.product_categories("a1TestPK001").unwrap();
    assert!(Arc::ptr_eq(&verified.categories, categories));
    assert_eq!(*verified.categories, ProductCategories::defaults());
}

#[test]
fn c_sdk_connect_is_accepted_in_lowercase_too() {
    let lowercase = C_SDK_PASSWORD.to_ascii_lowercase();
    assert!(verify_default(&fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, &lowercase)).is_ok());
}

#[test]
fn c_sdk_connect_within_the_skew_window_is_accepted() {
    let options = VerifyOptions {
        max_timestamp_skew_ms: Some(60_000),
        now_ms: Some(2_524_608_030_000),
    };
    let connect = fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, C_SDK_PASSWORD);
    assert!(verify(&connect, &registry(), &options).is_ok());
}

#[test]
fn node_sdk_connect_is_accepted() {
    let verified = verify_default(&fields(NODE_CLIENT_ID, NODE_USERNAME, NODE_PASSWORD)).unwrap();
    assert_eq!(
        verified.identity,
        DeviceIdentity::new("a1NodePK001", "node-01")
    );
    assert_eq!(verified.client_id.id, "a1NodePK001&node-01");
    assert_eq!(verified.client_id.secure_mode, Some(SecureMode::Tcp));
    assert_eq!(verified.client_id.sign_method, Some(SignMethod::HmacSha1));
    assert_eq!(
        verified.client_id.timestamp.as_deref(),
        Some("1700000000000")
    );
}

#[test]
fn python_sdk_connect_is_accepted_with_its_seconds_timestamp() {
    let connect = fields(PYTHON_CLIENT_ID, PYTHON_USERNAME, PYTHON_PASSWORD);
    let verified = verify_default(&connect).unwrap();
    assert_eq!(
        verified.identity,
        DeviceIdentity::new("a1PyPK00001", "py-dev-01")
    );
    assert_eq!(verified.client_id.param("lan"), Some("Python"));
    assert_eq!(verified.client_id.param("_v"), Some("1.2.13"));
    let options = VerifyOptions {
        max_timestamp_skew_ms: Some(5_000),
        now_ms: Some(1_700_000_003_000),
    };
    assert!(verify(&connect, &registry(), &options).is_ok());
}

#[test]
fn missing_signmethod_means_hmacmd5_and_missing_timestamp_is_not_signed() {
    let connect = fields(
        MD5_DEFAULT_CLIENT_ID,
        MD5_DEFAULT_USERNAME,
        MD5_DEFAULT_PASSWORD,
    );
    let verified = verify_default(&connect).unwrap();
    assert_eq!(verified.client_id.sign_method, None);
    assert_eq!(verified.client_id.timestamp, None);
}

#[test]
fn missing_securemode_is_accepted() {
    let identity = DeviceIdentity::new("a1Md5PK0001", "dev-md5");
    let secret = DeviceSecret::new(MD5_DEFAULT_SECRET);
    let full = sign(
        &identity,
        &secret,
        SignMethod::HmacSha1,
        "no-mode",
        None,
        SecureMode::Tcp,
    );
    let connect = fields(
        "no-mode|signmethod=hmacsha1|",
        &full.username,
        &full.password,
    );
    let verified = verify_default(&connect).unwrap();
    assert_eq!(verified.client_id.secure_mode, None);
}

/// The expected refusal of a CONNECT and its CONNACK code.
fn assert_refused(connect: &ConnectFields<'_>, options: &VerifyOptions, expected: AuthError) {
    let code = expected.connack_code();
    let error = verify(connect, &registry(), options).unwrap_err();
    assert_eq!(error, expected, "{connect:?}");
    assert_eq!(error.connack_code(), code);
}

#[test]
fn malformed_client_ids_are_refused_with_code_2() {
    let long_id = "d".repeat(65);
    let long = format!("{long_id}|securemode=3|");
    let cases: Vec<(&str, ClientIdError)> = vec![
        (
            "a1TestPK001.dev-001",
            ClientIdError::MissingExtension("a1TestPK001.dev-001".into()),
        ),
        ("dev|securemode=3", ClientIdError::MissingClosingBar),
        (
            "dev|securemode=3|tail",
            ClientIdError::TextAfterClosingBar("tail".into()),
        ),
        ("|securemode=3|", ClientIdError::EmptyId),
        (&long, ClientIdError::IdTooLong { len: 65 }),
        ("dev|securemode=3,,ext=3|", ClientIdError::EmptyPair),
        (
            "dev|securemode|",
            ClientIdError::MalformedPair("securemode".into()),
        ),
        ("dev|=3|", ClientIdError::EmptyKey("=3".into())),
        (
            "dev|securemode=-1|",
            ClientIdError::UnsupportedSecureMode("-1".into()),
        ),
        (
            "dev|securemode=8|",
            ClientIdError::UnsupportedSecureMode("8".into()),
        ),
        (
            "dev|signmethod=hmacsha512|",
            ClientIdError::UnknownSignMethod("hmacsha512".into()),
        ),
        (
            "dev|signmethod=hmacsha1,signmethod=hmacsha1|",
            ClientIdError::DuplicateKey("signmethod".into()),
        ),
        (
            "dev|securemode=3,securemode=2|",
            ClientIdError::DuplicateKey("securemode".into()),
        ),
    ];
    for (client_id, error) in cases {
        let connect = fields(client_id, C_SDK_USERNAME, C_SDK_PASSWORD);
        assert_refused(
            &connect,
            &VerifyOptions::default(),
            AuthError::ClientId(error),
        );
        assert_eq!(
            verify_default(&connect).unwrap_err().connack_code(),
            RefusalCode::IdentifierRejected
        );
    }
}

#[test]
fn malformed_usernames_are_refused_with_code_4() {
    let no_username = ConnectFields {
        username: None,
        ..fields(C_SDK_CLIENT_ID, "", C_SDK_PASSWORD)
    };
    assert_refused(
        &no_username,
        &VerifyOptions::default(),
        AuthError::MissingUsername,
    );
    for (username, error) in [
        (
            "dev-001",
            AuthError::UsernameWithoutSeparator("dev-001".into()),
        ),
        (
            "dev&001&a1TestPK001",
            AuthError::UsernameWithSeveralSeparators("dev&001&a1TestPK001".into()),
        ),
        ("&a1TestPK001", AuthError::EmptyDeviceName),
        ("dev-001&", AuthError::EmptyProductKey),
    ] {
        assert_refused(
            &fields(C_SDK_CLIENT_ID, username, C_SDK_PASSWORD),
            &VerifyOptions::default(),
            error,
        );
    }
}

#[test]
fn malformed_passwords_are_refused_with_code_4() {
    let no_password = ConnectFields {
        password: None,
        ..fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, "")
    };
    assert_refused(
        &no_password,
        &VerifyOptions::default(),
        AuthError::MissingPassword,
    );
    let not_hex = C_SDK_PASSWORD.replace('C', "g");
    assert_refused(
        &fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, &not_hex),
        &VerifyOptions::default(),
        AuthError::PasswordNotHex,
    );
    let binary = ConnectFields {
        password: Some(&[0xff, 0x00, 0x80]),
        ..fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, "")
    };
    assert_refused(
        &binary,
        &VerifyOptions::default(),
        AuthError::PasswordNotHex,
    );
    // A SHA-1 length digest where the client id says hmacsha256.
    assert_refused(
        &fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, NODE_PASSWORD),
        &VerifyOptions::default(),
        AuthError::PasswordWrongLength {
            method: SignMethod::HmacSha256,
            expected: 64,
            found: 40,
        },
    );
    assert_refused(
        &fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, ""),
        &VerifyOptions::default(),
        AuthError::PasswordWrongLength {
            method: SignMethod::HmacSha256,
            expected: 64,
            found: 0,
        },
    );
    // No signmethod: the hmacmd5 length applies.
    assert_refused(
        &fields(MD5_DEFAULT_CLIENT_ID, MD5_DEFAULT_USERNAME, NODE_PASSWORD),
        &VerifyOptions::default(),
        AuthError::PasswordWrongLength {
            method: SignMethod::HmacMd5,
            expected: 32,
            found: 40,
        },
    );
}

#[test]
fn unknown_devices_and_wrong_signatures_are_refused_with_code_5() {
    let c_sdk = DeviceIdentity::new("a1TestPK001", "dev-001");
    assert_refused(
        &fields(C_SDK_CLIENT_ID, "dev-002&a1TestPK001", C_SDK_PASSWORD),
        &VerifyOptions::default(),
        AuthError::UnknownDevice(DeviceIdentity::new("a1TestPK001", "dev-002")),
    );
    assert_refused(
        &fields(C_SDK_CLIENT_ID, "dev-001&a1OtherPK01", C_SDK_PASSWORD),
        &VerifyOptions::default(),
        AuthError::UnknownDevice(DeviceIdentity::new("a1OtherPK01", "dev-001")),
    );
    // Signed with another secret.
    let wrong_secret = sign(
        &c_sdk,
        &DeviceSecret::new("not-the-secret"),
        SignMethod::HmacSha256,
        "a1TestPK001.dev-001",
        Some("2524608000000"),
        SecureMode::Tls,
    );
    assert_refused(
        &fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, &wrong_secret.password),
        &VerifyOptions::default(),
        AuthError::SignatureMismatch(c_sdk.clone()),
    );
    // The right digest, but the signed fields changed: the timestamp, then the id part.
    let other_timestamp = C_SDK_CLIENT_ID.replace("2524608000000", "2524608000001");
    assert_refused(
        &fields(&other_timestamp, C_SDK_USERNAME, C_SDK_PASSWORD),
        &VerifyOptions::default(),
        AuthError::SignatureMismatch(c_sdk.clone()),
    );
    let other_id = C_SDK_CLIENT_ID.replace("a1TestPK001.dev-001|", "a1TestPK001.dev-002|");
    assert_refused(
        &fields(&other_id, C_SDK_USERNAME, C_SDK_PASSWORD),
        &VerifyOptions::default(),
        AuthError::SignatureMismatch(c_sdk.clone()),
    );
    // Another device's valid credentials under this device's username.
    assert_refused(
        &fields(NODE_CLIENT_ID, C_SDK_USERNAME, NODE_PASSWORD),
        &VerifyOptions::default(),
        AuthError::SignatureMismatch(c_sdk),
    );
}

#[test]
fn the_timestamp_check_refuses_what_it_must() {
    let connect = fields(C_SDK_CLIENT_ID, C_SDK_USERNAME, C_SDK_PASSWORD);
    let late = VerifyOptions {
        max_timestamp_skew_ms: Some(60_000),
        now_ms: Some(2_524_608_060_001),
    };
    assert_refused(
        &connect,
        &late,
        AuthError::TimestampOutOfWindow {
            timestamp_ms: 2_524_608_000_000,
            now_ms: 2_524_608_060_001,
            max_skew_ms: 60_000,
        },
    );
    let no_clock = VerifyOptions {
        max_timestamp_skew_ms: Some(60_000),
        now_ms: None,
    };
    assert_refused(&connect, &no_clock, AuthError::ClockNotGiven);
    assert_eq!(
        AuthError::ClockNotGiven.connack_code(),
        RefusalCode::ServerUnavailable
    );

    let on = VerifyOptions {
        max_timestamp_skew_ms: Some(60_000),
        now_ms: Some(1_700_000_000_000),
    };
    assert_refused(
        &fields(
            MD5_DEFAULT_CLIENT_ID,
            MD5_DEFAULT_USERNAME,
            MD5_DEFAULT_PASSWORD,
        ),
        &on,
        AuthError::MissingTimestamp,
    );
    let identity = DeviceIdentity::new("a1Md5PK0001", "dev-md5");
    let secret = DeviceSecret::new(MD5_DEFAULT_SECRET);
    let odd = sign(
        &identity,
        &secret,
        SignMethod::HmacMd5,
        "odd",
        Some("soon"),
        SecureMode::Tcp,
    );
    assert_refused(
        &fields(&odd.client_id, &odd.username, &odd.password),
        &on,
        AuthError::TimestampNotDecimal("soon".into()),
    );
    // Off by default: the same CONNECT passes.
    assert!(verify_default(&fields(&odd.client_id, &odd.username, &odd.password)).is_ok());
}

#[test]
fn registries_behind_references_boxes_and_arcs_verify_alike() {
    let connect = fields(NODE_CLIENT_ID, NODE_USERNAME, NODE_PASSWORD);
    let options = VerifyOptions::default();
    let shared = Arc::new(registry());
    let boxed: Box<dyn DeviceRegistry> = Box::new(registry());
    assert!(verify(&connect, &shared, &options).is_ok());
    assert!(verify(&connect, &&*shared, &options).is_ok());
    assert!(verify(&connect, &boxed, &options).is_ok());
    assert!(verify(&connect, boxed.as_ref(), &options).is_ok());
}

fn product_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,20}"
}

fn device_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:@-]{1,32}"
}

fn sign_method() -> impl Strategy<Value = SignMethod> {
    prop::sample::select(SignMethod::ALL.to_vec())
}

fn secure_mode() -> impl Strategy<Value = SecureMode> {
    prop::sample::select(vec![SecureMode::Tls, SecureMode::Tcp])
}

fn registry_with(identity: &DeviceIdentity, secret: &DeviceSecret) -> MemoryRegistry {
    let mut registry = MemoryRegistry::new();
    registry.add_product(&identity.product_key, ProductCategories::defaults());
    registry
        .add_device(&identity.product_key, &identity.device_name, secret.clone())
        .unwrap();
    registry
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips(
        product_key in product_key(),
        device_name in device_name(),
        secret in "\\PC{0,100}",
        method in sign_method(),
        mode in secure_mode(),
        client_id in "[^|]{1,64}",
        timestamp in proptest::option::of("[0-9]{1,13}"),
    ) {
        let identity = DeviceIdentity::new(product_key, device_name);
        let secret = DeviceSecret::new(secret);
        let registry = registry_with(&identity, &secret);
        let credentials = sign(&identity, &secret, method, &client_id, timestamp.as_deref(), mode);
        let verified = verify(
            &fields(&credentials.client_id, &credentials.username, &credentials.password),
            &registry,
            &VerifyOptions::default(),
        );
        let verified = verified.map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(&verified.identity, &identity);
        prop_assert_eq!(&verified.client_id.id, &client_id);
        prop_assert_eq!(verified.client_id.sign_method, Some(method));
        prop_assert_eq!(verified.client_id.secure_mode, Some(mode));
        prop_assert_eq!(verified.client_id.timestamp, timestamp);

        // Uppercase hex verifies too.
        let upper = credentials.password.to_ascii_uppercase();
        let upper_fields = fields(&credentials.client_id, &credentials.username, &upper);
        prop_assert!(verify(&upper_fields, &registry, &VerifyOptions::default()).is_ok());
    }

    #[test]
    fn sign_request_then_verify_round_trips(
        product_key in product_key(),
        device_name in device_name(),
        secret in "\\PC{0,100}",
        method in sign_method(),
        mode in secure_mode(),
        timestamp in proptest::option::of("[0-9]{10,13}"),
        extra in proptest::collection::vec(("_[a-z]{1,6}", "[A-Za-z0-9.]{0,8}"), 0..4),
    ) {
        let identity = DeviceIdentity::new(product_key, device_name);
        let secret = DeviceSecret::new(secret);
        let registry = registry_with(&identity, &secret);
        let mut request = SignRequest::new(&identity, &secret, mode).method(method);
        if let Some(timestamp) = &timestamp {
            request = request.timestamp(timestamp.as_str());
        }
        let mut seen = Vec::new();
        for (key, value) in &extra {
            if !seen.contains(key) {
                seen.push(key.clone());
                request = request.param(key.as_str(), value.as_str());
            }
        }
        let credentials = request.sign().map_err(|error| TestCaseError::fail(error.to_string()))?;
        let verified = verify(
            &fields(&credentials.client_id, &credentials.username, &credentials.password),
            &registry,
            &VerifyOptions::default(),
        ).map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(
            &verified.client_id.id,
            &format!("{}.{}", identity.product_key, identity.device_name)
        );
        for key in &seen {
            prop_assert!(verified.client_id.param(key).is_some());
        }
    }

    #[test]
    fn any_changed_digit_of_the_password_is_a_mismatch(
        method in sign_method(),
        secret in "[a-zA-Z0-9]{1,40}",
        position in any::<prop::sample::Index>(),
    ) {
        let identity = DeviceIdentity::new("pk", "dn");
        let secret = DeviceSecret::new(secret);
        let registry = registry_with(&identity, &secret);
        let credentials = sign(&identity, &secret, method, "id", Some("1"), SecureMode::Tcp);
        let mut password = credentials.password.into_bytes();
        let at = position.index(password.len());
        password[at] = if password[at] == b'0' { b'1' } else { b'0' };
        let password = String::from_utf8(password).unwrap();
        let error = verify(
            &fields(&credentials.client_id, &credentials.username, &password),
            &registry,
            &VerifyOptions::default(),
        ).unwrap_err();
        prop_assert_eq!(error.connack_code(), RefusalCode::NotAuthorized);
        prop_assert_eq!(error, AuthError::SignatureMismatch(identity));
    }
}

/// A registry of one device that registered without pre-registration and holds a token.
struct TokenRegistry;

impl DeviceRegistry for TokenRegistry {
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<aliot_auth::DeviceRecord> {
        ((product_key, device_name) == ("a1DynReg0001", "factory-17")).then(|| {
            aliot_auth::DeviceRecord {
                secret: DeviceSecret::new("unused-device-secret"),
                categories: Arc::new(ProductCategories::defaults()),
                token: Some(DeviceSecret::new("tok3n-from-regnwl")),
                iot_id: None,
            }
        })
    }
}

#[test]
fn the_token_login_after_regnwl_takes_the_token_as_password() {
    // The Python SDK's connwl client id, built from the pushed clientId.
    let client_id =
        "a1DynReg0001.factory-17|authType=connwl,securemode=-2,_ss=1,ext=3,lan=Python,_v=1.2.13|";
    let login = |password: &'static str, username: &'static str| {
        verify(
            &ConnectFields {
                client_id,
                username: Some(username),
                password: Some(password.as_bytes()),
            },
            &TokenRegistry,
            &VerifyOptions::default(),
        )
    };
    let verified = login("tok3n-from-regnwl", "factory-17&a1DynReg0001").unwrap();
    assert_eq!(
        verified.identity,
        DeviceIdentity::new("a1DynReg0001", "factory-17")
    );
    assert_eq!(
        verified.client_id.secure_mode,
        Some(SecureMode::Registration)
    );
    assert!(verified.client_id.auto_subscribe());

    let wrong = login("tok3n-from-regnwm", "factory-17&a1DynReg0001").unwrap_err();
    assert!(matches!(wrong, AuthError::SignatureMismatch(_)));
    assert_eq!(wrong.connack_code(), RefusalCode::NotAuthorized);
    let unknown = login("tok3n-from-regnwl", "factory-18&a1DynReg0001").unwrap_err();
    assert!(matches!(unknown, AuthError::UnknownDevice(_)));
}

#[test]
fn a_device_without_a_token_cannot_log_in_with_one_and_a_registration_is_not_a_login() {
    let mut registry = MemoryRegistry::new();
    registry.add_product("a1DynReg0001", ProductCategories::defaults());
    registry
        .add_device("a1DynReg0001", "factory-17", DeviceSecret::new("s"))
        .unwrap();
    let fields = |client_id| ConnectFields {
        client_id,
        username: Some("factory-17&a1DynReg0001"),
        password: Some(b"s"),
    };
    let no_token = verify(
        &fields("x|authType=connwl,securemode=-2|"),
        &registry,
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(no_token, AuthError::NoToken(_)));
    assert_eq!(no_token.connack_code(), RefusalCode::NotAuthorized);
    let registration = verify(
        &fields("x|random=1,authType=register,securemode=2|"),
        &registry,
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        registration,
        AuthError::RegistrationNotLogin(aliot_auth::AuthType::Register)
    );
}
