//! Helpers for a plugin's native unit tests (`cargo test`), where the
//! gateway is not there to build the [`Context`] or the message.
//!
//! ```
//! use portcullis_plugin_sdk::{Direction, MessageKind, json, testing};
//!
//! let mut ctx = testing::context(
//!     Direction::ToServer,
//!     MessageKind::Request,
//!     Some("tools/call"),
//!     "alice",
//!     &["support"],
//! );
//! ctx.principal.claims = r#"{"mfa": true}"#.into(); // adjust what a test needs
//! assert!(ctx.is_tool_call());
//!
//! let message = testing::request("tools/call", json!({"name": "lookup_customer"}));
//! // let verdict = my_decide(&config, &ctx, &message);
//! # assert!(message.contains("lookup_customer"));
//! ```

use crate::{Context, Direction, MessageKind, Principal, Value, json};

/// A [`Context`] as the gateway would pass it: `direction`, `kind` and
/// `method` as given, the principal `subject` in `groups`, and fixed
/// defaults for the rest: tunnel `"tun-a"`, server `"crm"`, request id
/// `"1"`, claims `"{}"`, no target, session or protocol version. Change
/// fields afterwards as a test needs (`ctx.server = ...`).
pub fn context(
    direction: Direction,
    kind: MessageKind,
    method: Option<&str>,
    subject: &str,
    groups: &[&str],
) -> Context {
    Context {
        direction,
        tunnel: "tun-a".into(),
        server: "crm".into(),
        kind,
        method: method.map(str::to_owned),
        target: None,
        request_id: Some("1".into()),
        session_id: None,
        protocol_version: None,
        principal: Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            claims: "{}".into(),
        },
    }
}

/// The text of a JSON-RPC request with id 1:
/// `{"jsonrpc": "2.0", "id": 1, "method": method, "params": params}`.
pub fn request(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

pub mod conformance;
