//! The audit spool alone, and with the OTLP exporter shipping it to a
//! collector stand-in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::audit::{AuditMode, Spool, SpoolConfig};
use portcullis::mcp::{Direction, Kind, MessageContext, Mode, Outcome, StepDecision};
use portcullis::policy::verdict::{Annotation, AnnotationValue};
use serde_json::json;

use super::stats::{WARMUP, percentile};

/// Records appended for the spool-alone rows.
const SPOOL_RECORDS: usize = 50_000;
/// Calls (two records each) for the rows with export on.
const EXPORT_CALLS: usize = 20_000;

/// The audit table's figures.
#[derive(Debug, Clone, Copy)]
pub struct AuditCosts {
    /// p50 of a best-effort append on the hot path.
    pub append: Duration,
    /// Records per second until durable (fsync per batch).
    pub durable_rate: f64,
    /// p50 of one call's audit work (two records, metrics) with export on.
    pub export_call: Duration,
    /// Records per second until durable and acknowledged by the collector.
    pub exported_rate: f64,
}

/// Measures [`AuditCosts`].
pub async fn measure() -> anyhow::Result<AuditCosts> {
    let (append, durable_rate) = spool_costs(SPOOL_RECORDS).await?;
    let (export_call, exported_rate) = export_costs(EXPORT_CALLS).await?;
    Ok(AuditCosts {
        append,
        durable_rate,
        export_call,
        exported_rate,
    })
}

/// Audit: hot-path cost of a best-effort append (p50), and sustained spool
/// throughput (records/s until durable).
async fn spool_costs(records: usize) -> anyhow::Result<(Duration, f64)> {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-audit-{}",
        portcullis::secret::random_id()
    ));
    let spool = Spool::open(SpoolConfig::new(dir.clone(), AuditMode::BestEffort))?;
    let record = json!({"time_unix_ms": 1, "tunnel": "t", "server": "demo", "subject": "demo-agent",
        "groups": ["support"], "direction": "to-server", "kind": "request", "method": "tools/call",
        "target": "lookup_customer", "request_id": "7", "outcome": "forwarded",
        "steps": [{"plugin": "authz", "digest": "0".repeat(64), "mode": "enforce", "decision": "allow",
                   "annotations": {"rule": "support-read"}, "elapsed_us": 3}]});
    let mut hot = Vec::with_capacity(records);
    let start = Instant::now();
    for i in 0..records {
        let t = Instant::now();
        spool.append(&record).await?;
        hot.push(t.elapsed());
        if i % 4096 == 4095 {
            // Stay under the queue bound: this measures the disk, not drops.
            spool.flush().await?;
        }
    }
    spool.flush().await?;
    let rate = records as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(spool.lost() == 0, "records were lost");
    hot.sort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((percentile(&hot, 0.5), rate))
}

/// An OTLP/HTTP collector stand-in on loopback: answers every export with
/// an empty (valid) protobuf response and counts the bytes it accepted.
async fn otlp_sink() -> anyhow::Result<(std::net::SocketAddr, tokio_util::sync::CancellationToken)>
{
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let serve = portcullis::server::serve(
        listener,
        portcullis::server::ServeOptions {
            drain_grace: Duration::from_millis(100),
            ..portcullis::server::ServeOptions::plain("otlp-sink")
        },
        |req: http::Request<hyper::body::Incoming>| async move {
            let _ = req.into_body().collect().await;
            let mut resp = http::Response::new(portcullis::body::empty());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-protobuf"),
            );
            Ok::<_, std::convert::Infallible>(resp)
        },
        stop.clone(),
    );
    tokio::spawn(serve);
    Ok((addr, stop))
}

/// Audit with OTLP export on: the audit work one call adds on the hot path
/// (two decision records, request and response: build, serialise, queue,
/// count in the metrics) while the exporter ships the spool to a collector,
/// p50 per call; and the sustained rate at which records become durable
/// and acknowledged by the collector.
async fn export_costs(calls: usize) -> anyhow::Result<(Duration, f64)> {
    let (sink, stop_sink) = otlp_sink().await?;
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-export-{}",
        portcullis::secret::random_id()
    ));
    let spool = Arc::new(Spool::open(SpoolConfig::new(
        dir.clone(),
        AuditMode::BestEffort,
    ))?);
    let target = portcullis::telemetry::Target {
        protocol: portcullis::telemetry::Protocol::HttpProtobuf,
        endpoint: format!("http://{sink}/v1/logs"),
        headers: Vec::new(),
        timeout: portcullis::limits::OTLP_DEFAULT_TIMEOUT,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let exporter = portcullis::audit::export::Exporter::start(
        &spool,
        &target,
        &opentelemetry_sdk::Resource::builder_empty().build(),
        stop.clone(),
    )?;
    let mut ctx = MessageContext {
        direction: Direction::ToServer,
        tunnel: "t".into(),
        server: "demo".into(),
        kind: Kind::Request,
        method: Some("tools/call".into()),
        target: Some("lookup_customer".into()),
        related_tool: None,
        request_id: Some("7".into()),
        session_id: Some("3f2c9a".into()),
        protocol_version: Some("2025-11-25".into()),
        principal: portcullis::principal::Principal::named("demo-agent", vec!["support".into()]),
    };
    let steps = vec![portcullis::policy::StepRecord {
        plugin: "authz".into(),
        digest: "0".repeat(64),
        mode: Mode::Enforce,
        decision: StepDecision::Allow,
        reason: None,
        annotations: vec![Annotation {
            key: "rule".into(),
            value: AnnotationValue::Label("support-read".into()),
        }],
        elapsed: Duration::from_micros(3),
    }];
    let mut hot = Vec::with_capacity(calls);
    let start = Instant::now();
    for i in 0..calls + WARMUP {
        let t = Instant::now();
        for direction in [Direction::ToServer, Direction::ToClient] {
            ctx.direction = direction;
            portcullis::gateway::record_decision(
                Some(&spool),
                None,
                &ctx,
                &steps,
                Outcome::Forwarded,
                (None, None),
            )
            .await?;
        }
        if i >= WARMUP {
            hot.push(t.elapsed());
        }
        if i % 2048 == 2047 {
            // Stay under the queue bound: this measures the disk, not drops.
            spool.flush().await?;
        }
    }
    spool.flush().await?;
    let last = *spool.durable().borrow();
    let mut acked = exporter.acked.clone();
    acked.wait_for(|s| *s >= last).await?;
    let rate = (2 * (calls + WARMUP)) as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(spool.lost() == 0, "records were lost");
    stop.cancel();
    let _ = exporter.task.await;
    stop_sink.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    hot.sort();
    Ok((percentile(&hot, 0.5), rate))
}
