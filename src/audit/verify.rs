//! `portcullis audit verify DIR` and `audit tail DIR`.

use std::fmt::Write as _;
use std::path::Path;

use super::line::{self, GENESIS, Mark};
use super::segment::segments;
use super::spool::{ANCHOR_FILE, PRUNED_FILE};

/// One problem found in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `file:line`.
    pub at: String,
    pub problem: String,
}

/// The result of a verification.
#[derive(Debug, Default)]
pub struct Verification {
    pub records: u64,
    pub last_seq: u64,
    /// Records up to this seq were pruned after export (`pruned.json`):
    /// the chain is checked from the record after it.
    pub pruned_through: u64,
    pub findings: Vec<Finding>,
}

/// Checks every segment of `dir`: each line's hash, the link to the line
/// before, consecutive sequence numbers, and the end against the anchor.
pub fn verify(dir: &Path, key: Option<&[u8]>) -> std::io::Result<Verification> {
    let mut v = Verification::default();
    let mut prev_hash = GENESIS.to_owned();
    let mut expected = 1u64;
    // Segments pruned after export: the chain goes on from the last
    // record pruned, whose hash the marker keeps.
    if let Some(Mark { seq, hash }) = Mark::read(&dir.join(PRUNED_FILE)) {
        v.pruned_through = seq;
        prev_hash = hash;
        expected = seq + 1;
    }
    let mut seen = std::collections::BTreeSet::new();
    for seg in segments(dir)? {
        let name = seg
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&seg)?;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let at = format!("{name}:{}", i + 1);
            let mut find = |problem: String| {
                v.findings.push(Finding {
                    at: at.clone(),
                    problem,
                })
            };
            let line = match line::parse(raw) {
                Ok(l) => l,
                Err(e) => {
                    find(e.to_string());
                    continue;
                }
            };
            v.records += 1;
            if !line.hash_matches(key) {
                find(format!(
                    "record {} was edited (its hash does not match its content)",
                    line.seq
                ));
            } else if line.prev != prev_hash {
                find(format!(
                    "record {} does not follow the record before it (edited, removed or reordered)",
                    line.seq
                ));
            }
            if line.seq < expected {
                find(format!(
                    "record {} is out of order (expected {expected} or later)",
                    line.seq
                ));
            }
            seen.insert(line.seq);
            expected = expected.max(line.seq + 1);
            prev_hash = line.hash;
        }
    }
    // Sequence numbers never seen: deleted records, reported as ranges.
    let last = seen.last().copied().unwrap_or(v.pruned_through);
    let mut missing_from = None;
    for seq in v.pruned_through + 1..=last {
        match (seen.contains(&seq), missing_from) {
            (false, None) => missing_from = Some(seq),
            (true, Some(from)) => {
                v.findings.push(Finding {
                    at: format!("before record {seq}"),
                    problem: format!("records {from}..={} are missing (deleted)", seq - 1),
                });
                missing_from = None;
            }
            _ => {}
        }
    }
    v.last_seq = last;
    {
        if let Some(Mark {
            seq: anchor_seq,
            hash: anchor_hash,
        }) = Mark::read(&dir.join(ANCHOR_FILE))
        {
            if anchor_seq > v.last_seq {
                v.findings.push(Finding {
                    at: ANCHOR_FILE.into(),
                    problem: format!(
                        "truncated: records up to {} were written, the spool ends at {}",
                        anchor_seq, v.last_seq
                    ),
                });
            } else if anchor_seq == v.last_seq && anchor_hash != prev_hash {
                v.findings.push(Finding {
                    at: ANCHOR_FILE.into(),
                    problem: format!("record {} differs from the one written", anchor_seq),
                });
            }
        }
    }
    Ok(v)
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-12-01T09:34:08.123Z`); days to civil dates after Howard
/// Hinnant's `civil_from_days`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The last `n` records of `dir`, one readable line each.
pub fn tail(dir: &Path, n: usize) -> std::io::Result<String> {
    let mut lines = Vec::new();
    for seg in segments(dir)? {
        for raw in std::fs::read_to_string(&seg)?.lines() {
            lines.push(raw.to_owned());
        }
    }
    let mut out = String::new();
    for raw in lines.iter().rev().take(n).rev() {
        let Ok(line) = line::parse(&format!("{raw}\n")) else {
            let _ = writeln!(out, "?      unreadable line");
            continue;
        };
        let b = &line.body;
        let s = |k: &str| b.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
        match line.kind.as_str() {
            "decision" => {
                let steps: Vec<String> = b
                    .get("steps")
                    .and_then(|s| s.as_array())
                    .map(|a| {
                        a.iter()
                            .map(|st| {
                                format!(
                                    "{}={}",
                                    st.get("plugin").and_then(|v| v.as_str()).unwrap_or("?"),
                                    st.get("decision").and_then(|v| v.as_str()).unwrap_or("?")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{:<6} {} {} {} {} {} {} -> {} [{}]",
                    line.seq,
                    rfc3339(b.get("time_unix_ms").and_then(|v| v.as_u64()).unwrap_or(0)),
                    s("subject"),
                    s("server"),
                    s("direction"),
                    s("method"),
                    s("target"),
                    s("outcome"),
                    steps.join(" ")
                );
            }
            other => {
                let _ = writeln!(out, "{:<6} {other} {}", line.seq, line.body);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_read_as_rfc3339_utc() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (1_798_761_599_999, "2026-12-31T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(rfc3339(ms), want, "{ms}");
        }
    }
}
