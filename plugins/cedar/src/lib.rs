//! `cedar`: deny-by-default authorization for MCP with
//! [Cedar](https://www.cedarpolicy.com) policies.
//!
//! The same job as `authz`, with Cedar as the rule language: who may call
//! which tool, prompt or resource, from the verified principal, the route
//! and the call's arguments. It answers exactly like `authz`:
//!
//! * a `tools/call`, `prompts/get` or `resources/read` request is refused
//!   with JSON-RPC error `-32602` and `Unknown tool: NAME` (`Unknown prompt:
//!   NAME`, `Unknown resource: URI`), the very answer for something that does
//!   not exist, unless a `permit` policy is satisfied and no `forbid` policy
//!   is (nor fails to evaluate, nor matches the name's look-alike form);
//! * `tools/list`, `prompts/list` and `resources/list` responses are
//!   rewritten to list only what the principal may call (count `hidden`);
//! * any other request method is refused with `-32601 Method not found`
//!   unless it is in `open_methods` (same default list as `authz`).
//!   Notifications and the agent's responses to server requests pass, except
//!   a notification whose method is a call method, decided like the call;
//! * a request that is not a JSON object, has no method, repeats `method`,
//!   `params`, `name` or `uri`, or has a duplicate key in `arguments` is
//!   refused with `-32600 Invalid Request`; a call without a string target
//!   with `-32602`.
//!
//! Every decision is annotated with the label `policy`: the id(s) of the
//! determining policies, comma-separated and sorted (the permits that allowed
//! a call, or the forbids that refused it), or `default-deny` when no policy
//! decided (nothing permits it, or the request could not be built).
//!
//! # Configuration
//!
//! ```toml
//! [plugins.cedar]
//! source = "builtin:cedar"
//!
//! [plugins.cedar.config]
//! policies = '''
//! @id("support-read")
//! permit(principal in Portcullis::Group::"support", action == Portcullis::Action::"tools/call", resource)
//! when { resource in [Portcullis::Tool::"lookup_customer", Portcullis::Tool::"search_tickets"] };
//!
//! @id("support-refund")
//! permit(principal in Portcullis::Group::"support", action == Portcullis::Action::"tools/call",
//!        resource == Portcullis::Tool::"issue_refund")
//! when { context.arguments has amount && context.arguments.amount <= 100 };
//!
//! @id("no-erasure")
//! forbid(principal, action, resource) when { resource.name like "delete_*" };
//! '''
//! # schema = '''...'''     # optional, Cedar schema syntax (or JSON schema)
//! # entities = '''[...]''' # optional, Cedar entity JSON (or an array)
//! # open_methods = ["initialize", "ping", "notifications/*", "tools/list"]
//! ```
//!
//! * `policies` (required): Cedar policy text. A policy's id is its
//!   `@id("...")` annotation, else Cedar's default `policy0`, `policy1`, ...
//!   by position. Ids must be unique. Templates are refused (nothing would
//!   link them).
//! * `schema` (optional): a Cedar schema (Cedar syntax, or the JSON format
//!   when it starts with `{`). Every policy is validated against it in
//!   strict mode and `init` fails on any error; the configured `entities`
//!   are checked against it too, and its actions (with their action groups)
//!   become entities. Requests are not validated against it (arguments
//!   differ per tool); a request whose values do not match the types the
//!   policies expect makes them fail to evaluate, which refuses (below).
//! * `entities` (optional): extra entities in Cedar's entity JSON format,
//!   as an array or a string holding one, e.g. group hierarchies
//!   (`{"uid": {"type": "Portcullis::Group", "id": "support"}, "parents":
//!   [{"type": "Portcullis::Group", "id": "staff"}], "attrs": {}}`), tool
//!   sets (a `Portcullis::Tool` with a parent), user attributes. An entry
//!   for the request's user or target is merged with what the request
//!   brings (parents united; the request's `name`/`server`/`tunnel` win,
//!   the configured attributes win over claims).
//! * `open_methods` (optional): globs of non-call request methods anyone may
//!   use, as in `authz`.
//!
//! Unknown keys, parse errors (with line and column), schema errors,
//! validation errors and bad entities fail `init` with a readable message.
//!
//! # The request
//!
//! | Cedar     | from the call |
//! |-----------|---------------|
//! | principal | `Portcullis::User::"<subject>"`, in `Portcullis::Group::"<g>"` for each group; the claims (JSON object) as attributes |
//! | action    | `Portcullis::Action::"tools/call"`, `"prompts/get"` or `"resources/read"` |
//! | resource  | `Portcullis::Tool::"<name>"`, `Portcullis::Prompt::"<name>"` or `Portcullis::Resource::"<uri>"`, attributes `name`, `server`, `tunnel`, in `Portcullis::Server::"<server>"` |
//! | context   | `{ arguments: <params.arguments>, claims: <the token's allow-listed claims>, server: "<server>", tunnel: "<tunnel>" }` (`arguments` is `{}` when absent, `claims` `{}` for an API key) |
//!
//! JSON becomes Cedar value by value (never through Cedar's JSON parser,
//! so an argument `{"__entity": ...}` is just a record):
//!
//! * objects → records, arrays → sets (order and duplicates are lost),
//!   strings, booleans → themselves;
//! * integers in the i64 range, and floats with an integral value in it
//!   (`100.0`), → `Long`;
//! * other floats with at most four decimal places (`12.5`) →
//!   `decimal("12.5")`: compare with `.lessThanOrEqual(decimal("100.0"))`;
//!   `<=` against a `Long` is a type error;
//! * everything else has no exact Cedar form: larger integers, floats with
//!   more places (`0.12345`, `1e300`) become the entity
//!   `Portcullis::Number::"<number>"`, and `null` becomes
//!   `Portcullis::Null::"null"`. They are equal only to themselves; ordering
//!   or arithmetic on them is an evaluation error. `has` sees a `null`
//!   argument as present, as JSON does.
//!
//! # Decision
//!
//! Cedar decides (forbid overrides permit, default deny), with one change:
//! an evaluation error in a `forbid` policy refuses the call (Cedar would
//! skip the policy, letting a malformed argument dodge it; `policy` = that
//! forbid, the error in the private reason). An error in a `permit` policy
//! only means it does not permit, as in Cedar.
//! `context.arguments.amount <= 100` therefore refuses a missing `amount`,
//! `"50"` and `50.5`; write `context.arguments has amount && ...` to be
//! explicit. `==` and `!=` between values of different types are `false`
//! and `true`, not errors (Cedar's semantics): a forbid on
//! `context.arguments.mode == "delete"` does not catch `["delete"]`. Prefer
//! permits that require the good value (`context.arguments.mode == "read"`)
//! over forbids of the bad one.
//!
//! # Look-alike names
//!
//! Permits compare names exactly (MCP names are case-sensitive), so
//! `Lookup_Customer` is not `lookup_customer` and is refused by default,
//! and a name that is not canonical (the SDK's `names::is_canonical`: a
//! look-alike such as Cyrillic `с` for `c`, fullwidth or mathematical
//! letters, invisible characters, spaces) is never permitted at all, however
//! broad the permit: the call is refused with that reason, the list entry
//! hidden. Forbids must not be dodged by look-alikes, so an allowed call
//! gets a second pass: the forbid policies alone, with every tool, prompt
//! and resource name folded on both sides to its canonical form, the one
//! `authz` and `deny-tools` compare (`names::canonical`: NFKC, whitespace
//! and invisible characters removed, the UTS #39 confusable skeleton, case
//! folded). The request gets the folded name; the policies get folded
//! entity ids (`resource == Portcullis::Tool::"Purge"` and `resource in
//! [...]` alike, also in `when`; the pre-slicing by `resource ==` works on
//! the folded ids), `resource.name like` patterns (literal by literal) and
//! string literals compared with `resource.name` (`==`, `!=`,
//! `.contains`); the entities get folded ids, so a tool set configured for
//! `Purge` still holds `purge`. So `DELETE_user`, `delete\u{200B}_user`,
//! `ｄｅｌｅｔｅ_user`, `𝐝𝐞𝐥𝐞𝐭𝐞_user` and `dеlete_user` (Cyrillic `е`) are
//! refused by `resource.name like "delete_*"`, and `resource ==
//! Portcullis::Tool::"Purge"` also refuses `purge`: forbids compare
//! canonical names, permits exact ones. Strings that reach the name another
//! way (compared with a `context` value, an attribute of a configured
//! entity) are not folded; argument values never are.
//!
//! # Lists
//!
//! An entry of a `tools/list`, `prompts/list` or `resources/list` response
//! stays when the principal could call it with some arguments: the call is
//! partially evaluated (Cedar's `partial-eval`) with `context.arguments`
//! unknown. It stays when some permit is satisfied or left depending on the
//! arguments, and no forbid is satisfied, nor fails, without looking at them
//! (nor, for the folded name, in the look-alike pass). Conditions on the
//! principal, the route or the resource are evaluated for real; conditions
//! on the arguments are assumed satisfiable (the call is still checked).
//! Entries without a name (URI) are dropped; the rest of the result
//! (`nextCursor`, ...) is kept. `resources/templates/list` is not filtered.
//!
//! # Cost
//!
//! Policies are pre-sliced by their scope's `action ==` and `resource ==`
//! (see `slice.rs`), so a call evaluates only the policies that can apply
//! to it: the cost per decision hardly grows with policies pinned to other
//! tools (measured by `cargo test -p cedar --release -- --ignored
//! --nocapture bench`, and in the gateway by `cargo bench --bench plugins`;
//! the figures are in the README's benchmark section). The component is
//! the largest of the standard plugins: it carries Cedar's parsers,
//! validator and evaluator.

mod config;
mod engine;
mod lookalike;
mod slice;
#[cfg(test)]
mod tests;

use portcullis_plugin_sdk::authorize::{self, Authorizer, DEFAULT_DENY, Ruling};
use portcullis_plugin_sdk::names::CallMethod;
use portcullis_plugin_sdk::strict::Arguments;
use portcullis_plugin_sdk::{ConfiguredPlugin, Context, Interests, Verdict, log_info, log_warn};

use engine::{Engine, Outcome, Target};

/// The plugin: Cedar decides calls, [`authorize::route`] the rest.
pub struct Cedar;

impl ConfiguredPlugin for Cedar {
    const NAME: &'static str = "cedar";
    type Config = Engine;

    fn parse(config: &str) -> Result<Engine, String> {
        config::parse(config)
    }

    fn announce(engine: &Engine) {
        for w in &engine.warnings {
            log_warn(&format!("cedar: {w}"));
        }
        log_info(&format!(
            "cedar: {} policies ({} forbid), {} entities, {} open method patterns",
            engine.policies.num_of_policies(),
            engine.forbids.len(),
            engine.entities.len(),
            engine.open_methods.len()
        ));
    }

    /// Deny by default needs to see every request going in; coming back
    /// only the lists it filters.
    fn interests(_: &Engine) -> Interests {
        authorize::interests()
    }

    /// Routes one message like `authz`: see [`portcullis_plugin_sdk::authorize`].
    fn decide(engine: &Engine, ctx: &Context, message: &str) -> Verdict {
        authorize::route(engine, ctx, message)
    }
}

portcullis_plugin_sdk::export_plugin!(Cedar);

/// The Cedar view of a call or list entry.
fn target<'a>(ctx: &'a Context, method: CallMethod, name: &'a str) -> Target<'a> {
    Target {
        principal: &ctx.principal,
        server: &ctx.server,
        tunnel: &ctx.tunnel,
        method,
        name,
    }
}

impl Authorizer for Engine {
    const LABEL: &'static str = "policy";

    fn is_open(&self, method: &str) -> bool {
        self.open_methods.iter().any(|g| g.matches(method))
    }

    /// Cedar decides (see [`Engine::authorize`]); the label names the
    /// determining policies, comma-separated.
    fn decide_call(
        &self,
        ctx: &Context,
        method: CallMethod,
        name: &str,
        arguments: Option<&Arguments<'_>>,
    ) -> Ruling {
        let arguments = arguments.map(|a| &a.value);
        match self.authorize(&target(ctx, method, name), arguments) {
            Outcome::Allowed(policies) => Ruling::Allow {
                by: policies.join(","),
            },
            Outcome::Denied { policies, reason } => Ruling::Deny {
                by: if policies.is_empty() {
                    DEFAULT_DENY.to_owned()
                } else {
                    policies.join(",")
                },
                reason,
            },
        }
    }

    fn shows(&self, ctx: &Context, method: CallMethod, name: &str) -> bool {
        self.visible(&target(ctx, method, name))
    }
}
