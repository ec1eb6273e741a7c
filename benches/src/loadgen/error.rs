//! Why a load run could not be made.

use std::io;
use std::net::{IpAddr, SocketAddr};

use aliot_core::client::{ClientError, CredentialsError, DisconnectReason};
use aliot_core::codec::ConnectReturnCode;

/// Why a scenario could not run. Each variant says what was wrong and with what.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The generator only ever targets loopback addresses.
    #[error("{0} is not a loopback address; aliot-bench only targets 127.0.0.0/8 and ::1")]
    NotLoopback(IpAddr),
    /// The host given is neither an IP address nor `localhost`.
    #[error("host {0:?} is not an IP address or \"localhost\"")]
    UnknownHost(String),
    /// A TCP connection to the broker failed.
    #[error("cannot connect from {source_addr} to {addr}: {error}")]
    Connect {
        /// The broker's address.
        addr: SocketAddr,
        /// The local address the socket was bound to (port 0: any).
        source_addr: SocketAddr,
        /// What the operating system said.
        error: io::Error,
    },
    /// Reading from or writing to an established connection failed.
    #[error("I/O error on {client_id}: {error}")]
    Io {
        /// The connection's client id.
        client_id: String,
        /// What the operating system said.
        error: io::Error,
    },
    /// The broker refused a CONNECT.
    #[error("the broker refused {client_id} with CONNACK {code}")]
    Refused {
        /// The connection's client id.
        client_id: String,
        /// The CONNACK return code.
        code: ConnectReturnCode,
    },
    /// The broker refused a subscription (SUBACK 0x80).
    #[error("the broker refused the subscription of {client_id} to {filter}")]
    SubscribeRefused {
        /// The connection's client id.
        client_id: String,
        /// The filter refused.
        filter: String,
    },
    /// The connection ended during the handshake.
    #[error("{client_id} was disconnected during its handshake: {reason}")]
    Disconnected {
        /// The connection's client id.
        client_id: String,
        /// Why, as the client state machine saw it.
        reason: DisconnectReason,
    },
    /// The handshake (TCP connect, CONNACK, SUBACK) took longer than allowed.
    #[error("{client_id} did not finish its handshake within {timeout_ms} ms")]
    HandshakeTimeout {
        /// The connection's client id.
        client_id: String,
        /// The time allowed.
        timeout_ms: u64,
    },
    /// A client command was refused by the state machine.
    #[error("client command refused: {0}")]
    Client(#[from] ClientError),
    /// A client id, user name or password cannot go into a CONNECT.
    #[error("bad credentials: {0}")]
    Credentials(#[from] CredentialsError),
    /// A device's credentials could not be signed.
    #[error("cannot sign the credentials of {device}: {error}")]
    Sign {
        /// `productKey/deviceName`.
        device: String,
        /// What was wrong with the client id.
        error: aliot_auth::ClientIdError,
    },
    /// A topic or filter the scenario builds is not valid.
    #[error("topic {topic:?} is not valid: {error}")]
    Topic {
        /// The topic as built.
        topic: String,
        /// Why it is not valid.
        error: aliot_topic::TopicError,
    },
    /// A `--platform` value is not `PRODUCT_KEY:SEED`.
    #[error("--platform {0:?} is not PRODUCT_KEY:SEED (both non-empty)")]
    PlatformSpec(String),
    /// A file of `/proc` could not be read or parsed.
    #[error("cannot read {path}: {detail}")]
    Proc {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// More connections than file descriptors the process may open.
    #[error(
        "{requested} connections need about {needed} file descriptors but the limit is {limit}; \
         raise it (ulimit -n) or ask for fewer connections"
    )]
    FileLimit {
        /// Connections asked for.
        requested: usize,
        /// Descriptors needed, with a margin.
        needed: u64,
        /// `RLIMIT_NOFILE` (soft).
        limit: u64,
    },
    /// More connections than the loopback source addresses can carry.
    #[error(
        "{requested} connections at {per_source} per source address need more than the \
         {available} loopback source addresses available"
    )]
    SourceAddresses {
        /// Connections asked for.
        requested: usize,
        /// Connections per source address.
        per_source: usize,
        /// Addresses available from the first one given.
        available: usize,
    },
    /// The in-process broker of the RRPC scenario did not start.
    #[error("the in-process broker did not start: {0}")]
    Broker(String),
    /// The store could not be opened or written (`fill-store`).
    #[error("{0}")]
    Store(#[from] aliot_tokio::store::StoreError),
    /// The cluster scenario could not set up or go on: a device that cannot connect or
    /// subscribe, an API that cannot be reached or answers what is not JSON.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The broker process of `recovery` could not be started, did not start listening, or
    /// ended early.
    #[error("the broker process: {0}")]
    BrokerProcess(String),
    /// A reply of the platform was refused (a code other than 200), unreadable, unexpected or
    /// missing.
    #[error("{0}")]
    Reply(#[from] ReplyFault),
    /// A connection the scenario needs ended during a phase.
    #[error("{phase}: a connection was lost ({lost} in all); the first: {first}")]
    ConnectionLost {
        /// The phase, e.g. `posts through the gateway`.
        phase: String,
        /// Connections lost in the phase.
        lost: u64,
        /// The first of them and why it ended.
        first: String,
    },
    /// The broker refused the AMQP consumer's login (SASL PLAIN), or the connection could not
    /// be opened.
    #[error(
        "the AMQP consumer could not log in at {addr} (AccessKey {access_key_id}, consumer group \
         {group}): {detail}"
    )]
    AmqpLogin {
        /// The AMQP listener.
        addr: SocketAddr,
        /// The AccessKey ID it signed with.
        access_key_id: String,
        /// The consumer group it named.
        group: String,
        /// What fe2o3-amqp said (a SASL code, an I/O error).
        detail: String,
    },
    /// The AMQP consumer's session, link or a delivery failed after its login, or a message
    /// lacked its application properties.
    #[error("the AMQP consumer: {step}: {detail}")]
    Amqp {
        /// What it was doing.
        step: String,
        /// What went wrong.
        detail: String,
    },
    /// The broker's `GET /metrics` could not be read for the consumer group.
    #[error("cannot read the metrics at http://{addr}/metrics: {detail}")]
    Metrics {
        /// The HTTP API.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
    /// The consumer group's backlog did not come to hold every message published.
    #[error(
        "the backlog did not fill: {expected} messages to hold, {published} published, the \
         group's backlog holds {backlog}, {dropped} dropped: {detail}"
    )]
    Fill {
        /// Messages to publish.
        expected: u64,
        /// Messages published.
        published: u64,
        /// The backlog at the end.
        backlog: u64,
        /// Messages the group dropped.
        dropped: u64,
        /// When and why it stopped.
        detail: String,
    },
    /// The consumer stopped receiving before it had every message of the backlog.
    #[error(
        "the drain stopped short: {received} of {expected} messages received ({duplicates} \
         duplicates, {other} on other topics): {detail}"
    )]
    Drain {
        /// Messages in the backlog to drain.
        expected: u64,
        /// Distinct messages of the run received.
        received: u64,
        /// Messages received again.
        duplicates: u64,
        /// Messages on other topics.
        other: u64,
        /// Why it stopped.
        detail: String,
    },
    /// A scenario parameter is out of range.
    #[error("{0}")]
    Parameter(String),
}

/// What was wrong with a reply of the platform to a request of the generator (a property
/// post, a gateway's `thing/topo/add` or `combine/batch_login`). Any of them fails the run:
/// a number measured over refused requests would not be the one asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyFault {
    /// The reply's `code` is not 200.
    #[error("the reply on {topic} to request {id} has code {code}: {message:?} (data: {data})")]
    Refused {
        /// The reply topic.
        topic: String,
        /// The request's id.
        id: String,
        /// The reply's `code`.
        code: i64,
        /// The reply's `message` (empty when it has none).
        message: String,
        /// The reply's `data` as JSON text (empty when it has none): for a gateway's batch,
        /// the devices that failed.
        data: String,
    },
    /// A message on a reply topic is not `{"id":…,"code":…}`.
    #[error("the message on {topic} is not a reply with an id and a code: {payload}")]
    Unreadable {
        /// Its topic.
        topic: String,
        /// Its payload (at most 200 bytes of it, lossy UTF-8).
        payload: String,
    },
    /// A reply echoes an id no request of this client waits for.
    #[error("the reply on {topic} echoes id {id}, which no request waiting has")]
    Unexpected {
        /// The reply topic.
        topic: String,
        /// The id it echoes.
        id: String,
    },
    /// A reply came on another topic than its request's + `_reply`: through a gateway, the
    /// platform answered for another sub-device.
    #[error("the reply to request {id} came on {topic}, not on {expected}")]
    WrongTopic {
        /// The request's id.
        id: String,
        /// Where the reply came.
        topic: String,
        /// Where it should have come.
        expected: String,
    },
    /// A batch's reply lists another number of devices than the batch had.
    #[error(
        "the reply on {topic} to request {id} lists {listed} devices in data, not the {sent} sent"
    )]
    WrongCount {
        /// The reply topic.
        topic: String,
        /// The request's id.
        id: String,
        /// Devices in the request.
        sent: usize,
        /// Devices in the reply's `data`.
        listed: usize,
    },
    /// No reply came in time.
    #[error("no reply on {topic} to request {id} within {waited_ms} ms")]
    Missing {
        /// The reply topic waited on.
        topic: String,
        /// The request's id.
        id: String,
        /// How long it was waited for.
        waited_ms: u64,
    },
}
