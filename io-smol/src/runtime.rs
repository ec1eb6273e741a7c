//! [`Smol`]: the [`Runtime`] of `aliot-io` on smol.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use aliot_io::runtime::Runtime;
use smol::Timer;
use smol::net::{TcpListener, TcpStream};

/// smol's global executor (`smol::spawn`), async-io timers and async-net sockets. It needs no
/// runtime to be entered: calls work from any thread, under any executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

/// A task spawned on smol; see [`Runtime::Task`]. Unlike a bare `smol::Task`, dropping it
/// detaches the task rather than cancelling it.
#[derive(Debug)]
pub struct SmolTask(Option<smol::Task<()>>);

impl Future for SmolTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            Some(task) => Pin::new(task).poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for SmolTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.detach();
        }
    }
}

impl Runtime for Smol {
    type Tcp = TcpStream;
    type Listener = TcpListener;
    type Timer = Timer;
    type Task = SmolTask;

    fn runs_last_woken_first(&self) -> bool {
        // async-executor keeps one FIFO queue of woken tasks.
        false
    }

    fn spawn<F>(&self, future: F) -> SmolTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        SmolTask(Some(smol::spawn(future)))
    }

    fn abort(&self, mut task: SmolTask) {
        // A `smol::Task` dropped is cancelled.
        drop(task.0.take());
    }

    fn timer(&self, at: Instant) -> Timer {
        Timer::at(at)
    }

    fn reset_timer(&self, timer: &mut Timer, at: Instant) {
        timer.set_at(at);
    }

    async fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let stream = TcpStream::connect((host, port)).await?;
        // Only latency is lost if it cannot be set.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::try_from(aliot_io::runtime::listen(addr)?)
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}
