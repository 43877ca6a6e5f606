//! The configuration as written in the policy file, and its compilation into
//! a [`Policy`]: the modules parsed (an error names the module, line and
//! column), the data merged, the decision rules found, and one trial
//! evaluation so that what only evaluation finds (an unknown function,
//! conflicting rules) fails `init` rather than every call.

use std::collections::BTreeMap;

use portcullis_plugin_sdk::authorize;
use portcullis_plugin_sdk::{Value, json};
use serde::Deserialize;

use crate::engine::{self, Policy, Rules};

/// The package whose rules decide.
pub const PACKAGE: &str = "portcullis";

/// The module name of the `policy` setting.
pub const POLICY_MODULE: &str = "policy.rego";

/// The top level of the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// One module.
    #[serde(default)]
    policy: Option<String>,
    /// Several modules, by file name.
    #[serde(default)]
    modules: BTreeMap<String, String>,
    /// The data document: an object, or a string holding one as JSON.
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    open_methods: Option<Vec<String>>,
}

/// Parses and compiles the configuration text given to `init`.
pub fn parse(text: &str) -> Result<Policy, String> {
    let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut modules = raw.modules;
    if let Some(policy) = raw.policy {
        if modules.contains_key(POLICY_MODULE) {
            return Err(invalid(format!(
                "`policy` is the module {POLICY_MODULE:?}, and `modules` has one by that name too"
            )));
        }
        modules.insert(POLICY_MODULE.to_owned(), policy);
    }
    if modules.is_empty() {
        return Err(invalid(
            "give the Rego policy as `policy` (one module) or `modules` (file name = text)".into(),
        ));
    }

    let mut rego = regorus::Engine::new();
    engine::add_extensions(&mut rego).map_err(invalid)?;
    let mut rules = Rules::default();
    for (name, text) in &modules {
        rego.add_policy(name.clone(), text.clone())
            .map_err(|e| invalid(engine::render(&e)))?;
    }
    let components = rego
        .get_policy_package_components()
        .map_err(|e| invalid(engine::render(&e)))?;
    for module in &components {
        match module.components.as_slice() {
            [p] if p == PACKAGE => {
                let declares = |rule: &str| {
                    rego.has_declared_rule_rooted_at(&module.source_file, rule)
                        .map_err(|e| {
                            invalid(format!("{}: {}", module.source_file, engine::render(&e)))
                        })
                };
                rules.allow |= declares("allow")?;
                rules.deny |= declares("deny")?;
                rules.annotations |= declares("annotations")?;
            }
            [p, sub, ..]
                if p == PACKAGE && ["allow", "deny", "annotations"].contains(&sub.as_str()) =>
            {
                return Err(invalid(format!(
                    "{}: package {PACKAGE}.{sub}: `{sub}` must be a rule of package {PACKAGE}, \
                     not a package",
                    module.source_file
                )));
            }
            _ => {}
        }
    }
    if !rules.allow {
        return Err(invalid(format!(
            "no module defines data.{PACKAGE}.allow: the decision is the rule `allow` of \
             `package {PACKAGE}` (modules: {})",
            modules.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }

    let data = parse_data(raw.data).map_err(|e| invalid(format!("data: {e}")))?;
    if let Some(data) = data {
        rego.add_data(data)
            .map_err(|e| invalid(format!("data: {}", engine::render(&e))))?;
    }

    let open_methods = authorize::open_methods(raw.open_methods.as_deref()).map_err(invalid)?;
    let modules = modules.into_keys().collect();
    let policy = Policy::new(rego, rules, open_methods, modules);
    policy.trial().map_err(|e| {
        invalid(format!(
            "the policy fails to evaluate (on a call with no principal, name or arguments): {e}"
        ))
    })?;
    Ok(policy)
}

fn invalid(e: String) -> String {
    format!("rego: invalid config: {e}")
}

/// The data document: an object (a TOML table in the policy file), or a
/// string holding one as JSON. `data.portcullis` is the decision's: data
/// there would merge with the rules.
fn parse_data(raw: Option<Value>) -> Result<Option<regorus::Value>, String> {
    let json = match raw {
        None => return Ok(None),
        Some(Value::String(text)) => {
            serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?
        }
        Some(v) => v,
    };
    let Value::Object(map) = &json else {
        return Err("must be an object (a table)".into());
    };
    if map.contains_key(PACKAGE) {
        return Err(format!(
            "`{PACKAGE}` is the package of the decision rules; put data under another key"
        ));
    }
    regorus::Value::from_json_str(&json!(map).to_string())
        .map(Some)
        .map_err(|e| engine::render(&e))
}
