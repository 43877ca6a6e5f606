//! Portcullis' MCP-facing errors and the single place that turns them —
//! policy denials included — into JSON-RPC error bodies ([`error_body`]) and
//! HTTP responses ([`error_response`]).
//!
//! Messages here are public: they reach the agent. They name what went wrong
//! without revealing internals (upstream addresses, process output, secrets,
//! a plugin's private reason for a denial).

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, ReadError, full};

/// An error answered to the agent.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("Parse error: {0}")]
    Parse(String),
    #[error("Invalid request: {0}")]
    InvalidRequest(String),
    #[error("Message too large: the limit is {limit} bytes")]
    TooLarge { limit: usize },
    #[error("Header mismatch: {0}")]
    HeaderMismatch(String),
    #[error("Unauthorized: {0}")]
    Unauthorized(&'static str),
    /// A bearer token refused by an OAuth tunnel: 401 (or 403 for a
    /// missing scope) with `challenge` as `WWW-Authenticate`, which points
    /// the client at the endpoint's RFC 9728 metadata.
    #[error("Unauthorized: {message}")]
    Challenge {
        status: StatusCode,
        message: String,
        challenge: String,
    },
    #[error("Forbidden: {0}")]
    Forbidden(String),
    #[error("Not found: {0}")]
    NotFound(String),
    #[error("Session not found")]
    SessionNotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Tunnel '{0}' is offline: no gateway is connected for it")]
    TunnelOffline(String),
    #[error("Upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream broke the protocol: a body that is not one JSON-RPC
    /// message, a reply too large, a media type MCP does not use.
    #[error("Invalid response from the upstream: {0}")]
    InvalidUpstreamResponse(String),
    /// 2026-07-28: the server does not speak the requested version.
    #[error("Unsupported protocol version: {requested}")]
    UnsupportedProtocolVersion {
        requested: String,
        supported: Vec<String>,
    },
    /// An error status from the upstream whose body was not a JSON-RPC
    /// message (the body stays at the gateway).
    #[error("The upstream answered HTTP {0}")]
    UpstreamStatus(u16),
    #[error("Upstream timed out after {0} ms")]
    UpstreamTimeout(u128),
    #[error("Too many sessions for server '{0}'")]
    TooManySessions(String),
    #[error("Audit trail unavailable: the call was not made")]
    AuditUnavailable,
    /// Strict mode, reply side: the request reached the upstream, but its
    /// answer could not be recorded, so it is withheld. An agent must not
    /// take this for a call that never happened (and retry a side effect).
    #[error(
        "Audit trail unavailable: the call was made, but its result could not be recorded and is withheld"
    )]
    ResultUnrecorded,
    /// Every stream of the tunnel is in use and the relay's queue for it is
    /// full or waited too long: try again after `retry_after_secs`.
    #[error("Tunnel '{tunnel}' is overloaded: retry after {retry_after_secs} s")]
    Overloaded {
        tunnel: String,
        retry_after_secs: u64,
    },
    /// The gateway did not answer a call forwarded down the tunnel within
    /// the relay's per-call deadline. It may have run.
    #[error("The gateway did not answer within {0} ms; the call may have been made")]
    GatewayTimeout(u128),
    /// The policy chain denied the message: the chain's public `code` and
    /// `message` reach the agent, its private reason only the audit. A
    /// denied `request` is answered like any JSON-RPC error (HTTP 200);
    /// another denied message gets 403.
    #[error("{message}")]
    Denied {
        code: i32,
        message: String,
        request: bool,
    },
}

impl From<ReadError> for McpError {
    /// A request body that could not be read whole.
    fn from(e: ReadError) -> McpError {
        match e {
            ReadError::TooLarge { limit } => McpError::TooLarge { limit },
            ReadError::Io(e) => McpError::InvalidRequest(format!("request body failed: {e}")),
        }
    }
}

impl McpError {
    /// HTTP status and JSON-RPC code.
    pub fn status_and_code(&self) -> (StatusCode, i64) {
        match self {
            McpError::Parse(_) => (StatusCode::BAD_REQUEST, -32700),
            McpError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, -32600),
            McpError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, -32600),
            McpError::HeaderMismatch(_) => (StatusCode::BAD_REQUEST, -32020),
            McpError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, -32001),
            McpError::Challenge { status, .. } => (*status, -32001),
            McpError::Forbidden(_) => (StatusCode::FORBIDDEN, -32000),
            McpError::NotFound(_) => (StatusCode::NOT_FOUND, -32601),
            McpError::SessionNotFound => (StatusCode::NOT_FOUND, -32001),
            McpError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, -32000),
            McpError::TunnelOffline(_) => (StatusCode::SERVICE_UNAVAILABLE, -32000),
            McpError::UpstreamUnavailable(_) => (StatusCode::BAD_GATEWAY, -32603),
            McpError::InvalidUpstreamResponse(_) => (StatusCode::BAD_GATEWAY, -32603),
            McpError::UnsupportedProtocolVersion { .. } => (StatusCode::BAD_REQUEST, -32022),
            McpError::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, -32603),
            McpError::UpstreamStatus(s) => (
                StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY),
                -32603,
            ),
            McpError::TooManySessions(_) => (StatusCode::SERVICE_UNAVAILABLE, -32000),
            McpError::AuditUnavailable | McpError::ResultUnrecorded => {
                (StatusCode::SERVICE_UNAVAILABLE, -32603)
            }
            McpError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, -32000),
            McpError::GatewayTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, -32603),
            McpError::Denied { code, request, .. } => (
                if *request {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                },
                i64::from(*code),
            ),
        }
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        self.status_and_code().1 as i32
    }

    /// The JSON-RPC error object `{"code":…,"message":…}` as JSON.
    pub fn to_json_error(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        match self {
            McpError::UnsupportedProtocolVersion {
                requested,
                supported,
            } => serde_json::json!({
                "code": code,
                "message": self.to_string(),
                "data": { "supported": supported, "requested": requested },
            }),
            _ => serde_json::json!({ "code": code, "message": self.to_string() }),
        }
    }
}

/// Builds the JSON-RPC error response body for `err` answering request `id`
/// (raw JSON text of the id, or `None` for `null`).
pub fn error_body(err: &McpError, id: Option<&str>) -> String {
    let id = id.unwrap_or("null");
    let error = err.to_json_error();
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
}

/// The HTTP response for `err`: its status and a JSON-RPC error body.
pub fn error_response(err: &McpError, id: Option<&str>) -> Response<Body> {
    let (status, _) = err.status_and_code();
    let mut resp = Response::new(full(error_body(err, id)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let McpError::Overloaded {
        retry_after_secs, ..
    } = err
    {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    if let McpError::Challenge { challenge, .. } = err
        && let Ok(v) = HeaderValue::from_str(challenge)
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if matches!(err, McpError::Unauthorized(_)) {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portcullis\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_jsonrpc() {
        let body = error_body(&McpError::TunnelOffline("t1".into()), Some("7"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32000);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("'t1' is offline")
        );
    }

    #[test]
    fn a_denial_reveals_only_its_public_code_and_message() {
        let denied = |request| McpError::Denied {
            code: -32003,
            message: "not allowed".into(),
            request,
        };
        let body = error_body(&denied(true), Some("\"a\""));
        assert_eq!(
            body,
            r#"{"jsonrpc":"2.0","id":"a","error":{"code":-32003,"message":"not allowed"}}"#
        );
        assert_eq!(error_response(&denied(true), None).status(), StatusCode::OK);
        assert_eq!(
            error_response(&denied(false), None).status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn a_body_that_could_not_be_read_is_the_matching_error() {
        let too_large = McpError::from(ReadError::TooLarge { limit: 9 });
        assert!(
            matches!(too_large, McpError::TooLarge { limit: 9 }),
            "{too_large:?}"
        );
        let cut = McpError::from(ReadError::Io("reset".into()));
        assert!(
            matches!(&cut, McpError::InvalidRequest(m) if m == "request body failed: reset"),
            "{cut:?}"
        );
    }
}
