//! `portcullis policy replay`, through the real binary, on spools a real
//! gateway recorded: the same policy changes nothing, a changed one lists
//! exactly the calls it decides differently (never a value unless asked),
//! a tampered spool is refused, and what cannot be replayed is counted.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use portcullis::client::McpClient;
use portcullis::up::{self, AuditSpool, PolicySource, UpOptions};
use serde_json::{Value, json};

use crate::plugins::{portcullis_policy, write_policy};
use crate::support::*;

/// An argument value that reaches the spool (the policy records payloads)
/// and must reach no report made without `--show-values`.
const CANARY: &str = "CANARY-7d3a-replayed-argument";

/// The demo's policy: authz allowing `tools` to the demo agent's group
/// (erasure denied by a rule), redact on results; `[audit]` recording
/// payloads, and the received messages too when `received`.
fn policy(tools: &[&str], erasure: &str, redact: bool, received: bool) -> String {
    let tools: Vec<String> = tools.iter().map(|t| format!("{t:?}")).collect();
    let mut p = format!(
        r#"
[plugins.authz]
source = "builtin:authz"
[plugins.authz.config]
rules = [
  {{ id = "support-read", effect = "allow", groups = ["support"], tools = [{}] }},
  {{ id = "erasure", effect = "{erasure}", tools = ["delete_*"] }},
]

[[servers.demo]]
plugin = "authz"
phase = "both"
"#,
        tools.join(", ")
    );
    if redact {
        p.push_str(
            r#"
[plugins.redact]
source = "builtin:redact"
[plugins.redact.config]
default_action = "mask"
detectors = { card = "partial", email = "partial", phone = "partial" }

[[servers.demo]]
plugin = "redact"
phase = "response"
"#,
        );
    }
    p.push_str("\n[audit]\nrecord_payloads = [\"demo\"]\n");
    if received {
        p.push_str("record_received = [\"demo\"]\n");
    }
    p
}

const READ: &[&str] = &["lookup_customer", "search_tickets"];

/// Runs a gateway (`up`) with `policy_text`, makes calls to several tools
/// (two searches carrying the canary, two look-ups, one denied erasure),
/// and returns its audit spool.
async fn record_spool(policy_text: &str) -> PathBuf {
    let dir = scratch();
    let running = up::start(UpOptions {
        audit: AuditSpool::Dir(dir.clone()),
        policy: PolicySource::File(write_policy(policy_text)),
        ..UpOptions::default()
    })
    .await
    .unwrap();
    let mut c = McpClient::new(&running.servers["demo"], running.token.as_deref());
    c.initialize().await.unwrap();
    c.request("tools/list", json!({})).await.unwrap();
    for query in [CANARY, "refund"] {
        let r = c
            .call_tool("search_tickets", json!({ "query": query }))
            .await
            .unwrap();
        assert!(r.get("result").is_some(), "{r}");
    }
    for id in ["C-1001", "C-1002"] {
        let r = c
            .call_tool("lookup_customer", json!({ "customer_id": id }))
            .await
            .unwrap();
        assert!(r.get("result").is_some(), "{r}");
    }
    let denied = c
        .call_tool("delete_customer", json!({ "customer_id": "C-1001" }))
        .await
        .unwrap();
    assert_eq!(denied["error"]["code"], -32602, "{denied}");
    running.gateway.audit().unwrap().flush().await.unwrap();
    running.stop().await;
    assert!(
        spool_text(&dir).contains(CANARY),
        "the spool must hold the value for its absence from reports to mean anything"
    );
    dir
}

/// `policy replay --audit DIR --policy FILE EXTRA…`: exit code, stdout, stderr.
fn replay(dir: &Path, policy_text: &str, extra: &[&str]) -> (i32, String, String) {
    let policy = write_policy(policy_text);
    let mut args: Vec<&OsStr> = vec![
        "replay".as_ref(),
        "--audit".as_ref(),
        dir.as_os_str(),
        "--policy".as_ref(),
        policy.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let out = portcullis_policy(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The JSON report of a replay, with its exit code.
fn replay_json(dir: &Path, policy_text: &str) -> (i32, Value) {
    let (code, stdout, stderr) = replay(dir, policy_text, &["--json"]);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    (code, report)
}

/// The report's messages with this change.
fn changed<'a>(report: &'a Value, change: &str) -> Vec<&'a Value> {
    report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["change"] == change)
        .collect()
}

#[tokio::test]
async fn a_replay_lists_exactly_the_calls_a_candidate_denies_and_never_their_values() {
    let recorded = policy(READ, "deny", true, false);
    let dir = record_spool(&recorded).await;

    // The policy that recorded the spool: no difference, exit 0.
    let (code, stdout, stderr) = replay(&dir, &recorded, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("chain: intact"), "{stdout}");
    assert!(stdout.contains("no differences"), "{stdout}");

    // Searching is no longer allowed: exactly the two searches are newly
    // denied, by authz's default deny; the exit status says so.
    let candidate = policy(&["lookup_customer"], "deny", true, false);
    let (code, report) = replay_json(&dir, &candidate);
    assert_eq!(code, 1, "{report:#}");
    let denied = changed(&report, "newly_denied");
    assert_eq!(denied.len(), 2, "{report:#}");
    assert_eq!(report["changes"]["newly_denied"], 2);
    for m in &denied {
        assert_eq!(
            (&m["direction"], &m["method"], &m["target"]),
            (
                &json!("to-server"),
                &json!("tools/call"),
                &json!("search_tickets")
            ),
            "{m:#}"
        );
        assert_eq!(m["was"]["outcome"], "forwarded");
        assert_eq!(m["was"]["steps"][0]["annotations"]["rule"], "support-read");
        assert_eq!(m["now"]["outcome"], "denied");
        assert_eq!(m["now"]["steps"][0]["plugin"], "authz");
        assert_eq!(m["now"]["steps"][0]["decision"], "deny");
        assert!(m["now"]["steps"][0]["annotations"]["rule"].is_string());
        assert!(m.get("values").is_none());
    }
    assert_eq!(
        report["differences"],
        report["messages"].as_array().unwrap().len()
    );
    // The searches' results answer requests the candidate denies.
    assert!(
        report["caveats"]["answers_a_newly_denied_request"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // No value reaches the report unless asked for.
    let (code, text, _) = replay(&dir, &candidate, &[]);
    assert_eq!(code, 1);
    assert!(text.contains("NEWLY DENIED"), "{text}");
    assert!(text.contains("rule=\"support-read\""), "{text}");
    assert!(
        !text.contains(CANARY),
        "a recorded argument value in the report:\n{text}"
    );
    assert!(!text.contains("private reason"), "{text}");
    let (_, json_text, _) = replay(&dir, &candidate, &["--json"]);
    assert!(!json_text.contains(CANARY));
    let (code, shown, _) = replay(&dir, &candidate, &["--show-values"]);
    assert_eq!(code, 1);
    assert!(shown.contains(CANARY), "{shown}");
    assert!(shown.contains("private reason"), "{shown}");

    // Records that keep no message the chain received are counted, with
    // why: the denied erasure (nothing recorded), the redacted look-ups
    // and the filtered listing (only their rewritten form).
    let (_, report) = replay_json(&dir, &recorded);
    let not = &report["not_replayable"];
    assert_eq!(not["denied_no_message_recorded"], 1, "{report:#}");
    assert!(
        not["only_rewritten_form_recorded"].as_u64().unwrap() >= 2,
        "{report:#}"
    );
    assert!(stdout.contains("not replayable: "), "{stdout}");
    assert!(stdout.contains("record_received not set"), "{stdout}");
    let replayed = report["replayed"].as_u64().unwrap();
    let skipped: u64 = not
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(replayed + skipped, report["decisions"].as_u64().unwrap());

    // Filters leave records out, and say how many.
    let (code, stdout, _) = replay(&dir, &candidate, &["--server", "other"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("left out by --server/--tunnel"), "{stdout}");
}

#[tokio::test]
async fn with_received_messages_recorded_denials_and_rewrites_replay_too() {
    let recorded = policy(READ, "deny", true, true);
    let dir = record_spool(&recorded).await;
    let (code, report) = replay_json(&dir, &recorded);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["differences"], 0);
    let not = &report["not_replayable"];
    for reason in [
        "denied_no_message_recorded",
        "only_rewritten_form_recorded",
        "no_message_recorded",
    ] {
        assert_eq!(not[reason], 0, "{reason}: {report:#}");
    }

    // Erasure allowed, nothing redacted: the denied erasure is newly
    // allowed, the listing now shows it, the look-ups are no longer
    // redacted.
    let erasure: Vec<&str> = READ.iter().copied().chain(["delete_customer"]).collect();
    let candidate = policy(&erasure, "allow", false, true);
    let (code, report) = replay_json(&dir, &candidate);
    assert_eq!(code, 1, "{report:#}");
    let allowed = changed(&report, "newly_allowed");
    assert_eq!(allowed.len(), 1, "{report:#}");
    assert_eq!(allowed[0]["target"], "delete_customer");
    assert_eq!(
        allowed[0]["was"]["steps"][0]["annotations"]["rule"],
        "erasure"
    );
    assert!(changed(&report, "newly_denied").is_empty(), "{report:#}");
    let listing = changed(&report, "rewritten_differently");
    assert!(
        listing
            .iter()
            .any(|m| m["method"] == "tools/list" && m["direction"] == "to-client"),
        "{report:#}"
    );
    let unredacted = changed(&report, "no_longer_rewritten");
    assert!(
        unredacted
            .iter()
            .any(|m| m["target"] == "lookup_customer" && m["direction"] == "to-client"),
        "{report:#}"
    );
}

#[tokio::test]
async fn a_tampered_spool_is_refused_unless_asked_and_errors_are_not_differences() {
    let recorded = policy(READ, "deny", true, false);
    let dir = record_spool(&recorded).await;
    let segment = portcullis::audit::segment::segments(&dir)
        .unwrap()
        .remove(0);
    let text = std::fs::read_to_string(&segment).unwrap();
    assert!(text.contains("\"target\":\"search_tickets\""));
    // One search recorded as if it had been a look-up, hash untouched.
    std::fs::write(
        &segment,
        text.replacen(
            "\"target\":\"search_tickets\"",
            "\"target\":\"lookup_customer\"",
            1,
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = replay(&dir, &recorded, &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert!(stderr.contains("--allow-broken-chain"), "{stderr}");
    assert!(!stdout.contains("no differences"), "{stdout}");
    let (code, stdout, stderr) = replay(&dir, &recorded, &["--allow-broken-chain"]);
    assert!(code == 0 || code == 1, "{stdout}{stderr}");
    assert!(stdout.contains("DOES NOT VERIFY"), "{stdout}");
    assert!(stdout.contains("was edited"), "{stdout}");

    // Not a spool, or a policy that does not load: 2, never 0 or 1.
    let (code, _, stderr) = replay(&scratch(), &recorded, &[]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = replay(
        &dir,
        "[plugins.x]\nsource = \"builtin:nope\"\n",
        &["--allow-broken-chain"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}
