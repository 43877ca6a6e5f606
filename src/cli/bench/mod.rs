//! `portcullis bench`: the full path (agent → relay → tunnel → gateway →
//! upstream) against the same upstream called directly, in one run, plus the
//! relay's memory per idle tunnel and the cost of parsing a key-flooded
//! message ([`parse`]). Each part measures into a struct of numbers;
//! [`render`] turns them into the printed tables. Targets are checked by
//! reading the tables, not by timing assertions in tests.

use anyhow::Result;

mod audit;
mod host;
mod idle;
mod parse;
mod paths;
mod plugins;
mod processes;
mod render;
mod stall;
mod stats;

pub use idle::{GatewaysArgs, run_gateways};
pub use processes::{ByteTunnelArgs, run_byte_tunnel, run_upstream};

/// The service name the benchmark reports its telemetry under.
const SERVICE: &str = "portcullis-bench";

/// Benchmark sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
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
    /// Runs only the process table: relay, gateway, `up`, the upstream and a
    /// reference encrypted byte tunnel as separate processes, with each
    /// path's CPU time and context switches per call.
    #[arg(long, conflicts_with_all = ["memory_only", "path_only", "parse_only", "stall_only"])]
    pub processes: bool,
    /// Rounds of the process table (the paths interleaved in each).
    #[arg(long, default_value_t = processes::DEFAULT_ROUNDS)]
    pub rounds: usize,
    /// With `--processes`: another build of portcullis (e.g. the commit
    /// before a change) whose relay and gateway run the bare path as one
    /// more row of the same run, interleaved with this build's: an A/B on
    /// one machine state.
    #[arg(long, requires = "processes")]
    pub baseline: Option<std::path::PathBuf>,
}

/// The relay's RSS added per idle tunnel.
#[derive(Debug, Clone, Copy)]
pub struct IdleTunnels {
    pub tunnels: usize,
    pub per_tunnel_kib: f64,
}

/// What the chain, the plugins and the audit trail cost: the rest of the
/// full run after the first table's paths.
#[derive(Debug, Clone)]
pub struct Overheads {
    pub chain: paths::Chain,
    pub large: paths::LargeResults,
    pub suite: Vec<plugins::SuiteCost>,
    pub host: host::HostCosts,
    pub audit: audit::AuditCosts,
}

/// What one run measured; a part is absent when the flags skipped it.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub paths: Option<paths::Paths>,
    pub overheads: Option<Overheads>,
    pub parse: Option<Vec<parse::ParseRow>>,
    pub stall: Option<Vec<stall::StallRun>>,
    pub idle: Option<IdleTunnels>,
}

/// Runs the benchmark and prints its tables. It measures with the metrics
/// pipeline a gateway runs; the client runs on the runtime's workers like
/// every other task, not on the thread that called.
pub async fn run(args: Args) -> Result<()> {
    let _telemetry = portcullis::telemetry::init(SERVICE)?;
    if args.processes {
        let rows = tokio::spawn(processes::measure(
            args.calls,
            args.calls_per_task,
            args.rounds,
            args.baseline,
        ))
        .await??;
        println!("{}", processes::render(&rows));
        return Ok(());
    }
    let report = tokio::spawn(measure(args)).await??;
    println!("{}", render::report(&report));
    Ok(())
}

/// Measures what `opts` asks for.
async fn measure(opts: Args) -> Result<Report> {
    if opts.parse_only {
        let rows = tokio::task::spawn_blocking(parse::measure_all).await??;
        return Ok(Report {
            parse: Some(rows),
            ..Report::default()
        });
    }
    if opts.stall_only {
        return Ok(Report {
            stall: Some(stall::measure_all().await?),
            ..Report::default()
        });
    }
    // The relay's memory per idle tunnel is measured first, while the
    // process has allocated little: after the other phases the allocator
    // holds freed pages that the tunnels may or may not reuse, which moved
    // the figure between 23 and 69 KiB from run to run.
    let idle = if opts.tunnels > 0 && !opts.path_only {
        Some(IdleTunnels {
            tunnels: opts.tunnels,
            per_tunnel_kib: idle::measure(opts.tunnels).await?,
        })
    } else {
        None
    };
    if opts.memory_only {
        anyhow::ensure!(idle.is_some(), "--memory-only needs --tunnels above 0");
        return Ok(Report {
            idle,
            ..Report::default()
        });
    }
    let (paths, chain) =
        paths::measure_paths(opts.calls, opts.calls_per_task, opts.path_only).await?;
    let Some(chain) = chain else {
        return Ok(Report {
            paths: Some(paths),
            ..Report::default()
        });
    };
    let overheads = Overheads {
        chain,
        large: paths::measure_large(opts.calls).await?,
        suite: plugins::plugin_suite_costs(opts.calls, "").await?,
        host: host::measure(opts.calls).await?,
        audit: audit::measure().await?,
    };
    Ok(Report {
        paths: Some(paths),
        overheads: Some(overheads),
        parse: Some(tokio::task::spawn_blocking(parse::measure_all).await??),
        stall: Some(stall::measure_all().await?),
        idle,
    })
}
