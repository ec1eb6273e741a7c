//! Topic name and filter validation and matching, on fixed examples.

use aliot_topic::{DEFAULT_MAX_TOPIC_LEN, TopicError, TopicFilter, TopicLimits, TopicName};
use bytes::Bytes;

fn limits() -> TopicLimits {
    TopicLimits::default()
}

fn name(s: &str) -> TopicName {
    match TopicName::new(s, &limits()) {
        Ok(name) => name,
        Err(error) => panic!("{s:?} should be a valid name: {error}"),
    }
}

fn filter(s: &str) -> TopicFilter {
    match TopicFilter::new(s, &limits()) {
        Ok(filter) => filter,
        Err(error) => panic!("{s:?} should be a valid filter: {error}"),
    }
}

#[test]
fn names_follow_every_rule() {
    let l = limits();
    assert_eq!(TopicName::new("", &l), Err(TopicError::Empty));
    assert_eq!(TopicName::new("a\0b", &l), Err(TopicError::NullCharacter));
    assert_eq!(TopicName::new("a/+", &l), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("a/#", &l), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("a+b", &l), Err(TopicError::WildcardInName));
    let invalid_utf8 = Bytes::from_static(&[b'a', 0xff, b'b']);
    assert_eq!(
        TopicName::from_bytes(invalid_utf8, &l),
        Err(TopicError::InvalidUtf8)
    );
    for ok in ["/", "a", "/a/b", "a//b", "$SYS/x", "空/间", "a b"] {
        assert_eq!(name(ok).as_str(), ok);
    }
}

#[test]
fn length_limit_counts_bytes_and_is_configurable() {
    let at_limit = "a".repeat(DEFAULT_MAX_TOPIC_LEN);
    assert!(TopicName::new(&at_limit, &limits()).is_ok());
    let over = "a".repeat(DEFAULT_MAX_TOPIC_LEN + 1);
    assert_eq!(
        TopicName::new(&over, &limits()),
        Err(TopicError::TooLong { len: 129, max: 128 })
    );
    assert_eq!(
        TopicFilter::new(&over, &limits()),
        Err(TopicError::TooLong { len: 129, max: 128 })
    );
    // 43 three-byte characters are 129 bytes.
    let wide = "空".repeat(43);
    assert_eq!(
        TopicName::new(&wide, &limits()),
        Err(TopicError::TooLong { len: 129, max: 128 })
    );
    let larger = TopicLimits::with_max_len(1024);
    assert!(TopicName::new(&over, &larger).is_ok());
}

#[test]
fn filters_follow_wildcard_placement() {
    let l = limits();
    for ok in ["#", "+", "a/#", "+/+", "/+/b/#", "a//+"] {
        assert_eq!(filter(ok).as_str(), ok);
    }
    for bad in ["a+", "+a", "a#", "#/x", "a/#/b", "a/b+/c", "##"] {
        assert_eq!(
            TopicFilter::new(bad, &l),
            Err(TopicError::MisplacedWildcard),
            "{bad}"
        );
    }
    assert_eq!(TopicFilter::new("", &l), Err(TopicError::Empty));
    assert_eq!(TopicFilter::new("a/\0", &l), Err(TopicError::NullCharacter));
}

#[test]
fn from_bytes_shares_the_buffer() {
    let packet = Bytes::from_static(b"xx/sys/pk/dn/thing/event/property/post");
    let topic = packet.slice(2..);
    let name = TopicName::from_bytes(topic.clone(), &limits()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(name.as_bytes().as_ptr(), topic.as_ptr());
    assert_eq!(name.clone().into_bytes(), topic);
}

#[test]
fn from_static_accepts_valid_literals() {
    assert_eq!(TopicName::from_static("/a/b").as_str(), "/a/b");
    assert_eq!(TopicFilter::from_static("/a/+/#").as_str(), "/a/+/#");
}

#[test]
#[should_panic(expected = "invalid topic name literal")]
fn from_static_panics_on_an_invalid_literal() {
    let _ = TopicName::from_static("a/+");
}

#[test]
fn levels_keep_empty_levels() {
    assert_eq!(name("/a").levels().collect::<Vec<_>>(), ["", "a"]);
    assert_eq!(name("a/").levels().collect::<Vec<_>>(), ["a", ""]);
    assert_eq!(name("/").levels().collect::<Vec<_>>(), ["", ""]);
    assert_eq!(filter("+/#").levels().collect::<Vec<_>>(), ["+", "#"]);
}

#[test]
fn display_and_debug_show_the_string() {
    assert_eq!(name("/a/b").to_string(), "/a/b");
    assert_eq!(format!("{:?}", name("/a/b")), "TopicName(\"/a/b\")");
    assert_eq!(filter("/a/+").to_string(), "/a/+");
    assert_eq!(format!("{:?}", filter("/a/+")), "TopicFilter(\"/a/+\")");
}

#[test]
fn has_wildcard() {
    assert!(filter("a/+").has_wildcard());
    assert!(filter("#").has_wildcard());
    assert!(!filter("a/b").has_wildcard());
    assert!(!TopicFilter::from(name("/x")).has_wildcard());
}

/// The examples of the MQTT 3.1.1 specification, section 4.7.
#[test]
fn matching_follows_the_mqtt_specification() {
    let cases: &[(&str, &str, bool)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("#", "$SYS/monitor/Clients", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("#", "/anything/at/all", true),
        ("a/b", "a/b", true),
        ("a/b", "A/b", false),
    ];
    for &(f, n, expected) in cases {
        assert_eq!(filter(f).matches(&name(n)), expected, "{f} vs {n}");
    }
}

#[test]
fn ordering_and_hashing_follow_the_text() {
    use std::collections::HashSet;
    let mut set = HashSet::new();
    set.insert(name("/a"));
    assert!(set.contains(&name("/a")));
    assert!(name("/a") < name("/b"));
    assert!(filter("/a/+") < filter("/a/b"));
}
