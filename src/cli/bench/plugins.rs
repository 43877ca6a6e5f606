//! The standard plugins on realistic messages through the real host
//! (Wasm), each beside the no-op plugin on the same input. Shared with
//! `cargo bench --bench plugins` (which includes this file by path and runs
//! the same cases natively), so it names the library as `portcullis::`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use portcullis::mcp::{Direction, Kind, MessageContext};
use portcullis::plugin::{LoadedPlugin, PluginEngine, PluginLimits};
use portcullis::policy::verdict::Decision;
use serde_json::json;

use super::stats::{WARMUP, percentile};

/// The no-op test plugin, in the plugins' build output. It is no builtin,
/// so no policy can name it; the benchmark reads it from the directory
/// build.rs built it into, which is there wherever the benchmark is meant
/// to run: from a checkout, `cargo run --release -- bench`. Embedding it
/// instead would ship a test plugin in every binary for one measurement.
pub const NOOP_WASM: &str = concat!(env!("PORTCULLIS_PLUGIN_DIR"), "/noop.wasm");

/// The no-op plugin's component bytes.
pub fn noop_bytes() -> anyhow::Result<Vec<u8>> {
    std::fs::read(NOOP_WASM).with_context(|| {
        format!(
            "cannot read the no-op test plugin {NOOP_WASM}: the benchmark runs from the \
             checkout it was built in (cargo run --release -- bench)"
        )
    })
}

/// The no-op plugin: the baseline for the plugin host's own cost.
pub async fn load_noop(engine: &PluginEngine) -> anyhow::Result<LoadedPlugin> {
    Ok(LoadedPlugin::load(
        engine,
        "noop",
        &noop_bytes()?,
        "{}".into(),
        PluginLimits::default(),
        Default::default(),
    )
    .await?)
}

/// One standard plugin on a realistic message, for the per-plugin table
/// (the same inputs serve the native comparison).
pub struct PluginCase {
    /// Row label.
    pub label: &'static str,
    /// `builtin:NAME`.
    pub plugin: &'static str,
    /// Its configuration, as JSON.
    pub config: String,
    pub ctx: MessageContext,
    pub message: String,
    /// Tool definitions the catalog holds (a `tools/list` result's `tools`).
    pub tools: Option<serde_json::Value>,
}

/// The definition schema-guard checks calls against: the demo's refund tool.
fn refund_tool() -> serde_json::Value {
    json!({"name": "issue_refund", "description": "Refunds an amount (in EUR) to a customer's card.",
        "inputSchema": {"type": "object", "properties": {
            "customer_id": {"type": "string", "pattern": "^C-[0-9]{4}$"},
            "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000},
            "reason": {"type": "string", "maxLength": 500}},
          "required": ["customer_id", "amount"], "additionalProperties": false}})
}

/// The per-plugin cases: authz with 20 rules, Cedar with 20 policies and
/// Rego with 20 rules on a refund call, redact with every detector on a 4 KiB tool result,
/// schema-guard on the refund call.
pub fn plugin_cases() -> Vec<PluginCase> {
    let ctx = |direction, kind, method: &str, target: &str| MessageContext {
        direction,
        tunnel: "bench".into(),
        server: "demo".into(),
        kind,
        method: Some(method.into()),
        target: Some(target.into()),
        related_tool: None,
        request_id: Some("7".into()),
        session_id: None,
        protocol_version: Some("2025-11-25".into()),
        principal: portcullis::principal::Principal::named("demo-agent", vec!["support".into()]),
    };
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "issue_refund",
        "arguments": {"customer_id": "C-1001", "amount": 80, "reason": "duplicate charge on order 7731"}}})
    .to_string();
    let to_server = ctx(
        Direction::ToServer,
        Kind::Request,
        "tools/call",
        "issue_refund",
    );
    // 20 authz rules: 18 for other groups and tools, the refund rule, a deny.
    let mut rules: Vec<serde_json::Value> = (0..18)
        .map(|i| {
            json!({"id": format!("team-{i}"), "effect": "allow", "groups": [format!("team-{i}")],
            "tools": [format!("tool_{i}_*"), "lookup_customer"],
            "when": [{"arg": "region", "op": "in", "value": ["eu", "us"]}]})
        })
        .collect();
    rules.push(
        json!({"id": "support-refund", "effect": "allow", "groups": ["support"],
        "tools": ["issue_refund"], "when": [{"arg": "amount", "op": "lte", "value": 100},
        {"arg": "customer_id", "op": "regex", "value": "^C-[0-9]{4}$"}]}),
    );
    rules.push(json!({"id": "no-erasure", "effect": "deny", "tools": ["delete_*"]}));
    // 20 Cedar policies, the same shape.
    let mut cedar: String = (0..18)
        .map(|i| format!("@id(\"team-{i}\")\npermit(principal in Portcullis::Group::\"team-{i}\", action == Portcullis::Action::\"tools/call\", resource == Portcullis::Tool::\"tool_{i}\") when {{ context.arguments has region && context.arguments.region == \"eu\" }};\n"))
        .collect();
    cedar.push_str("@id(\"support-refund\")\npermit(principal in Portcullis::Group::\"support\", action == Portcullis::Action::\"tools/call\", resource == Portcullis::Tool::\"issue_refund\") when { context.arguments has amount && context.arguments.amount <= 100 };\n");
    cedar.push_str("@id(\"no-erasure\")\nforbid(principal, action, resource) when { resource.name like \"delete_*\" };\n");
    // 20 Rego rules, the same shape: 18 allow rules for other teams, the
    // refund rule, the erasure deny.
    let mut rego = String::from("package portcullis\n\n");
    for i in 0..18 {
        rego.push_str(&format!("allow if {{\n    \"team-{i}\" in input.principal.groups\n    input.tool == \"tool_{i}\"\n    input.arguments.region == \"eu\"\n}}\n\n"));
    }
    rego.push_str("allow if {\n    \"support\" in input.principal.groups\n    input.tool == \"issue_refund\"\n    input.arguments.amount <= 100\n}\n\n");
    rego.push_str("deny contains \"erasure\" if portcullis.like(input.name, \"delete_*\")\n");
    let thread = portcullis::demo::ticket_thread("T-502");
    let result = json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": thread}], "isError": false}}).to_string();
    vec![
        PluginCase {
            label: "authz, 20 rules, tools/call",
            plugin: "authz",
            config: json!({ "rules": rules }).to_string(),
            ctx: to_server.clone(),
            message: call.clone(),
            tools: None,
        },
        PluginCase {
            label: "cedar, 20 policies, tools/call",
            plugin: "cedar",
            config: json!({ "policies": cedar }).to_string(),
            ctx: to_server.clone(),
            message: call.clone(),
            tools: None,
        },
        PluginCase {
            label: "rego, 20 rules, tools/call",
            plugin: "rego",
            config: json!({ "policy": rego }).to_string(),
            ctx: to_server.clone(),
            message: call.clone(),
            tools: None,
        },
        PluginCase {
            label: "redact, every detector, 4 KiB tool result",
            plugin: "redact",
            config: "{}".into(),
            ctx: ctx(
                Direction::ToClient,
                Kind::Response,
                "tools/call",
                "get_ticket_thread",
            ),
            message: result.clone(),
            tools: None,
        },
        // Reference for the row above: the same detectors with every
        // decoding layer off, so the table shows what decoding costs.
        PluginCase {
            label: "reference: redact, detectors only (decoding layers off), 4 KiB tool result",
            plugin: "redact",
            config: json!({"decode": {"base64": "off", "percent": "off", "entities": "off", "json": "off"}})
                .to_string(),
            ctx: ctx(
                Direction::ToClient,
                Kind::Response,
                "tools/call",
                "get_ticket_thread",
            ),
            message: result,
            tools: None,
        },
        PluginCase {
            label: "schema-guard, typical tool, tools/call",
            plugin: "schema-guard",
            config: "{}".into(),
            ctx: to_server,
            message: call,
            tools: Some(json!([refund_tool()])),
        },
    ]
}

/// One [`plugin_cases`] case through the real host (Wasm).
#[derive(Debug, Clone, Copy)]
pub struct SuiteCost {
    pub label: &'static str,
    /// p50 of the plugin's call.
    pub wasm: Duration,
    /// p50 of the no-op plugin's call on the same context and message,
    /// measured call by call beside it: what crossing into a component and
    /// back costs, with no plugin logic.
    pub boundary: Duration,
}

/// p50 of each [`plugin_cases`] case through the real host (Wasm), and of
/// the no-op plugin on the same input, interleaved.
pub async fn plugin_suite_costs(calls: usize, filter: &str) -> anyhow::Result<Vec<SuiteCost>> {
    let costs = plugin_suite_costs_beside(calls, filter, |_| || {}).await?;
    Ok(costs.into_iter().map(|(cost, _)| cost).collect())
}

/// [`plugin_suite_costs`], with a third call timed beside the two, call by
/// call: `beside(case)` gives it (the benchmark's native build of the
/// plugin), so that all three sides see the same moments of a noisy host.
/// Returns each case's costs and the p50 of its third call.
pub async fn plugin_suite_costs_beside<F: FnMut()>(
    calls: usize,
    filter: &str,
    mut beside: impl FnMut(&PluginCase) -> F,
) -> anyhow::Result<Vec<(SuiteCost, Duration)>> {
    let engine = PluginEngine::new(portcullis::plugin::engine::default_cache_dir())?;
    let noop = load_noop(&engine).await?;
    let mut out = Vec::new();
    for case in plugin_cases()
        .into_iter()
        .filter(|c| c.label.contains(filter))
    {
        let bytes = portcullis::plugin::builtin(case.plugin)
            .ok_or_else(|| anyhow::anyhow!("{} is not built in", case.plugin))?;
        let catalog = Arc::new(portcullis::policy::catalog::Catalog::default());
        if let Some(tools) = &case.tools {
            let listing = json!({"jsonrpc": "2.0", "id": 0, "result": {"tools": tools}});
            catalog.learn(
                "demo",
                listing.to_string().as_bytes(),
                portcullis::policy::catalog::Page::First,
            );
        }
        let plugin = LoadedPlugin::load(
            &engine,
            case.plugin,
            bytes,
            case.config.clone(),
            PluginLimits::default(),
            catalog,
        )
        .await?;
        let mut samples = Vec::with_capacity(calls);
        let mut boundary = Vec::with_capacity(calls);
        let mut third = Vec::with_capacity(calls);
        let mut call_beside = beside(&case);
        for i in 0..calls + WARMUP {
            let t = Instant::now();
            let v = plugin.call(&case.ctx, &case.message).await?;
            let wasm = t.elapsed();
            let t = Instant::now();
            noop.call(&case.ctx, &case.message).await?;
            let noop_took = t.elapsed();
            let t = Instant::now();
            call_beside();
            if i >= WARMUP {
                samples.push(wasm);
                boundary.push(noop_took);
                third.push(t.elapsed());
            }
            if i == 0 {
                anyhow::ensure!(
                    !matches!(v.decision, Decision::Deny(_)),
                    "{}: the benchmark message was denied: {v:?}",
                    case.label
                );
            }
        }
        samples.sort();
        boundary.sort();
        third.sort();
        let cost = SuiteCost {
            label: case.label,
            wasm: percentile(&samples, 0.5),
            boundary: percentile(&boundary, 0.5),
        };
        out.push((cost, percentile(&third, 0.5)));
    }
    Ok(out)
}
