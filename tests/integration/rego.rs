//! `builtin:rego` as the built component, through the real host: decisions
//! on the principal's groups and claims and on arguments, evaluation errors
//! that fail closed, policies refused at load with their module and line,
//! and through a tunnel to the demo server, calls refused before the
//! upstream and listings filtered. (Look-alike names: `names.rs`; the
//! shipped example: `plugins.rs`, which runs every policy's cases.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::mcp::{Direction, Kind, MessageContext};
use portcullis::plugin::PluginEngine;
use portcullis::policy::verdict::{AnnotationValue, Decision, Verdict};
use portcullis::principal::Principal;
use portcullis::tunnel::dial::ProxyConfig;
use serde_json::{Value, json};

use crate::support::*;

const POLICY: &str = r#"
[plugins.rego]
source = "builtin:rego"

[plugins.rego.config]
policy = '''
package portcullis

default allow := false

allow if {
    "support" in input.principal.groups
    input.tool in data.read_tools
}

allow if {
    "support" in input.principal.groups
    input.tool == "issue_refund"
    input.arguments.amount <= limit
}

allow if {
    input.tool == "issue_refund"
    input.listing
    "support" in input.principal.groups
}

limit := 1000 if input.principal.claims.mfa == true
else := 100

allow if {
    input.tool == "parse_amount"
    to_number(input.arguments.amount) > 0
}

deny contains "no erasure" if portcullis.like(input.name, "delete_*")

annotations := {"desk": "support", "groups": count(input.principal.groups)}
'''

[plugins.rego.config.data]
read_tools = ["lookup_customer", "search_tickets"]

[[servers."*"]]
plugin = "rego"
phase = "both"
"#;

fn write(text: &str) -> PathBuf {
    let path = scratch().join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn load(path: &Path) -> Result<portcullis::policy::Policy, String> {
    let engine = PluginEngine::new(None).unwrap();
    portcullis::policy::load(path, &engine, Arc::default())
        .await
        .map_err(|e| e.to_string())
}

/// The error loading `text` fails with.
async fn load_err(text: &str) -> String {
    match load(&write(text)).await {
        Ok(_) => panic!("the policy loaded"),
        Err(e) => e,
    }
}

fn ctx(principal: Principal, target: &str) -> MessageContext {
    MessageContext {
        direction: Direction::ToServer,
        tunnel: "tun".into(),
        server: "demo".into(),
        kind: Kind::Request,
        method: Some("tools/call".into()),
        target: Some(target.into()),
        related_tool: None,
        request_id: Some("1".into()),
        session_id: None,
        protocol_version: Some("2025-11-25".into()),
        principal,
    }
}

/// One `tools/call` of `tool` with `arguments` (JSON text as written) by
/// `principal`, through the loaded component.
async fn call(
    policy: &portcullis::policy::Policy,
    principal: Principal,
    tool: &str,
    arguments: &str,
) -> Verdict {
    let msg = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    );
    policy
        .plugin("rego")
        .unwrap()
        .call(&ctx(principal, tool), &msg)
        .await
        .unwrap()
}

fn label<'a>(v: &'a Verdict, key: &str) -> Option<&'a str> {
    v.annotations.iter().find_map(|a| match &a.value {
        AnnotationValue::Label(s) if a.key == key => Some(s.as_str()),
        _ => None,
    })
}

fn denial(v: &Verdict) -> (i32, &str, &str) {
    match &v.decision {
        Decision::Deny(d) => (d.code, d.public_message.as_str(), d.private_reason.as_str()),
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn support() -> Principal {
    Principal::named("ana", vec!["support".into()])
}

#[tokio::test]
async fn rego_decides_on_groups_claims_and_arguments_in_the_component() {
    let policy = load(&write(POLICY)).await.unwrap();
    let v = call(&policy, support(), "lookup_customer", "{}").await;
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    assert_eq!(label(&v, "rule"), Some("allow"));
    assert_eq!(label(&v, "desk"), Some("support"));
    // Not in the group: refused like an unknown tool.
    let v = call(
        &policy,
        Principal::named("eve", vec![]),
        "lookup_customer",
        "{}",
    )
    .await;
    let (code, public, private) = denial(&v);
    assert_eq!((code, public), (-32602, "Unknown tool: lookup_customer"));
    assert!(
        private.contains("data.portcullis.allow is false"),
        "{private}"
    );
    assert_eq!(label(&v, "rule"), Some("default-deny"));
    // The limit depends on a claim of the token.
    let over = r#"{"amount": 800}"#;
    let v = call(&policy, support(), "issue_refund", over).await;
    assert!(matches!(v.decision, Decision::Deny(_)), "{v:?}");
    let mut mfa = support();
    mfa.claims.insert("mfa".into(), json!(true));
    let v = call(&policy, mfa.clone(), "issue_refund", over).await;
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    // Exact numbers: one a float would round to the limit is refused.
    let v = call(
        &policy,
        mfa,
        "issue_refund",
        r#"{"amount": 1000.0000000000000001}"#,
    )
    .await;
    let (_, _, private) = denial(&v);
    assert!(private.contains("no exact value"), "{private}");
    // deny wins over allow, and says why only in the private reason.
    let v = call(&policy, support(), "delete_customer", "{}").await;
    let (code, public, private) = denial(&v);
    assert_eq!((code, public), (-32602, "Unknown tool: delete_customer"));
    assert!(private.ends_with("no erasure"), "{private}");
    assert_eq!(label(&v, "rule"), Some("deny"));
}

#[tokio::test]
async fn a_rego_evaluation_error_fails_closed() {
    let policy = load(&write(POLICY)).await.unwrap();
    let v = call(&policy, support(), "parse_amount", r#"{"amount": "12"}"#).await;
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
    // to_number("twelve") is an error, not `false`: refused, and said so.
    let v = call(
        &policy,
        support(),
        "parse_amount",
        r#"{"amount": "twelve"}"#,
    )
    .await;
    let (code, public, private) = denial(&v);
    assert_eq!((code, public), (-32602, "Unknown tool: parse_amount"));
    assert!(private.contains("fail closed"), "{private}");
    assert!(private.contains("policy.rego:"), "{private}");
    assert_eq!(label(&v, "rule"), Some("error"));
}

#[tokio::test]
async fn a_broken_rego_policy_is_refused_at_load() {
    let broken = POLICY.replace(
        "input.tool in data.read_tools",
        "input.tool in data.read_tools ==",
    );
    let err = load_err(&broken).await;
    assert!(err.contains("rego: invalid config: policy.rego:"), "{err}");
    let v0 = POLICY.replace(
        "allow if {\n    \"support\" in input.principal.groups\n    input.tool in",
        "allow {\n    \"support\" in input.principal.groups\n    input.tool in",
    );
    let err = load_err(&v0).await;
    assert!(err.contains("policy.rego:5:7"), "{err}");
    assert!(err.contains("`if` keyword is required"), "{err}");
    let no_allow = POLICY.replace("allow", "permit");
    let err = load_err(&no_allow).await;
    assert!(
        err.contains("no module defines data.portcullis.allow"),
        "{err}"
    );
    // Found by the trial evaluation at load: the deny rule runs on every call.
    let unknown_fn = POLICY.replace("portcullis.like(", "portcullis.likes(");
    let err = load_err(&unknown_fn).await;
    assert!(
        err.contains("could not find function portcullis.likes"),
        "{err}"
    );
}

#[tokio::test]
async fn rego_refuses_before_the_upstream_and_filters_listings() {
    let t = OneTunnel::start().await;
    let (rec, seen) = recording_upstream().await;
    let mut ups = demo_upstreams(demo_server().await);
    ups.insert(
        "rec".to_owned(),
        http_upstream("rec", &format!("http://{rec}/mcp")),
    );
    let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    // The test relay's API key principal is in `support`; anyone may use
    // lookup_customer and (but for the deny) delete_customer.
    let text = POLICY.replace(
        "default allow := false",
        "default allow := false\n\nallow if { input.tool in {\"lookup_customer\", \"delete_customer\"} }",
    );
    let policy = load(&write(&text)).await.unwrap();
    gw.set_policy(Some(Arc::new(policy)));

    let mut c = t.client("demo");
    c.initialize().await.unwrap();
    let list = c.request("tools/list", json!({})).await.unwrap();
    let names: Vec<String> = list.last().unwrap()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    // Hidden: delete_customer (deny), get_ticket_thread, generate_report.
    assert_eq!(names, ["lookup_customer", "issue_refund", "search_tickets"]);
    let ok = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(
        ok["result"]["structuredContent"]["name"], "Ada Lovelace",
        "{ok}"
    );

    let mut r = t.client("rec");
    for tool in ["delete_customer", "issue_refund", "DELETE_customer"] {
        let reply = r.call_tool(tool, json!({"amount": 5000})).await.unwrap();
        assert_eq!(reply["error"]["code"], -32602, "{tool}: {reply}");
        assert_eq!(reply["error"]["message"], format!("Unknown tool: {tool}"));
    }
    assert!(seen.all().is_empty(), "a refused call reached the upstream");
}

#[test]
fn the_shipped_rego_example_is_its_policy_file() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"));
    let module = std::fs::read_to_string(dir.join("support.rego")).unwrap();
    let policy: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("support.toml")).unwrap()).unwrap();
    assert_eq!(
        policy["plugins"]["rego"]["config"]["policy"].as_str(),
        Some(module.as_str()),
        "policies/support.toml's inline module differs from policies/support.rego"
    );
}

/// The shipped Rego policy end to end: `portcullis up --policy
/// policies/support.toml` in front of the demo CRM, called by the Python
/// MCP SDK's client with `up`'s agent key (principal `demo-agent`, group
/// `support`) and without one (`--insecure-no-auth`: anonymous, no group).
#[tokio::test]
async fn the_rego_support_policy_guards_calls_through_portcullis_up_for_the_python_sdk_client() {
    use std::io::BufRead as _;
    let policy = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/support.toml"
    ));
    let start = |extra: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["up", "--json", "--listen", "127.0.0.1:0", "--no-audit"])
            .args(extra)
            .arg("--policy")
            .arg(&policy)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = Proc(child);
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let up: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        (guard, up)
    };
    let py = |url: String, token: Option<String>, tool: &'static str, args: Value| async move {
        let mut cmd = tokio::process::Command::new(require(peers_dir().join("venv/bin/python")));
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/py_client.py"
        ))
        .args(["--url", &url, "--tool", tool, "--args", &args.to_string()])
        .args(["--timeout", "60"])
        .kill_on_drop(true);
        if let Some(t) = token {
            cmd.args(["--token", &t]);
        }
        let out = within("python client", cmd.output()).await.unwrap();
        if out.status.success() {
            Ok(serde_json::from_slice::<Value>(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (_up, up) = start(&[]);
    let url = up["servers"]["demo"].as_str().unwrap().to_owned();
    let token = up["token"].as_str().map(str::to_owned);
    assert!(token.is_some(), "{up}");
    // Support reads customers; tools/list shows what support may call.
    let out = py(
        url.clone(),
        token.clone(),
        "lookup_customer",
        json!({"customer_id": "C-1001"}),
    )
    .await
    .unwrap();
    assert_eq!(
        out["result"]["structuredContent"]["name"], "Ada Lovelace",
        "{out}"
    );
    let tools = out["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t == "issue_refund"), "{out}");
    assert!(!tools.iter().any(|t| t == "delete_customer"), "{out}");
    // A refund within the limit passes; above it, it is an unknown tool.
    let out = py(
        url.clone(),
        token.clone(),
        "issue_refund",
        json!({"customer_id": "C-1001", "amount": 40}),
    )
    .await
    .unwrap();
    assert_eq!(out["result"]["isError"], false, "{out}");
    let err = py(
        url.clone(),
        token.clone(),
        "issue_refund",
        json!({"customer_id": "C-1001", "amount": 5000}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("Unknown tool: issue_refund"), "{err}");
    // Without the support group nothing is allowed.
    let (_anon, anon) = start(&["--insecure-no-auth"]);
    let url = anon["servers"]["demo"].as_str().unwrap().to_owned();
    let err = py(
        url,
        None,
        "lookup_customer",
        json!({"customer_id": "C-1001"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("Unknown tool: lookup_customer"), "{err}");
}
