//! Property tests against brute-force references written independently of the crate.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use aliot_topic::{
    Acl, MessageId, Permission, ProductCategories, RrpcTopic, SubscriptionIndex, TopicError,
    TopicFilter, TopicLimits, TopicName,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;

// ---------------------------------------------------------------------------------------------
// References

/// MQTT matching by definition: same number of levels with every filter level `+` or equal,
/// or a filter ending in `#` whose levels before it match the first levels of the name (the
/// name may have no more levels); a `$` name is never matched by a leading wildcard.
fn reference_matches(filter: &str, name: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    let leading_wildcard = f[0] == "+" || f[0] == "#";
    if name.starts_with('$') && leading_wildcard {
        return false;
    }
    let level_ok = |(fl, nl): (&&str, &&str)| *fl == "+" || fl == nl;
    if f.last() == Some(&"#") {
        let prefix = &f[..f.len() - 1];
        n.len() >= prefix.len() && prefix.iter().zip(&n).all(level_ok)
    } else {
        f.len() == n.len() && f.iter().zip(&n).all(level_ok)
    }
}

/// The validation rules, written out as one check per rule in the documented order.
fn reference_validate(s: &str, is_filter: bool, max_len: usize) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > max_len {
        return Err(TopicError::TooLong {
            len: s.len(),
            max: max_len,
        });
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    let levels: Vec<&str> = s.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains('+') || level.contains('#');
        if !wild {
            continue;
        }
        if !is_filter {
            return Err(TopicError::WildcardInName);
        }
        let whole = *level == "+" || (*level == "#" && i == levels.len() - 1);
        if !whole {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Level values used to expand wildcards. `zz` appears in no category, so it stands for "any
/// other text"; `$x` exercises the `$` rule.
const EXPANSION: [&str; 12] = [
    "", "pk", "dn", "pk2", "dn2", "thing", "rrpc", "request", "get", "user", "zz", "$x",
];

/// Every valid name over [`EXPANSION`] that `filter` matches, with `#` standing for up to two
/// more levels.
fn expand(filter: &str) -> Vec<String> {
    let mut partial: Vec<Vec<&str>> = vec![Vec::new()];
    for level in filter.split('/') {
        let mut next = Vec::new();
        for prefix in &partial {
            match level {
                "+" => {
                    for value in EXPANSION {
                        let mut longer = prefix.clone();
                        longer.push(value);
                        next.push(longer);
                    }
                }
                "#" => {
                    next.push(prefix.clone());
                    for first in EXPANSION {
                        let mut one = prefix.clone();
                        one.push(first);
                        for second in EXPANSION {
                            let mut two = one.clone();
                            two.push(second);
                            next.push(two);
                        }
                        next.push(one);
                    }
                }
                literal => {
                    let mut longer = prefix.clone();
                    longer.push(literal);
                    next.push(longer);
                }
            }
        }
        partial = next;
    }
    partial
        .into_iter()
        .map(|levels| levels.join("/"))
        .filter(|name| !name.is_empty() && reference_matches(filter, name))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The device under test

const PK: &str = "pk";
const DN: &str = "dn";

fn product() -> ProductCategories {
    let mut categories = ProductCategories::defaults();
    for (template, permission) in [
        ("/${productKey}/${deviceName}/user/get", Permission::Sub),
        ("/${productKey}/${deviceName}/user/update", Permission::Pub),
        ("/${productKey}/${deviceName}/user/+/get", Permission::Sub),
        ("/${productKey}/${deviceName}/thing/#", Permission::Sub),
    ] {
        categories
            .add_custom(template, permission)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    categories
}

/// The categories of a device, filled by hand: (filter, permission).
fn filled(product_key: &str, device_name: &str) -> Vec<(String, Permission)> {
    product()
        .iter()
        .map(|category| {
            let text = category
                .template()
                .replace("${productKey}", product_key)
                .replace("${deviceName}", device_name);
            (text, category.permission())
        })
        .collect()
}

/// Topics of other devices (of this product and of another) that are not also this device's
/// (broadcast topics are shared by a product's devices).
fn other_devices_topics() -> &'static [String] {
    static TOPICS: LazyLock<Vec<String>> = LazyLock::new(collect_other_devices_topics);
    &TOPICS
}

fn collect_other_devices_topics() -> Vec<String> {
    let own = filled(PK, DN);
    let mut topics = Vec::new();
    for (product_key, device_name) in [("pk2", DN), (PK, "dn2"), ("pk2", "dn2")] {
        for (category, _) in filled(product_key, device_name) {
            for topic in expand(&category) {
                if !own.iter().any(|(mine, _)| reference_matches(mine, &topic)) {
                    topics.push(topic);
                }
            }
        }
    }
    topics.sort();
    topics.dedup();
    topics
}

const FILTER_LEVELS: [&str; 18] = [
    "",
    "pk",
    "dn",
    "pk2",
    "dn2",
    "sys",
    "thing",
    "rrpc",
    "request",
    "ext",
    "broadcast",
    "shadow",
    "get",
    "update",
    "user",
    "session",
    "+",
    "$x",
];

fn join_filter(mut levels: Vec<&str>, hash: bool) -> String {
    if hash {
        levels.push("#");
    }
    levels.join("/")
}

/// Random filters over the alphabet.
fn random_filter() -> impl Strategy<Value = String> {
    (vec(select(&FILTER_LEVELS[..]), 1..7), any::<bool>())
        .prop_map(|(levels, hash)| join_filter(levels, hash))
        .prop_filter("a topic is not empty", |filter| !filter.is_empty())
}

/// Filters near a category of this device or another: its `+` levels possibly narrowed to a
/// value, its `#` possibly replaced by more levels (ending in `#` or not), then possibly one
/// level replaced by any value (which may widen it or move it elsewhere).
fn near_category_filter() -> impl Strategy<Value = String> {
    // This device's categories twice, so about half the filters start from its own.
    let categories: Vec<String> = [(PK, DN), (PK, DN), ("pk2", DN), (PK, "dn2")]
        .iter()
        .flat_map(|(pk, dn)| filled(pk, dn))
        .map(|(category, _)| category)
        .collect();
    (
        select(categories),
        (any::<bool>(), select(&FILTER_LEVELS[..])),
        (
            any::<bool>(),
            vec(select(&FILTER_LEVELS[..]), 0..3),
            any::<bool>(),
        ),
        proptest::option::of((0usize..8, select(&FILTER_LEVELS[..]))),
    )
        .prop_map(
            |(category, (narrow_plus, plus_value), (replace_hash, tail, hash), edit)| {
                let mut levels: Vec<&str> = category.split('/').collect();
                let mut ends_with_hash = levels.last() == Some(&"#");
                if ends_with_hash && replace_hash {
                    levels.pop();
                    levels.extend(tail);
                    ends_with_hash = hash;
                } else if ends_with_hash {
                    levels.pop();
                }
                for level in &mut levels {
                    if *level == "+" && narrow_plus {
                        *level = plus_value;
                    }
                }
                if let Some((at, value)) = edit
                    && let Some(level) = levels.get_mut(at)
                {
                    *level = value;
                }
                join_filter(levels, ends_with_hash)
            },
        )
        .prop_filter("a topic is not empty", |filter| !filter.is_empty())
}

fn any_filter() -> impl Strategy<Value = String> {
    prop_oneof![1 => random_filter(), 3 => near_category_filter()]
}

fn as_filter(s: &str) -> TopicFilter {
    TopicFilter::new(s, &TopicLimits::default()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn as_name(s: &str) -> TopicName {
    TopicName::new(s, &TopicLimits::default()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn matching_agrees_with_the_reference(
        filter in (vec(select(&["", "a", "b", "$s", "+"][..]), 1..6), any::<bool>())
            .prop_map(|(levels, hash)| join_filter(levels, hash))
            .prop_filter("a topic is not empty", |filter| !filter.is_empty()),
        name in vec(select(&["", "a", "b", "$s", "c"][..]), 1..6).prop_map(|l| l.join("/")),
    ) {
        prop_assume!(!name.is_empty());
        let expected = reference_matches(&filter, &name);
        prop_assert_eq!(as_filter(&filter).matches(&as_name(&name)), expected);
    }

    #[test]
    fn validation_agrees_with_the_reference(
        text in vec(select(&["a", "/", "+", "#", "\0", "$", "é"][..]), 0..12)
            .prop_map(|parts| parts.concat()),
    ) {
        let limits = TopicLimits::with_max_len(10);
        let name = TopicName::new(&text, &limits).map(|n| n.as_str().to_owned());
        let filter = TopicFilter::new(&text, &limits).map(|f| f.as_str().to_owned());
        prop_assert_eq!(name.map(|_| ()), reference_validate(&text, false, 10));
        prop_assert_eq!(filter.clone().map(|_| ()), reference_validate(&text, true, 10));
        if let Ok(round_trip) = filter {
            prop_assert_eq!(round_trip, text);
        }
    }

    /// may_subscribe(F) holds exactly when one sub category matches every name F matches,
    /// checked over the expansion of F (which holds a counterexample whenever one exists).
    #[test]
    fn subscribe_is_exactly_single_category_coverage(filter in any_filter()) {
        let acl = Acl::for_device(PK, DN, &product());
        let names = expand(&filter);
        let sub_categories: Vec<String> = filled(PK, DN)
            .into_iter()
            .filter(|(_, permission)| permission.allows_subscribe())
            .map(|(category, _)| category)
            .collect();
        let covered = sub_categories
            .iter()
            .any(|category| names.iter().all(|name| reference_matches(category, name)));
        prop_assert_eq!(acl.may_subscribe(&as_filter(&filter)), covered, "{}", filter);
    }

    /// An allowed filter never matches a topic of another device.
    #[test]
    fn allowed_filters_never_reach_other_devices(filter in any_filter()) {
        let acl = Acl::for_device(PK, DN, &product());
        if acl.may_subscribe(&as_filter(&filter)) {
            for topic in other_devices_topics() {
                prop_assert!(
                    !reference_matches(&filter, topic),
                    "{} reaches {}", filter, topic
                );
            }
        }
    }

    /// may_publish(T) holds exactly when a pub category matches T; never for another device's
    /// topic.
    #[test]
    fn publish_is_exactly_a_matching_pub_category(filter in any_filter()) {
        let acl = Acl::for_device(PK, DN, &product());
        let pub_categories: Vec<String> = filled(PK, DN)
            .into_iter()
            .filter(|(_, permission)| permission.allows_publish())
            .map(|(category, _)| category)
            .collect();
        for name in expand(&filter) {
            let expected = pub_categories.iter().any(|c| reference_matches(c, &name));
            prop_assert_eq!(acl.may_publish(&as_name(&name)), expected, "{}", name);
        }
    }

    /// The index visits exactly the (filter, key) pairs whose filter matches, once each.
    #[test]
    fn index_agrees_with_brute_force(
        ops in vec(
            (
                any::<bool>(),
                (vec(select(&["", "a", "b", "$s", "+"][..]), 1..5), any::<bool>())
                    .prop_map(|(levels, hash)| join_filter(levels, hash))
                    .prop_filter("a topic is not empty", |filter| !filter.is_empty()),
                0u8..4,
                any::<u8>(),
            ),
            1..60,
        ),
        names in vec(
            vec(select(&["", "a", "b", "$s", "c"][..]), 1..6).prop_map(|l| l.join("/")),
            1..20,
        ),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut model: BTreeMap<(String, u8), u8> = BTreeMap::new();
        for (insert, filter, key, value) in &ops {
            let parsed = as_filter(filter);
            if *insert {
                let previous = model.insert((filter.clone(), *key), *value);
                prop_assert_eq!(index.insert(&parsed, *key, *value), previous);
            } else {
                let previous = model.remove(&(filter.clone(), *key));
                prop_assert_eq!(index.remove(&parsed, key), previous);
            }
            prop_assert_eq!(index.len(), model.len());
        }
        for name in names.iter().filter(|name| !name.is_empty()) {
            let mut found = Vec::new();
            index.for_each_match(&as_name(name), |&key, &value| found.push((key, value)));
            found.sort_unstable();
            let mut expected: Vec<(u8, u8)> = model
                .iter()
                .filter(|((filter, _), _)| reference_matches(filter, name))
                .map(|((_, key), value)| (*key, *value))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(found, expected, "{}", name);
        }
        for ((filter, key), value) in &model {
            prop_assert_eq!(index.get(&as_filter(filter), key), Some(value));
        }
        for (filter, key) in model.keys() {
            prop_assert!(index.remove(&as_filter(filter), key).is_some());
        }
        prop_assert_eq!(index.node_count(), 1);
        prop_assert!(index.is_empty());
    }

    #[test]
    fn rrpc_topics_round_trip(
        product_key in "[a-zA-Z0-9$_.-]{1,12}",
        device_name in "[a-zA-Z0-9@:_.-]{1,16}",
        id in any::<u64>(),
        inner in "(/[a-z_]{0,6}){1,4}",
    ) {
        let message_id = MessageId(id);
        let forms = [
            RrpcTopic::Request { product_key: &product_key, device_name: &device_name, message_id },
            RrpcTopic::Response { product_key: &product_key, device_name: &device_name, message_id },
            RrpcTopic::Custom { message_id, topic: &inner },
        ];
        for form in forms {
            let text = form.to_string();
            prop_assert_eq!(RrpcTopic::parse(&text), Some(form));
        }
        prop_assert_eq!(message_id.to_string().parse(), Ok(message_id));
    }
}
