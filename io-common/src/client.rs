//! The device client on any [`Runtime`]: [`Client`].
//!
//! A [`Client`] drives the sans-IO [`aliot_core::client::Connection`] over TCP or TLS
//! (futures-rustls, ring). It connects to the platform (see [`ClientOptions`] for its endpoint
//! forms) or to any MQTT broker at any host and port, this crate's [`Broker`](crate::Broker)
//! included, signing the CONNECT with the device secret ([`Login::Device`]) or sending ready
//! credentials ([`Login::Credentials`]).
//!
//! - [`publish`](Client::publish) resolves when the broker acknowledged the message (QoS 1) or
//!   it was written to the socket (QoS 0); [`subscribe`](Client::subscribe) with the SUBACK's
//!   return codes, [`unsubscribe`](Client::unsubscribe) with the UNSUBACK.
//! - Received messages come through [`messages`](Client::messages); RRPC calls are answered by
//!   the handler of [`on_rrpc`](Client::on_rrpc) (or [`on_rrpc_async`](Client::on_rrpc_async)).
//! - The platform's device services (PLATFORM-PROTOCOLS §1, §3, §5, §6), over the sans-IO
//!   layer of `aliot-services` (`ThingRequests`, `DeviceDownlink`):
//!   [`post_properties`](Client::post_properties) and [`post_event`](Client::post_event)
//!   resolve with the platform's reply, [`ntp_sync`](Client::ntp_sync) with its time,
//!   [`get_shadow`](Client::get_shadow) / [`update_shadow`](Client::update_shadow) with the
//!   shadow's reply; [`on_property_set`](Client::on_property_set),
//!   [`on_service`](Client::on_service) (asynchronous calls and synchronous ones over RRPC),
//!   [`on_shadow_control`](Client::on_shadow_control) and [`on_upgrade`](Client::on_upgrade)
//!   take the platform's calls and pushes; [`report_version`](Client::report_version) reports
//!   firmware. A device login announces `_ss=1` and `ext=1` in its client id, as the C SDK
//!   does, so none of this needs a SUBSCRIBE ([`ClientOptions::announce_features`]). What no
//!   caller or handler takes still comes through [`messages`](Client::messages).
//! - A lost connection is dialled again after a capped exponential delay with jitter
//!   ([`Backoff`](aliot_core::client::Backoff)); when the broker did not keep the session the
//!   client subscribes again to what the application subscribed to (the core connection's
//!   session does it). [`events`](Client::events)
//!   tells about it ([`ConnectionEvent`]).
//! - Dropping the last clone of the client, or [`disconnect`](Client::disconnect), sends
//!   DISCONNECT and closes the socket.
//!
//! # Design
//!
//! One task per client (the *driver*) owns the `Connection`, the socket and the timers. It
//! waits on the socket (read, and write while bytes are pending), the connection's next
//! deadline (`poll_timeout`, the connection's `Instant` being milliseconds since the client
//! started), the commands of the client handles (a bounded channel), and room in the message
//! channel. The handles send a command with a oneshot for the answer and await it, so every
//! call is cancel-safe: a call dropped half way either never reached the driver or is carried
//! out in full, its acknowledgement consumed by the driver and its answer dropped; nothing
//! else is disturbed.
//!
//! ```
//! use std::sync::Arc;
//! use aliot_auth::MemoryRegistry;
//! use aliot_core::PlatformAuthenticator;
//! use aliot_core::client::Credentials;
//! use aliot_core::codec::{QoS, SubAckReturnCode};
//! use aliot_io::broker::{Broker, BrokerConfig, ListenerConfig};
//! use aliot_io::client::{Client, ClientOptions, Login};
//! use aliot_smol::Smol;
//! use aliot_topic::{TopicFilter, TopicName};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # smol::block_on(async {
//! // A local broker in open mode (no platform credentials needed), both on smol here:
//! // `aliot_smol::{Broker, Client}` (or `aliot_tokio::…`) name these types.
//! let authenticator = PlatformAuthenticator::new(MemoryRegistry::new()).with_open_mode(true);
//! let broker = Broker::<Smol>::start(BrokerConfig {
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
//! let (addr, _) = broker.listener_addrs()[0];
//!
//! let login = Login::credentials(Credentials::anonymous("sensor-7")?);
//! let options = ClientOptions::new("127.0.0.1", addr.port(), login);
//! let client = Client::<Smol>::connect(options).await?;
//! let codes = client.subscribe(&[(TopicFilter::from_static("demo/#"), QoS::AtLeastOnce)]).await?;
//! assert_eq!(codes, [SubAckReturnCode::Success(QoS::AtLeastOnce)]);
//!
//! let messages = client.messages();
//! let id = client.publish(TopicName::from_static("demo/hello"), "hi", QoS::AtLeastOnce).await?;
//! assert!(id.is_some());
//! let message = messages.recv().await.ok_or("no message")?;
//! assert_eq!((message.topic.as_str(), &message.payload[..]), ("demo/hello", &b"hi"[..]));
//!
//! client.disconnect().await;
//! broker.shutdown().await;
//! # Ok(())
//! # })
//! # }
//! ```

mod driver;
mod error;
mod options;
mod things;
mod transport;

use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aliot_core::client::{ClientError, Connection, DisconnectReason};
use aliot_core::codec::{PacketId, QoS, SubAckReturnCode};
use aliot_topic::{MessageId, TopicFilter, TopicName};
use bytes::Bytes;
use tokio_sync::sync::{broadcast, mpsc, oneshot};

use crate::runtime::Runtime;

pub use aliot_services::{
    AlinkReply, OtaUpgrade, PropertySet, ServiceCall, ShadowMessage, ThingAnswer,
};
pub use error::{ConnectError, RequestError};
pub use options::{
    ClientOptions, DEFAULT_MESSAGE_CAPACITY, Login, PLATFORM_PORT, PLATFORM_TLS_PORT, TlsOptions,
    TlsOptionsError, instance_endpoint_host, legacy_endpoint_host,
};
pub use things::{DEFAULT_REPLY_TIMEOUT, ThingError};

use self::driver::{Channels, Command, Driver, RrpcHandler, RrpcSlot};
use self::things::{ThingHandlers, ThingSlot, Things};
use self::transport::Dialer;

/// Commands waiting for the driver, at most; past it, calls wait for room.
const COMMAND_CAPACITY: usize = 64;

/// Connection events kept for a slow [`Events`] reader before it misses some.
const EVENT_CAPACITY: usize = 64;

/// A message from the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The topic it was published on.
    pub topic: TopicName,
    /// The payload, untouched.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// DUP: the broker may have delivered it before (QoS 1 is at least once).
    pub dup: bool,
}

/// An RRPC call to this device (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrpcRequest {
    /// The call's id.
    pub message_id: MessageId,
    /// The topic it came on: `/sys/{pk}/{dn}/rrpc/request/{id}`, or `/ext/rrpc/{id}{topic}`
    /// for a call on one of the device's own topics.
    pub topic: TopicName,
    /// The request payload.
    pub payload: Bytes,
}

/// What happened to the client's connection, from [`Client::events`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// An established connection ended; the client dials again after a backoff delay.
    Disconnected {
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// The client is connected again.
    Reconnected {
        /// Whether the broker resumed the session (only with `clean_session = false`); when
        /// not, the client subscribes again ([`ConnectionEvent::Resubscribed`]).
        session_present: bool,
    },
    /// A reconnect attempt failed; the next one is in `retry_in`.
    ReconnectFailed {
        /// Failed attempts in a row so far (1 for the first).
        attempt: u32,
        /// Why it failed.
        error: Arc<ConnectError>,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
    /// The broker answered a SUBSCRIBE the client sent again after a lost session. A filter
    /// refused (`0x80`) is forgotten.
    Resubscribed {
        /// Each filter with its return code.
        results: Vec<(TopicFilter, SubAckReturnCode)>,
    },
    /// The client could not send a SUBSCRIBE again after a lost session (the packet is too
    /// large, or every packet id is held); these filters are forgotten: subscribe to them
    /// again to keep them.
    ResubscribeFailed {
        /// The filters.
        filters: Vec<TopicFilter>,
        /// Why.
        error: ClientError,
    },
    /// This reader was too slow and missed this many events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// A connected device client. See the [module docs](self).
///
/// Cheap to clone: every clone drives the same connection. When the last clone is dropped,
/// the client sends DISCONNECT (best effort) and closes the socket.
pub struct Client<R: Runtime> {
    commands: mpsc::Sender<Command>,
    messages: Messages,
    events: broadcast::WeakSender<ConnectionEvent>,
    rrpc: RrpcSlot,
    /// The device services: request ids, handlers, reply timeout.
    things: Arc<Things>,
    /// The runtime only spawns the driver; the client's calls are channel messages.
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            commands: self.commands.clone(),
            messages: self.messages.clone(),
            events: self.events.clone(),
            rrpc: Arc::clone(&self.rrpc),
            things: Arc::clone(&self.things),
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.commands.is_closed())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Client<R> {
    /// Connects: TCP (and TLS), CONNECT, and CONNACK; returns once the broker accepted the
    /// connection. From then on a driver task, spawned on the caller's runtime
    /// (`R::default()`), keeps the connection up.
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: invalid options (TLS server name, credentials), the host not
    /// reachable, the TLS handshake failing, the broker refusing the CONNECT
    /// ([`ConnectError::Refused`]) or no CONNACK in time. The first connection is not retried.
    pub async fn connect(options: ClientOptions) -> Result<Client<R>, ConnectError> {
        Self::connect_on(R::default(), options).await
    }

    /// The same, with the driver on this runtime handle.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_on(runtime: R, options: ClientOptions) -> Result<Client<R>, ConnectError> {
        let dialer = Arc::new(Dialer::new(runtime.clone(), &options)?);
        // Signed again at every dial; signing now checks the login before anything is sent.
        let credentials = options
            .login
            .credentials_now(dialer.is_tls(), options.announce_features)?;
        let conn = Connection::new(options.client_config(credentials));
        let (commands, command_receiver) = mpsc::channel(COMMAND_CAPACITY);
        let (message_sender, message_receiver) = mpsc::channel(options.message_capacity.max(1));
        let (event_sender, _) = broadcast::channel(EVENT_CAPACITY);
        let (first_connect, connected) = oneshot::channel();
        let rrpc: RrpcSlot = Arc::new(Mutex::new(None));
        let handlers: ThingSlot = Arc::new(Mutex::new(ThingHandlers::default()));
        let things = Things {
            requests: options.login.identity().map(|identity| {
                Mutex::new(aliot_services::ThingRequests::new(
                    &identity.product_key,
                    &identity.device_name,
                ))
            }),
            handlers: Arc::clone(&handlers),
            reply_timeout: options.reply_timeout,
        };
        let client = Client {
            commands,
            messages: Messages {
                receiver: Arc::new(tokio_sync::sync::Mutex::new(message_receiver)),
            },
            events: event_sender.downgrade(),
            rrpc: Arc::clone(&rrpc),
            things: Arc::new(things),
            runtime: PhantomData,
        };
        let channels = Channels {
            commands: command_receiver,
            weak_commands: client.commands.downgrade(),
            messages: message_sender,
            events: event_sender,
            rrpc,
            things: handlers,
            first_connect,
        };
        let driver = Driver::new(
            runtime.clone(),
            conn,
            dialer,
            options.login,
            options.announce_features,
            options.backoff,
            channels,
        );
        // Detached: the driver ends by itself once every handle is gone.
        drop(runtime.spawn(driver.run()));
        match connected.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ConnectError::Stopped),
        }
    }

    /// Publishes `payload` on `topic` at QoS 0 or 1.
    ///
    /// Resolves, QoS 1, when the broker acknowledged it, with its packet id; QoS 0, when it
    /// was written to the socket, with `None`. While the client is offline the message waits
    /// (up to [`max_queued`](ClientOptions::max_queued) commands) and goes out after the
    /// reconnect, in order.
    ///
    /// # Errors
    ///
    /// [`RequestError::Rejected`] (QoS 2, a full queue, too large; nothing sent),
    /// [`RequestError::PublishFailed`], [`RequestError::NotWritten`] (QoS 0, the connection
    /// closed first), [`RequestError::Closed`].
    pub async fn publish(
        &self,
        topic: TopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<Option<PacketId>, RequestError> {
        let payload = payload.into();
        self.request(|reply| Command::Publish {
            topic,
            payload,
            qos,
            reply,
        })
        .await
    }

    /// Subscribes to topic filters, each with the QoS asked for; resolves with the SUBACK's
    /// return codes, one per filter in order (`Failure`, 0x80, for a filter the broker
    /// refuses). The client remembers the accepted filters to subscribe again after a
    /// reconnect without the session.
    ///
    /// # Errors
    ///
    /// [`RequestError::Rejected`] (no filter, a full queue; nothing sent),
    /// [`RequestError::Closed`].
    pub async fn subscribe(
        &self,
        filters: &[(TopicFilter, QoS)],
    ) -> Result<Vec<SubAckReturnCode>, RequestError> {
        let filters = filters.to_vec();
        self.request(|reply| Command::Subscribe { filters, reply })
            .await
    }

    /// Drops subscriptions; resolves with the UNSUBACK. The filters are no longer subscribed
    /// again after a reconnect.
    ///
    /// # Errors
    ///
    /// [`RequestError::Rejected`] (no filter, a full queue; nothing sent),
    /// [`RequestError::Closed`].
    pub async fn unsubscribe(&self, filters: &[TopicFilter]) -> Result<(), RequestError> {
        let filters = filters.to_vec();
        self.request(|reply| Command::Unsubscribe { filters, reply })
            .await
    }

    /// The received messages.
    ///
    /// Every handle draws from the same queue: a message goes to one of them. Messages wait
    /// there from the moment the client connects (up to
    /// [`message_capacity`](ClientOptions::message_capacity)); while it is full the client
    /// stops reading from the broker, so an application that subscribes must read them.
    pub fn messages(&self) -> Messages {
        self.messages.clone()
    }

    /// Connection events from now on (each handle gets every event).
    pub fn events(&self) -> Events {
        Events {
            receiver: self.events.upgrade().map(|sender| sender.subscribe()),
        }
    }

    /// Answers RRPC calls to this device with `handler` (replacing any earlier handler).
    ///
    /// The handler runs in the client's task, so it must be quick, must not block and must
    /// not panic (a panic stops the client); the payload it returns goes out at once on the
    /// response topic. For answers that take I/O,
    /// use [`on_rrpc_async`](Self::on_rrpc_async). Calls come only with a device identity
    /// ([`Login::Device`], or [`Login::Credentials`] with one); with no handler set they are
    /// logged and left unanswered (the caller gets `TIMEOUT`).
    pub fn on_rrpc<F, A>(&self, mut handler: F)
    where
        F: FnMut(&RrpcRequest) -> A + Send + 'static,
        A: Into<Bytes>,
    {
        let handler = RrpcHandler::Sync(Box::new(move |request| handler(request).into()));
        self.set_rrpc_handler(handler);
    }

    /// Answers RRPC calls with an async `handler`: each call runs in a task of its own and
    /// its answer goes out when it completes (the platform's caller waits at most 8 s).
    pub fn on_rrpc_async<F, Fut, A>(&self, handler: F)
    where
        F: Fn(RrpcRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = A> + Send + 'static,
        A: Into<Bytes>,
    {
        let handler = RrpcHandler::Async(Arc::new(move |request| {
            let answer = handler(request);
            Box::pin(async move { answer.await.into() })
        }));
        self.set_rrpc_handler(handler);
    }

    /// Whether the client has stopped (a clone called [`disconnect`](Self::disconnect)).
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }

    /// Sends DISCONNECT, closes the socket and stops the client, for every clone; returns
    /// when done. Waiting calls of other clones end with [`RequestError::Closed`].
    pub async fn disconnect(self) {
        let (done, finished) = oneshot::channel();
        if self
            .commands
            .send(Command::Disconnect { done })
            .await
            .is_ok()
        {
            // Dropped by the driver once it has finished, or sent to.
            let _ = finished.await;
        }
    }

    fn set_rrpc_handler(&self, handler: RrpcHandler) {
        *self.rrpc.lock().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }

    /// Sends a command carrying a fresh reply channel and waits for the answer.
    async fn request<T>(
        &self,
        command: impl FnOnce(driver::Reply<T>) -> Command,
    ) -> Result<T, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| RequestError::Closed)?;
        answer.await.map_err(|_| RequestError::Closed)?
    }
}

/// Received messages, from [`Client::messages`].
#[derive(Clone, Debug)]
pub struct Messages {
    receiver: Arc<tokio_sync::sync::Mutex<mpsc::Receiver<IncomingMessage>>>,
}

impl Messages {
    /// The next message; `None` once the client has stopped and every message was taken.
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&self) -> Option<IncomingMessage> {
        self.receiver.lock().await.recv().await
    }
}

/// Connection events, from [`Client::events`].
#[derive(Debug)]
pub struct Events {
    receiver: Option<broadcast::Receiver<ConnectionEvent>>,
}

impl Events {
    /// The next event; `None` once the client has stopped. A reader too slow to keep up gets
    /// [`ConnectionEvent::Lagged`] in place of what it missed.
    ///
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<ConnectionEvent> {
        let receiver = self.receiver.as_mut()?;
        match receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(ConnectionEvent::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
