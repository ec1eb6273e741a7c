//! The broker on any [`Runtime`]: listeners (TCP, TLS), one hub task, one task per connection, graceful
//! shutdown, and a [`BrokerHandle`] for the server side (RRPC, publish, statistics).
//!
//! # How the work is split
//!
//! - **One hub task** owns the sans-IO [`Hub`]: sessions, routing,
//!   takeover, offline queues and RRPC correlation. It takes requests from one bounded channel
//!   (connection events, the registration of a connection's command channel, RRPC calls with a
//!   oneshot reply, publishes, statistics), a batch at a time, and after each batch dispatches
//!   every [`HubOutput`](aliot_core::hub::HubOutput): a command to the named connection, an RRPC
//!   outcome to its waiting caller. When idle it sleeps until the hub's next deadline. It never
//!   waits on a connection (commands go out through unbounded mailboxes, whose depth the hub's
//!   in-flight window and the connections' QoS 0 limit keep bounded), so it cannot deadlock
//!   with them.
//! - **One task per connection** owns a [`server::Connection`](aliot_core::server::Connection)
//!   and its socket (plain TCP or futures-rustls). It forwards the connection's events to the hub,
//!   applies the hub's commands, reads only while the connection
//!   [wants input](aliot_core::server::Connection::wants_input), and takes output from the
//!   connection only once the previous output is fully written, so that the connection's own
//!   limits (dropping QoS 0 for a device that does not read, stopping reading from it) apply.
//!
//! Work that scales with bytes (decoding, encoding, TLS, the HMAC of authentication, ACL
//! checks) thereby runs in the connection tasks, on every core of a multi-thread runtime; the
//! hub does only the cheap bookkeeping that must be consistent.
//!
//! # Shutdown
//!
//! [`Broker::shutdown`] stops accepting (which stops the services started beside the broker
//! with [`Broker::spawn_service`], such as `aliot_tokio`'s HTTP API), then has the hub close
//! every connection with
//! [`CloseReason::ServerShutdown`](aliot_core::server::CloseReason::ServerShutdown) and end
//! pending RRPC calls as `UNKNOWN`; each connection writes out what it has (never half a
//! packet), closes its write side (TLS `close_notify`) and ends. The broker waits for that and
//! for the services, at most [`CLOSE_LINGER`] plus a second, then aborts what is left.
//!
//! ```
//! use std::sync::Arc;
//! use aliot_auth::MemoryRegistry;
//! use aliot_core::PlatformAuthenticator;
//! use aliot_io::broker::{Broker, BrokerConfig, ListenerConfig};
//! use aliot_tokio::Tokio;
//!
//! # #[tokio_sync::main(crate = "tokio_sync", flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let authenticator = PlatformAuthenticator::new(MemoryRegistry::new()).with_open_mode(true);
//! let broker = Broker::<Tokio>::start(BrokerConfig {
//!     listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse()?)],
//!     server: Default::default(),
//!     hub: Default::default(),
//!     authenticator: Arc::new(authenticator),
//!     max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
//!     store: None,
//!     registry: None,
//!     cluster: None,
//! })
//! .await?;
//! let (addr, tls) = broker.listener_addrs()[0];
//! assert!(addr.port() != 0 && !tls);
//! assert_eq!(broker.handle().stats().await.connections, 0);
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod cluster;
mod connection;
mod handle;
mod hub_task;
mod mailbox;
#[cfg(feature = "openssl")]
mod openssl_tls;
mod store_writer;
mod tls;
pub mod tls_records;
mod websocket;

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aliot_core::Authenticator;
use aliot_core::hub::{ConnId, Hub, HubConfig};
use aliot_core::server::ServerConfig;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio_sync::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{info, warn};

pub use handle::{
    BrokerHandle, BrokerStopped, GroupConsumer, PublishError, RrpcError, RrpcReply, ServiceError,
    Stats, StoreStats, TransportStats,
};
pub use hub_task::ConsumerDelivery;
pub use tls::{TlsConfigError, load_tls_config, tls_config};

use self::connection::{ConnectionShared, Layers};
use self::handle::TransportCounters;
use self::hub_task::HubTask;
use self::store_writer::StoreWriter;
use crate::registry::Registry;
use crate::runtime::{Clock, Runtime, sleep, spawn_guarded, timeout_at};
use crate::store::{StoreConfig, StoreError};

/// How long a closing connection may take to write its last bytes and close its write side
/// before its socket is dropped (a device that stops reading cannot hold a task forever).
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Requests waiting for the hub task, at most; beyond, connection tasks (and server-side
/// callers) wait, which slows down whoever publishes faster than the hub routes.
const HUB_QUEUE: usize = 4096;

/// Connection events waiting for the hub task, at most (a request carries the events of one
/// read, so the queue's bound in requests alone would let a few fast publishers pile up
/// hundreds of thousands of messages): beyond, connection tasks wait before they send more
/// and stop reading meanwhile, so an overloaded hub slows its publishers down (TCP
/// back-pressure) instead of flooding its subscribers until QoS 0 is dropped. One hub wake
/// then delivers at most this many messages' worth to a subscriber, well within its
/// `max_pending_output`.
pub(crate) const HUB_QUEUED_EVENTS: u32 = 4096;

/// After a failed `accept` (out of file descriptors, for instance), wait this long before the
/// next, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log warning per listener about connections refused at the cap per this much
/// time.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Everything a broker needs to start.
#[derive(Clone)]
pub struct BrokerConfig {
    /// The MQTT listeners, plain TCP or TLS.
    pub listeners: Vec<ListenerConfig>,
    /// Per-connection limits (packet size, topic length, connect timeout, output backlog).
    pub server: ServerConfig,
    /// The hub's limits (in-flight window, queue limits, session expiry). RRPC message ids
    /// stay fresh across restarts: with a store, they continue after the block it reserved;
    /// without, when `first_rrpc_message_id` is left at its default (1), the broker seeds it
    /// from the wall clock in milliseconds.
    pub hub: HubConfig,
    /// Who may connect, e.g. `PlatformAuthenticator::new(registry).with_open_mode(open)`.
    pub authenticator: Arc<dyn Authenticator + Send + Sync>,
    /// The most connections the broker holds at once, over all listeners, each counted from
    /// its accept to the end of its task (TLS handshake and CONNECT included). One more is
    /// closed as soon as it is accepted, before anything is read from it; it is logged and
    /// counted ([`BrokerHandle::connections_refused_at_cap`]).
    /// [`DEFAULT_MAX_CONNECTIONS`](Self::DEFAULT_MAX_CONNECTIONS) unless there is a reason.
    pub max_connections: NonZeroUsize,
    /// Where sessions, queued messages and the devices' service state are kept across
    /// restarts ([`crate::store`]); `None`: in memory only, lost when the broker stops.
    pub store: Option<StoreConfig>,
    /// The device registry the authenticator reads, when it is one the server side may change
    /// (the OpenAPI's products and devices): with a store, what the store kept is merged into
    /// it at start, and a device is activated at its first connect. `None`: the authenticator
    /// is all there is.
    pub registry: Option<Registry>,
    /// The cluster this broker is a node of ([`cluster`]), if any: its hub then reports which
    /// devices' sessions it holds ([`HubConfig::cluster`] is set), and calls to devices it
    /// holds no session for go to the node that does.
    pub cluster: Option<Arc<dyn cluster::ClusterLink>>,
}

impl BrokerConfig {
    /// The connection cap of the `aliot` command when its configuration sets none: 1,000,000,
    /// about 1.8 GB of idle connections, a cap that protects the machine rather than one
    /// that a platform should reach.
    pub const DEFAULT_MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(1_000_000).unwrap();
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("listeners", &self.listeners)
            .field("server", &self.server)
            .field("hub", &self.hub)
            .field("max_connections", &self.max_connections)
            .field("store", &self.store)
            .field("registry", &self.registry)
            .field("cluster", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

/// One MQTT listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Where to listen (port 0: any free port, see [`Broker::listener_addrs`]).
    pub bind: SocketAddr,
    /// TLS on this listener, e.g. from [`load_tls_config`]; plain TCP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// MQTT over WebSocket (over TLS when [`tls`](Self::tls) or [`openssl`](Self::openssl)
    /// is set: `wss`) at this path; MQTT straight on the stream when `None`.
    pub websocket: Option<WebSocketListener>,
    /// TLS through OpenSSL instead of rustls: TLS-PSK, or certificates with TLS 1.0 and 1.1
    /// allowed (feature `openssl`; without it the broker refuses to start such a listener).
    /// Not with [`tls`](Self::tls).
    pub openssl: Option<OpenSslTls>,
}

impl ListenerConfig {
    /// MQTT over plain TCP on `bind`.
    pub fn tcp(bind: SocketAddr) -> Self {
        ListenerConfig {
            bind,
            tls: None,
            websocket: None,
            openssl: None,
        }
    }

    /// Whether the listener speaks TLS, through rustls or OpenSSL.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some() || self.openssl.is_some()
    }
}

/// A listener's TLS through OpenSSL ([`ListenerConfig::openssl`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenSslTls {
    /// TLS-PSK, the platform's "TCP plus symmetric encryption" (PLATFORM-PROTOCOLS §7): TLS
    /// 1.2 with `TLS_PSK_WITH_AES_128_CBC_SHA` only, no certificate; the identity names the
    /// device and the key is derived from its secret (`aliot_auth::PskIdentity`). An unknown
    /// identity is refused in the handshake (and counted); the CONNECT that follows must be
    /// the same device's, signed as usual.
    Psk,
    /// Certificate TLS from `min_version` up to 1.3, for fleets whose firmware speaks nothing
    /// newer than TLS 1.0 or 1.1 (deprecated by RFC 8996; a warning at start, and each such
    /// handshake logged and counted by version).
    Legacy {
        /// The PEM certificate chain.
        cert: PathBuf,
        /// The PEM private key.
        key: PathBuf,
        /// The oldest version accepted.
        min_version: LegacyTlsVersion,
    },
}

/// The oldest TLS version a legacy listener accepts ([`OpenSslTls::Legacy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyTlsVersion {
    /// TLS 1.0 (and 1.1, 1.2, 1.3).
    Tls1_0,
    /// TLS 1.1 (and 1.2, 1.3).
    Tls1_1,
}

impl std::fmt::Display for LegacyTlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LegacyTlsVersion::Tls1_0 => "1.0",
            LegacyTlsVersion::Tls1_1 => "1.1",
        })
    }
}

/// The cipher suite of TLS-PSK listeners and the client's TLS-PSK, as IANA names it.
pub const PSK_CIPHER_SUITE: &str = "TLS_PSK_WITH_AES_128_CBC_SHA";

/// Whether this build has OpenSSL's listeners ([`ListenerConfig::openssl`]) and the device
/// client's TLS-PSK: the cargo feature `openssl`.
pub const OPENSSL_AVAILABLE: bool = cfg!(feature = "openssl");

/// Checks what an OpenSSL listener needs before the broker starts: that this build has
/// OpenSSL, and that a legacy listener's certificate and key load.
pub fn check_openssl_tls(tls: &OpenSslTls) -> Result<(), BrokerError> {
    #[cfg(feature = "openssl")]
    {
        match tls {
            OpenSslTls::Psk => Ok(()),
            OpenSslTls::Legacy {
                cert,
                key,
                min_version,
            } => openssl_tls::check_legacy(cert, key, *min_version).map_err(BrokerError::OpenSsl),
        }
    }
    #[cfg(not(feature = "openssl"))]
    {
        let _ = tls;
        Err(BrokerError::OpenSslUnavailable)
    }
}

/// The WebSocket side of a listener ([`ListenerConfig::websocket`]): the HTTP upgrade at
/// [`path`](Self::path) with the subprotocol `mqtt` (or `mqttv3.1`), then MQTT in binary
/// messages, with the same limits, authentication and ACL as over TCP. A request that is no
/// such upgrade is answered with an HTTP error saying why (400, or 404 for another path) and
/// closed; the upgrade and the CONNECT together must come within the connect timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocketListener {
    /// The request path, e.g. [`DEFAULT_PATH`](Self::DEFAULT_PATH); a query string after it
    /// is ignored.
    pub path: String,
}

impl WebSocketListener {
    /// The path when the configuration names none: `/mqtt`, as most MQTT brokers and clients
    /// use (the platform's Node SDK builds `wss://host:443/` by itself; give it a
    /// `brokerUrl` with the path, or set the path to `/`).
    pub const DEFAULT_PATH: &str = "/mqtt";
}

impl Default for WebSocketListener {
    fn default() -> Self {
        WebSocketListener {
            path: Self::DEFAULT_PATH.to_owned(),
        }
    }
}

/// A listener as bound ([`Broker::listeners`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundListener {
    /// The address bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Whether it speaks TLS (rustls, or OpenSSL's TLS-PSK or legacy versions).
    pub tls: bool,
    /// Whether its TLS is TLS-PSK.
    pub psk: bool,
    /// The oldest TLS version it accepts, when below 1.2.
    pub legacy_tls: Option<LegacyTlsVersion>,
    /// The WebSocket path, when it takes MQTT over WebSocket.
    pub websocket_path: Option<String>,
}

impl BoundListener {
    /// How a client reaches it, e.g. `mqtt://127.0.0.1:1883` or `wss://127.0.0.1:443/mqtt`.
    pub fn url(&self) -> String {
        let addr = self.addr;
        match (&self.websocket_path, self.tls) {
            (None, false) => format!("mqtt://{addr}"),
            (None, true) => format!("mqtts://{addr}"),
            (Some(path), false) => format!("ws://{addr}{path}"),
            (Some(path), true) => format!("wss://{addr}{path}"),
        }
    }
}

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An MQTT listener could not be bound.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    BindListener {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's writer thread could not be started.
    #[error("cannot start the store's writer thread: {0}")]
    StoreThread(io::Error),
    /// A listener has both `tls` (rustls) and `openssl`.
    #[error("the listener on {0} has both rustls and OpenSSL TLS: give it one")]
    TwoTlsStacks(SocketAddr),
    /// A listener needs OpenSSL and this build has none.
    #[error(
        "TLS-PSK and TLS before 1.2 need OpenSSL, and this build of aliot has none: build it with the cargo feature `openssl`"
    )]
    OpenSslUnavailable,
    /// OpenSSL refused a listener's setup (a certificate or key it cannot load).
    #[cfg(feature = "openssl")]
    #[error(transparent)]
    OpenSsl(#[from] openssl_tls::OpenSslSetupError),
}

/// A signal the broker raises once, when it stops accepting (or is dropped): what a service
/// started beside it ([`Broker::spawn_service`]) stops on.
#[derive(Clone, Debug)]
pub struct StopSignal {
    receiver: watch::Receiver<bool>,
}

impl StopSignal {
    /// Returns once the signal is raised.
    pub async fn raised(mut self) {
        stopped(&mut self.receiver).await;
    }
}

/// A running broker on the runtime `R`. See the [module docs](self).
///
/// Dropping it without [`shutdown`](Self::shutdown) stops it too, without waiting.
pub struct Broker<R: Runtime> {
    runtime: R,
    listeners: Vec<BoundListener>,
    handle: BrokerHandle,
    /// What the broker was started with, for the services started beside it.
    server: ServerConfig,
    authenticator: Arc<dyn Authenticator + Send + Sync>,
    stop_accepting: watch::Sender<bool>,
    stop_hub: watch::Sender<bool>,
    accept_tasks: Vec<R::Task>,
    /// Each accept task hands its connection tasks over here when it ends.
    connection_sets: mpsc::UnboundedReceiver<FuturesUnordered<R::Task>>,
    hub_task: R::Task,
    /// The services started beside the broker ([`Broker::spawn_service`]), with their names.
    services: Vec<(&'static str, R::Task)>,
}

impl<R: Runtime> std::fmt::Debug for Broker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Broker<R> {
    /// Binds every listener, spawns the hub and accept tasks on the caller's runtime
    /// (`R::default()`); returns once bound.
    ///
    /// Nothing is left running when it fails: the error names the address that could not be
    /// bound.
    pub async fn start(config: BrokerConfig) -> Result<Broker<R>, BrokerError> {
        Self::start_on(R::default(), config).await
    }

    /// The same, on this runtime handle.
    pub async fn start_on(runtime: R, config: BrokerConfig) -> Result<Broker<R>, BrokerError> {
        let cap = ConnectionCap::new(config.max_connections);
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let addr = listener.bind;
            if listener.tls.is_some() && listener.openssl.is_some() {
                return Err(BrokerError::TwoTlsStacks(addr));
            }
            // Without OpenSSL such a listener is refused; with it, making the acceptor is the
            // check (a certificate or key it cannot load).
            #[cfg(not(feature = "openssl"))]
            if listener.openssl.is_some() {
                return Err(BrokerError::OpenSslUnavailable);
            }
            #[cfg(feature = "openssl")]
            let openssl = match &listener.openssl {
                Some(tls) => Some(openssl_tls::OpenSslAcceptor::new(
                    tls,
                    Arc::clone(&config.authenticator),
                    Arc::clone(&cap.counters),
                )?),
                None => None,
            };
            if let Some(OpenSslTls::Legacy { min_version, .. }) = &listener.openssl {
                warn!(
                    %addr,
                    %min_version,
                    "the listener accepts TLS from {min_version}, deprecated by RFC 8996: keep it for devices that cannot be upgraded"
                );
            }
            let socket = runtime
                .bind(addr)
                .await
                .map_err(|source| BrokerError::BindListener { addr, source })?;
            let local = runtime
                .local_addr(&socket)
                .map_err(|source| BrokerError::BindListener { addr, source })?;
            bound.push((
                socket,
                local,
                listener.clone(),
                #[cfg(feature = "openssl")]
                openssl,
            ));
        }

        let clock = Clock::start();
        let mut hub_config = config.hub.clone();
        hub_config.cluster |= config.cluster.is_some();
        // With a store, ids continue from the block it reserved; without, the clock keeps them
        // fresh across restarts.
        if config.store.is_none()
            && hub_config.first_rrpc_message_id == HubConfig::default().first_rrpc_message_id
        {
            hub_config.first_rrpc_message_id = wall_clock_ms().unwrap_or(1).max(1);
        }
        let (requests, requests_rx) = mpsc::channel(HUB_QUEUE);
        let (stop_hub, stop_hub_rx) = watch::channel(false);
        let (stop_connections, stop_connections_rx) = watch::channel(false);
        let (stop_accepting, stop_accepting_rx) = watch::channel(false);
        let final_stats = Arc::new(Mutex::new(None));
        let handle = BrokerHandle::new(
            requests.clone(),
            Arc::clone(&final_stats),
            Arc::clone(&cap.counters),
            config.registry.clone(),
            config.cluster.clone(),
        );

        let mut hub = Hub::new(hub_config);
        let store = match &config.store {
            Some(store) => Some(restore(
                store,
                &mut hub,
                &*config.authenticator,
                config.registry.as_ref(),
                clock.now(),
            )?),
            None => None,
        };
        let hub = HubTask::new(
            hub,
            clock,
            runtime.clone(),
            store,
            config.registry.clone(),
            config.cluster.clone(),
        );
        let hub_task = runtime.spawn(hub.run(
            requests_rx,
            stop_hub_rx,
            stop_connections,
            Arc::clone(&final_stats),
        ));
        let shared = Arc::new(ConnectionShared {
            runtime: runtime.clone(),
            server: config.server.clone(),
            authenticator: Arc::clone(&config.authenticator),
            hub: requests,
            hub_room: Arc::new(Semaphore::new(HUB_QUEUED_EVENTS as usize)),
            clock,
            stop: stop_connections_rx,
        });
        let next_conn = Arc::new(AtomicU64::new(1));
        let (connection_sets_tx, connection_sets) = mpsc::unbounded_channel();
        let mut listeners = Vec::with_capacity(bound.len());
        let mut accept_tasks = Vec::with_capacity(bound.len());
        for bound_listener in bound {
            #[cfg(feature = "openssl")]
            let (socket, local, listener, openssl) = bound_listener;
            #[cfg(not(feature = "openssl"))]
            let (socket, local, listener) = bound_listener;
            let is_tls = listener.is_tls();
            let layers = Layers {
                tls: listener.tls,
                #[cfg(feature = "openssl")]
                openssl,
                websocket: listener
                    .websocket
                    .as_ref()
                    .map(|websocket| Arc::from(websocket.path.as_str())),
            };
            let bound = BoundListener {
                addr: local,
                tls: is_tls,
                psk: listener.openssl == Some(OpenSslTls::Psk),
                legacy_tls: match &listener.openssl {
                    Some(OpenSslTls::Legacy { min_version, .. }) => Some(*min_version),
                    _ => None,
                },
                websocket_path: listener.websocket.map(|websocket| websocket.path),
            };
            info!(url = %bound.url(), "listening for MQTT");
            listeners.push(bound);
            accept_tasks.push(runtime.spawn(accept_loop(
                AcceptLoop {
                    listener: socket,
                    local,
                    layers,
                    shared: Arc::clone(&shared),
                    cap: cap.clone(),
                    next_conn: Arc::clone(&next_conn),
                },
                stop_accepting_rx.clone(),
                connection_sets_tx.clone(),
            )));
        }
        Ok(Broker {
            runtime,
            listeners,
            handle,
            server: config.server,
            authenticator: config.authenticator,
            stop_accepting,
            stop_hub,
            accept_tasks,
            connection_sets,
            hub_task,
            services: Vec::new(),
        })
    }

    /// The addresses actually bound (port 0 resolved), in the order of the configuration, each
    /// with whether it speaks TLS.
    pub fn listener_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners
            .iter()
            .map(|listener| (listener.addr, listener.tls))
            .collect()
    }

    /// The listeners as bound, in the order of the configuration: address, TLS, WebSocket.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The per-connection limits the broker was started with (the topic limits among them).
    pub fn server_config(&self) -> &ServerConfig {
        &self.server
    }

    /// The authenticator the broker was started with.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator + Send + Sync> {
        &self.authenticator
    }

    /// Runs a service beside the broker, in a task of its own on the broker's runtime: the
    /// future `start_service` makes of the [`StopSignal`] it is given, which is raised when the
    /// broker stops accepting. [`shutdown`](Self::shutdown) waits for the service's end after
    /// the connections', within the same deadline, and aborts it (with a warning naming it) if
    /// it is not done by then.
    ///
    /// This is how `aliot_tokio` adds its HTTP API to a tokio broker: the broker itself knows
    /// nothing of HTTP.
    pub fn spawn_service<F>(
        &mut self,
        name: &'static str,
        start_service: impl FnOnce(StopSignal) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = StopSignal {
            receiver: self.stop_accepting.subscribe(),
        };
        let task = self.runtime.spawn(start_service(stop));
        self.services.push((name, task));
    }

    /// A handle for the server side: RRPC calls, publishes, statistics. It can be cloned and
    /// sent anywhere; once the broker has stopped its calls end with "broker stopped".
    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
    }

    /// Graceful shutdown: stop accepting, close every connection (nothing half-written), end
    /// pending RRPC calls (`UNKNOWN`), and wait for the tasks (at most [`CLOSE_LINGER`] plus a
    /// second, then what is left is aborted).
    pub async fn shutdown(self) {
        let Broker {
            runtime,
            stop_accepting,
            stop_hub,
            accept_tasks,
            mut connection_sets,
            hub_task,
            services,
            ..
        } = self;
        stop_accepting.send_replace(true);
        let mut connections = Vec::new();
        for task in accept_tasks {
            task.await;
        }
        // Each accept task handed its connections over as it ended.
        while let Ok(tasks) = connection_sets.try_recv() {
            connections.push(tasks);
        }
        stop_hub.send_replace(true);
        hub_task.await;
        let deadline = Instant::now() + CLOSE_LINGER + Duration::from_secs(1);
        let mut left = 0;
        for mut tasks in connections {
            while let Some(Some(())) = timeout_at(&runtime, deadline, tasks.next()).await {}
            left += tasks.len();
            for task in tasks {
                runtime.abort(task);
            }
        }
        if left > 0 {
            warn!(
                connections = left,
                "connections still closing at the deadline were aborted"
            );
        }
        for (service, mut task) in services {
            if timeout_at(&runtime, deadline, &mut task).await.is_none() {
                runtime.abort(task);
                warn!(
                    service,
                    "a service still running at the deadline was aborted"
                );
            }
        }
        info!("broker stopped");
    }
}

/// The cap on the connections the broker holds at once ([`BrokerConfig::max_connections`]),
/// shared by every accept loop: a connection's task holds a permit from its accept to its end.
#[derive(Clone)]
struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: NonZeroUsize,
    /// Where connections closed at their accept because every permit was taken are counted
    /// (with what the handshakes count); the [`BrokerHandle`] reads it.
    counters: Arc<TransportCounters>,
}

impl ConnectionCap {
    fn new(max: NonZeroUsize) -> Self {
        ConnectionCap {
            // A cap the semaphore cannot count to is no cap: no broker holds that many.
            permits: Arc::new(Semaphore::new(max.get().min(Semaphore::MAX_PERMITS))),
            max,
            counters: Arc::new(TransportCounters::default()),
        }
    }

    /// A permit for one more connection, or `None` (counted) when the broker holds its
    /// maximum already.
    ///
    /// An owned permit is an `Arc` of the semaphore and a count, 16 bytes in the connection's
    /// task: taking one clones the `Arc`, it allocates nothing.
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.counters.refused_at_cap.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// The log warnings of one listener about connections refused at the cap: the first at once,
/// then at most one per [`CAP_WARNING_INTERVAL`], each with the number refused since the one
/// before. (Refusals after the last warning of a flood are in the counter, not the log.)
#[derive(Default)]
struct CapWarnings {
    last: Option<Instant>,
    unreported: u64,
}

impl CapWarnings {
    fn refused(&mut self, listener: SocketAddr, max_connections: NonZeroUsize) {
        self.unreported += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now < last + CAP_WARNING_INTERVAL)
        {
            return;
        }
        warn!(
            %listener,
            refused = self.unreported,
            max_connections,
            "connections closed at once: the broker holds [limits] max_connections already"
        );
        self.last = Some(now);
        self.unreported = 0;
    }
}

/// What one accept loop accepts on and hands its connections.
struct AcceptLoop<R: Runtime> {
    listener: R::Listener,
    local: SocketAddr,
    layers: Layers,
    shared: Arc<ConnectionShared<R>>,
    cap: ConnectionCap,
    next_conn: Arc<AtomicU64>,
}

/// Accepts connections until told to stop, then hands its connection tasks over to the broker,
/// which waits for them once the hub has closed them.
///
/// A connection over the cap is closed as soon as it is accepted, before its CONNECT (or TLS
/// handshake) is read.
async fn accept_loop<R: Runtime>(
    accepting: AcceptLoop<R>,
    mut stop: watch::Receiver<bool>,
    hand_over: mpsc::UnboundedSender<FuturesUnordered<R::Task>>,
) {
    let AcceptLoop {
        listener,
        local,
        layers,
        shared,
        cap,
        next_conn,
    } = accepting;
    let runtime = shared.runtime.clone();
    let mut tasks = FuturesUnordered::new();
    let mut cap_warnings = CapWarnings::default();
    loop {
        tokio_sync::select! {
            () = stopped(&mut stop) => break,
            // Finished connection tasks are reaped as they end.
            Some(()) = tasks.next(), if !tasks.is_empty() => {}
            accepted = runtime.accept(&listener) => match accepted {
                Ok((stream, peer)) => {
                    let Some(permit) = cap.admit() else {
                        drop(stream);
                        cap_warnings.refused(local, cap.max);
                        continue;
                    };
                    let conn = ConnId(next_conn.fetch_add(1, Ordering::Relaxed));
                    // The permit is released when the connection's future is done or dropped
                    // (it ended, failed, or was aborted).
                    let serve = connection::serve(Arc::clone(&shared), conn, stream, peer, layers.clone())
                        .map(move |()| drop(permit));
                    // A connection task that fails must not leave its session attached to
                    // nothing: the hub hears of it as a closed transport.
                    let lost_shared = Arc::clone(&shared);
                    let lost = move || connection::report_lost(lost_shared, conn);
                    tasks.push(spawn_guarded(&runtime, serve, lost));
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    sleep(&runtime, ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    // Gone only when the broker was dropped: the tasks then run on detached.
    let _ = hand_over.send(tasks);
}

/// Returns once `stop` is raised, or its sender is gone (the broker was dropped).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in a caller's `select!`.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Milliseconds since the Unix epoch, if the wall clock is after it.
pub fn wall_clock_ms() -> Option<u64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

/// Opens the store, gives the hub what it kept, commits what the restore changed (expired
/// sessions and messages removed, the next RRPC ids reserved) and starts its writer: all
/// before any listener accepts.
fn restore(
    config: &StoreConfig,
    hub: &mut Hub,
    authenticator: &(dyn Authenticator + Send + Sync),
    registry: Option<&Registry>,
    now: aliot_core::Instant,
) -> Result<StoreWriter, BrokerError> {
    let started = Instant::now();
    let mut store = config.open()?;
    let mut image = store.load()?;
    let loaded = started.elapsed();
    hub.record_store_changes();
    hub.set_wall_clock(aliot_services::UnixMillis(wall_clock_ms().unwrap_or(0)));
    // The registry first: the sessions' ACLs come from it.
    if let Some(registry) = registry {
        for change in registry.merge_kept(&mut image) {
            hub.record_store_change(change);
        }
    }
    let restored = hub.restore(&image, |key| authenticator.session_acl(key), now);
    drop(image);
    let mut changes = Vec::new();
    hub.take_store_changes(&mut changes);
    store.commit(&changes, true)?;
    info!(
        location = %store_location(config),
        durability = %config.durability,
        sessions = restored.sessions,
        messages = restored.messages,
        devices = restored.devices,
        expired_sessions = restored.expired_sessions,
        dropped_messages = restored.dropped_messages,
        read_ms = loaded.as_millis() as u64,
        took_ms = started.elapsed().as_millis() as u64,
        "store restored"
    );
    StoreWriter::start(store, config.durability).map_err(BrokerError::StoreThread)
}

/// Where a store is, for the log.
fn store_location(config: &StoreConfig) -> String {
    match &config.location {
        crate::store::StoreLocation::Directory(dir) => dir.display().to_string(),
        crate::store::StoreLocation::Memory(_) => "memory".into(),
    }
}
