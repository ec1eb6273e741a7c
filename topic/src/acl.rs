//! The access decisions for one connected device.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::category::{
    DEVICE_NAME_PLACEHOLDER, PRODUCT_KEY_PLACEHOLDER, ProductCategories, RESERVED_FIRST_LEVELS,
    TopicCategory,
};
use crate::name::{TopicFilter, TopicName};

/// Why a device identity cannot be given any topic.
///
/// The identity fills whole levels of the category templates, so a character that MQTT gives
/// a meaning in topics would change what the filled category reaches: `/` would add levels
/// (product key `a`, device name `b/c` would land in another device's tree), `+` and `#`
/// would turn the device's categories into wildcards over other devices. Such an identity is
/// refused rather than escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The product key is empty.
    #[error("the product key is empty")]
    EmptyProductKey,
    /// The device name is empty.
    #[error("the device name is empty")]
    EmptyDeviceName,
    /// The product key has `/`, `+`, `#` or U+0000.
    #[error("the product key contains {character:?}, which would change the shape of its topics")]
    ProductKeyForbiddenCharacter {
        /// The first forbidden character found.
        character: char,
    },
    /// The device name has `/`, `+`, `#` or U+0000.
    #[error("the device name contains {character:?}, which would change the shape of its topics")]
    DeviceNameForbiddenCharacter {
        /// The first forbidden character found.
        character: char,
    },
    /// The product key is one of the platform's first levels (`sys`, `broadcast`, `ext`,
    /// `shadow`): its `/${productKey}/...` topics would land in the platform's namespaces,
    /// for instance a custom category of product `sys` in another product's `/sys/` topics.
    #[error("the product key {product_key:?} is a reserved first level of the platform's topics")]
    ReservedProductKey {
        /// The refused product key.
        product_key: String,
    },
}

/// The first character of `text` that MQTT gives a meaning in topics, if any.
fn forbidden_character(text: &str) -> Option<char> {
    text.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0'))
}

/// Checks that an identity can fill category templates without changing their shape.
///
/// ```
/// use aliot_topic::{check_identity, IdentityError};
/// assert_eq!(check_identity("a1PK", "dev-1.x@y:z"), Ok(()));
/// assert_eq!(
///     check_identity("a1PK", "dev/1"),
///     Err(IdentityError::DeviceNameForbiddenCharacter { character: '/' })
/// );
/// ```
pub fn check_identity(product_key: &str, device_name: &str) -> Result<(), IdentityError> {
    if product_key.is_empty() {
        return Err(IdentityError::EmptyProductKey);
    }
    if device_name.is_empty() {
        return Err(IdentityError::EmptyDeviceName);
    }
    if let Some(character) = forbidden_character(product_key) {
        return Err(IdentityError::ProductKeyForbiddenCharacter { character });
    }
    if let Some(character) = forbidden_character(device_name) {
        return Err(IdentityError::DeviceNameForbiddenCharacter { character });
    }
    if RESERVED_FIRST_LEVELS.contains(&product_key) {
        return Err(IdentityError::ReservedProductKey {
            product_key: product_key.to_owned(),
        });
    }
    Ok(())
}

/// Whether every topic name that `filter` matches is also matched by `category`, both given
/// as bytes of valid topic filters.
///
/// Level by level, the filter must be at least as narrow as the category: a literal is covered
/// by the same literal or `+`; `+` only by `+`; a `#` in the category covers everything from
/// its level on (the parent level too); a `#` in the filter needs a `#` in the category at the
/// same level. A name starting with `$` is never matched by a category starting with a
/// wildcard, so such a category does not cover a filter whose first level starts with `$`.
#[cfg(test)]
pub(crate) fn filter_covers(category: &[u8], filter: &[u8]) -> bool {
    let category = core::str::from_utf8(category).unwrap_or_default();
    CompiledTemplate::compile(category).covers(IdentityView::default(), Subject::new(filter))
}

/// The identity a device's checks fill into the placeholder levels, as bytes, with the first
/// bytes of the product key as a word for [`QuickCheck`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct IdentityView<'a> {
    /// `product_key/device_name`.
    text: &'a [u8],
    product_key_len: usize,
    /// [`leading_word`] of the product key.
    product_key_leading: u64,
    /// Ones over the bytes of `product_key_leading` that are the product key's.
    product_key_mask: u64,
}

impl<'a> IdentityView<'a> {
    fn product_key(&self) -> &'a [u8] {
        self.text.get(..self.product_key_len).unwrap_or_default()
    }

    fn device_name(&self) -> &'a [u8] {
        self.text
            .get(self.product_key_len.saturating_add(1)..)
            .unwrap_or_default()
    }

    fn device_name_len(&self) -> usize {
        self.text
            .len()
            .saturating_sub(self.product_key_len.saturating_add(1))
    }

    /// What an identity hole stands for; `None` for a wildcard.
    #[inline]
    fn hole_bytes(&self, hole: Hole) -> Option<&'a [u8]> {
        match hole {
            Hole::ProductKeyAndDeviceName => Some(self.text),
            Hole::ProductKey => Some(self.product_key()),
            Hole::DeviceName => Some(self.device_name()),
            Hole::SingleLevel | Hole::MultiLevel => None,
        }
    }
}

/// What a check is about, a topic name or filter, with its first eight bytes as a word.
#[derive(Clone, Copy, Debug)]
struct Subject<'a> {
    bytes: &'a [u8],
    /// [`leading_word`] of `bytes`.
    leading: u64,
}

impl<'a> Subject<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            leading: leading_word(bytes),
        }
    }
}

/// A placeholder or wildcard level of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hole {
    /// `${productKey}`: the level is the device's product key.
    ProductKey,
    /// `${deviceName}`: the level is the device's name.
    DeviceName,
    /// `${productKey}/${deviceName}`: two levels, the device's product key and name, compared
    /// in one go.
    ProductKeyAndDeviceName,
    /// `+`: any one level.
    SingleLevel,
    /// `#`: every remaining level, the parent level included; always the last hole.
    MultiLevel,
}

impl Hole {
    fn of_level(level: &str) -> Option<Self> {
        match level {
            PRODUCT_KEY_PLACEHOLDER => Some(Self::ProductKey),
            DEVICE_NAME_PLACEHOLDER => Some(Self::DeviceName),
            "+" => Some(Self::SingleLevel),
            "#" => Some(Self::MultiLevel),
            _ => None,
        }
    }
}

/// A hole of a template and the literal text up to the next hole or the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    hole: Hole,
    /// The literal is the bytes `literal_start..literal_end` of the template's text, with its
    /// `/`: it starts with the `/` after the hole and, unless it is the last, ends with the
    /// `/` before the next hole (`/thing/`, `/`).
    literal_start: usize,
    literal_end: usize,
    /// The literal's bytes when it is short enough, so that a check finds them here rather
    /// than in the template's text.
    inline_literal: InlineLiteral,
}

/// A short literal kept in its [`Segment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InlineLiteral {
    /// How many bytes of `bytes` are the literal; [`InlineLiteral::ABSENT`] when it is too long.
    len: u8,
    bytes: [u8; InlineLiteral::CAPACITY],
}

impl InlineLiteral {
    const CAPACITY: usize = 15;
    const ABSENT: u8 = u8::MAX;

    fn new(literal: &[u8]) -> Self {
        let mut bytes = [0; Self::CAPACITY];
        let len = match u8::try_from(literal.len()) {
            Ok(len) if literal.len() <= Self::CAPACITY => {
                for (slot, &byte) in bytes.iter_mut().zip(literal) {
                    *slot = byte;
                }
                len
            }
            _ => Self::ABSENT,
        };
        Self { len, bytes }
    }

    fn get(&self) -> Option<&[u8]> {
        self.bytes.get(..usize::from(self.len))
    }
}

/// A category template compiled once per product for the checks of all its devices.
///
/// The template is cut at its placeholder and wildcard levels, the holes: its head is the
/// literal text before the first hole, then each hole is followed by the literal text up to the
/// next one. `/sys/${productKey}/${deviceName}/thing/#` is the head `/sys/`, the product key
/// and device name followed by `/thing/`, and `#`. Since holes are whole levels, the `/`
/// around them are in the literals, and a check compares bytes, hole then literal, with the
/// device's identity in place of the placeholders: exactly as if the template had been filled.
///
/// Before that, a few comparisons of words ([`QuickCheck`]) reject most of the templates a
/// check meets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CompiledTemplate {
    quick: QuickCheck,
    /// The template's text, placeholders included; the literals point into it.
    text: Box<str>,
    /// The head is `text[..head_len]`; all of it when the template has no hole.
    head_len: usize,
    /// The holes, each with the literal after it.
    segments: Box<[Segment]>,
}

/// What a subject reached by a template must be, checked in a few instructions before the
/// template is walked.
///
/// The bytes compared, the head and then the product key's first bytes, are a prefix of every
/// subject the template reaches, so a subject that differs there is not reached. Words hold
/// bytes little-endian (the first byte lowest); the bytes past a short subject's end read as
/// zero, so a subject shorter than that prefix differs from it (no template or identity byte
/// is zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QuickCheck {
    /// The first eight bytes of the head (without the `/` of a parent level before a final
    /// `#`, since `a/#` reaches `a`).
    head: u64,
    /// Ones over the bytes of `head`.
    head_mask: u64,
    /// Where the product key starts in the first eight bytes, in bits, when it comes right
    /// after the head and there is room (below `u64::BITS`).
    product_key_shift: u32,
    /// All ones when the product key has bytes among the first eight, zero otherwise: selects
    /// whether the shifted product key is compared.
    product_key_select: u64,
    /// Whether `head` is the whole head, so that the walk need not compare it again.
    head_compared: bool,
    /// Whether the template starts with a wildcard level, which a `$` topic escapes.
    leading_wildcard: bool,
    /// The length of every subject the template reaches, when no wildcard makes it vary.
    exact_len: Option<FilledLength>,
}

/// The length of a filled template without wildcards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FilledLength {
    /// Its bytes outside the placeholders.
    literal_bytes: usize,
    /// How many levels are the product key.
    product_keys: usize,
    /// How many levels are the device name.
    device_names: usize,
}

impl FilledLength {
    fn of(head_len: usize, segments: &[Segment]) -> Option<Self> {
        let mut length = Self {
            literal_bytes: head_len,
            product_keys: 0,
            device_names: 0,
        };
        for segment in segments {
            match segment.hole {
                Hole::ProductKey => length.product_keys += 1,
                Hole::DeviceName => length.device_names += 1,
                Hole::ProductKeyAndDeviceName => {
                    length.product_keys += 1;
                    length.device_names += 1;
                    // The `/` between them.
                    length.literal_bytes += 1;
                }
                Hole::SingleLevel | Hole::MultiLevel => return None,
            }
            length.literal_bytes += segment.literal_end.saturating_sub(segment.literal_start);
        }
        Some(length)
    }

    fn with(self, identity: IdentityView<'_>) -> usize {
        let product_keys = self.product_keys.saturating_mul(identity.product_key_len);
        let device_names = self.device_names.saturating_mul(identity.device_name_len());
        self.literal_bytes
            .saturating_add(product_keys)
            .saturating_add(device_names)
    }
}

impl QuickCheck {
    fn new(head: &str, segments: &[Segment]) -> Self {
        let next = segments.first().map(|segment| segment.hole);
        let parent_reached = next == Some(Hole::MultiLevel);
        let compared = if parent_reached {
            head.strip_suffix('/').unwrap_or(head)
        } else {
            head
        };
        let known = compared.len().min(8);
        let product_key_follows =
            matches!(next, Some(Hole::ProductKey | Hole::ProductKeyAndDeviceName));
        let product_key_shift = match u32::try_from(known * 8) {
            Ok(shift) if product_key_follows && shift < u64::BITS => Some(shift),
            _ => None,
        };
        Self {
            head: leading_word(compared.as_bytes()),
            head_mask: mask_of_bytes(known),
            product_key_shift: product_key_shift.unwrap_or(0),
            product_key_select: if product_key_shift.is_some() {
                u64::MAX
            } else {
                0
            },
            head_compared: !parent_reached && head.len() <= 8,
            leading_wildcard: head.is_empty()
                && matches!(next, Some(Hole::SingleLevel | Hole::MultiLevel)),
            exact_len: FilledLength::of(head.len(), segments),
        }
    }

    /// Whether the template, filled with `identity`, may reach `subject`: `false` is final,
    /// `true` needs the walk.
    #[inline]
    fn passes(&self, identity: IdentityView<'_>, subject: Subject<'_>) -> bool {
        let shift = self.product_key_shift;
        let select = self.product_key_select;
        let key = identity.product_key_leading.wrapping_shl(shift) & select;
        let key_mask = identity.product_key_mask.wrapping_shl(shift) & select;
        let leading_differs =
            (subject.leading ^ (self.head | key)) & (self.head_mask | key_mask) != 0;
        !leading_differs
            && self
                .exact_len
                .is_none_or(|length| length.with(identity) == subject.bytes.len())
    }
}

/// The first eight bytes of `bytes` as a little-endian word, zeros past its end.
#[inline]
fn leading_word(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(first) => u64::from_le_bytes(*first),
        None => {
            let mut padded = [0; 8];
            for (slot, &byte) in padded.iter_mut().zip(bytes) {
                *slot = byte;
            }
            u64::from_le_bytes(padded)
        }
    }
}

/// Ones over the first `count` bytes of a little-endian word (all of it from 8 on).
#[inline]
fn mask_of_bytes(count: usize) -> u64 {
    u32::try_from(count.saturating_mul(8))
        .ok()
        .and_then(|bits| 1_u64.checked_shl(bits))
        .map_or(u64::MAX, |bit| bit - 1)
}

impl CompiledTemplate {
    /// Compiles a template whose placeholders and wildcards each fill a whole level.
    fn compile(template: &str) -> Self {
        let mut head_len = template.len();
        let mut segments: Vec<Segment> = Vec::new();
        let mut level_start = 0;
        for level in template.split('/') {
            let level_end = level_start + level.len();
            if let Some(hole) = Hole::of_level(level) {
                match segments.last_mut() {
                    // `${productKey}/${deviceName}`: one hole instead of two.
                    Some(previous)
                        if hole == Hole::DeviceName
                            && previous.hole == Hole::ProductKey
                            && previous.literal_start + 1 == level_start =>
                    {
                        previous.hole = Hole::ProductKeyAndDeviceName;
                        previous.literal_start = level_end;
                    }
                    previous => {
                        match previous {
                            // The literal before this hole ends with the `/` before it.
                            Some(previous) => previous.literal_end = level_start,
                            None => head_len = level_start,
                        }
                        segments.push(Segment {
                            hole,
                            literal_start: level_end,
                            literal_end: level_end,
                            inline_literal: InlineLiteral::new(&[]),
                        });
                    }
                }
            }
            level_start = level_end + 1;
        }
        if let Some(last) = segments.last_mut() {
            last.literal_end = template.len();
        }
        for segment in &mut segments {
            let literal = template
                .as_bytes()
                .get(segment.literal_start..segment.literal_end)
                .unwrap_or_default();
            segment.inline_literal = InlineLiteral::new(literal);
        }
        Self {
            quick: QuickCheck::new(template.get(..head_len).unwrap_or_default(), &segments),
            text: template.into(),
            head_len,
            segments: segments.into_boxed_slice(),
        }
    }

    fn head(&self) -> &[u8] {
        self.text
            .as_bytes()
            .get(..self.head_len)
            .unwrap_or_default()
    }

    fn literal<'a>(&'a self, segment: &'a Segment) -> &'a [u8] {
        match segment.inline_literal.get() {
            Some(inline) => inline,
            None => self
                .text
                .as_bytes()
                .get(segment.literal_start..segment.literal_end)
                .unwrap_or_default(),
        }
    }

    /// Whether a subject starting with `$` is out of reach: a name starting with `$` is not
    /// matched by a filter whose first level is a wildcard.
    fn dollar_out_of_reach(&self, subject: Subject<'_>) -> bool {
        self.quick.leading_wildcard && subject.bytes.first() == Some(&b'$')
    }

    /// Whether the template, filled with `identity`, matches the topic name `name` (the rules
    /// of [`TopicFilter::matches`]).
    #[inline]
    fn matches(&self, identity: IdentityView<'_>, name: Subject<'_>) -> bool {
        self.quick.passes(identity, name)
            && !self.dollar_out_of_reach(name)
            && self.walk(identity, name, |_| true)
    }

    /// Whether every name `filter` matches is matched by the template filled with `identity`
    /// (see [`filter_covers`] for the rule).
    #[inline]
    fn covers(&self, identity: IdentityView<'_>, filter: Subject<'_>) -> bool {
        // `+` covers any level of the filter except `#`. Literals and identities hold no `+`
        // or `#` (identities with them are refused), so comparing bytes already refuses a
        // wildcard of the filter there.
        self.quick.passes(identity, filter)
            && !self.dollar_out_of_reach(filter)
            && self.walk(identity, filter, |level| level != b"#")
    }

    /// Walks the template along the subject (a name or a filter): a literal or an identity
    /// must be the next bytes of the subject; a `+` takes one level when
    /// `single_level_accepts` it; a `#` takes the rest, and also the end of the subject just
    /// before it (`a/#` reaches `a`). Nothing of the subject may be left over.
    fn walk(
        &self,
        identity: IdentityView<'_>,
        subject: Subject<'_>,
        single_level_accepts: impl Fn(&[u8]) -> bool,
    ) -> bool {
        let mut rest = if self.quick.head_compared {
            match subject.bytes.get(self.head_len..) {
                Some(rest) => rest,
                None => return false,
            }
        } else {
            let head = self.head();
            match strip_prefix(subject.bytes, head) {
                Some(rest) => rest,
                None => {
                    let first_hole = self.segments.first().map(|segment| segment.hole);
                    return reaches_parent(head, first_hole, subject.bytes);
                }
            }
        };
        let mut segments = self.segments.iter();
        while let Some(segment) = segments.next() {
            match identity.hole_bytes(segment.hole) {
                Some(expected) => match strip_prefix(rest, expected) {
                    Some(after) => rest = after,
                    None => return false,
                },
                None if segment.hole == Hole::MultiLevel => return true,
                None => {
                    let level_len = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                    let (level, after) = rest.split_at_checked(level_len).unwrap_or_default();
                    if !single_level_accepts(level) {
                        return false;
                    }
                    rest = after;
                }
            }
            let literal = self.literal(segment);
            match strip_prefix(rest, literal) {
                Some(after) => rest = after,
                None => {
                    let next_hole = segments.as_slice().first().map(|next| next.hole);
                    return reaches_parent(literal, next_hole, rest);
                }
            }
        }
        rest.is_empty()
    }

    /// The template with `identity` in its placeholder levels.
    fn fill(&self, identity: IdentityView<'_>) -> String {
        let mut filled = String::with_capacity(
            self.text.len() + identity.product_key().len() + identity.device_name().len(),
        );
        // Template text and identities are UTF-8, and they are cut at `/`.
        let text = |bytes| core::str::from_utf8(bytes).unwrap_or_default();
        filled.push_str(text(self.head()));
        for segment in &self.segments {
            match identity.hole_bytes(segment.hole) {
                Some(identity_bytes) => filled.push_str(text(identity_bytes)),
                None if segment.hole == Hole::MultiLevel => filled.push('#'),
                None => filled.push('+'),
            }
            filled.push_str(text(self.literal(segment)));
        }
        filled
    }
}

/// Whether a literal that `rest` does not start with is still reached by the `#` after it:
/// `a/#` reaches `a`, so `rest` may be the literal without its final `/`.
fn reaches_parent(literal: &[u8], next_hole: Option<Hole>, rest: &[u8]) -> bool {
    next_hole == Some(Hole::MultiLevel)
        && literal
            .split_last()
            .is_some_and(|(&slash, parent)| slash == b'/' && parent == rest)
}

/// `subject` without `prefix` at its start, when it starts with it.
///
/// The parts compared are short (a few bytes to a few dozen), where calling `memcmp` as
/// `[u8]::strip_prefix` does costs more than the comparison: this compares in line, a word at
/// a time.
#[inline]
fn strip_prefix<'a>(subject: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = subject.split_at_checked(prefix.len())?;
    equal_bytes(head, prefix).then_some(rest)
}

/// Whether two byte strings are equal, compared in line (see [`strip_prefix`]).
#[inline]
fn equal_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        // Two words that overlap when `len` is not a multiple of their size.
        4..8 => {
            word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, len - 4) == word::<4>(b, len - 4)
        }
        _ => {
            let mut at = 0;
            while at + 8 < len {
                if word::<8>(a, at) != word::<8>(b, at) {
                    return false;
                }
                at += 8;
            }
            word::<8>(a, len - 8) == word::<8>(b, len - 8)
        }
    }
}

/// The `N` bytes of `bytes` from `at` (zeros past its end, which callers never reach).
#[inline]
fn word<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..)
        .and_then(|rest| rest.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

/// A product's categories compiled for the ACL, split by what they allow. Built by
/// [`ProductCategories`] when its categories change and shared by the ACLs of all its devices.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CompiledCategories {
    /// The templates of the categories that allow publishing, in the product's order.
    publish: Box<[CompiledTemplate]>,
    /// The templates of the categories that allow subscribing, in the product's order.
    subscribe: Box<[CompiledTemplate]>,
}

impl CompiledCategories {
    /// Compiles each category's template once, into the lists its permission allows.
    pub(crate) fn compile<'a>(categories: impl IntoIterator<Item = &'a TopicCategory>) -> Self {
        let mut publish = Vec::new();
        let mut subscribe = Vec::new();
        for category in categories {
            let template = CompiledTemplate::compile(category.template());
            let permission = category.permission();
            if permission.allows_publish() {
                publish.push(template.clone());
            }
            if permission.allows_subscribe() {
                subscribe.push(template);
            }
        }
        Self {
            publish: publish.into_boxed_slice(),
            subscribe: subscribe.into_boxed_slice(),
        }
    }
}

/// How many bytes of identity (product key, `/`, device name) are kept inside the ACL's own
/// allocation. The platform's identities fit: an 11-character product key and a device name of
/// at most 32 characters.
const INLINE_IDENTITY_CAPACITY: usize = 45;

/// The device's product key and name, with the product key's first bytes as a word ready for
/// [`QuickCheck`].
#[derive(Clone)]
struct DeviceIdentity {
    product_key_leading: u64,
    product_key_mask: u64,
    text: IdentityText,
}

/// `product_key/device_name`.
#[derive(Clone)]
enum IdentityText {
    /// Stored in place, so the ACL of a device is one allocation.
    Inline {
        product_key_len: u8,
        len: u8,
        bytes: [u8; INLINE_IDENTITY_CAPACITY],
    },
    /// A longer identity, in its own allocation.
    Heap {
        product_key_len: usize,
        text: Box<str>,
    },
}

impl DeviceIdentity {
    fn new(product_key: &str, device_name: &str) -> Self {
        Self {
            product_key_leading: leading_word(product_key.as_bytes()),
            product_key_mask: mask_of_bytes(product_key.len()),
            text: IdentityText::new(product_key, device_name),
        }
    }

    fn view(&self) -> IdentityView<'_> {
        let (text, product_key_len): (&[u8], usize) = match &self.text {
            IdentityText::Inline {
                product_key_len,
                len,
                bytes,
            } => (
                bytes.get(..usize::from(*len)).unwrap_or_default(),
                usize::from(*product_key_len),
            ),
            IdentityText::Heap {
                product_key_len,
                text,
            } => (text.as_bytes(), *product_key_len),
        };
        IdentityView {
            text,
            product_key_len,
            product_key_leading: self.product_key_leading,
            product_key_mask: self.product_key_mask,
        }
    }
}

impl IdentityText {
    fn new(product_key: &str, device_name: &str) -> Self {
        let len = product_key
            .len()
            .saturating_add(1)
            .saturating_add(device_name.len());
        let text = product_key.bytes().chain([b'/']).chain(device_name.bytes());
        if let (Ok(product_key_len), Ok(inline_len)) =
            (u8::try_from(product_key.len()), u8::try_from(len))
            && len <= INLINE_IDENTITY_CAPACITY
        {
            let mut bytes = [0; INLINE_IDENTITY_CAPACITY];
            for (slot, byte) in bytes.iter_mut().zip(text) {
                *slot = byte;
            }
            return Self::Inline {
                product_key_len,
                len: inline_len,
                bytes,
            };
        }
        let mut joined = String::with_capacity(len);
        joined.push_str(product_key);
        joined.push('/');
        joined.push_str(device_name);
        Self::Heap {
            product_key_len: product_key.len(),
            text: joined.into_boxed_str(),
        }
    }
}

impl PartialEq for DeviceIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for DeviceIdentity {}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = self.view();
        // Both parts were copied from `&str`s, split at the boundary between them.
        f.debug_struct("DeviceIdentity")
            .field(
                "product_key",
                &core::str::from_utf8(identity.product_key()).unwrap_or_default(),
            )
            .field(
                "device_name",
                &core::str::from_utf8(identity.device_name()).unwrap_or_default(),
            )
            .finish()
    }
}

/// The rules of one device: its product's compiled templates (shared with every other device
/// of the product) and its identity.
#[derive(Debug, PartialEq, Eq)]
struct DeviceRules {
    templates: Arc<CompiledCategories>,
    identity: DeviceIdentity,
}

/// Shared: the connection and the broker's session of one device hold the same rules, and a
/// clone is a reference count. An ACL that allows nothing is a device without templates.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rules {
    Open,
    Device(Arc<DeviceRules>),
}

/// What one connected device may do.
///
/// Built once per connection from the device's identity and its product's categories: the
/// product's templates are compiled once and shared, so a device's ACL is one small allocation
/// (its identity and a reference to the templates), and the checks allocate nothing. A PUBLISH
/// is allowed when its topic matches a category that allows publishing. A SUBSCRIBE filter is
/// allowed only when every topic it can match is matched by one single category that allows
/// subscribing (SPEC §3): so `/sys/pk/dn/thing/#` is allowed, `/sys/pk/#` and `/pk/+/get` are
/// not.
///
/// Custom-topic RRPC follows from the same rule: its categories are
/// `/ext/rrpc/+/<own topic category>` (see [`crate::CategoryKind::CustomTopicRrpc`]), so
/// `/ext/rrpc/+/pk/dn/user/#` is allowed exactly when `/pk/dn/user/#` would be, which needs a
/// sub category `/${productKey}/${deviceName}/user/#`.
///
/// Topics starting with `$` are outside every device category (they all start with `/`).
///
/// Two ACLs are equal when they allow the same by the same rules: both open, both denying all,
/// or the same identity under categories with the same templates and permissions.
///
/// ```
/// use aliot_topic::{Acl, ProductCategories, TopicFilter, TopicName};
/// let acl = Acl::for_device("pk", "dn", &ProductCategories::defaults());
/// assert!(acl.may_publish(&TopicName::from_static("/sys/pk/dn/thing/event/property/post")));
/// assert!(!acl.may_publish(&TopicName::from_static("/sys/pk/other/thing/event/property/post")));
/// assert!(acl.may_subscribe(&TopicFilter::from_static("/sys/pk/dn/rrpc/request/+")));
/// assert!(!acl.may_subscribe(&TopicFilter::from_static("/sys/pk/#")));
/// assert!(!acl.may_subscribe(&TopicFilter::from_static("/pk/+/get")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    rules: Rules,
}

impl Acl {
    /// The ACL of the device `product_key`/`device_name` under its product's categories.
    ///
    /// An identity refused by [`check_identity`] gets an ACL that allows nothing; use
    /// [`Acl::try_for_device`] to learn why.
    pub fn for_device(
        product_key: &str,
        device_name: &str,
        categories: &ProductCategories,
    ) -> Self {
        Self::try_for_device(product_key, device_name, categories)
            .unwrap_or_else(|_| Self::deny_all())
    }

    /// The ACL of a device, or why its identity cannot be given any topic.
    ///
    /// The product's compiled templates are shared, not copied: the ACL is one allocation
    /// holding the identity and a reference to them.
    pub fn try_for_device(
        product_key: &str,
        device_name: &str,
        categories: &ProductCategories,
    ) -> Result<Self, IdentityError> {
        check_identity(product_key, device_name)?;
        Ok(Self {
            rules: Rules::Device(Arc::new(DeviceRules {
                templates: Arc::clone(categories.compiled()),
                identity: DeviceIdentity::new(product_key, device_name),
            })),
        })
    }

    /// Open mode: every topic allowed (SPEC §1, for development and generic MQTT tools).
    pub fn open() -> Self {
        Self { rules: Rules::Open }
    }

    /// An ACL that allows nothing.
    pub fn deny_all() -> Self {
        Self {
            rules: Rules::Device(Arc::new(DeviceRules {
                templates: Arc::default(),
                identity: DeviceIdentity::new("", ""),
            })),
        }
    }

    /// Whether this is open mode.
    pub fn is_open(&self) -> bool {
        matches!(self.rules, Rules::Open)
    }

    /// Whether the device may publish on `topic`.
    pub fn may_publish(&self, topic: &TopicName) -> bool {
        match &self.rules {
            Rules::Open => true,
            Rules::Device(rules) => {
                let identity = rules.identity.view();
                let topic = Subject::new(topic.as_bytes());
                rules
                    .templates
                    .publish
                    .iter()
                    .any(|template| template.matches(identity, topic))
            }
        }
    }

    /// Whether the device may subscribe to `filter`: every topic it can match must be matched
    /// by one category that allows subscribing.
    pub fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        match &self.rules {
            Rules::Open => true,
            Rules::Device(rules) => {
                let identity = rules.identity.view();
                let filter = Subject::new(filter.as_bytes());
                rules
                    .templates
                    .subscribe
                    .iter()
                    .any(|template| template.covers(identity, filter))
            }
        }
    }

    /// The categories that allow publishing, filled with the device's identity, in the
    /// product's order (none in open mode or when all is denied). Each is a new `String`:
    /// this is for display and diagnostics, not for the checks.
    ///
    /// ```
    /// use aliot_topic::{Acl, ProductCategories};
    /// let acl = Acl::for_device("pk", "dn", &ProductCategories::defaults());
    /// assert!(acl.publish_filters().any(|filter| filter == "/sys/pk/dn/thing/#"));
    /// assert!(!acl.publish_filters().any(|filter| filter == "/pk/dn/get"));
    /// ```
    pub fn publish_filters(&self) -> impl Iterator<Item = String> {
        self.filled_filters(|templates| &templates.publish)
    }

    /// The categories that allow subscribing, filled with the device's identity, in the
    /// product's order (none in open mode or when all is denied). Each is a new `String`.
    ///
    /// ```
    /// use aliot_topic::{Acl, ProductCategories};
    /// let acl = Acl::for_device("pk", "dn", &ProductCategories::defaults());
    /// assert!(acl.subscribe_filters().any(|filter| filter == "/pk/dn/get"));
    /// assert!(!acl.subscribe_filters().any(|filter| filter == "/pk/dn/update"));
    /// ```
    pub fn subscribe_filters(&self) -> impl Iterator<Item = String> {
        self.filled_filters(|templates| &templates.subscribe)
    }

    fn filled_filters<'a>(
        &'a self,
        pick: impl FnOnce(&'a CompiledCategories) -> &'a [CompiledTemplate],
    ) -> impl Iterator<Item = String> + 'a {
        let (templates, identity): (&[CompiledTemplate], IdentityView<'a>) = match &self.rules {
            Rules::Open => (&[], IdentityView::default()),
            Rules::Device(rules) => (pick(&rules.templates), rules.identity.view()),
        };
        templates
            .iter()
            .map(move |template| template.fill(identity))
    }

    /// The compiled templates this ACL checks against, when it is a device's.
    #[cfg(test)]
    fn compiled_templates(&self) -> Option<&Arc<CompiledCategories>> {
        match &self.rules {
            Rules::Device(rules) => Some(&rules.templates),
            Rules::Open => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Permission;
    use crate::name::filter_matches;
    use alloc::format;
    use alloc::vec;

    #[test]
    fn coverage_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/thing/#", true),
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/thing", true),
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/thing/+/x", true),
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/#", false),
            ("/sys/pk/dn/thing/#", "/sys/pk/+/thing/#", false),
            ("/sys/pk/dn/rrpc/#", "/sys/pk/dn/rrpc/request/+", true),
            ("/pk/dn/get", "/pk/+/get", false),
            ("/pk/dn/get", "/pk/dn/get", true),
            ("/pk/dn/get", "/pk/dn/get/#", false),
            ("/pk/dn/user/+", "/pk/dn/user/x", true),
            ("/pk/dn/user/+", "/pk/dn/user/+", true),
            ("/pk/dn/user/+", "/pk/dn/user/#", false),
            ("/pk/dn/user/+", "/pk/dn/user", false),
            ("/pk/dn/user/+", "/pk/dn/user/x/y", false),
            ("+/#", "+", true),
            ("#", "$SYS/x", false),
            ("#", "#", true),
            ("+", "$x", false),
            ("$x/#", "$x", true),
        ];
        for &(category, filter, expected) in cases {
            assert_eq!(
                filter_covers(category.as_bytes(), filter.as_bytes()),
                expected,
                "{category} covers {filter}"
            );
        }
    }

    fn product_with_custom(template: &str, permission: Permission) -> ProductCategories {
        let mut categories = ProductCategories::defaults();
        categories
            .add_custom(template, permission)
            .unwrap_or_else(|e| panic!("{e}"));
        categories
    }

    #[test]
    fn devices_of_a_product_share_its_compiled_templates() {
        let categories =
            product_with_custom("/${productKey}/${deviceName}/user/get", Permission::Sub);
        let first = Acl::for_device("pk", "dn1", &categories);
        let second = Acl::for_device("pk", "dn2", &categories);
        let (Some(first_templates), Some(second_templates)) =
            (first.compiled_templates(), second.compiled_templates())
        else {
            panic!("device ACLs have compiled templates");
        };
        assert!(Arc::ptr_eq(first_templates, second_templates));
        assert!(Arc::ptr_eq(first_templates, categories.compiled()));
        // A clone of an ACL is the same allocation.
        let Rules::Device(first_rules) = &first.rules else {
            panic!("a device ACL has device rules");
        };
        let Rules::Device(clone_rules) = &first.clone().rules else {
            panic!("a clone of a device ACL has device rules");
        };
        assert!(Arc::ptr_eq(first_rules, clone_rules));
    }

    #[test]
    fn adding_a_category_compiles_anew_and_leaves_earlier_acls_alone() {
        let mut categories = ProductCategories::defaults();
        let before = Acl::for_device("pk", "dn", &categories);
        categories
            .add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)
            .unwrap_or_else(|e| panic!("{e}"));
        let after = Acl::for_device("pk", "dn", &categories);
        let user_get = TopicFilter::from_static("/pk/dn/user/get");
        assert!(!before.may_subscribe(&user_get));
        assert!(after.may_subscribe(&user_get));
        assert_ne!(before, after);
        assert!(!Arc::ptr_eq(
            before
                .compiled_templates()
                .unwrap_or_else(|| panic!("device ACL")),
            categories.compiled()
        ));
    }

    #[test]
    fn equality_compares_rules_not_allocations() {
        let first_product =
            product_with_custom("/${productKey}/${deviceName}/user/#", Permission::Sub);
        let second_product =
            product_with_custom("/${productKey}/${deviceName}/user/#", Permission::Sub);
        assert!(!Arc::ptr_eq(
            first_product.compiled(),
            second_product.compiled()
        ));
        let acl = Acl::for_device("pk", "dn", &first_product);
        assert_eq!(acl, Acl::for_device("pk", "dn", &second_product));
        assert_ne!(acl, Acl::for_device("pk", "dn2", &first_product));
        assert_ne!(acl, Acl::for_device("pkd", "n", &first_product));
        assert_ne!(
            acl,
            Acl::for_device("pk", "dn", &ProductCategories::defaults())
        );
        assert_ne!(acl, Acl::deny_all());
        assert_ne!(acl, Acl::open());
        assert_ne!(Acl::open(), Acl::deny_all());
        assert_eq!(
            Acl::deny_all(),
            Acl::for_device("sys", "dn", &first_product)
        );
    }

    #[test]
    fn templates_are_cut_at_placeholder_and_wildcard_levels() {
        let cut = |text: &str| {
            let template = CompiledTemplate::compile(text);
            let quoted = |bytes: &[u8]| format!("{:?}", core::str::from_utf8(bytes).unwrap_or("?"));
            let mut pieces = vec![quoted(template.head())];
            for segment in &template.segments {
                pieces.push(format!("{:?}", segment.hole));
                pieces.push(quoted(template.literal(segment)));
            }
            pieces.join(" ")
        };
        assert_eq!(
            cut("/ext/rrpc/+/${productKey}/${deviceName}/user/get"),
            r#""/ext/rrpc/" SingleLevel "/" ProductKeyAndDeviceName "/user/get""#
        );
        assert_eq!(
            cut("/sys/${productKey}/${deviceName}/thing/#"),
            r#""/sys/" ProductKeyAndDeviceName "/thing/" MultiLevel """#
        );
        assert_eq!(
            cut("/broadcast/${productKey}/#"),
            r#""/broadcast/" ProductKey "/" MultiLevel """#
        );
        assert_eq!(cut("/a//b"), r#""/a//b""#);
        assert_eq!(cut("+/x/#"), r#""" SingleLevel "/x/" MultiLevel """#);
        assert_eq!(cut("#"), r#""" MultiLevel """#);
        assert_eq!(
            cut("${deviceName}/${productKey}"),
            r#""" DeviceName "/" ProductKey """#
        );
        assert_eq!(
            cut("${productKey}//${deviceName}/"),
            r#""" ProductKey "//" DeviceName "/""#
        );
    }

    /// A compiled template matches exactly what the filled template matches as a filter,
    /// empty levels and trailing `/` included.
    #[test]
    fn compiled_matching_agrees_with_the_filled_filter() {
        let templates = [
            "/${productKey}/${deviceName}/update",
            "/sys/${productKey}/${deviceName}/thing/#",
            "/ext/rrpc/+/${productKey}/${deviceName}/user/get",
            "/broadcast/${productKey}/#",
            "/${productKey}//${deviceName}/",
            "${productKey}/#",
            "+/${deviceName}",
            "+/${productKey}/${deviceName}",
            "${deviceName}/${productKey}",
            // A literal too long to be kept in its segment.
            "/${productKey}/${deviceName}/thing/event/property/post",
            "/sys/${productKey}/${deviceName}/thing/event/property/#",
            "#",
            "a/#",
            "a//b",
            "/",
        ];
        let levels = ["", "a", "b", "pk", "dn", "sys", "thing", "$x", "update"];
        let mut names: Vec<String> = Vec::new();
        for count in 1..=4_u32 {
            let total = levels.len().pow(count);
            for mut number in 0..total {
                let mut name = String::new();
                for index in 0..count {
                    if index > 0 {
                        name.push('/');
                    }
                    name.push_str(levels[number % levels.len()]);
                    number /= levels.len();
                }
                names.push(name);
            }
        }
        names.extend(
            [
                "/pk/dn/update",
                "/sys/pk/dn/thing",
                "/sys/pk/dn/thing/",
                "/sys/pk/dn/thingx",
                "/ext/rrpc/1/pk/dn/user/get",
                "/ext/rrpc/1/pk/dn/user/get/",
                "/ext/rrpc/1/pk/dn/user",
                "/broadcast/pk",
                "/broadcast/pkx/y",
                "/pk//dn/",
                "/pk/dn/",
                "/pk/dn/thing/event/property/post",
                "/pk/dn/thing/event/property/pos",
                "/sys/pk/dn/thing/event/property",
                "/sys/pk/dn/thing/event/property/post",
                "/sys/pk/dn/thing/event/propertyx",
            ]
            .map(String::from),
        );
        let device = DeviceIdentity::new("pk", "dn");
        let identity = device.view();
        for template in templates {
            let compiled = CompiledTemplate::compile(template);
            let filled = compiled.fill(identity);
            for name in names.iter().filter(|name| !name.is_empty()) {
                assert_eq!(
                    compiled.matches(identity, Subject::new(name.as_bytes())),
                    filter_matches(filled.as_bytes(), name.as_bytes()),
                    "{template} matching {name:?}"
                );
            }
        }
    }

    #[test]
    fn a_long_identity_is_kept_in_its_own_allocation_and_works_the_same() {
        let device_name = "d".repeat(INLINE_IDENTITY_CAPACITY);
        let identity = DeviceIdentity::new("pk", &device_name);
        assert!(matches!(identity.text, IdentityText::Heap { .. }));
        assert!(matches!(
            DeviceIdentity::new("a1BenchPK00", "device-name-of-thirty-two-chars!").text,
            IdentityText::Inline { .. }
        ));
        let acl = Acl::for_device("pk", &device_name, &ProductCategories::defaults());
        let own = format!("/sys/pk/{device_name}/thing/#");
        let longer = format!("/sys/pk/{device_name}d/thing/#");
        let limits = crate::TopicLimits::with_max_len(256);
        let filter = |text: &str| TopicFilter::new(text, &limits).unwrap_or_else(|e| panic!("{e}"));
        assert!(acl.may_subscribe(&filter(&own)));
        assert!(!acl.may_subscribe(&filter(&longer)));
        assert!(acl.subscribe_filters().any(|filled| filled == own));
        let view = identity.view();
        assert_eq!(view.product_key(), b"pk");
        assert_eq!(view.device_name(), device_name.as_bytes());
        assert_eq!(view.text, format!("pk/{device_name}").as_bytes());
    }

    /// A device's ACL is one allocation of its rules; keep it small.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn device_rules_stay_small() {
        assert!(core::mem::size_of::<DeviceRules>() <= 72);
        assert_eq!(core::mem::size_of::<Acl>(), 8);
    }

    #[test]
    fn in_line_comparison_finds_every_difference() {
        let text: Vec<u8> = (b'a'..=b'z').collect();
        for len in 0..=text.len() {
            let original = text.get(..len).unwrap_or_default();
            assert!(equal_bytes(original, original), "{len}");
            for at in 0..len {
                let mut changed = original.to_vec();
                if let Some(byte) = changed.get_mut(at) {
                    *byte = b'/';
                }
                assert!(!equal_bytes(original, &changed), "{len} at {at}");
            }
            if let Some((_, shorter)) = original.split_last() {
                assert!(!equal_bytes(original, shorter), "{len} and one less");
            }
        }
        assert_eq!(strip_prefix(b"/sys/pk", b"/sys/"), Some(&b"pk"[..]));
        assert_eq!(strip_prefix(b"/sy", b"/sys/"), None);
        assert_eq!(strip_prefix(b"/sys/pk", b""), Some(&b"/sys/pk"[..]));
    }
}
