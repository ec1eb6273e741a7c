//! The value types the packets are made of: protocol versions, QoS levels, packet identifiers
//! and validated MQTT UTF-8 strings, with the errors of building them. The other modules of the
//! codec use these; this one uses none of them.

use alloc::string::String;
use core::fmt;
use core::num::NonZeroU16;
use core::ops::Deref;

use bytes::Bytes;

/// The longest MQTT string or binary field: its length is a big-endian `u16`.
pub const MAX_STRING_LEN: usize = 65_535;

/// The MQTT protocol versions of the profile, as announced by CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, protocol level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, protocol level 4.
    V3_1_1,
}

impl ProtocolVersion {
    /// The protocol name CONNECT carries for this version (`"MQIsdp"` or `"MQTT"`).
    #[must_use]
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            Self::V3_1_1 => "MQTT",
        }
    }

    /// The protocol level byte CONNECT carries for this version (3 or 4).
    #[must_use]
    pub const fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
        }
    }

    /// The version a CONNECT protocol name and level stand for, if it is one of the profile.
    ///
    /// ```
    /// use aliot_core::codec::ProtocolVersion;
    /// assert_eq!(ProtocolVersion::from_name_and_level(b"MQTT", 4), Some(ProtocolVersion::V3_1_1));
    /// assert_eq!(ProtocolVersion::from_name_and_level(b"MQIsdp", 3), Some(ProtocolVersion::V3_1));
    /// assert_eq!(ProtocolVersion::from_name_and_level(b"MQTT", 5), None);
    /// ```
    #[must_use]
    pub fn from_name_and_level(name: &[u8], level: u8) -> Option<Self> {
        match (name, level) {
            (b"MQIsdp", 3) => Some(Self::V3_1),
            (b"MQTT", 4) => Some(Self::V3_1_1),
            _ => None,
        }
    }
}

/// An MQTT quality-of-service level.
///
/// The profile only delivers QoS 0 and 1, but QoS 2 still appears on the wire: a SUBSCRIBE may
/// request it, a will may carry it, and a SUBACK may grant it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: delivered at most once, never acknowledged.
    AtMostOnce = 0,
    /// QoS 1: delivered at least once, acknowledged by PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: delivered exactly once (not supported for PUBLISH by the profile).
    ExactlyOnce = 2,
}

impl TryFrom<u8> for QoS {
    type Error = QosOutOfRange;

    /// ```
    /// use aliot_core::codec::QoS;
    /// assert_eq!(QoS::try_from(1), Ok(QoS::AtLeastOnce));
    /// assert!(QoS::try_from(3).is_err());
    /// ```
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(QosOutOfRange { value }),
        }
    }
}

impl From<QoS> for u8 {
    fn from(qos: QoS) -> Self {
        qos as u8
    }
}

/// A QoS number other than 0, 1 or 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("QoS {value} does not exist (MQTT has QoS 0, 1 and 2)")]
pub struct QosOutOfRange {
    /// The number given.
    pub value: u8,
}

/// A packet identifier: a non-zero `u16` (MQTT forbids 0 where an identifier is required).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The packet identifier `id`, or `None` for 0.
    ///
    /// ```
    /// use aliot_core::codec::PacketId;
    /// assert_eq!(PacketId::new(7).map(PacketId::get), Some(7));
    /// assert_eq!(PacketId::new(0), None);
    /// ```
    #[must_use]
    pub const fn new(id: u16) -> Option<Self> {
        match NonZeroU16::new(id) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// The identifier as a `u16` (never 0).
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

impl From<NonZeroU16> for PacketId {
    fn from(id: NonZeroU16) -> Self {
        Self(id)
    }
}

impl From<PacketId> for NonZeroU16 {
    fn from(id: PacketId) -> Self {
        id.0
    }
}

impl From<PacketId> for u16 {
    fn from(id: PacketId) -> Self {
        id.get()
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What is wrong with the content of a string whose length already fits its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StringFault {
    /// Not valid UTF-8; the leading `valid_up_to` bytes are.
    InvalidUtf8 { valid_up_to: usize },
    /// U+0000 at byte `at`.
    NullCharacter { at: usize },
}

/// Checks the content rules of an MQTT UTF-8 string (MQTT 3.1.1 §1.5.3): valid UTF-8 and no
/// U+0000. The length limit is the caller's (a decoded string cannot break it).
#[inline]
pub(crate) fn check_string_content(bytes: &[u8]) -> Result<(), StringFault> {
    // Fast path: topics, client ids and user names are nearly always ASCII. Bytes in 0x01..=0x7F
    // satisfy both rules, and this branch-free pass over them vectorizes.
    let (all_bits, smallest) = bytes
        .iter()
        .fold((0u8, u8::MAX), |(all_bits, smallest), &byte| {
            (all_bits | byte, smallest.min(byte))
        });
    if all_bits < 0x80 && smallest != 0 {
        return Ok(());
    }
    if let Err(error) = core::str::from_utf8(bytes) {
        return Err(StringFault::InvalidUtf8 {
            valid_up_to: error.valid_up_to(),
        });
    }
    match bytes.iter().position(|&byte| byte == 0) {
        Some(at) => Err(StringFault::NullCharacter { at }),
        None => Ok(()),
    }
}

/// Why bytes are not an MQTT UTF-8 string (MQTT 3.1.1 §1.5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Utf8BytesError {
    /// The bytes are not valid UTF-8.
    #[error("not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// How many leading bytes are valid UTF-8.
        valid_up_to: usize,
    },
    /// The string contains U+0000, which MQTT forbids.
    #[error("contains U+0000 at byte {at}, which MQTT strings may not")]
    NullCharacter {
        /// Byte offset of the first U+0000.
        at: usize,
    },
    /// The string does not fit the 16-bit length prefix.
    #[error("{len} bytes long, over the 65,535 bytes an MQTT string can hold")]
    TooLong {
        /// The string's length in bytes.
        len: usize,
    },
}

/// Checks every rule of an MQTT UTF-8 string: at most 65,535 bytes, valid UTF-8, no U+0000.
fn check_mqtt_string(bytes: &[u8]) -> Result<(), Utf8BytesError> {
    if bytes.len() > MAX_STRING_LEN {
        return Err(Utf8BytesError::TooLong { len: bytes.len() });
    }
    check_string_content(bytes).map_err(|fault| match fault {
        StringFault::InvalidUtf8 { valid_up_to } => Utf8BytesError::InvalidUtf8 { valid_up_to },
        StringFault::NullCharacter { at } => Utf8BytesError::NullCharacter { at },
    })
}

/// A validated MQTT UTF-8 string: valid UTF-8, no U+0000, at most 65,535 bytes.
///
/// It is a [`Bytes`] underneath, so a decoded topic or client id is a slice of the read buffer,
/// not a copy, and cloning it only bumps a reference count.
///
/// [`as_str`](Self::as_str) (and `Deref`) re-run the UTF-8 check, because this crate forbids the
/// `unsafe` that would skip it; the check is linear and fast for the short strings of MQTT, but
/// keep the `&str` rather than calling it in a loop.
///
/// ```
/// use aliot_core::codec::Utf8Bytes;
/// let topic = Utf8Bytes::try_from("/a1TestPK001/dev-001/user/get")?;
/// assert_eq!(topic, "/a1TestPK001/dev-001/user/get");
/// assert_eq!(topic.len(), 29);
/// assert!(topic.starts_with("/a1TestPK001/")); // through Deref<Target = str>
/// assert!(Utf8Bytes::try_from("nul\0inside").is_err());
/// # Ok::<(), aliot_core::codec::Utf8BytesError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// A string from a literal, without copying.
    ///
    /// # Panics
    ///
    /// Panics if `text` contains U+0000 or is longer than 65,535 bytes. The argument is a literal
    /// written by a programmer, never input; in a `const` the panic is a compile error.
    ///
    /// ```
    /// use aliot_core::codec::Utf8Bytes;
    /// const TOPIC: Utf8Bytes = Utf8Bytes::from_static("/broadcast/a1TestPK001/news");
    /// assert_eq!(TOPIC.as_str(), "/broadcast/a1TestPK001/news");
    /// ```
    #[must_use]
    #[allow(
        clippy::indexing_slicing,
        reason = "a const fn: `index < bytes.len()` is checked by the loop, and slice::get is not const"
    )]
    pub const fn from_static(text: &'static str) -> Self {
        let bytes = text.as_bytes();
        assert!(
            bytes.len() <= MAX_STRING_LEN,
            "an MQTT string is at most 65,535 bytes"
        );
        let mut index = 0;
        while index < bytes.len() {
            assert!(bytes[index] != 0, "an MQTT string may not contain U+0000");
            index += 1;
        }
        Self(Bytes::from_static(bytes))
    }

    /// Wraps bytes whose length and content the decoder already checked.
    pub(crate) fn from_checked(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // The bytes were checked when this value was built and `Bytes` is immutable, so the
        // check cannot fail; the empty string is only there to avoid a panic path.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The string's UTF-8 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying [`Bytes`], without copying.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8BytesError;

    /// Checks the bytes and keeps them without copying.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        check_mqtt_string(&bytes)?;
        Ok(Self(bytes))
    }
}

impl TryFrom<&str> for Utf8Bytes {
    type Error = Utf8BytesError;

    /// Checks the string and copies it.
    fn try_from(text: &str) -> Result<Self, Self::Error> {
        check_mqtt_string(text.as_bytes())?;
        Ok(Self(Bytes::copy_from_slice(text.as_bytes())))
    }
}

impl TryFrom<String> for Utf8Bytes {
    type Error = Utf8BytesError;

    /// Checks the string and takes its buffer without copying.
    fn try_from(text: String) -> Result<Self, Self::Error> {
        check_mqtt_string(text.as_bytes())?;
        Ok(Self(Bytes::from(text)))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Utf8Bytes> for str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Utf8Bytes> for &str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}
