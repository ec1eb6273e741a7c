//! The routing index: topic filters to subscribers.
//!
//! A level trie. Nodes live in one slab and are named by `u32` indices; each node has one
//! parent and a label, an interned level text (so `thing`, `event` or a device name is stored
//! once however many branches use it). The literal children are not stored in the nodes but in
//! one hash table of edges keyed by `(parent, level text)`, so finding a child is one hash of
//! the topic's level and one probe. A node keeps its `+` child
//! directly, and the heads of two intrusive lists of subscriptions: those whose filter ends at
//! the node, and those whose filter ends with `#` right after it. A third hash table finds a
//! subscription by `(node, ends with #, key)` for insert and remove.
//!
//! A lookup walks the trie depth first without a stack: the parent links are the way back, and
//! the topic's level boundaries are found again by scanning for `/`. It allocates nothing and
//! its depth does not depend on the call stack, however long the topics are.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::mem::size_of;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::name::{TopicFilter, TopicName};

/// "No node", "no subscription", and the label of a `+` node and of the root.
const NONE: u32 = u32::MAX;
/// The root node, for the empty prefix before the first level.
const ROOT: u32 = 0;

/// One level of the trie.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The node this one hangs from (`NONE` for the root and for a free slot).
    parent: u32,
    /// The interned text of this node's level, or `NONE` for a `+` node and the root.
    label: u32,
    /// The `+` child, or `NONE`.
    plus: u32,
    /// How many literal children hang from this node (in the edge table).
    literal_children: u32,
    /// First subscription whose filter ends at this node.
    exact_head: u32,
    /// First subscription whose filter is this node's path followed by `#`.
    multi_head: u32,
}

impl Node {
    const fn new(parent: u32, label: u32) -> Self {
        Self {
            parent,
            label,
            plus: NONE,
            literal_children: 0,
            exact_head: NONE,
            multi_head: NONE,
        }
    }

    /// Nothing hangs from this node and no filter ends here: it can be pruned.
    fn is_unused(&self) -> bool {
        self.plus == NONE
            && self.literal_children == 0
            && self.exact_head == NONE
            && self.multi_head == NONE
    }
}

/// An interned level text, with the number of nodes that use it.
#[derive(Clone, Debug, Default)]
struct Label {
    text: Box<[u8]>,
    uses: u32,
}

/// One (filter, subscriber) pair, linked into its node's list.
#[derive(Clone, Debug)]
struct Subscription<K, V> {
    key: K,
    value: V,
    node: u32,
    /// The filter is the node's path followed by `#`.
    multi: bool,
    prev: u32,
    next: u32,
}

/// What the stackless walk of [`SubscriptionIndex::for_each_match`] does next.
#[derive(Clone, Copy)]
enum Step {
    /// Arrived at a node: visit its `#` subscriptions, and its exact ones if the topic is done.
    Enter,
    /// Try the literal child for the current level.
    Literal,
    /// Try the `+` child for the current level.
    Plus,
    /// Done below this node: go back to its parent.
    Up,
}

/// Where an edge goes in the edge table: its parent and its level text.
fn edge_hash(hasher: &DefaultHashBuilder, parent: u32, text: &[u8]) -> u64 {
    hasher.hash_one((parent, text))
}

/// Converts a slab length to the index of the next entry.
///
/// # Panics
///
/// Past `u32::MAX - 1` entries; a slab of nodes that large is about 100 GB, so allocation
/// fails long before.
#[allow(
    clippy::panic,
    reason = "allocating the slab fails long before 2^32 entries: no input reaches this"
)]
fn next_index(len: usize) -> u32 {
    match u32::try_from(len) {
        Ok(index) if index != NONE => index,
        _ => panic!("subscription index full: more than {} entries", NONE - 1),
    }
}

/// Where the level starting at `start` ends (the index of the next `/`, or the length).
fn level_end(topic: &[u8], start: usize) -> usize {
    topic
        .get(start..)
        .and_then(|rest| rest.iter().position(|&b| b == b'/'))
        .map_or(topic.len(), |offset| start + offset)
}

/// The start of the level that ends right before `start` (which is one past its end).
fn previous_level_start(topic: &[u8], start: usize) -> usize {
    let end = start.saturating_sub(1);
    topic
        .get(..end)
        .and_then(|before| before.iter().rposition(|&b| b == b'/'))
        .map_or(0, |slash| slash + 1)
}

/// Routing index: topic filters to subscribers.
///
/// `K` names a subscriber (a session id, say) and `V` is what each subscription carries (the
/// granted QoS, say). A (filter, subscriber) pair is in the index at most once.
///
/// Lookups cost the number of trie nodes the topic reaches, not the number of subscriptions,
/// and allocate nothing. A subscriber under two overlapping filters is visited once per
/// filter; deduplicating is up to the caller. Removing the last subscription of a branch
/// frees the branch.
///
/// ```
/// use aliot_topic::{SubscriptionIndex, TopicFilter, TopicName};
/// let mut index = SubscriptionIndex::new();
/// index.insert(&TopicFilter::from_static("/sys/pk/dn/rrpc/request/+"), 1u64, 0u8);
/// index.insert(&TopicFilter::from_static("/broadcast/pk/#"), 1u64, 1u8);
/// index.insert(&TopicFilter::from_static("/broadcast/pk/#"), 2u64, 1u8);
/// let mut reached = Vec::new();
/// index.for_each_match(&TopicName::from_static("/broadcast/pk/news"), |&session, &qos| {
///     reached.push((session, qos))
/// });
/// reached.sort();
/// assert_eq!(reached, [(1, 1), (2, 1)]);
/// assert_eq!(index.remove(&TopicFilter::from_static("/broadcast/pk/#"), &2), Some(1));
/// assert_eq!(index.len(), 2);
/// ```
#[derive(Clone)]
pub struct SubscriptionIndex<K, V> {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    labels: Vec<Label>,
    free_labels: Vec<u32>,
    /// Interned labels, by text.
    label_table: HashTable<u32>,
    /// Literal children: a child node, found by `(parent, level text)`.
    edge_table: HashTable<u32>,
    subscriptions: Vec<Option<Subscription<K, V>>>,
    free_subscriptions: Vec<u32>,
    /// Subscriptions, found by `(node, multi, key)`.
    subscription_table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    label_bytes: usize,
    len: usize,
}

impl<K, V> SubscriptionIndex<K, V> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::new(NONE, NONE)],
            free_nodes: Vec::new(),
            labels: Vec::new(),
            free_labels: Vec::new(),
            label_table: HashTable::new(),
            edge_table: HashTable::new(),
            subscriptions: Vec::new(),
            free_subscriptions: Vec::new(),
            subscription_table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            label_bytes: 0,
            len: 0,
        }
    }

    /// How many (filter, subscriber) pairs the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many trie nodes are in use (the root included).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free_nodes.len()
    }

    /// An estimate of the heap memory the index holds, in bytes: the capacity of its slabs and
    /// tables and the interned level texts (allocator overhead not included).
    pub fn heap_bytes_estimate(&self) -> usize {
        /// A hash table of `u32`: one slot and one control byte per bucket, at most 7/8 full.
        fn table_bytes(table: &HashTable<u32>) -> usize {
            let capacity = table.capacity();
            if capacity == 0 {
                return 0;
            }
            let buckets = (capacity.saturating_mul(8) / 7).next_power_of_two();
            buckets * (size_of::<u32>() + 1)
        }
        self.nodes.capacity() * size_of::<Node>()
            + self.free_nodes.capacity() * size_of::<u32>()
            + self.labels.capacity() * size_of::<Label>()
            + self.label_bytes
            + self.free_labels.capacity() * size_of::<u32>()
            + self.subscriptions.capacity() * size_of::<Option<Subscription<K, V>>>()
            + self.free_subscriptions.capacity() * size_of::<u32>()
            + table_bytes(&self.label_table)
            + table_bytes(&self.edge_table)
            + table_bytes(&self.subscription_table)
    }

    fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    fn node_mut(&mut self, id: u32) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize)
    }

    fn subscription(&self, slot: u32) -> Option<&Subscription<K, V>> {
        self.subscriptions
            .get(slot as usize)
            .and_then(Option::as_ref)
    }

    fn subscription_mut(&mut self, slot: u32) -> Option<&mut Subscription<K, V>> {
        self.subscriptions
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
    }

    fn find_label(&self, text: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        let labels = &self.labels;
        self.label_table
            .find(hash, |&id| {
                labels
                    .get(id as usize)
                    .is_some_and(|label| &*label.text == text)
            })
            .copied()
    }

    /// The text of a label (empty for `NONE` or a free slot).
    fn label_text(labels: &[Label], label: u32) -> &[u8] {
        labels.get(label as usize).map_or(&[], |entry| &entry.text)
    }

    /// The literal child of `parent` for the level `text`: one probe of the edge table, which
    /// is keyed by the parent and the level text.
    fn literal_child(&self, parent: u32, text: &[u8]) -> Option<u32> {
        let hash = edge_hash(&self.hasher, parent, text);
        let (nodes, labels) = (&self.nodes, &self.labels);
        self.edge_table
            .find(hash, |&child| {
                nodes.get(child as usize).is_some_and(|node| {
                    node.parent == parent && Self::label_text(labels, node.label) == text
                })
            })
            .copied()
    }

    /// The node a filter ends at and whether it ends with `#`, if the trie has that path.
    fn find_filter_node(&self, filter: &TopicFilter) -> Option<(u32, bool)> {
        let mut node = ROOT;
        for level in filter.as_bytes().split(|&b| b == b'/') {
            match level {
                b"#" => return Some((node, true)),
                b"+" => match self.node(node)?.plus {
                    NONE => return None,
                    plus => node = plus,
                },
                literal => node = self.literal_child(node, literal)?,
            }
        }
        Some((node, false))
    }

    fn allocate_node(&mut self, node: Node) -> u32 {
        if let Some(id) = self.free_nodes.pop()
            && let Some(slot) = self.node_mut(id)
        {
            *slot = node;
            return id;
        }
        let id = next_index(self.nodes.len());
        self.nodes.push(node);
        id
    }

    /// The label for `text`, interned if new; the caller accounts for its use.
    fn intern_label(&mut self, text: &[u8]) -> u32 {
        if let Some(id) = self.find_label(text) {
            return id;
        }
        let label = Label {
            text: text.into(),
            uses: 0,
        };
        let id = match self.free_labels.pop() {
            Some(id) if (id as usize) < self.labels.len() => {
                if let Some(slot) = self.labels.get_mut(id as usize) {
                    *slot = label;
                }
                id
            }
            _ => {
                let id = next_index(self.labels.len());
                self.labels.push(label);
                id
            }
        };
        self.label_bytes += text.len();
        let Self {
            label_table,
            labels,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one(text);
        label_table.insert_unique(hash, id, |&id| {
            let text: &[u8] = labels.get(id as usize).map_or(&[], |label| &label.text);
            hasher.hash_one(text)
        });
        id
    }

    /// One node fewer uses `label`; forgets the label when none does.
    fn release_label(&mut self, label: u32) {
        let Some(entry) = self.labels.get_mut(label as usize) else {
            return;
        };
        entry.uses = entry.uses.saturating_sub(1);
        if entry.uses > 0 {
            return;
        }
        let text = core::mem::take(&mut entry.text);
        self.label_bytes = self.label_bytes.saturating_sub(text.len());
        let hash = self.hasher.hash_one(&*text);
        if let Ok(found) = self.label_table.find_entry(hash, |&id| id == label) {
            found.remove();
        }
        self.free_labels.push(label);
    }

    fn literal_child_or_create(&mut self, parent: u32, text: &[u8]) -> u32 {
        if let Some(child) = self.literal_child(parent, text) {
            return child;
        }
        let label = self.intern_label(text);
        let child = self.allocate_node(Node::new(parent, label));
        if let Some(entry) = self.labels.get_mut(label as usize) {
            entry.uses += 1;
        }
        if let Some(parent_node) = self.node_mut(parent) {
            parent_node.literal_children += 1;
        }
        let Self {
            edge_table,
            nodes,
            labels,
            hasher,
            ..
        } = self;
        let hash = edge_hash(hasher, parent, text);
        edge_table.insert_unique(hash, child, |&child| match nodes.get(child as usize) {
            Some(node) => edge_hash(hasher, node.parent, Self::label_text(labels, node.label)),
            None => 0,
        });
        child
    }

    fn plus_child_or_create(&mut self, parent: u32) -> u32 {
        match self.node(parent).map(|node| node.plus) {
            Some(plus) if plus != NONE => plus,
            _ => {
                let child = self.allocate_node(Node::new(parent, NONE));
                if let Some(parent_node) = self.node_mut(parent) {
                    parent_node.plus = child;
                }
                child
            }
        }
    }

    /// Frees `node` and its ancestors while nothing uses them.
    fn prune(&mut self, mut node: u32) {
        while node != ROOT {
            let Some(&current) = self.node(node) else {
                return;
            };
            if !current.is_unused() {
                return;
            }
            let parent = current.parent;
            if current.label == NONE {
                if let Some(parent_node) = self.node_mut(parent) {
                    parent_node.plus = NONE;
                }
            } else {
                let text = Self::label_text(&self.labels, current.label);
                let hash = edge_hash(&self.hasher, parent, text);
                if let Ok(edge) = self.edge_table.find_entry(hash, |&child| child == node) {
                    edge.remove();
                }
                if let Some(parent_node) = self.node_mut(parent) {
                    parent_node.literal_children = parent_node.literal_children.saturating_sub(1);
                }
                self.release_label(current.label);
            }
            if let Some(freed) = self.node_mut(node) {
                *freed = Node::new(NONE, NONE);
            }
            self.free_nodes.push(node);
            node = parent;
        }
    }

    /// Visits each subscription of the list starting at `head`.
    fn visit_list(&self, head: u32, visit: &mut impl FnMut(&K, &V)) {
        let mut slot = head;
        while let Some(subscription) = self.subscription(slot) {
            visit(&subscription.key, &subscription.value);
            slot = subscription.next;
        }
    }

    /// Calls `visit` once per (matching filter, subscriber) pair. Allocates nothing.
    pub fn for_each_match(&self, topic: &TopicName, mut visit: impl FnMut(&K, &V)) {
        let topic = topic.as_bytes();
        let exhausted = topic.len() + 1;
        // A topic starting with `$` is not matched by a filter starting with a wildcard.
        let dollar = topic.first() == Some(&b'$');
        let mut node = ROOT;
        // Where the next level of the topic starts; `exhausted` once every level is consumed.
        let mut start = 0;
        let mut step = Step::Enter;
        loop {
            let Some(&current) = self.node(node) else {
                return;
            };
            let wildcards_apply = !(dollar && node == ROOT);
            step = match step {
                Step::Enter => {
                    if wildcards_apply {
                        self.visit_list(current.multi_head, &mut visit);
                    }
                    if start >= exhausted {
                        self.visit_list(current.exact_head, &mut visit);
                        Step::Up
                    } else {
                        Step::Literal
                    }
                }
                Step::Literal => {
                    let end = level_end(topic, start);
                    let level = topic.get(start..end).unwrap_or_default();
                    match self.literal_child(node, level) {
                        Some(child) => {
                            node = child;
                            start = end + 1;
                            Step::Enter
                        }
                        None => Step::Plus,
                    }
                }
                Step::Plus => {
                    if current.plus != NONE && wildcards_apply {
                        node = current.plus;
                        start = level_end(topic, start) + 1;
                        Step::Enter
                    } else {
                        Step::Up
                    }
                }
                Step::Up => {
                    if node == ROOT {
                        return;
                    }
                    start = previous_level_start(topic, start);
                    node = current.parent;
                    // After the literal child comes the `+` child; after the `+` child, nothing.
                    if current.label == NONE {
                        Step::Up
                    } else {
                        Step::Plus
                    }
                }
            };
        }
    }
}

impl<K: Eq + Hash, V> SubscriptionIndex<K, V> {
    fn find_subscription(&self, node: u32, multi: bool, key: &K) -> Option<u32> {
        let hash = self.hasher.hash_one((node, multi, key));
        let subscriptions = &self.subscriptions;
        self.subscription_table
            .find(hash, |&slot| {
                subscriptions
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|entry| {
                        entry.node == node && entry.multi == multi && entry.key == *key
                    })
            })
            .copied()
    }

    /// Adds the pair (`filter`, `key`) with `value`, or replaces its value; returns the value
    /// it had.
    ///
    /// # Panics
    ///
    /// Past `u32::MAX - 1` nodes or subscriptions (about 100 GB of index), like a `Vec` past
    /// its capacity.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let mut node = ROOT;
        let mut multi = false;
        for level in filter.as_bytes().split(|&b| b == b'/') {
            match level {
                b"#" => {
                    multi = true;
                    break;
                }
                b"+" => node = self.plus_child_or_create(node),
                literal => node = self.literal_child_or_create(node, literal),
            }
        }
        if let Some(slot) = self.find_subscription(node, multi, &key)
            && let Some(existing) = self.subscription_mut(slot)
        {
            return Some(core::mem::replace(&mut existing.value, value));
        }
        let head = match self.node(node) {
            Some(current) if multi => current.multi_head,
            Some(current) => current.exact_head,
            None => NONE,
        };
        let hash = self.hasher.hash_one((node, multi, &key));
        let subscription = Subscription {
            key,
            value,
            node,
            multi,
            prev: NONE,
            next: head,
        };
        let slot = match self.free_subscriptions.pop() {
            Some(slot) if (slot as usize) < self.subscriptions.len() => {
                if let Some(entry) = self.subscriptions.get_mut(slot as usize) {
                    *entry = Some(subscription);
                }
                slot
            }
            _ => {
                let slot = next_index(self.subscriptions.len());
                self.subscriptions.push(Some(subscription));
                slot
            }
        };
        if let Some(next) = self.subscription_mut(head) {
            next.prev = slot;
        }
        if let Some(current) = self.node_mut(node) {
            if multi {
                current.multi_head = slot;
            } else {
                current.exact_head = slot;
            }
        }
        let Self {
            subscription_table,
            subscriptions,
            hasher,
            ..
        } = self;
        subscription_table.insert_unique(hash, slot, |&slot| {
            match subscriptions.get(slot as usize).and_then(Option::as_ref) {
                Some(entry) => hasher.hash_one((entry.node, entry.multi, &entry.key)),
                None => 0,
            }
        });
        self.len += 1;
        None
    }

    /// Removes the pair (`filter`, `key`); returns its value if it was there.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let (node, multi) = self.find_filter_node(filter)?;
        let slot = self.find_subscription(node, multi, key)?;
        let hash = self.hasher.hash_one((node, multi, key));
        if let Ok(entry) = self
            .subscription_table
            .find_entry(hash, |&found| found == slot)
        {
            entry.remove();
        }
        let removed = self.subscriptions.get_mut(slot as usize)?.take()?;
        self.free_subscriptions.push(slot);
        match self.subscription_mut(removed.prev) {
            Some(prev) => prev.next = removed.next,
            None => {
                if let Some(current) = self.node_mut(node) {
                    if multi {
                        current.multi_head = removed.next;
                    } else {
                        current.exact_head = removed.next;
                    }
                }
            }
        }
        if let Some(next) = self.subscription_mut(removed.next) {
            next.prev = removed.prev;
        }
        self.len = self.len.saturating_sub(1);
        self.prune(node);
        Some(removed.value)
    }

    /// The value of the pair (`filter`, `key`), if it is in the index.
    pub fn get(&self, filter: &TopicFilter, key: &K) -> Option<&V> {
        let (node, multi) = self.find_filter_node(filter)?;
        let slot = self.find_subscription(node, multi, key)?;
        self.subscription(slot).map(|entry| &entry.value)
    }
}

impl<K, V> Default for SubscriptionIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionIndex<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("subscriptions", &self.len)
            .field("nodes", &self.node_count())
            .finish_non_exhaustive()
    }
}
