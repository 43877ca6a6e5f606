//! `portcullis bench`: the full path (agent → relay → tunnel → gateway →
//! upstream) against the same upstream called directly, in one run, plus the
//! relay's memory per idle tunnel and the cost of parsing a key-flooded
//! message ([`parse`]). Prints a table; targets are checked by reading it,
//! not by timing assertions in tests.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::McpClient;
use crate::up::{self, AuditSpool, PolicySource, UpOptions};

mod parse;
mod stall;

/// Benchmark sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Sequential calls measured at concurrency 1 (after warm-up).
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// Calls per task at concurrency 32.
    #[arg(long, default_value_t = 200)]
    pub calls_per_task: usize,
    /// Idle tunnels for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub tunnels: usize,
    /// Runs only the first table (direct against the bare tunnel), e.g. to
    /// profile the path.
    #[arg(long, conflicts_with = "memory_only")]
    pub path_only: bool,
    /// Runs only the idle-tunnel memory measurement, e.g. under a heap
    /// profiler.
    #[arg(long)]
    pub memory_only: bool,
    /// Runs only the parse table: 100,000-key messages read by the gateway
    /// and by `serde_json`.
    #[arg(long, conflicts_with_all = ["memory_only", "path_only"])]
    pub parse_only: bool,
    /// Runs only the head-of-line table: `ping` on its own session while
    /// other agents' 1 MiB key-flooded calls are in flight.
    #[arg(long, conflicts_with_all = ["memory_only", "path_only", "parse_only"])]
    pub stall_only: bool,
}

/// Tasks in the throughput run.
const CONCURRENCY: usize = 32;
/// Size of the tool-call arguments.
const ARG_BYTES: usize = 1024;
/// Warm-up calls before measuring in-process costs.
pub const WARMUP: usize = 200;
/// Warm-up calls before measuring a path end to end: enough for every
/// connection pool, allocator arena and CPU clock on the path to settle,
/// so the first path measured is not penalised for going first.
const PATH_WARMUP: usize = 2000;

/// The `p` quantile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

/// p50/p99 of each client's calls, measured interleaved: every round calls
/// each client once (starting with a different one each round), so all the
/// paths compared see the same machine state (CPU clocks, idle cores, other
/// load) rather than whatever it was while their turn ran.
async fn latencies(
    clients: &mut [&mut McpClient],
    tool: &str,
    args: &serde_json::Value,
    calls: usize,
) -> anyhow::Result<Vec<Latency>> {
    for _ in 0..PATH_WARMUP {
        for c in clients.iter_mut() {
            c.call_tool(tool, args.clone()).await?;
        }
    }
    let mut paired: Vec<(&mut McpClient, Vec<Duration>)> = clients
        .iter_mut()
        .map(|c| (&mut **c, Vec::with_capacity(calls)))
        .collect();
    let n = paired.len();
    for _ in 0..calls {
        for (client, taken) in paired.iter_mut() {
            let t = Instant::now();
            let r = client.call_tool(tool, args.clone()).await?;
            taken.push(t.elapsed());
            anyhow::ensure!(r.get("result").is_some(), "call failed: {r}");
        }
        // The next round starts one client further along.
        paired.rotate_left(1.min(n));
    }
    // Back to the callers' order.
    paired.rotate_right(calls % n.max(1));
    let samples = paired.into_iter().map(|(_, s)| s);
    Ok(samples
        .map(|mut s| {
            s.sort();
            Latency {
                p50: percentile(&s, 0.5),
                p99: percentile(&s, 0.99),
            }
        })
        .collect())
}

async fn throughput(client: &McpClient, per_task: usize) -> anyhow::Result<f64> {
    let args = json!({ "query": "x".repeat(ARG_BYTES) });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut c = client.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let r = c.call_tool("search_tickets", args.clone()).await?;
                anyhow::ensure!(r.get("result").is_some(), "call failed: {r}");
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((CONCURRENCY * per_task) as f64 / start.elapsed().as_secs_f64())
}

/// Resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs the benchmark and returns the printed table. The client runs on the
/// runtime's workers like every other task, not on the thread that called.
pub async fn run(opts: BenchOptions) -> anyhow::Result<String> {
    tokio::spawn(run_on_workers(opts)).await?
}

/// A policy with three no-op plugins in one chain.
const NOOP_CHAIN: &str = r#"
[plugins.noop1]
source = "builtin:noop"
[plugins.noop2]
source = "builtin:noop"
[plugins.noop3]
source = "builtin:noop"
[[servers."*"]]
plugin = "noop1"
[[servers."*"]]
plugin = "noop2"
[[servers."*"]]
plugin = "noop3"
"#;

/// One standard plugin on a realistic message, for the per-plugin table
/// (the same inputs serve the native comparison).
pub struct PluginCase {
    /// Row label.
    pub label: &'static str,
    /// `builtin:NAME`.
    pub plugin: &'static str,
    /// Its configuration, as JSON.
    pub config: String,
    pub ctx: crate::mcp::MessageContext,
    pub message: String,
    /// Tool definitions the catalog holds (a `tools/list` result's `tools`).
    pub tools: Option<serde_json::Value>,
}

/// The definition schema-guard checks calls against: the demo's refund tool.
fn refund_tool() -> serde_json::Value {
    json!({"name": "issue_refund", "description": "Refunds an amount (in EUR) to a customer's card.",
        "inputSchema": {"type": "object", "properties": {
            "customer_id": {"type": "string", "pattern": "^C-[0-9]{4}$"},
            "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000},
            "reason": {"type": "string", "maxLength": 500}},
          "required": ["customer_id", "amount"], "additionalProperties": false}})
}

/// The per-plugin cases: authz with 20 rules and Cedar with 20 policies on
/// a refund call, redact with every detector on a 4 KiB tool result,
/// schema-guard on the refund call.
pub fn plugin_cases() -> Vec<PluginCase> {
    use crate::mcp::{Direction, Kind, MessageContext};
    let ctx = |direction, kind, method: &str, target: &str| MessageContext {
        direction,
        tunnel: "bench".into(),
        server: "demo".into(),
        kind,
        method: Some(method.into()),
        target: Some(target.into()),
        related_tool: None,
        request_id: Some("7".into()),
        session_id: None,
        protocol_version: Some("2025-11-25".into()),
        principal: crate::principal::Principal {
            subject: "demo-agent".into(),
            groups: vec!["support".into()],
        },
    };
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "issue_refund",
        "arguments": {"customer_id": "C-1001", "amount": 80, "reason": "duplicate charge on order 7731"}}})
    .to_string();
    let to_server = ctx(
        Direction::ToServer,
        Kind::Request,
        "tools/call",
        "issue_refund",
    );
    // 20 authz rules: 18 for other groups and tools, the refund rule, a deny.
    let mut rules: Vec<serde_json::Value> = (0..18)
        .map(|i| {
            json!({"id": format!("team-{i}"), "effect": "allow", "groups": [format!("team-{i}")],
            "tools": [format!("tool_{i}_*"), "lookup_customer"],
            "when": [{"arg": "region", "op": "in", "value": ["eu", "us"]}]})
        })
        .collect();
    rules.push(
        json!({"id": "support-refund", "effect": "allow", "groups": ["support"],
        "tools": ["issue_refund"], "when": [{"arg": "amount", "op": "lte", "value": 100},
        {"arg": "customer_id", "op": "regex", "value": "^C-[0-9]{4}$"}]}),
    );
    rules.push(json!({"id": "no-erasure", "effect": "deny", "tools": ["delete_*"]}));
    // 20 Cedar policies, the same shape.
    let mut cedar: String = (0..18)
        .map(|i| format!("@id(\"team-{i}\")\npermit(principal in Portcullis::Group::\"team-{i}\", action == Portcullis::Action::\"tools/call\", resource == Portcullis::Tool::\"tool_{i}\") when {{ context.arguments has region && context.arguments.region == \"eu\" }};\n"))
        .collect();
    cedar.push_str("@id(\"support-refund\")\npermit(principal in Portcullis::Group::\"support\", action == Portcullis::Action::\"tools/call\", resource == Portcullis::Tool::\"issue_refund\") when { context.arguments has amount && context.arguments.amount <= 100 };\n");
    cedar.push_str("@id(\"no-erasure\")\nforbid(principal, action, resource) when { resource.name like \"delete_*\" };\n");
    let thread = crate::demo::ticket_thread("T-502");
    let result = json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": thread}], "isError": false}}).to_string();
    vec![
        PluginCase {
            label: "authz, 20 rules, tools/call",
            plugin: "authz",
            config: json!({ "rules": rules }).to_string(),
            ctx: to_server.clone(),
            message: call.clone(),
            tools: None,
        },
        PluginCase {
            label: "cedar, 20 policies, tools/call",
            plugin: "cedar",
            config: json!({ "policies": cedar }).to_string(),
            ctx: to_server.clone(),
            message: call.clone(),
            tools: None,
        },
        PluginCase {
            label: "redact, every detector, 4 KiB tool result",
            plugin: "redact",
            config: "{}".into(),
            ctx: ctx(
                Direction::ToClient,
                Kind::Response,
                "tools/call",
                "get_ticket_thread",
            ),
            message: result,
            tools: None,
        },
        PluginCase {
            label: "schema-guard, typical tool, tools/call",
            plugin: "schema-guard",
            config: "{}".into(),
            ctx: to_server,
            message: call,
            tools: Some(json!([refund_tool()])),
        },
    ]
}

/// One [`plugin_cases`] case through the real host (Wasm).
#[derive(Debug, Clone, Copy)]
pub struct SuiteCost {
    pub label: &'static str,
    /// p50 of the plugin's call.
    pub wasm: Duration,
    /// p50 of the no-op plugin's call on the same context and message,
    /// measured call by call beside it: what crossing into a component and
    /// back costs, with no plugin logic.
    pub boundary: Duration,
}

/// p50 of each [`plugin_cases`] case through the real host (Wasm), and of
/// the no-op plugin on the same input, interleaved.
pub async fn plugin_suite_costs(calls: usize, filter: &str) -> anyhow::Result<Vec<SuiteCost>> {
    use crate::plugin::{LoadedPlugin, PluginEngine, PluginLimits};
    let engine = PluginEngine::new(crate::plugin::engine::default_cache_dir())?;
    let noop = load_noop(&engine).await?;
    let mut out = Vec::new();
    for case in plugin_cases()
        .into_iter()
        .filter(|c| c.label.contains(filter))
    {
        let bytes = crate::plugin::builtin(case.plugin)
            .ok_or_else(|| anyhow::anyhow!("{} is not built in", case.plugin))?;
        let catalog = Arc::new(crate::policy::catalog::Catalog::default());
        if let Some(tools) = &case.tools {
            let listing = json!({"jsonrpc": "2.0", "id": 0, "result": {"tools": tools}});
            catalog.learn("demo", listing.to_string().as_bytes(), false);
        }
        let plugin = LoadedPlugin::load(
            &engine,
            case.plugin,
            bytes,
            case.config.clone(),
            PluginLimits::default(),
            catalog,
        )
        .await?;
        let mut samples = Vec::with_capacity(calls);
        let mut boundary = Vec::with_capacity(calls);
        for i in 0..calls + WARMUP {
            let t = Instant::now();
            let v = plugin.call(&case.ctx, &case.message).await?;
            let wasm = t.elapsed();
            let t = Instant::now();
            noop.call(&case.ctx, &case.message).await?;
            if i >= WARMUP {
                samples.push(wasm);
                boundary.push(t.elapsed());
            }
            if i == 0 {
                anyhow::ensure!(
                    !matches!(v.decision, crate::policy::verdict::Decision::Deny(_)),
                    "{}: the benchmark message was denied: {v:?}",
                    case.label
                );
            }
        }
        samples.sort();
        boundary.sort();
        out.push(SuiteCost {
            label: case.label,
            wasm: percentile(&samples, 0.5),
            boundary: percentile(&boundary, 0.5),
        });
    }
    Ok(out)
}

/// The built-in no-op plugin: the baseline for the plugin host's own cost.
async fn load_noop(
    engine: &crate::plugin::PluginEngine,
) -> anyhow::Result<crate::plugin::LoadedPlugin> {
    let bytes =
        crate::plugin::builtin("noop").ok_or_else(|| anyhow::anyhow!("noop plugin missing"))?;
    Ok(crate::plugin::LoadedPlugin::load(
        engine,
        "noop",
        bytes,
        "{}".into(),
        crate::plugin::PluginLimits::default(),
        Default::default(),
    )
    .await?)
}

/// Host-side wall time of plugin calls on a 1 KiB message.
async fn plugin_costs(calls: usize) -> anyhow::Result<(Duration, Duration)> {
    use crate::mcp::{Direction, Kind, MessageContext};
    use crate::plugin::PluginEngine;

    let engine = PluginEngine::new(None)?;
    let noop = load_noop(&engine).await?;
    let message = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "search_tickets", "arguments": {"query": "x".repeat(ARG_BYTES - 90)}}})
    .to_string();
    let ctx = MessageContext {
        direction: Direction::ToServer,
        tunnel: "bench".into(),
        server: "demo".into(),
        kind: Kind::Request,
        method: Some("tools/call".into()),
        target: Some("search_tickets".into()),
        related_tool: None,
        request_id: Some("1".into()),
        session_id: None,
        protocol_version: None,
        principal: crate::principal::Principal::anonymous(),
    };
    let mut one = Vec::with_capacity(calls);
    for i in 0..calls + WARMUP {
        let t = Instant::now();
        noop.call(&ctx, &message).await?;
        if i >= WARMUP {
            one.push(t.elapsed());
        }
    }
    one.sort();
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", crate::secret::random_id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("noop3.toml");
    std::fs::write(&path, NOOP_CHAIN)?;
    let policy = crate::policy::load(&path, &engine, Default::default()).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let raw = bytes::Bytes::from(message);
    let mut three = Vec::with_capacity(calls);
    for i in 0..calls + WARMUP {
        let t = Instant::now();
        let _ = policy
            .apply(&ctx, raw.clone(), crate::limits::MAX_JSON_DEPTH)
            .await;
        if i >= WARMUP {
            three.push(t.elapsed());
        }
    }
    three.sort();
    Ok((percentile(&one, 0.5), percentile(&three, 0.5)))
}

/// Audit: hot-path cost of a best-effort append (p50), and sustained spool
/// throughput (records/s until durable).
async fn audit_costs(records: usize) -> anyhow::Result<(Duration, f64)> {
    use crate::audit::{AuditMode, Spool, SpoolConfig};
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-audit-{}",
        crate::secret::random_id()
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
    let serve = crate::server::serve(
        listener,
        crate::server::ServeOptions {
            drain_grace: Duration::from_millis(100),
            ..crate::server::ServeOptions::plain("otlp-sink")
        },
        |req: http::Request<hyper::body::Incoming>| async move {
            let _ = req.into_body().collect().await;
            let mut resp = http::Response::new(crate::body::empty());
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
async fn audit_export_costs(calls: usize) -> anyhow::Result<(Duration, f64)> {
    use crate::audit::{AuditMode, Spool, SpoolConfig};
    use crate::mcp::{Direction, Kind, MessageContext, Mode, Outcome, StepDecision};
    use crate::policy::verdict::{Annotation, AnnotationValue};
    let (sink, stop_sink) = otlp_sink().await?;
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-export-{}",
        crate::secret::random_id()
    ));
    let spool = Arc::new(Spool::open(SpoolConfig::new(
        dir.clone(),
        AuditMode::BestEffort,
    ))?);
    let target = crate::telemetry::Target {
        protocol: crate::telemetry::Protocol::HttpProtobuf,
        endpoint: format!("http://{sink}/v1/logs"),
        headers: Vec::new(),
        timeout: crate::limits::OTLP_DEFAULT_TIMEOUT,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let exporter = crate::audit::export::Exporter::start(
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
        principal: crate::principal::Principal {
            subject: "demo-agent".into(),
            groups: vec!["support".into()],
        },
    };
    let steps = vec![crate::policy::StepRecord {
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
        ctx.direction = Direction::ToServer;
        crate::gateway::record_decision(Some(&spool), None, &ctx, &steps, Outcome::Forwarded, None)
            .await?;
        ctx.direction = Direction::ToClient;
        crate::gateway::record_decision(Some(&spool), None, &ctx, &steps, Outcome::Forwarded, None)
            .await?;
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

/// An initialised agent session with `running`'s demo server.
async fn demo_client(running: &up::Running) -> anyhow::Result<McpClient> {
    let url = running
        .servers
        .get(up::DEMO_SERVER)
        .ok_or_else(|| anyhow::anyhow!("no demo server"))?;
    let mut c = McpClient::new(url, running.token.as_deref());
    c.initialize().await?;
    Ok(c)
}

async fn run_on_workers(opts: BenchOptions) -> anyhow::Result<String> {
    if opts.parse_only {
        return tokio::task::spawn_blocking(parse::table).await?;
    }
    if opts.stall_only {
        return stall::table().await;
    }
    // The relay's memory per idle tunnel is measured first, while the
    // process has allocated little: after the other phases the allocator
    // holds freed pages that the tunnels may or may not reuse, which moved
    // the figure between 23 and 69 KiB from run to run.
    let idle_per_tunnel = if opts.tunnels > 0 && !opts.path_only {
        Some(idle_tunnel_memory(opts.tunnels).await?)
    } else {
        None
    };
    if opts.memory_only {
        let per = idle_per_tunnel
            .ok_or_else(|| anyhow::anyhow!("--memory-only needs --tunnels above 0"))?;
        return Ok(idle_tunnel_table(opts.tunnels, per));
    }
    let running = up::start(UpOptions {
        policy: PolicySource::Off,
        audit: AuditSpool::Off,
        ..UpOptions::default()
    })
    .await?;
    let demo = running
        .demo_addr
        .ok_or_else(|| anyhow::anyhow!("demo server did not start"))?;
    let mut direct = McpClient::new(&format!("http://{demo}/mcp"), None);
    direct.initialize().await?;
    let mut tunneled = demo_client(&running).await?;

    // The same path with a three-plugin no-op chain in the gateway.
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", crate::secret::random_id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("noop3.toml"), NOOP_CHAIN)?;
    let chained = up::start(UpOptions {
        policy: PolicySource::File(dir.join("noop3.toml")),
        ..UpOptions::default()
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut with_chain = demo_client(&chained).await?;
    let (hop_addr, hop_stop) = plain_forwarder(demo).await?;
    let mut hop = McpClient::new(&format!("http://{hop_addr}/mcp"), None);
    hop.initialize().await?;
    let (hop2_addr, hop2_stop) = plain_forwarder(hop_addr).await?;
    let mut hop2 = McpClient::new(&format!("http://{hop2_addr}/mcp"), None);
    hop2.initialize().await?;
    let args = json!({ "query": "x".repeat(ARG_BYTES) });
    let mut paths = [&mut direct, &mut tunneled, &mut hop, &mut hop2];
    let [d1, t1, h1, h2]: [Latency; 4] = latencies(&mut paths, "search_tickets", &args, opts.calls)
        .await?
        .try_into()
        .map_err(|_| anyhow::anyhow!("four paths measured"))?;
    // The chain's path writes the audit spool (an fsync per batch), which
    // would disturb the paths above: it is paired with direct on its own.
    let mut paths = [&mut direct, &mut with_chain];
    let [dc, c1]: [Latency; 2] = latencies(&mut paths, "search_tickets", &args, opts.calls)
        .await?
        .try_into()
        .map_err(|_| anyhow::anyhow!("two paths measured"))?;
    let dt = throughput(&direct, opts.calls_per_task).await?;
    let tt = throughput(&tunneled, opts.calls_per_task).await?;
    let ht = throughput(&hop, opts.calls_per_task).await?;
    let h2t = throughput(&hop2, opts.calls_per_task).await?;
    hop2_stop.cancel();
    hop_stop.cancel();
    running.stop().await;
    let mut out = String::new();
    path_rows(&mut out, &d1, &t1, dt, tt);
    let _ = writeln!(
        out,
        "| reference: one bare HTTP/1.1 forwarding hop (hyper, no TLS, no parsing) | {:.0} | {:.0} | {:.0} ({:.2}× direct) |",
        us(h1.p50),
        us(h1.p99),
        ht,
        ht / dt
    );
    let _ = writeln!(
        out,
        "| reference: two bare hops in a row (the fewest a relay and a gateway can be) | {:.0} | {:.0} | {:.0} ({:.2}× direct) |",
        us(h2.p50),
        us(h2.p99),
        h2t,
        h2t / dt
    );
    if opts.path_only {
        chained.stop().await;
        return Ok(out);
    }

    let ct = throughput(&with_chain, opts.calls_per_task).await?;
    chained.stop().await;
    // 4 KiB results: direct, the bare tunnel and the full default policy
    // (authz on the call and on list results, redact on the way out), no
    // audit in either, measured interleaved.
    let thread_args = json!({ "ticket_id": "T-502" });
    let bare = up::start(UpOptions {
        policy: PolicySource::Off,
        audit: AuditSpool::Off,
        ..UpOptions::default()
    })
    .await?;
    let full = up::start(UpOptions {
        audit: AuditSpool::Off,
        ..UpOptions::default()
    })
    .await?;
    let demo4 = bare
        .demo_addr
        .ok_or_else(|| anyhow::anyhow!("demo server did not start"))?;
    let mut direct4 = McpClient::new(&format!("http://{demo4}/mcp"), None);
    direct4.initialize().await?;
    let mut bare_client = demo_client(&bare).await?;
    let mut full_client = demo_client(&full).await?;
    let mut paths = [&mut direct4, &mut bare_client, &mut full_client];
    let [d4, b4, f4]: [Latency; 3] =
        latencies(&mut paths, "get_ticket_thread", &thread_args, opts.calls)
            .await?
            .try_into()
            .map_err(|_| anyhow::anyhow!("three paths measured"))?;
    bare.stop().await;
    full.stop().await;
    let suite = plugin_suite_costs(opts.calls, "").await?;
    let (one_plugin, three_plugins) = plugin_costs(opts.calls).await?;
    let (audit_hot, audit_rate) = audit_costs(50_000).await?;
    let (export_hot, export_rate) = audit_export_costs(20_000).await?;

    let _ = writeln!(
        out,
        "| tunnel + 3 no-op plugins (both directions) + audit spool | {:.0} | {:.0} | {:.0} |",
        us(c1.p50),
        us(c1.p99),
        ct
    );
    let _ = writeln!(
        out,
        "| added with the chain (against direct measured beside it, p50 {:.0}) | {:.0} (target ≤ 200) | {:.0} | {:.2}× direct |",
        us(dc.p50),
        us(c1.p50.saturating_sub(dc.p50)),
        us(c1.p99.saturating_sub(dc.p99)),
        ct / dt
    );
    let _ = writeln!(
        out,
        "| direct, 4 KiB result | {:.0} | {:.0} | |",
        us(d4.p50),
        us(d4.p99)
    );
    let _ = writeln!(
        out,
        "| tunnel, 4 KiB result, no policy | {:.0} | {:.0} | |",
        us(b4.p50),
        us(b4.p99)
    );
    let _ = writeln!(
        out,
        "| tunnel, 4 KiB result, full default chain (authz, redact) | {:.0} | {:.0} | |",
        us(f4.p50),
        us(f4.p99)
    );
    let _ = writeln!(
        out,
        "| added by the default chain | {:.0} (target ≤ 100) | {:.0} | |",
        us(f4.p50.saturating_sub(b4.p50)),
        us(f4.p99.saturating_sub(b4.p99))
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| standard plugin, realistic message | Wasm p50 µs | of which boundary (no-op plugin, same input) |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for c in &suite {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} |",
            c.label,
            us(c.wasm),
            us(c.boundary)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| plugin host, 1 KiB message | p50 µs |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| one no-op plugin call | {:.1} (target ≤ 5) |",
        us(one_plugin)
    );
    let _ = writeln!(
        out,
        "| 3-plugin no-op chain | {:.1} (target ≤ 15) |",
        us(three_plugins)
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| audit spool | |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| append on the hot path (best effort), p50 | {:.1} µs (target ≤ 10) |",
        us(audit_hot)
    );
    let _ = writeln!(
        out,
        "| sustained, durable (fsync per batch) | {audit_rate:.0} records/s (target ≥ 20,000) |"
    );
    let _ = writeln!(
        out,
        "| audit work per call with OTLP export on (2 records, metrics), p50 | {:.1} µs (target ≤ 10) |",
        us(export_hot)
    );
    let _ = writeln!(
        out,
        "| sustained, durable and acknowledged by an OTLP/HTTP collector | {export_rate:.0} records/s |"
    );
    let _ = writeln!(out);
    out.push_str(&tokio::task::spawn_blocking(parse::table).await??);
    out.push_str(&stall::table().await?);
    if let Some(per) = idle_per_tunnel {
        let _ = writeln!(out);
        out.push_str(&idle_tunnel_table(opts.tunnels, per));
    }
    Ok(out)
}

/// The idle-tunnel memory table: `per` KiB of relay RSS per tunnel.
fn idle_tunnel_table(tunnels: usize, per: f64) -> String {
    format!(
        "| idle tunnels | connections each | relay RSS added per tunnel (gateways in a child process) |\n\
         |---:|---:|---:|\n\
         | {tunnels} | {} | {per:.1} KiB (target ≤ 64 KiB) |\n",
        crate::limits::DEFAULT_TUNNEL_CONNECTIONS
    )
}

/// The cheapest forwarding hop there is, as the floor the tunnel is judged
/// against: a hyper HTTP/1.1 server that hands each request unchanged to a
/// pooled hyper-util client for `upstream` and streams the response back. No
/// TLS, no parsing, no checks. The tunnel path has two hops of this kind plus
/// TLS and HTTP/2 between them.
async fn plain_forwarder(
    upstream: std::net::SocketAddr,
) -> anyhow::Result<(std::net::SocketAddr, tokio_util::sync::CancellationToken)> {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let client: Client<HttpConnector, hyper::body::Incoming> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn);
    let stop = tokio_util::sync::CancellationToken::new();
    let service = move |req: http::Request<hyper::body::Incoming>| {
        let client = client.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let forwarded = match format!("http://{upstream}{path}").parse() {
                Ok(uri) => {
                    parts.uri = uri;
                    client.request(http::Request::from_parts(parts, body)).await
                }
                Err(e) => return Ok(bad_gateway(e.to_string())),
            };
            let resp = match forwarded {
                Ok(r) => r.map(crate::body::boxed),
                Err(e) => bad_gateway(e.to_string()),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    };
    let opts = crate::server::ServeOptions {
        drain_grace: Duration::from_secs(1),
        ..crate::server::ServeOptions::plain("forwarder")
    };
    tokio::spawn(crate::server::serve(listener, opts, service, stop.clone()));
    Ok((addr, stop))
}

/// The forwarder's answer when it cannot forward.
fn bad_gateway(reason: String) -> http::Response<crate::body::Body> {
    let mut resp = http::Response::new(crate::body::full(reason));
    *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
    resp
}

/// The first table's header and its direct / tunnel / added rows.
fn path_rows(out: &mut String, d1: &Latency, t1: &Latency, dt: f64, tt: f64) {
    let _ = writeln!(
        out,
        "tools/call, {ARG_BYTES} B arguments, demo upstream on loopback"
    );
    let _ = writeln!(
        out,
        "| path | p50 µs (c=1) | p99 µs (c=1) | calls/s (c={CONCURRENCY}) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| direct | {:.0} | {:.0} | {:.0} |",
        us(d1.p50),
        us(d1.p99),
        dt
    );
    let _ = writeln!(
        out,
        "| relay → tunnel → gateway | {:.0} | {:.0} | {:.0} |",
        us(t1.p50),
        us(t1.p99),
        tt
    );
    let _ = writeln!(
        out,
        "| added by Portcullis | {:.0} (target ≤ 150) | {:.0} | {:.2}× direct (target ≥ 0.5×) |",
        us(t1.p50.saturating_sub(d1.p50)),
        us(t1.p99.saturating_sub(d1.p99)),
        tt / dt
    );
}

/// Connects `n` tunnels (default connection count each) to a relay in this
/// process, from gateways in a child process, and returns the relay's RSS
/// growth per tunnel in KiB.
async fn idle_tunnel_memory(n: usize) -> anyhow::Result<f64> {
    use crate::relay::auth::AgentAuth;
    use crate::relay::{Relay, RelaySettings};
    use crate::secret;
    use crate::tls::{self, GeneratedCa};
    use crate::tunnel::acceptor::TunnelAuth;
    use tokio_util::sync::CancellationToken;

    let ca = GeneratedCa::new("bench CA")?;
    let relay_id = ca.issue(&["localhost"])?;
    let ids: Vec<(String, String)> = (0..n)
        .map(|_| {
            (
                secret::random_id(),
                secret::generate(secret::TUNNEL_TOKEN_PREFIX),
            )
        })
        .collect();
    let relay = Relay::new(RelaySettings::new(
        AgentAuth::default(),
        TunnelAuth::new(ids.iter().map(|(id, t)| (id.clone(), secret::digest(t)))),
    ));
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_tls = tls::server_config(&relay_id, None, &[b"http/1.1"])?;
    tokio::spawn(
        relay
            .clone()
            .serve_tunnels(listener, server_tls, shutdown.clone()),
    );

    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", secret::random_id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let list: String = ids.iter().map(|(id, t)| format!("{id} {t}\n")).collect();
    std::fs::write(dir.join("tunnels"), list)?;

    // Let allocator arenas settle before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib().unwrap_or(0);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("bench-gateways")
        .arg("--relay")
        .arg(addr.to_string())
        .arg("--dir")
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let conns = crate::limits::DEFAULT_TUNNEL_CONNECTIONS;
    let registry = Arc::clone(relay.registry());
    let connected = tokio::time::timeout(Duration::from_secs(120), async {
        for (id, _) in &ids {
            registry.wait_for(id, conns).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib().unwrap_or(0);
    let _ = child.kill().await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    connected.map_err(|_| anyhow::anyhow!("tunnels did not all connect within 120 s"))?;
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// The child side of the memory measurement: one gateway per tunnel listed
/// in `dir/tunnels`, connected to `relay`, until stdin closes.
pub async fn run_gateways(relay: String, dir: std::path::PathBuf) -> anyhow::Result<()> {
    use crate::gateway::Gateway;
    use crate::tls;
    use crate::tunnel::connector::PoolConfig;
    use crate::tunnel::dial::{DialConfig, ProxyConfig, RelayTarget};
    use tokio_util::sync::CancellationToken;

    let cas = tls::load_certs(&dir.join("ca.pem"))?;
    let client_tls = tls::client_config(Some(&cas), None, &[b"http/1.1"])?;
    let gateway = Gateway::new(Default::default(), crate::config::gateway::default_limits());
    let shutdown = CancellationToken::new();
    let list = std::fs::read_to_string(dir.join("tunnels"))?;
    for line in list.lines() {
        let Some((id, token)) = line.split_once(' ') else {
            continue;
        };
        let _ = gateway.connect(
            DialConfig {
                tunnel_id: id.to_owned(),
                token: token.to_owned(),
                tls: client_tls.clone(),
                proxy: ProxyConfig::default(),
            },
            PoolConfig {
                relays: vec![RelayTarget {
                    addr: relay.clone(),
                    server_name: "localhost".into(),
                }],
                connections: crate::limits::DEFAULT_TUNNEL_CONNECTIONS,
                max_streams: crate::limits::MAX_STREAMS_PER_CONNECTION,
                drain_grace: Duration::from_secs(1),
            },
            shutdown.clone(),
        );
    }
    // Blocks until the parent closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    shutdown.cancel();
    Ok(())
}
