//! The policy set cut into slices by what each policy's scope pins down, so
//! a request evaluates only the policies that can apply to it.
//!
//! Cedar checks a policy's scope before its conditions, and a policy whose
//! scope does not match is neither satisfied nor evaluated (so it cannot
//! fail either). Leaving out policies whose scope says `action == A` for
//! another action, or `resource == R` for another resource, therefore
//! decides exactly as the whole set does, errors included. Only `==` pins
//! are used: `in` depends on the entity hierarchy and stays in every slice.

use std::collections::HashMap;

use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicySet, Request, ResourceConstraint};

/// Slices of one policy set, for the call actions.
pub struct Sliced {
    /// Per action: the policies not pinned to another action, nor to any
    /// resource.
    by_action: HashMap<EntityUid, PolicySet>,
    /// Per action and pinned resource: that action's slice plus the policies
    /// pinned to that resource.
    by_resource: HashMap<(EntityUid, EntityUid), PolicySet>,
    /// For any other action (never asked for by the plugin): no policy.
    empty: PolicySet,
}

impl Sliced {
    /// Slices `policies` for each of `actions`.
    pub fn new(policies: &PolicySet, actions: &[EntityUid]) -> Result<Sliced, String> {
        let mut by_action = HashMap::new();
        let mut by_resource: HashMap<(EntityUid, EntityUid), Vec<&Policy>> = HashMap::new();
        for action in actions {
            let applies = |p: &&Policy| match p.action_constraint() {
                ActionConstraint::Eq(a) => a == *action,
                _ => true,
            };
            let mut general = Vec::new();
            for p in policies.policies().filter(applies) {
                match p.resource_constraint() {
                    ResourceConstraint::Eq(r) => {
                        by_resource.entry((action.clone(), r)).or_default().push(p);
                    }
                    _ => general.push(p),
                }
            }
            for pinned in by_resource
                .iter_mut()
                .filter(|((a, _), _)| a == action)
                .map(|(_, v)| v)
            {
                pinned.extend(general.iter().copied());
            }
            by_action.insert(action.clone(), set(general)?);
        }
        let by_resource = by_resource
            .into_iter()
            .map(|(k, v)| Ok((k, set(v)?)))
            .collect::<Result<_, String>>()?;
        Ok(Sliced {
            by_action,
            by_resource,
            empty: PolicySet::new(),
        })
    }

    /// The policies that can apply to `request`.
    pub fn for_request(&self, request: &Request) -> &PolicySet {
        let (Some(action), Some(resource)) = (request.action(), request.resource()) else {
            return &self.empty;
        };
        // Building the key clones two uids; cheaper than evaluating policies.
        self.by_resource
            .get(&(action.clone(), resource.clone()))
            .or_else(|| self.by_action.get(action))
            .unwrap_or(&self.empty)
    }
}

fn set(policies: Vec<&Policy>) -> Result<PolicySet, String> {
    PolicySet::from_policies(policies.into_iter().cloned()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::str::FromStr;

    use cedar_policy::{Authorizer, Context, Entities, Response};

    use super::*;

    fn uid(text: &str) -> EntityUid {
        EntityUid::from_str(text).unwrap()
    }

    fn summary(r: &Response) -> (bool, BTreeSet<String>, BTreeSet<String>) {
        let errors = r
            .diagnostics()
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                pe.policy_id().to_string()
            })
            .collect();
        (
            r.decision() == cedar_policy::Decision::Allow,
            r.diagnostics().reason().map(ToString::to_string).collect(),
            errors,
        )
    }

    #[test]
    fn slices_decide_like_the_whole_set() {
        let policies = PolicySet::from_str(
            r#"
            permit(principal, action == Portcullis::Action::"tools/call", resource == Portcullis::Tool::"a");
            permit(principal, action == Portcullis::Action::"tools/call", resource == Portcullis::Tool::"b") when { context.nope };
            forbid(principal, action, resource == Portcullis::Tool::"b") when { context.x == 1 };
            permit(principal, action in [Portcullis::Action::"tools/call", Portcullis::Action::"prompts/get"], resource);
            forbid(principal, action == Portcullis::Action::"prompts/get", resource == Portcullis::Prompt::"p");
            forbid(principal, action, resource) when { resource == Portcullis::Tool::"c" };
            forbid(principal, action, resource in Portcullis::Tool::"a") when { context.y };
            permit(principal, action == Portcullis::Action::"resources/read", resource) when { context.nope };
            forbid(principal, action == Portcullis::Action::"tools/delete", resource);
            "#,
        )
        .unwrap();
        let actions: Vec<EntityUid> = ["tools/call", "prompts/get", "resources/read"]
            .iter()
            .map(|a| uid(&format!("Portcullis::Action::{a:?}")))
            .collect();
        let sliced = Sliced::new(&policies, &actions).unwrap();
        let auth = Authorizer::new();
        let resources = [
            r#"Portcullis::Tool::"a""#,
            r#"Portcullis::Tool::"b""#,
            r#"Portcullis::Tool::"c""#,
            r#"Portcullis::Tool::"d""#,
            r#"Portcullis::Prompt::"p""#,
            r#"Portcullis::Prompt::"a""#,
            r#"Portcullis::Resource::"a""#,
        ];
        let contexts = [
            r#"{}"#,
            r#"{"x": 1, "y": true}"#,
            r#"{"x": 2, "y": false, "nope": true}"#,
        ];
        let mut checked = 0;
        for action in &actions {
            for resource in resources {
                for context in contexts {
                    let request = Request::new(
                        uid(r#"Portcullis::User::"u""#),
                        action.clone(),
                        uid(resource),
                        Context::from_json_str(context, None).unwrap(),
                        None,
                    )
                    .unwrap();
                    let whole = auth.is_authorized(&request, &policies, &Entities::empty());
                    let slice = sliced.for_request(&request);
                    let part = auth.is_authorized(&request, slice, &Entities::empty());
                    assert_eq!(
                        summary(&whole),
                        summary(&part),
                        "{action} {resource} {context}"
                    );
                    assert!(slice.policies().count() < policies.policies().count());
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 63);
    }
}
