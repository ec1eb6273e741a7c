//! The bare message a consumer receives (part 3, §3.2): a `properties` section with the
//! message id, an `application-properties` section, and the body as one `data` section.

use crate::codec::Encoder;
use crate::performative::code;

/// A value of an application property: the platform's are strings and longs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyValue<'a> {
    /// A `string`.
    String(&'a str),
    /// A `long`.
    Long(i64),
}

/// One message to send, borrowed from wherever it is kept.
///
/// ```
/// use aliot_amqp::codec::{decode, Encoder, Value};
/// use aliot_amqp::message::{Message, PropertyValue};
///
/// let message = Message {
///     message_id: Some("1"),
///     application_properties: &[("topic", PropertyValue::String("/a1PK/dev/user/update"))],
///     body: b"hello",
/// };
/// let mut out = Vec::new();
/// message.write(&mut Encoder::new(&mut out));
/// // Three sections one after another: properties, application-properties, data.
/// let (_, rest) = decode(&out).unwrap();
/// let (_, rest) = decode(rest).unwrap();
/// let (Value::Described(data), rest) = decode(rest).unwrap() else { panic!() };
/// assert_eq!((data.value().unwrap(), rest.len()), (Value::Binary(b"hello"), 0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The `message-id` of the `properties` section (a string), if any.
    pub message_id: Option<&'a str>,
    /// The `application-properties`, in order; none: no such section.
    pub application_properties: &'a [(&'a str, PropertyValue<'a>)],
    /// The body: one `data` section.
    pub body: &'a [u8],
}

impl Message<'_> {
    /// Writes the message's sections, as a transfer's payload.
    pub fn write(&self, encoder: &mut Encoder<'_>) {
        if let Some(id) = self.message_id {
            encoder.described_list(code::PROPERTIES, |fields| {
                fields.field(|e| e.string(id));
            });
        }
        if !self.application_properties.is_empty() {
            encoder.described_map(code::APPLICATION_PROPERTIES, |map| {
                for (key, value) in self.application_properties {
                    map.entry(
                        |e| e.string(key),
                        |e| match *value {
                            PropertyValue::String(text) => e.string(text),
                            PropertyValue::Long(number) => e.long(number),
                        },
                    );
                }
            });
        }
        encoder.described_binary(code::DATA, self.body);
    }
}
