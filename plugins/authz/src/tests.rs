//! Unit tests, run natively with `cargo test` (no host imports are called).

use portcullis_plugin_sdk::testing::conformance::listed;
use portcullis_plugin_sdk::{Direction, MessageKind, Value, json, testing};

use super::*;

const EXAMPLE: &str = r#"{
  "rules": [
    {"id": "support-read", "effect": "allow", "groups": ["support"], "tools": ["lookup_customer", "search_tickets"]},
    {"id": "support-refund", "effect": "allow", "groups": ["support"], "tools": ["issue_refund"],
     "when": [{"arg": "amount", "op": "lte", "value": 100}]},
    {"id": "no-erasure", "effect": "deny", "tools": ["delete_*"]}
  ],
  "open_methods": ["initialize", "ping", "notifications/*", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "logging/setLevel", "completion/complete"]
}"#;

fn policy(text: &str) -> Policy {
    config::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// A context for `who`: alice is in `support`, root in `admins` and
/// `support`, anyone else in no group.
fn ctx(direction: Direction, kind: MessageKind, method: Option<&str>, who: &str) -> Context {
    let groups: &[&str] = match who {
        "alice" => &["support"],
        "root" => &["admins", "support"],
        _ => &[],
    };
    testing::context(direction, kind, method, who, groups)
}

fn request(method: &str, who: &str) -> Context {
    ctx(Direction::ToServer, MessageKind::Request, Some(method), who)
}

/// Decides a `tools/call` of `tool` with `args` by `who`.
fn call(p: &Policy, who: &str, tool: &str, args: Value) -> Verdict {
    let msg = testing::request("tools/call", json!({"name": tool, "arguments": args}));
    Authz::decide(p, &request("tools/call", who), &msg)
}

/// The SDK's conformance fixture (`testing::conformance`) as authz rules.
fn fixture(open_methods: Option<&[&str]>) -> Policy {
    use portcullis_plugin_sdk::testing::conformance as c;
    let mut cfg = json!({"rules": [
        {"id": c::ALLOW_ID, "effect": "allow", "groups": [c::GROUP],
         "tools": [c::TOOL, c::PROMPT, c::RESOURCES]},
        {"id": c::DENY_ID, "effect": "deny", "tools": [c::DENIED]}
    ]});
    if let Some(methods) = open_methods {
        cfg["open_methods"] = json!(methods);
    }
    policy(&cfg.to_string())
}

portcullis_plugin_sdk::authorizer_conformance!(fixture);

#[track_caller]
fn assert_allowed(v: &Verdict, rule: &str) {
    assert!(v.is_allow(), "expected allow, got {v:?}");
    assert_eq!(v.label("rule"), Some(rule));
}

#[track_caller]
fn assert_unknown(v: &Verdict, public: &str, rule: &str) {
    let d = v
        .denial()
        .unwrap_or_else(|| panic!("expected deny, got {v:?}"));
    assert_eq!(d.code, -32602);
    assert_eq!(d.public_message, public);
    assert_eq!(v.label("rule"), Some(rule), "{v:?}");
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

#[test]
fn example_policy() {
    let p = policy(EXAMPLE);
    assert_allowed(
        &call(&p, "alice", "lookup_customer", json!({})),
        "support-read",
    );
    assert_allowed(
        &call(&p, "alice", "issue_refund", json!({"amount": 100})),
        "support-refund",
    );
    assert_unknown(
        &call(&p, "alice", "issue_refund", json!({"amount": 101})),
        "Unknown tool: issue_refund",
        "default-deny",
    );
    // Not in the group.
    assert_unknown(
        &call(&p, "bob", "lookup_customer", json!({})),
        "Unknown tool: lookup_customer",
        "default-deny",
    );
    let v = call(&p, "bob", "lookup_customer", json!({}));
    assert_eq!(
        v.denial().unwrap().private_reason,
        r#"no rule allows "bob" to call "lookup_customer""#
    );
}

#[test]
fn default_deny() {
    let p = policy(r#"{"rules": []}"#);
    assert_unknown(
        &call(&p, "root", "anything", json!({})),
        "Unknown tool: anything",
        "default-deny",
    );
    let v = Authz::decide(
        &p,
        &request("prompts/get", "root"),
        &testing::request("prompts/get", json!({"name": "greet"})),
    );
    assert_unknown(&v, "Unknown prompt: greet", "default-deny");
    let v = Authz::decide(
        &p,
        &request("resources/read", "root"),
        &testing::request("resources/read", json!({"uri": "file:///etc/passwd"})),
    );
    assert_unknown(&v, "Unknown resource: file:///etc/passwd", "default-deny");
    // An allow rule without selectors allows every call.
    let p = policy(r#"{"rules": [{"id": "all", "effect": "allow"}]}"#);
    assert!(call(&p, "root", "t", json!({})).is_allow());
}

#[test]
fn deny_overrides_allow() {
    let p = policy(
        r#"{"rules": [
            {"id": "all", "effect": "allow", "tools": ["*"]},
            {"id": "no-erasure", "effect": "deny", "tools": ["delete_*"]},
            {"id": "no-root", "effect": "deny", "subjects": ["root"]}
        ]}"#,
    );
    assert_allowed(&call(&p, "alice", "delete", json!({})), "all");
    let v = call(&p, "alice", "delete_customer", json!({}));
    assert_unknown(&v, "Unknown tool: delete_customer", "no-erasure");
    assert!(v.denial().unwrap().private_reason.contains("no-erasure"));
    assert_unknown(
        &call(&p, "root", "lookup", json!({})),
        "Unknown tool: lookup",
        "no-root",
    );
}

#[test]
fn selectors() {
    let p = policy(
        r#"{"rules": [
            {"id": "subj", "effect": "allow", "subjects": ["svc-*"], "tools": ["a"]},
            {"id": "grp", "effect": "allow", "groups": ["admins", "ops"], "tools": ["b"]},
            {"id": "srv", "effect": "allow", "servers": ["c*"], "tunnels": ["tun-?", "tun-*"], "tools": ["c"]},
            {"id": "srv2", "effect": "allow", "servers": ["billing"], "tools": ["d"]},
            {"id": "prompts", "effect": "allow", "methods": ["prompts/*"], "tools": ["e"]},
            {"id": "files", "effect": "allow", "methods": ["resources/read"], "tools": ["file:///pub/*"]}
        ]}"#,
    );
    assert_allowed(&call(&p, "svc-x", "a", json!({})), "subj");
    assert!(!call(&p, "alice", "a", json!({})).is_allow());
    assert_allowed(&call(&p, "root", "b", json!({})), "grp");
    assert!(!call(&p, "alice", "b", json!({})).is_allow());
    assert_allowed(&call(&p, "anyone", "c", json!({})), "srv");
    assert!(!call(&p, "anyone", "d", json!({})).is_allow());
    // `methods` restricts which call method the rule covers.
    assert!(!call(&p, "anyone", "e", json!({})).is_allow());
    let v = Authz::decide(
        &p,
        &request("prompts/get", "anyone"),
        &testing::request("prompts/get", json!({"name": "e"})),
    );
    assert_allowed(&v, "prompts");
    let read = |uri: &str| {
        Authz::decide(
            &p,
            &request("resources/read", "anyone"),
            &testing::request("resources/read", json!({"uri": uri})),
        )
    };
    assert_allowed(&read("file:///pub/x/y"), "files");
    assert_unknown(
        &read("file:///etc/passwd"),
        "Unknown resource: file:///etc/passwd",
        "default-deny",
    );
}

// ---------------------------------------------------------------------------
// Argument conditions
// ---------------------------------------------------------------------------

/// A policy allowing tool `t` when the one condition holds.
fn when(cond: Value) -> Policy {
    policy(
        &json!({"rules": [{"id": "r", "effect": "allow", "tools": ["t"], "when": [cond]}]})
            .to_string(),
    )
}

#[track_caller]
fn check(cond: Value, cases: &[(Value, bool)]) {
    let p = when(cond.clone());
    for (args, want) in cases {
        let got = call(&p, "u", "t", args.clone()).is_allow();
        assert_eq!(got, *want, "{cond} with arguments {args}");
    }
}

/// Decides a `tools/call` of `t` by `u` whose arguments are `args`, as
/// written (numbers that a `json!` value would round).
fn call_text(p: &Policy, args: &str) -> Verdict {
    let msg = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{args}}}}}"#
    );
    Authz::decide(p, &request("tools/call", "u"), &msg)
}

#[test]
fn numbers_compare_as_written() {
    // (op, value, argument text, allowed by an allow rule with the condition)
    let cases: &[(&str, Value, &str, bool)] = &[
        ("lte", json!(100), "100.00000000000000001", false),
        ("gt", json!(100), "100.00000000000000001", true),
        ("lt", json!(100), "99.999999999999999999", true),
        ("gte", json!(100), "99.999999999999999999", false),
        ("eq", json!(100), "1e2", true),
        ("eq", json!(100), "100.000", true),
        ("eq", json!(100), "100.00000000000000001", false),
        ("ne", json!(100), "100.00000000000000001", true),
        ("eq", json!(0), "-0", true),
        ("eq", json!(0), "-0.0", true),
        ("gt", json!(0), "1e-400", true),
        ("lte", json!(0), "1e-400", false),
        ("lt", json!(0), "-1e-400", true),
        ("eq", json!(0.3), "0.30000000000000004", false),
        ("lt", json!(0.3), "0.30000000000000004", false),
        ("gt", json!(0.3), "0.30000000000000004", true),
        (
            "lte",
            json!(18446744073709551615u64),
            "18446744073709551616",
            false,
        ),
        ("in", json!([1, 2, 100]), "100.00000000000000001", false),
        ("in", json!([1, 2, 100]), "1E2", true),
        ("not_in", json!([1, 2, 100]), "100.00000000000000001", true),
        ("eq", json!([1, {"a": 2}]), r#"[1.0, {"a": 2e0}]"#, true),
        (
            "eq",
            json!([1, {"a": 2}]),
            r#"[1, {"a": 2.000000000000000001}]"#,
            false,
        ),
        // Beyond the exponent limit: never compared, never allowed.
        ("gte", json!(0), "0e-200000", false),
        ("lt", json!(1), "1e-200000", false),
        ("ne", json!(1), "1e-200000", false),
        // Out of f64 range: not even parsed, refused as malformed.
        ("gt", json!(0), "1e309", false),
    ];
    for (op, value, arg, want) in cases {
        let p = when(json!({"arg": "n", "op": op, "value": value}));
        let v = call_text(&p, &format!(r#"{{"n": {arg}}}"#));
        assert_eq!(v.is_allow(), *want, "{op} {value} with {arg}: {v:?}");
    }
    // In a deny rule, what cannot be compared makes the condition hold.
    let p = policy(
        r#"{"rules": [{"id": "all", "effect": "allow"},
            {"id": "big", "effect": "deny", "when": [{"arg": "n", "op": "gt", "value": 100}]}]}"#,
    );
    for (arg, denied) in [
        ("100", false),
        ("100.00000000000000001", true),
        ("1e-200000", true),
        ("[100.1]", true),
    ] {
        let v = call_text(&p, &format!(r#"{{"n": {arg}}}"#));
        assert_eq!(v.is_allow(), !denied, "{arg}: {v:?}");
    }
    // Paths through arrays and nested objects read the number as written.
    let p = when(json!({"arg": "items.1.price", "op": "lte", "value": 10}));
    assert!(call_text(&p, r#"{"items": [{"price": 99}, {"price": 10.0}]}"#).is_allow());
    let v = call_text(
        &p,
        r#"{"items": [{"price": 1}, {"price": 10.000000000000000001}]}"#,
    );
    assert!(!v.is_allow(), "{v:?}");
}

#[test]
fn numeric_ops_and_type_confusion() {
    let cases = |lt: bool, eq: bool, gt: bool| {
        vec![
            (json!({"amount": 99}), lt),
            (json!({"amount": 100}), eq),
            (json!({"amount": 100.0}), eq),
            (json!({"amount": 100.5}), gt),
            (json!({"amount": -5}), lt),
            (json!({"amount": 18446744073709551615u64}), gt),
            // Type confusion: never a number.
            (json!({"amount": "100"}), false),
            (json!({"amount": "5"}), false),
            (json!({"amount": [5]}), false),
            (json!({"amount": {"value": 5}}), false),
            (json!({"amount": null}), false),
            (json!({"amount": true}), false),
            // Missing.
            (json!({}), false),
            (json!({"other": 5}), false),
        ]
    };
    check(
        json!({"arg": "amount", "op": "lt", "value": 100}),
        &cases(true, false, false),
    );
    check(
        json!({"arg": "amount", "op": "lte", "value": 100}),
        &cases(true, true, false),
    );
    check(
        json!({"arg": "amount", "op": "gt", "value": 100}),
        &cases(false, false, true),
    );
    check(
        json!({"arg": "amount", "op": "gte", "value": 100}),
        &cases(false, true, true),
    );
    // No arguments at all.
    let p = when(json!({"arg": "amount", "op": "lte", "value": 100}));
    let msg = testing::request("tools/call", json!({"name": "t"}));
    assert!(!Authz::decide(&p, &request("tools/call", "u"), &msg).is_allow());
}

#[test]
fn nested_paths() {
    check(
        json!({"arg": "refund.amount", "op": "lte", "value": 100}),
        &[
            (json!({"refund": {"amount": 50}}), true),
            (json!({"refund": {"amount": 500}}), false),
            // Same key, other nesting: only the exact path counts.
            (json!({"amount": 50, "refund": {}}), false),
            (json!({"refund.amount": 50}), false),
            (json!({"refund": {"x": {"amount": 50}}}), false),
            (json!({"refund": [{"amount": 50}]}), false),
            (json!({"refund": 50}), false),
        ],
    );
    check(
        json!({"arg": "items.0.sku", "op": "eq", "value": "A-1"}),
        &[
            (json!({"items": [{"sku": "A-1"}]}), true),
            (json!({"items": [{"sku": "B-2"}, {"sku": "A-1"}]}), false),
            (json!({"items": {"0": {"sku": "A-1"}}}), true),
            (json!({"items": []}), false),
        ],
    );
    check(
        json!({"arg": "items.00", "op": "present"}),
        &[
            (json!({"items": [1]}), false),
            (json!({"items": {"00": 1}}), true),
        ],
    );
}

#[test]
fn equality_ops() {
    check(
        json!({"arg": "mode", "op": "eq", "value": "read"}),
        &[
            (json!({"mode": "read"}), true),
            (json!({"mode": "Read"}), false),
            (json!({"mode": ["read"]}), false),
            (json!({}), false),
        ],
    );
    check(
        json!({"arg": "n", "op": "eq", "value": 1}),
        &[
            (json!({"n": 1}), true),
            (json!({"n": 1.0}), true),
            (json!({"n": "1"}), false),
            (json!({"n": true}), false),
        ],
    );
    check(
        json!({"arg": "opts", "op": "eq", "value": {"a": [1, 2]}}),
        &[
            (json!({"opts": {"a": [1, 2.0]}}), true),
            (json!({"opts": {"a": [1, 2], "b": 0}}), false),
        ],
    );
    check(
        json!({"arg": "mode", "op": "ne", "value": "write"}),
        &[
            (json!({"mode": "read"}), true),
            (json!({"mode": "write"}), false),
            // Missing, or another type: not a pass.
            (json!({}), false),
            (json!({"mode": ["write"]}), false),
            (json!({"mode": 5}), false),
        ],
    );
    check(
        json!({"arg": "env", "op": "in", "value": ["dev", "staging", 3]}),
        &[
            (json!({"env": "dev"}), true),
            (json!({"env": 3.0}), true),
            (json!({"env": "prod"}), false),
            (json!({"env": ["dev"]}), false),
            (json!({}), false),
        ],
    );
    check(
        json!({"arg": "env", "op": "not_in", "value": ["prod"]}),
        &[
            (json!({"env": "dev"}), true),
            (json!({"env": "prod"}), false),
            (json!({"env": ["prod"]}), false),
            (json!({"env": null}), false),
            (json!({}), false),
        ],
    );
}

#[test]
fn regex_present_absent() {
    check(
        json!({"arg": "email", "op": "regex", "value": r"[a-z]+@example\.com"}),
        &[
            (json!({"email": "bob@example.com"}), true),
            // Full match only.
            (json!({"email": "bob@example.com.evil"}), false),
            (json!({"email": "x bob@example.com"}), false),
            (json!({"email": "bob@example.com\n"}), false),
            (json!({"email": ["bob@example.com"]}), false),
            (json!({"email": 5}), false),
            (json!({}), false),
        ],
    );
    check(
        json!({"arg": "x", "op": "regex", "value": "a|ab"}),
        &[(json!({"x": "ab"}), true), (json!({"x": "abc"}), false)],
    );
    check(
        json!({"arg": "id", "op": "regex", "value": r"\d+"}),
        &[
            (json!({"id": "123"}), true),
            (json!({"id": "12a"}), false),
            // ASCII digits only.
            (json!({"id": "\u{0661}\u{0662}"}), false),
        ],
    );
    check(
        json!({"arg": "dry_run", "op": "present"}),
        &[
            (json!({"dry_run": true}), true),
            (json!({"dry_run": null}), true),
            (json!({}), false),
            (json!({"x": {"dry_run": true}}), false),
        ],
    );
    check(
        json!({"arg": "force", "op": "absent"}),
        &[
            (json!({}), true),
            (json!({"x": {"force": true}}), true),
            (json!({"force": false}), false),
        ],
    );
}

#[test]
fn all_conditions_must_hold() {
    let p = policy(
        r#"{"rules": [{"id": "r", "effect": "allow", "tools": ["t"], "when": [
            {"arg": "a", "op": "gte", "value": 1},
            {"arg": "b", "op": "eq", "value": "x"}]}]}"#,
    );
    assert!(call(&p, "u", "t", json!({"a": 1, "b": "x"})).is_allow());
    assert!(!call(&p, "u", "t", json!({"a": 1, "b": "y"})).is_allow());
    assert!(!call(&p, "u", "t", json!({"a": 0, "b": "x"})).is_allow());
}

#[test]
fn deny_conditions_cannot_be_dodged_by_type() {
    let p = policy(
        r#"{"rules": [
            {"id": "all", "effect": "allow", "tools": ["*"]},
            {"id": "big-refund", "effect": "deny", "tools": ["issue_refund"],
             "when": [{"arg": "amount", "op": "gt", "value": 1000}]}
        ]}"#,
    );
    assert_allowed(&call(&p, "u", "issue_refund", json!({"amount": 10})), "all");
    let big = call(&p, "u", "issue_refund", json!({"amount": 5000}));
    assert_unknown(&big, "Unknown tool: issue_refund", "big-refund");
    let sneaky = call(&p, "u", "issue_refund", json!({"amount": "5000"}));
    assert_unknown(&sneaky, "Unknown tool: issue_refund", "big-refund");
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Look-alikes
// ---------------------------------------------------------------------------

#[test]
fn lookalikes_of_denied_tools_are_denied() {
    let p = policy(
        r#"{"rules": [
            {"id": "all", "effect": "allow", "tools": ["*"]},
            {"id": "no-erasure", "effect": "deny", "tools": ["delete_*", "Purge"]}
        ]}"#,
    );
    for name in [
        "delete_user",
        "DELETE_USER",
        "Delete_User",
        "\u{200B}delete_user",
        "del\u{200C}ete\u{200D}_user",
        "delete\u{2060}_user\u{FEFF}",
        "ｄｅｌｅｔｅ_user",
        "ＤＥＬＥＴＥ＿ＵＳＥＲ",
        "d\u{0435}lete_user", // Cyrillic е
        "\u{1D41D}\u{1D41E}\u{1D425}\u{1D41E}\u{1D42D}\u{1D41E}_user", // bold
        "\u{24D3}elete_user", // circled
        "delete\u{00A0}_user",
        " delete_user ",
        "de1ete_user",
        "purge",
        "PURGE",
        "ｐｕｒｇｅ",
        "\u{0440}urge", // Cyrillic р
    ] {
        let v = call(&p, "u", name, json!({}));
        assert_unknown(&v, &format!("Unknown tool: {name}"), "no-erasure");
    }
    assert_allowed(&call(&p, "u", "undelete_user", json!({})), "all");
    // Allowed by `*`, but not canonical: refused by default, with the reason.
    let v = call(&p, "u", "l\u{043E}\u{043E}kup", json!({}));
    assert_unknown(&v, "Unknown tool: l\u{043E}\u{043E}kup", "default-deny");
    assert!(
        v.denial()
            .unwrap()
            .private_reason
            .contains("canonical form")
    );
}

#[test]
fn lookalikes_of_allowed_tools_are_denied() {
    let p = policy(EXAMPLE);
    assert_allowed(
        &call(&p, "alice", "lookup_customer", json!({})),
        "support-read",
    );
    for name in [
        "Lookup_Customer",
        "LOOKUP_CUSTOMER",
        "lookup\u{200B}_customer",
        "ｌｏｏｋｕｐ_customer",
        "lookup_customer ",
        "lookup_cust\u{043E}mer", // Cyrillic o
    ] {
        let v = call(&p, "alice", name, json!({}));
        assert_unknown(&v, &format!("Unknown tool: {name}"), "default-deny");
    }
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
    Authz::decide(p, &c, &msg)
}

#[test]
fn list_filtering() {
    let p = policy(EXAMPLE);
    let tools = json!({
        "tools": [
            {"name": "lookup_customer", "inputSchema": {"type": "object"}},
            {"name": "issue_refund"},
            {"name": "delete_customer"},
            {"name": "Lookup_Customer"},
            {"name": "admin_panel"},
            {"title": "nameless"}
        ],
    });
    let v = list_response(&p, "tools/list", "alice", tools);
    assert_eq!(
        listed(&v, "tools", "name"),
        ["lookup_customer", "issue_refund"]
    );
    assert_eq!(v.count("hidden"), Some(4));
}

#[test]
fn list_filtering_prompts_resources_and_conditional_denies() {
    let p = policy(
        r#"{"rules": [
            {"id": "prompts", "effect": "allow", "methods": ["prompts/get"], "tools": ["greet"]},
            {"id": "files", "effect": "allow", "methods": ["resources/read"], "tools": ["file:///pub/*"]},
            {"id": "all-tools", "effect": "allow", "methods": ["tools/call"], "tools": ["*"]},
            {"id": "big", "effect": "deny", "tools": ["refund"], "when": [{"arg": "amount", "op": "gt", "value": 5}]},
            {"id": "gone", "effect": "deny", "tools": ["drop_*"]}
        ]}"#,
    );
    let v = list_response(
        &p,
        "prompts/list",
        "u",
        json!({"prompts": [{"name": "greet"}, {"name": "refund"}], "nextCursor": "c"}),
    );
    assert_eq!(listed(&v, "prompts", "name"), ["greet"]);
    let v = list_response(
        &p,
        "resources/list",
        "u",
        json!({"resources": [{"uri": "file:///pub/a"}, {"uri": "file:///etc/x", "name": "greet"}]}),
    );
    assert_eq!(listed(&v, "resources", "uri"), ["file:///pub/a"]);
    // A conditional deny does not hide; an unconditional one does.
    let v = list_response(
        &p,
        "tools/list",
        "u",
        json!({"tools": [{"name": "refund"}, {"name": "DROP_table"}, {"name": "x"}]}),
    );
    assert_eq!(listed(&v, "tools", "name"), ["refund", "x"]);
    assert_eq!(v.count("hidden"), Some(1));
}

// ---------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------

#[track_caller]
fn init_error(text: &str, want: &[&str]) {
    let err = config::parse(text).expect_err(text);
    for w in want {
        assert!(err.contains(w), "{err:?} lacks {w:?}");
    }
}

#[test]
fn init_errors() {
    init_error("{}", &["missing field `rules`"]);
    init_error("nope", &["invalid config"]);
    init_error(r#"{"rules": [], "extra": 1}"#, &["unknown field `extra`"]);
    init_error(
        r#"{"rules": [], "open_methods": [""]}"#,
        &["open_methods[0]"],
    );
    init_error(
        r#"{"rules": [{"id": "a", "effect": "allow", "tool": ["x"]}]}"#,
        &["rules[0] (\"a\")", "unknown field `tool`"],
    );
    init_error(
        r#"{"rules": [{"id": "ok", "effect": "allow"}, {"id": "b", "effect": "permit"}]}"#,
        &["rules[1] (\"b\")", "unknown variant `permit`"],
    );
    init_error(
        r#"{"rules": [{"effect": "allow"}]}"#,
        &["rules[0]", "missing field `id`"],
    );
    init_error(
        r#"{"rules": [{"id": "", "effect": "allow"}]}"#,
        &["`id` is empty"],
    );
    init_error(
        r#"{"rules": [{"id": "a", "effect": "allow"}, {"id": "a", "effect": "deny"}]}"#,
        &["rules[1] (\"a\")", "duplicate rule id"],
    );
    init_error(
        r#"{"rules": [{"id": "a", "effect": "allow", "tools": []}]}"#,
        &["`tools` is an empty list"],
    );
    init_error(
        r#"{"rules": [{"id": "a", "effect": "allow", "groups": "support"}]}"#,
        &["rules[0] (\"a\")", "invalid type"],
    );
    init_error(
        r#"{"rules": [{"id": "a", "effect": "allow", "methods": ["tools/list"]}]}"#,
        &["methods[0]", "matches none"],
    );
    let cond =
        |c: &str| format!(r#"{{"rules": [{{"id": "r", "effect": "allow", "when": [{c}]}}]}}"#);
    init_error(
        &cond(r#"{"arg": "a", "op": "lte", "value": "100"}"#),
        &["rules[0] (\"r\")", "when[0]", "\"lte\" needs a number"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "in", "value": 1}"#),
        &["needs an array"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "eq"}"#),
        &["\"eq\" needs a value"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "present", "value": 1}"#),
        &["takes no value"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "like", "value": 1}"#),
        &["unknown variant `like`"],
    );
    init_error(
        &cond(r#"{"arg": "a..b", "op": "present"}"#),
        &["not a dotted path"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "regex", "value": "("}"#),
        &["invalid regex"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "regex", "value": "a)|(b"}"#),
        &["invalid regex"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "regex", "value": 5}"#),
        &["needs a string"],
    );
    init_error(
        &cond(r#"{"arg": "a", "op": "eq", "value": 1, "extra": 2}"#),
        &["unknown field `extra`"],
    );
    // `null` is a value.
    assert!(config::parse(&cond(r#"{"arg": "a", "op": "eq", "value": null}"#)).is_ok());
    assert!(config::parse(EXAMPLE).is_ok());
}

// ---------------------------------------------------------------------------
// Claim conditions
// ---------------------------------------------------------------------------

const CLAIMS: &str = r#"{
  "rules": [
    {"id": "support-dept", "effect": "allow", "tools": ["lookup_customer"],
     "when": [{"claim": "department", "op": "eq", "value": "support"}]},
    {"id": "strong-auth", "effect": "allow", "tools": ["issue_refund"],
     "when": [{"claim": "acr", "op": "in", "value": ["mfa", "phr"]},
              {"arg": "amount", "op": "lte", "value": 100}]},
    {"id": "no-contractors", "effect": "deny", "tools": ["*"],
     "when": [{"claim": "https://example.com/employment", "op": "eq", "value": "contractor"}]}
  ]
}"#;

/// A `tools/call` of `tool` by bob, whose token carried `claims`.
fn call_with_claims(p: &Policy, claims: Value, tool: &str, args: Value) -> Verdict {
    let mut c = request("tools/call", "bob");
    c.principal.claims = claims.to_string();
    let msg = testing::request("tools/call", json!({"name": tool, "arguments": args}));
    Authz::decide(p, &c, &msg)
}

#[test]
fn claim_conditions_decide_calls() {
    let p = policy(CLAIMS);
    let cases: &[(Value, &str, Value, Option<&str>)] = &[
        (
            json!({"department": "support"}),
            "lookup_customer",
            json!({}),
            Some("support-dept"),
        ),
        (
            json!({"department": "sales"}),
            "lookup_customer",
            json!({}),
            None,
        ),
        // A number is not the string: type confusion never allows.
        (json!({"department": 1}), "lookup_customer", json!({}), None),
        (json!({}), "lookup_customer", json!({}), None),
        (
            json!({"acr": "mfa"}),
            "issue_refund",
            json!({"amount": 50}),
            Some("strong-auth"),
        ),
        (
            json!({"acr": "mfa"}),
            "issue_refund",
            json!({"amount": 500}),
            None,
        ),
        (
            json!({"acr": "pwd"}),
            "issue_refund",
            json!({"amount": 50}),
            None,
        ),
        (
            json!({"department": "support", "https://example.com/employment": "contractor"}),
            "lookup_customer",
            json!({}),
            None,
        ),
    ];
    for (claims, tool, args, allowed_by) in cases {
        let v = call_with_claims(&p, claims.clone(), tool, args.clone());
        match allowed_by {
            Some(rule) => assert_allowed(&v, rule),
            None => assert!(v.denial().is_some(), "{claims} {tool} {args}: {v:?}"),
        }
    }
    // An API-key principal has no claims: `{}` from the host.
    assert!(
        call(&p, "alice", "lookup_customer", json!({}))
            .denial()
            .is_some()
    );
}

#[test]
fn claim_conditions_decide_what_lists_show() {
    let p = policy(CLAIMS);
    let list = json!({"tools": [{"name": "lookup_customer"}, {"name": "issue_refund"}]});
    let shown = |claims: Value| {
        let mut c = ctx(
            Direction::ToClient,
            MessageKind::Response,
            Some("tools/list"),
            "bob",
        );
        c.principal.claims = claims.to_string();
        let msg = json!({"jsonrpc": "2.0", "id": 1, "result": list}).to_string();
        listed(&Authz::decide(&p, &c, &msg), "tools", "name")
    };
    assert_eq!(shown(json!({"department": "support"})), ["lookup_customer"]);
    assert_eq!(shown(json!({"acr": "phr"})), ["issue_refund"]);
    assert!(
        shown(json!({"department": "support", "https://example.com/employment": "contractor"}))
            .is_empty()
    );
}

#[test]
fn a_condition_names_exactly_one_of_arg_and_claim() {
    for bad in [
        r#"{"rules": [{"id": "r", "effect": "allow", "when": [{"op": "present"}]}]}"#,
        r#"{"rules": [{"id": "r", "effect": "allow", "when": [{"arg": "a", "claim": "b", "op": "present"}]}]}"#,
        r#"{"rules": [{"id": "r", "effect": "allow", "when": [{"claim": "", "op": "present"}]}]}"#,
    ] {
        let e = config::parse(bad).unwrap_err();
        assert!(e.contains("when[0]"), "{e}");
    }
}
