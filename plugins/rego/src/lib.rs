//! `rego`: deny-by-default authorization for MCP with
//! [OPA](https://www.openpolicyagent.org)'s Rego, evaluated by
//! [regorus](https://github.com/microsoft/regorus) inside the component.
//!
//! The same job as `authz` and `cedar`, with Rego as the rule language, and
//! the same answers (the SDK's [`authorize::route`]):
//!
//! * a `tools/call`, `prompts/get` or `resources/read` request is refused
//!   with JSON-RPC error `-32602` and `Unknown tool: NAME` (`Unknown prompt:
//!   NAME`, `Unknown resource: URI`), the very answer for something that does
//!   not exist, unless `data.portcullis.allow` is `true` and
//!   `data.portcullis.deny` holds no reason;
//! * `tools/list`, `prompts/list` and `resources/list` responses are
//!   rewritten to list only what the principal may call (count `hidden`);
//! * any other request method is refused with `-32601 Method not found`
//!   unless it is in `open_methods` (same default list as `authz`);
//!   notifications and the agent's responses pass, except a notification
//!   whose method is a call method, decided like the call;
//! * malformed calls (not an object, repeated `method`, `params`, `name`,
//!   `uri`, a duplicate key in `arguments`) are refused with `-32600`.
//!
//! Every decision is annotated with the label `rule`: `allow` (allowed),
//! `deny` (refused by `deny` reasons), `error` (an evaluation failed), or
//! `default-deny` (nothing allowed it), plus the policy's own
//! `annotations`.
//!
//! # Configuration
//!
//! ```toml
//! [plugins.rego]
//! source = "builtin:rego"
//!
//! [plugins.rego.config]
//! policy = '''
//! package portcullis
//!
//! default allow := false
//!
//! allow if {
//!     "support" in input.principal.groups
//!     input.tool in data.support_tools
//! }
//!
//! deny contains "erasure is never allowed" if portcullis.like(input.name, "delete_*")
//! '''
//! data = { support_tools = ["lookup_customer", "search_tickets"] }
//! # modules = { "lib.rego" = '''...''' }   # more modules, by file name
//! # open_methods = ["initialize", "ping", "notifications/*", "tools/list"]
//! ```
//!
//! * `policy`: one Rego module (named `policy.rego` in errors), and/or
//!   `modules`: modules by file name (`{ "authz.rego" = '''...''' }`), so
//!   `.rego` files are pasted unchanged. Rego v1, as OPA 1.x reads it:
//!   `if` and `contains` are required, `import rego.v1` is accepted and
//!   changes nothing; v0 syntax is refused with OPA's message.
//! * `data` (optional): the data document, an object (a TOML table) or a
//!   string holding one as JSON, read by the policy as `data.<key>`. The
//!   key `portcullis` is the decision's and is refused.
//! * `open_methods` (optional): globs of non-call request methods anyone may
//!   use, as in `authz`.
//!
//! The modules are parsed and the policy evaluated once on an empty call
//! at `init`: a parse error, an unknown function, conflicting rules, or no
//! `allow` rule in `package portcullis` fail `init` with a message naming
//! the module, line and column (`policy.rego:4:11: expecting expression`).
//! Unknown keys fail it too.
//!
//! # The input document
//!
//! | `input.`   | from the call |
//! |------------|---------------|
//! | `principal` | `{subject, groups, claims}`: the verified subject, its groups, the token's allow-listed claims (`{}` for an API key) |
//! | `tunnel`, `server` | the route |
//! | `method` | `"tools/call"`, `"prompts/get"` or `"resources/read"` |
//! | `name` | the tool or prompt name, or the resource URI, exactly as sent |
//! | `tool`, `prompt` or `resource` | the same, under the key of its kind (only that one is present) |
//! | `canonical` | the canonical form of `name` (below) |
//! | `lookalike` | `true` when `name` is not canonical: it is never allowed |
//! | `arguments` | `params.arguments` (`{}` when absent); absent in listings |
//! | `listing` | `true` when deciding a list entry, `false` for a call |
//!
//! Arguments are read exactly: a number the interpreter would round (more
//! digits than a 64-bit float holds, `1e400`, integers beyond 64 bits)
//! refuses the call, so a limit cannot be passed by writing
//! `100.00000000000000001`.
//!
//! # Decision
//!
//! * `data.portcullis.allow` must be exactly `true`. Undefined, `false`, or
//!   any other value refuses (`default-deny`, its value in the private
//!   reason).
//! * `data.portcullis.deny` (optional) refuses whatever `allow` says when it
//!   holds reasons: a set or array of strings (`deny contains "why" if
//!   ...`), or `true`, or a string. The reasons go to the audit trail as
//!   the private reason; the agent sees only `Unknown tool: NAME`. Any
//!   other value (an object, a number) refuses too.
//! * `data.portcullis.annotations` (optional): an object whose strings and
//!   booleans become audit labels and non-negative integers counts; the
//!   key `rule` is the plugin's.
//! * An evaluation error (a type error such as `startswith(42, "a")`, a
//!   builtin's error, divide by zero, conflicting rule values, a bad
//!   `annotations` value) refuses the call (`error`, the module, line and
//!   message in the private reason). Rego's own "undefined" is not an
//!   error: a rule that does not apply leaves `allow` undefined, which
//!   refuses.
//!
//! # Look-alike names
//!
//! As `authz` and `cedar` do, allowing compares names exactly, refusing
//! compares canonical forms (the SDK's `names::canonical`: NFKC, whitespace
//! and invisible characters removed, the UTS #39 confusable skeleton, case
//! folded). `input.name` (and `input.tool`) is the name as sent, so
//! `allow if input.tool == "lookup_customer"` does not allow
//! `Lookup_Customer`; a name that is not canonical (Cyrillic `с` for `c`,
//! fullwidth letters, invisible characters, spaces) is never allowed nor
//! listed, whatever `allow` says. Deny rules should compare canonical
//! forms, with two functions the plugin adds to Rego:
//!
//! * `portcullis.like(name, pattern)`: the glob `pattern` (`*` for any run
//!   of characters) matches `name`, both taken to their canonical form,
//!   exactly as `deny-tools` and `authz`'s deny rules match;
//! * `portcullis.canonical(s)`: the canonical form of `s`, to compare with
//!   `input.canonical` (`input.canonical == portcullis.canonical("Purge")`).
//!
//! So `deny contains "x" if portcullis.like(input.name, "delete_*")`
//! refuses `DELETE_user`, `delete\u{200B}_user`, `ｄｅｌｅｔｅ_user` and
//! `dеlete_user` (Cyrillic `е`) alike, while `startswith(input.tool,
//! "delete_")` would refuse only the first spelling.
//!
//! # Lists
//!
//! An entry of a `tools/list`, `prompts/list` or `resources/list` response
//! stays when the rules allow it with `input.listing` `true` and no
//! `input.arguments`: conditions on the principal, the route and the name
//! are evaluated for real, and a rule that reads an argument is undefined,
//! so it does not allow (Rego has no partial evaluation here, unlike
//! `cedar`). Write rules that depend on arguments so that a listing passes
//! them, for example `allow if { input.listing; may_refund }` next to
//! `allow if { may_refund; input.arguments.amount <= 100 }`. Entries
//! without a name (URI) are dropped, the rest of the result is kept.

mod config;
mod engine;
mod input;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

use portcullis_plugin_sdk::authorize::{self, Authorizer, DEFAULT_DENY, Ruling};
use portcullis_plugin_sdk::names::CallMethod;
use portcullis_plugin_sdk::strict::Arguments;
use portcullis_plugin_sdk::{Annotation, ConfiguredPlugin, Context, Interests, Verdict, log_info};

use engine::{Decision, Policy};

/// The plugin: Rego decides calls, [`authorize::route`] the rest.
pub struct Rego;

impl ConfiguredPlugin for Rego {
    const NAME: &'static str = "rego";
    type Config = Policy;

    fn parse(config: &str) -> Result<Policy, String> {
        config::parse(config)
    }

    fn announce(policy: &Policy) {
        log_info(&format!(
            "rego: modules {}; rules allow{}{}; {} open method patterns",
            policy.modules.join(", "),
            if policy.rules.deny { ", deny" } else { "" },
            if policy.rules.annotations {
                ", annotations"
            } else {
                ""
            },
            policy.open_methods.len()
        ));
    }

    /// Deny by default needs to see every request going in; coming back
    /// only the lists it filters.
    fn interests(_: &Policy) -> Interests {
        authorize::interests()
    }

    /// Routes one message like `authz`, then adds the policy's
    /// `annotations` from the call's evaluation.
    fn decide(policy: &Policy, ctx: &Context, message: &str) -> Verdict {
        let call = Call {
            policy,
            annotations: RefCell::new(Vec::new()),
        };
        let mut verdict = authorize::route(&call, ctx, message);
        verdict.annotations.extend(call.annotations.into_inner());
        verdict
    }
}

portcullis_plugin_sdk::export_plugin!(Rego);

/// The authorizer of one message: the policy, and the annotations its
/// evaluation of a call returned, for [`Rego::decide`] to add.
struct Call<'a> {
    policy: &'a Policy,
    annotations: RefCell<Vec<Annotation>>,
}

impl Authorizer for Call<'_> {
    const LABEL: &'static str = engine::LABEL;

    fn is_open(&self, method: &str) -> bool {
        self.policy.open_methods.iter().any(|g| g.matches(method))
    }

    fn decide_call(
        &self,
        ctx: &Context,
        method: CallMethod,
        name: &str,
        arguments: Option<&Arguments<'_>>,
    ) -> Ruling {
        let what = || {
            format!(
                "{:?} calling {} {name:?}",
                ctx.principal.subject,
                method.name()
            )
        };
        let text = arguments.map(|a| a.text);
        let input = match input::build(ctx, method, name, input::Arguments::Call(text)) {
            Ok(input) => input,
            Err(e) => {
                return Ruling::Deny {
                    by: DEFAULT_DENY.into(),
                    reason: format!("cannot build the Rego input for {}: {e}", what()),
                };
            }
        };
        match self.policy.decide(input) {
            Decision::Allow { annotations } => {
                self.annotations.replace(annotations);
                Ruling::Allow { by: "allow".into() }
            }
            Decision::Deny {
                reasons,
                annotations,
            } => {
                self.annotations.replace(annotations);
                Ruling::Deny {
                    by: "deny".into(),
                    reason: format!(
                        "data.portcullis.deny refuses {}: {}",
                        what(),
                        reasons.join("; ")
                    ),
                }
            }
            Decision::NotAllowed { why, annotations } => {
                self.annotations.replace(annotations);
                Ruling::Deny {
                    by: DEFAULT_DENY.into(),
                    reason: format!("nothing allows {}: {why}", what()),
                }
            }
            Decision::Error(e) => Ruling::Deny {
                by: "error".into(),
                reason: format!(
                    "the policy could not be evaluated for {}, refused (fail closed): {e}",
                    what()
                ),
            },
        }
    }

    /// A list entry stays when the rules allow it with `input.listing`
    /// true and no arguments (see the crate documentation, "Lists").
    fn shows(&self, ctx: &Context, method: CallMethod, name: &str) -> bool {
        let Ok(input) = input::build(ctx, method, name, input::Arguments::Listing) else {
            return false;
        };
        matches!(self.policy.decide(input), Decision::Allow { .. })
    }
}
