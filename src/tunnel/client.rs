//! The relay's HTTP/2 client on a tunnel connection, on the `h2` crate
//! itself rather than hyper's client.
//!
//! Why not hyper's: its HTTP/2 client hands each request through a channel
//! to a connection task, spawns a task per call that waits for the response
//! and sends it back through a oneshot, and, because h2 opens every new
//! stream from a queue the connection task drains, never finds send
//! capacity when it first polls the body, so it spawns a body-pipe task as
//! well; the body then often leaves in a TLS record of its own. Every
//! request the relay sends has its body already read whole (the message
//! limit bounds it), so here the call's own task opens the stream and
//! queues HEADERS and DATA together: the connection task writes both in
//! one flush, and no task is spawned per call.
//!
//! What hyper's client gave that is rebuilt here: its h2 settings, the
//! keep-alive PINGs that take a silent gateway out of rotation
//! ([`Liveness`]), and a response body that returns flow-control credit as
//! it is read ([`Recv`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

/// The relay's PINGs on a tunnel connection: one every `interval`; a
/// connection whose PING is unanswered for `timeout` is closed.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            interval: crate::limits::TUNNEL_PING_INTERVAL,
            timeout: crate::limits::TUNNEL_PING_TIMEOUT,
        }
    }
}

/// Sends calls down one tunnel connection. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    h2: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

/// How a call failed on the tunnel.
#[derive(Debug)]
pub struct SendError {
    error: h2::Error,
    /// The stream was never opened: nothing of the call left the relay.
    unsent: bool,
}

impl SendError {
    /// Whether the call certainly never reached the gateway's service, so
    /// that sending it again cannot run it twice: it never left, or the
    /// gateway refused its stream (REFUSED_STREAM, or a GOAWAY whose last
    /// stream is below it; RFC 9113 §8.7).
    pub fn unprocessed(&self) -> bool {
        self.unsent
            || (self.error.is_remote()
                && (self.error.is_go_away()
                    || self.error.reason() == Some(h2::Reason::REFUSED_STREAM)))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl Sender {
    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req` (its body whole) on a new stream and waits for the
    /// response head. An empty body ends the stream with HEADERS.
    pub async fn send(&self, req: Request<Bytes>) -> Result<Response<Recv>, SendError> {
        let unsent = |error| SendError {
            error,
            unsent: true,
        };
        let sent = |error| SendError {
            error,
            unsent: false,
        };
        // A fresh handle has no stream of its own pending, so this is
        // ready at once unless the connection failed.
        let mut h2 = self.h2.clone().ready().await.map_err(unsent)?;
        let (head, body) = req.into_parts();
        let head = Request::from_parts(head, ());
        let (response, mut stream) = h2.send_request(head, body.is_empty()).map_err(unsent)?;
        if !body.is_empty() {
            // Queued beside the HEADERS before the connection task runs:
            // h2 buffers beyond the window, and the two leave in one write.
            stream.send_data(body, true).map_err(sent)?;
        }
        let response = response.await.map_err(sent)?;
        Ok(response.map(|body| Recv { body, done: false }))
    }
}

// The settings hyper's HTTP/2 client used on tunnel connections (its
// defaults, which the tunnel's throughput tests were tuned with).

/// Flow-control window of each stream the relay receives on.
const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
/// Flow-control window of the whole connection the relay receives on.
const CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;
/// Streams the relay may open before the gateway's SETTINGS say how many.
const INITIAL_SEND_STREAMS: usize = 100;
/// Largest frame the relay accepts (RFC 9113's minimum, 16 KiB).
const MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Largest header block the relay accepts in a gateway's answer.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Data h2 buffers per stream beyond the gateway's window.
const MAX_SEND_BUFFER_BYTES: usize = 1024 * 1024;
/// Streams the relay may reset for protocol errors before it closes the
/// connection.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

fn builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_max_send_streams(INITIAL_SEND_STREAMS)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buffer_size(MAX_SEND_BUFFER_BYTES)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false);
    b
}

/// Why a tunnel connection ended.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error("{0}")]
    H2(#[from] h2::Error),
    #[error("no answer to a PING within {0:?}")]
    Silent(Duration),
}

/// The HTTP/2 handshake on `io`: the sender, and the connection to drive
/// until it ends (with its PINGs). The sender reports closed once the
/// connection future has finished or been dropped.
pub async fn handshake<IO>(
    io: IO,
    ping: Liveness,
) -> Result<(Sender, impl Future<Output = Result<(), Ended>>), h2::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (h2, mut conn) = builder().handshake::<_, Bytes>(io).await?;
    let closed = Arc::new(AtomicBool::new(false));
    let sender = Sender {
        h2,
        closed: closed.clone(),
    };
    let pings = conn.ping_pong();
    let run = async move {
        let _closed = Closed(closed);
        let Some(pings) = pings else {
            return conn.await.map_err(Ended::from);
        };
        tokio::select! {
            r = &mut conn => r.map_err(Ended::from),
            e = keep_alive(pings, ping) => Err(e),
        }
    };
    Ok((sender, run))
}

/// Marks the connection closed when its future ends or is dropped.
struct Closed(Arc<AtomicBool>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// PINGs every `ping.interval`; returns when one goes unanswered for
/// `ping.timeout` (or PINGs cannot be sent: the connection is failing).
async fn keep_alive(mut pings: h2::PingPong, ping: Liveness) -> Ended {
    loop {
        tokio::time::sleep(ping.interval).await;
        if let Err(e) = pings.send_ping(h2::Ping::opaque()) {
            return Ended::H2(e);
        }
        let pong = std::future::poll_fn(|cx| pings.poll_pong(cx));
        match tokio::time::timeout(ping.timeout, pong).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Ended::H2(e),
            Err(_) => return Ended::Silent(ping.timeout),
        }
    }
}

/// A response body from the tunnel. Each chunk's flow-control credit goes
/// back to the gateway as the chunk is read, so a body the agent does not
/// read holds back the gateway, not the relay's memory. Dropped before its
/// end, the stream is reset (CANCEL).
#[derive(Debug)]
pub struct Recv {
    body: h2::RecvStream,
    done: bool,
}

impl http_body::Body for Recv {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.body.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                // Credit back to the gateway; fails only on a stream that
                // already ended, which the next poll reports.
                let _ = self.body.flow_control().release_capacity(data.len());
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {}
            Poll::Pending => return Poll::Pending,
        }
        let trailers: Option<HeaderMap> = match self.body.poll_trailers(cx) {
            Poll::Ready(Ok(t)) => t,
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            Poll::Pending => return Poll::Pending,
        };
        self.done = true;
        Poll::Ready(trailers.map(|t| Ok(http_body::Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::Mutex;

    /// One end of a duplex pipe that keeps each write it is given, and
    /// writes vectored as one write, as the TLS stream of a tunnel does.
    struct Recorded {
        io: tokio::io::DuplexStream,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl AsyncRead for Recorded {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &all))?;
            self.writes.lock().unwrap().push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The frames (type, stream id) that one write holds whole.
    fn frames(write: &[u8]) -> Vec<(u8, u32)> {
        let mut out = Vec::new();
        let mut rest = write;
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
            out.push((rest[3], stream));
            rest = rest.get(9 + len..).unwrap_or_default();
        }
        out
    }

    /// A hyper HTTP/2 server on the other end that echoes bodies; `pong`
    /// false: a peer that never reads (so never answers a PING).
    async fn connected(
        pong: bool,
    ) -> (
        Sender,
        Arc<Mutex<Vec<Vec<u8>>>>,
        tokio::task::JoinHandle<Result<(), Ended>>,
    ) {
        let (near, far) = tokio::io::duplex(1 << 20);
        if pong {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(Response::new(http_body_util::Full::new(body)))
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(far), svc)
                    .await;
            });
        } else {
            // Answers the handshake by hand, then goes silent.
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(far).await.unwrap();
                let _held = conn.accept();
                std::future::pending::<()>().await;
            });
        }
        let writes = Arc::new(Mutex::new(Vec::new()));
        let io = Recorded {
            io: near,
            writes: writes.clone(),
        };
        let ping = Liveness {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
        };
        let (sender, conn) = handshake(io, ping).await.unwrap();
        (sender, writes, tokio::spawn(conn))
    }

    fn call(body: &'static str) -> Request<Bytes> {
        Request::post("http://gateway.portcullis.internal/s/mcp")
            .body(Bytes::from_static(body.as_bytes()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_call_leaves_as_headers_and_data_in_one_write_and_its_answer_streams_back() {
        let (sender, writes, _conn) = connected(true).await;
        // The first call settles the SETTINGS exchange.
        let first = sender.send(call("first")).await.unwrap();
        assert_eq!(
            first.into_body().collect().await.unwrap().to_bytes(),
            "first"
        );
        for i in 0..20 {
            writes.lock().unwrap().clear();
            let resp = sender.send(call("{\"jsonrpc\":\"2.0\"}")).await.unwrap();
            let got = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, "{\"jsonrpc\":\"2.0\"}");
            let stream = 3 + 2 * i;
            let w = writes.lock().unwrap();
            let with_headers = w
                .iter()
                .find(|w| frames(w).contains(&(0x1, stream)))
                .unwrap_or_else(|| panic!("no HEADERS of stream {stream} in {w:?}"));
            assert!(
                frames(with_headers).contains(&(0x0, stream)),
                "call {i}: HEADERS and DATA of stream {stream} in separate writes: {w:?}"
            );
        }
        assert!(!sender.is_closed());
    }

    #[tokio::test]
    async fn a_peer_that_stops_answering_pings_ends_the_connection() {
        let (sender, _writes, conn) = connected(false).await;
        let ended = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the connection outlived its PING timeout")
            .unwrap();
        assert!(matches!(ended, Err(Ended::Silent(_))), "{ended:?}");
        assert!(sender.is_closed());
        let err = sender.send(call("late")).await.unwrap_err();
        assert!(
            err.unprocessed(),
            "a call on a closed connection never left: {err}"
        );
    }
}
