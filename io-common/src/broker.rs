//! The broker on tokio: listeners (TCP, TLS), one hub task, one task per connection, graceful
//! shutdown, and a [`BrokerHandle`] for the server side (RRPC, publish, statistics).
//!
//! # How the work is split
//!
//! - **One hub task** owns the sans-IO [`Hub`](aliot_core::hub::Hub): sessions, routing,
//!   takeover, offline queues and RRPC correlation. It takes requests from one bounded channel
//!   (connection events, the registration of a connection's command channel, RRPC calls with a
//!   oneshot reply, publishes, statistics), a batch at a time, and after each batch dispatches
//!   every [`HubOutput`](aliot_core::hub::HubOutput): a command to the named connection, an RRPC
//!   outcome to its waiting caller. When idle it sleeps until the hub's next deadline. It never
//!   waits on a connection (commands go out on unbounded channels whose depth the hub's
//!   in-flight window and the connections' QoS 0 limit keep bounded), so it cannot deadlock
//!   with them.
//! - **One task per connection** owns a [`server::Connection`](aliot_core::server::Connection)
//!   and its socket (plain TCP or tokio-rustls). It forwards the connection's events to the hub,
//!   applies the hub's commands, reads only while the connection
//!   [wants input](aliot_core::server::Connection::wants_input), and takes output from the
//!   connection only once the previous output is fully written, so that the connection's own
//!   limits (dropping QoS 0 for a device that does not read, stopping reading from it) apply.
//!
//! Work that scales with bytes (decoding, encoding, TLS, the HMAC of authentication, ACL
//! checks) thereby runs in the connection tasks, on every core of a multi-thread runtime; the
//! hub does only the cheap bookkeeping that must be consistent. The library runs on either
//! runtime flavour.
//!
//! # Shutdown
//!
//! [`Broker::shutdown`] stops accepting (MQTT and HTTP), then has the hub close every connection
//! with [`CloseReason::ServerShutdown`](aliot_core::server::CloseReason::ServerShutdown) and end
//! pending RRPC calls as `UNKNOWN`; each connection writes out what it has (never half a
//! packet), closes its write side (TLS `close_notify`) and ends. The broker waits for that, at
//! most [`CLOSE_LINGER`] plus a second, then aborts what is left.
//!
//! ```
//! use std::sync::Arc;
//! use aliot_auth::MemoryRegistry;
//! use aliot_core::PlatformAuthenticator;
//! use aliot_tokio::broker::{Broker, BrokerConfig, ListenerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let authenticator = PlatformAuthenticator::new(MemoryRegistry::new()).with_open_mode(true);
//! let broker = Broker::start(BrokerConfig {
//!     listeners: vec![ListenerConfig { bind: "127.0.0.1:0".parse()?, tls: None }],
//!     server: Default::default(),
//!     hub: Default::default(),
//!     authenticator: Arc::new(authenticator),
//!     api: None,
//! })
//! .await?;
//! let (addr, tls) = broker.listener_addrs()[0];
//! assert!(addr.port() != 0 && !tls);
//! assert_eq!(broker.handle().stats().await.connections, 0);
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod connection;
mod handle;
mod hub_task;
mod tls;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aliot_core::Authenticator;
use aliot_core::hub::{ConnId, HubConfig};
use aliot_core::server::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

pub use handle::{BrokerHandle, RrpcError, RrpcReply, Stats};
pub use tls::{TlsConfigError, load_tls_config, tls_config};

use self::connection::ConnectionShared;
use self::hub_task::HubTask;

/// How long a closing connection may take to write its last bytes and close its write side
/// before its socket is dropped (a device that stops reading cannot hold a task forever).
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Requests waiting for the hub task, at most; beyond, connection tasks (and server-side
/// callers) wait, which slows down whoever publishes faster than the hub routes.
const HUB_QUEUE: usize = 4096;

/// After a failed `accept` (out of file descriptors, for instance), wait this long before the
/// next, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Everything a broker needs to start.
#[derive(Clone)]
pub struct BrokerConfig {
    /// The MQTT listeners, plain TCP or TLS.
    pub listeners: Vec<ListenerConfig>,
    /// Per-connection limits (packet size, topic length, connect timeout, output backlog).
    pub server: ServerConfig,
    /// The hub's limits (in-flight window, queue limits, session expiry). When
    /// `first_rrpc_message_id` is left at its default (1), the broker seeds it from the wall
    /// clock in milliseconds, so RRPC message ids stay fresh across restarts.
    pub hub: HubConfig,
    /// Who may connect, e.g. `PlatformAuthenticator::new(registry).with_open_mode(open)`.
    pub authenticator: Arc<dyn Authenticator + Send + Sync>,
    /// The HTTP API (see [`crate::api`]); off when `None`.
    pub api: Option<ApiConfig>,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("listeners", &self.listeners)
            .field("server", &self.server)
            .field("hub", &self.hub)
            .field("api", &self.api)
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
}

/// The HTTP API (see [`crate::api`] for its endpoints).
#[derive(Clone)]
pub struct ApiConfig {
    /// Where to listen. The `aliot` command defaults it to loopback: the API can call every
    /// device, so expose it only behind a token.
    pub bind: SocketAddr,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
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
    /// The HTTP API could not be bound.
    #[error("cannot listen for the HTTP API on {addr}: {source}")]
    BindApi {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
}

/// A running broker. See the [module docs](self).
///
/// Dropping it without [`shutdown`](Self::shutdown) stops it too, without waiting.
#[derive(Debug)]
pub struct Broker {
    listeners: Vec<(SocketAddr, bool)>,
    api_addr: Option<SocketAddr>,
    handle: BrokerHandle,
    stop_accepting: watch::Sender<bool>,
    stop_hub: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<JoinSet<()>>>,
    hub_task: JoinHandle<()>,
    api_task: Option<JoinHandle<()>>,
}

impl Broker {
    /// Binds every listener (and the API), spawns the hub and accept tasks; returns once bound.
    ///
    /// Nothing is left running when it fails: the error names the address that could not be
    /// bound.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let addr = listener.bind;
            let socket = TcpListener::bind(addr)
                .await
                .map_err(|source| BrokerError::BindListener { addr, source })?;
            let local = socket
                .local_addr()
                .map_err(|source| BrokerError::BindListener { addr, source })?;
            bound.push((socket, local, listener.tls.clone()));
        }
        let api_socket = match &config.api {
            Some(api) => {
                let addr = api.bind;
                let socket = TcpListener::bind(addr)
                    .await
                    .map_err(|source| BrokerError::BindApi { addr, source })?;
                let local = socket
                    .local_addr()
                    .map_err(|source| BrokerError::BindApi { addr, source })?;
                Some((socket, local))
            }
            None => None,
        };

        let clock = Clock::start();
        let mut hub_config = config.hub.clone();
        if hub_config.first_rrpc_message_id == HubConfig::default().first_rrpc_message_id {
            hub_config.first_rrpc_message_id = wall_clock_ms().unwrap_or(1).max(1);
        }
        let (requests, requests_rx) = mpsc::channel(HUB_QUEUE);
        let (stop_hub, stop_hub_rx) = watch::channel(false);
        let (stop_connections, stop_connections_rx) = watch::channel(false);
        let (stop_accepting, stop_accepting_rx) = watch::channel(false);
        let final_stats = Arc::new(Mutex::new(None));
        let hub = HubTask::new(hub_config, clock);
        let hub_task = tokio::spawn(hub.run(
            requests_rx,
            stop_hub_rx,
            stop_connections,
            Arc::clone(&final_stats),
        ));
        let handle = BrokerHandle::new(requests.clone(), final_stats);

        let shared = Arc::new(ConnectionShared {
            server: config.server.clone(),
            authenticator: Arc::clone(&config.authenticator),
            hub: requests,
            clock,
            stop: stop_connections_rx,
        });
        let next_conn = Arc::new(AtomicU64::new(1));
        let mut listeners = Vec::with_capacity(bound.len());
        let mut accept_tasks = Vec::with_capacity(bound.len());
        for (socket, local, tls) in bound {
            let tls = tls.map(TlsAcceptor::from);
            info!(addr = %local, tls = tls.is_some(), "listening for MQTT");
            listeners.push((local, tls.is_some()));
            accept_tasks.push(tokio::spawn(accept_loop(
                socket,
                tls,
                Arc::clone(&shared),
                Arc::clone(&next_conn),
                stop_accepting_rx.clone(),
            )));
        }
        let (api_addr, api_task) = match (api_socket, config.api) {
            (Some((socket, local)), Some(api)) => {
                info!(addr = %local, token = api.token.is_some(), "listening for the HTTP API");
                let router = crate::api::router(crate::api::ApiState::new(
                    handle.clone(),
                    api.token,
                    config.server.topic_limits,
                    Arc::clone(&config.authenticator),
                ));
                let mut stop = stop_accepting_rx.clone();
                let task = tokio::spawn(async move {
                    let served = axum::serve(socket, router)
                        .with_graceful_shutdown(async move { stopped(&mut stop).await });
                    if let Err(error) = served.await {
                        error!(%error, "the HTTP API stopped");
                    }
                });
                (Some(local), Some(task))
            }
            _ => (None, None),
        };
        Ok(Broker {
            listeners,
            api_addr,
            handle,
            stop_accepting,
            stop_hub,
            accept_tasks,
            hub_task,
            api_task,
        })
    }

    /// The addresses actually bound (port 0 resolved), in the order of the configuration, each
    /// with whether it speaks TLS.
    pub fn listener_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners.clone()
    }

    /// The address the HTTP API is bound to, if it is configured.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
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
            stop_accepting,
            stop_hub,
            accept_tasks,
            hub_task,
            api_task,
            ..
        } = self;
        stop_accepting.send_replace(true);
        let mut connections = Vec::with_capacity(accept_tasks.len());
        for task in accept_tasks {
            match task.await {
                Ok(tasks) => connections.push(tasks),
                Err(error) => error!(%error, "an accept task failed"),
            }
        }
        stop_hub.send_replace(true);
        if let Err(error) = hub_task.await {
            error!(%error, "the hub task failed");
        }
        let deadline = tokio::time::Instant::now() + CLOSE_LINGER + Duration::from_secs(1);
        let mut left = 0;
        for mut tasks in connections {
            while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {}
            left += tasks.len();
            // Dropping the set aborts what is still running.
        }
        if left > 0 {
            warn!(
                connections = left,
                "connections still closing at the deadline were aborted"
            );
        }
        if let Some(mut task) = api_task
            && tokio::time::timeout_at(deadline, &mut task).await.is_err()
        {
            task.abort();
            warn!("HTTP requests still running at the deadline were aborted");
        }
        info!("broker stopped");
    }
}

/// Accepts connections until told to stop, then hands back the connection tasks so that the
/// broker can wait for them once the hub has closed them.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<ConnectionShared>,
    next_conn: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let mut task_conns: HashMap<tokio::task::Id, ConnId> = HashMap::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(error) => error.id(),
                };
                let conn = task_conns.remove(&id);
                if let (Err(error), Some(conn)) = (done, conn) {
                    error!(conn = conn.0, %error, "connection task failed");
                    connection::report_lost(&shared, conn).await;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = ConnId(next_conn.fetch_add(1, Ordering::Relaxed));
                    let task = connection::serve(Arc::clone(&shared), conn, stream, peer, tls.clone());
                    let abort = tasks.spawn(task);
                    task_conns.insert(abort.id(), conn);
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    tasks
}

/// Returns once `stop` is raised, or its sender is gone (the broker was dropped).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in a caller's `select!`.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The broker's time: `aliot_core::Instant` is milliseconds since the broker started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    fn start() -> Self {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, for the state machines.
    pub(crate) fn now(&self) -> aliot_core::Instant {
        let elapsed = self.start.elapsed().as_millis();
        aliot_core::Instant::from_millis(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// When a deadline of the state machines falls, for tokio's timers.
    pub(crate) fn deadline(&self, at: aliot_core::Instant) -> tokio::time::Instant {
        self.start
            .checked_add(Duration::from_millis(at.as_millis()))
            .unwrap_or_else(far_future)
    }
}

/// A time no timer reaches, for a `sleep_until` whose branch is disabled.
pub(crate) fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Milliseconds since the Unix epoch, if the wall clock is after it.
pub(crate) fn wall_clock_ms() -> Option<u64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}
