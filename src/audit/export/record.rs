//! One spool line as an OTLP log record: the hashed JSON as its body, the
//! chain's fields and, for decisions, the MCP and `portcullis.*` attributes
//! (never payload values), and the deciding span's trace ids.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::audit::line::SpoolLine;

pub(super) fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(super) fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

/// The OTLP log record for one spool line.
pub fn log_record(stream: &str, line: &SpoolLine, now_ns: u64) -> LogRecord {
    let b = &line.body;
    let text = |k: &str| b.get(k).and_then(|v| v.as_str());
    let mut attrs = vec![
        kv("portcullis.audit.stream", s(stream)),
        kv("portcullis.audit.seq", Value::IntValue(line.seq as i64)),
        kv("portcullis.audit.hash", s(line.hash.clone())),
        kv("portcullis.audit.prev", s(line.prev.clone())),
        kv("portcullis.audit.type", s(line.kind.clone())),
    ];
    let (event, severity) = match line.kind.as_str() {
        "decision" => {
            let outcome = text("outcome").unwrap_or("");
            let sev = match outcome {
                "denied" | "dropped" => SeverityNumber::Warn,
                _ => SeverityNumber::Info,
            };
            ("portcullis.decision", sev)
        }
        "gap" => ("portcullis.audit.gap", SeverityNumber::Error),
        "start" => ("portcullis.audit.start", SeverityNumber::Info),
        _ => ("portcullis.audit", SeverityNumber::Info),
    };
    if line.kind == "decision" {
        let method = text("method");
        for (attr, key) in [
            ("mcp.method.name", "method"),
            ("jsonrpc.request.id", "request_id"),
            ("mcp.session.id", "session_id"),
            ("mcp.protocol.version", "protocol_version"),
            ("portcullis.tunnel", "tunnel"),
            ("portcullis.server", "server"),
            ("portcullis.direction", "direction"),
            ("portcullis.kind", "kind"),
            ("portcullis.outcome", "outcome"),
            ("portcullis.principal.subject", "subject"),
            ("portcullis.principal.issuer", "issuer"),
            ("portcullis.principal.token_id", "token_id"),
            ("portcullis.policy.digest", "policy_digest"),
        ] {
            if let Some(v) = text(key) {
                attrs.push(kv(attr, s(v)));
            }
        }
        if let Some(t) = text("target") {
            let attr = match method {
                Some("tools/call") => "gen_ai.tool.name",
                Some("prompts/get") => "gen_ai.prompt.name",
                Some(m) if m.starts_with("resources/") => "mcp.resource.uri",
                _ => "portcullis.target",
            };
            attrs.push(kv(attr, s(t)));
        }
    }
    let time_ns = b
        .get("time_unix_ms")
        .and_then(|v| v.as_u64())
        .map_or(now_ns, |ms| ms.saturating_mul(1_000_000));
    let hex_bytes = |k: &str| {
        text(k)
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_default()
    };
    LogRecord {
        time_unix_nano: time_ns,
        observed_time_unix_nano: now_ns,
        severity_number: severity as i32,
        severity_text: match severity {
            SeverityNumber::Warn => "WARN",
            SeverityNumber::Error => "ERROR",
            _ => "INFO",
        }
        .into(),
        body: Some(AnyValue {
            value: Some(s(line.json.clone())),
        }),
        attributes: attrs,
        trace_id: hex_bytes("trace_id"),
        span_id: hex_bytes("span_id"),
        event_name: event.into(),
        ..Default::default()
    }
}

/// The proto resource for an SDK resource.
pub fn proto_resource(r: &opentelemetry_sdk::Resource) -> Resource {
    Resource {
        attributes: r
            .iter()
            .map(|(k, v)| kv(k.as_str(), s(v.to_string())))
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_lines_become_log_records_without_payload() {
        let json = r#"{"seq":7,"type":"decision","prev":"ab","body":{"time_unix_ms":1700000000000,"tunnel":"t","server":"crm","subject":"alice","groups":[],"direction":"to-server","kind":"request","method":"tools/call","target":"lookup","request_id":"3","outcome":"denied","steps":[],"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}}"#;
        let line = crate::audit::line::parse(&format!("{json}\tff\n")).unwrap();
        let r = log_record("s1", &line, 5);
        assert_eq!(r.event_name, "portcullis.decision");
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(r.trace_id.len(), 16);
        assert_eq!(r.span_id.len(), 8);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(get("gen_ai.tool.name"), Some(s("lookup")));
        assert_eq!(get("portcullis.audit.seq"), Some(Value::IntValue(7)));
        assert_eq!(get("mcp.method.name"), Some(s("tools/call")));
        assert_eq!(
            r.body.unwrap().value,
            Some(s(json)),
            "the body is the hashed JSON, byte for byte"
        );
    }
}
