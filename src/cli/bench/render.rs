//! The printed tables of `portcullis bench`, from what was measured.
//! Markdown, so the README's benchmark section can hold them as printed.

use std::fmt::Write as _;
use std::time::Duration;

use super::audit::AuditCosts;
use super::host::HostCosts;
use super::parse::ParseRow;
use super::paths::{ARG_BYTES, CONCURRENCY, Chain, LargeResults, Latency, PathCost, Paths};
use super::plugins::SuiteCost;
use super::stall::{HEAVY_IN_FLIGHT, HEAVY_KEYS, Pings, StallRun};
use super::{IdleTunnels, Overheads, Report};

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The whole report: each measured part in the order of the full run.
pub fn report(r: &Report) -> String {
    let mut out = String::new();
    if let Some(p) = &r.paths {
        out.push_str(&paths(p));
        if let Some(o) = &r.overheads {
            out.push_str(&overheads(p.direct.rate, o));
        }
    }
    if let Some(rows) = &r.parse {
        out.push_str(&parse(rows));
    }
    if let Some(runs) = &r.stall {
        out.push_str(&stall(runs));
    }
    if let Some(idle) = &r.idle {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&idle_tunnels(idle));
    }
    out
}

/// The first table: direct, the tunnel, what Portcullis adds, and the two
/// reference rows of bare hops.
fn paths(p: &Paths) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tools/call, {ARG_BYTES} B arguments, demo upstream on loopback"
    );
    let _ = writeln!(
        out,
        "| path | p50 µs (c=1) | p99 µs (c=1) | calls/s (c={CONCURRENCY}) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    path_row(&mut out, "direct", &p.direct, "");
    path_row(&mut out, "relay → tunnel → gateway", &p.tunnel, "");
    let _ = writeln!(
        out,
        "| added by Portcullis | {:.0} (target ≤ 150) | {:.0} | {:.2}× direct (target ≥ 0.5×) |",
        us(p.tunnel.latency.p50.saturating_sub(p.direct.latency.p50)),
        us(p.tunnel.latency.p99.saturating_sub(p.direct.latency.p99)),
        p.tunnel.rate / p.direct.rate
    );
    let dt = p.direct.rate;
    path_row(
        &mut out,
        "reference: one bare HTTP/1.1 forwarding hop (hyper, no TLS, no parsing)",
        &p.hop,
        &format!(" ({:.2}× direct)", p.hop.rate / dt),
    );
    path_row(
        &mut out,
        "reference: two bare hops in a row (the fewest a relay and a gateway can be)",
        &p.two_hops,
        &format!(" ({:.2}× direct)", p.two_hops.rate / dt),
    );
    out
}

/// `| label | p50 | p99 | rate{rate_note} |`.
fn path_row(out: &mut String, label: &str, c: &PathCost, rate_note: &str) {
    let _ = writeln!(
        out,
        "| {label} | {:.0} | {:.0} | {:.0}{rate_note} |",
        us(c.latency.p50),
        us(c.latency.p99),
        c.rate
    );
}

/// The rows after the first table and the plugin, host and audit tables,
/// each followed by a blank line. `direct_rate` is the first table's.
fn overheads(direct_rate: f64, o: &Overheads) -> String {
    let mut out = chain(direct_rate, &o.chain);
    out.push_str(&large(&o.large));
    out.push('\n');
    out.push_str(&suite(&o.suite));
    out.push('\n');
    out.push_str(&host(&o.host));
    out.push('\n');
    out.push_str(&audit(&o.audit));
    out.push('\n');
    out
}

/// The chain's rows of the first table.
fn chain(direct_rate: f64, c: &Chain) -> String {
    let mut out = String::new();
    path_row(
        &mut out,
        "tunnel + 3 no-op plugins (both directions) + audit spool",
        &c.chained,
        "",
    );
    let _ = writeln!(
        out,
        "| added with the chain (against direct measured beside it, p50 {:.0}) | {:.0} (target ≤ 200) | {:.0} | {:.2}× direct |",
        us(c.direct.p50),
        us(c.chained.latency.p50.saturating_sub(c.direct.p50)),
        us(c.chained.latency.p99.saturating_sub(c.direct.p99)),
        c.chained.rate / direct_rate
    );
    out
}

/// The 4 KiB rows of the first table.
fn large(l: &LargeResults) -> String {
    let mut out = String::new();
    let row = |out: &mut String, label: &str, l: &Latency| {
        let _ = writeln!(out, "| {label} | {:.0} | {:.0} | |", us(l.p50), us(l.p99));
    };
    row(&mut out, "direct, 4 KiB result", &l.direct);
    row(&mut out, "tunnel, 4 KiB result, no policy", &l.bare);
    row(
        &mut out,
        "tunnel, 4 KiB result, full default chain (authz, redact)",
        &l.full,
    );
    let _ = writeln!(
        out,
        "| added by the default chain | {:.0} (target ≤ 100) | {:.0} | |",
        us(l.full.p50.saturating_sub(l.bare.p50)),
        us(l.full.p99.saturating_sub(l.bare.p99))
    );
    out
}

/// Each standard plugin through the host, and its boundary.
fn suite(costs: &[SuiteCost]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| standard plugin, realistic message | Wasm p50 µs | of which boundary (no-op plugin, same input) |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for c in costs {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} |",
            c.label,
            us(c.wasm),
            us(c.boundary)
        );
    }
    out
}

/// The plugin host alone.
fn host(h: &HostCosts) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| plugin host, 1 KiB message | p50 µs |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| one no-op plugin call | {:.1} (target ≤ 5) |",
        us(h.one)
    );
    let _ = writeln!(
        out,
        "| 3-plugin no-op chain | {:.1} (target ≤ 15) |",
        us(h.three)
    );
    out
}

/// The audit spool, alone and exported.
fn audit(a: &AuditCosts) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| audit spool | |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| append on the hot path (best effort), p50 | {:.1} µs (target ≤ 10) |",
        us(a.append)
    );
    let _ = writeln!(
        out,
        "| sustained, durable (fsync per batch) | {:.0} records/s (target ≥ 20,000) |",
        a.durable_rate
    );
    let _ = writeln!(
        out,
        "| audit work per call with OTLP export on (2 records, metrics), p50 | {:.1} µs (target ≤ 10) |",
        us(a.export_call)
    );
    let _ = writeln!(
        out,
        "| sustained, durable and acknowledged by an OTLP/HTTP collector | {:.0} records/s |",
        a.exported_rate
    );
    out
}

/// The parse table.
fn parse(rows: &[ParseRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| 100,000-key message, interleaved medians | bytes | Message::parse, case fold on, ms | fold off, ms | serde_json::Value, ms | fold on / Value |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2}× (target ≤ 3×) |",
            r.label,
            r.bytes,
            ms(r.fold_on),
            ms(r.fold_off),
            ms(r.value),
            r.fold_on.as_secs_f64() / r.value.as_secs_f64().max(f64::MIN_POSITIVE)
        );
    }
    out
}

/// The head-of-line table, after a blank line.
fn stall(runs: &[StallRun]) -> String {
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
    let row = |out: &mut String, label: &str, s: &Pings| {
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {} of {} |",
            us(s.p50),
            us(s.p90),
            us(s.p99),
            us(s.max),
            s.stalled,
            s.count
        );
    };
    for run in runs {
        let load = if run.remote_like {
            "at nice 10, as remote agents"
        } else {
            "at normal priority, sharing these cores"
        };
        row(
            &mut out,
            &format!("nothing else runs (then the load {load})"),
            &run.quiet,
        );
        row(
            &mut out,
            &format!(
                "{HEAVY_IN_FLIGHT} other agents' 1 MiB calls of {HEAVY_KEYS} keys in flight, the load generator {load} ({:.1} answered/s; target p99 ≤ 50 ms)",
                run.heavy_rate
            ),
            &run.loaded,
        );
    }
    out
}

/// The idle-tunnel memory table.
fn idle_tunnels(i: &IdleTunnels) -> String {
    format!(
        "| idle tunnels | connections each | relay RSS added per tunnel (gateways in a child process) |\n\
         |---:|---:|---:|\n\
         | {} | {} | {:.1} KiB (target ≤ 64 KiB) |\n",
        i.tunnels,
        portcullis::limits::DEFAULT_TUNNEL_CONNECTIONS,
        i.per_tunnel_kib
    )
}

#[cfg(test)]
mod tests;
