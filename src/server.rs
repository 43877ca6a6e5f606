//! The accept loop shared by every HTTP listener Portcullis runs (agent
//! endpoint, admin, demo server): optional TLS, HTTP/1.1 and HTTP/2, the
//! header read timeout, an idle timeout, a cap on open connections
//! (`src/accept.rs`), and a graceful drain on shutdown.
//!
//! A connection is idle while no request is in flight: from its start until
//! its first request, and from the end of each response (its body sent or
//! dropped) until the next request. hyper's HTTP/2 keep-alive PINGs only
//! find dead peers, and nothing in hyper closes an HTTP/2 connection with
//! no streams, or a connection that has not yet sent the bytes that say
//! which protocol it speaks; the watchdog here does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::accept;
use crate::body::{Body, BoxError};
use crate::limits;

/// How a listener serves connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// The listener's name in logs (`agents`, `admin`, …).
    pub name: &'static str,
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time a client has to send complete request headers (and to finish
    /// the TLS handshake).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; new ones over this are closed at once.
    pub max_connections: usize,
    /// Time in-flight requests get after shutdown (or after an idle close
    /// began) before connections close.
    pub drain_grace: Duration,
}

impl ServeOptions {
    /// Plain HTTP with the agent listener's defaults.
    pub fn plain(name: &'static str) -> ServeOptions {
        ServeOptions {
            name,
            tls: None,
            header_read_timeout: limits::HEADER_READ_TIMEOUT,
            idle_timeout: limits::AGENT_IDLE_TIMEOUT,
            max_connections: limits::MAX_AGENT_CONNECTIONS,
            drain_grace: limits::DRAIN_GRACE,
        }
    }
}

/// Serves `service` on `listener` until `shutdown`, then drains.
pub async fn serve<S, F>(
    listener: TcpListener,
    opts: ServeOptions,
    service: S,
    shutdown: CancellationToken,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut listener = accept::Listener::new(listener, opts.name, opts.max_connections);
    let tls = opts.tls.clone().map(TlsAcceptor::from);
    // Cancelled when the drain grace is over: connections still open end.
    let hard_stop = CancellationToken::new();
    let opts = Arc::new(opts);
    loop {
        let (tcp, peer, slot) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let opts = opts.clone();
        let tls = tls.clone();
        let stop = Stops {
            graceful: shutdown.clone(),
            hard: hard_stop.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(tcp, peer, service, &opts, stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(tcp);
                    let stream = tokio::select! {
                        r = tokio::time::timeout(opts.header_read_timeout, handshake) => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                        () = stop.graceful.cancelled() => return,
                    };
                    serve_connection(stream, peer, service, &opts, stop).await;
                }
            }
        });
    }
    let drain = listener.close();
    if !drain.wait(opts.drain_grace).await {
        tracing::warn!(
            listener = opts.name,
            open = drain.open(),
            "drain grace period over; closing connections with requests in flight"
        );
        hard_stop.cancel();
    }
}

/// What ends a connection from outside: the listener's shutdown (graceful),
/// then the end of its drain grace (hard).
struct Stops {
    graceful: CancellationToken,
    hard: CancellationToken,
}

/// Serves one connection until it ends, it idles out, or the listener stops.
async fn serve_connection<IO, S, F>(
    io: IO,
    peer: SocketAddr,
    service: S,
    opts: &ServeOptions,
    stop: Stops,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let http1 = req.version() < http::Version::HTTP_2;
        if http1 {
            tracked.http1.store(true, Ordering::Release);
        }
        let in_flight = InFlight::start(&tracked);
        let activity = tracked.clone();
        // The handler's future is large (every step of a call's state
        // machine, inline): boxed once here, so that this wrapper and
        // hyper's dispatcher move a pointer, not kilobytes, per call.
        let response = Box::pin(service(req));
        async move {
            let mut response = response.await?;
            // Draining: the client learns from this answer that the
            // connection ends after it, so its next request goes out on a
            // new one (elsewhere) instead of racing the close.
            if http1 && activity.closing.load(Ordering::Acquire) {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = activity.idle_for(opts.idle_timeout) => {
            tracing::debug!(%peer, listener = opts.name, "idle connection closed");
            None
        }
        () = stop.graceful.cancelled() => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            activity.closing.store(true, Ordering::Release);
            // HTTP/1.1 has no way to say "no more requests" but in an
            // answer: closing a keep-alive connection the client may be
            // writing into fails that request unanswered. So a connection
            // in use stays open and its next answer says
            // `Connection: close`; one idle for HTTP1_DRAIN_IDLE is closed.
            let ended = if activity.http1.load(Ordering::Acquire) {
                tokio::select! {
                    r = conn.as_mut() => Some(r),
                    () = activity.idle_for(limits::HTTP1_DRAIN_IDLE) => None,
                    () = stop.hard.cancelled() => Some(Ok(())),
                }
            } else {
                None
            };
            match ended {
                Some(r) => r,
                // HTTP/2: GOAWAY, and streams already open finish; HTTP/1.1:
                // no further request; a connection still choosing its
                // protocol ends at once. A peer that neither finishes nor
                // reads is cut after the grace.
                None => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        r = conn.as_mut() => r,
                        () = tokio::time::sleep(opts.drain_grace) => Ok(()),
                        () = stop.hard.cancelled() => Ok(()),
                    }
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// Requests in flight on one connection, and since when there were none.
struct Activity {
    origin: Instant,
    /// It has carried an HTTP/1 request (else HTTP/2, or nothing yet).
    http1: AtomicBool,
    /// The listener is draining: HTTP/1 answers say `Connection: close`.
    closing: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds from `origin` to when the last request in flight ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            http1: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Completes once no request has been in flight for `timeout`. Wakes
    /// about once per `timeout`, never per request: a request costs two
    /// atomic updates and a clock read.
    async fn idle_for(&self, timeout: Duration) {
        let mut deadline = self.origin + timeout;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                deadline = now + timeout;
                continue;
            }
            let since =
                self.origin + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            let due = since + timeout;
            if due <= now {
                return;
            }
            deadline = due;
        }
    }
}

/// One request in flight, from the service call until its response body is
/// sent or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stored before the count drops, so a watchdog that sees zero also
        // sees this time (or a later one).
        a.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it
/// is done with.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
