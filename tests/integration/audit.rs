//! The audit trail: records for every decision, no payload values, a hash
//! chain that pinpoints tampering, restarts, and strict mode failing closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::audit::verify::verify;
use portcullis::audit::{AuditMode, Spool, SpoolConfig, SpoolError};
use portcullis::client::McpClient;
use portcullis::tunnel::dial::ProxyConfig;
use portcullis::up::{self, AuditSpool, UpOptions};
use serde_json::json;

use crate::support::*;

fn config(dir: &Path, mode: AuditMode) -> SpoolConfig {
    SpoolConfig::new(dir.to_owned(), mode)
}

#[tokio::test]
async fn every_decision_is_recorded_without_payload_values() {
    let dir = scratch();
    let running = up::start(UpOptions {
        audit: AuditSpool::Dir(dir.clone()),
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
    bodies(dir, "decision")
}

/// The bodies of every spool line of type `kind` in `dir`.
fn bodies(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    spool_text(dir)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.rsplit_once('\t')?.0).ok())
        .filter(|l| l["type"] == kind)
        .map(|l| l["body"].clone())
        .collect()
}

#[tokio::test]
async fn the_relay_records_agent_requests_and_refusals_are_recorded_with_their_reason() {
    let dir = scratch();
    let running = up::start(UpOptions {
        audit: AuditSpool::Dir(dir.clone()),
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
    let seg = portcullis::audit::segment::segments(dir).unwrap().remove(0);
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
    let seg = portcullis::audit::segment::segments(&dir)
        .unwrap()
        .remove(0);
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

// ---- A full disk, a quota, a restart ----

/// A tmpfs of `bytes` mounted on a scratch directory, unmounted on drop:
/// a real filesystem that fills. Mounting needs root, which CI has.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    pub fn mount(bytes: u64) -> SmallDisk {
        let path = scratch();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {bytes}-byte tmpfs on {} failed: this test needs root",
            path.display()
        );
        SmallDisk { path }
    }

    /// Fills what is left of the disk with one file, which [`SmallDisk::free`]
    /// removes.
    pub fn fill(&self) {
        fill_disk(&self.path);
    }

    pub fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

fn fill_disk(path: &Path) {
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(path.join("filler")).unwrap();
        let chunk = [0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        // Byte by byte into the last page.
        while f.write_all(&[0]).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Every `gap` line's body in the spool of `dir`.
pub fn gaps(dir: &Path) -> Vec<serde_json::Value> {
    bodies(dir, "gap")
}

/// Every segment ends with a whole line: nothing of a failed write is left.
fn assert_whole_lines(dir: &Path) {
    for seg in portcullis::audit::segment::segments(dir).unwrap() {
        let text = std::fs::read_to_string(&seg).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends in a fragment: {:?}",
            seg.display(),
            &text[text.len().saturating_sub(80)..]
        );
    }
}

async fn pings(c: &McpClient, n: usize) {
    let calls = (0..n).map(|_| async {
        let mut c = c.clone();
        c.request("ping", json!({})).await.unwrap().status
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn a_full_disk_never_breaks_the_chain_and_the_loss_is_recorded_once_there_is_room() {
    let disk = SmallDisk::mount(256 * 1024);
    let dir = disk.path.join("audit");
    let t = OneTunnel::start().await;
    let (rec, seen) = recording_upstream().await;
    let ups = std::collections::HashMap::from([(
        "rec".to_owned(),
        http_upstream("rec", &format!("http://{rec}/mcp")),
    )]);
    let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    let spool = Arc::new(Spool::open(config(&dir, AuditMode::BestEffort)).unwrap());
    gw.set_audit(spool.clone());
    let c = t.client("rec");

    pings(&c, 20).await;
    spool.flush().await.unwrap();
    let per_call = decisions(&dir).len() / 20;
    assert!(per_call >= 1);

    // The disk fills under load: calls go on (best effort), their records
    // cannot be written, and every failed write is cut back off.
    disk.fill();
    for _ in 0..6 {
        pings(&c, 10).await;
        // (The first records may still fit the segment's last page.)
        let _ = spool.flush().await;
        assert_whole_lines(&dir);
    }
    let lost = spool.lost();
    assert!(lost > 0);
    assert!(verify(&dir, None).unwrap().findings.is_empty());

    // Space comes back: the running gateway writes again, and the loss is
    // a readable gap record.
    disk.free();
    pings(&c, 20).await;
    spool.flush().await.unwrap();
    let v = verify(&dir, None).unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    let found = gaps(&dir);
    let recorded: u64 = found.iter().map(|g| g["lost"].as_u64().unwrap()).sum();
    assert_eq!(recorded, lost, "{found:?}");
    assert!(
        found
            .iter()
            .all(|g| g["reason"].as_str().unwrap().contains("No space left")),
        "{found:?}"
    );
    // Nothing is unaccounted for: each decision is a record or counted in a gap.
    assert_eq!(
        decisions(&dir).len() as u64 + recorded,
        (per_call * 100) as u64
    );
    assert_eq!(seen.all().len(), 100);
}

#[tokio::test]
async fn losses_counted_before_a_restart_are_recorded_after_it() {
    let disk = SmallDisk::mount(128 * 1024);
    let dir = disk.path.join("audit");
    let spool = Spool::open(config(&dir, AuditMode::BestEffort)).unwrap();
    spool.append(&json!({"n": 0})).await.unwrap();
    spool.flush().await.unwrap();
    disk.fill();
    for n in 1..=25 {
        spool
            .append(&json!({"n": n, "pad": "x".repeat(200)}))
            .await
            .unwrap();
    }
    let flushed = spool.flush().await;
    assert!(
        matches!(&flushed, Err(SpoolError::Io(m)) if m.contains("No space left")),
        "{flushed:?}"
    );
    // (The first may still fit the segment's last page.)
    let lost = spool.lost();
    assert!(lost > 0);
    // The process ends before there is room to record the gap.
    drop(spool);
    disk.free();
    let spool = Spool::open(config(&dir, AuditMode::BestEffort)).unwrap();
    spool.flush().await.unwrap();
    let v = verify(&dir, None).unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    let found = gaps(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["lost"], lost);
    // Every record is either in the chain or counted in the gap.
    let written = decisions(&dir).len() as u64;
    assert_eq!(written + lost, 26);
    assert!(
        found[0]["reason"]
            .as_str()
            .unwrap()
            .contains("before the restart")
    );
    // Recorded once: a second restart adds no gap.
    drop(spool);
    let spool = Spool::open(config(&dir, AuditMode::BestEffort)).unwrap();
    spool.flush().await.unwrap();
    assert_eq!(gaps(&dir).len(), 1);
}

#[tokio::test]
async fn the_quota_is_read_from_disk_and_exported_segments_can_be_pruned() {
    let cfg = |dir: &Path, prune: bool| SpoolConfig {
        quota_bytes: 16 * 1024,
        segment_bytes: 2 * 1024,
        prune_exported: prune,
        ..config(dir, AuditMode::Strict)
    };
    let record = |n: u64| json!({"n": n, "pad": "x".repeat(100)});

    // Without pruning, a full quota refuses records (strict: the caller
    // hears it); segments moved away make room for a running spool.
    let dir = scratch();
    let spool = Spool::open(cfg(&dir, false)).unwrap();
    let mut n = 0;
    while spool.append(&record(n)).await.is_ok() {
        n += 1;
        assert!(n < 1000, "the quota never filled");
    }
    let segs = portcullis::audit::segment::segments(&dir).unwrap();
    assert!(segs.len() > 3);
    let archive = scratch();
    for s in &segs[..2] {
        std::fs::rename(s, archive.join(s.file_name().unwrap())).unwrap();
    }
    spool.append(&record(n)).await.unwrap();

    // With pruning, segments the collector acknowledged go when needed,
    // and the chain still verifies from where they end.
    let dir = scratch();
    let spool = Spool::open(cfg(&dir, true)).unwrap();
    let mut n = 0;
    while spool.append(&record(n)).await.is_ok() {
        n += 1;
        assert!(n < 1000, "the quota never filled");
    }
    // Nothing was exported: nothing may be pruned.
    assert!(verify(&dir, None).unwrap().pruned_through == 0);
    // The collector acknowledges as records are written (the exporter's
    // cursor file, as the exporter writes it).
    let acknowledge = |spool: &Spool| {
        let durable = *spool.durable().borrow();
        std::fs::write(
            dir.join(portcullis::audit::export::CURSOR_FILE),
            json!({"seq": durable, "hash": "h"}).to_string(),
        )
        .unwrap();
        durable
    };
    let mut durable = acknowledge(&spool);
    for m in 0..300 {
        spool.append(&record(n + m)).await.unwrap();
        if m % 10 == 9 {
            durable = acknowledge(&spool);
        }
    }
    let on_disk: u64 = portcullis::audit::segment::segments(&dir)
        .unwrap()
        .iter()
        .map(|s| std::fs::metadata(s).unwrap().len())
        .sum();
    assert!(on_disk <= 16 * 1024, "{on_disk}");
    let v = verify(&dir, None).unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    assert!(
        v.pruned_through > 0 && v.pruned_through <= durable,
        "{}",
        v.pruned_through
    );
    // Records not yet exported are never pruned.
    let first_kept = v.last_seq - v.records + 1;
    assert_eq!(first_kept, v.pruned_through + 1);
}

#[tokio::test]
async fn strict_mode_says_when_a_call_was_made_but_its_result_is_withheld() {
    let disk = SmallDisk::mount(128 * 1024);
    let dir = disk.path.join("audit");
    let t = OneTunnel::start().await;
    // The disk fills while the upstream works on the call: the request's
    // record was durable, the response's cannot be.
    let spool = Arc::new(Spool::open(config(&dir, AuditMode::Strict)).unwrap());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (root, seen, filler) = (disk.path.clone(), calls.clone(), spool.clone());
    let up = json_upstream(move |req| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        fill_disk(&root);
        // Records of its own take up the rest of the segment's last page.
        let spool = filler.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                while spool.append(&json!({"pad": "x".repeat(100)})).await.is_ok() {}
            })
        })
        .join()
        .unwrap();
        Some(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"content": []}}))
    })
    .await;
    let ups = std::collections::HashMap::from([(
        "side".to_owned(),
        http_upstream("side", &format!("http://{up}/mcp")),
    )]);
    let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    gw.set_audit(spool.clone());
    let reply = t
        .client("side")
        .request(
            "tools/call",
            json!({"name": "send_payment", "arguments": {"amount": 10}}),
        )
        .await
        .unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let msg = reply.last().unwrap();
    assert_eq!(msg["error"]["code"], -32603, "{msg}");
    assert_eq!(
        msg["error"]["message"],
        "Audit trail unavailable: the call was made, but its result could not be recorded and is withheld"
    );
    assert!(msg.get("result").is_none());
    assert_whole_lines(&dir);
}
