//! The policy chain through the real host, with real compiled components
//! (`plugins/`, built by build.rs), on real tunnels.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use portcullis::audit::{AuditMode, Spool, SpoolConfig};
use portcullis::client::McpClient;
use portcullis::plugin::PluginEngine;
use portcullis::tunnel::dial::ProxyConfig;
use portcullis::up::{self, UpOptions};
use serde_json::{Value, json};

use crate::support::*;

fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("PORTCULLIS_PLUGIN_DIR"))
}

fn engine() -> PluginEngine {
    PluginEngine::new(None).unwrap()
}

/// A policy with one `behave` step in `mode`, plus extra step settings.
fn behave_policy(mode: &str, step_extra: &str, plugin_extra: &str) -> String {
    format!(
        r#"
[plugins.t]
source = "{}"
config = {{ mode = "{mode}" }}
{plugin_extra}

[[servers."*"]]
plugin = "t"
{step_extra}
"#,
        plugin_dir().join("behave.wasm").display()
    )
}

/// `portcullis policy ARGS…` run as a user runs it, with a plugin cache
/// of its own.
pub(crate) fn portcullis_policy(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("policy")
        .args(args)
        .env(
            "PORTCULLIS_CACHE_DIR",
            std::env::temp_dir().join("portcullis-test-cache"),
        )
        .output()
        .unwrap()
}

pub(crate) fn write_policy(text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(portcullis::secret::random_id());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A tunnel to the demo server and the recording upstream, with a policy.
struct PolicyStack {
    t: OneTunnel,
    seen: Seen,
    policy: Arc<portcullis::policy::Policy>,
    gw: Arc<portcullis::gateway::Gateway>,
}

impl PolicyStack {
    async fn start(policy: &str) -> PolicyStack {
        let t = OneTunnel::start().await;
        let (rec, seen) = recording_upstream().await;
        let mut ups = demo_upstreams(demo_server().await);
        ups.insert(
            "rec".into(),
            http_upstream("rec", &format!("http://{rec}/mcp")),
        );
        let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
        let policy = portcullis::policy::load(&write_policy(policy), &engine(), gw.catalog())
            .await
            .unwrap();
        let policy = Arc::new(policy);
        gw.set_policy(Some(policy.clone()));
        PolicyStack {
            t,
            seen,
            policy,
            gw,
        }
    }

    /// Records the gateway's decisions into a fresh spool, returned with
    /// its directory.
    fn audited(&self) -> (Arc<Spool>, PathBuf) {
        let dir = scratch();
        let spool = Spool::open(SpoolConfig::new(dir.clone(), AuditMode::Strict)).unwrap();
        let spool = Arc::new(spool);
        self.gw.set_audit(spool.clone());
        (spool, dir)
    }

    async fn demo(&self) -> McpClient {
        let mut c = self.t.client("demo");
        c.initialize().await.unwrap();
        c
    }
}

fn error_of(reply: &Value) -> (i64, String) {
    (
        reply["error"]["code"].as_i64().unwrap_or(0),
        reply["error"]["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn a_denied_request_never_reaches_the_upstream() {
    let s = PolicyStack::start(&behave_policy("deny", "", "")).await;
    let mut c = s.t.client("rec");
    let reply = c.request("ping", json!({})).await.unwrap();
    assert_eq!(reply.status, 200);
    let msg = reply.last().unwrap();
    assert_eq!(msg["id"], 1);
    assert_eq!(error_of(msg), (-32001, "denied by test".into()));
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("private"),
        "private reason leaked"
    );
    assert!(
        s.seen.all().is_empty(),
        "a denied request reached the upstream"
    );
}

#[tokio::test]
async fn a_request_rewrite_is_what_the_upstream_gets() {
    let s = PolicyStack::start(&behave_policy("rewrite-request", "", "")).await;
    let mut c = s.t.client("rec");
    c.call_tool("refund", json!({"amount": 5})).await.unwrap();
    // The upstream also got the gateway's own walk of its listing (the
    // test plugin can read definitions): the call is the tools/call.
    let body = s
        .seen
        .all()
        .iter()
        .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap())
        .find(|m| m["method"] == "tools/call")
        .expect("the call reached the upstream");
    assert_eq!(
        body["params"]["arguments"],
        json!({"amount": 5, "rewritten": true})
    );
}

#[tokio::test]
async fn a_denied_response_never_leaves() {
    let s = PolicyStack::start(&behave_policy("deny-response", "", "")).await;
    let mut c = s.t.client("demo");
    // initialize's own result is denied too: the agent gets an error.
    let reply = c
        .request("initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}))
        .await
        .unwrap();
    assert_eq!(
        error_of(reply.last().unwrap()),
        (-32001, "response denied by test".into())
    );
    assert!(!String::from_utf8_lossy(&reply.body).contains("portcullis-demo-crm"));
}

#[tokio::test]
async fn response_rewrites_and_audit_mode() {
    let s = PolicyStack::start(&behave_policy("rewrite-response", "", "")).await;
    let mut c = s.demo().await;
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(r["result"]["content"][0]["text"], "REDACTED");

    // The same deny in audit mode blocks nothing.
    let s = PolicyStack::start(&behave_policy("deny", r#"mode = "audit""#, "")).await;
    let mut c = s.demo().await;
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(r["result"]["structuredContent"]["name"], "Ada Lovelace");
}

#[tokio::test]
async fn every_sse_event_is_checked() {
    let s = PolicyStack::start(&behave_policy("deny-response", r#"phase = "response""#, "")).await;
    let c = s.t.client("demo");
    // Every response is denied (initialize's too), so use the stateless
    // form, which needs no session.
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "generate_report", "arguments": {"steps": 3},
                   "_meta": {"progressToken": "p", "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    let reply = c
        .send(
            Method::POST,
            Bytes::from(body.to_string()),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "generate_report"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    // Progress notifications were dropped one by one; the result became an
    // error answering id 9.
    assert!(
        reply
            .messages
            .iter()
            .all(|m| m["method"] != "notifications/progress"),
        "{:?}",
        reply.messages
    );
    let last = reply.last().unwrap();
    assert_eq!(last["id"], 9);
    assert_eq!(error_of(last).0, -32001);
    assert!(!String::from_utf8_lossy(&reply.body).contains("Revenue"));
}

#[tokio::test]
async fn runaway_plugins_are_stopped_and_deny() {
    let cases = [("loop", ""), ("alloc", "memory_mib = 16"), ("garbage", "")];
    for (mode, plugin_extra) in cases {
        let s = PolicyStack::start(&behave_policy(mode, "", plugin_extra)).await;
        let mut c = s.t.client("rec");
        let started = Instant::now();
        let reply = within(mode, c.request("ping", json!({}))).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode} took {:?}",
            started.elapsed()
        );
        let (code, message) = error_of(reply.last().unwrap());
        assert_eq!(code, -32603, "{mode}");
        assert!(message.contains("Blocked by policy"), "{mode}: {message}");
        assert!(s.seen.all().is_empty(), "{mode}: the call went through");
    }
    // Fail-open when the policy says so explicitly.
    let s = PolicyStack::start(&behave_policy("loop", r#"on_error = "allow""#, "")).await;
    let reply = s.t.client("rec").request("ping", json!({})).await.unwrap();
    assert!(reply.last().unwrap()["result"].is_object());
}

#[tokio::test]
async fn a_plugin_past_its_memory_cap_is_denied_and_audited_as_the_memory_cap() {
    // A deadline far above what filling 16 MiB takes (page faults count as
    // the plugin's CPU time, and on a slow host they passed 10 ms), so
    // the cap, not the clock, is what stops it.
    let s = PolicyStack::start(&behave_policy(
        "alloc",
        "",
        "memory_mib = 16\ndeadline_ms = 2000",
    ))
    .await;
    let (spool, dir) = s.audited();
    let reply = within("alloc", s.t.client("rec").request("ping", json!({})))
        .await
        .unwrap();
    assert_eq!(error_of(reply.last().unwrap()).0, -32603);
    assert!(s.seen.all().is_empty(), "the call went through");
    spool.flush().await.unwrap();
    let text = spool_text(&dir);
    let ping = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.rsplit_once('\t')?.0).ok())
        .filter(|l| l["type"] == "decision")
        .map(|l| l["body"].clone())
        .find(|d| d["method"] == "ping")
        .expect("the ping is recorded");
    assert_eq!(ping["outcome"], "denied");
    let step = &ping["steps"][0];
    assert_eq!(step["decision"], "error");
    assert_eq!(step["reason"], "plugin exceeded its memory cap", "{ping:#}");
}

#[tokio::test]
async fn a_trapped_instance_is_replaced() {
    let s = PolicyStack::start(&behave_policy("trap", "", "")).await;
    let mut c = s.t.client("rec");
    let boom = c.call_tool("boom", json!({})).await.unwrap();
    assert_eq!(error_of(&boom).0, -32603);
    let plugin = s.policy.plugin("t").unwrap();
    let after_trap = plugin.instantiations();
    for _ in 0..3 {
        let ok = c.request("ping", json!({})).await.unwrap();
        assert!(
            ok.last().unwrap()["result"].is_object(),
            "{:?}",
            ok.messages
        );
    }
    let pings = s
        .seen
        .all()
        .iter()
        .filter(|(_, b)| serde_json::from_slice::<Value>(b).unwrap()["method"] == "ping")
        .count();
    assert_eq!(pings, 3);
    // One fresh instance replaced the trapped one, then it was reused.
    assert_eq!(plugin.instantiations(), after_trap + 1);
}

#[tokio::test]
async fn plugins_get_no_environment_or_filesystem() {
    // The gateway process has plenty of environment; the plugin sees none.
    let s = PolicyStack::start(&behave_policy("env", "", "")).await;
    let reply = s.t.client("rec").request("ping", json!({})).await.unwrap();
    let (_, message) = error_of(reply.last().unwrap());
    assert_eq!(message, "env=0 fs=err");
}

#[tokio::test]
async fn plugins_read_tool_definitions_from_the_catalog() {
    let s = PolicyStack::start(&behave_policy("tool-def", r#"phase = "request""#, "")).await;
    let mut c = s.demo().await;
    // A tool no listing names is unknown.
    let r = c.call_tool("no_such_tool", json!({})).await.unwrap();
    assert_eq!(error_of(&r).1, "none none");
    // The plugin answers "REVISION DEFINITION".
    let read = |r: &Value| {
        let (revision, def) = error_of(r)
            .1
            .split_once(' ')
            .map(|(r, d)| (r.to_owned(), d.to_owned()))
            .unwrap();
        (
            revision.parse::<u64>().unwrap(),
            serde_json::from_str::<Value>(&def).unwrap(),
        )
    };
    // Known before any agent listed the tools: the gateway walked the
    // listing itself before the first call.
    let (revision, def) = read(&c.call_tool("issue_refund", json!({})).await.unwrap());
    assert_eq!(def["name"], "issue_refund");
    assert_eq!(
        def["inputSchema"]["required"],
        json!(["customer_id", "amount"])
    );
    // Listed by the agent, unchanged: the same revision.
    c.request("tools/list", json!({})).await.unwrap();
    let (again, _) = read(&c.call_tool("issue_refund", json!({})).await.unwrap());
    assert_eq!(again, revision);
}

#[tokio::test]
async fn a_definition_the_plugin_fetches_earns_the_call_more_time() {
    // The default deadline (10 ms of the plugin's CPU time).
    let policy = behave_policy("fetch-then-spin", r#"phase = "request""#, "");
    let s = PolicyStack::start(&policy).await;
    let mut c = s.demo().await;
    c.request("tools/list", json!({})).await.unwrap();
    let refused =
        |r: &Value| r["error"]["message"] == portcullis::policy::chain::POLICY_FAILURE_MESSAGE;
    // 30 ms of work after fetching the definition four times (budget
    // 10 + 4 × 10 ms; at most 30 ms of CPU are spent) is allowed through
    // to the upstream...
    let r = c
        .call_tool("issue_refund", json!({"fetches": 4, "spin_ms": 30}))
        .await
        .unwrap();
    assert!(!refused(&r), "{r}");
    // ...and the same work without a definition is stopped: past 10 ms of
    // CPU, or past the 100 ms wall-clock ceiling.
    let r = c
        .call_tool("issue_refund", json!({"fetches": 0, "spin_ms": 200}))
        .await
        .unwrap();
    assert!(refused(&r), "{r}");
}

#[tokio::test]
async fn instances_are_reused_between_calls() {
    let s = PolicyStack::start(&behave_policy("count", "", "")).await;
    let mut c = s.t.client("rec");
    for _ in 0..5 {
        c.request("ping", json!({})).await.unwrap();
    }
    assert_eq!(s.seen.all().len(), 5);
    // Sequential calls reuse the instance created (and initialised) at load.
    assert_eq!(s.policy.plugin("t").unwrap().instantiations(), 1);
}

#[tokio::test]
async fn the_default_policy_hides_and_refuses_erasure() {
    let running = up::start(UpOptions::default()).await.unwrap();
    let mut c = McpClient::new(&running.servers["demo"], running.token.as_deref());
    c.initialize().await.unwrap();
    let list = c.request("tools/list", json!({})).await.unwrap();
    let names: Vec<_> = list.last().unwrap()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"lookup_customer".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n == "delete_customer"), "{names:?}");
    let ok = c
        .call_tool(
            "issue_refund",
            json!({"customer_id": "C-1002", "amount": 80}),
        )
        .await
        .unwrap();
    assert_eq!(
        ok["result"]["structuredContent"]["status"], "issued",
        "{ok}"
    );
    let over = c
        .call_tool(
            "issue_refund",
            json!({"customer_id": "C-1002", "amount": 5000}),
        )
        .await
        .unwrap();
    assert_eq!(
        error_of(&over),
        (-32602, "Unknown tool: issue_refund".into())
    );
    for name in ["delete_customer", "DELETE_customer"] {
        let r = c
            .call_tool(name, json!({"customer_id": "C-1001"}))
            .await
            .unwrap();
        assert_eq!(error_of(&r), (-32602, format!("Unknown tool: {name}")));
    }
    // The customer record leaves redacted, structured copy and text alike.
    let rec = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    let text = rec.to_string();
    assert_eq!(
        rec["result"]["structuredContent"]["name"], "Ada Lovelace",
        "{rec}"
    );
    for value in [
        "4111 1111 1111 1111",
        "ada.lovelace@",
        "7946 0018",
        "WEST 1234",
    ] {
        assert!(!text.contains(value), "{value} left the network: {text}");
    }
    assert!(text.contains("****1111"), "{text}");
    running.stop().await;
}

#[tokio::test]
async fn init_failures_are_readable_load_errors() {
    let path = write_policy(&behave_policy("fail-init", "", ""));
    let err = portcullis::policy::load(&path, &engine(), Default::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("plugin 't' refused its configuration: fail-init: the config says so"),
        "{err}"
    );
    // The CLI says the same and exits non-zero.
    let out = portcullis_policy(&["check".as_ref(), path.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fail-init: the config says so"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_and_broken_policies_are_rejected() {
    use portcullis::policy::reload::{Reload, Reloader};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let t = OneTunnel::start().await;
    let (gw, _stop, _task) = t
        .gateway(
            demo_upstreams(demo_server().await),
            2,
            ProxyConfig::default(),
        )
        .await;
    // Generations alternate: even ones (the first is 0) redact every
    // result's text, odd ones allow. A reply says which one decided it.
    let mode_of = |generation: usize| {
        if generation.is_multiple_of(2) {
            "rewrite-response"
        } else {
            "allow"
        }
    };
    let path = write_policy(&behave_policy(mode_of(0), "", ""));
    let engine = engine();
    let first = portcullis::policy::load(&path, &engine, gw.catalog())
        .await
        .unwrap();
    gw.set_policy(Some(Arc::new(first)));
    let mut reloader = Reloader::new(gw.clone(), path.clone(), engine);

    /// Swaps begun and swaps done (the new policy serving).
    #[derive(Default)]
    struct Swaps {
        begun: AtomicUsize,
        done: AtomicUsize,
    }
    let swaps = Arc::new(Swaps::default());
    // Calls that started under a policy and finished after it was replaced.
    let overlapped = Arc::new(AtomicUsize::new(0));
    let (completed, mut completions) = tokio::sync::watch::channel(0usize);
    let completed = Arc::new(completed);

    // Eight agents call continuously (bounded: 40 calls each) while the
    // policy is swapped back and forth underneath them.
    let mut agents = Vec::new();
    for _ in 0..8 {
        let mut c = t.client("demo");
        c.initialize().await.unwrap();
        let (swaps, overlapped, completed) = (swaps.clone(), overlapped.clone(), completed.clone());
        agents.push(tokio::spawn(async move {
            for _ in 0..40 {
                let r = c
                    .call_tool("lookup_customer", json!({"customer_id": "C-1002"}))
                    .await
                    .unwrap();
                let (begun, done) = (
                    swaps.begun.load(Ordering::SeqCst),
                    swaps.done.load(Ordering::SeqCst),
                );
                assert_eq!(
                    r["result"]["structuredContent"]["name"], "Grace Hopper",
                    "{r}"
                );
                // No swap under way: generation `done` serves, and no call
                // can have used a later one. A reply decided by the other
                // parity was decided by an earlier generation, replaced
                // while the call was in flight.
                let redacted = r["result"]["content"][0]["text"] == "REDACTED";
                if begun == done && redacted != (mode_of(done) == "rewrite-response") {
                    overlapped.fetch_add(1, Ordering::SeqCst);
                }
                completed.send_modify(|n| *n += 1);
            }
        }));
    }
    for i in 1..=6 {
        // Each swap waits for calls to be flowing (a signal, not a sleep):
        // 16 more finished since the last one.
        let flowing = 16 * i;
        within(
            "calls between swaps",
            completions.wait_for(|n| *n >= flowing),
        )
        .await
        .unwrap();
        std::fs::write(&path, behave_policy(mode_of(i), "", "")).unwrap();
        swaps.begun.fetch_add(1, Ordering::SeqCst);
        assert!(matches!(
            reloader.check(false).await.unwrap(),
            Reload::Swapped(_)
        ));
        swaps.done.fetch_add(1, Ordering::SeqCst);
        assert!(matches!(
            reloader.check(false).await.unwrap(),
            Reload::Unchanged
        ));
    }
    // A broken policy (its plugin refuses its config) is rejected …
    std::fs::write(&path, behave_policy("fail-init", "", "")).unwrap();
    let err = reloader.check(false).await.unwrap_err().to_string();
    assert!(err.contains("fail-init"), "{err}");
    // … and so is one that does not parse.
    std::fs::write(&path, "[plugins.t\nsource=").unwrap();
    let err = format!("{:#}", reloader.check(false).await.unwrap_err());
    assert!(err.contains("TOML parse error"), "{err}");
    for a in agents {
        within("agents", a).await.unwrap();
    }
    // The swaps happened under load: some calls began on a policy and
    // ended after it was replaced, on the policy they began with.
    assert!(
        overlapped.load(Ordering::SeqCst) > 0,
        "no call was in flight across a swap"
    );
    // The gateway still serves, on the last good policy.
    let mut c = t.client("demo");
    c.initialize().await.unwrap();
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(r["result"]["structuredContent"]["name"], "Ada Lovelace");
    // Now deny everything: the swap takes effect for new calls.
    std::fs::write(&path, behave_policy("deny", "", "")).unwrap();
    reloader.check(false).await.unwrap();
    let r = c.request("ping", json!({})).await.unwrap();
    assert_eq!(error_of(r.last().unwrap()).0, -32001);
}

#[tokio::test]
async fn shipped_policies_pass_their_cases_and_failures_are_reported() {
    // The shipped policies, and the bypass attempts against every standard
    // plugin (tests/policies/bypass.toml), through the real host. The
    // change-control policy's plugin is Python: built first, and compiled
    // through the Python tests' cached engine.
    crate::python::change_control();
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"));
    let bypass = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/policies"));
    let mut checked = 0;
    let entries = std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(&bypass).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".toml") || name.ends_with(".cases.toml") {
            continue;
        }
        let cases = portcullis::policy::cases::cases_path(&path);
        assert!(cases.exists(), "{name} ships without {}", cases.display());
        let catalog = std::sync::Arc::new(portcullis::policy::catalog::Catalog::default());
        let policy = portcullis::policy::load(&path, crate::python::engine(), catalog.clone())
            .await
            .unwrap();
        let report = portcullis::policy::cases::run(&policy, &catalog, &cases, 64)
            .await
            .unwrap();
        assert_eq!(report.failed, 0, "{name}:\n{}", report.text);
        assert!(report.passed > 0);
        checked += 1;
    }
    assert!(
        checked >= 6,
        "default, pci, health, change-control, support and the bypass policy"
    );

    // A case that expects the wrong thing fails, readably, with exit 1.
    let policy = dir.join("default.toml");
    let bad = write_policy("");
    let bad_cases = bad.with_file_name("bad.cases.toml");
    std::fs::write(
        &bad_cases,
        r#"
[[case]]
name = "wrongly expects erasure to pass"
message = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_customer"}}'
expect = "allow"
"#,
    )
    .unwrap();
    let out = portcullis_policy(&[
        "test".as_ref(),
        policy.as_os_str(),
        "--cases".as_ref(),
        bad_cases.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  wrongly expects erasure to pass"),
        "{text}"
    );
    assert!(text.contains("expected allow, got deny"), "{text}");
    assert!(text.contains("0 of 1 cases as expected"), "{text}");
}

#[test]
fn policy_test_explain_shows_what_each_plugin_decided_and_why() {
    let policy = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/pci.toml"));
    let out = portcullis_policy(&["test".as_ref(), "--explain".as_ref(), policy.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    // A case, then one line per plugin that ran, then the outcome.
    let at = lines
        .iter()
        .position(|l| l.starts_with("PASS  billing reads a transaction"))
        .expect("the case's line");
    assert!(
        lines[at + 1].contains(r#"authz (enforce): allow  rule="billing-read""#),
        "{text}"
    );
    assert!(
        lines[at + 2].contains("schema-guard (enforce): allow"),
        "{text}"
    );
    assert_eq!(lines[at + 3].trim(), "=> passed unchanged", "{text}");
    // A denial names the deciding rule, the private reason and the answer.
    let at = lines
        .iter()
        .position(|l| l.starts_with("PASS  nobody exports cardholder data"))
        .expect("the case's line");
    assert!(
        lines[at + 1].contains(r#"rule="no-cardholder-export""#)
            && lines[at + 1].contains("private reason: deny rule"),
        "{text}"
    );
    assert_eq!(
        lines[at + 2].trim(),
        r#"=> denied: -32602 "Unknown tool: export_cardholder_data""#,
        "{text}"
    );
    // Without --explain, one line per case.
    let plain = portcullis_policy(&["test".as_ref(), policy.as_os_str()]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("=> "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_result_at_the_size_limit_passes_the_default_policy() {
    // Just under the 4 MiB message limit, nothing to redact: the plugin
    // deadline grows with the message, so the business's largest clean
    // answers are not refused for their size.
    let limit = portcullis::limits::MAX_MESSAGE_BYTES;
    let text: String = "The quarterly report lists open tickets by team. "
        .repeat(limit / 50)
        .chars()
        .take(limit - 1024)
        .collect();
    let expected = text.clone();
    let upstream = json_upstream(move |req| {
        let id = req.get("id")?.clone();
        let result = match req["method"].as_str() {
            Some("initialize") => {
                json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                        "serverInfo": {"name": "big", "version": "1"}})
            }
            Some("tools/call") => json!({"content": [{"type": "text", "text": text}]}),
            _ => json!({}),
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    })
    .await;
    let t = OneTunnel::start().await;
    let ups = HashMap::from([(
        "demo".to_owned(),
        http_upstream("demo", &format!("http://{upstream}/mcp")),
    )]);
    let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    let default = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/default.toml"
    ));
    let policy = portcullis::policy::load(&default, &engine(), gw.catalog())
        .await
        .unwrap();
    gw.set_policy(Some(Arc::new(policy)));
    let mut c = t.client("demo");
    c.initialize().await.unwrap();
    let r = within(
        "a 4 MiB result",
        c.call_tool("get_ticket_thread", json!({"ticket_id": "T-1"})),
    )
    .await
    .unwrap();
    assert!(r.get("error").is_none(), "{:.300}", r.to_string());
    assert_eq!(
        r["result"]["content"][0]["text"].as_str(),
        Some(expected.as_str())
    );
}

#[tokio::test]
async fn a_step_scoped_to_a_tool_also_checks_what_its_calls_stream_back() {
    // redact runs only for `lookup_customer`; the logging notification and
    // the server's sampling request sent inside that call's stream belong
    // to the call, so they are redacted too. Another tool's are not.
    let upstream = sse_upstream(|req| {
        let id = req.get("id")?.clone();
        let tool = req["params"]["name"].as_str().unwrap_or("").to_owned();
        Some(vec![
            json!({"jsonrpc": "2.0", "method": "notifications/message",
                   "params": {"level": "info", "data": format!("{tool}: mail ada.lovelace@example.com")}}),
            json!({"jsonrpc": "2.0", "id": "srv-1", "method": "sampling/createMessage",
                   "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "card 4111 1111 1111 1111"}}], "maxTokens": 5}}),
            json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "done"}]}}),
        ])
    })
    .await;
    let t = OneTunnel::start().await;
    let ups = HashMap::from([(
        "crm".to_owned(),
        http_upstream("crm", &format!("http://{upstream}/mcp")),
    )]);
    let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    let policy = r#"
[plugins.redact]
source = "builtin:redact"
[[servers.crm]]
plugin = "redact"
phase = "response"
tools = ["lookup_customer"]
"#;
    let policy = portcullis::policy::load(&write_policy(policy), &engine(), gw.catalog())
        .await
        .unwrap();
    gw.set_policy(Some(Arc::new(policy)));
    let c = t.client("crm");
    let call = |tool: &str| {
        Bytes::from(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
                .to_string(),
        )
    };
    let scoped = c
        .send(Method::POST, call("lookup_customer"), &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&scoped.body);
    assert_eq!(scoped.messages.len(), 3, "{text}");
    assert!(
        !text.contains("ada.lovelace") && !text.contains("4111 1111 1111 1111"),
        "{text}"
    );
    let other = c
        .send(Method::POST, call("search_tickets"), &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&other.body);
    assert!(
        text.contains("ada.lovelace@example.com"),
        "unscoped tool, no step: {text}"
    );
}

/// Which components make the gateway walk a server's listing before a call
/// (`src/gateway/listing.rs`): those that import the catalog's functions.
#[test]
fn only_components_that_import_the_catalog_read_definitions() {
    for (stem, reads) in [
        ("schema_guard", true),
        ("behave", true),
        ("noop", false),
        ("redact", false),
        ("deny_tools", false),
    ] {
        let bytes = std::fs::read(plugin_dir().join(format!("{stem}.wasm"))).unwrap();
        assert_eq!(
            portcullis::plugin::instance::reads_definitions(&bytes),
            reads,
            "{stem}"
        );
    }
    // Not a component: counted as reading (the walk is only extra work).
    assert!(portcullis::plugin::instance::reads_definitions(b"not wasm"));
}
