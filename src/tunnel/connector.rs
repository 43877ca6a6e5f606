//! The gateway's tunnel connections: a fixed number of slots, each dialing
//! the relay, serving HTTP/2 on the upgraded stream, and reconnecting with
//! jittered exponential backoff; a graceful drain on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::dial::{DialConfig, RelayTarget, dial_serving};
use crate::body::Body;
use crate::limits;

/// Shape of the gateway's connection pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Relays to connect to; slot `i` uses `relays[i % relays.len()]`.
    pub relays: Vec<RelayTarget>,
    /// Connections to keep open.
    pub connections: usize,
    /// Concurrent streams per connection the gateway accepts.
    pub max_streams: u32,
    /// Grace period for in-flight streams on shutdown.
    pub drain_grace: Duration,
}

/// Jittered exponential backoff between attempts to connect.
///
/// Only failures to connect grow it: a connection that came up sets it back
/// to [`limits::RECONNECT_BASE`], however soon it drops. For
/// [`limits::RECONNECT_AFTER_LOSS_WINDOW`] after a connection is lost the
/// delay stays under [`limits::RECONNECT_AFTER_LOSS_MAX`], so a relay that
/// restarts, even every few seconds, has every slot back about that soon
/// after it listens again; a relay that stays away is then tried less and
/// less often, up to [`limits::RECONNECT_MAX`].
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    lost_at: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: limits::RECONNECT_BASE,
            lost_at: None,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt, at `now`: uniformly in `[d/2, d]`
    /// where `d` is the current step (capped as above); the step then
    /// doubles.
    pub fn delay(&mut self, now: Instant) -> Duration {
        let cap = match self.lost_at {
            Some(lost)
                if now.saturating_duration_since(lost) < limits::RECONNECT_AFTER_LOSS_WINDOW =>
            {
                limits::RECONNECT_AFTER_LOSS_MAX
            }
            _ => limits::RECONNECT_MAX,
        };
        let d = self.next.min(cap);
        self.next = (d * 2).min(limits::RECONNECT_MAX);
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// A connection came up: the next failure starts from the base.
    pub fn connected(&mut self) {
        self.next = limits::RECONNECT_BASE;
    }

    /// A connection that was up ended at `now`.
    pub fn lost(&mut self, now: Instant) {
        self.next = limits::RECONNECT_BASE;
        self.lost_at = Some(now);
    }
}

/// Connection counts the gateway publishes (for readiness and tests).
#[derive(Clone)]
pub struct PoolStatus {
    connected: watch::Receiver<usize>,
}

impl PoolStatus {
    /// Connections currently up.
    pub fn connected(&self) -> usize {
        *self.connected.borrow()
    }

    /// Waits until at least `n` connections are up.
    pub async fn wait_connected(&mut self, n: usize) {
        let _ = self.connected.wait_for(|c| *c >= n).await;
    }

    /// Waits until every connection is down.
    pub async fn wait_disconnected(&mut self) {
        let _ = self.connected.wait_for(|c| *c == 0).await;
    }
}

/// Starts the pool; returns its status handle. The pool runs until `shutdown`
/// is cancelled, then drains each connection within the grace period. The
/// returned join handle completes when every slot has stopped.
pub fn start<S, F>(
    dial_cfg: DialConfig,
    pool: PoolConfig,
    service: S,
    shutdown: CancellationToken,
) -> (PoolStatus, tokio::task::JoinHandle<()>)
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let (tx, rx) = watch::channel(0usize);
    let tx = Arc::new(tx);
    let dial_cfg = Arc::new(dial_cfg);
    let mut slots = Vec::new();
    for slot in 0..pool.connections {
        let Some(target) = pool.relays.get(slot % pool.relays.len().max(1)).cloned() else {
            break;
        };
        slots.push(tokio::spawn(run_slot(
            slot,
            target,
            dial_cfg.clone(),
            pool.clone(),
            service.clone(),
            tx.clone(),
            shutdown.clone(),
        )));
    }
    let all = tokio::spawn(async move {
        for s in slots {
            let _ = s.await;
        }
    });
    (PoolStatus { connected: rx }, all)
}

async fn run_slot<S, F>(
    slot: usize,
    target: RelayTarget,
    dial_cfg: Arc<DialConfig>,
    pool: PoolConfig,
    service: S,
    connected: Arc<watch::Sender<usize>>,
    shutdown: CancellationToken,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut backoff = Backoff::default();
    let mut ever_connected = false;
    let tunnel_attr = [
        opentelemetry::KeyValue::new("portcullis.tunnel", dial_cfg.tunnel_id.clone()),
        opentelemetry::KeyValue::new("portcullis.component", "gateway"),
    ];
    let metrics = crate::telemetry::metrics::get();
    while !shutdown.is_cancelled() {
        let attempt = tokio::time::timeout(
            limits::HANDSHAKE_TIMEOUT,
            dial_serving(&dial_cfg, &target, pool.max_streams),
        );
        let upgraded = tokio::select! {
            r = attempt => r,
            () = shutdown.cancelled() => break,
        };
        match upgraded {
            Ok(Ok(io)) => {
                backoff.connected();
                connected.send_modify(|c| *c += 1);
                metrics.tunnel_connections.add(1, &tunnel_attr);
                if ever_connected {
                    metrics.tunnel_reconnects.add(1, &tunnel_attr[..1]);
                }
                ever_connected = true;
                tracing::info!(slot, relay = %target.addr, tunnel = %dial_cfg.tunnel_id, "tunnel connected");
                let svc = hyper::service::service_fn(service.clone());
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(pool.max_streams)
                    // The relay is authenticated: agents that leave mid-call
                    // reset streams in bursts, which must not trip the
                    // rapid-reset guard and close the tunnel.
                    .max_pending_accept_reset_streams(limits::TUNNEL_MAX_PENDING_RESETS)
                    .keep_alive_interval(limits::KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(limits::KEEPALIVE_TIMEOUT)
                    .serve_connection(io, svc);
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    () = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        match tokio::time::timeout(pool.drain_grace, conn.as_mut()).await {
                            Ok(r) => r,
                            Err(_) => {
                                tracing::warn!(slot, "drain grace period over; closing with streams in flight");
                                Ok(())
                            }
                        }
                    }
                };
                connected.send_modify(|c| *c = c.saturating_sub(1));
                metrics.tunnel_connections.add(-1, &tunnel_attr);
                match result {
                    Ok(()) => {
                        tracing::info!(slot, relay = %target.addr, "tunnel connection closed")
                    }
                    // Shutting down: the relay may close first (`up` stops
                    // both at once); that is the end asked for, not a loss.
                    Err(e) if shutdown.is_cancelled() => {
                        tracing::debug!(slot, relay = %target.addr, error = %e, "tunnel connection closed during shutdown")
                    }
                    Err(e) => {
                        tracing::warn!(slot, relay = %target.addr, error = %e, "tunnel connection lost")
                    }
                }
                backoff.lost(Instant::now());
            }
            Ok(Err(e)) => {
                tracing::warn!(slot, relay = %target.addr, error = %e, "tunnel connect failed")
            }
            Err(_) => tracing::warn!(slot, relay = %target.addr, "tunnel handshake timed out"),
        }
        if shutdown.is_cancelled() {
            break;
        }
        let delay = backoff.delay(Instant::now());
        tracing::debug!(slot, ?delay, "reconnecting after delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_to_connect_grow_the_backoff_with_jitter() {
        let now = Instant::now();
        let mut b = Backoff::default();
        let base = limits::RECONNECT_BASE;
        let first = b.delay(now);
        assert!(first >= base / 2 && first <= base);
        let second = b.delay(now);
        assert!(second >= base && second <= base * 2);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.delay(now);
            assert!(last <= limits::RECONNECT_MAX);
        }
        // A relay that was never reached is, in the end, tried rarely.
        assert!(last >= limits::RECONNECT_MAX / 2, "{last:?}");
        b.connected();
        assert!(b.delay(now) <= base);
    }

    #[test]
    fn a_connection_that_came_up_and_dropped_does_not_grow_the_backoff() {
        let mut now = Instant::now();
        let mut b = Backoff::default();
        // A relay that flaps: each connection comes up, lasts 2 s, drops;
        // two attempts fail while the relay restarts. Never more than the
        // after-loss cap, however many times it happens.
        for _ in 0..50 {
            b.connected();
            now += Duration::from_secs(2);
            b.lost(now);
            assert!(b.delay(now) <= limits::RECONNECT_BASE);
            for _ in 0..2 {
                assert!(b.delay(now) <= limits::RECONNECT_AFTER_LOSS_MAX);
            }
        }
    }

    #[test]
    fn after_a_loss_retries_stay_fast_for_the_window_then_slow_down() {
        let mut now = Instant::now();
        let mut b = Backoff::default();
        b.connected();
        b.lost(now);
        // The relay stays away: within the window every delay is capped.
        let mut waited = Duration::ZERO;
        while waited < limits::RECONNECT_AFTER_LOSS_WINDOW {
            let d = b.delay(now);
            assert!(d <= limits::RECONNECT_AFTER_LOSS_MAX, "{d:?} at {waited:?}");
            waited += d;
            now += d;
        }
        // After it, the backoff grows again, doubling from the cap.
        let mut after = Vec::new();
        for _ in 0..10 {
            after.push(b.delay(now));
        }
        assert!(after.iter().any(|d| *d > limits::RECONNECT_AFTER_LOSS_MAX));
        assert!(after.iter().all(|d| *d <= limits::RECONNECT_MAX));
        assert!(*after.last().unwrap() >= limits::RECONNECT_MAX / 2);
    }
}
