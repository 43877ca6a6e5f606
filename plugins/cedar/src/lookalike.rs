//! The folded copies of the forbid policies and of the entities, for the
//! look-alike pass (see the crate documentation, "Look-alike names"). To
//! fold is to take the SDK's canonical form of a name
//! ([`portcullis_plugin_sdk::names::canonical`]), the same as `authz` and
//! `deny-tools` compare.
//!
//! Folding works on Cedar's JSON form of a policy (its EST) and of the
//! entities, so it sees exactly the literals the policy compares with a
//! name, whatever the surface syntax:
//!
//! * every entity reference of type `Portcullis::Tool`, `Portcullis::Prompt`
//!   or `Portcullis::Resource` (in the scope, in `in`/`==` conditions, in
//!   sets, as a parent or attribute of an entity) gets its id folded;
//! * `resource.name like "..."`: the pattern's literal characters are folded;
//! * `resource.name == "..."` / `!=` (either side) and
//!   `[...].contains(resource.name)`: the string literals are folded.
//!
//! Other strings (argument values, server names, ...) are left alone.

use std::collections::{HashMap, HashSet};

use cedar_policy::{Effect, Entities, EntityUid, Policy, PolicySet};
use portcullis_plugin_sdk::names::canonical;
use portcullis_plugin_sdk::{Value, json};
use serde_json::Map;

use crate::engine::{Folded, RESOURCE_TYPES};
use crate::slice::Sliced;

/// The folded forbid policies and entities; `None` without forbid policies.
pub fn build(
    policies: &PolicySet,
    entities: &Entities,
    actions: &[EntityUid],
) -> Result<Option<Folded>, String> {
    let mut folded = PolicySet::new();
    let mut changed = false;
    for p in policies.policies().filter(|p| p.effect() == Effect::Forbid) {
        let mut est = p
            .to_json()
            .map_err(|e| format!("policy {:?}: {e}", p.id().to_string()))?;
        changed |= fold_json(&mut est);
        let policy = Policy::from_json(Some(p.id().clone()), est)
            .map_err(|e| format!("policy {:?}, folded: {e}", p.id().to_string()))?;
        folded
            .add(policy)
            .map_err(|e| format!("policy {:?}, folded: {e}", p.id().to_string()))?;
    }
    if folded.is_empty() {
        return Ok(None);
    }
    let (entities, entities_changed) = fold_entities(entities)?;
    Ok(Some(Folded {
        policies: Sliced::new(&folded, actions)?,
        entities,
        changed: changed || entities_changed,
    }))
}

/// The entities with resource ids folded. Entities whose ids fold to the
/// same one are merged: parents are united, the first one's attributes win.
fn fold_entities(entities: &Entities) -> Result<(Entities, bool), String> {
    let json = entities
        .to_json_value()
        .map_err(|e| format!("entities: {e}"))?;
    let Value::Array(items) = json else {
        return Err("entities: not a JSON array".into());
    };
    let mut changed = false;
    let mut merged: Vec<Value> = Vec::with_capacity(items.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for mut item in items {
        changed |= fold_json(&mut item);
        let uid = item.get("uid").map(Value::to_string).unwrap_or_default();
        let Some(&i) = index.get(&uid) else {
            index.insert(uid, merged.len());
            merged.push(item);
            continue;
        };
        changed = true;
        // PANIC SAFETY: `index` holds only positions of items pushed onto
        // `merged`, which never shrinks.
        #[allow(clippy::indexing_slicing)]
        let into = &mut merged[i];
        let mut parents: Vec<Value> = into
            .get("parents")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let seen: HashSet<String> = parents.iter().map(Value::to_string).collect();
        for p in item
            .get("parents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !seen.contains(&p.to_string()) {
                parents.push(p.clone());
            }
        }
        into["parents"] = Value::Array(parents);
        if let Some(Value::Object(attrs)) = item.get("attrs") {
            let target = into
                .as_object_mut()
                .map(|o| o.entry("attrs").or_insert_with(|| json!({})));
            if let Some(Value::Object(target)) = target {
                for (k, v) in attrs {
                    target.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    let entities = Entities::from_json_value(Value::Array(merged), None)
        .map_err(|e| format!("entities, folded: {e}"))?;
    Ok((entities, changed))
}

/// Folds, in place, the name literals of a policy or entity in JSON form.
/// True when anything changed.
pub fn fold_json(v: &mut Value) -> bool {
    match v {
        Value::Array(items) => items.iter_mut().fold(false, |c, i| fold_json(i) | c),
        Value::Object(map) => {
            let mut changed = fold_uid(map);
            if let Some(Value::Object(like)) = map.get_mut("like")
                && like.get("left").is_some_and(is_resource_name)
                && let Some(Value::Array(pattern)) = like.get_mut("pattern")
            {
                for elem in pattern.iter_mut() {
                    if let Some(Value::String(s)) = elem.get_mut("Literal") {
                        changed |= fold_string(s);
                    }
                }
                // A literal made only of invisible characters folds to "".
                pattern.retain(|e| e.get("Literal").is_none_or(|l| l != ""));
            }
            for op in ["==", "!="] {
                if let Some(Value::Object(cmp)) = map.get_mut(op) {
                    for (a, b) in [("left", "right"), ("right", "left")] {
                        if cmp.get(a).is_some_and(is_resource_name)
                            && let Some(s) = cmp.get_mut(b).and_then(string_value)
                        {
                            changed |= fold_string(s);
                        }
                    }
                }
            }
            if let Some(Value::Object(contains)) = map.get_mut("contains")
                && contains.get("right").is_some_and(is_resource_name)
                && let Some(Value::Array(set)) =
                    contains.get_mut("left").and_then(|l| l.get_mut("Set"))
            {
                for item in set.iter_mut() {
                    if let Some(s) = string_value(item) {
                        changed |= fold_string(s);
                    }
                }
            }
            for child in map.values_mut() {
                changed |= fold_json(child);
            }
            changed
        }
        _ => false,
    }
}

/// `{"type": "Portcullis::Tool", "id": "X"}` → id folded.
fn fold_uid(map: &mut Map<String, Value>) -> bool {
    if map.len() != 2
        || !map
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| RESOURCE_TYPES.contains(&t))
    {
        return false;
    }
    match map.get_mut("id") {
        Some(Value::String(id)) => fold_string(id),
        _ => false,
    }
}

/// `resource.name` in the EST.
fn is_resource_name(v: &Value) -> bool {
    *v == json!({".": {"left": {"Var": "resource"}, "attr": "name"}})
}

/// The string of an EST literal `{"Value": "..."}`.
fn string_value(v: &mut Value) -> Option<&mut String> {
    match v.get_mut("Value")? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn fold_string(s: &mut String) -> bool {
    let folded = canonical(s);
    if folded == s.as_str() {
        return false;
    }
    *s = folded.into_owned();
    true
}
