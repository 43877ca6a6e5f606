//! Accepting TCP connections for one listener: a cap on the connections it
//! holds open, backoff when `accept` itself fails, and warnings at a
//! bounded rate.
//!
//! At the descriptor limit (`EMFILE`) `accept` fails at once, every time,
//! while the pending connection stays in the kernel's queue; a loop that
//! only logs and retries spins a core and floods the log. Here each failure
//! waits a little longer than the one before (up to
//! [`limits::ACCEPT_BACKOFF_MAX`]), and each kind of warning is written at
//! most once per [`limits::ACCEPT_LOG_INTERVAL`] with the count it stands
//! for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::limits;

/// Accepts connections on one listener, at most `cap` open at a time.
pub struct Listener {
    listener: TcpListener,
    name: &'static str,
    drain: Drain,
    backoff: AcceptBackoff,
    errors: LogLimiter,
    refused: LogLimiter,
}

/// One accepted connection's place under the listener's cap; the place is
/// free again when this is dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Waits for a listener's connections to end (see [`Listener::close`]).
#[derive(Clone)]
pub struct Drain {
    permits: Arc<Semaphore>,
    cap: u32,
}

impl Drain {
    /// Waits until every connection accepted so far has ended, or `grace`
    /// has passed; true when they all ended.
    pub async fn wait(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.permits.acquire_many(self.cap))
            .await
            .is_ok()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        usize::try_from(self.cap)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.permits.available_permits())
    }
}

impl Listener {
    /// Wraps `listener` (named `name` in logs) with a cap of `max_connections`
    /// open connections (at least one).
    pub fn new(listener: TcpListener, name: &'static str, max_connections: usize) -> Listener {
        let cap = u32::try_from(max_connections.max(1)).unwrap_or(u32::MAX);
        let cap = cap.min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Listener {
            listener,
            name,
            drain: Drain {
                permits: Arc::new(Semaphore::new(usize::try_from(cap).unwrap_or(1))),
                cap,
            },
            backoff: AcceptBackoff::default(),
            errors: LogLimiter::new(limits::ACCEPT_LOG_INTERVAL),
            refused: LogLimiter::new(limits::ACCEPT_LOG_INTERVAL),
        }
    }

    /// The next connection within the cap. Connections over the cap are
    /// closed as soon as they are accepted; failures of `accept` are waited
    /// out with backoff. Cancel-safe: dropping the future loses no
    /// connection that was handed out.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    self.backoff.reset();
                    match self.drain.permits.clone().try_acquire_owned() {
                        Ok(permit) => return (tcp, peer, Slot { _permit: permit }),
                        Err(_) => {
                            drop(tcp);
                            if let Some(n) = self.refused.note(Instant::now()) {
                                tracing::warn!(
                                    listener = self.name,
                                    cap = self.drain.cap,
                                    refused = n,
                                    "connection limit reached; closing new connections"
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    // A connection that failed before it was accepted says
                    // nothing about the listener: take the next at once.
                    let per_connection = matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    );
                    let delay = if per_connection {
                        Duration::ZERO
                    } else {
                        self.backoff.fail()
                    };
                    if let Some(n) = self.errors.note(Instant::now()) {
                        tracing::warn!(
                            listener = self.name,
                            error = %e,
                            errors = n,
                            ?delay,
                            "accept failed; backing off"
                        );
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    /// Stops listening (the port is released) and returns the handle that
    /// waits for the accepted connections to end.
    pub fn close(self) -> Drain {
        self.drain
    }

    /// The drain handle, while still listening.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }
}

/// Delays between failed `accept` calls: from
/// [`limits::ACCEPT_BACKOFF_MIN`], doubling up to
/// [`limits::ACCEPT_BACKOFF_MAX`]; back to the start after a success.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            next: limits::ACCEPT_BACKOFF_MIN,
        }
    }
}

impl AcceptBackoff {
    /// Records a failure; returns how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(limits::ACCEPT_BACKOFF_MAX);
        d
    }

    /// Records a success.
    pub fn reset(&mut self) {
        self.next = limits::ACCEPT_BACKOFF_MIN;
    }
}

/// Lets one log line through per interval, counting those held back.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl LogLimiter {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: None,
            pending: 0,
        }
    }

    /// Counts one event at `now`. Returns `Some(n)` when a line should be
    /// written now, `n` being the events it stands for (this one and those
    /// held back since the last line); `None` to stay quiet.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.pending = self.pending.saturating_add(1);
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.pending))
            }
        }
    }
}

/// Descriptors kept aside for what is not a connection (the spool, log
/// files, the admin listener, stdio children's pipes).
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises this process's soft descriptor limit to its hard limit (the
/// default soft limit, often 1,024, is far below what a relay's connection
/// caps allow), and warns when `connections` — the most this process's
/// caps let it hold — plus [`RESERVED_DESCRIPTORS`] still do not fit: the
/// caps would then never be reached, and `accept` would fail at the limit
/// instead (backed off, but refused). Returns the soft limit now in force.
pub fn fit_descriptor_limit(connections: u64) -> Option<u64> {
    let soft = raise_soft_nofile()?;
    let wanted = connections.saturating_add(RESERVED_DESCRIPTORS);
    if soft < wanted {
        tracing::warn!(
            limit = soft,
            wanted,
            "the descriptor limit is below what the connection caps allow; raise it (ulimit -n, LimitNOFILE=) or lower max_agent_connections / max_tunnel_connections"
        );
    }
    Some(soft)
}

#[cfg(unix)]
fn raise_soft_nofile() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed,
    // which lives on this stack frame for the duration of each call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(not(unix))]
fn raise_soft_nofile() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_its_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(b.fail());
        }
        assert_eq!(seen[0], limits::ACCEPT_BACKOFF_MIN);
        assert_eq!(seen[1], limits::ACCEPT_BACKOFF_MIN * 2);
        assert!(seen.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*seen.last().unwrap(), limits::ACCEPT_BACKOFF_MAX);
        // A failing listener is retried at most this often once backed off:
        // a second of sleeping per failure cannot spin a core.
        let slept: Duration = seen.iter().sum();
        assert!(slept >= Duration::from_secs(10), "{slept:?}");
        b.reset();
        assert_eq!(b.fail(), limits::ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn log_limiter_writes_one_line_per_interval_with_the_count() {
        let start = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(5));
        assert_eq!(l.note(start), Some(1));
        // A flood within the interval: silent, but counted.
        for i in 0..10_000u64 {
            assert_eq!(l.note(start + Duration::from_micros(i)), None);
        }
        assert_eq!(l.note(start + Duration::from_secs(4)), None);
        assert_eq!(l.note(start + Duration::from_secs(5)), Some(10_002));
        assert_eq!(l.note(start + Duration::from_secs(6)), None);
        assert_eq!(l.note(start + Duration::from_secs(11)), Some(2));
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_places_come_back() {
        use tokio::io::AsyncReadExt;
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut l = Listener::new(tcp, "test", 1);
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (_s1, _, slot) = l.accept().await;
        assert_eq!(l.drain().open(), 1);
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        // Over the cap: while the listener accepts, it closes c2 and c3 and
        // hands out nothing.
        let closed = async {
            let mut buf = [0u8; 1];
            assert_eq!(c2.read(&mut buf).await.unwrap_or(0), 0);
            assert_eq!(c3.read(&mut buf).await.unwrap_or(0), 0);
        };
        tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! {
                _ = l.accept() => panic!("a connection over the cap was handed out"),
                () = closed => {}
            }
        })
        .await
        .unwrap();
        drop(slot);
        assert_eq!(l.drain().open(), 0);
        let _c4 = TcpStream::connect(addr).await.unwrap();
        let (_s4, _, _slot4) = l.accept().await;
        assert_eq!(l.drain().open(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        let soft = fit_descriptor_limit(0).unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads into a struct on this stack frame.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(soft, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
