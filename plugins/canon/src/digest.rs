//! The pin digest of a tool definition.
//!
//! This is the contract between `schema-guard`, which checks pins, and the
//! gateway's `portcullis policy pin`, which writes them: both call this
//! module, so they produce the same string for the same definition. The
//! reference vector is [`vector`].
//!
//! # Algorithm
//!
//! 1. From the tool definition (one entry of a `tools/list` result, a JSON
//!    object), take the members `name`, `description`, `inputSchema` and
//!    `outputSchema`. A member absent from the definition is omitted; a
//!    member present with any value, `null` included, is kept as it is.
//!    Every other member (`title`, `annotations`, `_meta`, …) is ignored.
//! 2. Serialise that object as canonical JSON:
//!    * object members sorted by key, comparing the keys' UTF-8 bytes
//!      lexicographically, at every depth;
//!    * array elements in their original order;
//!    * no whitespace anywhere;
//!    * strings (keys and values) escaped as `serde_json` 1.x does by
//!      default: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control
//!      characters below U+0020 as `\u00XX` (lowercase hex), everything
//!      else, non-ASCII included, as raw UTF-8 (`/` is not escaped);
//!    * numbers as `serde_json` 1.x prints a parsed number: integers that
//!      fit `i64`/`u64` in decimal, everything else as the shortest `f64`
//!      round-trip form (`1.5`, `1.0`, `1e+100`, `-273.15`);
//!    * `true`, `false`, `null`.
//! 3. SHA-256 over those bytes, written as `sha256:` followed by 64
//!    lowercase hex digits.
//!
//! A definition that is not a JSON object has no members: its digest is the
//! digest of `{}`.

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The members of a tool definition covered by the digest.
pub const PINNED_MEMBERS: [&str; 4] = ["name", "description", "inputSchema", "outputSchema"];

/// Prefix of every digest string.
pub const PREFIX: &str = "sha256:";

/// The pin digest of `definition`: `sha256:<64 lowercase hex digits>`.
pub fn tool_digest(definition: &Value) -> String {
    let canonical = canonical_pinned(definition);
    let hash = Sha256::digest(canonical.as_bytes());
    let mut out = String::with_capacity(PREFIX.len() + 64);
    out.push_str(PREFIX);
    for byte in hash {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The canonical JSON text the digest is computed over (step 1 and 2).
pub fn canonical_pinned(definition: &Value) -> String {
    let mut out = String::new();
    out.push('{');
    let mut first = true;
    // PINNED_MEMBERS is not in byte order; sort it like any other object.
    let mut members: Vec<&str> = PINNED_MEMBERS.to_vec();
    members.sort_unstable();
    for key in members {
        if let Some(value) = definition.get(key) {
            if !first {
                out.push(',');
            }
            first = false;
            write_string(&mut out, key);
            out.push(':');
            write_canonical(&mut out, value);
        }
    }
    out.push('}');
    out
}

/// Canonical JSON of any value (step 2).
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            // Sort explicitly: `serde_json::Map` is only sorted when the
            // `preserve_order` feature is off, which another crate could
            // turn on. `str` ordering is byte-wise on UTF-8.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_canonical(out, value);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        // Scalars exactly as serde_json prints them.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

/// True when `s` has the digest format: `sha256:` and 64 lowercase hex
/// digits.
pub fn is_well_formed(s: &str) -> bool {
    s.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The reference vector: a definition exercising every rule of the
/// algorithm (ignored members, key order by bytes, escapes, non-ASCII,
/// number forms, a number with more digits than an `f64` holds, which only
/// a correctly rounded parse reads as every other side does), its canonical
/// text and its digest. The tests here check
/// it, and so does every build that links this crate with other
/// `serde_json` features (the gateway's `policy pin` tests).
pub mod vector {
    /// The reference definition.
    pub const DEFINITION: &str = r#"{
      "name": "get_weather",
      "title": "Weather (ignored: not pinned)",
      "description": "Weather for a city.\nSays \"°C\" & uses\ttabs/slashes \u0001.",
      "inputSchema": {
        "type": "object",
        "properties": {
          "city": {"type": "string", "maxLength": 100},
          "Zone": {"enum": ["north", "south", null]},
          "days": {"type": "integer", "minimum": 1, "maximum": 7, "default": 1.0},
          "ünits": {"type": "string"}
        },
        "required": ["city"],
        "additionalProperties": false
      },
      "outputSchema": {
        "type": "object",
        "properties": {"temp": {"type": "number", "minimum": -273.15, "exclusiveMaximum": 1e3,
                               "default": 2.71828182845904523536028747135266249}}
      },
      "annotations": {"readOnlyHint": true}
    }"#;

    /// The canonical text of [`DEFINITION`].
    pub const CANONICAL: &str = concat!(
        r#"{"description":"Weather for a city.\nSays \"°C\" & uses\ttabs/slashes \u0001.","#,
        r#""inputSchema":{"additionalProperties":false,"properties":{"#,
        r#""Zone":{"enum":["north","south",null]},"#,
        r#""city":{"maxLength":100,"type":"string"},"#,
        r#""days":{"default":1.0,"maximum":7,"minimum":1,"type":"integer"},"#,
        r#""ünits":{"type":"string"}},"required":["city"],"type":"object"},"#,
        r#""name":"get_weather","#,
        r#""outputSchema":{"properties":{"temp":{"default":2.718281828459045,"exclusiveMaximum":1000.0,"minimum":-273.15,"type":"number"}},"type":"object"}}"#,
    );

    /// The digest of [`DEFINITION`].
    pub const DIGEST: &str =
        "sha256:39bc6cfed96b70a57edf5c0ae15a55a1501c9450c1f1593330092b72c88012fb";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_vector() {
        let def: Value = serde_json::from_str(vector::DEFINITION).unwrap();
        assert_eq!(canonical_pinned(&def), vector::CANONICAL);
        assert_eq!(tool_digest(&def), vector::DIGEST);
        assert!(is_well_formed(vector::DIGEST));
    }

    #[test]
    fn members() {
        // Absent members are omitted, present nulls kept, others ignored.
        let def = json!({"name": "a", "outputSchema": null, "title": "t", "_meta": {"x": 1}});
        assert_eq!(
            canonical_pinned(&def),
            r#"{"name":"a","outputSchema":null}"#
        );
        assert_eq!(canonical_pinned(&json!("not an object")), "{}");
        // The digest of `{}`.
        assert_eq!(
            tool_digest(&json!([])),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn canonical_form() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [3, {"z": 1, "a": 2}], "a": "x/y", "B": -0.5e1 }"#)
                .unwrap();
        assert_eq!(
            canonical(&v),
            r#"{"B":-5.0,"a":"x/y","b":[3,{"a":2,"z":1}]}"#
        );
        // Integers beyond i64 stay integers; other numbers take the
        // shortest f64 round-trip form.
        let v: Value = serde_json::from_str(
            r#"[18446744073709551615, -9223372036854775808, 1e100, 5e-324, 0.1, -0.0, 1E2]"#,
        )
        .unwrap();
        assert_eq!(
            canonical(&v),
            "[18446744073709551615,-9223372036854775808,1e+100,5e-324,0.1,-0.0,100.0]"
        );
        // Byte order, not code point order of UTF-16: U+FFFD sorts before
        // U+1F600 in UTF-8 (EF.. < F0..) and after it in UTF-16.
        let v = json!({"\u{1F600}": 1, "\u{FFFD}": 2, "~": 3, "": 4});
        assert_eq!(
            canonical(&v),
            "{\"\":4,\"~\":3,\"\u{FFFD}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn description_and_schema_changes_change_the_digest() {
        let base = json!({"name": "t", "description": "d", "inputSchema": {"type": "object"}});
        let d0 = tool_digest(&base);
        let mut changed = base.clone();
        changed["description"] = json!("d ");
        assert_ne!(tool_digest(&changed), d0);
        let mut changed = base.clone();
        changed["inputSchema"]["properties"] = json!({});
        assert_ne!(tool_digest(&changed), d0);
        let mut changed = base.clone();
        changed["annotations"] = json!({"destructiveHint": true});
        assert_eq!(tool_digest(&changed), d0, "annotations are not pinned");
        // Key order in the input does not matter.
        let reordered: Value = serde_json::from_str(
            r#"{"inputSchema": {"type": "object"}, "description": "d", "name": "t"}"#,
        )
        .unwrap();
        assert_eq!(tool_digest(&reordered), d0);
    }

    #[test]
    fn well_formed() {
        let hex = "a".repeat(64);
        assert!(is_well_formed(&format!("sha256:{hex}")));
        for bad in [
            hex.clone(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}g", "a".repeat(63)),
            format!("SHA256:{hex}"),
            format!("sha512:{hex}"),
            String::new(),
        ] {
            assert!(!is_well_formed(&bad), "{bad}");
        }
    }
}
