//! Names compared the way an attacker would vary them, and numbers compared
//! as written: the standard plugins (`authz`, `cedar`, `rego`, `deny-tools`) as built
//! components, through the real host and tunnel, in front of a recording
//! upstream that must never see what they refuse.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use http::Method;
use portcullis::client::McpClient;
use portcullis::plugin::PluginEngine;
use portcullis::tunnel::dial::ProxyConfig;
use serde_json::{Value, json};

use crate::support::*;

/// Look-alikes of `delete_repo`: every refusing rule for `delete_*` refuses
/// them all.
const DENIED_LOOKALIKES: &[&str] = &[
    "delete_repo",
    "DELETE_REPO",
    "\u{FF44}\u{FF45}\u{FF4C}\u{FF45}\u{FF54}\u{FF45}_repo",
    "d\u{0435}lete_repo",
    "\u{1D41D}\u{1D41E}\u{1D425}\u{1D41E}\u{1D42D}\u{1D41E}_repo",
    "\u{24D3}elete_repo",
    "delete\u{00A0}_repo",
    " delete_repo ",
    "de\u{200B}lete_repo",
    "de\u{00AD}lete\u{202E}_repo",
    "dele\u{0442}e_repo",
];

/// Look-alikes of `read_repo`, which allowing rules would cover: never
/// allowed, since none is canonical.
const ALLOWED_LOOKALIKES: &[&str] = &[
    "r\u{0435}ad_repo",
    "\u{FF52}ead_repo",
    "read\u{200B}_repo",
    "read_repo ",
    "read_rep\u{03BF}",
    "read_\u{2160}",
];

/// The four name-matching plugins, each configured to allow everything
/// but `delete_*` (deny-tools only refuses).
fn policies() -> [(&'static str, String); 4] {
    let chain =
        |name: &str| format!("\n[[servers.\"*\"]]\nplugin = \"{name}\"\nphase = \"both\"\n");
    [
        (
            "authz",
            r#"
[plugins.authz]
source = "builtin:authz"
[plugins.authz.config]
rules = [
  { id = "all", effect = "allow", tools = ["*"] },
  { id = "no-delete", effect = "deny", tools = ["delete_*"] },
]
"#
            .to_owned()
                + &chain("authz"),
        ),
        (
            "cedar",
            r#"
[plugins.cedar]
source = "builtin:cedar"
[plugins.cedar.config]
policies = '''
@id("all") permit(principal, action, resource);
@id("no-delete") forbid(principal, action, resource) when { resource.name like "delete_*" };
'''
"#
            .to_owned()
                + &chain("cedar"),
        ),
        (
            "rego",
            r#"
[plugins.rego]
source = "builtin:rego"
[plugins.rego.config]
policy = '''
package portcullis
allow := true
deny contains "no-delete" if portcullis.like(input.name, "delete_*")
'''
"#
            .to_owned()
                + &chain("rego"),
        ),
        (
            "deny-tools",
            r#"
[plugins.deny-tools]
source = "builtin:deny-tools"
config = { deny = ["delete_*"] }
"#
            .to_owned()
                + &chain("deny-tools"),
        ),
    ]
}

/// A tunnel whose only upstream, `rec`, records what reaches it, guarded by
/// `policy`.
struct Guarded {
    t: OneTunnel,
    seen: Seen,
    _gw: std::sync::Arc<portcullis::gateway::Gateway>,
}

impl Guarded {
    async fn start(policy: &str) -> Guarded {
        let t = OneTunnel::start().await;
        let (rec, seen) = recording_upstream().await;
        let ups = HashMap::from([(
            "rec".to_owned(),
            http_upstream("rec", &format!("http://{rec}/mcp")),
        )]);
        let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
        let path: PathBuf = scratch().join("policy.toml");
        std::fs::write(&path, policy).unwrap();
        let engine = PluginEngine::new(None).unwrap();
        let policy = portcullis::policy::load(&path, &engine, gw.catalog())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        gw.set_policy(Some(std::sync::Arc::new(policy)));
        Guarded { t, seen, _gw: gw }
    }

    fn client(&self) -> McpClient {
        self.t.client("rec")
    }

    /// How many requests reached the upstream so far.
    fn reached(&self) -> usize {
        self.seen.all().len()
    }
}

/// Sends `body` (JSON text, exactly as written) and returns its one reply.
async fn send_text(c: &McpClient, body: String) -> Value {
    let reply = c.send(Method::POST, Bytes::from(body), &[]).await.unwrap();
    reply.last().cloned().unwrap_or(Value::Null)
}

fn error_of(reply: &Value) -> (i64, String) {
    (
        reply["error"]["code"].as_i64().unwrap_or(0),
        reply["error"]["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn lookalike_names_are_refused_by_every_name_plugin() {
    for (plugin, policy) in policies() {
        let g = Guarded::start(&policy).await;
        let mut c = g.client();
        let reply = c.call_tool("read_repo", json!({})).await.unwrap();
        assert!(reply.get("result").is_some(), "{plugin}: {reply}");
        assert_eq!(g.reached(), 1, "{plugin}: read_repo reaches the upstream");
        // deny-tools only refuses: it has no allowing rule to hold back.
        let allowed: &[&str] = if plugin == "deny-tools" {
            &[]
        } else {
            ALLOWED_LOOKALIKES
        };
        for name in DENIED_LOOKALIKES.iter().chain(allowed) {
            let reply = c.call_tool(name, json!({})).await.unwrap();
            assert_eq!(
                error_of(&reply),
                (-32602, format!("Unknown tool: {name}")),
                "{plugin}: {name:?}"
            );
        }
        assert_eq!(
            g.reached(),
            1,
            "{plugin}: a look-alike reached the upstream"
        );
    }
}

#[tokio::test]
async fn numbers_are_compared_as_written() {
    let g = Guarded::start(
        r#"
[plugins.authz]
source = "builtin:authz"
[plugins.authz.config]
rules = [
  { id = "small", effect = "allow", tools = ["refund"], when = [{ arg = "amount", op = "lte", value = 100 }] },
  { id = "exact", effect = "allow", tools = ["pick"], when = [{ arg = "n", op = "eq", value = 0 }] },
]

[[servers."*"]]
plugin = "authz"
"#,
    )
    .await;
    let c = g.client();
    let call = |tool: &str, args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    };
    // (tool, arguments as written, allowed)
    let cases = [
        ("refund", r#"{"amount": 100}"#, true),
        ("refund", r#"{"amount": 1e2}"#, true),
        ("refund", r#"{"amount": 99.999999999999999999}"#, true),
        ("refund", r#"{"amount": 100.00000000000000001}"#, false),
        (
            "refund",
            r#"{"amount": 100.000000000000000000000001}"#,
            false,
        ),
        ("refund", r#"{"amount": 1e309}"#, false),
        ("refund", r#"{"amount": "50"}"#, false),
        ("pick", r#"{"n": -0.0}"#, true),
        ("pick", r#"{"n": 0e7}"#, true),
        ("pick", r#"{"n": 1e-400}"#, false),
        ("pick", r#"{"n": 0e-200000}"#, false),
    ];
    let mut reached = 0;
    for (tool, args, allowed) in cases {
        let reply = send_text(&c, call(tool, args)).await;
        if allowed {
            reached += 1;
            assert!(reply.get("result").is_some(), "{tool} {args}: {reply}");
        } else {
            assert!(reply.get("error").is_some(), "{tool} {args}: {reply}");
        }
        assert_eq!(g.reached(), reached, "{tool} {args}: {reply}");
    }
}
