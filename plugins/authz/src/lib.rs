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
//!     * `when`: conditions, all of which must hold: on the call's
//!       arguments (`arg`) or on the principal's token claims (`claim`).
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
//! of refusing (one implementation for `authz`, `cedar` and `deny-tools`:
//! [`portcullis_plugin_sdk::names`]):
//!
//! * `deny` rules compare canonical forms of both sides
//!   ([`canonical`](portcullis_plugin_sdk::names::canonical)): NFKC, then
//!   whitespace (NBSP, leading and trailing spaces), controls and invisible
//!   characters (zero-width, bidi controls, soft hyphen, variation
//!   selectors, BOM) removed, then the UTS #39 confusable skeleton, case
//!   folded. So `DELETE_user`, `delete\u{200B}_user`, `ｄｅｌｅｔｅ_user`,
//!   `𝐝𝐞𝐥𝐞𝐭𝐞_user`, `ⓓelete_user`, ` delete_user ` and `dеlete_user` (Cyrillic
//!   `е`) are all refused by `delete_*`;
//! * `allow` rules compare exactly (MCP names are case-sensitive), and
//!   only a name that is already canonical
//!   ([`is_canonical`](portcullis_plugin_sdk::names::is_canonical): no
//!   look-alike, fullwidth or invisible character, no space) can be allowed
//!   at all: `lookup_сustomer` (Cyrillic `с`) is refused even by an allow
//!   rule for `lookup_*`, with that reason in the audit trail. ASCII is
//!   taken as written: `Lookup_Customer` is a different name, refused by
//!   default unless an allow rule names it.
//!
//! ## Argument conditions
//!
//! `{"arg": "refund.amount", "op": "lte", "value": 100}`: `arg` is a dotted
//! path into `params.arguments`; a step that is a decimal number also
//! indexes arrays (`items.0.sku`). Only that exact path counts: a key
//! `"refund.amount"` or an `amount` elsewhere is not it. `op`:
//!
//! * `eq`, `ne`: JSON equality (numbers by value, `1` = `1.0` = `1e0`);
//! * `in`, `not_in`: `value` is an array; equal to one / none of them;
//! * `lt`, `lte`, `gt`, `gte`: `value` is a number, the argument must be a
//!   JSON number (the string `"100"` is not);
//!
//! Numbers compare exactly, as the argument was written, never rounded to
//! `f64`: `100.00000000000000001` is greater than `100` (and not `eq`),
//! `1e-400` greater than `0`, `-0` equal to `0`. The configured number is
//! compared as it reached the plugin (the gateway reads the policy's
//! numbers as `i64`/`u64`/`f64`). An argument whose exponent is beyond
//! ±100000 (`1e-200000`) cannot be compared within that limit: like a wrong
//! type, it never satisfies an allow rule's condition and makes a deny
//! rule's hold. (Numbers beyond `f64`'s range, `1e309`, do not even parse:
//! the call is refused as malformed.)
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
//! ## Claim conditions
//!
//! `{"claim": "department", "op": "eq", "value": "support"}`,
//! `{"claim": "acr", "op": "in", "value": ["mfa", "phr"]}`: the same ops on
//! a claim of the agent's OAuth access token, named exactly as the token
//! carries it at the top level (`https://example.com/tier` is one name). The
//! relay passes only the claims its tunnel's `claims` allow-list names; an
//! API-key principal has none, so a claim condition fails for it (and
//! `absent` holds). Claims are known before a call, so unlike argument
//! conditions they also decide which entries a list shows.
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
mod decimal;
mod rules;
#[cfg(test)]
mod tests;

use portcullis_plugin_sdk::authorize::{self, Authorizer, DEFAULT_DENY, Ruling};
use portcullis_plugin_sdk::names::CallMethod;
use portcullis_plugin_sdk::strict::Arguments;
use portcullis_plugin_sdk::{ConfiguredPlugin, Context, Interests, Verdict, log_info};

use rules::{Decided, Policy, Request};

/// The plugin: its rules decide calls, [`authorize::route`] the rest.
pub struct Authz;

impl ConfiguredPlugin for Authz {
    const NAME: &'static str = "authz";
    type Config = Policy;

    fn parse(config: &str) -> Result<Policy, String> {
        config::parse(config)
    }

    fn announce(policy: &Policy) {
        log_info(&format!(
            "authz: {} allow and {} deny rules, {} open method patterns",
            policy.allow.len(),
            policy.deny.len(),
            policy.open_methods.len()
        ));
    }

    /// Deny by default needs to see every request going in; coming back
    /// only the lists it filters.
    fn interests(_: &Policy) -> Interests {
        authorize::interests()
    }

    /// Routes one message: see [`portcullis_plugin_sdk::authorize`].
    fn decide(policy: &Policy, ctx: &Context, message: &str) -> Verdict {
        authorize::route(policy, ctx, message)
    }
}

portcullis_plugin_sdk::export_plugin!(Authz);

impl Authorizer for Policy {
    const LABEL: &'static str = "rule";

    fn is_open(&self, method: &str) -> bool {
        self.open_methods.iter().any(|g| g.matches(method))
    }

    /// First matching deny rule, else first matching allow rule, else
    /// denied by default.
    fn decide_call(
        &self,
        ctx: &Context,
        method: CallMethod,
        name: &str,
        arguments: Option<&Arguments<'_>>,
    ) -> Ruling {
        let canonical = self.canonical(name);
        let claims = self.claims(ctx);
        let request = request(ctx, method, name, &canonical, arguments, claims.as_ref());
        let subject = &ctx.principal.subject;
        match self.decide(&request) {
            Decided::Allowed(rule) => Ruling::Allow {
                by: rule.id.clone(),
            },
            Decided::Denied(rule) => Ruling::Deny {
                by: rule.id.clone(),
                reason: format!(
                    "deny rule {:?} refuses {subject:?} calling {} {name:?}",
                    rule.id,
                    method.name()
                ),
            },
            Decided::Default => Ruling::Deny {
                by: DEFAULT_DENY.to_owned(),
                reason: format!("no rule allows {subject:?} to call {name:?}"),
            },
        }
    }

    /// Some allow rule matches, no unconditional deny rule does.
    fn shows(&self, ctx: &Context, method: CallMethod, name: &str) -> bool {
        let canonical = self.canonical(name);
        let claims = self.claims(ctx);
        self.visible(&request(
            ctx,
            method,
            name,
            &canonical,
            None,
            claims.as_ref(),
        ))
    }
}

impl Policy {
    /// The principal's claims, parsed strictly, when some rule tests them.
    /// Claims that do not parse are no claims: conditions on them fail
    /// (and so hold for deny rules only through `absent`).
    fn claims<'c>(&self, ctx: &'c Context) -> Option<Arguments<'c>> {
        if !self.uses_claims {
            return None;
        }
        let text = ctx.principal.claims.as_str();
        let portcullis_plugin_sdk::strict::Strict(value) = serde_json::from_str(text).ok()?;
        value.is_object().then_some(Arguments { value, text })
    }
}

/// What the rules match: the route and principal from `ctx`, the target as
/// sent and in canonical form, and the arguments (`None` when listing).
fn request<'a>(
    ctx: &'a Context,
    method: CallMethod,
    name: &'a str,
    canonical: &'a str,
    args: Option<&'a Arguments<'a>>,
    claims: Option<&'a Arguments<'a>>,
) -> Request<'a> {
    Request {
        principal: &ctx.principal,
        server: &ctx.server,
        tunnel: &ctx.tunnel,
        method,
        name,
        canonical,
        args,
        claims,
    }
}
