//! Server-Sent Events, decoded and re-encoded one event at a time.
//!
//! The gateway must see each JSON-RPC message inside an SSE stream without
//! buffering the stream whole, and must keep event ids so resumption
//! (`Last-Event-ID`) still works through the tunnel. The decoder is
//! incremental over arbitrary chunk boundaries and bounds each event's size.

use bytes::{Bytes, BytesMut};

/// One SSE event block, as received. Blocks with only an `id` (priming
/// events) or only a `retry` are kept: they matter for resumption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    /// Data lines joined with `\n`; `None` when the block had no data line.
    pub data: Option<String>,
    pub retry: Option<u64>,
    /// Comment lines (without the leading `:`), kept so keep-alive comments
    /// pass through.
    pub comments: Vec<String>,
}

impl Event {
    /// An event carrying `data` and nothing else.
    pub fn data(data: impl Into<String>) -> Event {
        Event {
            data: Some(data.into()),
            ..Event::default()
        }
    }

    /// Serialises the event in wire form, ending with the blank line.
    pub fn encode(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.as_ref().map_or(0, |d| d.len()) + 32);
        for c in &self.comments {
            out.push(':');
            out.push_str(c);
            out.push('\n');
        }
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        if let Some(ev) = &self.event {
            out.push_str("event: ");
            out.push_str(ev);
            out.push('\n');
        }
        if let Some(r) = self.retry {
            out.push_str("retry: ");
            out.push_str(&r.to_string());
            out.push('\n');
        }
        if let Some(data) = &self.data {
            for line in data.split('\n') {
                out.push_str("data: ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
        Bytes::from(out)
    }

    fn is_empty(&self) -> bool {
        self.id.is_none()
            && self.event.is_none()
            && self.data.is_none()
            && self.retry.is_none()
            && self.comments.is_empty()
    }
}

/// Why an SSE stream could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("SSE event larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("SSE stream is not UTF-8")]
    NotUtf8,
}

/// Incremental SSE decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    current: Event,
    current_size: usize,
    limit: usize,
    /// A `\r` ended the last chunk: a following `\n` belongs to it.
    pending_cr: bool,
    /// Bytes at the start of `buf` already searched for a line end: a long
    /// line arriving in many chunks is searched once, not once per chunk.
    scanned: usize,
}

#[cfg(test)]
thread_local! {
    /// Bytes searched for line ends on this thread.
    static SEARCHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Decoder {
    /// A decoder that refuses events whose lines add up to more than `limit`.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            current: Event::default(),
            current_size: 0,
            limit,
            pending_cr: false,
            scanned: 0,
        }
    }

    /// Feeds a chunk; appends every event it completes to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        // An empty chunk (an empty DATA frame) says nothing, in particular
        // not whether a `\n` follows a `\r` that ended the last chunk.
        if chunk.is_empty() {
            return Ok(());
        }
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = self.line_end() {
            let line = self.buf.split_to(pos);
            let term = self.buf.split_to(1);
            if term.first() == Some(&b'\r') {
                match self.buf.first() {
                    Some(b'\n') => {
                        let _ = self.buf.split_to(1);
                    }
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            self.line(&line, out)?;
        }
        if self.buf.len() + self.current_size > self.limit {
            return Err(SseError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// Ends the stream: an unterminated final event is discarded, as the SSE
    /// specification requires.
    pub fn finish(self) {}

    /// Where the next line ends in `buf`, searching only what was not
    /// searched before.
    fn line_end(&mut self) -> Option<usize> {
        let from = self.scanned.min(self.buf.len());
        let rest = self.buf.get(from..).unwrap_or_default();
        #[cfg(test)]
        SEARCHED.with(|n| n.set(n.get() + rest.len()));
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => {
                self.scanned = 0;
                Some(from + i)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.current);
            self.current_size = 0;
            if !ev.is_empty() {
                out.push(ev);
            }
            return Ok(());
        }
        self.current_size += line.len() + 1;
        if self.current_size > self.limit {
            return Err(SseError::TooLarge { limit: self.limit });
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if let Some(comment) = line.strip_prefix(':') {
            self.current.comments.push(comment.to_owned());
            return Ok(());
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.current.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.current.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.current.id = Some(value.to_owned()),
            "event" => self.current.event = Some(value.to_owned()),
            "retry" => {
                if let Ok(r) = value.parse() {
                    self.current.retry = Some(r);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20,000-byte data line sent a byte at a time is searched for its
    /// end once (about 20,000 bytes), not once per byte (200 million).
    #[test]
    fn a_long_line_in_tiny_chunks_is_searched_once() {
        let line = format!("data: {}\n\n", "x".repeat(20_000));
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        SEARCHED.with(|n| n.set(0));
        for b in line.as_bytes() {
            d.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        let searched = SEARCHED.with(std::cell::Cell::get);
        assert!(searched <= 2 * line.len(), "{searched} bytes searched");
        assert_eq!(out, vec![Event::data("x".repeat(20_000))]);
    }

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<Event> {
        let mut d = Decoder::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn decodes_across_any_split() {
        let wire = b"id: 1\nevent: message\ndata: {\"a\":\ndata: 1}\n\n: ping\n\nid: 2\r\ndata: x\r\n\r\nretry: 5\n\n";
        let whole = decode_chunks(&[wire]);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].id.as_deref(), Some("1"));
        assert_eq!(whole[0].data.as_deref(), Some("{\"a\":\n1}"));
        assert_eq!(whole[1].comments, vec![" ping".to_owned()]);
        assert_eq!(whole[2].data.as_deref(), Some("x"));
        assert_eq!(whole[3].retry, Some(5));
        for split in 0..wire.len() {
            let (a, b) = wire.split_at(split);
            assert_eq!(decode_chunks(&[a, b]), whole, "split at {split}");
        }
    }

    /// Found by the `sse` fuzz target: an empty chunk between a `\r` and
    /// its `\n` made them two line ends, ending the event early.
    #[test]
    fn an_empty_chunk_between_cr_and_lf_changes_nothing() {
        let whole = decode_chunks(&[b"data: a\r\ndata: b\n\n"]);
        assert_eq!(whole, vec![Event::data("a\nb")]);
        assert_eq!(decode_chunks(&[b"data: a\r", b"", b"\ndata: b\n\n"]), whole);
    }

    #[test]
    fn keeps_priming_events_and_round_trips() {
        let events = decode_chunks(&[b"id: abc\ndata:\n\n"]);
        assert_eq!(events[0].id.as_deref(), Some("abc"));
        assert_eq!(events[0].data.as_deref(), Some(""));
        let again = decode_chunks(&[&events[0].encode()]);
        assert_eq!(again, events);
    }

    #[test]
    fn bounds_event_size() {
        let mut d = Decoder::new(16);
        let mut out = Vec::new();
        let err = d.push(b"data: 0123456789abcdefghij", &mut out).unwrap_err();
        assert_eq!(err, SseError::TooLarge { limit: 16 });
        let mut d = Decoder::new(16);
        assert_eq!(
            d.push(b"data: 0123\ndata: 456789abcdef\n", &mut out),
            Err(SseError::TooLarge { limit: 16 }),
            "the event's lines count together"
        );
    }
}
