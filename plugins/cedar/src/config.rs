//! The configuration as written in the policy file, and its compilation into
//! an [`Engine`]: policies parsed and given their `@id`s, the schema parsed
//! and the policies validated against it, the entities loaded. Every error
//! says where it is (`policies: line 3, column 12: ...`).

use std::collections::HashSet;
use std::str::FromStr;

use cedar_policy::{Entities, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use portcullis_plugin_sdk::authorize;
use portcullis_plugin_sdk::{Value, json};
use serde::Deserialize;

use crate::engine::{Engine, Types};
use crate::lookalike;

/// The top level of the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    policies: String,
    #[serde(default)]
    schema: Option<String>,
    /// A JSON array of entities, or a string holding one.
    #[serde(default)]
    entities: Option<Value>,
    #[serde(default)]
    open_methods: Option<Vec<String>>,
}

/// Parses and compiles the configuration text given to `init`.
pub fn parse(text: &str) -> Result<Engine, String> {
    let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let types = Types::new()?;
    let mut warnings = Vec::new();

    let policies = parse_policies(&raw.policies).map_err(|e| invalid(format!("policies: {e}")))?;

    let schema = match raw.schema.as_deref() {
        None => None,
        Some(src) => {
            let schema =
                parse_schema(src, &mut warnings).map_err(|e| invalid(format!("schema: {e}")))?;
            validate(&policies, &schema, &raw.policies, &mut warnings)
                .map_err(|e| invalid(format!("policies do not match the schema: {e}")))?;
            Some(schema)
        }
    };

    let entities = parse_entities(raw.entities, schema.as_ref())
        .map_err(|e| invalid(format!("entities: {e}")))?;

    let folded = lookalike::build(&policies, &entities, &types.call_actions()).map_err(invalid)?;

    let open_methods = authorize::open_methods(raw.open_methods.as_deref()).map_err(invalid)?;

    Engine::new(policies, folded, entities, open_methods, warnings, types).map_err(invalid)
}

fn invalid(e: String) -> String {
    format!("cedar: invalid config: {e}")
}

/// Parses the policy text. Each policy's id is its `@id("...")`
/// annotation, else Cedar's default (`policy0`, `policy1`, ... in order).
fn parse_policies(text: &str) -> Result<PolicySet, String> {
    let parsed = PolicySet::from_str(text).map_err(|e| {
        e.iter()
            .map(|pe| render(pe, text))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    if let Some(t) = parsed.templates().next() {
        return Err(format!(
            "{}: templates (`?principal`, `?resource`) are not supported: nothing links them",
            t.annotation("id")
                .map_or_else(|| format!("template {}", t.id()), |id| format!("{id:?}"))
        ));
    }
    // Sorted by Cedar's id, which follows the order in the text, so errors
    // name the first offender.
    let mut policies: Vec<_> = parsed.policies().collect();
    policies.sort_by_key(|p| {
        let id = p.id().to_string();
        (id.len(), id)
    });
    let mut set = PolicySet::new();
    let mut seen = HashSet::new();
    for p in policies {
        let id = match p.annotation("id") {
            Some(id) if id.trim().is_empty() => {
                return Err(format!("{}: @id is empty", p.id()));
            }
            Some(id) => id.to_owned(),
            None => p.id().to_string(),
        };
        if !seen.insert(id.clone()) {
            return Err(format!(
                "policy id {id:?} is used twice (give each policy a distinct @id; \
                 policies without one are named policy0, policy1, ... in order)"
            ));
        }
        set.add(p.new_id(PolicyId::new(&id)))
            .map_err(|e| format!("{id:?}: {e}"))?;
    }
    Ok(set)
}

/// A schema in Cedar syntax, or in Cedar's JSON schema format when it starts
/// with `{`.
fn parse_schema(src: &str, warnings: &mut Vec<String>) -> Result<Schema, String> {
    if src.trim_start().starts_with('{') {
        return Schema::from_json_str(src).map_err(|e| render(&e, src));
    }
    let (schema, warns) = Schema::from_cedarschema_str(src).map_err(|e| render(&e, src))?;
    warnings.extend(warns.map(|w| format!("schema: {}", render(&w, src))));
    Ok(schema)
}

/// Strict validation of every policy against the schema.
fn validate(
    policies: &PolicySet,
    schema: &Schema,
    src: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    warnings.extend(
        result
            .validation_warnings()
            .map(|w| format!("validation: {}", render(w, src))),
    );
    if result.validation_passed() {
        return Ok(());
    }
    Err(result
        .validation_errors()
        .map(|e| render(e, src))
        .collect::<Vec<_>>()
        .join("; "))
}

/// The configured entities (Cedar's entity JSON: an array of `{"uid",
/// "attrs", "parents"}`), checked against the schema when there is one,
/// which also contributes its actions and their groups.
fn parse_entities(raw: Option<Value>, schema: Option<&Schema>) -> Result<Entities, String> {
    let json = match raw {
        None => json!([]),
        Some(Value::String(text)) => {
            serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?
        }
        Some(v) => v,
    };
    if !json.is_array() {
        return Err("must be a JSON array of entities".into());
    }
    Entities::from_json_value(json, schema).map_err(|e| render(&e, ""))
}

/// One diagnostic on one line: `line L, column C: message (help: ...)`,
/// the position taken from its first label when `src` has it.
pub fn render(d: &dyn Diagnostic, src: &str) -> String {
    let mut out = String::new();
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    if let Some(offset) = offset.filter(|&o| o <= src.len() && src.is_char_boundary(o)) {
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        out.push_str(&format!("line {line}, column {column}: "));
    }
    let mut message = d.to_string();
    // Some errors say what went wrong only in their causes.
    let mut cause = d.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = e.source();
    }
    out.push_str(&message);
    if let Some(help) = d.help() {
        out.push_str(&format!(" (help: {help})"));
    }
    out
}
