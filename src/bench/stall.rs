//! The head-of-line table of `portcullis bench`: `ping` on its own session
//! while other agents' key-flooded 1 MiB calls are in flight through the
//! default policy, against the same pings with nothing else running. No
//! message may stall unrelated calls: the target is p99 ≤ 50 ms.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{percentile, us};
use crate::client::McpClient;
use crate::up::{self, UpOptions};

/// Heavy calls kept in flight at once (each agent sends its next when the
/// last is answered).
const HEAVY_IN_FLIGHT: usize = 4;
/// Keys in each heavy call's arguments (about 1 MiB of JSON).
const HEAVY_KEYS: usize = 100_000;
/// Pings measured per phase.
const PINGS: usize = 400;

/// The table, measured on the embedded default (`up`: demo server and
/// `policies/default.toml`, audit off).
pub async fn table() -> anyhow::Result<String> {
    let running = up::start(UpOptions {
        no_audit: true,
        ..UpOptions::default()
    })
    .await?;
    // The agents run on a runtime (and thread) of their own, as remote
    // agents would: what is measured is the relay's and the gateway's
    // workers, not the load generator's JSON encoding.
    let agents = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-agents")
        .enable_all()
        .build()?;
    let url = running
        .servers
        .get(up::DEMO_SERVER)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no demo server"))?;
    let token = running.token.clone();
    let measured = agents
        .spawn(async move { measure(&url, token.as_deref()).await })
        .await;
    agents.shutdown_background();
    running.stop().await;
    let (quiet, loaded, done, elapsed) = measured??;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nping on its own session, through the default policy (authz + redact)"
    );
    let _ = writeln!(
        out,
        "| while | p50 µs | p90 µs | p99 µs | max µs | > 50 ms |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let row = |out: &mut String, label: &str, s: &[Duration]| {
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {} of {} |",
            us(percentile(s, 0.5)),
            us(percentile(s, 0.9)),
            us(percentile(s, 0.99)),
            us(s.last().copied().unwrap_or_default()),
            s.iter().filter(|d| **d > Duration::from_millis(50)).count(),
            s.len()
        );
    };
    row(&mut out, "nothing else runs", &quiet);
    row(
        &mut out,
        &format!(
            "{HEAVY_IN_FLIGHT} other agents' 1 MiB calls of {HEAVY_KEYS} keys are in flight ({:.1} answered/s; target p99 ≤ 50 ms)",
            done as f64 / elapsed.as_secs_f64()
        ),
        &loaded,
    );
    Ok(out)
}

/// Pings alone, then pings while heavy calls are in flight: the two sets of
/// samples, the heavy calls answered and the time they had.
async fn measure(
    url: &str,
    token: Option<&str>,
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
    let mut heavy = Vec::new();
    for _ in 0..HEAVY_IN_FLIGHT {
        let mut c = client().await?;
        let (stop, done, args) = (stop.clone(), heavy_done.clone(), args.clone());
        heavy.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if c.call_tool("search_tickets", (*args).clone())
                    .await
                    .is_err()
                {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let every heavy call be in flight before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let loaded = pings(&mut probe).await?;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in heavy {
        let _ = h.await;
    }
    Ok((quiet, loaded, heavy_done.load(Ordering::Relaxed), elapsed))
}

async fn pings(c: &mut crate::client::McpClient) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        c.request("ping", json!({})).await?;
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    Ok(samples)
}
