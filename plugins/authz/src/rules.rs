//! The compiled policy and its evaluation: globs, name folding, argument
//! conditions and the allow/deny decision. Everything here is built once by
//! [`crate::config`] and then only read; matching does not allocate (except
//! folding a name that needs it).

use std::borrow::Cow;
use std::cmp::Ordering;

use portcullis_plugin_sdk::{Principal, Value};
use regex_lite::Regex;
use serde_json::Number;

// ---------------------------------------------------------------------------
// Call methods
// ---------------------------------------------------------------------------

/// The three methods that name something to use, and are decided by rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMethod {
    /// `tools/call`, target `params.name`.
    Tool,
    /// `prompts/get`, target `params.name`.
    Prompt,
    /// `resources/read`, target `params.uri`.
    Resource,
}

impl CallMethod {
    /// All three, in the order of their bits.
    pub const ALL: [CallMethod; 3] = [CallMethod::Tool, CallMethod::Prompt, CallMethod::Resource];

    /// The call method named `method`, if it is one.
    pub fn parse(method: &str) -> Option<CallMethod> {
        match method {
            "tools/call" => Some(CallMethod::Tool),
            "prompts/get" => Some(CallMethod::Prompt),
            "resources/read" => Some(CallMethod::Resource),
            _ => None,
        }
    }

    /// The call method whose targets a `*/list` response lists.
    pub fn listed_by(method: &str) -> Option<CallMethod> {
        match method {
            "tools/list" => Some(CallMethod::Tool),
            "prompts/list" => Some(CallMethod::Prompt),
            "resources/list" => Some(CallMethod::Resource),
            _ => None,
        }
    }

    /// The JSON-RPC method name.
    pub fn name(self) -> &'static str {
        match self {
            CallMethod::Tool => "tools/call",
            CallMethod::Prompt => "prompts/get",
            CallMethod::Resource => "resources/read",
        }
    }

    /// What the agent calls the target in an error (`Unknown tool: x`).
    pub fn noun(self) -> &'static str {
        match self {
            CallMethod::Tool => "tool",
            CallMethod::Prompt => "prompt",
            CallMethod::Resource => "resource",
        }
    }

    /// The `params` field naming the target, and in a list entry.
    pub fn target_field(self) -> &'static str {
        match self {
            CallMethod::Resource => "uri",
            _ => "name",
        }
    }

    /// The array of a `*/list` result holding the entries.
    pub fn list_field(self) -> &'static str {
        match self {
            CallMethod::Tool => "tools",
            CallMethod::Prompt => "prompts",
            CallMethod::Resource => "resources",
        }
    }

    /// This method's bit in [`Rule::methods`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

// ---------------------------------------------------------------------------
// Globs
// ---------------------------------------------------------------------------

/// A precompiled glob: `*` matches any run of characters (including none and
/// including `/`), everything else matches itself exactly (case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Glob {
    /// `*`.
    Any,
    /// No `*` at all.
    Exact(String),
    /// At least one `*`: the text before the first, the pieces between, and
    /// the text after the last.
    Wild {
        first: String,
        middle: Vec<String>,
        last: String,
    },
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Glob {
        if !pattern.contains('*') {
            return Glob::Exact(pattern.to_owned());
        }
        let mut pieces: Vec<String> = pattern.split('*').map(str::to_owned).collect();
        // `split` on a string containing `*` gives at least two pieces.
        let last = pieces.pop().unwrap_or_default();
        let first = if pieces.is_empty() {
            String::new()
        } else {
            pieces.remove(0)
        };
        pieces.retain(|p| !p.is_empty());
        if first.is_empty() && last.is_empty() && pieces.is_empty() {
            return Glob::Any;
        }
        Glob::Wild {
            first,
            middle: pieces,
            last,
        }
    }

    /// True when `text` matches. Linear in `text` for each middle piece
    /// (leftmost placement of each piece is always a valid choice).
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(s) => s == text,
            Glob::Wild {
                first,
                middle,
                last,
            } => {
                let Some(mut rest) = text.strip_prefix(first.as_str()) else {
                    return false;
                };
                for piece in middle {
                    match rest.find(piece.as_str()) {
                        Some(i) => rest = &rest[i + piece.len()..],
                        None => return false,
                    }
                }
                rest.ends_with(last.as_str())
            }
        }
    }
}

/// True when any glob matches.
fn any_glob(globs: &[Glob], text: &str) -> bool {
    globs.iter().any(|g| g.matches(text))
}

// ---------------------------------------------------------------------------
// Folding look-alikes (deny rules only)
// ---------------------------------------------------------------------------

/// Invisible characters removed before comparing with deny rules: the
/// zero-width space, non-joiner and joiner (U+200B..U+200D), the word joiner
/// (U+2060) and the BOM / zero-width no-break space (U+FEFF), plus other
/// invisible format characters with the same effect (soft hyphen, LRM/RLM,
/// bidi embeddings and isolates, invisible operators, variation selectors).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// The form of a name compared with deny rules: invisible characters
/// removed, fullwidth ASCII (U+FF01..U+FF5E) mapped to ASCII, lowercased.
/// Borrows when the name is already lowercase ASCII (the common case).
pub fn fold(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if is_invisible(c) {
            continue;
        }
        let c = if ('\u{FF01}'..='\u{FF5E}').contains(&c) {
            char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
        } else {
            c
        };
        out.extend(c.to_lowercase());
    }
    Cow::Owned(out)
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
    Cmp(Cmp, Number),
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
    /// string `"100"` for `lte 100`). Never satisfies an allow rule; makes a
    /// deny rule's condition hold, so type confusion cannot dodge a deny.
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
    pub fn eval(&self, args: Option<&Value>) -> Outcome {
        let found = lookup(args, &self.path);
        let Some(v) = found else {
            return if matches!(self.check, Check::Absent) {
                Outcome::Holds
            } else {
                Outcome::Fails
            };
        };
        let holds = |b: bool| if b { Outcome::Holds } else { Outcome::Fails };
        match &self.check {
            Check::Present => Outcome::Holds,
            Check::Absent => Outcome::Fails,
            Check::Eq(x) if same_type(v, x) => holds(json_eq(v, x)),
            Check::Ne(x) if same_type(v, x) => holds(!json_eq(v, x)),
            Check::In(xs) if xs.iter().any(|x| same_type(v, x)) => {
                holds(xs.iter().any(|x| json_eq(v, x)))
            }
            Check::NotIn(xs) if xs.iter().any(|x| same_type(v, x)) => {
                holds(!xs.iter().any(|x| json_eq(v, x)))
            }
            Check::Cmp(op, n) => match v {
                Value::Number(v) => holds(num_cmp(v, n).is_some_and(|o| match op {
                    Cmp::Lt => o == Ordering::Less,
                    Cmp::Lte => o != Ordering::Greater,
                    Cmp::Gt => o == Ordering::Greater,
                    Cmp::Gte => o != Ordering::Less,
                })),
                _ => Outcome::Mismatch,
            },
            Check::Regex(re) => match v {
                Value::String(s) => holds(re.is_match(s)),
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

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// Compares two JSON numbers: exactly when both are integers, else as f64.
fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    fn int(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
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
    /// For deny rules, compiled from folded patterns (see [`fold`]).
    pub tools: Option<Vec<Glob>>,
    pub when: Vec<Condition>,
}

/// Who asks, where, for what: everything a rule's selectors look at.
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub server: &'a str,
    pub tunnel: &'a str,
    pub method: CallMethod,
    /// The target exactly as sent (allow rules).
    pub name: &'a str,
    /// The target folded (deny rules); see [`fold`].
    pub folded: &'a str,
    /// `params.arguments`, or `None` when listing (conditions ignored).
    pub args: Option<&'a Value>,
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
                Effect::Deny => r.folded,
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

    /// True when the rule applies to a call with these arguments.
    fn applies(&self, r: &Request<'_>) -> bool {
        self.selects(r)
            && self.when.iter().all(|c| match c.eval(r.args) {
                Outcome::Holds => true,
                Outcome::Fails => false,
                Outcome::Mismatch => self.effect == Effect::Deny,
            })
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
    /// Whether any deny rule looks at the target name (else no folding).
    pub deny_names: bool,
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
    /// The target folded for deny rules, only when some deny rule needs it.
    pub fn fold<'n>(&self, name: &'n str) -> Cow<'n, str> {
        if self.deny_names {
            fold(name)
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
            .any(|rule| rule.when.is_empty() && rule.selects(r))
            && self.allow.iter().any(|rule| rule.selects(r))
    }

    /// True when `method` (not a call method) is open to everyone.
    pub fn is_open(&self, method: &str) -> bool {
        any_glob(&self.open_methods, method)
    }
}
