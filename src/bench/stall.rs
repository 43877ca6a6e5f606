//! The head-of-line table of `portcullis bench`: `ping` on its own session
//! while other agents' key-flooded 1 MiB calls are in flight through the
//! default policy, against the same pings with nothing else running. No
//! message may stall unrelated calls: the target is p99 ≤ 50 ms.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{demo_client, percentile, us};
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
    let mut args = Map::new();
    for i in 0..HEAVY_KEYS {
        args.insert(format!("k{i:06}"), Value::from(i));
    }
    args.insert("query".into(), Value::from("refund"));
    let args = Arc::new(Value::Object(args));
    let mut probe = demo_client(&running).await?;
    for _ in 0..50 {
        probe.request("ping", json!({})).await?;
    }
    let quiet = pings(&mut probe).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let heavy_done = Arc::new(AtomicUsize::new(0));
    let mut heavy = Vec::new();
    for _ in 0..HEAVY_IN_FLIGHT {
        let mut c = demo_client(&running).await?;
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
    running.stop().await;
    let done = heavy_done.load(Ordering::Relaxed);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nping on its own session, through the default policy (authz + redact)"
    );
    let _ = writeln!(out, "| while | p50 µs | p99 µs |");
    let _ = writeln!(out, "|---|---:|---:|");
    let row = |out: &mut String, label: &str, s: &[Duration]| {
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.0} |",
            us(percentile(s, 0.5)),
            us(percentile(s, 0.99))
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
