//! The audit trail: records for every decision, no payload values, a hash
//! chain that pinpoints tampering, restarts, and strict mode failing closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::audit::verify::verify;
use portcullis::audit::{AuditMode, Spool, SpoolConfig};
use portcullis::client::McpClient;
use portcullis::tunnel::dial::ProxyConfig;
use portcullis::up::{self, UpOptions};
use serde_json::json;

use crate::support::*;

fn config(dir: &Path, mode: AuditMode) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        mode,
        key: None,
        quota_bytes: portcullis::audit::spool::DEFAULT_QUOTA_BYTES,
    }
}

#[tokio::test]
async fn every_decision_is_recorded_without_payload_values() {
    let dir = scratch();
    let running = up::start(UpOptions {
        audit_dir: Some(dir.clone()),
        ..UpOptions::default()
    })
    .await
    .unwrap();
    let mut c = McpClient::new(&running.servers["demo"], running.token.as_deref());
    c.initialize().await.unwrap();
    let canary = "CANARY-5e1f-secret-argument";
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": canary}))
        .await
        .unwrap();
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(canary)
    );
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(r["result"]["structuredContent"]["name"], "Ada Lovelace");
    let denied = c
        .call_tool("delete_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(denied["error"]["code"], -32602);
    running.gateway.audit().unwrap().flush().await.unwrap();

    let text = spool_text(&dir);
    assert!(
        !text.contains("CANARY"),
        "an argument value reached the audit trail"
    );
    for value in [
        "Ada Lovelace",
        "ada.lovelace@example.com",
        "4111 1111 1111 1111",
    ] {
        assert!(
            !text.contains(value),
            "a result value reached the audit trail: {value}"
        );
    }
    // Both directions of each call, with who, what and the verdicts.
    let decisions: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l.rsplit_once('\t').unwrap().0).ok()
        })
        .filter(|l| l["type"] == "decision")
        .map(|l| l["body"].clone())
        .collect();
    let lookups: Vec<_> = decisions
        .iter()
        .filter(|d| d["target"] == "lookup_customer")
        .collect();
    assert_eq!(lookups.len(), 4, "{decisions:#?}");
    // Calls go up as sent; C-1001's record comes back redacted (rewritten),
    // with the redaction counted per detector, never the values.
    assert!(lookups.iter().all(|d| d["subject"] == "demo-agent"
        && (d["outcome"] == "forwarded"
            || (d["direction"] == "to-client" && d["outcome"] == "rewritten"))));
    assert!(lookups.iter().any(|d| {
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["plugin"] == "redact" && s["annotations"]["card"].as_u64().unwrap_or(0) >= 1)
    }));
    assert!(
        lookups
            .iter()
            .any(|d| d["direction"] == "to-client" && d["kind"] == "response")
    );
    let refused = decisions
        .iter()
        .find(|d| d["target"] == "delete_customer")
        .expect("the denial is recorded");
    assert_eq!(refused["outcome"], "denied");
    assert_eq!(refused["steps"][0]["plugin"], "authz");
    assert_eq!(refused["steps"][0]["decision"], "deny");
    assert_eq!(refused["steps"][0]["digest"].as_str().unwrap().len(), 64);
    assert!(refused["policy_digest"].is_string());
    running.stop().await;
    let v = verify(&dir, None).unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
}

/// The decision bodies of a spool.
fn decisions(dir: &Path) -> Vec<serde_json::Value> {
    spool_text(dir)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.rsplit_once('\t')?.0).ok())
        .filter(|l| l["type"] == "decision")
        .map(|l| l["body"].clone())
        .collect()
}

#[tokio::test]
async fn the_relay_records_agent_requests_and_refusals_are_recorded_with_their_reason() {
    let dir = scratch();
    let running = up::start(UpOptions {
        audit_dir: Some(dir.clone()),
        ..UpOptions::default()
    })
    .await
    .unwrap();
    let url = &running.servers["demo"];
    let mut c = McpClient::new(url, running.token.as_deref());
    c.initialize().await.unwrap();
    let canary = "CANARY-77aa-relay";
    c.call_tool("lookup_customer", json!({"customer_id": canary}))
        .await
        .unwrap();
    // A wrong key: refused at the relay.
    let stranger = McpClient::new(url, Some("pk_not-a-real-key"));
    let r = stranger
        .send(http::Method::POST, c.request_body("ping", json!({})), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    // A malformed message: forwarded by the relay, refused by the gateway.
    let r = c
        .send(
            http::Method::POST,
            bytes::Bytes::from_static(b"{\"jsonrpc\":"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    running.gateway.audit().unwrap().flush().await.unwrap();
    running.relay.audit().unwrap().flush().await.unwrap();

    let relay_dir = dir.join(up::RELAY_AUDIT_SUBDIR);
    let relay = decisions(&relay_dir);
    let call = relay
        .iter()
        .find(|d| d["target"] == "lookup_customer")
        .expect("the relay recorded the call");
    assert_eq!(call["outcome"], "forwarded");
    assert_eq!(call["subject"], "demo-agent");
    assert_eq!(call["method"], "tools/call");
    assert!(call["session_id"].is_string());
    let refused = relay
        .iter()
        .find(|d| d["outcome"] == "refused")
        .expect("the relay recorded the refusal");
    assert_eq!(
        refused["subject"],
        portcullis::relay::agent::UNAUTHENTICATED
    );
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("invalid API key"),
        "{refused}"
    );
    assert!(
        !spool_text(&relay_dir).contains(canary),
        "an argument reached the relay's records"
    );
    assert!(
        !spool_text(&relay_dir).contains("pk_not-a-real-key"),
        "a credential reached the records"
    );

    let malformed = decisions(&dir)
        .into_iter()
        .find(|d| d["outcome"] == "refused")
        .expect("the gateway recorded the malformed message");
    assert_eq!(malformed["direction"], "to-server");
    assert!(
        malformed["reason"]
            .as_str()
            .unwrap()
            .starts_with("Parse error"),
        "{malformed}"
    );
    running.stop().await;
    for d in [&dir, &relay_dir] {
        let v = verify(d, None).unwrap();
        assert!(v.findings.is_empty(), "{}: {:?}", d.display(), v.findings);
    }
}

/// A spool with `n` decision records written and closed.
async fn spool_with(n: u64, key: Option<&[u8]>) -> PathBuf {
    let dir = scratch();
    let spool = Spool::open(SpoolConfig {
        key: key.map(<[u8]>::to_vec),
        ..config(&dir, AuditMode::Strict)
    })
    .unwrap();
    for i in 0..n {
        spool
            .append(&json!({"n": i, "outcome": "forwarded"}))
            .await
            .unwrap();
    }
    dir
}

fn edit_lines(dir: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let seg = portcullis::audit::spool::segments(dir).unwrap().remove(0);
    let mut lines: Vec<String> = std::fs::read_to_string(&seg)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    f(&mut lines);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(seg, text).unwrap();
}

#[tokio::test]
async fn tampering_is_pinpointed() {
    // 1 start record + 10 decisions: sequence 1..=11.
    let intact = spool_with(10, None).await;
    let v = verify(&intact, None).unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    assert_eq!((v.records, v.last_seq), (11, 11));

    type Tamper = Box<dyn FnOnce(&mut Vec<String>)>;
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edit",
            Box::new(|l| l[4] = l[4].replace(r#""n":3"#, r#""n":9"#)),
            "record 5 was edited",
        ),
        (
            "delete",
            Box::new(|l| {
                l.remove(6);
            }),
            "records 7..=7 are missing",
        ),
        (
            "reorder",
            Box::new(|l| l.swap(2, 5)),
            "record 3 is out of order",
        ),
        (
            "truncate",
            Box::new(|l| l.truncate(8)),
            "truncated: records up to 11 were written, the spool ends at 8",
        ),
    ];
    for (what, tamper, expected) in cases {
        let dir = spool_with(10, None).await;
        edit_lines(&dir, tamper);
        let v = verify(&dir, None).unwrap();
        assert!(
            v.findings.iter().any(|f| f.problem.contains(expected)),
            "{what}: {:?}",
            v.findings
        );
    }
    // With a key, an edit with a recomputed plain hash is still caught.
    let keyed = spool_with(3, Some(b"audit-key")).await;
    assert!(
        verify(&keyed, Some(b"audit-key"))
            .unwrap()
            .findings
            .is_empty()
    );
    assert!(
        !verify(&keyed, Some(b"wrong-key"))
            .unwrap()
            .findings
            .is_empty()
    );
    // The CLI says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "verify"])
        .arg(&intact)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact, 11 records"));
}

#[tokio::test]
async fn a_restart_continues_the_chain_and_cuts_a_torn_record() {
    let dir = spool_with(5, None).await;
    // A crash mid-write leaves half a line.
    let seg = portcullis::audit::spool::segments(&dir).unwrap().remove(0);
    let mut text = std::fs::read_to_string(&seg).unwrap();
    text.push_str(r#"{"seq":7,"type":"decision","pr"#);
    std::fs::write(&seg, text).unwrap();
    let spool = Spool::open(config(&dir, AuditMode::Strict)).unwrap();
    for i in 0..5 {
        spool.append(&json!({"n": i})).await.unwrap();
    }
    let v = verify(&dir, None).unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    // start, 5, start (the restart is explicit), 5.
    assert_eq!(v.records, 12);
    let starts = spool_text(&dir)
        .lines()
        .filter(|l| l.contains(r#""type":"start""#))
        .count();
    assert_eq!(starts, 2);
}

/// A tunnel to the recording upstream whose gateway records into a spool
/// with room for its start record and nothing more.
/// Room for the `start` record (about 205 bytes) and not even a `gap`
/// record (about 180) after it: 400 let a lone gap line in, which made the
/// outcome of a flush depend on how the writer happened to batch.
const FULL_QUOTA: u64 = 300;

async fn full_spool_stack(mode: AuditMode) -> (OneTunnel, Seen, Arc<Spool>) {
    let t = OneTunnel::start().await;
    let (rec, seen) = recording_upstream().await;
    let ups = std::collections::HashMap::from([(
        "rec".to_owned(),
        http_upstream("rec", &format!("http://{rec}/mcp")),
    )]);
    let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    let spool = Arc::new(
        Spool::open(SpoolConfig {
            quota_bytes: FULL_QUOTA,
            ..config(&scratch(), mode)
        })
        .unwrap(),
    );
    gw.set_audit(spool.clone());
    (t, seen, spool)
}

#[tokio::test]
async fn strict_mode_fails_calls_it_cannot_record() {
    let (t, seen, _spool) = full_spool_stack(AuditMode::Strict).await;
    let reply = t.client("rec").request("ping", json!({})).await.unwrap();
    assert_eq!(reply.status, 503);
    let msg = reply.last().unwrap();
    assert_eq!(msg["error"]["code"], -32603);
    assert_eq!(
        msg["error"]["message"],
        "Audit trail unavailable: the call was not made"
    );
    assert!(
        seen.all().is_empty(),
        "an unrecorded call reached the upstream"
    );

    // Best effort keeps serving and counts the loss.
    let (t, seen, spool) = full_spool_stack(AuditMode::BestEffort).await;
    let reply = t.client("rec").request("ping", json!({})).await.unwrap();
    assert_eq!(reply.status, 200);
    // The spool is full: flushing says so, and the loss is counted.
    assert!(matches!(
        spool.flush().await,
        Err(portcullis::audit::SpoolError::Full(FULL_QUOTA))
    ));
    assert!(spool.lost() >= 1, "the loss must be counted");
    assert_eq!(seen.all().len(), 1);
}
