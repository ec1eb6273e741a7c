//! [`Tokio`]: the [`Runtime`] of `aliot-io` on tokio.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use aliot_io::runtime::Runtime;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};

/// The tokio runtime the caller runs on (`tokio::spawn`, tokio timers and sockets). Every call
/// must be made from within a tokio runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

/// A task spawned on tokio; see [`Runtime::Task`].
#[derive(Debug)]
pub struct TokioTask(JoinHandle<()>);

impl Future for TokioTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A task that panicked or was aborted has ended too.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for Tokio {
    type Tcp = Compat<TcpStream>;
    type Listener = TcpListener;
    type Timer = Pin<Box<tokio::time::Sleep>>;
    type Task = TokioTask;

    fn runs_last_woken_first(&self) -> bool {
        tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        })
    }

    fn spawn<F>(&self, future: F) -> TokioTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        TokioTask(tokio::spawn(future))
    }

    fn abort(&self, task: TokioTask) {
        task.0.abort();
    }

    fn timer(&self, at: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)))
    }

    fn reset_timer(&self, timer: &mut Self::Timer, at: Instant) {
        timer.as_mut().reset(tokio::time::Instant::from_std(at));
    }

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Tcp> {
        let stream = TcpStream::connect((host, port)).await?;
        // Only latency is lost if it cannot be set.
        let _ = stream.set_nodelay(true);
        Ok(stream.compat())
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(aliot_io::runtime::listen(addr)?)
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(Self::Tcp, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream.compat(), peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_multi_thread_scheduler_runs_the_last_woken_task_first() {
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert!(multi.block_on(async { Tokio.runs_last_woken_first() }));
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!current.block_on(async { Tokio.runs_last_woken_first() }));
        // Outside any runtime there is nothing to order.
        assert!(!Tokio.runs_last_woken_first());
    }
}
