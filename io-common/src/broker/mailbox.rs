//! The hub's commands to one connection task: a queue that holds no memory while it is empty.
//!
//! A broker holds one of these per connection, and most connections are idle most of the
//! time, so what an empty queue costs is what an idle connection costs. A general channel
//! allocates a block of slots up front (tokio's unbounded channel: 32 commands, 2.5 KiB);
//! this queue is a `VecDeque` behind a mutex, which allocates on the first command of a burst,
//! and the receiver takes the whole burst at once (one lock, one wake-up), leaving nothing
//! allocated behind it.
//!
//! There is one sender, the hub task, and one receiver, the connection task. The sender wakes
//! the receiver only when the queue goes from empty to not empty.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use aliot_core::server::Command;
use futures_util::task::AtomicWaker;

/// A new, empty mailbox: its sending end for the hub and its receiving end for the connection.
pub(crate) fn mailbox() -> (CommandSender, CommandReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            commands: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        receiver_waker: AtomicWaker::new(),
    });
    (
        CommandSender {
            shared: Arc::clone(&shared),
        },
        CommandReceiver { shared },
    )
}

struct Shared {
    queue: Mutex<Queue>,
    receiver_waker: AtomicWaker,
}

struct Queue {
    commands: VecDeque<Command>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; a poisoned queue is still a valid queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hub's end: queues commands for one connection. Dropping it tells the connection that
/// no more commands will come.
pub(crate) struct CommandSender {
    shared: Arc<Shared>,
}

impl CommandSender {
    /// Queues `command`, or gives it back when the connection task is gone.
    pub(crate) fn send(&self, command: Command) -> Result<(), Command> {
        let mut queue = self.shared.lock();
        if queue.receiver_gone {
            return Err(command);
        }
        let was_empty = queue.commands.is_empty();
        queue.commands.push_back(command);
        drop(queue);
        if was_empty {
            self.shared.receiver_waker.wake();
        }
        Ok(())
    }
}

impl Drop for CommandSender {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
        self.shared.receiver_waker.wake();
    }
}

/// The connection's end. Dropping it drops what is still queued and makes later sends fail.
pub(crate) struct CommandReceiver {
    shared: Arc<Shared>,
}

impl CommandReceiver {
    /// Waits until commands are queued and takes all of them, in order. An empty batch means
    /// the sender is gone and nothing more will come. Cancel-safe: commands are taken only by
    /// the poll that returns them.
    pub(crate) fn recv_all(&mut self) -> impl Future<Output = VecDeque<Command>> + '_ {
        poll_fn(|cx| {
            self.shared.receiver_waker.register(cx.waker());
            let mut queue = self.shared.lock();
            if !queue.commands.is_empty() || queue.sender_gone {
                Poll::Ready(mem::take(&mut queue.commands))
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for CommandReceiver {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.receiver_gone = true;
        let dropped = mem::take(&mut queue.commands);
        drop(queue);
        // Outside the lock: a command's drop runs no code of ours, but it need not hold it.
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_core::server::CloseReason;
    use futures_util::FutureExt as _;
    use futures_util::task::noop_waker_ref;
    use std::task::Context;

    fn close(reason: CloseReason) -> Command {
        Command::Close(reason)
    }

    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        let mut future = std::pin::pin!(future);
        future
            .as_mut()
            .poll(&mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn a_burst_is_taken_whole_and_in_order() {
        let (sender, mut receiver) = mailbox();
        assert!(poll_once(receiver.recv_all()).is_pending());
        for session_present in [false, true] {
            assert!(
                sender
                    .send(Command::SessionOpened { session_present })
                    .is_ok()
            );
        }
        let batch = receiver.recv_all().now_or_never().expect("queued commands");
        let flags: Vec<_> = batch
            .iter()
            .map(|command| match command {
                Command::SessionOpened { session_present } => *session_present,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(flags, [false, true]);
        assert!(poll_once(receiver.recv_all()).is_pending());
    }

    #[test]
    fn an_empty_mailbox_holds_no_allocation() {
        let (sender, mut receiver) = mailbox();
        assert!(sender.send(close(CloseReason::TakenOver)).is_ok());
        assert_eq!(receiver.recv_all().now_or_never().map(|b| b.len()), Some(1));
        assert_eq!(sender.shared.lock().commands.capacity(), 0);
    }

    #[test]
    fn the_receiver_learns_when_the_sender_is_gone() {
        let (sender, mut receiver) = mailbox();
        assert!(sender.send(close(CloseReason::ServerShutdown)).is_ok());
        drop(sender);
        // What was queued first, then the empty batch that says nothing more comes.
        assert_eq!(receiver.recv_all().now_or_never().map(|b| b.len()), Some(1));
        assert_eq!(receiver.recv_all().now_or_never().map(|b| b.len()), Some(0));
    }

    #[test]
    fn sends_fail_once_the_receiver_is_gone() {
        let (sender, receiver) = mailbox();
        assert!(sender.send(close(CloseReason::TakenOver)).is_ok());
        drop(receiver);
        assert!(matches!(
            sender.send(close(CloseReason::ServerShutdown)),
            Err(Command::Close(CloseReason::ServerShutdown))
        ));
        assert!(sender.shared.lock().commands.is_empty());
    }

    /// Counts its wake-ups.
    struct WakeCounter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for WakeCounter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Leaves `receiver` waiting with a counting waker; returns that counter.
    fn waiting(receiver: &mut CommandReceiver) -> Arc<WakeCounter> {
        let counter = Arc::new(WakeCounter(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&counter));
        let mut wait = std::pin::pin!(receiver.recv_all());
        let polled = wait.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
        counter
    }

    fn wake_ups(counter: &WakeCounter) -> usize {
        counter.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_the_first_command() {
        let (sender, mut receiver) = mailbox();
        let counter = waiting(&mut receiver);
        assert!(sender.send(close(CloseReason::TakenOver)).is_ok());
        assert!(sender.send(close(CloseReason::ServerShutdown)).is_ok());
        // One wake-up for the burst, not one per command.
        assert_eq!(wake_ups(&counter), 1);
        assert_eq!(receiver.recv_all().now_or_never().map(|b| b.len()), Some(2));
    }

    #[test]
    fn a_waiting_receiver_is_woken_when_the_sender_goes() {
        let (sender, mut receiver) = mailbox();
        let counter = waiting(&mut receiver);
        drop(sender);
        assert_eq!(wake_ups(&counter), 1);
        assert_eq!(receiver.recv_all().now_or_never().map(|b| b.len()), Some(0));
    }
}
