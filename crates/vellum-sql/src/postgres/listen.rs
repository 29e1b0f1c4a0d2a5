//! Commit wake-ups across processes: the writer's transaction sends `NOTIFY` on the
//! application's channel when it appends events, and a reader keeps one connection that
//! `LISTEN`s on it (docs/events.md#reading-beside-the-engine).
//!
//! The listener reports every commit while its `LISTEN` holds, so followers then wait without
//! querying anything. When the connection is lost the wake-ups say so (followers poll), and
//! the listener reconnects with back-off; once it listens again it wakes every follower, which
//! re-reads from its own position, so nothing committed meanwhile is missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::tls::MakeRustlsConnect;
use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_postgres::AsyncMessage;
use vellum_core::Wakeups;

/// The channel an application's commits notify: the advisory-lock key names the schema and the
/// application, and is a plain identifier whatever the application key holds.
pub(crate) fn channel(lock_key: i64) -> String {
    format!("vellum_{:016x}", lock_key.cast_unsigned())
}

/// The longest pause between two attempts to reconnect.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// A running listener; dropping it stops it (and closes its connection).
#[derive(Debug)]
pub(crate) struct Listener {
    task: AbortHandle,
}

impl Listener {
    /// Stops listening and closes the connection.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts listening on `channel` over a connection of its own made with `config`. The
/// wake-ups are partial (followers poll) until the first `LISTEN` holds.
pub(crate) fn spawn(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    channel: String,
) -> (Listener, Wakeups) {
    let (changes, receiver) = watch::channel(0u64);
    let partial = Arc::new(AtomicBool::new(true));
    let wakeups = Wakeups::unless(receiver, Arc::clone(&partial));
    let task = tokio::spawn(async move {
        let mut pause = Duration::from_millis(5);
        loop {
            if listen(&config, &tls, &channel, &changes, &partial).await {
                pause = Duration::from_millis(5);
            }
            // Lost or never made: followers poll until the next `LISTEN` holds.
            partial.store(true, Ordering::Release);
            changes.send_modify(|n| *n += 1);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
        }
    });
    (Listener { task: task.abort_handle() }, wakeups)
}

/// One connection's life: connects, listens, and bumps `changes` on every notification until
/// the connection ends. Returns whether the `LISTEN` held.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    channel: &str,
    changes: &watch::Sender<u64>,
    partial: &AtomicBool,
) -> bool {
    let Ok((client, mut connection)) = config.connect(tls.clone()).await else { return false };
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {channel}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                if done.is_err() {
                    return false;
                }
                listening = true;
                partial.store(false, Ordering::Release);
                // Whatever was committed before the `LISTEN` held is found by this look.
                changes.send_modify(|n| *n += 1);
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => changes.send_modify(|n| *n += 1),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return listening,
            },
        }
    }
}
