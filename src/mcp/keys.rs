//! Object keys: one reading of every message.
//!
//! Every object's keys are checked once, in one pass over the message, and
//! two kinds of object are refused, with the path of the first one found:
//!
//! * an object that repeats a key: parsers disagree on which copy wins
//!   (first, last, or an error), so a plugin and the upstream could act on
//!   different values;
//! * unless the server's policy allows it, an object with two keys that are
//!   one key under case folding (`amount` and `Amount`, `s` and `ſ`, `k`
//!   and the Kelvin sign `K`): many upstream binders match keys
//!   case-insensitively — Go's `encoding/json`, Jackson with
//!   `ACCEPT_CASE_INSENSITIVE_PROPERTIES`, .NET's `System.Text.Json` with
//!   `PropertyNameCaseInsensitive`, Json.NET by default — so a plugin that
//!   checked `amount` and an upstream that binds `Amount` would read one
//!   message two ways.
//!
//! The check is linear in the message: each key is folded once and looked
//! up once in a hash map per object (keyed by the standard library's
//! randomly seeded SipHash, so a flood of chosen keys cannot be made to
//! collide), never compared with every other key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::jsonrpc::ParseError;
use crate::limits::MAX_QUOTED_KEY_BYTES;

/// The case-insensitive identity of `key`, as the readers named in the
/// module documentation would match it, or coarser.
///
/// Each character becomes lowercase(uppercase(lowercase(c))) under Unicode's
/// one-character (simple) mappings, which puts it with every character it
/// reaches by changing case: `K`, `k` and the Kelvin sign `K` fold alike,
/// so do `S`, `s` and the long s `ſ`, `Σ`, `σ` and `ς`, `Å` and the
/// Ångström sign, and the four Turkish i's (`I`, `i`, dotless `ı`, dotted
/// `İ`), which Go (`ı`, `İ` → `I`) and .NET (`ı` → `I`) already match with
/// `i` and Jackson does under a Turkish default locale. A combining dot
/// above (U+0307) right after an `i` is dropped, because Java lowercases
/// `İ` to `i` + U+0307 outside Turkish locales. A character whose uppercase
/// is several characters (`ß` → `SS`, `ﬁ` → `FI`) keeps its identity: none
/// of those readers expands it either.
pub fn fold(key: &str) -> Cow<'_, str> {
    if key.is_ascii() {
        return if key.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(key.to_ascii_lowercase())
        } else {
            Cow::Borrowed(key)
        };
    }
    let mut out = String::with_capacity(key.len());
    let mut after_i = false;
    for c in key.chars() {
        if c == '\u{307}' && after_i {
            after_i = false;
            continue;
        }
        let f = fold_char(c);
        out.push(f);
        after_i = f == 'i';
    }
    Cow::Owned(out)
}

fn fold_char(c: char) -> char {
    lower(upper(lower(c)))
}

/// The simple lowercase mapping. Only `İ` lowercases to more than one
/// character (`i` + U+0307), and its simple mapping is the first of them.
fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// The simple uppercase mapping, or `c` itself where the uppercase is
/// several characters: for those (`ß`, `ŉ`, the Greek letters with iota
/// subscript, ligatures) the simple mapping is either `c` itself or a
/// titlecase letter that lowercases back to `c`.
fn upper(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// A key in one object's map: the folded form, or the key itself when case
/// does not matter. Equality is counted in unit tests, so that a check that
/// compares each key with every other (quadratic in a key-flooded object)
/// is caught by counting rather than timing.
#[derive(Hash)]
struct MapKey<'de>(Cow<'de, str>);

impl PartialEq for MapKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        #[cfg(test)]
        tests::COMPARED.with(|n| n.set(n.get() + 1));
        self.0 == other.0
    }
}

impl Eq for MapKey<'_> {}

/// What was wrong with an object.
enum Problem {
    Repeated(String),
    CaseCollision { first: String, second: String },
}

/// One step from the top of the message to the object found wrong.
enum Segment {
    Key(String),
    Index(usize),
}

/// A problem and its path, innermost segment first: each level pushes its
/// own segment while the error unwinds, so the path costs nothing unless a
/// problem is found.
struct Found {
    problem: Problem,
    path: Vec<Segment>,
}

impl Found {
    fn into_error(self) -> ParseError {
        let mut pointer = String::new();
        for segment in self.path.iter().rev() {
            pointer.push('/');
            match segment {
                Segment::Key(k) => pointer.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Segment::Index(i) => pointer.push_str(&i.to_string()),
            }
        }
        let path = cut(&pointer);
        match self.problem {
            Problem::Repeated(key) => ParseError::RepeatedKey {
                path,
                key: cut(&key),
            },
            Problem::CaseCollision { first, second } => ParseError::CaseCollidingKeys {
                path,
                first: cut(&first),
                second: cut(&second),
            },
        }
    }
}

/// `s`, cut to at most [`MAX_QUOTED_KEY_BYTES`] at a character boundary
/// (with `…` when cut): keys are the sender's text and may be huge.
fn cut(s: &str) -> String {
    if s.len() <= MAX_QUOTED_KEY_BYTES {
        return s.to_owned();
    }
    let end = s
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|&end| end <= MAX_QUOTED_KEY_BYTES)
        .last()
        .unwrap_or(0);
    let mut out = s.get(..end).unwrap_or("").to_owned();
    out.push('…');
    out
}

/// Reads one key, borrowing it from the message when it has no escapes
/// (serde's own `Cow<str>` always copies).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Walks one JSON value and its children, stopping at the first problem.
struct Walk<'f> {
    fold: bool,
    found: &'f mut Option<Found>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Walk { fold, found } = self;
        let mut index = 0;
        loop {
            let item = Walk {
                fold,
                found: &mut *found,
            };
            match seq.next_element_seed(item) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if let Some(f) = found.as_mut() {
                        f.path.push(Segment::Index(index));
                    }
                    return Err(e);
                }
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk { fold, found } = self;
        // Folded key → the key as written (to tell a repeat from a case
        // collision, and to name both).
        let mut seen: HashMap<MapKey<'de>, Cow<'de, str>> = HashMap::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let identity = if fold {
                match &key {
                    Cow::Borrowed(k) => self::fold(k),
                    Cow::Owned(k) => Cow::Owned(self::fold(k).into_owned()),
                }
            } else {
                key.clone()
            };
            match seen.entry(MapKey(identity)) {
                Entry::Occupied(first) => {
                    let problem = if *first.get() == key {
                        Problem::Repeated(key.into_owned())
                    } else {
                        Problem::CaseCollision {
                            first: first.get().to_string(),
                            second: key.into_owned(),
                        }
                    };
                    *found = Some(Found {
                        problem,
                        path: Vec::new(),
                    });
                    return Err(serde::de::Error::custom("object key refused"));
                }
                Entry::Vacant(slot) => {
                    slot.insert(key.clone());
                }
            }
            let value = Walk {
                fold,
                found: &mut *found,
            };
            if let Err(e) = map.next_value_seed(value) {
                if let Some(f) = found.as_mut() {
                    f.path.push(Segment::Key(key.into_owned()));
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Fails when any object in `bytes` repeats a key or, with
/// `refuse_case_collisions`, holds two keys equal under [`fold`]. Bytes
/// that are not one JSON value are a [`ParseError::Json`].
pub fn check_keys(bytes: &[u8], refuse_case_collisions: bool) -> Result<(), ParseError> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walked = Walk {
        fold: refuse_case_collisions,
        found: &mut found,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (walked, found) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(found)) => Err(found.into_error()),
        (Err(e), None) => Err(ParseError::Json(e.to_string())),
    }
}

#[cfg(test)]
pub(crate) mod tests;
