//! Validated MQTT topic names and topic filters, and filter matching.

use bytes::Bytes;
use core::fmt;

/// The longest topic the platform accepts by default, in bytes (SPEC §1).
pub const DEFAULT_MAX_TOPIC_LEN: usize = 128;

/// Limits applied when a topic name or filter is validated.
///
/// ```
/// use aliot_topic::{TopicLimits, DEFAULT_MAX_TOPIC_LEN};
/// assert_eq!(TopicLimits::default().max_len, DEFAULT_MAX_TOPIC_LEN);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicLimits {
    /// The longest accepted topic, in bytes of UTF-8.
    pub max_len: usize,
}

impl TopicLimits {
    /// Limits with the given maximum length in bytes.
    pub const fn with_max_len(max_len: usize) -> Self {
        Self { max_len }
    }
}

impl Default for TopicLimits {
    fn default() -> Self {
        Self {
            max_len: DEFAULT_MAX_TOPIC_LEN,
        }
    }
}

/// Why a byte string is not a valid topic name or topic filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// MQTT requires a topic to have at least one character.
    #[error("the topic is empty; a topic needs at least one character")]
    Empty,
    /// The topic is longer than the configured limit.
    #[error("the topic is {len} bytes long, more than the limit of {max} bytes")]
    TooLong {
        /// Length of the rejected topic, in bytes.
        len: usize,
        /// The limit it exceeded, in bytes.
        max: usize,
    },
    /// The topic is not valid UTF-8.
    #[error("the topic is not valid UTF-8")]
    InvalidUtf8,
    /// The topic contains the character U+0000, which MQTT forbids.
    #[error("the topic contains the null character U+0000, which MQTT forbids")]
    NullCharacter,
    /// A topic name (what a PUBLISH carries) contains `+` or `#`.
    #[error("a topic name must not contain the wildcards `+` or `#`")]
    WildcardInName,
    /// A topic filter has `+` or `#` sharing a level with other characters, or `#` before the
    /// last level.
    #[error(
        "misplaced wildcard: `+` and `#` must each fill a whole level, and `#` must be the last level"
    )]
    MisplacedWildcard,
}

/// Checks what names and filters share: length, UTF-8, no U+0000.
fn check_common(bytes: &[u8], limits: &TopicLimits) -> Result<(), TopicError> {
    if bytes.is_empty() {
        return Err(TopicError::Empty);
    }
    if bytes.len() > limits.max_len {
        return Err(TopicError::TooLong {
            len: bytes.len(),
            max: limits.max_len,
        });
    }
    if core::str::from_utf8(bytes).is_err() {
        return Err(TopicError::InvalidUtf8);
    }
    if bytes.contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Validates a topic name: the common rules, and no wildcard anywhere.
pub(crate) fn check_name(bytes: &[u8], limits: &TopicLimits) -> Result<(), TopicError> {
    check_common(bytes, limits)?;
    if bytes.iter().any(|&b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates a topic filter: the common rules, and MQTT's wildcard placement.
pub(crate) fn check_filter(bytes: &[u8], limits: &TopicLimits) -> Result<(), TopicError> {
    check_common(bytes, limits)?;
    check_wildcard_placement(bytes)
}

/// `+` and `#` each fill a whole level, and `#` is the last level.
pub(crate) fn check_wildcard_placement(bytes: &[u8]) -> Result<(), TopicError> {
    let mut levels = bytes.split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        let has_wildcard = level.iter().any(|&b| b == b'+' || b == b'#');
        if !has_wildcard {
            continue;
        }
        let alone = level.len() == 1;
        let hash_not_last = level == b"#" && levels.peek().is_some();
        if !alone || hash_not_last {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Where the level starting at `start` ends: the index of the next `/`, or the length.
fn level_end(bytes: &[u8], start: usize) -> usize {
    bytes
        .get(start..)
        .and_then(|rest| rest.iter().position(|&b| b == b'/'))
        .map_or(bytes.len(), |offset| start + offset)
}

/// Where the first wildcard level of a valid filter starts, or its length if it has none.
///
/// Validation makes `+` and `#` whole levels, so the bytes before that point are literal levels
/// each followed by `/`, and a name matched by the filter starts with exactly those bytes.
pub(crate) fn literal_prefix_len(filter: &[u8]) -> usize {
    filter
        .iter()
        .position(|&b| b == b'+' || b == b'#')
        .unwrap_or(filter.len())
}

/// Whether a filter matches a name, both given as bytes already validated.
///
/// `+` matches exactly one level (possibly empty), `#` matches the rest of the name including
/// nothing at all (so `a/#` matches `a`), and a name starting with `$` is not matched by a filter
/// whose first level is a wildcard.
#[cfg(test)]
pub(crate) fn filter_matches(filter: &[u8], name: &[u8]) -> bool {
    filter_matches_with_prefix(filter, literal_prefix_len(filter), name)
}

/// [`filter_matches`] with the filter's [`literal_prefix_len`] already known: the literal part is
/// compared in one go, and only what follows is walked level by level.
pub(crate) fn filter_matches_with_prefix(filter: &[u8], prefix_len: usize, name: &[u8]) -> bool {
    let Some((prefix, wildcard_part)) = filter.split_at_checked(prefix_len) else {
        return false;
    };
    if wildcard_part.is_empty() {
        return filter == name;
    }
    if prefix.is_empty() && name.first() == Some(&b'$') {
        return false;
    }
    if !name.starts_with(prefix) {
        // `a/#` also matches its parent `a`.
        return wildcard_part == b"#"
            && prefix
                .split_last()
                .is_some_and(|(_, parent)| parent == name);
    }
    levels_match_from(filter, name, prefix_len, prefix_len)
}

/// Walks filter and name a level at a time from `f` and `n`, the starts of a level in each.
/// Validation guarantees that `+` and `#` only occur as whole levels, `#` only last.
fn levels_match_from(filter: &[u8], name: &[u8], mut f: usize, mut n: usize) -> bool {
    loop {
        match filter.get(f) {
            Some(b'#') => return true,
            Some(b'+') => {
                f += 1;
                n = level_end(name, n);
            }
            _ => {
                let filter_end = level_end(filter, f);
                let level = filter.get(f..filter_end).unwrap_or_default();
                let name_end = n + level.len();
                if name.get(n..name_end) != Some(level) {
                    return false;
                }
                if name.get(name_end).is_some_and(|&b| b != b'/') {
                    return false;
                }
                f = filter_end;
                n = name_end;
            }
        }
        // Both are at the end of a level: at a `/` or at their end.
        match (f < filter.len(), n < name.len()) {
            (false, false) => return true,
            (true, true) => {
                f += 1;
                n += 1;
            }
            // The name has no more levels: only a final `#` (matching the parent) still matches.
            (true, false) => return filter.get(f + 1..) == Some(b"#"),
            (false, true) => return false,
        }
    }
}

/// The text of validated bytes.
///
/// Both topic types check UTF-8 when they are built, so the fallback to `""` is never taken; it
/// only avoids a panic path.
fn validated_str(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or_default()
}

/// A topic name, what a PUBLISH carries: non-empty, valid UTF-8 without U+0000, at most
/// [`TopicLimits::max_len`] bytes, and without wildcards.
///
/// Cheap to clone: it is backed by [`Bytes`], so a name decoded from a packet can share the
/// packet's buffer ([`TopicName::from_bytes`]).
///
/// ```
/// use aliot_topic::{TopicError, TopicLimits, TopicName};
/// let limits = TopicLimits::default();
/// let name = TopicName::new("/a1PK/dev1/user/get", &limits)?;
/// assert_eq!(name.levels().collect::<Vec<_>>(), ["", "a1PK", "dev1", "user", "get"]);
/// assert_eq!(TopicName::new("a/+", &limits), Err(TopicError::WildcardInName));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Bytes);

impl TopicName {
    /// Validates `s` and copies it into a new name.
    pub fn new(s: &str, limits: &TopicLimits) -> Result<Self, TopicError> {
        check_name(s.as_bytes(), limits)?;
        Ok(Self(Bytes::copy_from_slice(s.as_bytes())))
    }

    /// Validates `bytes` and keeps them without copying.
    pub fn from_bytes(bytes: Bytes, limits: &TopicLimits) -> Result<Self, TopicError> {
        check_name(&bytes, limits)?;
        Ok(Self(bytes))
    }

    /// A name from a string literal, validated with [`TopicLimits::default`].
    ///
    /// # Panics
    ///
    /// When the literal is not a valid topic name. This is for names written in the program's
    /// source, never for input: use [`TopicName::new`] for those.
    #[allow(
        clippy::panic,
        reason = "a literal of the program's source, like a failed assert: never input"
    )]
    pub fn from_static(s: &'static str) -> Self {
        match check_name(s.as_bytes(), &TopicLimits::default()) {
            Ok(()) => Self(Bytes::from_static(s.as_bytes())),
            Err(error) => panic!("invalid topic name literal {s:?}: {error}"),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        validated_str(&self.0)
    }

    /// The name as bytes of UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The levels of the name, split at `/` (an empty level is a level: `/a` has `""` and `"a"`).
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('/')
    }

    /// The length of the name in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a valid name has at least one character. Provided for symmetry with
    /// [`TopicName::len`].
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicName({:?})", self.as_str())
    }
}

/// A topic filter, what a SUBSCRIBE carries: the rules of a name, except that `+` may fill a
/// whole level and `#` may fill the last level.
///
/// ```
/// use aliot_topic::{TopicError, TopicFilter, TopicLimits, TopicName};
/// let limits = TopicLimits::default();
/// let filter = TopicFilter::new("/sys/pk/dn/thing/#", &limits)?;
/// assert!(filter.matches(&TopicName::new("/sys/pk/dn/thing/event/property/post", &limits)?));
/// assert!(filter.matches(&TopicName::new("/sys/pk/dn/thing", &limits)?));
/// assert!(!filter.matches(&TopicName::new("/sys/pk/other/thing", &limits)?));
/// assert_eq!(TopicFilter::new("a/#/b", &limits), Err(TopicError::MisplacedWildcard));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter {
    bytes: Bytes,
    /// [`literal_prefix_len`] of `bytes`, computed once at validation.
    literal_prefix: usize,
}

impl TopicFilter {
    /// Wraps bytes that passed [`check_filter`].
    fn validated(bytes: Bytes) -> Self {
        Self {
            literal_prefix: literal_prefix_len(&bytes),
            bytes,
        }
    }

    /// Validates `s` and copies it into a new filter.
    pub fn new(s: &str, limits: &TopicLimits) -> Result<Self, TopicError> {
        check_filter(s.as_bytes(), limits)?;
        Ok(Self::validated(Bytes::copy_from_slice(s.as_bytes())))
    }

    /// Validates `bytes` and keeps them without copying.
    pub fn from_bytes(bytes: Bytes, limits: &TopicLimits) -> Result<Self, TopicError> {
        check_filter(&bytes, limits)?;
        Ok(Self::validated(bytes))
    }

    /// A filter from a string literal, validated with [`TopicLimits::default`].
    ///
    /// # Panics
    ///
    /// When the literal is not a valid topic filter. This is for filters written in the
    /// program's source, never for input: use [`TopicFilter::new`] for those.
    #[allow(
        clippy::panic,
        reason = "a literal of the program's source, like a failed assert: never input"
    )]
    pub fn from_static(s: &'static str) -> Self {
        match check_filter(s.as_bytes(), &TopicLimits::default()) {
            Ok(()) => Self::validated(Bytes::from_static(s.as_bytes())),
            Err(error) => panic!("invalid topic filter literal {s:?}: {error}"),
        }
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        validated_str(&self.bytes)
    }

    /// The filter as bytes of UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The underlying buffer.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The levels of the filter, split at `/`; a wildcard is a level of its own (`"+"`, `"#"`).
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('/')
    }

    /// The length of the filter in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always `false`: a valid filter has at least one character. Provided for symmetry with
    /// [`TopicFilter::len`].
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether this filter matches `name` under MQTT's rules: `+` is one whole level, `#` is
    /// the rest of the name including nothing (`a/#` matches `a`), and a name starting with
    /// `$` is not matched by a filter starting with a wildcard.
    pub fn matches(&self, name: &TopicName) -> bool {
        filter_matches_with_prefix(&self.bytes, self.literal_prefix, &name.0)
    }

    /// Whether the filter has a `+` or `#` level.
    pub fn has_wildcard(&self) -> bool {
        self.literal_prefix < self.bytes.len()
    }
}

impl From<TopicName> for TopicFilter {
    /// A name is a filter without wildcards that matches exactly itself.
    fn from(name: TopicName) -> Self {
        Self::validated(name.0)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicFilter({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_placement() {
        for ok in ["+", "#", "+/+", "a/+/b", "a/#", "/+", "+/#", "//#"] {
            assert_eq!(check_wildcard_placement(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in ["a+", "+a", "#/x", "a#", "a/#/b", "##", "++", "a/b#"] {
            assert_eq!(
                check_wildcard_placement(bad.as_bytes()),
                Err(TopicError::MisplacedWildcard),
                "{bad}"
            );
        }
    }

    #[test]
    fn byte_matching_follows_mqtt() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/", true),
            ("a/+", "a", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "/", true),
            ("+", "/", false),
            ("+/+", "/", true),
            ("/+", "/a", true),
            ("+", "$SYS", false),
            ("#", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for &(filter, name, expected) in cases {
            assert_eq!(
                filter_matches(filter.as_bytes(), name.as_bytes()),
                expected,
                "{filter} vs {name}"
            );
        }
    }
}
