//! The head-of-line table of `portcullis bench`: `ping` on its own session
//! while other agents' key-flooded 1 MiB calls are in flight through the
//! default policy, against the same pings with nothing else running. No
//! message may stall unrelated calls: the target is p99 ≤ 50 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use portcullis::client::McpClient;
use portcullis::up::{self, AuditSpool, UpOptions};

use super::stats::percentile;

/// Heavy calls kept in flight at once (each agent sends its next when the
/// last is answered).
pub const HEAVY_IN_FLIGHT: usize = 4;
/// Keys in each heavy call's arguments (about 1 MiB of JSON).
pub const HEAVY_KEYS: usize = 100_000;
/// Pings measured per phase.
const PINGS: usize = 400;
/// Pings start this far apart (or as soon as the last is answered, if it
/// took longer), so the samples spread over seconds of heavy traffic rather
/// than the few milliseconds 400 back-to-back pings would take.
const PING_EVERY: Duration = Duration::from_millis(5);
/// A ping slower than this stalled: the target is p99 under it.
pub const STALL: Duration = Duration::from_millis(50);

/// One set of pings, summarised.
#[derive(Debug, Clone, Copy)]
pub struct Pings {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Pings slower than [`STALL`].
    pub stalled: usize,
    pub count: usize,
}

impl Pings {
    fn of(sorted: &[Duration]) -> Pings {
        Pings {
            p50: percentile(sorted, 0.5),
            p90: percentile(sorted, 0.9),
            p99: percentile(sorted, 0.99),
            max: sorted.last().copied().unwrap_or_default(),
            stalled: sorted.iter().filter(|d| **d > STALL).count(),
            count: sorted.len(),
        }
    }
}

/// One run: the heavy agents at the bulk threads' lower priority
/// (`remote_like`) or at normal priority.
#[derive(Debug, Clone, Copy)]
pub struct StallRun {
    pub remote_like: bool,
    /// Pings with nothing else running.
    pub quiet: Pings,
    /// Pings while the heavy calls are in flight.
    pub loaded: Pings,
    /// Heavy calls answered while the loaded pings ran, per second.
    pub heavy_rate: f64,
}

/// Both runs, measured on the embedded default (`up`: demo server and
/// `policies/default.toml`, audit off).
pub async fn measure_all() -> anyhow::Result<Vec<StallRun>> {
    let running = up::start(UpOptions {
        audit: AuditSpool::Off,
        ..UpOptions::default()
    })
    .await?;
    // The agents run on runtimes (and threads) of their own, as remote
    // agents would: what is measured is the relay's and the gateway's
    // workers. The probe runs at normal priority. The heavy agents run
    // twice: at the bulk threads' lower priority (encoding and decoding
    // 1 MiB messages is the agents' machines' work, not this one's), and at
    // normal priority, competing with the gateway for these two cores.
    let url = running
        .servers
        .get(up::DEMO_SERVER)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no demo server"))?;
    let token = running.token.clone();
    let mut runs = Vec::new();
    for remote_like in [true, false] {
        let probe = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-probe")
            .enable_all()
            .build()?;
        let mut load = tokio::runtime::Builder::new_multi_thread();
        load.worker_threads(1)
            .thread_name("bench-load")
            .enable_all();
        if remote_like {
            load.on_thread_start(portcullis::bulk::lower_priority);
        }
        let load = load.build()?;
        let handle = load.handle().clone();
        let (url, token) = (url.clone(), token.clone());
        let measured = probe
            .spawn(async move { measure(&url, token.as_deref(), &handle).await })
            .await;
        probe.shutdown_background();
        load.shutdown_background();
        let (quiet, loaded, done, elapsed) = measured??;
        runs.push(StallRun {
            remote_like,
            quiet: Pings::of(&quiet),
            loaded: Pings::of(&loaded),
            heavy_rate: done as f64 / elapsed.as_secs_f64(),
        });
    }
    running.stop().await;
    Ok(runs)
}

/// Pings alone, then pings while heavy calls are in flight: the two sets of
/// samples, the heavy calls answered and the time they had.
async fn measure(
    url: &str,
    token: Option<&str>,
    load: &tokio::runtime::Handle,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, usize, Duration)> {
    let client = || async {
        let mut c = McpClient::new(url, token);
        c.initialize().await.map(|_| c)
    };
    let mut args = Map::new();
    for i in 0..HEAVY_KEYS {
        args.insert(format!("k{i:06}"), Value::from(i));
    }
    args.insert("query".into(), Value::from("refund"));
    let args = Arc::new(Value::Object(args));
    let mut probe = client().await?;
    for _ in 0..50 {
        probe.request("ping", json!({})).await?;
    }
    let quiet = pings(&mut probe).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let heavy_done = Arc::new(AtomicUsize::new(0));
    let heavy_refused = Arc::new(AtomicUsize::new(0));
    let mut heavy = Vec::new();
    for _ in 0..HEAVY_IN_FLIGHT {
        let (stop, done, args) = (stop.clone(), heavy_done.clone(), args.clone());
        let refused = heavy_refused.clone();
        let (url, token) = (url.to_owned(), token.map(str::to_owned));
        heavy.push(load.spawn(async move {
            let mut c = McpClient::new(&url, token.as_deref());
            if c.initialize().await.is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                match c.call_tool("search_tickets", (*args).clone()).await {
                    Ok(reply) if reply.get("result").is_some() => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => {
                        // Answered, but not with the tool's result: the
                        // row would measure refusals, not the work.
                        tracing::warn!(%reply, "a heavy call was not served");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    // Let every heavy call be in flight before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = heavy_done.load(Ordering::Relaxed);
    let started = Instant::now();
    let loaded = pings(&mut probe).await?;
    let elapsed = started.elapsed();
    let during = heavy_done.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for h in heavy {
        let _ = h.await;
    }
    let refused = heavy_refused.load(Ordering::Relaxed);
    if refused > 0 {
        anyhow::bail!("{refused} heavy calls were answered with an error, not served");
    }
    Ok((quiet, loaded, during, elapsed))
}

async fn pings(c: &mut McpClient) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(PINGS);
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..PINGS {
        tick.tick().await;
        let t = Instant::now();
        c.request("ping", json!({})).await?;
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    Ok(samples)
}
