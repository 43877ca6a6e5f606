//! The report's layout, with fixed numbers.

use super::*;

fn latency(p50: u64, p99: u64) -> Latency {
    Latency {
        p50: Duration::from_micros(p50),
        p99: Duration::from_micros(p99),
    }
}

fn cost(p50: u64, p99: u64, rate: f64) -> PathCost {
    PathCost {
        latency: latency(p50, p99),
        rate,
    }
}

fn pings() -> Pings {
    let d = Duration::from_micros(900);
    Pings {
        p50: d,
        p90: d,
        p99: d,
        max: d,
        stalled: 0,
        count: 400,
    }
}

fn full() -> Report {
    let us = Duration::from_micros;
    Report {
        paths: Some(Paths {
            direct: cost(100, 200, 8000.0),
            tunnel: cost(500, 700, 2000.0),
            hop: cost(150, 250, 6000.0),
            two_hops: cost(200, 300, 4000.0),
        }),
        overheads: Some(Overheads {
            chain: Chain {
                direct: latency(110, 210),
                chained: cost(600, 800, 1600.0),
            },
            large: LargeResults {
                direct: latency(200, 300),
                bare: latency(700, 800),
                full: latency(900, 1000),
            },
            suite: vec![SuiteCost {
                label: "authz, 20 rules, tools/call",
                wasm: us(11),
                boundary: us(9),
            }],
            host: HostCosts {
                one: us(7),
                three: us(25),
            },
            audit: AuditCosts {
                append: us(10),
                durable_rate: 25000.0,
                export_call: us(27),
                exported_rate: 11000.0,
            },
        }),
        parse: Some(vec![ParseRow {
            label: "one flat object",
            bytes: 1000085,
            fold_on: Duration::from_millis(150),
            fold_off: Duration::from_millis(130),
            value: Duration::from_millis(75),
        }]),
        stall: Some(vec![StallRun {
            remote_like: true,
            quiet: pings(),
            loaded: pings(),
            heavy_rate: 1.5,
        }]),
        idle: Some(IdleTunnels {
            tunnels: 1000,
            per_tunnel_kib: 68.5,
        }),
    }
}

#[test]
fn a_full_report_prints_its_tables_in_order_one_blank_line_apart() {
    let text = report(&full());
    let starts: Vec<&str> = text
        .split("\n\n")
        .map(|block| block.lines().next().unwrap_or_default())
        .collect();
    assert_eq!(
        starts,
        [
            "tools/call, 1024 B arguments, demo upstream on loopback",
            "| standard plugin, realistic message | Wasm p50 µs | of which boundary (no-op plugin, same input) |",
            "| plugin host, 1 KiB message | p50 µs |",
            "| audit spool | |",
            "| 100,000-key message, interleaved medians | bytes | Message::parse, case fold on, ms | fold off, ms | serde_json::Value, ms | fold on / Value |",
            "ping on its own session, through the default policy (authz + redact)",
            "| idle tunnels | connections each | relay RSS added per tunnel (gateways in a child process) |",
        ]
    );
    assert!(text.ends_with("KiB (target ≤ 64 KiB) |\n"), "{text}");
}

#[test]
fn added_rows_subtract_the_path_measured_beside() {
    let text = report(&full());
    for row in [
        "| added by Portcullis | 400 (target ≤ 150) | 500 | 0.25× direct (target ≥ 0.5×) |",
        "| reference: one bare HTTP/1.1 forwarding hop (hyper, no TLS, no parsing) | 150 | 250 | 6000 (0.75× direct) |",
        "| added with the chain (against direct measured beside it, p50 110) | 490 (target ≤ 200) | 590 | 0.20× direct |",
        "| added by the default chain | 200 (target ≤ 100) | 200 | |",
        "| one flat object | 1000085 | 150.00 | 130.00 | 75.00 | 2.00× (target ≤ 3×) |",
    ] {
        assert!(text.lines().any(|l| l == row), "no {row} in\n{text}");
    }
}

#[test]
fn a_part_run_alone_prints_only_its_table() {
    let full = full();
    let memory = report(&Report {
        idle: full.idle,
        ..Report::default()
    });
    assert!(memory.starts_with("| idle tunnels |"), "{memory}");
    assert_eq!(memory.lines().count(), 3);
    let paths = report(&Report {
        paths: full.paths,
        ..Report::default()
    });
    assert_eq!(paths.lines().count(), 8, "{paths}");
    assert!(!paths.contains("\n\n"), "{paths}");
}
