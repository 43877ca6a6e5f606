//! `authz`: deny-by-default authorization for MCP.
//!
//! Decides who may call which tool, prompt or resource, from rules on the
//! verified principal (subject, groups), the route (server, tunnel) and the
//! call's arguments. Anything no rule allows is refused, and refused exactly
//! like something that does not exist, so the agent learns nothing:
//!
//! * a `tools/call`, `prompts/get` or `resources/read` request is refused
//!   with JSON-RPC error `-32602` and `Unknown tool: NAME` (`Unknown prompt:
//!   NAME`, `Unknown resource: URI`) unless an `allow` rule matches and no
//!   `deny` rule does. The audit trail gets the real reason and the label
//!   `rule` (the deciding rule's id, or `default-deny`); allowed calls get
//!   `rule` = the allowing rule's id;
//! * `tools/list`, `prompts/list` and `resources/list` responses are
//!   rewritten to list only what the principal may use (count `hidden`);
//! * any other request method is refused with `-32601 Method not found`
//!   unless it is in `open_methods`. Notifications and the agent's responses
//!   to server requests pass, except a notification whose method is a call
//!   method, which is decided like the call;
//! * a request that is not a JSON object, has no method, repeats `method`,
//!   `params`, `name` or `uri`, or has a duplicate key in `arguments` is
//!   refused with `-32600 Invalid Request`; a call without a string target
//!   with `-32602`.
//!
//! # Configuration
//!
//! ```json
//! {
//!   "rules": [
//!     {"id": "support-read", "effect": "allow", "groups": ["support"],
//!      "tools": ["lookup_customer", "search_tickets"]},
//!     {"id": "support-refund", "effect": "allow", "groups": ["support"],
//!      "tools": ["issue_refund"],
//!      "when": [{"arg": "amount", "op": "lte", "value": 100}]},
//!     {"id": "no-erasure", "effect": "deny", "tools": ["delete_*"]}
//!   ],
//!   "open_methods": ["initialize", "ping", "notifications/*", "tools/list"]
//! }
//! ```
//!
//! * `rules` (required, may be empty): each rule has
//!   * `id` (required, non-empty, unique): named in the audit trail;
//!   * `effect` (required): `"allow"` or `"deny"`;
//!   * selectors, all optional, all of the given ones must match (a missing
//!     selector matches anything; an empty list is an error):
//!     * `subjects`: globs on the principal's subject;
//!     * `groups`: the principal is in at least one of these (exact);
//!     * `servers`, `tunnels`: globs on the server and tunnel names;
//!     * `methods`: globs on the call method, default all three
//!       (`tools/call`, `prompts/get`, `resources/read`); a pattern that
//!       matches none of them is an error;
//!     * `tools`: globs on the target: the tool name, the prompt name or the
//!       resource URI;
//!     * `when`: argument conditions, all of which must hold.
//! * `open_methods` (optional): globs of request methods anyone may use,
//!   default `initialize`, `ping`, `notifications/*`, `tools/list`,
//!   `prompts/list`, `resources/list`, `resources/templates/list`,
//!   `logging/setLevel`, `completion/complete`. The three call methods are
//!   always decided by rules, whatever this list says.
//!
//! Globs: `*` matches any run of characters (including `/` and none);
//! everything else matches itself, case-sensitively. There is no escape for
//! a literal `*`.
//!
//! Unknown keys, wrong types and malformed rules fail `init`, and so the
//! policy load, with an error naming the rule (`rules[1]
//! ("support-refund"): when[0]: op "lte" needs a number value`).
//!
//! ## Decision
//!
//! Deny rules win: if any matching `deny` rule applies, the call is refused
//! (the first one in the file is named); otherwise the first matching `allow`
//! rule allows it; otherwise it is refused by default.
//!
//! Names are compared differently by the two effects, both in the direction
//! of refusing:
//!
//! * `allow` rules compare exactly (MCP names are case-sensitive):
//!   `Lookup_Customer` or `lookup_customer` with a zero-width space does not
//!   match an allow rule for `lookup_customer`, so it is refused by default;
//! * `deny` rules compare after folding both sides: invisible characters
//!   removed (U+200B..U+200D, U+2060, U+FEFF, and also the soft hyphen,
//!   U+034F, U+180E, LRM/RLM, bidi controls, U+2061..U+2064 and variation
//!   selectors), fullwidth ASCII (U+FF01..U+FF5E) mapped to ASCII, then
//!   lowercased, so `DELETE_user`, `delete\u{200B}_user` and `ｄｅｌｅｔｅ_user`
//!   are all refused by `delete_*`.
//!
//! ## Argument conditions
//!
//! `{"arg": "refund.amount", "op": "lte", "value": 100}`: `arg` is a dotted
//! path into `params.arguments`; a step that is a decimal number also
//! indexes arrays (`items.0.sku`). Only that exact path counts: a key
//! `"refund.amount"` or an `amount` elsewhere is not it. `op`:
//!
//! * `eq`, `ne`: JSON equality (numbers by value, `1` = `1.0`);
//! * `in`, `not_in`: `value` is an array; equal to one / none of them;
//! * `lt`, `lte`, `gt`, `gte`: `value` is a number, the argument must be a
//!   JSON number (the string `"100"` is not);
//! * `regex`: `value` is a regex that must match the whole string argument
//!   (`regex-lite` syntax: Rust `regex` without Unicode classes, so `\d`,
//!   `\w`, `\s` and `(?i)` are ASCII-only; matching is linear-time);
//! * `present`, `absent` (no `value`): the path exists (even as `null`) /
//!   does not.
//!
//! A condition on a missing path is false (except `absent`). An argument of
//! the wrong JSON type (`"100"` for `lte 100`, a number for `regex`, a
//! string for `eq 5`, an array for `ne "x"`) never satisfies an `allow`
//! rule's condition, and makes a `deny` rule's condition hold, so type
//! confusion can neither unlock an allow nor dodge a deny. Arguments with a
//! duplicate key anywhere are refused outright (parsers disagree on which
//! copy wins).
//!
//! ## Lists
//!
//! An entry of a `tools/list`, `prompts/list` or `resources/list` response
//! stays when some `allow` rule matches it and no `deny` rule without `when`
//! does, judged with the call method the list is for and ignoring `when`
//! (there are no arguments yet; the call itself is still checked). Entries
//! without a name (URI for resources) are dropped. Everything else in the
//! result (`nextCursor`, …) is kept. `resources/templates/list` is not
//! filtered: templates are not readable by themselves.

mod config;
mod rules;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use portcullis_plugin_sdk::names::CallMethod;
use portcullis_plugin_sdk::strict::{Call, Head, Obj, describe};
use portcullis_plugin_sdk::{
    Context, Direction, Interests, MessageKind, Plugin, Value, Verdict, allow, codes, deny,
    log_info, rewrite_json,
};

use rules::{Decided, Policy, Request};

/// Set once by `init`; each plugin instance has its own copy.
static POLICY: OnceLock<Policy> = OnceLock::new();

/// The audit label of a refusal no rule asked for.
const DEFAULT_DENY: &str = "default-deny";

struct Authz;

impl Plugin for Authz {
    fn init(config: String) -> Result<Interests, String> {
        let policy = config::parse(&config)?;
        log_info(&format!(
            "authz: {} allow and {} deny rules, {} open method patterns",
            policy.allow.len(),
            policy.deny.len(),
            policy.open_methods.len()
        ));
        POLICY
            .set(policy)
            .map_err(|_| "authz: init called twice".to_string())?;
        // Deny by default needs to see every request; `handle` returns at
        // once for what it does not judge.
        Ok(Interests::all())
    }

    fn handle(ctx: Context, message: String) -> Verdict {
        let Some(policy) = POLICY.get() else {
            // Unreachable with a conforming host: init runs first.
            return deny(
                codes::POLICY_DENIED,
                "Policy unavailable",
                "authz: not initialised",
            );
        };
        decide(policy, &ctx, &message)
    }
}

portcullis_plugin_sdk::export_plugin!(Authz);

/// Routes one message. Only to-server requests (and call notifications) are
/// parsed; list responses are parsed to be rewritten; the rest passes
/// without looking at the body.
fn decide(policy: &Policy, ctx: &Context, message: &str) -> Verdict {
    let call_hint = ctx.method.as_deref().and_then(CallMethod::parse);
    match (ctx.direction, ctx.kind) {
        (Direction::ToServer, MessageKind::Request) => match call_hint {
            Some(_) => check_call(policy, ctx, message),
            None => check_request(policy, ctx, message),
        },
        // A call sent as a notification could still be executed by a lax
        // server: decide it like the call.
        (Direction::ToServer, MessageKind::Notification) if call_hint.is_some() => {
            check_call(policy, ctx, message)
        }
        (Direction::ToClient, MessageKind::Response) => {
            match ctx.method.as_deref().and_then(CallMethod::listed_by) {
                Some(method) => filter_list(policy, ctx, method, message),
                None => allow(),
            }
        }
        _ => allow(),
    }
}

/// A request the host did not label as a call: read its method (the
/// message's own, which is what the upstream sees) and check it.
fn check_request(policy: &Policy, ctx: &Context, message: &str) -> Verdict {
    let head: Head = match serde_json::from_str(message) {
        Ok(Obj(head)) => head,
        Err(e) => return malformed(&e),
    };
    match head.method.as_deref() {
        Some(method) if CallMethod::parse(method).is_some() => check_call(policy, ctx, message),
        Some(method) => check_open(policy, method),
        None => invalid_request("request without a method"),
    }
}

/// A non-call request method: open to everyone, or not found.
fn check_open(policy: &Policy, method: &str) -> Verdict {
    if policy.is_open(method) {
        return allow();
    }
    deny(
        codes::METHOD_NOT_FOUND,
        "Method not found",
        format!("method {method:?} is not in open_methods"),
    )
    .with_label("rule", DEFAULT_DENY)
}

/// A `tools/call`, `prompts/get` or `resources/read`: decide it by the rules.
fn check_call(policy: &Policy, ctx: &Context, message: &str) -> Verdict {
    let call: Call = match serde_json::from_str(message) {
        Ok(Obj(call)) => call,
        Err(e) => return malformed(&e),
    };
    let Some(method_name) = call.method.as_deref() else {
        return invalid_request("request without a method");
    };
    let Some(method) = CallMethod::parse(method_name) else {
        // The host's label was stale: judge the method actually sent.
        return match ctx.kind {
            MessageKind::Notification => allow(),
            _ => check_open(policy, method_name),
        };
    };
    let params = call.params.as_ref().map(|p| &p.0);
    let target = params.and_then(|p| match method {
        CallMethod::Resource => p.uri.as_deref(),
        _ => p.name.as_deref(),
    });
    let Some(name) = target else {
        let field = method.target_field();
        return deny(
            codes::INVALID_PARAMS,
            format!("Invalid params: missing {field}"),
            format!("{} without a string params.{field}", method.name()),
        )
        .with_label("rule", DEFAULT_DENY);
    };
    let folded = policy.fold(name);
    let request = Request {
        principal: &ctx.principal,
        server: &ctx.server,
        tunnel: &ctx.tunnel,
        method,
        name,
        folded: &folded,
        args: params.and_then(|p| p.arguments.as_ref()).map(|a| &a.0),
    };
    let subject = &ctx.principal.subject;
    let unknown = || format!("Unknown {}: {name}", method.noun());
    match policy.decide(&request) {
        Decided::Allowed(rule) => allow().with_label("rule", rule.id.as_str()),
        Decided::Denied(rule) => deny(
            codes::INVALID_PARAMS,
            unknown(),
            format!(
                "deny rule {:?} refuses {subject:?} calling {} {name:?}",
                rule.id,
                method.name()
            ),
        )
        .with_label("rule", rule.id.as_str()),
        Decided::Default => deny(
            codes::INVALID_PARAMS,
            unknown(),
            format!("no rule allows {subject:?} to call {name:?}"),
        )
        .with_label("rule", DEFAULT_DENY),
    }
}

/// A `*/list` response: keep only the entries the principal may use.
fn filter_list(policy: &Policy, ctx: &Context, method: CallMethod, message: &str) -> Verdict {
    let Ok(mut msg) = serde_json::from_str::<Value>(message) else {
        return allow();
    };
    let Some(entries) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut(method.list_field()))
        .and_then(Value::as_array_mut)
    else {
        return allow();
    };
    let field = method.target_field();
    let before = entries.len();
    entries.retain(|entry| {
        let Some(name) = entry.get(field).and_then(Value::as_str) else {
            return false;
        };
        let folded = policy.fold(name);
        policy.visible(&Request {
            principal: &ctx.principal,
            server: &ctx.server,
            tunnel: &ctx.tunnel,
            method,
            name,
            folded: &folded,
            args: None,
        })
    });
    let hidden = (before - entries.len()) as u64;
    if hidden == 0 {
        return allow().with_count("hidden", 0);
    }
    rewrite_json(&msg).with_count("hidden", hidden)
}

fn malformed(e: &serde_json::Error) -> Verdict {
    invalid_request(&format!("unparseable request: {}", describe(e)))
}

fn invalid_request(reason: &str) -> Verdict {
    deny(codes::INVALID_REQUEST, "Invalid Request", reason).with_label("rule", DEFAULT_DENY)
}
