//! Spans per the OpenTelemetry MCP semantic conventions, and W3C trace
//! context in and out.
//!
//! A span is named `{mcp.method.name} {target}` (target: the tool or prompt
//! name, when there is one) and carries `mcp.method.name`,
//! `mcp.protocol.version`, `mcp.session.id`, `jsonrpc.request.id`,
//! `gen_ai.tool.name`, `gen_ai.prompt.name`, `mcp.resource.uri`,
//! `gen_ai.operation.name`, `network.transport`, `network.protocol.name`,
//! `server.address`, and on failure `error.type` and
//! `rpc.response.status_code`; Portcullis' own decisions are `portcullis.*`.
//! Argument and result values never become attributes.
//!
//! Trace context comes from the agent's `traceparent`/`tracestate` headers,
//! or else from `params._meta` (the MCP convention for transports without
//! headers); each hop passes its own span's context on in the headers:
//! relay → tunnel → gateway → upstream.
//!
//! Spans are `tracing` spans at TRACE level with a `portcullis::…` target:
//! only the OpenTelemetry layer, installed when traces are exported, takes
//! them, so without an exporter they cost next to nothing.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct HeaderExtract<'a>(&'a HeaderMap);

impl Extractor for HeaderExtract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInject<'a>(&'a mut HeaderMap);

impl Injector for HeaderInject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct MetaExtract<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl Extractor for MetaExtract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

fn valid(cx: Context) -> Option<Context> {
    cx.span().span_context().is_valid().then_some(cx)
}

/// The remote parent named by `traceparent` (and `tracestate`) headers.
pub fn from_headers(headers: &HeaderMap) -> Option<Context> {
    headers.get("traceparent")?;
    valid(TraceContextPropagator::new().extract(&HeaderExtract(headers)))
}

/// The remote parent named in a JSON-RPC message's `params._meta`.
pub fn from_meta(message: &[u8]) -> Option<Context> {
    // Cheap pre-check: most messages carry no trace context.
    if !contains(message, b"traceparent") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Msg {
        params: Option<Params>,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(rename = "_meta")]
        meta: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let m: Msg = serde_json::from_slice(message).ok()?;
    let meta = m.params?.meta?;
    valid(TraceContextPropagator::new().extract(&MetaExtract(&meta)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Makes `span` a child of the agent's trace: headers first, then `_meta`.
pub fn adopt_parent(span: &Span, headers: &HeaderMap, message: Option<&[u8]>) {
    if span.is_disabled() {
        return;
    }
    let parent = from_headers(headers).or_else(|| message.and_then(from_meta));
    if let Some(cx) = parent {
        let _ = span.set_parent(cx);
    }
}

/// Writes `span`'s context as `traceparent`/`tracestate`, replacing what
/// was there. With tracing off this leaves the headers as they are, so an
/// agent's own trace context still reaches the upstream.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInject(headers));
}

/// The trace and span id of `span` (hex), for correlating audit records.
pub fn ids(span: &Span) -> Option<(String, String)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// What a span describes: one JSON-RPC message.
#[derive(Default)]
pub struct Call<'a> {
    pub method: Option<&'a str>,
    pub target: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub protocol_version: Option<&'a str>,
}

/// Names and attributes `span` for `call`.
pub fn describe(span: &Span, call: &Call<'_>) {
    if span.is_disabled() {
        return;
    }
    let method = call.method.unwrap_or("unknown");
    let named_target = match method {
        "tools/call" | "prompts/get" => call.target,
        _ => None,
    };
    let name = match named_target {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    };
    span.record("otel.name", name.as_str());
    span.set_attribute("mcp.method.name", method.to_owned());
    match (method, call.target) {
        ("tools/call", Some(t)) => {
            span.set_attribute("gen_ai.tool.name", t.to_owned());
            span.set_attribute("gen_ai.operation.name", "execute_tool");
        }
        ("prompts/get", Some(t)) => span.set_attribute("gen_ai.prompt.name", t.to_owned()),
        (m, Some(t)) if m.starts_with("resources/") => {
            span.set_attribute("mcp.resource.uri", t.to_owned())
        }
        _ => {}
    }
    if let Some(id) = call.request_id {
        span.set_attribute("jsonrpc.request.id", id.trim_matches('"').to_owned());
    }
    if let Some(s) = call.session_id {
        span.set_attribute("mcp.session.id", s.to_owned());
    }
    if let Some(v) = call.protocol_version {
        span.set_attribute("mcp.protocol.version", v.to_owned());
    }
}

/// Marks `span` failed with a JSON-RPC error `code` (or an HTTP-level
/// `error_type` such as `tunnel_offline`).
pub fn fail(span: &Span, code: Option<i32>, error_type: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    match code {
        Some(c) => {
            span.set_attribute("error.type", c.to_string());
            span.set_attribute("rpc.response.status_code", c.to_string());
        }
        None => span.set_attribute("error.type", error_type.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_from_headers_and_meta() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        assert!(from_headers(&h).is_none());
        h.insert("traceparent", tp.parse().unwrap());
        let cx = from_headers(&h).unwrap();
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let msg = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{{"traceparent":"{tp}"}}}}}}"#
        );
        let cx = from_meta(msg.as_bytes()).unwrap();
        assert_eq!(
            cx.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
        assert!(from_meta(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_none());
        let mut bad = HeaderMap::new();
        bad.insert("traceparent", "00-zz-00-01".parse().unwrap());
        assert!(from_headers(&bad).is_none());
    }
}

/// A span for one MCP exchange at `$target` (`portcullis::relay`,
/// `portcullis::gateway`…), of OpenTelemetry kind `$kind` (`server`,
/// `client`); [`describe`] names it.
#[macro_export]
macro_rules! mcp_span {
    ($target:literal, $kind:literal) => {
        tracing::trace_span!(
            target: $target,
            "mcp",
            otel.name = tracing::field::Empty,
            otel.kind = $kind,
            otel.status_code = tracing::field::Empty,
        )
    };
}

/// Method, target and id of a JSON-RPC message, read without building the
/// whole value (for naming the relay's span; the gateway parses fully).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Peek {
    pub method: Option<String>,
    pub target: Option<String>,
    pub id: Option<String>,
}

/// Reads [`Peek`] from a message body; empty when it is not one message.
pub fn peek(body: &[u8]) -> Peek {
    #[derive(serde::Deserialize)]
    struct Msg {
        method: Option<String>,
        id: Option<Box<serde_json::value::RawValue>>,
        params: Option<Params>,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        name: Option<serde_json::Value>,
        uri: Option<serde_json::Value>,
    }
    let Ok(m) = serde_json::from_slice::<Msg>(body) else {
        return Peek::default();
    };
    let target = m
        .params
        .and_then(|p| p.name.or(p.uri).and_then(|v| v.as_str().map(str::to_owned)));
    Peek {
        method: m.method,
        target,
        id: m.id.map(|r| r.get().to_owned()),
    }
}
