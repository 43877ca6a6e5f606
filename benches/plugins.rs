//! `cargo bench --bench plugins`: each standard plugin on a realistic
//! message (authz with 20 rules, Cedar with 20 policies, Rego with 20 rules,
//! redact with every
//! detector on a 4 KiB result, schema-guard on a typical tool) through the
//! Wasm host, next to the same plugin's logic compiled natively and called
//! directly. The cases are `portcullis bench`'s (`src/cli/bench/plugins.rs`,
//! included here by path). Prints a table; the targets are read, not asserted.
//! Beside each plugin the no-op plugin is called on the same context and
//! message (interleaved, call by call): the boundary, what crossing into a
//! component and back costs before any plugin logic runs. The last column
//! is the plugin's own code in Wasm against the same code natively.
//!
//! `cargo bench --bench plugins -- [--calls N] [--rounds R] [FILTER]` runs
//! R rounds (default 5) of N calls per side (default 5000) of the cases
//! whose label contains FILTER, e.g. to profile one plugin. Within a round
//! the Wasm call, the no-op call and the native call take turns, call by
//! call, so a noisy stretch of the host slows all three alike; the table
//! shows the medians over the rounds and the lowest and highest ratio.

// A build script and test harnesses fail by panicking: the crate's panic
// lints (Cargo.toml `[lints]`) are for the code that serves traffic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

// The binary's benchmark modules, shared by path: the benchmark is
// binary-side code, not library API.
#[path = "../src/cli/bench/plugins.rs"]
#[allow(dead_code)] // what only the binary's report uses
mod plugins;
#[path = "../src/cli/bench/stats.rs"]
mod stats;

use plugins::{PluginCase, plugin_cases, plugin_suite_costs_beside};
use portcullis::mcp::{Direction, Kind, MessageContext};
use portcullis_plugin_sdk as sdk;

const DEFAULT_CALLS: usize = 5000;
const DEFAULT_ROUNDS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn sdk_context(c: &MessageContext) -> sdk::Context {
    sdk::Context {
        direction: match c.direction {
            Direction::ToServer => sdk::Direction::ToServer,
            Direction::ToClient => sdk::Direction::ToClient,
        },
        tunnel: c.tunnel.clone(),
        server: c.server.clone(),
        kind: match c.kind {
            Kind::Request => sdk::MessageKind::Request,
            Kind::Notification => sdk::MessageKind::Notification,
            Kind::Response => sdk::MessageKind::Response,
            Kind::Error => sdk::MessageKind::Error,
        },
        method: c.method.clone(),
        target: c.target.clone(),
        request_id: c.request_id.clone(),
        session_id: c.session_id.clone(),
        protocol_version: c.protocol_version.clone(),
        principal: sdk::Principal {
            subject: c.principal.subject.clone(),
            groups: c.principal.groups.clone(),
            claims: "{}".into(),
        },
    }
}

/// The host's catalog, natively: definition texts and their revisions in a
/// map, a lookup per question as `Catalog::revision` and `Catalog::tool` do.
struct NativeCatalog(std::collections::HashMap<String, (u64, String)>);

impl schema_guard::Definitions for NativeCatalog {
    fn revision(&self, tool: &str) -> schema_guard::Revision {
        self.0
            .get(tool)
            .map_or(schema_guard::Revision::Unknown, |(r, _)| {
                schema_guard::Revision::At(*r)
            })
    }
    fn text(&self, tool: &str) -> Option<String> {
        self.0.get(tool).map(|(_, t)| t.clone())
    }
}

type Decide = Box<dyn Fn(&sdk::Context, &str) -> sdk::Verdict>;

/// The native decider for a case's plugin.
fn native(plugin: &str, config: &str, tools: Option<&serde_json::Value>) -> Decide {
    let ok = |r: Result<Decide, String>| r.unwrap_or_else(|e| panic!("{plugin}: {e}"));
    match plugin {
        "authz" => ok(authz::native(config).map(|f| Box::new(f) as Decide)),
        "cedar" => ok(cedar::native(config).map(|f| Box::new(f) as Decide)),
        "rego" => ok(rego::native(config).map(|f| Box::new(f) as Decide)),
        "redact" => ok(redact::native(config).map(|f| Box::new(f) as Decide)),
        "schema-guard" => {
            let texts = tools
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .zip(1..)
                .filter_map(|(t, rev)| Some((t["name"].as_str()?.to_owned(), (rev, t.to_string()))))
                .collect();
            ok(schema_guard::native(config, NativeCatalog(texts)).map(|f| Box::new(f) as Decide))
        }
        other => panic!("no native build of {other}"),
    }
}

/// One native call of the case's plugin, checked once to allow the message
/// as the Wasm build does.
fn native_call(case: &PluginCase) -> Box<dyn FnMut()> {
    let decide = native(case.plugin, &case.config, case.tools.as_ref());
    let ctx = sdk_context(&case.ctx);
    let first = decide(&ctx, &case.message);
    assert!(
        !matches!(first.decision, sdk::Decision::Deny(_)),
        "{}: the benchmark message was denied natively: {first:?}",
        case.label
    );
    let message = case.message.clone();
    Box::new(move || {
        std::hint::black_box(decide(&ctx, std::hint::black_box(&message)));
    })
}

fn main() {
    let mut calls = DEFAULT_CALLS;
    let mut rounds = DEFAULT_ROUNDS;
    let mut filter = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--calls" => {
                calls = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--calls takes a number");
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds takes a number");
            }
            // cargo passes `--bench` to harness = false targets.
            "--bench" => {}
            other => filter = other.to_owned(),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cases: Vec<PluginCase> = plugin_cases()
        .into_iter()
        .filter(|c| c.label.contains(&filter))
        .collect();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // Per case: (Wasm, boundary, native) µs of each round.
    let mut rows: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds.max(1) {
        // The native build is called right after each Wasm and no-op call.
        let costs = runtime
            .block_on(plugin_suite_costs_beside(calls, &filter, native_call))
            .expect("the Wasm side");
        for ((case, (cost, native)), row) in cases.iter().zip(costs).zip(rows.iter_mut()) {
            assert_eq!(case.label, cost.label);
            row.push((us(cost.wasm), us(cost.boundary), us(native)));
        }
    }
    println!(
        "| standard plugin, realistic message | Wasm p50 µs | boundary p50 µs | native p50 µs | Wasm / native (lowest–highest of {rounds} rounds) | target | (Wasm − boundary) / native |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (case, row) in cases.iter().zip(rows) {
        let col = |f: fn(&(f64, f64, f64)) -> f64| median(row.iter().map(f).collect());
        let ratios: Vec<f64> = row.iter().map(|(w, _, n)| w / n).collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        let target = if case.plugin == "redact" { 3.0 } else { 2.0 };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2}× ({lo:.2}–{hi:.2}) | ≤ {target}× | {:.2}× |",
            case.label,
            col(|r| r.0),
            col(|r| r.1),
            col(|r| r.2),
            median(ratios.clone()),
            median(row.iter().map(|(w, b, n)| (w - b) / n).collect()),
        );
    }
}
