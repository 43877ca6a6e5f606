//! The one HTTP body type Portcullis passes around, and helpers to build it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Boxed error carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming, boxed HTTP body. `Send` but not `Sync`: bodies that run the
/// policy chain hold plugin calls, which are not `Sync`.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body that holds `guard` for as long as it lives: until the last frame
/// is read or the body is dropped (the client went away).
pub struct Holding<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> Holding<B, G> {
    pub fn new(body: B, guard: G) -> Holding<B, G> {
        Holding {
            body,
            _guard: guard,
        }
    }
}

impl<B, G> http_body::Body for Holding<B, G>
where
    B: http_body::Body + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body read failed: {0}")]
    Io(BoxError),
}

/// Reads a body whole, refusing it as soon as it passes `limit` bytes.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(ReadError::TooLarge { limit })
            } else {
                Err(ReadError::Io(e))
            }
        }
    }
}

/// What [`gather`] read of a body.
pub enum Gathered<B> {
    /// The body ended within the bound: all of it.
    Whole(Bytes),
    /// The body went past the bound: what was read, and the rest unread.
    Partial { head: Bytes, rest: B },
}

/// Reads `body` until it ends or holds more than `bound` bytes; one
/// longer than `bound` is handed back to stream on ([`Resumed`]). Trailers
/// are not kept: nothing of ours sends them.
pub async fn gather<B>(mut body: B, bound: usize) -> Result<Gathered<B>, B::Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        len += data.len();
        chunks.push(data);
        if len > bound {
            return Ok(Gathered::Partial {
                head: join(chunks, len),
                rest: body,
            });
        }
    }
    Ok(Gathered::Whole(join(chunks, len)))
}

/// `chunks` (of `len` bytes in all) as one buffer, copied only when there
/// are several.
fn join(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = bytes::BytesMut::with_capacity(len);
    for c in &chunks {
        buf.extend_from_slice(c);
    }
    buf.freeze()
}

/// The body that [`gather`] stopped reading: the bytes it read, then the
/// rest as it comes.
pub struct Resumed<B> {
    head: Option<Bytes>,
    rest: B,
}

impl<B> Resumed<B> {
    pub fn new(head: Bytes, rest: B) -> Resumed<B> {
        Resumed {
            head: Some(head),
            rest,
        }
    }
}

impl<B> http_body::Body for Resumed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        if let Some(head) = self.head.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(head))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `parts` as separate data frames.
    fn frames(parts: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p))))
            .collect();
        boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn gather_reads_a_small_body_whole() {
        let body = frames(&[b"ab", b"", b"cde", b"f"]);
        match gather(body, 6).await.unwrap() {
            Gathered::Whole(b) => assert_eq!(&b[..], b"abcdef"),
            Gathered::Partial { .. } => panic!("6 bytes within a bound of 6 are whole"),
        }
        match gather(empty(), 0).await.unwrap() {
            Gathered::Whole(b) => assert!(b.is_empty()),
            Gathered::Partial { .. } => panic!("an empty body is whole"),
        }
    }

    #[tokio::test]
    async fn gather_hands_back_a_long_body_with_nothing_lost() {
        let body = frames(&[b"abc", b"def", b"ghi", b"jk"]);
        let Gathered::Partial { head, rest } = gather(body, 5).await.unwrap() else {
            panic!("11 bytes past a bound of 5 stream on");
        };
        assert_eq!(
            &head[..],
            b"abcdef",
            "reading stops at the frame past the bound"
        );
        let resumed = Resumed::new(head, rest);
        let all = resumed.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdefghijk");
    }

    #[tokio::test]
    async fn gather_reports_a_body_cut_off() {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"{\"jsonrpc\""))),
            Err("connection reset".into()),
        ];
        let body = boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        assert!(gather(body, 1024).await.is_err());
    }
}
