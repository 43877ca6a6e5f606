//! The input document of a call or list entry (see the crate documentation,
//! "The input document"), and the check that every number in the
//! arguments has an exact value in the interpreter.

use std::collections::BTreeMap;

use portcullis_plugin_sdk::names::{CallMethod, canonical, is_canonical};
use portcullis_plugin_sdk::{Context, Principal};
use regorus::Value;

/// What the input describes.
pub enum Arguments<'a> {
    /// A call, with the JSON text of its `params.arguments` (`None`: no
    /// arguments, an empty object).
    Call(Option<&'a str>),
    /// A list entry: no arguments yet.
    Listing,
}

fn key(k: &str) -> Value {
    Value::from(k)
}

fn object(entries: Vec<(&str, Value)>) -> Value {
    let map: BTreeMap<Value, Value> = entries.into_iter().map(|(k, v)| (key(k), v)).collect();
    Value::from(map)
}

/// `{subject, groups, claims}`; claims `{}` for an API key, or claims that
/// are not a JSON object.
fn principal(p: &Principal) -> Value {
    let claims = match Value::from_json_str(&p.claims) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::new_object(),
    };
    object(vec![
        ("subject", Value::from(p.subject.as_str())),
        (
            "groups",
            Value::from(
                p.groups
                    .iter()
                    .map(|g| Value::from(g.as_str()))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("claims", claims),
    ])
}

/// The input for `method` on `name` (as sent) by the principal and route in
/// `ctx`. An error when the arguments are not JSON or hold a number the
/// interpreter would not read exactly.
pub fn build(
    ctx: &Context,
    method: CallMethod,
    name: &str,
    arguments: Arguments<'_>,
) -> Result<Value, String> {
    let mut entries = vec![
        ("principal", principal(&ctx.principal)),
        ("tunnel", Value::from(ctx.tunnel.as_str())),
        ("server", Value::from(ctx.server.as_str())),
        ("method", Value::from(method.name())),
        ("name", Value::from(name)),
        (method.noun(), Value::from(name)),
        ("canonical", Value::from(canonical(name).as_ref())),
        ("lookalike", Value::from(!is_canonical(name))),
    ];
    match arguments {
        Arguments::Call(text) => {
            let value = match text {
                Some(text) => {
                    if let Some(n) = inexact_number(text) {
                        return Err(format!(
                            "argument number {n} has no exact value in Rego (its numbers are \
                             64-bit integers and floats)"
                        ));
                    }
                    Value::from_json_str(text).map_err(|e| format!("arguments: {e}"))?
                }
                None => Value::new_object(),
            };
            entries.push(("arguments", value));
            entries.push(("listing", Value::from(false)));
        }
        Arguments::Listing => entries.push(("listing", Value::from(true))),
    }
    Ok(object(entries))
}

/// The input of the trial evaluation at `init`: a tool call with nothing
/// in it.
pub fn empty() -> Value {
    let ctx = Context {
        direction: portcullis_plugin_sdk::Direction::ToServer,
        tunnel: String::new(),
        server: String::new(),
        kind: portcullis_plugin_sdk::MessageKind::Request,
        method: Some(CallMethod::Tool.name().into()),
        target: None,
        request_id: None,
        session_id: None,
        protocol_version: None,
        principal: Principal {
            subject: String::new(),
            groups: Vec::new(),
            claims: "{}".into(),
        },
    };
    build(&ctx, CallMethod::Tool, "", Arguments::Call(None)).unwrap_or_else(|_| Value::new_object())
}

/// The first number in the JSON text `json` that a 64-bit integer or float
/// does not hold exactly (`100.00000000000000001`, `1e400`, `2^64`), as
/// written.
pub fn inexact_number(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' {
                        break;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while bytes
                    .get(i)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    i += 1;
                }
                let n = json.get(start..i)?;
                if !exact(n) {
                    return Some(n);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// True when the JSON number `n` reads exactly as a 64-bit integer, or as
/// the float whose shortest form has the same decimal value.
fn exact(n: &str) -> bool {
    if !n.contains(['.', 'e', 'E']) {
        return n.parse::<i64>().is_ok() || n.parse::<u64>().is_ok();
    }
    let Ok(f) = n.parse::<f64>() else {
        return false;
    };
    f.is_finite() && decimal(n) == decimal(&format!("{f:e}"))
}

/// A decimal number's sign, significant digits and the power of ten of the
/// first one: `0.0125` and `1.25e-2` are both `(false, "125", -1)`. Zero is
/// `(false, "", 0)` whatever its sign.
fn decimal(n: &str) -> (bool, String, i64) {
    let (negative, n) = match n.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, n),
    };
    let (mantissa, exponent) = match n.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(i64::MAX / 2)),
        None => (n, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0');
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    let point = exponent.saturating_add(int.len() as i64) - leading as i64;
    (negative, significant.to_owned(), point)
}
