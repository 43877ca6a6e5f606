//! The path tables: the full path (agent → relay → tunnel → gateway →
//! upstream) against the same upstream called directly and against bare
//! forwarding hops; the same path with a chain of three no-op plugins and
//! the audit spool; 4 KiB results through the bare tunnel and the default
//! policy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portcullis::client::McpClient;
use portcullis::up::{self, AuditSpool, PolicySource, UpOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::stats::percentile;

/// Tasks in the throughput run.
pub const CONCURRENCY: usize = 32;
/// Size of the tool-call arguments.
pub const ARG_BYTES: usize = 1024;
/// Warm-up calls before measuring a path end to end: enough for every
/// connection pool, allocator arena and CPU clock on the path to settle,
/// so the first path measured is not penalised for going first.
const PATH_WARMUP: usize = 2000;

/// p50 and p99 of one path's calls at concurrency 1.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
}

/// One path's latency (c=1) and throughput (calls/s at [`CONCURRENCY`]).
#[derive(Debug, Clone, Copy)]
pub struct PathCost {
    pub latency: Latency,
    pub rate: f64,
}

/// The first table: direct, through the bare tunnel (no policy, no audit),
/// and the two reference paths of bare forwarding hops.
#[derive(Debug, Clone, Copy)]
pub struct Paths {
    pub direct: PathCost,
    pub tunnel: PathCost,
    /// One bare HTTP/1.1 forwarding hop.
    pub hop: PathCost,
    /// Two bare hops in a row.
    pub two_hops: PathCost,
}

/// The tunnel with three no-op plugins (both directions) and the audit
/// spool, paired with direct measured beside it.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    pub direct: Latency,
    pub chained: PathCost,
}

/// 4 KiB tool results: direct, through the bare tunnel and through the
/// full default policy (authz, redact), no audit in either.
#[derive(Debug, Clone, Copy)]
pub struct LargeResults {
    pub direct: Latency,
    pub bare: Latency,
    pub full: Latency,
}

/// An `up` stack (demo server) with `policy` and `audit`.
async fn stack(policy: PolicySource, audit: AuditSpool) -> anyhow::Result<up::Running> {
    Ok(up::start(UpOptions {
        policy,
        audit,
        ..UpOptions::default()
    })
    .await?)
}

/// An initialised session straight with `running`'s demo server.
async fn direct_client(running: &up::Running) -> anyhow::Result<McpClient> {
    let demo = running
        .demo_addr
        .ok_or_else(|| anyhow::anyhow!("demo server did not start"))?;
    let mut c = McpClient::new(&format!("http://{demo}/mcp"), None);
    c.initialize().await?;
    Ok(c)
}

/// Measures [`Paths`] with `calls` sequential calls per path and
/// `per_task` calls per task for throughput; and, unless `path_only`, the
/// [`Chain`] (whose latency is measured either way, beside the first
/// table, so the first table's machine state is the same with and without
/// `--path-only`).
pub async fn measure_paths(
    calls: usize,
    per_task: usize,
    path_only: bool,
) -> anyhow::Result<(Paths, Option<Chain>)> {
    let running = stack(PolicySource::Off, AuditSpool::Off).await?;
    let demo = running
        .demo_addr
        .ok_or_else(|| anyhow::anyhow!("demo server did not start"))?;
    let mut direct = direct_client(&running).await?;
    let mut tunneled = demo_client(&running).await?;

    // The same path with a three-plugin no-op chain in the gateway.
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-{}",
        portcullis::secret::random_id()
    ));
    let policy = super::host::write_noop_chain(&dir)?;
    let chained = stack(PolicySource::File(policy), AuditSpool::Temp).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut with_chain = demo_client(&chained).await?;
    let (hop_addr, hop_stop) = plain_forwarder(demo).await?;
    let mut hop = McpClient::new(&format!("http://{hop_addr}/mcp"), None);
    hop.initialize().await?;
    let (hop2_addr, hop2_stop) = plain_forwarder(hop_addr).await?;
    let mut hop2 = McpClient::new(&format!("http://{hop2_addr}/mcp"), None);
    hop2.initialize().await?;
    let args = json!({ "query": "x".repeat(ARG_BYTES) });
    let mut clients = [&mut direct, &mut tunneled, &mut hop, &mut hop2];
    let [d1, t1, h1, h2]: [Latency; 4] = latencies(&mut clients, "search_tickets", &args, calls)
        .await?
        .try_into()
        .map_err(|_| anyhow::anyhow!("four paths measured"))?;
    // The chain's path writes the audit spool (an fsync per batch), which
    // would disturb the paths above: it is paired with direct on its own.
    let mut clients = [&mut direct, &mut with_chain];
    let [dc, c1]: [Latency; 2] = latencies(&mut clients, "search_tickets", &args, calls)
        .await?
        .try_into()
        .map_err(|_| anyhow::anyhow!("two paths measured"))?;
    let paths = Paths {
        direct: PathCost {
            latency: d1,
            rate: throughput(&direct, per_task).await?,
        },
        tunnel: PathCost {
            latency: t1,
            rate: throughput(&tunneled, per_task).await?,
        },
        hop: PathCost {
            latency: h1,
            rate: throughput(&hop, per_task).await?,
        },
        two_hops: PathCost {
            latency: h2,
            rate: throughput(&hop2, per_task).await?,
        },
    };
    hop2_stop.cancel();
    hop_stop.cancel();
    running.stop().await;
    let chain = if path_only {
        None
    } else {
        Some(Chain {
            direct: dc,
            chained: PathCost {
                latency: c1,
                rate: throughput(&with_chain, per_task).await?,
            },
        })
    };
    chained.stop().await;
    Ok((paths, chain))
}

/// Measures [`LargeResults`], interleaved, `calls` calls per path.
pub async fn measure_large(calls: usize) -> anyhow::Result<LargeResults> {
    let thread_args = json!({ "ticket_id": "T-502" });
    let bare = stack(PolicySource::Off, AuditSpool::Off).await?;
    let full = stack(PolicySource::Builtin, AuditSpool::Off).await?;
    let mut direct = direct_client(&bare).await?;
    let mut bare_client = demo_client(&bare).await?;
    let mut full_client = demo_client(&full).await?;
    let mut clients = [&mut direct, &mut bare_client, &mut full_client];
    let [direct, bare_l, full_l]: [Latency; 3] =
        latencies(&mut clients, "get_ticket_thread", &thread_args, calls)
            .await?
            .try_into()
            .map_err(|_| anyhow::anyhow!("three paths measured"))?;
    bare.stop().await;
    full.stop().await;
    Ok(LargeResults {
        direct,
        bare: bare_l,
        full: full_l,
    })
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

/// Calls per second from [`CONCURRENCY`] tasks of `per_task` calls each.
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

/// The cheapest forwarding hop there is, as the floor the tunnel is judged
/// against: a hyper HTTP/1.1 server that hands each request unchanged to a
/// pooled hyper-util client for `upstream` and streams the response back. No
/// TLS, no parsing, no checks. The tunnel path has two hops of this kind plus
/// TLS and HTTP/2 between them.
async fn plain_forwarder(upstream: SocketAddr) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let client: Client<HttpConnector, hyper::body::Incoming> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn);
    let stop = CancellationToken::new();
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
                Ok(r) => r.map(portcullis::body::boxed),
                Err(e) => bad_gateway(e.to_string()),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    };
    let opts = portcullis::server::ServeOptions {
        drain_grace: Duration::from_secs(1),
        ..portcullis::server::ServeOptions::plain("forwarder")
    };
    tokio::spawn(portcullis::server::serve(
        listener,
        opts,
        service,
        stop.clone(),
    ));
    Ok((addr, stop))
}

/// The forwarder's answer when it cannot forward.
fn bad_gateway(reason: String) -> http::Response<portcullis::body::Body> {
    let mut resp = http::Response::new(portcullis::body::full(reason));
    *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
    resp
}
