//! The mapping from an MCP call to a Cedar request, and the decisions:
//! [`Engine::authorize`] for a call, [`Engine::visible`] for a list entry.
//!
//! Untrusted JSON (arguments, claims) is converted value by value with
//! [`Engine::value`]; it is never handed to Cedar's own JSON parsers, which
//! would read `{"__entity": ...}` and `{"__extn": ...}` in an argument as an
//! entity reference or an extension value.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicyId, PolicySet, Request, Response, RestrictedExpression,
};
use portcullis_plugin_sdk::names::{CallMethod, Glob, canonical};
use portcullis_plugin_sdk::{Principal, Value};
use serde_json::Number;

use crate::slice::Sliced;

/// The entity types and actions of the mapping, parsed once.
pub struct Types {
    pub user: EntityTypeName,
    pub group: EntityTypeName,
    pub action: EntityTypeName,
    pub tool: EntityTypeName,
    pub prompt: EntityTypeName,
    pub resource: EntityTypeName,
    pub server: EntityTypeName,
    pub null: EntityTypeName,
    pub number: EntityTypeName,
}

/// The resource entity types, whose ids are folded for forbid policies.
pub const RESOURCE_TYPES: [&str; 3] = [
    "Portcullis::Tool",
    "Portcullis::Prompt",
    "Portcullis::Resource",
];

impl Types {
    pub fn new() -> Result<Types, String> {
        let t = |name: &str| {
            EntityTypeName::from_str(name).map_err(|e| format!("cedar: entity type {name}: {e}"))
        };
        Ok(Types {
            user: t("Portcullis::User")?,
            group: t("Portcullis::Group")?,
            action: t("Portcullis::Action")?,
            tool: t(RESOURCE_TYPES[0])?,
            prompt: t(RESOURCE_TYPES[1])?,
            resource: t(RESOURCE_TYPES[2])?,
            server: t("Portcullis::Server")?,
            null: t("Portcullis::Null")?,
            number: t("Portcullis::Number")?,
        })
    }

    /// The actions the plugin asks about: one per call method, its JSON-RPC
    /// method name as the id.
    pub fn call_actions(&self) -> Vec<EntityUid> {
        CallMethod::ALL
            .map(|m| Types::uid(&self.action, m.name()))
            .to_vec()
    }

    fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }

    /// The resource type of a call method's target: `Portcullis::Tool`,
    /// `Portcullis::Prompt` or `Portcullis::Resource`.
    fn target(&self, method: CallMethod) -> &EntityTypeName {
        match method {
            CallMethod::Tool => &self.tool,
            CallMethod::Prompt => &self.prompt,
            CallMethod::Resource => &self.resource,
        }
    }
}

/// Forbid policies and entities with tool, prompt and resource names folded
/// (see [`crate::lookalike`]), for the second, look-alike pass.
pub struct Folded {
    /// Only the forbid policies, ids unchanged, sliced.
    pub policies: Sliced,
    pub entities: Entities,
    /// Whether folding changed any policy or entity. When it did not, a name
    /// that is its own folded form needs no second pass.
    pub changed: bool,
}

/// The compiled configuration.
pub struct Engine {
    pub policies: PolicySet,
    /// `policies`, cut by action and resource (see [`crate::slice`]).
    sliced: Sliced,
    /// Ids of the forbid policies: their evaluation errors refuse the call.
    pub forbids: HashSet<PolicyId>,
    /// `None` when there are no forbid policies.
    pub folded: Option<Folded>,
    /// The `entities` of the configuration (and the schema's actions).
    pub entities: Entities,
    /// Request methods open to everyone (never the call methods).
    pub open_methods: Vec<Glob>,
    /// Non-fatal remarks for the log (schema and validation warnings).
    pub warnings: Vec<String>,
    pub types: Types,
    authorizer: Authorizer,
}

/// Who asks, where, for what.
pub struct Target<'a> {
    pub principal: &'a Principal,
    pub server: &'a str,
    pub tunnel: &'a str,
    pub method: CallMethod,
    /// The tool or prompt name, or the resource URI, as sent.
    pub name: &'a str,
}

/// A call's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed by these permit policies.
    Allowed(Vec<String>),
    /// Refused. `policies` are the forbid policies that decided it, empty
    /// for a refusal no policy asked for (nothing permits it, or the request
    /// could not be built).
    Denied {
        policies: Vec<String>,
        reason: String,
    },
}

impl Outcome {
    fn default_deny(reason: String) -> Outcome {
        Outcome::Denied {
            policies: Vec::new(),
            reason,
        }
    }
}

/// How the arguments appear in the request's context.
enum Arguments<'a> {
    /// A call: the arguments as sent (`None`: no `arguments`, an empty record).
    Known(Option<&'a Value>),
    /// A list entry: no arguments yet, an unknown for partial evaluation.
    Unknown,
}

impl Engine {
    pub fn new(
        policies: PolicySet,
        folded: Option<Folded>,
        entities: Entities,
        open_methods: Vec<Glob>,
        warnings: Vec<String>,
        types: Types,
    ) -> Result<Engine, String> {
        let sliced = Sliced::new(&policies, &types.call_actions())?;
        let forbids = policies
            .policies()
            .filter(|p| p.effect() == Effect::Forbid)
            .map(|p| p.id().clone())
            .collect();
        Ok(Engine {
            policies,
            sliced,
            forbids,
            folded,
            entities,
            open_methods,
            warnings,
            types,
            authorizer: Authorizer::new(),
        })
    }

    // -----------------------------------------------------------------------
    // Values
    // -----------------------------------------------------------------------

    /// A JSON value as a Cedar value: objects become records, arrays sets,
    /// strings, booleans and integers themselves. Numbers Cedar has no exact
    /// form for, and `null`, become opaque entities (see [`Engine::number`]):
    /// nothing is dropped or rounded, and any comparison other than equality
    /// with them is an evaluation error, which fails closed.
    pub fn value(&self, v: &Value) -> Result<RestrictedExpression, String> {
        Ok(match v {
            Value::Null => {
                RestrictedExpression::new_entity_uid(Types::uid(&self.types.null, "null"))
            }
            Value::Bool(b) => RestrictedExpression::new_bool(*b),
            Value::Number(n) => self.number(n),
            Value::String(s) => RestrictedExpression::new_string(s.clone()),
            Value::Array(items) => RestrictedExpression::new_set(
                items
                    .iter()
                    .map(|i| self.value(i))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Value::Object(map) => RestrictedExpression::new_record(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.value(v)?)))
                    .collect::<Result<Vec<_>, String>>()?,
            )
            .map_err(|e| e.to_string())?,
        })
    }

    /// A JSON number: a `Long` when it is an integer in the i64 range
    /// (`100.0` included, like `100`), else a `decimal` when it has at most
    /// four decimal places and fits (`12.5` is `decimal("12.5")`), else the
    /// opaque entity `Portcullis::Number::"<number as JSON>"`.
    pub fn number(&self, n: &Number) -> RestrictedExpression {
        if let Some(i) = n.as_i64() {
            return RestrictedExpression::new_long(i);
        }
        if let Some(f) = n.as_f64().filter(|_| !n.is_u64()) {
            // 2^63 is exactly representable; i64 covers [-2^63, 2^63).
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
                return RestrictedExpression::new_long(f as i64);
            }
            if let Some(text) = decimal_text(f) {
                return RestrictedExpression::new_decimal(text);
            }
        }
        RestrictedExpression::new_entity_uid(Types::uid(&self.types.number, &n.to_string()))
    }

    // -----------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------

    /// The attributes and parents `base` gives `uid` (none when absent).
    fn configured(
        base: &Entities,
        uid: &EntityUid,
    ) -> (HashMap<String, RestrictedExpression>, HashSet<EntityUid>) {
        match base.get(uid) {
            Some(e) => {
                let (_, attrs, parents) = e.clone().into_inner();
                (attrs, parents)
            }
            None => (HashMap::new(), HashSet::new()),
        }
    }

    /// `Portcullis::User::"<subject>"`, in `Portcullis::Group::"<g>"` for
    /// each group, with the claims as attributes (where `entities` does not
    /// already give that attribute).
    fn principal_entity(&self, base: &Entities, p: &Principal) -> Result<Entity, String> {
        let uid = Types::uid(&self.types.user, &p.subject);
        let (mut attrs, mut parents) = Self::configured(base, &uid);
        parents.extend(p.groups.iter().map(|g| Types::uid(&self.types.group, g)));
        if let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(&p.claims) {
            for (k, v) in &claims {
                if !attrs.contains_key(k) {
                    attrs.insert(k.clone(), self.value(v)?);
                }
            }
        }
        Entity::new(uid, attrs, parents).map_err(|e| format!("principal entity: {e}"))
    }

    /// `Portcullis::Tool::"<id>"` (`Prompt`, `Resource`) with attributes
    /// `name`, `server`, `tunnel`, in `Portcullis::Server::"<server>"`.
    fn resource_entity(&self, base: &Entities, t: &Target<'_>, id: &str) -> Result<Entity, String> {
        let uid = Types::uid(self.types.target(t.method), id);
        let (mut attrs, mut parents) = Self::configured(base, &uid);
        for (k, v) in [("name", id), ("server", t.server), ("tunnel", t.tunnel)] {
            attrs.insert(k.into(), RestrictedExpression::new_string(v.to_owned()));
        }
        parents.insert(Types::uid(&self.types.server, t.server));
        Entity::new(uid, attrs, parents).map_err(|e| format!("resource entity: {e}"))
    }

    /// The request for `t` with the resource named `id`, and its entities:
    /// `base` plus the principal and resource entities.
    fn request(
        &self,
        base: &Entities,
        t: &Target<'_>,
        id: &str,
        context: Context,
    ) -> Result<(Request, Entities), String> {
        let principal = self.principal_entity(base, t.principal)?;
        let resource = self.resource_entity(base, t, id)?;
        let (p, r) = (principal.uid(), resource.uid());
        let entities = base
            .clone()
            .upsert_entities([principal, resource], None)
            .map_err(|e| format!("entities: {e}"))?;
        let action = Types::uid(&self.types.action, t.method.name());
        let request = Request::new(p, action, r, context, None).map_err(|e| e.to_string())?;
        Ok((request, entities))
    }

    /// `{arguments, claims, server, tunnel}`: `claims` is the principal's
    /// token claims as a record (empty for an API key, or claims that do
    /// not parse as an object).
    fn context(&self, t: &Target<'_>, args: Arguments<'_>) -> Result<Context, String> {
        let claims = match serde_json::from_str::<Value>(&t.principal.claims) {
            Ok(v @ Value::Object(_)) => self.value(&v)?,
            _ => RestrictedExpression::new_record([]).map_err(|e| e.to_string())?,
        };
        let arguments = match args {
            Arguments::Known(Some(v)) => self.value(v)?,
            Arguments::Known(None) => {
                RestrictedExpression::new_record([]).map_err(|e| e.to_string())?
            }
            Arguments::Unknown => RestrictedExpression::new_unknown("arguments"),
        };
        Context::from_pairs([
            ("arguments".to_owned(), arguments),
            ("claims".to_owned(), claims),
            (
                "server".to_owned(),
                RestrictedExpression::new_string(t.server.to_owned()),
            ),
            (
                "tunnel".to_owned(),
                RestrictedExpression::new_string(t.tunnel.to_owned()),
            ),
        ])
        .map_err(|e| format!("arguments: {e}"))
    }

    // -----------------------------------------------------------------------
    // Decisions
    // -----------------------------------------------------------------------

    /// Decides a call of `t` with `args` (`params.arguments`).
    pub fn authorize(&self, t: &Target<'_>, args: Option<&Value>) -> Outcome {
        // Only refusals describe the call.
        let what = || {
            format!(
                "{:?} calling {} {:?}",
                t.principal.subject,
                t.method.name(),
                t.name
            )
        };
        let built = self.context(t, Arguments::Known(args)).and_then(|context| {
            let (request, entities) = self.request(&self.entities, t, t.name, context.clone())?;
            Ok((request, entities, context))
        });
        let (request, entities, context) = match built {
            Ok(b) => b,
            Err(e) => {
                return Outcome::default_deny(format!(
                    "cannot build the Cedar request for {}: {e}",
                    what()
                ));
            }
        };
        let response =
            self.authorizer
                .is_authorized(&request, self.sliced.for_request(&request), &entities);
        if let Some(denied) = self.forbid_errors(&response, &what, "") {
            return denied;
        }
        let reason = ids(response.diagnostics().reason());
        match response.decision() {
            Decision::Deny if !reason.is_empty() => Outcome::Denied {
                reason: format!("forbid policy {} refuses {}", quoted(&reason), what()),
                policies: reason,
            },
            Decision::Deny => {
                let mut why = format!("no permit policy applies to {}", what());
                for e in response.diagnostics().errors() {
                    why.push_str(&format!("; {e}"));
                }
                Outcome::default_deny(why)
            }
            Decision::Allow => match self.lookalike(t, context, &what) {
                Some(denied) => denied,
                None => Outcome::Allowed(reason),
            },
        }
    }

    /// A refusal when a forbid policy failed to evaluate: Cedar would skip
    /// it, which would let a malformed argument dodge the forbid.
    fn forbid_errors(
        &self,
        response: &Response,
        what: &dyn Fn() -> String,
        pass: &str,
    ) -> Option<Outcome> {
        let mut policies = Vec::new();
        let mut why = Vec::new();
        for e in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            if self.forbids.contains(pe.policy_id()) {
                policies.push(pe.policy_id().to_string());
                why.push(pe.inner().to_string());
            }
        }
        if policies.is_empty() {
            return None;
        }
        policies.sort();
        policies.dedup();
        Some(Outcome::Denied {
            reason: format!(
                "forbid policy {} could not be evaluated for {}{pass}, refused (fail closed): {}",
                quoted(&policies),
                what(),
                why.join("; ")
            ),
            policies,
        })
    }

    /// The second pass of an allowed call: the forbid policies, folded,
    /// against the folded (canonical) name (`DELETE_user`,
    /// `delete\u{200B}_user`, `dеlete_user` → `delete_user`). Only refusals
    /// count; permits never see folded names.
    fn lookalike(
        &self,
        t: &Target<'_>,
        context: Context,
        what: &dyn Fn() -> String,
    ) -> Option<Outcome> {
        let folded = self.folded.as_ref()?;
        let name = canonical(t.name);
        if !folded.changed && name == t.name {
            return None;
        }
        let pass = format!(" (as look-alike {name:?})");
        let (request, entities) = match self.request(&folded.entities, t, &name, context) {
            Ok(r) => r,
            Err(e) => {
                return Some(Outcome::default_deny(format!(
                    "cannot build the look-alike request for {}: {e}",
                    what()
                )));
            }
        };
        let response = self.authorizer.is_authorized(
            &request,
            folded.policies.for_request(&request),
            &entities,
        );
        if let Some(denied) = self.forbid_errors(&response, what, &pass) {
            return Some(denied);
        }
        let reason = ids(response.diagnostics().reason());
        if reason.is_empty() {
            return None;
        }
        Some(Outcome::Denied {
            reason: format!("forbid policy {} refuses {}{pass}", quoted(&reason), what()),
            policies: reason,
        })
    }

    /// Whether a list entry stays: Cedar's partial evaluation of the call
    /// with the arguments unknown. Visible when some permit policy is
    /// satisfied or depends only on the arguments, and no forbid policy is
    /// satisfied or fails regardless of them (folded names included).
    pub fn visible(&self, t: &Target<'_>) -> bool {
        let Ok(context) = self.context(t, Arguments::Unknown) else {
            return false;
        };
        let Ok((request, entities)) = self.request(&self.entities, t, t.name, context.clone())
        else {
            return false;
        };
        let response = self.authorizer.is_authorized_partial(
            &request,
            self.sliced.for_request(&request),
            &entities,
        );
        if self.forbidden_partial(&response) {
            return false;
        }
        let permitted = response
            .definitely_satisfied()
            .chain(response.nontrivial_residuals())
            .any(|p| p.effect() == Effect::Permit);
        if !permitted {
            return false;
        }
        let Some(folded) = &self.folded else {
            return true;
        };
        let name = canonical(t.name);
        if !folded.changed && name == t.name {
            return true;
        }
        let Ok((request, entities)) = self.request(&folded.entities, t, &name, context) else {
            return false;
        };
        let response = self.authorizer.is_authorized_partial(
            &request,
            folded.policies.for_request(&request),
            &entities,
        );
        !self.forbidden_partial(&response)
    }

    fn forbidden_partial(&self, response: &cedar_policy::PartialResponse) -> bool {
        response
            .definitely_satisfied()
            .any(|p| p.effect() == Effect::Forbid)
            || response
                .definitely_errored()
                .any(|id| self.forbids.contains(id))
    }
}

/// Policy ids, sorted, as strings.
fn ids<'a>(ids: impl Iterator<Item = &'a PolicyId>) -> Vec<String> {
    let mut out: Vec<String> = ids.map(ToString::to_string).collect();
    out.sort();
    out
}

/// `"a"`, `"a", "b"` for reasons.
fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `f` as the text of a Cedar `decimal` (at most four decimal places, within
/// ±922337203685477.5807), when it is exactly that in its shortest form.
fn decimal_text(f: f64) -> Option<String> {
    // `Display` for f64 is the shortest text that reads back as `f`, and
    // never uses an exponent.
    let text = format!("{f}");
    let (int, frac) = text.split_once('.')?;
    if frac.is_empty() || frac.len() > 4 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scaled: i128 = format!("{int}{frac:0<4}").parse().ok()?;
    i64::try_from(scaled).ok()?;
    Some(text)
}
