//! The [`Runtime`] trait: what the broker and the client need from an async runtime, and the
//! few helpers built on it.
//!
//! A runtime gives tasks, timers and TCP; everything else (channels, `select!`, futures-io
//! byte streams, futures-rustls) is runtime-independent already. `aliot-tokio` implements it
//! for tokio and `aliot-smol` for smol; a third runtime is one more implementation of the same
//! dozen lines.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::FutureExt as _;
use futures_util::future::{Either, select};

/// What the broker and the device client need from an async runtime.
///
/// Implementations are cheap handles (a unit struct, or an `Arc` of an executor); `Default`
/// gives the runtime the caller is running on, which is what `Broker::start` and
/// `Client::connect` use.
pub trait Runtime: Clone + Default + Send + Sync + 'static {
    /// A connected TCP stream, as a futures-io byte stream.
    type Tcp: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// A timer that fires (resolves, with whatever value) at an instant and can be moved
    /// (see [`reset_timer`](Self::reset_timer)).
    type Timer: Future + Unpin + Send + 'static;
    /// A spawned task. Awaiting it waits for the task's end (a task that panicked or was
    /// aborted has ended too); dropping it lets the task run on, detached.
    type Task: Future<Output = ()> + Unpin + Send + 'static;

    /// Whether a task woken from inside a running task runs before the tasks woken earlier
    /// (the LIFO slot of tokio's multi-thread scheduler: the last one woken runs next),
    /// rather than after them (a FIFO queue, as smol's executor and tokio's current-thread
    /// scheduler have). The broker's hub orders its wake-ups by it so that the connection it
    /// delivers to runs before the one it only acknowledges: the delivery is what a
    /// subscriber waits for.
    fn runs_last_woken_first(&self) -> bool;

    /// Runs `future` in a task of its own.
    fn spawn<F>(&self, future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static;

    /// Stops a task at its next await point.
    fn abort(&self, task: Self::Task);

    /// A timer that fires at `at` (at once if `at` has passed).
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Moves a timer to fire at `at` instead, whether it fired already or not.
    fn reset_timer(&self, timer: &mut Self::Timer, at: Instant);

    /// Opens a TCP connection to `host` (a name to resolve, or an address) and `port`, with
    /// `TCP_NODELAY` set (small packets such as PUBACK go out at once).
    fn connect(&self, host: &str, port: u16) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// Binds a TCP listener: the socket of [`listen`], in the runtime's listener type.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address a listener is bound to (port 0 resolved).
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Accepts the next connection, with `TCP_NODELAY` set, and its peer's address.
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Tcp, SocketAddr)>> + Send;
}

/// Connections a listener lets the kernel complete before the broker accepts them (the kernel
/// caps it at `net.core.somaxconn`). Beyond, a client's handshake is dropped and retried a
/// second later: the 128 that both adapters' listeners had (`ss -ltn` showed it) is too few
/// for a burst of reconnecting devices.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A listening TCP socket on `addr` (`SO_REUSEADDR` on Unix, so that a restarted broker binds
/// despite connections of its last run in `TIME_WAIT`), non-blocking, with a backlog of
/// [`LISTEN_BACKLOG`]: what a [`Runtime::bind`] wraps into its own listener type.
pub fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Runs `future` to its end, or gives up at `at`: `None` when the time came first.
pub async fn timeout_at<R: Runtime, F: Future>(
    runtime: &R,
    at: Instant,
    future: F,
) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    match select(future, runtime.timer(at)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// Waits for `duration`.
pub async fn sleep<R: Runtime>(runtime: &R, duration: Duration) {
    runtime.timer(Instant::now() + duration).await;
}

/// Spawns `future`; should it panic, the panic ends the task (it is not carried to whoever
/// awaits it, since runtimes differ on that) and the future `on_panic` makes runs instead, in
/// the same task. (`on_panic` is made only then: until then the task holds just the closure.)
pub(crate) fn spawn_guarded<R, F, P, G>(runtime: &R, future: F, on_panic: P) -> R::Task
where
    R: Runtime,
    F: Future<Output = ()> + Send + 'static,
    P: FnOnce() -> G + Send + 'static,
    G: Future<Output = ()> + Send + 'static,
{
    // Combinators, not an `async` block: a block would hold `future` twice (as its capture and
    // as what it awaits), doubling the task's size.
    runtime.spawn(
        AssertUnwindSafe(future)
            .catch_unwind()
            .then(move |result| match result {
                Ok(()) => Either::Left(std::future::ready(())),
                Err(_) => Either::Right(on_panic()),
            }),
    )
}

/// A time no timer reaches, for a timer with nothing to wait for.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// What the state machines' clock reads at the start: about 35 years in ms, so that times up
/// to that long before the start can be told.
const CLOCK_EPOCH_MS: u64 = 1 << 40;

/// The state machines' time: `aliot_core::Instant` is milliseconds since this clock started,
/// plus [`CLOCK_EPOCH_MS`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Now, for the state machines: [`CLOCK_EPOCH_MS`] at the start, so that a time before the
    /// start (a message restored from the store, which arrived before a restart) is one too.
    pub(crate) fn now(&self) -> aliot_core::Instant {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        aliot_core::Instant::from_millis(elapsed.saturating_add(CLOCK_EPOCH_MS))
    }

    /// When a deadline of the state machines falls, for the runtime's timers.
    pub(crate) fn deadline(&self, at: aliot_core::Instant) -> Instant {
        let after_start = at.as_millis().saturating_sub(CLOCK_EPOCH_MS);
        self.start
            .checked_add(Duration::from_millis(after_start))
            .unwrap_or_else(far_future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpStream};

    /// Connections the kernel completes on a listener nobody accepts from: up to its backlog.
    #[test]
    fn the_listen_backlog_holds_a_burst_of_connections() {
        let listener = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
        let addr = listener.local_addr().expect("local address");
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(128);
        // More than std's 128, as far as the machine allows.
        let burst = somaxconn.min(400);
        let mut held = Vec::with_capacity(burst);
        for _ in 0..burst {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(stream) => held.push(stream),
                Err(error) => panic!("connection {} not completed: {error}", held.len() + 1),
            }
        }
        assert_eq!(held.len(), burst);
    }
}
