//! One consumer's AMQP 1.0 connection, the server's side, as the platform's server-side
//! subscription has it (`PLATFORM-PROTOCOLS.md` §8): SASL PLAIN, then one session with one
//! receiver link on the client's side (a sender link on this one), messages sent unsettled
//! within the client's credit, and the client's dispositions answering them.
//!
//! # Contract
//!
//! [`ServerConnection`] is sans-IO: the adapter moves bytes and time, and makes the decisions
//! that need the rest of the broker.
//!
//! - Bytes from the socket go to [`handle_input`](ServerConnection::handle_input); the end of
//!   the stream to [`handle_eof`](ServerConnection::handle_eof). After either, and after every
//!   other call, the adapter drains [`poll_event`](ServerConnection::poll_event), writes
//!   [`output`](ServerConnection::output) to the socket (and reports what it wrote with
//!   [`consume_output`](ServerConnection::consume_output)), and sleeps until
//!   [`poll_timeout`](ServerConnection::poll_timeout), when it calls
//!   [`handle_timeout`](ServerConnection::handle_timeout).
//! - [`Event::Login`] is answered with [`login_verdict`](ServerConnection::login_verdict);
//!   input after it waits until then.
//! - After [`Event::LinkAttached`], the adapter sends messages with
//!   [`send`](ServerConnection::send) while [`sendable`](ServerConnection::sendable) is above
//!   zero; [`Event::Credit`] says it has grown. Each message answered by the client comes back
//!   as [`Event::Answered`] with the tag it was sent with; a message never answered when the
//!   connection ends is the adapter's to give to another consumer.
//! - [`Event::Closed`] is the last event: the adapter writes what output is left and drops the
//!   socket.
//!
//! Deadlines (one table, [`Timer`]): SASL and the `open` within
//! [`ServerConfig::handshake_deadline`] of the start; the receiver link within
//! [`ServerConfig::link_deadline`] of the `open`; a frame from the client at least every
//! [`ServerConfig::idle_time_out`] (the idle time-out this side declares); a heartbeat from this
//! side at least every half of the client's; and, once this side has sent `close`, the
//! client's `close` within [`CLOSE_GRACE`].

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use aliot_core::Instant;

use crate::codec::{DecodeError, Encoder};
use crate::frame::{
    AMQP_HEADER, FrameError, FrameKind, MIN_MAX_FRAME_SIZE, SASL_HEADER, split_frame, write_frame,
    write_heartbeat,
};
use crate::message::Message;
use crate::performative::{
    Attach, Begin, DeliveryState, Detach, Disposition, ErrorInfo, Flow, Open, Performative, Role,
    Sasl, Terminus, Transfer,
};

/// How long, once this side has sent `close`, the client's `close` is waited for.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The AMQP error conditions this side sends (part 2, §2.8.15 to §2.8.18).
pub mod condition {
    /// The client did something the subscription does not allow.
    pub const NOT_ALLOWED: &str = "amqp:not-allowed";
    /// What the client named does not exist (a consumer group).
    pub const NOT_FOUND: &str = "amqp:not-found";
    /// A frame or value that does not decode.
    pub const DECODE_ERROR: &str = "amqp:decode-error";
    /// A frame that is malformed or too large.
    pub const FRAMING_ERROR: &str = "amqp:connection:framing-error";
    /// The client stayed silent past the idle time-out.
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
}

/// What this side declares and enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The `container-id` of this side's `open`.
    pub container_id: String,
    /// The largest frame the client may send (this side's `max-frame-size`).
    pub max_frame_size: u32,
    /// The idle time-out this side declares: the client must send a frame at least this often.
    pub idle_time_out: Duration,
    /// SASL and the `open`, from the start, at most.
    pub handshake_deadline: Duration,
    /// The receiver link, from the `open`, at most (the platform's 15 s).
    pub link_deadline: Duration,
}

impl Default for ServerConfig {
    /// `aliot`; frames up to 64 KiB from the client; the platform's limits otherwise (an idle
    /// time-out of 300 s, the longest client value it takes, and 15 s for the link).
    fn default() -> Self {
        ServerConfig {
            container_id: "aliot".to_string(),
            max_frame_size: 65_536,
            idle_time_out: Duration::from_secs(300),
            handshake_deadline: Duration::from_secs(15),
            link_deadline: Duration::from_secs(15),
        }
    }
}

/// Why the connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it (its error's condition and description, if it gave one).
    ClosedByClient(Option<String>),
    /// The client ended its session or detached its link: the consumer is gone.
    LinkEndedByClient,
    /// The socket ended without a `close`.
    EndOfStream,
    /// The SASL login was refused (the adapter's verdict, or a mechanism other than PLAIN).
    LoginRefused,
    /// SASL and the `open` were not done within the handshake deadline.
    HandshakeTimedOut,
    /// No receiver link within the link deadline.
    NoLinkInTime,
    /// The client was silent past the idle time-out.
    IdleTimedOut,
    /// The client broke the protocol (what it got wrong).
    ProtocolError(String),
    /// The adapter closed it ([`ServerConnection::close`]).
    ClosedHere,
}

/// What the adapter hears from the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A SASL PLAIN login: answer with [`ServerConnection::login_verdict`].
    Login {
        /// The authentication identity (`authcid`).
        username: String,
        /// The password.
        password: String,
    },
    /// The client attached its receiver link: messages may go once there is credit.
    LinkAttached {
        /// The address of the link's source (`default` in the platform's demos), if any.
        source: Option<String>,
    },
    /// The client gave credit or session window: [`ServerConnection::sendable`] has grown.
    Credit,
    /// The client answered the message sent with `tag`.
    Answered {
        /// The tag the message was sent with.
        tag: u64,
        /// Accepted: it is done with. Otherwise (released, rejected, modified, or settled
        /// without an outcome) it goes to another consumer.
        accepted: bool,
    },
    /// The connection is over: nothing more happens on it.
    Closed(CloseReason),
}

/// Why [`ServerConnection::send`] did not send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No link, or it is ending.
    #[error("no receiver link to send on")]
    NoLink,
    /// The client's link credit or session window is used up.
    #[error("the client's credit or window is used up")]
    NoCredit,
}

/// The deadlines, one table: which is armed, and when it falls due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// SASL and `open` done.
    Handshake,
    /// The receiver link attached.
    Link,
    /// A frame from the client.
    Idle,
    /// A frame to the client (a heartbeat when there is nothing else).
    Heartbeat,
    /// The client's `close` after ours.
    CloseGrace,
}

const TIMERS: [Timer; 5] = [
    Timer::Handshake,
    Timer::Link,
    Timer::Idle,
    Timer::Heartbeat,
    Timer::CloseGrace,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's SASL protocol header.
    SaslHeader,
    /// Waiting for `sasl-init`.
    SaslInit,
    /// The login is with the adapter.
    SaslVerdict,
    /// Waiting for the AMQP protocol header.
    AmqpHeader,
    /// Waiting for the client's `open`.
    Open,
    /// Open both ways.
    Opened,
    /// This side sent `close`; waiting for the client's.
    Closing,
    /// Over.
    Closed,
}

/// The one session.
struct Session {
    /// The transfer id of this side's next transfer frame.
    next_outgoing_id: u32,
    /// Transfer frames the client will take now.
    remote_incoming_window: u32,
}

/// The one link.
struct Link {
    /// This side's handle for it.
    handle: u32,
    /// The client's handle for it.
    remote_handle: u32,
    /// Deliveries sent on it (AMQP's delivery-count, serial).
    delivery_count: u32,
    /// Messages the client will take now.
    credit: u32,
    /// The delivery id of the next message.
    next_delivery_id: u32,
    /// Deliveries not yet answered: delivery id → the adapter's tag.
    unsettled: BTreeMap<u32, u64>,
    /// The client asked to be told when credit runs dry (`drain`).
    drain: bool,
}

/// This side's flow for its link: its state as it stands (part 2, §2.7.4).
fn link_flow(session: &Session, link: &Link) -> Flow {
    Flow {
        next_incoming_id: None,
        incoming_window: u32::MAX >> 1,
        next_outgoing_id: session.next_outgoing_id,
        outgoing_window: u32::MAX >> 1,
        handle: Some(link.handle),
        delivery_count: Some(link.delivery_count),
        link_credit: Some(link.credit),
        available: None,
        drain: link.drain,
        echo: false,
    }
}

/// One consumer's connection: see the module's contract.
pub struct ServerConnection {
    config: ServerConfig,
    phase: Phase,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<Event>,
    deadlines: [Option<Instant>; 5],
    /// The client's idle time-out, halved: how often this side must send.
    heartbeat_every: Option<Duration>,
    /// The largest frame this side may send.
    remote_max_frame_size: u32,
    session: Option<Session>,
    link: Option<Link>,
    /// The next handle this side gives a link (refused ones included).
    next_handle: u32,
    /// Links refused: the client's handles, whose later frames are ignored.
    refused_handles: Vec<u32>,
    /// Scratch for a message's bytes while it is framed.
    message: Vec<u8>,
}

impl ServerConnection {
    /// A connection accepted at `now`.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let mut connection = ServerConnection {
            phase: Phase::SaslHeader,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            deadlines: [None; 5],
            heartbeat_every: None,
            remote_max_frame_size: MIN_MAX_FRAME_SIZE,
            session: None,
            link: None,
            next_handle: 0,
            refused_handles: Vec::new(),
            message: Vec::new(),
            config,
        };
        connection.arm(Timer::Handshake, now + connection.config.handshake_deadline);
        connection
    }

    fn arm(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    fn disarm(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the socket.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// The first `written` bytes of [`output`](Self::output) went to the socket.
    pub fn consume_output(&mut self, written: usize) {
        self.output.drain(..written.min(self.output.len()));
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Messages [`send`](Self::send) takes now, at most: the link's credit, within the
    /// session's window. A message larger than the client's frames takes a window slot per
    /// frame, so `send` may refuse it while this is above zero.
    pub fn sendable(&self) -> u32 {
        match (&self.session, &self.link, self.phase) {
            (Some(session), Some(link), Phase::Opened) => {
                link.credit.min(session.remote_incoming_window)
            }
            _ => 0,
        }
    }

    /// Deliveries sent and not answered yet.
    pub fn unsettled(&self) -> usize {
        self.link.as_ref().map_or(0, |link| link.unsettled.len())
    }

    /// Time passes: whatever fell due at or before `now` happens.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in TIMERS {
            let Some(at) = self.deadlines[timer as usize] else {
                continue;
            };
            if at > now {
                continue;
            }
            self.disarm(timer);
            match timer {
                Timer::Handshake => self.finish(CloseReason::HandshakeTimedOut),
                Timer::Link => self.close_with(
                    now,
                    Some((
                        condition::NOT_ALLOWED,
                        "no receiver link within the deadline",
                    )),
                    CloseReason::NoLinkInTime,
                ),
                Timer::Idle => self.close_with(
                    now,
                    Some((condition::RESOURCE_LIMIT_EXCEEDED, "idle time-out")),
                    CloseReason::IdleTimedOut,
                ),
                Timer::Heartbeat => {
                    write_heartbeat(&mut self.output);
                    self.sent(now);
                }
                Timer::CloseGrace => self.finish_after_close(),
            }
        }
    }

    /// Bytes from the client, at `now`.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.input.extend_from_slice(bytes);
        if !bytes.is_empty() && self.phase != Phase::SaslHeader {
            self.received(now);
        }
        self.process(now);
    }

    /// The socket ended.
    pub fn handle_eof(&mut self) {
        match self.phase {
            Phase::Closed => {}
            // A client that closed and then shut the socket: over, as it should be.
            Phase::Closing => self.finish_after_close(),
            _ => self.finish(CloseReason::EndOfStream),
        }
    }

    /// The adapter's answer to [`Event::Login`], at `now`.
    pub fn login_verdict(&mut self, now: Instant, accepted: bool) {
        if self.phase != Phase::SaslVerdict {
            return;
        }
        let code = if accepted { 0 } else { 1 };
        write_frame(&mut self.output, FrameKind::Sasl, 0, |e| {
            Sasl::Outcome { code }.write(e)
        });
        if accepted {
            self.phase = Phase::AmqpHeader;
            self.process(now);
        } else {
            self.finish(CloseReason::LoginRefused);
        }
    }

    /// Sends one message on the link, unsettled, and remembers `tag` for its answer.
    pub fn send(&mut self, now: Instant, tag: u64, message: &Message<'_>) -> Result<(), SendError> {
        if self.phase != Phase::Opened {
            return Err(SendError::NoLink);
        }
        let (Some(session), Some(link)) = (&mut self.session, &mut self.link) else {
            return Err(SendError::NoLink);
        };
        self.message.clear();
        message.write(&mut Encoder::new(&mut self.message));
        // Frames this message takes at the client's frame size (the performative of a later
        // frame is a few bytes; 64 leaves room for the first one's).
        let room = (self.remote_max_frame_size as usize)
            .saturating_sub(8 + 64)
            .max(64);
        let frames = self.message.len().div_ceil(room).max(1);
        if link.credit == 0 || (session.remote_incoming_window as usize) < frames {
            return Err(SendError::NoCredit);
        }
        let delivery_id = link.next_delivery_id;
        let tag_bytes = delivery_id.to_be_bytes();
        let chunks = self.message.chunks(room);
        let count = chunks.len().max(1);
        for (index, chunk) in self.message.chunks(room).enumerate() {
            let first = index == 0;
            let transfer = Transfer {
                handle: link.handle,
                delivery_id: first.then_some(delivery_id),
                delivery_tag: first.then_some(&tag_bytes[..]),
                message_format: first.then_some(0),
                settled: first.then_some(false),
                more: index + 1 < count,
            };
            write_frame(&mut self.output, FrameKind::Amqp, 0, |e| {
                Performative::Transfer(transfer).write(e);
                e.raw(chunk);
            });
            session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
            session.remote_incoming_window -= 1;
        }
        link.next_delivery_id = delivery_id.wrapping_add(1);
        link.delivery_count = link.delivery_count.wrapping_add(1);
        link.credit -= 1;
        link.unsettled.insert(delivery_id, tag);
        self.sent(now);
        Ok(())
    }

    /// The adapter has nothing more to send for now: a client that asked to drain its credit
    /// gets it back (the credit is used up, and the client is told).
    pub fn nothing_to_send(&mut self, now: Instant) {
        let (Some(session), Some(link)) = (&self.session, &mut self.link) else {
            return;
        };
        if !link.drain || self.phase != Phase::Opened {
            return;
        }
        link.delivery_count = link.delivery_count.wrapping_add(link.credit);
        link.credit = 0;
        let flow = Flow {
            available: Some(0),
            ..link_flow(session, link)
        };
        link.drain = false;
        self.write_performative(Performative::Flow(flow));
        self.sent(now);
    }

    /// Refuses the link the client attached (the consumer group it named is unknown, say):
    /// detaches it with `condition` and `description`, and closes the connection.
    pub fn refuse_link(&mut self, now: Instant, condition: &str, description: &str) {
        let Some(handle) = self.link.as_ref().map(|link| link.handle) else {
            return;
        };
        if self.phase != Phase::Opened {
            return;
        }
        let error = ErrorInfo {
            condition,
            description: Some(description),
        };
        self.write_performative(Performative::Detach(Detach {
            handle,
            closed: true,
            error: Some(error),
        }));
        self.link = None;
        self.close_with(now, None, CloseReason::ClosedHere);
    }

    /// Closes the connection from this side, with an error if there is one.
    pub fn close(&mut self, now: Instant, error: Option<(&str, &str)>) {
        self.close_with(now, error, CloseReason::ClosedHere);
    }

    /// A frame reached the client: the heartbeat can wait a full period again.
    fn sent(&mut self, now: Instant) {
        if let (Some(every), Phase::Opened) = (self.heartbeat_every, self.phase) {
            self.arm(Timer::Heartbeat, now + every);
        }
    }

    /// A frame came from the client.
    fn received(&mut self, now: Instant) {
        if self.phase == Phase::Opened {
            self.arm(Timer::Idle, now + self.config.idle_time_out);
        }
    }

    fn write_performative(&mut self, performative: Performative<'_>) {
        write_frame(&mut self.output, FrameKind::Amqp, 0, |e| {
            performative.write(e)
        });
    }

    /// Sends `close` (with `error`) and waits for the client's.
    fn close_with(&mut self, now: Instant, error: Option<(&str, &str)>, reason: CloseReason) {
        match self.phase {
            Phase::Opened => {
                let error = error.map(|(condition, description)| ErrorInfo {
                    condition,
                    description: Some(description),
                });
                self.write_performative(Performative::Close(error));
                self.phase = Phase::Closing;
                self.deadlines = [None; 5];
                self.arm(Timer::CloseGrace, now + CLOSE_GRACE);
                self.events.push_back(Event::Closed(reason));
            }
            Phase::Closing | Phase::Closed => {}
            // Before the open there is no `close` to send: the socket just ends.
            _ => self.finish(reason),
        }
    }

    /// Over, with `reason` as the last event.
    fn finish(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closing {
            self.finish_after_close();
            return;
        }
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.deadlines = [None; 5];
            self.input = Vec::new();
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Over after this side's `close` (its `Closed` event went out with it).
    fn finish_after_close(&mut self) {
        self.phase = Phase::Closed;
        self.deadlines = [None; 5];
        self.input = Vec::new();
    }

    /// A protocol error: the client hears why, and the connection ends.
    fn protocol_error(&mut self, now: Instant, condition: &str, description: String) {
        let reason = CloseReason::ProtocolError(description.clone());
        match self.phase {
            Phase::Opened => self.close_with(now, Some((condition, &description)), reason),
            _ => self.finish(reason),
        }
    }

    /// Takes what is in the input buffer, as far as the phase allows. The buffer is out of
    /// `self` meanwhile, so that handling a frame may change `self` without copying the frame.
    fn process(&mut self, now: Instant) {
        let mut input = core::mem::take(&mut self.input);
        let taken = self.take_input(now, &input);
        if self.phase != Phase::Closed {
            input.drain(..taken);
            self.input = input;
        }
    }

    /// Handles what `input` holds, as far as the phase allows; the bytes it took.
    fn take_input(&mut self, now: Instant, input: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let rest = &input[taken..];
            match self.phase {
                Phase::SaslHeader | Phase::AmqpHeader => {
                    let Some(header) = rest.get(..8) else { break };
                    let expected = if self.phase == Phase::SaslHeader {
                        SASL_HEADER
                    } else {
                        AMQP_HEADER
                    };
                    if header != expected {
                        // Part 2, §2.2: answer with the header this side wants, then close.
                        self.output.extend_from_slice(&expected);
                        self.finish(CloseReason::ProtocolError(
                            "a protocol header this side does not take at this point".into(),
                        ));
                        return taken;
                    }
                    taken += 8;
                    self.output.extend_from_slice(&expected);
                    if self.phase == Phase::SaslHeader {
                        write_frame(&mut self.output, FrameKind::Sasl, 0, |e| {
                            Sasl::Mechanisms(&["PLAIN"]).write(e)
                        });
                        self.phase = Phase::SaslInit;
                    } else {
                        self.phase = Phase::Open;
                    }
                }
                Phase::SaslInit | Phase::Open | Phase::Opened | Phase::Closing => {
                    let split = split_frame(rest, self.config.max_frame_size);
                    let (kind, channel, body, used) = match split {
                        Ok(Some((frame, used))) => (frame.kind, frame.channel, frame.body, used),
                        Ok(None) => break,
                        Err(error) => {
                            self.framing_error(now, error);
                            return taken;
                        }
                    };
                    taken += used;
                    self.handle_frame(now, kind, channel, body);
                    if self.phase == Phase::Closed {
                        return taken;
                    }
                }
                Phase::SaslVerdict | Phase::Closed => break,
            }
        }
        taken
    }

    fn framing_error(&mut self, now: Instant, error: FrameError) {
        self.protocol_error(now, condition::FRAMING_ERROR, error.to_string());
    }

    fn decode_error(&mut self, now: Instant, what: &str, error: DecodeError) {
        self.protocol_error(
            now,
            condition::DECODE_ERROR,
            alloc::format!("{what}: {error}"),
        );
    }

    fn handle_frame(&mut self, now: Instant, kind: FrameKind, channel: u16, body: &[u8]) {
        match (self.phase, kind) {
            (Phase::SaslInit, FrameKind::Sasl) => self.handle_sasl(body),
            (Phase::SaslInit, FrameKind::Amqp) => self.finish(CloseReason::ProtocolError(
                "an AMQP frame before the SASL login".into(),
            )),
            (_, FrameKind::Sasl) => self.protocol_error(
                now,
                condition::FRAMING_ERROR,
                "a SASL frame after the SASL login".into(),
            ),
            (_, FrameKind::Amqp) if body.is_empty() => {} // a heartbeat
            (_, FrameKind::Amqp) => match Performative::read(body) {
                Ok((performative, _payload)) => {
                    self.handle_performative(now, channel, performative)
                }
                Err(error) => self.decode_error(now, "a performative", error),
            },
        }
    }

    fn handle_sasl(&mut self, body: &[u8]) {
        let init = match Sasl::read(body) {
            Ok(Sasl::Init {
                mechanism,
                initial_response,
                ..
            }) => (mechanism, initial_response),
            Ok(_) => {
                self.finish(CloseReason::ProtocolError(
                    "a SASL frame other than sasl-init".into(),
                ));
                return;
            }
            Err(error) => {
                self.finish(CloseReason::ProtocolError(alloc::format!(
                    "sasl-init: {error}"
                )));
                return;
            }
        };
        let (mechanism, response) = init;
        // PLAIN (RFC 4616): authzid NUL authcid NUL passwd.
        let plain = (mechanism == "PLAIN")
            .then(|| {
                let mut parts = response.unwrap_or_default().split(|&byte| byte == 0);
                let (_authzid, user, pass) = (parts.next()?, parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                Some((
                    core::str::from_utf8(user).ok()?.to_string(),
                    core::str::from_utf8(pass).ok()?.to_string(),
                ))
            })
            .flatten();
        match plain {
            Some((username, password)) => {
                self.phase = Phase::SaslVerdict;
                self.events.push_back(Event::Login { username, password });
            }
            None => {
                write_frame(&mut self.output, FrameKind::Sasl, 0, |e| {
                    Sasl::Outcome { code: 1 }.write(e)
                });
                self.finish(CloseReason::LoginRefused);
            }
        }
    }

    fn handle_performative(&mut self, now: Instant, channel: u16, performative: Performative<'_>) {
        if self.phase == Phase::Closing {
            // After this side's close only the client's close matters.
            if let Performative::Close(_) = performative {
                self.finish_after_close();
            }
            return;
        }
        match performative {
            Performative::Open(open) => self.handle_open(now, open),
            _ if self.phase != Phase::Opened => self.protocol_error(
                now,
                condition::NOT_ALLOWED,
                "a performative before the open".into(),
            ),
            Performative::Begin(begin) => self.handle_begin(now, channel, begin),
            Performative::Attach(attach) => self.handle_attach(now, attach),
            Performative::Flow(flow) => self.handle_flow(now, flow),
            Performative::Transfer(_) => self.protocol_error(
                now,
                condition::NOT_ALLOWED,
                "a transfer: consumers may only receive".into(),
            ),
            Performative::Disposition(disposition) => self.handle_disposition(now, disposition),
            Performative::Detach(detach) => self.handle_detach(now, detach),
            Performative::End(_) => {
                self.write_performative(Performative::End(None));
                self.session = None;
                self.link = None;
                self.close_with(now, None, CloseReason::LinkEndedByClient);
            }
            Performative::Close(error) => {
                self.write_performative(Performative::Close(None));
                let said = error.map(|error| match error.description {
                    Some(description) => alloc::format!("{}: {description}", error.condition),
                    None => error.condition.to_string(),
                });
                self.finish(CloseReason::ClosedByClient(said));
            }
        }
    }

    fn handle_open(&mut self, now: Instant, open: Open<'_>) {
        if self.phase != Phase::Open {
            self.protocol_error(now, condition::NOT_ALLOWED, "a second open".into());
            return;
        }
        self.remote_max_frame_size = open.max_frame_size.max(MIN_MAX_FRAME_SIZE);
        self.heartbeat_every = open
            .idle_time_out
            .filter(|&millis| millis > 0)
            .map(|millis| Duration::from_millis(u64::from(millis) / 2));
        let ours = Open {
            container_id: &self.config.container_id,
            hostname: None,
            max_frame_size: self.config.max_frame_size,
            channel_max: 0,
            idle_time_out: u32::try_from(self.config.idle_time_out.as_millis()).ok(),
        };
        write_frame(&mut self.output, FrameKind::Amqp, 0, |e| {
            Performative::Open(ours).write(e)
        });
        self.phase = Phase::Opened;
        self.disarm(Timer::Handshake);
        self.arm(Timer::Link, now + self.config.link_deadline);
        self.received(now);
        self.sent(now);
    }

    fn handle_begin(&mut self, now: Instant, channel: u16, begin: Begin) {
        let ours = |remote_channel| Begin {
            remote_channel: Some(remote_channel),
            next_outgoing_id: 0,
            incoming_window: u32::MAX >> 1,
            outgoing_window: u32::MAX >> 1,
            handle_max: u32::MAX,
        };
        if self.session.is_some() || begin.remote_channel.is_some() {
            self.protocol_error(
                now,
                condition::NOT_ALLOWED,
                "one session per connection".into(),
            );
            return;
        }
        self.write_performative(Performative::Begin(ours(channel)));
        self.session = Some(Session {
            next_outgoing_id: 0,
            remote_incoming_window: begin.incoming_window,
        });
        self.sent(now);
    }

    fn handle_attach(&mut self, now: Instant, attach: Attach<'_>) {
        if self.session.is_none() {
            self.protocol_error(
                now,
                condition::NOT_ALLOWED,
                "an attach outside a session".into(),
            );
            return;
        }
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        let refusal = if attach.role == Role::Sender {
            Some("consumers may only receive")
        } else if self.link.is_some() {
            Some("one receiver link per connection")
        } else {
            None
        };
        let mut ours = Attach {
            name: attach.name,
            handle,
            role: if attach.role == Role::Sender {
                Role::Receiver
            } else {
                Role::Sender
            },
            snd_settle_mode: 2,
            rcv_settle_mode: attach.rcv_settle_mode,
            source: attach.source,
            target: attach.target,
            initial_delivery_count: Some(0),
            max_message_size: None,
        };
        if let Some(why) = refusal {
            // Part 2, §2.6.3: an attach with no terminus on this side, then a detach with why.
            if attach.role == Role::Receiver {
                ours.source = None;
            } else {
                ours.target = None;
                ours.initial_delivery_count = None;
            }
            self.write_performative(Performative::Attach(ours));
            self.write_performative(Performative::Detach(Detach {
                handle,
                closed: true,
                error: Some(ErrorInfo {
                    condition: condition::NOT_ALLOWED,
                    description: Some(why),
                }),
            }));
            self.refused_handles.push(attach.handle);
            self.sent(now);
            if attach.role == Role::Sender && self.link.is_none() {
                // A connection whose first link sends is no consumer at all.
                self.close_with(now, None, CloseReason::ProtocolError(why.into()));
            }
            return;
        }
        let source = attach
            .source
            .and_then(|Terminus { address }| address)
            .map(str::to_string);
        self.write_performative(Performative::Attach(ours));
        self.link = Some(Link {
            handle,
            remote_handle: attach.handle,
            delivery_count: 0,
            credit: 0,
            next_delivery_id: 0,
            unsettled: BTreeMap::new(),
            drain: false,
        });
        self.disarm(Timer::Link);
        self.sent(now);
        self.events.push_back(Event::LinkAttached { source });
    }

    fn handle_flow(&mut self, now: Instant, flow: Flow) {
        let before = self.sendable();
        let Some(session) = &mut self.session else {
            self.protocol_error(
                now,
                condition::NOT_ALLOWED,
                "a flow outside a session".into(),
            );
            return;
        };
        // Part 2, §2.5.6: the window the client gives is counted from the next transfer id it
        // expects (this side's first, 0, when it has not seen one).
        let next_incoming = flow.next_incoming_id.unwrap_or(0);
        session.remote_incoming_window = next_incoming
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(session.next_outgoing_id);
        if session.remote_incoming_window > flow.incoming_window {
            // A next-incoming-id ahead of what was sent: take the window as given.
            session.remote_incoming_window = flow.incoming_window;
        }
        let mut echo = flow.echo;
        if let (Some(handle), Some(link)) = (flow.handle, &mut self.link) {
            if handle == link.remote_handle {
                // Part 2, §2.6.7: credit = the receiver's delivery-count + link-credit - ours.
                let theirs = flow.delivery_count.unwrap_or(0);
                let credit = flow.link_credit.unwrap_or(0);
                let limit = theirs
                    .wrapping_add(credit)
                    .wrapping_sub(link.delivery_count);
                link.credit = if limit > credit { 0 } else { limit };
                link.drain = flow.drain;
            } else if !self.refused_handles.contains(&handle) {
                self.protocol_error(
                    now,
                    condition::NOT_ALLOWED,
                    "a flow for an unknown link".into(),
                );
                return;
            } else {
                echo = false;
            }
        }
        if echo {
            let (Some(session), Some(link)) = (&self.session, &self.link) else {
                return;
            };
            let flow = link_flow(session, link);
            self.write_performative(Performative::Flow(flow));
            self.sent(now);
        }
        if self.sendable() > before {
            self.events.push_back(Event::Credit);
        }
    }

    fn handle_disposition(&mut self, now: Instant, disposition: Disposition) {
        if disposition.role != Role::Receiver {
            // A sender's disposition: this side sends no deliveries it could be about.
            return;
        }
        let Some(link) = &mut self.link else {
            return;
        };
        let outcome = match disposition.state {
            Some(DeliveryState::Received) | None if !disposition.settled => return,
            Some(DeliveryState::Received) | None => false,
            Some(state) => state == DeliveryState::Accepted,
        };
        let first = disposition.first;
        let last = disposition.last.unwrap_or(first);
        // Delivery ids are serial numbers: a range may wrap past 2^32 - 1.
        let answered: Vec<(u32, u64)> = if first <= last {
            link.unsettled
                .range(first..=last)
                .map(|(&id, &tag)| (id, tag))
                .collect()
        } else {
            link.unsettled
                .range(first..)
                .chain(link.unsettled.range(..=last))
                .map(|(&id, &tag)| (id, tag))
                .collect()
        };
        for (id, tag) in &answered {
            link.unsettled.remove(id);
            self.events.push_back(Event::Answered {
                tag: *tag,
                accepted: outcome,
            });
        }
        if !disposition.settled && !answered.is_empty() {
            // The client waits for this side to settle (rcv-settle-mode second): settle.
            self.write_performative(Performative::Disposition(Disposition {
                role: Role::Sender,
                first,
                last: Some(last),
                settled: true,
                state: disposition.state,
            }));
            self.sent(now);
        }
    }

    fn handle_detach(&mut self, now: Instant, detach: Detach<'_>) {
        if self.refused_handles.contains(&detach.handle) {
            // The client's answer to a refusal: nothing more to say.
            return;
        }
        match &self.link {
            Some(link) if link.remote_handle == detach.handle => {
                let handle = link.handle;
                self.write_performative(Performative::Detach(Detach {
                    handle,
                    closed: true,
                    error: None,
                }));
                self.link = None;
                self.close_with(now, None, CloseReason::LinkEndedByClient);
            }
            _ => self.protocol_error(
                now,
                condition::NOT_ALLOWED,
                "a detach of an unknown link".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Value, decode};
    use crate::message::PropertyValue;
    use alloc::vec;

    const T0: Instant = Instant::ZERO;

    fn at(secs: u64) -> Instant {
        Instant::from_millis(secs * 1000)
    }

    /// What a client writes: frames in order.
    fn amqp(performative: Performative<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, FrameKind::Amqp, 0, |e| performative.write(e));
        out
    }

    fn sasl_init(user: &str, password: &str) -> Vec<u8> {
        let mut response = vec![0];
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        let mut out = Vec::new();
        write_frame(&mut out, FrameKind::Sasl, 0, |e| {
            Sasl::Init {
                mechanism: "PLAIN",
                initial_response: Some(&response),
                hostname: None,
            }
            .write(e)
        });
        out
    }

    fn open(idle_ms: Option<u32>, max_frame_size: u32) -> Vec<u8> {
        amqp(Performative::Open(Open {
            container_id: "client",
            hostname: None,
            max_frame_size,
            channel_max: 1,
            idle_time_out: idle_ms,
        }))
    }

    fn begin() -> Vec<u8> {
        amqp(Performative::Begin(Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 1000,
            outgoing_window: 1000,
            handle_max: 10,
        }))
    }

    fn attach(handle: u32, role: Role) -> Vec<u8> {
        amqp(Performative::Attach(Attach {
            name: "consumer",
            handle,
            role,
            snd_settle_mode: 0,
            rcv_settle_mode: 0,
            source: Some(Terminus {
                address: Some("default"),
            }),
            target: Some(Terminus::default()),
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
        }))
    }

    fn credit(handle: u32, delivery_count: u32, credit: u32) -> Vec<u8> {
        amqp(Performative::Flow(Flow {
            next_incoming_id: Some(0),
            incoming_window: 1000,
            next_outgoing_id: 0,
            outgoing_window: 1000,
            handle: Some(handle),
            delivery_count: Some(delivery_count),
            link_credit: Some(credit),
            available: None,
            drain: false,
            echo: false,
        }))
    }

    fn disposition(first: u32, last: u32, settled: bool, state: DeliveryState) -> Vec<u8> {
        amqp(Performative::Disposition(Disposition {
            role: Role::Receiver,
            first,
            last: Some(last),
            settled,
            state: Some(state),
        }))
    }

    /// The server's output so far, taken: protocol headers as `Header`, frames read back.
    #[derive(Debug, PartialEq)]
    enum Out {
        Header([u8; 8]),
        Sasl(String),
        Amqp(String, Vec<u8>),
        Heartbeat,
    }

    fn take(server: &mut ServerConnection) -> Vec<Out> {
        let bytes = server.output().to_vec();
        server.consume_output(bytes.len());
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            if rest.starts_with(b"AMQP") {
                out.push(Out::Header(rest[..8].try_into().unwrap()));
                rest = &rest[8..];
                continue;
            }
            let (frame, used) = split_frame(rest, u32::MAX).unwrap().unwrap();
            out.push(match frame.kind {
                FrameKind::Sasl => Out::Sasl(alloc::format!("{:?}", Sasl::read(frame.body))),
                FrameKind::Amqp if frame.body.is_empty() => Out::Heartbeat,
                FrameKind::Amqp => {
                    let (performative, payload) = Performative::read(frame.body).unwrap();
                    Out::Amqp(alloc::format!("{performative:?}"), payload.to_vec())
                }
            });
            rest = &rest[used..];
        }
        out
    }

    fn events(server: &mut ServerConnection) -> Vec<Event> {
        core::iter::from_fn(|| server.poll_event()).collect()
    }

    /// A server the client "u" logged in to, then sent the AMQP header and `frames`.
    fn logged_in(frames: &[Vec<u8>]) -> ServerConnection {
        let mut server = ServerConnection::new(ServerConfig::default(), T0);
        server.handle_input(T0, &SASL_HEADER);
        server.handle_input(T0, &sasl_init("u", "p"));
        server.login_verdict(T0, true);
        let mut input = AMQP_HEADER.to_vec();
        for frame in frames {
            input.extend_from_slice(frame);
        }
        server.handle_input(T0, &input);
        server
    }

    /// A server with a consumer logged in, its link attached, and `credit` given.
    fn attached(credit_given: u32) -> ServerConnection {
        let mut server = ServerConnection::new(ServerConfig::default(), T0);
        server.handle_input(T0, &SASL_HEADER);
        server.handle_input(T0, &sasl_init("app", "secret"));
        assert_eq!(
            events(&mut server),
            [Event::Login {
                username: "app".into(),
                password: "secret".into()
            }]
        );
        server.login_verdict(T0, true);
        let mut rest = AMQP_HEADER.to_vec();
        rest.extend(open(Some(60_000), 65_536));
        rest.extend(begin());
        rest.extend(attach(0, Role::Receiver));
        rest.extend(credit(0, 0, credit_given));
        server.handle_input(T0, &rest);
        let mut seen = events(&mut server);
        seen.retain(|event| *event != Event::Credit);
        assert_eq!(
            seen,
            [Event::LinkAttached {
                source: Some("default".into())
            }]
        );
        take(&mut server);
        server
    }

    fn message(body: &[u8]) -> Message<'_> {
        Message {
            message_id: Some("7"),
            application_properties: &[
                ("topic", PropertyValue::String("/pk/dn/user/update")),
                ("generateTime", PropertyValue::Long(1_700_000_000_000)),
            ],
            body,
        }
    }

    #[test]
    fn a_consumer_logs_in_attaches_receives_within_its_credit_and_accepts() {
        let mut server = ServerConnection::new(ServerConfig::default(), T0);
        server.handle_input(T0, &SASL_HEADER);
        // The SASL header back, and PLAIN as the only mechanism offered.
        let mut offer = SASL_HEADER.to_vec();
        write_frame(&mut offer, FrameKind::Sasl, 0, |e| {
            Sasl::Mechanisms(&["PLAIN"]).write(e)
        });
        assert_eq!(server.output(), offer);
        take(&mut server);
        // PLAIN, in two reads split inside the frame.
        let init = sasl_init("client|authMode=aksign|", "c2lnbg==");
        server.handle_input(T0, &init[..5]);
        assert!(events(&mut server).is_empty());
        server.handle_input(T0, &init[5..]);
        assert_eq!(
            events(&mut server),
            [Event::Login {
                username: "client|authMode=aksign|".into(),
                password: "c2lnbg==".into()
            }]
        );
        // The client's AMQP header and open, pipelined before the verdict, wait for it.
        let mut pipelined = AMQP_HEADER.to_vec();
        pipelined.extend(open(Some(60_000), 65_536));
        server.handle_input(T0, &pipelined);
        assert!(take(&mut server).is_empty());
        server.login_verdict(T0, true);
        let out = take(&mut server);
        assert_eq!(out[0], Out::Sasl("Ok(Outcome { code: 0 })".into()));
        assert_eq!(out[1], Out::Header(AMQP_HEADER));
        assert!(
            matches!(&out[2], Out::Amqp(text, _) if text.starts_with("Open(Open { container_id: \"aliot\""))
        );
        server.handle_input(T0, &begin());
        server.handle_input(T0, &attach(0, Role::Receiver));
        let out = take(&mut server);
        assert!(
            matches!(&out[0], Out::Amqp(text, _) if text.contains("Begin") && text.contains("remote_channel: Some(0)"))
        );
        assert!(
            matches!(&out[1], Out::Amqp(text, _) if text.contains("role: Sender") && text.contains("\"default\""))
        );
        assert_eq!(
            events(&mut server),
            [Event::LinkAttached {
                source: Some("default".into())
            }]
        );
        assert_eq!(server.sendable(), 0);
        assert_eq!(server.send(T0, 1, &message(b"x")), Err(SendError::NoCredit));

        server.handle_input(at(1), &credit(0, 0, 2));
        assert_eq!(events(&mut server), [Event::Credit]);
        assert_eq!(server.sendable(), 2);
        server.send(at(1), 100, &message(b"first")).unwrap();
        server.send(at(1), 101, &message(b"second")).unwrap();
        assert_eq!(
            server.send(at(1), 102, &message(b"third")),
            Err(SendError::NoCredit)
        );
        let out = take(&mut server);
        assert_eq!(out.len(), 2);
        let Out::Amqp(transfer, payload) = &out[1] else {
            panic!("{out:?}")
        };
        assert!(
            transfer.contains("delivery_id: Some(1)") && transfer.contains("settled: Some(false)")
        );
        // The payload is the message's three sections; the last is the body.
        let (_, rest) = decode(payload).unwrap();
        let (Value::Described(app), rest) = decode(rest).unwrap() else {
            panic!()
        };
        assert!(matches!(app.value().unwrap(), Value::Map(map) if map.count() == 4));
        let (Value::Described(data), _) = decode(rest).unwrap() else {
            panic!()
        };
        assert_eq!(data.value().unwrap(), Value::Binary(b"second"));

        // Both accepted in one disposition.
        server.handle_input(at(2), &disposition(0, 1, true, DeliveryState::Accepted));
        assert_eq!(
            events(&mut server),
            [
                Event::Answered {
                    tag: 100,
                    accepted: true
                },
                Event::Answered {
                    tag: 101,
                    accepted: true
                }
            ]
        );
        assert_eq!(server.unsettled(), 0);
        // More credit, counted from the client's delivery-count.
        server.handle_input(at(2), &credit(0, 2, 1));
        assert_eq!(events(&mut server), [Event::Credit]);
        assert_eq!(server.sendable(), 1);

        server.handle_input(at(3), &amqp(Performative::Close(None)));
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::ClosedByClient(None))]
        );
        assert!(matches!(&take(&mut server)[..], [Out::Amqp(text, _)] if text == "Close(None)"));
        assert!(server.is_closed());
    }

    #[test]
    fn a_refused_login_gets_the_auth_outcome_and_the_end() {
        let mut server = ServerConnection::new(ServerConfig::default(), T0);
        let mut input = SASL_HEADER.to_vec();
        input.extend(sasl_init("app", "wrong"));
        server.handle_input(T0, &input);
        assert!(matches!(events(&mut server)[..], [Event::Login { .. }]));
        server.login_verdict(T0, false);
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::LoginRefused)]
        );
        assert_eq!(
            take(&mut server).last(),
            Some(&Out::Sasl("Ok(Outcome { code: 1 })".into()))
        );
        assert_eq!(server.poll_timeout(), None);
        // A mechanism other than PLAIN is refused at once.
        let mut server = ServerConnection::new(ServerConfig::default(), T0);
        let mut input = SASL_HEADER.to_vec();
        write_frame(&mut input, FrameKind::Sasl, 0, |e| {
            Sasl::Init {
                mechanism: "ANONYMOUS",
                initial_response: None,
                hostname: None,
            }
            .write(e)
        });
        server.handle_input(T0, &input);
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::LoginRefused)]
        );
    }

    #[test]
    fn a_client_without_sasl_hears_the_sasl_header_and_the_end() {
        let mut server = ServerConnection::new(ServerConfig::default(), T0);
        server.handle_input(T0, &AMQP_HEADER);
        assert!(matches!(
            events(&mut server)[..],
            [Event::Closed(CloseReason::ProtocolError(_))]
        ));
        assert_eq!(take(&mut server), [Out::Header(SASL_HEADER)]);
    }

    #[test]
    fn deadlines_handshake_link_idle_and_heartbeat() {
        // Nothing at all: the handshake deadline ends it, without a close (there was no open).
        let mut server = ServerConnection::new(ServerConfig::default(), T0);
        assert_eq!(server.poll_timeout(), Some(at(15)));
        server.handle_timeout(at(14));
        assert!(events(&mut server).is_empty());
        server.handle_timeout(at(15));
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::HandshakeTimedOut)]
        );

        // Opened at 0 with a client idle time-out of 10 s, and no link by 15 s.
        let mut server = logged_in(&[open(Some(10_000), 65_536)]);
        events(&mut server);
        take(&mut server);
        // A heartbeat every half of the client's idle time-out while there is nothing else.
        assert_eq!(server.poll_timeout(), Some(at(5)));
        server.handle_timeout(at(5));
        assert_eq!(take(&mut server), [Out::Heartbeat]);
        server.handle_timeout(at(10));
        assert_eq!(take(&mut server), [Out::Heartbeat]);
        server.handle_input(at(12), &[0, 0, 0, 8, 2, 0, 0, 0]);
        server.handle_timeout(at(15));
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::NoLinkInTime)]
        );
        assert!(
            matches!(&take(&mut server)[..], [.., Out::Amqp(text, _)] if text.contains("amqp:not-allowed"))
        );
        // The client's close is waited for a second, then it is over either way.
        assert_eq!(server.poll_timeout(), Some(at(16)));
        server.handle_timeout(at(16));
        assert!(server.is_closed());

        // Attached, then silent past the idle time-out this side declared.
        let mut server = attached(1);
        server.handle_timeout(at(299));
        assert!(events(&mut server).is_empty());
        server.handle_timeout(at(300));
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::IdleTimedOut)]
        );
        assert!(
            matches!(&take(&mut server)[..], [.., Out::Amqp(text, _)] if text.contains("amqp:resource-limit-exceeded"))
        );
        // Its close, in time, ends it.
        server.handle_input(at(300), &amqp(Performative::Close(None)));
        assert!(server.is_closed());
        assert!(events(&mut server).is_empty());
    }

    #[test]
    fn a_second_receiver_is_refused_and_the_first_goes_on() {
        let mut server = attached(5);
        server.handle_input(T0, &attach(1, Role::Receiver));
        let out = take(&mut server);
        assert!(
            matches!(&out[0], Out::Amqp(text, _) if text.contains("handle: 1") && text.contains("source: None"))
        );
        assert!(
            matches!(&out[1], Out::Amqp(text, _) if text.contains("Detach") && text.contains("one receiver link per connection"))
        );
        // Its flow and its detach are ignored; the first link still sends.
        server.handle_input(T0, &credit(1, 0, 10));
        server.handle_input(
            T0,
            &amqp(Performative::Detach(Detach {
                handle: 1,
                closed: true,
                error: None,
            })),
        );
        assert!(events(&mut server).is_empty());
        server.send(T0, 1, &message(b"still")).unwrap();
        assert!(!server.is_closed());
    }

    #[test]
    fn a_sender_link_is_refused_with_the_connection() {
        let mut server = attached(0);
        let mut fresh = logged_in(&[open(None, 65_536), begin(), attach(0, Role::Sender)]);
        let seen = events(&mut fresh);
        assert!(
            matches!(&seen[..], [Event::Login { .. }, Event::Closed(CloseReason::ProtocolError(why))] if why == "consumers may only receive"),
            "{seen:?}"
        );
        // And a transfer from an attached consumer is no consumer's either.
        server.handle_input(
            T0,
            &amqp(Performative::Transfer(Transfer {
                handle: 0,
                delivery_id: Some(0),
                delivery_tag: Some(&[0]),
                message_format: Some(0),
                settled: Some(true),
                more: false,
            })),
        );
        assert!(matches!(
            &events(&mut server)[..],
            [Event::Closed(CloseReason::ProtocolError(_))]
        ));
    }

    #[test]
    fn released_and_unsettled_answers() {
        let mut server = attached(3);
        for tag in 0..3 {
            server.send(T0, tag, &message(b"m")).unwrap();
        }
        take(&mut server);
        // Released: to be sent elsewhere.
        server.handle_input(T0, &disposition(0, 0, true, DeliveryState::Released));
        assert_eq!(
            events(&mut server),
            [Event::Answered {
                tag: 0,
                accepted: false
            }]
        );
        // Accepted but not settled (rcv-settle-mode second): this side settles it.
        server.handle_input(T0, &disposition(1, 1, false, DeliveryState::Accepted));
        assert_eq!(
            events(&mut server),
            [Event::Answered {
                tag: 1,
                accepted: true
            }]
        );
        assert!(
            matches!(&take(&mut server)[..], [Out::Amqp(text, _)] if text.contains("role: Sender") && text.contains("settled: true"))
        );
        // A state that is not an outcome, unsettled: nothing yet. Answers for unknown or
        // already answered deliveries: nothing.
        server.handle_input(T0, &disposition(2, 2, false, DeliveryState::Received));
        server.handle_input(T0, &disposition(0, 1, true, DeliveryState::Accepted));
        assert!(events(&mut server).is_empty());
        assert_eq!(server.unsettled(), 1);
        // The client ends the session: the link is gone, and so is the connection.
        server.handle_input(T0, &amqp(Performative::End(None)));
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::LinkEndedByClient)]
        );
    }

    #[test]
    fn a_message_larger_than_the_clients_frames_goes_in_several() {
        let mut server = logged_in(&[
            open(None, 512),
            begin(),
            attach(0, Role::Receiver),
            credit(0, 0, 1),
        ]);
        take(&mut server);
        let body = vec![7u8; 2000];
        server.send(T0, 9, &message(&body)).unwrap();
        let out = take(&mut server);
        assert!(out.len() >= 5, "{}", out.len());
        let mut payload = Vec::new();
        for (index, frame) in out.iter().enumerate() {
            let Out::Amqp(text, part) = frame else {
                panic!()
            };
            assert_eq!(text.contains("more: true"), index + 1 < out.len(), "{text}");
            assert_eq!(text.contains("delivery_id: Some(0)"), index == 0);
            payload.extend_from_slice(part);
        }
        let mut expected = Vec::new();
        message(&body).write(&mut Encoder::new(&mut expected));
        assert_eq!(payload, expected);
        // The session's window counted every frame.
        let mut server = attached(10);
        let mut window = Vec::new();
        window.extend(amqp(Performative::Flow(Flow {
            next_incoming_id: Some(0),
            incoming_window: 1,
            next_outgoing_id: 0,
            outgoing_window: 10,
            handle: None,
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo: false,
        })));
        server.handle_input(T0, &window);
        assert_eq!(server.sendable(), 1);
        server.send(T0, 1, &message(b"one")).unwrap();
        assert_eq!(
            server.send(T0, 2, &message(b"two")),
            Err(SendError::NoCredit)
        );
    }

    #[test]
    fn a_drain_request_uses_up_the_credit_when_there_is_nothing_to_send() {
        let mut server = attached(0);
        server.handle_input(
            T0,
            &amqp(Performative::Flow(Flow {
                next_incoming_id: Some(0),
                incoming_window: 100,
                next_outgoing_id: 0,
                outgoing_window: 100,
                handle: Some(0),
                delivery_count: Some(0),
                link_credit: Some(8),
                available: None,
                drain: true,
                echo: false,
            })),
        );
        assert_eq!(server.sendable(), 8);
        server.send(T0, 1, &message(b"one")).unwrap();
        take(&mut server);
        server.nothing_to_send(T0);
        assert_eq!(server.sendable(), 0);
        let out = take(&mut server);
        assert!(
            matches!(&out[..], [Out::Amqp(text, _)] if text.contains("delivery_count: Some(8)") && text.contains("link_credit: Some(0)") && text.contains("drain: true")),
            "{out:?}"
        );
    }

    #[test]
    fn broken_input_closes_with_the_reason() {
        for garbage in [
            vec![0, 0, 0, 9, 2, 0, 0, 0, 0x99],       // an unknown constructor
            vec![0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0], // a frame over 64 KiB
            vec![0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x75, 0x45], // a data section, no performative
        ] {
            let mut server = attached(1);
            server.handle_input(T0, &garbage);
            assert!(
                matches!(
                    &events(&mut server)[..],
                    [Event::Closed(CloseReason::ProtocolError(_))]
                ),
                "{garbage:?}"
            );
            assert!(
                matches!(&take(&mut server)[..], [Out::Amqp(text, _)] if text.starts_with("Close(Some"))
            );
            // Whatever comes after is ignored.
            server.handle_input(T0, &[1, 2, 3]);
            assert!(events(&mut server).is_empty());
        }
    }

    #[test]
    fn the_adapter_refuses_the_link_of_an_unknown_group() {
        let mut server = attached(1);
        server.refuse_link(T0, condition::NOT_FOUND, "no consumer group NOPE");
        let out = take(&mut server);
        assert!(
            matches!(&out[0], Out::Amqp(text, _) if text.contains("Detach") && text.contains("amqp:not-found"))
        );
        assert!(matches!(&out[1], Out::Amqp(text, _) if text.starts_with("Close")));
        assert_eq!(
            events(&mut server),
            [Event::Closed(CloseReason::ClosedHere)]
        );
        assert_eq!(server.send(T0, 1, &message(b"x")), Err(SendError::NoLink));
        server.handle_eof();
        assert!(server.is_closed());
    }
}
