//! Unit tests, run natively with `cargo test` (no host imports are called).

use portcullis_plugin_sdk::testing::conformance::listed;
use portcullis_plugin_sdk::{Direction, MessageKind, Value, json, testing};

use super::*;

/// The crate documentation's example.
const EXAMPLE: &str = r#"
@id("support-read")
permit(principal in Portcullis::Group::"support", action == Portcullis::Action::"tools/call", resource)
when { resource in [Portcullis::Tool::"lookup_customer", Portcullis::Tool::"search_tickets"] };

@id("support-refund")
permit(principal in Portcullis::Group::"support", action == Portcullis::Action::"tools/call",
       resource == Portcullis::Tool::"issue_refund")
when { context.arguments has amount && context.arguments.amount <= 100 };

@id("no-erasure")
forbid(principal, action, resource) when { resource.name like "delete_*" };
"#;

fn config(policies: &str) -> String {
    json!({ "policies": policies }).to_string()
}

fn engine(policies: &str) -> Engine {
    engine_with(json!({ "policies": policies }))
}

fn engine_with(cfg: Value) -> Engine {
    config::parse(&cfg.to_string()).unwrap_or_else(|e| panic!("{e}"))
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
fn call(e: &Engine, who: &str, tool: &str, args: Value) -> Verdict {
    let msg = testing::request("tools/call", json!({"name": tool, "arguments": args}));
    Cedar::decide(e, &request("tools/call", who), &msg)
}

/// The SDK's conformance fixture (`testing::conformance`) as Cedar policies.
fn fixture(open_methods: Option<&[&str]>) -> Engine {
    use portcullis_plugin_sdk::testing::conformance::{
        ALLOW_ID, DENIED, DENY_ID, GROUP, PROMPT, RESOURCES, TOOL,
    };
    let policies = format!(
        r#"@id("{ALLOW_ID}") permit(principal in Portcullis::Group::"{GROUP}", action, resource)
        when {{ resource.name == "{TOOL}" || resource.name == "{PROMPT}" || resource.name like "{RESOURCES}" }};
        @id("{DENY_ID}") forbid(principal, action, resource) when {{ resource.name like "{DENIED}" }};"#
    );
    let mut cfg = json!({ "policies": policies });
    if let Some(methods) = open_methods {
        cfg["open_methods"] = json!(methods);
    }
    engine_with(cfg)
}

portcullis_plugin_sdk::authorizer_conformance!(fixture);

#[track_caller]
fn assert_allowed(v: &Verdict, policy: &str) {
    assert!(v.is_allow(), "expected allow, got {v:?}");
    assert_eq!(v.label("policy"), Some(policy));
}

#[track_caller]
fn assert_unknown(v: &Verdict, public: &str, policy: &str) {
    let d = v
        .denial()
        .unwrap_or_else(|| panic!("expected deny, got {v:?}"));
    assert_eq!(d.code, -32602);
    assert_eq!(d.public_message, public);
    assert_eq!(v.label("policy"), Some(policy), "{v:?}");
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

#[test]
fn example_policy() {
    let e = engine(EXAMPLE);
    let cases: &[(&str, &str, Value, Option<&str>)] = &[
        ("alice", "lookup_customer", json!({}), Some("support-read")),
        (
            "alice",
            "search_tickets",
            json!({"q": "x"}),
            Some("support-read"),
        ),
        (
            "alice",
            "issue_refund",
            json!({"amount": 100}),
            Some("support-refund"),
        ),
        ("alice", "issue_refund", json!({"amount": 101}), None),
        // Not in the group.
        ("bob", "lookup_customer", json!({}), None),
        // Not named by any permit.
        ("alice", "admin_panel", json!({}), None),
        // The forbid wins over any permit; root is in support too.
        ("root", "delete_customer", json!({}), None),
    ];
    for (who, tool, args, want) in cases {
        let v = call(&e, who, tool, args.clone());
        match want {
            Some(policy) => assert_allowed(&v, policy),
            None => assert!(!v.is_allow(), "{who} {tool} {args}: {v:?}"),
        }
    }
    let v = call(&e, "bob", "lookup_customer", json!({}));
    assert_unknown(&v, "Unknown tool: lookup_customer", "default-deny");
    assert_eq!(
        v.denial().unwrap().private_reason,
        r#"no permit policy applies to "bob" calling tools/call "lookup_customer""#
    );
}

#[test]
fn permit_by_group_and_hierarchy() {
    let e = engine_with(json!({
        "policies": r#"
            @id("staff") permit(principal in Portcullis::Group::"staff", action, resource == Portcullis::Tool::"wiki");
            @id("admins") permit(principal in Portcullis::Group::"admins", action, resource);
        "#,
        // support ⊂ staff, given as a JSON string like a TOML ''' block.
        "entities": r#"[{"uid": {"type": "Portcullis::Group", "id": "support"}, "attrs": {},
                         "parents": [{"type": "Portcullis::Group", "id": "staff"}]}]"#
    }));
    assert_allowed(&call(&e, "alice", "wiki", json!({})), "staff");
    assert!(!call(&e, "alice", "other", json!({})).is_allow());
    assert!(!call(&e, "bob", "wiki", json!({})).is_allow());
    // Two permits apply: both named, sorted.
    assert_allowed(&call(&e, "root", "wiki", json!({})), "admins,staff");
    assert_allowed(&call(&e, "root", "other", json!({})), "admins");
}

#[test]
fn default_deny() {
    let e = engine("");
    assert_unknown(
        &call(&e, "root", "anything", json!({})),
        "Unknown tool: anything",
        "default-deny",
    );
    let v = Cedar::decide(
        &e,
        &request("prompts/get", "root"),
        &testing::request("prompts/get", json!({"name": "greet"})),
    );
    assert_unknown(&v, "Unknown prompt: greet", "default-deny");
    let v = Cedar::decide(
        &e,
        &request("resources/read", "root"),
        &testing::request("resources/read", json!({"uri": "file:///etc/passwd"})),
    );
    assert_unknown(&v, "Unknown resource: file:///etc/passwd", "default-deny");
    let e = engine("permit(principal, action, resource);");
    assert_allowed(&call(&e, "root", "t", json!({})), "policy0");
}

#[test]
fn refusal_is_indistinguishable_from_unknown_tool() {
    // A tool that is forbidden, one nothing permits, one whose arguments
    // fail, one that fails to evaluate, and one that does not exist at all:
    // the agent gets the same code and message shape, only the audit differs.
    let e = engine(&format!(
        "{EXAMPLE}\n@id(\"broken\") forbid(principal, action, resource == Portcullis::Tool::\"search_tickets\") when {{ context.arguments.q > 1 }};"
    ));
    let cases = [
        ("root", "delete_customer", json!({}), "no-erasure"),
        ("bob", "lookup_customer", json!({}), "default-deny"),
        (
            "alice",
            "issue_refund",
            json!({"amount": 500}),
            "default-deny",
        ),
        ("alice", "search_tickets", json!({"q": "text"}), "broken"),
        ("alice", "no_such_tool", json!({}), "default-deny"),
    ];
    for (who, tool, args, policy) in cases {
        let v = call(&e, who, tool, args);
        assert_unknown(&v, &format!("Unknown tool: {tool}"), policy);
        assert_eq!(v.annotations.len(), 1, "{v:?}");
    }
}

#[test]
fn forbid_overrides_permit() {
    let e = engine(
        r#"
        @id("all") permit(principal, action, resource);
        @id("no-erasure") forbid(principal, action, resource == Portcullis::Tool::"erase");
        @id("no-root") forbid(principal == Portcullis::User::"root", action, resource);
        @id("no-prompts") forbid(principal, action == Portcullis::Action::"prompts/get", resource);
        "#,
    );
    assert_allowed(&call(&e, "alice", "lookup", json!({})), "all");
    let v = call(&e, "alice", "erase", json!({}));
    assert_unknown(&v, "Unknown tool: erase", "no-erasure");
    assert!(v.denial().unwrap().private_reason.contains("no-erasure"));
    assert_unknown(
        &call(&e, "root", "erase", json!({})),
        "Unknown tool: erase",
        "no-erasure,no-root",
    );
    let v = Cedar::decide(
        &e,
        &request("prompts/get", "alice"),
        &testing::request("prompts/get", json!({"name": "greet"})),
    );
    assert_unknown(&v, "Unknown prompt: greet", "no-prompts");
}

#[test]
fn principal_resource_and_route_attributes() {
    let e = engine(
        r#"
        @id("mfa") permit(principal, action, resource == Portcullis::Tool::"a") when { principal.mfa == true };
        @id("level") permit(principal, action, resource == Portcullis::Tool::"b") when { principal has level && principal.level >= 3 };
        @id("crm-only") permit(principal, action, resource == Portcullis::Tool::"c") when { resource.server == "crm" && context.tunnel == "tun-a" };
        @id("billing-only") permit(principal, action, resource == Portcullis::Tool::"d") when { context.server == "billing" };
        @id("crm-server") permit(principal, action, resource in Portcullis::Server::"crm") when { resource.name like "crm_*" };
        @id("files") permit(principal, action == Portcullis::Action::"resources/read", resource) when { resource.name like "file:///pub/*" };
        "#,
    );
    assert_allowed(&call(&e, "alice", "a", json!({})), "mfa");
    // bob has no `mfa` claim: the permit errors, which only means it does not permit.
    assert!(!call(&e, "bob", "a", json!({})).is_allow());
    assert_allowed(&call(&e, "alice", "b", json!({})), "level");
    assert!(!call(&e, "bob", "b", json!({})).is_allow());
    assert_allowed(&call(&e, "bob", "c", json!({})), "crm-only");
    assert!(!call(&e, "bob", "d", json!({})).is_allow());
    assert_allowed(&call(&e, "bob", "crm_lookup", json!({})), "crm-server");
    let read = |uri: &str| {
        Cedar::decide(
            &e,
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

#[test]
fn configured_entities_merge_with_the_request() {
    let e = engine_with(json!({
        "policies": r#"
            @id("finance") permit(principal in Portcullis::Group::"finance", action, resource in Portcullis::ToolSet::"money");
            @id("cleared") permit(principal, action, resource == Portcullis::Tool::"secret") when { principal.clearance >= 5 };
            @id("danger") forbid(principal, action, resource in Portcullis::ToolSet::"danger");
        "#,
        "entities": [
            {"uid": {"type": "Portcullis::User", "id": "bob"}, "attrs": {"clearance": 7},
             "parents": [{"type": "Portcullis::Group", "id": "finance"}]},
            {"uid": {"type": "Portcullis::Tool", "id": "pay"}, "attrs": {"server": "spoofed"},
             "parents": [{"type": "Portcullis::ToolSet", "id": "money"}]},
            {"uid": {"type": "Portcullis::Tool", "id": "Wipe"}, "attrs": {},
             "parents": [{"type": "Portcullis::ToolSet", "id": "money"}, {"type": "Portcullis::ToolSet", "id": "danger"}]}
        ]
    }));
    assert_allowed(&call(&e, "bob", "pay", json!({})), "finance");
    assert_allowed(&call(&e, "bob", "secret", json!({})), "cleared");
    assert!(!call(&e, "alice", "pay", json!({})).is_allow());
    assert_unknown(
        &call(&e, "bob", "Wipe", json!({})),
        "Unknown tool: Wipe",
        "danger",
    );
    // Forbidden through its tool set, also under look-alike names, however
    // broad the permit.
    let e = engine_with(json!({
        "policies": r#"
            @id("all") permit(principal, action, resource);
            @id("danger") forbid(principal, action, resource in Portcullis::ToolSet::"danger");
        "#,
        "entities": [
            {"uid": {"type": "Portcullis::Tool", "id": "Wipe"}, "attrs": {},
             "parents": [{"type": "Portcullis::ToolSet", "id": "danger"}]},
            {"uid": {"type": "Portcullis::Tool", "id": "WIPE"}, "attrs": {},
             "parents": [{"type": "Portcullis::ToolSet", "id": "other"}]}
        ]
    }));
    for name in ["Wipe", "wipe", "WIPE", "W\u{200B}ipe", "ｗｉｐｅ"] {
        let v = call(&e, "bob", name, json!({}));
        assert_unknown(&v, &format!("Unknown tool: {name}"), "danger");
    }
    assert_allowed(&call(&e, "bob", "wipe_logs", json!({})), "all");
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

/// An engine permitting tool `t` when `condition` holds.
fn when(condition: &str) -> Engine {
    engine(&format!(
        r#"@id("r") permit(principal, action, resource == Portcullis::Tool::"t") when {{ {condition} }};"#
    ))
}

#[track_caller]
fn check(condition: &str, cases: &[(Value, bool)]) {
    let e = when(condition);
    for (args, want) in cases {
        let got = call(&e, "u", "t", args.clone()).is_allow();
        assert_eq!(got, *want, "{condition} with arguments {args}");
    }
}

#[test]
fn argument_conditions() {
    check(
        "context.arguments.amount <= 100",
        &[
            (json!({"amount": 50}), true),
            (json!({"amount": 100}), true),
            (json!({"amount": 100.0}), true),
            (json!({"amount": -5}), true),
            (json!({"amount": 500}), false),
            (json!({"amount": 101}), false),
            // Type confusion and absence: evaluation errors, never a permit.
            (json!({"amount": "50"}), false),
            (json!({"amount": [50]}), false),
            (json!({"amount": {"value": 50}}), false),
            (json!({"amount": true}), false),
            (json!({"amount": null}), false),
            (json!({"amount": 50.5}), false),
            (json!({"amount": 18446744073709551615u64}), false),
            (json!({}), false),
            (json!({"other": 50}), false),
            (json!("amount"), false),
        ],
    );
    // No `arguments` at all.
    let e = when("context.arguments.amount <= 100");
    let msg = testing::request("tools/call", json!({"name": "t"}));
    assert!(!Cedar::decide(&e, &request("tools/call", "u"), &msg).is_allow());
    check(
        r#"context.arguments has mode && context.arguments.mode == "read""#,
        &[
            (json!({"mode": "read"}), true),
            (json!({"mode": "Read"}), false),
            (json!({"mode": ["read"]}), false),
            (json!({}), false),
        ],
    );
    check(
        r#"["dev", "staging"].contains(context.arguments.env)"#,
        &[
            (json!({"env": "dev"}), true),
            (json!({"env": "prod"}), false),
            (json!({"env": ["dev"]}), false),
        ],
    );
    check(
        r#"context.arguments.tags.containsAll(["a", "b"])"#,
        &[
            (json!({"tags": ["b", "a", "c", "a"]}), true),
            (json!({"tags": ["a"]}), false),
            (json!({"tags": "a b"}), false),
        ],
    );
    check(
        r#"context.arguments.path like "/srv/public/*""#,
        &[
            (json!({"path": "/srv/public/a.txt"}), true),
            (json!({"path": "/srv/private/a.txt"}), false),
        ],
    );
}

#[test]
fn nested_argument_records() {
    check(
        "context.arguments.refund.amount <= 100 && context.arguments.refund.currency == \"EUR\"",
        &[
            (json!({"refund": {"amount": 50, "currency": "EUR"}}), true),
            (json!({"refund": {"amount": 500, "currency": "EUR"}}), false),
            (json!({"refund": {"amount": 50, "currency": "USD"}}), false),
            // Same keys, other nesting: only the exact path counts.
            (
                json!({"amount": 50, "currency": "EUR", "refund": {}}),
                false,
            ),
            (
                json!({"refund.amount": 50, "refund": {"currency": "EUR"}}),
                false,
            ),
            (
                json!({"refund": [{"amount": 50, "currency": "EUR"}]}),
                false,
            ),
            (json!({"refund": 50}), false),
        ],
    );
}

#[test]
fn forbid_conditions_cannot_be_dodged() {
    let e = engine(
        r#"
        @id("all") permit(principal, action, resource);
        @id("big-refund") forbid(principal, action, resource == Portcullis::Tool::"issue_refund")
            when { context.arguments.amount > 1000 };
        "#,
    );
    assert_allowed(&call(&e, "u", "issue_refund", json!({"amount": 10})), "all");
    assert_allowed(&call(&e, "u", "other", json!({"amount": "x"})), "all");
    for args in [
        json!({"amount": 5000}),
        // Cedar would skip a forbid that fails to evaluate; here it refuses.
        json!({"amount": "5000"}),
        json!({"amount": [5000]}),
        json!({"amount": null}),
        json!({"amount": 5000.5}),
        json!({"amount": 1e300}),
        json!({"amount": 18446744073709551615u64}),
        json!({}),
    ] {
        let v = call(&e, "u", "issue_refund", args.clone());
        assert_unknown(&v, "Unknown tool: issue_refund", "big-refund");
    }
    // Cedar's `==` across types is false, not an error: documented, and the
    // reason to prefer permits of the good value.
    let e2 = engine(
        r#"@id("all") permit(principal, action, resource);
           @id("no-delete") forbid(principal, action, resource) when { context.arguments.mode == "delete" };"#,
    );
    assert!(!call(&e2, "u", "t", json!({"mode": "delete"})).is_allow());
    assert!(call(&e2, "u", "t", json!({"mode": ["delete"]})).is_allow());
    let v = call(&e, "u", "issue_refund", json!({"amount": "5000"}));
    let reason = &v.denial().unwrap().private_reason;
    assert!(reason.contains("could not be evaluated"), "{reason}");
    assert!(reason.contains("fail closed"), "{reason}");
}

#[test]
fn floats_and_nulls() {
    // Integral floats are Longs; up to four places are decimals; the rest
    // and null are opaque entities, equal only to themselves.
    check(
        r#"context.arguments.t.lessThanOrEqual(decimal("0.75"))"#,
        &[
            (json!({"t": 0.5}), true),
            (json!({"t": 0.75}), true),
            (json!({"t": -1.25}), true),
            (json!({"t": 0.7501}), false),
            (json!({"t": 0.74999}), false), // five places: opaque, an error
            (json!({"t": 0}), false),       // a Long: a type error
            (json!({"t": "0.5"}), false),
            (json!({"t": null}), false),
        ],
    );
    check(
        "context.arguments.n == 3",
        &[
            (json!({"n": 3}), true),
            (json!({"n": 3.0}), true),
            (json!({"n": 3.5}), false),
            (json!({"n": 3.000001}), false),
        ],
    );
    check(
        r#"context.arguments has limit && context.arguments.limit == Portcullis::Null::"null""#,
        &[
            (json!({"limit": null}), true),
            (json!({"limit": 5}), false),
            (json!({}), false),
        ],
    );
    check(
        r#"context.arguments.pos == Portcullis::Number::"52.520008""#,
        &[
            (json!({"pos": 52.520008}), true),
            (json!({"pos": 52.52}), false),
        ],
    );
    // Arguments the policies do not look at never matter.
    check(
        "context.arguments.amount <= 100",
        &[(
            json!({"amount": 5, "lat": 52.520008, "note": null, "big": 1e300, "u": 18446744073709551615u64, "xs": [null, 0.1]}),
            true,
        )],
    );
    // Values inside sets too.
    check(
        r#"context.arguments.xs.contains(decimal("0.1"))"#,
        &[(json!({"xs": [1, 0.1]}), true), (json!({"xs": [1]}), false)],
    );
}

#[test]
fn arguments_are_not_cedar_json() {
    // Cedar's JSON escapes in an argument stay plain records.
    check(
        r#"context.arguments.who == Portcullis::User::"root""#,
        &[
            (
                json!({"who": {"__entity": {"type": "Portcullis::User", "id": "root"}}}),
                false,
            ),
            (
                json!({"who": {"type": "Portcullis::User", "id": "root"}}),
                false,
            ),
        ],
    );
    check(
        r#"context.arguments.d.lessThan(decimal("1.0"))"#,
        &[(
            json!({"d": {"__extn": {"fn": "decimal", "arg": "0.5"}}}),
            false,
        )],
    );
}

// ---------------------------------------------------------------------------
// Look-alikes
// ---------------------------------------------------------------------------

const LOOKALIKES: &[&str] = &[
    "DELETE_USER",
    "Delete_User",
    "\u{200B}delete_user",
    "del\u{200C}ete\u{200D}_user",
    "delete\u{2060}_user\u{FEFF}",
    "ｄｅｌｅｔｅ_user",
    "ＤＥＬＥＴＥ＿ＵＳＥＲ",
    "de\u{00AD}lete_user",
    "delete_user\u{FE0F}",
    "d\u{0435}lete_user",
    "\u{1D41D}\u{1D41E}\u{1D425}\u{1D41E}\u{1D42D}\u{1D41E}_user",
    "\u{24D3}elete_user",
    "delete\u{00A0}_user",
    " delete_user ",
    "de1ete_user",
];

#[test]
fn lookalikes_of_forbidden_names_are_refused() {
    // Every way of naming the tool in a forbid, in any case.
    let forbids = [
        r#"forbid(principal, action, resource == Portcullis::Tool::"delete_user");"#,
        r#"forbid(principal, action, resource == Portcullis::Tool::"Delete_User");"#,
        r#"forbid(principal, action, resource in Portcullis::Tool::"DELETE_user");"#,
        r#"forbid(principal, action, resource) when { resource == Portcullis::Tool::"delete_user" };"#,
        r#"forbid(principal, action, resource) when { resource in [Portcullis::Tool::"Delete_user"] };"#,
        r#"forbid(principal, action, resource) when { resource.name like "delete_*" };"#,
        r#"forbid(principal, action, resource) when { resource.name like "DELETE_*" };"#,
        r#"forbid(principal, action, resource) when { resource["name"] like "Delete_*" };"#,
        r#"forbid(principal, action, resource is Portcullis::Tool) when { resource.name like "DELETE_U*" };"#,
        r#"forbid(principal, action, resource) when { resource.name == "Delete_User" };"#,
        r#"forbid(principal, action, resource) when { "delete_user" == resource.name };"#,
        r#"forbid(principal, action, resource) when { ["a", "DELETE_USER"].contains(resource.name) };"#,
        r#"forbid(principal, action, resource) unless { resource.name != "delete_user" };"#,
    ];
    for forbid in forbids {
        let e = engine(&format!(
            r#"@id("all") permit(principal, action, resource); @id("no") {forbid}"#
        ));
        for name in std::iter::once(&"delete_user").chain(LOOKALIKES) {
            let v = call(&e, "u", name, json!({}));
            assert_unknown(&v, &format!("Unknown tool: {name}"), "no");
        }
        // Not a look-alike.
        assert_allowed(&call(&e, "u", "undelete_user", json!({})), "all");
        assert_allowed(&call(&e, "u", "deleteuser", json!({})), "all");
    }
    // The private reason tells which pass refused.
    let e = engine(
        r#"permit(principal, action, resource);
           @id("no") forbid(principal, action, resource == Portcullis::Tool::"delete_user");"#,
    );
    let v = call(&e, "u", "DELETE_USER", json!({}));
    assert!(
        v.denial()
            .unwrap()
            .private_reason
            .contains(r#"as look-alike "delete_user""#),
        "{v:?}"
    );
}

#[test]
fn lookalikes_of_prompts_and_resources() {
    let e = engine(
        r#"
        @id("all") permit(principal, action, resource);
        @id("no-secret") forbid(principal, action, resource == Portcullis::Prompt::"Secret");
        @id("no-etc") forbid(principal, action, resource) when { resource.name like "file:///etc/*" };
        "#,
    );
    let get = |name: &str| {
        Cedar::decide(
            &e,
            &request("prompts/get", "u"),
            &testing::request("prompts/get", json!({"name": name})),
        )
    };
    for name in ["Secret", "secret", "SECRET", "ｓｅｃｒｅｔ"] {
        assert_unknown(&get(name), &format!("Unknown prompt: {name}"), "no-secret");
    }
    let read = |uri: &str| {
        Cedar::decide(
            &e,
            &request("resources/read", "u"),
            &testing::request("resources/read", json!({"uri": uri})),
        )
    };
    for uri in [
        "file:///etc/passwd",
        "FILE:///ETC/passwd",
        "file:///\u{200B}etc/passwd",
    ] {
        assert_unknown(&read(uri), &format!("Unknown resource: {uri}"), "no-etc");
    }
    assert_allowed(&read("file:///srv/etc/x"), "all");
}

#[test]
fn lookalikes_of_permitted_names_are_not_permitted() {
    let e = engine(EXAMPLE);
    assert_allowed(
        &call(&e, "alice", "lookup_customer", json!({})),
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
        let v = call(&e, "alice", name, json!({}));
        assert_unknown(&v, &format!("Unknown tool: {name}"), "default-deny");
    }
}

#[test]
fn argument_strings_are_not_folded() {
    // Folding is about names only: a forbid on an argument value keeps its
    // exact meaning in the look-alike pass.
    let e = engine(
        r#"
        @id("all") permit(principal, action, resource);
        @id("no-prod") forbid(principal, action, resource) when { context.arguments.env == "Prod" };
        "#,
    );
    assert_unknown(
        &call(&e, "u", "Deploy", json!({"env": "Prod"})),
        "Unknown tool: Deploy",
        "no-prod",
    );
    assert_allowed(&call(&e, "u", "Deploy", json!({"env": "prod"})), "all");
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------

fn list_response(e: &Engine, method: &str, who: &str, result: Value) -> Verdict {
    let c = ctx(
        Direction::ToClient,
        MessageKind::Response,
        Some(method),
        who,
    );
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
    Cedar::decide(e, &c, &msg)
}

#[test]
fn list_filtering_tools() {
    let e = engine(EXAMPLE);
    let tools = json!({
        "tools": [
            {"name": "lookup_customer", "inputSchema": {"type": "object"}},
            // Permitted only for some arguments: listed.
            {"name": "issue_refund"},
            {"name": "delete_customer"},
            {"name": "DELETE_customer"},
            {"name": "Lookup_Customer"},
            {"name": "admin_panel"},
            {"title": "nameless"}
        ],
    });
    let v = list_response(&e, "tools/list", "alice", tools);
    assert_eq!(
        listed(&v, "tools", "name"),
        ["lookup_customer", "issue_refund"]
    );
    assert_eq!(v.count("hidden"), Some(5));
}

#[test]
fn list_filtering_evaluates_what_does_not_depend_on_arguments() {
    let e = engine(
        r#"
        @id("refund") permit(principal in Portcullis::Group::"support", action == Portcullis::Action::"tools/call", resource == Portcullis::Tool::"refund")
            when { context.arguments.amount <= 100 };
        @id("level") permit(principal, action, resource == Portcullis::Tool::"vault")
            when { principal.level >= 5 && context.arguments.ok == true };
        @id("billing") permit(principal, action, resource == Portcullis::Tool::"invoice")
            when { context.server == "billing" };
        @id("crm") permit(principal, action, resource == Portcullis::Tool::"contacts")
            when { resource.server == "crm" };
        @id("mfa") permit(principal, action, resource == Portcullis::Tool::"mfa_only") when { principal.mfa };
        @id("all-x") permit(principal, action, resource) when { resource.name like "x_*" };
        @id("big") forbid(principal, action, resource == Portcullis::Tool::"x_refund") when { context.arguments.amount > 5 };
        @id("gone") forbid(principal, action, resource) when { resource.name like "x_drop*" };
        @id("broken") forbid(principal, action, resource == Portcullis::Tool::"x_broken") when { principal.nope == 1 };
        "#,
    );
    let tools = json!({"tools": [
        {"name": "refund"}, {"name": "vault"}, {"name": "invoice"}, {"name": "contacts"},
        {"name": "mfa_only"}, {"name": "x_refund"}, {"name": "x_drop_table"}, {"name": "X_DROP_table"},
        {"name": "x_broken"}, {"name": "x_ok"}
    ]});
    let v = list_response(&e, "tools/list", "alice", tools.clone());
    // A conditional forbid does not hide; an unconditional or failing one does.
    assert_eq!(
        listed(&v, "tools", "name"),
        ["refund", "contacts", "mfa_only", "x_refund", "x_ok"]
    );
    let v = list_response(&e, "tools/list", "bob", tools);
    assert_eq!(
        listed(&v, "tools", "name"),
        ["contacts", "x_refund", "x_ok"]
    );
}

#[test]
fn list_filtering_prompts_and_resources() {
    let e = engine(
        r#"
        @id("prompts") permit(principal, action == Portcullis::Action::"prompts/get", resource == Portcullis::Prompt::"greet");
        @id("files") permit(principal, action == Portcullis::Action::"resources/read", resource) when { resource.name like "file:///pub/*" };
        @id("tools") permit(principal, action == Portcullis::Action::"tools/call", resource);
        "#,
    );
    let v = list_response(
        &e,
        "prompts/list",
        "u",
        json!({"prompts": [{"name": "greet"}, {"name": "refund"}], "nextCursor": "c"}),
    );
    assert_eq!(listed(&v, "prompts", "name"), ["greet"]);
    let v = list_response(
        &e,
        "resources/list",
        "u",
        json!({"resources": [{"uri": "file:///pub/a"}, {"uri": "file:///etc/x", "name": "greet"}]}),
    );
    assert_eq!(listed(&v, "resources", "uri"), ["file:///pub/a"]);
}

// ---------------------------------------------------------------------------
// Policy ids
// ---------------------------------------------------------------------------

#[test]
fn policy_ids() {
    let e = engine(
        r#"
        permit(principal, action, resource == Portcullis::Tool::"a");
        @id("named") permit(principal, action, resource == Portcullis::Tool::"b");
        permit(principal, action, resource == Portcullis::Tool::"c");
        @id("stop c") forbid(principal == Portcullis::User::"root", action, resource == Portcullis::Tool::"c");
        "#,
    );
    assert_allowed(&call(&e, "u", "a", json!({})), "policy0");
    assert_allowed(&call(&e, "u", "b", json!({})), "named");
    assert_allowed(&call(&e, "u", "c", json!({})), "policy2");
    assert_unknown(
        &call(&e, "root", "c", json!({})),
        "Unknown tool: c",
        "stop c",
    );
    assert_unknown(
        &call(&e, "u", "d", json!({})),
        "Unknown tool: d",
        "default-deny",
    );
}

// ---------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------

#[track_caller]
fn init_error(cfg: Value, want: &[&str]) {
    let text = cfg.to_string();
    let err = match config::parse(&text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e,
    };
    for w in want {
        assert!(err.contains(w), "{err:?} lacks {w:?}");
    }
}

const SCHEMA: &str = r#"
namespace Portcullis {
    entity Group;
    entity User in [Group] { level?: Long };
    entity Server;
    entity Tool in [Server] { name: String, server: String, tunnel: String };
    type Args = { amount?: Long };
    action "tools/call" appliesTo {
        principal: User,
        resource: Tool,
        context: { arguments: Args, server: String, tunnel: String }
    };
}
"#;

#[test]
fn init_errors() {
    init_error(
        json!({}),
        &["cedar: invalid config", "missing field `policies`"],
    );
    init_error(json!("nope"), &["invalid config"]);
    init_error(
        json!({"policies": "", "extra": 1}),
        &["unknown field `extra`"],
    );
    init_error(json!({"policies": 5}), &["invalid type"]);
    init_error(
        json!({"policies": "permit(principal, action, resource);\n\npermit(principal, action resource);"}),
        &["policies: line 3, column 26", "unexpected token"],
    );
    init_error(
        json!({"policies": "permit(principal, action, resource) when { context.x <= };"}),
        &["policies: line 1"],
    );
    init_error(
        json!({"policies": "forbid(principal, action, resource) when { resource.name like 5 };"}),
        &["policies:"],
    );
    init_error(
        json!({"policies": "permit(principal == ?principal, action, resource);"}),
        &["templates", "not supported"],
    );
    init_error(
        json!({"policies": r#"@id("a") permit(principal, action, resource); @id("a") forbid(principal, action, resource);"#}),
        &[r#"policy id "a" is used twice"#],
    );
    init_error(
        json!({"policies": r#"@id("policy1") permit(principal, action, resource); permit(principal, action, resource);"#}),
        &[r#"policy id "policy1" is used twice"#],
    );
    init_error(
        json!({"policies": r#"@id("") permit(principal, action, resource);"#}),
        &["@id is empty"],
    );
    init_error(
        json!({"policies": "", "open_methods": [""]}),
        &["open_methods[0]"],
    );
    // Entities.
    init_error(
        json!({"policies": "", "entities": {"uid": 1}}),
        &["entities: must be a JSON array"],
    );
    init_error(
        json!({"policies": "", "entities": "[{"}),
        &["entities: not JSON"],
    );
    init_error(
        json!({"policies": "", "entities": [{"uid": {"type": "Portcullis::Group"}}]}),
        &["entities:"],
    );
}

#[test]
fn schema_validation() {
    let ok = r#"
        @id("refund") permit(principal, action == Portcullis::Action::"tools/call", resource == Portcullis::Tool::"refund")
        when { context.arguments has amount && context.arguments.amount <= 100 };
    "#;
    let e = engine_with(json!({"policies": ok, "schema": SCHEMA}));
    assert_allowed(&call(&e, "u", "refund", json!({"amount": 5})), "refund");
    assert!(!call(&e, "u", "refund", json!({"amount": 500})).is_allow());
    // A request that does not match the schema's types fails closed.
    assert!(!call(&e, "u", "refund", json!({"amount": "5"})).is_allow());

    // Type errors, unknown attributes, entity types and actions, and a
    // missing `has` guard on an optional attribute all fail init.
    for (policy, want) in [
        (
            r#"permit(principal, action == Portcullis::Action::"tools/call", resource) when { context.arguments.amount == "x" };"#,
            "policies do not match the schema",
        ),
        (
            r#"permit(principal, action == Portcullis::Action::"tools/call", resource) when { context.arguments.amount <= 5 };"#,
            "amount",
        ),
        (
            r#"permit(principal, action == Portcullis::Action::"tools/call", resource) when { principal.nope == 1 };"#,
            "nope",
        ),
        (
            r#"permit(principal in Portcullis::Team::"x", action, resource);"#,
            "Portcullis::Team",
        ),
        (
            r#"permit(principal, action == Portcullis::Action::"tools/delete", resource);"#,
            "tools/delete",
        ),
    ] {
        init_error(
            json!({"policies": policy, "schema": SCHEMA}),
            &[
                "cedar: invalid config: policies do not match the schema",
                want,
            ],
        );
    }
    let two = format!(
        "{ok}\n@id(\"bad\") permit(principal, action, resource) when {{ principal.nope }};"
    );
    init_error(
        json!({"policies": two, "schema": SCHEMA}),
        &["for policy `bad`", "line 5, column 55", "attribute `nope`"],
    );
    // A broken schema.
    init_error(
        json!({"policies": ok, "schema": "namespace Portcullis { entity User in [Nope]; }"}),
        &["cedar: invalid config: schema:", "Nope"],
    );
    init_error(
        json!({"policies": ok, "schema": "entity"}),
        &["schema: line 1"],
    );
    // Entities are checked against the schema too.
    init_error(
        json!({"policies": ok, "schema": SCHEMA, "entities": [
            {"uid": {"type": "Portcullis::User", "id": "a"}, "attrs": {"level": "high"}, "parents": []}
        ]}),
        &["entities:", "level"],
    );
    // The JSON schema format works as well.
    let json_schema = json!({"Portcullis": {"entityTypes": {"User": {}, "Tool": {}}, "actions": {
        "tools/call": {"appliesTo": {"principalTypes": ["User"], "resourceTypes": ["Tool"]}}}}});
    let e = engine_with(json!({
        "policies": r#"permit(principal, action == Portcullis::Action::"tools/call", resource == Portcullis::Tool::"a");"#,
        "schema": json_schema.to_string()
    }));
    assert_allowed(&call(&e, "u", "a", json!({})), "policy0");
}

#[test]
fn example_config_from_the_docs_parses() {
    assert!(config::parse(&config(EXAMPLE)).is_ok());
}

// ---------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------

/// `cargo test -p cedar --release -- --ignored --nocapture bench`
#[test]
#[ignore]
fn bench_decisions() {
    use std::time::Instant;
    let mut policies = format!(
        "{EXAMPLE}\npermit(principal, action, resource == Portcullis::Tool::\"GetUser\");\n"
    );
    let extra: usize = std::env::var("BENCH_POLICIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for i in 0..extra {
        policies.push_str(&format!(
            "@id(\"p{i}\") permit(principal in Portcullis::Group::\"g{i}\", action, resource == Portcullis::Tool::\"t{i}\") when {{ context.arguments.n <= {i} }};\n"
        ));
    }
    let e = engine(&policies);
    let runs = 20_000u32;
    let time = |label: &str, f: &dyn Fn() -> bool, want: bool| {
        assert_eq!(f(), want, "{label}");
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(f());
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
        println!("{label:<48} {us:>8.1} µs/decision");
    };
    let alice = request("tools/call", "alice");
    let msg = |name: &str, args: Value| {
        testing::request("tools/call", json!({"name": name, "arguments": args}))
    };
    let allowed = msg("issue_refund", json!({"amount": 50, "note": "x"}));
    let camel = msg("GetUser", json!({"id": 7}));
    let unknown = msg("nope", json!({}));
    let forbidden = msg("delete_customer", json!({}));
    println!("{} policies", e.policies.num_of_policies());
    time(
        "tools/call allowed",
        &|| Cedar::decide(&e, &alice, &allowed).is_allow(),
        true,
    );
    time(
        "tools/call allowed + look-alike pass",
        &|| Cedar::decide(&e, &alice, &camel).is_allow(),
        true,
    );
    time(
        "tools/call default deny",
        &|| Cedar::decide(&e, &alice, &unknown).is_allow(),
        false,
    );
    time(
        "tools/call forbidden",
        &|| Cedar::decide(&e, &alice, &forbidden).is_allow(),
        false,
    );
    let list = ctx(
        Direction::ToClient,
        MessageKind::Response,
        Some("tools/list"),
        "alice",
    );
    let tools: Vec<Value> = (0..20)
        .map(|i| json!({"name": format!("tool_{i}")}))
        .collect();
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}).to_string();
    let start = Instant::now();
    let n = 500u32;
    for _ in 0..n {
        std::hint::black_box(Cedar::decide(&e, &list, &msg));
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "{:<48} {us:>8.1} µs/list ({:.1} µs/entry)",
        "tools/list of 20 entries",
        us / 20.0
    );
}

#[test]
fn token_claims_are_in_the_context_too() {
    let e = engine(
        r#"
        @id("mail") permit(principal, action, resource == Portcullis::Tool::"a") when { context.claims has email && context.claims.email like "*@example.com" };
        @id("senior") permit(principal, action, resource == Portcullis::Tool::"b") when { context.claims.level >= 3 };
        "#,
    );
    assert_allowed(&call(&e, "alice", "a", json!({})), "mail");
    assert_allowed(&call(&e, "alice", "b", json!({})), "senior");
    // No claims (an API key): `context.claims` is an empty record.
    assert!(!call(&e, "bob", "a", json!({})).is_allow());
    assert!(!call(&e, "bob", "b", json!({})).is_allow());
}
