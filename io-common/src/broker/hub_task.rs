//! The hub task: the one owner of the [`Hub`], fed by a channel, answering through channels.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aliot_auth::DeviceIdentity;
use aliot_core::Message;
use aliot_core::codec::PacketId;
use aliot_core::hub::{
    self, BacklogMessage, ConnId, ConsumerId, DeviceDelivery, GatewayReply, Hub, HubOutput,
    ServerPublished, UnknownConsumerGroup,
};
use aliot_core::server::{CloseReason, Command, Event};
use aliot_services::UnixMillis;
use aliot_services::forward::LifecycleAction;
use aliot_topic::{MessageId, TopicName};
use bytes::Bytes;
use tokio_sync::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tracing::warn;

use super::cluster::{ClusterLink, OwnershipChange};
use super::handle::{RrpcReply, Stats, StoreStats};
use super::mailbox::CommandSender;
use super::stopped;
use super::store_writer::StoreWriter;
use crate::registry::Registry;
use crate::runtime::{Clock, Runtime, far_future};

/// Requests handled in one go before the outputs are dispatched.
const BATCH: usize = 256;

/// At most one log warning about dropped messages per this much time.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What the hub task is asked to do.
pub(crate) enum HubRequest {
    /// A new connection's command channel; sent before any of its events.
    Register {
        conn: ConnId,
        commands: CommandSender,
    },
    /// An event of a connection, with the room it takes in the queue (given back once
    /// handled; none for a close the connection's task reports as it fails).
    Event {
        conn: ConnId,
        event: Event,
        room: Option<OwnedSemaphorePermit>,
    },
    /// Several events of a connection (those of one read), in order, with their room.
    Events {
        conn: ConnId,
        events: Vec<Event>,
        room: Option<OwnedSemaphorePermit>,
    },
    /// An RRPC call; the reply comes when the call ends.
    Rrpc {
        device: DeviceIdentity,
        payload: Bytes,
        timeout: Duration,
        topic: Option<TopicName>,
        reply: oneshot::Sender<Result<RrpcReply, hub::InvalidRrpcCall>>,
    },
    /// A server-side publish to every subscriber.
    Publish {
        message: Message,
        reply: oneshot::Sender<ServerPublished>,
    },
    /// A server-side publish to one device.
    PublishToDevice {
        device: DeviceIdentity,
        message: Message,
        reply: oneshot::Sender<DeviceDelivery>,
    },
    /// The counters and gauges now.
    Stats { reply: oneshot::Sender<Stats> },
    /// A synchronous service call: an RRPC call whose reply comes when it ends.
    ServiceSync {
        device: DeviceIdentity,
        identifier: String,
        args: serde_json::Value,
        timeout: Duration,
        reply: oneshot::Sender<Result<RrpcReply, hub::InvalidRrpcCall>>,
    },
    /// Anything else the server side asks of the hub that is answered at once (the
    /// platform's services: property set, shadow, OTA, queries). The closure answers through
    /// the channel it holds.
    Call(HubCall),
    /// A consumer of a consumer group attaches; its messages go to `deliveries`.
    AttachConsumer {
        group: String,
        /// A relay ([`Hub::attach_relay`](aliot_core::hub::Hub::attach_relay)), not a
        /// consumer here.
        relay: bool,
        deliveries: mpsc::UnboundedSender<ConsumerDelivery>,
        reply: oneshot::Sender<Result<ConsumerId, UnknownConsumerGroup>>,
    },
    /// What a consumer says: credit, a settlement, a release, its end. Answered by nothing.
    Consumer(ConsumerId, ConsumerAnswer),
}

/// A message handed to a consumer: the message, and whether a consumer had it before.
pub type ConsumerDelivery = (Arc<BacklogMessage>, bool);

/// What a consumer of a consumer group tells the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerAnswer {
    /// It may take this many more messages.
    Credit(u32),
    /// It answered this message: settled (accepted) it, or gave it back (released, rejected,
    /// modified); and it may take `credit` more (one request for both, per message).
    Answered {
        message_id: u64,
        settled: bool,
        credit: u32,
    },
    /// It answered these messages alike, and may take one more for each.
    AnsweredAll {
        message_ids: Vec<u64>,
        settled: bool,
    },
    /// It went away.
    Detached,
}

/// A server-side call run on the hub at `now`; what it returns sends its answer, once the
/// store has committed what the call changed.
pub(crate) type HubCall = Box<dyn FnOnce(&mut Hub, aliot_core::Instant) -> Reply + Send>;

/// Sends an answer to a server-side caller.
pub(crate) type Reply = Box<dyn FnOnce() + Send>;

/// Something that goes out once the store has committed a batch.
enum AfterCommit {
    /// A PUBACK to a publisher.
    Ack(ConnId, PacketId),
    /// An answer to a server-side caller.
    Reply(Reply),
    /// A command to a connection (a registration's grant).
    Command(ConnId, Command),
    /// A gateway request's answer (a sub-device's secret, a topology change).
    GatewayReply(GatewayReply),
}

/// The hub and the channels its outputs go to.
pub(crate) struct HubTask<R: Runtime> {
    runtime: R,
    hub: Hub,
    clock: Clock,
    connections: HashMap<ConnId, CommandSender>,
    rrpc_callers: HashMap<MessageId, oneshot::Sender<Result<RrpcReply, hub::InvalidRrpcCall>>>,
    /// The drop counters (queue full, slow consumer) as of the last warning, and when it was.
    drops_warned: (u64, u64),
    last_drop_warning: Option<Instant>,
    /// Whether [`dispatch`](Self::dispatch) hands out PUBACKs first (read from the runtime
    /// the task runs on, when it starts).
    acks_first: bool,
    /// Scratch for [`dispatch`](Self::dispatch): the commands of its second pass.
    dispatch_later: Vec<(ConnId, Command)>,
    /// The store's writer, when the broker keeps one.
    store: Option<StoreWriter>,
    /// The last batch of changes the store committed.
    committed: u64,
    /// PUBACKs and answers waiting for the commit of a batch (its number first), in order.
    after_commit: VecDeque<(u64, AfterCommit)>,
    /// Answers given in this turn, sent once its changes are committed.
    turn_replies: Vec<AfterCommit>,
    /// The registry, whose devices are activated at their first connect.
    registry: Option<Registry>,
    /// Where each attached consumer's messages go.
    consumers: HashMap<ConsumerId, mpsc::UnboundedSender<ConsumerDelivery>>,
    /// The cluster this broker is a node of: told which devices' sessions the hub holds.
    cluster: Option<Arc<dyn ClusterLink>>,
}

impl<R: Runtime> HubTask<R> {
    /// The task of `hub` (restored from `store` when there is one).
    pub(crate) fn new(
        hub: Hub,
        clock: Clock,
        runtime: R,
        store: Option<StoreWriter>,
        registry: Option<Registry>,
        cluster: Option<Arc<dyn ClusterLink>>,
    ) -> Self {
        HubTask {
            cluster,
            runtime,
            hub,
            clock,
            connections: HashMap::new(),
            rrpc_callers: HashMap::new(),
            drops_warned: (0, 0),
            last_drop_warning: None,
            acks_first: false,
            dispatch_later: Vec::new(),
            store,
            committed: 0,
            after_commit: VecDeque::new(),
            turn_replies: Vec::new(),
            registry,
            consumers: HashMap::new(),
        }
    }

    /// Runs until `stop` is raised (or its sender dropped), then shuts the hub down (each
    /// connection gets its close, then its mailbox is dropped, which is how it learns that
    /// nothing more comes), raises `stop_connections` for TLS handshakes still under way and
    /// leaves the last statistics in `final_stats` for handles that ask later.
    pub(crate) async fn run(
        mut self,
        mut requests: mpsc::Receiver<HubRequest>,
        mut stop: watch::Receiver<bool>,
        stop_connections: watch::Sender<bool>,
        final_stats: Arc<Mutex<Option<Stats>>>,
    ) {
        self.acks_first = self.runtime.runs_last_woken_first();
        let mut batch = Vec::with_capacity(BATCH);
        // One timer, moved as the hub's deadline moves.
        let mut timer = self.runtime.timer(far_future());
        let mut timer_at = None;
        let mut committed = self.store.as_mut().and_then(StoreWriter::take_committed);
        loop {
            let wake = self
                .hub
                .poll_timeout()
                .map(|at| self.clock.deadline(at))
                .into_iter()
                .chain(self.drop_warning_due())
                .min();
            if wake != timer_at {
                if let Some(at) = wake {
                    self.runtime.reset_timer(&mut timer, at);
                }
                timer_at = wake;
            }
            tokio_sync::select! {
                biased;
                () = stopped(&mut stop) => break,
                received = requests.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        // Every sender is gone: nothing can reach the hub any more.
                        break;
                    }
                    let now = self.clock.now();
                    self.hub.set_wall_clock(wall_clock());
                    for request in batch.drain(..) {
                        self.handle(request, now);
                    }
                    // A steady stream of requests must not starve the deadlines.
                    self.after_wake(now);
                }
                batch = next_commit(&mut committed) => {
                    self.committed_up_to(batch);
                    // Gateway replies released by the commit are the hub's outputs now.
                    self.dispatch();
                }
                _ = &mut timer, if timer_at.is_some() => {
                    // Set again before the next wait, whatever the deadline is then.
                    timer_at = None;
                    self.hub.set_wall_clock(wall_clock());
                    self.after_wake(self.clock.now());
                }
            }
        }
        self.shutdown();
        self.warn_of_drops(true);
        *final_stats.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.stats());
        stop_connections.send_replace(true);
        // Requests still queued are dropped: their callers learn that the broker stopped, and
        // connections not yet registered see their mailbox closed. Closed first, so that a
        // request sent through a slot reserved just before is dropped too rather than kept in
        // the channel (with its mailbox) until the last sender goes; connections never hold a
        // slot across a wait, so this ends at once.
        requests.close();
        while requests.recv().await.is_some() {}
    }

    fn handle(&mut self, request: HubRequest, now: aliot_core::Instant) {
        match request {
            HubRequest::Register { conn, commands } => {
                self.connections.insert(conn, commands);
            }
            // The room is given back once the events are handled (at the end of the arm).
            HubRequest::Event {
                conn,
                event,
                room: _room,
            } => self.handle_event(conn, event, now),
            HubRequest::Events {
                conn,
                events,
                room: _room,
            } => {
                for event in events {
                    self.handle_event(conn, event, now);
                }
            }
            HubRequest::Rrpc {
                device,
                payload,
                timeout,
                topic,
                reply,
            } => match self
                .hub
                .rrpc_call(&device, payload, timeout, topic.as_ref(), now)
            {
                // Registered before the outputs are drained: an OFFLINE or HALFCONN outcome
                // is among them already.
                Ok(id) => {
                    self.rrpc_callers.insert(id, reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            HubRequest::Publish { message, reply } => {
                let published = self.hub.publish(message, now);
                self.reply(Box::new(move || {
                    let _ = reply.send(published);
                }));
            }
            HubRequest::PublishToDevice {
                device,
                message,
                reply,
            } => {
                let delivery = self.hub.publish_to_device(&device, message, now);
                self.reply(Box::new(move || {
                    let _ = reply.send(delivery);
                }));
            }
            HubRequest::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            HubRequest::ServiceSync {
                device,
                identifier,
                args,
                timeout,
                reply,
            } => match self
                .hub
                .invoke_service_sync(&device, &identifier, &args, timeout, now)
            {
                Ok(id) => {
                    self.rrpc_callers.insert(id, reply);
                }
                Err(hub::InvalidServiceCall::Rrpc(error)) => {
                    let _ = reply.send(Err(error));
                }
                // The handle checks identifiers before it asks; one that is not makes no topic.
                Err(hub::InvalidServiceCall::Identifier(_)) => {
                    let _ = reply.send(Err(hub::InvalidRrpcCall::InvalidTopic));
                }
            },
            HubRequest::Call(call) => {
                let reply = call(&mut self.hub, now);
                self.reply(reply);
            }
            HubRequest::AttachConsumer {
                group,
                relay,
                deliveries,
                reply,
            } => {
                let attached = match relay {
                    true => self.hub.attach_relay(&group),
                    false => self.hub.attach_consumer(&group),
                };
                if let Ok(consumer) = attached {
                    self.consumers.insert(consumer, deliveries);
                }
                if reply.send(attached.clone()).is_err()
                    && let Ok(consumer) = attached
                {
                    // The consumer gave up waiting.
                    self.detach_consumer(consumer);
                }
            }
            HubRequest::Consumer(consumer, answer) => match answer {
                ConsumerAnswer::Credit(credit) => self.hub.consumer_credit(consumer, credit),
                ConsumerAnswer::Answered {
                    message_id,
                    settled,
                    credit,
                } => {
                    match settled {
                        true => self.hub.forward_settled(consumer, message_id),
                        false => self.hub.forward_released(consumer, message_id),
                    }
                    if credit > 0 {
                        self.hub.consumer_credit(consumer, credit);
                    }
                }
                ConsumerAnswer::AnsweredAll {
                    message_ids,
                    settled,
                } => {
                    let credit = u32::try_from(message_ids.len()).unwrap_or(u32::MAX);
                    // Newest first: each one given back goes to the front of its group's
                    // line, so the batch ends there oldest first, as it was handed out.
                    for message_id in message_ids.into_iter().rev() {
                        match settled {
                            true => self.hub.forward_settled(consumer, message_id),
                            false => self.hub.forward_released(consumer, message_id),
                        }
                    }
                    self.hub.consumer_credit(consumer, credit);
                }
                ConsumerAnswer::Detached => self.detach_consumer(consumer),
            },
        }
    }

    fn handle_event(&mut self, conn: ConnId, event: Event, now: aliot_core::Instant) {
        if let (Event::RegistrationRequested(request), Some(registry)) = (&event, &self.registry) {
            // Answered here, by the registry: the grant goes out once the new credentials
            // are committed (a device must never hold a secret the broker could forget).
            match registry.register_dynamically(request, wall_clock()) {
                Ok(registered) => {
                    self.hub.record_store_change(registered.change());
                    if registered.created {
                        let created = LifecycleAction::Create;
                        self.hub.forward_lifecycle(&registered.device, created, now);
                    }
                    let command = AfterCommit::Command(conn, Command::Registered(registered.grant));
                    match self.store {
                        Some(_) => self.turn_replies.push(command),
                        None => self.release(command),
                    }
                }
                Err(refused) => {
                    let refusal = aliot_core::Refusal::registration(refused);
                    self.send_command(conn, Command::Refuse(refusal));
                }
            }
            return;
        }
        if let Some(registry) = &self.registry
            && let Event::GatewayRequest {
                request,
                message,
                packet_id,
            } = event
        {
            // Decided by the hub with the registry; answered once what it changed (a
            // topology, a sub-device's secret) is committed.
            let reply = self
                .hub
                .handle_gateway_request(conn, *request, message, packet_id, registry, now);
            if let Some(reply) = reply {
                match self.store {
                    Some(_) => self.turn_replies.push(AfterCommit::GatewayReply(reply)),
                    None => self.hub.send_gateway_reply(reply, now),
                }
            }
            return;
        }
        // A registered device is activated at its first connect (the platform's GmtActive).
        if let (Event::SessionRequested(request), Some(registry)) = (&event, &self.registry)
            && let Some(device) = request.key.device()
            && let Some(change) = registry.activated(device, wall_clock())
        {
            self.hub.record_store_change(change);
        }
        let closed = matches!(event, Event::Closed(_));
        self.hub.handle_event(conn, event, now);
        if closed {
            // Nothing more goes to a closed connection.
            self.connections.remove(&conn);
        }
    }

    /// Hands every output of the hub to its connection or RRPC caller.
    ///
    /// The hub gives its outputs in the order things happen; which connection runs first is
    /// ours to choose. A subscriber's delivery should not wait behind the PUBACK that its
    /// message freed for the publisher, since the subscriber is the one behind. So the commands
    /// are handed out in two passes, the PUBACKs in one and the rest in the other, in whichever
    /// order makes the deliveries' connections run first: deliveries first where woken tasks
    /// run in order (smol, tokio's current-thread scheduler), PUBACKs first where the last task
    /// woken runs first (tokio's multi-thread scheduler); `benches/README.md` has what it
    /// gained. Commands to one connection keep their order but for PUBACKs, which MQTT does
    /// not order against other packets.
    fn dispatch(&mut self) {
        let acks_first = self.acks_first;
        let mut later = mem::take(&mut self.dispatch_later);
        while let Some(output) = self.hub.poll_output() {
            match output {
                HubOutput::Connection {
                    conn,
                    command: Command::AckPublish(packet_id),
                } if self.waits_for_commit() => {
                    let batch = self.store.as_ref().map_or(0, StoreWriter::sent);
                    self.after_commit
                        .push_back((batch, AfterCommit::Ack(conn, packet_id)));
                }
                HubOutput::Connection { conn, command } => {
                    let is_ack = matches!(command, Command::AckPublish(_));
                    if is_ack == acks_first {
                        self.send_command(conn, command);
                    } else {
                        later.push((conn, command));
                    }
                }
                HubOutput::Forward {
                    consumer,
                    message,
                    redelivery,
                } => {
                    let gone = self
                        .consumers
                        .get(&consumer)
                        .is_none_or(|to| to.send((message, redelivery)).is_err());
                    if gone {
                        // Its task ended without saying so: what it held goes to the others
                        // (the hub's next outputs, dispatched on the next turn).
                        self.detach_consumer(consumer);
                    }
                }
                HubOutput::Claim {
                    device,
                    clean_session,
                } => {
                    if let Some(cluster) = &self.cluster {
                        cluster.ownership_changed(OwnershipChange::Claimed {
                            device,
                            clean_session,
                        });
                    }
                }
                HubOutput::Release { device } => {
                    if let Some(cluster) = &self.cluster {
                        cluster.ownership_changed(OwnershipChange::Released { device });
                    }
                }
                HubOutput::ConsumersHere { group, present } => {
                    if let Some(cluster) = &self.cluster {
                        cluster.consumers_here(&group, present);
                    }
                }
                HubOutput::RrpcOutcome { id, outcome } => {
                    if let Some(caller) = self.rrpc_callers.remove(&id) {
                        // The caller may have given up (an HTTP client that went away).
                        let _ = caller.send(Ok(RrpcReply {
                            message_id: id,
                            outcome,
                        }));
                    }
                }
            }
        }
        for (conn, command) in later.drain(..) {
            self.send_command(conn, command);
        }
        self.dispatch_later = later;
    }

    /// A consumer went away: the hub gives what it held to the others.
    fn detach_consumer(&mut self, consumer: ConsumerId) {
        self.consumers.remove(&consumer);
        self.hub.detach_consumer(consumer);
    }

    fn send_command(&mut self, conn: ConnId, command: Command) {
        if let Some(commands) = self.connections.get(&conn)
            && commands.send(command).is_err()
        {
            // The task is gone; its close reaches the hub as an event.
            self.connections.remove(&conn);
        }
    }

    /// After requests or the timer: the hub's deadlines that are due, every output to its
    /// destination, a drop warning if one is due.
    fn after_wake(&mut self, now: aliot_core::Instant) {
        if self.hub.poll_timeout().is_some_and(|at| at <= now) {
            self.hub.handle_timeout(now);
        }
        // A consumer whose task ended (its receiver dropped) holds nothing any more.
        let gone: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|(_, to)| to.is_closed())
            .map(|(consumer, _)| *consumer)
            .collect();
        for consumer in gone {
            self.detach_consumer(consumer);
        }
        self.commit_turn();
        self.dispatch();
        self.warn_of_drops(false);
    }

    /// The drop counters this warning is about: queue full, slow consumer.
    fn drops_counted(&self) -> (u64, u64) {
        let dropped = &self.hub.counters().dropped;
        (dropped.queue_full, dropped.slow_consumer)
    }

    /// When the next warning about dropped messages is due, if any were dropped since the
    /// last one: at once for the first, else [`DROP_WARNING_INTERVAL`] after the last.
    fn drop_warning_due(&self) -> Option<Instant> {
        if self.drops_counted() == self.drops_warned {
            return None;
        }
        Some(
            self.last_drop_warning
                .map_or_else(Instant::now, |at| at + DROP_WARNING_INTERVAL),
        )
    }

    /// Says in the log that messages were dropped for a full session queue or a device that
    /// does not read, when a warning is due (`at_end`: the broker is stopping, so now): the
    /// counters say it too, but an operator who does not watch them should not lose messages
    /// silently.
    fn warn_of_drops(&mut self, at_end: bool) {
        let Some(due) = self.drop_warning_due() else {
            return;
        };
        let now = Instant::now();
        if !at_end && due > now {
            return;
        }
        let counted = self.drops_counted();
        warn!(
            queue_full = counted.0 - self.drops_warned.0,
            slow_consumer = counted.1 - self.drops_warned.1,
            "messages dropped since the last warning: QoS 1 from session queues over \
             [limits] max_queued_messages / max_queued_bytes (the oldest go first), QoS 0 for \
             devices not reading their output"
        );
        self.drops_warned = counted;
        self.last_drop_warning = Some(now);
    }

    /// Hands the changes of this turn to the store's writer, and holds this turn's answers
    /// until they are committed.
    fn commit_turn(&mut self) {
        let Some(writer) = &mut self.store else {
            return;
        };
        if self.hub.has_store_changes() {
            let mut changes = Vec::new();
            self.hub.take_store_changes(&mut changes);
            writer.send(changes);
        }
        let batch = writer.sent();
        for out in mem::take(&mut self.turn_replies) {
            if batch > self.committed {
                self.after_commit.push_back((batch, out));
            } else {
                self.release(out);
            }
        }
    }

    /// Whether a PUBACK given now waits for a commit (durability `immediate` with a batch not
    /// yet committed).
    fn waits_for_commit(&self) -> bool {
        self.store
            .as_ref()
            .is_some_and(|writer| writer.acks_wait() && writer.sent() > self.committed)
    }

    /// Answers a server-side caller: at once, or with this turn's commit.
    fn reply(&mut self, reply: Reply) {
        match self.store.as_ref().is_some_and(StoreWriter::acks_wait) {
            true => self.turn_replies.push(AfterCommit::Reply(reply)),
            false => reply(),
        }
    }

    /// The store committed every batch up to `batch`: what waited for them goes out.
    fn committed_up_to(&mut self, batch: u64) {
        self.committed = self.committed.max(batch);
        while let Some((waits_for, _)) = self.after_commit.front() {
            if *waits_for > self.committed {
                break;
            }
            let Some((_, out)) = self.after_commit.pop_front() else {
                break;
            };
            self.release(out);
        }
    }

    /// Sends what waited for a commit.
    fn release(&mut self, out: AfterCommit) {
        match out {
            AfterCommit::Ack(conn, packet_id) => {
                self.send_command(conn, Command::AckPublish(packet_id));
            }
            AfterCommit::Reply(reply) => reply(),
            AfterCommit::Command(conn, command) => self.send_command(conn, command),
            AfterCommit::GatewayReply(reply) => {
                self.hub.send_gateway_reply(reply, self.clock.now());
            }
        }
    }

    fn shutdown(&mut self) {
        // What the hub changed goes to disk before the connections learn the broker stops.
        self.commit_turn();
        if let Some(writer) = &mut self.store {
            writer.stop();
            let committed = writer.status().committed_batch.load(Ordering::Relaxed);
            self.committed_up_to(committed);
        }
        self.hub.shutdown();
        self.dispatch();
        // Connections still waiting for their session are not the hub's yet: close them too
        // (a second close of one the hub closed is ignored).
        for (_, commands) in self.connections.drain() {
            let _ = commands.send(Command::Close(CloseReason::ServerShutdown));
        }
        self.rrpc_callers.clear();
    }

    fn stats(&self) -> Stats {
        Stats {
            counters: self.hub.counters().clone(),
            connections: self.hub.connection_count(),
            sessions: self.hub.session_count(),
            pending_rrpc: self.hub.pending_rrpc_calls(),
            held_acks: self.hub.held_ack_count(),
            consumer_groups: self.hub.consumer_group_stats(),
            store: self.store.as_ref().map(|writer| {
                let status = writer.status();
                StoreStats {
                    commits: status.commits.load(Ordering::Relaxed),
                    changes: status.changes.load(Ordering::Relaxed),
                    failures: status.failures.load(Ordering::Relaxed),
                    failing: status.failing.load(Ordering::Relaxed),
                    waiting: self.after_commit.len(),
                }
            }),
        }
    }
}

/// The wall clock for the hub's services, in ms since the Unix epoch (0 if the system clock
/// is before it).
fn wall_clock() -> UnixMillis {
    UnixMillis(super::wall_clock_ms().unwrap_or(0))
}

/// The number of the next batch the store commits (waits forever without a store, or once
/// its writer is gone).
async fn next_commit(committed: &mut Option<watch::Receiver<u64>>) -> u64 {
    if let Some(receiver) = committed {
        if receiver.changed().await.is_ok() {
            return *receiver.borrow_and_update();
        }
        *committed = None;
    }
    std::future::pending().await
}
