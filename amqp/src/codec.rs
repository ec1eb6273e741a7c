//! The AMQP 1.0 type system on the wire (OASIS AMQP 1.0, part 1, "Types"): decoding any
//! value a peer may send, borrowed from the input, and encoding the ones aliot sends.
//!
//! Decoding never panics and never recurses deeper than [`MAX_DEPTH`] described or compound
//! values: a frame is whatever a peer chose to send. Compound values (lists, maps, arrays)
//! and described values are decoded lazily: [`Value::List`] holds the encoded items and
//! yields them one by one, so reading a performative allocates nothing.

use alloc::vec::Vec;

/// Nesting allowed when skipping or reading a value: described values and compounds inside
/// each other. Every performative and message section aliot reads is within 4; a deeper
/// value is refused rather than followed.
pub const MAX_DEPTH: usize = 16;

/// Why bytes are not the value expected of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value goes past the end of its frame, list or section.
    #[error("a value goes past the end of its frame")]
    Truncated,
    /// A constructor that AMQP 1.0 does not define.
    #[error("unknown format code {0:#04x}")]
    UnknownFormatCode(u8),
    /// A string that is not UTF-8, or a symbol that is not ASCII.
    #[error("a string that is not UTF-8 or a symbol that is not ASCII")]
    BadText,
    /// A descriptor that is neither a ulong nor a symbol.
    #[error("a descriptor that is neither a ulong nor a symbol")]
    BadDescriptor,
    /// Described or compound values nested deeper than [`MAX_DEPTH`].
    #[error("values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A compound whose count does not fit its size, or a map with an odd count.
    #[error("a list, map or array whose count does not fit its size")]
    BadCompound,
    /// A value of another type than the field takes.
    #[error("{0} expected")]
    Unexpected(&'static str),
    /// A mandatory field is missing or null.
    #[error("mandatory field {0} missing")]
    Missing(&'static str),
}

/// A descriptor: a described type's numeric code (`domain << 32 | id`) or its symbolic name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor<'a> {
    /// The numeric descriptor, e.g. `0x10` for `open`.
    Code(u64),
    /// The symbolic descriptor, e.g. `amqp:open:list`.
    Name(&'a [u8]),
}

/// A described value: its descriptor and the value it describes, still encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Described<'a> {
    /// What the value is.
    pub descriptor: Descriptor<'a>,
    /// The described value's encoding, constructor included.
    encoded: &'a [u8],
    depth: usize,
}

impl<'a> Described<'a> {
    /// The described value.
    pub fn value(&self) -> Result<Value<'a>, DecodeError> {
        decode_at(self.encoded, self.depth).map(|(value, _)| value)
    }

    /// Whether the descriptor is `code`, or the symbolic name the specification gives it.
    pub fn is(&self, code: u64, name: &str) -> bool {
        match self.descriptor {
            Descriptor::Code(found) => found == code,
            Descriptor::Name(found) => found == name.as_bytes(),
        }
    }
}

/// A list's or a map's items, still encoded: `count` values one after another (a map's are
/// key, value, key, value…).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Compound<'a> {
    count: u32,
    items: &'a [u8],
    depth: usize,
}

impl<'a> Compound<'a> {
    /// How many values it holds (a map: keys and values both counted).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Its values in order; after an error, nothing more.
    pub fn iter(&self) -> Items<'a> {
        Items {
            left: self.count,
            rest: self.items,
            depth: self.depth,
            constructor: None,
        }
    }
}

/// An array: `count` values of one type, the constructor written once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArrayOf<'a> {
    count: u32,
    constructor: ElementConstructor<'a>,
    elements: &'a [u8],
    depth: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct ElementConstructor<'a> {
    descriptor: Option<Descriptor<'a>>,
    code: u8,
}

impl<'a> ArrayOf<'a> {
    /// How many elements it holds.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The elements' descriptor, for an array of described values.
    pub fn descriptor(&self) -> Option<Descriptor<'a>> {
        self.constructor.descriptor
    }

    /// Its elements in order (their undescribed values, for an array of described values).
    pub fn iter(&self) -> Items<'a> {
        Items {
            left: self.count,
            rest: self.elements,
            depth: self.depth,
            constructor: Some(self.constructor.code),
        }
    }
}

/// The values of a [`Compound`] or an [`ArrayOf`], decoded one at a time.
#[derive(Clone, Debug)]
pub struct Items<'a> {
    left: u32,
    rest: &'a [u8],
    depth: usize,
    constructor: Option<u8>,
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Value<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let decoded = match self.constructor {
            None => decode_at(self.rest, self.depth),
            Some(code) => decode_body(code, self.rest, self.depth),
        };
        match decoded {
            Ok((value, rest)) => {
                self.rest = rest;
                Some(Ok(value))
            }
            Err(error) => {
                self.left = 0;
                Some(Err(error))
            }
        }
    }
}

/// One AMQP value, borrowing from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `ubyte`.
    Ubyte(u8),
    /// `ushort`.
    Ushort(u16),
    /// `uint`, in any of its three encodings.
    Uint(u32),
    /// `ulong`, in any of its three encodings.
    Ulong(u64),
    /// `byte`.
    Byte(i8),
    /// `short`.
    Short(i16),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `decimal32`, `decimal64` or `decimal128`, as encoded (IEEE 754 decimal, not interpreted).
    Decimal(&'a [u8]),
    /// `char`: a UTF-32 code point, as sent.
    Char(u32),
    /// `timestamp`: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `binary`.
    Binary(&'a [u8]),
    /// `string` (UTF-8, checked).
    String(&'a str),
    /// `symbol` (ASCII, checked).
    Symbol(&'a str),
    /// `list`.
    List(Compound<'a>),
    /// `map`.
    Map(Compound<'a>),
    /// `array`.
    Array(ArrayOf<'a>),
    /// A described value.
    Described(Described<'a>),
}

impl<'a> Value<'a> {
    /// `None` for `null`, the value otherwise: a field that may be absent.
    pub fn non_null(self) -> Option<Value<'a>> {
        match self {
            Value::Null => None,
            value => Some(value),
        }
    }
}

/// Decodes one value from the start of `input`, and returns it with the bytes after it.
///
/// ```
/// use aliot_amqp::codec::{decode, Value};
///
/// // smalluint 7, then str8 "hi".
/// let (first, rest) = decode(&[0x52, 7, 0xa1, 2, b'h', b'i']).unwrap();
/// assert_eq!(first, Value::Uint(7));
/// assert_eq!(decode(rest).unwrap().0, Value::String("hi"));
/// ```
pub fn decode(input: &[u8]) -> Result<(Value<'_>, &[u8]), DecodeError> {
    decode_at(input, 0)
}

fn decode_at(input: &[u8], depth: usize) -> Result<(Value<'_>, &[u8]), DecodeError> {
    let (&code, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
    if code == 0x00 {
        if depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let (descriptor, rest) = decode_descriptor(rest)?;
        let after = skip(rest, depth + 1)?;
        let encoded = &rest[..rest.len() - after.len()];
        let described = Described {
            descriptor,
            encoded,
            depth: depth + 1,
        };
        return Ok((Value::Described(described), after));
    }
    decode_body(code, rest, depth)
}

fn decode_descriptor(input: &[u8]) -> Result<(Descriptor<'_>, &[u8]), DecodeError> {
    let (&code, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
    match code {
        0x44 | 0x53 | 0x80 | 0xa3 | 0xb3 => match decode_body(code, rest, MAX_DEPTH)? {
            (Value::Ulong(code), rest) => Ok((Descriptor::Code(code), rest)),
            (Value::Symbol(name), rest) => Ok((Descriptor::Name(name.as_bytes()), rest)),
            _ => Err(DecodeError::BadDescriptor),
        },
        _ => Err(DecodeError::BadDescriptor),
    }
}

/// The bytes after the value at the start of `input`, without decoding it.
fn skip(input: &[u8], depth: usize) -> Result<&[u8], DecodeError> {
    decode_at(input, depth).map(|(_, rest)| rest)
}

fn take<const N: usize>(input: &[u8]) -> Result<([u8; N], &[u8]), DecodeError> {
    let (head, rest) = input.split_at_checked(N).ok_or(DecodeError::Truncated)?;
    let mut bytes = [0; N];
    bytes.copy_from_slice(head);
    Ok((bytes, rest))
}

fn take_slice(input: &[u8], len: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    input.split_at_checked(len).ok_or(DecodeError::Truncated)
}

/// A variable-width value's length: one byte for the `…8` codes, four for the `…32` ones.
fn take_len(input: &[u8], wide: bool) -> Result<(usize, &[u8]), DecodeError> {
    if wide {
        let (bytes, rest) = take::<4>(input)?;
        let len = usize::try_from(u32::from_be_bytes(bytes)).map_err(|_| DecodeError::Truncated)?;
        Ok((len, rest))
    } else {
        let (bytes, rest) = take::<1>(input)?;
        Ok((usize::from(bytes[0]), rest))
    }
}

/// The value after its constructor `code`.
fn decode_body(code: u8, input: &[u8], depth: usize) -> Result<(Value<'_>, &[u8]), DecodeError> {
    use Value::*;
    let fixed = |value: Value<'static>| Ok((value, input));
    match code {
        0x40 => fixed(Null),
        0x41 => fixed(Bool(true)),
        0x42 => fixed(Bool(false)),
        0x56 => {
            let ([byte], rest) = take::<1>(input)?;
            match byte {
                0 => Ok((Bool(false), rest)),
                1 => Ok((Bool(true), rest)),
                _ => Err(DecodeError::Unexpected("a boolean of 0 or 1")),
            }
        }
        0x50 => take::<1>(input).map(|([b], rest)| (Ubyte(b), rest)),
        0x60 => take::<2>(input).map(|(b, rest)| (Ushort(u16::from_be_bytes(b)), rest)),
        0x70 => take::<4>(input).map(|(b, rest)| (Uint(u32::from_be_bytes(b)), rest)),
        0x52 => take::<1>(input).map(|([b], rest)| (Uint(u32::from(b)), rest)),
        0x43 => fixed(Uint(0)),
        0x80 => take::<8>(input).map(|(b, rest)| (Ulong(u64::from_be_bytes(b)), rest)),
        0x53 => take::<1>(input).map(|([b], rest)| (Ulong(u64::from(b)), rest)),
        0x44 => fixed(Ulong(0)),
        0x51 => take::<1>(input).map(|(b, rest)| (Byte(i8::from_be_bytes(b)), rest)),
        0x61 => take::<2>(input).map(|(b, rest)| (Short(i16::from_be_bytes(b)), rest)),
        0x71 => take::<4>(input).map(|(b, rest)| (Int(i32::from_be_bytes(b)), rest)),
        0x54 => take::<1>(input).map(|(b, rest)| (Int(i32::from(i8::from_be_bytes(b))), rest)),
        0x81 => take::<8>(input).map(|(b, rest)| (Long(i64::from_be_bytes(b)), rest)),
        0x55 => take::<1>(input).map(|(b, rest)| (Long(i64::from(i8::from_be_bytes(b))), rest)),
        0x72 => take::<4>(input).map(|(b, rest)| (Float(f32::from_be_bytes(b)), rest)),
        0x82 => take::<8>(input).map(|(b, rest)| (Double(f64::from_be_bytes(b)), rest)),
        0x74 => take_slice(input, 4).map(|(b, rest)| (Decimal(b), rest)),
        0x84 => take_slice(input, 8).map(|(b, rest)| (Decimal(b), rest)),
        0x94 => take_slice(input, 16).map(|(b, rest)| (Decimal(b), rest)),
        0x73 => take::<4>(input).map(|(b, rest)| (Char(u32::from_be_bytes(b)), rest)),
        0x83 => take::<8>(input).map(|(b, rest)| (Timestamp(i64::from_be_bytes(b)), rest)),
        0x98 => take::<16>(input).map(|(b, rest)| (Uuid(b), rest)),
        0xa0 | 0xb0 => {
            let (len, rest) = take_len(input, code == 0xb0)?;
            take_slice(rest, len).map(|(b, rest)| (Binary(b), rest))
        }
        0xa1 | 0xb1 => {
            let (len, rest) = take_len(input, code == 0xb1)?;
            let (bytes, rest) = take_slice(rest, len)?;
            let text = core::str::from_utf8(bytes).map_err(|_| DecodeError::BadText)?;
            Ok((String(text), rest))
        }
        0xa3 | 0xb3 => {
            let (len, rest) = take_len(input, code == 0xb3)?;
            let (bytes, rest) = take_slice(rest, len)?;
            if !bytes.is_ascii() {
                return Err(DecodeError::BadText);
            }
            let text = core::str::from_utf8(bytes).map_err(|_| DecodeError::BadText)?;
            Ok((Symbol(text), rest))
        }
        0x45 => fixed(List(Compound {
            count: 0,
            items: &[],
            depth,
        })),
        0xc0 | 0xd0 | 0xc1 | 0xd1 => {
            if depth >= MAX_DEPTH {
                return Err(DecodeError::TooDeep);
            }
            let wide = code & 0xf0 == 0xd0;
            let (size, rest) = take_len(input, wide)?;
            let (body, after) = take_slice(rest, size)?;
            let (count, items) = take_len(body, wide)?;
            let count = u32::try_from(count).map_err(|_| DecodeError::BadCompound)?;
            // Every value takes at least one byte: a count beyond the bytes is a lie.
            if count as usize > items.len() {
                return Err(DecodeError::BadCompound);
            }
            let compound = Compound {
                count,
                items,
                depth: depth + 1,
            };
            // Check the items fill the size exactly, so that a list is never longer than it says.
            let mut rest_of_items = items;
            for _ in 0..count {
                rest_of_items = skip(rest_of_items, depth + 1)?;
            }
            if !rest_of_items.is_empty() {
                return Err(DecodeError::BadCompound);
            }
            if code & 0x0f == 0x01 {
                if count % 2 != 0 {
                    return Err(DecodeError::BadCompound);
                }
                Ok((Map(compound), after))
            } else {
                Ok((List(compound), after))
            }
        }
        0xe0 | 0xf0 => {
            if depth >= MAX_DEPTH {
                return Err(DecodeError::TooDeep);
            }
            let wide = code == 0xf0;
            let (size, rest) = take_len(input, wide)?;
            let (body, after) = take_slice(rest, size)?;
            let (count, body) = take_len(body, wide)?;
            let count = u32::try_from(count).map_err(|_| DecodeError::BadCompound)?;
            let (&element_code, mut elements) = body.split_first().ok_or(DecodeError::Truncated)?;
            let mut descriptor = None;
            let mut element_code = element_code;
            if element_code == 0x00 {
                let (found, rest) = decode_descriptor(elements)?;
                let (&code, rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
                descriptor = Some(found);
                element_code = code;
                elements = rest;
            }
            if element_code == 0x00 {
                return Err(DecodeError::TooDeep);
            }
            // Each element must decode with the shared constructor, and fill the size exactly.
            let mut rest_of_elements = elements;
            for _ in 0..count {
                let before = rest_of_elements.len();
                rest_of_elements = decode_body(element_code, rest_of_elements, depth + 1)?.1;
                // A zero-width element type (null, true, uint0…) cannot make a long array.
                if rest_of_elements.len() == before && count as usize > body.len() {
                    return Err(DecodeError::BadCompound);
                }
            }
            if !rest_of_elements.is_empty() {
                return Err(DecodeError::BadCompound);
            }
            let array = ArrayOf {
                count,
                constructor: ElementConstructor {
                    descriptor,
                    code: element_code,
                },
                elements,
                depth: depth + 1,
            };
            Ok((Array(array), after))
        }
        other => Err(DecodeError::UnknownFormatCode(other)),
    }
}

/// Appends AMQP encodings to a buffer, each in its smallest form.
///
/// ```
/// use aliot_amqp::codec::{decode, Encoder, Value};
///
/// let mut out = Vec::new();
/// let mut encoder = Encoder::new(&mut out);
/// encoder.uint(7);
/// encoder.string("hi");
/// assert_eq!(out, [0x52, 7, 0xa1, 2, b'h', b'i']);
/// ```
pub struct Encoder<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> Encoder<'b> {
    /// Appends to `out`.
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        Encoder { out }
    }

    /// `null`.
    pub fn null(&mut self) {
        self.out.push(0x40);
    }

    /// `boolean`, one byte.
    pub fn bool(&mut self, value: bool) {
        self.out.push(if value { 0x41 } else { 0x42 });
    }

    /// `ubyte`.
    pub fn ubyte(&mut self, value: u8) {
        self.out.extend_from_slice(&[0x50, value]);
    }

    /// `ushort`.
    pub fn ushort(&mut self, value: u16) {
        self.out.push(0x60);
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// `uint`: `uint0`, `smalluint` or four bytes.
    pub fn uint(&mut self, value: u32) {
        match value {
            0 => self.out.push(0x43),
            1..=255 => self.out.extend_from_slice(&[0x52, value as u8]),
            _ => {
                self.out.push(0x70);
                self.out.extend_from_slice(&value.to_be_bytes());
            }
        }
    }

    /// `ulong`: `ulong0`, `smallulong` or eight bytes.
    pub fn ulong(&mut self, value: u64) {
        match value {
            0 => self.out.push(0x44),
            1..=255 => self.out.extend_from_slice(&[0x53, value as u8]),
            _ => {
                self.out.push(0x80);
                self.out.extend_from_slice(&value.to_be_bytes());
            }
        }
    }

    /// `long`: `smalllong` or eight bytes.
    pub fn long(&mut self, value: i64) {
        match i8::try_from(value) {
            Ok(small) => self.out.extend_from_slice(&[0x55, small as u8]),
            Err(_) => {
                self.out.push(0x81);
                self.out.extend_from_slice(&value.to_be_bytes());
            }
        }
    }

    /// `timestamp` (milliseconds since the Unix epoch).
    pub fn timestamp(&mut self, millis: i64) {
        self.out.push(0x83);
        self.out.extend_from_slice(&millis.to_be_bytes());
    }

    /// `binary`: `vbin8` or `vbin32`.
    pub fn binary(&mut self, bytes: &[u8]) {
        self.variable(0xa0, 0xb0, bytes);
    }

    /// `string`: `str8-utf8` or `str32-utf8`.
    pub fn string(&mut self, text: &str) {
        self.variable(0xa1, 0xb1, text.as_bytes());
    }

    /// `symbol`: `sym8` or `sym32`. Symbols are ASCII; aliot's are constants.
    pub fn symbol(&mut self, name: &str) {
        debug_assert!(name.is_ascii());
        self.variable(0xa3, 0xb3, name.as_bytes());
    }

    fn variable(&mut self, narrow: u8, wide: u8, bytes: &[u8]) {
        match u8::try_from(bytes.len()) {
            Ok(len) => self.out.extend_from_slice(&[narrow, len]),
            Err(_) => {
                self.out.push(wide);
                // Frames are bounded far below 4 GiB (the connection's max-frame-size).
                self.out
                    .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            }
        }
        self.out.extend_from_slice(bytes);
    }

    /// Bytes already encoded (a transfer's payload after its performative).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// An array of symbols (`sym8` elements while every symbol is shorter than 256 bytes).
    pub fn symbol_array(&mut self, names: &[&str]) {
        let start = self.begin_compound(0xf0);
        let wide = names.iter().any(|name| name.len() > 255);
        self.out.push(if wide { 0xb3 } else { 0xa3 });
        for name in names {
            let bytes = name.as_bytes();
            if wide {
                self.out
                    .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            } else {
                self.out.push(bytes.len() as u8);
            }
            self.out.extend_from_slice(bytes);
        }
        self.end_compound(start, 0xe0, names.len());
    }

    /// A described list: the descriptor's code, then the fields `fields` writes. Trailing
    /// nulls are left out, as the specification allows; `list8` when it fits.
    pub fn described_list(&mut self, code: u64, fields: impl FnOnce(&mut ListEncoder<'_, 'b>)) {
        self.out.push(0x00);
        self.ulong(code);
        self.list(fields);
    }

    /// A list of the fields `fields` writes, trailing nulls left out.
    pub fn list(&mut self, fields: impl FnOnce(&mut ListEncoder<'_, 'b>)) {
        let start = self.begin_compound(0xd0);
        let mut list = ListEncoder {
            encoder: self,
            count: 0,
            kept_count: 0,
            kept_len: 0,
        };
        list.kept_len = list.encoder.out.len();
        fields(&mut list);
        let (count, kept_len) = (list.kept_count, list.kept_len);
        self.out.truncate(kept_len);
        if count == 0 {
            self.out.truncate(start);
            self.out.push(0x45);
            return;
        }
        self.end_compound(start, 0xc0, count);
    }

    /// A described binary: the descriptor's code, then `bytes` (a message's `data` section).
    pub fn described_binary(&mut self, code: u64, bytes: &[u8]) {
        self.out.push(0x00);
        self.ulong(code);
        self.binary(bytes);
    }

    /// A described map of the entries `entries` writes (key, value, key, value…).
    pub fn described_map(&mut self, code: u64, entries: impl FnOnce(&mut MapEncoder<'_, 'b>)) {
        self.out.push(0x00);
        self.ulong(code);
        let start = self.begin_compound(0xd1);
        let mut map = MapEncoder {
            encoder: self,
            entries: 0,
        };
        entries(&mut map);
        let count = map.entries * 2;
        self.end_compound(start, 0xc1, count);
    }

    /// Writes the wide header of a list, map or array (code, size, count), to be patched.
    fn begin_compound(&mut self, wide_code: u8) -> usize {
        let start = self.out.len();
        self.out.push(wide_code);
        self.out.extend_from_slice(&[0; 8]);
        start
    }

    /// Fills in the header written at `start`, narrowing it to the `…8` form (`narrow_code`)
    /// when size and count fit a byte.
    fn end_compound(&mut self, start: usize, narrow_code: u8, count: usize) {
        let body = self.out.len() - start - 9;
        if body < 255 && count <= 255 {
            self.out[start] = narrow_code;
            self.out[start + 1] = (body + 1) as u8;
            self.out[start + 2] = count as u8;
            self.out.copy_within(start + 9.., start + 3);
            self.out.truncate(start + 3 + body);
        } else {
            let size = (body + 4) as u32;
            self.out[start + 1..start + 5].copy_from_slice(&size.to_be_bytes());
            self.out[start + 5..start + 9].copy_from_slice(&(count as u32).to_be_bytes());
        }
    }
}

/// The fields of a list being written, in order; see [`Encoder::list`].
pub struct ListEncoder<'e, 'b> {
    encoder: &'e mut Encoder<'b>,
    count: usize,
    kept_count: usize,
    kept_len: usize,
}

impl<'b> ListEncoder<'_, 'b> {
    /// The next field, written by `write`.
    pub fn field(&mut self, write: impl FnOnce(&mut Encoder<'b>)) {
        write(self.encoder);
        self.count += 1;
        self.kept_count = self.count;
        self.kept_len = self.encoder.out.len();
    }

    /// The next field, `null` (left out when no field follows).
    pub fn null(&mut self) {
        self.encoder.null();
        self.count += 1;
    }

    /// The next field: `write` for `Some`, `null` for `None`.
    pub fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Encoder<'b>, T)) {
        match value {
            Some(value) => self.field(|encoder| write(encoder, value)),
            None => self.null(),
        }
    }
}

/// The entries of a map being written; see [`Encoder::described_map`].
pub struct MapEncoder<'e, 'b> {
    encoder: &'e mut Encoder<'b>,
    entries: usize,
}

impl<'b> MapEncoder<'_, 'b> {
    /// One entry: its key, then its value.
    pub fn entry(
        &mut self,
        key: impl FnOnce(&mut Encoder<'b>),
        value: impl FnOnce(&mut Encoder<'b>),
    ) {
        key(self.encoder);
        value(self.encoder);
        self.entries += 1;
    }
}

/// The fields of a described list, by position: what performatives and sections are read
/// with. A field past the list's end is absent, as a trailing null would be.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    items: Items<'a>,
}

impl<'a> Fields<'a> {
    /// The fields of `value`, which must be a list.
    pub fn of(value: Value<'a>) -> Result<Self, DecodeError> {
        match value {
            Value::List(list) => Ok(Fields { items: list.iter() }),
            _ => Err(DecodeError::Unexpected("a list")),
        }
    }

    /// The next field, `None` when it is null or past the end.
    pub fn next_field(&mut self) -> Result<Option<Value<'a>>, DecodeError> {
        match self.items.next() {
            None => Ok(None),
            Some(value) => value.map(Value::non_null),
        }
    }

    /// The next field, which must be present.
    pub fn required(&mut self, name: &'static str) -> Result<Value<'a>, DecodeError> {
        self.next_field()?.ok_or(DecodeError::Missing(name))
    }

    /// Skips the next field.
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        self.next_field().map(drop)
    }
}

/// Reading a field as the type it should be.
pub trait FromValue<'a>: Sized {
    /// What the type is called in errors.
    const EXPECTED: &'static str;
    /// The value as this type, `None` when it is another type.
    fn from_value(value: Value<'a>) -> Option<Self>;
}

macro_rules! from_value {
    ($type:ty, $expected:literal, $($pattern:pat => $out:expr),+) => {
        impl<'a> FromValue<'a> for $type {
            const EXPECTED: &'static str = $expected;
            fn from_value(value: Value<'a>) -> Option<Self> {
                match value {
                    $($pattern => Some($out),)+
                    _ => None,
                }
            }
        }
    };
}

from_value!(bool, "a boolean", Value::Bool(b) => b);
from_value!(u8, "a ubyte", Value::Ubyte(n) => n);
from_value!(u16, "a ushort", Value::Ushort(n) => n);
from_value!(u32, "a uint", Value::Uint(n) => n);
from_value!(u64, "a ulong", Value::Ulong(n) => n);
from_value!(&'a str, "a string", Value::String(s) => s);
from_value!(&'a [u8], "binary", Value::Binary(b) => b);

impl<'a> Fields<'a> {
    /// The next field as `T`, `None` when absent.
    pub fn get<T: FromValue<'a>>(&mut self) -> Result<Option<T>, DecodeError> {
        match self.next_field()? {
            None => Ok(None),
            Some(value) => T::from_value(value)
                .map(Some)
                .ok_or(DecodeError::Unexpected(T::EXPECTED)),
        }
    }

    /// The next field as `T`, which must be present.
    pub fn need<T: FromValue<'a>>(&mut self, name: &'static str) -> Result<T, DecodeError> {
        self.get()?.ok_or(DecodeError::Missing(name))
    }

    /// The next field as a symbol (`Symbol`), `None` when absent.
    pub fn symbol(&mut self) -> Result<Option<&'a str>, DecodeError> {
        match self.next_field()? {
            None => Ok(None),
            Some(Value::Symbol(name)) => Ok(Some(name)),
            Some(_) => Err(DecodeError::Unexpected("a symbol")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn encoded(write: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut Encoder::new(&mut out));
        out
    }

    #[test]
    fn every_fixed_width_constructor_decodes() {
        let cases: &[(&[u8], Value<'_>)] = &[
            (&[0x40], Value::Null),
            (&[0x41], Value::Bool(true)),
            (&[0x42], Value::Bool(false)),
            (&[0x56, 1], Value::Bool(true)),
            (&[0x50, 200], Value::Ubyte(200)),
            (&[0x60, 1, 2], Value::Ushort(0x0102)),
            (&[0x70, 0, 0, 1, 0], Value::Uint(256)),
            (&[0x52, 9], Value::Uint(9)),
            (&[0x43], Value::Uint(0)),
            (&[0x80, 0, 0, 0, 1, 0, 0, 0, 0], Value::Ulong(1 << 32)),
            (&[0x53, 0x10], Value::Ulong(0x10)),
            (&[0x44], Value::Ulong(0)),
            (&[0x51, 0xff], Value::Byte(-1)),
            (&[0x61, 0xff, 0xfe], Value::Short(-2)),
            (&[0x71, 0xff, 0xff, 0xff, 0xfd], Value::Int(-3)),
            (&[0x54, 0xfc], Value::Int(-4)),
            (
                &[0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb],
                Value::Long(-5),
            ),
            (&[0x55, 0xfa], Value::Long(-6)),
            (&[0x72, 0x3f, 0x80, 0, 0], Value::Float(1.0)),
            (&[0x82, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0], Value::Double(1.0)),
            (&[0x73, 0, 0, 0, 0x41], Value::Char(0x41)),
            (
                &[0x83, 0, 0, 1, 0x6c, 0x9c, 0xdf, 0xac, 0x00],
                Value::Timestamp(1_566_000_000_000),
            ),
        ];
        for (bytes, expected) in cases {
            let (value, rest) = decode(bytes).unwrap();
            assert_eq!((value, rest.len()), (*expected, 0), "{bytes:02x?}");
            // Cut short by a byte, each is truncated (the one-byte ones have nothing to cut).
            if bytes.len() > 1 {
                assert_eq!(
                    decode(&bytes[..bytes.len() - 1]),
                    Err(DecodeError::Truncated)
                );
            }
        }
        assert_eq!(
            decode(&[0x56, 2]),
            Err(DecodeError::Unexpected("a boolean of 0 or 1"))
        );
        assert_eq!(decode(&[0x99]), Err(DecodeError::UnknownFormatCode(0x99)));
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn text_and_binary_in_both_widths() {
        assert_eq!(
            decode(&[0xa1, 2, b'o', b'k']).unwrap().0,
            Value::String("ok")
        );
        assert_eq!(
            decode(&[0xb1, 0, 0, 0, 2, b'o', b'k']).unwrap().0,
            Value::String("ok")
        );
        assert_eq!(decode(&[0xa3, 1, b'x']).unwrap().0, Value::Symbol("x"));
        assert_eq!(
            decode(&[0xb0, 0, 0, 0, 1, 7]).unwrap().0,
            Value::Binary(&[7])
        );
        assert_eq!(decode(&[0xa1, 1, 0xff]), Err(DecodeError::BadText));
        assert_eq!(decode(&[0xa3, 1, 0xc3]), Err(DecodeError::BadText));
        assert_eq!(decode(&[0xa0, 5, 1]), Err(DecodeError::Truncated));
        assert_eq!(
            decode(&[0xb0, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn lists_and_maps_are_read_item_by_item_and_must_fill_their_size() {
        // list8 of [uint 1, string "a"], then a byte after it.
        let bytes = [0xc0, 6, 2, 0x52, 1, 0xa1, 1, b'a', 0xee];
        let (value, rest) = decode(&bytes).unwrap();
        assert_eq!(rest, [0xee]);
        let Value::List(list) = value else {
            panic!("{value:?}")
        };
        let items: Vec<_> = list.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(items, [Value::Uint(1), Value::String("a")]);
        // A count beyond what the size holds, or a size with bytes left over.
        assert_eq!(
            decode(&[0xc0, 3, 3, 0x52, 1]),
            Err(DecodeError::BadCompound)
        );
        assert_eq!(
            decode(&[0xc0, 4, 1, 0x52, 1, 0x40]),
            Err(DecodeError::BadCompound)
        );
        // A map needs keys and values in pairs.
        assert_eq!(decode(&[0xc1, 2, 1, 0x40]), Err(DecodeError::BadCompound));
        assert!(matches!(decode(&[0x45]).unwrap().0, Value::List(list) if list.count() == 0));
        assert!(matches!(
            decode(&[0xd1, 0, 0, 0, 4, 0, 0, 0, 0]).unwrap().0,
            Value::Map(_)
        ));
    }

    #[test]
    fn arrays_share_one_constructor() {
        // array8 of two sym8: "PLAIN", "ANONYMOUS".
        let mut bytes = vec![0xe0, 0, 2, 0xa3, 5];
        bytes.extend_from_slice(b"PLAIN");
        bytes.push(9);
        bytes.extend_from_slice(b"ANONYMOUS");
        bytes[1] = (bytes.len() - 2) as u8;
        let Value::Array(array) = decode(&bytes).unwrap().0 else {
            panic!()
        };
        let names: Vec<_> = array.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(names, [Value::Symbol("PLAIN"), Value::Symbol("ANONYMOUS")]);
        // What the encoder writes reads back the same.
        let written = encoded(|e| e.symbol_array(&["PLAIN", "ANONYMOUS"]));
        assert_eq!(written, bytes);
        // A count of null elements far beyond the array's size is refused, not iterated.
        assert_eq!(
            decode(&[0xf0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40]),
            Err(DecodeError::BadCompound)
        );
    }

    #[test]
    fn described_values_and_their_depth_limit() {
        // open's descriptor, then an empty list.
        let (value, _) = decode(&[0x00, 0x53, 0x10, 0x45]).unwrap();
        let Value::Described(described) = value else {
            panic!()
        };
        assert!(described.is(0x10, "amqp:open:list"));
        assert!(matches!(described.value().unwrap(), Value::List(_)));
        let named = [
            0x00, 0xa3, 14, b'a', b'm', b'q', b'p', b':', b'o', b'p', b'e', b'n', b':', b'l', b'i',
            b's', b't', 0x45,
        ];
        let Value::Described(described) = decode(&named).unwrap().0 else {
            panic!()
        };
        assert!(described.is(0x10, "amqp:open:list"));
        // A string is no descriptor.
        assert_eq!(
            decode(&[0x00, 0xa1, 1, b'x', 0x40]),
            Err(DecodeError::BadDescriptor)
        );
        // Described values nested beyond the limit are refused, however long the input.
        let mut deep = Vec::new();
        for _ in 0..10_000 {
            deep.extend_from_slice(&[0x00, 0x53, 0x01]);
        }
        deep.push(0x40);
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
        // And so are lists nested beyond it.
        let mut nested = vec![0x45];
        for _ in 0..MAX_DEPTH + 1 {
            let mut outer = vec![0xd0];
            outer.extend_from_slice(&(nested.len() as u32 + 4).to_be_bytes());
            outer.extend_from_slice(&1u32.to_be_bytes());
            outer.extend_from_slice(&nested);
            nested = outer;
        }
        assert_eq!(decode(&nested), Err(DecodeError::TooDeep));
    }

    #[test]
    fn the_encoder_writes_the_smallest_form_and_reads_back() {
        assert_eq!(encoded(|e| e.uint(0)), [0x43]);
        assert_eq!(encoded(|e| e.uint(255)), [0x52, 255]);
        assert_eq!(encoded(|e| e.uint(256)), [0x70, 0, 0, 1, 0]);
        assert_eq!(encoded(|e| e.ulong(0)), [0x44]);
        assert_eq!(encoded(|e| e.ulong(0x14)), [0x53, 0x14]);
        assert_eq!(encoded(|e| e.long(-1)), [0x55, 0xff]);
        assert_eq!(encoded(|e| e.long(1 << 40)).len(), 9);
        let long_text = "x".repeat(300);
        let bytes = encoded(|e| e.string(&long_text));
        assert_eq!(&bytes[..5], [0xb1, 0, 0, 1, 44]);
        assert_eq!(decode(&bytes).unwrap().0, Value::String(&long_text));
        for value in [
            0i64,
            127,
            -128,
            128,
            -129,
            i64::MIN,
            i64::MAX,
            1_700_000_000_000,
        ] {
            assert_eq!(
                decode(&encoded(|e| e.long(value))).unwrap().0,
                Value::Long(value)
            );
            assert_eq!(
                decode(&encoded(|e| e.timestamp(value))).unwrap().0,
                Value::Timestamp(value)
            );
        }
        for value in [0u64, 1, 255, 256, u64::MAX] {
            assert_eq!(
                decode(&encoded(|e| e.ulong(value))).unwrap().0,
                Value::Ulong(value)
            );
        }
    }

    #[test]
    fn lists_drop_trailing_nulls_and_narrow_when_they_fit() {
        let bytes = encoded(|e| {
            e.described_list(0x17, |fields| {
                fields.null();
                fields.null();
            })
        });
        // end with no fields at all: an empty list.
        assert_eq!(bytes, [0x00, 0x53, 0x17, 0x45]);
        let bytes = encoded(|e| {
            e.list(|fields| {
                fields.null();
                fields.field(|e| e.uint(5));
                fields.null();
            })
        });
        assert_eq!(bytes, [0xc0, 4, 2, 0x40, 0x52, 5]);
        // Too long for list8: list32, and it reads back.
        let text = "y".repeat(260);
        let bytes = encoded(|e| e.list(|fields| fields.field(|e| e.string(&text))));
        assert_eq!(bytes[0], 0xd0);
        let Value::List(list) = decode(&bytes).unwrap().0 else {
            panic!()
        };
        assert_eq!(list.iter().next().unwrap().unwrap(), Value::String(&text));
    }

    #[test]
    fn maps_read_back_in_pairs() {
        let bytes = encoded(|e| {
            e.described_map(0x74, |map| {
                map.entry(|e| e.string("topic"), |e| e.string("/a/b"));
                map.entry(|e| e.string("generateTime"), |e| e.long(1_700_000_000_000));
            })
        });
        let Value::Described(described) = decode(&bytes).unwrap().0 else {
            panic!()
        };
        assert!(described.is(0x74, "amqp:application-properties:map"));
        let Value::Map(map) = described.value().unwrap() else {
            panic!()
        };
        let items: Vec<_> = map.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            items,
            [
                Value::String("topic"),
                Value::String("/a/b"),
                Value::String("generateTime"),
                Value::Long(1_700_000_000_000)
            ]
        );
    }

    #[test]
    fn fields_are_read_by_position_with_their_types() {
        let bytes = encoded(|e| {
            e.list(|fields| {
                fields.field(|e| e.string("container"));
                fields.null();
                fields.field(|e| e.uint(65_536));
            })
        });
        let mut fields = Fields::of(decode(&bytes).unwrap().0).unwrap();
        assert_eq!(fields.need::<&str>("container-id").unwrap(), "container");
        assert_eq!(fields.get::<&str>().unwrap(), None);
        assert_eq!(
            fields.get::<u16>(),
            Err(DecodeError::Unexpected("a ushort"))
        );
        // Past the end: absent, as trailing nulls would be.
        assert_eq!(fields.get::<u32>().unwrap(), None);
        assert_eq!(
            fields.need::<u32>("idle-time-out"),
            Err(DecodeError::Missing("idle-time-out"))
        );
    }
}
