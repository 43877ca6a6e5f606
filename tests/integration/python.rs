//! Plugins written in Python: built by `portcullis plugin build` with the
//! real componentize-py (`.ci/install-peers` puts the pinned version in
//! target/peers/venv), then run by the real host.
//!
//! Building a CPython component and compiling it with Cranelift are the
//! expensive steps, so each plugin directory is built once per test process
//! (and skipped when its inputs have not changed since the last run), and
//! every test here shares one engine whose artifact cache lives under the
//! test target directory: a plugin is compiled once, then loaded from disk,
//! also by the `portcullis` processes the tests start.
//!
//! Over 400 lines on purpose: every Python test lives here because they
//! share that one build and that one engine.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use portcullis::mcp::{Direction, Kind, MessageContext};
use portcullis::plugin::{LoadedPlugin, PluginEngine, PluginLimits};
use portcullis::policy::catalog::Catalog;
use portcullis::policy::chain::Ruling;
use portcullis::policy::verdict::CallError;
use portcullis::principal::Principal;
use serde_json::{Value, json};

use crate::support::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn componentize_py() -> PathBuf {
    require(peers_dir().join("venv/bin/componentize-py"))
}

/// The artifact cache the tests' engine and `portcullis` processes share.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// One engine for every Python test, caching compiled plugins on disk.
pub fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PluginEngine::new(Some(cache_dir())).unwrap())
}

/// `portcullis plugin ARGS`, with the peers' componentize-py.
fn portcullis_plugin(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("plugin")
        .args(args)
        .env("PORTCULLIS_COMPONENTIZE_PY", componentize_py())
        .env("PORTCULLIS_CACHE_DIR", cache_dir())
        .output()
        .unwrap()
}

/// Builds the plugin in `dir` (once per test process); its component.
fn built(dir: &Path) -> PathBuf {
    static BUILT: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(wasm) = built.get(dir) {
        return wasm.clone();
    }
    let out = portcullis_plugin(&["build".as_ref(), dir.as_os_str()]);
    assert!(
        out.status.success(),
        "plugin build {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(wasm.is_file(), "{} was not written", wasm.display());
    built.insert(dir.to_owned(), wasm.clone());
    wasm
}

/// The shipped example, `plugins/examples/change-control`, built where
/// `policies/change-control.toml` expects it.
pub fn change_control() -> PathBuf {
    let wasm = built(&repo("plugins/examples/change-control"));
    assert!(wasm.ends_with("plugins/examples/change-control/target/change_control.wasm"));
    wasm
}

fn broken() -> Vec<u8> {
    std::fs::read(built(&repo("tests/fixtures/python-broken"))).unwrap()
}

fn call_ctx(subject: &str, groups: &[&str]) -> MessageContext {
    MessageContext {
        direction: Direction::ToServer,
        tunnel: "t".into(),
        server: "ops".into(),
        kind: Kind::Request,
        method: Some("tools/call".into()),
        target: Some("scale_service".into()),
        related_tool: None,
        request_id: Some("1".into()),
        session_id: None,
        protocol_version: None,
        principal: Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Principal::anonymous()
        },
    }
}

const SCALE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"scale_service","arguments":{"service":"billing","replicas":6}}}"#;

#[tokio::test]
async fn a_python_plugin_allows_denies_and_rewrites_through_the_real_host() {
    change_control();
    let policy_file = repo("policies/change-control.toml");
    let catalog = Arc::new(Catalog::default());
    let policy = portcullis::policy::load(&policy_file, engine(), catalog.clone())
        .await
        .unwrap();
    let cases = portcullis::policy::cases::cases_path(&policy_file);
    let report = portcullis::policy::cases::run_with(&policy, &catalog, &cases, 64, true)
        .await
        .unwrap();
    assert_eq!(report.failed, 0, "{}", report.text);
    assert_eq!(report.passed, 9, "{}", report.text);
    // The audit gets the ticket and the break-glass as labels, and the
    // private reason of a refusal.
    for seen in [
        r#"change="CHG-004211""#,
        r#"change="break-glass""#,
        "private reason: write tool scale_service called without a change ticket",
    ] {
        assert!(report.text.contains(seen), "{seen}:\n{}", report.text);
    }
}

#[tokio::test]
async fn a_python_plugin_that_raises_fails_closed_with_a_clear_error() {
    let bytes = broken();
    let load = |mode: &str| {
        let config = json!({ "mode": mode }).to_string();
        let bytes = bytes.clone();
        let mode = mode.to_owned();
        async move {
            LoadedPlugin::load(
                engine(),
                &format!("broken-{mode}"),
                &bytes,
                config,
                PluginLimits::default(),
                Arc::new(Catalog::default()),
            )
            .await
        }
    };
    let ctx = call_ctx("sam", &[]);
    // A healthy instance of the same component answers...
    let ok = load("ok").await.unwrap();
    let v = ok.call(&ctx, SCALE).await.unwrap();
    assert!(v.annotations.iter().any(|a| a.key == "mode"), "{v:?}");
    // ...an exception, a failed import or a verdict of the wrong type in
    // `decide` ends the call as a trap: an error, never a verdict.
    for mode in ["raise", "import", "bad-verdict"] {
        let p = load(mode).await.unwrap();
        let err = p.call(&ctx, SCALE).await.unwrap_err();
        assert!(matches!(err, CallError::Trap(_)), "{mode}: {err:?}");
        // The instance is thrown away; the next call fails the same way.
        assert!(p.call(&ctx, SCALE).await.is_err(), "{mode}");
    }
    // Runaway loops and allocations are cut off by the host's limits.
    let p = load("loop").await.unwrap();
    assert!(matches!(
        p.call(&ctx, SCALE).await.unwrap_err(),
        CallError::Deadline(_)
    ));
    let p = load("hog").await.unwrap();
    assert_eq!(p.call(&ctx, SCALE).await.unwrap_err(), CallError::Memory);
    // A sleep waits in the host, where no epoch deadline fires: the call's
    // wall-clock bound ends it (and `init`'s ends a sleep there).
    let p = load("sleep").await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        p.call(&ctx, SCALE).await.unwrap_err(),
        CallError::Deadline(_)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = load("init-sleep").await.err().unwrap().to_string();
    assert!(err.contains("deadline"), "{err}");
    // A refused configuration, or an exception in `configure`, fails the
    // load with the plugin's own words.
    let err = load("refuse").await.err().unwrap().to_string();
    assert!(err.contains("refused on purpose"), "{err}");
    let err = load("init-raise").await.err().unwrap().to_string();
    assert!(err.contains("configure raised KeyError"), "{err}");

    // In a chain, the failure denies the message (on_error = "deny") and
    // the audit record keeps the trap.
    let dir = scratch();
    std::fs::copy(
        built(&repo("tests/fixtures/python-broken")),
        dir.join("broken.wasm"),
    )
    .unwrap();
    let policy_file = dir.join("policy.toml");
    std::fs::write(
        &policy_file,
        r#"
[plugins.broken]
source = "broken.wasm"
config = { mode = "raise" }
[[servers."*"]]
plugin = "broken"
on_error = "deny"
"#,
    )
    .unwrap();
    let policy = portcullis::policy::load(&policy_file, engine(), Arc::new(Catalog::default()))
        .await
        .unwrap();
    let (ruling, records) = policy.apply(&ctx, Bytes::from(SCALE), 64).await;
    let Ruling::Deny(denial) = ruling else {
        panic!("an exception let the message through: {ruling:?}");
    };
    assert_eq!(denial.code, portcullis::policy::chain::POLICY_FAILURE_CODE);
    let reason = records[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("trapped"), "{reason}");
}

#[test]
fn a_python_module_that_does_not_import_is_refused_at_build() {
    let out = portcullis_plugin(&[
        "build".as_ref(),
        repo("tests/fixtures/python-import-error").as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("portcullis_no_such_module"), "{err}");
    assert!(err.contains("componentize-py could not build"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn plugin_new_build_and_policy_test_work_from_the_python_template() {
    // The README's steps: new, edit, build, test; then a rebuild with
    // nothing changed is skipped.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-template/no-drops");
    let _ = std::fs::remove_dir_all(&dir);
    let out = portcullis_plugin(&[
        "new".as_ref(),
        "no-drops".as_ref(),
        "--lang".as_ref(),
        "python".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["app.py", "policy.toml", "policy.cases.toml", ".gitignore"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    assert!(dir.join(".portcullis/sdk/portcullis_policy.py").is_file());
    // Not over an existing plugin.
    let again = portcullis_plugin(&[
        "new".as_ref(),
        "no-drops".as_ref(),
        "--lang".as_ref(),
        "python".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    // The edit: refuse drop_* too, with a case that says so.
    let policy = dir.join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace(r#"deny = ["delete_*"]"#, r#"deny = ["delete_*", "drop_*"]"#),
    )
    .unwrap();
    let mut cases = std::fs::read_to_string(dir.join("policy.cases.toml")).unwrap();
    cases.push_str(
        r#"
[[case]]
name = "a drop tool is refused"
message = '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"drop_table"}}'
expect = "deny"
public_message = "Unknown tool: drop_table"
"#,
    );
    std::fs::write(dir.join("policy.cases.toml"), cases).unwrap();
    let wasm = built(&dir);
    assert_eq!(wasm, dir.join("target/no_drops.wasm"));
    let test = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "test"])
        .arg(&policy)
        .env("PORTCULLIS_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&test.stdout);
    assert_eq!(
        test.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(text.contains("3 of 3 cases as expected"), "{text}");
    let rebuild = portcullis_plugin(&["build".as_ref(), dir.as_os_str()]);
    assert!(rebuild.status.success());
    assert!(String::from_utf8_lossy(&rebuild.stderr).contains("up to date"));
    // What `build` builds is the directory's language; neither is an error.
    let empty = scratch();
    let none = portcullis_plugin(&["build".as_ref(), empty.as_os_str()]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no plugin here"));
}

#[test]
fn the_rust_template_depends_on_this_checkout_s_sdk_builds_and_passes_its_cases() {
    let dir = scratch().join("my-rust-policy");
    let out = portcullis_plugin(&[
        "new".as_ref(),
        "my-rust-policy".as_ref(),
        "--lang".as_ref(),
        "rust".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let sdk = repo("plugins/sdk").canonicalize().unwrap();
    assert!(
        cargo.contains(&format!("path = \"{}\"", sdk.display())),
        "{cargo}"
    );
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains(r#"const NAME: &'static str = "my-rust-policy";"#));
    let policy = std::fs::read_to_string(dir.join("policy.toml")).unwrap();
    assert!(policy.contains("target/wasm32-wasip2/release/my_rust_policy.wasm"));
    // A real guest build (cargo, wasm32-wasip2), then its cases through the
    // host; a case that expects the wrong thing fails the run.
    let wasm = built(&dir);
    assert_eq!(
        wasm,
        dir.join("target/wasm32-wasip2/release/my_rust_policy.wasm")
    );
    let test = |cases: &Path| {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["policy", "test"])
            .arg(dir.join("policy.toml"))
            .arg("--cases")
            .arg(cases)
            .env("PORTCULLIS_CACHE_DIR", cache_dir())
            .output()
            .unwrap()
    };
    let shipped = dir.join("policy.cases.toml");
    let passed = test(&shipped);
    let text = String::from_utf8_lossy(&passed.stdout);
    assert!(
        passed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&passed.stderr)
    );
    assert!(text.contains("2 of 2 cases as expected"), "{text}");
    let wrong = dir.join("wrong.cases.toml");
    let cases = std::fs::read_to_string(&shipped).unwrap();
    let flipped = cases.replacen(r#"expect = "deny""#, r#"expect = "allow""#, 1);
    assert_ne!(flipped, cases);
    std::fs::write(&wrong, flipped).unwrap();
    let failed = test(&wrong);
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stdout).contains("expected allow, got deny"),
        "{}",
        String::from_utf8_lossy(&failed.stdout)
    );
}

#[test]
fn the_componentize_py_of_the_tests_is_the_one_plugin_build_pins() {
    let script = std::fs::read_to_string(repo(".ci/install-peers")).unwrap();
    let pinned = std::fs::read_to_string(repo("src/cli/plugin/python.rs")).unwrap();
    let version = pinned
        .lines()
        .find_map(|l| l.strip_prefix("pub const COMPONENTIZE_PY_VERSION: &str = \""))
        .and_then(|l| l.strip_suffix("\";"))
        .unwrap();
    assert!(
        script.contains(&format!("COMPONENTIZE_PKGS=(componentize-py=={version})")),
        "install-peers and plugin build pin different componentize-py versions"
    );
}

/// `portcullis up --json` with the demo server and `policy`; killed on
/// drop. Returns the demo's URL.
fn up_with_policy(policy: &Path) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "up",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--no-audit",
        ])
        .arg("--policy")
        .arg(policy)
        .env("PORTCULLIS_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let up: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("up --json printed {line:?}: {e}"));
    let url = up["servers"]["demo"].as_str().unwrap().to_owned();
    (guard, url)
}

/// One call with the Python MCP SDK client: its JSON line, or its stderr.
async fn py_call(url: &str, tool: &str, args: Value) -> Result<Value, String> {
    let mut cmd = tokio::process::Command::new(require(peers_dir().join("venv/bin/python")));
    cmd.arg(repo("tests/peers/py_client.py"))
        .args(["--url", url, "--tool", tool, "--args", &args.to_string()])
        .args(["--timeout", "60"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_guards_calls_through_portcullis_up_for_the_python_sdk_client() {
    // change-control in front of schema-guard on the demo CRM: schema-guard
    // refuses arguments the tool's schema does not allow, so a refund only
    // passes if change-control took its ticket out.
    let wasm = change_control();
    let dir = scratch();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[plugins.change-control]
source = "{}"
config = {{ break_glass_groups = ["incident-commander"] }}

[plugins.schema-guard]
source = "builtin:schema-guard"

[[servers.demo]]
plugin = "change-control"
phase = "request"

[[servers.demo]]
plugin = "schema-guard"
phase = "both"
"#,
            wasm.display()
        ),
    )
    .unwrap();
    let (_up, url) = up_with_policy(&policy);
    // A read-only tool passes untouched.
    let out = py_call(&url, "lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(
        out["result"]["structuredContent"]["name"], "Ada Lovelace",
        "{out}"
    );
    // A write without a ticket is refused with the plugin's public message.
    let err = py_call(
        &url,
        "issue_refund",
        json!({"customer_id": "C-1001", "amount": 5}),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("issue_refund changes things: name an approved change ticket"),
        "{err}"
    );
    // With a ticket it reaches the server, without the ticket.
    let out = py_call(
        &url,
        "issue_refund",
        json!({"customer_id": "C-1001", "amount": 5, "change_ticket": "CHG-000042"}),
    )
    .await
    .unwrap();
    assert_eq!(out["result"]["isError"], false, "{out}");
    assert!(
        out["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Refunded 5.00 EUR to C-1001")),
        "{out}"
    );
}

/// The costs the README's "Plugins in Python" states:
/// `cargo test --test integration python_plugin_costs -- --ignored --nocapture`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement, not a check"]
async fn python_plugin_costs() {
    use std::time::Instant;
    let bytes = std::fs::read(change_control()).unwrap();
    let config = json!({"break_glass_groups": ["incident-commander"]}).to_string();
    println!("component: {:.1} MB", bytes.len() as f64 / 1e6);
    // Compile without any cache, then load the artifact back from disk.
    let cold = PluginEngine::new(None).unwrap();
    let t = Instant::now();
    cold.compile("change-control", &bytes).unwrap();
    println!("compile (Cranelift, no cache): {:.2?}", t.elapsed());
    let dir = scratch().join("cache");
    PluginEngine::new(Some(dir.clone()))
        .unwrap()
        .compile("change-control", &bytes)
        .unwrap();
    let cached = PluginEngine::new(Some(dir)).unwrap();
    let t = Instant::now();
    cached.compile("change-control", &bytes).unwrap();
    println!("load from the artifact cache: {:.2?}", t.elapsed());
    // Instantiate + init, the component already compiled.
    let load = |limits: PluginLimits| {
        LoadedPlugin::load(
            &cold,
            "change-control",
            &bytes,
            config.clone(),
            limits,
            Arc::new(Catalog::default()),
        )
    };
    let mut samples = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        load(PluginLimits::default()).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    println!("instantiate + init (median of 10): {:.2?}", samples[5]);
    let p = load(PluginLimits::default()).await.unwrap();
    let ctx = call_ctx("sam", &["sre"]);
    let ticketed = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"scale_service","arguments":{"service":"billing","replicas":6,"change_ticket":"CHG-004211"}}}"#;
    let t = Instant::now();
    p.call(&ctx, ticketed).await.unwrap();
    println!("first call on a new instance: {:.2?}", t.elapsed());
    for (what, msg) in [("rewrite", ticketed), ("deny", SCALE)] {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            p.call(&ctx, msg).await.unwrap();
        }
        println!("per call, warm ({what}): {:.1?}", t.elapsed() / n);
    }
    // Memory: the smallest cap (MiB) under which an instance loads and
    // answers.
    let (mut lo, mut hi) = (1usize, 256usize);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let limits = PluginLimits {
            memory_bytes: mid * 1024 * 1024,
            ..PluginLimits::default()
        };
        let fits = match load(limits).await {
            Ok(p) => p.call(&ctx, ticketed).await.is_ok(),
            Err(_) => false,
        };
        if fits { hi = mid } else { lo = mid + 1 }
    }
    println!("smallest memory cap that loads and answers: {lo} MiB");
}
