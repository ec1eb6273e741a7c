//! aliot's device client on no runtime at all: a firmware main loop over an
//! [`embedded-io`](embedded_io) byte transport and a caller-supplied monotonic clock.
//!
//! [`aliot_core::client::Connection`] owns no socket and reads no clock. Here a [`Device`]
//! pairs it with what a microcontroller has: a transport implementing `embedded-io`'s
//! [`Read`], [`Write`] and [`ReadReady`] (a TCP socket of an on-chip stack, a UART to a
//! cellular modem in transparent mode...) and a function returning milliseconds since boot.
//! The firmware's main loop calls [`Device::poll`], which never blocks waiting for the broker:
//! it reads only what [`ReadReady`] says is there, fires the connection's timers from the clock
//! (keepalive, connect and ping timeouts), writes what the connection has to send and hands
//! back one [`Event`]. [`run`] is that loop with an event handler.
//!
//! [`platform_config`] signs the platform's CONNECT credentials on the device itself
//! (`aliot-auth` is `no_std` too), without a timestamp, since a microcontroller's clock is a
//! counter since boot, not the time of day.
//!
//! The crate is `no_std` + `alloc` and an `rlib`: it builds for `thumbv7em-none-eabihf` as is;
//! the firmware linking it brings the allocator, the panic handler and the memory layout.
//!
//! ```
//! use aliot_bare_metal_example::{Device, platform_config};
//! use aliot_core::client::{Connection, Event};
//! use embedded_io::{ErrorType, Read, ReadReady, Write};
//!
//! /// A transport whose broker has already answered: a CONNACK, "accepted".
//! struct Scripted {
//!     to_device: &'static [u8],
//!     from_device: Vec<u8>,
//! }
//! impl ErrorType for Scripted {
//!     type Error = core::convert::Infallible;
//! }
//! impl ReadReady for Scripted {
//!     fn read_ready(&mut self) -> Result<bool, Self::Error> {
//!         Ok(!self.to_device.is_empty())
//!     }
//! }
//! impl Read for Scripted {
//!     fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
//!         self.to_device.read(buf)
//!     }
//! }
//! impl Write for Scripted {
//!     fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
//!         self.from_device.extend_from_slice(buf);
//!         Ok(buf.len())
//!     }
//!     fn flush(&mut self) -> Result<(), Self::Error> {
//!         Ok(())
//!     }
//! }
//!
//! let transport = Scripted { to_device: &[0x20, 0x02, 0x00, 0x00], from_device: Vec::new() };
//! let mut millis_since_boot = 0_u64;
//! let clock = move || {
//!     millis_since_boot += 1;
//!     millis_since_boot
//! };
//! let config = platform_config("a1DemoProd01", "dev-001", "DemoSecret0001aliotNotForProduct")?;
//! let mut device = Device::new(transport, clock, Connection::new(config));
//!
//! // The firmware's main loop.
//! let connected = loop {
//!     match device.poll()? {
//!         Some(Event::Connected { session_present }) => break !session_present,
//!         Some(other) => panic!("unexpected {other:?}"),
//!         None => {} // nothing yet: sleep until an interrupt or `device.next_deadline()`
//!     }
//! };
//! assert!(connected && device.connection().is_connected());
//! // What went out: a CONNECT (packet type 1) carrying the signed client id.
//! let sent = &device.transport().from_device;
//! assert_eq!(sent.first(), Some(&0x10));
//! assert!(sent.windows(20).any(|w| w == b"a1DemoProd01.dev-001"));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use core::ops::ControlFlow;

use aliot_auth::{ClientIdError, DeviceIdentity, DeviceSecret, SecureMode, SignRequest};
use aliot_core::Instant;
use aliot_core::client::{
    ClientConfig, ClientError, Connection, Credentials, CredentialsError, Event, PublishToken,
    Qos0Token,
};
use aliot_core::codec::{PacketId, QoS};
use aliot_topic::{MessageId, TopicFilter, TopicName};
use bytes::{Bytes, BytesMut};
use embedded_io::{Error as _, ErrorKind, Read, ReadReady, Write};

/// How many bytes one [`Device::poll`] reads at most, in a buffer on the stack.
pub const READ_CHUNK_LEN: usize = 256;

/// Why the device's configuration could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The product key and device name do not make a client id the platform accepts.
    #[error("the client id cannot be signed: {0}")]
    ClientId(#[from] ClientIdError),
    /// The signed client id, user name or password does not fit an MQTT CONNECT.
    #[error("the signed credentials do not fit a CONNECT: {0}")]
    Credentials(#[from] CredentialsError),
}

/// Why the transport failed the device. The connection has ended as far as the client is
/// concerned (the next [`Device::poll`] gives [`Event::Disconnected`]); the session is kept for
/// a new transport (see [`Device::into_parts`]).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError<E: embedded_io::Error + 'static> {
    /// Asking the transport whether bytes are there to read failed.
    #[error("the transport could not say whether bytes are ready to read")]
    ReadReady(#[source] E),
    /// Reading bytes from the transport failed.
    #[error("reading from the transport failed")]
    Read(#[source] E),
    /// Writing bytes to the transport failed.
    #[error("writing to the transport failed")]
    Write(#[source] E),
    /// The transport took no byte of what was left to write: it cannot take any more.
    #[error("the transport accepted none of the {pending} bytes left to write")]
    WriteZero {
        /// Bytes of the packet(s) still unwritten, now dropped.
        pending: usize,
    },
}

/// The configuration of a platform device with `device_secret`: CONNECT credentials signed
/// with hmacsha256 for a plain TCP transport (`securemode=3`), client id
/// `${productKey}.${deviceName}`, no timestamp, and the identity that makes RRPC calls arrive
/// as [`Event::RrpcRequest`]. Every other setting is [`ClientConfig::new`]'s default.
///
/// ```
/// use aliot_bare_metal_example::platform_config;
///
/// let config = platform_config("a1DemoProd01", "dev-001", "DemoSecret0001aliotNotForProduct")?;
/// assert_eq!(
///     config.credentials.client_id(),
///     "a1DemoProd01.dev-001|securemode=3,signmethod=hmacsha256|"
/// );
/// assert_eq!(config.credentials.username(), Some("dev-001&a1DemoProd01"));
/// assert_eq!(config.identity.map(|id| id.device_name).as_deref(), Some("dev-001"));
/// # Ok::<(), aliot_bare_metal_example::ConfigError>(())
/// ```
///
/// # Errors
///
/// [`ConfigError::ClientId`] when the names make no valid client id (empty, over 64
/// characters, or holding `|`), [`ConfigError::Credentials`] when a field is too long for MQTT.
pub fn platform_config(
    product_key: &str,
    device_name: &str,
    device_secret: &str,
) -> Result<ClientConfig, ConfigError> {
    let identity = DeviceIdentity::new(product_key, device_name);
    let secret = DeviceSecret::new(device_secret);
    let signed = SignRequest::new(&identity, &secret, SecureMode::Tcp).sign()?;
    Ok(ClientConfig::new(Credentials::try_from(signed)?).with_identity(identity))
}

/// A device client on one transport: the sans-IO [`Connection`], the transport `T` and the
/// clock `C` (monotonic milliseconds, e.g. since boot), driven by [`poll`](Self::poll).
///
/// Commands ([`subscribe`](Self::subscribe), [`publish`](Self::publish),
/// [`respond_rrpc`](Self::respond_rrpc)) take the time from the clock and queue bytes; the next
/// `poll` (or [`flush`](Self::flush)) writes them.
#[derive(Debug)]
pub struct Device<T, C> {
    transport: T,
    clock: C,
    connection: Connection,
    /// Bytes taken from the connection and being written.
    transmit: BytesMut,
}

impl<T, C> Device<T, C>
where
    T: Read + Write + ReadReady,
    T::Error: 'static,
    C: FnMut() -> u64,
{
    /// Starts `connection` on `transport`, a transport just opened: CONNECT goes out on the
    /// first [`poll`](Self::poll). Commands given before CONNACK wait for it.
    ///
    /// `connection` may be new, or the one [`into_parts`](Self::into_parts) gave back from
    /// a transport that ended: its session (unacknowledged and queued packets, and the
    /// subscriptions it restores when the broker answers without the session) carries over.
    pub fn new(transport: T, mut clock: C, mut connection: Connection) -> Self {
        connection.connect(Instant::from_millis(clock()));
        Self {
            transport,
            clock,
            connection,
            transmit: BytesMut::new(),
        }
    }

    /// The current time, from the clock.
    pub fn now(&mut self) -> Instant {
        Instant::from_millis((self.clock)())
    }

    /// The connection, for its state ([`is_connected`](Connection::is_connected),
    /// [`in_flight_len`](Connection::in_flight_len)...).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// When the connection next has something to do on its own (a PINGREQ, a timeout), if
    /// ever: a firmware may sleep until then, or until the transport has bytes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.connection.poll_timeout()
    }

    /// Subscribes to topic filters; see [`Connection::subscribe`].
    ///
    /// # Errors
    ///
    /// As [`Connection::subscribe`]: nothing is sent then.
    pub fn subscribe(&mut self, filters: &[(TopicFilter, QoS)]) -> Result<PacketId, ClientError> {
        let now = self.now();
        self.connection.subscribe(filters, now)
    }

    /// Publishes at QoS 0 or 1; see [`Connection::publish`].
    ///
    /// # Errors
    ///
    /// As [`Connection::publish`]: nothing is sent then.
    pub fn publish(
        &mut self,
        topic: TopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<PublishToken, ClientError> {
        let now = self.now();
        self.connection.publish(topic, payload, qos, now)
    }

    /// Answers an [`Event::RrpcRequest`]; see [`Connection::respond_rrpc`].
    ///
    /// # Errors
    ///
    /// As [`Connection::respond_rrpc`]: nothing is sent then.
    pub fn respond_rrpc(
        &mut self,
        message_id: MessageId,
        payload: impl Into<Bytes>,
    ) -> Result<Qos0Token, ClientError> {
        let now = self.now();
        self.connection.respond_rrpc(message_id, payload, now)
    }

    /// Writes DISCONNECT after anything still to send, and ends the connection
    /// ([`Event::Disconnected`] follows); close the transport afterwards.
    ///
    /// # Errors
    ///
    /// [`DeviceError::Write`] or [`DeviceError::WriteZero`] when the transport fails.
    pub fn disconnect(&mut self) -> Result<(), DeviceError<T::Error>> {
        let now = self.now();
        self.connection.disconnect(now);
        self.flush()
    }

    /// One turn of the firmware's loop; never waits for the broker.
    ///
    /// Reads once if [`ReadReady`] says bytes are there (at most [`READ_CHUNK_LEN`]; a read
    /// of 0 bytes is the end of the transport), fires the connection's timers when their
    /// deadline has passed on the clock, takes the next event (which writes the PUBACK of an
    /// incoming QoS 1 message) and writes everything the connection has to send.
    ///
    /// Returns the event, or `None` when nothing happened.
    ///
    /// # Errors
    ///
    /// A [`DeviceError`] when the transport fails; the connection has then ended, and the
    /// next `poll` gives [`Event::Disconnected`].
    pub fn poll(&mut self) -> Result<Option<Event>, DeviceError<T::Error>> {
        let now = self.now();
        let ready = match self.transport.read_ready() {
            Ok(ready) => ready,
            Err(error) => return Err(self.transport_failed(now, DeviceError::ReadReady(error))),
        };
        if ready {
            let mut chunk = [0_u8; READ_CHUNK_LEN];
            match self.transport.read(&mut chunk) {
                Ok(0) => self.connection.handle_transport_closed(now),
                Ok(read) => {
                    // A count past the buffer breaks `Read`'s contract: take the buffer.
                    let bytes = chunk.get(..read).unwrap_or(&chunk);
                    self.connection.handle_input(now, bytes);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(self.transport_failed(now, DeviceError::Read(error))),
            }
        }
        if self
            .connection
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.connection.handle_timeout(now);
        }
        let event = self.connection.poll_event();
        self.flush()?;
        Ok(event)
    }

    /// Writes everything the connection has to send, then flushes the transport if anything
    /// was written. [`poll`](Self::poll) does this itself; call it to send a command's bytes at
    /// once.
    ///
    /// # Errors
    ///
    /// [`DeviceError::Write`] or [`DeviceError::WriteZero`]; the connection has then ended.
    pub fn flush(&mut self) -> Result<(), DeviceError<T::Error>> {
        let mut wrote = false;
        while self.connection.poll_transmit(&mut self.transmit) {
            wrote = true;
            let mut written = 0;
            while let Some(rest) = self.transmit.get(written..).filter(|rest| !rest.is_empty()) {
                match self.transport.write(rest) {
                    Ok(0) => {
                        let pending = rest.len();
                        let now = self.now();
                        return Err(self.transport_failed(now, DeviceError::WriteZero { pending }));
                    }
                    Ok(count) => written = written.saturating_add(count),
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => {
                        let now = self.now();
                        return Err(self.transport_failed(now, DeviceError::Write(error)));
                    }
                }
            }
            self.transmit.clear();
        }
        if !wrote {
            return Ok(());
        }
        self.transport.flush().map_err(|error| {
            let now = self.now();
            self.transport_failed(now, DeviceError::Write(error))
        })
    }

    /// Gives back the transport (to close), the clock and the connection, whose session a
    /// [`Device::new`] on a new transport resumes.
    pub fn into_parts(self) -> (T, C, Connection) {
        (self.transport, self.clock, self.connection)
    }

    /// Ends the connection on a failed transport and drops what was being written to it.
    fn transport_failed(
        &mut self,
        now: Instant,
        error: DeviceError<T::Error>,
    ) -> DeviceError<T::Error> {
        self.transmit.clear();
        self.connection.handle_transport_closed(now);
        error
    }
}

/// Runs `device` until `on_event` says [`ControlFlow::Break`]: polls it, hands every event to
/// `on_event` with the device (to answer, publish or subscribe), and writes what the handler
/// queued before returning.
///
/// It spins while nothing happens; a firmware that sleeps between interrupts calls
/// [`Device::poll`] itself. Break on [`Event::Disconnected`] to reconnect: the session survives
/// in [`Device::into_parts`].
///
/// # Errors
///
/// The first [`DeviceError`] of the transport.
pub fn run<T, C, F>(device: &mut Device<T, C>, mut on_event: F) -> Result<(), DeviceError<T::Error>>
where
    T: Read + Write + ReadReady,
    T::Error: 'static,
    C: FnMut() -> u64,
    F: FnMut(&mut Device<T, C>, Event) -> ControlFlow<()>,
{
    loop {
        if let Some(event) = device.poll()?
            && on_event(device, event).is_break()
        {
            return device.flush();
        }
    }
}

#[cfg(test)]
mod tests;
