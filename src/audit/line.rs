//! One spool line: the one place that writes, parses and hashes it, used by
//! the spool, `audit verify`/`tail` and the exporter.
//!
//! A line is `JSON<TAB>HASH<LF>`. The JSON is
//! `{"seq":N,"type":"KIND","prev":"PREV","body":BODY}`, in that order and
//! with no spaces; `HASH` is SHA-256 — or HMAC-SHA-256 when a key is
//! configured — over `PREV` and the exact JSON bytes, in lowercase hex.
//! A [`Mark`] (the anchor and the pruned marker) names one line by its seq
//! and hash, in a fixed width.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Hash of "nothing before": the `prev` of the very first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain's hash of the line whose JSON is `json`, following `prev`.
pub fn hash(key: Option<&[u8]>, prev: &str, json: &[u8]) -> String {
    match key {
        Some(k) => {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(k) else {
                return String::new();
            };
            mac.update(prev.as_bytes());
            mac.update(json);
            hex::encode(mac.finalize().into_bytes())
        }
        None => {
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(json);
            hex::encode(h.finalize())
        }
    }
}

/// A line made by [`write()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The whole line, newline included.
    pub text: String,
    /// Its hash: the `prev` of the line after it.
    pub hash: String,
}

/// The line numbered `seq` of `kind`, following `prev`, holding `body`
/// (JSON text, written as is).
pub fn write(key: Option<&[u8]>, seq: u64, kind: &str, prev: &str, body: &str) -> Written {
    let json = format!(r#"{{"seq":{seq},"type":"{kind}","prev":"{prev}","body":{body}}}"#);
    let hash = hash(key, prev, json.as_bytes());
    Written {
        text: format!("{json}\t{hash}\n"),
        hash,
    }
}

/// One spool line as read back.
#[derive(Debug, Clone)]
pub struct SpoolLine {
    pub seq: u64,
    pub kind: String,
    /// The JSON part, exactly as hashed.
    pub json: String,
    pub hash: String,
    pub prev: String,
    pub body: serde_json::Value,
}

/// Why a piece of a segment is not a spool line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// No newline at its end: cut off mid-write (or still being written).
    #[error("incomplete last line (truncated mid-record)")]
    Incomplete,
    /// No tab before a hash.
    #[error("not a spool line")]
    NotALine,
    /// The JSON part does not parse as a line's fields.
    #[error("unreadable record (edited)")]
    Unreadable,
}

#[derive(Deserialize)]
struct Parts {
    seq: u64,
    #[serde(rename = "type")]
    kind: String,
    prev: String,
    body: serde_json::Value,
}

/// Reads one line, `raw` with its newline.
pub fn parse(raw: &str) -> Result<SpoolLine, LineError> {
    let line = raw.strip_suffix('\n').ok_or(LineError::Incomplete)?;
    let (json, hash) = line.rsplit_once('\t').ok_or(LineError::NotALine)?;
    let p: Parts = serde_json::from_str(json).map_err(|_| LineError::Unreadable)?;
    Ok(SpoolLine {
        seq: p.seq,
        kind: p.kind,
        json: json.to_owned(),
        hash: hash.to_owned(),
        prev: p.prev,
        body: p.body,
    })
}

impl SpoolLine {
    /// Whether its hash is the one its `prev` and JSON give under `key`.
    pub fn hash_matches(&self, key: Option<&[u8]>) -> bool {
        hash(key, &self.prev, self.json.as_bytes()) == self.hash
    }
}

/// A position in the chain: a line's seq and hash. Written fixed width
/// (the seq zero-padded), so a file holding one is rewritten in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub hash: String,
}

#[derive(Deserialize)]
struct RawMark {
    /// Zero-padded decimal.
    seq: String,
    hash: String,
}

impl Mark {
    /// Its text: `{"seq":"00000000000000000042","hash":"…"}`.
    pub fn encode(&self) -> String {
        format!(r#"{{"seq":"{:020}","hash":"{}"}}"#, self.seq, self.hash)
    }

    /// The mark `text` holds, if it is one.
    pub fn decode(text: &str) -> Option<Mark> {
        let raw: RawMark = serde_json::from_str(text).ok()?;
        Some(Mark {
            seq: raw.seq.parse().ok()?,
            hash: raw.hash,
        })
    }

    /// The mark in the file at `path` (absent or unreadable: none).
    pub fn read(path: &std::path::Path) -> Option<Mark> {
        Mark::decode(&std::fs::read_to_string(path).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as the spool has always written it (the format must not
    /// change: old spools are verified and exported by new code).
    const KNOWN: &str = "{\"seq\":1,\"type\":\"start\",\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"body\":{\"pid\":1}}\t";

    #[test]
    fn a_written_line_is_byte_identical_to_the_format() {
        let w = write(None, 1, "start", GENESIS, r#"{"pid":1}"#);
        // SHA-256 over GENESIS and the JSON, computed independently.
        let expected = "e0e99954cfb80abdda9490b4035e614f14d035997a8cb7e700368ebd37a4dd86";
        assert_eq!(w.text, format!("{KNOWN}{expected}\n"));
        assert_eq!(w.hash, expected);
        assert_eq!(w.hash.len(), 64);
    }

    #[test]
    fn a_key_changes_the_hash() {
        let plain = write(None, 2, "gap", "ab", "{}");
        let keyed = write(Some(b"k"), 2, "gap", "ab", "{}");
        assert_ne!(plain.hash, keyed.hash);
        assert!(parse(&keyed.text).unwrap().hash_matches(Some(b"k")));
        assert!(!parse(&keyed.text).unwrap().hash_matches(None));
    }

    #[test]
    fn parse_reads_back_what_write_wrote() {
        let w = write(None, 9, "decision", "cd", r#"{"outcome":"allowed"}"#);
        let l = parse(&w.text).unwrap();
        assert_eq!(
            (l.seq, l.kind.as_str(), l.prev.as_str()),
            (9, "decision", "cd")
        );
        assert_eq!(l.body["outcome"], "allowed");
        assert_eq!(format!("{}\t{}\n", l.json, l.hash), w.text);
        assert!(l.hash_matches(None));
    }

    #[test]
    fn an_edited_line_no_longer_matches_its_hash() {
        let w = write(None, 3, "decision", "cd", r#"{"outcome":"denied"}"#);
        let edited = w.text.replace("denied", "allowed");
        let l = parse(&edited).unwrap();
        assert!(!l.hash_matches(None));
    }

    #[test]
    fn what_is_not_a_line_says_why() {
        let w = write(None, 1, "start", GENESIS, "{}");
        let cases = [
            (
                w.text.trim_end_matches('\n').to_owned(),
                LineError::Incomplete,
            ),
            ("{\"seq\":1}\n".to_owned(), LineError::NotALine),
            (
                "{\"seq\":1,\"type\":\"x\"}\tab\n".to_owned(),
                LineError::Unreadable,
            ),
            ("not json\tab\n".to_owned(), LineError::Unreadable),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(&raw).err(), Some(want), "{raw:?}");
        }
    }

    #[test]
    fn a_mark_is_fixed_width_and_reads_back() {
        let m = Mark {
            seq: 42,
            hash: "ff".into(),
        };
        assert_eq!(m.encode(), r#"{"seq":"00000000000000000042","hash":"ff"}"#);
        assert_eq!(Mark::decode(&m.encode()), Some(m));
        assert_eq!(Mark::decode(r#"{"seq":"x","hash":"ff"}"#), None);
    }
}
