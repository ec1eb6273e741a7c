//! Opening one simulated client: TCP connect (from a chosen loopback source address), CONNECT
//! and CONNACK, and SUBSCRIBE and SUBACK when it subscribes.
//!
//! This part awaits each step in turn, one connection per future; once open, connections are
//! handed to a [`group`](super::group) that drives many of them from one task.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use aliot_core::client::{ClientConfig, Connection, DisconnectReason, Event};
use aliot_core::codec::{QoS, SubAckReturnCode};
use aliot_topic::TopicFilter;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use super::LoadError;
use super::clock::RunClock;
use super::target::Target;
use super::transport::BenchStream;

/// An open client: its socket and its state machine, connected (and subscribed, when asked).
#[derive(Debug)]
pub struct Session {
    /// The socket, with `TCP_NODELAY` set, and the transport's layers over it.
    pub stream: BenchStream,
    /// The client state machine, connected.
    pub conn: Connection,
    /// The MQTT client id, for messages.
    pub client_id: String,
    /// From the start of the TCP connect to CONNACK (or SUBACK, when subscribing).
    pub handshake: Duration,
}

/// What to open: where, from where, as whom, subscribed to what.
#[derive(Clone, Debug)]
pub struct SessionPlan {
    /// The broker.
    pub target: Target,
    /// The local address to bind before connecting; `None`: the system picks.
    pub source: Option<IpAddr>,
    /// How the client logs in and behaves.
    pub config: ClientConfig,
    /// Filters to subscribe to once connected (none: no SUBSCRIBE).
    pub subscriptions: Vec<(TopicFilter, QoS)>,
    /// The most the whole handshake may take.
    pub timeout: Duration,
}

/// Opens a client as `plan` says.
///
/// # Errors
///
/// [`LoadError::Connect`] when TCP fails, [`LoadError::Refused`] on a refusing CONNACK,
/// [`LoadError::SubscribeRefused`] on a SUBACK failure code, [`LoadError::Disconnected`] when the
/// connection ends otherwise, [`LoadError::HandshakeTimeout`] past `plan.timeout`,
/// [`LoadError::Io`] or [`LoadError::Client`] on the way.
pub async fn establish(plan: SessionPlan, clock: &RunClock) -> Result<Session, LoadError> {
    let client_id = plan.config.credentials.client_id().to_owned();
    let timeout = plan.timeout;
    let started = Instant::now();
    let handshake = handshake(plan, clock, &client_id);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok((stream, conn))) => Ok(Session {
            stream,
            conn,
            client_id,
            handshake: started.elapsed(),
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(LoadError::HandshakeTimeout {
            client_id,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

async fn handshake(
    plan: SessionPlan,
    clock: &RunClock,
    client_id: &str,
) -> Result<(BenchStream, Connection), LoadError> {
    let addr = plan.target.addr();
    let (socket, unspecified) = match addr {
        SocketAddr::V4(_) => (TcpSocket::new_v4(), IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        SocketAddr::V6(_) => (TcpSocket::new_v6(), IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    };
    let source_addr = SocketAddr::new(plan.source.unwrap_or(unspecified), 0);
    let connect_error = |error| LoadError::Connect {
        addr,
        source_addr,
        error,
    };
    let socket = socket.map_err(connect_error)?;
    if plan.source.is_some() {
        defer_port_choice(&socket);
        socket.bind(source_addr).map_err(connect_error)?;
    }
    let tcp = socket.connect(addr).await.map_err(connect_error)?;
    let io_error = |error| LoadError::Io {
        client_id: client_id.to_owned(),
        error,
    };
    tcp.set_nodelay(true).map_err(io_error)?;
    let mut stream = plan
        .target
        .transport()
        .secure(
            tcp,
            plan.config.identity.as_ref(),
            plan.config.max_packet_size,
        )
        .await
        .map_err(io_error)?;

    let mut conn = Connection::new(plan.config);
    conn.connect(clock.core_now());
    exchange(&mut stream, &mut conn, clock, client_id, |event| {
        Ok(matches!(event, Event::Connected { .. }))
    })
    .await?;

    if !plan.subscriptions.is_empty() {
        let packet_id = conn.subscribe(&plan.subscriptions, clock.core_now())?;
        let filters = &plan.subscriptions;
        exchange(
            &mut stream,
            &mut conn,
            clock,
            client_id,
            |event| match event {
                Event::SubAck {
                    packet_id: acked,
                    return_codes,
                } if *acked == packet_id => {
                    let refused = return_codes
                        .iter()
                        .position(|code| *code == SubAckReturnCode::Failure);
                    match refused {
                        Some(position) => Err(LoadError::SubscribeRefused {
                            client_id: client_id.to_owned(),
                            filter: filters
                                .get(position)
                                .map(|(filter, _)| filter.to_string())
                                .unwrap_or_default(),
                        }),
                        None => Ok(true),
                    }
                }
                _ => Ok(false),
            },
        )
        .await?;
    }
    Ok((stream, conn))
}

/// Asks the kernel to choose the source port at `connect` rather than at `bind`
/// (`IP_BIND_ADDRESS_NO_PORT`).
///
/// A `bind` to port 0 searches for a port that no other socket holds, and that search grows
/// with every socket holding a port on the machine, those in `TIME_WAIT` from earlier runs
/// included: after a few runs back to back the generator's connect rate collapsed, its core
/// spent in the kernel's bind-conflict checks (the figures are in `benches/README.md`). At
/// `connect` the kernel needs only the whole 4-tuple to be unused, and the rate stays put.
/// Where the option is missing (not Linux, or a kernel before 4.2) the bind reserves a port
/// as before: slower, not wrong, so a failure here is not an error.
fn defer_port_choice(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
        let _ = setsockopt(socket, IpBindAddressNoPort, &true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Writes what the connection has to send and feeds it what the broker answers, until `done`
/// says an event is the one awaited.
pub(crate) async fn exchange(
    stream: &mut BenchStream,
    conn: &mut Connection,
    clock: &RunClock,
    client_id: &str,
    mut done: impl FnMut(&Event) -> Result<bool, LoadError>,
) -> Result<(), LoadError> {
    let io_error = |error| LoadError::Io {
        client_id: client_id.to_owned(),
        error,
    };
    let mut out = BytesMut::new();
    let mut read_buf = vec![0_u8; 4096];
    loop {
        while conn.poll_transmit(&mut out) {
            stream.write_all(&out).await.map_err(io_error)?;
            out.clear();
        }
        // What a TLS or WebSocket layer holds goes out before the wait for the answer.
        stream.flush().await.map_err(io_error)?;
        while let Some(event) = conn.poll_event() {
            match event {
                Event::ConnectRefused(code) => {
                    return Err(LoadError::Refused {
                        client_id: client_id.to_owned(),
                        code,
                    });
                }
                Event::Disconnected(reason) => {
                    return Err(LoadError::Disconnected {
                        client_id: client_id.to_owned(),
                        reason,
                    });
                }
                event => {
                    if done(&event)? {
                        // A PUBACK or the like the event released still goes out.
                        while conn.poll_transmit(&mut out) {
                            stream.write_all(&out).await.map_err(io_error)?;
                            out.clear();
                        }
                        stream.flush().await.map_err(io_error)?;
                        return Ok(());
                    }
                }
            }
        }
        let read = stream.read(&mut read_buf).await.map_err(io_error)?;
        match read_buf.get(..read) {
            Some([]) | None => {
                conn.handle_transport_closed(clock.core_now());
                return Err(LoadError::Disconnected {
                    client_id: client_id.to_owned(),
                    reason: DisconnectReason::TransportClosed,
                });
            }
            Some(bytes) => conn.handle_input(clock.core_now(), bytes),
        }
    }
}
