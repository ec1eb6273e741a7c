//! The subscription index on fixed examples.

use aliot_topic::{SubscriptionIndex, TopicFilter, TopicLimits, TopicName};

fn name(s: &str) -> TopicName {
    TopicName::new(s, &TopicLimits::default()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s, &TopicLimits::default()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn matches(index: &SubscriptionIndex<u32, char>, topic: &str) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    index.for_each_match(&name(topic), |&key, &value| found.push((key, value)));
    found.sort_unstable();
    found
}

#[test]
fn insert_replaces_and_remove_returns_the_value() {
    let mut index = SubscriptionIndex::new();
    assert!(index.is_empty());
    assert_eq!(index.insert(&filter("/a/b"), 1u32, 'x'), None);
    assert_eq!(index.insert(&filter("/a/b"), 1, 'y'), Some('x'));
    assert_eq!(index.insert(&filter("/a/b"), 2, 'z'), None);
    assert_eq!(index.len(), 2);
    assert_eq!(index.get(&filter("/a/b"), &1), Some(&'y'));
    assert_eq!(index.get(&filter("/a/+"), &1), None);
    assert_eq!(index.remove(&filter("/a/b"), &3), None);
    assert_eq!(index.remove(&filter("/a/c"), &1), None);
    assert_eq!(index.remove(&filter("/a/b"), &1), Some('y'));
    assert_eq!(index.remove(&filter("/a/b"), &1), None);
    assert_eq!(index.len(), 1);
    assert_eq!(matches(&index, "/a/b"), [(2, 'z')]);
}

#[test]
fn wildcards_route_like_mqtt() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("/sys/pk/dn/thing/#"), 1u32, 'a');
    index.insert(&filter("/sys/pk/dn/rrpc/request/+"), 1, 'b');
    index.insert(&filter("/sys/pk/+/rrpc/request/+"), 2, 'c');
    index.insert(&filter("/broadcast/pk/#"), 3, 'd');
    index.insert(&filter("#"), 4, 'e');
    index.insert(&filter("+/#"), 5, 'f');
    index.insert(&filter("$SYS/#"), 6, 'g');
    index.insert(&filter("/+"), 7, 'h');
    assert_eq!(
        matches(&index, "/sys/pk/dn/rrpc/request/17"),
        [(1, 'b'), (2, 'c'), (4, 'e'), (5, 'f')]
    );
    assert_eq!(
        matches(&index, "/sys/pk/dn/thing"),
        [(1, 'a'), (4, 'e'), (5, 'f')]
    );
    assert_eq!(
        matches(&index, "/broadcast/pk"),
        [(3, 'd'), (4, 'e'), (5, 'f')]
    );
    assert_eq!(
        matches(&index, "/broadcast"),
        [(4, 'e'), (5, 'f'), (7, 'h')]
    );
    assert_eq!(matches(&index, "$SYS/broker/load"), [(6, 'g')]);
    assert_eq!(matches(&index, "$SYS"), [(6, 'g')]);
    assert_eq!(
        matches(&index, "/sys/pk/dn/rrpc/request"),
        [(4, 'e'), (5, 'f')]
    );
}

#[test]
fn a_subscriber_is_visited_once_per_matching_filter() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("/a/#"), 1u32, 'x');
    index.insert(&filter("/a/+"), 1, 'y');
    index.insert(&filter("/a/b"), 1, 'z');
    assert_eq!(matches(&index, "/a/b"), [(1, 'x'), (1, 'y'), (1, 'z')]);
}

#[test]
fn empty_levels_are_levels() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("a//b"), 1u32, 'x');
    index.insert(&filter("a/+/b"), 2, 'y');
    index.insert(&filter("a/"), 3, 'z');
    index.insert(&filter("+/+"), 4, 'w');
    assert_eq!(matches(&index, "a//b"), [(1, 'x'), (2, 'y')]);
    assert_eq!(matches(&index, "a/"), [(3, 'z'), (4, 'w')]);
    assert_eq!(matches(&index, "/"), [(4, 'w')]);
    assert_eq!(matches(&index, "a"), []);
}

#[test]
fn removing_everything_frees_every_node() {
    let filters = [
        "/sys/pk/dn/thing/event/property/post_reply",
        "/sys/pk/dn/thing/event/+/post_reply",
        "/sys/pk/dn/rrpc/request/+",
        "/broadcast/pk/#",
        "/pk/dn/user/get",
        "#",
        "+",
        "/",
    ];
    let mut index = SubscriptionIndex::new();
    let empty_nodes = index.node_count();
    let empty_bytes = index.heap_bytes_estimate();
    for (key, f) in filters.iter().enumerate() {
        index.insert(&filter(f), key, ());
        index.insert(&filter(f), key + 100, ());
    }
    assert!(index.node_count() > empty_nodes);
    assert!(index.heap_bytes_estimate() > empty_bytes);
    for (key, f) in filters.iter().enumerate() {
        assert_eq!(index.remove(&filter(f), &key), Some(()));
    }
    assert!(index.node_count() > empty_nodes);
    for (key, f) in filters.iter().enumerate() {
        assert_eq!(index.remove(&filter(f), &(key + 100)), Some(()));
    }
    assert_eq!(index.node_count(), empty_nodes);
    assert!(index.is_empty());
    // Freed slots are reused.
    index.insert(&filter("/a/b/c"), 1, ());
    let mut seen = 0;
    index.for_each_match(&name("/a/b/c"), |_, ()| seen += 1);
    assert_eq!(seen, 1);
}

#[test]
fn pruning_keeps_branches_still_in_use() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("/a/b/c"), 1u32, 'x');
    index.insert(&filter("/a/b"), 2, 'y');
    index.insert(&filter("/a/+/c"), 3, 'z');
    index.remove(&filter("/a/b/c"), &1);
    assert_eq!(matches(&index, "/a/b"), [(2, 'y')]);
    assert_eq!(matches(&index, "/a/b/c"), [(3, 'z')]);
    index.remove(&filter("/a/b"), &2);
    assert_eq!(matches(&index, "/a/b/c"), [(3, 'z')]);
    assert_eq!(matches(&index, "/a/b"), []);
}

#[test]
fn deep_topics_do_not_use_the_call_stack() {
    let limits = TopicLimits::with_max_len(200_000);
    let deep = "/x".repeat(50_000);
    let deep_filter = TopicFilter::new(&deep, &limits).unwrap_or_else(|e| panic!("{e}"));
    let deep_plus =
        TopicFilter::new(&"/+".repeat(50_000), &limits).unwrap_or_else(|e| panic!("{e}"));
    let mut index = SubscriptionIndex::new();
    index.insert(&deep_filter, 1u32, ());
    index.insert(&deep_plus, 2, ());
    let mut found = Vec::new();
    let topic = TopicName::new(&deep, &limits).unwrap_or_else(|e| panic!("{e}"));
    index.for_each_match(&topic, |&key, ()| found.push(key));
    found.sort_unstable();
    assert_eq!(found, [1, 2]);
    assert_eq!(index.remove(&deep_filter, &1), Some(()));
    assert_eq!(index.remove(&deep_plus, &2), Some(()));
    assert_eq!(index.node_count(), 1);
}

#[test]
fn debug_shows_the_size() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("/a"), 1u32, ());
    assert_eq!(
        format!("{index:?}"),
        "SubscriptionIndex { subscriptions: 1, nodes: 3, .. }"
    );
}
