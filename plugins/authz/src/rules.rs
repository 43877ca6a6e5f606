//! The compiled policy and its evaluation: argument conditions and the
//! allow/deny decision, over the SDK's call methods, globs and canonical
//! names ([`portcullis_plugin_sdk::names`]). Everything here is built once
//! by [`crate::config`] and then only read; matching does not allocate
//! (except the canonical form of a name that needs one).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use portcullis_plugin_sdk::names::{CallMethod, Glob, canonical};
use portcullis_plugin_sdk::strict::Arguments;
use portcullis_plugin_sdk::{Principal, Value};
use regex_lite::Regex;
use serde_json::Number;
use serde_json::value::RawValue;

use crate::decimal::Decimal;

/// True when any glob matches.
fn any_glob(globs: &[Glob], text: &str) -> bool {
    globs.iter().any(|g| g.matches(text))
}

// ---------------------------------------------------------------------------
// Argument conditions
// ---------------------------------------------------------------------------

/// One step of an argument path: an object key, or (when the step is a
/// canonical decimal number) also an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub key: String,
    pub index: Option<usize>,
}

impl Step {
    pub fn new(key: &str) -> Step {
        let canonical = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_digit())
            && (key == "0" || !key.starts_with('0'));
        Step {
            key: key.to_owned(),
            index: if canonical { key.parse().ok() } else { None },
        }
    }
}

/// The value at `path` under `root`, following exactly that path.
pub fn lookup<'v>(root: Option<&'v Value>, path: &[Step]) -> Option<&'v Value> {
    let mut cur = root?;
    for step in path {
        cur = match cur {
            Value::Object(map) => map.get(&step.key)?,
            Value::Array(items) => items.get(step.index?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The JSON text at `path` under `text` (the arguments as sent), following
/// exactly that path, like [`lookup`]: how the number there was written.
pub fn lookup_text<'t>(text: &'t str, path: &[Step]) -> Option<&'t str> {
    let mut cur = text;
    for step in path {
        cur = match cur.trim_start().as_bytes().first()? {
            b'{' => {
                let map: HashMap<String, &'t RawValue> = serde_json::from_str(cur).ok()?;
                map.get(&step.key)?.get()
            }
            b'[' => {
                let items: Vec<&'t RawValue> = serde_json::from_str(cur).ok()?;
                items.get(step.index?)?.get()
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// Numeric comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Lte,
    Gt,
    Gte,
}

/// What a condition checks at its path.
#[derive(Debug)]
pub enum Check {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    /// Against the configured number, exactly (see [`crate::decimal`]).
    Cmp(Cmp, Decimal),
    /// Compiled as `\A(?:pattern)\z`: a full match.
    Regex(Regex),
    Present,
    Absent,
}

/// The result of a condition on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    Fails,
    /// The argument exists but has the wrong JSON type for the check (a
    /// string `"100"` for `lte 100`), or is a number that cannot be compared
    /// exactly (an exponent beyond [`crate::decimal::MAX_EXPONENT`]). Never
    /// satisfies an allow rule; makes a deny rule's condition hold, so type
    /// confusion cannot dodge a deny.
    Mismatch,
}

/// `arg` `op` `value`, compiled.
#[derive(Debug)]
pub struct Condition {
    pub path: Vec<Step>,
    pub check: Check,
}

impl Condition {
    /// Evaluates against `params.arguments` (`None` when absent).
    pub fn eval(&self, args: Option<&Arguments<'_>>) -> Outcome {
        let found = lookup(args.map(|a| &a.value), &self.path);
        let Some(v) = found else {
            return if matches!(self.check, Check::Absent) {
                Outcome::Holds
            } else {
                Outcome::Fails
            };
        };
        // The argument as written: numbers compare exactly.
        let text = || args.and_then(|a| lookup_text(a.text, &self.path));
        let holds = |b: Option<bool>| match b {
            Some(true) => Outcome::Holds,
            Some(false) => Outcome::Fails,
            None => Outcome::Mismatch,
        };
        let any_eq = |xs: &[Value]| {
            let text = text()?;
            xs.iter()
                .try_fold(false, |hit, x| Some(hit || exact_eq(text, x)?))
        };
        match &self.check {
            Check::Present => Outcome::Holds,
            Check::Absent => Outcome::Fails,
            Check::Eq(x) if same_type(v, x) => holds(any_eq(std::slice::from_ref(x))),
            Check::Ne(x) if same_type(v, x) => holds(any_eq(std::slice::from_ref(x)).map(|b| !b)),
            Check::In(xs) if xs.iter().any(|x| same_type(v, x)) => holds(any_eq(xs)),
            Check::NotIn(xs) if xs.iter().any(|x| same_type(v, x)) => holds(any_eq(xs).map(|b| !b)),
            Check::Cmp(op, n) => match v {
                Value::Number(_) => holds(text().and_then(|t| Decimal::parse(t.trim())).map(|v| {
                    match (op, v.cmp(n)) {
                        (Cmp::Lt, o) => o == Ordering::Less,
                        (Cmp::Lte, o) => o != Ordering::Greater,
                        (Cmp::Gt, o) => o == Ordering::Greater,
                        (Cmp::Gte, o) => o != Ordering::Less,
                    }
                })),
                _ => Outcome::Mismatch,
            },
            Check::Regex(re) => match v {
                Value::String(s) => holds(Some(re.is_match(s))),
                _ => Outcome::Mismatch,
            },
            Check::Eq(_) | Check::Ne(_) | Check::In(_) | Check::NotIn(_) => Outcome::Mismatch,
        }
    }
}

/// Same JSON type (all numbers are one type).
fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// JSON equality of the argument written as `text` with the configured
/// `x`, where numbers compare exactly by value (`1` equals `1.0` and `1e0`;
/// `100.00000000000000001` is not `100`). `None` when a number in `text`
/// cannot be compared exactly (see [`Decimal::parse`]).
fn exact_eq(text: &str, x: &Value) -> Option<bool> {
    match x {
        Value::Number(n) => Some(Decimal::parse(text.trim())? == config_number(n)?),
        Value::Array(xs) => {
            let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) else {
                return Some(false);
            };
            if items.len() != xs.len() {
                return Some(false);
            }
            items
                .iter()
                .zip(xs)
                .try_fold(true, |all, (i, x)| Some(exact_eq(i.get(), x)? && all))
        }
        Value::Object(map) => {
            let Ok(items) = serde_json::from_str::<HashMap<String, &RawValue>>(text) else {
                return Some(false);
            };
            if items.len() != map.len() {
                return Some(false);
            }
            map.iter().try_fold(true, |all, (k, x)| match items.get(k) {
                Some(i) => Some(exact_eq(i.get(), x)? && all),
                None => Some(false),
            })
        }
        _ => Some(serde_json::from_str::<Value>(text).is_ok_and(|v| v == *x)),
    }
}

/// A number of the configuration, exactly as it reached the plugin.
pub fn config_number(n: &Number) -> Option<Decimal> {
    Decimal::parse(&n.to_string())
}

// ---------------------------------------------------------------------------
// Rules and the decision
// ---------------------------------------------------------------------------

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// A rule, compiled. `None` selectors match anything.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub subjects: Option<Vec<Glob>>,
    pub groups: Option<Vec<String>>,
    pub servers: Option<Vec<Glob>>,
    pub tunnels: Option<Vec<Glob>>,
    /// Bit set of [`CallMethod::bit`]s.
    pub methods: u8,
    /// For deny rules, compiled from canonical patterns (see [`canonical`]).
    pub tools: Option<Vec<Glob>>,
    /// Conditions on the call's arguments.
    pub when: Vec<Condition>,
    /// Conditions on the principal's claims: known when listing too, so
    /// they decide what a list shows as well as what a call may do.
    pub claims_when: Vec<Condition>,
}

/// Who asks, where, for what: everything a rule's selectors look at.
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub server: &'a str,
    pub tunnel: &'a str,
    pub method: CallMethod,
    /// The target exactly as sent (allow rules).
    pub name: &'a str,
    /// The target's canonical form (deny rules); see [`canonical`].
    pub canonical: &'a str,
    /// `params.arguments`, or `None` when listing (conditions ignored).
    pub args: Option<&'a Arguments<'a>>,
    /// The principal's claims, parsed (when some rule tests claims and
    /// they parse).
    pub claims: Option<&'a Arguments<'a>>,
}

impl Rule {
    /// True when every selector but `when` matches.
    fn selects(&self, r: &Request<'_>) -> bool {
        if self.methods & r.method.bit() == 0 {
            return false;
        }
        if let Some(tools) = &self.tools {
            let name = match self.effect {
                Effect::Allow => r.name,
                Effect::Deny => r.canonical,
            };
            if !any_glob(tools, name) {
                return false;
            }
        }
        if let Some(groups) = &self.groups
            && !r.principal.groups.iter().any(|g| groups.contains(g))
        {
            return false;
        }
        self.subjects
            .as_deref()
            .is_none_or(|s| any_glob(s, &r.principal.subject))
            && self
                .servers
                .as_deref()
                .is_none_or(|s| any_glob(s, r.server))
            && self
                .tunnels
                .as_deref()
                .is_none_or(|s| any_glob(s, r.tunnel))
    }

    /// True when every condition in `conditions` holds on `on` (a mismatch
    /// holds for a deny rule only).
    fn holds(&self, conditions: &[Condition], on: Option<&Arguments<'_>>) -> bool {
        conditions.iter().all(|c| match c.eval(on) {
            Outcome::Holds => true,
            Outcome::Fails => false,
            Outcome::Mismatch => self.effect == Effect::Deny,
        })
    }

    /// True when the selectors and the claim conditions match.
    fn selects_principal(&self, r: &Request<'_>) -> bool {
        self.selects(r) && self.holds(&self.claims_when, r.claims)
    }

    /// True when the rule applies to a call with these arguments.
    fn applies(&self, r: &Request<'_>) -> bool {
        self.selects_principal(r) && self.holds(&self.when, r.args)
    }
}

/// The whole policy, compiled.
#[derive(Debug)]
pub struct Policy {
    /// Deny rules, in configuration order.
    pub deny: Vec<Rule>,
    /// Allow rules, in configuration order.
    pub allow: Vec<Rule>,
    /// Methods any principal may use (never the call methods).
    pub open_methods: Vec<Glob>,
    /// Whether any deny rule looks at the target name (else no canonical form).
    pub deny_names: bool,
    /// Whether any rule tests claims (else they are not parsed).
    pub uses_claims: bool,
}

/// How a call was decided.
#[derive(Debug, Clone, Copy)]
pub enum Decided<'p> {
    Allowed(&'p Rule),
    Denied(&'p Rule),
    /// No rule allows it.
    Default,
}

impl Policy {
    /// The target's canonical form for deny rules, only when some deny rule
    /// needs it.
    pub fn canonical<'n>(&self, name: &'n str) -> Cow<'n, str> {
        if self.deny_names {
            canonical(name)
        } else {
            Cow::Borrowed(name)
        }
    }

    /// A call: first matching deny rule, else first matching allow rule,
    /// else denied by default.
    pub fn decide(&self, r: &Request<'_>) -> Decided<'_> {
        if let Some(rule) = self.deny.iter().find(|rule| rule.applies(r)) {
            return Decided::Denied(rule);
        }
        match self.allow.iter().find(|rule| rule.applies(r)) {
            Some(rule) => Decided::Allowed(rule),
            None => Decided::Default,
        }
    }

    /// A list entry: visible when some allow rule matches it (conditions
    /// ignored: the call may still be refused by its arguments) and no
    /// unconditional deny rule does. A deny rule with `when` conditions only
    /// refuses some calls, so it does not hide the entry.
    pub fn visible(&self, r: &Request<'_>) -> bool {
        !self
            .deny
            .iter()
            .any(|rule| rule.when.is_empty() && rule.selects_principal(r))
            && self.allow.iter().any(|rule| rule.selects_principal(r))
    }
}
