//! The compiled policy and its evaluation: the input document in, the
//! values of `allow`, `deny` and `annotations` out, read into a
//! [`Decision`] that fails closed on anything but `allow == true` and no
//! `deny`.

use std::sync::Mutex;

use portcullis_plugin_sdk::names::{Glob, canonical, canonical_pattern};
use portcullis_plugin_sdk::{Annotation, AnnotationValue};
use regorus::Value;

use crate::config::PACKAGE;

/// Which decision rules the modules define.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rules {
    pub allow: bool,
    pub deny: bool,
    pub annotations: bool,
}

/// The compiled configuration.
pub struct Policy {
    /// The interpreter with the modules and data loaded. Evaluation needs
    /// `&mut` (it sets the input and resets its state per query); calls
    /// into one component instance never overlap, so the lock is never
    /// contended there.
    rego: Mutex<regorus::Engine>,
    pub rules: Rules,
    /// Request methods open to everyone (never the call methods).
    pub open_methods: Vec<Glob>,
    /// The module names, for the log.
    pub modules: Vec<String>,
}

/// What the rules said about one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `allow` is `true` and `deny` is empty or undefined.
    Allow { annotations: Vec<Annotation> },
    /// `deny` holds reasons (sorted): refused whatever `allow` says.
    Deny {
        reasons: Vec<String>,
        annotations: Vec<Annotation>,
    },
    /// `allow` is undefined, `false` or not a boolean: nothing allows it.
    NotAllowed {
        why: String,
        annotations: Vec<Annotation>,
    },
    /// Evaluating a rule failed (a type error, a builtin's error, a rule
    /// conflict), or a rule's value has the wrong shape: refused.
    Error(String),
}

const ALLOW: &str = "data.portcullis.allow";
const DENY: &str = "data.portcullis.deny";
const ANNOTATIONS: &str = "data.portcullis.annotations";

/// The audit label key the plugin names its deciding rule under; a policy's
/// own annotations cannot use it.
pub const LABEL: &str = "rule";

impl Policy {
    pub fn new(
        rego: regorus::Engine,
        rules: Rules,
        open_methods: Vec<Glob>,
        modules: Vec<String>,
    ) -> Policy {
        Policy {
            rego: Mutex::new(rego),
            rules,
            open_methods,
            modules,
        }
    }

    /// Evaluates the rules once on an empty call, so that errors every
    /// evaluation would hit (an unknown function, conflicting rules) fail
    /// `init`. The interpreter is prepared for the calls as a side effect.
    pub fn trial(&self) -> Result<(), String> {
        let input = crate::input::empty();
        match self.decide(input) {
            Decision::Error(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Evaluates the decision rules for `input`.
    pub fn decide(&self, input: Value) -> Decision {
        // A poisoned lock means a panic inside an evaluation, which only a
        // native build survives (in the component it is a trap): refuse
        // rather than trust the interpreter's state.
        let Ok(mut rego) = self.rego.lock() else {
            return Decision::Error("the interpreter panicked in an earlier call".into());
        };
        rego.set_input(input);
        let allow = match rego.eval_rule(ALLOW.into()) {
            Ok(v) => v,
            Err(e) => return Decision::Error(format!("{ALLOW}: {}", render(&e))),
        };
        let deny = if self.rules.deny {
            match rego.eval_rule(DENY.into()) {
                Ok(v) => v,
                Err(e) => return Decision::Error(format!("{DENY}: {}", render(&e))),
            }
        } else {
            Value::Undefined
        };
        let annotations = if self.rules.annotations {
            let value = match rego.eval_rule(ANNOTATIONS.into()) {
                Ok(v) => v,
                Err(e) => return Decision::Error(format!("{ANNOTATIONS}: {}", render(&e))),
            };
            match annotations(&value) {
                Ok(a) => a,
                Err(e) => return Decision::Error(format!("{ANNOTATIONS}: {e}")),
            }
        } else {
            Vec::new()
        };
        drop(rego);
        let reasons = match reasons(&deny) {
            Ok(r) => r,
            Err(e) => return Decision::Error(format!("{DENY}: {e}")),
        };
        if !reasons.is_empty() {
            return Decision::Deny {
                reasons,
                annotations,
            };
        }
        match allow {
            Value::Bool(true) => Decision::Allow { annotations },
            Value::Undefined => Decision::NotAllowed {
                why: format!("{ALLOW} is undefined"),
                annotations,
            },
            Value::Bool(false) => Decision::NotAllowed {
                why: format!("{ALLOW} is false"),
                annotations,
            },
            other => Decision::NotAllowed {
                why: format!("{ALLOW} is {}, not true", shown(&other)),
                annotations,
            },
        }
    }
}

/// The refusal reasons in a `deny` value: none when it is undefined, `false`
/// or an empty set or array; its strings (others as JSON) when it is a
/// set or array; one reason for `true` or a string. Any other value is an
/// error, so a rule that went wrong refuses rather than passes.
fn reasons(deny: &Value) -> Result<Vec<String>, String> {
    let items: Vec<&Value> = match deny {
        Value::Undefined | Value::Bool(false) => return Ok(Vec::new()),
        Value::Bool(true) => return Ok(vec![format!("{DENY} is true")]),
        Value::String(s) => return Ok(vec![s.to_string()]),
        Value::Set(set) => set.iter().collect(),
        Value::Array(items) => items.iter().collect(),
        other => {
            return Err(format!(
                "is {}, not a set of reasons (write `deny contains \"reason\" if ...`)",
                shown(other)
            ));
        }
    };
    let mut out: Vec<String> = items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s.to_string(),
            other => shown(other),
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The `annotations` object as audit annotations: strings and booleans
/// become labels, non-negative integers counts. Anything else, and the key
/// [`LABEL`], is an error.
fn annotations(value: &Value) -> Result<Vec<Annotation>, String> {
    let object = match value {
        Value::Undefined => return Ok(Vec::new()),
        Value::Object(o) => o,
        other => return Err(format!("is {}, not an object", shown(other))),
    };
    let mut out = Vec::with_capacity(object.len());
    for (k, v) in object.iter() {
        let Value::String(key) = k else {
            return Err(format!("key {} is not a string", shown(k)));
        };
        if key.is_empty() || &**key == LABEL {
            return Err(format!(
                "key {key:?} is reserved (the plugin's `{LABEL}` label) or empty"
            ));
        }
        let value = match v {
            Value::String(s) => AnnotationValue::Label(s.to_string()),
            Value::Bool(b) => AnnotationValue::Label(b.to_string()),
            Value::Number(_) => match v.as_u64() {
                Ok(n) => AnnotationValue::Count(n),
                Err(_) => {
                    return Err(format!(
                        "{key:?} is {}: counts are non-negative integers",
                        shown(v)
                    ));
                }
            },
            other => {
                return Err(format!(
                    "{key:?} is {}: values are strings, booleans or counts",
                    shown(other)
                ));
            }
        };
        out.push(Annotation {
            key: key.to_string(),
            value,
        });
    }
    Ok(out)
}

/// A value for a reason: its JSON text, or its kind when it has none.
fn shown(v: &Value) -> String {
    match v {
        Value::Undefined => "undefined".into(),
        other => serde_json::to_string(other).unwrap_or_else(|_| "a value".into()),
    }
}

/// One regorus error on one line: `file:line:col: message` when it points
/// into a module (its text spans several lines with the source quoted),
/// else its message with whitespace collapsed.
pub fn render(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let location = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .map(str::trim);
    let message = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("error: "))
        .next_back()
        .map(str::trim);
    match (location, message) {
        (Some(at), Some(message)) => format!("{at}: {message}"),
        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The SDK's name functions, for policies that compare names the way
/// `authz`'s deny rules and `deny-tools` do:
///
/// * `portcullis.canonical(s)`: the canonical form of `s`
///   ([`canonical`]);
/// * `portcullis.like(name, pattern)`: whether the canonical form of `name`
///   matches the glob `pattern` (`*` for any run of characters), itself
///   taken piece by piece to its canonical form ([`canonical_pattern`]).
pub fn add_extensions(rego: &mut regorus::Engine) -> Result<(), String> {
    rego.add_extension(
        format!("{PACKAGE}.canonical"),
        1,
        Box::new(|args: Vec<Value>| match args.as_slice() {
            [Value::String(s)] => Ok(Value::from(canonical(s).as_ref())),
            _ => anyhow::bail!("portcullis.canonical expects a string"),
        }),
    )
    .map_err(|e| render(&e))?;
    rego.add_extension(
        format!("{PACKAGE}.like"),
        2,
        Box::new(|args: Vec<Value>| match args.as_slice() {
            [Value::String(name), Value::String(pattern)] => Ok(Value::from(
                Glob::new(&canonical_pattern(pattern)).matches(&canonical(name)),
            )),
            _ => anyhow::bail!("portcullis.like expects a name and a pattern, both strings"),
        }),
    )
    .map_err(|e| render(&e))
}
