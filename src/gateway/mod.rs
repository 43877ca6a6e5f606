//! The gateway: inside the private network. It serves the HTTP/2 streams the
//! relay sends down the tunnel, checks every message in both directions, and
//! reaches only the upstreams its configuration names.
//!
//! - [`outbound`]: checks on everything an upstream sends back.
//! - [`http`]: Streamable HTTP upstreams.
//! - [`stdio`]: stdio upstreams, one process per session.

pub mod http;
pub mod outbound;
pub mod stdio;

use std::collections::HashMap;
use std::sync::Arc;

use ::http::{HeaderMap, Method, Request, Response, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, ReadError, read_limited};
use crate::mcp::era::SESSION_HEADER;
use crate::mcp::{Era, McpError, Message, check_standard_headers, error_response};
use crate::principal::{PRINCIPAL_HEADER, Principal};
use crate::tunnel::connector::{self, PoolConfig, PoolStatus};
use crate::tunnel::dial::DialConfig;
use outbound::OutboundLimits;

/// An upstream MCP server.
pub enum Upstream {
    Http(Box<http::HttpUpstream>),
    Stdio(stdio::StdioUpstream),
}

/// The gateway's upstreams and limits.
pub struct Gateway {
    upstreams: HashMap<String, Upstream>,
    limits: OutboundLimits,
}

/// What the gateway knows about one call (the policy chain's context).
#[derive(Debug, Clone)]
pub struct CallContext {
    pub server: String,
    pub principal: Principal,
    pub era: Era,
}

fn server_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (server, tail) = rest.split_once('/')?;
    (tail == "mcp" && !server.is_empty()).then_some(server)
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"))
}

impl Gateway {
    /// A gateway serving `upstreams`.
    pub fn new(upstreams: HashMap<String, Upstream>, limits: OutboundLimits) -> Arc<Gateway> {
        Arc::new(Gateway { upstreams, limits })
    }

    /// Names of the configured servers.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }

    /// Opens the tunnel connections and serves them until `shutdown`.
    pub fn connect(
        self: &Arc<Self>,
        dial: DialConfig,
        pool: PoolConfig,
        shutdown: CancellationToken,
    ) -> (PoolStatus, tokio::task::JoinHandle<()>) {
        let gw = self.clone();
        connector::start(
            dial,
            pool,
            move |req| {
                let gw = gw.clone();
                async move { Ok(gw.handle(req).await) }
            },
            shutdown,
        )
    }

    /// Handles one stream from the relay; every error becomes a response.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.dispatch(req).await {
            Ok(r) => r,
            Err((e, id)) => {
                tracing::info!(error = %e, "call refused at the gateway");
                error_response(&e, id.as_deref())
            }
        }
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, (McpError, Option<String>)> {
        let (parts, body) = req.into_parts();
        let server = server_of(parts.uri.path())
            .ok_or_else(|| (McpError::NotFound("unknown path".into()), None))?
            .to_owned();
        let principal = parts
            .headers
            .get(PRINCIPAL_HEADER)
            .and_then(|v| Principal::from_header(v.as_bytes()))
            .ok_or((McpError::Unauthorized("no verified principal"), None))?;
        let upstream = self.upstreams.get(&server).ok_or_else(|| {
            (
                McpError::NotFound(format!("no server named '{server}' on this tunnel")),
                None,
            )
        })?;
        let session = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match parts.method {
            Method::POST => {
                let bytes = read_limited(body, self.limits.max_message_bytes)
                    .await
                    .map_err(|e| match e {
                        ReadError::TooLarge { limit } => (McpError::TooLarge { limit }, None),
                        ReadError::Io(e) => (
                            McpError::InvalidRequest(format!("request body failed: {e}")),
                            None,
                        ),
                    })?;
                let msg = Message::parse(bytes, self.limits.max_depth).map_err(|e| {
                    let err = if e.code() == -32700 {
                        McpError::Parse(e.to_string())
                    } else {
                        McpError::InvalidRequest(e.to_string())
                    };
                    (err, None)
                })?;
                let id = msg.id.clone();
                let ctx = CallContext {
                    server,
                    principal,
                    era: Era::of(&parts.headers, Some(&msg)),
                };
                if ctx.era == Era::Stateless {
                    check_standard_headers(&parts.headers, &msg).map_err(|e| (e, id.clone()))?;
                }
                tracing::debug!(
                    server = ctx.server,
                    subject = ctx.principal.subject,
                    method = msg.method_str(),
                    "forwarding message"
                );
                match upstream {
                    Upstream::Http(u) => u
                        .call(Method::POST, &parts.headers, Some(msg.raw.clone()))
                        .await
                        .map_err(|e| (e, id)),
                    Upstream::Stdio(u) => {
                        if ctx.era == Era::Stateless {
                            return Err((
                                McpError::InvalidRequest(
                                    "this server is a stdio server, which speaks only the session-based protocol (2025-11-25 and earlier)".into(),
                                ),
                                id,
                            ));
                        }
                        u.post(session.as_deref(), msg, accepts_sse(&parts.headers))
                            .await
                            .map_err(|e| (e, id))
                    }
                }
            }
            Method::GET => match upstream {
                Upstream::Http(u) => u
                    .call(Method::GET, &parts.headers, None)
                    .await
                    .map_err(|e| (e, None)),
                Upstream::Stdio(u) => u.get(session.as_deref()).map_err(|e| (e, None)),
            },
            Method::DELETE => match upstream {
                Upstream::Http(u) => u
                    .call(Method::DELETE, &parts.headers, None)
                    .await
                    .map_err(|e| (e, None)),
                Upstream::Stdio(u) => u.delete(session.as_deref()).map_err(|e| (e, None)),
            },
            _ => Err((McpError::MethodNotAllowed, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(server_of("/crm/mcp"), Some("crm"));
        assert_eq!(server_of("/crm/other"), None);
        assert_eq!(server_of("//mcp"), None);
    }
}
