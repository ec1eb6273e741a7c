//! Topic names and filters from arbitrary bytes: validation agrees with a reference written
//! here, matching agrees with a reference matcher, what is accepted round-trips, and the
//! subscription index routes the pair exactly as the filter matches.
//!
//! Input: one byte choosing the length limit, then the filter bytes, a 0xFE separator, and the
//! name bytes.
#![no_main]

use aliot_topic::{
    MessageId, RrpcTopic, SubscriptionIndex, TopicError, TopicFilter, TopicLimits, TopicName,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// The validation rules, one check per rule in the documented order.
fn reference_validate(bytes: &[u8], is_filter: bool, max_len: usize) -> Result<(), TopicError> {
    if bytes.is_empty() {
        return Err(TopicError::Empty);
    }
    if bytes.len() > max_len {
        return Err(TopicError::TooLong {
            len: bytes.len(),
            max: max_len,
        });
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(TopicError::InvalidUtf8);
    };
    if text.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    let levels: Vec<&str> = text.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if !level.contains(['+', '#']) {
            continue;
        }
        if !is_filter {
            return Err(TopicError::WildcardInName);
        }
        let last = i + 1 == levels.len();
        if !(*level == "+" || (*level == "#" && last)) {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// MQTT matching by its definition (see the crate's property tests for the same idea).
fn reference_matches(filter: &str, name: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    if name.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    let level_ok = |(fl, nl): (&&str, &&str)| *fl == "+" || fl == nl;
    match f.split_last() {
        Some((&"#", prefix)) => n.len() >= prefix.len() && prefix.iter().zip(&n).all(level_ok),
        _ => f.len() == n.len() && f.iter().zip(&n).all(level_ok),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let limits = TopicLimits::with_max_len(usize::from(limit));
    let (filter_bytes, name_bytes) = match rest.iter().position(|&b| b == 0xFE) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, rest),
    };

    let filter = TopicFilter::from_bytes(Bytes::copy_from_slice(filter_bytes), &limits);
    let name = TopicName::from_bytes(Bytes::copy_from_slice(name_bytes), &limits);
    assert_eq!(
        filter.as_ref().map(|_| ()).map_err(|e| *e),
        reference_validate(filter_bytes, true, limits.max_len),
        "filter {filter_bytes:?}"
    );
    assert_eq!(
        name.as_ref().map(|_| ()).map_err(|e| *e),
        reference_validate(name_bytes, false, limits.max_len),
        "name {name_bytes:?}"
    );

    if let Ok(name) = &name {
        assert_eq!(name.as_bytes(), name_bytes);
        assert_eq!(TopicName::new(name.as_str(), &limits).as_ref(), Ok(name));
        assert!(TopicFilter::from(name.clone()).matches(name));
        if let Some(rrpc) = RrpcTopic::parse(name.as_str()) {
            assert_eq!(rrpc.to_string(), name.as_str());
        }
        if let Ok(id) = name.as_str().parse::<MessageId>() {
            assert_eq!(id.to_string(), name.as_str());
        }
    }
    if let Ok(filter) = &filter {
        assert_eq!(filter.as_bytes(), filter_bytes);
        assert_eq!(
            filter.has_wildcard(),
            filter.levels().any(|level| level == "+" || level == "#")
        );
    }

    if let (Ok(filter), Ok(name)) = (&filter, &name) {
        let expected = reference_matches(filter.as_str(), name.as_str());
        assert_eq!(filter.matches(name), expected, "{filter} vs {name}");

        let mut index = SubscriptionIndex::new();
        index.insert(filter, 1u8, ());
        index.insert(&TopicFilter::from(name.clone()), 2u8, ());
        let mut reached = Vec::new();
        index.for_each_match(name, |&key, ()| reached.push(key));
        reached.sort_unstable();
        let want: &[u8] = if expected { &[1, 2] } else { &[2] };
        assert_eq!(reached, want, "index: {filter} vs {name}");
        assert_eq!(index.remove(filter, &1), Some(()));
        assert_eq!(index.remove(&TopicFilter::from(name.clone()), &2), Some(()));
        assert_eq!(index.node_count(), 1);
    }
});
