//! `portcullis bench --processes`: the data path measured the way users run
//! it. The upstream, the relay, the gateway, `up`, and the two ends of a
//! reference encrypted byte tunnel each run as a process of their own on
//! loopback; this process is only the load generator (keep-alive HTTP/1.1,
//! the MCP client of the other tables).
//!
//! Per path: p50 and p99 at concurrency 1, calls/s at [`CONCURRENCY`], and
//! what the processes on the path spent per call at that concurrency: CPU
//! time (utime + stime of `/proc/PID/stat`, every thread, the figure that
//! does not depend on how fast this machine is) and context switches (of
//! every thread, `/proc/PID/task/*/status`). The paths are measured
//! interleaved, round by round, starting with a different one each round;
//! the table shows each figure's median over the rounds and its spread.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use portcullis::client::McpClient;
use portcullis::secret;
use portcullis::tls::{self, GeneratedCa};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::paths::{ARG_BYTES, CONCURRENCY};
use super::stats::percentile;

/// Rounds when `--rounds` is not given.
pub const DEFAULT_ROUNDS: usize = 3;
/// How long a process has to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Sequential calls per path before the first round.
const WARMUP_CALLS: usize = 500;

/// The paths compared, in the table's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The load generator straight to the upstream.
    Direct,
    /// Two processes: a TCP listener that carries each connection over TLS
    /// to the other end, which hands it to the upstream. Nothing parsed:
    /// the floor of any encrypted tunnel on this machine.
    ByteTunnel,
    /// `portcullis relay` and `portcullis gateway`, no policy, no audit.
    Bare,
    /// The same with the default policy and both audit spools, best effort.
    Chain,
    /// The default policy and both audit spools in strict mode.
    Strict,
    /// `portcullis up --no-policy --no-audit --no-demo`: relay and gateway
    /// in one process, otherwise as [`Route::Bare`].
    Up,
    /// [`Route::Bare`] run by the build given with `--baseline`.
    Baseline,
}

impl Route {
    pub const ALL: [Route; 6] = [
        Route::Direct,
        Route::ByteTunnel,
        Route::Bare,
        Route::Chain,
        Route::Strict,
        Route::Up,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct (load generator → upstream)",
            Route::ByteTunnel => {
                "reference: encrypted byte tunnel (TLS, copy_bidirectional; 2 processes)"
            }
            Route::Bare => "relay + gateway (2 processes), no policy, no audit",
            Route::Chain => "relay + gateway, default chain, audit best effort",
            Route::Strict => "relay + gateway, default chain, audit strict",
            Route::Up => "`up --no-policy --no-audit` (relay and gateway in 1 process)",
            Route::Baseline => {
                "A/B: relay + gateway, no policy, no audit, run by the --baseline build"
            }
        }
    }
}

/// One round's figures for one path.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub p50: Duration,
    pub p99: Duration,
    /// Calls/s at [`CONCURRENCY`].
    pub rate: f64,
    /// CPU time per call of the path's processes (not the upstream's, not
    /// the load generator's), at [`CONCURRENCY`].
    pub cpu_per_call: Duration,
    /// Context switches per call of the path's processes.
    pub switches_per_call: f64,
}

/// A path's samples, one per round.
#[derive(Debug, Clone)]
pub struct RouteRow {
    pub route: Route,
    pub samples: Vec<Sample>,
}

/// A child process, killed when dropped.
struct Child {
    child: tokio::process::Child,
    pid: u32,
}

impl Child {
    /// Starts `portcullis ARGS`, reading its stderr until a line contains
    /// every one of `ready`; returns it with that line.
    async fn start(args: &[&str], ready: &[&str]) -> Result<(Child, String)> {
        Child::start_reading(&std::env::current_exe()?, args, ready, false).await
    }

    /// [`Child::start`], reading stdout instead when `stdout` (`up --json`
    /// prints its line there).
    async fn start_reading(
        exe: &Path,
        args: &[&str],
        ready: &[&str],
        stdout: bool,
    ) -> Result<(Child, String)> {
        let (out, err) = if stdout {
            (Stdio::piped(), Stdio::null())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting portcullis {}", args.join(" ")))?;
        let pid = child.id().context("child has no pid")?;
        let stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if stdout {
            Box::new(child.stdout.take().context("child stdout")?)
        } else {
            Box::new(child.stderr.take().context("child stderr")?)
        };
        let mut lines = BufReader::new(stream).lines();
        let line = tokio::time::timeout(READY_WITHIN, async {
            while let Some(line) = lines.next_line().await? {
                if ready.iter().all(|r| line.contains(r)) {
                    return Ok(line);
                }
            }
            bail!("portcullis {} exited before it was ready", args.join(" "))
        })
        .await
        .with_context(|| {
            format!(
                "portcullis {} not ready within {READY_WITHIN:?}",
                args.join(" ")
            )
        })??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((Child { child, pid }, line))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What the kernel counted for a set of processes.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: Duration,
    switches: u64,
}

/// CPU time (user + system, every thread, exited ones too) and context
/// switches (voluntary and not, live threads) of `pid`.
fn usage(pid: u32) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("short /proc stat")?
            .parse()
            .context("/proc stat field")
    };
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    let ticks = field(14)? + field(15)?;
    let cpu = Duration::from_nanos(ticks * 1_000_000_000 / hz);
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue; // the thread exited
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(Usage { cpu, switches })
}

fn total_usage(pids: &[u32]) -> Result<Usage> {
    let mut sum = Usage::default();
    for &pid in pids {
        let u = usage(pid)?;
        sum.cpu += u.cpu;
        sum.switches += u.switches;
    }
    Ok(sum)
}

/// A path ready to be called: an initialised client and the processes
/// whose cost is the path's.
struct Ready {
    route: Route,
    client: McpClient,
    pids: Vec<u32>,
    _children: Vec<Child>,
}

/// Everything the relays and gateways share: certificates, a tunnel
/// credential and an agent key, in `dir`.
struct Setup {
    dir: PathBuf,
    tunnel: String,
    token: String,
    key: String,
}

impl Setup {
    fn new() -> Result<Setup> {
        let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", secret::random_id()));
        std::fs::create_dir_all(&dir)?;
        let ca = GeneratedCa::new("bench CA")?;
        let id = ca.issue(&["localhost"])?;
        std::fs::write(dir.join("ca.crt"), ca.pem())?;
        let chain = id.chain_pem();
        std::fs::write(dir.join("relay.crt"), chain)?;
        std::fs::write(dir.join("relay.key"), id.key_pem())?;
        let setup = Setup {
            dir,
            tunnel: secret::random_id(),
            token: secret::generate(secret::TUNNEL_TOKEN_PREFIX),
            key: secret::generate(secret::AGENT_KEY_PREFIX),
        };
        std::fs::write(setup.dir.join("token"), &setup.token)?;
        std::fs::write(
            setup.dir.join("policy.toml"),
            portcullis::up::DEFAULT_POLICY,
        )?;
        Ok(setup)
    }

    /// `portcullis relay` (audit spool in `audit` mode, or none); returns
    /// it with its tunnel and agent addresses.
    async fn relay(
        &self,
        exe: &Path,
        name: &str,
        audit: Option<&str>,
    ) -> Result<(Child, String, String)> {
        let audit = audit.map_or(String::new(), |mode| {
            format!("[audit]\ndir = \"{name}-audit\"\nmode = \"{mode}\"\n")
        });
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"[tunnel_listener]
listen = "127.0.0.1:0"
cert = "relay.crt"
key = "relay.key"
[agent_listener]
listen = "127.0.0.1:0"
{audit}
[[tunnels]]
id = "{tunnel}"
token_sha256 = "{token}"
[[agents]]
subject = "bench-agent"
groups = ["support"]
key_sha256 = "{key}"
tunnels = ["{tunnel}"]
"#,
                tunnel = self.tunnel,
                token = secret::digest_hex(&self.token),
                key = secret::digest_hex(&self.key),
            ),
        )?;
        let config = config.display().to_string();
        let (child, line) = Child::start_reading(
            exe,
            &["relay", "--config", &config],
            &["relay listening"],
            false,
        )
        .await?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .with_context(|| format!("no {name}= in {line:?}"))
        };
        Ok((child, field("tunnels")?, field("agents")?))
    }

    /// `portcullis gateway` for the tunnel at `relay`, serving `bench` from
    /// `upstream`, with the default policy and an audit spool in `audit`
    /// mode when given.
    async fn gateway(
        &self,
        exe: &Path,
        name: &str,
        relay: &str,
        upstream: &str,
        chain: Option<&str>,
    ) -> Result<Child> {
        let extra = chain.map_or(String::new(), |mode| {
            format!(
                "policy = \"policy.toml\"\n[audit]\ndir = \"{name}-audit\"\nmode = \"{mode}\"\n"
            )
        });
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"{extra}
[tunnel]
id = "{tunnel}"
token = {{ file = "token" }}
relays = ["{relay}"]
server_name = "localhost"
ca = "ca.crt"
[servers.bench]
url = "http://{upstream}/mcp"
"#,
                tunnel = self.tunnel,
            ),
        )?;
        let config = config.display().to_string();
        let (child, _) = Child::start_reading(
            exe,
            &["gateway", "--config", &config],
            &["tunnel connected"],
            false,
        )
        .await?;
        Ok(child)
    }

    fn url(&self, agents: &str) -> String {
        format!("http://{agents}/t/{}/bench/mcp", self.tunnel)
    }
}

/// A client with an initialised session on `url`.
async fn client(url: &str, key: Option<&str>) -> Result<McpClient> {
    let mut c = McpClient::new(url, key);
    // The tunnel may still be settling its second connection.
    let started = Instant::now();
    loop {
        match c.initialize().await {
            Ok(_) => return Ok(c),
            Err(e) if started.elapsed() > READY_WITHIN => bail!("{url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Starts every path's processes.
async fn start_all(setup: &Setup, baseline: Option<&Path>) -> Result<(Child, Vec<Ready>)> {
    let (upstream, line) = Child::start(&["bench-upstream"], &["bench upstream listening"]).await?;
    let upstream_addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .context("bench upstream did not say where it listens")?
        .to_owned();
    let mut ready = Vec::new();
    let this = std::env::current_exe()?;
    let mut routes = Route::ALL.to_vec();
    if baseline.is_some() {
        routes.push(Route::Baseline);
    }
    for route in routes {
        let (children, url, key) = match route {
            Route::Direct => (Vec::new(), format!("http://{upstream_addr}/mcp"), None),
            Route::ByteTunnel => {
                let dir = setup.dir.display().to_string();
                let (exit, line) = Child::start(
                    &[
                        "bench-byte-tunnel",
                        "exit",
                        "--to",
                        &upstream_addr,
                        "--dir",
                        &dir,
                    ],
                    &["byte tunnel listening"],
                )
                .await?;
                let exit_addr = listening_addr(&line)?;
                let (entry, line) = Child::start(
                    &[
                        "bench-byte-tunnel",
                        "entry",
                        "--to",
                        &exit_addr,
                        "--dir",
                        &dir,
                    ],
                    &["byte tunnel listening"],
                )
                .await?;
                let entry_addr = listening_addr(&line)?;
                (vec![exit, entry], format!("http://{entry_addr}/mcp"), None)
            }
            Route::Bare | Route::Chain | Route::Strict | Route::Baseline => {
                let (name, mode) = match route {
                    Route::Bare => ("bare", None),
                    Route::Baseline => ("baseline", None),
                    Route::Chain => ("chain", Some("best_effort")),
                    _ => ("strict", Some("strict")),
                };
                let exe = match (route, baseline) {
                    (Route::Baseline, Some(b)) => b,
                    _ => this.as_path(),
                };
                let (relay, tunnels, agents) =
                    setup.relay(exe, &format!("{name}-relay"), mode).await?;
                let gateway = setup
                    .gateway(
                        exe,
                        &format!("{name}-gateway"),
                        &tunnels,
                        &upstream_addr,
                        mode,
                    )
                    .await?;
                (
                    vec![relay, gateway],
                    setup.url(&agents),
                    Some(setup.key.clone()),
                )
            }
            Route::Up => {
                let server = format!("bench=http://{upstream_addr}/mcp");
                let (up, line) = Child::start_reading(
                    &this,
                    &[
                        "up",
                        "--json",
                        "--listen",
                        "127.0.0.1:0",
                        "--no-demo",
                        "--no-policy",
                        "--no-audit",
                        "--server",
                        &server,
                    ],
                    &["\"url\""],
                    true,
                )
                .await?;
                let v: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("up's JSON line: {line}"))?;
                let url = v
                    .pointer("/servers/bench")
                    .and_then(serde_json::Value::as_str)
                    .context("up named no bench url")?;
                let token = v
                    .get("token")
                    .and_then(serde_json::Value::as_str)
                    .context("up printed no token")?;
                (vec![up], url.to_owned(), Some(token.to_owned()))
            }
        };
        let client = client(&url, key.as_deref()).await?;
        ready.push(Ready {
            route,
            pids: children.iter().map(|c| c.pid).collect(),
            client,
            _children: children,
        });
    }
    Ok((upstream, ready))
}

fn listening_addr(line: &str) -> Result<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(str::to_owned)
        .with_context(|| format!("no addr= in {line:?}"))
}

/// The tool-call arguments every path carries.
fn args() -> serde_json::Value {
    json!({ "query": "x".repeat(ARG_BYTES) })
}

/// p50/p99 of `calls` sequential calls.
async fn latency(c: &mut McpClient, calls: usize) -> Result<(Duration, Duration)> {
    let args = args();
    let mut taken = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let r = c.call_tool("search_tickets", args.clone()).await?;
        taken.push(t.elapsed());
        anyhow::ensure!(r.get("result").is_some(), "call failed: {r}");
    }
    taken.sort();
    Ok((percentile(&taken, 0.5), percentile(&taken, 0.99)))
}

/// Calls/s from [`CONCURRENCY`] tasks of `per_task` calls each, with the
/// path's usage over exactly those calls.
async fn loaded(ready: &Ready, per_task: usize) -> Result<(f64, Usage)> {
    let args = Arc::new(args());
    let before = total_usage(&ready.pids)?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let mut c = ready.client.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let r = c.call_tool("search_tickets", (*args).clone()).await?;
                anyhow::ensure!(r.get("result").is_some(), "call failed: {r}");
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let after = total_usage(&ready.pids)?;
    let calls = (CONCURRENCY * per_task) as f64;
    Ok((
        calls / elapsed.as_secs_f64(),
        Usage {
            cpu: after.cpu.saturating_sub(before.cpu),
            switches: after.switches.saturating_sub(before.switches),
        },
    ))
}

/// Measures every [`Route`]: `rounds` rounds, each calling every path
/// `calls` times at c=1 and `per_task` times per task at c=32.
pub async fn measure(
    calls: usize,
    per_task: usize,
    rounds: usize,
    baseline: Option<PathBuf>,
) -> Result<Vec<RouteRow>> {
    let setup = Setup::new()?;
    let result = measure_in(&setup, calls, per_task, rounds, baseline.as_deref()).await;
    let _ = std::fs::remove_dir_all(&setup.dir);
    result
}

async fn measure_in(
    setup: &Setup,
    calls: usize,
    per_task: usize,
    rounds: usize,
    baseline: Option<&Path>,
) -> Result<Vec<RouteRow>> {
    let (_upstream, mut ready) = start_all(setup, baseline).await?;
    for r in ready.iter_mut() {
        latency(&mut r.client, WARMUP_CALLS).await?;
    }
    let mut rows: Vec<RouteRow> = ready
        .iter()
        .map(|r| RouteRow {
            route: r.route,
            samples: Vec::new(),
        })
        .collect();
    let n = ready.len();
    for round in 0..rounds.max(1) {
        for k in 0..n {
            let i = (k + round) % n;
            let (Some(r), Some(row)) = (ready.get_mut(i), rows.get_mut(i)) else {
                continue;
            };
            let (p50, p99) = latency(&mut r.client, calls).await?;
            let (rate, used) = loaded(r, per_task).await?;
            let total = (CONCURRENCY * per_task) as f64;
            row.samples.push(Sample {
                p50,
                p99,
                rate,
                cpu_per_call: used.cpu.div_f64(total),
                switches_per_call: used.switches as f64 / total,
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// The processes the benchmark starts (hidden subcommands)
// ---------------------------------------------------------------------------

/// `portcullis bench-upstream`: the demo MCP server alone, on a loopback
/// port it prints (`bench upstream listening addr=…`).
pub async fn run_upstream() -> Result<()> {
    let _telemetry = portcullis::telemetry::init(super::SERVICE)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "bench upstream listening");
    eprintln!("bench upstream listening addr={addr}");
    portcullis::demo::DemoServer::new()
        .serve(listener, Default::default())
        .await;
    Ok(())
}

/// Which end of the byte tunnel.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum End {
    /// Takes plain TCP connections and carries each over TLS to `--to`.
    Entry,
    /// Takes TLS connections and hands each to the plain TCP `--to`.
    Exit,
}

/// `portcullis bench-byte-tunnel`'s flags.
#[derive(Debug, clap::Args)]
pub struct ByteTunnelArgs {
    #[arg(value_enum)]
    end: End,
    /// Where each connection goes.
    #[arg(long)]
    to: String,
    /// The directory with `ca.crt`, `relay.crt` and `relay.key`.
    #[arg(long)]
    dir: PathBuf,
}

/// `portcullis bench-byte-tunnel`: one end of the reference tunnel, on a
/// loopback port it prints (`byte tunnel listening addr=…`). Each
/// connection is a TLS connection between the ends (TLS 1.3, rustls, as
/// the relay's tunnel listener), bytes copied both ways, nothing parsed.
pub async fn run_byte_tunnel(args: ByteTunnelArgs) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let to = args.to.clone();
    match args.end {
        End::Exit => {
            let id = tls::Identity::from_pem_files(
                &args.dir.join("relay.crt"),
                &args.dir.join("relay.key"),
            )?;
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&id, None, &[])?);
            eprintln!("byte tunnel listening addr={addr}");
            loop {
                let (tcp, _) = listener.accept().await?;
                let (acceptor, to) = (acceptor.clone(), to.clone());
                tokio::spawn(async move {
                    tcp.set_nodelay(true)?;
                    let mut tls = acceptor.accept(tcp).await?;
                    let mut up = TcpStream::connect(&to).await?;
                    up.set_nodelay(true)?;
                    tokio::io::copy_bidirectional(&mut tls, &mut up).await?;
                    Ok::<_, std::io::Error>(())
                });
            }
        }
        End::Entry => {
            let cas = tls::load_certs(&args.dir.join("ca.crt"))?;
            let connector =
                tokio_rustls::TlsConnector::from(tls::client_config(Some(&cas), None, &[])?);
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            eprintln!("byte tunnel listening addr={addr}");
            loop {
                let (mut tcp, _) = listener.accept().await?;
                let (connector, to, name) = (connector.clone(), to.clone(), name.clone());
                tokio::spawn(async move {
                    tcp.set_nodelay(true)?;
                    let down = TcpStream::connect(&to).await?;
                    down.set_nodelay(true)?;
                    let mut tls = connector.connect(name, down).await?;
                    tokio::io::copy_bidirectional(&mut tcp, &mut tls).await?;
                    Ok::<_, std::io::Error>(())
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// The median of `xs` and its spread (lowest, highest).
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |i: usize| xs.get(i).copied().unwrap_or(f64::NAN);
    let n = xs.len();
    let median = if n % 2 == 1 {
        at(n / 2)
    } else {
        (at(n / 2 - 1) + at(n / 2)) / 2.0
    };
    (median, at(0), at(n.saturating_sub(1)))
}

/// Medians of one row's figures.
#[derive(Debug, Clone, Copy)]
struct Medians {
    p50: f64,
    rate: f64,
    cpu: f64,
    switches: f64,
}

fn medians(row: &RouteRow) -> Medians {
    let of = |f: fn(&Sample) -> f64| spread(row.samples.iter().map(f).collect()).0;
    Medians {
        p50: of(|s| s.p50.as_secs_f64() * 1e6),
        rate: of(|s| s.rate),
        cpu: of(|s| s.cpu_per_call.as_secs_f64() * 1e6),
        switches: of(|s| s.switches_per_call),
    }
}

/// The printed table: each path's medians with their spread, then the
/// targets as ratios to the byte tunnel (and to the bare tunnel).
pub fn render(rows: &[RouteRow]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let rounds = rows.first().map_or(0, |r| r.samples.len());
    let _ = writeln!(
        out,
        "Processes as users run them: tools/call, {ARG_BYTES} B arguments, demo upstream in its own process; \
         median of {rounds} interleaved rounds (lowest–highest). CPU and context switches: the path's own processes \
         (not the upstream's, not the load generator's), per call at c={CONCURRENCY}."
    );
    let _ = writeln!(
        out,
        "| path | p50 µs (c=1) | p99 µs (c=1) | calls/s (c={CONCURRENCY}) | CPU µs per call | context switches per call |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let col = |f: fn(&Sample) -> f64, digits: usize| {
            let (m, lo, hi) = spread(row.samples.iter().map(f).collect());
            format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.route.label(),
            col(|s| s.p50.as_secs_f64() * 1e6, 0),
            col(|s| s.p99.as_secs_f64() * 1e6, 0),
            col(|s| s.rate, 0),
            col(|s| s.cpu_per_call.as_secs_f64() * 1e6, 1),
            col(|s| s.switches_per_call, 2),
        );
    }
    let get = |r: Route| rows.iter().find(|x| x.route == r).map(medians);
    if let (Some(direct), Some(bytes), Some(bare), Some(chain), Some(up)) = (
        get(Route::Direct),
        get(Route::ByteTunnel),
        get(Route::Bare),
        get(Route::Chain),
        get(Route::Up),
    ) {
        let ratio = |x: f64| format!("{x:.2}×");
        // The bare tunnel's CPU, throughput and added latency against
        // `other`'s; `prefix` starts each label, `limits` are the targets.
        let versus = |other: &Medians,
                      prefix: &str,
                      whose: &str,
                      p50_note: &str,
                      limits: [&'static str; 3]| {
            [
                (
                    format!("{prefix}bare tunnel CPU per call / {whose}"),
                    ratio(bare.cpu / other.cpu),
                    limits[0],
                ),
                (
                    format!("{prefix}bare tunnel calls/s (c={CONCURRENCY}) / {whose}"),
                    ratio(bare.rate / other.rate),
                    limits[1],
                ),
                (
                    format!("{prefix}bare tunnel added p50 (c=1) / {whose}{p50_note}"),
                    ratio((bare.p50 - direct.p50) / (other.p50 - direct.p50)),
                    limits[2],
                ),
            ]
        };
        let mut targets = versus(
            &bytes,
            "",
            "byte tunnel's",
            &format!(" (over direct {:.0} µs)", direct.p50),
            ["≤ 1.5×", "≥ 0.7×", "≤ 1.5×"],
        )
        .to_vec();
        targets.extend([
            (
                "default chain + best-effort audit CPU per call / bare tunnel's".to_owned(),
                ratio(chain.cpu / bare.cpu),
                "≤ 1.3×",
            ),
            (
                "`up` CPU per call / split processes'".to_owned(),
                ratio(up.cpu / bare.cpu),
                "≤ 1.05×",
            ),
            (
                format!(
                    "context switches per call, bare tunnel (byte tunnel {:.2})",
                    bytes.switches
                ),
                format!("{:.2}", bare.switches),
                "≤ 1.5",
            ),
        ]);
        if let Some(base) = get(Route::Baseline) {
            targets.extend(versus(
                &base,
                "A/B: ",
                "the --baseline build's",
                "",
                [""; 3],
            ));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "| target (medians) | measured | target |");
        let _ = writeln!(out, "|---|---:|---:|");
        for (what, measured, target) in targets {
            let _ = writeln!(out, "| {what} | {measured} | {target} |");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(route: Route, cpu_us: u64, rate: f64, p50_us: u64) -> RouteRow {
        RouteRow {
            route,
            samples: vec![Sample {
                p50: Duration::from_micros(p50_us),
                p99: Duration::from_micros(p50_us * 2),
                rate,
                cpu_per_call: Duration::from_micros(cpu_us),
                switches_per_call: 1.0,
            }],
        }
    }

    #[test]
    fn the_targets_are_ratios_of_the_rows_and_the_ab_lines_need_a_baseline() {
        let mut rows = vec![
            row(Route::Direct, 0, 1000.0, 100),
            row(Route::ByteTunnel, 50, 400.0, 200),
            row(Route::Bare, 100, 200.0, 300),
            row(Route::Chain, 120, 150.0, 350),
            row(Route::Strict, 200, 100.0, 900),
            row(Route::Up, 90, 220.0, 280),
        ];
        let table = render(&rows);
        assert!(table.contains("| bare tunnel CPU per call / byte tunnel's | 2.00× | ≤ 1.5× |"));
        assert!(table.contains("/ byte tunnel's | 0.50× | ≥ 0.7× |"));
        assert!(table.contains("(over direct 100 µs) | 2.00× | ≤ 1.5× |"));
        assert!(table.contains(
            "| default chain + best-effort audit CPU per call / bare tunnel's | 1.20× | ≤ 1.3× |"
        ));
        assert!(table.contains("| `up` CPU per call / split processes' | 0.90× | ≤ 1.05× |"));
        assert!(!table.contains("A/B"));
        rows.push(row(Route::Baseline, 125, 160.0, 350));
        let table = render(&rows);
        assert!(
            table.contains("| A/B: bare tunnel CPU per call / the --baseline build's | 0.80× |  |")
        );
        assert!(table.contains("/ the --baseline build's | 1.25× |  |"));
        assert!(
            table.contains(
                "| A/B: bare tunnel added p50 (c=1) / the --baseline build's | 0.80× |  |"
            )
        );
    }
}
