//! The ACL never lets a filter escape the device's categories.
//!
//! The input picks custom categories for the product and a filter built from a small alphabet
//! of levels. The names the filter can match are enumerated (its wildcards expanded over the
//! alphabet plus a value no category uses) and checked by brute force: `may_subscribe` holds
//! exactly when one sub category matches all of them, an allowed filter matches no topic of
//! another device, and `may_publish` holds exactly when a pub category matches.
#![no_main]

use aliot_topic::{Acl, Permission, ProductCategories, TopicFilter, TopicLimits, TopicName};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::HashMap;

const PK: &str = "pk";
const DN: &str = "dn";

/// Custom categories the input may give the product.
const CUSTOM: [(&str, Permission); 6] = [
    ("/${productKey}/${deviceName}/user/get", Permission::Sub),
    ("/${productKey}/${deviceName}/user/update", Permission::Pub),
    ("/${productKey}/${deviceName}/user/+/get", Permission::Sub),
    ("/${productKey}/${deviceName}/user/#", Permission::Sub),
    ("/${productKey}/${deviceName}/thing/+", Permission::Sub),
    ("/${productKey}/${deviceName}/rrpc", Permission::PubSub),
];

/// Levels a filter is built from.
const LEVELS: [&str; 24] = [
    "",
    "pk",
    "dn",
    "pk2",
    "dn2",
    "sys",
    "thing",
    "rrpc",
    "request",
    "response",
    "ext",
    "broadcast",
    "shadow",
    "get",
    "update",
    "user",
    "session",
    "ntp",
    "error",
    "+",
    "$x",
    "zz",
    "1",
    "+",
];

/// Values wildcards expand to: those the categories have at wildcard positions, `zz` which is
/// in no category (a name outside whatever the filter's `+` or `#` faces), `$x` for the `$`
/// rule. Other devices' names come from their own categories, not from this list.
const EXPANSION: [&str; 7] = ["", "pk", "dn", "get", "user", "zz", "$x"];

/// MQTT matching by its definition, without allocating (it runs a lot per input).
fn reference_matches(filter: &str, name: &str) -> bool {
    let first = filter.split('/').next().unwrap_or_default();
    if name.starts_with('$') && (first == "+" || first == "#") {
        return false;
    }
    let level_ok = |(fl, nl): (&str, &str)| fl == "+" || fl == nl;
    match filter.strip_suffix('#') {
        // `prefix` is empty or ends with `/`: its levels are all but the empty last one.
        Some(prefix) => {
            let prefix_levels = prefix.split('/').count() - 1;
            name.split('/').count() >= prefix_levels
                && prefix
                    .split('/')
                    .take(prefix_levels)
                    .zip(name.split('/'))
                    .all(level_ok)
        }
        None => {
            filter.split('/').count() == name.split('/').count()
                && filter.split('/').zip(name.split('/')).all(level_ok)
        }
    }
}

/// The valid names `filter` matches over [`EXPANSION`], `#` standing for no level, one level,
/// or one level and `zz` (two levels are only needed to tell `#` from `+`).
fn expand(filter: &str) -> Vec<String> {
    let mut partial: Vec<Vec<&str>> = vec![Vec::new()];
    for level in filter.split('/') {
        let mut next = Vec::new();
        for prefix in &partial {
            let tails: Vec<Vec<&str>> = match level {
                "+" => EXPANSION.iter().map(|v| vec![*v]).collect(),
                "#" => {
                    let mut tails = vec![Vec::new()];
                    for a in EXPANSION {
                        tails.push(vec![a]);
                        tails.push(vec![a, "zz"]);
                    }
                    tails
                }
                literal => vec![vec![literal]],
            };
            for tail in tails {
                let mut longer = prefix.clone();
                longer.extend(tail);
                next.push(longer);
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

fn filled(categories: &ProductCategories, pk: &str, dn: &str) -> Vec<(String, Permission)> {
    categories
        .iter()
        .map(|c| {
            let text = c
                .template()
                .replace("${productKey}", pk)
                .replace("${deviceName}", dn);
            (text, c.permission())
        })
        .collect()
}

/// The topics of devices `pk2`/`dn` and `pk`/`dn2` that are not also this device's (a
/// product's devices share its broadcast topics).
fn other_devices_topics(
    categories: &ProductCategories,
    own: &[(String, Permission)],
) -> Vec<String> {
    let mut topics = Vec::new();
    for (pk, dn) in [("pk2", DN), (PK, "dn2")] {
        for (category, _) in filled(categories, pk, dn) {
            for topic in expand(&category) {
                if !own.iter().any(|(mine, _)| reference_matches(mine, &topic)) {
                    topics.push(topic);
                }
            }
        }
    }
    topics
}

thread_local! {
    /// [`other_devices_topics`] per set of custom categories.
    static OTHER_DEVICES_TOPICS: RefCell<HashMap<u8, Vec<String>>> = RefCell::new(HashMap::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((&custom_mask, rest)) = data.split_first() else {
        return;
    };
    let Some((&shape, rest)) = rest.split_first() else {
        return;
    };
    let mut categories = ProductCategories::defaults();
    for (bit, (template, permission)) in CUSTOM.iter().enumerate() {
        if custom_mask & (1 << bit) != 0 {
            categories
                .add_custom(template, *permission)
                .expect("the custom templates are valid and distinct");
        }
    }
    // Filter: up to 8 levels, at most 2 of them `+` (to bound the enumeration), maybe `#`.
    let mut levels: Vec<&str> = rest
        .iter()
        .take(8)
        .map(|&b| LEVELS[usize::from(b) % LEVELS.len()])
        .collect();
    let mut plus_seen = 0;
    for level in &mut levels {
        if *level == "+" {
            plus_seen += 1;
            if plus_seen > 2 {
                *level = "zz";
            }
        }
    }
    if shape & 1 != 0 {
        levels.push("#");
    }
    let filter_text = levels.join("/");
    let Ok(filter) = TopicFilter::new(&filter_text, &TopicLimits::default()) else {
        return;
    };

    let acl = Acl::for_device(PK, DN, &categories);
    let own = filled(&categories, PK, DN);
    let names = expand(&filter_text);

    let covered = own
        .iter()
        .filter(|(_, permission)| permission.allows_subscribe())
        .any(|(category, _)| names.iter().all(|name| reference_matches(category, name)));
    let allowed = acl.may_subscribe(&filter);
    assert_eq!(allowed, covered, "may_subscribe({filter_text})");

    if allowed {
        OTHER_DEVICES_TOPICS.with_borrow_mut(|cache| {
            let topics = cache
                .entry(custom_mask)
                .or_insert_with(|| other_devices_topics(&categories, &own));
            for topic in topics.iter() {
                assert!(
                    !reference_matches(&filter_text, topic),
                    "{filter_text} reaches another device's {topic}"
                );
            }
        });
    }

    for name in &names {
        let Ok(topic) = TopicName::new(name, &TopicLimits::default()) else {
            continue;
        };
        let expected = own.iter().any(|(category, permission)| {
            permission.allows_publish() && reference_matches(category, name)
        });
        assert_eq!(acl.may_publish(&topic), expected, "may_publish({name})");
    }
});
