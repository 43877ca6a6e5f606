//! The OTLP logs transports the exporter sends batches over: gRPC or
//! HTTP/protobuf, with the configured endpoint, headers and TLS roots.

use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;

use crate::telemetry::{Protocol, Target};

/// A connection to the collector.
pub(super) enum Transport {
    Grpc {
        client: LogsServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: crate::telemetry::http_client::OtlpHttpClient,
        url: http::Uri,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
}

impl Transport {
    pub fn new(t: &Target) -> Result<Transport> {
        Ok(match t.protocol {
            Protocol::Grpc => {
                let mut ep = tonic::transport::Endpoint::from_shared(t.endpoint.clone())
                    .context("OTLP logs endpoint")?
                    .timeout(t.timeout)
                    .connect_timeout(crate::limits::OTLP_CONNECT_TIMEOUT);
                if t.endpoint.starts_with("https://") {
                    ep = ep
                        .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                        .context("OTLP gRPC TLS")?;
                }
                Transport::Grpc {
                    client: LogsServiceClient::new(ep.connect_lazy()),
                    metadata: t.metadata()?,
                }
            }
            Protocol::HttpProtobuf => Transport::Http {
                client: crate::telemetry::http_client::OtlpHttpClient::new()?,
                url: t.endpoint.parse().context("OTLP logs endpoint")?,
                headers: t
                    .headers
                    .iter()
                    .map(|(k, v)| Ok((k.parse()?, v.parse()?)))
                    .collect::<Result<_>>()
                    .context("OTLP headers")?,
            },
        })
    }

    /// Sends one request; `Ok(rejected)` once the collector acknowledged it.
    pub async fn send(
        &mut self,
        req: ExportLogsServiceRequest,
        timeout: Duration,
    ) -> Result<i64, String> {
        let resp: ExportLogsServiceResponse = match self {
            Transport::Grpc { client, metadata } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = metadata.clone();
                client
                    .export(r)
                    .await
                    .map_err(|e| format!("gRPC {}: {}", e.code(), e.message()))?
                    .into_inner()
            }
            Transport::Http {
                client,
                url,
                headers,
            } => {
                let mut r = http::Request::new(Bytes::from(req.encode_to_vec()));
                *r.method_mut() = http::Method::POST;
                *r.uri_mut() = url.clone();
                let h = r.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                for (k, v) in headers.iter() {
                    h.insert(k.clone(), v.clone());
                }
                let resp = tokio::time::timeout(timeout, client.send(r))
                    .await
                    .map_err(|_| "timed out".to_owned())??;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status()));
                }
                ExportLogsServiceResponse::decode(resp.into_body()).unwrap_or_default()
            }
        };
        Ok(resp.partial_success.map_or(0, |p| p.rejected_log_records))
    }
}
