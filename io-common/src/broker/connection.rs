//! One task per connection: a [`Connection`] and its socket, talking to the hub task.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use aliot_auth::DeviceIdentity;
use aliot_core::hub::ConnId;
use aliot_core::server::{CloseReason, Command, Connection, Event, ServerConfig};
use aliot_core::{AuthContext, Authenticator, ClientKey};
use bytes::{Buf as _, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::TryFutureExt as _;
use futures_util::future::Either;
use futures_util::io::AsyncWriteExt as _;
use tokio_sync::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, watch};
use tracing::{debug, info};

use super::hub_task::HubRequest;
use super::mailbox::mailbox;
use super::websocket;
use super::{CLOSE_LINGER, HUB_QUEUED_EVENTS, stopped, wall_clock_ms};
use crate::runtime::{Clock, Runtime, far_future, timeout_at};

/// Bytes read from the socket at a time, into the thread's scratch buffer.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where every connection task on this thread reads into. A read hands its bytes to the
    /// [`Connection`] (which appends them to its own buffer until decoded) before it returns,
    /// so no bytes stay here between reads and an idle connection holds no read buffer of its
    /// own.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// After closing the write side, unread bytes of the device are read and dropped, at most this
/// many, so that closing does not reset the connection before the device has read our last
/// packets (a CONNACK refusal, say).
const DRAIN_LIMIT: usize = 64 * 1024;

/// What every connection task shares.
pub(crate) struct ConnectionShared<R: Runtime> {
    pub(crate) runtime: R,
    pub(crate) server: ServerConfig,
    pub(crate) authenticator: Arc<dyn Authenticator + Send + Sync>,
    pub(crate) hub: mpsc::Sender<HubRequest>,
    /// Room for connection events in the hub's queue, a permit an event
    /// ([`HUB_QUEUED_EVENTS`]): taken before a request is sent, given back once the hub has
    /// handled it.
    pub(crate) hub_room: Arc<Semaphore>,
    pub(crate) clock: Clock,
    /// Raised by the hub task once it has sent its last commands. Connections learn it from
    /// their mailbox (the hub drops it after its last command); TLS handshakes, which have no
    /// mailbox yet, watch this.
    pub(crate) stop: watch::Receiver<bool>,
}

/// What a listener puts between the socket and MQTT: TLS, WebSocket, both or neither. Cloned
/// for each connection (both are reference-counted).
#[derive(Clone, Default)]
pub(crate) struct Layers {
    /// The TLS configuration, when the listener speaks TLS through rustls (the handshake) and
    /// [`tls_records`](super::tls_records) (the records after it).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The TLS handshake, when the listener speaks TLS through OpenSSL (PSK, legacy versions).
    #[cfg(feature = "openssl")]
    pub(crate) openssl: Option<super::openssl_tls::OpenSslAcceptor>,
    /// The WebSocket path, when the listener takes MQTT over WebSocket.
    pub(crate) websocket: Option<Arc<str>>,
}

/// Serves one accepted socket: TLS handshake and WebSocket upgrade if configured, then the
/// connection loop.
///
/// A plain function around the loop rather than an `async fn` of its own, so that the task
/// holds the loop's state once, not the loop plus this function's copy of its arguments.
pub(crate) fn serve<R: Runtime>(
    shared: Arc<ConnectionShared<R>>,
    conn: ConnId,
    stream: R::Tcp,
    peer: SocketAddr,
    layers: Layers,
) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(feature = "openssl")]
    let plain = layers.tls.is_none() && layers.openssl.is_none() && layers.websocket.is_none();
    #[cfg(not(feature = "openssl"))]
    let plain = layers.tls.is_none() && layers.websocket.is_none();
    // The connect timeout runs from here: the handshakes, the upgrade and the CONNECT share it.
    let accepted = shared.clock.now();
    if plain {
        Either::Left(run(shared, conn, peer, accepted, false, None, stream))
    } else {
        Either::Right(serve_layered(shared, conn, stream, peer, accepted, layers))
    }
}

/// A byte stream with layers (TLS, WebSocket) over the socket, on the heap.
trait LayeredStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LayeredStream for T {}

/// What [`open_layers`] made: the stream MQTT runs on, and what its TLS proved.
struct Opened {
    stream: Box<dyn LayeredStream>,
    /// Whether there is TLS under MQTT.
    tls: bool,
    /// The device a TLS-PSK handshake proved.
    psk_device: Option<Arc<DeviceIdentity>>,
}

/// The layers' handshakes, then the connection loop over what they made.
///
/// The handshakes run in a future of their own on the heap, freed before the loop starts: they
/// need several KiB (a TLS handshake, an HTTP request head, tungstenite's setup) that an idle
/// connection must not keep. The loop holds the layered stream boxed, at its exact size, so
/// this future is hardly larger than a plain connection's.
async fn serve_layered<R: Runtime>(
    shared: Arc<ConnectionShared<R>>,
    conn: ConnId,
    stream: R::Tcp,
    peer: SocketAddr,
    accepted: aliot_core::Instant,
    layers: Layers,
) {
    let opened = Box::pin(open_layers(&shared, conn, stream, peer, accepted, layers)).await;
    let Some(Opened {
        stream,
        tls,
        psk_device,
    }) = opened
    else {
        return;
    };
    run(shared, conn, peer, accepted, tls, psk_device, stream).await;
}

/// The TLS handshake and the WebSocket upgrade, as configured, within the connect timeout
/// counted from the accept (the CONNECT that follows has what is left of it); `None`
/// (logged) when one failed, took too long, or the broker is stopping.
async fn open_layers<R: Runtime>(
    shared: &ConnectionShared<R>,
    conn: ConnId,
    stream: R::Tcp,
    peer: SocketAddr,
    accepted: aliot_core::Instant,
    layers: Layers,
) -> Option<Opened> {
    let deadline = shared
        .clock
        .deadline(accepted + shared.server.connect_timeout);
    let websocket = layers.websocket;
    #[cfg(feature = "openssl")]
    if let Some(acceptor) = layers.openssl {
        let handshake = acceptor.accept(stream, peer);
        let (stream, psk_device) =
            before_mqtt(shared, conn, peer, deadline, "TLS handshake", handshake).await?;
        return upgrade_if(
            shared, conn, peer, deadline, websocket, true, psk_device, stream,
        )
        .await;
    }
    match layers.tls {
        Some(config) => {
            let handshake =
                super::tls_records::accept(config, stream).map_err(explain_rustls_refusal);
            let stream =
                before_mqtt(shared, conn, peer, deadline, "TLS handshake", handshake).await?;
            upgrade_if(shared, conn, peer, deadline, websocket, true, None, stream).await
        }
        None => upgrade_if(shared, conn, peer, deadline, websocket, false, None, stream).await,
    }
}

/// After the TLS handshake (if any): the WebSocket upgrade when the listener takes WebSocket.
#[allow(
    clippy::too_many_arguments,
    reason = "one step of open_layers, with its state passed along"
)]
async fn upgrade_if<R: Runtime, S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    shared: &ConnectionShared<R>,
    conn: ConnId,
    peer: SocketAddr,
    deadline: Instant,
    websocket: Option<Arc<str>>,
    tls: bool,
    psk_device: Option<Arc<DeviceIdentity>>,
    stream: S,
) -> Option<Opened> {
    let stream: Box<dyn LayeredStream> = match websocket {
        None => Box::new(stream),
        Some(path) => {
            let max_packet_size = shared.server.max_packet_size;
            let upgrade = websocket::accept(stream, &path, max_packet_size);
            Box::new(before_mqtt(shared, conn, peer, deadline, "WebSocket upgrade", upgrade).await?)
        }
    };
    Some(Opened {
        stream,
        tls,
        psk_device,
    })
}

/// A rustls handshake error, with what to do when the client speaks no TLS version the
/// listener does (an old client offering only TLS 1.0 or 1.1). Other refusals (no cipher
/// suite or key exchange group in common, say) are left as rustls words them.
fn explain_rustls_refusal(error: io::Error) -> io::Error {
    use rustls::PeerIncompatible;
    let old_version = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| {
            matches!(
                inner,
                rustls::Error::PeerIncompatible(
                    PeerIncompatible::Tls12NotOffered
                        | PeerIncompatible::Tls12NotOfferedOrEnabled
                        | PeerIncompatible::SupportedVersionsExtensionRequired
                        | PeerIncompatible::SignatureAlgorithmsExtensionRequired
                )
            )
        });
    if !old_version {
        return error;
    }
    io::Error::new(
        error.kind(),
        format!(
            "refused: the client speaks neither TLS 1.2 nor 1.3 ({error}); TLS 1.0 and 1.1 are \
             refused unless the listener sets tls.min_version = \"1.0\" or \"1.1\""
        ),
    )
}

/// Runs `step` (a TLS handshake or a WebSocket upgrade) until `deadline`, unless the broker
/// stops first; `None` (logged, naming `what`) when it failed, took too long or was abandoned.
async fn before_mqtt<R: Runtime, T, E: std::fmt::Display>(
    shared: &ConnectionShared<R>,
    conn: ConnId,
    peer: SocketAddr,
    deadline: Instant,
    what: &'static str,
    step: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    let mut stop = shared.stop.clone();
    let step = timeout_at(&shared.runtime, deadline, step);
    tokio_sync::select! {
        done = step => match done {
            Some(Ok(stream)) => Some(stream),
            Some(Err(error)) => {
                info!(conn = conn.0, %peer, %error, "{what} failed");
                None
            }
            None => {
                info!(conn = conn.0, %peer, "{what} not done within the connect timeout");
                None
            }
        },
        () = stopped(&mut stop) => {
            debug!(conn = conn.0, %peer, "{what} abandoned: the broker is stopping");
            None
        }
    }
}

/// Tells the hub that a connection's task ended without its close reaching the hub (the task
/// failed), so that its session does not stay attached to nothing.
pub(crate) async fn report_lost<R: Runtime>(shared: Arc<ConnectionShared<R>>, conn: ConnId) {
    let event = Event::Closed(CloseReason::TransportClosed);
    // No room is taken: a close must reach the hub even when its queue is at its bound.
    let request = HubRequest::Event {
        conn,
        event,
        room: None,
    };
    let _ = shared.hub.send(request).await;
}

/// A slot in the hub's queue, for the request that is built once it is there (so that the
/// wait holds no request). At once when the queue has room; else the wait is on the heap,
/// since a wait for a slot would otherwise be sized into every connection's task. `None`: the
/// hub task has ended.
async fn hub_slot(hub: &mpsc::Sender<HubRequest>) -> Option<mpsc::Permit<'_, HubRequest>> {
    match hub.try_reserve() {
        Ok(permit) => Some(permit),
        Err(mpsc::error::TrySendError::Full(())) => Box::pin(hub.reserve()).await.ok(),
        Err(mpsc::error::TrySendError::Closed(())) => None,
    }
}

/// Room in the hub's queue for `count` events (the whole queue's at most), held until the hub
/// has handled them. At once when there is room; else the wait is on the heap, as in
/// [`hub_slot`]. `None`: the room was closed (it is not, while the broker runs).
async fn hub_room(room: &Arc<Semaphore>, count: usize) -> Option<OwnedSemaphorePermit> {
    let count = u32::try_from(count)
        .unwrap_or(u32::MAX)
        .clamp(1, HUB_QUEUED_EVENTS);
    match Arc::clone(room).try_acquire_many_owned(count) {
        Ok(permit) => Some(permit),
        Err(TryAcquireError::NoPermits) => Box::pin(Arc::clone(room).acquire_many_owned(count))
            .await
            .ok(),
        Err(TryAcquireError::Closed) => None,
    }
}

/// How far one write step got.
enum Progress {
    /// This many bytes went into the stream; a flush is due once the buffer is empty.
    Wrote(usize),
    /// Everything written is on its way (TLS records included).
    Flushed,
}

/// What one step of [`transport`] did.
enum Step {
    /// A read: bytes handed over (their count), or the end of the stream (0).
    Read(io::Result<usize>),
    /// A write or a flush.
    Wrote(io::Result<Progress>),
}

/// One step on the stream, whichever can go first: read into the thread's scratch buffer and
/// hand what came to `take` (when `reading`; not called at the end of the stream), or write
/// some of `out`, or flush it once it is empty (when `writing`). `write_first` says which is
/// tried first, so that the caller can alternate. One stream, not split halves: no lock
/// between them and nothing more to allocate. Cancel-safe: bytes are taken and written only by
/// the poll that returns.
fn transport<'a, S, F>(
    stream: &'a mut S,
    out: &'a mut BytesMut,
    reading: bool,
    writing: bool,
    write_first: bool,
    mut take: F,
) -> impl Future<Output = Step> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&[u8]) + 'a,
{
    poll_fn(move |cx| {
        for write_turn in [write_first, !write_first] {
            if write_turn && writing {
                if let Poll::Ready(step) = poll_write_or_flush(&mut *stream, out, cx) {
                    return Poll::Ready(Step::Wrote(step));
                }
            } else if !write_turn
                && reading
                && let Poll::Ready(step) = poll_read_into(&mut *stream, cx, &mut take)
            {
                return Poll::Ready(Step::Read(step));
            }
        }
        Poll::Pending
    })
}

/// Writes some of `out`, or flushes when it is empty.
fn poll_write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Progress>> {
    if out.is_empty() {
        return Pin::new(writer)
            .poll_flush(cx)
            .map_ok(|()| Progress::Flushed);
    }
    Pin::new(writer)
        .poll_write(cx, out)
        .map(|written| match written? {
            0 => Err(io::ErrorKind::WriteZero.into()),
            written => {
                out.advance(written);
                Ok(Progress::Wrote(written))
            }
        })
}

/// Reads once into the thread's scratch buffer and hands what came to `take` (not called at the
/// end of the stream).
fn poll_read_into<S: AsyncRead + Unpin>(
    reader: &mut S,
    cx: &mut Context<'_>,
    take: &mut impl FnMut(&[u8]),
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let read = Pin::new(reader).poll_read(cx, scratch);
        if let Poll::Ready(Ok(n)) = read {
            // A reader claiming more than the buffer holds is broken: the stream cannot be
            // trusted after it.
            let Some(data) = scratch.get(..n) else {
                return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
            };
            if !data.is_empty() {
                take(data);
            }
        }
        read
    })
}

/// The connection loop. See the module docs of [`crate::broker`] for its shape.
///
/// A plain function returning an `async move` block: the block keeps its arguments where they
/// were captured, where an `async fn` would also copy each into a local of its own.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice in every connection's task"
)]
fn run<R: Runtime, S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    shared: Arc<ConnectionShared<R>>,
    conn: ConnId,
    peer: SocketAddr,
    accepted: aliot_core::Instant,
    tls: bool,
    psk_device: Option<Arc<DeviceIdentity>>,
    mut stream: S,
) -> impl Future<Output = ()> + Send + 'static {
    // Built out here, so that the block captures the log and not its parts a second time.
    let mut log = ConnectionLog {
        conn,
        peer,
        tls,
        key: None,
    };
    async move {
        let clock = shared.clock;
        let (commands_tx, mut commands) = mailbox();
        let Some(permit) = hub_slot(&shared.hub).await else {
            debug!(conn = log.conn.0, peer = %log.peer, "connection dropped: the broker is stopping");
            return;
        };
        permit.send(HubRequest::Register {
            conn: log.conn,
            commands: commands_tx,
        });
        let context = AuthContext {
            wall_clock_ms: wall_clock_ms(),
            tls: log.tls,
            client_ip: Some(log.peer.ip()),
            psk_device,
        };
        let mut connection = Connection::new(
            shared.server.clone(),
            Arc::clone(&shared.authenticator),
            context,
            accepted,
        );
        let runtime = &shared.runtime;
        // One timer for the connection's life, moved as its deadline moves.
        let mut timer = runtime.timer(far_future());
        let mut timer_at = None;
        let mut out = BytesMut::new();
        let mut needs_flush = false;
        let mut hub_reachable = true;
        let mut transport_failed = false;
        let mut closing_deadline = None;
        let mut write_first = false;
        loop {
            if connection.has_event() {
                // Room and a slot first, then the events: the wait holds none (the task stays
                // small). Every event of the read in one request: a device that pipelines many
                // PUBLISHes in one read costs one slot and one wake of the hub, not one each;
                // the room is counted in events, so the hub's backlog stays bounded in
                // messages. While this waits, nothing is read: the device is slowed down.
                let room = if hub_reachable {
                    hub_room(&shared.hub_room, connection.event_count()).await
                } else {
                    None
                };
                let permit = match room {
                    Some(_) => hub_slot(&shared.hub).await,
                    None => None,
                };
                let request = connection.poll_event().map(|first| {
                    log.event(&first);
                    if !connection.has_event() {
                        return HubRequest::Event {
                            conn: log.conn,
                            event: first,
                            room,
                        };
                    }
                    let mut events = vec![first];
                    while let Some(event) = connection.poll_event() {
                        log.event(&event);
                        events.push(event);
                    }
                    HubRequest::Events {
                        conn: log.conn,
                        events,
                        room,
                    }
                });
                match (permit, request) {
                    (Some(permit), Some(request)) => permit.send(request),
                    (None, _) if hub_reachable => {
                        hub_reachable = false;
                        connection.handle_command(
                            clock.now(),
                            Command::Close(CloseReason::ServerShutdown),
                        );
                        // The close's own event has nowhere to go.
                        while connection.poll_event().is_some() {}
                    }
                    _ => {}
                }
            }
            if out.is_empty() {
                // Once the last output is written, so that the buffer is taken whole rather
                // than copied onto the end of another. The connection's limits (QoS 0 drops,
                // no reading) count what it handed out until we report it written.
                connection.poll_transmit(&mut out);
            }
            if connection.is_closed() {
                if out.is_empty() && !needs_flush {
                    break;
                }
                closing_deadline.get_or_insert_with(|| Instant::now() + CLOSE_LINGER);
            }
            let wake = match closing_deadline {
                Some(deadline) => Some(deadline),
                None => connection.poll_timeout().map(|at| clock.deadline(at)),
            };
            if wake != timer_at {
                if let Some(at) = wake {
                    runtime.reset_timer(&mut timer, at);
                }
                timer_at = wake;
            }
            let reading = connection.wants_input();
            let writing = !out.is_empty() || needs_flush;
            // Reads and writes take turns at going first.
            write_first = !write_first;
            let take = |data: &[u8]| connection.handle_input(clock.now(), data);
            tokio_sync::select! {
                step = transport(&mut stream, &mut out, reading, writing, write_first, take), if reading || writing => match step {
                    Step::Read(Ok(0)) => connection.handle_transport_closed(),
                    Step::Read(Ok(_)) => {}
                    Step::Read(Err(error)) => {
                        debug!(conn = log.conn.0, peer = %log.peer, %error, "read failed");
                        transport_failed = true;
                        connection.handle_transport_closed();
                    }
                    Step::Wrote(Ok(Progress::Wrote(written))) => {
                        connection.handle_written(written);
                        needs_flush = true;
                    }
                    Step::Wrote(Ok(Progress::Flushed)) => {
                        needs_flush = false;
                        // Written out: an idle connection keeps no output buffer.
                        out = BytesMut::new();
                    }
                    Step::Wrote(Err(error)) => {
                        debug!(conn = log.conn.0, peer = %log.peer, %error, "write failed");
                        out.clear();
                        needs_flush = false;
                        transport_failed = true;
                        connection.handle_transport_closed();
                    }
                },
                received = commands.recv_all(), if hub_reachable => {
                    let now = clock.now();
                    if received.is_empty() {
                        // The hub task has ended (it dropped our mailbox): we are being stopped.
                        hub_reachable = false;
                        connection.handle_command(now, Command::Close(CloseReason::ServerShutdown));
                    }
                    for command in received {
                        log.command(&command);
                        connection.handle_command(now, command);
                    }
                },
                _ = &mut timer, if timer_at.is_some() => {
                    // Set again before the next wait, whatever the deadline is then.
                    timer_at = None;
                    if closing_deadline.is_some_and(|deadline| deadline <= Instant::now()) {
                        debug!(conn = log.conn.0, peer = %log.peer, "closing: output not written within the linger time, dropped");
                        transport_failed = true;
                        break;
                    }
                    connection.handle_timeout(clock.now());
                },
            }
        }
        if transport_failed {
            return;
        }
        let remaining = closing_deadline.unwrap_or_else(|| Instant::now() + CLOSE_LINGER);
        // Close our side (TLS close_notify, then FIN), then read what the device still sends until
        // it closes too, so that unread input does not turn our close into a reset.
        // On the heap: once per connection, and no need to size every task for it.
        let _ = Box::pin(timeout_at(runtime, remaining, async {
            stream.close().await?;
            let mut drained = 0;
            while drained < DRAIN_LIMIT {
                match poll_fn(|cx| poll_read_into(&mut stream, cx, &mut |_| {})).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            io::Result::Ok(())
        }))
        .await;
    }
}

/// The log lines of one connection: connect, refusal, close.
struct ConnectionLog {
    conn: ConnId,
    peer: SocketAddr,
    tls: bool,
    key: Option<Arc<ClientKey>>,
}

impl ConnectionLog {
    fn event(&mut self, event: &Event) {
        match event {
            // The session's own key, shared: no copy.
            Event::SessionRequested(request) => self.key = Some(Arc::clone(&request.key)),
            Event::RegistrationRequested(request) => info!(
                conn = self.conn.0,
                peer = %self.peer,
                device = %request.identity,
                kind = ?request.kind,
                "dynamic registration requested"
            ),
            Event::Closed(CloseReason::Refused(refusal)) => info!(
                conn = self.conn.0,
                peer = %self.peer,
                code = refusal.code.to_u8(),
                reason = %refusal.reason,
                "connect refused"
            ),
            Event::Closed(reason) => match &self.key {
                Some(key) => info!(conn = self.conn.0, peer = %self.peer, %key, %reason, "closed"),
                None => {
                    info!(conn = self.conn.0, peer = %self.peer, %reason, "closed before connecting")
                }
            },
            _ => {}
        }
    }

    fn command(&self, command: &Command) {
        if let Command::Registered(grant) = command {
            info!(conn = self.conn.0, peer = %self.peer, topic = grant.topic(), "registered: credentials pushed");
        }
        if let (Command::SessionOpened { session_present }, Some(key)) = (command, &self.key) {
            info!(
                conn = self.conn.0,
                peer = %self.peer,
                tls = self.tls,
                %key,
                session_present,
                "connected"
            );
        }
    }
}
