//! Where each signal goes, from the OpenTelemetry exporter variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_SDK_DISABLED=true` | export nothing |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL for every signal (HTTP adds `/v1/traces`, `/v1/metrics`, `/v1/logs`) |
//! | `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT` | one signal's URL, used as is |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `…_{SIGNAL}_PROTOCOL` | `grpc` or `http/protobuf` (default) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `…_{SIGNAL}_HEADERS` | `k=v,k2=v2` (URL-encoded values) |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `…_{SIGNAL}_TIMEOUT` | milliseconds, default 10000 |
//! | `OTEL_{TRACES,METRICS,LOGS}_EXPORTER=none` | turn one signal off |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource |
//!
//! Unlike the specification's default of `localhost:4318`, a signal with no
//! endpoint configured is not exported at all: a gateway should not log
//! connection errors to a collector nobody runs. The audit trail is in the
//! spool either way.

use std::time::Duration;

use anyhow::{Result, bail};

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// One signal's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub protocol: Protocol,
    /// gRPC: the collector's URL; HTTP: the full URL to POST to.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Target {
    /// Headers as gRPC metadata.
    pub fn metadata(&self) -> Result<tonic::metadata::MetadataMap> {
        let mut m = tonic::metadata::MetadataMap::new();
        for (k, v) in &self.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                .map_err(|_| anyhow::anyhow!("OTLP header name '{k}' is not valid"))?;
            let val = v
                .parse()
                .map_err(|_| anyhow::anyhow!("OTLP header '{k}' has an invalid value"))?;
            m.insert(key, val);
        }
        Ok(m)
    }
}

/// Every signal's destination (`None` = not exported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtelSettings {
    pub traces: Option<Target>,
    pub metrics: Option<Target>,
    /// Where the audit exporter sends decision records as log records.
    pub logs: Option<Target>,
    /// True when the environment names the service itself.
    pub service_name_set: bool,
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%'
            && let Some(byte) = tail
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            rest = tail.get(2..).unwrap_or_default();
            continue;
        }
        out.push(b);
        rest = tail;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_headers(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("OTLP headers: '{pair}' is not key=value");
        };
        out.push((k.trim().to_ascii_lowercase(), percent_decode(v.trim())));
    }
    Ok(out)
}

impl OtelSettings {
    /// From the process environment.
    pub fn from_env() -> Result<OtelSettings> {
        OtelSettings::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<OtelSettings> {
        let service_name_set = get("OTEL_SERVICE_NAME").is_some()
            || get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(OtelSettings {
                service_name_set,
                ..OtelSettings::default()
            });
        }
        let target = |signal: &str, path: &str| -> Result<Option<Target>> {
            let upper = signal.to_ascii_uppercase();
            if let Some(exp) = get(&format!("OTEL_{upper}_EXPORTER")) {
                match exp.as_str() {
                    "none" => return Ok(None),
                    "otlp" => {}
                    other => {
                        bail!("OTEL_{upper}_EXPORTER={other}: only otlp and none are supported")
                    }
                }
            }
            let protocol = match get(&format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"))
                .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .as_deref()
            {
                None | Some("http/protobuf") => Protocol::HttpProtobuf,
                Some("grpc") => Protocol::Grpc,
                Some(other) => {
                    bail!("OTLP protocol '{other}' is not supported: use grpc or http/protobuf")
                }
            };
            let endpoint = match get(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")) {
                Some(e) => e,
                None => match get("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(base) => match protocol {
                        Protocol::Grpc => base,
                        Protocol::HttpProtobuf => {
                            format!("{}/{path}", base.trim_end_matches('/'))
                        }
                    },
                    None => return Ok(None),
                },
            };
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("OTLP endpoint '{endpoint}' must start with http:// or https://");
            }
            let mut headers = match get("OTEL_EXPORTER_OTLP_HEADERS") {
                Some(h) => parse_headers(&h)?,
                None => Vec::new(),
            };
            if let Some(h) = get(&format!("OTEL_EXPORTER_OTLP_{upper}_HEADERS")) {
                for (k, v) in parse_headers(&h)? {
                    headers.retain(|(k2, _)| *k2 != k);
                    headers.push((k, v));
                }
            }
            let timeout = match get(&format!("OTEL_EXPORTER_OTLP_{upper}_TIMEOUT"))
                .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
            {
                Some(ms) => Duration::from_millis(ms.trim().parse().map_err(|_| {
                    anyhow::anyhow!("OTLP timeout '{ms}' is not a number of milliseconds")
                })?),
                None => crate::limits::OTLP_DEFAULT_TIMEOUT,
            };
            Ok(Some(Target {
                protocol,
                endpoint,
                headers,
                timeout,
            }))
        };
        Ok(OtelSettings {
            traces: target("traces", "v1/traces")?,
            metrics: target("metrics", "v1/metrics")?,
            logs: target("logs", "v1/logs")?,
            service_name_set,
        })
    }

    /// True when any signal is exported.
    pub fn any(&self) -> bool {
        self.traces.is_some() || self.metrics.is_some() || self.logs.is_some()
    }

    /// A short description for the log (no header values: they may be
    /// credentials).
    pub fn describe(&self, t: Option<&Target>) -> String {
        match t {
            None => "off".into(),
            Some(t) => format!(
                "{} {}",
                match t.protocol {
                    Protocol::Grpc => "grpc",
                    Protocol::HttpProtobuf => "http/protobuf",
                },
                t.endpoint
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<OtelSettings> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtelSettings::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn nothing_configured_exports_nothing() {
        let s = from(&[]).unwrap();
        assert!(!s.any());
    }

    #[test]
    fn base_endpoint_gets_signal_paths_for_http() {
        let s = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap();
        assert_eq!(s.traces.unwrap().endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.logs.unwrap().endpoint, "http://c:4318/v1/logs");
    }

    #[test]
    fn grpc_uses_the_base_as_is_and_signal_overrides_win() {
        let s = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:9/x"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x=1"),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x=2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap();
        let t = s.traces.unwrap();
        assert_eq!(
            (t.protocol, t.endpoint.as_str()),
            (Protocol::Grpc, "http://c:4317")
        );
        assert_eq!(t.timeout, Duration::from_millis(2500));
        assert!(s.metrics.is_none());
        let l = s.logs.unwrap();
        assert_eq!(
            (l.protocol, l.endpoint.as_str()),
            (Protocol::HttpProtobuf, "http://l:9/x")
        );
        assert_eq!(
            l.headers,
            vec![("api-key".into(), "a b".into()), ("x".into(), "2".into())]
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("http/json"), "{e}");
        let e = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")]).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        assert!(
            !from(&[
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")
            ])
            .unwrap()
            .any()
        );
    }
}
