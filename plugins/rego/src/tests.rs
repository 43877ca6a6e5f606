//! Unit tests, run natively with `cargo test` (no host imports are called).
//!
//! (Over 400 lines on purpose: table-driven decision tests sharing one set
//! of helpers and fixtures, as cedar's are.)

use portcullis_plugin_sdk::testing::conformance::listed;
use portcullis_plugin_sdk::{Direction, MessageKind, Value, json, testing};

use super::*;

/// The crate documentation's example.
const EXAMPLE: &str = r#"
package portcullis

default allow := false

allow if {
    "support" in input.principal.groups
    input.tool in data.support_tools
}

deny contains "erasure is never allowed" if portcullis.like(input.name, "delete_*")
"#;

fn policy_with(cfg: Value) -> Policy {
    config::parse(&cfg.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn policy(rego: &str) -> Policy {
    policy_with(json!({ "policy": rego }))
}

fn example() -> Policy {
    policy_with(json!({
        "policy": EXAMPLE,
        "data": {"support_tools": ["lookup_customer", "search_tickets", "delete_customer"]},
    }))
}

/// A context for `who`: alice is in `support` and has claims, root is in
/// `admins` and `support`, anyone else in no group and without claims.
fn ctx(direction: Direction, kind: MessageKind, method: Option<&str>, who: &str) -> Context {
    let groups: &[&str] = match who {
        "alice" => &["support"],
        "root" => &["admins", "support"],
        _ => &[],
    };
    let mut c = testing::context(direction, kind, method, who, groups);
    if who == "alice" {
        c.principal.claims = r#"{"email": "alice@example.com", "level": 3, "mfa": true}"#.into();
    }
    c
}

fn request(method: &str, who: &str) -> Context {
    ctx(Direction::ToServer, MessageKind::Request, Some(method), who)
}

/// Decides a `tools/call` of `tool` with `args` by `who`.
fn call(p: &Policy, who: &str, tool: &str, args: Value) -> Verdict {
    let msg = testing::request("tools/call", json!({"name": tool, "arguments": args}));
    Rego::decide(p, &request("tools/call", who), &msg)
}

/// Decides a `tools/call` whose arguments are `args`, written exactly so.
fn call_text(p: &Policy, tool: &str, args: &str) -> Verdict {
    let msg = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    );
    Rego::decide(p, &request("tools/call", "alice"), &msg)
}

/// The SDK's conformance fixture (`testing::conformance`) as a Rego policy.
fn fixture(open_methods: Option<&[&str]>) -> Call<'static> {
    use portcullis_plugin_sdk::testing::conformance::{DENIED, GROUP, PROMPT, RESOURCES, TOOL};
    let prefix = RESOURCES.trim_end_matches('*');
    let rego = format!(
        r#"package portcullis
        allow if {{
            "{GROUP}" in input.principal.groups
            allowed_name
        }}
        allowed_name if input.name in {{"{TOOL}", "{PROMPT}"}}
        allowed_name if startswith(input.name, "{prefix}")
        deny contains "no" if portcullis.like(input.name, "{DENIED}")
        "#
    );
    let mut cfg = json!({ "policy": rego });
    if let Some(methods) = open_methods {
        cfg["open_methods"] = json!(methods);
    }
    let policy: &'static Policy = Box::leak(Box::new(policy_with(cfg)));
    Call {
        policy,
        annotations: RefCell::new(Vec::new()),
    }
}

/// The conformance suite asks one label per decision named after the
/// fixture's rule ids; the plugin's own label names `allow`, `deny`,
/// `default-deny`. [`Conform`] maps the first two to the fixture's ids.
struct Conform(Call<'static>);

impl Authorizer for Conform {
    const LABEL: &'static str = engine::LABEL;

    fn is_open(&self, method: &str) -> bool {
        self.0.is_open(method)
    }

    fn decide_call(
        &self,
        ctx: &Context,
        method: CallMethod,
        name: &str,
        arguments: Option<&Arguments<'_>>,
    ) -> Ruling {
        use portcullis_plugin_sdk::testing::conformance::{ALLOW_ID, DENY_ID};
        match self.0.decide_call(ctx, method, name, arguments) {
            Ruling::Allow { by } if by == "allow" => Ruling::Allow {
                by: ALLOW_ID.into(),
            },
            Ruling::Deny { by, reason } if by == "deny" => Ruling::Deny {
                by: DENY_ID.into(),
                reason,
            },
            other => other,
        }
    }

    fn shows(&self, ctx: &Context, method: CallMethod, name: &str) -> bool {
        self.0.shows(ctx, method, name)
    }
}

fn conform(open_methods: Option<&[&str]>) -> Conform {
    Conform(fixture(open_methods))
}

portcullis_plugin_sdk::authorizer_conformance!(conform);

#[track_caller]
fn assert_allowed(v: &Verdict) {
    assert!(v.is_allow(), "expected allow, got {v:?}");
    assert_eq!(v.label("rule"), Some("allow"), "{v:?}");
}

#[track_caller]
fn assert_unknown(v: &Verdict, public: &str, rule: &str) -> String {
    let d = v
        .denial()
        .unwrap_or_else(|| panic!("expected deny, got {v:?}"));
    assert_eq!(d.code, -32602, "{v:?}");
    assert_eq!(d.public_message, public);
    assert_eq!(v.label("rule"), Some(rule), "{v:?}");
    d.private_reason.clone()
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

#[test]
fn example_policy() {
    let p = example();
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("alice", "lookup_customer", Some("allow")),
        ("alice", "search_tickets", Some("allow")),
        // Not in the group.
        ("bob", "lookup_customer", Some("default-deny")),
        // Not in the data.
        ("alice", "admin_panel", Some("default-deny")),
        // Allowed by the data, refused by deny.
        ("alice", "delete_customer", Some("deny")),
        ("root", "delete_customer", Some("deny")),
    ];
    for (who, tool, want) in cases {
        let v = call(&p, who, tool, json!({}));
        match *want {
            Some("allow") => assert_allowed(&v),
            Some(rule) => {
                assert_unknown(&v, &format!("Unknown tool: {tool}"), rule);
            }
            None => unreachable!(),
        }
    }
    let v = call(&p, "alice", "delete_customer", json!({}));
    let reason = assert_unknown(&v, "Unknown tool: delete_customer", "deny");
    assert_eq!(
        reason,
        r#"data.portcullis.deny refuses "alice" calling tools/call "delete_customer": erasure is never allowed"#
    );
    let v = call(&p, "bob", "lookup_customer", json!({}));
    let reason = assert_unknown(&v, "Unknown tool: lookup_customer", "default-deny");
    assert_eq!(
        reason,
        r#"nothing allows "bob" calling tools/call "lookup_customer": data.portcullis.allow is false"#
    );
}

#[test]
fn both_v1_forms_parse() {
    let body = r#"
        allow if {
            some g in input.principal.groups
            g == "support"
        }
        deny contains "admins only" if { input.tool == "admin"; not "admins" in input.principal.groups }
    "#;
    for header in [
        "package portcullis\n",
        "package portcullis\nimport rego.v1\n",
    ] {
        let p = policy(&format!("{header}{body}"));
        assert_allowed(&call(&p, "alice", "anything", json!({})));
        assert_unknown(
            &call(&p, "alice", "admin", json!({})),
            "Unknown tool: admin",
            "deny",
        );
        assert!(call(&p, "root", "admin", json!({})).is_allow());
        assert_unknown(
            &call(&p, "bob", "anything", json!({})),
            "Unknown tool: anything",
            "default-deny",
        );
    }
}

#[test]
fn groups_claims_route_and_method() {
    let p = policy(
        r#"package portcullis
        allow if { input.principal.claims.mfa == true; input.principal.claims.level >= 3; input.tool == "mfa_only" }
        allow if { input.principal.subject == "bob"; input.tool == "bobs" }
        allow if { input.server == "crm"; input.tunnel == "tun-a"; input.tool == "routed" }
        allow if { input.method == "prompts/get"; input.prompt == "greet" }
        allow if { input.method == "resources/read"; startswith(input.resource, "file:///pub/") }
        "#,
    );
    assert_allowed(&call(&p, "alice", "mfa_only", json!({})));
    assert!(!call(&p, "root", "mfa_only", json!({})).is_allow());
    assert_allowed(&call(&p, "bob", "bobs", json!({})));
    assert!(!call(&p, "alice", "bobs", json!({})).is_allow());
    // testing::context routes to server "crm" on tunnel "tun-a".
    assert_allowed(&call(&p, "bob", "routed", json!({})));
    let get = |method: &str, params: Value| {
        Rego::decide(
            &p,
            &request(method, "bob"),
            &testing::request(method, params),
        )
    };
    assert!(get("prompts/get", json!({"name": "greet"})).is_allow());
    assert!(!get("prompts/get", json!({"name": "other"})).is_allow());
    // `input.tool` is absent for a prompt.
    assert!(!get("tools/call", json!({"name": "greet"})).is_allow());
    assert!(get("resources/read", json!({"uri": "file:///pub/a"})).is_allow());
    assert!(!get("resources/read", json!({"uri": "file:///etc/passwd"})).is_allow());
}

#[test]
fn arguments_and_data() {
    let p = policy_with(json!({
        "policy": r#"package portcullis
        allow if {
            input.tool == "issue_refund"
            input.arguments.amount <= data.limits.refund
            input.arguments.currency in data.currencies
        }"#,
        "data": r#"{"limits": {"refund": 100}, "currencies": ["EUR", "USD"]}"#,
    }));
    let cases = [
        (r#"{"amount": 100, "currency": "EUR"}"#, true),
        (r#"{"amount": 99.5, "currency": "USD"}"#, true),
        (r#"{"amount": 1e2, "currency": "USD"}"#, true),
        (r#"{"amount": 101, "currency": "EUR"}"#, false),
        (r#"{"amount": "50", "currency": "EUR"}"#, false),
        (r#"{"amount": 50, "currency": "GBP"}"#, false),
        (r#"{"currency": "EUR"}"#, false),
        (r#"{"amount": {"amount": 5}, "currency": "EUR"}"#, false),
        // Numbers the interpreter would round are refused.
        (
            r#"{"amount": 100.00000000000000001, "currency": "EUR"}"#,
            false,
        ),
        (r#"{"amount": 1e400, "currency": "EUR"}"#, false),
        (
            r#"{"amount": 18446744073709551616, "currency": "EUR"}"#,
            false,
        ),
    ];
    for (args, allowed) in cases {
        let v = call_text(&p, "issue_refund", args);
        assert_eq!(v.is_allow(), allowed, "{args}: {v:?}");
    }
    let v = call_text(
        &p,
        "issue_refund",
        r#"{"amount": 100.00000000000000001, "currency": "EUR"}"#,
    );
    let reason = assert_unknown(&v, "Unknown tool: issue_refund", "default-deny");
    assert!(reason.contains("100.00000000000000001"), "{reason}");
    // Duplicate argument keys never reach the policy.
    let v = call_text(
        &p,
        "issue_refund",
        r#"{"amount": 1, "amount": 900, "currency": "EUR"}"#,
    );
    assert_eq!(v.denial().map(|d| d.code), Some(-32600), "{v:?}");
}

#[test]
fn exact_numbers() {
    for n in [
        "0",
        "-0",
        "-0.0",
        "100",
        "1e2",
        "12.5",
        "0.1",
        "1.25e-2",
        "-7",
        "18446744073709551615",
        "-9223372036854775808",
        "2.5E3",
    ] {
        assert_eq!(input::inexact_number(&format!("[{n}]")), None, "{n}");
    }
    for n in [
        "100.00000000000000001",
        "1e400",
        "18446744073709551616",
        "0.1000000000000000000001",
        "1e-400",
        "-9223372036854775809",
    ] {
        assert_eq!(
            input::inexact_number(&format!(r#"{{"a": "1e400 \" 5", "b": [{n}]}}"#)),
            Some(n),
            "{n}"
        );
    }
}

#[test]
fn deny_overrides_allow_and_any_deny_value_refuses() {
    let cases = [
        (r#"deny contains "a" if true"#, Some("a")),
        (
            r#"deny contains msg if { msg := sprintf("tool %s", [input.tool]) }"#,
            Some("tool t"),
        ),
        ("deny if true", Some("data.portcullis.deny is true")),
        (r#"deny := "just no""#, Some("just no")),
        (r#"deny := ["b", "a", "b"]"#, Some("a; b")),
        ("deny := {1}", Some("1")),
        ("deny := []", None),
        ("deny if false", None),
        ("default deny := false", None),
        (r#"deny contains "a" if false"#, None),
    ];
    for (rule, reasons) in cases {
        let p = policy(&format!("package portcullis\nallow := true\n{rule}\n"));
        let v = call(&p, "bob", "t", json!({}));
        match reasons {
            None => assert_allowed(&v),
            Some(want) => {
                let reason = assert_unknown(&v, "Unknown tool: t", "deny");
                assert!(reason.ends_with(want), "{rule}: {reason}");
            }
        }
    }
    // An object or a number is no set of reasons: refused as an error.
    for rule in [
        r#"deny := {"a": 1} if input.tool == "t""#,
        "deny := 3 if input.tool == \"t\"",
    ] {
        let p = policy(&format!("package portcullis\nallow := true\n{rule}\n"));
        let reason = assert_unknown(&call(&p, "bob", "t", json!({})), "Unknown tool: t", "error");
        assert!(reason.contains("not a set of reasons"), "{rule}: {reason}");
    }
}

#[test]
fn only_true_allows() {
    for (rule, why) in [
        (
            "allow := \"yes\"",
            "data.portcullis.allow is \"yes\", not true",
        ),
        ("allow := 1", "data.portcullis.allow is 1, not true"),
        (
            "allow := [true]",
            "data.portcullis.allow is [true], not true",
        ),
        (
            "allow if input.nope == 1",
            "data.portcullis.allow is undefined",
        ),
        ("default allow := false", "data.portcullis.allow is false"),
    ] {
        let p = policy(&format!("package portcullis\n{rule}\n"));
        let reason = assert_unknown(
            &call(&p, "bob", "t", json!({})),
            "Unknown tool: t",
            "default-deny",
        );
        assert!(reason.ends_with(why), "{rule}: {reason}");
    }
}

#[test]
fn evaluation_errors_fail_closed() {
    // Each rule errors only on some arguments, so `init` accepts it.
    let cases = [
        (
            "allow if startswith(input.arguments.x, \"a\")",
            json!({"x": 42}),
            "policy.rego:2:",
        ),
        (
            "allow if input.arguments.x / input.arguments.y > 0",
            json!({"x": 1, "y": 0}),
            "divide by zero",
        ),
        (
            "allow if input.arguments.x + 1 > 0",
            json!({"x": "1"}),
            "expects numeric argument",
        ),
        (
            "allow := true\ndeny contains x if { x := input.arguments.x; x > 2 }\ndeny contains x if { x := upper(input.arguments.x) }",
            json!({"x": 3}),
            "data.portcullis.deny",
        ),
        (
            "allow := true\nannotations := input.arguments",
            json!({"k": [1]}),
            "values are strings, booleans or counts",
        ),
        (
            "allow := true\nannotations := input.arguments",
            json!({"k": -1}),
            "counts are non-negative integers",
        ),
        (
            "allow := true\nannotations := input.arguments",
            json!({"rule": "x"}),
            "reserved",
        ),
    ];
    for (rules, args, want) in cases {
        let p = policy(&format!("package portcullis\n{rules}\n"));
        let v = call(&p, "bob", "t", args.clone());
        let reason = assert_unknown(&v, "Unknown tool: t", "error");
        assert!(reason.contains("fail closed"), "{rules}: {reason}");
        assert!(reason.contains(want), "{rules} {args}: {reason}");
    }
}

#[test]
fn annotations_reach_the_audit() {
    let p = policy(
        r#"package portcullis
        allow if input.tool == "a"
        annotations := {"team": "billing", "args": count(input.arguments), "mfa": false}
        "#,
    );
    let v = call(&p, "bob", "a", json!({"x": 1, "y": 2}));
    assert_allowed(&v);
    assert_eq!(v.label("team"), Some("billing"));
    assert_eq!(v.label("mfa"), Some("false"));
    assert_eq!(v.count("args"), Some(2));
    // On refusals too.
    let v = call(&p, "bob", "b", json!({}));
    assert_unknown(&v, "Unknown tool: b", "default-deny");
    assert_eq!(v.label("team"), Some("billing"));
}

// ---------------------------------------------------------------------------
// Look-alike names
// ---------------------------------------------------------------------------

const LOOKALIKE_POLICY: &str = r#"package portcullis
allow if "admins" in input.principal.groups
allow if input.tool == "lookup_customer"
deny contains "no erasure" if portcullis.like(input.name, "delete_*")
deny contains "no purge" if input.canonical == portcullis.canonical("Purge")
"#;

#[test]
fn lookalikes_of_denied_names_are_refused() {
    let p = policy(LOOKALIKE_POLICY);
    for name in [
        "delete_user",
        "DELETE_user",
        "delete\u{200B}_user",
        "\u{FF44}\u{FF45}\u{FF4C}\u{FF45}\u{FF54}\u{FF45}_user",
        "\u{1D41D}\u{1D41E}\u{1D425}\u{1D41E}\u{1D42D}\u{1D41E}_user",
        "d\u{0435}lete_user",
        " delete_user",
        "purge",
        "PURGE",
        "p\u{0443}rge",
    ] {
        let v = call(&p, "root", name, json!({}));
        let d = v.denial().unwrap_or_else(|| panic!("{name:?} allowed"));
        assert_eq!(d.public_message, format!("Unknown tool: {name}"));
    }
    assert_allowed(&call(&p, "root", "read_user", json!({})));
}

#[test]
fn lookalikes_of_allowed_names_are_not_allowed() {
    let p = policy(LOOKALIKE_POLICY);
    assert_allowed(&call(&p, "bob", "lookup_customer", json!({})));
    // An ASCII case variant is another name: compared exactly.
    for name in [
        "Lookup_Customer",
        "lookup_customer ",
        "l\u{043E}okup_customer",
        "\u{FF4C}ookup_customer",
    ] {
        let v = call(&p, "bob", name, json!({}));
        assert!(!v.is_allow(), "{name:?}: {v:?}");
    }
    // Not canonical: never allowed, even by the broadest rule.
    let v = call(&p, "root", "r\u{0435}ad_user", json!({}));
    let reason = assert_unknown(&v, "Unknown tool: r\u{0435}ad_user", "default-deny");
    assert!(reason.contains("canonical"), "{reason}");
}

#[test]
fn the_input_shows_canonical_forms() {
    let p = policy(
        r#"package portcullis
        allow if { input.lookalike; input.canonical == "lookup" }
        allow if { not input.lookalike; input.canonical == "lookup"; input.name == "LOOKUP" }
        "#,
    );
    // Allowed by the rule, refused by the SDK: not canonical.
    assert!(!call(&p, "bob", "l\u{043E}\u{043E}kup", json!({})).is_allow());
    assert!(call(&p, "bob", "LOOKUP", json!({})).is_allow());
}

// ---------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------

fn list_response(p: &Policy, method: &str, who: &str, result: Value) -> Verdict {
    let c = ctx(
        Direction::ToClient,
        MessageKind::Response,
        Some(method),
        who,
    );
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
    Rego::decide(p, &c, &msg)
}

#[test]
fn lists_show_what_the_principal_may_call() {
    let p = policy(
        r#"package portcullis
        may_refund if { "support" in input.principal.groups; input.tool == "issue_refund" }
        allow if { may_refund; input.listing }
        allow if { may_refund; input.arguments.amount <= 100 }
        allow if { "support" in input.principal.groups; input.tool == "lookup" }
        allow if input.tool == "public"
        deny contains "no" if portcullis.like(input.name, "delete_*")
        deny contains "big" if input.arguments.amount > 1000
        "#,
    );
    let tools = json!({"tools": [
        {"name": "lookup"}, {"name": "issue_refund"}, {"name": "public"},
        {"name": "delete_public"}, {"name": "Lookup"}, {"name": "l\u{043E}okup"}, {"name": "other"}, {"title": "x"}
    ], "nextCursor": "c"});
    let v = list_response(&p, "tools/list", "alice", tools.clone());
    assert_eq!(
        listed(&v, "tools", "name"),
        ["lookup", "issue_refund", "public"]
    );
    assert_eq!(v.count("hidden"), Some(5));
    let v = list_response(&p, "tools/list", "bob", tools);
    assert_eq!(listed(&v, "tools", "name"), ["public"]);
    // The call itself is still decided with its arguments.
    assert_allowed(&call(&p, "alice", "issue_refund", json!({"amount": 100})));
    assert!(!call(&p, "alice", "issue_refund", json!({"amount": 101})).is_allow());
    assert!(!call(&p, "alice", "issue_refund", json!({})).is_allow());
    // Prompts and resources too.
    let p = policy(
        r#"package portcullis
        allow if input.prompt == "greet"
        allow if startswith(input.resource, "file:///pub/")"#,
    );
    let v = list_response(
        &p,
        "prompts/list",
        "bob",
        json!({"prompts": [{"name": "greet"}, {"name": "x"}]}),
    );
    assert_eq!(listed(&v, "prompts", "name"), ["greet"]);
    let v = list_response(
        &p,
        "resources/list",
        "bob",
        json!({"resources": [{"uri": "file:///pub/a"}, {"uri": "file:///etc/x"}]}),
    );
    assert_eq!(listed(&v, "resources", "uri"), ["file:///pub/a"]);
}

#[test]
fn a_listing_that_errors_hides_the_entry() {
    let p =
        policy("package portcullis\nallow if startswith(input.principal.claims.level, \"a\")\n");
    let v = list_response(&p, "tools/list", "alice", json!({"tools": [{"name": "a"}]}));
    assert!(listed(&v, "tools", "name").is_empty());
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[track_caller]
fn init_error(cfg: Value, want: &[&str]) {
    let err = match config::parse(&cfg.to_string()) {
        Ok(_) => panic!("accepted: {cfg}"),
        Err(e) => e,
    };
    assert!(err.starts_with("rego: invalid config: "), "{err}");
    for w in want {
        assert!(err.contains(w), "{err:?} lacks {w:?}");
    }
}

#[test]
fn init_errors() {
    init_error(json!({}), &["`policy`", "`modules`"]);
    init_error(
        json!({"policy": "package portcullis\nallow := true", "nope": 1}),
        &["unknown field `nope`"],
    );
    // Parse errors name the module, line and column.
    init_error(
        json!({"policy": "package portcullis\n\nallow if {\n  input.x == \n}\n"}),
        &["policy.rego:5:1: expecting expression"],
    );
    init_error(
        json!({"modules": {"authz.rego": "package portcullis\nallow { true }\n"}}),
        &["authz.rego:2:7", "`if` keyword is required"],
    );
    // No decision rule.
    init_error(
        json!({"modules": {"a.rego": "package other\nallow := true\n", "b.rego": "package portcullis\nx := 1\n"}}),
        &["no module defines data.portcullis.allow", "a.rego, b.rego"],
    );
    init_error(
        json!({"policy": "package portcullis.deny\nx := 1\n", "modules": {"m.rego": "package portcullis\nallow := true"}}),
        &[
            "package portcullis.deny",
            "must be a rule of package portcullis",
        ],
    );
    // What only evaluation finds.
    init_error(
        json!({"policy": "package portcullis\nallow if nosuch(input.x)\n"}),
        &["policy.rego:2:16: could not find function nosuch"],
    );
    init_error(
        json!({"policy": "package portcullis\nallow := true\nallow := false\n"}),
        &["policy.rego:3:1", "conflicts"],
    );
    // Data.
    init_error(
        json!({"policy": "package portcullis\nallow := true", "data": [1]}),
        &["data: must be an object"],
    );
    init_error(
        json!({"policy": "package portcullis\nallow := true", "data": "{nope"}),
        &["data: not JSON"],
    );
    init_error(
        json!({"policy": "package portcullis\nallow := true", "data": {"portcullis": {"allow": true}}}),
        &["data: `portcullis`"],
    );
    init_error(
        json!({"policy": "package portcullis\nallow := true", "modules": {"policy.rego": "package x"}}),
        &["policy.rego"],
    );
    init_error(
        json!({"policy": "package portcullis\nallow := true", "open_methods": [""]}),
        &["open_methods[0] is an empty pattern"],
    );
}

#[test]
fn modules_share_the_package() {
    let p = policy_with(json!({"modules": {
        "main.rego": "package portcullis\nimport data.lib\nallow if lib.is_support(input.principal)\n",
        "lib.rego": "package lib\nis_support(p) if \"support\" in p.groups\n",
    }}));
    assert_allowed(&call(&p, "alice", "x", json!({})));
    assert!(!call(&p, "bob", "x", json!({})).is_allow());
}

/// The benchmark's policy (`src/cli/bench/plugins.rs`): 18 rules for other
/// teams, the refund rule, the erasure deny. Reports the native cost per
/// decision with `cargo test -p rego --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_decisions() {
    let mut rego = String::from("package portcullis\n\n");
    for i in 0..18 {
        rego.push_str(&format!(
            "allow if {{\n    \"team-{i}\" in input.principal.groups\n    input.tool == \"tool_{i}\"\n    input.arguments.region == \"eu\"\n}}\n\n"
        ));
    }
    rego.push_str("allow if {\n    \"support\" in input.principal.groups\n    input.tool == \"issue_refund\"\n    input.arguments.amount <= 100\n}\n\n");
    rego.push_str("deny contains \"erasure\" if portcullis.like(input.name, \"delete_*\")\n");
    let p = policy(&rego);
    let args =
        json!({"customer_id": "C-1001", "amount": 80, "reason": "duplicate charge on order 7731"});
    let msg = testing::request(
        "tools/call",
        json!({"name": "issue_refund", "arguments": args}),
    );
    let c = request("tools/call", "alice");
    assert!(Rego::decide(&p, &c, &msg).is_allow());
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(Rego::decide(&p, &c, std::hint::black_box(&msg)));
    }
    println!(
        "rego: {:.1} µs per decision",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
