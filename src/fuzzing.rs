//! The properties the fuzz targets check, one function per target, each on
//! arbitrary bytes.
//!
//! `fuzz/` (cargo-fuzz, nightly) calls these from libFuzzer;
//! `tests/integration/fuzz_corpus.rs` replays the committed corpora through
//! the same functions on the stable toolchain, so a crash found once stays
//! fixed. A property that fails is returned as a [`Violation`], never a
//! panic: the library's no-panic rule holds here too, and the fuzz target
//! turns an `Err` into the crash libFuzzer records. Each function reads the
//! input format its doc comment gives; inputs that do not fit that format
//! are accepted as vacuous.
//!
//! Why one file of over 400 lines: the five properties share the
//! [`Violation`] contract, the [`TARGETS`] table the corpus directories are
//! named after, and the input layouts; read together they are the fuzzing
//! contract, and each property is short.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::gateway::event_id::{EventIds, Opened, Scope, StreamOf};
use crate::limits::MAX_JSON_DEPTH;
use crate::mcp::keys::fold;
use crate::mcp::sse::{Decoder, Event, SseError};
use crate::mcp::{Direction, Kind, Message, MessageContext, ParseOptions};
use crate::policy::chain::validate_rewrite;
use crate::principal::Principal;
use crate::secret;
use crate::tunnel::acceptor::{TunnelAuth, check_upgrade};
use crate::tunnel::{TUNNEL_HEADER, UPGRADE_PATH, UPGRADE_PROTOCOL};

/// A property that does not hold for an input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn ensure(holds: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    if holds {
        Ok(())
    } else {
        Err(Violation(what()))
    }
}

/// How the gateway reads messages unless a server's policy relaxes it.
const OPTS: ParseOptions = ParseOptions::new(MAX_JSON_DEPTH);

/// A property over arbitrary input bytes.
pub type Property = fn(&[u8]) -> Result<(), Violation>;

/// Every target: its name (the directory under `fuzz/corpus/`) and its
/// property.
pub const TARGETS: &[(&str, Property)] = &[
    ("jsonrpc", jsonrpc),
    ("sse", sse),
    ("handshake", handshake),
    ("rewrite", rewrite),
    ("event_id", event_id),
];

/// True when some object in `v` holds two keys that are one under [`fold`].
fn has_case_collision(v: &Value) -> bool {
    match v {
        Value::Object(map) => {
            let mut folded = std::collections::HashSet::new();
            map.keys().any(|k| !folded.insert(fold(k))) || map.values().any(has_case_collision)
        }
        Value::Array(items) => items.iter().any(has_case_collision),
        _ => false,
    }
}

/// `data` is one message body. A message that parses has a kind consistent
/// with its fields, keeps its exact bytes, and reads the same to a second,
/// independent JSON reader (`serde_json::Value`): same id, method, target,
/// progress token and protocol version. The default reading refuses
/// exactly what the relaxed one (case-colliding keys allowed) accepts and
/// has two keys equal under case folding in one object.
pub fn jsonrpc(data: &[u8]) -> Result<(), Violation> {
    let relaxed = ParseOptions {
        allow_case_colliding_keys: true,
        ..OPTS
    };
    let strict = Message::parse(Bytes::copy_from_slice(data), OPTS);
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data), relaxed) else {
        return ensure(strict.is_err(), || {
            "the default reading accepts what the relaxed one refuses".into()
        });
    };
    ensure(&m.raw[..] == data, || {
        "raw bytes differ from the input".into()
    })?;
    let shape_ok = match m.kind {
        Kind::Request => m.method.is_some() && m.id.is_some(),
        Kind::Notification => m.method.is_some() && m.id.is_none(),
        Kind::Response => m.method.is_none() && m.id.is_some(),
        Kind::Error => m.method.is_none(),
    };
    ensure(shape_ok, || format!("kind {:?} contradicts {m:?}", m.kind))?;
    let v: Value = serde_json::from_slice(data)
        .map_err(|e| Violation(format!("accepted, but not JSON to serde_json::Value: {e}")))?;
    ensure(strict.is_ok() != has_case_collision(&v), || {
        format!(
            "the default reading gave {:?} with case collisions: {}",
            strict.as_ref().map(|m| m.kind),
            has_case_collision(&v)
        )
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| Violation("accepted a JSON value that is not an object".into()))?;
    ensure(obj.get("jsonrpc") == Some(&Value::from("2.0")), || {
        "accepted without \"jsonrpc\": \"2.0\"".into()
    })?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(other) => return Err(Violation(format!("accepted id {other}"))),
    };
    let our_id = match &m.id {
        Some(text) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| Violation(format!("id text {text:?} is not JSON: {e}")))?,
        ),
        None => None,
    };
    ensure(our_id.as_ref() == id, || {
        format!("id {:?} but the JSON says {id:?}", m.id)
    })?;
    let method = obj.get("method").and_then(Value::as_str);
    ensure(m.method.as_deref() == method, || {
        format!("method {:?} but the JSON says {method:?}", m.method)
    })?;
    ensure(
        obj.contains_key("result") == (m.kind == Kind::Response),
        || format!("kind {:?} but \"result\" presence disagrees", m.kind),
    )?;
    ensure(obj.contains_key("error") == (m.kind == Kind::Error), || {
        format!("kind {:?} but \"error\" presence disagrees", m.kind)
    })?;
    let params = obj.get("params").and_then(Value::as_object);
    let field = |key: &str| params.and_then(|p| p.get(key)).and_then(Value::as_str);
    let name = field("name").or_else(|| field("uri"));
    ensure(m.name.as_deref() == name, || {
        format!("target {:?} but the JSON says {name:?}", m.name)
    })?;
    let meta = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let version = meta
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str);
    ensure(m.meta_protocol_version.as_deref() == version, || {
        format!(
            "protocol version {:?} but the JSON says {version:?}",
            m.meta_protocol_version
        )
    })?;
    let token = meta
        .and_then(|m| m.get("progressToken"))
        .filter(|t| !t.is_null());
    let our_token = match &m.progress_token {
        Some(text) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| Violation(format!("progress token {text:?} is not JSON: {e}")))?,
        ),
        None => None,
    };
    ensure(our_token.as_ref() == token, || {
        format!(
            "progress token {:?} but the JSON says {token:?}",
            m.progress_token
        )
    })
}

/// How an SSE input is laid out: byte 0 sets the decoder's size limit
/// (`16 * (1 + byte)`), byte 1 the number of cuts (`byte % 16`), then two
/// bytes (little-endian, taken modulo the stream's length + 1) per cut, then
/// the stream itself.
struct SseInput<'a> {
    limit: usize,
    cuts: Vec<usize>,
    stream: &'a [u8],
}

impl SseInput<'_> {
    fn read(data: &[u8]) -> SseInput<'_> {
        let limit = 16 * (1 + usize::from(data.first().copied().unwrap_or(0)));
        let n = usize::from(data.get(1).copied().unwrap_or(0) % 16);
        let header = data.get(2..).unwrap_or_default();
        let (cut_bytes, stream) = header.split_at(header.len().min(2 * n));
        let mut cuts: Vec<usize> = cut_bytes
            .chunks_exact(2)
            .map(|c| {
                usize::from(u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.last().copied().unwrap_or(0),
                ]))
            })
            .map(|c| c % (stream.len() + 1))
            .collect();
        cuts.sort_unstable();
        SseInput {
            limit,
            cuts,
            stream,
        }
    }

    /// The stream cut at every cut point (equal cuts make empty chunks).
    fn chunks(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(self.cuts.len() + 1);
        let mut start = 0;
        for &cut in &self.cuts {
            out.push(self.stream.get(start..cut).unwrap_or_default());
            start = cut;
        }
        out.push(self.stream.get(start..).unwrap_or_default());
        out
    }
}

/// Decodes `chunks` in order, up to the first error.
fn decode<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> (Vec<Event>, Result<(), SseError>) {
    let mut d = Decoder::new(limit);
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(e) = d.push(chunk, &mut events) {
            return (events, Err(e));
        }
    }
    d.finish();
    (events, Ok(()))
}

/// See [`SseInput`] for the layout. Decoding the stream whole and decoding
/// it cut into chunks give the same events and the same error; every event
/// decoded, encoded again and decoded, is the same event.
pub fn sse(data: &[u8]) -> Result<(), Violation> {
    let input = SseInput::read(data);
    let whole = decode([input.stream], input.limit);
    let split = decode(input.chunks(), input.limit);
    ensure(whole == split, || {
        format!(
            "cut at {:?}: whole gives {whole:?}, cut gives {split:?}",
            input.cuts
        )
    })?;
    for event in &whole.0 {
        let wire = event.encode();
        let again = decode([&wire[..]], usize::MAX);
        ensure(again == (vec![event.clone()], Ok(())), || {
            format!("{event:?} encoded as {wire:?} decodes as {again:?}")
        })?;
    }
    Ok(())
}

/// The one tunnel [`handshake`] accepts, and its token.
const FUZZ_TUNNEL: &str = "t-fuzz-0123456789abcdef";
const FUZZ_TOKEN: &str = "tok-fuzz-0123456789abcdef";

/// `data` is an HTTP/1.1 request head, read with `httparse` (the parser
/// under hyper's HTTP/1 server) into the path and header map hyper would
/// give the relay; heads it cannot read are vacuous. The relay's check
/// accepts exactly the heads on the tunnel path, upgrading to the tunnel
/// protocol, that name the one configured tunnel and carry its token; it
/// returns that tunnel id and nothing else.
pub fn handshake(data: &[u8]) -> Result<(), Violation> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return Ok(());
    };
    let Some(Ok(uri)) = req.path.map(http::Uri::try_from) else {
        return Ok(());
    };
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Ok(());
        };
        headers.append(name, value);
    }
    static AUTH: OnceLock<TunnelAuth> = OnceLock::new();
    let auth = AUTH
        .get_or_init(|| TunnelAuth::new([(FUZZ_TUNNEL.to_owned(), secret::digest(FUZZ_TOKEN))]));
    let result = check_upgrade(uri.path(), &headers, auth);
    let first = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
    let entitled = uri.path() == UPGRADE_PATH
        && first("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes()))
        && first(TUNNEL_HEADER) == Some(FUZZ_TUNNEL.as_bytes())
        && first("authorization") == Some(format!("Bearer {FUZZ_TOKEN}").as_bytes());
    match result {
        Ok(tunnel) => ensure(entitled && tunnel == FUZZ_TUNNEL, || {
            format!("accepted tunnel {tunnel:?} for {uri} {headers:?}")
        }),
        Err(refusal) => ensure(!entitled, || {
            format!("refused a valid upgrade ({refusal:?}): {uri} {headers:?}")
        }),
    }
}

/// `data` is the original message, a NUL byte, then a plugin's rewrite
/// (read as UTF-8, lossily: plugins return strings). A rewrite the chain
/// accepts is exactly the plugin's text, one JSON-RPC message, of the same
/// kind, with the same id and the same method; rewriting a message into
/// itself is always accepted.
pub fn rewrite(data: &[u8]) -> Result<(), Violation> {
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return Ok(());
    };
    let (original, new) = data.split_at(nul);
    let new = String::from_utf8_lossy(new.get(1..).unwrap_or_default()).into_owned();
    let Ok(orig) = Message::parse(Bytes::copy_from_slice(original), OPTS) else {
        return Ok(());
    };
    // The context as the checkpoint builds it for this message.
    let ctx = MessageContext {
        direction: Direction::ToServer,
        tunnel: "t".into(),
        server: "s".into(),
        kind: orig.kind,
        method: orig.method.clone(),
        target: orig.name.clone(),
        related_tool: None,
        request_id: orig.id.clone(),
        session_id: None,
        protocol_version: None,
        principal: Principal::anonymous(),
    };
    let identity = new.as_bytes() == original;
    match validate_rewrite(&ctx, new.clone(), OPTS) {
        Ok(bytes) => {
            ensure(bytes == new.as_bytes(), || {
                "the accepted bytes are not the plugin's".into()
            })?;
            let parsed = Message::parse(bytes, OPTS)
                .map_err(|e| Violation(format!("accepted a rewrite that does not parse: {e}")))?;
            ensure(parsed.kind == orig.kind, || {
                format!("accepted a {:?} rewriting a {:?}", parsed.kind, orig.kind)
            })?;
            ensure(parsed.id == orig.id, || {
                format!("accepted id {:?} rewriting id {:?}", parsed.id, orig.id)
            })?;
            ensure(parsed.method == orig.method, || {
                format!(
                    "accepted method {:?} rewriting method {:?}",
                    parsed.method, orig.method
                )
            })
        }
        Err(e) => ensure(!identity, || {
            format!("refused rewriting a message into itself: {e}")
        }),
    }
}

/// `data`, as text (lossily), is an id an agent sends in `Last-Event-ID`:
/// it does not open. Split at NULs into an upstream event id and the
/// stream's request id, method and target (those absent when there are
/// fewer parts): sealed, it opens to exactly those in its own scope, to
/// nothing in another scope, and changed in one character to nothing.
pub fn event_id(data: &[u8]) -> Result<(), Violation> {
    static IDS: OnceLock<Option<EventIds>> = OnceLock::new();
    let Some(ids) = IDS.get_or_init(|| EventIds::new(crate::session::owner::Instance::random()))
    else {
        return Err(Violation("no randomness for the sealing key".into()));
    };
    let alice = Scope {
        server: "crm",
        session: Some("s1"),
        subject: "alice",
    };
    let bob = Scope {
        subject: "bob",
        ..alice
    };
    let text = String::from_utf8_lossy(data);
    ensure(ids.open(&alice, &text).is_none(), || {
        format!("{text:?}, never sealed, opens")
    })?;
    let mut parts = text.splitn(4, '\0');
    let upstream = parts.next().unwrap_or_default();
    let stream = StreamOf {
        request: parts.next(),
        method: parts.next(),
        target: parts.next(),
    };
    let Some(minted) = ids.seal(&alice, upstream, stream) else {
        return Ok(());
    };
    let owned = |f: Option<&str>| f.map(str::to_owned);
    let expected = Opened {
        upstream: upstream.to_owned(),
        request: owned(stream.request),
        method: owned(stream.method),
        target: owned(stream.target),
    };
    ensure(ids.open(&alice, &minted) == Some(expected), || {
        format!("{minted} does not open to what was sealed")
    })?;
    ensure(ids.open(&bob, &minted).is_none(), || {
        format!("{minted} opens for another principal")
    })?;
    let at = usize::from(data.first().copied().unwrap_or(0)) % minted.len().max(1);
    let mut tampered: Vec<u8> = minted.clone().into_bytes();
    if let Some(b) = tampered.get_mut(at) {
        *b = if *b == b'A' { b'B' } else { b'A' };
    }
    let tampered = String::from_utf8_lossy(&tampered);
    ensure(ids.open(&alice, &tampered).is_none(), || {
        format!("{tampered} (changed at {at}) still opens")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_holds_on_a_realistic_input() {
        let cases: [(&str, &[u8]); 5] = [
            ("jsonrpc", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#),
            ("sse", b"\x10\x02\x03\x00\x09\x00id: 1\ndata: {}\n\n"),
            (
                "handshake",
                b"GET /portcullis/tunnel HTTP/1.1\r\nHost: relay\r\nConnection: upgrade\r\nUpgrade: portcullis-tunnel/1\r\nPortcullis-Tunnel: t-fuzz-0123456789abcdef\r\nAuthorization: Bearer tok-fuzz-0123456789abcdef\r\n\r\n",
            ),
            (
                "rewrite",
                b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\0{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"x\":1}}",
            ),
            ("event_id", b"evt-1\x007\x00tools/call\x00refund"),
        ];
        for (name, input) in cases {
            let (_, check) = TARGETS.iter().find(|(n, _)| *n == name).unwrap();
            check(input).unwrap_or_else(|v| panic!("{name}: {v}"));
        }
    }
}
