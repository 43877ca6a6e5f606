//! `schema-guard`: enforce MCP tool schemas and pin tool definitions.
//!
//! For every server in whose chain it runs:
//!
//! * a `tools/call` request is checked against the tool's current
//!   definition from the gateway's catalog (the upstream's last `tools/list`
//!   entry for it). A tool with no definition is refused with `-32602`
//!   `Unknown tool: NAME`, exactly what a server says about a tool it does
//!   not have. The `arguments` (an absent `arguments` counts as `{}`) must
//!   match the tool's `inputSchema`, or the call is refused with `-32602`
//!   `Invalid arguments for tool NAME: /amount: "type", /to: "required"`:
//!   the failing instance locations and schema keywords, never the values;
//! * a `tools/call` result travelling back to the agent must have a
//!   `structuredContent` that matches the tool's `outputSchema`, or it is
//!   withheld and the agent gets `-32001` `Invalid result from tool NAME:
//!   ...` instead. A result with `isError: true` is not checked; a tool
//!   without `outputSchema` is not checked; a result without
//!   `structuredContent` from a tool with an `outputSchema` is refused
//!   unless `require_structured = false` (MCP says servers MUST provide it);
//! * **pinning**: with `pins` configured, a tool whose definition changed
//!   since it was pinned (a "rug pull": new description, new schema) is
//!   refused like an unknown tool and removed from `tools/list` responses;
//!   so is a tool without a pin, unless `unpinned = "allow"`.
//!
//! Schemas follow their `$schema` (2020-12 when absent; draft-07, 2019-09,
//! draft-06 and draft-04 are recognised). Nothing is fetched: a `$ref` to
//! anything outside the schema, or an unknown `$schema`, makes the schema
//! unusable. A tool whose `inputSchema` or `outputSchema` is missing (input
//! only), not valid for its draft, or unresolvable cannot be called (`-32001`
//! `Blocked by policy: tool NAME has an invalid schema`; the audit gets the
//! compiler's reason), and its results are withheld: fail closed.
//!
//! # Configuration
//!
//! ```toml
//! [plugins.schema-guard]
//! source = "builtin:schema-guard"    # or the path of schema_guard.wasm
//!
//! [plugins.schema-guard.config]
//! require_structured = true          # default
//! unpinned = "deny"                  # default "deny" with pins, "allow" without
//!
//! [plugins.schema-guard.config.pins] # tool name → digest (`portcullis policy pin`)
//! lookup_customer = "sha256:0f5c…"   # 64 lowercase hex digits
//! ```
//!
//! * `pins` (optional, default none): tool name → pin digest, see
//!   [`digest`] for the exact algorithm. A plugin instance is configured per
//!   policy entry and chains are per server, so names are not qualified by
//!   server: give each server's chain its own `schema-guard` entry when two
//!   servers pin different tools.
//! * `unpinned` (optional): `"deny"` or `"allow"` for tools without a pin.
//!   The default is `"deny"` when `pins` has at least one entry and `"allow"`
//!   when it has none (so an empty configuration only enforces schemas).
//!   `unpinned = "deny"` with no pins refuses every tool.
//! * `require_structured` (optional, default `true`).
//!
//! Unknown keys, wrong types and malformed digests fail `init`, and so the
//! policy load.
//!
//! # Audit annotations
//!
//! Counts and labels, never payload: `tool` (the tool name), `validated`
//! (`arguments`, `structuredContent` or `none` when there was nothing to
//! check), `pin` (`match`, `changed`, `unpinned`; only when pinning is on),
//! `reason` on refusals (`unknown-tool`, `pin-changed`, `unpinned`,
//! `invalid-schema`, `invalid-arguments`, `invalid-result`,
//! `missing-structured-content`, `invalid-request`), `errors` (number of
//! failing locations), and on `tools/list` responses `hidden_changed` and
//! `hidden_unpinned`.

pub mod config;
/// The pin digest, shared with the gateway's `portcullis policy pin`.
pub use portcullis_canon::digest;
mod schemas;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use portcullis_plugin_sdk::{
    ConfiguredPlugin, Context, Direction, Interests, MessageKind, Value, Verdict, allow, codes,
    deny, log_info, rewrite_json, tool_definition_raw, tool_revision,
};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use config::{Config, Pin};
use schemas::{Compiled, shorten};

/// Failing locations named in a public message at most.
const PUBLIC_PROBLEMS: usize = 8;
/// Failing locations named in a private reason at most.
const PRIVATE_PROBLEMS: usize = 16;

/// The plugin: checks calls and results against the host's catalog.
pub struct SchemaGuard;

impl ConfiguredPlugin for SchemaGuard {
    const NAME: &'static str = "schema-guard";
    type Config = Config;

    fn parse(config: &str) -> Result<Config, String> {
        Config::parse(config)
    }

    fn announce(config: &Config) {
        log_info(&format!(
            "schema-guard: {} pins, unpinned tools {}, structuredContent {}",
            config.pins.len(),
            match config.unpinned {
                config::Unpinned::Deny => "denied",
                config::Unpinned::Allow => "allowed",
            },
            if config.require_structured {
                "required"
            } else {
                "optional"
            },
        ));
    }

    /// `tools/call` both ways, and the task methods that deliver a tool's
    /// result later (`tasks/result`, 2025-11-25; `tasks/get` inlining it,
    /// 2026-07-28); `tools/list` too when pinning may hide tools.
    fn interests(config: &Config) -> Interests {
        if config.pinning() {
            Interests::methods(["tools/call", "tasks/get", "tasks/result", "tools/list"])
        } else {
            Interests::methods(["tools/call", "tasks/get", "tasks/result"])
        }
    }

    /// The only host calls: everything else takes the definitions as a
    /// parameter, so it runs (and is tested) natively.
    fn decide(config: &Config, ctx: &Context, message: &str) -> Verdict {
        decide_with(config, ctx, message, &HostCatalog(&ctx.server))
    }
}

// `native` takes the definitions the host would provide.
portcullis_plugin_sdk::export_plugin!(SchemaGuard, without_native);

/// Where the current tool definitions come from: the gateway's catalog in
/// the component; a map or a closure natively.
pub trait Definitions {
    /// The revision of `tool`'s current definition.
    fn revision(&self, tool: &str) -> Revision;
    /// The JSON text of `tool`'s current definition, `None` when unknown.
    fn text(&self, tool: &str) -> Option<String>;
}

/// What a [`Definitions`] source knows of a definition's revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// No such tool.
    Unknown,
    /// A number that changes whenever the definition does: compiled
    /// schemas are reused while it stays the same, and the text is fetched
    /// only when it moves.
    At(u64),
    /// The source has no revisions: the text is fetched and compared with
    /// the cached one on every call.
    Untracked,
}

/// A closure returning the definition text: no revisions.
impl<F: Fn(&str) -> Option<String>> Definitions for F {
    fn revision(&self, _tool: &str) -> Revision {
        Revision::Untracked
    }
    fn text(&self, tool: &str) -> Option<String> {
        self(tool)
    }
}

/// The gateway's catalog for one server, through the host imports.
struct HostCatalog<'a>(&'a str);

impl Definitions for HostCatalog<'_> {
    fn revision(&self, tool: &str) -> Revision {
        tool_revision(self.0, tool).map_or(Revision::Unknown, Revision::At)
    }
    fn text(&self, tool: &str) -> Option<String> {
        tool_definition_raw(self.0, tool)
    }
}

/// This plugin's decision logic as plain Rust, configured from `config`
/// (the same JSON `init` takes), for running it natively: the gateway's
/// benchmark compares the Wasm component with this. `definitions` stands
/// in for the host's tool catalog of the message's server.
pub fn native<D: Definitions>(
    config: &str,
    definitions: D,
) -> Result<impl Fn(&Context, &str) -> Verdict + use<D>, String> {
    let config = SchemaGuard::parse(config)?;
    Ok(move |ctx: &Context, message: &str| decide_with(&config, ctx, message, &definitions))
}

/// Decides one message. `definition(tool)` returns the JSON text of the
/// tool's current definition on `ctx.server`, or `None` when unknown.
#[cfg(test)]
pub(crate) fn decide(
    config: &Config,
    ctx: &Context,
    message: &str,
    definition: &dyn Fn(&str) -> Option<String>,
) -> Verdict {
    decide_with(config, ctx, message, &definition)
}

/// Decides one message with the definitions of `ctx.server` from `definitions`.
pub(crate) fn decide_with(
    config: &Config,
    ctx: &Context,
    message: &str,
    definition: &dyn Definitions,
) -> Verdict {
    match (ctx.direction, ctx.kind, ctx.method.as_deref()) {
        // A call sent as a notification could still be executed by a lax
        // server: check it like the request.
        (
            Direction::ToServer,
            MessageKind::Request | MessageKind::Notification,
            Some("tools/call"),
        ) => check_call(config, ctx, message, definition),
        // The gateway names the tool that created the task as the target.
        (Direction::ToClient, MessageKind::Response, Some("tools/call" | "tasks/result")) => {
            check_result(config, ctx, message, definition)
        }
        (Direction::ToClient, MessageKind::Response, Some("tasks/get")) => {
            check_task_result(config, ctx, message, definition)
        }
        (Direction::ToClient, MessageKind::Response, Some("tools/list")) => {
            filter_list(config, message)
        }
        _ => allow(),
    }
}

// ---------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------

/// The current definition of `tool` on `ctx.server`, compiled (cached per
/// definition), and how it compares with its pin; or the refusal: unknown
/// tool (its private reason starting with `unknown_prefix`), changed since
/// pinned, or unpinned.
fn current_definition<'c>(
    config: &'c Config,
    ctx: &Context,
    tool: &str,
    definition: &dyn Definitions,
    unknown_prefix: &str,
) -> Result<(Arc<Compiled>, Pin<'c>), Verdict> {
    let compiled = match definition.revision(tool) {
        Revision::Unknown => None,
        Revision::At(revision) => {
            schemas::cached_at(&ctx.server, tool, revision, || definition.text(tool))
        }
        Revision::Untracked => definition
            .text(tool)
            .map(|text| schemas::cached(&ctx.server, tool, &text)),
    };
    let Some(compiled) = compiled else {
        return Err(unknown_tool(
            tool,
            &format!(
                "{unknown_prefix}no definition of tool {tool:?} on server {:?} in the gateway's catalog",
                ctx.server
            ),
            "unknown-tool",
        ));
    };
    let pin = config.pin(tool, &compiled.digest);
    match pin_refusal(pin, tool, &compiled) {
        Some(refusal) => Err(refusal),
        None => Ok((compiled, pin)),
    }
}

// ---------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------

fn check_call(
    config: &Config,
    ctx: &Context,
    message: &str,
    definition: &dyn Definitions,
) -> Verdict {
    let Ok(msg) = serde_json::from_str::<Value>(message) else {
        return invalid_request("unparseable tools/call request");
    };
    let params = msg.get("params");
    // The name the upstream will read, not the host's label.
    let Some(tool) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
        return deny(
            codes::INVALID_PARAMS,
            "Invalid params: missing tool name",
            "tools/call without a string params.name",
        )
        .with_label("reason", "invalid-request");
    };
    let (compiled, pin) = match current_definition(config, ctx, tool, definition, "") {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let validator = match (&compiled.input, &compiled.output) {
        (Err(e), _) | (Ok(_), Some(Err(e))) => return invalid_schema(tool, e, pin),
        (Ok(v), _) => v,
    };
    let empty;
    let arguments = match params.and_then(|p| p.get("arguments")) {
        None => {
            empty = Value::Object(Default::default());
            &empty
        }
        Some(a @ Value::Object(_)) => a,
        Some(other) => {
            return annotated(
                deny(
                    codes::INVALID_PARAMS,
                    format!("Invalid arguments for tool {tool}: arguments must be an object"),
                    format!(
                        "arguments of tool {tool:?} are a JSON {}, not an object",
                        kind(other)
                    ),
                )
                .with_label("reason", "invalid-arguments")
                .with_count("errors", 1),
                tool,
                pin,
            );
        }
    };
    match schemas::check(validator, arguments) {
        Ok(()) => annotated(allow().with_label("validated", "arguments"), tool, pin),
        Err(failure) => annotated(
            deny(
                codes::INVALID_PARAMS,
                format!(
                    "Invalid arguments for tool {tool}: {}",
                    failure.public_list(PUBLIC_PROBLEMS)
                ),
                format!(
                    "arguments of tool {tool:?} do not match its inputSchema ({}): {}",
                    Draft(validator),
                    failure.private_list(PRIVATE_PROBLEMS)
                ),
            )
            .with_label("reason", "invalid-arguments")
            .with_count("errors", failure.count()),
            tool,
            pin,
        ),
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

fn check_result(
    config: &Config,
    ctx: &Context,
    message: &str,
    definition: &dyn Definitions,
) -> Verdict {
    let Some(tool) = ctx.target.as_deref() else {
        return deny(
            codes::POLICY_DENIED,
            "Blocked by policy: the tool result could not be checked",
            "tools/call response without the tool name of its request",
        )
        .with_label("reason", "invalid-request");
    };
    // The definition may have changed since the call: the current one,
    // pins included, decides whether the result may leave.
    let (compiled, pin) =
        match current_definition(config, ctx, tool, definition, "result withheld: ") {
            Ok(found) => found,
            Err(refusal) => return refusal,
        };
    let validator = match &compiled.output {
        None => return annotated(allow().with_label("validated", "none"), tool, pin),
        Some(Err(e)) => return invalid_schema(tool, e, pin),
        Some(Ok(v)) => v,
    };
    let view = match serde_json::from_str::<Envelope>(message) {
        Ok(Envelope { result: Some(r) }) => r,
        Ok(Envelope { result: None }) | Err(_) => {
            return annotated(
                invalid_result(
                    tool,
                    "the response has no result object".into(),
                    "the result is not an object",
                )
                .with_label("reason", "invalid-result"),
                tool,
                pin,
            );
        }
    };
    if view.is_error {
        return annotated(allow().with_label("validated", "none"), tool, pin);
    }
    // Only a complete result is the tool's output: a multi-round
    // `input_required` result (2026-07-28) asks the client for input and a
    // task result says where the output will be (2025-11-25 nests it under
    // `task`, 2026-07-28 says `resultType: "task"`).
    match view.result_type.as_deref() {
        None | Some("complete") => {}
        Some(kind @ ("input_required" | "task")) => {
            return annotated(
                allow()
                    .with_label("validated", "none")
                    .with_label("result_type", kind),
                tool,
                pin,
            );
        }
        Some(_) => {
            return annotated(
                invalid_result(
                    tool,
                    "the result has a resultType this plugin does not know".into(),
                    "unknown resultType",
                )
                .with_label("reason", "invalid-result"),
                tool,
                pin,
            );
        }
    }
    if view.result_type.is_none() && view.has_task && !view.has_content {
        return annotated(
            allow()
                .with_label("validated", "none")
                .with_label("result_type", "task"),
            tool,
            pin,
        );
    }
    let Some(structured) = view.structured else {
        if !config.require_structured {
            return annotated(allow().with_label("validated", "none"), tool, pin);
        }
        return annotated(
            invalid_result(
                tool,
                format!(
                    "tool {tool:?} declares an outputSchema but its result has no structuredContent"
                ),
                "missing structuredContent",
            )
            .with_label("reason", "missing-structured-content"),
            tool,
            pin,
        );
    };
    match schemas::check(validator, &structured) {
        Ok(()) => annotated(
            allow().with_label("validated", "structuredContent"),
            tool,
            pin,
        ),
        Err(failure) => annotated(
            invalid_result(
                tool,
                format!(
                    "structuredContent of tool {tool:?} does not match its outputSchema ({}): {}",
                    Draft(validator),
                    failure.private_list(PRIVATE_PROBLEMS)
                ),
                &failure.public_list(PUBLIC_PROBLEMS),
            )
            .with_label("reason", "invalid-result")
            .with_count("errors", failure.count()),
            tool,
            pin,
        ),
    }
}

fn invalid_result(tool: &str, private: String, public_detail: &str) -> Verdict {
    deny(
        codes::POLICY_DENIED,
        format!("Invalid result from tool {tool}: {public_detail}"),
        private,
    )
}

/// The parts of a `tools/call` response this plugin reads, parsed in one
/// pass without building `content`.
struct Envelope {
    result: Option<ResultView>,
}

struct ResultView {
    /// `isError` is exactly `true`.
    is_error: bool,
    /// `structuredContent`, when present (`null` included).
    structured: Option<Value>,
    /// `resultType` (2026-07-28), when it is a string.
    result_type: Option<String>,
    /// A `task` member (2025-11-25's CreateTaskResult).
    has_task: bool,
    /// A `content` member (every complete CallToolResult has one).
    has_content: bool,
}

/// A `tasks/get` response (2026-07-28): once the task completed, the tool's
/// result is inlined under `result.result`, and is checked like the result
/// of the call that created the task. Without one there is no output yet.
fn check_task_result(
    config: &Config,
    ctx: &Context,
    message: &str,
    definition: &dyn Definitions,
) -> Verdict {
    let inner = serde_json::from_str::<Value>(message)
        .ok()
        .and_then(|v| v.get("result").and_then(|r| r.get("result")).cloned());
    match inner {
        None => allow().with_label("validated", "none"),
        Some(result) => {
            let wrapped = serde_json::json!({ "result": result }).to_string();
            check_result(config, ctx, &wrapped, definition)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Envelope, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(field_identifier)]
        enum Field {
            #[serde(rename = "result")]
            Result,
            #[serde(other)]
            Other,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC response object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut result = None;
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Result => result = Some(map.next_value::<ResultView>()?),
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Envelope { result })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> serde::Deserialize<'de> for ResultView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ResultView, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(field_identifier)]
        enum Field {
            #[serde(rename = "isError")]
            IsError,
            #[serde(rename = "structuredContent")]
            Structured,
            #[serde(rename = "resultType")]
            ResultType,
            #[serde(rename = "task")]
            Task,
            #[serde(rename = "content")]
            Content,
            #[serde(other)]
            Other,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultView;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tools/call result object")
            }
            // Only objects: serde would otherwise read an array's elements
            // as fields by position.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResultView, A::Error> {
                let mut view = ResultView {
                    is_error: false,
                    structured: None,
                    result_type: None,
                    has_task: false,
                    has_content: false,
                };
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::IsError => {
                            view.is_error = map.next_value::<Value>()? == Value::Bool(true);
                        }
                        Field::Structured => view.structured = Some(map.next_value::<Value>()?),
                        Field::ResultType => {
                            view.result_type = match map.next_value::<Value>()? {
                                Value::String(s) => Some(s),
                                // Present but not a string: no kind this
                                // plugin knows, so not a complete result.
                                other => Some(other.to_string()),
                            };
                        }
                        Field::Task => {
                            map.next_value::<IgnoredAny>()?;
                            view.has_task = true;
                        }
                        Field::Content => {
                            map.next_value::<IgnoredAny>()?;
                            view.has_content = true;
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(view)
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------

/// A `tools/list` response: without the tools whose pin refuses them.
fn filter_list(config: &Config, message: &str) -> Verdict {
    if !config.pinning() {
        return allow();
    }
    let Ok(mut msg) = serde_json::from_str::<Value>(message) else {
        return deny(
            codes::POLICY_DENIED,
            "Blocked by policy: the tool list could not be checked",
            "unparseable tools/list response",
        )
        .with_label("reason", "invalid-request");
    };
    let Some(tools) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    else {
        return allow()
            .with_count("hidden_changed", 0)
            .with_count("hidden_unpinned", 0);
    };
    let (mut changed, mut unpinned) = (0u64, 0u64);
    tools.retain(|tool| {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        match config.pin(name, &digest::tool_digest(tool)) {
            Pin::Changed(_) => {
                changed += 1;
                false
            }
            Pin::UnpinnedDenied => {
                unpinned += 1;
                false
            }
            _ => true,
        }
    });
    let verdict = if changed + unpinned == 0 {
        allow()
    } else {
        rewrite_json(&msg)
    };
    verdict
        .with_count("hidden_changed", changed)
        .with_count("hidden_unpinned", unpinned)
}

// ---------------------------------------------------------------------------
// Verdict helpers
// ---------------------------------------------------------------------------

/// Refused like a tool the server does not have.
fn unknown_tool(tool: &str, private: &str, reason: &'static str) -> Verdict {
    deny(
        codes::INVALID_PARAMS,
        format!("Unknown tool: {tool}"),
        private,
    )
    .with_label("reason", reason)
    .with_label("tool", shorten(tool, 128))
}

/// The refusal a pin calls for, if any.
fn pin_refusal(pin: Pin<'_>, tool: &str, compiled: &Compiled) -> Option<Verdict> {
    let now = &compiled.digest;
    let refusal = match pin {
        Pin::Changed(pinned) => unknown_tool(
            tool,
            &format!("definition changed since pinned (pinned {pinned}, now {now})"),
            "pin-changed",
        ),
        Pin::UnpinnedDenied => unknown_tool(
            tool,
            &format!("tool is not pinned and unpinned = \"deny\" (its digest is {now})"),
            "unpinned",
        ),
        _ => return None,
    };
    Some(refusal.with_label("pin", pin.label().unwrap_or_default()))
}

fn invalid_schema(tool: &str, reason: &str, pin: Pin<'_>) -> Verdict {
    annotated(
        deny(
            codes::POLICY_DENIED,
            format!("Blocked by policy: tool {tool} has an invalid schema"),
            format!("tool {tool:?} cannot be checked: {reason}"),
        )
        .with_label("reason", "invalid-schema"),
        tool,
        pin,
    )
}

fn invalid_request(reason: &str) -> Verdict {
    deny(codes::INVALID_REQUEST, "Invalid Request", reason).with_label("reason", "invalid-request")
}

/// Adds the `tool` and `pin` labels.
fn annotated(verdict: Verdict, tool: &str, pin: Pin<'_>) -> Verdict {
    let verdict = verdict.with_label("tool", shorten(tool, 128));
    match pin.label() {
        Some(label) => verdict.with_label("pin", label),
        None => verdict,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The draft a validator uses, for private reasons.
struct Draft<'a>(&'a jsonschema::Validator);

impl fmt::Display for Draft<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use jsonschema::Draft as D;
        f.write_str(match self.0.draft() {
            D::Draft4 => "draft-04",
            D::Draft6 => "draft-06",
            D::Draft7 => "draft-07",
            D::Draft201909 => "2019-09",
            D::Draft202012 => "2020-12",
            _ => "custom dialect",
        })
    }
}
