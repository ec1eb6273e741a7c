//! The server-side subscription's AMQP 1.0 listener (PLATFORM-PROTOCOLS §8): business servers
//! written like the platform's consumer demos (Qpid JMS, rhea, qpid-proton, AMQPNetLite) receive
//! their consumer group's messages from the broker, with only the endpoint changed.
//!
//! AMQP itself is aliot's own engine, `aliot_amqp::connection::ServerConnection` (sans-IO;
//! `docs/DESIGN-NOTES.md` says why it replaced fe2o3-amqp); this module is the loop that moves
//! one connection's bytes and time through it and its decisions to one consumer of the hub's
//! consumer groups ([`aliot_io::broker::GroupConsumer`]), writing each turn's output in one
//! system call:
//!
//! 1. TLS when the listener has a certificate, then SASL PLAIN: the user name and password are
//!    the platform's `aksign` ones ([`aliot_auth::ConsumerLogin`]), checked against the
//!    `[[access_key]]`s; a wrong signature or an unknown AccessKey is refused at SASL.
//! 2. Within [`LINK_DEADLINE`] of the open, one session with one receiver link (a sender link,
//!    on this side); a second link is refused, and a connection with none by then is closed.
//! 3. The consumer group named in the user name is attached (an unknown one closes the
//!    connection with `amqp:not-found`); its messages go out unsettled, at most
//!    [`IN_FLIGHT`] at once and never beyond the link credit the client gives; each one the
//!    client accepts is settled in the hub (it leaves the backlog), each one it releases,
//!    rejects or modifies, and each one unanswered when the link or connection ends, goes to
//!    the group's next consumer.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aliot_amqp::connection::{Event, SendError, ServerConfig, ServerConnection, condition};
use aliot_amqp::message::{Message, PropertyValue};
use aliot_auth::ConsumerLogin;
use aliot_core::Instant;
use aliot_core::hub::BacklogMessage;
use aliot_io::broker::{Broker, BrokerHandle, ConsumerDelivery, GroupConsumer};
use aliot_io::runtime::Runtime;
use base64::Engine;
use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::api::AccessKeys;
use crate::runtime::Tokio;

/// How long a connection has, from its open, to attach its receiver link (the platform's 15 s);
/// and, from its start, to log in and open.
pub const LINK_DEADLINE: Duration = Duration::from_secs(15);

/// Messages sent to one consumer and not yet answered, at most (ours): the backlog keeps the
/// rest, and the client's link credit may hold it to fewer. Enough to cover the round trip of
/// a fast consumer: at 64 the window, not the CPU, held one to about 100,000 msgs/s.
pub const IN_FLIGHT: u32 = 256;

/// AMQP connections held at once, at most (ours; the platform allows 128 per client id and
/// 64 clients per group): one more is closed as soon as it is accepted, and logged.
pub const MAX_CONNECTIONS: usize = 1024;

/// The idle time-out this side declares (the platform accepts 30 s to 300 s from clients;
/// ours is the longest, so that none of theirs is cut short).
const IDLE_TIME_OUT: Duration = Duration::from_secs(300);

/// The largest frame a consumer may send (ours; consumers send small ones: credit and
/// dispositions).
const MAX_FRAME_SIZE: u32 = 65_536;

/// Bytes read from the socket at once.
const READ_SIZE: usize = 16 * 1024;

/// Where and how the AMQP listener serves.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// The address to listen on (port 0: any free port).
    pub bind: SocketAddr,
    /// TLS, as the platform's 5671 has it; `None`: plain AMQP (for local development).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The AccessKeys consumers sign their login with (shared: in a cluster, the other
    /// nodes' join them).
    pub access_keys: AccessKeys,
}

/// The address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for AMQP on {addr}: {source}")]
pub struct BindAmqpError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The server-side subscription, served by the tokio broker.
pub trait ServeAmqp {
    /// Binds `config.bind` and serves consumers there, in a task beside the broker's, until the
    /// broker stops accepting. Returns the address bound (port 0 resolved).
    fn serve_amqp(
        &mut self,
        config: AmqpConfig,
    ) -> impl Future<Output = Result<SocketAddr, BindAmqpError>> + Send;
}

impl ServeAmqp for Broker<Tokio> {
    async fn serve_amqp(&mut self, config: AmqpConfig) -> Result<SocketAddr, BindAmqpError> {
        let AmqpConfig {
            bind,
            tls,
            access_keys,
        } = config;
        let bind_error = |source| BindAmqpError { addr: bind, source };
        let listener = TcpListener::bind(bind).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        info!(addr = %local, tls = tls.is_some(), "listening for AMQP consumers (server-side subscription)");
        let keys = access_keys;
        let handle = self.handle();
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        self.spawn_service("the AMQP listener", move |stop| async move {
            let stopped = stop.raised();
            tokio::pin!(stopped);
            loop {
                let (stream, peer) = tokio::select! {
                    () = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            warn!(%error, "AMQP accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    warn!(%peer, "AMQP connection closed at once: {MAX_CONNECTIONS} are open already");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (keys, handle, tls) = (keys.clone(), handle.clone(), tls.clone());
                Tokio.spawn(async move {
                    let _slot = slot;
                    match tls {
                        Some(tls) => match tokio::time::timeout(LINK_DEADLINE, tls.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(stream, peer, keys, handle).await,
                            Ok(Err(error)) => debug!(%peer, %error, "AMQP TLS handshake failed"),
                            Err(_) => debug!(%peer, "AMQP TLS handshake not done within 15 s"),
                        },
                        None => serve_connection(stream, peer, keys, handle).await,
                    }
                });
            }
        });
        Ok(local)
    }
}

/// The login of a SASL PLAIN user name and password, when they are right: the user name read,
/// the AccessKey known, the password its secret's signature; why not otherwise.
fn check_login(keys: &AccessKeys, username: &str, password: &str) -> Result<ConsumerLogin, String> {
    let login = ConsumerLogin::parse(username).map_err(|error| error.to_string())?;
    let keys = keys.current();
    let key = keys
        .iter()
        .find(|key| key.id == login.access_key_id)
        .ok_or_else(|| format!("unknown AccessKey {}", login.access_key_id))?;
    if !login.password_matches(key.secret.as_bytes(), password) {
        return Err(format!(
            "the password is not AccessKey {}'s signature",
            key.id
        ));
    }
    Ok(login)
}

/// What a connection's protocol engine is told to declare and enforce.
fn engine_config() -> ServerConfig {
    ServerConfig {
        container_id: "aliot".to_string(),
        max_frame_size: MAX_FRAME_SIZE,
        idle_time_out: IDLE_TIME_OUT,
        handshake_deadline: LINK_DEADLINE,
        link_deadline: LINK_DEADLINE,
    }
}

/// One consumer's connection, from SASL to its close: bytes and time into the protocol
/// engine ([`ServerConnection`]), its output to the socket, its decisions to the hub.
async fn serve_connection<Io>(
    mut stream: Io,
    peer: SocketAddr,
    keys: AccessKeys,
    handle: BrokerHandle,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin,
{
    let started = tokio::time::Instant::now();
    let now =
        || Instant::from_millis(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut engine = ServerConnection::new(engine_config(), now());
    let mut login: Option<ConsumerLogin> = None;
    let mut consumer: Option<GroupConsumer> = None;
    // Messages the hub handed over that wait for the client's credit (at most IN_FLIGHT, the
    // hub's window, less what is unanswered).
    let mut waiting: VecDeque<Arc<BacklogMessage>> = VecDeque::new();
    let mut input = vec![0; READ_SIZE];
    let mut closed = false;
    let (mut accepted, mut given_back) = (Vec::new(), Vec::new());
    loop {
        while let Some(event) = engine.poll_event() {
            match event {
                Event::Login { username, password } => {
                    let verdict = check_login(&keys, &username, &password);
                    if let Err(why) = &verdict {
                        info!(%peer, why, "AMQP consumer refused at SASL");
                    }
                    login = verdict.ok();
                    engine.login_verdict(now(), login.is_some());
                }
                Event::LinkAttached { .. } => {
                    let Some(login) = &login else { continue };
                    match handle.attach_consumer(&login.consumer_group_id).await {
                        Ok(Ok(attached)) => {
                            info!(%peer, client = login.client_id, group = login.consumer_group_id, "AMQP consumer attached");
                            if attached.credit(IN_FLIGHT).await.is_ok() {
                                consumer = Some(attached);
                            } else {
                                engine.close(now(), None);
                            }
                        }
                        Ok(Err(unknown)) => {
                            info!(%peer, client = login.client_id, "AMQP consumer refused: {unknown}");
                            engine.refuse_link(now(), condition::NOT_FOUND, &unknown.to_string());
                        }
                        Err(_) => engine.close(now(), None),
                    }
                }
                Event::Credit => {}
                Event::Answered {
                    tag,
                    accepted: true,
                } => accepted.push(tag),
                Event::Answered {
                    tag,
                    accepted: false,
                } => given_back.push(tag),
                Event::Closed(reason) => {
                    debug!(%peer, ?reason, "AMQP connection over");
                    closed = true;
                }
            }
        }
        // Answers to the hub, a request for each kind: each frees a slot of the window.
        if let Some(consumer) = &consumer {
            for (tags, settled) in [(&mut accepted, true), (&mut given_back, false)] {
                if !tags.is_empty()
                    && consumer
                        .answered_all(std::mem::take(tags), settled)
                        .await
                        .is_err()
                {
                    engine.close(now(), None);
                }
            }
        }
        // What waits goes out as far as the client's credit allows.
        while engine.sendable() > 0 {
            let Some(message) = waiting.pop_front() else {
                engine.nothing_to_send(now());
                break;
            };
            if send_message(&mut engine, now(), &message, login_base64(&login)).is_err() {
                waiting.push_front(message);
                break;
            }
        }
        // The engine's output in one write.
        if !engine.output().is_empty() {
            if stream.write_all(engine.output()).await.is_err() || stream.flush().await.is_err() {
                engine.handle_eof();
                closed = true;
            }
            let written = engine.output().len();
            engine.consume_output(written);
        }
        if closed || engine.is_closed() {
            break;
        }
        let deadline = engine
            .poll_timeout()
            .map(|at| started + Duration::from_millis(at.as_millis()));
        let wants_more = consumer.is_some() && waiting.len() < IN_FLIGHT as usize;
        tokio::select! {
            read = stream.read(&mut input) => match read {
                Ok(0) | Err(_) => engine.handle_eof(),
                Ok(n) => engine.handle_input(now(), &input[..n]),
            },
            next = next_delivery(&mut consumer), if wants_more => match next {
                Some((message, _redelivery)) => {
                    waiting.push_back(message);
                    // What else the hub has handed over already goes out in the same turn,
                    // and in the same write.
                    while waiting.len() < IN_FLIGHT as usize {
                        match consumer.as_mut().and_then(|consumer| consumer.next().now_or_never()) {
                            Some(Some((message, _redelivery))) => waiting.push_back(message),
                            _ => break,
                        }
                    }
                }
                // The broker stopped.
                None => engine.close(now(), None),
            },
            () = sleep_until(deadline) => engine.handle_timeout(now()),
        }
    }
    // What was handed over and not accepted (waiting, in flight, given back) goes to the
    // group's next consumer.
    if let Some(consumer) = consumer {
        consumer.detach().await;
    }
    let _ = stream.shutdown().await;
}

/// The consumer's next message; never, without a consumer.
async fn next_delivery(consumer: &mut Option<GroupConsumer>) -> Option<ConsumerDelivery> {
    match consumer {
        Some(consumer) => consumer.next().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn login_base64(login: &Option<ConsumerLogin>) -> bool {
    login.as_ref().is_some_and(|login| login.base64_bodies)
}

/// Sends a backlog message on the consumer's link: the body as a `data` section (base64 when
/// the consumer asked for it), `topic`, `messageId` and `generateTime` as application
/// properties, and the message id in the properties too.
fn send_message(
    engine: &mut ServerConnection,
    now: Instant,
    message: &BacklogMessage,
    base64_bodies: bool,
) -> Result<(), SendError> {
    let mut id = itoa::Buffer::new();
    let id = id.format(message.message_id);
    let encoded;
    let body: &[u8] = if base64_bodies {
        encoded = base64::engine::general_purpose::STANDARD.encode(&message.payload);
        encoded.as_bytes()
    } else {
        &message.payload
    };
    let time = i64::try_from(message.generate_time.0).unwrap_or(i64::MAX);
    let properties = [
        ("topic", PropertyValue::String(message.topic.as_str())),
        ("messageId", PropertyValue::String(id)),
        ("generateTime", PropertyValue::Long(time)),
    ];
    let message_id = message.message_id;
    engine.send(
        now,
        message_id,
        &Message {
            message_id: Some(id),
            application_properties: &properties,
            body,
        },
    )
}
