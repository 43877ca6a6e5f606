//! Write Portcullis policy plugins in Rust.
//!
//! A policy plugin is a WebAssembly component built for `wasm32-wasip2` that
//! implements the `plugin` world of `wit/policy.wit`
//! (`portcullis:policy@0.2.1`). The gateway calls [`Plugin::init`] once per
//! instance with the plugin's configuration (JSON text from the policy file),
//! then [`Plugin::handle`] for every JSON-RPC message the plugin declared
//! interest in, and acts on the returned [`Verdict`].
//!
//! This crate runs `wit_bindgen::generate!` once, re-exports the generated
//! types, and adds small helpers so a plugin is a few lines:
//!
//! * the plugin: [`ConfiguredPlugin`] (parse the configuration, declare
//!   interests, decide a message) and [`export_plugin!`], which writes the
//!   component's `init`/`handle` and a native entry point from it;
//! * verdicts: [`allow`], [`rewrite`], [`rewrite_json`], [`deny`], plus
//!   [`Verdict::with_count`] / [`Verdict::with_label`] for audit annotations
//!   and [`Verdict::count`] / [`Verdict::label`] to read them back;
//! * interests: [`Interests::all`], [`Interests::methods`],
//!   [`Interests::directions`], [`Interests::to_client_methods`];
//! * the message: [`Message::parse`] and accessors such as
//!   [`Message::tool_call_name`], [`Message::tool_call_arguments`],
//!   [`Message::content_texts`], [`Message::structured_content`],
//!   [`Message::listed_tools`];
//! * the context: [`Context::is_tool_call`], [`Context::is_response_to`], …;
//! * host imports: [`log_info`], [`log_warn`] (and friends),
//!   [`tool_definition`], [`tool_revision`], [`now_unix_millis`];
//! * for plugins that decide calls: [`authorize`], the deny-by-default
//!   routing of messages around an [`authorize::Authorizer`]; [`strict`],
//!   typed call parsing that refuses duplicate keys; [`names`], the call
//!   methods, globs and the folding of look-alike names;
//! * native unit tests: [`testing::context`] and [`testing::request`], and
//!   [`authorizer_conformance!`], the routing tests every [`authorize::Authorizer`]
//!   must pass.
//!
//! # Example
//!
//! ```no_run
//! use portcullis_plugin_sdk::{allow, deny, ConfiguredPlugin, Context, Interests, Message, Verdict};
//!
//! struct NoSecrets;
//!
//! impl ConfiguredPlugin for NoSecrets {
//!     const NAME: &'static str = "no-secrets";
//!     /// The tool to block.
//!     type Config = String;
//!
//!     fn parse(config: &str) -> Result<String, String> {
//!         let v: portcullis_plugin_sdk::Value =
//!             portcullis_plugin_sdk::serde_json::from_str(config).map_err(|e| e.to_string())?;
//!         Ok(v["tool"].as_str().unwrap_or("read_secret").to_owned())
//!     }
//!
//!     fn interests(_: &String) -> Interests {
//!         // Only tools/call requests reach `decide`.
//!         Interests::methods(["tools/call"])
//!     }
//!
//!     fn decide(tool: &String, ctx: &Context, message: &str) -> Verdict {
//!         if !ctx.is_tool_call() {
//!             return allow();
//!         }
//!         let Ok(msg) = Message::parse(message) else { return allow() };
//!         if msg.tool_call_name() == Some(tool.as_str()) {
//!             return deny(-32602, format!("Unknown tool: {tool}"), "blocked by no-secrets")
//!                 .with_label("rule", "no-secrets");
//!         }
//!         allow()
//!     }
//! }
//!
//! portcullis_plugin_sdk::export_plugin!(NoSecrets);
//! ```
//!
//! The plugin crate is a `cdylib` depending on this crate under its own name
//! (`portcullis-plugin-sdk`, not renamed: the export macro refers to
//! `portcullis_plugin_sdk::bindings`). Build with
//! `cargo build --release --target wasm32-wasip2`; the `.wasm` file in
//! `target/wasm32-wasip2/release/` is the component the gateway loads.
//!
//! # State
//!
//! `init` and `handle` are associated functions (no `self`). Keep per-instance
//! state in statics: each plugin instance is its own WebAssembly instance with
//! its own memory, and calls into one instance never overlap, so a
//! [`std::sync::OnceLock`] for the parsed configuration (what
//! [`export_plugin!`] keeps) and atomics or a `Mutex` for counters are enough.
//!
//! # Sandbox
//!
//! The host provides WASI with no filesystem, network, environment or
//! arguments. A panic aborts the instance (a trap): return a verdict instead.

#![warn(missing_docs)]

/// The raw bindings generated from `wit/policy.wit` by `wit-bindgen`.
///
/// Most plugins never need this module directly: the crate root re-exports
/// everything useful. The export macro refers to it by path.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export_plugin_component",
        default_bindings_module: "portcullis_plugin_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

/// Exports a type implementing [`ConfiguredPlugin`] as the plugin.
///
/// Call it once, at the top level of the plugin crate:
/// `portcullis_plugin_sdk::export_plugin!(MyPlugin);`. It generates
///
/// * when building for `wasm32`, the component's `policy` exports: `init`
///   parses the configuration into a `OnceLock`, `handle` decides from it
///   (see [`configured::init`] and [`configured::handle`]);
/// * `pub fn native(config: &str)`, the plugin's decisions as a closure
///   (see [`configured::native`]), for native tests and the gateway's
///   benchmark.
///
/// `export_plugin!(MyPlugin, without_native)` leaves `native` out, for a
/// plugin that writes its own (`schema-guard`'s takes the tool
/// definitions the host would provide).
///
/// The component exports exist only on `wasm32`: natively there is nothing
/// to export, and same-named exports from two plugins linked side by side
/// would collide. A plugin implementing the raw [`Plugin`] trait instead
/// exports it with [`bindings::export_plugin_component!`].
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        $crate::export_plugin!($ty, without_native);

        /// This plugin's decision logic as plain Rust, configured from
        /// `config` (the same JSON `init` takes), for running it natively:
        /// the gateway's benchmark compares the Wasm component with this.
        pub fn native(
            config: &str,
        ) -> ::std::result::Result<
            impl Fn(&$crate::Context, &str) -> $crate::Verdict + use<>,
            ::std::string::String,
        > {
            $crate::configured::native::<$ty>(config)
        }
    };
    ($ty:ty, without_native) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            /// Set once by `init`; each plugin instance has its own copy.
            static CONFIG: ::std::sync::OnceLock<<$ty as $crate::ConfiguredPlugin>::Config> =
                ::std::sync::OnceLock::new();

            struct Component;

            impl $crate::Plugin for Component {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::Interests, ::std::string::String> {
                    $crate::configured::init::<$ty>(&CONFIG, &config)
                }

                fn handle(ctx: $crate::Context, message: ::std::string::String) -> $crate::Verdict {
                    $crate::configured::handle::<$ty>(&CONFIG, &ctx, &message)
                }
            }

            $crate::bindings::export_plugin_component!(Component);
        };
    };
}

/// The trait a plugin implements (`wit-bindgen`'s `Guest` for the `policy`
/// interface). See the crate documentation for an example.
pub use bindings::exports::portcullis::policy::policy::Guest as Plugin;

pub use bindings::portcullis::policy::types::{
    Annotation, AnnotationValue, Context, Decision, Denial, Direction, Interests, LogLevel,
    MessageKind, Principal, Verdict,
};

pub use configured::ConfiguredPlugin;
pub use serde_json::{self, Value, json};

use bindings::portcullis::policy::host;

pub mod authorize;
pub mod configured;
pub mod names;
pub mod strict;
pub mod testing;

/// Common JSON-RPC error codes for [`deny`].
pub mod codes {
    /// Invalid params. Use it to make a blocked tool look like an unknown one.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Invalid request.
    pub const INVALID_REQUEST: i32 = -32600;
    /// Method not found.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Implementation-defined server error, conventionally "refused by policy".
    pub const POLICY_DENIED: i32 = -32001;
}

// ---------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------

/// Lets the message through unchanged.
pub fn allow() -> Verdict {
    Verdict {
        decision: Decision::Allow,
        annotations: Vec::new(),
    }
}

/// Replaces the message with `json`, the full JSON-RPC message as text.
pub fn rewrite(json: impl Into<String>) -> Verdict {
    Verdict {
        decision: Decision::Rewrite(json.into()),
        annotations: Vec::new(),
    }
}

/// Replaces the message with `message`, serialised to JSON text.
pub fn rewrite_json(message: &Value) -> Verdict {
    rewrite(message.to_string())
}

/// Stops the message. The agent gets a JSON-RPC error with `code` and
/// `public_message`; `private_reason` goes to the audit trail only.
pub fn deny(
    code: i32,
    public_message: impl Into<String>,
    private_reason: impl Into<String>,
) -> Verdict {
    Verdict {
        decision: Decision::Deny(Denial {
            code,
            public_message: public_message.into(),
            private_reason: private_reason.into(),
        }),
        annotations: Vec::new(),
    }
}

impl Verdict {
    /// Adds a count annotation for the audit (e.g. `hidden` = 3).
    #[must_use]
    pub fn with_count(mut self, key: impl Into<String>, n: u64) -> Self {
        self.annotations.push(Annotation {
            key: key.into(),
            value: AnnotationValue::Count(n),
        });
        self
    }

    /// Adds a label annotation for the audit. Labels are for short
    /// classifications (`rule = "no-delete"`), never for payload.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.push(Annotation {
            key: key.into(),
            value: AnnotationValue::Label(value.into()),
        });
        self
    }

    /// True when the decision is [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self.decision, Decision::Allow)
    }

    /// The denial, when the decision is [`Decision::Deny`].
    pub fn denial(&self) -> Option<&Denial> {
        match &self.decision {
            Decision::Deny(d) => Some(d),
            _ => None,
        }
    }

    /// The replacement JSON text, when the decision is [`Decision::Rewrite`].
    pub fn rewritten(&self) -> Option<&str> {
        match &self.decision {
            Decision::Rewrite(s) => Some(s),
            _ => None,
        }
    }

    /// The value of the first label annotation named `key` (see
    /// [`Verdict::with_label`]); `None` when there is none.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.annotations.iter().find_map(|a| match &a.value {
            AnnotationValue::Label(s) if a.key == key => Some(s.as_str()),
            _ => None,
        })
    }

    /// The value of the first count annotation named `key` (see
    /// [`Verdict::with_count`]); `None` when there is none.
    pub fn count(&self, key: &str) -> Option<u64> {
        self.annotations.iter().find_map(|a| match a.value {
            AnnotationValue::Count(n) if a.key == key => Some(n),
            _ => None,
        })
    }
}

// ---------------------------------------------------------------------------
// Interests
// ---------------------------------------------------------------------------

impl Interests {
    /// Every message in both directions.
    pub fn all() -> Self {
        Interests {
            methods: Vec::new(),
            directions: Vec::new(),
            to_client_methods: Vec::new(),
        }
    }

    /// Only these methods, exact (`tools/call`) or prefix globs (`tools/*`),
    /// in both directions. Responses match when the request they answer does.
    pub fn methods<I, S>(methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Interests {
            methods: methods.into_iter().map(Into::into).collect(),
            directions: Vec::new(),
            to_client_methods: Vec::new(),
        }
    }

    /// Narrows messages going to-client to these methods (a response
    /// matches when the request it answers does), whatever `methods` says
    /// for the other direction: e.g. every request going in, but only the
    /// list results coming out.
    #[must_use]
    pub fn to_client_methods<I, S>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.to_client_methods = methods.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts to these directions (empty means both).
    #[must_use]
    pub fn directions(mut self, directions: impl IntoIterator<Item = Direction>) -> Self {
        self.directions = directions.into_iter().collect();
        self
    }
}

// ---------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------

impl Context {
    /// Agent → MCP server.
    pub fn is_to_server(&self) -> bool {
        self.direction == Direction::ToServer
    }

    /// MCP server → agent.
    pub fn is_to_client(&self) -> bool {
        self.direction == Direction::ToClient
    }

    /// True when the host reports this method (for responses: the method of
    /// the request they answer).
    pub fn method_is(&self, method: &str) -> bool {
        self.method.as_deref() == Some(method)
    }

    /// An agent's `tools/call` request on its way to the server.
    pub fn is_tool_call(&self) -> bool {
        self.is_to_server() && self.kind == MessageKind::Request && self.method_is("tools/call")
    }

    /// A successful response travelling to the agent, answering a `method`
    /// request (e.g. `is_response_to("tools/list")`).
    pub fn is_response_to(&self, method: &str) -> bool {
        self.is_to_client() && self.kind == MessageKind::Response && self.method_is(method)
    }

    /// The principal's extra claims, parsed (`{}` when absent or unparseable).
    pub fn claims(&self) -> Value {
        serde_json::from_str(&self.principal.claims).unwrap_or_else(|_| json!({}))
    }
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// One JSON-RPC message, parsed. Derefs to [`serde_json::Value`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message(pub Value);

impl Message {
    /// Parses the message text given to [`Plugin::handle`].
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text)
            .map(Message)
            .map_err(|e| format!("message is not JSON: {e}"))
    }

    /// The JSON value.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The JSON value, mutable (edit it, then [`Message::rewrite`]).
    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.0
    }

    /// The JSON value, owned.
    pub fn into_value(self) -> Value {
        self.0
    }

    /// Serialises the (possibly edited) message back to JSON text.
    pub fn to_json(&self) -> String {
        self.0.to_string()
    }

    /// A [`rewrite`] verdict replacing the message with this one.
    pub fn rewrite(&self) -> Verdict {
        rewrite_json(&self.0)
    }

    /// `method`, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        self.0.get("method")?.as_str()
    }

    /// `id`, for requests and responses.
    pub fn id(&self) -> Option<&Value> {
        self.0.get("id")
    }

    /// `params`.
    pub fn params(&self) -> Option<&Value> {
        self.0.get("params")
    }

    /// `params`, mutable.
    pub fn params_mut(&mut self) -> Option<&mut Value> {
        self.0.get_mut("params")
    }

    /// `result`, for successful responses.
    pub fn result(&self) -> Option<&Value> {
        self.0.get("result")
    }

    /// `result`, mutable.
    pub fn result_mut(&mut self) -> Option<&mut Value> {
        self.0.get_mut("result")
    }

    /// `error`, for error responses.
    pub fn error(&self) -> Option<&Value> {
        self.0.get("error")
    }

    /// `params.name` of a `tools/call` request.
    pub fn tool_call_name(&self) -> Option<&str> {
        self.params()?.get("name")?.as_str()
    }

    /// `params.arguments` of a `tools/call` request.
    pub fn tool_call_arguments(&self) -> Option<&Value> {
        self.params()?.get("arguments")
    }

    /// `params.arguments` of a `tools/call` request as a mutable object,
    /// created empty when `params` is an object without `arguments`.
    /// `None` when there is no `params` object or `arguments` is not an
    /// object.
    pub fn tool_call_arguments_mut(&mut self) -> Option<&mut serde_json::Map<String, Value>> {
        let params = self.params_mut()?.as_object_mut()?;
        params
            .entry("arguments")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    }

    /// The `text` of every `{"type": "text"}` item in `result.content`
    /// (a `tools/call` result).
    pub fn content_texts(&self) -> Vec<&str> {
        self.result()
            .and_then(|r| r.get("content"))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.get("text").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mutable access to every `text` string in `result.content`; returns
    /// how many were visited. Example: redact all text with
    /// `msg.for_each_content_text(|t| *t = "REDACTED".into())`.
    pub fn for_each_content_text(&mut self, mut f: impl FnMut(&mut String)) -> usize {
        let Some(items) = self
            .result_mut()
            .and_then(|r| r.get_mut("content"))
            .and_then(Value::as_array_mut)
        else {
            return 0;
        };
        let mut n = 0;
        for item in items {
            if let Some(Value::String(text)) = item.get_mut("text") {
                f(text);
                n += 1;
            }
        }
        n
    }

    /// `result.structuredContent` of a `tools/call` result.
    pub fn structured_content(&self) -> Option<&Value> {
        self.result()?.get("structuredContent")
    }

    /// `result.structuredContent`, mutable.
    pub fn structured_content_mut(&mut self) -> Option<&mut Value> {
        self.result_mut()?.get_mut("structuredContent")
    }

    /// `result.tools` of a `tools/list` response.
    pub fn listed_tools(&self) -> Option<&Vec<Value>> {
        self.result()?.get("tools")?.as_array()
    }

    /// `result.tools` of a `tools/list` response, mutable (e.g. `retain`).
    pub fn listed_tools_mut(&mut self) -> Option<&mut Vec<Value>> {
        self.result_mut()?.get_mut("tools")?.as_array_mut()
    }
}

impl std::ops::Deref for Message {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl std::ops::DerefMut for Message {
    fn deref_mut(&mut self) -> &mut Value {
        &mut self.0
    }
}

// ---------------------------------------------------------------------------
// Host imports
// ---------------------------------------------------------------------------

/// Writes to the gateway's log at `level`, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Logs at debug level.
pub fn log_debug(message: &str) {
    host::log(LogLevel::Debug, message);
}

/// Logs at info level.
pub fn log_info(message: &str) {
    host::log(LogLevel::Info, message);
}

/// Logs at warn level.
pub fn log_warn(message: &str) {
    host::log(LogLevel::Warn, message);
}

/// Logs at error level.
pub fn log_error(message: &str) {
    host::log(LogLevel::Error, message);
}

/// The upstream's definition of `tool` on `server` (its `tools/list` entry
/// from the gateway's catalog), parsed; `None` when unknown or not JSON.
/// Pass `&ctx.server` for the server the message travels to or from.
pub fn tool_definition(server: &str, tool: &str) -> Option<Value> {
    serde_json::from_str(&host::tool_definition(server, tool)?).ok()
}

/// Like [`tool_definition`], as the JSON text the host returned.
pub fn tool_definition_raw(server: &str, tool: &str) -> Option<String> {
    host::tool_definition(server, tool)
}

/// The revision of `tool`'s definition on `server` in the gateway's
/// catalog: a number that changes whenever the definition does (`None` when
/// unknown). Keep what you derive from a definition keyed by its revision
/// and call [`tool_definition_raw`] only when the revision you hold is
/// stale, rather than receiving the whole definition on every message.
pub fn tool_revision(server: &str, tool: &str) -> Option<u64> {
    host::tool_revision(server, tool)
}

/// Wall-clock time from the host, milliseconds since the Unix epoch.
pub fn now_unix_millis() -> u64 {
    host::now_unix_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_helpers() {
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}"#;
        let mut msg = Message::parse(call).unwrap();
        assert_eq!(msg.method(), Some("tools/call"));
        assert_eq!(msg.tool_call_name(), Some("echo"));
        assert_eq!(msg.tool_call_arguments(), None);
        msg.tool_call_arguments_mut()
            .unwrap()
            .insert("x".into(), json!(1));
        assert_eq!(msg.tool_call_arguments(), Some(&json!({"x": 1})));

        let result = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[
            {"type":"text","text":"a"},{"type":"image","data":"..."},{"type":"text","text":"b"}],
            "structuredContent":{"k":1}}}"#;
        let mut msg = Message::parse(result).unwrap();
        assert_eq!(msg.content_texts(), vec!["a", "b"]);
        assert_eq!(msg.structured_content(), Some(&json!({"k": 1})));
        assert_eq!(msg.for_each_content_text(|t| t.push('!')), 2);
        assert_eq!(msg.content_texts(), vec!["a!", "b!"]);
        assert!(msg.rewrite().rewritten().unwrap().contains("\"a!\""));
        assert!(Message::parse("nope").is_err());
    }

    #[test]
    fn reading_annotations() {
        let v = allow()
            .with_count("n", 2)
            .with_label("k", "v")
            .with_label("k", "second")
            .with_count("n", 3);
        assert_eq!(v.count("n"), Some(2));
        assert_eq!(v.label("k"), Some("v"));
        assert_eq!(v.label("n"), None);
        assert_eq!(v.count("k"), None);
        assert_eq!(v.label("missing"), None);
    }

    #[test]
    fn verdicts() {
        let v = deny(codes::INVALID_PARAMS, "pub", "priv")
            .with_count("n", 2)
            .with_label("k", "v");
        assert_eq!(v.denial().unwrap().code, -32602);
        assert_eq!(v.annotations.len(), 2);
        assert!(allow().is_allow());
        let i = Interests::methods(["tools/*"]).directions([Direction::ToClient]);
        assert_eq!(i.methods, vec!["tools/*".to_string()]);
        assert_eq!(i.directions, vec![Direction::ToClient]);
        assert_eq!(
            Interests::all(),
            Interests {
                methods: vec![],
                directions: vec![],
                to_client_methods: vec![],
            }
        );
        let lists = crate::authorize::interests();
        assert!(lists.methods.is_empty() && lists.directions.is_empty());
        assert_eq!(
            lists.to_client_methods,
            ["tools/list", "prompts/list", "resources/list"]
        );
    }
}
