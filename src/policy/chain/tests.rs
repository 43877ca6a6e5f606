//! The combine rules of the chain, table-driven, with fake evaluators (no
//! Wasm): the first enforced deny stops the chain, audit mode never blocks
//! or rewrites, a failure denies unless the step fails open, a rewrite must
//! keep the message's id, kind and method, and a step runs only on the
//! messages its phase, tools and interests admit.
//!
//! Past 400 lines because it is tables (one row per case of a rule) and the
//! fakes they share; split, the rows would lose the helpers they read with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::run::validate_rewrite;
use super::{
    ALL_SERVERS, POLICY_FAILURE_CODE, POLICY_FAILURE_MESSAGE, Phase, Policy, Ruling, Step,
};
use crate::limits::MAX_JSON_DEPTH;
use crate::mcp::{Direction, Message, MessageContext, Mode, ParseOptions, StepDecision};
use crate::policy::verdict::{CallError, Decision, Denial, Evaluate, Interests, Verdict};
use crate::principal::Principal;

/// The message every combine case runs on.
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{"q":"alice@example.com"}}}"#;
/// A valid rewrite of [`CALL`].
const REDACTED: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{"q":"[email]"}}}"#;
/// A rewrite of [`CALL`] that answers another id: never valid.
const REDIRECTED: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#;
/// The code of a fake's denial.
const DENY_CODE: i32 = -32001;

/// What a fake evaluator answers, every time.
#[derive(Clone, Copy)]
enum Answer {
    Allow,
    Deny,
    Rewrite(&'static str),
    Fail,
}

/// An evaluator that answers from a script and keeps the messages it saw.
struct Fake {
    name: String,
    answer: Answer,
    interests: Interests,
    seen: Mutex<Vec<String>>,
}

impl Fake {
    fn new(name: &str, answer: Answer) -> Fake {
        Fake {
            name: name.to_owned(),
            answer,
            interests: Interests::default(),
            seen: Mutex::default(),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Evaluate for Fake {
    fn name(&self) -> &str {
        &self.name
    }

    fn digest(&self) -> &str {
        "0"
    }

    fn interests(&self) -> &Interests {
        &self.interests
    }

    async fn evaluate(&self, _: &MessageContext, message: &str) -> Result<Verdict, CallError> {
        self.seen.lock().unwrap().push(message.to_owned());
        let decision = match self.answer {
            Answer::Allow => Decision::Allow,
            Answer::Deny => Decision::Deny(Denial {
                code: DENY_CODE,
                public_message: "no".into(),
                private_reason: format!("{} denies", self.name),
            }),
            Answer::Rewrite(text) => Decision::Rewrite(text.to_owned()),
            Answer::Fail => return Err(CallError::Trap(format!("{} failed", self.name))),
        };
        Ok(Verdict {
            decision,
            annotations: Vec::new(),
        })
    }
}

/// One step of a case: which chain, the fake, its mode and failure mode.
struct Spec {
    chain: &'static str,
    name: &'static str,
    answer: Answer,
    mode: Mode,
    fail_open: bool,
}

fn enforce(name: &'static str, answer: Answer) -> Spec {
    Spec {
        chain: ALL_SERVERS,
        name,
        answer,
        mode: Mode::Enforce,
        fail_open: false,
    }
}

fn audit(name: &'static str, answer: Answer) -> Spec {
    Spec {
        mode: Mode::Audit,
        ..enforce(name, answer)
    }
}

fn fail_open(name: &'static str, answer: Answer) -> Spec {
    Spec {
        fail_open: true,
        ..enforce(name, answer)
    }
}

fn on_server(spec: Spec) -> Spec {
    Spec { chain: "s", ..spec }
}

fn step(plugin: Arc<dyn Evaluate>, mode: Mode, fail_open: bool) -> Step {
    Step {
        plugin,
        phase: Phase::Both,
        mode,
        fail_open,
        tools: Vec::new(),
    }
}

fn policy(chains: BTreeMap<String, Vec<Step>>) -> Policy {
    Policy::new("digest".into(), chains)
}

/// The context of `message`, as it arrives `direction`.
fn ctx_in(message: &str, direction: Direction) -> MessageContext {
    let m = Message::parse(
        Bytes::from(message.to_owned()),
        ParseOptions::new(MAX_JSON_DEPTH),
    )
    .unwrap();
    MessageContext {
        direction,
        tunnel: "t".into(),
        server: "s".into(),
        kind: m.kind,
        method: m.method.clone(),
        target: m.name.clone(),
        related_tool: None,
        request_id: m.id.clone(),
        session_id: None,
        protocol_version: None,
        principal: Principal::anonymous(),
    }
}

fn ctx_of(message: &str) -> MessageContext {
    ctx_in(message, Direction::ToServer)
}

/// What a case expects the chain to rule.
#[derive(Debug, PartialEq)]
enum Want {
    /// Pass this text.
    Pass(&'static str),
    /// Deny with this fake's own denial.
    DeniedBy(&'static str),
    /// Deny because a step failed and fails closed.
    FailedClosed,
}

#[tokio::test]
async fn the_combine_rules() {
    use Answer::*;
    use StepDecision as D;
    // Name, steps in order, the ruling, the steps recorded (those that ran).
    type Case = (&'static str, Vec<Spec>, Want, Vec<(&'static str, D)>);
    let cases: Vec<Case> = vec![
        (
            "every step allows: the original passes",
            vec![enforce("a", Allow), enforce("b", Allow)],
            Want::Pass(CALL),
            vec![("a", D::Allow), ("b", D::Allow)],
        ),
        (
            "the first enforced deny stops the chain",
            vec![enforce("a", Allow), enforce("b", Deny), enforce("c", Deny)],
            Want::DeniedBy("b"),
            vec![("a", D::Allow), ("b", D::Deny)],
        ),
        (
            "the '*' chain runs before the server's own",
            vec![on_server(enforce("own", Deny)), enforce("all", Deny)],
            Want::DeniedBy("all"),
            vec![("all", D::Deny)],
        ),
        (
            "an audit-mode deny never blocks",
            vec![audit("a", Deny), enforce("b", Allow)],
            Want::Pass(CALL),
            vec![("a", D::Deny), ("b", D::Allow)],
        ),
        (
            "an enforced deny after an audit-mode one stops the chain",
            vec![audit("a", Deny), enforce("b", Deny)],
            Want::DeniedBy("b"),
            vec![("a", D::Deny), ("b", D::Deny)],
        ),
        (
            "an enforced rewrite is what passes",
            vec![enforce("a", Rewrite(REDACTED)), enforce("b", Allow)],
            Want::Pass(REDACTED),
            vec![("a", D::Rewrite), ("b", D::Allow)],
        ),
        (
            "an audit-mode rewrite never rewrites",
            vec![audit("a", Rewrite(REDACTED)), enforce("b", Allow)],
            Want::Pass(CALL),
            vec![("a", D::Rewrite), ("b", D::Allow)],
        ),
        (
            "a failure denies by default (fail closed)",
            vec![enforce("a", Fail), enforce("b", Allow)],
            Want::FailedClosed,
            vec![("a", D::Error)],
        ),
        (
            "a failure passes only where on_error = allow is written",
            vec![fail_open("a", Fail), enforce("b", Allow)],
            Want::Pass(CALL),
            vec![("a", D::Error), ("b", D::Allow)],
        ),
        (
            "an audit-mode failure never blocks",
            vec![audit("a", Fail), enforce("b", Allow)],
            Want::Pass(CALL),
            vec![("a", D::Error), ("b", D::Allow)],
        ),
        (
            "a rewrite that changes the id is a failure, and fails closed",
            vec![enforce("a", Rewrite(REDIRECTED)), enforce("b", Allow)],
            Want::FailedClosed,
            vec![("a", D::Error)],
        ),
        (
            "an invalid rewrite that fails open passes the original",
            vec![fail_open("a", Rewrite(REDIRECTED)), enforce("b", Allow)],
            Want::Pass(CALL),
            vec![("a", D::Error), ("b", D::Allow)],
        ),
        (
            "a rewrite that is not JSON-RPC is a failure",
            vec![enforce("a", Rewrite("[1,2]"))],
            Want::FailedClosed,
            vec![("a", D::Error)],
        ),
    ];
    for (name, specs, want, want_records) in cases {
        let mut chains: BTreeMap<String, Vec<Step>> = BTreeMap::new();
        let mut fakes = Vec::new();
        for s in specs {
            let fake = Arc::new(Fake::new(s.name, s.answer));
            fakes.push((s.name, s.mode, fake.clone()));
            chains
                .entry(s.chain.to_owned())
                .or_default()
                .push(step(fake, s.mode, s.fail_open));
        }
        let p = policy(chains);
        let ctx = ctx_of(CALL);
        let (ruling, records) = p
            .apply(&ctx, Bytes::from_static(CALL.as_bytes()), MAX_JSON_DEPTH)
            .await;
        let got = match &ruling {
            Ruling::Pass(b) if b == CALL.as_bytes() => Want::Pass(CALL),
            Ruling::Pass(b) if b == REDACTED.as_bytes() => Want::Pass(REDACTED),
            Ruling::Pass(b) => panic!("{name}: passed {b:?}"),
            Ruling::Deny(d) if d.code == POLICY_FAILURE_CODE => {
                assert_eq!(d.public_message, POLICY_FAILURE_MESSAGE, "{name}");
                Want::FailedClosed
            }
            Ruling::Deny(d) => {
                assert_eq!(d.code, DENY_CODE, "{name}");
                let by = fakes
                    .iter()
                    .find(|(n, ..)| d.private_reason == format!("{n} denies"))
                    .map(|(n, ..)| *n);
                Want::DeniedBy(by.unwrap_or_else(|| panic!("{name}: {d:?}")))
            }
        };
        assert_eq!(got, want, "{name}");
        let got_records: Vec<(&str, StepDecision)> = records
            .iter()
            .map(|r| (r.plugin.as_str(), r.decision))
            .collect();
        assert_eq!(got_records, want_records, "{name}: the steps recorded");
        for r in &records {
            let mode = fakes.iter().find(|(n, ..)| *n == r.plugin).map(|f| f.1);
            assert_eq!(
                Some(r.mode),
                mode,
                "{name}: {} recorded in its mode",
                r.plugin
            );
        }
        // A step that ran saw the message as the enforced steps before it
        // left it; a step after the chain stopped never ran.
        let mut current = CALL;
        for (n, mode, fake) in &fakes {
            let ran = want_records.iter().any(|(r, _)| r == n);
            let seen = fake.seen();
            if !ran {
                assert!(seen.is_empty(), "{name}: {n} ran after the chain stopped");
                continue;
            }
            assert_eq!(seen, [current], "{name}: what {n} saw");
            if let (Mode::Enforce, Answer::Rewrite(REDACTED)) = (mode, fake.answer) {
                current = REDACTED;
            }
        }
    }
}

#[tokio::test]
async fn steps_run_only_on_the_messages_they_are_scoped_to() {
    let note = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
    let reply = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    let mut progress = ctx_in(note, Direction::ToClient);
    progress.related_tool = Some("lookup".into());
    let mut answered = ctx_in(reply, Direction::ToClient);
    answered.method = Some("tools/call".into());
    let list = ctx_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    let call = ctx_of(CALL);
    let messages = [
        ("call", &call, CALL),
        (
            "list",
            &list,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        ),
        ("progress", &progress, note),
        ("answered", &answered, reply),
    ];
    let interested = |methods: &[&str], directions: &[Direction]| Interests {
        methods: methods.iter().map(|m| m.to_string()).collect(),
        directions: directions.to_vec(),
        to_client_methods: Vec::new(),
    };
    let every = Interests::default();
    // Name, phase, tool globs, interests, the messages the step runs on.
    type Case = (
        &'static str,
        Phase,
        Vec<&'static str>,
        Interests,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "unscoped",
            Phase::Both,
            vec![],
            every.clone(),
            vec!["call", "list", "progress", "answered"],
        ),
        (
            "phase request",
            Phase::Request,
            vec![],
            every.clone(),
            vec!["call", "list"],
        ),
        (
            "phase response",
            Phase::Response,
            vec![],
            every.clone(),
            vec!["progress", "answered"],
        ),
        // A tool glob matches the target, or the tool a notification belongs to.
        (
            "tools look*",
            Phase::Both,
            vec!["look*"],
            every.clone(),
            vec!["call", "progress"],
        ),
        (
            "tools delete_*",
            Phase::Both,
            vec!["delete_*"],
            every.clone(),
            vec![],
        ),
        (
            "interests: tools/* methods",
            Phase::Both,
            vec![],
            interested(&["tools/*"], &[]),
            vec!["call", "list", "answered"],
        ),
        (
            "interests: to-client only",
            Phase::Both,
            vec![],
            interested(&[], &[Direction::ToClient]),
            vec!["progress", "answered"],
        ),
        (
            "interests: exact method",
            Phase::Request,
            vec![],
            interested(&["tools/list"], &[]),
            vec!["list"],
        ),
    ];
    for (name, phase, tools, interests, want) in cases {
        let fake = Arc::new(Fake {
            interests,
            ..Fake::new(name, Answer::Deny)
        });
        let mut s = step(fake.clone(), Mode::Enforce, false);
        s.phase = phase;
        s.tools = tools.iter().map(|t| t.to_string()).collect();
        let p = policy(BTreeMap::from([("s".to_owned(), vec![s])]));
        let mut ran = Vec::new();
        for (label, ctx, text) in &messages {
            let (ruling, records) = p
                .apply(ctx, Bytes::from(text.to_string()), MAX_JSON_DEPTH)
                .await;
            let stepped = !records.is_empty();
            assert_eq!(p.wants(ctx), stepped, "{name}: wants() agrees on {label}");
            assert_eq!(
                matches!(ruling, Ruling::Deny(_)),
                stepped,
                "{name}: {label}"
            );
            if stepped {
                ran.push(*label);
            }
        }
        assert_eq!(ran, want, "{name}");
        assert_eq!(fake.seen().len(), want.len(), "{name}");
    }
}

/// Found by the `rewrite` fuzz target: a result could be rewritten into
/// an error for the same id, and a request or notification into one
/// with another method.
#[test]
fn a_rewrite_keeps_the_kind_the_id_and_the_method() {
    let result = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#;
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a"}}"#;
    let note = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
    let cases = [
        (
            result,
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"x"}]}}"#,
            true,
        ),
        (result, result, true),
        (
            result,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"no"}}"#,
            false,
        ),
        (result, r#"{"jsonrpc":"2.0","id":8,"result":{}}"#, false),
        (result, r#"[{"jsonrpc":"2.0","id":7,"result":{}}]"#, false),
        (
            call,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a","arguments":{}}}"#,
            true,
        ),
        (
            call,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
            false,
        ),
        (
            call,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}"#,
            false,
        ),
        (
            note,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
            true,
        ),
        (
            note,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#,
            false,
        ),
    ];
    for (original, rewrite, accepted) in cases {
        let got = validate_rewrite(
            &ctx_of(original),
            rewrite.to_owned(),
            ParseOptions::new(MAX_JSON_DEPTH),
        );
        assert_eq!(got.is_ok(), accepted, "{original} -> {rewrite}: {got:?}");
    }
}
