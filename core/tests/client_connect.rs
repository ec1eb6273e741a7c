//! The device client's CONNECT, CONNACK and their failures, against a scripted broker.

mod client_broker;

use core::time::Duration;

use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignRequest};
use aliot_core::client::{
    ClientConfig, Credentials, CredentialsError, DEFAULT_CONNECT_TIMEOUT, DisconnectReason, Event,
    ProtocolViolation,
};
use aliot_core::codec::{ConnAck, ConnectReturnCode, Packet, PacketType, ProtocolVersion, QoS};
use client_broker::{Harness, config, topic};

#[test]
fn connect_writes_the_platform_credentials_and_settings() {
    let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
    let secret = DeviceSecret::new("0123456789abcdef0123456789abcdef");
    let signed = SignRequest::new(&identity, &secret, SecureMode::Tls)
        .timestamp("2524608000000")
        .sign()
        .expect("signs");
    let credentials = Credentials::try_from(signed.clone()).expect("valid credentials");
    let mut config = ClientConfig::new(credentials).with_identity(identity);
    config.clean_session = false;
    config.keep_alive_secs = 300;
    let mut harness = Harness::new(config);

    harness.conn.connect(harness.now);
    let sent = harness.sent();
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("expected one CONNECT, got {sent:?}");
    };
    assert_eq!(connect.protocol, ProtocolVersion::V3_1_1);
    assert_eq!(connect.client_id.as_str(), signed.client_id);
    assert_eq!(
        connect.username.as_ref().map(|name| name.as_str()),
        Some("dev-001&a1TestPK001")
    );
    assert_eq!(
        connect.password.as_deref(),
        Some(signed.password.as_bytes())
    );
    assert!(!connect.clean_session);
    assert_eq!(connect.keep_alive, 300);
    assert_eq!(connect.will, None);
    assert!(!harness.conn.is_connected());
}

#[test]
fn connect_for_a_generic_broker_with_mqtt_3_1_and_no_login() {
    let mut config = ClientConfig::new(Credentials::anonymous("tool-1").expect("valid"));
    config.protocol = ProtocolVersion::V3_1;
    config.keep_alive_secs = 0;
    let mut harness = Harness::new(config);

    harness.conn.connect(harness.now);
    let sent = harness.sent();
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("expected one CONNECT, got {sent:?}");
    };
    assert_eq!(connect.protocol, ProtocolVersion::V3_1);
    assert_eq!(connect.client_id, "tool-1");
    assert_eq!(connect.username, None);
    assert_eq!(connect.password, None);
    assert!(connect.clean_session, "clean session is the default");
    assert_eq!(connect.keep_alive, 0);
}

#[test]
fn credentials_refuse_what_a_connect_cannot_carry() {
    assert!(matches!(
        Credentials::anonymous("nul\0inside"),
        Err(CredentialsError::ClientId(_))
    ));
    assert!(matches!(
        Credentials::with_username("id", "bad\0name"),
        Err(CredentialsError::Username(_))
    ));
    assert!(matches!(
        Credentials::with_password("id", "user", vec![0_u8; 65_536]),
        Err(CredentialsError::PasswordTooLong { len: 65_536, .. })
    ));
    let credentials = Credentials::with_password("id", "user", "hunter2").expect("valid");
    assert!(
        !format!("{credentials:?}").contains("hunter2"),
        "Debug hides the password"
    );
}

#[test]
fn connack_accepted_without_a_session() {
    let mut harness = Harness::new(config());
    let (sent, events) = harness.connect(false);
    assert!(sent.is_empty());
    assert!(events.is_empty());
    assert!(harness.conn.is_connected());
}

#[test]
fn connack_accepted_with_the_session_present() {
    let mut config = config();
    config.clean_session = false;
    let mut harness = Harness::new(config);
    let (sent, events) = harness.connect(true);
    assert!(sent.is_empty());
    assert!(events.is_empty());
    assert!(harness.conn.is_connected());
}

#[test]
fn every_refusal_code_is_reported_then_the_connection_ends() {
    for code in [
        ConnectReturnCode::UnacceptableProtocolVersion,
        ConnectReturnCode::IdentifierRejected,
        ConnectReturnCode::ServerUnavailable,
        ConnectReturnCode::BadUserNameOrPassword,
        ConnectReturnCode::NotAuthorized,
    ] {
        let mut harness = Harness::new(config());
        harness.conn.connect(harness.now);
        harness.sent();
        harness.deliver(ConnAck {
            session_present: false,
            code,
        });
        assert_eq!(
            harness.events(),
            [
                Event::ConnectRefused(code),
                Event::Disconnected(DisconnectReason::Refused(code))
            ]
        );
        assert!(!harness.conn.is_connected());
        assert_eq!(harness.conn.poll_timeout(), None);
        // The transport is to be closed: nothing more is read from it or reported.
        harness.deliver(Packet::PingResp);
        harness.conn.handle_transport_closed(harness.now);
        assert!(harness.events().is_empty());
        assert!(harness.sent().is_empty());
    }
}

#[test]
fn commands_before_connack_wait_for_it() {
    let mut harness = Harness::new(config());
    let first = harness.publish_qos1(b"one");
    harness
        .conn
        .publish(topic("update"), &b"two"[..], QoS::AtMostOnce, harness.now)
        .expect("accepted");
    harness.conn.connect(harness.now);
    let sent = harness.sent();
    assert!(matches!(sent.as_slice(), [Packet::Connect(_)]), "{sent:?}");
    assert_eq!(harness.conn.queued_len(), 2);

    harness.deliver(ConnAck {
        session_present: false,
        code: ConnectReturnCode::Accepted,
    });
    let sent = harness.sent();
    let published = client_broker::publishes(&sent);
    assert_eq!(
        published,
        [
            (Some(first.get()), false, bytes::Bytes::from_static(b"one")),
            (None, false, bytes::Bytes::from_static(b"two")),
        ]
    );
    assert_eq!(harness.conn.queued_len(), 0);
    assert_eq!(harness.conn.in_flight_len(), 1);
}

#[test]
fn no_connack_within_the_connect_timeout_ends_the_connection() {
    let mut harness = Harness::new(config());
    harness.conn.connect(harness.now);
    harness.sent();
    assert_eq!(
        harness.conn.poll_timeout(),
        Some(harness.now + DEFAULT_CONNECT_TIMEOUT)
    );

    harness.advance(DEFAULT_CONNECT_TIMEOUT - Duration::from_millis(1));
    harness.conn.handle_timeout(harness.now);
    assert!(harness.events().is_empty(), "not yet");

    harness.advance(Duration::from_millis(1));
    harness.conn.handle_timeout(harness.now);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ConnectTimeout)]
    );
    assert_eq!(harness.conn.poll_timeout(), None);
}

#[test]
fn a_packet_before_connack_is_a_protocol_violation() {
    let mut harness = Harness::new(config());
    harness.conn.connect(harness.now);
    harness.sent();
    harness.deliver(Packet::PingResp);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::UnexpectedPacket(PacketType::PingResp)
        ))]
    );
}

#[test]
fn a_second_connack_is_a_protocol_violation() {
    let mut harness = Harness::connected(config());
    harness.deliver(ConnAck {
        session_present: false,
        code: ConnectReturnCode::Accepted,
    });
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::UnexpectedPacket(PacketType::ConnAck)
        ))]
    );
    assert!(!harness.conn.is_connected());
}

#[test]
fn session_present_on_a_clean_session_is_a_protocol_violation() {
    let mut harness = Harness::new(config());
    harness.conn.connect(harness.now);
    harness.sent();
    harness.deliver(ConnAck {
        session_present: true,
        code: ConnectReturnCode::Accepted,
    });
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::SessionPresentOnCleanSession
        ))]
    );
}

#[test]
fn packets_a_broker_never_sends_are_protocol_violations() {
    for (packet, packet_type) in [
        (Packet::PingReq, PacketType::PingReq),
        (Packet::Disconnect, PacketType::Disconnect),
    ] {
        let mut harness = Harness::connected(config());
        harness.deliver(packet);
        assert_eq!(
            harness.events(),
            [Event::Disconnected(DisconnectReason::ProtocolViolation(
                ProtocolViolation::UnexpectedPacket(packet_type)
            ))]
        );
    }
}

#[test]
fn disconnect_writes_disconnect_and_reports_it_once() {
    let mut harness = Harness::connected(config());
    harness.conn.disconnect(harness.now);
    assert_eq!(harness.sent(), [Packet::Disconnect]);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ClientRequested)]
    );
    harness.conn.handle_transport_closed(harness.now);
    harness.conn.disconnect(harness.now);
    assert!(harness.events().is_empty());
    assert!(harness.sent().is_empty());
    assert_eq!(harness.conn.poll_timeout(), None);
}

#[test]
fn transport_closed_is_reported_and_connect_again_starts_over() {
    let mut harness = Harness::connected(config());
    harness.conn.handle_transport_closed(harness.now);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::TransportClosed)]
    );
    assert!(!harness.conn.is_connected());
    let (sent, events) = harness.connect(false);
    assert!(sent.is_empty() && events.is_empty());
    assert!(harness.conn.is_connected());
}

#[test]
fn connect_while_connected_ends_the_old_transport_first() {
    let mut harness = Harness::connected(config());
    harness.conn.connect(harness.now);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::TransportClosed)]
    );
    let sent = harness.sent();
    assert!(matches!(sent.as_slice(), [Packet::Connect(_)]), "{sent:?}");
}
