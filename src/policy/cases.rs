//! `portcullis policy test`: test cases kept beside a policy, run through the
//! real plugins, with a readable report.
//!
//! Cases live in `NAME.cases.toml` next to `NAME.toml`:
//!
//! ```toml
//! [[case]]
//! name = "erasure is refused like an unknown tool"
//! server = "demo"                      # default "demo"
//! direction = "to-server"              # to-server (default) | to-client
//! principal = { subject = "alice", groups = ["support"] }
//! message = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_customer"}}'
//! expect = "deny"                      # allow | rewrite | deny | reject (refused when parsed)
//! code = -32602                        # deny: expected JSON-RPC code
//! public_message = "Unknown tool: delete_customer"   # deny: expected text
//!
//! [[case]]
//! name = "tools/list hides erasure"
//! direction = "to-client"
//! method = "tools/list"                # for replies: the method answered
//! message = '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_customer"}]}}'
//! expect = "rewrite"
//! absent = ["delete_customer"]         # strings the output must not contain
//! present = []                         # strings it must contain
//! # output = '...'                     # or the exact expected JSON
//!
//! [catalog]                            # tool definitions plugins may read
//! demo = '[{"name":"lookup_customer","inputSchema":{"type":"object"}}]'
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;

use super::chain::{Policy, Ruling};
use crate::mcp::{Direction, Message, MessageContext};
use crate::principal::Principal;

/// Why the cases could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("cannot read cases {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cases {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCases {
    /// Tool definitions per server, as the upstream would list them (a
    /// JSON array of `tools/list` entries), for plugins that read the
    /// catalog (schema-guard).
    #[serde(default)]
    catalog: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "default_server")]
    server: String,
    #[serde(default)]
    direction: CaseDirection,
    #[serde(default)]
    principal: Option<Principal>,
    method: Option<String>,
    target: Option<String>,
    message: String,
    expect: Expect,
    code: Option<i32>,
    public_message: Option<String>,
    output: Option<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    present: Vec<String>,
}

fn default_server() -> String {
    "demo".into()
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum CaseDirection {
    #[default]
    ToServer,
    ToClient,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Allow,
    Rewrite,
    Deny,
    /// Refused when parsed, before any plugin sees it (duplicate keys,
    /// batches, too deep): the gateway answers `code` (-32700 or -32600).
    Reject,
}

/// The cases file that goes with a policy file.
pub fn cases_path(policy: &Path) -> PathBuf {
    policy.with_extension("cases.toml")
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// The printable report, one line per case.
    pub text: String,
}

impl Report {
    /// Adds one case's line (and its problems, when it failed).
    fn record(&mut self, name: &str, steps: &[String], problems: Vec<String>) {
        let verdict = if problems.is_empty() {
            self.passed += 1;
            "PASS"
        } else {
            self.failed += 1;
            "FAIL"
        };
        let _ = writeln!(self.text, "{verdict}  {name}  [{}]", steps.join(" "));
        for p in problems {
            let _ = writeln!(self.text, "        {p}");
        }
    }
}

impl Report {
    /// The lines `--explain` adds under a case: one per plugin that ran,
    /// then the chain's outcome.
    fn explain(
        &mut self,
        records: &[super::chain::StepRecord],
        outcome: &Ruling,
        original: &Bytes,
    ) {
        if records.is_empty() {
            let _ = writeln!(self.text, "        no plugin ran on this message");
        }
        for r in records {
            let line = describe_step(&crate::audit::StepEntry::from(r));
            let _ = writeln!(self.text, "        {line}");
        }
        let _ = match outcome {
            Ruling::Deny(d) => writeln!(
                self.text,
                "        => denied: {} {:?}",
                d.code, d.public_message
            ),
            Ruling::Pass(b) if b == original => writeln!(self.text, "        => passed unchanged"),
            Ruling::Pass(b) => writeln!(
                self.text,
                "        => passed rewritten: {}",
                String::from_utf8_lossy(b)
            ),
        };
    }
}

/// One plugin's part in a decision, as `--explain` (and `policy replay`)
/// show it: `plugin (mode): verdict`, its annotations (labels quoted,
/// counts bare; the deciding authz `rule` or Cedar `policy` among them),
/// and the private reason when the step has one.
pub fn describe_step(step: &crate::audit::StepEntry) -> String {
    let mut line = format!("{} ({}): {}", step.plugin, step.mode, step.decision);
    for (key, value) in &step.annotations {
        let _ = match value {
            serde_json::Value::String(v) => write!(line, "  {key}={v:?}"),
            other => write!(line, "  {key}={other}"),
        };
    }
    if let Some(reason) = &step.reason {
        let _ = write!(line, "  private reason: {reason}");
    }
    line
}

fn check(case: &Case, outcome: &Ruling, original: &Bytes) -> Vec<String> {
    let mut problems = Vec::new();
    let (got, output) = match outcome {
        Ruling::Deny(_) => (Expect::Deny, None),
        Ruling::Pass(b) if b == original => (Expect::Allow, Some(b)),
        Ruling::Pass(b) => (Expect::Rewrite, Some(b)),
    };
    if got != case.expect {
        problems.push(format!("expected {:?}, got {got:?}", case.expect).to_lowercase());
    }
    if let Ruling::Deny(d) = outcome {
        if let Some(code) = case.code.filter(|c| *c != d.code) {
            problems.push(format!("expected code {code}, got {}", d.code));
        }
        if let Some(m) = case
            .public_message
            .as_ref()
            .filter(|m| **m != d.public_message)
        {
            problems.push(format!(
                "expected message {m:?}, got {:?}",
                d.public_message
            ));
        }
    }
    if let Some(out) = output {
        let text = String::from_utf8_lossy(out);
        for s in &case.absent {
            if text.contains(s.as_str()) {
                problems.push(format!("output contains {s:?}"));
            }
        }
        for s in &case.present {
            if !text.contains(s.as_str()) {
                problems.push(format!("output lacks {s:?}"));
            }
        }
        if let Some(expected) = &case.output {
            let a: Result<serde_json::Value, _> = serde_json::from_str(expected);
            let b: Result<serde_json::Value, _> = serde_json::from_slice(out);
            match (a, b) {
                (Ok(a), Ok(b)) if a == b => {}
                (Ok(_), Ok(b)) => problems.push(format!("output differs: got {b}")),
                (Err(e), _) => problems.push(format!("the expected output is not JSON: {e}")),
                (_, Err(e)) => problems.push(format!("the output is not JSON: {e}")),
            }
        }
    }
    problems
}

/// Runs the cases in `path` against `policy`.
pub async fn run(
    policy: &Policy,
    catalog: &super::catalog::Catalog,
    path: &Path,
    max_depth: usize,
) -> Result<Report, CasesError> {
    run_with(policy, catalog, path, max_depth, false).await
}

/// [`run`]; with `explain`, each case's line is followed by what every
/// plugin that ran decided — its verdict, mode, private reason and
/// annotations (the rule or policy id that decided is an annotation:
/// `rule` for authz, `policy` for Cedar) — and what the chain did.
pub async fn run_with(
    policy: &Policy,
    catalog: &super::catalog::Catalog,
    path: &Path,
    max_depth: usize,
    explain: bool,
) -> Result<Report, CasesError> {
    let text = std::fs::read_to_string(path).map_err(|e| CasesError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let invalid = |message: String| CasesError::Invalid {
        path: path.display().to_string(),
        message,
    };
    let raw: RawCases = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if raw.case.is_empty() {
        return Err(invalid("no [[case]] entries".into()));
    }
    for (server, tools) in &raw.catalog {
        let tools: serde_json::Value =
            serde_json::from_str(tools).map_err(|e| invalid(format!("catalog.{server}: {e}")))?;
        if !tools.is_array() {
            return Err(invalid(format!(
                "catalog.{server}: expected a JSON array of tools"
            )));
        }
        let listing = serde_json::json!({"jsonrpc": "2.0", "id": 0, "result": {"tools": tools}});
        catalog.learn(
            server,
            listing.to_string().as_bytes(),
            crate::policy::catalog::Page::First,
        );
    }
    let mut report = Report {
        passed: 0,
        failed: 0,
        text: String::new(),
    };
    for case in &raw.case {
        let raw_msg = Bytes::from(case.message.clone());
        let opts = policy.parse_options(&case.server, max_depth);
        let msg = match (Message::parse(raw_msg.clone(), opts), case.expect) {
            (Ok(m), _) => m,
            (Err(e), Expect::Reject) => {
                let problems: Vec<String> = case
                    .code
                    .filter(|c| i64::from(*c) != e.code())
                    .map(|c| format!("expected code {c}, got {}", e.code()))
                    .into_iter()
                    .collect();
                report.record(&case.name, &[], problems);
                continue;
            }
            (Err(e), _) => {
                return Err(invalid(format!("case {:?}: message: {e}", case.name)));
            }
        };
        let direction = match case.direction {
            CaseDirection::ToServer => Direction::ToServer,
            CaseDirection::ToClient => Direction::ToClient,
        };
        let is_reply = !msg.has_method();
        let ctx = MessageContext {
            direction,
            tunnel: "policy-test".into(),
            server: case.server.clone(),
            kind: msg.kind,
            method: if is_reply {
                case.method.clone()
            } else {
                msg.method.clone()
            },
            target: if is_reply {
                case.target.clone()
            } else {
                msg.name.clone()
            },
            related_tool: None,
            request_id: msg.id.clone(),
            session_id: None,
            protocol_version: None,
            principal: case.principal.clone().unwrap_or_else(Principal::anonymous),
        };
        let (outcome, records) = policy.apply(&ctx, raw_msg.clone(), max_depth).await;
        let problems = check(case, &outcome, &raw_msg);
        let steps: Vec<String> = records
            .iter()
            .map(|r| format!("{}={}", r.plugin, r.decision))
            .collect();
        report.record(&case.name, &steps, problems);
        if explain {
            report.explain(&records, &outcome, &raw_msg);
        }
    }
    let total = report.passed + report.failed;
    let _ = writeln!(
        report.text,
        "{} of {total} cases as expected",
        report.passed
    );
    Ok(report)
}
