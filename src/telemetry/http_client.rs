//! The HTTP client for OTLP/HTTP: hyper with rustls, like the rest of
//! Portcullis, rather than a second HTTP and TLS stack.
//!
//! The SDK's batch processors export from their own threads with a simple
//! executor, so every request runs on the tokio runtime the client was made
//! in and is awaited through its join handle. HTTPS endpoints are verified
//! against `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM file) when set, otherwise
//! the system roots.

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest OTLP response body read (collectors answer with a few bytes).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A cloneable OTLP/HTTP client bound to the current tokio runtime.
#[derive(Clone)]
pub struct OtlpHttpClient {
    client: Inner,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpHttpClient")
    }
}

impl OtlpHttpClient {
    /// A client on the current runtime (call inside it).
    pub fn new() -> Result<OtlpHttpClient> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the OTLP HTTP client must be created inside the tokio runtime")?;
        let cas = match std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE") {
            Some(path) => Some(
                crate::tls::load_certs(std::path::Path::new(&path))
                    .context("OTEL_EXPORTER_OTLP_CERTIFICATE")?,
            ),
            None => None,
        };
        // Without system roots, plain-HTTP collectors still work; an HTTPS
        // one then fails each export with a certificate error.
        let tls = crate::tls::client_config(cas.as_deref(), None, &[])
            .or_else(|_| crate::tls::client_config(Some(&[]), None, &[]))
            .context("TLS for OTLP")?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(crate::limits::OTLP_CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(OtlpHttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
        })
    }

    /// Sends one request and reads the (bounded) response.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, String> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let resp = client
                .request(request.map(Full::new))
                .await
                .map_err(|e| format!("OTLP request failed: {e}"))?;
            let (parts, body) = resp.into_parts();
            let body = crate::body::read_limited(body, MAX_RESPONSE_BYTES)
                .await
                .map_err(|e| format!("OTLP response failed: {e}"))?;
            Ok(Response::from_parts(parts, body))
        });
        task.await.map_err(|e| format!("OTLP request task: {e}"))?
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        self.send(request).await.map_err(Into::into)
    }
}
