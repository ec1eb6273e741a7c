//! The `aliot` command's TOML configuration: read, check, and turn into a [`BrokerConfig`].
//!
//! Every problem is refused before the broker starts, with the file, line and column it is on:
//! what the TOML parser finds (syntax, an unknown key, a value of the wrong type, a missing key)
//! and what is checked after parsing (a bind address, a permission, a custom category, a
//! duplicate device, an empty secret, TLS files that cannot be loaded, a limit out of range).
//!
//! ```toml
//! [[listener]]
//! bind = "0.0.0.0:1883"
//!
//! [[listener]]
//! bind = "0.0.0.0:8883"
//! tls = { cert = "server.pem", key = "server.key" }   # paths relative to this file
//!
//! [[listener]]                # MQTT over WebSocket: ws://host:8083/mqtt
//! bind = "0.0.0.0:8083"
//! websocket = { path = "/mqtt" }   # the default path; with `tls` too: wss://
//!
//! [api]                      # the HTTP API; off when the table is absent
//! bind = "127.0.0.1:8080"    # the default
//! token = "change-me"        # optional bearer token
//! console = true             # the web console at /console (the default)
//!
//! [limits]                   # every key optional; these are the defaults
//! max_connections = 1000000
//! max_packet_size = 262144
//! max_topic_len = 128
//! connect_timeout_secs = 10
//! max_pending_output = 1048576
//! inflight_window = 32
//! max_queued_messages = 1000
//! max_queued_bytes = 4194304
//! ack_hold_threshold = 100        # queued messages from which on PUBACKs wait (flow control)
//! max_ack_hold_ms = 1000
//! max_message_age_secs = 604800   # or "never"
//! session_expiry_secs = 604800    # or "never"
//!
//! [[access_key]]            # the platform's OpenAPI at the API's `/` (off without one)
//! id = "LTAI5tAliotExample"
//! secret = "change-me"
//!
//! [amqp]                    # the server-side subscription (AMQP 1.0); off when absent
//! bind = "127.0.0.1:5672"    # the default; the platform's port is 5671, with TLS
//! # tls = { cert = "server.pem", key = "server.key" }
//!
//! [[consumer_group]]        # consumers name it in their user name (consumerGroupId)
//! id = "DEFAULT_GROUP"
//! # products = ["a1DemoProd01"]       # default: every product
//! # kinds = ["upstream", "status"]    # default: every kind; also "thing_model",
//! #                                   # "lifecycle", "topology", "downlink_result", "ota"
//!
//! [backlog]                 # each consumer group's backlog; these are the defaults
//! max_messages = 100000
//! max_bytes = 67108864
//! max_age_secs = 86400      # or "never"
//!
//! [cluster]                 # one node of a cluster on NATS; a single broker when absent
//! nats = ["nats://127.0.0.1:4222"]   # the NATS servers (JetStream on)
//! node_id = "node-a"                 # unique in the cluster: letters, digits, - and _
//! when_nats_down = "serve-local"     # or "refuse": new connections while NATS is unreachable
//! replicas = 1                       # copies of what NATS keeps: 3 on a NATS cluster
//!
//! [store]                   # sessions and queued messages on disk; in memory when absent
//! path = "aliot-data"        # a directory of its own, relative to this file
//! durability = "immediate"   # fsync before each PUBACK; or "periodic" (with flush_ms), "none"
//! # flush_ms = 1000          # with "periodic": the most a crash may lose
//!
//! [auth]
//! open = false                    # SPEC §1 open mode
//! # max_timestamp_skew_ms = 600000 # off unless given
//!
//! [[product]]
//! key = "a1DemoProd01"
//! categories = [
//!   { topic = "/${productKey}/${deviceName}/user/get", permission = "sub" },
//! ]
//!
//! [[product.device]]
//! name = "dev-001"
//! secret = "DemoSecret0001aliotNotForProduct"
//! ```
//!
//! ```
//! use aliot_io::config::Config;
//!
//! let text = r#"
//! [[listener]]
//! bind = "127.0.0.1:1883"
//!
//! [[product]]
//! key = "a1TestPK001"
//! [[product.device]]
//! name = "dev-001"
//! secret = "0123456789abcdef0123456789abcdef"
//! "#;
//! let config = Config::parse(text, "aliot.toml", std::path::Path::new("."))?;
//! assert_eq!(config.listeners[0].bind.port(), 1883);
//! assert_eq!(config.registry.device_count(), 1);
//!
//! let error = Config::parse("[[listener]]\nbind = \"localhost\"\n", "aliot.toml", ".".as_ref())
//!     .unwrap_err();
//! assert_eq!(error.location.map(|at| at.line), Some(2));
//! # Ok::<(), aliot_io::config::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{AddrParseError, IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU16, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::{DeviceIdentity, DeviceSecret, MemoryRegistry, RegistryError};
use aliot_core::PlatformAuthenticator;
use aliot_core::codec::{MAX_FIXED_HEADER_LEN, MAX_REMAINING_LENGTH, MAX_STRING_LEN};
use aliot_core::hub::{BacklogLimits, ConsumerGroupConfig, HubConfig, MessageKinds};
use aliot_core::server::ServerConfig;
use aliot_topic::{
    CategoryError, IdentityError, ParsePermissionError, Permission, ProductCategories, TopicLimits,
    check_identity,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::broker::{
    BrokerConfig, BrokerError, LegacyTlsVersion, ListenerConfig, OpenSslTls, TlsConfigError,
    WebSocketListener, check_openssl_tls, load_tls_config,
};
use crate::registry::{ConfiguredProduct, Registry};
use crate::store::{Durability, StoreConfig, StoreLocation};

/// Where the `[api]` table listens when it gives no `bind`.
pub const DEFAULT_API_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The largest packet MQTT can carry: the largest remaining length plus the longest fixed header.
pub const MAX_MQTT_PACKET_SIZE: usize = MAX_REMAINING_LENGTH + MAX_FIXED_HEADER_LEN;

/// The most QoS 1 messages in flight to one device: MQTT packet ids are 16-bit.
pub const MAX_INFLIGHT_WINDOW: usize = NonZeroU16::MAX.get() as usize;

/// The largest connection cap accepted: 100 million, about 180 GB of idle connections, more than
/// one process holds (each is a socket).
pub const MAX_MAX_CONNECTIONS: usize = 100_000_000;

/// The longest CONNECT deadline accepted: one hour (a device that takes longer is not coming).
pub const MAX_CONNECT_TIMEOUT_SECS: u64 = 3600;

/// The longest a PUBACK may be held for a subscriber that falls behind: one minute (MQTT
/// clients give up on a PUBACK after tens of seconds).
pub const MAX_ACK_HOLD_MS: u64 = 60_000;

/// A checked configuration: everything a broker needs, plus what the summary shows.
#[derive(Debug)]
pub struct Config {
    /// The MQTT listeners, in file order; at least one.
    pub listeners: Vec<ListenerSettings>,
    /// The HTTP API, when the file has an `[api]` table.
    pub api: Option<ApiSettings>,
    /// The AccessKeys of the platform's OpenAPI (`[[access_key]]`), served on the API's
    /// address, and of the server-side subscription's consumers; none: both are off.
    pub access_keys: Vec<AccessKeySettings>,
    /// The server-side subscription's AMQP listener, when the file has an `[amqp]` table.
    pub amqp: Option<AmqpSettings>,
    /// The cluster this broker is a node of, when the file has a `[cluster]` table.
    pub cluster: Option<ClusterSettings>,
    /// The most connections held at once (`[limits] max_connections`).
    pub max_connections: NonZeroUsize,
    /// Per-connection limits (`[limits]`: packet size, topic length, timeouts).
    pub server: ServerConfig,
    /// Hub limits (`[limits]`: in-flight window, offline queue, ages).
    pub hub: HubConfig,
    /// Where sessions and queued messages are kept (`[store]`); in memory when `None`.
    pub store: Option<StoreConfig>,
    /// How devices are authenticated (`[auth]`).
    pub auth: AuthSettings,
    /// Every product and device of the file, with their categories and secrets.
    pub registry: MemoryRegistry,
    /// The registry the broker runs with and authenticates against: the file's products and
    /// devices, to which a store adds what the OpenAPI made (see [`crate::registry`]).
    pub device_registry: Registry,
    /// The products as the file lists them, for summaries.
    pub products: Vec<ProductSettings>,
}

/// One `[[listener]]`.
#[derive(Clone, Debug)]
pub struct ListenerSettings {
    /// The address to listen on (port 0: any free port).
    pub bind: SocketAddr,
    /// The certificate and key, when the listener speaks TLS.
    pub tls: Option<TlsSettings>,
    /// MQTT over WebSocket (`websocket = { path = "/mqtt" }`), or straight over the stream.
    pub websocket: Option<WebSocketListener>,
    /// TLS-PSK (`psk = true`, through OpenSSL): no certificate.
    pub psk: bool,
}

/// The `tls = { cert, key }` of a listener, loaded.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// The PEM certificate chain, resolved against the configuration file's folder.
    pub cert: PathBuf,
    /// The PEM private key, resolved against the configuration file's folder.
    pub key: PathBuf,
    /// The rustls configuration loaded from them.
    pub server_config: Arc<rustls::ServerConfig>,
    /// `min_version = "1.0"` or `"1.1"`: the listener's TLS is OpenSSL's, from that version;
    /// `None`: rustls, TLS 1.2 and 1.3.
    pub legacy_min_version: Option<LegacyTlsVersion>,
}

/// The `[api]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSettings {
    /// Where the HTTP API listens ([`DEFAULT_API_BIND`] unless given).
    pub bind: SocketAddr,
    /// The bearer token callers must send, if any.
    pub token: Option<String>,
    /// Whether the web console is served at `/console` (default: yes). With it, the hub
    /// keeps the latest [`CONSOLE_TRACE_CAPACITY`] messages for its live views.
    pub console: bool,
}

/// How many of the latest messages, connects and disconnects the hub keeps for the web
/// console's live views when the console is on (ours: a few seconds of a busy broker, and
/// a quiet device's last few hundred).
pub const CONSOLE_TRACE_CAPACITY: usize = 4096;

/// Where the `[amqp]` table listens when it gives no `bind`.
pub const DEFAULT_AMQP_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5672);

/// The `[amqp]` table: the server-side subscription's listener.
#[derive(Clone, Debug)]
pub struct AmqpSettings {
    /// Where it listens ([`DEFAULT_AMQP_BIND`] unless given).
    pub bind: SocketAddr,
    /// The certificate and key, when it speaks TLS (as the platform's 5671 does).
    pub tls: Option<TlsSettings>,
}

/// The `[cluster]` table: this broker is one node of a cluster on NATS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The NATS servers' URLs (at least one), tried in turn.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster: 1-64 letters, digits, `-` and `_`.
    pub node_id: String,
    /// What this node does with new connections while NATS is unreachable.
    pub when_nats_down: WhenNatsDown,
    /// How many NATS servers keep the cluster's buckets and stream (1-5; 3 on a NATS cluster of
    /// three or more, so that they survive a server). Used by the node that creates each.
    pub replicas: usize,
}

/// What a node does with new connections while NATS is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenNatsDown {
    /// Accept them (the default): devices work with this node alone; calls to devices on
    /// other nodes fail fast, and ownership is claimed once NATS is back.
    #[default]
    ServeLocal,
    /// Refuse them (CONNACK 3, server unavailable), so devices try another node; connections
    /// already here stay.
    Refuse,
}

/// One `[[access_key]]`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeySettings {
    /// The AccessKey ID.
    pub id: String,
    /// The AccessKey secret.
    pub secret: String,
}

impl fmt::Debug for AccessKeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeySettings")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The `[auth]` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// Open mode (SPEC §1): clients without platform credentials are admitted with every topic.
    pub open: bool,
    /// The most a device's signed timestamp may differ from the broker's clock; off when `None`.
    pub max_timestamp_skew_ms: Option<u64>,
}

/// One `[[product]]`, as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductSettings {
    /// The product key.
    pub key: String,
    /// The custom categories the product adds to the defaults, in file order.
    pub custom_categories: Vec<(String, Permission)>,
    /// The names of its devices, in file order.
    pub devices: Vec<String>,
    /// The product secret of dynamic registration, if given.
    pub product_secret: Option<String>,
    /// Whether its devices may register themselves (dynamic registration).
    pub dynamic_registration: bool,
}

impl Config {
    /// Reads and checks a configuration file. Relative TLS paths are taken from the file's folder.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError {
            file: file.clone(),
            location: None,
            line_text: None,
            problem: Box::new(ConfigProblem::Read(source)),
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        Config::parse(&text, &file, base_dir)
    }

    /// Parses and checks configuration text. `file` names it in error messages; relative TLS
    /// paths are taken from `base_dir`.
    pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let source = Source { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            source.error(
                error.span().map(|span| span.start),
                ConfigProblem::Toml(error.message().trim_end().to_owned()),
            )
        })?;
        Checker { source, base_dir }.check(raw)
    }

    /// The platform authenticator of this configuration: its registry and `[auth]` settings.
    pub fn authenticator(&self) -> PlatformAuthenticator<Registry> {
        PlatformAuthenticator::new(self.device_registry.clone())
            .with_open_mode(self.auth.open)
            .with_max_timestamp_skew_ms(self.auth.max_timestamp_skew_ms)
    }

    /// The broker configuration to start a [`Broker`](crate::broker::Broker) with. The HTTP
    /// API ([`api`](Self::api)) is not part of it: it is served beside a tokio broker
    /// (`aliot_tokio::api`).
    pub fn broker_config(&self) -> BrokerConfig {
        BrokerConfig {
            listeners: self
                .listeners
                .iter()
                .map(|listener| {
                    let legacy = listener.tls.as_ref().and_then(|tls| {
                        tls.legacy_min_version
                            .map(|min_version| OpenSslTls::Legacy {
                                cert: tls.cert.clone(),
                                key: tls.key.clone(),
                                min_version,
                            })
                    });
                    let openssl = match (listener.psk, legacy) {
                        (true, _) => Some(OpenSslTls::Psk),
                        (false, legacy) => legacy,
                    };
                    ListenerConfig {
                        bind: listener.bind,
                        tls: match &openssl {
                            Some(_) => None,
                            None => listener
                                .tls
                                .as_ref()
                                .map(|tls| Arc::clone(&tls.server_config)),
                        },
                        websocket: listener.websocket.clone(),
                        openssl,
                    }
                })
                .collect(),
            server: self.server.clone(),
            hub: self.hub.clone(),
            authenticator: Arc::new(self.authenticator()),
            max_connections: self.max_connections,
            store: self.store.clone(),
            registry: Some(self.device_registry.clone()),
            // The link to the cluster is made by the tokio adapter (`aliot-cluster`), which
            // sets it from `cluster` before starting the broker.
            cluster: None,
        }
    }

    /// A few lines saying what the configuration sets up, for `aliot check-config`.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        for listener in &self.listeners {
            let websocket = match &listener.websocket {
                Some(websocket) => format!("WebSocket at {}, ", websocket.path),
                None => String::new(),
            };
            lines.push(match &listener.tls {
                Some(tls) => format!(
                    "MQTT listener {} ({websocket}TLS {}, certificate {}, key {})",
                    listener.bind,
                    match tls.legacy_min_version {
                        Some(version) => format!("{version} to 1.3 (OpenSSL)"),
                        None => "1.2 and 1.3".to_owned(),
                    },
                    tls.cert.display(),
                    tls.key.display()
                ),
                None if listener.psk => format!(
                    "MQTT listener {} ({websocket}TLS-PSK, {} with device keys)",
                    listener.bind,
                    crate::broker::PSK_CIPHER_SUITE
                ),
                None if listener.websocket.is_some() => {
                    format!("MQTT listener {} ({websocket}no TLS)", listener.bind)
                }
                None => format!("MQTT listener {} (TCP)", listener.bind),
            });
        }
        lines.push(match &self.api {
            Some(ApiSettings {
                bind, token: None, ..
            }) => format!("HTTP API {bind} (no token)"),
            Some(ApiSettings {
                bind,
                token: Some(_),
                ..
            }) => format!("HTTP API {bind} (bearer token required)"),
            None => "HTTP API off".to_owned(),
        });
        if !self.access_keys.is_empty() {
            lines.push(format!(
                "OpenAPI on the HTTP API's /, {} AccessKey(s)",
                self.access_keys.len()
            ));
        }
        if let Some(cluster) = &self.cluster {
            lines.push(format!(
                "cluster: node {} on NATS {} ({} cop{} of what NATS keeps; while NATS is down: {})",
                cluster.node_id,
                cluster.nats.join(", "),
                cluster.replicas,
                if cluster.replicas == 1 { "y" } else { "ies" },
                match cluster.when_nats_down {
                    WhenNatsDown::ServeLocal => "serve local devices",
                    WhenNatsDown::Refuse => "refuse new connections",
                }
            ));
        }
        lines.push(match &self.store {
            Some(store) => match &store.location {
                StoreLocation::Directory(dir) => {
                    format!("store {} (durability {})", dir.display(), store.durability)
                }
                StoreLocation::Memory(_) => "store in memory".to_owned(),
            },
            None => {
                "store off: sessions and queued messages are lost when the broker stops".to_owned()
            }
        });
        lines.push(format!(
            "auth: open mode {}, timestamp skew check {}",
            if self.auth.open { "on" } else { "off" },
            match self.auth.max_timestamp_skew_ms {
                Some(skew) => format!("at most {skew} ms"),
                None => "off".to_owned(),
            }
        ));
        let device_count: usize = self.products.iter().map(|p| p.devices.len()).sum();
        lines.push(format!(
            "{} product(s), {device_count} device(s)",
            self.products.len()
        ));
        for product in &self.products {
            lines.push(format!(
                "  product {}: {} device(s), {} custom categor{}",
                product.key,
                product.devices.len(),
                product.custom_categories.len(),
                if product.custom_categories.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
        }
        lines.join("\n")
    }
}

/// A line and column of the configuration file, both counted from 1 (columns in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
}

/// A configuration refused: the file, where in it, and what is wrong.
///
/// Displayed as `file, line N, column M: problem` followed by the offending line.
#[derive(Debug)]
pub struct ConfigError {
    /// The file's name as given.
    pub file: String,
    /// Where the problem is, when it is at one place of the file.
    pub location: Option<Location>,
    /// The text of the offending line, shown under the message.
    pub line_text: Option<String>,
    /// What is wrong (boxed: a `Result` carrying this error stays small).
    pub problem: Box<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(Location { line, column }) => {
                write!(
                    f,
                    "{}, line {line}, column {column}: {}",
                    self.file, self.problem
                )?;
                if let Some(line_text) = &self.line_text {
                    write!(f, "\n{line:>5} | {line_text}")?;
                }
                Ok(())
            }
            None => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.problem.as_ref())
    }
}

/// What is wrong with a configuration: one variant per rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// The file could not be read.
    #[error("cannot read the configuration file: {0}")]
    Read(#[source] std::io::Error),
    /// The TOML parser refused the text: bad syntax, an unknown key, a value of the wrong type
    /// or a missing key (the message is the parser's).
    #[error("{0}")]
    Toml(String),
    /// The file has no `[[listener]]`.
    #[error(
        "no [[listener]] table: add at least one, e.g. `[[listener]]` with `bind = \"127.0.0.1:1883\"`"
    )]
    NoListener,
    /// A `bind` that is not an IP address with a port.
    #[error(
        "bind address {value:?} is not an IP address and port such as \"0.0.0.0:1883\" or \"[::1]:1883\" ({source})"
    )]
    BadBindAddress {
        /// The text given.
        value: String,
        /// Why it does not parse.
        source: AddrParseError,
    },
    /// Two listeners on one address.
    #[error("another [[listener]] binds {0} already")]
    DuplicateListener(SocketAddr),
    /// A `websocket = { path }` that is no absolute HTTP path.
    #[error(
        "WebSocket path {0:?} is not an absolute path such as \"/mqtt\" (a leading `/`, no spaces, no `?` or `#`)"
    )]
    BadWebSocketPath(String),
    /// The certificate or key of a TLS listener cannot be loaded.
    #[error("cannot load the TLS certificate {cert} and key {key}: {source}")]
    Tls {
        /// The certificate path, resolved.
        cert: PathBuf,
        /// The key path, resolved.
        key: PathBuf,
        /// What went wrong loading them.
        source: TlsConfigError,
    },
    /// A `min_version` that is not `"1.0"`, `"1.1"` or `"1.2"`.
    #[error("TLS min_version {0:?} is not \"1.0\", \"1.1\" or \"1.2\" (the default)")]
    BadTlsVersion(String),
    /// `min_version` below 1.2 where only rustls serves (the AMQP listener).
    #[error("min_version {0} is for MQTT listeners only: this listener takes TLS 1.2 and 1.3")]
    LegacyTlsNotHere(LegacyTlsVersion),
    /// `psk = true` beside `tls`.
    #[error(
        "a TLS-PSK listener (psk = true) has no certificate: remove `tls`, or `psk` for certificate TLS"
    )]
    PskWithCertificate,
    /// A listener that needs OpenSSL (`psk = true`, `min_version` below 1.2), and this build
    /// has none, or OpenSSL cannot load its certificate and key.
    #[error("{0}")]
    OpenSsl(BrokerError),
    /// `[api] token = ""`.
    #[error("the API token is empty: give a token, or leave the key out for no token")]
    EmptyApiToken,
    /// `product_secret = ""`.
    #[error("the product secret is empty: give one, or leave the key out")]
    EmptyProductSecret,
    /// `dynamic_registration = true` without `product_secret`.
    #[error("dynamic_registration = true needs a product_secret (devices sign with it)")]
    DynamicRegistrationWithoutSecret,
    /// An `[[access_key]]` with an empty id or secret, or an id given twice.
    #[error("access_key: {0}")]
    BadAccessKey(&'static str),
    /// A `[[consumer_group]]` whose id is empty, too long or given twice, or with an unknown
    /// kind.
    #[error("consumer_group: {0}")]
    BadConsumerGroup(String),
    /// The `[cluster]` table is wrong: no NATS server, a bad node id or policy.
    #[error("cluster: {0}")]
    BadCluster(String),
    /// `[store] durability` is not one of the three.
    #[error("store.durability = {0:?}: use \"immediate\", \"periodic\" or \"none\"")]
    BadDurability(String),
    /// `flush_ms` without `durability = "periodic"`, or `"periodic"` without it.
    #[error("store.flush_ms goes with durability = \"periodic\", and \"periodic\" needs it")]
    FlushWithoutPeriodic,
    /// `flush_ms` out of range.
    #[error("store.flush_ms = {0} is not within 1..=60000")]
    BadFlushMs(u64),
    /// A limit below its minimum.
    #[error("limits.{key} = {value} is below the minimum of {min}")]
    LimitTooSmall {
        /// The key under `[limits]`.
        key: &'static str,
        /// The value given.
        value: u64,
        /// The smallest accepted value.
        min: u64,
    },
    /// A limit above its maximum.
    #[error("limits.{key} = {value} is above the maximum of {max}")]
    LimitTooLarge {
        /// The key under `[limits]`.
        key: &'static str,
        /// The value given.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// `max_timestamp_skew_ms = 0`, which would refuse every device.
    #[error("auth.max_timestamp_skew_ms must be above 0; leave the key out to turn the check off")]
    ZeroTimestampSkew,
    /// A permission other than `pub`, `sub`, `pub&sub`.
    #[error(transparent)]
    BadPermission(ParsePermissionError),
    /// A custom category template the profile refuses (SPEC §3).
    #[error("invalid custom category {template:?}: {source}")]
    InvalidCategory {
        /// The template given.
        template: String,
        /// The rule it breaks.
        source: CategoryError,
    },
    /// A product key that cannot fill topic templates or a username.
    #[error("invalid product key {key:?}: {source}")]
    BadProductKey {
        /// The key given.
        key: String,
        /// The rule it breaks.
        source: IdentityError,
    },
    /// A product key with `&`, which the username `deviceName&productKey` cannot carry.
    #[error("invalid product key {0:?}: `&` cannot appear in the username `deviceName&productKey`")]
    AmpersandInProductKey(String),
    /// A second `[[product]]` with the same key.
    #[error("product {key:?} is defined already, on line {first_line}")]
    DuplicateProduct {
        /// The repeated key.
        key: String,
        /// Where it was first defined.
        first_line: usize,
    },
    /// A device name that cannot fill topic templates.
    #[error("invalid device name {name:?}: {source}")]
    BadDeviceName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        source: IdentityError,
    },
    /// A device name with `&`, which the username `deviceName&productKey` cannot carry.
    #[error("invalid device name {0:?}: `&` cannot appear in the username `deviceName&productKey`")]
    AmpersandInDeviceName(String),
    /// A second device of the same name in one product.
    #[error("device {device} is defined already, on line {first_line}")]
    DuplicateDevice {
        /// The repeated device.
        device: DeviceIdentity,
        /// Where it was first defined.
        first_line: usize,
    },
    /// The registry refused a device the checks above let through.
    #[error("the device registry refused the device: {0}")]
    Registry(RegistryError),
    /// `secret = ""`.
    #[error("the secret of device {0} is empty")]
    EmptyDeviceSecret(DeviceIdentity),
}

/// The text being checked, to turn byte offsets into lines.
#[derive(Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    /// The line and column of a byte offset.
    fn locate(&self, offset: usize) -> Location {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before.get(line_start..).unwrap_or("").chars().count() + 1,
        }
    }

    /// The text of a line (from 1), without its line break.
    fn line_text(&self, line: usize) -> Option<String> {
        self.text
            .lines()
            .nth(line.checked_sub(1)?)
            .map(|text| text.trim_end().to_owned())
    }

    fn error(&self, offset: Option<usize>, problem: ConfigProblem) -> ConfigError {
        let location = offset.map(|offset| self.locate(offset));
        ConfigError {
            file: self.file.to_owned(),
            location,
            line_text: location.and_then(|at| self.line_text(at.line)),
            problem: Box::new(problem),
        }
    }

    fn error_at(&self, span: &Range<usize>, problem: ConfigProblem) -> ConfigError {
        self.error(Some(span.start), problem)
    }
}

// The file as the TOML parser reads it. Fields that are checked after parsing keep their span.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listener: Vec<RawListener>,
    api: Option<RawApi>,
    #[serde(default)]
    access_key: Vec<Spanned<RawAccessKey>>,
    amqp: Option<RawAmqp>,
    cluster: Option<Spanned<RawCluster>>,
    #[serde(default)]
    consumer_group: Vec<Spanned<RawConsumerGroup>>,
    #[serde(default)]
    backlog: RawBacklog,
    #[serde(default)]
    limits: RawLimits,
    store: Option<Spanned<RawStore>>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    product: Vec<RawProduct>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessKey {
    id: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmqp {
    bind: Option<Spanned<String>>,
    tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nats: Vec<String>,
    node_id: String,
    when_nats_down: Option<String>,
    replicas: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumerGroup {
    id: String,
    #[serde(default)]
    products: Vec<String>,
    kinds: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBacklog {
    max_messages: Option<Spanned<u64>>,
    max_bytes: Option<Spanned<u64>>,
    max_age_secs: Option<Lifetime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    durability: Option<Spanned<String>>,
    flush_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    bind: Spanned<String>,
    tls: Option<Spanned<RawTls>>,
    websocket: Option<RawWebSocket>,
    psk: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebSocket {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    min_version: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    bind: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    console: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<Spanned<u64>>,
    max_packet_size: Option<Spanned<u64>>,
    max_topic_len: Option<Spanned<u64>>,
    connect_timeout_secs: Option<Spanned<u64>>,
    max_pending_output: Option<Spanned<u64>>,
    inflight_window: Option<Spanned<u64>>,
    max_queued_messages: Option<Spanned<u64>>,
    max_queued_bytes: Option<Spanned<u64>>,
    ack_hold_threshold: Option<Spanned<u64>>,
    max_ack_hold_ms: Option<Spanned<u64>>,
    max_message_age_secs: Option<Spanned<Lifetime>>,
    session_expiry_secs: Option<Spanned<Lifetime>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    open: bool,
    max_timestamp_skew_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    key: Spanned<String>,
    product_secret: Option<Spanned<String>>,
    #[serde(default)]
    dynamic_registration: bool,
    #[serde(default)]
    categories: Vec<RawCategory>,
    #[serde(default)]
    device: Vec<RawDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    topic: Spanned<String>,
    permission: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Spanned<String>,
    secret: Spanned<String>,
}

/// A number of seconds, or `"never"` for no limit.
#[derive(Clone, Copy)]
enum Lifetime {
    Seconds(u64),
    Never,
}

impl<'de> Deserialize<'de> for Lifetime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LifetimeVisitor;

        impl Visitor<'_> for LifetimeVisitor {
            type Value = Lifetime;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of seconds (at least 1) or \"never\"")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Lifetime, E> {
                match u64::try_from(value) {
                    Ok(seconds) => self.visit_u64(seconds),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(value), &self)),
                }
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Lifetime, E> {
                if value == 0 {
                    return Err(E::invalid_value(de::Unexpected::Unsigned(value), &self));
                }
                Ok(Lifetime::Seconds(value))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Lifetime, E> {
                if value == "never" {
                    Ok(Lifetime::Never)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }
        }

        deserializer.deserialize_any(LifetimeVisitor)
    }
}

impl Lifetime {
    fn duration(self) -> Option<Duration> {
        match self {
            Lifetime::Seconds(seconds) => Some(Duration::from_secs(seconds)),
            Lifetime::Never => None,
        }
    }
}

/// Checks the parsed file, value by value, and builds the [`Config`].
struct Checker<'a> {
    source: Source<'a>,
    base_dir: &'a Path,
}

impl Checker<'_> {
    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listeners = self.listeners(raw.listener)?;
        let api = raw.api.map(|api| self.api(api)).transpose()?;
        let access_keys = self.access_keys(raw.access_key)?;
        let amqp = raw.amqp.map(|amqp| self.amqp(amqp)).transpose()?;
        let cluster = raw
            .cluster
            .map(|cluster| self.cluster(cluster))
            .transpose()?;
        let (max_connections, server, mut hub) = self.limits(raw.limits)?;
        hub.consumer_groups = self.consumer_groups(raw.consumer_group)?;
        hub.backlog_limits = self.backlog(raw.backlog)?;
        // The console's live views read the hub's trace.
        if api.as_ref().is_some_and(|api| api.console) {
            hub.trace_capacity = CONSOLE_TRACE_CAPACITY;
        }
        let auth = self.auth(raw.auth)?;
        let store = raw.store.map(|store| self.store(store)).transpose()?;
        let (registry, products) = self.products(raw.product)?;
        let configured: Vec<ConfiguredProduct> = products
            .iter()
            .map(|product| ConfiguredProduct {
                key: product.key.clone(),
                categories: product
                    .custom_categories
                    .iter()
                    .map(|(template, permission)| (template.clone(), permission.to_string()))
                    .collect(),
                secret: product.product_secret.clone(),
                dynamic_registration: product.dynamic_registration,
            })
            .collect();
        let now = crate::broker::wall_clock_ms().unwrap_or(0);
        let device_registry =
            Registry::configured(&registry, &configured, aliot_services::UnixMillis(now));
        Ok(Config {
            listeners,
            api,
            access_keys,
            amqp,
            cluster,
            max_connections,
            server,
            hub,
            store,
            auth,
            registry,
            device_registry,
            products,
        })
    }

    fn bind(&self, bind: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        bind.get_ref().parse().map_err(|source| {
            self.source.error_at(
                &bind.span(),
                ConfigProblem::BadBindAddress {
                    value: bind.get_ref().clone(),
                    source,
                },
            )
        })
    }

    fn listeners(&self, raw: Vec<RawListener>) -> Result<Vec<ListenerSettings>, ConfigError> {
        if raw.is_empty() {
            return Err(self.source.error(None, ConfigProblem::NoListener));
        }
        let mut listeners: Vec<ListenerSettings> = Vec::with_capacity(raw.len());
        for listener in raw {
            let bind = self.bind(&listener.bind)?;
            // Port 0 asks for any free port, so two of them are two different listeners.
            let duplicate =
                bind.port() != 0 && listeners.iter().any(|earlier| earlier.bind == bind);
            if duplicate {
                return Err(self.source.error_at(
                    &listener.bind.span(),
                    ConfigProblem::DuplicateListener(bind),
                ));
            }
            let psk = match listener.psk {
                Some(psk) if *psk.get_ref() => {
                    if listener.tls.is_some() {
                        return Err(self
                            .source
                            .error_at(&psk.span(), ConfigProblem::PskWithCertificate));
                    }
                    check_openssl_tls(&OpenSslTls::Psk).map_err(|error| {
                        self.source
                            .error_at(&psk.span(), ConfigProblem::OpenSsl(error))
                    })?;
                    true
                }
                _ => false,
            };
            let tls = listener.tls.map(|tls| self.tls(tls, true)).transpose()?;
            let websocket = listener
                .websocket
                .map(|websocket| self.websocket(websocket))
                .transpose()?;
            listeners.push(ListenerSettings {
                bind,
                tls,
                websocket,
                psk,
            });
        }
        Ok(listeners)
    }

    fn websocket(&self, websocket: RawWebSocket) -> Result<WebSocketListener, ConfigError> {
        let Some(path) = websocket.path else {
            return Ok(WebSocketListener::default());
        };
        let text = path.get_ref();
        let valid = text.starts_with('/')
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#');
        if !valid {
            return Err(self
                .source
                .error_at(&path.span(), ConfigProblem::BadWebSocketPath(text.clone())));
        }
        Ok(WebSocketListener {
            path: path.into_inner(),
        })
    }

    /// A `tls = { cert, key, min_version }` table, loaded; `min_version` below 1.2 only where
    /// `allow_legacy` (MQTT listeners, whose TLS OpenSSL can serve).
    fn tls(&self, tls: Spanned<RawTls>, allow_legacy: bool) -> Result<TlsSettings, ConfigError> {
        let span = tls.span();
        let RawTls {
            cert,
            key,
            min_version,
        } = tls.into_inner();
        let cert = self.base_dir.join(cert);
        let key = self.base_dir.join(key);
        let legacy_min_version = match &min_version {
            None => None,
            Some(version) => match version.get_ref().as_str() {
                "1.2" => None,
                "1.1" => Some(LegacyTlsVersion::Tls1_1),
                "1.0" => Some(LegacyTlsVersion::Tls1_0),
                other => {
                    return Err(self.source.error_at(
                        &version.span(),
                        ConfigProblem::BadTlsVersion(other.to_owned()),
                    ));
                }
            },
        };
        if let (Some(legacy), Some(version)) = (legacy_min_version, &min_version)
            && !allow_legacy
        {
            return Err(self
                .source
                .error_at(&version.span(), ConfigProblem::LegacyTlsNotHere(legacy)));
        }
        let server_config = match load_tls_config(&cert, &key) {
            Ok(server_config) => server_config,
            Err(source) => {
                return Err(self
                    .source
                    .error_at(&span, ConfigProblem::Tls { cert, key, source }));
            }
        };
        if let Some(min_version) = legacy_min_version {
            let legacy = OpenSslTls::Legacy {
                cert: cert.clone(),
                key: key.clone(),
                min_version,
            };
            check_openssl_tls(&legacy)
                .map_err(|error| self.source.error_at(&span, ConfigProblem::OpenSsl(error)))?;
        }
        Ok(TlsSettings {
            cert,
            key,
            server_config,
            legacy_min_version,
        })
    }

    fn api(&self, api: RawApi) -> Result<ApiSettings, ConfigError> {
        let bind = match &api.bind {
            Some(bind) => self.bind(bind)?,
            None => DEFAULT_API_BIND,
        };
        let token = match api.token {
            Some(token) if token.get_ref().is_empty() => {
                return Err(self
                    .source
                    .error_at(&token.span(), ConfigProblem::EmptyApiToken));
            }
            Some(token) => Some(token.into_inner()),
            None => None,
        };
        Ok(ApiSettings {
            bind,
            token,
            console: api.console.unwrap_or(true),
        })
    }

    fn cluster(&self, raw: Spanned<RawCluster>) -> Result<ClusterSettings, ConfigError> {
        let span = raw.span();
        let RawCluster {
            nats,
            node_id,
            when_nats_down,
            replicas,
        } = raw.into_inner();
        let refuse = |why: String| self.source.error_at(&span, ConfigProblem::BadCluster(why));
        if nats.is_empty() || nats.iter().any(|url| url.trim().is_empty()) {
            return Err(refuse("nats lists no server: give at least one URL".into()));
        }
        let good_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if node_id.is_empty() || node_id.len() > 64 || !node_id.chars().all(good_name) {
            return Err(refuse(format!(
                "node_id {node_id:?} is not 1-64 letters, digits, - and _"
            )));
        }
        let when_nats_down = match when_nats_down.as_deref() {
            None | Some("serve-local") => WhenNatsDown::ServeLocal,
            Some("refuse") => WhenNatsDown::Refuse,
            Some(other) => {
                return Err(refuse(format!(
                    "when_nats_down = {other:?}: use \"serve-local\" or \"refuse\""
                )));
            }
        };
        let replicas = replicas.unwrap_or(1);
        if !(1..=5).contains(&replicas) {
            return Err(refuse(format!(
                "replicas = {replicas}: JetStream keeps 1 to 5 copies"
            )));
        }
        Ok(ClusterSettings {
            nats,
            node_id,
            when_nats_down,
            replicas,
        })
    }

    fn amqp(&self, amqp: RawAmqp) -> Result<AmqpSettings, ConfigError> {
        let bind = match &amqp.bind {
            Some(bind) => self.bind(bind)?,
            None => DEFAULT_AMQP_BIND,
        };
        let tls = amqp.tls.map(|tls| self.tls(tls, false)).transpose()?;
        Ok(AmqpSettings { bind, tls })
    }

    fn consumer_groups(
        &self,
        raw: Vec<Spanned<RawConsumerGroup>>,
    ) -> Result<Vec<ConsumerGroupConfig>, ConfigError> {
        let mut groups: Vec<ConsumerGroupConfig> = Vec::with_capacity(raw.len());
        for group in raw {
            let span = group.span();
            let RawConsumerGroup {
                id,
                products,
                kinds,
            } = group.into_inner();
            let bad = |problem: String| {
                self.source
                    .error_at(&span, ConfigProblem::BadConsumerGroup(problem))
            };
            if id.is_empty() || id.len() > 64 {
                return Err(bad("the id must be 1 to 64 characters".into()));
            }
            if groups.iter().any(|earlier| earlier.id == id) {
                return Err(bad(format!("the id {id:?} is given twice")));
            }
            let kinds = match kinds {
                None => MessageKinds::ALL,
                Some(names) => {
                    let mut kinds = MessageKinds::NONE;
                    for name in &names {
                        let kind = MessageKinds::named(name).ok_or_else(|| {
                            bad(format!(
                                "unknown kind {name:?}: use {}",
                                MessageKinds::NAMES.join(", ")
                            ))
                        })?;
                        kinds = kinds.with(kind);
                    }
                    kinds
                }
            };
            groups.push(ConsumerGroupConfig {
                id,
                products,
                kinds,
            });
        }
        Ok(groups)
    }

    fn backlog(&self, raw: RawBacklog) -> Result<BacklogLimits, ConfigError> {
        let defaults = BacklogLimits::default();
        let at_least_one =
            |value: &Option<Spanned<u64>>, key: &'static str, default: usize| match value {
                None => Ok(default),
                Some(value) if *value.get_ref() == 0 => Err(self.source.error_at(
                    &value.span(),
                    ConfigProblem::LimitTooSmall {
                        key,
                        value: 0,
                        min: 1,
                    },
                )),
                Some(value) => Ok(usize::try_from(*value.get_ref()).unwrap_or(usize::MAX)),
            };
        Ok(BacklogLimits {
            max_messages: at_least_one(
                &raw.max_messages,
                "backlog.max_messages",
                defaults.max_messages,
            )?,
            max_bytes: at_least_one(&raw.max_bytes, "backlog.max_bytes", defaults.max_bytes)?,
            max_age: match raw.max_age_secs {
                None => defaults.max_age,
                Some(lifetime) => lifetime.duration(),
            },
        })
    }

    fn access_keys(
        &self,
        raw: Vec<Spanned<RawAccessKey>>,
    ) -> Result<Vec<AccessKeySettings>, ConfigError> {
        let mut keys: Vec<AccessKeySettings> = Vec::with_capacity(raw.len());
        for key in raw {
            let span = key.span();
            let RawAccessKey { id, secret } = key.into_inner();
            let problem = if id.is_empty() {
                Some("the id is empty")
            } else if secret.is_empty() {
                Some("the secret is empty")
            } else if keys.iter().any(|earlier| earlier.id == id) {
                Some("this id is given twice")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self
                    .source
                    .error_at(&span, ConfigProblem::BadAccessKey(problem)));
            }
            keys.push(AccessKeySettings { id, secret });
        }
        Ok(keys)
    }

    fn store(&self, store: Spanned<RawStore>) -> Result<StoreConfig, ConfigError> {
        let span = store.span();
        let RawStore {
            path,
            durability,
            flush_ms,
        } = store.into_inner();
        let durability = match (durability.as_ref().map(|d| d.get_ref().as_str()), &flush_ms) {
            (None | Some("immediate"), None) => Durability::Immediate,
            (Some("none"), None) => Durability::None,
            (Some("periodic"), Some(flush)) => {
                let ms = *flush.get_ref();
                if !(1..=60_000).contains(&ms) {
                    return Err(self
                        .source
                        .error_at(&flush.span(), ConfigProblem::BadFlushMs(ms)));
                }
                Durability::Periodic(Duration::from_millis(ms))
            }
            (Some("periodic"), None) | (None | Some("immediate" | "none"), Some(_)) => {
                return Err(self
                    .source
                    .error_at(&span, ConfigProblem::FlushWithoutPeriodic));
            }
            (Some(other), _) => {
                let at = durability.as_ref().map_or(span.clone(), Spanned::span);
                return Err(self
                    .source
                    .error_at(&at, ConfigProblem::BadDurability(other.to_owned())));
            }
        };
        Ok(StoreConfig {
            location: StoreLocation::Directory(self.base_dir.join(path)),
            durability,
        })
    }

    /// A limit within `min..=max`.
    fn limit(
        &self,
        key: &'static str,
        value: &Spanned<u64>,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let given = *value.get_ref();
        if given < min {
            return Err(self.source.error_at(
                &value.span(),
                ConfigProblem::LimitTooSmall {
                    key,
                    value: given,
                    min,
                },
            ));
        }
        if given > max {
            return Err(self.source.error_at(
                &value.span(),
                ConfigProblem::LimitTooLarge {
                    key,
                    value: given,
                    max,
                },
            ));
        }
        Ok(given)
    }

    /// A size limit within `min..=max`, as a `usize`.
    fn size_limit(
        &self,
        key: &'static str,
        value: &Spanned<u64>,
        min: u64,
        max: usize,
    ) -> Result<usize, ConfigError> {
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        let accepted = self.limit(key, value, min, max)?;
        // `accepted <= max`, which came from a usize.
        Ok(usize::try_from(accepted).unwrap_or(usize::MAX))
    }

    fn limits(
        &self,
        raw: RawLimits,
    ) -> Result<(NonZeroUsize, ServerConfig, HubConfig), ConfigError> {
        let mut max_connections = BrokerConfig::DEFAULT_MAX_CONNECTIONS;
        let mut server = ServerConfig::default();
        let mut hub = HubConfig::default();
        if let Some(value) = &raw.max_connections {
            let max = self.size_limit("max_connections", value, 1, MAX_MAX_CONNECTIONS)?;
            // At least 1, as checked.
            max_connections = NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN);
        }
        if let Some(value) = &raw.max_packet_size {
            server.max_packet_size =
                self.size_limit("max_packet_size", value, 1, MAX_MQTT_PACKET_SIZE)?;
        }
        if let Some(value) = &raw.max_topic_len {
            let max_len = self.size_limit("max_topic_len", value, 1, MAX_STRING_LEN)?;
            server.topic_limits = TopicLimits::with_max_len(max_len);
        }
        if let Some(value) = &raw.connect_timeout_secs {
            let seconds = self.limit("connect_timeout_secs", value, 1, MAX_CONNECT_TIMEOUT_SECS)?;
            server.connect_timeout = Duration::from_secs(seconds);
        }
        if let Some(value) = &raw.max_pending_output {
            server.max_pending_output =
                self.size_limit("max_pending_output", value, 1, usize::MAX)?;
        }
        if let Some(value) = &raw.inflight_window {
            let window = self.size_limit("inflight_window", value, 1, MAX_INFLIGHT_WINDOW)?;
            // Within 1..=65535, the range of core's type.
            hub.inflight_window = u16::try_from(window)
                .ok()
                .and_then(NonZeroU16::new)
                .unwrap_or(NonZeroU16::MAX);
        }
        if let Some(value) = &raw.max_queued_messages {
            hub.max_queued_messages =
                self.size_limit("max_queued_messages", value, 0, usize::MAX)?;
        }
        if let Some(value) = &raw.max_queued_bytes {
            hub.max_queued_bytes = self.size_limit("max_queued_bytes", value, 0, usize::MAX)?;
        }
        if let Some(value) = &raw.ack_hold_threshold {
            hub.ack_hold_threshold = self.size_limit("ack_hold_threshold", value, 0, usize::MAX)?;
        }
        if let Some(value) = &raw.max_ack_hold_ms {
            let millis = self.limit("max_ack_hold_ms", value, 1, MAX_ACK_HOLD_MS)?;
            hub.max_ack_hold = Duration::from_millis(millis);
        }
        if let Some(value) = raw.max_message_age_secs {
            hub.max_message_age = value.into_inner().duration();
        }
        if let Some(value) = raw.session_expiry_secs {
            hub.session_expiry = value.into_inner().duration();
        }
        Ok((max_connections, server, hub))
    }

    fn auth(&self, raw: RawAuth) -> Result<AuthSettings, ConfigError> {
        let max_timestamp_skew_ms = match raw.max_timestamp_skew_ms {
            Some(skew) if *skew.get_ref() == 0 => {
                return Err(self
                    .source
                    .error_at(&skew.span(), ConfigProblem::ZeroTimestampSkew));
            }
            Some(skew) => Some(skew.into_inner()),
            None => None,
        };
        Ok(AuthSettings {
            open: raw.open,
            max_timestamp_skew_ms,
        })
    }

    fn products(
        &self,
        raw: Vec<RawProduct>,
    ) -> Result<(MemoryRegistry, Vec<ProductSettings>), ConfigError> {
        let mut registry = MemoryRegistry::new();
        let mut products = Vec::with_capacity(raw.len());
        // Where each name was first defined, as a byte offset: the line is counted only for an
        // error, so checking a large fleet stays linear in the file's size.
        let mut product_offsets: BTreeMap<String, usize> = BTreeMap::new();
        for product in raw {
            let key_span = product.key.span();
            let key = product.key.into_inner();
            self.check_product_key(&key, &key_span)?;
            if let Some(&first) = product_offsets.get(&key) {
                let first_line = self.source.locate(first).line;
                return Err(self.source.error_at(
                    &key_span,
                    ConfigProblem::DuplicateProduct { key, first_line },
                ));
            }
            product_offsets.insert(key.clone(), key_span.start);

            let mut categories = ProductCategories::defaults();
            let mut custom_categories = Vec::with_capacity(product.categories.len());
            for category in product.categories {
                let permission: Permission =
                    category.permission.get_ref().parse().map_err(|error| {
                        self.source.error_at(
                            &category.permission.span(),
                            ConfigProblem::BadPermission(error),
                        )
                    })?;
                let template = category.topic.get_ref();
                categories
                    .add_custom(template, permission)
                    .map_err(|source| {
                        self.source.error_at(
                            &category.topic.span(),
                            ConfigProblem::InvalidCategory {
                                template: template.clone(),
                                source,
                            },
                        )
                    })?;
                custom_categories.push((template.clone(), permission));
            }
            registry.add_product(&key, categories);

            let mut device_offsets: BTreeMap<String, usize> = BTreeMap::new();
            let mut device_names = Vec::with_capacity(product.device.len());
            for device in product.device {
                let name_span = device.name.span();
                let name = device.name.into_inner();
                self.check_device_name(&key, &name, &name_span)?;
                let identity = DeviceIdentity::new(key.as_str(), name.as_str());
                if let Some(&first) = device_offsets.get(&name) {
                    return Err(self.source.error_at(
                        &name_span,
                        ConfigProblem::DuplicateDevice {
                            device: identity,
                            first_line: self.source.locate(first).line,
                        },
                    ));
                }
                if device.secret.get_ref().is_empty() {
                    return Err(self.source.error_at(
                        &device.secret.span(),
                        ConfigProblem::EmptyDeviceSecret(identity),
                    ));
                }
                device_offsets.insert(name.clone(), name_span.start);
                registry
                    .add_device(&key, &name, DeviceSecret::new(device.secret.into_inner()))
                    .map_err(|source| {
                        self.source
                            .error_at(&name_span, ConfigProblem::Registry(source))
                    })?;
                device_names.push(name);
            }
            let product_secret = match product.product_secret {
                Some(secret) if secret.get_ref().is_empty() => {
                    return Err(self
                        .source
                        .error_at(&secret.span(), ConfigProblem::EmptyProductSecret));
                }
                Some(secret) => Some(secret.into_inner()),
                None => None,
            };
            if product.dynamic_registration && product_secret.is_none() {
                return Err(self
                    .source
                    .error_at(&key_span, ConfigProblem::DynamicRegistrationWithoutSecret));
            }
            products.push(ProductSettings {
                key,
                custom_categories,
                devices: device_names,
                product_secret,
                dynamic_registration: product.dynamic_registration,
            });
        }
        Ok((registry, products))
    }

    fn check_product_key(&self, key: &str, span: &Range<usize>) -> Result<(), ConfigError> {
        if key.contains('&') {
            return Err(self
                .source
                .error_at(span, ConfigProblem::AmpersandInProductKey(key.to_owned())));
        }
        // The topic crate checks a product key together with a device name; any valid name
        // does, so a product without devices gets the same check as one with.
        match check_identity(key, "device") {
            Ok(()) => Ok(()),
            Err(source) => Err(self.source.error_at(
                span,
                ConfigProblem::BadProductKey {
                    key: key.to_owned(),
                    source,
                },
            )),
        }
    }

    fn check_device_name(
        &self,
        product_key: &str,
        name: &str,
        span: &Range<usize>,
    ) -> Result<(), ConfigError> {
        if name.contains('&') {
            return Err(self
                .source
                .error_at(span, ConfigProblem::AmpersandInDeviceName(name.to_owned())));
        }
        match check_identity(product_key, name) {
            Ok(()) => Ok(()),
            Err(source) => Err(self.source.error_at(
                span,
                ConfigProblem::BadDeviceName {
                    name: name.to_owned(),
                    source,
                },
            )),
        }
    }
}
