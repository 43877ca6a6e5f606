//! `behave`: a plugin for the host's tests, misbehaving on demand.
//!
//! Its configuration `{"mode": "..."}` picks the behaviour:
//!
//! | mode               | `handle` does                                                           |
//! |--------------------|-------------------------------------------------------------------------|
//! | `allow`            | allows everything                                                       |
//! | `deny`             | denies everything: -32001, "denied by test", "test private reason"      |
//! | `rewrite-request`  | to-server `tools/call` requests: sets `params.arguments.rewritten = true` |
//! | `rewrite-response` | to-client responses: every `result.content[].text` becomes "REDACTED"   |
//! | `deny-response`    | denies every to-client message (-32001, "response denied by test")      |
//! | `loop`             | never returns                                                           |
//! | `alloc`            | allocates 1 MiB blocks forever, keeping them                            |
//! | `trap`             | panics (traps) when the message text contains `boom`, else allows       |
//! | `garbage`          | rewrites to the invalid JSON `not json {`                               |
//! | `env`              | probes env vars, `/` and `/etc/passwd`, then denies (-32001) with the public message `env=N fs=ok\|err` |
//! | `fail-init`        | (`init` fails with "fail-init: the config says so")                    |
//! | `count`            | allows, annotating count `seen` = messages this instance has handled     |
//! | `principal`        | allows, labelling `subject`, `groups` (comma-joined) and `claims` (the JSON text) from its context |
//! | `tool-def`         | `tools/call` requests: denies (-32001) with the public message = host `tool-revision(ctx.server, target)` and `tool-definition(ctx.server, target)` JSON, separated by a space, each `none` when unknown |
//! | `fetch-then-spin`  | `tools/call` requests: fetches the target's definition `arguments.fetches` times, spins `arguments.spin_ms` on the wall clock, then allows with count `fetched` |
//!
//! Interests are everything, except `rewrite-request`: `tools/call`, to-server.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_plugin_sdk::{
    ConfiguredPlugin, Context, Direction, Interests, Message, MessageKind, Verdict, allow, codes,
    deny, rewrite, tool_definition_raw, tool_revision,
};
use serde::Deserialize;

/// What `handle` does (the table above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Allow,
    Deny,
    RewriteRequest,
    RewriteResponse,
    DenyResponse,
    Loop,
    Alloc,
    Trap,
    Garbage,
    Env,
    FailInit,
    Count,
    Principal,
    ToolDef,
    FetchThenSpin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: Mode,
}

/// Messages this instance has handled (mode `count`).
static SEEN: AtomicU64 = AtomicU64::new(0);

/// The plugin; its configuration is the mode.
pub struct Behave;

impl ConfiguredPlugin for Behave {
    const NAME: &'static str = "behave";
    type Config = Mode;

    fn parse(config: &str) -> Result<Mode, String> {
        let Config { mode } =
            serde_json::from_str(config).map_err(|e| format!("behave: invalid config: {e}"))?;
        if mode == Mode::FailInit {
            return Err("fail-init: the config says so".into());
        }
        Ok(mode)
    }

    fn interests(mode: &Mode) -> Interests {
        match mode {
            Mode::RewriteRequest => {
                Interests::methods(["tools/call"]).directions([Direction::ToServer])
            }
            _ => Interests::all(),
        }
    }

    fn decide(&mode: &Mode, ctx: &Context, message: &str) -> Verdict {
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        match mode {
            Mode::Allow | Mode::FailInit => allow(),
            Mode::Deny => deny(
                codes::POLICY_DENIED,
                "denied by test",
                "test private reason",
            ),
            Mode::RewriteRequest => rewrite_request(ctx, message),
            Mode::RewriteResponse => rewrite_response(ctx, message),
            Mode::DenyResponse if ctx.is_to_client() => deny(
                codes::POLICY_DENIED,
                "response denied by test",
                "test private reason",
            ),
            Mode::DenyResponse => allow(),
            Mode::Loop => spin(),
            Mode::Alloc => hog(),
            // Trapping on demand is this mode's job.
            #[allow(clippy::panic)]
            Mode::Trap if message.contains("boom") => panic!("behave: boom"),
            Mode::Trap => allow(),
            Mode::Garbage => rewrite("not json {"),
            Mode::Env => probe_sandbox(),
            Mode::Count => allow().with_count("seen", seen),
            Mode::Principal => allow()
                .with_label("subject", ctx.principal.subject.clone())
                .with_label("groups", ctx.principal.groups.join(","))
                .with_label("claims", ctx.principal.claims.clone()),
            Mode::ToolDef => tool_def(ctx, message),
            Mode::FetchThenSpin => fetch_then_spin(ctx, message),
        }
    }
}

portcullis_plugin_sdk::export_plugin!(Behave);

fn rewrite_request(ctx: &Context, message: &str) -> Verdict {
    if !ctx.is_tool_call() {
        return allow();
    }
    let Ok(mut msg) = Message::parse(message) else {
        return allow();
    };
    match msg.tool_call_arguments_mut() {
        Some(args) => {
            args.insert("rewritten".into(), true.into());
            msg.rewrite()
        }
        None => allow(),
    }
}

fn rewrite_response(ctx: &Context, message: &str) -> Verdict {
    if !(ctx.is_to_client() && ctx.kind == MessageKind::Response) {
        return allow();
    }
    let Ok(mut msg) = Message::parse(message) else {
        return allow();
    };
    match msg.for_each_content_text(|text| *text = "REDACTED".into()) {
        0 => allow(),
        n => msg.rewrite().with_count("redacted", n as u64),
    }
}

fn spin() -> Verdict {
    let mut i: u64 = 0;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

fn hog() -> Verdict {
    static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        hoard.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
    }
}

fn probe_sandbox() -> Verdict {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let args = std::env::args().count();
    let readdir = std::fs::read_dir("/").map(|d| d.count());
    let passwd = std::fs::read("/etc/passwd").map(|b| b.len());
    let fs = if readdir.is_ok() || passwd.is_ok() {
        "ok"
    } else {
        "err"
    };
    deny(
        codes::POLICY_DENIED,
        format!("env={} fs={fs}", env.len()),
        format!(
            "env keys={:?} args={args} read_dir(/)={:?} read(/etc/passwd)={:?}",
            env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            readdir.map_err(|e| e.to_string()),
            passwd.map_err(|e| e.to_string()),
        ),
    )
}

fn tool_def(ctx: &Context, message: &str) -> Verdict {
    if !(ctx.kind == MessageKind::Request && ctx.method_is("tools/call")) {
        return allow();
    }
    let from_message = Message::parse(message)
        .ok()
        .and_then(|m| m.tool_call_name().map(str::to_owned));
    let Some(tool) = ctx.target.clone().or(from_message) else {
        return deny(codes::POLICY_DENIED, "none", "tool-def: no target");
    };
    let revision = tool_revision(&ctx.server, &tool).map_or("none".into(), |r| r.to_string());
    let definition = tool_definition_raw(&ctx.server, &tool).unwrap_or_else(|| "none".into());
    let public = format!("{revision} {definition}");
    deny(
        codes::POLICY_DENIED,
        public,
        format!("tool-def: {}/{tool}", ctx.server),
    )
}

fn fetch_then_spin(ctx: &Context, message: &str) -> Verdict {
    if !(ctx.kind == MessageKind::Request && ctx.method_is("tools/call")) {
        return allow();
    }
    let Ok(msg) = Message::parse(message) else {
        return allow();
    };
    let (Some(tool), Some(args)) = (msg.tool_call_name(), msg.tool_call_arguments()) else {
        return allow();
    };
    let number = |k: &str| args.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let mut fetched = 0;
    for _ in 0..number("fetches") {
        if tool_definition_raw(&ctx.server, tool).is_some() {
            fetched += 1;
        }
    }
    let until = std::time::Instant::now() + std::time::Duration::from_millis(number("spin_ms"));
    while std::time::Instant::now() < until {
        std::hint::black_box(0u64);
    }
    allow().with_count("fetched", fetched)
}
