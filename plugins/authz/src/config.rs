//! The configuration as written in the policy file, and its compilation into
//! a [`Policy`]. Every error names where it is (`rules[1] ("support-refund"):
//! when[0]: ...`) so the operator can find it.

use std::collections::HashSet;

use portcullis_plugin_sdk::Value;
use portcullis_plugin_sdk::authorize;
use portcullis_plugin_sdk::names::{CallMethod, Glob, canonical_pattern};
use serde::{Deserialize, Deserializer};

use crate::rules::{Check, Cmp, Condition, Effect, Policy, Rule, Step, config_number};

/// The top level of the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Checked one by one, so errors can name the rule.
    rules: Vec<Value>,
    #[serde(default)]
    open_methods: Option<Vec<String>>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    effect: Effect,
    #[serde(default)]
    subjects: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    servers: Option<Vec<String>>,
    #[serde(default)]
    tunnels: Option<Vec<String>>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    when: Option<Vec<RawCondition>>,
}

/// One argument condition as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    /// A dotted path into `params.arguments`.
    #[serde(default)]
    arg: Option<String>,
    /// A claim of the principal's token (a top-level name, exactly as the
    /// relay's allow-list passed it: `department`, `acr`,
    /// `https://example.com/tier`).
    #[serde(default)]
    claim: Option<String>,
    op: Op,
    /// `Some(Null)` for `"value": null`, `None` when the key is missing.
    #[serde(default, deserialize_with = "present_value")]
    value: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Lt,
    Lte,
    Gt,
    Gte,
    Regex,
    Present,
    Absent,
}

fn present_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses and compiles the configuration text given to `init`.
pub fn parse(text: &str) -> Result<Policy, String> {
    let raw: RawConfig =
        serde_json::from_str(text).map_err(|e| format!("authz: invalid config: {e}"))?;

    let open_methods = authorize::open_methods(raw.open_methods.as_deref())
        .map_err(|e| format!("authz: invalid config: {e}"))?;

    let mut policy = Policy {
        deny: Vec::new(),
        allow: Vec::new(),
        open_methods,
        deny_names: false,
        uses_claims: false,
    };
    let mut ids = HashSet::new();
    for (i, value) in raw.rules.into_iter().enumerate() {
        let at = match value.get("id").and_then(Value::as_str) {
            Some(id) => format!("rules[{i}] ({id:?})"),
            None => format!("rules[{i}]"),
        };
        let rule = compile_rule(value).map_err(|e| format!("authz: invalid config: {at}: {e}"))?;
        if !ids.insert(rule.id.clone()) {
            return Err(format!(
                "authz: invalid config: {at}: duplicate rule id (ids must be unique)"
            ));
        }
        policy.uses_claims |= !rule.claims_when.is_empty();
        match rule.effect {
            Effect::Allow => policy.allow.push(rule),
            Effect::Deny => {
                policy.deny_names |= rule.tools.is_some();
                policy.deny.push(rule);
            }
        }
    }
    Ok(policy)
}

fn compile_rule(value: Value) -> Result<Rule, String> {
    let raw: RawRule = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if raw.id.is_empty() {
        return Err("`id` is empty".into());
    }

    let methods = match &raw.methods {
        None => CallMethod::ALL.iter().fold(0, |bits, m| bits | m.bit()),
        Some(patterns) => {
            nonempty("methods", patterns)?;
            let mut bits = 0;
            for (j, p) in patterns.iter().enumerate() {
                let glob = Glob::new(p);
                let hit = CallMethod::ALL
                    .iter()
                    .filter(|m| glob.matches(m.name()))
                    .fold(0, |bits, m| bits | m.bit());
                if hit == 0 {
                    return Err(format!(
                        "methods[{j}] {p:?} matches none of tools/call, prompts/get, \
                         resources/read (other methods are governed by open_methods)"
                    ));
                }
                bits |= hit;
            }
            bits
        }
    };

    let tools = match &raw.tools {
        None => None,
        Some(patterns) => {
            nonempty("tools", patterns)?;
            Some(
                patterns
                    .iter()
                    .map(|p| match raw.effect {
                        Effect::Allow => Glob::new(p),
                        Effect::Deny => Glob::new(&canonical_pattern(p)),
                    })
                    .collect(),
            )
        }
    };

    let mut when = Vec::new();
    let mut claims_when = Vec::new();
    for (j, c) in raw.when.into_iter().flatten().enumerate() {
        let on_claim = c.claim.is_some();
        let condition = compile_condition(c).map_err(|e| format!("when[{j}]: {e}"))?;
        if on_claim {
            claims_when.push(condition);
        } else {
            when.push(condition);
        }
    }

    if let Some(groups) = &raw.groups {
        nonempty("groups", groups)?;
    }
    Ok(Rule {
        subjects: globs("subjects", raw.subjects.as_deref())?,
        groups: raw.groups,
        servers: globs("servers", raw.servers.as_deref())?,
        tunnels: globs("tunnels", raw.tunnels.as_deref())?,
        id: raw.id,
        effect: raw.effect,
        methods,
        tools,
        when,
        claims_when,
    })
}

/// A selector list must have at least one entry, none of them empty: `[]`
/// would silently match nothing (omit the key to match anything).
fn nonempty(key: &str, list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!(
            "`{key}` is an empty list (omit it to match anything)"
        ));
    }
    if let Some(j) = list.iter().position(String::is_empty) {
        return Err(format!("{key}[{j}] is an empty string"));
    }
    Ok(())
}

fn globs(key: &str, list: Option<&[String]>) -> Result<Option<Vec<Glob>>, String> {
    let Some(list) = list else { return Ok(None) };
    nonempty(key, list)?;
    Ok(Some(list.iter().map(|p| Glob::new(p)).collect()))
}

fn compile_condition(c: RawCondition) -> Result<Condition, String> {
    let path = match (&c.arg, &c.claim) {
        (Some(arg), None) => {
            if arg.is_empty() || arg.split('.').any(str::is_empty) {
                return Err(format!(
                    "arg {arg:?} is not a dotted path (e.g. \"refund.amount\", \"items.0.sku\")"
                ));
            }
            arg.split('.').map(Step::new).collect()
        }
        (None, Some(claim)) => {
            if claim.is_empty() {
                return Err("claim is an empty string".into());
            }
            vec![Step::new(claim)]
        }
        _ => return Err("give exactly one of `arg` and `claim`".into()),
    };
    let check = match (c.op, c.value) {
        (Op::Present | Op::Absent, Some(_)) => {
            return Err(format!("op {:?} takes no value", op_name(c.op)));
        }
        (Op::Present, None) => Check::Present,
        (Op::Absent, None) => Check::Absent,
        (op, None) => return Err(format!("op {:?} needs a value", op_name(op))),
        (Op::Eq, Some(v)) => Check::Eq(v),
        (Op::Ne, Some(v)) => Check::Ne(v),
        (Op::In, Some(Value::Array(vs))) => Check::In(vs),
        (Op::NotIn, Some(Value::Array(vs))) => Check::NotIn(vs),
        (op @ (Op::In | Op::NotIn), Some(_)) => {
            return Err(format!("op {:?} needs an array value", op_name(op)));
        }
        (op @ (Op::Lt | Op::Lte | Op::Gt | Op::Gte), Some(v)) => {
            let Value::Number(n) = v else {
                return Err(format!(
                    "op {:?} needs a number value (not a string or other type)",
                    op_name(op)
                ));
            };
            let cmp = match op {
                Op::Lt => Cmp::Lt,
                Op::Lte => Cmp::Lte,
                Op::Gt => Cmp::Gt,
                _ => Cmp::Gte,
            };
            let exact = config_number(&n)
                .ok_or_else(|| format!("op {:?}: cannot compare {n} exactly", op_name(op)))?;
            Check::Cmp(cmp, exact)
        }
        (Op::Regex, Some(Value::String(pattern))) => Check::Regex(full_match_regex(&pattern)?),
        (Op::Regex, Some(_)) => return Err("op \"regex\" needs a string value".into()),
    };
    Ok(Condition { path, check })
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "eq",
        Op::Ne => "ne",
        Op::In => "in",
        Op::NotIn => "not_in",
        Op::Lt => "lt",
        Op::Lte => "lte",
        Op::Gt => "gt",
        Op::Gte => "gte",
        Op::Regex => "regex",
        Op::Present => "present",
        Op::Absent => "absent",
    }
}

/// Compiles `pattern` to match whole strings only. The pattern must be a
/// complete regex on its own, so wrapping it cannot change its structure
/// (`a)|(b` would otherwise escape the anchors).
fn full_match_regex(pattern: &str) -> Result<regex_lite::Regex, String> {
    let invalid = |e: regex_lite::Error| format!("invalid regex {pattern:?}: {e}");
    regex_lite::Regex::new(pattern).map_err(invalid)?;
    regex_lite::Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(invalid)
}
