//! `Mcp-Param-*` headers (2026-07-28): a tool's `inputSchema` may mark an
//! argument with `"x-mcp-header": "Name"`, and clients then mirror its value
//! into `Mcp-Param-Name`. An upstream (or a load balancer in front of it) may
//! act on the header without reading the body, so the header and the
//! argument must never say two things: the gateway checks each header
//! against the argument it mirrors before the chain, and when the chain
//! rewrites the arguments it writes the headers again from the new body.

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::era::{PARAM_HEADER_PREFIX, header_text};
use super::error::McpError;

/// Header name (lower case) → the argument it mirrors, from a tool's
/// definition (JSON text as the catalog keeps it).
pub fn mirrored(definition: &str) -> Vec<(String, String)> {
    let Ok(def) = serde_json::from_str::<Value>(definition) else {
        return Vec::new();
    };
    let Some(props) = def
        .pointer("/inputSchema/properties")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    props
        .iter()
        .filter_map(|(arg, schema)| {
            let name = schema.get("x-mcp-header")?.as_str()?;
            Some((
                format!("{PARAM_HEADER_PREFIX}{}", name.to_ascii_lowercase()),
                arg.clone(),
            ))
        })
        .collect()
}

/// True when the request carries any `Mcp-Param-*` header.
pub fn any(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with(PARAM_HEADER_PREFIX))
}

/// The header text an argument value is mirrored as; `None` for values that
/// are not mirrored (absent, null, objects, arrays).
fn header_form(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks every `Mcp-Param-*` header against `arguments`: each must name an
/// argument the tool mirrors and carry exactly its value.
pub fn check(
    headers: &HeaderMap,
    arguments: Option<&Value>,
    mapping: &[(String, String)],
) -> Result<(), McpError> {
    for (name, value) in headers {
        let name = name.as_str();
        if !name.starts_with(PARAM_HEADER_PREFIX) {
            continue;
        }
        let Some((_, arg)) = mapping.iter().find(|(h, _)| h == name) else {
            return Err(McpError::HeaderMismatch(format!(
                "{name} mirrors no argument of this tool"
            )));
        };
        let expected = arguments.and_then(|a| a.get(arg)).and_then(header_form);
        if header_text(value) != expected {
            return Err(McpError::HeaderMismatch(format!(
                "{name} does not match the argument '{arg}'"
            )));
        }
    }
    Ok(())
}

/// Writes the `Mcp-Param-*` headers again from (rewritten) `arguments`:
/// every old one goes, and each mirrored argument present gets its header.
pub fn recompute(headers: &mut HeaderMap, arguments: Option<&Value>, mapping: &[(String, String)]) {
    let old: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PARAM_HEADER_PREFIX))
        .cloned()
        .collect();
    for k in old {
        headers.remove(k);
    }
    for (header, arg) in mapping {
        let Some(text) = arguments.and_then(|a| a.get(arg)).and_then(header_form) else {
            continue;
        };
        let plain = text.bytes().all(|b| (0x20..0x7f).contains(&b)) && text.trim() == text;
        let value = if plain {
            HeaderValue::from_str(&text).ok()
        } else {
            let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            HeaderValue::from_str(&format!("=?base64?{b64}?=")).ok()
        };
        if let (Ok(name), Some(value)) = (HeaderName::from_bytes(header.as_bytes()), value) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def() -> String {
        json!({"name": "t", "inputSchema": {"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "note": {"type": "string"}}}})
        .to_string()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn headers_must_say_what_the_arguments_say() {
        let map = mirrored(&def());
        assert_eq!(map.len(), 2);
        let args = json!({"region": "eu-west", "limit": 5, "note": "x"});
        let ok = [
            headers(&[]),
            headers(&[("mcp-param-region", "eu-west")]),
            headers(&[("mcp-param-region", " eu-west "), ("mcp-param-limit", "5")]),
        ];
        for h in ok {
            assert!(check(&h, Some(&args), &map).is_ok(), "{h:?}");
        }
        let bad = [
            (
                headers(&[("mcp-param-region", "us-east")]),
                "mcp-param-region does not match the argument 'region'",
            ),
            (
                headers(&[("mcp-param-limit", "50")]),
                "mcp-param-limit does not match the argument 'limit'",
            ),
            (
                headers(&[("mcp-param-note", "x")]),
                "mcp-param-note mirrors no argument of this tool",
            ),
            (
                headers(&[("mcp-param-other", "1")]),
                "mcp-param-other mirrors no argument of this tool",
            ),
        ];
        let mismatch = |r: Result<(), McpError>, want: &str| {
            assert!(
                matches!(&r, Err(McpError::HeaderMismatch(m)) if m == want),
                "{want}: {r:?}"
            );
        };
        for (h, want) in bad {
            mismatch(check(&h, Some(&args), &map), want);
        }
        mismatch(
            check(&headers(&[("mcp-param-region", "eu")]), None, &map),
            "mcp-param-region does not match the argument 'region'",
        );
    }

    #[test]
    fn recomputed_headers_follow_the_rewritten_body() {
        let map = mirrored(&def());
        let mut h = headers(&[
            ("mcp-param-region", "4111 1111 1111 1111"),
            ("accept", "*/*"),
        ]);
        let rewritten = json!({"region": "[REDACTED:card] ünïcode", "limit": 3});
        recompute(&mut h, Some(&rewritten), &map);
        assert!(check(&h, Some(&rewritten), &map).is_ok());
        assert!(
            h["mcp-param-region"]
                .to_str()
                .unwrap()
                .starts_with("=?base64?")
        );
        assert_eq!(h["mcp-param-limit"], "3");
        assert_eq!(h["accept"], "*/*");
        recompute(&mut h, Some(&json!({})), &map);
        assert!(!any(&h));
    }
}
