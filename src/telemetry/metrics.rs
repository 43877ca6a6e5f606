//! Metrics, through the global OpenTelemetry meter (OTLP when configured,
//! always Prometheus on the admin listener).
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `mcp.server.operation.duration` (s) | histogram | `mcp.method.name`, `gen_ai.tool.name`, `error.type`, `portcullis.component`, `portcullis.server` |
//! | `portcullis.decisions` | counter | `portcullis.outcome`, `portcullis.direction`, `portcullis.server` |
//! | `portcullis.denials` | counter | `portcullis.server`, `portcullis.plugin` |
//! | `portcullis.redactions` | counter | `portcullis.plugin`, `portcullis.detector` — counts a rewriting plugin reported |
//! | `portcullis.plugin.duration` (s) | histogram | `portcullis.plugin`, `portcullis.decision` |
//! | `portcullis.tunnel.connections` | up-down counter | `portcullis.tunnel`, `portcullis.component` |
//! | `portcullis.tunnel.reconnects` | counter | `portcullis.tunnel` |
//! | `portcullis.audit.exported` / `portcullis.audit.export.failures` | counter | — |
//! | `portcullis.audit.lost` | counter | — (best-effort records that could not be written) |

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};

use crate::mcp::{Direction, Outcome, StepDecision};

/// Bucket bounds in seconds: from 50 µs (a gateway hop) to 5 minutes (a
/// long tool call), covering the semantic conventions' recommended bounds.
const DURATION_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
    2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Every instrument.
pub struct Metrics {
    pub operation_duration: Histogram<f64>,
    pub decisions: Counter<u64>,
    pub denials: Counter<u64>,
    pub redactions: Counter<u64>,
    pub plugin_duration: Histogram<f64>,
    pub tunnel_connections: UpDownCounter<i64>,
    pub tunnel_reconnects: Counter<u64>,
    pub audit_exported: Counter<u64>,
    pub audit_export_failures: Counter<u64>,
    pub audit_lost: Counter<u64>,
}

/// The instruments (made on first use from the global meter provider, so
/// set that up first).
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = global::meter("portcullis");
        Metrics {
            operation_duration: m
                .f64_histogram("mcp.server.operation.duration")
                .with_unit("s")
                .with_description("Duration of MCP requests as seen by Portcullis")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            decisions: m
                .u64_counter("portcullis.decisions")
                .with_description("Messages decided by the policy chain, by outcome")
                .build(),
            denials: m
                .u64_counter("portcullis.denials")
                .with_description("Messages denied, by the plugin that denied them")
                .build(),
            redactions: m
                .u64_counter("portcullis.redactions")
                .with_description("Values changed by rewriting plugins, by detector")
                .build(),
            plugin_duration: m
                .f64_histogram("portcullis.plugin.duration")
                .with_unit("s")
                .with_description("Time spent in each policy plugin call")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            tunnel_connections: m
                .i64_up_down_counter("portcullis.tunnel.connections")
                .with_description("Live tunnel connections")
                .build(),
            tunnel_reconnects: m
                .u64_counter("portcullis.tunnel.reconnects")
                .with_description("Tunnel connections re-established after a loss")
                .build(),
            audit_exported: m
                .u64_counter("portcullis.audit.exported")
                .with_description("Audit records acknowledged by the OTLP collector")
                .build(),
            audit_export_failures: m
                .u64_counter("portcullis.audit.export.failures")
                .with_description("Failed audit export attempts (retried)")
                .build(),
            audit_lost: m
                .u64_counter("portcullis.audit.lost")
                .with_description("Audit records that could not be persisted (best-effort mode)")
                .build(),
        }
    })
}

/// Records one MCP request's duration at `component` (`relay`, `gateway`),
/// with what is known of it.
pub fn record_operation(
    component: &'static str,
    elapsed: std::time::Duration,
    server: Option<String>,
    method: Option<String>,
    tool: Option<String>,
    error: Option<String>,
) {
    let mut attrs = Vec::with_capacity(5);
    attrs.push(KeyValue::new("portcullis.component", component));
    for (key, value) in [
        ("portcullis.server", server),
        ("mcp.method.name", method),
        ("gen_ai.tool.name", tool),
        ("error.type", error),
    ] {
        if let Some(v) = value {
            attrs.push(KeyValue::new(key, v));
        }
    }
    get()
        .operation_duration
        .record(elapsed.as_secs_f64(), &attrs);
}

/// Counts one message's decision.
pub fn record_decision(server: &str, direction: Direction, outcome: Outcome) {
    get().decisions.add(
        1,
        &[
            KeyValue::new("portcullis.outcome", outcome.as_str()),
            KeyValue::new("portcullis.direction", direction.as_str()),
            KeyValue::new("portcullis.server", server.to_owned()),
        ],
    );
}

/// Records one plugin call's time and decision.
pub fn record_plugin_call(plugin: &str, decision: StepDecision, elapsed: std::time::Duration) {
    get().plugin_duration.record(
        elapsed.as_secs_f64(),
        &[
            KeyValue::new("portcullis.plugin", plugin.to_owned()),
            KeyValue::new("portcullis.decision", decision.as_str()),
        ],
    );
}

/// Counts a message `plugin` stopped on its way to or from `server`.
pub fn record_denial(server: &str, plugin: &str) {
    get().denials.add(
        1,
        &[
            KeyValue::new("portcullis.server", server.to_owned()),
            KeyValue::new("portcullis.plugin", plugin.to_owned()),
        ],
    );
}

/// Counts `n` values a rewriting `plugin` changed, as its `detector`
/// reported them.
pub fn record_redactions(plugin: &str, detector: &str, n: u64) {
    get().redactions.add(
        n,
        &[
            KeyValue::new("portcullis.plugin", plugin.to_owned()),
            KeyValue::new("portcullis.detector", detector.to_owned()),
        ],
    );
}
