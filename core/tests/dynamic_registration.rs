//! Dynamic registration over MQTT (PLATFORM-PROTOCOLS §2.1–2.3) as whole conversations: the
//! connection asks whoever keeps the registry, sends CONNACK and the grant together, keeps the
//! device only for a grace time, and lets it do nothing but ping and disconnect. The registrar
//! here checks the proof with the real `RegistrationRequest::sign_matches`.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use aliot_auth::{
    DeviceIdentity, RegistrationKind, RegistrationRefused, RegistrationRequest, SignMethod,
    registration_sign,
};
use aliot_core::Refusal;
use aliot_core::codec::{
    Connect, ConnectReturnCode, Packet, ProtocolVersion, QoS, SubAckReturnCode, Utf8Bytes,
};
use aliot_core::registration::{REGISTRATION_GRACE, RegistrationGrant, token_client_id};
use aliot_core::server::Command;
use bytes::Bytes;
use support::*;

const PRODUCT_SECRET: &[u8] = b"product-secret-of-a1TestProd";

/// A registration CONNECT as the Python SDK makes it (`random` of 15 characters, hmacsha256,
/// the proof in `password`), with the secret given.
fn registration_connect(device_name: &str, auth_type: &str, secret: &[u8]) -> Packet {
    let random = "Q2x9ZmR0bGtLcjc";
    let sign = registration_sign(
        secret,
        &identity(device_name),
        random,
        SignMethod::HmacSha256,
    );
    Packet::from(Connect {
        protocol: ProtocolVersion::V3_1_1,
        client_id: Utf8Bytes::try_from(format!(
            "{device_name}.{PK}|random={random},authType={auth_type},securemode=2,signmethod=hmacsha256|"
        ))
        .unwrap(),
        clean_session: true,
        keep_alive: 60,
        username: Some(Utf8Bytes::try_from(format!("{device_name}&{PK}")).unwrap()),
        password: Some(Bytes::from(sign)),
        will: None,
    })
}

/// A broker over TLS whose registrar grants `register` a secret and `regnwl` a token when the
/// proof is the product secret's, and records every request it was asked.
fn registering_broker() -> (Broker, Rc<RefCell<Vec<RegistrationRequest>>>) {
    let mut broker = Broker::new(&["dev-1"]);
    broker.tls = true;
    let asked = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&asked);
    broker.registrar = Some(Box::new(move |request: &RegistrationRequest| {
        seen.borrow_mut().push(request.clone());
        if !request.sign_matches(PRODUCT_SECRET) {
            return Command::Refuse(Refusal::registration(RegistrationRefused::BadSign));
        }
        Command::Registered(match request.kind {
            RegistrationKind::PreRegistered => {
                RegistrationGrant::secret(&request.identity, "new-secret")
            }
            RegistrationKind::WithoutPreRegistration => RegistrationGrant::token(
                &request.identity,
                &token_client_id(&request.identity),
                "the-token",
            ),
        })
    }));
    (broker, asked)
}

fn pushed(packets: &[Packet]) -> (ConnectReturnCode, String, serde_json::Value) {
    match packets {
        [Packet::ConnAck(ack), Packet::Publish(push)] => (
            ack.code,
            push.topic.as_str().to_owned(),
            serde_json::from_slice(&push.payload).unwrap(),
        ),
        other => panic!("expected CONNACK and the grant in one write, got {other:?}"),
    }
}

#[test]
fn a_pre_registered_device_gets_its_secret_right_after_connack_and_is_closed_after_the_grace() {
    let (mut broker, asked) = registering_broker();
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-1", "register", PRODUCT_SECRET),
    );
    let (code, topic, payload) = pushed(&broker.output(conn));
    assert_eq!(code, ConnectReturnCode::Accepted);
    assert_eq!(topic, "/ext/register");
    assert_eq!(
        payload,
        serde_json::json!({"productKey": PK, "deviceName": "dev-1", "deviceSecret": "new-secret"})
    );
    let request = &asked.borrow()[0];
    assert_eq!(request.identity, DeviceIdentity::new(PK, "dev-1"));
    assert_eq!(request.kind, RegistrationKind::PreRegistered);
    assert_eq!(request.client_id, format!("dev-1.{PK}"));
    // No session: the hub never saw the device.
    assert!(!broker.hub.is_online(&identity("dev-1")));
    assert_eq!(broker.hub.session_count(), 0);

    // It may ping while it reads its grant; at the end of the grace time it is closed.
    broker.advance(REGISTRATION_GRACE - Duration::from_millis(1));
    broker.send(conn, Packet::PingReq);
    assert_eq!(broker.output(conn), vec![Packet::PingResp]);
    assert!(!broker.is_closed(conn));
    broker.advance(Duration::from_millis(1));
    assert!(broker.is_closed(conn));
    assert_eq!(
        broker.close_reason(conn),
        Some("registered: the device was given its credentials")
    );
    assert_eq!(broker.hub.counters().closed.registered, 1);
}

#[test]
fn a_device_that_disconnects_on_receipt_closes_at_once() {
    let (mut broker, _) = registering_broker();
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-1", "regnwl", PRODUCT_SECRET),
    );
    let (_, topic, payload) = pushed(&broker.output(conn));
    assert_eq!(topic, "/ext/regnwl");
    assert_eq!(
        payload,
        serde_json::json!({
            "clientId": format!("{PK}.dev-1"),
            "productKey": PK,
            "deviceName": "dev-1",
            "deviceToken": "the-token",
        })
    );
    broker.send(conn, Packet::Disconnect);
    assert!(broker.is_closed(conn));
    assert_eq!(broker.close_reason(conn), Some("client disconnected"));
}

#[test]
fn a_registration_connection_may_not_subscribe_or_publish() {
    let (mut broker, _) = registering_broker();
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-1", "register", PRODUCT_SECRET),
    );
    pushed(&broker.output(conn));
    // A SUBSCRIBE (an SDK may send one as it connects) is refused, not closed on.
    broker.send(
        conn,
        subscribe(
            1,
            &[
                ("/ext/register", QoS::AtMostOnce),
                ("/a1TestProd/dev-1/user/get", QoS::AtLeastOnce),
            ],
        ),
    );
    match broker.output(conn).as_slice() {
        [Packet::SubAck(suback)] => assert_eq!(
            suback.return_codes,
            vec![SubAckReturnCode::Failure, SubAckReturnCode::Failure]
        ),
        other => panic!("expected a SUBACK, got {other:?}"),
    }
    assert!(!broker.is_closed(conn));
    broker.send(
        conn,
        publish("/a1TestProd/dev-1/user/update", "x", QoS::AtLeastOnce, 2),
    );
    assert!(broker.is_closed(conn));
    assert_eq!(
        broker.close_reason(conn),
        Some("protocol violation: PUBLISH on a dynamic registration connection")
    );
    assert_eq!(broker.hub.counters().messages_in, 0);
}

#[test]
fn a_refused_registration_gets_connack_5_and_nothing_else() {
    let (mut broker, _) = registering_broker();
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-1", "register", b"a wrong secret"),
    );
    match broker.output(conn).as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(ack.code, ConnectReturnCode::NotAuthorized),
        other => panic!("expected only CONNACK 5, got {other:?}"),
    }
    assert!(broker.is_closed(conn));
    let reason = broker.close_reason(conn).unwrap();
    assert!(reason.contains("iot.auth.SignCheckError"), "{reason}");
    assert_eq!(broker.hub.counters().connections_refused[5], 1);
}

#[test]
fn registration_over_plain_tcp_is_refused_before_the_registry_is_asked() {
    let (mut broker, asked) = registering_broker();
    broker.tls = false;
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-1", "register", PRODUCT_SECRET),
    );
    match broker.output(conn).as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(ack.code, ConnectReturnCode::NotAuthorized),
        other => panic!("expected only CONNACK 5, got {other:?}"),
    }
    assert!(broker.close_reason(conn).unwrap().contains("needs TLS"));
    assert!(asked.borrow().is_empty());
}

#[test]
fn registration_over_tls_psk_is_refused_before_the_registry_is_asked() {
    let (mut broker, asked) = registering_broker();
    // The handshake proved dev-1: a device with a key registers nobody.
    broker.psk_device = Some(std::sync::Arc::new(identity("dev-1")));
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-2", "register", PRODUCT_SECRET),
    );
    match broker.output(conn).as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(ack.code, ConnectReturnCode::NotAuthorized),
        other => panic!("expected only CONNACK 5, got {other:?}"),
    }
    assert!(
        broker
            .close_reason(conn)
            .unwrap()
            .contains("pre-shared key")
    );
    assert!(asked.borrow().is_empty());
}

#[test]
fn a_broker_without_a_registry_refuses_registration_with_code_3() {
    let mut broker = Broker::new(&["dev-1"]);
    broker.tls = true;
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-1", "regnwl", PRODUCT_SECRET),
    );
    match broker.output(conn).as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(ack.code, ConnectReturnCode::ServerUnavailable),
        other => panic!("expected only CONNACK 3, got {other:?}"),
    }
    assert!(broker.is_closed(conn));
}

#[test]
fn a_registration_never_answered_times_out_like_a_connect() {
    let mut broker = Broker::new(&["dev-1"]);
    broker.tls = true;
    // A registrar that never answers (a store that never commits).
    broker.registrar = Some(Box::new(|_: &RegistrationRequest| {
        Command::Deliver(aliot_core::server::Delivery {
            message: aliot_core::Message::new(
                aliot_topic::TopicName::new("/x", &Default::default()).unwrap(),
                Bytes::new(),
                QoS::AtMostOnce,
            ),
            packet_id: None,
            dup: false,
        })
    }));
    let conn = broker.accept();
    broker.send(
        conn,
        registration_connect("dev-1", "register", PRODUCT_SECRET),
    );
    broker.advance(Duration::from_secs(10));
    assert!(broker.is_closed(conn));
    assert_eq!(
        broker.close_reason(conn),
        Some("no CONNECT within the connect timeout")
    );
}

#[test]
fn malformed_registrations_are_refused_with_the_codes_of_any_connect() {
    let (mut broker, asked) = registering_broker();
    let conn = broker.accept();
    let Packet::Connect(mut connect) = registration_connect("dev-1", "register", PRODUCT_SECRET)
    else {
        unreachable!()
    };
    connect.client_id =
        Utf8Bytes::try_from("dev-1.a1TestProd|authType=register,signmethod=hmacsha256|").unwrap();
    broker.send(conn, Packet::Connect(connect.clone()));
    match broker.output(conn).as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(ack.code, ConnectReturnCode::IdentifierRejected),
        other => panic!("expected CONNACK 2 for a missing random, got {other:?}"),
    }
    let conn = broker.accept();
    connect.client_id =
        Utf8Bytes::try_from("dev-1.a1TestProd|random=1,authType=register|").unwrap();
    connect.password = Some(Bytes::from_static(b"not hex"));
    broker.send(conn, Packet::Connect(connect));
    match broker.output(conn).as_slice() {
        [Packet::ConnAck(ack)] => {
            assert_eq!(ack.code, ConnectReturnCode::BadUserNameOrPassword)
        }
        other => panic!("expected CONNACK 4 for a proof not in hex, got {other:?}"),
    }
    assert!(asked.borrow().is_empty());
}
