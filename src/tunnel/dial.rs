//! The gateway's way to the relay: TCP, an optional CONNECT proxy, TLS, and
//! the HTTP/1.1 upgrade.

use std::sync::Arc;

use base64::Engine;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{TUNNEL_HEADER, TunnelError, UPGRADE_PATH, UPGRADE_PROTOCOL};
use crate::session::owner::{INSTANCE_HEADER, Instance};

/// Longest proxy CONNECT response header accepted.
const MAX_PROXY_RESPONSE: usize = 8 * 1024;
/// Longest refusal body read from the relay, for the error message.
const MAX_REFUSAL_BODY: usize = 1024;

/// Where and how to reach one relay.
#[derive(Debug, Clone)]
pub struct RelayTarget {
    /// `host:port` of the relay's tunnel listener.
    pub addr: String,
    /// Name to verify the relay's certificate against (defaults to the host).
    pub server_name: String,
    /// The one address of `addr` to open TCP to (or to CONNECT to through
    /// the proxy), when DNS discovery resolved it; `None` resolves `addr`
    /// at each connect and takes the first address that answers.
    pub resolved: Option<std::net::SocketAddr>,
}

impl RelayTarget {
    /// A target from `host:port`, verifying the certificate against the host.
    pub fn new(addr: &str) -> RelayTarget {
        RelayTarget {
            addr: addr.to_owned(),
            server_name: host_of(addr).to_owned(),
            resolved: None,
        }
    }

    /// Where TCP goes: the resolved address, else `host:port`.
    fn tcp_addr(&self) -> String {
        self.resolved
            .map_or_else(|| self.addr.clone(), |a| a.to_string())
    }
}

fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// The proxy settings from `HTTPS_PROXY` / `NO_PROXY`.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// `host:port` of the proxy.
    pub proxy: Option<String>,
    /// `Proxy-Authorization` value from `user:pass@` in the proxy URL.
    pub authorization: Option<String>,
    /// `NO_PROXY` entries: hosts, domain suffixes, or `*`.
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// Reads `HTTPS_PROXY`/`https_proxy` and `NO_PROXY`/`no_proxy`.
    pub fn from_env() -> Result<ProxyConfig, TunnelError> {
        let get = |a: &str, b: &str| {
            std::env::var(a)
                .ok()
                .or_else(|| std::env::var(b).ok())
                .filter(|v| !v.trim().is_empty())
        };
        ProxyConfig::parse(
            get("HTTPS_PROXY", "https_proxy").as_deref(),
            get("NO_PROXY", "no_proxy").as_deref(),
        )
    }

    /// Parses a proxy URL (`http://[user:pass@]host:port`) and a `NO_PROXY` list.
    pub fn parse(proxy: Option<&str>, no_proxy: Option<&str>) -> Result<ProxyConfig, TunnelError> {
        let no_proxy = no_proxy
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let Some(url) = proxy else {
            return Ok(ProxyConfig {
                no_proxy,
                ..ProxyConfig::default()
            });
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| TunnelError::ProxyConfig(format!("'{url}' must start with http://")))?;
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hp)) => (Some(auth), hp),
            None => (None, rest),
        };
        if hostport.is_empty() || hostport.contains('/') {
            return Err(TunnelError::ProxyConfig(format!(
                "'{url}' is not http://host:port"
            )));
        }
        let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_owned()
        } else {
            format!("{hostport}:80")
        };
        Ok(ProxyConfig {
            proxy: Some(hostport),
            authorization: auth.map(|a| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(a)
                )
            }),
            no_proxy,
        })
    }

    /// The proxy to use for `host`, unless `NO_PROXY` exempts it.
    pub fn proxy_for(&self, host: &str) -> Option<&str> {
        let host = host.to_ascii_lowercase();
        let exempt = self
            .no_proxy
            .iter()
            .any(|n| n == "*" || host == *n || host.ends_with(&format!(".{n}")));
        if exempt { None } else { self.proxy.as_deref() }
    }
}

/// Opens TCP to the relay, through the proxy when one applies.
async fn connect_tcp(target: &RelayTarget, proxy: &ProxyConfig) -> Result<TcpStream, TunnelError> {
    let tcp_addr = target.tcp_addr();
    let Some(proxy_addr) = proxy.proxy_for(host_of(&target.addr)) else {
        let tcp = TcpStream::connect(&tcp_addr)
            .await
            .map_err(|source| TunnelError::Connect {
                addr: tcp_addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        return Ok(tcp);
    };
    let mut tcp = TcpStream::connect(proxy_addr)
        .await
        .map_err(|source| TunnelError::Connect {
            addr: proxy_addr.to_owned(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let mut req = format!("CONNECT {tcp_addr} HTTP/1.1\r\nHost: {tcp_addr}\r\n");
    if let Some(auth) = &proxy.authorization {
        req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    let io_err = |source| TunnelError::Connect {
        addr: proxy_addr.to_owned(),
        source,
    };
    tcp.write_all(req.as_bytes()).await.map_err(io_err)?;
    // Read byte by byte: nothing may be consumed past the header, since the
    // TLS handshake follows on the same stream.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_RESPONSE {
            return Err(TunnelError::Proxy {
                proxy: proxy_addr.to_owned(),
                target: target.addr.clone(),
                status: "response header too long".into(),
            });
        }
        let b = tcp.read_u8().await.map_err(io_err)?;
        head.push(b);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("").to_owned();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if !code.starts_with('2') {
        return Err(TunnelError::Proxy {
            proxy: proxy_addr.to_owned(),
            target: target.addr.clone(),
            status: status_line,
        });
    }
    Ok(tcp)
}

/// Everything a gateway needs to open one tunnel connection.
#[derive(Clone)]
pub struct DialConfig {
    pub tunnel_id: String,
    pub token: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub proxy: ProxyConfig,
    /// The gateway instance announced on each connection (the relays route
    /// a session's requests to the instance that owns it); set by
    /// [`crate::gateway::Gateway::connect`].
    pub instance: Option<Instance>,
}

/// Dials `target` and completes the upgrade; returns the byte stream that now
/// speaks HTTP/2 (the gateway is its server).
pub async fn dial(cfg: &DialConfig, target: &RelayTarget) -> Result<Upgraded, TunnelError> {
    dial_serving(cfg, target, crate::limits::MAX_STREAMS_PER_CONNECTION).await
}

/// [`dial`], announcing that the gateway serves `max_streams` concurrent
/// streams on the connection.
pub async fn dial_serving(
    cfg: &DialConfig,
    target: &RelayTarget,
    max_streams: u32,
) -> Result<Upgraded, TunnelError> {
    let tcp = connect_tcp(target, &cfg.proxy).await?;
    let name = ServerName::try_from(target.server_name.clone())
        .map_err(|_| TunnelError::ServerName(target.server_name.clone()))?;
    let tls = TlsConnector::from(cfg.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|source| TunnelError::Tls {
            addr: target.addr.clone(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| TunnelError::Handshake(e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the upgrade takes the connection over, or on error.
        let _ = conn.with_upgrades().await;
    });
    let mut req = Request::get(UPGRADE_PATH)
        .header(header::HOST, &target.addr)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .header(header::AUTHORIZATION, format!("Bearer {}", cfg.token))
        .header(TUNNEL_HEADER, &cfg.tunnel_id)
        .header(super::STREAMS_HEADER, max_streams)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| TunnelError::Handshake(e.to_string()))?;
    if let Some(i) = cfg.instance
        && let Ok(v) = http::HeaderValue::from_str(i.as_str())
    {
        req.headers_mut().insert(INSTANCE_HEADER, v);
    }
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| TunnelError::Handshake(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_REFUSAL_BODY)
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(TunnelError::Refused {
            status,
            message: body,
        });
    }
    hyper::upgrade::on(resp)
        .await
        .map_err(|e| TunnelError::Handshake(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_settings() {
        let p = ProxyConfig::parse(
            Some("http://user:pw@proxy.corp:3128/"),
            Some("localhost, .internal.corp,10.0.0.1"),
        )
        .unwrap();
        assert_eq!(p.proxy.as_deref(), Some("proxy.corp:3128"));
        assert_eq!(p.authorization.as_deref(), Some("Basic dXNlcjpwdw=="));
        assert_eq!(p.proxy_for("relay.example.com"), Some("proxy.corp:3128"));
        assert_eq!(p.proxy_for("localhost"), None);
        assert_eq!(p.proxy_for("a.internal.corp"), None);
        assert_eq!(p.proxy_for("10.0.0.1"), None);
        let star = ProxyConfig::parse(Some("http://p:1"), Some("*")).unwrap();
        assert_eq!(star.proxy_for("x"), None);
        let socks = ProxyConfig::parse(Some("socks5://p:1"), None);
        assert!(
            matches!(&socks, Err(TunnelError::ProxyConfig(m)) if m.contains("must start with http://")),
            "{socks:?}"
        );
        assert_eq!(
            ProxyConfig::parse(Some("http://p"), None)
                .unwrap()
                .proxy
                .as_deref(),
            Some("p:80")
        );
    }

    #[test]
    fn host_extraction() {
        assert_eq!(host_of("relay.example.com:443"), "relay.example.com");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(RelayTarget::new("127.0.0.1:9").server_name, "127.0.0.1");
    }
}
