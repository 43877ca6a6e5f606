//! Deny-by-default routing for plugins that authorize calls (`authz`,
//! `cedar`): the plugin implements [`Authorizer`], the decision itself, and
//! [`route`] does the rest the same way for every such plugin:
//!
//! * a `tools/call`, `prompts/get` or `resources/read` request (or
//!   notification: a lax server could still execute it) is parsed strictly
//!   (see [`crate::strict`]) and decided by [`Authorizer::decide_call`]; a
//!   refusal is answered like something that does not exist: `-32602`
//!   `Unknown tool: NAME` (`Unknown prompt: NAME`, `Unknown resource: URI`);
//! * a `tools/list`, `prompts/list` or `resources/list` response is
//!   rewritten to keep only the entries [`Authorizer::shows`] keeps (count
//!   `hidden`);
//! * any other request method is refused with `-32601 Method not found`
//!   unless [`Authorizer::is_open`]; other notifications and the agent's
//!   responses pass without being read;
//! * a request that is not a JSON object, has no method, repeats `method`,
//!   `params`, `name` or `uri`, or has a duplicate key in `arguments` is
//!   refused with `-32600 Invalid Request`; a call without a string target
//!   with `-32602 Invalid params: missing name` (`uri`);
//! * a target that is not [`is_canonical`] (a look-alike: Cyrillic `е`,
//!   fullwidth or mathematical letters, invisible characters, spaces) is
//!   never allowed, whatever the authorizer says, and never listed: the
//!   authorizer's refusing rules compare [`canonical`](crate::names::canonical)
//!   forms, its allowing rules may then compare exactly.
//!
//! Every decision is annotated with the label [`Authorizer::LABEL`]: what
//! decided it, or [`DEFAULT_DENY`].
//!
//! ```
//! use portcullis_plugin_sdk::authorize::{Authorizer, Ruling, route};
//! use portcullis_plugin_sdk::names::CallMethod;
//! use portcullis_plugin_sdk::strict::Arguments;
//! use portcullis_plugin_sdk::{Context, Direction, MessageKind, json, testing};
//!
//! /// Only `support` may call tools, and never `delete_*` ones.
//! struct Support;
//!
//! impl Authorizer for Support {
//!     const LABEL: &'static str = "rule";
//!
//!     fn is_open(&self, method: &str) -> bool {
//!         matches!(method, "initialize" | "ping" | "tools/list")
//!     }
//!
//!     fn decide_call(&self, ctx: &Context, method: CallMethod, name: &str, _: Option<&Arguments>) -> Ruling {
//!         if self.shows(ctx, method, name) {
//!             Ruling::Allow { by: "support".into() }
//!         } else {
//!             Ruling::Deny { by: "support".into(), reason: "not for this principal".into() }
//!         }
//!     }
//!
//!     fn shows(&self, ctx: &Context, method: CallMethod, name: &str) -> bool {
//!         method == CallMethod::Tool
//!             && ctx.principal.groups.iter().any(|g| g == "support")
//!             && !name.starts_with("delete_")
//!     }
//! }
//!
//! let ctx = testing::context(Direction::ToServer, MessageKind::Request, Some("tools/call"), "bob", &[]);
//! let verdict = route(&Support, &ctx, &testing::request("tools/call", json!({"name": "lookup"})));
//! assert_eq!(verdict.denial().unwrap().public_message, "Unknown tool: lookup");
//! assert_eq!(verdict.label("rule"), Some("support"));
//! ```

use serde_json::Value;

use crate::names::{CallMethod, Glob, is_canonical};
use crate::strict::{Arguments, Call, CallParams, Head, Obj, describe};
use crate::{Context, Direction, MessageKind, Verdict, allow, codes, deny, rewrite_json};

/// The audit label of a refusal nothing in the configuration asked for
/// (nothing allows the call, the method is not open, the request is
/// malformed).
pub const DEFAULT_DENY: &str = "default-deny";

/// Request methods open to everyone when a plugin's `open_methods` is not
/// given: the MCP handshake, pings, notifications, the three lists,
/// resource templates, log level and completions.
pub const DEFAULT_OPEN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "notifications/*",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "logging/setLevel",
    "completion/complete",
];

/// Compiles an `open_methods` setting: globs of the request methods
/// anyone may use, [`DEFAULT_OPEN_METHODS`] when not given. An empty
/// pattern is an error (`open_methods[1] is an empty pattern`).
pub fn open_methods(list: Option<&[String]>) -> Result<Vec<Glob>, String> {
    let Some(list) = list else {
        return Ok(DEFAULT_OPEN_METHODS.iter().map(|m| Glob::new(m)).collect());
    };
    if let Some(i) = list.iter().position(String::is_empty) {
        return Err(format!("open_methods[{i}] is an empty pattern"));
    }
    Ok(list.iter().map(|m| Glob::new(m)).collect())
}

/// How an [`Authorizer`] decided a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ruling {
    /// Allowed. `by` names what allowed it (audit label [`Authorizer::LABEL`]).
    Allow {
        /// The deciding rule or policies, for the audit.
        by: String,
    },
    /// Refused, and answered as if the target did not exist.
    Deny {
        /// The deciding rule or policies, or [`DEFAULT_DENY`].
        by: String,
        /// The private reason, for the audit trail only.
        reason: String,
    },
}

/// The decisions of a deny-by-default call authorizer; [`route`] calls them.
pub trait Authorizer {
    /// The key of the audit label naming what decided (`"rule"`,
    /// `"policy"`).
    const LABEL: &'static str;

    /// True when `method`, a request method other than the three call
    /// methods, is open to everyone.
    fn is_open(&self, method: &str) -> bool;

    /// Decides a call of `method` on `name` (the tool or prompt name, or the
    /// resource URI, exactly as sent) with `params.arguments` (`None` when
    /// absent; never with a duplicate key; their text as sent too, for
    /// exact numbers), for the principal and route in
    /// `ctx`. An allowing ruling on a name that is not [`is_canonical`]
    /// is turned into a refusal by [`route`].
    fn decide_call(
        &self,
        ctx: &Context,
        method: CallMethod,
        name: &str,
        arguments: Option<&Arguments<'_>>,
    ) -> Ruling;

    /// True when the entry `name` of a `*/list` response for `method` stays
    /// in the list (the principal could call it with some arguments). Only
    /// asked about names that are [`is_canonical`].
    fn shows(&self, ctx: &Context, method: CallMethod, name: &str) -> bool;
}

/// What an authorization plugin needs to see: every message going to the
/// server (deny by default), and coming back only the list results it
/// filters. Everything else going to-client passes [`route`] untouched, so
/// the host does not hand it over at all.
pub fn interests() -> crate::Interests {
    crate::Interests::all().to_client_methods(CallMethod::ALL.map(CallMethod::list_name))
}

/// Routes one message. Only to-server requests (and call notifications) are
/// parsed; list responses are parsed to be rewritten; the rest passes
/// without looking at the body.
pub fn route<A: Authorizer>(authorizer: &A, ctx: &Context, message: &str) -> Verdict {
    let call_hint = ctx.method.as_deref().and_then(CallMethod::parse);
    match (ctx.direction, ctx.kind) {
        (Direction::ToServer, MessageKind::Request) => match call_hint {
            Some(_) => check_call(authorizer, ctx, message),
            None => check_request(authorizer, ctx, message),
        },
        // A call sent as a notification could still be executed by a lax
        // server: decide it like the call.
        (Direction::ToServer, MessageKind::Notification) if call_hint.is_some() => {
            check_call(authorizer, ctx, message)
        }
        (Direction::ToClient, MessageKind::Response) => {
            match ctx.method.as_deref().and_then(CallMethod::listed_by) {
                Some(method) => filter_list(authorizer, ctx, method, message),
                None => allow(),
            }
        }
        _ => allow(),
    }
}

/// A request the host did not label as a call: read its method (the
/// message's own, which is what the upstream sees) and check it.
fn check_request<A: Authorizer>(authorizer: &A, ctx: &Context, message: &str) -> Verdict {
    let head: Head = match serde_json::from_str(message) {
        Ok(Obj(head)) => head,
        Err(e) => return malformed::<A>(&e),
    };
    match head.method.as_deref() {
        Some(method) if CallMethod::parse(method).is_some() => check_call(authorizer, ctx, message),
        Some(method) => check_open(authorizer, method),
        None => invalid_request::<A>("request without a method"),
    }
}

/// A non-call request method: open to everyone, or not found.
fn check_open<A: Authorizer>(authorizer: &A, method: &str) -> Verdict {
    if authorizer.is_open(method) {
        return allow();
    }
    deny(
        codes::METHOD_NOT_FOUND,
        "Method not found",
        format!("method {method:?} is not in open_methods"),
    )
    .with_label(A::LABEL, DEFAULT_DENY)
}

/// A `tools/call`, `prompts/get` or `resources/read`: the authorizer
/// decides.
fn check_call<A: Authorizer>(authorizer: &A, ctx: &Context, message: &str) -> Verdict {
    let call: Call = match serde_json::from_str(message) {
        Ok(Obj(call)) => call,
        Err(e) => return malformed::<A>(&e),
    };
    let Some(method_name) = call.method.as_deref() else {
        return invalid_request::<A>("request without a method");
    };
    let Some(method) = CallMethod::parse(method_name) else {
        // The host's label was stale: judge the method actually sent.
        return match ctx.kind {
            MessageKind::Notification => allow(),
            _ => check_open(authorizer, method_name),
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
        .with_label(A::LABEL, DEFAULT_DENY);
    };
    let arguments = match params.map(CallParams::arguments).transpose() {
        Ok(arguments) => arguments.flatten(),
        Err(e) => return malformed::<A>(&e),
    };
    match authorizer.decide_call(ctx, method, name, arguments.as_ref()) {
        Ruling::Allow { .. } if !is_canonical(name) => deny(
            codes::INVALID_PARAMS,
            format!("Unknown {}: {name}", method.noun()),
            format!(
                "{} {name:?} is not in canonical form (look-alike, invisible or space \
                 characters): allowing rules match only canonical names",
                method.noun()
            ),
        )
        .with_label(A::LABEL, DEFAULT_DENY),
        Ruling::Allow { by } => allow().with_label(A::LABEL, by),
        Ruling::Deny { by, reason } => deny(
            codes::INVALID_PARAMS,
            format!("Unknown {}: {name}", method.noun()),
            reason,
        )
        .with_label(A::LABEL, by),
    }
}

/// A `*/list` response: keep only the entries the principal may use.
fn filter_list<A: Authorizer>(
    authorizer: &A,
    ctx: &Context,
    method: CallMethod,
    message: &str,
) -> Verdict {
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
        is_canonical(name) && authorizer.shows(ctx, method, name)
    });
    let hidden = (before - entries.len()) as u64;
    if hidden == 0 {
        return allow().with_count("hidden", 0);
    }
    rewrite_json(&msg).with_count("hidden", hidden)
}

fn malformed<A: Authorizer>(e: &serde_json::Error) -> Verdict {
    invalid_request::<A>(&format!("unparseable request: {}", describe(e)))
}

fn invalid_request<A: Authorizer>(reason: &str) -> Verdict {
    deny(codes::INVALID_REQUEST, "Invalid Request", reason).with_label(A::LABEL, DEFAULT_DENY)
}
