//! Strict, typed parsing of call requests (`tools/call`, `prompts/get`,
//! `resources/read`), for plugins that decide calls and must read exactly
//! what the upstream will read (`authz`, `cedar`).
//!
//! Each view is parsed in one pass straight from the text: only the fields a
//! decision needs are built, strings borrow from the message when they have
//! no escapes, and the rest is skipped without allocating.
//!
//! Duplicate keys are refused where they matter (`method`, `params`, `name`,
//! `uri`, and anywhere inside `arguments`): parsers disagree on which copy
//! wins, and the upstream must not act on a value other than the one checked.
//!
//! ```
//! use portcullis_plugin_sdk::strict::{Call, Obj, describe};
//!
//! let text = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
//!                "params":{"name":"lookup","arguments":{"id":7}}}"#;
//! let Obj(call): Obj<Call> = serde_json::from_str(text).unwrap();
//! assert_eq!(call.method.as_deref(), Some("tools/call"));
//! let params = call.params.unwrap().0;
//! assert_eq!(params.name.as_deref(), Some("lookup"));
//! let arguments = params.arguments().unwrap().unwrap();
//! assert_eq!((arguments.value["id"].as_u64(), arguments.text), (Some(7), r#"{"id":7}"#));
//!
//! let twice = r#"{"method":"tools/call","params":{"name":"x","arguments":{"a":1,"a":2}}}"#;
//! let Obj(call): Obj<Call> = serde_json::from_str(twice).unwrap();
//! let err = call.params.unwrap().0.arguments().unwrap_err();
//! assert!(describe(&err).starts_with("duplicate key"));
//! ```

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// Just the method of a request.
#[derive(Debug, serde::Deserialize)]
pub struct Head<'a> {
    /// `method`; `None` when absent or `null` (any other non-string is a
    /// parse error).
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
}

/// A `T` that must be written as a JSON object: serde's derived structs also
/// accept arrays (fields by position), which JSON-RPC `params` and messages
/// must not be read as.
#[derive(Debug)]
pub struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Obj<T>, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjVisitor(PhantomData)).map(Obj)
    }
}

/// A call request (`tools/call`, `prompts/get`, `resources/read`).
#[derive(Debug, serde::Deserialize)]
pub struct Call<'a> {
    /// `method`; `None` when absent or `null` (any other non-string is a
    /// parse error).
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    /// `params`; `None` when absent or `null`, else it must be an object.
    #[serde(borrow, default)]
    pub params: Option<Obj<CallParams<'a>>>,
}

/// The `params` of a call.
#[derive(Debug, serde::Deserialize)]
pub struct CallParams<'a> {
    /// `params.name` (tools and prompts); `None` when absent or `null`.
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// `params.uri` (resources); `None` when absent or `null`.
    #[serde(borrow, default)]
    pub uri: Option<Cow<'a, str>>,
    /// `params.arguments` as sent; `None` when absent or `null`. Read it
    /// with [`CallParams::arguments`].
    #[serde(borrow, default, rename = "arguments")]
    pub arguments_text: Option<&'a RawValue>,
}

impl<'a> CallParams<'a> {
    /// `params.arguments`, parsed strictly: an error for a duplicate key
    /// anywhere in them.
    pub fn arguments(&self) -> Result<Option<Arguments<'a>>, serde_json::Error> {
        let Some(raw) = self.arguments_text else {
            return Ok(None);
        };
        let Strict(value) = serde_json::from_str(raw.get())?;
        Ok(Some(Arguments {
            value,
            text: raw.get(),
        }))
    }
}

/// The `params.arguments` of a call: the value, and its JSON text exactly as
/// sent (numbers as written: the value's are rounded to `f64`).
#[derive(Debug, Clone, PartialEq)]
pub struct Arguments<'a> {
    /// The arguments, without duplicate keys.
    pub value: Value,
    /// Their JSON text as sent.
    pub text: &'a str,
}

/// A JSON value parsed like [`serde_json::Value`], except that an object
/// with the same key twice is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Strict(pub Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let Strict(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key in arguments"));
            }
        }
        Ok(Value::Object(map))
    }
}

/// A parse error described without quoting the message (no payload in the
/// audit trail).
pub fn describe(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    if e.to_string().contains("duplicate") {
        return format!("duplicate key (line {}, column {})", e.line(), e.column());
    }
    format!("{what} (line {}, column {})", e.line(), e.column())
}
