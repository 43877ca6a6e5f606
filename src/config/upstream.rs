//! How one upstream server is reached, as a command line (`--server`,
//! `policy pin --server`) or a gateway file gives it, and the live upstream
//! built from it.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Uri};

use crate::gateway::Upstream;
use crate::gateway::http::HttpUpstream;
use crate::gateway::identity::UpstreamIdentity;
use crate::gateway::outbound::OutboundLimits;
use crate::gateway::stdio::{StdioCommand, StdioUpstream};
use crate::tls;

/// How one server is reached, as given on a command line or in a file.
#[derive(Debug, Clone)]
pub enum UpstreamSpec {
    Http {
        url: Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        tls: Option<Arc<rustls::ClientConfig>>,
        /// Send a gateway-minted identity token for this audience.
        identity: Option<UpstreamIdentity>,
    },
    Stdio(StdioCommand),
}

impl UpstreamSpec {
    /// Parses `http://…`/`https://…` or `stdio:COMMAND ARGS…` (arguments split
    /// on whitespace).
    pub fn parse(spec: &str) -> Result<UpstreamSpec, String> {
        if let Some(cmd) = spec.strip_prefix("stdio:") {
            let mut parts = cmd.split_whitespace().map(str::to_owned);
            let program = parts.next().ok_or("stdio: needs a command")?;
            return Ok(UpstreamSpec::Stdio(StdioCommand {
                program,
                args: parts.collect(),
                env: Vec::new(),
                cwd: None,
            }));
        }
        let url: Uri = spec.parse().map_err(|_| format!("'{spec}' is not a URL"))?;
        match url.scheme_str() {
            Some("http") | Some("https") if url.authority().is_some() => Ok(UpstreamSpec::Http {
                url,
                headers: Vec::new(),
                tls: None,
                identity: None,
            }),
            _ => Err(format!(
                "'{spec}' must be an http(s):// URL or stdio:COMMAND"
            )),
        }
    }

    /// Builds the upstream.
    pub fn build(
        &self,
        name: &str,
        limits: OutboundLimits,
    ) -> Result<Upstream, crate::tls::TlsError> {
        Ok(match self {
            UpstreamSpec::Http {
                url,
                headers,
                tls,
                identity,
            } => {
                let tls = match tls {
                    Some(t) => t.clone(),
                    None => tls::client_config(None, None, &[]).or_else(|_| {
                        // No system roots (minimal containers): plain-http
                        // upstreams still work; https ones fail to verify.
                        tls::client_config(Some(&[]), None, &[])
                    })?,
                };
                let mut up = HttpUpstream::new(name, url.clone(), headers.clone(), tls, limits);
                if let Some(id) = identity {
                    up.set_identity(id.clone());
                }
                Upstream::Http(Box::new(up))
            }
            UpstreamSpec::Stdio(cmd) => {
                Upstream::Stdio(Box::new(StdioUpstream::new(name, cmd.clone(), limits)))
            }
        })
    }
}
