//! One JSON-RPC message, parsed once, cheaply.
//!
//! The gateway parses every message it carries (the policy chain's hook point),
//! so this keeps the original bytes and extracts only the envelope: kind, id,
//! method, and the target name (tool, prompt or resource). Params and results
//! stay unparsed raw JSON. Object keys are checked in [`super::keys`].

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::context::Kind;

/// Why bytes are not an acceptable JSON-RPC message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("message is not valid JSON: {0}")]
    Json(String),
    #[error("message nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("JSON-RPC batches are not supported; send one message per request")]
    Batch,
    #[error("not a JSON-RPC 2.0 message: {0}")]
    Invalid(&'static str),
    /// `path` is the object's JSON Pointer; it and the key are cut to
    /// [`crate::limits::MAX_QUOTED_KEY_BYTES`]. No value is ever quoted.
    #[error("the {} repeats the key {key:?}", object_at(.path))]
    RepeatedKey { path: String, key: String },
    #[error(
        "the {} has the keys {first:?} and {second:?}, which case-insensitive JSON readers take for one key",
        object_at(.path)
    )]
    CaseCollidingKeys {
        path: String,
        first: String,
        second: String,
    },
}

fn object_at(path: &str) -> String {
    if path.is_empty() {
        "top-level object".to_owned()
    } else {
        format!("object at {path:?}")
    }
}

/// How a message is read: limits and the key rule that a server's policy
/// may relax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Deepest nesting of objects and arrays accepted.
    pub max_depth: usize,
    /// Accept objects with two keys that are one key under case folding
    /// (`amount` and `Amount`). Off by default: upstreams that bind keys
    /// case-insensitively would read such a message differently from a
    /// plugin. Repeated keys are refused either way.
    pub allow_case_colliding_keys: bool,
}

impl ParseOptions {
    /// The default reading: `max_depth`, case-colliding keys refused.
    pub const fn new(max_depth: usize) -> ParseOptions {
        ParseOptions {
            max_depth,
            allow_case_colliding_keys: false,
        }
    }
}

impl ParseError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Json(_) => -32700,
            _ => -32600,
        }
    }
}

/// A parsed JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Request, notification, response or error.
    pub kind: Kind,
    /// The id as its raw JSON text (`1`, `"abc"`), when present and not null.
    pub id: Option<String>,
    /// The method of a request or notification.
    pub method: Option<String>,
    /// `params.name` (tools/call, prompts/get) or `params.uri`
    /// (resources/read, resources/subscribe…), when present.
    pub name: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`: the
    /// per-request protocol version of the stateless era.
    pub meta_protocol_version: Option<String>,
    /// `params._meta.progressToken` as raw JSON text, when present.
    pub progress_token: Option<String>,
    /// The exact bytes the message was parsed from.
    pub raw: Bytes,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    /// `Some("null")` for an explicit null, `None` when absent.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as raw text instead of folding it into `None`.
fn present<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "_meta")]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "progressToken")]
    progress_token: Option<&'a RawValue>,
}

/// Checks that `bytes` (JSON text) nests no deeper than `max` levels.
///
/// A linear scan that understands strings and escapes; run before the parser
/// so a hostile message cannot drive it deep.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(ParseError::TooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

impl Message {
    /// Parses one JSON-RPC 2.0 message, refusing batches, deep nesting,
    /// repeated object keys and (unless `opts` allow them) keys that differ
    /// only in case.
    pub fn parse(raw: Bytes, opts: ParseOptions) -> Result<Message, ParseError> {
        check_depth(&raw, opts.max_depth)?;
        let first = raw.iter().find(|b| !b.is_ascii_whitespace()).copied();
        match first {
            Some(b'[') => {
                // Still reject invalid JSON as a parse error first.
                serde_json::from_slice::<serde::de::IgnoredAny>(&raw)
                    .map_err(|e| ParseError::Json(e.to_string()))?;
                return Err(ParseError::Batch);
            }
            Some(b'{') => {}
            Some(_) => {
                serde_json::from_slice::<serde::de::IgnoredAny>(&raw)
                    .map_err(|e| ParseError::Json(e.to_string()))?;
                return Err(ParseError::Invalid("a message must be a JSON object"));
            }
            None => return Err(ParseError::Json("empty body".into())),
        }
        super::keys::check_keys(&raw, !opts.allow_case_colliding_keys)?;
        let env: Envelope<'_> =
            serde_json::from_slice(&raw).map_err(|e| ParseError::Json(e.to_string()))?;
        if env.jsonrpc.as_deref() != Some("2.0") {
            return Err(ParseError::Invalid("\"jsonrpc\" must be \"2.0\""));
        }
        let id = match env.id {
            Some(raw_id) => {
                let text = raw_id.get();
                match text.as_bytes().first() {
                    Some(b'"') | Some(b'-') | Some(b'0'..=b'9') => Some(text.to_owned()),
                    Some(b'n') => None,
                    _ => return Err(ParseError::Invalid("\"id\" must be a string or a number")),
                }
            }
            None => None,
        };
        let kind = match (&env.method, env.result.is_some(), env.error.is_some()) {
            (Some(_), false, false) => {
                if env.id.is_some() {
                    if id.is_none() {
                        return Err(ParseError::Invalid("a request's \"id\" must not be null"));
                    }
                    Kind::Request
                } else {
                    Kind::Notification
                }
            }
            (None, true, false) if id.is_some() => Kind::Response,
            (None, false, true) if env.id.is_some() => Kind::Error,
            _ => {
                return Err(ParseError::Invalid(
                    "expected a request, notification, result or error",
                ));
            }
        };
        let mut msg = Message {
            kind,
            id,
            method: env.method.map(Cow::into_owned),
            name: None,
            meta_protocol_version: None,
            progress_token: None,
            raw: Bytes::new(),
        };
        if let Some(params) = env.params {
            let text = params.get();
            if text.starts_with('{') {
                let p: Params<'_> = serde_json::from_str(text)
                    .map_err(|_| ParseError::Invalid("\"params\" is malformed"))?;
                msg.name = p.name.or(p.uri).map(Cow::into_owned);
                if let Some(meta) = p.meta {
                    msg.meta_protocol_version = meta.protocol_version.map(Cow::into_owned);
                    msg.progress_token = meta.progress_token.map(|t| t.get().to_owned());
                }
            } else if !text.starts_with('[') {
                return Err(ParseError::Invalid("\"params\" must be an object or array"));
            }
        }
        msg.raw = raw;
        Ok(msg)
    }

    /// True for requests and notifications (messages with a method).
    pub fn has_method(&self) -> bool {
        matches!(self.kind, Kind::Request | Kind::Notification)
    }

    /// The method, or `""` for responses.
    pub fn method_str(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::from(s.to_owned()), ParseOptions::new(8))
    }

    #[test]
    fn classifies_messages() {
        let cases = [
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, Kind::Request),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                Kind::Notification,
            ),
            (r#"{"jsonrpc":"2.0","id":"a","result":{}}"#, Kind::Response),
            (
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#,
                Kind::Error,
            ),
        ];
        for (text, kind) in cases {
            assert_eq!(parse(text).map(|m| m.kind), Ok(kind), "{text}");
        }
    }

    #[test]
    fn extracts_target_and_meta() {
        let m = parse(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"refund","arguments":{"amount":5},
            "_meta":{"progressToken":"p1","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        assert_eq!(m.id.as_deref(), Some("7"));
        assert_eq!(m.name.as_deref(), Some("refund"));
        assert_eq!(m.progress_token.as_deref(), Some("\"p1\""));
        assert_eq!(m.meta_protocol_version.as_deref(), Some("2026-07-28"));
        let r = parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        )
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("file:///a"));
    }

    #[test]
    fn rejects_bad_messages() {
        let cases = [
            ("", -32700),
            ("{", -32700),
            ("[]", -32600),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, -32600),
            ("42", -32600),
            (r#"{"id":1,"method":"ping"}"#, -32600),
            (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, -32600),
            (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, -32600),
            (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, -32600),
            (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
            (r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#, -32600),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
                -32600,
            ),
            (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#, -32600),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"amount":1,"amount":900}}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"k":1,"k":2}]}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"amount":1,"Amount":900}}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{},"params":{"name":"a"}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[[[[[[[[[1]]]]]]]]]}"#,
                -32600,
            ),
        ];
        for (text, code) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.code(), code, "{text}: {err}");
        }
    }

    #[test]
    fn case_colliding_keys_pass_only_where_allowed() {
        let text = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund","arguments":{"amount":1,"Amount":900}}}"#;
        let err = parse(text).unwrap_err();
        assert_eq!(err.code(), -32600);
        assert_eq!(
            err.to_string(),
            r#"the object at "/params/arguments" has the keys "amount" and "Amount", which case-insensitive JSON readers take for one key"#
        );
        let relaxed = ParseOptions {
            allow_case_colliding_keys: true,
            ..ParseOptions::new(8)
        };
        let msg = Message::parse(Bytes::from(text), relaxed).unwrap();
        assert_eq!(msg.name.as_deref(), Some("refund"));
        // Relaxed is not lax: a key written twice is still refused.
        let twice = r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,"a":2}}"#;
        assert!(matches!(
            Message::parse(Bytes::from(twice), relaxed),
            Err(ParseError::RepeatedKey { .. })
        ));
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        assert!(check_depth(br#"{"a":"[[[[[[[[[[[[\"{{{{{{{{{"}"#, 2).is_ok());
        assert_eq!(
            check_depth(br#"{"a":{"b":{}}}"#, 2),
            Err(ParseError::TooDeep { max: 2 })
        );
    }
}
