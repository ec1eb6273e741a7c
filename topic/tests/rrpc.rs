//! The RRPC topic forms of SPEC §4.

use aliot_topic::{
    MessageId, ParseMessageIdError, RrpcTopic, rrpc_custom_filter, rrpc_custom_topic,
    rrpc_request_filter, rrpc_request_topic, rrpc_response_topic,
};

#[test]
fn message_ids_are_canonical_decimal() {
    assert_eq!("0".parse(), Ok(MessageId(0)));
    assert_eq!("18446744073709551615".parse(), Ok(MessageId(u64::MAX)));
    assert_eq!(
        "18446744073709551616".parse::<MessageId>(),
        Err(ParseMessageIdError::TooLarge)
    );
    assert_eq!("".parse::<MessageId>(), Err(ParseMessageIdError::Empty));
    assert_eq!(
        "00".parse::<MessageId>(),
        Err(ParseMessageIdError::LeadingZero)
    );
    assert_eq!(
        "-1".parse::<MessageId>(),
        Err(ParseMessageIdError::NotADigit)
    );
    assert_eq!(
        "1 ".parse::<MessageId>(),
        Err(ParseMessageIdError::NotADigit)
    );
    assert_eq!(
        "+".parse::<MessageId>(),
        Err(ParseMessageIdError::NotADigit)
    );
    assert_eq!(MessageId(u64::MAX).to_string(), "18446744073709551615");
}

#[test]
fn the_three_forms_parse_and_print() {
    let request = RrpcTopic::Request {
        product_key: "a1PK",
        device_name: "dev1",
        message_id: MessageId(1539421321846),
    };
    let response = RrpcTopic::Response {
        product_key: "a1PK",
        device_name: "dev1",
        message_id: MessageId(1539421321846),
    };
    let custom = RrpcTopic::Custom {
        message_id: MessageId(5),
        topic: "/a1PK/dev1/user/get",
    };
    for (text, parsed) in [
        ("/sys/a1PK/dev1/rrpc/request/1539421321846", request),
        ("/sys/a1PK/dev1/rrpc/response/1539421321846", response),
        ("/ext/rrpc/5/a1PK/dev1/user/get", custom),
    ] {
        assert_eq!(RrpcTopic::parse(text), Some(parsed), "{text}");
        assert_eq!(parsed.to_string(), text);
    }
    assert_eq!(request.message_id(), MessageId(1539421321846));
    assert_eq!(request.reply(), Some(response));
    assert_eq!(custom.reply(), Some(custom));
    assert_eq!(response.reply(), None);
}

#[test]
fn other_topics_are_not_rrpc() {
    for text in [
        "/sys/pk/dn/rrpc/request/+",
        "/sys/pk/dn/rrpc/request/",
        "/sys/pk/dn/rrpc/request/1/2",
        "/sys/pk/dn/rrpc/call/1",
        "/sys/pk/dn/thing/request/1",
        "/sys/pk/dn/rrpc/request",
        "/sys//dn/rrpc/request/1",
        "/sys/pk//rrpc/request/1",
        "/sys/+/dn/rrpc/request/1",
        "/sys/pk/#/rrpc/request/1",
        "/sys/pk/dn/rrpc/request/01",
        "/ext/rrpc/+/pk/dn/user/get",
        "/ext/rrpc/5",
        "/ext/rrpc//pk",
        "/ext/rrpc/x5/pk",
        "/ext/session/pk/dn/x",
        "sys/pk/dn/rrpc/request/1",
        "/pk/dn/user/get",
    ] {
        assert_eq!(RrpcTopic::parse(text), None, "{text}");
    }
}

#[test]
fn builders() {
    assert_eq!(
        rrpc_request_topic("pk", "dn", MessageId(3)),
        "/sys/pk/dn/rrpc/request/3"
    );
    assert_eq!(
        rrpc_response_topic("pk", "dn", MessageId(3)),
        "/sys/pk/dn/rrpc/response/3"
    );
    assert_eq!(
        rrpc_custom_topic(MessageId(3), "/pk/dn/user/get"),
        "/ext/rrpc/3/pk/dn/user/get"
    );
    assert_eq!(rrpc_request_filter("pk", "dn"), "/sys/pk/dn/rrpc/request/+");
    assert_eq!(
        rrpc_custom_filter("/pk/dn/user/get"),
        "/ext/rrpc/+/pk/dn/user/get"
    );
}
