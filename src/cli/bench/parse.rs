//! The parse table of `portcullis bench`: the gateway's one reading of a
//! key-flooded message (depth scan, every object's keys checked, case
//! folding on) against `serde_json` building a `Value` from the same bytes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis::limits::MAX_JSON_DEPTH;
use portcullis::mcp::{Message, ParseOptions};

use super::stats::percentile;

/// Keys in each benchmark message.
const KEYS: usize = 100_000;
/// Timed rounds per message (after [`WARMUP_ROUNDS`]); each round times
/// every reader once, in rotating order.
const ROUNDS: usize = 40;
const WARMUP_ROUNDS: usize = 3;

/// `i` as four base-36 digits, after a capital `K`: distinct keys that
/// stay distinct under case folding, and each needs folding (the costlier
/// path of the check).
fn key(i: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = String::from("K");
    for shift in [36 * 36 * 36, 36 * 36, 36, 1] {
        s.push(char::from(
            DIGITS.get(i / shift % 36).copied().unwrap_or(b'0'),
        ));
    }
    s
}

fn tools_call(arguments: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"bulk","arguments":{arguments}}}}}"#
    ))
}

/// A tools/call whose arguments are one object of [`KEYS`] keys (about
/// 1 MiB).
fn flat_message() -> Bytes {
    let entries: Vec<String> = (0..KEYS).map(|i| format!("\"{}\":0", key(i))).collect();
    tools_call(&format!("{{{}}}", entries.join(",")))
}

/// A tools/call whose arguments hold [`KEYS`] leaf keys in objects of ten,
/// three levels deep: 1,000 groups of 10 objects of 10 keys (111,000 keys
/// in 11,001 objects).
fn nested_message() -> Bytes {
    let leaf: Vec<String> = (0..10).map(|j| format!("\"{}\":0", key(j))).collect();
    let leaf = format!("{{{}}}", leaf.join(","));
    let group: Vec<String> = (0..10).map(|j| format!("\"{}\":{leaf}", key(j))).collect();
    let group = format!("{{{}}}", group.join(","));
    let groups: Vec<String> = (0..KEYS / 100)
        .map(|i| format!("\"{}\":{group}", key(i)))
        .collect();
    tools_call(&format!("{{{}}}", groups.join(",")))
}

/// Median times of: `Message::parse` with case folding on, the same with
/// it off, and `serde_json::from_slice::<Value>` (value dropped inside the
/// timing, as a parse-and-discard reader would).
fn measure(raw: &Bytes) -> anyhow::Result<[Duration; 3]> {
    let strict = ParseOptions::new(MAX_JSON_DEPTH);
    let relaxed = ParseOptions {
        allow_case_colliding_keys: true,
        ..strict
    };
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..WARMUP_ROUNDS + ROUNDS {
        for k in 0..3 {
            let which = (round + k) % 3;
            let t = Instant::now();
            match which {
                0 => drop(Message::parse(raw.clone(), strict)?),
                1 => drop(Message::parse(raw.clone(), relaxed)?),
                _ => drop(serde_json::from_slice::<serde_json::Value>(raw)?),
            }
            let taken = t.elapsed();
            if round >= WARMUP_ROUNDS
                && let Some(s) = samples.get_mut(which)
            {
                s.push(taken);
            }
        }
    }
    Ok(samples.map(|mut s| {
        s.sort();
        percentile(&s, 0.5)
    }))
}

/// One message's row: its size and the three readers' medians.
#[derive(Debug, Clone, Copy)]
pub struct ParseRow {
    pub label: &'static str,
    pub bytes: usize,
    /// `Message::parse`, case folding on.
    pub fold_on: Duration,
    /// `Message::parse`, case folding off.
    pub fold_off: Duration,
    /// `serde_json::from_slice::<Value>`.
    pub value: Duration,
}

/// Runs the parse benchmark on the flat and the nested message.
pub fn measure_all() -> anyhow::Result<Vec<ParseRow>> {
    [
        ("one flat object", flat_message()),
        ("11,001 nested objects, 3 levels", nested_message()),
    ]
    .into_iter()
    .map(|(label, raw)| {
        let [fold_on, fold_off, value] = measure(&raw)?;
        Ok(ParseRow {
            label,
            bytes: raw.len(),
            fold_on,
            fold_off,
            value,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_messages_are_a_mebibyte_of_distinct_keys_that_parse() {
        for raw in [flat_message(), nested_message()] {
            assert!(
                (900_000..=1_200_000).contains(&raw.len()),
                "{} bytes",
                raw.len()
            );
            let msg = Message::parse(raw, ParseOptions::new(MAX_JSON_DEPTH)).unwrap();
            assert_eq!(msg.name.as_deref(), Some("bulk"));
        }
        let keys: std::collections::HashSet<String> = (0..KEYS)
            .map(|i| portcullis::mcp::keys::fold(&key(i)).into_owned())
            .collect();
        assert_eq!(keys.len(), KEYS);
    }
}
