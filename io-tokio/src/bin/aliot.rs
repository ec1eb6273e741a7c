//! `aliot`: run the broker, check its configuration, sign device credentials.
//!
//! ```text
//! aliot serve [--config FILE | --bind ADDR --api-bind ADDR --amqp-bind ADDR] [--data-dir DIR | --in-memory]
//! aliot check-config FILE
//! aliot product create|list|show|delete ...  [--api URL] [--token T] [--json]
//! aliot device add|list|show|disable|enable|reset|delete ...  [--api URL] [--token T] [--json]
//! aliot sign --product-key PK --device-name DN --device-secret DS [--sign-method M]
//!            [--client-id ID] [--timestamp TS|none] [--secure-mode 2|3] [--json]
//! ```
//!
//! Exit codes: 0 success, 1 a failure while running (an address that cannot be bound, …),
//! 2 a configuration or usage error. Logs go to stderr (`RUST_LOG`, default `info`); what the
//! command is asked for (credentials, summaries, the demo's commands) goes to stdout.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aliot_auth::{DeviceIdentity, DeviceSecret, PskIdentity, SecureMode, SignMethod, SignRequest};
use aliot_tokio::amqp::{AmqpConfig, ServeAmqp as _};
use aliot_tokio::api::AccessKeys;
use aliot_tokio::broker::{ApiConfig, Broker, ServeHttpApi as _};
use aliot_tokio::config::Config;
use aliot_tokio::demo;
use aliot_tokio::store::{Durability, StoreConfig, StoreLocation};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[path = "aliot/registry_cli.rs"]
mod registry_cli;

/// Exit code of a failure while running.
const EXIT_FAILURE: u8 = 1;
/// Exit code of a configuration or usage error (clap uses it for usage errors too).
const EXIT_CONFIG: u8 = 2;

/// The MQTT broker of the IoT platform profile, and tools for its devices.
#[derive(Parser)]
#[command(name = "aliot", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker until Ctrl-C or SIGTERM. Without --config: the built-in demo (product
    /// a1DemoProd01, devices dev-001..dev-003) on 127.0.0.1:1883, API on 127.0.0.1:8080.
    Serve(ServeArgs),
    /// Check a configuration file without serving: exit 0 with a summary, or 2 with the problem.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Print the MQTT client id, username and password of a device, for any MQTT tool.
    Sign(SignArgs),
    /// The products of a running broker's registry (through its HTTP API).
    Product {
        #[command(flatten)]
        api: registry_cli::ApiArgs,
        #[command(subcommand)]
        command: registry_cli::ProductCommand,
    },
    /// The devices of a running broker's registry (through its HTTP API).
    Device {
        #[command(flatten)]
        api: registry_cli::ApiArgs,
        #[command(subcommand)]
        command: registry_cli::DeviceCommand,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The TOML configuration file; without it, the built-in demo runs.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Demo only: the MQTT address instead of 127.0.0.1:1883 (port 0: any free port).
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    bind: Option<SocketAddr>,
    /// Demo only: the HTTP API address instead of 127.0.0.1:8080 (port 0: any free port).
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    api_bind: Option<SocketAddr>,
    /// Demo only: the AMQP address (the server-side subscription) instead of 127.0.0.1:5672
    /// (port 0: any free port).
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    amqp_bind: Option<SocketAddr>,
    /// Keep sessions, queued messages and device state in DIR, across restarts (instead of
    /// the file's `[store] path`; the demo's default is ./aliot-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk: sessions and queued messages are lost when the broker stops.
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
}

/// A listener beside the broker's could not start: says why, stops the broker, exits 1.
async fn refuse_to_serve(broker: Broker, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("aliot: {error}");
    broker.shutdown().await;
    ExitCode::from(EXIT_FAILURE)
}

/// Where the demo keeps its data unless told otherwise.
const DEMO_DATA_DIR: &str = "aliot-data";

#[derive(Args)]
struct SignArgs {
    /// The device's product key.
    #[arg(long, value_name = "PK")]
    product_key: String,
    /// The device's name.
    #[arg(long, value_name = "DN")]
    device_name: String,
    /// The device's secret.
    #[arg(long, value_name = "DS")]
    device_secret: String,
    /// hmacsha256, hmacsha1 or hmacmd5.
    #[arg(long, value_name = "M", default_value = "hmacsha256")]
    sign_method: SignMethod,
    /// The id part of the client id [default: PK.DN].
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// The signed timestamp, or `none` to sign without one [default: now, in milliseconds].
    #[arg(long, value_name = "TS")]
    timestamp: Option<String>,
    /// 3 for plain TCP, 2 for TLS.
    #[arg(long, value_name = "MODE", default_value = "3", value_parser = login_secure_mode)]
    secure_mode: SecureMode,
    /// Also print the TLS-PSK identity and key (as hex, the form `mosquitto_pub --psk` and
    /// `openssl s_client -psk` take), and sign the CONNECT `securemode=2`.
    #[arg(long)]
    psk: bool,
    /// Print a JSON object instead of key=value lines.
    #[arg(long)]
    json: bool,
}

/// A `securemode` a signed login declares: 2 or 3 (`-2` is for dynamic registration, which
/// is not signed with a device secret).
fn login_secure_mode(text: &str) -> Result<SecureMode, String> {
    match text.parse::<SecureMode>() {
        Ok(mode @ (SecureMode::Tls | SecureMode::Tcp)) => Ok(mode),
        _ => Err(format!(
            "securemode `{text}` is not supported for a signed login: 2 (TLS) or 3 (plain TCP)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Sign(args) => sign(&args),
        Command::Product { api, command } => registry_cli::product(&api, command),
        Command::Device { api, command } => registry_cli::device(&api, command),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn check_config(file: &Path) -> ExitCode {
    match Config::from_file(file) {
        Ok(config) => {
            println!("{}: OK", file.display());
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("aliot: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Joins the cluster of `[cluster]`, if the configuration has one: the broker's
/// configuration gets the link (and, with `when_nats_down = "refuse"`, an authenticator that
/// refuses new connections while NATS is unreachable).
#[cfg(feature = "cluster")]
async fn join_cluster(
    config: &Config,
    broker_config: &mut aliot_io::broker::BrokerConfig,
) -> Result<Option<aliot_cluster::Cluster>, String> {
    let Some(settings) = &config.cluster else {
        return Ok(None);
    };
    let cluster = aliot_cluster::Cluster::connect(aliot_cluster::ClusterOptions {
        nats: settings.nats.clone(),
        node_id: settings.node_id.clone(),
        replicas: settings.replicas,
    })
    .await
    .map_err(|error| error.to_string())?;
    broker_config.cluster = Some(cluster.link());
    if settings.when_nats_down == aliot_io::config::WhenNatsDown::Refuse {
        broker_config.authenticator = Arc::new(aliot_cluster::NatsGate::new(
            config.authenticator(),
            cluster.nats().clone(),
        ));
    }
    Ok(Some(cluster))
}

/// Without the `cluster` feature, a `[cluster]` table cannot be served.
#[cfg(not(feature = "cluster"))]
async fn join_cluster(
    config: &Config,
    _: &mut aliot_io::broker::BrokerConfig,
) -> Result<Option<()>, String> {
    match &config.cluster {
        Some(_) => Err("[cluster]: this aliot was built without the `cluster` feature".into()),
        None => Ok(None),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let demo = args.config.is_none();
    let config = match &args.config {
        Some(path) => Config::from_file(path),
        None => demo::demo_config(args.bind, args.api_bind, args.amqp_bind),
    };
    let mut config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("aliot: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.in_memory {
        config.store = None;
    } else if let Some(dir) = args.data_dir {
        let durability = config
            .store
            .as_ref()
            .map_or(Durability::Immediate, |store| store.durability);
        config.store = Some(StoreConfig {
            location: StoreLocation::Directory(dir),
            durability,
        });
    } else if demo {
        config.store = Some(StoreConfig::directory(DEMO_DATA_DIR));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aliot: cannot start the tokio runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(run_broker(config, demo))
}

async fn run_broker(config: Config, demo: bool) -> ExitCode {
    // Listen for the stop signals before anything can be told the broker runs, so a SIGTERM
    // sent as soon as the addresses are printed stops it gracefully instead of killing it.
    let stop = match StopSignals::listen() {
        Ok(stop) => stop,
        Err(error) => {
            eprintln!("aliot: cannot listen for stop signals: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut broker_config = config.broker_config();
    let cluster = match join_cluster(&config, &mut broker_config).await {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("aliot: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The broker seeds the first RRPC message id from the wall clock itself.
    let mut broker = match Broker::start(broker_config).await {
        Ok(broker) => broker,
        Err(error) => {
            eprintln!("aliot: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // The OpenAPI and the AMQP listener share one set of AccessKeys: the configuration's,
    // and in a cluster every node's.
    let access_keys = AccessKeys::configured(&config.access_keys);
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &cluster {
        let own = access_keys
            .current()
            .iter()
            .map(|key| (key.id.clone(), key.secret.clone()))
            .collect();
        let shared = access_keys.clone();
        cluster.share_access_keys(
            own,
            Arc::new(move |keys: Vec<(String, String)>| {
                shared.replace(
                    keys.into_iter()
                        .map(|(id, secret)| aliot_tokio::api::AccessKey { id, secret })
                        .collect(),
                );
            }),
        );
        cluster.start(broker.handle());
    }
    let api_addr = match &config.api {
        Some(api) => {
            let api = ApiConfig {
                bind: api.bind,
                token: api.token.clone(),
                access_keys: access_keys.clone(),
                console: api.console,
            };
            match broker.serve_http_api(api).await {
                Ok(addr) => Some(addr),
                Err(error) => return refuse_to_serve(broker, &error).await,
            }
        }
        None => None,
    };
    let amqp_addr = match &config.amqp {
        Some(amqp) => {
            let amqp = AmqpConfig {
                bind: amqp.bind,
                tls: amqp.tls.as_ref().map(|tls| Arc::clone(&tls.server_config)),
                access_keys,
            };
            match broker.serve_amqp(amqp).await {
                Ok(addr) => Some(addr),
                Err(error) => return refuse_to_serve(broker, &error).await,
            }
        }
        None => None,
    };
    match config.store.as_ref().map(|store| &store.location) {
        Some(StoreLocation::Directory(dir)) => println!(
            "aliot: keeping sessions and queued messages in {} (--in-memory: keep none)",
            dir.display()
        ),
        _ => println!("aliot: in memory only: sessions and queued messages end with the broker"),
    }
    let listeners = broker.listener_addrs();
    for listener in broker.listeners() {
        let addr = listener.addr;
        match (&listener.websocket_path, listener.tls) {
            (None, tls) => println!(
                "aliot: listening for MQTT on {addr} ({})",
                match (listener.psk, listener.legacy_tls, tls) {
                    (true, _, _) => "TLS-PSK".to_owned(),
                    (false, Some(version), _) => format!("TLS from {version}"),
                    (false, None, true) => "TLS".to_owned(),
                    (false, None, false) => "TCP".to_owned(),
                }
            ),
            (Some(_), tls) => println!(
                "aliot: listening for MQTT on {addr} (WebSocket{}, {})",
                if tls { " over TLS" } else { "" },
                listener.url()
            ),
        }
    }
    if let Some(addr) = api_addr {
        println!("aliot: HTTP API on http://{addr}");
        if config.api.as_ref().is_some_and(|api| api.console) {
            println!("aliot: web console on http://{addr}/console");
        }
    }
    if let (Some(addr), Some(amqp)) = (amqp_addr, &config.amqp) {
        let scheme = if amqp.tls.is_some() { "amqps" } else { "amqp" };
        println!("aliot: AMQP consumers on {scheme}://{addr}");
    }
    #[cfg(feature = "cluster")]
    if let (Some(cluster), Some(settings)) = (&cluster, &config.cluster) {
        println!(
            "aliot: node {} of a cluster on NATS {} ({})",
            cluster.node_id(),
            settings.nats.join(", "),
            if cluster.is_connected() {
                "connected"
            } else {
                "not reachable yet: retrying"
            }
        );
    }
    #[cfg(not(feature = "cluster"))]
    let _ = cluster;
    if demo && let Some((mqtt_addr, _)) = listeners.first() {
        println!();
        print!("{}", demo::instructions(&config, *mqtt_addr, api_addr));
    }
    println!("aliot: running; Ctrl-C or SIGTERM stops it");
    tracing::info!(
        listeners = listeners.len(),
        devices = config.registry.device_count(),
        "broker started"
    );

    let signal = stop.wait().await;
    tracing::info!("{signal}: shutting down");
    broker.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The signals that stop the broker: SIGINT (Ctrl-C) and SIGTERM, registered at once.
#[cfg(unix)]
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignals {
    fn listen() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for one of them; says which came.
    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// The signal that stops the broker where there is no SIGTERM: Ctrl-C.
#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn listen() -> std::io::Result<StopSignals> {
        Ok(StopSignals)
    }

    /// Waits for Ctrl-C.
    async fn wait(self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(error) => {
                tracing::error!("cannot listen for Ctrl-C ({error}); stopping");
                "no signal handler"
            }
        }
    }
}

/// Milliseconds since the Unix epoch, if the clock is after it.
fn unix_time_ms() -> Option<u64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

fn sign(args: &SignArgs) -> ExitCode {
    match signed_credentials(args) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("aliot: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The `sign` output, or what is wrong with the arguments.
fn signed_credentials(args: &SignArgs) -> Result<String, String> {
    for (flag, value) in [
        ("--product-key", &args.product_key),
        ("--device-name", &args.device_name),
        ("--device-secret", &args.device_secret),
    ] {
        if value.is_empty() {
            return Err(format!("{flag} is empty"));
        }
    }
    for (flag, value) in [
        ("--product-key", &args.product_key),
        ("--device-name", &args.device_name),
    ] {
        if value.contains('&') {
            return Err(format!(
                "{flag} {value:?} contains `&`, which the username `deviceName&productKey` cannot carry"
            ));
        }
    }
    let identity = DeviceIdentity::new(args.product_key.as_str(), args.device_name.as_str());
    let secret = DeviceSecret::new(args.device_secret.as_str());
    // TLS-PSK is TLS: the CONNECT on top declares it.
    let secure_mode = if args.psk {
        SecureMode::Tls
    } else {
        args.secure_mode
    };
    let mut request = SignRequest::new(&identity, &secret, secure_mode).method(args.sign_method);
    if let Some(client_id) = &args.client_id {
        request = request.client_id(client_id.as_str());
    }
    let now = || {
        unix_time_ms()
            .map(|now| now.to_string())
            .ok_or("the system clock is before 1970")
    };
    let timestamp = match args.timestamp.as_deref() {
        Some("none") => None,
        Some(timestamp) => Some(timestamp.to_owned()),
        None => Some(now()?),
    };
    if let Some(timestamp) = &timestamp {
        request = request.timestamp(timestamp.as_str());
    }
    let credentials = request
        .sign()
        .map_err(|error| format!("cannot sign: {error}"))?;
    // The PSK identity always carries a timestamp: the signed one, or now.
    let psk = match (args.psk, timestamp) {
        (false, _) => None,
        (true, Some(timestamp)) => Some(PskIdentity::new(identity.clone(), timestamp)),
        (true, None) => Some(PskIdentity::new(identity.clone(), now()?)),
    }
    .map(|psk_identity| {
        let key = psk_identity.key(&secret);
        (psk_identity.to_string(), key.to_hex())
    });
    if args.json {
        let mut object = serde_json::json!({
            "client_id": credentials.client_id,
            "username": credentials.username,
            "password": credentials.password,
        });
        if let Some((psk_identity, psk_hex)) = psk {
            object["psk_identity"] = psk_identity.into();
            object["psk_hex"] = psk_hex.into();
        }
        serde_json::to_string_pretty(&object).map_err(|error| error.to_string())
    } else {
        let mut text = format!(
            "client_id={}\nusername={}\npassword={}",
            credentials.client_id, credentials.username, credentials.password
        );
        if let Some((psk_identity, psk_hex)) = psk {
            text.push_str(&format!("\npsk_identity={psk_identity}\npsk_hex={psk_hex}"));
        }
        Ok(text)
    }
}
