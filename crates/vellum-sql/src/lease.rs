//! The lease on a server-held lock (docs/failover.md#leases): how PostgreSQL and MySQL stores
//! keep their lock session alive, and how soon a server frees the lock of an engine it lost.
//!
//! A server frees a session's lock only when the session ends, and a session ends only when the
//! server notices its client is gone. A crashed process closes its sockets, so that is at once;
//! an engine cut off without its connection closing (a network partition, a frozen host, a proxy
//! that stops forwarding) would keep the lock for as long as TCP takes to give up, if ever. So the
//! lock session runs with the server's idle timeout set to the failover timeout: a session from
//! which nothing arrives for that long is ended by the server, and its lock with it. The store's
//! writer sends a heartbeat whenever it has been idle for a third of that time, and gives the
//! session up (fencing the store) when the server does not answer within half of it.
//!
//! Safety does not depend on the client's clocks: every write goes through the lock session, and
//! the server ends that session before it frees the lock, so nothing the old holder sends can
//! commit once another engine holds the lock.

use std::future::Future;
use std::time::Duration;

/// The default failover timeout: an engine cut off from the server loses its lock within this
/// (plus the server's timer granularity), and a standby takes over.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest failover timeout accepted (MySQL counts its idle timeout in whole seconds).
pub const MIN_FAILOVER_TIMEOUT: Duration = Duration::from_secs(1);

/// The timing of one lock session's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    timeout: Duration,
}

impl Lease {
    /// A lease whose session the server ends after `timeout` without a word (at least
    /// [`MIN_FAILOVER_TIMEOUT`], rounded up to whole seconds).
    pub(crate) fn new(timeout: Duration) -> Self {
        let secs = timeout.max(MIN_FAILOVER_TIMEOUT).as_secs_f64().ceil();
        Self { timeout: Duration::from_secs_f64(secs) }
    }

    /// The server's idle timeout for the session.
    pub(crate) fn timeout(self) -> Duration {
        self.timeout
    }

    /// The timeout in whole seconds (MySQL's `wait_timeout`).
    pub(crate) fn timeout_secs(self) -> u64 {
        self.timeout.as_secs()
    }

    /// How long the writer idles before it sends a heartbeat: a third of the timeout, so one
    /// lost or late heartbeat does not cost the lock.
    pub(crate) fn heartbeat_after(self) -> Duration {
        self.timeout / 3
    }

    /// The TCP keepalive idle time of the lock connection: a third of the timeout in whole
    /// seconds, at least 1 s (the socket option counts seconds; 0 is refused).
    pub(crate) fn keepalive_idle(self) -> Duration {
        Duration::from_secs((self.timeout.as_secs() / 3).max(1))
    }

    /// How long a heartbeat may go unanswered before the session is given up: by then the
    /// server may have ended it.
    pub(crate) fn heartbeat_deadline(self) -> Duration {
        self.timeout / 2
    }

    /// How long one unit of work may wait for the server before the session is given up (its
    /// outcome then unknown, as with any lost connection). Longer than the timeout: a busy
    /// server is not an idle session.
    pub(crate) fn unit_deadline(self) -> Duration {
        self.timeout * 3
    }

    /// The writer's idle timer (`Executor::idle`).
    pub(crate) fn idle(self) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(self.heartbeat_after())
    }
}

impl Default for Lease {
    fn default() -> Self {
        Self::new(DEFAULT_FAILOVER_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_the_timeout_in_whole_seconds() {
        let lease = Lease::new(Duration::from_millis(2500));
        assert_eq!(lease.timeout(), Duration::from_secs(3));
        assert_eq!(lease.timeout_secs(), 3);
        assert_eq!(lease.heartbeat_after(), Duration::from_secs(1));
        assert_eq!(lease.heartbeat_deadline(), Duration::from_millis(1500));
        assert_eq!(lease.unit_deadline(), Duration::from_secs(9));
        assert_eq!(lease.keepalive_idle(), Duration::from_secs(1));
        assert_eq!(Lease::new(Duration::from_secs(1)).keepalive_idle(), Duration::from_secs(1));
        assert_eq!(Lease::new(Duration::from_secs(30)).keepalive_idle(), Duration::from_secs(10));
        assert_eq!(Lease::new(Duration::ZERO).timeout(), MIN_FAILOVER_TIMEOUT);
        assert_eq!(Lease::default().timeout(), DEFAULT_FAILOVER_TIMEOUT);
    }
}
