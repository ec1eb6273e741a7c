//! A byte stream whose writes are gathered into as few socket writes as the moment allows.
//!
//! fe2o3-amqp's connection engine writes and flushes every frame on its own: one `writev` per
//! AMQP transfer, and with `TCP_NODELAY` one TCP segment per message. At tens of thousands
//! of messages a second that system call, and the loopback or network stack under it, was
//! most of the broker's time on the consumer path (`benches/README.md`, issue 16), when the
//! broker's AMQP was fe2o3's; it is aliot's own now and writes each turn in one go, and this
//! stream serves `aliot-bench`'s fe2o3 consumer, which shares a core with the publisher.
//! [`CoalescedWrites`] stands between such a writer and its stream: a write only appends to
//! a buffer, a flush hands what is buffered to a writer task, and that task, when it next
//! runs, writes everything that has gathered meanwhile in one go. A burst of frames becomes
//! one write; a lone frame still leaves at once (the task is woken by the flush, so nothing
//! waits for more to come).
//!
//! The contract, as the writing side sees it:
//!
//! - `poll_write` takes bytes while fewer than [`BUFFER_LIMIT`] wait; beyond that it is
//!   pending until the writer task has taken them (a peer that does not read holds its writer
//!   back, as the socket's own buffer would).
//! - `poll_flush` is ready as soon as the bytes are the writer task's: they are written in
//!   order, before anything written later, unless the stream fails.
//! - A failed socket write fails the next `poll_write`, `poll_flush` or `poll_shutdown`.
//! - `poll_shutdown`, and dropping the stream, let the task write what is left and then shut
//!   the socket's write side, within [`LINGER`] (a peer that has stopped reading must not
//!   keep a socket and a task forever); `poll_shutdown` is ready when that is done or has
//!   failed.
//!
//! Reads go straight to the stream.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::Notify;

/// Bytes waiting for the writer task, at most: a write beyond them waits (ours; 256 KiB is
/// a few socket buffers' worth, so the task always has a full write to make).
pub const BUFFER_LIMIT: usize = 256 * 1024;

/// How long the writer task still writes once the stream's side has ended (shut down or
/// dropped), at most (ours); then what is left is dropped with the socket.
pub const LINGER: Duration = Duration::from_secs(10);

/// A stream whose writes go out through a writer task, gathered (see the module's doc).
pub struct CoalescedWrites<S> {
    reader: ReadHalf<S>,
    shared: Arc<Shared>,
}

/// What the stream and its writer task share.
struct Shared {
    state: Mutex<Waiting>,
    /// Wakes the writer task: bytes to write, or the end.
    work: Notify,
}

/// The writer task's queue and what each side waits for.
#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    /// The stream's side is done (shut down or dropped): write what is left, then shut down.
    ending: bool,
    /// The writer task has written everything and shut the socket's write side (or failed).
    ended: bool,
    /// Why the socket refused a write: every later write fails with it.
    failed: Option<(io::ErrorKind, String)>,
    /// A writer waiting for room, or a shutdown waiting for the end.
    waiter: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Waiting {
    fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, why)| io::Error::new(*kind, why.clone()))
    }

    fn wake_waiter(&mut self) {
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }
}

impl<S> CoalescedWrites<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// Wraps `stream`, spawning its writer task on the current tokio runtime.
    pub fn new(stream: S) -> Self {
        Self::with_linger(stream, LINGER)
    }

    /// [`new`](Self::new) with another time than [`LINGER`] for the last bytes.
    pub fn with_linger(stream: S, linger: Duration) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            state: Mutex::new(Waiting::default()),
            work: Notify::new(),
        });
        tokio::spawn(write_gathered(writer, Arc::clone(&shared), linger));
        Self { reader, shared }
    }
}

/// The writer task: takes everything that has gathered, writes it in one go, again until the
/// stream's side ends; then shuts the socket's write side. From the end of the stream's side,
/// it has `linger` for all that.
async fn write_gathered<S: AsyncWrite>(
    mut writer: WriteHalf<S>,
    shared: Arc<Shared>,
    linger: Duration,
) {
    let mut deadline = None;
    let written = async {
        let mut spare = Vec::new();
        loop {
            let (mut batch, ending) = {
                let mut waiting = shared.lock();
                let batch = std::mem::replace(&mut waiting.bytes, spare);
                if !batch.is_empty() {
                    // Room again for a writer held at the limit.
                    waiting.wake_waiter();
                }
                (batch, waiting.ending)
            };
            if ending {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
            }
            if batch.is_empty() {
                if ending {
                    return Ok(());
                }
                spare = batch;
                shared.work.notified().await;
                continue;
            }
            write_before(&mut writer, &batch, &shared, &mut deadline, linger).await?;
            batch.clear();
            spare = batch;
        }
    }
    .await;
    let ended = match written {
        Ok(()) => {
            let at = deadline.unwrap_or_else(|| tokio::time::Instant::now() + linger);
            tokio::time::timeout_at(at, writer.shutdown())
                .await
                .unwrap_or_else(|_| Err(too_late()))
        }
        Err(error) => Err(error),
    };
    let mut waiting = shared.lock();
    if let Err(error) = ended {
        waiting
            .failed
            .get_or_insert((error.kind(), error.to_string()));
    }
    waiting.ended = true;
    waiting.wake_waiter();
}

/// Writes `bytes`; once the stream's side has ended (now or while this waits), by `deadline`.
async fn write_before<S: AsyncWrite>(
    writer: &mut WriteHalf<S>,
    bytes: &[u8],
    shared: &Shared,
    deadline: &mut Option<tokio::time::Instant>,
    linger: Duration,
) -> io::Result<()> {
    let write = writer.write_all(bytes);
    tokio::pin!(write);
    loop {
        if let Some(at) = *deadline {
            return tokio::time::timeout_at(at, &mut write)
                .await
                .unwrap_or_else(|_| Err(too_late()));
        }
        tokio::select! {
            written = &mut write => return written,
            // More bytes, or the end of the stream's side: the next turn takes the bytes.
            () = shared.work.notified() => {
                if shared.lock().ending {
                    *deadline = Some(tokio::time::Instant::now() + linger);
                }
            }
        }
    }
}

/// The last bytes were not taken by the peer within the linger time.
fn too_late() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the peer did not take the last bytes in time",
    )
}

impl<S: AsyncRead> AsyncRead for CoalescedWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for CoalescedWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut waiting = self.shared.lock();
        if let Some(error) = waiting.failure() {
            return Poll::Ready(Err(error));
        }
        if waiting.ending {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = BUFFER_LIMIT.saturating_sub(waiting.bytes.len());
        if room == 0 {
            waiting.waiter = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let taken = room.min(buf.len());
        let was_empty = waiting.bytes.is_empty();
        waiting.bytes.extend_from_slice(&buf[..taken]);
        drop(waiting);
        if was_empty {
            self.shared.work.notify_one();
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The bytes are the writer task's already (it was woken when they came).
        match self.shared.lock().failure() {
            Some(error) => Poll::Ready(Err(error)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut waiting = self.shared.lock();
        if waiting.ended {
            return Poll::Ready(waiting.failure().map_or(Ok(()), Err));
        }
        waiting.ending = true;
        waiting.waiter = Some(cx.waker().clone());
        drop(waiting);
        self.shared.work.notify_one();
        Poll::Pending
    }
}

impl<S> Drop for CoalescedWrites<S> {
    fn drop(&mut self) {
        // What was written still goes out; then the write side is shut.
        self.shared.lock().ending = true;
        self.shared.work.notify_one();
    }
}

impl<S> fmt::Debug for CoalescedWrites<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiting = self.shared.lock();
        f.debug_struct("CoalescedWrites")
            .field("waiting_bytes", &waiting.bytes.len())
            .field("ending", &waiting.ending)
            .field("failed", &waiting.failed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (CoalescedWrites<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (CoalescedWrites::new(client.unwrap()), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn every_write_arrives_in_order_and_shutdown_ends_the_stream() {
        let (mut ours, mut peer) = pair().await;
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut sent = Vec::new();
        for i in 0..10_000u32 {
            let frame = i.to_be_bytes().repeat(1 + (i % 7) as usize);
            ours.write_all(&frame).await.unwrap();
            ours.flush().await.unwrap();
            sent.extend_from_slice(&frame);
        }
        ours.shutdown().await.unwrap();
        assert_eq!(reading.await.unwrap(), sent);
    }

    #[tokio::test]
    async fn a_lone_flushed_write_leaves_without_waiting_for_more() {
        let (mut ours, mut peer) = pair().await;
        ours.write_all(b"ping").await.unwrap();
        ours.flush().await.unwrap();
        let mut got = [0; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // The read side is the stream's own.
        peer.write_all(b"pong").await.unwrap();
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    #[tokio::test]
    async fn what_was_written_before_a_drop_still_arrives() {
        let (mut ours, mut peer) = pair().await;
        ours.write_all(&[7; 100_000]).await.unwrap();
        drop(ours);
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, vec![7; 100_000]);
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_holds_the_writer_back_at_the_limit() {
        let (mut ours, mut peer) = pair().await;
        let chunk = vec![1; 64 * 1024];
        let mut written = 0usize;
        // The socket's buffers and ours fill; then a write waits.
        loop {
            let write = ours.write_all(&chunk);
            match tokio::time::timeout(std::time::Duration::from_millis(200), write).await {
                Ok(done) => {
                    done.unwrap();
                    written += chunk.len();
                }
                Err(_) => break,
            }
            assert!(written < 256 << 20, "the writer was never held back");
        }
        // Once the peer reads, everything arrives.
        let writing = tokio::spawn(async move {
            ours.write_all(&chunk).await.unwrap();
            ours.shutdown().await.unwrap();
        });
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        writing.await.unwrap();
        assert!(all.len() >= written + 64 * 1024 && all.iter().all(|byte| *byte == 1));
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_does_not_keep_the_socket_past_the_linger_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let linger = std::time::Duration::from_millis(200);
        let mut ours = CoalescedWrites::with_linger(client.unwrap(), linger);
        let mut peer = accepted.unwrap().0;
        // Fill the socket's buffers and ours, then go away.
        let chunk = vec![1; 64 * 1024];
        let mut written = 0usize;
        while let Ok(done) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            ours.write_all(&chunk),
        )
        .await
        {
            done.unwrap();
            written += chunk.len();
        }
        drop(ours);
        tokio::time::sleep(linger * 3).await;
        // The writer task gave up: the peer reads what the kernel had, then the end, rather
        // than waiting forever for bytes that will not come.
        let mut all = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            peer.read_to_end(&mut all),
        );
        let result = read.await.expect("the socket was closed");
        if let Err(error) = result {
            // Closed with unsent data, a socket may end with a reset rather than a FIN.
            assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        }
        assert!(
            all.len() < written + chunk.len(),
            "what was still ours was dropped"
        );
    }

    #[tokio::test]
    async fn a_refused_write_fails_the_writes_after_it() {
        let (mut ours, peer) = pair().await;
        drop(peer);
        let mut failed = None;
        for _ in 0..1000 {
            let result = async {
                ours.write_all(&[0; 4096]).await?;
                ours.flush().await
            }
            .await;
            if let Err(error) = result {
                failed = Some(error);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let error = failed.expect("writes to a closed peer fail");
        assert!(matches!(
            error.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ));
    }
}
