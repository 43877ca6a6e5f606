//! OpenTelemetry: traces, metrics and the OTLP settings the audit exporter
//! uses, configured from the standard `OTEL_*` environment variables.
//!
//! - [`settings`]: which signals go where (`OTEL_EXPORTER_OTLP_*`), per the
//!   OpenTelemetry specification's exporter variables.
//! - [`span`]: spans named and attributed per the MCP semantic conventions,
//!   and W3C trace context taken from the agent and passed on.
//! - [`metrics`]: `mcp.server.operation.duration`, decision counters, tunnel
//!   health; exported over OTLP and served as Prometheus text.
//! - [`http_client`]: the HTTP client OTLP/HTTP uses (hyper + rustls, the
//!   same TLS stack as the rest of Portcullis).
//!
//! Audit records are not sent through the SDK's in-memory log pipeline:
//! they go through the durable spool and its exporter
//! ([`crate::audit::export`]), which is what makes them lossless.
//!
//! Nothing is exported unless an OTLP endpoint is configured; the Prometheus
//! registry behind `/metrics` always works.

pub mod http_client;
pub mod metrics;
pub mod settings;
pub mod span;

use anyhow::{Context as _, Result};
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use settings::{OtelSettings, Protocol, Target};

/// Target prefix of the spans exported as OpenTelemetry spans.
pub const SPAN_TARGET_PREFIX: &str = "portcullis";

/// Telemetry for one process; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: SdkMeterProvider,
    /// The registry `/metrics` serves.
    pub registry: prometheus::Registry,
    /// Settings, for the audit exporter (its `logs` target).
    pub settings: OtelSettings,
    /// The resource (service name and attributes) every signal carries.
    pub resource: Resource,
}

fn resource(settings: &OtelSettings, default_service: &str) -> Resource {
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the
    // builder's detectors; a default name only when neither sets one.
    let builder = Resource::builder();
    if settings.service_name_set {
        builder.build()
    } else {
        builder
            .with_service_name(default_service.to_owned())
            .build()
    }
}

/// Installs logging (to stderr, filtered by `RUST_LOG`, default `info`),
/// and, when configured, the OpenTelemetry tracer and meter providers.
/// Call once, inside the tokio runtime (the gRPC exporters need it).
pub fn init(default_service: &str) -> Result<Telemetry> {
    let settings = OtelSettings::from_env()?;
    let resource = resource(&settings, default_service);
    global::set_text_map_propagator(TraceContextPropagator::new());

    let tracer_provider = match &settings.traces {
        Some(t) => Some(tracer_provider(t, resource.clone())?),
        None => None,
    };

    let registry = prometheus::Registry::new();
    let prom = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .context("prometheus exporter")?;
    let mut meters = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prom);
    if let Some(t) = &settings.metrics {
        meters = meters.with_periodic_exporter(metric_exporter(t)?);
    }
    let meter_provider = meters.build();
    global::set_meter_provider(meter_provider.clone());

    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    let otel = tracer_provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("portcullis"))
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_span() && m.target().starts_with(SPAN_TARGET_PREFIX)
            }))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .context("logging was already set up")?;
    if let Some(p) = &tracer_provider {
        global::set_tracer_provider(p.clone());
    }
    if settings.any() {
        tracing::info!(
            traces = settings.describe(settings.traces.as_ref()),
            metrics = settings.describe(settings.metrics.as_ref()),
            audit_logs = settings.describe(settings.logs.as_ref()),
            "OpenTelemetry export configured"
        );
    }
    Ok(Telemetry {
        tracer_provider,
        meter_provider,
        registry,
        settings,
        resource,
    })
}

/// Only the stderr log, for one-shot commands.
pub fn init_logging_only() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// An OTLP exporter of `$kind` (`SpanExporter`, `MetricExporter`) for
/// target `$t`: the two transports take the same settings in different
/// builder calls.
macro_rules! otlp_exporter {
    ($kind:ident, $t:expr) => {{
        let t: &Target = $t;
        match t.protocol {
            Protocol::Grpc => opentelemetry_otlp::$kind::builder()
                .with_tonic()
                .with_endpoint(t.endpoint.clone())
                .with_timeout(t.timeout)
                .with_metadata(t.metadata()?)
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::$kind::builder()
                .with_http()
                .with_http_client(http_client::OtlpHttpClient::new()?)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(t.endpoint.clone())
                .with_timeout(t.timeout)
                .with_headers(t.headers.iter().cloned().collect())
                .build(),
        }
    }};
}

fn tracer_provider(t: &Target, resource: Resource) -> Result<SdkTracerProvider> {
    let exporter = otlp_exporter!(SpanExporter, t).context("OTLP span exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

fn metric_exporter(t: &Target) -> Result<opentelemetry_otlp::MetricExporter> {
    otlp_exporter!(MetricExporter, t).context("OTLP metric exporter")
}

impl Telemetry {
    /// Flushes and stops the exporters (blocking; call at exit).
    pub fn shutdown(&self) {
        if let Some(p) = &self.tracer_provider {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
        let _ = self.meter_provider.force_flush();
        let _ = self.meter_provider.shutdown();
    }
}

/// Prometheus text exposition of `registry`.
pub fn prometheus_text(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder as _;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
