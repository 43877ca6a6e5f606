//! The two protocol eras of Streamable HTTP and the header rules of the
//! stateless one.
//!
//! Session era: protocol versions 2025-03-26 … 2025-11-25 (initialize,
//! `Mcp-Session-Id`, GET streams, resumption). Stateless era: 2026-07-28 and
//! later, where every POST carries `Mcp-Method` (and `Mcp-Name` for calls that
//! name a target) which must agree with the body.

use base64::Engine;
use http::HeaderMap;

use super::error::McpError;
use super::{Kind, Message};

/// First protocol version of the stateless era.
pub const STATELESS_SINCE: &str = "2026-07-28";

/// Header carrying the negotiated protocol version.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
/// Header carrying the session id (session era).
/// Whether `headers` say the body is an SSE stream (`text/event-stream`,
/// any case, parameters allowed).
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    const SSE: &str = "text/event-stream";
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim_start)
        .and_then(|ct| ct.get(..SSE.len()))
        .is_some_and(|ct| ct.eq_ignore_ascii_case(SSE))
}

pub const SESSION_HEADER: &str = "mcp-session-id";
/// Header repeating the JSON-RPC method (stateless era).
pub const METHOD_HEADER: &str = "mcp-method";
/// Header repeating the call's target name (stateless era).
pub const NAME_HEADER: &str = "mcp-name";

/// Request headers that carry MCP protocol state or trace context. They are
/// the only agent headers forwarded down the tunnel and on to an HTTP
/// upstream (besides `Mcp-Param-*`); credentials and cookies never are.
pub const FORWARDED_REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    SESSION_HEADER,
    PROTOCOL_VERSION_HEADER,
    METHOD_HEADER,
    NAME_HEADER,
    "last-event-id",
    "traceparent",
    "tracestate",
    "baggage",
];

/// Prefix of the stateless era's parameter headers, forwarded as well.
pub const PARAM_HEADER_PREFIX: &str = "mcp-param-";

/// True for a request header that may travel past the relay.
pub fn is_forwarded_request_header(name: &str) -> bool {
    FORWARDED_REQUEST_HEADERS.contains(&name) || name.starts_with(PARAM_HEADER_PREFIX)
}

/// Which family of the protocol a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-03-26 … 2025-11-25.
    Session,
    /// 2026-07-28 and later.
    Stateless,
}

impl Era {
    /// Decides the era once, from the version header (the body's `_meta`
    /// version only when there is no header). Both present and different
    /// is refused: a body cannot move a request out of the stateless era's
    /// header checks. Versions are ISO dates, so they compare as strings.
    pub fn of(headers: &HeaderMap, msg: Option<&Message>) -> Result<Era, McpError> {
        let header = match headers.get(PROTOCOL_VERSION_HEADER) {
            None => None,
            Some(v) => Some(v.to_str().map(str::trim).map_err(|_| {
                McpError::HeaderMismatch("MCP-Protocol-Version header is not text".into())
            })?),
        };
        let meta = msg.and_then(|m| m.meta_protocol_version.as_deref());
        if let (Some(h), Some(m)) = (header, meta)
            && h != m
        {
            return Err(McpError::HeaderMismatch(format!(
                "MCP-Protocol-Version header '{h}' does not match the body's protocol version '{m}'"
            )));
        }
        Ok(Era::of_version(header.or(meta)))
    }

    /// The era of a protocol version (none: the session era).
    pub fn of_version(version: Option<&str>) -> Era {
        match version {
            Some(v) if v >= STATELESS_SINCE => Era::Stateless,
            _ => Era::Session,
        }
    }
}

/// Methods whose `Mcp-Name` header is required (stateless era).
fn name_required(method: &str) -> bool {
    matches!(method, "tools/call" | "resources/read" | "prompts/get")
}

/// Decodes a header value: trims optional whitespace and unwraps the
/// `=?base64?…?=` form used for names that are not plain ASCII.
pub(crate) fn header_text(raw: &http::HeaderValue) -> Option<String> {
    let text = std::str::from_utf8(raw.as_bytes()).ok()?.trim();
    if let Some(inner) = text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    Some(text.to_owned())
}

/// Checks the stateless era's standard headers against the body: a missing or
/// different `Mcp-Method`, or `Mcp-Name` where one is required, is an error
/// (HTTP 400, JSON-RPC -32020).
pub fn check_standard_headers(headers: &HeaderMap, msg: &Message) -> Result<(), McpError> {
    if msg.kind != Kind::Request {
        return Ok(());
    }
    let method = msg.method_str();
    match headers.get(METHOD_HEADER).map(header_text) {
        None => {
            return Err(McpError::HeaderMismatch(format!(
                "missing required Mcp-Method header (body method '{method}')"
            )));
        }
        Some(Some(h)) if h == method => {}
        Some(h) => {
            return Err(McpError::HeaderMismatch(format!(
                "Mcp-Method header value '{}' does not match body value '{method}'",
                h.unwrap_or_default()
            )));
        }
    }
    if name_required(method) {
        let body = msg.name.as_deref().unwrap_or("");
        match headers.get(NAME_HEADER).map(header_text) {
            None => {
                return Err(McpError::HeaderMismatch(format!(
                    "missing required Mcp-Name header for {method}"
                )));
            }
            Some(Some(h)) if h == body => {}
            Some(h) => {
                return Err(McpError::HeaderMismatch(format!(
                    "Mcp-Name header value '{}' does not match body value '{body}'",
                    h.unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn event_streams_are_told_by_their_media_type_in_any_case() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            is_event_stream(&h)
        };
        assert!(with("text/event-stream"));
        assert!(with("Text/Event-Stream; charset=utf-8"));
        assert!(!with("application/json"));
        assert!(!with("text/event"));
        assert!(!is_event_stream(&HeaderMap::new()));
    }

    fn msg(s: &str) -> Message {
        Message::parse(Bytes::from(s.to_owned()), crate::mcp::ParseOptions::new(64)).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn header_rules() {
        let call =
            msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"échéance"}}"#);
        let b64 = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("échéance")
        );
        let cases: Vec<(Vec<(&'static str, &str)>, bool)> = vec![
            (vec![("mcp-method", "tools/call"), ("mcp-name", &b64)], true),
            (
                vec![("mcp-method", " tools/call "), ("mcp-name", &b64)],
                true,
            ),
            (vec![("mcp-method", "tools/call")], false),
            (
                vec![("mcp-method", "TOOLS/CALL"), ("mcp-name", &b64)],
                false,
            ),
            (vec![("mcp-name", &b64)], false),
            (
                vec![("mcp-method", "tools/call"), ("mcp-name", "other")],
                false,
            ),
        ];
        for (h, ok) in cases {
            assert_eq!(
                check_standard_headers(&headers(&h), &call).is_ok(),
                ok,
                "{h:?}"
            );
        }
        let list = msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(check_standard_headers(&headers(&[("mcp-method", "tools/list")]), &list).is_ok());
        let note = msg(r#"{"jsonrpc":"2.0","method":"notifications/cancelled"}"#);
        assert!(check_standard_headers(&HeaderMap::new(), &note).is_ok());
    }

    #[test]
    fn era_detection() {
        let modern = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let era = |h: &[(&'static str, &str)], m: Option<&Message>| Era::of(&headers(h), m).ok();
        assert_eq!(era(&[], Some(&modern)), Some(Era::Stateless));
        assert_eq!(
            era(&[("mcp-protocol-version", "2025-11-25")], None),
            Some(Era::Session)
        );
        assert_eq!(
            era(&[("mcp-protocol-version", "2026-07-28")], None),
            Some(Era::Stateless)
        );
        assert_eq!(era(&[], None), Some(Era::Session));
        let v = ("mcp-protocol-version", "2026-07-28");
        assert_eq!(era(&[v], Some(&modern)), Some(Era::Stateless));
        // A body version cannot talk a request out of its headers' era.
        let downgrade = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2025-06-18"}}}"#,
        );
        assert_eq!(era(&[v], Some(&downgrade)), None);
        assert_eq!(
            era(&[("mcp-protocol-version", "2025-11-25")], Some(&modern)),
            None
        );
    }
}
