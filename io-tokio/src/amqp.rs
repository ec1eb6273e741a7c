//! The server-side subscription's AMQP 1.0 listener (PLATFORM-PROTOCOLS §8): business servers
//! written like the platform's consumer demos (Qpid JMS, rhea, qpid-proton, AMQPNetLite) receive
//! their consumer group's messages from the broker, with only the endpoint changed.
//!
//! AMQP itself is fe2o3-amqp's acceptor (`docs/DESIGN-NOTES.md` says why), writing through
//! [`CoalescedWrites`] so that a burst of frames is one socket write; this module is the
//! adapter between one AMQP connection and one consumer of the hub's consumer groups
//! ([`aliot_io::broker::GroupConsumer`]):
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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aliot_auth::ConsumerLogin;
use aliot_core::hub::BacklogMessage;
use aliot_io::broker::{Broker, BrokerHandle, GroupConsumer};
use aliot_io::runtime::Runtime;
use base64::Engine;
use fe2o3_amqp::Sender;
use fe2o3_amqp::acceptor::ConnectionAcceptor;
use fe2o3_amqp::acceptor::link::{LinkAcceptor, LinkEndpoint};
use fe2o3_amqp::acceptor::sasl_acceptor::{SaslAcceptor, SaslServerFrame};
use fe2o3_amqp::acceptor::session::SessionAcceptor;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErrorInfo};
use fe2o3_amqp::types::messaging::{ApplicationProperties, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Array, Binary, SimpleValue, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::api::AccessKeys;
use crate::coalesced::CoalescedWrites;
use crate::runtime::Tokio;

/// How long a connection has, from its open, to attach its receiver link (the platform's 15 s).
pub const LINK_DEADLINE: Duration = Duration::from_secs(15);

/// Messages sent to one consumer and not yet answered, at most (ours): the backlog keeps the
/// rest, and the client's link credit may hold it to fewer. Enough to cover the round trip of
/// a fast consumer: at 64 the window, not the CPU, held one to about 100,000 msgs/s.
pub const IN_FLIGHT: u32 = 256;

/// AMQP connections held at once, at most (ours; the platform allows 128 per client id and
/// 64 clients per group): one more is closed as soon as it is accepted, and logged.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long, once a consumer's session has ended, its answers still on their way are waited
/// for (a client that accepts and closes at once sends its dispositions before its close; one
/// that vanished sends none, and what it held goes to the next consumer after this).
const DRAIN: Duration = Duration::from_secs(1);

/// The idle time-out this side declares (the platform accepts 30 s to 300 s from clients;
/// ours is the longest, so that none of theirs is cut short).
const IDLE_TIME_OUT_MS: u32 = 300_000;

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
                            Ok(Ok(stream)) => serve_connection(CoalescedWrites::new(stream), peer, keys, handle).await,
                            Ok(Err(error)) => debug!(%peer, %error, "AMQP TLS handshake failed"),
                            Err(_) => debug!(%peer, "AMQP TLS handshake not done within 15 s"),
                        },
                        None => serve_connection(CoalescedWrites::new(stream), peer, keys, handle).await,
                    }
                });
            }
        });
        Ok(local)
    }
}

/// SASL PLAIN with the platform's `aksign` user name and password; the login it accepted is
/// kept for the connection.
#[derive(Clone)]
struct AkSign {
    keys: AccessKeys,
    accepted: Arc<Mutex<Option<ConsumerLogin>>>,
}

impl AkSign {
    /// The login, when the credentials were right: the user name read, the AccessKey known,
    /// the password its secret's signature.
    fn check(&self, init: &SaslInit) -> Result<ConsumerLogin, String> {
        if init.mechanism.as_str() != "PLAIN" {
            return Err(format!(
                "mechanism {} (only PLAIN is offered)",
                init.mechanism.as_str()
            ));
        }
        let response = init
            .initial_response
            .as_ref()
            .map(|response| response.to_vec())
            .unwrap_or_default();
        let mut parts = response.split(|byte| *byte == 0);
        let (_authzid, username, password) = (parts.next(), parts.next(), parts.next());
        let (Some(username), Some(password)) = (username, password) else {
            return Err("not a PLAIN response".into());
        };
        let username = std::str::from_utf8(username).map_err(|_| "the user name is not UTF-8")?;
        let password = std::str::from_utf8(password).map_err(|_| "the password is not UTF-8")?;
        let login = ConsumerLogin::parse(username).map_err(|error| error.to_string())?;
        let keys = self.keys.current();
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
}

impl SaslAcceptor for AkSign {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("PLAIN")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let code = match self.check(&init) {
            Ok(login) => {
                *self.accepted.lock().unwrap_or_else(PoisonError::into_inner) = Some(login);
                SaslCode::Ok
            }
            Err(why) => {
                info!(why, "AMQP consumer refused at SASL");
                SaslCode::Auth
            }
        };
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // PLAIN has no second round.
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None,
        })
    }
}

/// One consumer's connection, from SASL to its close.
async fn serve_connection<Io>(stream: Io, peer: SocketAddr, keys: AccessKeys, handle: BrokerHandle)
where
    Io: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let sasl = AkSign {
        keys,
        accepted: Arc::default(),
    };
    let acceptor = ConnectionAcceptor::builder()
        .container_id("aliot")
        .idle_time_out(IDLE_TIME_OUT_MS)
        .sasl_acceptor(sasl.clone())
        .build();
    // SASL and the open, within the same deadline as the link.
    let mut connection = match tokio::time::timeout(LINK_DEADLINE, acceptor.accept(stream)).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            debug!(%peer, %error, "AMQP connection not opened");
            return;
        }
        Err(_) => {
            debug!(%peer, "AMQP connection not opened within 15 s");
            return;
        }
    };
    let Some(login) = sasl
        .accepted
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return;
    };
    // One session, one receiver link, within the deadline.
    let linked = tokio::time::timeout(LINK_DEADLINE, async {
        let mut session = SessionAcceptor::new().accept(&mut connection).await.ok()?;
        let link = LinkAcceptor::new().accept(&mut session).await.ok()?;
        Some((session, link))
    })
    .await;
    let (mut session, sender) = match linked {
        Ok(Some((session, LinkEndpoint::Sender(sender)))) => (session, sender),
        Ok(Some((_, LinkEndpoint::Receiver(receiver)))) => {
            info!(%peer, client = login.client_id, "AMQP consumer refused: it attached a sender link (consumers receive only)");
            let error = AmqpErrorInfo::new(
                AmqpError::NotAllowed,
                "consumers may only receive".to_string(),
                None,
            );
            let _ = receiver.close_with_error(error).await;
            let _ = connection.close().await;
            return;
        }
        Ok(None) | Err(_) => {
            info!(%peer, client = login.client_id, "AMQP consumer closed: no receiver link within 15 s");
            let _ = connection.close().await;
            return;
        }
    };
    let consumer = match handle.attach_consumer(&login.consumer_group_id).await {
        Ok(Ok(consumer)) => consumer,
        Ok(Err(unknown)) => {
            info!(%peer, client = login.client_id, "AMQP consumer refused: {unknown}");
            let error = AmqpErrorInfo::new(AmqpError::NotFound, unknown.to_string(), None);
            let _ = sender.close_with_error(error).await;
            let _ = connection.close().await;
            return;
        }
        Err(_) => return,
    };
    info!(%peer, client = login.client_id, group = login.consumer_group_id, "AMQP consumer attached");
    // A second link on the session is refused while the first serves.
    let refuse_more = async {
        while let Ok(link) = LinkAcceptor::new().accept(&mut session).await {
            let error = AmqpErrorInfo::new(
                AmqpError::NotAllowed,
                "one receiver link per connection".to_string(),
                None,
            );
            match link {
                LinkEndpoint::Sender(extra) => {
                    let _ = extra.close_with_error(error).await;
                }
                LinkEndpoint::Receiver(extra) => {
                    let _ = extra.close_with_error(error).await;
                }
            }
        }
    };
    deliver(sender, consumer, login.base64_bodies, refuse_more).await;
    let _ = connection.close().await;
    debug!(%peer, "AMQP consumer gone");
}

/// Sends the consumer's messages on its link until either ends, and answers each to the hub.
/// When `session_ended` completes (the client ended its session or connection), nothing more
/// is sent, and the answers already on their way are still taken: a client that accepts its
/// last messages and closes at once has them settled, not sent again.
async fn deliver(
    mut sender: Sender,
    mut consumer: GroupConsumer,
    base64_bodies: bool,
    session_ended: impl Future<Output = ()>,
) {
    if consumer.credit(IN_FLIGHT).await.is_err() {
        return;
    }
    let mut answers = FuturesUnordered::new();
    tokio::pin!(session_ended);
    let drained = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drained);
    let mut ending = false;
    loop {
        if ending && answers.is_empty() {
            break;
        }
        tokio::select! {
            () = &mut session_ended, if !ending => {
                ending = true;
                drained.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            }
            () = &mut drained, if ending => break,
            next = consumer.next(), if !ending && answers.len() < IN_FLIGHT as usize => {
                let Some((message, _redelivery)) = next else { break };
                let id = message.message_id;
                match sender.send_batchable(amqp_message(&message, base64_bodies)).await {
                    Ok(delivered) => answers.push(async move { (id, delivered.await) }),
                    Err(error) => {
                        debug!(%error, "AMQP send failed; the message goes to another consumer");
                        let _ = consumer.released(id).await;
                        break;
                    }
                }
            }
            Some((id, outcome)) = answers.next() => {
                // Its slot in the window is free again: the same request gives it back.
                let accepted = matches!(outcome, Ok(Outcome::Accepted(_)));
                if consumer.answered(id, accepted, 1).await.is_err() {
                    break;
                }
            }
        }
    }
    // What was in flight and unanswered goes to the group's next consumer.
    consumer.detach().await;
    let _ = sender.close().await;
}

/// The AMQP message of a backlog message: the body as a `data` section (base64 when the
/// consumer asked for it), `topic`, `messageId` and `generateTime` as application
/// properties, and the message id in the properties too.
fn amqp_message(
    message: &BacklogMessage,
    base64_bodies: bool,
) -> Message<fe2o3_amqp::types::messaging::Data> {
    let body = match base64_bodies {
        true => base64::engine::general_purpose::STANDARD
            .encode(&message.payload)
            .into_bytes(),
        false => message.payload.to_vec(),
    };
    let id = message.message_id.to_string();
    let mut properties = ApplicationProperties::default();
    properties.insert(
        "topic".into(),
        SimpleValue::String(message.topic.as_str().to_owned()),
    );
    properties.insert("messageId".into(), SimpleValue::String(id.clone()));
    let time = i64::try_from(message.generate_time.0).unwrap_or(i64::MAX);
    properties.insert("generateTime".into(), SimpleValue::Long(time));
    Message::builder()
        .properties(Properties::builder().message_id(id).build())
        .application_properties(properties)
        .data(Binary::from(body))
        .build()
}
