//! Many open clients driven from one task.
//!
//! A [`Group`] owns open [`Session`]s and drives them all from one future: on each wake it
//! reads what each socket has (tokio's cached readiness makes a socket with nothing to read
//! cost an atomic load, no system call), feeds the bytes to the client state machine, acts on
//! its events, lets publishers publish, and writes what each has to send, registering the task
//! for the readiness it waits on. So a handful of tasks carry thousands of connections and the
//! generator spends its time on the protocol, not on scheduling.
//!
//! Every group of a run shares a [`RunShared`]: the clock, the phases (publishing until
//! `stop_ns`, measuring from `measure_from_ns`) and the counters that tell subscribers when
//! every message owed has arrived.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use aliot_core::client::{DisconnectReason, Event};
use aliot_core::codec::QoS;
use aliot_core::message::Message;
use aliot_topic::TopicName;
use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

use super::ReplyFault;
use super::clock::RunClock;
use super::report::latency_histogram;
use super::session::Session;
use super::stamp::{read_stamp, stamped_payload};

/// Reads per client per wake before the task yields to others.
const READS_PER_WAKE: usize = 16;
/// Bytes read at once.
const READ_BUF_LEN: usize = 64 * 1024;
/// Publishes per client per round of generating and writing.
const PUBLISHES_PER_ROUND: u64 = 256;
/// Rounds per client per wake before the task yields to others.
const ROUNDS_PER_WAKE: usize = 8;
/// A publisher stops generating while this many bytes wait to be written: TCP back-pressure
/// reaches the generator instead of a growing buffer.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// After `stop_ns`, subscribers wait at least this long before deciding that every message
/// owed has arrived (publishers on other tasks may still be finishing their last write).
const STOP_GRACE_NS: u64 = 20_000_000;
/// How often a draining group looks at the shared counters, when publishers and subscribers
/// wait for each other.
const DRAIN_TICK_NS: u64 = 5_000_000;
/// How often a group of idle clients or RRPC responders looks for the end of the run.
const IDLE_TICK_NS: u64 = 100_000_000;
/// The most a group waits for its last bytes (DISCONNECT) to be written when it ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The phases and counters every group of a run shares.
#[derive(Debug)]
pub struct RunShared {
    /// The run's clock.
    pub clock: RunClock,
    /// When publishing starts (rate-limited publishers count their budget from here).
    pub start_ns: u64,
    /// Start of the measurement window (end of the warm-up).
    pub measure_from_ns: u64,
    /// End of the window: publishers stop.
    pub stop_ns: u64,
    /// Groups stop waiting for messages still owed at this time.
    pub drain_until_ns: u64,
    /// Deliveries each published message is owed (subscribers it reaches).
    pub fanout: u64,
    /// Messages published so far, by every publisher.
    pub published: AtomicU64,
    /// Messages received so far, by every subscriber.
    pub delivered: AtomicU64,
    /// Set by whoever runs the scenario to end every group (idle holds, RRPC responders).
    pub finished: AtomicBool,
}

impl RunShared {
    /// Shared state for a run publishing from `start_ns` for `warmup` then `window`, draining
    /// for at most `drain` after that.
    #[must_use]
    pub fn new(
        clock: RunClock,
        start_ns: u64,
        warmup: Duration,
        window: Duration,
        drain: Duration,
        fanout: u64,
    ) -> RunShared {
        let ns = |duration: Duration| super::clock::duration_ns(duration);
        let measure_from_ns = start_ns.saturating_add(ns(warmup));
        let stop_ns = measure_from_ns.saturating_add(ns(window));
        RunShared {
            clock,
            start_ns,
            measure_from_ns,
            stop_ns,
            drain_until_ns: stop_ns.saturating_add(ns(drain)),
            fanout,
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// Ends every group of the run at its next look (an idle group looks every 100 ms).
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// Whether every message published so far has reached every subscriber it is owed to.
    fn all_delivered(&self) -> bool {
        let owed = self
            .published
            .load(Ordering::Acquire)
            .saturating_mul(self.fanout);
        self.delivered.load(Ordering::Acquire) >= owed
    }
}

/// What a publisher sends.
#[derive(Clone, Debug)]
pub struct Publisher {
    /// Where.
    pub topic: TopicName,
    /// At which QoS.
    pub qos: QoS,
    /// Payload bytes per message (the first 8 are the send time).
    pub payload_len: usize,
    /// QoS 1 publishes awaiting their PUBACK, at most.
    pub inflight: usize,
    /// Messages per second of this publisher; `None`: as fast as the window and the socket
    /// allow.
    pub rate: Option<f64>,
    /// Where this publisher's throttled sends fall in each period of `1 / rate`, as a fraction
    /// of it in [0, 1): a publisher with phase `p` sends its k-th message at `(k + 1 - p) / rate`.
    pub phase: f64,
    /// Messages this publisher sends in all, at most; `None`: until the end of the window.
    pub limit: Option<u64>,
}

/// What a property poster posts: a device its own properties, or a gateway those of its
/// sub-devices, in turn, on their topics.
#[derive(Clone, Debug)]
pub struct PropertyPoster {
    /// The post topic (`/sys/{pk}/{dn}/thing/event/property/post`) of each device posted for,
    /// posted to in turn: a device's own, or each of a gateway's sub-devices'. The replies come
    /// on each + `_reply`.
    pub topics: Arc<[TopicName]>,
    /// At which QoS.
    pub qos: QoS,
    /// Posts waiting for their reply, at most (all topics together).
    pub inflight: usize,
    /// Posts per second of this client; `None`: as fast as its window allows.
    pub rate: Option<f64>,
    /// Where its throttled posts fall in each period, as a [`Publisher`]'s.
    pub phase: f64,
}

/// Messages due `elapsed_s` seconds after the start, at `rate` per second, for a client whose
/// sends fall at `phase` of each period.
fn due_by(rate: f64, phase: f64, elapsed_s: f64) -> u64 {
    (elapsed_s * rate + phase) as u64
}

/// Seconds after the start at which message number `count + 1` falls due (as [`due_by`]).
fn next_due_s(rate: f64, phase: f64, count: u64) -> f64 {
    ((count + 1) as f64 - phase).max(0.0) / rate
}

/// What a client does in its group.
#[derive(Clone, Debug)]
pub enum Role {
    /// Publishes until the end of the window.
    Publisher(Publisher),
    /// Receives, and measures each message's latency.
    Subscriber,
    /// A platform device posting properties (Alink, `thing/event/property/post`): its own, or
    /// as a gateway its sub-devices' in turn, with at most the poster's `inflight` posts
    /// waiting for their reply (and at its rate, if it has one). The request's `id` is the send
    /// time, which the reply echoes: latency is post to reply. Each reply is matched to its
    /// post by that id and must come on the post's topic + `_reply` with code 200; anything
    /// else is a [`ReplyFault`] that ends the run.
    PropertyPoster(PropertyPoster),
    /// A platform device answering every RRPC request with the request's payload.
    RrpcResponder,
    /// Holds its connection open and does nothing else.
    Idle,
}

impl Role {
    /// The rate and phase of a throttled publisher or poster.
    fn pace(&self) -> Option<(f64, f64)> {
        match self {
            Role::Publisher(publisher) => publisher.rate.map(|rate| (rate, publisher.phase)),
            Role::PropertyPoster(poster) => poster.rate.map(|rate| (rate, poster.phase)),
            Role::Subscriber | Role::RrpcResponder | Role::Idle => None,
        }
    }
}

/// What a group counted.
#[derive(Clone, Debug)]
pub struct GroupOutcome {
    /// Send-to-receive latency of deliveries received within the window, nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Deliveries received within the window.
    pub delivered_in_window: u64,
    /// Deliveries received over the whole run.
    pub delivered: u64,
    /// Messages published over the whole run.
    pub published: u64,
    /// Messages published within the window.
    pub published_in_window: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Publishes the client state machine refused or reported failed.
    pub publish_failed: u64,
    /// RRPC requests answered.
    pub rrpc_answered: u64,
    /// Connections that ended before the group did.
    pub lost_connections: u64,
    /// Why the first of them ended.
    pub first_loss: Option<String>,
    /// Connections still open when the group ended.
    pub open_at_end: usize,
    /// Replies to property posts that were refused, unreadable or unexpected.
    pub reply_faults: u64,
    /// The first of them.
    pub first_reply_fault: Option<ReplyFault>,
}

impl GroupOutcome {
    fn new() -> GroupOutcome {
        GroupOutcome {
            latency_ns: latency_histogram(),
            delivered_in_window: 0,
            delivered: 0,
            published: 0,
            published_in_window: 0,
            acked: 0,
            publish_failed: 0,
            rrpc_answered: 0,
            lost_connections: 0,
            first_loss: None,
            open_at_end: 0,
            reply_faults: 0,
            first_reply_fault: None,
        }
    }

    /// Adds another group's counts to these.
    pub fn merge(&mut self, other: &GroupOutcome) {
        // Both histograms have the same bounds, so adding cannot fail; a count that could
        // not be added would only be missing from the percentiles.
        let _ = self.latency_ns.add(&other.latency_ns);
        self.delivered_in_window += other.delivered_in_window;
        self.delivered += other.delivered;
        self.published += other.published;
        self.published_in_window += other.published_in_window;
        self.acked += other.acked;
        self.publish_failed += other.publish_failed;
        self.rrpc_answered += other.rrpc_answered;
        self.lost_connections += other.lost_connections;
        if self.first_loss.is_none() {
            self.first_loss.clone_from(&other.first_loss);
        }
        self.open_at_end += other.open_at_end;
        self.reply_faults += other.reply_faults;
        if self.first_reply_fault.is_none() {
            self.first_reply_fault.clone_from(&other.first_reply_fault);
        }
    }

    /// A group outcome with nothing counted, to merge others into.
    #[must_use]
    pub fn empty() -> GroupOutcome {
        GroupOutcome::new()
    }

    fn fault(&mut self, fault: ReplyFault) {
        self.reply_faults += 1;
        if self.first_reply_fault.is_none() {
            self.first_reply_fault = Some(fault);
        }
    }

    fn lose(&mut self, client_id: &str, why: &str) {
        self.lost_connections += 1;
        if self.first_loss.is_none() {
            self.first_loss = Some(format!("{client_id}: {why}"));
        }
    }
}

/// One client of a group.
struct Client {
    session: Session,
    /// Bytes taken from the state machine and not yet written.
    out: BytesMut,
    role: Role,
    published: u64,
    open: bool,
    /// A property poster's posts waiting for their reply: by id, the index of the topic posted
    /// to.
    awaiting_replies: HashMap<u64, usize>,
    /// A property poster's last id.
    last_id: u64,
}

/// How a round of publishing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generated {
    /// Not a publisher, or nothing due.
    Nothing,
    /// Stopped on the per-round budget or the output high-water mark: more may follow at
    /// once.
    MoreReady,
    /// Stopped on the window or the rate: a PUBACK or the timer brings more.
    Waiting,
}

impl Client {
    /// Reads what the socket has and handles it. `true` when the read budget ran out with the
    /// socket still readable.
    fn read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        shared: &RunShared,
        outcome: &mut GroupOutcome,
    ) -> bool {
        for _ in 0..READS_PER_WAKE {
            let mut read_buf = ReadBuf::new(buf);
            let read = match Pin::new(&mut self.session.stream).poll_read(cx, &mut read_buf) {
                Poll::Pending => return false,
                Poll::Ready(Err(error)) => {
                    self.fail(&error, outcome);
                    return false;
                }
                Poll::Ready(Ok(())) => read_buf.filled().len(),
            };
            let now_ns = shared.clock.now_ns();
            if read == 0 {
                self.session
                    .conn
                    .handle_transport_closed(core_instant(now_ns));
                self.handle_events(now_ns, shared, outcome);
                return false;
            }
            if let Some(bytes) = buf.get(..read) {
                self.session.conn.handle_input(core_instant(now_ns), bytes);
            }
            self.handle_events(now_ns, shared, outcome);
            if !self.open {
                return false;
            }
        }
        true
    }

    /// Acts on every event of the state machine.
    fn handle_events(&mut self, now_ns: u64, shared: &RunShared, outcome: &mut GroupOutcome) {
        let in_window = (shared.measure_from_ns..shared.stop_ns).contains(&now_ns);
        let mut delivered = 0;
        while let Some(event) = self.session.conn.poll_event() {
            match event {
                Event::Message { message, .. } => {
                    let sent_ns = match &self.role {
                        Role::PropertyPoster(poster) => {
                            match take_reply(poster, &mut self.awaiting_replies, &message) {
                                Ok(sent_ns) => Some(sent_ns),
                                Err(fault) => {
                                    outcome.fault(fault);
                                    // The run measures nothing worth keeping any more.
                                    shared.finish();
                                    continue;
                                }
                            }
                        }
                        _ => read_stamp(&message.payload),
                    };
                    delivered += 1;
                    if in_window && let Some(sent_ns) = sent_ns {
                        outcome.delivered_in_window += 1;
                        outcome
                            .latency_ns
                            .saturating_record(now_ns.saturating_sub(sent_ns).max(1));
                    }
                }
                Event::PublishAcked(_) => outcome.acked += 1,
                Event::PublishFailed(_) => outcome.publish_failed += 1,
                Event::RrpcRequest {
                    message_id,
                    payload,
                    ..
                } => {
                    match self
                        .session
                        .conn
                        .respond_rrpc(message_id, payload, core_instant(now_ns))
                    {
                        Ok(_) => outcome.rrpc_answered += 1,
                        Err(_) => outcome.publish_failed += 1,
                    }
                }
                Event::Disconnected(reason) => {
                    if self.open && reason != DisconnectReason::ClientRequested {
                        outcome.lose(&self.session.client_id, &reason.to_string());
                    }
                    self.open = false;
                }
                Event::Connected { .. }
                | Event::ConnectRefused(_)
                | Event::SubAck { .. }
                | Event::UnsubAck(_)
                | Event::PublishSent(_)
                | Event::PublishDropped(_)
                | Event::Resubscribed { .. }
                | Event::ResubscribeFailed { .. } => {}
            }
        }
        if delivered > 0 {
            outcome.delivered += delivered;
            shared.delivered.fetch_add(delivered, Ordering::AcqRel);
        }
    }

    /// Publishes what is due, within the round's budget.
    fn publish(&mut self, shared: &RunShared, outcome: &mut GroupOutcome) -> Generated {
        if let Role::PropertyPoster(_) = &self.role {
            return self.post_properties(shared, outcome);
        }
        let Role::Publisher(publisher) = &self.role else {
            return Generated::Nothing;
        };
        let now_ns = shared.clock.now_ns();
        if now_ns >= shared.stop_ns || !self.session.conn.is_connected() {
            return Generated::Nothing;
        }
        let due = match publisher.rate {
            Some(rate) => {
                let elapsed_s = now_ns.saturating_sub(shared.start_ns) as f64 / 1e9;
                due_by(rate, publisher.phase, elapsed_s).saturating_sub(self.published)
            }
            None => u64::MAX,
        };
        let due = match publisher.limit {
            Some(limit) if self.published >= limit => return Generated::Nothing,
            Some(limit) => due.min(limit - self.published),
            None => due,
        };
        if due == 0 {
            return Generated::Waiting;
        }
        let acknowledged = publisher.qos == QoS::AtLeastOnce;
        let mut sent = 0;
        let mut sent_in_window = 0;
        let stopped = loop {
            if sent >= due {
                break Generated::Waiting;
            }
            if sent >= PUBLISHES_PER_ROUND || self.out.len() >= OUT_HIGH_WATER {
                break Generated::MoreReady;
            }
            if acknowledged && self.session.conn.in_flight_len() >= publisher.inflight {
                break Generated::Waiting;
            }
            let stamp_ns = shared.clock.now_ns();
            let payload = stamped_payload(publisher.payload_len, stamp_ns);
            match self.session.conn.publish(
                publisher.topic.clone(),
                payload,
                publisher.qos,
                core_instant(stamp_ns),
            ) {
                Ok(_) => {
                    sent += 1;
                    if stamp_ns >= shared.measure_from_ns {
                        sent_in_window += 1;
                    }
                }
                Err(_) => {
                    outcome.publish_failed += 1;
                    break Generated::Waiting;
                }
            }
            self.session.conn.poll_transmit(&mut self.out);
        };
        self.published += sent;
        outcome.published += sent;
        outcome.published_in_window += sent_in_window;
        if sent > 0 {
            shared.published.fetch_add(sent, Ordering::AcqRel);
        }
        stopped
    }

    /// A property poster's next posts: while fewer than its window wait for their reply,
    /// and they are due; each on the next of its topics.
    fn post_properties(&mut self, shared: &RunShared, outcome: &mut GroupOutcome) -> Generated {
        let Role::PropertyPoster(poster) = &self.role else {
            return Generated::Nothing;
        };
        let now_ns = shared.clock.now_ns();
        if now_ns >= shared.stop_ns || !self.session.conn.is_connected() {
            return Generated::Nothing;
        }
        while self.awaiting_replies.len() < poster.inflight {
            if let Some(rate) = poster.rate {
                let elapsed_s = now_ns.saturating_sub(shared.start_ns) as f64 / 1e9;
                if due_by(rate, poster.phase, elapsed_s) <= self.published {
                    break;
                }
            }
            let turn = (self.published % poster.topics.len().max(1) as u64) as usize;
            let Some(topic) = poster.topics.get(turn) else {
                break;
            };
            // The id is the send time, and unique among the client's posts: a post sent in the
            // same nanosecond as the one before (a burst takes one clock reading) is one
            // nanosecond later. A burst of n posts so reads latencies up to n ns short. The
            // values change with each post.
            let id = now_ns.max(self.last_id.saturating_add(1));
            let payload = format!(
                r#"{{"id":"{id}","version":"1.0","params":{{"Temperature":{},"Power":1}},"method":"thing.event.property.post"}}"#,
                self.published % 100
            );
            match self.session.conn.publish(
                topic.clone(),
                Bytes::from(payload),
                poster.qos,
                core_instant(now_ns),
            ) {
                Ok(_) => {
                    self.last_id = id;
                    self.awaiting_replies.insert(id, turn);
                    self.published += 1;
                    outcome.published += 1;
                    if now_ns >= shared.measure_from_ns {
                        outcome.published_in_window += 1;
                    }
                    shared.published.fetch_add(1, Ordering::AcqRel);
                }
                Err(_) => {
                    outcome.publish_failed += 1;
                    break;
                }
            }
        }
        self.session.conn.poll_transmit(&mut self.out);
        Generated::Waiting
    }

    /// Writes what is pending. `true` when the socket is full and the task is registered to
    /// be woken when it drains.
    fn write(&mut self, cx: &mut Context<'_>, outcome: &mut GroupOutcome) -> bool {
        loop {
            if self.out.is_empty() {
                self.out.clear();
                if !self.session.conn.poll_transmit(&mut self.out) {
                    // All handed over; a TLS or WebSocket layer may still hold some of it
                    // (on plain TCP the flush is done at once).
                    return match Pin::new(&mut self.session.stream).poll_flush(cx) {
                        Poll::Pending => true,
                        Poll::Ready(Err(error)) => {
                            self.fail(&error, outcome);
                            false
                        }
                        Poll::Ready(Ok(())) => false,
                    };
                }
            }
            match Pin::new(&mut self.session.stream).poll_write(cx, &self.out) {
                Poll::Pending => return true,
                Poll::Ready(Ok(0)) => {
                    self.fail(&io::ErrorKind::WriteZero.into(), outcome);
                    return false;
                }
                Poll::Ready(Ok(written)) => self.out.advance(written),
                Poll::Ready(Err(error)) => {
                    self.fail(&error, outcome);
                    return false;
                }
            }
        }
    }

    /// Handles a keepalive or connect deadline that has passed; returns the next one, in
    /// nanoseconds of the run clock.
    fn handle_timeout(
        &mut self,
        now_ns: u64,
        shared: &RunShared,
        outcome: &mut GroupOutcome,
    ) -> Option<u64> {
        let deadline = self.session.conn.poll_timeout()?;
        let deadline_ns = deadline.as_millis().saturating_mul(1_000_000);
        if deadline_ns > now_ns {
            return Some(deadline_ns);
        }
        self.session.conn.handle_timeout(core_instant(now_ns));
        self.handle_events(now_ns, shared, outcome);
        self.session
            .conn
            .poll_timeout()
            .map(|next| next.as_millis().saturating_mul(1_000_000))
    }

    /// Whether the client has nothing left to wait for once publishing has stopped.
    fn settled(&self, now_ns: u64, shared: &RunShared) -> bool {
        if !self.open {
            return true;
        }
        match &self.role {
            Role::Publisher(_) => {
                self.out.is_empty()
                    && self.session.conn.in_flight_len() == 0
                    && self.session.conn.queued_len() == 0
            }
            Role::Subscriber => {
                now_ns >= shared.stop_ns.saturating_add(STOP_GRACE_NS) && shared.all_delivered()
            }
            Role::PropertyPoster(_) => self.awaiting_replies.is_empty() && self.out.is_empty(),
            Role::RrpcResponder | Role::Idle => false,
        }
    }

    fn fail(&mut self, error: &io::Error, outcome: &mut GroupOutcome) {
        if self.open {
            outcome.lose(&self.session.client_id, &error.to_string());
        }
        self.open = false;
    }
}

/// Open clients driven from one task. See the [module documentation](self).
pub struct Group {
    clients: Vec<Client>,
    shared: Arc<RunShared>,
    outcome: GroupOutcome,
    read_buf: Vec<u8>,
    sleep: Pin<Box<Sleep>>,
    /// Whether every client is idle or an RRPC responder: such a group looks for the end of
    /// the run less often.
    idle_only: bool,
    /// Whether a client publishes a limited number of messages: such a group may be ended
    /// ([`RunShared::finish`]) before the end of the window, and looks for that every
    /// 100 ms.
    limited: bool,
    /// The client served first on the next wake.
    next_first: usize,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("clients", &self.clients.len())
            .field("idle_only", &self.idle_only)
            .field("limited", &self.limited)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// A group of these open clients, each with its role, sharing `shared` with the other
    /// groups of the run.
    #[must_use]
    pub fn new(members: Vec<(Session, Role)>, shared: Arc<RunShared>) -> Group {
        let idle_only = members
            .iter()
            .all(|(_, role)| matches!(role, Role::Idle | Role::RrpcResponder));
        let limited = members.iter().any(
            |(_, role)| matches!(role, Role::Publisher(publisher) if publisher.limit.is_some()),
        );
        let clients = members
            .into_iter()
            .map(|(session, role)| Client {
                open: session.conn.is_connected(),
                session,
                out: BytesMut::new(),
                role,
                published: 0,
                awaiting_replies: HashMap::new(),
                last_id: 0,
            })
            .collect();
        let sleep = Box::pin(tokio::time::sleep_until(
            shared.clock.tokio_instant(shared.start_ns),
        ));
        Group {
            clients,
            shared,
            outcome: GroupOutcome::new(),
            read_buf: vec![0; READ_BUF_LEN],
            sleep,
            idle_only,
            limited,
            next_first: 0,
        }
    }

    /// Drives the clients until the run ends for them, then disconnects those still open
    /// (DISCONNECT, then close) and returns what was counted.
    pub async fn run(mut self) -> GroupOutcome {
        // tokio's cooperative budget (128 resource polls per task poll) would answer
        // `Pending` to the clients late in a large group on every wake and starve them; the
        // group keeps its own budgets (reads, publishes) and yields by itself instead.
        tokio::task::unconstrained(poll_fn(|cx| self.poll_run(cx))).await;
        self.close().await;
        self.outcome
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shared = Arc::clone(&self.shared);
        let mut yield_now = false;
        let mut next_deadline_ns = u64::MAX;
        let now_ns = shared.clock.now_ns();
        // Start each wake one client further on, so that no client is always served last.
        let count = self.clients.len();
        let first = self.next_first % count.max(1);
        self.next_first = first + 1;
        let (tail, head) = self.clients.split_at_mut(first);
        for client in head.iter_mut().chain(tail.iter_mut()) {
            if !client.open {
                continue;
            }
            yield_now |= client.read(cx, &mut self.read_buf, &shared, &mut self.outcome);
            if !client.open {
                continue;
            }
            if let Some(deadline) = client.handle_timeout(now_ns, &shared, &mut self.outcome) {
                next_deadline_ns = next_deadline_ns.min(deadline);
            }
            let mut rounds_left = ROUNDS_PER_WAKE;
            loop {
                let generated = client.publish(&shared, &mut self.outcome);
                let write_blocked = client.write(cx, &mut self.outcome);
                if generated == Generated::Waiting
                    && let Some((rate, phase)) = client.role.pace()
                    && rate > 0.0
                {
                    let next_due_s = next_due_s(rate, phase, client.published);
                    let next_due_ns = shared.start_ns.saturating_add((next_due_s * 1e9) as u64);
                    next_deadline_ns = next_deadline_ns.min(next_due_ns);
                }
                if generated != Generated::MoreReady || write_blocked || !client.open {
                    break;
                }
                rounds_left -= 1;
                if rounds_left == 0 {
                    yield_now = true;
                    break;
                }
            }
        }

        let now_ns = shared.clock.now_ns();
        if now_ns < shared.stop_ns {
            next_deadline_ns = next_deadline_ns.min(shared.stop_ns);
        } else {
            let ended = shared.finished.load(Ordering::Acquire)
                || now_ns >= shared.drain_until_ns
                || self
                    .clients
                    .iter()
                    .all(|client| client.settled(now_ns, &shared));
            if ended {
                return Poll::Ready(());
            }
            let tick = if self.idle_only {
                IDLE_TICK_NS
            } else {
                DRAIN_TICK_NS
            };
            next_deadline_ns = next_deadline_ns
                .min(now_ns.saturating_add(tick))
                .min(shared.drain_until_ns);
        }
        if shared.finished.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.idle_only || self.limited {
            // Idle clients, responders and publishers that stop by count must notice
            // `finished` even before `stop_ns`.
            next_deadline_ns = next_deadline_ns.min(now_ns.saturating_add(IDLE_TICK_NS));
        }
        self.sleep
            .as_mut()
            .reset(shared.clock.tokio_instant(next_deadline_ns));
        if self.sleep.as_mut().poll(cx).is_ready() {
            yield_now = true;
        }
        if yield_now {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Disconnects every client still open: DISCONNECT written (within [`CLOSE_TIMEOUT`] in
    /// all), then the socket closed.
    async fn close(&mut self) {
        let now = self.shared.clock.core_now();
        let clients = &mut self.clients;
        self.outcome.open_at_end = clients.iter().filter(|client| client.open).count();
        let write_all = async {
            for client in clients.iter_mut().filter(|client| client.open) {
                client.session.conn.disconnect(now);
                client.session.conn.poll_transmit(&mut client.out);
                if client.session.stream.write_all(&client.out).await.is_ok() {
                    client.out.clear();
                    let _ = client.session.stream.shutdown().await;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_all).await;
    }
}

/// Matches a property post's reply to its post, by the `id` it echoes, and checks it: it must
/// come on that post's topic + `_reply` and have code 200. Returns the post's send time (its
/// id), or what is wrong.
fn take_reply(
    poster: &PropertyPoster,
    awaiting: &mut HashMap<u64, usize>,
    message: &Message,
) -> Result<u64, ReplyFault> {
    let topic = message.topic.as_str();
    let Some((id, code)) = read_reply(&message.payload) else {
        return Err(ReplyFault::Unreadable {
            topic: topic.to_owned(),
            payload: shown(&message.payload),
        });
    };
    let Some(turn) = awaiting.remove(&id) else {
        return Err(ReplyFault::Unexpected {
            topic: topic.to_owned(),
            id: id.to_string(),
        });
    };
    let expected = poster.topics.get(turn).map(TopicName::as_str);
    if topic.strip_suffix("_reply") != expected || expected.is_none() {
        return Err(ReplyFault::WrongTopic {
            id: id.to_string(),
            topic: topic.to_owned(),
            expected: format!("{}_reply", expected.unwrap_or_default()),
        });
    }
    if code != 200 {
        let (message, data) = reply_details(&message.payload);
        return Err(ReplyFault::Refused {
            topic: topic.to_owned(),
            id: id.to_string(),
            code,
            message,
            data,
        });
    }
    Ok(id)
}

/// The `id` (a decimal number, in a JSON string or not) and `code` of an Alink reply.
///
/// aliot writes `{"id":"…","code":…,` first, and that is read without a JSON parser: the
/// generator reads hundreds of thousands of replies a second on one core. Any other reply is
/// parsed whole.
///
/// ```
/// use aliot_benches::loadgen::group::read_reply;
///
/// let reply = br#"{"id":"1234","code":200,"message":"success","data":{}}"#;
/// assert_eq!(read_reply(reply), Some((1234, 200)));
/// let reordered = br#"{"code":460,"data":{"code":1},"id":7}"#;
/// assert_eq!(read_reply(reordered), Some((7, 460)));
/// assert_eq!(read_reply(b"{}"), None);
/// ```
#[must_use]
pub fn read_reply(payload: &[u8]) -> Option<(u64, i64)> {
    fn digits(text: &[u8]) -> Option<(u64, &[u8])> {
        let end = text.iter().position(|byte| !byte.is_ascii_digit())?;
        let (number, rest) = text.split_at(end);
        let number = std::str::from_utf8(number).ok()?.parse().ok()?;
        Some((number, rest))
    }
    let fast = || {
        let (id, rest) = digits(payload.strip_prefix(br#"{"id":""#)?)?;
        let (code, rest) = digits(rest.strip_prefix(br#"","code":"#)?)?;
        matches!(rest.first(), Some(b',' | b'}')).then_some((id, i64::try_from(code).ok()?))
    };
    fast().or_else(|| {
        let reply: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let id = match reply.get("id")? {
            serde_json::Value::String(id) => id.parse().ok()?,
            id => id.as_u64()?,
        };
        Some((id, reply.get("code")?.as_i64()?))
    })
}

/// An Alink reply's `message` and its `data` as JSON text (each empty when absent), to say
/// why a request was refused.
#[must_use]
pub fn reply_details(payload: &[u8]) -> (String, String) {
    let reply = serde_json::from_slice::<serde_json::Value>(payload).unwrap_or_default();
    let message = reply.get("message").and_then(|message| message.as_str());
    let data = reply.get("data").map(ToString::to_string);
    (
        message.unwrap_or_default().to_owned(),
        data.unwrap_or_default(),
    )
}

/// At most 200 bytes of a payload, as text, for an error message.
#[must_use]
pub fn shown(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload.get(..200).unwrap_or(payload)).into_owned()
}

/// The sans-IO core's instant for a run-clock reading.
fn core_instant(now_ns: u64) -> aliot_core::Instant {
    aliot_core::Instant::from_millis(now_ns / 1_000_000)
}
