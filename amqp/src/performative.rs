//! The performatives of AMQP 1.0 (part 2, §2.7) and of its SASL layer (part 5, §5.3.3), read
//! from a frame's body and written into one: the fields a server-side subscription uses, by
//! their names in the specification. Fields aliot does not use are skipped when read (they
//! are still checked to be well-formed) and not written.

use crate::codec::{DecodeError, Described, Encoder, Fields, Value, decode};

/// The descriptor codes (part 2 §2.7, §2.8, part 3 §3.2, §3.4, §3.5, part 5 §5.3.3).
pub mod code {
    /// `open`.
    pub const OPEN: u64 = 0x10;
    /// `begin`.
    pub const BEGIN: u64 = 0x11;
    /// `attach`.
    pub const ATTACH: u64 = 0x12;
    /// `flow`.
    pub const FLOW: u64 = 0x13;
    /// `transfer`.
    pub const TRANSFER: u64 = 0x14;
    /// `disposition`.
    pub const DISPOSITION: u64 = 0x15;
    /// `detach`.
    pub const DETACH: u64 = 0x16;
    /// `end`.
    pub const END: u64 = 0x17;
    /// `close`.
    pub const CLOSE: u64 = 0x18;
    /// `error`.
    pub const ERROR: u64 = 0x1d;
    /// `received` (a delivery state).
    pub const RECEIVED: u64 = 0x23;
    /// `accepted` (an outcome).
    pub const ACCEPTED: u64 = 0x24;
    /// `rejected` (an outcome).
    pub const REJECTED: u64 = 0x25;
    /// `released` (an outcome).
    pub const RELEASED: u64 = 0x26;
    /// `modified` (an outcome).
    pub const MODIFIED: u64 = 0x27;
    /// `source` (a terminus).
    pub const SOURCE: u64 = 0x28;
    /// `target` (a terminus).
    pub const TARGET: u64 = 0x29;
    /// `properties` (a message section).
    pub const PROPERTIES: u64 = 0x73;
    /// `application-properties` (a message section).
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    /// `data` (a message section).
    pub const DATA: u64 = 0x75;
    /// `sasl-mechanisms`.
    pub const SASL_MECHANISMS: u64 = 0x40;
    /// `sasl-init`.
    pub const SASL_INIT: u64 = 0x41;
    /// `sasl-challenge`.
    pub const SASL_CHALLENGE: u64 = 0x42;
    /// `sasl-response`.
    pub const SASL_RESPONSE: u64 = 0x43;
    /// `sasl-outcome`.
    pub const SASL_OUTCOME: u64 = 0x44;
}

/// The symbolic names of the descriptors, which a peer may send instead of the codes.
fn name_of(code: u64) -> &'static str {
    match code {
        code::OPEN => "amqp:open:list",
        code::BEGIN => "amqp:begin:list",
        code::ATTACH => "amqp:attach:list",
        code::FLOW => "amqp:flow:list",
        code::TRANSFER => "amqp:transfer:list",
        code::DISPOSITION => "amqp:disposition:list",
        code::DETACH => "amqp:detach:list",
        code::END => "amqp:end:list",
        code::CLOSE => "amqp:close:list",
        code::ERROR => "amqp:error:list",
        code::RECEIVED => "amqp:received:list",
        code::ACCEPTED => "amqp:accepted:list",
        code::REJECTED => "amqp:rejected:list",
        code::RELEASED => "amqp:released:list",
        code::MODIFIED => "amqp:modified:list",
        code::SOURCE => "amqp:source:list",
        code::TARGET => "amqp:target:list",
        code::SASL_MECHANISMS => "amqp:sasl-mechanisms:list",
        code::SASL_INIT => "amqp:sasl-init:list",
        code::SASL_CHALLENGE => "amqp:sasl-challenge:list",
        code::SASL_RESPONSE => "amqp:sasl-response:list",
        code::SASL_OUTCOME => "amqp:sasl-outcome:list",
        _ => "",
    }
}

/// Which of `codes` the described value is, by code or by name.
fn which(described: &Described<'_>, codes: &[u64]) -> Option<u64> {
    codes
        .iter()
        .copied()
        .find(|&code| described.is(code, name_of(code)))
}

/// The fields of an optional field that must be the described list `code` (an error, a
/// terminus): `None` when the field is absent.
fn described_fields<'a>(
    value: Option<Value<'a>>,
    code: u64,
    expected: &'static str,
) -> Result<Option<Fields<'a>>, DecodeError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value {
        Value::Described(described) if which(&described, &[code]).is_some() => {
            Fields::of(described.value()?).map(Some)
        }
        _ => Err(DecodeError::Unexpected(expected)),
    }
}

/// A link end's role (part 2, §2.8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `false`: the end that sends messages.
    Sender,
    /// `true`: the end that receives them.
    Receiver,
}

impl Role {
    fn from_bool(value: bool) -> Self {
        if value { Role::Receiver } else { Role::Sender }
    }

    fn as_bool(self) -> bool {
        self == Role::Receiver
    }
}

/// An `error` (part 2, §2.8.14): its condition and description (its `info` map is skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorInfo<'a> {
    /// The condition, a symbol such as `amqp:not-allowed`.
    pub condition: &'a str,
    /// What happened, for a person.
    pub description: Option<&'a str>,
}

impl<'a> ErrorInfo<'a> {
    fn read(value: Option<Value<'a>>) -> Result<Option<Self>, DecodeError> {
        let Some(mut fields) = described_fields(value, code::ERROR, "an error")? else {
            return Ok(None);
        };
        let condition = fields.symbol()?.ok_or(DecodeError::Missing("condition"))?;
        let description = fields.get::<&str>()?;
        Ok(Some(ErrorInfo {
            condition,
            description,
        }))
    }

    fn write(&self, encoder: &mut Encoder<'_>) {
        encoder.described_list(code::ERROR, |fields| {
            fields.field(|e| e.symbol(self.condition));
            fields.optional(self.description, |e, text| e.string(text));
        });
    }
}

/// `open` (part 2, §2.7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open<'a> {
    /// `container-id`.
    pub container_id: &'a str,
    /// `hostname`.
    pub hostname: Option<&'a str>,
    /// `max-frame-size` (default: 4 GiB - 1).
    pub max_frame_size: u32,
    /// `channel-max` (default: 65535).
    pub channel_max: u16,
    /// `idle-time-out`, in milliseconds; `None`: none.
    pub idle_time_out: Option<u32>,
}

/// `begin` (part 2, §2.7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Begin {
    /// `remote-channel`: set when answering a peer's `begin`.
    pub remote_channel: Option<u16>,
    /// `next-outgoing-id`.
    pub next_outgoing_id: u32,
    /// `incoming-window`.
    pub incoming_window: u32,
    /// `outgoing-window`.
    pub outgoing_window: u32,
    /// `handle-max` (default: 4 Gi - 1).
    pub handle_max: u32,
}

/// A terminus (`source` or `target`, part 3 §3.5.3, §3.5.4): its address only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Terminus<'a> {
    /// `address`.
    pub address: Option<&'a str>,
}

impl<'a> Terminus<'a> {
    fn read(value: Option<Value<'a>>, code: u64) -> Result<Option<Self>, DecodeError> {
        let Some(mut fields) = described_fields(value, code, "a source or target")? else {
            return Ok(None);
        };
        // The address is any address type; aliot's consumers name theirs with a string.
        let address = match fields.next_field()? {
            Some(Value::String(text)) | Some(Value::Symbol(text)) => Some(text),
            Some(_) => return Err(DecodeError::Unexpected("a string address")),
            None => None,
        };
        // The rest is checked to be well-formed and not used.
        while fields.next_field()?.is_some() {}
        Ok(Some(Terminus { address }))
    }

    fn write(&self, encoder: &mut Encoder<'_>, code: u64) {
        encoder.described_list(code, |fields| {
            fields.optional(self.address, |e, address| e.string(address));
        });
    }
}

/// `attach` (part 2, §2.7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attach<'a> {
    /// `name`.
    pub name: &'a str,
    /// `handle`.
    pub handle: u32,
    /// `role`.
    pub role: Role,
    /// `snd-settle-mode`: 0 unsettled, 1 settled, 2 mixed (the default).
    pub snd_settle_mode: u8,
    /// `rcv-settle-mode`: 0 first (the default), 1 second.
    pub rcv_settle_mode: u8,
    /// `source`.
    pub source: Option<Terminus<'a>>,
    /// `target`.
    pub target: Option<Terminus<'a>>,
    /// `initial-delivery-count` (a sender's).
    pub initial_delivery_count: Option<u32>,
    /// `max-message-size`; `None`: no limit.
    pub max_message_size: Option<u64>,
}

/// `flow` (part 2, §2.7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// `next-incoming-id`.
    pub next_incoming_id: Option<u32>,
    /// `incoming-window`.
    pub incoming_window: u32,
    /// `next-outgoing-id`.
    pub next_outgoing_id: u32,
    /// `outgoing-window`.
    pub outgoing_window: u32,
    /// `handle`: set for a link's flow.
    pub handle: Option<u32>,
    /// `delivery-count`.
    pub delivery_count: Option<u32>,
    /// `link-credit`.
    pub link_credit: Option<u32>,
    /// `available`.
    pub available: Option<u32>,
    /// `drain`.
    pub drain: bool,
    /// `echo`.
    pub echo: bool,
}

/// `transfer` (part 2, §2.7.5), without its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer<'a> {
    /// `handle`.
    pub handle: u32,
    /// `delivery-id`: on the first frame of a delivery.
    pub delivery_id: Option<u32>,
    /// `delivery-tag`: on the first frame of a delivery.
    pub delivery_tag: Option<&'a [u8]>,
    /// `message-format`.
    pub message_format: Option<u32>,
    /// `settled`.
    pub settled: Option<bool>,
    /// `more`: further frames of this delivery follow.
    pub more: bool,
}

/// What a receiver made of a delivery (part 3, §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// `accepted`.
    Accepted,
    /// `rejected`.
    Rejected,
    /// `released`.
    Released,
    /// `modified`.
    Modified,
    /// `received`: not an outcome, the delivery goes on.
    Received,
}

impl DeliveryState {
    fn read(value: Option<Value<'_>>) -> Result<Option<Self>, DecodeError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let Value::Described(described) = value else {
            return Err(DecodeError::Unexpected("a delivery state"));
        };
        // Its fields (an error, annotations) are checked to be a list and not used.
        Fields::of(described.value()?)?;
        let state = match which(
            &described,
            &[
                code::ACCEPTED,
                code::REJECTED,
                code::RELEASED,
                code::MODIFIED,
                code::RECEIVED,
            ],
        ) {
            Some(code::ACCEPTED) => DeliveryState::Accepted,
            Some(code::REJECTED) => DeliveryState::Rejected,
            Some(code::RELEASED) => DeliveryState::Released,
            Some(code::MODIFIED) => DeliveryState::Modified,
            Some(_) => DeliveryState::Received,
            None => return Err(DecodeError::Unexpected("a delivery state")),
        };
        Ok(Some(state))
    }
}

/// `disposition` (part 2, §2.7.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disposition {
    /// `role`: which end sends it.
    pub role: Role,
    /// `first`: the first delivery id it covers.
    pub first: u32,
    /// `last`: the last one (`first` when absent).
    pub last: Option<u32>,
    /// `settled`.
    pub settled: bool,
    /// `state`.
    pub state: Option<DeliveryState>,
}

/// `detach` (part 2, §2.7.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detach<'a> {
    /// `handle`.
    pub handle: u32,
    /// `closed`.
    pub closed: bool,
    /// `error`.
    pub error: Option<ErrorInfo<'a>>,
}

/// An AMQP frame's performative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Performative<'a> {
    /// `open`.
    Open(Open<'a>),
    /// `begin`.
    Begin(Begin),
    /// `attach`.
    Attach(Attach<'a>),
    /// `flow`.
    Flow(Flow),
    /// `transfer`.
    Transfer(Transfer<'a>),
    /// `disposition`.
    Disposition(Disposition),
    /// `detach`.
    Detach(Detach<'a>),
    /// `end`, with its error.
    End(Option<ErrorInfo<'a>>),
    /// `close`, with its error.
    Close(Option<ErrorInfo<'a>>),
}

impl<'a> Performative<'a> {
    /// The performative at the start of an AMQP frame's body, and the payload after it (a
    /// transfer's message bytes; empty otherwise).
    ///
    /// ```
    /// use aliot_amqp::performative::Performative;
    ///
    /// // end, no error: the descriptor 0x17 and an empty list.
    /// let (end, payload) = Performative::read(&[0x00, 0x53, 0x17, 0x45]).unwrap();
    /// assert_eq!((end, payload.len()), (Performative::End(None), 0));
    /// ```
    pub fn read(body: &'a [u8]) -> Result<(Self, &'a [u8]), DecodeError> {
        let (value, payload) = decode(body)?;
        let Value::Described(described) = value else {
            return Err(DecodeError::Unexpected("a performative"));
        };
        let codes = [
            code::OPEN,
            code::BEGIN,
            code::ATTACH,
            code::FLOW,
            code::TRANSFER,
            code::DISPOSITION,
            code::DETACH,
            code::END,
            code::CLOSE,
        ];
        let which = which(&described, &codes).ok_or(DecodeError::Unexpected("a performative"))?;
        let mut f = Fields::of(described.value()?)?;
        let performative = match which {
            code::OPEN => Performative::Open(Open {
                container_id: f.need("container-id")?,
                hostname: f.get()?,
                max_frame_size: f.get()?.unwrap_or(u32::MAX),
                channel_max: f.get()?.unwrap_or(u16::MAX),
                idle_time_out: f.get()?,
            }),
            code::BEGIN => Performative::Begin(Begin {
                remote_channel: f.get()?,
                next_outgoing_id: f.need("next-outgoing-id")?,
                incoming_window: f.need("incoming-window")?,
                outgoing_window: f.need("outgoing-window")?,
                handle_max: f.get()?.unwrap_or(u32::MAX),
            }),
            code::ATTACH => Performative::Attach(Attach {
                name: f.need("name")?,
                handle: f.need("handle")?,
                role: Role::from_bool(f.need("role")?),
                snd_settle_mode: f.get()?.unwrap_or(2),
                rcv_settle_mode: f.get()?.unwrap_or(0),
                source: Terminus::read(f.next_field()?, code::SOURCE)?,
                target: Terminus::read(f.next_field()?, code::TARGET)?,
                initial_delivery_count: {
                    // unsettled, incomplete-unsettled: not used.
                    f.skip()?;
                    f.skip()?;
                    f.get()?
                },
                max_message_size: f.get()?,
            }),
            code::FLOW => Performative::Flow(Flow {
                next_incoming_id: f.get()?,
                incoming_window: f.need("incoming-window")?,
                next_outgoing_id: f.need("next-outgoing-id")?,
                outgoing_window: f.need("outgoing-window")?,
                handle: f.get()?,
                delivery_count: f.get()?,
                link_credit: f.get()?,
                available: f.get()?,
                drain: f.get()?.unwrap_or(false),
                echo: f.get()?.unwrap_or(false),
            }),
            code::TRANSFER => Performative::Transfer(Transfer {
                handle: f.need("handle")?,
                delivery_id: f.get()?,
                delivery_tag: f.get()?,
                message_format: f.get()?,
                settled: f.get()?,
                more: f.get()?.unwrap_or(false),
            }),
            code::DISPOSITION => Performative::Disposition(Disposition {
                role: Role::from_bool(f.need("role")?),
                first: f.need("first")?,
                last: f.get()?,
                settled: f.get()?.unwrap_or(false),
                state: DeliveryState::read(f.next_field()?)?,
            }),
            code::DETACH => Performative::Detach(Detach {
                handle: f.need("handle")?,
                closed: f.get()?.unwrap_or(false),
                error: ErrorInfo::read(f.next_field()?)?,
            }),
            code::END => Performative::End(ErrorInfo::read(f.next_field()?)?),
            _ => Performative::Close(ErrorInfo::read(f.next_field()?)?),
        };
        // Whatever fields follow are checked to be well-formed, and not used.
        while f.next_field()?.is_some() {}
        Ok((performative, payload))
    }

    /// Writes the performative as a frame body (a transfer's payload goes after it).
    pub fn write(&self, encoder: &mut Encoder<'_>) {
        match *self {
            Performative::Open(open) => encoder.described_list(code::OPEN, |f| {
                f.field(|e| e.string(open.container_id));
                f.optional(open.hostname, |e, host| e.string(host));
                f.field(|e| e.uint(open.max_frame_size));
                f.field(|e| e.ushort(open.channel_max));
                f.optional(open.idle_time_out, |e, millis| e.uint(millis));
            }),
            Performative::Begin(begin) => encoder.described_list(code::BEGIN, |f| {
                f.optional(begin.remote_channel, |e, channel| e.ushort(channel));
                f.field(|e| e.uint(begin.next_outgoing_id));
                f.field(|e| e.uint(begin.incoming_window));
                f.field(|e| e.uint(begin.outgoing_window));
                f.field(|e| e.uint(begin.handle_max));
            }),
            Performative::Attach(attach) => encoder.described_list(code::ATTACH, |f| {
                f.field(|e| e.string(attach.name));
                f.field(|e| e.uint(attach.handle));
                f.field(|e| e.bool(attach.role.as_bool()));
                f.field(|e| e.ubyte(attach.snd_settle_mode));
                f.field(|e| e.ubyte(attach.rcv_settle_mode));
                f.optional(attach.source, |e, source| source.write(e, code::SOURCE));
                f.optional(attach.target, |e, target| target.write(e, code::TARGET));
                f.null();
                f.null();
                f.optional(attach.initial_delivery_count, |e, count| e.uint(count));
                f.optional(attach.max_message_size, |e, size| e.ulong(size));
            }),
            Performative::Flow(flow) => encoder.described_list(code::FLOW, |f| {
                f.optional(flow.next_incoming_id, |e, id| e.uint(id));
                f.field(|e| e.uint(flow.incoming_window));
                f.field(|e| e.uint(flow.next_outgoing_id));
                f.field(|e| e.uint(flow.outgoing_window));
                f.optional(flow.handle, |e, handle| e.uint(handle));
                f.optional(flow.delivery_count, |e, count| e.uint(count));
                f.optional(flow.link_credit, |e, credit| e.uint(credit));
                f.optional(flow.available, |e, available| e.uint(available));
                f.field(|e| e.bool(flow.drain));
                f.field(|e| e.bool(flow.echo));
            }),
            Performative::Transfer(transfer) => encoder.described_list(code::TRANSFER, |f| {
                f.field(|e| e.uint(transfer.handle));
                f.optional(transfer.delivery_id, |e, id| e.uint(id));
                f.optional(transfer.delivery_tag, |e, tag| e.binary(tag));
                f.optional(transfer.message_format, |e, format| e.uint(format));
                f.optional(transfer.settled, |e, settled| e.bool(settled));
                if transfer.more {
                    f.field(|e| e.bool(true));
                }
            }),
            Performative::Disposition(disposition) => {
                encoder.described_list(code::DISPOSITION, |f| {
                    f.field(|e| e.bool(disposition.role.as_bool()));
                    f.field(|e| e.uint(disposition.first));
                    f.optional(disposition.last, |e, last| e.uint(last));
                    f.field(|e| e.bool(disposition.settled));
                    f.optional(disposition.state, |e, state| {
                        let code = match state {
                            DeliveryState::Accepted => code::ACCEPTED,
                            DeliveryState::Rejected => code::REJECTED,
                            DeliveryState::Released => code::RELEASED,
                            DeliveryState::Modified => code::MODIFIED,
                            DeliveryState::Received => code::RECEIVED,
                        };
                        // Received carries two mandatory fields; aliot never sends it.
                        e.described_list(code, |_| {});
                    });
                })
            }
            Performative::Detach(detach) => encoder.described_list(code::DETACH, |f| {
                f.field(|e| e.uint(detach.handle));
                f.field(|e| e.bool(detach.closed));
                f.optional(detach.error, |e, error| error.write(e));
            }),
            Performative::End(error) => encoder.described_list(code::END, |f| {
                f.optional(error, |e, error| error.write(e));
            }),
            Performative::Close(error) => encoder.described_list(code::CLOSE, |f| {
                f.optional(error, |e, error| error.write(e));
            }),
        }
    }
}

/// A SASL frame (part 5, §5.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sasl<'a> {
    /// `sasl-mechanisms`: what the server offers (aliot: `PLAIN` only).
    Mechanisms(&'a [&'a str]),
    /// `sasl-init`.
    Init {
        /// `mechanism`.
        mechanism: &'a str,
        /// `initial-response`: for PLAIN, `authzid NUL authcid NUL passwd`.
        initial_response: Option<&'a [u8]>,
        /// `hostname`.
        hostname: Option<&'a str>,
    },
    /// `sasl-challenge`.
    Challenge(&'a [u8]),
    /// `sasl-response`.
    Response(&'a [u8]),
    /// `sasl-outcome`: `code` 0 ok, 1 auth, 2 sys, 3 sys-perm, 4 sys-temp.
    Outcome {
        /// `code`.
        code: u8,
    },
}

impl<'a> Sasl<'a> {
    /// A SASL frame's body. `sasl-mechanisms` is not read (a server never receives it).
    pub fn read(body: &'a [u8]) -> Result<Self, DecodeError> {
        let (value, _) = decode(body)?;
        let Value::Described(described) = value else {
            return Err(DecodeError::Unexpected("a SASL frame"));
        };
        let codes = [
            code::SASL_INIT,
            code::SASL_CHALLENGE,
            code::SASL_RESPONSE,
            code::SASL_OUTCOME,
        ];
        let which = which(&described, &codes).ok_or(DecodeError::Unexpected("a SASL frame"))?;
        let mut f = Fields::of(described.value()?)?;
        let sasl = match which {
            code::SASL_INIT => Sasl::Init {
                mechanism: f.symbol()?.ok_or(DecodeError::Missing("mechanism"))?,
                initial_response: f.get()?,
                hostname: f.get()?,
            },
            code::SASL_CHALLENGE => Sasl::Challenge(f.need("challenge")?),
            code::SASL_RESPONSE => Sasl::Response(f.need("response")?),
            _ => Sasl::Outcome {
                code: f.need("code")?,
            },
        };
        while f.next_field()?.is_some() {}
        Ok(sasl)
    }

    /// Writes the SASL frame's body.
    pub fn write(&self, encoder: &mut Encoder<'_>) {
        match *self {
            Sasl::Mechanisms(names) => encoder.described_list(code::SASL_MECHANISMS, |f| {
                f.field(|e| e.symbol_array(names));
            }),
            Sasl::Init {
                mechanism,
                initial_response,
                hostname,
            } => encoder.described_list(code::SASL_INIT, |f| {
                f.field(|e| e.symbol(mechanism));
                f.optional(initial_response, |e, response| e.binary(response));
                f.optional(hostname, |e, host| e.string(host));
            }),
            Sasl::Challenge(bytes) => encoder.described_list(code::SASL_CHALLENGE, |f| {
                f.field(|e| e.binary(bytes));
            }),
            Sasl::Response(bytes) => encoder.described_list(code::SASL_RESPONSE, |f| {
                f.field(|e| e.binary(bytes));
            }),
            Sasl::Outcome { code } => encoder.described_list(code::SASL_OUTCOME, |f| {
                f.field(|e| e.ubyte(code));
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn written(performative: &Performative<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        performative.write(&mut Encoder::new(&mut out));
        out
    }

    #[test]
    fn every_performative_reads_back_what_was_written() {
        let error = ErrorInfo {
            condition: "amqp:not-allowed",
            description: Some("one receiver link per connection"),
        };
        let all = [
            Performative::Open(Open {
                container_id: "aliot",
                hostname: Some("localhost"),
                max_frame_size: 65_536,
                channel_max: 0,
                idle_time_out: Some(300_000),
            }),
            Performative::Begin(Begin {
                remote_channel: Some(0),
                next_outgoing_id: 1,
                incoming_window: 2048,
                outgoing_window: u32::MAX,
                handle_max: 0,
            }),
            Performative::Attach(Attach {
                name: "receiver-1",
                handle: 0,
                role: Role::Sender,
                snd_settle_mode: 0,
                rcv_settle_mode: 0,
                source: Some(Terminus {
                    address: Some("default"),
                }),
                target: Some(Terminus::default()),
                initial_delivery_count: Some(0),
                max_message_size: None,
            }),
            Performative::Flow(Flow {
                next_incoming_id: Some(3),
                incoming_window: 2048,
                next_outgoing_id: 1,
                outgoing_window: 2048,
                handle: Some(0),
                delivery_count: Some(0),
                link_credit: Some(500),
                available: None,
                drain: false,
                echo: true,
            }),
            Performative::Transfer(Transfer {
                handle: 0,
                delivery_id: Some(300),
                delivery_tag: Some(&[0, 0, 1, 44]),
                message_format: Some(0),
                settled: Some(false),
                more: false,
            }),
            Performative::Disposition(Disposition {
                role: Role::Receiver,
                first: 4,
                last: Some(9),
                settled: true,
                state: Some(DeliveryState::Accepted),
            }),
            Performative::Detach(Detach {
                handle: 1,
                closed: true,
                error: Some(error),
            }),
            Performative::End(None),
            Performative::Close(Some(error)),
        ];
        for performative in all {
            let mut bytes = written(&performative);
            bytes.extend_from_slice(b"payload");
            let (read, payload) = Performative::read(&bytes).unwrap();
            assert_eq!(read, performative);
            assert_eq!(payload, b"payload");
        }
    }

    #[test]
    fn sasl_frames_read_back_what_was_written() {
        for sasl in [
            Sasl::Init {
                mechanism: "PLAIN",
                initial_response: Some(b"\0user\0secret"),
                hostname: None,
            },
            Sasl::Response(b"more"),
            Sasl::Challenge(b"?"),
            Sasl::Outcome { code: 1 },
        ] {
            let mut out = Vec::new();
            sasl.write(&mut Encoder::new(&mut out));
            assert_eq!(Sasl::read(&out).unwrap(), sasl);
        }
        let mut out = Vec::new();
        Sasl::Mechanisms(&["PLAIN"]).write(&mut Encoder::new(&mut out));
        assert_eq!(
            out,
            [
                0x00, 0x53, 0x40, 0xc0, 11, 1, 0xe0, 8, 1, 0xa3, 5, b'P', b'L', b'A', b'I', b'N'
            ]
        );
    }

    /// A receiver's flow in the compact encodings clients use (`list8`, `uint0`,
    /// `smalluint`, four-byte `uint`s), byte by byte rather than through the encoder.
    #[test]
    fn a_receivers_flow_in_compact_encodings() {
        let fields: &[u8] = &[
            0x43, // next-incoming-id 0 (uint0)
            0x70, 0x7f, 0xff, 0xff, 0xff, // incoming-window
            0x43, // next-outgoing-id 0
            0x70, 0x7f, 0xff, 0xff, 0xff, // outgoing-window
            0x43, // handle 0
            0x43, // delivery-count 0
            0x52, 0x0a, // link-credit 10 (smalluint)
            0x40, // available: null
            0x42, // drain false
            0x42, // echo false
        ];
        let mut bytes = alloc::vec![0x00, 0x53, 0x13, 0xc0, fields.len() as u8 + 1, 10];
        bytes.extend_from_slice(fields);
        let (flow, _) = Performative::read(&bytes).unwrap();
        let Performative::Flow(flow) = flow else {
            panic!("{flow:?}")
        };
        assert_eq!(flow.next_incoming_id, Some(0));
        assert_eq!(flow.incoming_window, 0x7fff_ffff);
        assert_eq!(flow.handle, Some(0));
        assert_eq!(flow.link_credit, Some(10));
        assert_eq!(flow.available, None);
        assert!(!flow.drain);
    }

    #[test]
    fn descriptors_by_name_are_read_like_codes() {
        // close, its descriptor as a symbol, no error.
        let mut bytes = alloc::vec![0x00, 0xa3, 15];
        bytes.extend_from_slice(b"amqp:close:list");
        bytes.push(0x45);
        assert_eq!(
            Performative::read(&bytes).unwrap().0,
            Performative::Close(None)
        );
    }

    #[test]
    fn wrong_or_missing_fields_are_decode_errors() {
        // open without its container-id.
        assert_eq!(
            Performative::read(&[0x00, 0x53, 0x10, 0x45]),
            Err(DecodeError::Missing("container-id"))
        );
        // begin whose next-outgoing-id is a string.
        assert_eq!(
            Performative::read(&[0x00, 0x53, 0x11, 0xc0, 4, 2, 0x40, 0xa1, 0]),
            Err(DecodeError::Unexpected("a uint"))
        );
        // A descriptor that is no performative.
        assert_eq!(
            Performative::read(&[0x00, 0x53, 0x75, 0x45]),
            Err(DecodeError::Unexpected("a performative"))
        );
        // A disposition whose state is no delivery state.
        let mut bytes = Vec::new();
        Encoder::new(&mut bytes).described_list(code::DISPOSITION, |f| {
            f.field(|e| e.bool(true));
            f.field(|e| e.uint(0));
            f.null();
            f.field(|e| e.bool(false));
            f.field(|e| e.described_list(code::OPEN, |_| {}));
        });
        assert_eq!(
            Performative::read(&bytes),
            Err(DecodeError::Unexpected("a delivery state"))
        );
        // Cut anywhere, a performative is an error, never a panic.
        for end in 0..bytes.len() {
            assert!(Performative::read(&bytes[..end]).is_err(), "{end}");
        }
    }
}
