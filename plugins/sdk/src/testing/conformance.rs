//! The routing tests every [`Authorizer`] must pass: deny by default,
//! refusals answered like unknown targets, `open_methods`, malformed
//! requests, calls disguised as notifications, stale method labels, list
//! filtering and look-alike names. They test [`route`] through the
//! plugin's own configuration, so a plugin cannot configure its way out of
//! them. Run them with [`authorizer_conformance!`](crate::authorizer_conformance):
//!
//! ```ignore
//! #[cfg(test)]
//! portcullis_plugin_sdk::authorizer_conformance!(crate::tests::fixture);
//! ```
//!
//! where `fixture(open_methods: Option<&[&str]>) -> impl Authorizer` builds
//! the plugin configured, in its own language, as "The fixture" below
//! says.
//!
//! # The fixture
//!
//! * members of the group [`GROUP`] may use the targets [`TOOL`],
//!   [`PROMPT`] and every URI matching [`RESOURCES`] with any of the three
//!   call methods, by the rule or policy [`ALLOW_ID`] (its audit label);
//! * nobody may use a target matching [`DENIED`], by [`DENY_ID`];
//! * nothing else is allowed;
//! * `open_methods` is the list given, or left out when `None`.
//!
//! The principal [`MEMBER`] is in [`GROUP`], [`OUTSIDER`] in no group.
//!
//! (Over 400 lines on purpose: one suite, whose checks share the fixture's
//! constants and helpers and are listed together by the macro at the end.)

// Test code: a failing assertion is how it reports, and it never runs on
// the request path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::authorize::{Authorizer, DEFAULT_DENY, route};
use crate::{Context, Direction, MessageKind, Value, Verdict, codes, json, testing};

/// The group allowed by [`ALLOW_ID`].
pub const GROUP: &str = "support";
/// A principal in [`GROUP`].
pub const MEMBER: &str = "alice";
/// A principal in no group.
pub const OUTSIDER: &str = "bob";
/// The tool [`GROUP`] may call.
pub const TOOL: &str = "lookup";
/// The prompt [`GROUP`] may get.
pub const PROMPT: &str = "greet";
/// The glob of the resource URIs [`GROUP`] may read.
pub const RESOURCES: &str = "file:///pub/*";
/// The glob of the targets nobody may use (also URIs [`RESOURCES`] would
/// allow, such as `file:///pub/delete_x`).
pub const DENIED: &str = "*delete_*";
/// The audit label of the allowing rule or policy.
pub const ALLOW_ID: &str = "support-use";
/// The audit label of the refusing rule or policy.
pub const DENY_ID: &str = "no-delete";

/// Builds the authorizer under test: the fixture with these `open_methods`.
pub type Fixture<A> = fn(Option<&[&str]>) -> A;

fn ctx(direction: Direction, kind: MessageKind, method: Option<&str>, who: &str) -> Context {
    let groups: &[&str] = if who == MEMBER { &[GROUP] } else { &[] };
    testing::context(direction, kind, method, who, groups)
}

fn request_ctx(method: &str, who: &str) -> Context {
    ctx(Direction::ToServer, MessageKind::Request, Some(method), who)
}

/// `method` (a call method) of `name` by `who`.
fn call<A: Authorizer>(a: &A, who: &str, method: &str, params: Value) -> Verdict {
    route(
        a,
        &request_ctx(method, who),
        &testing::request(method, params),
    )
}

/// A request of `method` without params by `who`, labelled as `method`.
fn bare<A: Authorizer>(a: &A, who: &str, method: &str) -> Verdict {
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": method}).to_string();
    route(a, &request_ctx(method, who), &msg)
}

#[track_caller]
fn assert_allowed(v: &Verdict, label: &str) {
    let key = label_key(v);
    assert!(v.is_allow(), "expected allow, got {v:?}");
    assert_eq!(v.label(key), Some(label), "{v:?}");
}

#[track_caller]
fn assert_refused(v: &Verdict, code: i32, public: &str, label: &str) {
    let d = v
        .denial()
        .unwrap_or_else(|| panic!("expected deny, got {v:?}"));
    assert_eq!((d.code, d.public_message.as_str()), (code, public), "{v:?}");
    assert_eq!(v.label(label_key(v)), Some(label), "{v:?}");
}

#[track_caller]
fn assert_unknown(v: &Verdict, public: &str, label: &str) {
    assert_refused(v, codes::INVALID_PARAMS, public, label);
}

/// The key of the verdict's one label (the authorizer's `LABEL`).
#[track_caller]
fn label_key(v: &Verdict) -> &str {
    let labels: Vec<&str> = v
        .annotations
        .iter()
        .filter(|a| matches!(a.value, crate::AnnotationValue::Label(_)))
        .map(|a| a.key.as_str())
        .collect();
    assert_eq!(labels.len(), 1, "one label per decision: {v:?}");
    labels[0]
}

/// Calls are decided by the authorizer, and every refusal reads like an
/// unknown target.
pub fn calls_are_decided<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(None);
    let tool = |who: &str, name: &str| call(&a, who, "tools/call", json!({"name": name}));
    assert_allowed(&tool(MEMBER, TOOL), ALLOW_ID);
    assert_unknown(
        &tool(OUTSIDER, TOOL),
        &format!("Unknown tool: {TOOL}"),
        DEFAULT_DENY,
    );
    assert_unknown(
        &tool(MEMBER, "anything"),
        "Unknown tool: anything",
        DEFAULT_DENY,
    );
    assert_unknown(
        &tool(MEMBER, "delete_lookup"),
        "Unknown tool: delete_lookup",
        DENY_ID,
    );
    let prompt = |who: &str| call(&a, who, "prompts/get", json!({"name": PROMPT}));
    assert_allowed(&prompt(MEMBER), ALLOW_ID);
    assert_unknown(
        &prompt(OUTSIDER),
        &format!("Unknown prompt: {PROMPT}"),
        DEFAULT_DENY,
    );
    let read = |uri: &str| call(&a, MEMBER, "resources/read", json!({"uri": uri}));
    assert_allowed(&read("file:///pub/a/b.txt"), ALLOW_ID);
    assert_unknown(
        &read("file:///etc/passwd"),
        "Unknown resource: file:///etc/passwd",
        DEFAULT_DENY,
    );
    // Arguments reach the authorizer; they do not change this fixture.
    let with_args = call(
        &a,
        MEMBER,
        "tools/call",
        json!({"name": TOOL, "arguments": {"q": 1}}),
    );
    assert_allowed(&with_args, ALLOW_ID);
}

/// Malformed calls are refused whatever the authorizer would say about the
/// target: `-32600` for what is not a request, `-32602` without a target.
pub fn malformed_requests_are_refused<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(None);
    let member = request_ctx("tools/call", MEMBER);
    for (params, field) in [
        (json!({}), "name"),
        (json!({"name": null}), "name"),
        (json!({"uri": TOOL}), "name"),
    ] {
        assert_refused(
            &route(&a, &member, &testing::request("tools/call", params)),
            codes::INVALID_PARAMS,
            &format!("Invalid params: missing {field}"),
            DEFAULT_DENY,
        );
    }
    let read = route(
        &a,
        &request_ctx("resources/read", MEMBER),
        &testing::request("resources/read", json!({"name": "file:///pub/a"})),
    );
    assert_refused(
        &read,
        codes::INVALID_PARAMS,
        "Invalid params: missing uri",
        DEFAULT_DENY,
    );
    for msg in [
        "{nope".to_owned(),
        // Arrays are not objects, whatever serde's derives would accept.
        format!(r#"["tools/call", {{"name": "{TOOL}"}}]"#),
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["{TOOL}"]}}"#),
        // Repeated members: parsers disagree on which copy wins.
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","name":"{TOOL}"}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{{"name":"{TOOL}"}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{TOOL}","arguments":{{"amount":5,"amount":5000}}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{TOOL}","arguments":{{"x":{{"k":1,"k":2}}}}}}}}"#
        ),
        format!(r#"{{"jsonrpc":"2.0","id":1,"params":{{"name":"{TOOL}"}}}}"#),
    ] {
        assert_refused(
            &route(&a, &member, &msg),
            codes::INVALID_REQUEST,
            "Invalid Request",
            DEFAULT_DENY,
        );
    }
    let ping = route(&a, &request_ctx("ping", MEMBER), r#"["ping"]"#);
    assert_refused(
        &ping,
        codes::INVALID_REQUEST,
        "Invalid Request",
        DEFAULT_DENY,
    );
}

/// Without `open_methods`, the SDK's defaults are open to everyone and
/// other methods are not found.
pub fn default_open_methods<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(None);
    for m in crate::authorize::DEFAULT_OPEN_METHODS {
        let m = m.replace('*', "initialized");
        assert!(bare(&a, OUTSIDER, &m).is_allow(), "{m} is open by default");
    }
    for m in [
        "sampling/createMessage",
        "resources/subscribe",
        "tasks/list",
        "Ping",
    ] {
        assert_refused(
            &bare(&a, MEMBER, m),
            codes::METHOD_NOT_FOUND,
            "Method not found",
            DEFAULT_DENY,
        );
    }
}

/// A configured `open_methods` replaces the defaults, and never opens the
/// call methods.
pub fn configured_open_methods<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(Some(&["ping", "custom/*"]));
    assert!(bare(&a, OUTSIDER, "ping").is_allow());
    assert!(bare(&a, OUTSIDER, "custom/x").is_allow());
    assert_refused(
        &bare(&a, OUTSIDER, "tools/list"),
        codes::METHOD_NOT_FOUND,
        "Method not found",
        DEFAULT_DENY,
    );
    let a = fixture(Some(&["*"]));
    assert!(bare(&a, OUTSIDER, "anything/at-all").is_allow());
    for (method, params) in [
        ("tools/call", json!({"name": "t"})),
        ("prompts/get", json!({"name": "p"})),
        ("resources/read", json!({"uri": "file:///etc/passwd"})),
    ] {
        let v = call(&a, OUTSIDER, method, params);
        assert!(!v.is_allow(), "open_methods opened {method}: {v:?}");
    }
}

/// The method in the message counts, not the host's label.
pub fn the_message_method_counts<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(None);
    let msg = testing::request("tools/call", json!({"name": "delete_all"}));
    assert_unknown(
        &route(&a, &request_ctx("ping", MEMBER), &msg),
        "Unknown tool: delete_all",
        DENY_ID,
    );
    let msg = r#"{"jsonrpc":"2.0","id":1,"method":"secret/op"}"#;
    assert_refused(
        &route(&a, &request_ctx("tools/call", MEMBER), msg),
        codes::METHOD_NOT_FOUND,
        "Method not found",
        DEFAULT_DENY,
    );
    // A stale call label on a notification that is not a call.
    let note = ctx(
        Direction::ToServer,
        MessageKind::Notification,
        Some("tools/call"),
        OUTSIDER,
    );
    let msg = r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#;
    assert!(route(&a, &note, msg).is_allow());
}

/// Notifications and the agent's responses pass unread; a call sent as a
/// notification is still decided.
pub fn notifications_and_responses_pass<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(Some(&[]));
    let note = ctx(
        Direction::ToServer,
        MessageKind::Notification,
        Some("notifications/initialized"),
        OUTSIDER,
    );
    let msg = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert!(route(&a, &note, msg).is_allow());
    let answer = ctx(Direction::ToServer, MessageKind::Response, None, OUTSIDER);
    assert!(route(&a, &answer, r#"{"jsonrpc":"2.0","id":"s1","result":{}}"#).is_allow());
    let err = ctx(Direction::ToServer, MessageKind::Error, None, OUTSIDER);
    assert!(route(&a, &err, "not even json").is_allow());
    let to_client = ctx(
        Direction::ToClient,
        MessageKind::Request,
        Some("sampling/createMessage"),
        OUTSIDER,
    );
    assert!(route(&a, &to_client, "{}").is_allow());
    let sneaky = ctx(
        Direction::ToServer,
        MessageKind::Notification,
        Some("tools/call"),
        OUTSIDER,
    );
    let msg = format!(r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"{TOOL}"}}}}"#);
    assert_unknown(
        &route(&a, &sneaky, &msg),
        &format!("Unknown tool: {TOOL}"),
        DEFAULT_DENY,
    );
}

fn list_response<A: Authorizer>(a: &A, method: &str, who: &str, result: Value) -> Verdict {
    let c = ctx(
        Direction::ToClient,
        MessageKind::Response,
        Some(method),
        who,
    );
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
    route(a, &c, &msg)
}

/// The `key` of every entry of `result.field` in `v`'s rewritten message
/// (a filtered `*/list` response); panics when `v` is not a rewrite.
#[track_caller]
pub fn listed(v: &Verdict, field: &str, key: &str) -> Vec<String> {
    let out: Value = serde_json::from_str(v.rewritten().expect("rewritten")).unwrap();
    out["result"][field]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[key].as_str().unwrap().to_owned())
        .collect()
}

/// List responses keep what the principal may use and everything else in
/// the message; entries without a name are dropped; other responses pass.
pub fn lists_are_filtered<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(None);
    let tools = json!({
        "tools": [
            {"name": TOOL, "inputSchema": {"type": "object"}},
            {"name": "delete_lookup"},
            {"name": "other"},
            {"title": "nameless"}
        ],
        "nextCursor": "page-2",
        "_meta": {"k": 1}
    });
    let v = list_response(&a, "tools/list", MEMBER, tools.clone());
    assert_eq!(listed(&v, "tools", "name"), [TOOL]);
    assert_eq!(v.count("hidden"), Some(3));
    let out: Value = serde_json::from_str(v.rewritten().unwrap()).unwrap();
    assert_eq!(out["id"], 1);
    assert_eq!(out["result"]["nextCursor"], "page-2");
    assert_eq!(out["result"]["_meta"], json!({"k": 1}));
    assert_eq!(
        out["result"]["tools"][0]["inputSchema"],
        json!({"type": "object"})
    );
    // Nobody else sees anything.
    let v = list_response(&a, "tools/list", OUTSIDER, tools);
    assert!(listed(&v, "tools", "name").is_empty());
    assert_eq!(v.count("hidden"), Some(4));
    // Nothing to hide: passes unchanged, still counted.
    let v = list_response(&a, "tools/list", MEMBER, json!({"tools": [{"name": TOOL}]}));
    assert!(v.is_allow(), "{v:?}");
    assert_eq!(v.count("hidden"), Some(0));
    // Prompts by name, resources by URI (not by their `name`).
    let v = list_response(
        &a,
        "prompts/list",
        MEMBER,
        json!({"prompts": [{"name": PROMPT}, {"name": "refund"}], "nextCursor": "c"}),
    );
    assert_eq!(listed(&v, "prompts", "name"), [PROMPT]);
    let v = list_response(
        &a,
        "resources/list",
        MEMBER,
        json!({"resources": [{"uri": "file:///pub/a"}, {"uri": "file:///etc/x", "name": TOOL}]}),
    );
    assert_eq!(listed(&v, "resources", "uri"), ["file:///pub/a"]);
    // Errors, templates and other responses pass untouched.
    let c = ctx(
        Direction::ToClient,
        MessageKind::Error,
        Some("tools/list"),
        MEMBER,
    );
    let msg = r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#;
    assert!(route(&a, &c, msg).is_allow());
    for method in ["resources/templates/list", "tools/call"] {
        let v = list_response(
            &a,
            method,
            OUTSIDER,
            json!({"resourceTemplates": [], "tools": []}),
        );
        assert!(v.is_allow() && v.annotations.is_empty(), "{method}: {v:?}");
    }
}

/// Look-alikes of a denied name, as an attacker would vary it, of
/// `file:///pub/delete_x` (allowed by [`RESOURCES`], refused by
/// [`DENIED`]).
pub const DENIED_LOOKALIKES: &[&str] = &[
    "file:///pub/DELETE_X",
    "file:///pub/\u{FF44}\u{FF45}\u{FF4C}\u{FF45}\u{FF54}\u{FF45}_x",
    "file:///pub/d\u{0435}lete_x",
    "file:///pub/\u{1D41D}\u{1D41E}\u{1D425}\u{1D41E}\u{1D42D}\u{1D41E}_x",
    "file:///pub/\u{24D3}elete_x",
    "file:///pub/delete\u{00A0}_x",
    "file:///pub/ delete_x ",
    "file:///pub/de\u{200B}lete_x",
    "file:///pub/de\u{00AD}lete\u{202E}_x",
    "file:///pub/dele\u{0442}e_x",
];

/// Look-alikes of names the fixture would allow: never allowed, never
/// listed, whatever the allowing rule says.
pub const ALLOWED_LOOKALIKES: &[&str] = &[
    "file:///pub/\u{FF52}eadme",
    "file:///pub/r\u{0435}adme",
    "file:///pub/read\u{200B}me",
    "file:///pub/read me",
    "file:///pub/readme\u{00A0}",
    "file:///pub/\u{2160}",
    "file:///pub/\u{03BF}",
    "file:///pub/\u{24E1}eadme",
];

/// Look-alikes: a refusing rule catches every variation of its names
/// (canonical forms compared), and a name that is not canonical is never
/// allowed nor listed, though its canonical twin is.
pub fn lookalikes_are_refused<A: Authorizer>(fixture: Fixture<A>) {
    let a = fixture(None);
    let read = |uri: &str| call(&a, MEMBER, "resources/read", json!({"uri": uri}));
    assert_unknown(
        &read("file:///pub/delete_x"),
        "Unknown resource: file:///pub/delete_x",
        DENY_ID,
    );
    for uri in DENIED_LOOKALIKES {
        assert_unknown(&read(uri), &format!("Unknown resource: {uri}"), DENY_ID);
    }
    for uri in ALLOWED_LOOKALIKES {
        let v = read(uri);
        assert_unknown(&v, &format!("Unknown resource: {uri}"), DEFAULT_DENY);
        let reason = &v.denial().unwrap().private_reason;
        assert!(reason.contains("canonical"), "{uri:?}: {reason}");
    }
    for uri in ["file:///pub/readme", "file:///pub/I", "file:///pub/o"] {
        assert_allowed(&read(uri), ALLOW_ID);
    }
    let tool = |name: &str| call(&a, MEMBER, "tools/call", json!({"name": name}));
    for name in ["l\u{043E}\u{043E}kup", "\u{FF4C}ookup", " lookup"] {
        assert_unknown(&tool(name), &format!("Unknown tool: {name}"), DEFAULT_DENY);
    }
    let mut entries = vec![json!({"uri": "file:///pub/readme"})];
    for uri in DENIED_LOOKALIKES.iter().chain(ALLOWED_LOOKALIKES) {
        entries.push(json!({ "uri": uri }));
    }
    let v = list_response(
        &a,
        "resources/list",
        MEMBER,
        json!({ "resources": entries }),
    );
    assert_eq!(listed(&v, "resources", "uri"), ["file:///pub/readme"]);
}

/// Generates one `#[test]` per conformance check of [`crate::testing::conformance`]
/// in a module `authorizer_conformance`, for the authorizer `fixture`
/// builds (a `fn(Option<&[&str]>) -> impl Authorizer`, see the fixture
/// requirements there).
#[macro_export]
macro_rules! authorizer_conformance {
    ($fixture:path) => {
        #[cfg(test)]
        mod authorizer_conformance {
            // The fixture's path may be relative to the invoking module.
            #[allow(unused_imports)]
            use super::*;
            use $crate::testing::conformance as c;

            #[test]
            fn calls_are_decided() {
                c::calls_are_decided($fixture);
            }
            #[test]
            fn malformed_requests_are_refused() {
                c::malformed_requests_are_refused($fixture);
            }
            #[test]
            fn default_open_methods() {
                c::default_open_methods($fixture);
            }
            #[test]
            fn configured_open_methods() {
                c::configured_open_methods($fixture);
            }
            #[test]
            fn the_message_method_counts() {
                c::the_message_method_counts($fixture);
            }
            #[test]
            fn notifications_and_responses_pass() {
                c::notifications_and_responses_pass($fixture);
            }
            #[test]
            fn lists_are_filtered() {
                c::lists_are_filtered($fixture);
            }
            #[test]
            fn lookalikes_are_refused() {
                c::lookalikes_are_refused($fixture);
            }
        }
    };
}
