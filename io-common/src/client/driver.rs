//! The driver task: the one owner of a client's [`Connection`], its socket and its timers.
//!
//! It waits on whichever comes first of: bytes from the socket, the socket accepting pending
//! bytes, the connection's next deadline, a command from the [`Client`](super::Client), room in
//! the message channel, the end of the reconnect delay, or the end of a dial. After each, it
//! drains the connection (bytes to write, events) and settles the waiting callers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use std::time::Instant as RuntimeInstant;

use aliot_auth::DeviceIdentity;
use aliot_core::Instant;
use aliot_core::client::{Backoff, Connection, DisconnectReason, Event, PublishToken, Qos0Token};
use aliot_core::codec::{PacketId, QoS, SubAckReturnCode};
use aliot_services::{DeviceDownlink, ReplyKind, Uplink};
use aliot_topic::{MessageId, TopicFilter, TopicLimits, TopicName};
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio_sync::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use super::error::{ConnectError, RequestError};
use super::options::Login;
use super::things::{Handled, ThingSlot};
use super::transport::{Dialer, Dialing, Io};
use super::{ConnectionEvent, IncomingMessage, RrpcRequest};
use crate::runtime::{Runtime, far_future, timeout_at};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Commands taken from the channel in one go, before the connection is drained again.
const COMMAND_BATCH: usize = 64;

/// How long the last bytes (DISCONNECT) may take to go out when the client stops.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// An RRPC answer being computed by an async handler.
pub(crate) type RrpcFuture = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// What answers RRPC requests.
pub(crate) enum RrpcHandler {
    /// Called in the driver task; the answer goes out at once.
    Sync(Box<dyn FnMut(&RrpcRequest) -> Bytes + Send>),
    /// Called in the driver task; the future it returns runs in a task of its own.
    Async(Arc<dyn Fn(RrpcRequest) -> RrpcFuture + Send + Sync>),
}

/// The RRPC handler, shared by the client (which sets it) and the driver (which calls it).
pub(crate) type RrpcSlot = Arc<Mutex<Option<RrpcHandler>>>;

/// A request from the [`Client`](super::Client).
pub(crate) enum Command {
    Publish {
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        reply: Reply<Option<PacketId>>,
    },
    Subscribe {
        filters: Vec<(TopicFilter, QoS)>,
        reply: Reply<Vec<SubAckReturnCode>>,
    },
    Unsubscribe {
        filters: Vec<TopicFilter>,
        reply: Reply<()>,
    },
    /// The answer of an async RRPC handler.
    RespondRrpc {
        message_id: MessageId,
        payload: Bytes,
    },
    /// A service request: published, then answered by the downlink `expects` names (or, when
    /// it names none, by nothing: the caller's timeout ends the wait).
    Thing {
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        expects: Option<(ReplyKind, String)>,
        reply: Reply<DeviceDownlink>,
    },
    /// Disconnect cleanly and stop; `done` is dropped once the driver has finished.
    Disconnect { done: oneshot::Sender<()> },
}

/// A caller waiting for an acknowledgement.
enum Waiter {
    Publish(Reply<Option<PacketId>>),
    Subscribe(Reply<Vec<SubAckReturnCode>>),
    Unsubscribe(Reply<()>),
}

/// The transport, as far as the driver is concerned.
enum Link {
    /// No transport; dial again at `until`.
    Waiting { until: RuntimeInstant },
    /// TCP connect and TLS handshake under way.
    Dialing(Dialing),
    /// A stream to the broker.
    Up(Up),
}

/// An open stream.
struct Up {
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
    /// Bytes taken from the connection and not yet written.
    write_buf: BytesMut,
    /// Bytes were added since the last completed write and flush.
    unflushed: bool,
    /// The broker accepted the CONNECT on this stream.
    connected: bool,
}

impl Up {
    fn new(stream: Box<dyn Io>) -> Self {
        let (reader, writer) = stream.split();
        Up {
            reader,
            writer,
            write_buf: BytesMut::new(),
            unflushed: false,
            connected: false,
        }
    }
}

/// What woke the driver.
enum Wake {
    Read(io::Result<usize>),
    Written(io::Result<()>),
    Timer,
    Command(Option<Command>),
    Delivered,
    Retry,
    Dialed(Result<Box<dyn Io>, ConnectError>),
}

/// Why the driver stops.
enum Stop {
    /// Every client handle is gone.
    Dropped,
    /// [`Command::Disconnect`].
    Requested(oneshot::Sender<()>),
    /// The first connection failed; the caller of `connect` has the error.
    FirstConnectFailed,
}

/// The channels the driver serves.
pub(crate) struct Channels {
    pub(crate) commands: mpsc::Receiver<Command>,
    /// For async RRPC handlers to hand their answer back without keeping the driver alive.
    pub(crate) weak_commands: mpsc::WeakSender<Command>,
    pub(crate) messages: mpsc::Sender<IncomingMessage>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    pub(crate) rrpc: RrpcSlot,
    /// The handlers of the platform's calls and pushes.
    pub(crate) things: ThingSlot,
    /// Told how the first connection went.
    pub(crate) first_connect: oneshot::Sender<Result<(), ConnectError>>,
}

/// One client's task. See the [module docs](self).
pub(crate) struct Driver<R: Runtime> {
    runtime: R,
    conn: Connection,
    dialer: Arc<Dialer<R>>,
    login: Login,
    /// Whether the device's client id announces `_ss=1` and `ext=1`.
    announce: bool,
    /// The device the login is, whose downlinks are classified.
    identity: Option<DeviceIdentity>,
    backoff: Backoff,
    started: RuntimeInstant,
    commands: mpsc::Receiver<Command>,
    weak_commands: mpsc::WeakSender<Command>,
    messages: mpsc::Sender<IncomingMessage>,
    events: broadcast::Sender<ConnectionEvent>,
    rrpc: RrpcSlot,
    things: ThingSlot,
    /// Service requests waiting for their reply: its kind and id, and the caller.
    pending_things: VecDeque<(ReplyKind, String, Reply<DeviceDownlink>)>,
    /// `Some` until the first connection is made (or has failed).
    first_connect: Option<oneshot::Sender<Result<(), ConnectError>>>,
    read_buf: Box<[u8]>,
    /// The connection's deadline timer, kept across waits and moved only when the deadline
    /// changes (a timer entry per wait would cost more than the rest of a publish).
    timer: R::Timer,
    /// Where `timer` is set, when the connection has a deadline.
    timer_at: Option<RuntimeInstant>,
    /// Callers waiting for a PUBACK, SUBACK or UNSUBACK, by packet id.
    acks: HashMap<PacketId, Waiter>,
    /// Callers of QoS 0 publishes the connection has not handed out yet
    /// ([`Event::PublishSent`]), by token.
    qos0_unsent: HashMap<Qos0Token, Reply<Option<PacketId>>>,
    /// QoS 0 publishes handed out for writing, waiting for the write to complete.
    qos0_unwritten: Vec<Reply<Option<PacketId>>>,
    /// Messages taken from the connection that the message channel had no room for yet.
    undelivered: VecDeque<IncomingMessage>,
    /// Failed connection attempts since the last success; the next delay is the backoff's
    /// for this attempt number.
    failures: u32,
    stop: Option<Stop>,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        runtime: R,
        conn: Connection,
        dialer: Arc<Dialer<R>>,
        login: Login,
        announce: bool,
        backoff: Backoff,
        channels: Channels,
    ) -> Self {
        Driver {
            timer: runtime.timer(far_future()),
            runtime,
            conn,
            dialer,
            identity: login.identity().cloned(),
            login,
            announce,
            backoff,
            started: RuntimeInstant::now(),
            commands: channels.commands,
            weak_commands: channels.weak_commands,
            messages: channels.messages,
            events: channels.events,
            rrpc: channels.rrpc,
            things: channels.things,
            pending_things: VecDeque::new(),
            first_connect: Some(channels.first_connect),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            timer_at: None,
            acks: HashMap::new(),
            qos0_unsent: HashMap::new(),
            qos0_unwritten: Vec::new(),
            undelivered: VecDeque::new(),
            failures: 0,
            stop: None,
        }
    }

    /// Runs until every client handle is dropped, the client disconnects, or the first
    /// connection fails.
    pub(crate) async fn run(mut self) {
        let mut link = Link::Dialing(self.dialer.dial());
        loop {
            let wake = self.wait(&mut link).await;
            self.handle_wake(wake, &mut link);
            self.pump(&mut link);
            if let Some(stop) = self.stop.take() {
                self.finish(link, stop).await;
                return;
            }
        }
    }

    /// The connection's clock: milliseconds since the driver started.
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The connection's next deadline on the runtime's clock.
    fn deadline(&self) -> Option<RuntimeInstant> {
        self.conn
            .poll_timeout()
            .map(|at| self.started + Duration::from_millis(at.as_millis()))
    }

    async fn wait(&mut self, link: &mut Link) -> Wake {
        let deliver = !self.undelivered.is_empty();
        let deadline = self.deadline();
        match link {
            Link::Waiting { until } => tokio_sync::select! {
                _ = self.runtime.timer(*until) => Wake::Retry,
                command = self.commands.recv() => Wake::Command(command),
                permit = self.messages.reserve(), if deliver => {
                    deliver_one(permit, &mut self.undelivered);
                    Wake::Delivered
                }
            },
            Link::Dialing(dialing) => tokio_sync::select! {
                dialed = dialing.as_mut() => Wake::Dialed(dialed),
                command = self.commands.recv() => Wake::Command(command),
                permit = self.messages.reserve(), if deliver => {
                    deliver_one(permit, &mut self.undelivered);
                    Wake::Delivered
                }
            },
            Link::Up(up) => {
                if deadline != self.timer_at {
                    if let Some(at) = deadline {
                        self.runtime.reset_timer(&mut self.timer, at);
                    }
                    self.timer_at = deadline;
                }
                let timer_armed = self.timer_at.is_some();
                let Up {
                    reader,
                    writer,
                    write_buf,
                    unflushed,
                    ..
                } = up;
                let writing = *unflushed;
                // While messages wait for room, read nothing more: the broker's window then
                // holds back further messages, and TCP the rest.
                let reading = !deliver;
                tokio_sync::select! {
                    read = reader.read(&mut self.read_buf[..]), if reading => Wake::Read(read),
                    written = write_out(writer, write_buf), if writing => Wake::Written(written),
                    _ = &mut self.timer, if timer_armed => Wake::Timer,
                    command = self.commands.recv() => Wake::Command(command),
                    permit = self.messages.reserve(), if deliver => {
                        deliver_one(permit, &mut self.undelivered);
                        Wake::Delivered
                    }
                }
            }
        }
    }

    fn handle_wake(&mut self, wake: Wake, link: &mut Link) {
        let now = self.now();
        match wake {
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) | Wake::Written(Err(_)) => {
                self.conn.handle_transport_closed(now);
            }
            Wake::Read(Ok(len)) => {
                let bytes = self.read_buf.get(..len).unwrap_or_default();
                self.conn.handle_input(now, bytes);
            }
            Wake::Written(Ok(())) => {
                if let Link::Up(up) = link {
                    up.unflushed = false;
                }
                for reply in self.qos0_unwritten.drain(..) {
                    let _ = reply.send(Ok(None));
                }
            }
            Wake::Timer => {
                // Set again before the next wait, whatever the deadline is then.
                self.timer_at = None;
                self.conn.handle_timeout(now);
            }
            Wake::Command(Some(command)) => {
                self.handle_command(command);
                // Commands that queued up meanwhile go in the same round.
                for _ in 0..COMMAND_BATCH {
                    match self.commands.try_recv() {
                        Ok(command) => self.handle_command(command),
                        Err(_) => break,
                    }
                }
            }
            Wake::Command(None) => self.stop = Some(Stop::Dropped),
            Wake::Delivered => {}
            Wake::Retry => *link = Link::Dialing(self.dialer.dial()),
            Wake::Dialed(Ok(stream)) => match self
                .login
                .credentials_now(self.dialer.is_tls(), self.announce)
            {
                Ok(credentials) => {
                    self.conn.set_credentials(credentials);
                    *link = Link::Up(Up::new(stream));
                    self.conn.connect(now);
                }
                Err(error) => self.attempt_failed(error, link),
            },
            Wake::Dialed(Err(error)) => self.attempt_failed(error, link),
        }
    }

    fn handle_command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Publish {
                topic,
                payload,
                qos,
                reply,
            } => match self.conn.publish(topic, payload, qos, now) {
                Ok(PublishToken::AtLeastOnce(packet_id)) => {
                    self.acks.insert(packet_id, Waiter::Publish(reply));
                }
                Ok(PublishToken::AtMostOnce(token)) => {
                    self.qos0_unsent.insert(token, reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(RequestError::Rejected(error)));
                }
            },
            Command::Subscribe { filters, reply } => match self.conn.subscribe(&filters, now) {
                Ok(packet_id) => {
                    self.acks.insert(packet_id, Waiter::Subscribe(reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(RequestError::Rejected(error)));
                }
            },
            Command::Unsubscribe { filters, reply } => match self.conn.unsubscribe(&filters, now) {
                Ok(packet_id) => {
                    self.acks.insert(packet_id, Waiter::Unsubscribe(reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(RequestError::Rejected(error)));
                }
            },
            Command::RespondRrpc {
                message_id,
                payload,
            } => self.respond_rrpc(message_id, payload),
            Command::Thing {
                topic,
                payload,
                qos,
                expects,
                reply,
            } => {
                // Callers that gave up (their timeout) are forgotten.
                self.pending_things
                    .retain(|(_, _, reply)| !reply.is_closed());
                match self.conn.publish(topic, payload, qos, now) {
                    Ok(_) => match expects {
                        Some((kind, id)) => self.pending_things.push_back((kind, id, reply)),
                        None => drop(reply),
                    },
                    Err(error) => {
                        let _ = reply.send(Err(RequestError::Rejected(error)));
                    }
                }
            }
            Command::Disconnect { done } => self.stop = Some(Stop::Requested(done)),
        }
    }

    /// Moves what the connection has to give: bytes to the write buffer, events to their
    /// callers and channels, until it has nothing more.
    fn pump(&mut self, link: &mut Link) {
        loop {
            match link {
                Link::Up(up) => {
                    if self.conn.poll_transmit(&mut up.write_buf) {
                        up.unflushed = true;
                    }
                }
                // Without a stream the connection has nothing to send; should it, the bytes
                // belong to no transport.
                Link::Waiting { .. } | Link::Dialing(_) => {
                    let mut nowhere = BytesMut::new();
                    self.conn.poll_transmit(&mut nowhere);
                }
            }
            let Some(event) = self.conn.poll_event() else {
                return;
            };
            self.handle_event(event, link);
        }
    }

    fn handle_event(&mut self, event: Event, link: &mut Link) {
        match event {
            Event::Connected { session_present } => {
                if let Link::Up(up) = link {
                    up.connected = true;
                }
                self.failures = 0;
                match self.first_connect.take() {
                    Some(first) => {
                        if first.send(Ok(())).is_err() {
                            // `Client::connect` was dropped: nobody will use this client.
                            self.stop = Some(Stop::Dropped);
                        }
                    }
                    None => self.emit(ConnectionEvent::Reconnected { session_present }),
                }
            }
            // `Disconnected(Refused(code))` follows and says the same.
            Event::ConnectRefused(_) => {}
            Event::Message { message, dup } => {
                if !self.take_downlink(&message.topic, &message.payload) {
                    self.undelivered.push_back(IncomingMessage {
                        topic: message.topic,
                        payload: message.payload,
                        qos: message.qos,
                        dup,
                    });
                }
            }
            Event::PublishAcked(packet_id) => {
                if let Some(Waiter::Publish(reply)) = self.acks.remove(&packet_id) {
                    let _ = reply.send(Ok(Some(packet_id)));
                }
            }
            Event::PublishSent(token) => self.qos0_handed_out(token),
            Event::PublishDropped(token) => {
                if let Some(reply) = self.qos0_unsent.remove(&token) {
                    let _ = reply.send(Err(RequestError::NotWritten));
                }
            }
            Event::PublishFailed(packet_id) => {
                if let Some(Waiter::Publish(reply)) = self.acks.remove(&packet_id) {
                    let _ = reply.send(Err(RequestError::PublishFailed(packet_id)));
                }
            }
            Event::SubAck {
                packet_id,
                return_codes,
            } => {
                if let Some(Waiter::Subscribe(reply)) = self.acks.remove(&packet_id) {
                    let _ = reply.send(Ok(return_codes));
                }
            }
            Event::Resubscribed { results, .. } => {
                self.emit(ConnectionEvent::Resubscribed { results });
            }
            Event::ResubscribeFailed { filters, error } => {
                warn!(%error, "cannot subscribe again after the session was lost");
                self.emit(ConnectionEvent::ResubscribeFailed { filters, error });
            }
            Event::UnsubAck(packet_id) => {
                if let Some(Waiter::Unsubscribe(reply)) = self.acks.remove(&packet_id) {
                    let _ = reply.send(Ok(()));
                }
            }
            Event::RrpcRequest {
                message_id,
                payload,
                topic,
            } => self.handle_rrpc(RrpcRequest {
                message_id,
                topic,
                payload,
            }),
            Event::Disconnected(reason) => self.transport_ended(reason, link),
        }
    }

    /// The QoS 0 publish `token` is in the write buffer: its caller is answered once the write
    /// completes. (RRPC answers have tokens too, with nobody waiting.)
    fn qos0_handed_out(&mut self, token: Qos0Token) {
        if let Some(reply) = self.qos0_unsent.remove(&token) {
            self.qos0_unwritten.push(reply);
        }
    }

    /// The device's downlink `topic`/`payload`, classified by `aliot-services`: a reply goes
    /// to the caller waiting for it, a call or push to its handler (and the handler's answer
    /// out). Whether it was taken; if not, it goes to the application.
    fn take_downlink(&mut self, topic: &TopicName, payload: &Bytes) -> bool {
        let Some(identity) = &self.identity else {
            return false;
        };
        let Some(downlink) = DeviceDownlink::parse(
            topic.as_str(),
            payload,
            &identity.product_key,
            &identity.device_name,
        ) else {
            return false;
        };
        if let Some((kind, id)) = downlink.answers() {
            let waiting = self
                .pending_things
                .iter()
                .position(|(k, i, reply)| *k == kind && i == id && !reply.is_closed());
            if let Some((_, _, reply)) = waiting.and_then(|at| self.pending_things.remove(at)) {
                let _ = reply.send(Ok(downlink));
                return true;
            }
        }
        let handled = self.run_handler(&downlink);
        match handled {
            Handled::No => false,
            Handled::Taken => true,
            Handled::Answer(uplink) => {
                self.send_uplink(uplink);
                true
            }
        }
    }

    /// Runs the handler of `downlink`, if one is set. The table's lock is let go first: a
    /// handler may set handlers (it runs in this task, and would wait for itself).
    fn run_handler(&self, downlink: &DeviceDownlink) -> Handled {
        let handler = self
            .things
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .handler_for(downlink);
        handler.map_or(Handled::No, |handler| handler.call(downlink))
    }

    /// Publishes a handler's answer at QoS 0 (as the SDKs answer), nobody waiting for it.
    fn send_uplink(&mut self, uplink: Uplink) {
        let now = self.now();
        let topic = match TopicName::new(&uplink.topic, &TopicLimits::default()) {
            Ok(topic) => topic,
            Err(error) => {
                warn!(topic = %uplink.topic, %error, "cannot answer the platform");
                return;
            }
        };
        if let Err(error) =
            self.conn
                .publish(topic, Bytes::from(uplink.payload), QoS::AtMostOnce, now)
        {
            warn!(%error, "cannot answer the platform");
        }
    }

    /// A synchronous service call with a service handler: answered at once. Whether it was.
    fn take_service_call(&mut self, request: &RrpcRequest) -> bool {
        let Some(identity) = &self.identity else {
            return false;
        };
        let Some(downlink @ DeviceDownlink::Service(_)) = DeviceDownlink::parse(
            request.topic.as_str(),
            &request.payload,
            &identity.product_key,
            &identity.device_name,
        ) else {
            return false;
        };
        let handled = self.run_handler(&downlink);
        match handled {
            Handled::Answer(answer) => {
                // The connection answers on the topic the call came in its form.
                self.respond_rrpc(request.message_id, Bytes::from(answer.payload));
                true
            }
            Handled::No | Handled::Taken => false,
        }
    }

    fn handle_rrpc(&mut self, request: RrpcRequest) {
        if self.take_service_call(&request) {
            return;
        }
        let mut slot = self.rrpc.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_mut() {
            Some(RrpcHandler::Sync(handler)) => {
                let response = handler(&request);
                drop(slot);
                self.respond_rrpc(request.message_id, response);
            }
            Some(RrpcHandler::Async(handler)) => {
                let message_id = request.message_id;
                let answer = handler(request);
                drop(slot);
                let commands = self.weak_commands.clone();
                // Detached: the answer finds its way back through the command channel.
                drop(self.runtime.spawn(async move {
                    let payload = answer.await;
                    // Gone when the client stopped meanwhile: nobody to answer through.
                    if let Some(commands) = commands.upgrade() {
                        let _ = commands
                            .send(Command::RespondRrpc {
                                message_id,
                                payload,
                            })
                            .await;
                    }
                }));
            }
            None => {
                drop(slot);
                warn!(
                    message_id = %request.message_id,
                    topic = %request.topic,
                    "RRPC request with no handler set (Client::on_rrpc): the caller will time out"
                );
            }
        }
    }

    fn respond_rrpc(&mut self, message_id: MessageId, payload: Bytes) {
        let now = self.now();
        match self.conn.respond_rrpc(message_id, payload, now) {
            Ok(_) => {}
            Err(error) => warn!(%message_id, %error, "cannot answer an RRPC request"),
        }
    }

    /// The stream is done with: close it, fail what was waiting to be written on it, and
    /// dial again after a delay (or give up if it was the first connection).
    fn transport_ended(&mut self, reason: DisconnectReason, link: &mut Link) {
        let was_connected = matches!(link, Link::Up(up) if up.connected);
        for reply in self.qos0_unwritten.drain(..) {
            let _ = reply.send(Err(RequestError::NotWritten));
        }
        if was_connected {
            debug!(%reason, "connection lost");
            self.emit(ConnectionEvent::Disconnected { reason });
            self.schedule_retry(link);
        } else {
            self.attempt_failed(ConnectError::from(reason), link);
        }
    }

    /// A dial or a CONNECT failed.
    fn attempt_failed(&mut self, error: ConnectError, link: &mut Link) {
        if let Some(first) = self.first_connect.take() {
            let _ = first.send(Err(error));
            self.stop = Some(Stop::FirstConnectFailed);
            *link = Link::Waiting {
                until: RuntimeInstant::now(),
            };
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let retry_in = self.schedule_retry(link);
        debug!(%error, ?retry_in, "reconnect attempt failed");
        self.emit(ConnectionEvent::ReconnectFailed {
            attempt: self.failures,
            error: Arc::new(error),
            retry_in,
        });
    }

    /// Drops the stream and waits for the backoff delay of the failures so far (the first
    /// delay after a lost connection is attempt 0's).
    fn schedule_retry(&mut self, link: &mut Link) -> Duration {
        let delay = self.backoff.delay(self.failures, fastrand::u32(..));
        *link = Link::Waiting {
            until: RuntimeInstant::now() + delay,
        };
        delay
    }

    fn emit(&self, event: ConnectionEvent) {
        // No receiver is fine: nobody asked for events.
        let _ = self.events.send(event);
    }

    /// Ends the driver: a DISCONNECT on an open stream (best effort, within
    /// [`CLOSE_LINGER`]), then every waiting caller learns the client stopped.
    async fn finish(mut self, link: Link, stop: Stop) {
        if let Link::Up(mut up) = link {
            self.conn.disconnect(self.now());
            self.conn.poll_transmit(&mut up.write_buf);
            // QoS 0 publishes handed out with the DISCONNECT resolve once it is written.
            while let Some(event) = self.conn.poll_event() {
                if let Event::PublishSent(token) = event {
                    self.qos0_handed_out(token);
                }
            }
            let closing = async {
                write_out(&mut up.writer, &mut up.write_buf).await?;
                up.writer.close().await
            };
            let deadline = RuntimeInstant::now() + CLOSE_LINGER;
            match timeout_at(&self.runtime, deadline, closing).await {
                Some(Ok(())) => {
                    for reply in self.qos0_unwritten.drain(..) {
                        let _ = reply.send(Ok(None));
                    }
                }
                Some(Err(error)) => debug!(%error, "DISCONNECT not written"),
                None => debug!("DISCONNECT not written within {CLOSE_LINGER:?}"),
            }
        }
        for reply in self.qos0_unwritten.drain(..) {
            let _ = reply.send(Err(RequestError::NotWritten));
        }
        // Messages already taken from the broker go to whoever still reads them.
        for message in self.undelivered.drain(..) {
            if self.messages.try_send(message).is_err() {
                break;
            }
        }
        // The remaining waiters are dropped with the driver: their callers see `Closed`.
        if let Stop::Requested(done) = stop {
            drop(self);
            let _ = done.send(());
        }
    }
}

/// Writes `buf` out and flushes. Cancel-safe: `buf` is advanced by what was written.
async fn write_out(writer: &mut WriteHalf<Box<dyn Io>>, buf: &mut BytesMut) -> io::Result<()> {
    while !buf.is_empty() {
        match writer.write(buf).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            written => buf.advance(written),
        }
    }
    writer.flush().await
}

/// Hands the oldest undelivered message over with a reserved slot; when the receiving side is
/// gone, there is nobody to hand them to.
fn deliver_one(
    permit: Result<mpsc::Permit<'_, IncomingMessage>, mpsc::error::SendError<()>>,
    undelivered: &mut VecDeque<IncomingMessage>,
) {
    match permit {
        Ok(permit) => {
            if let Some(message) = undelivered.pop_front() {
                permit.send(message);
            }
        }
        Err(_) => undelivered.clear(),
    }
}
