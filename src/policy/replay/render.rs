//! A replay's report as text (for people) or JSON (for CI). Message
//! contents, public messages and private reasons appear only when the
//! report was made with `show_values` (they are not in it otherwise).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::diff::Change;
use super::{Caveat, Entry, NotReplayable, Report};
use crate::audit::StepEntry;
use crate::policy::cases::describe_step;

impl Report {
    /// The report as text: the counts, then each difference with the steps
    /// on both sides.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replay of {} through policy sha256 {}",
            self.spool.display(),
            self.policy_digest
        );
        if self.chain_problems.is_empty() {
            let _ = writeln!(out, "chain: intact, {} records", self.chain_records);
        } else {
            let _ = writeln!(
                out,
                "chain: DOES NOT VERIFY ({} problems), replayed anyway (--allow-broken-chain)",
                self.chain_problems.len()
            );
            for f in &self.chain_problems {
                let _ = writeln!(out, "  {}: {}", f.at, f.problem);
            }
        }
        let _ = write!(out, "decision records: {}", self.decisions);
        if self.filtered > 0 {
            let _ = write!(out, " ({} left out by --server/--tunnel)", self.filtered);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "replayed: {} (unchanged {})",
            self.replayed(),
            self.unchanged
        );
        for c in Change::ALL {
            let _ = writeln!(out, "  {:<22} {}", c.as_str(), self.count(c));
        }
        let _ = writeln!(out, "not replayable: {}", self.not_replayable_total());
        for r in NotReplayable::ALL {
            if let Some(n) = self.not_replayable.get(&r) {
                let _ = writeln!(out, "  {n:>5}  {}", r.explain());
            }
        }
        if !self.caveats.is_empty() {
            let _ = writeln!(out, "caveats (in the replayed messages):");
            for c in Caveat::ALL {
                if let Some(n) = self.caveats.get(&c) {
                    let _ = writeln!(out, "  {n:>5}  {}", c.explain());
                }
            }
        }
        for e in &self.entries {
            self.entry_text(&mut out, e);
        }
        let _ = match self.entries.len() {
            0 => writeln!(out, "no differences"),
            n => writeln!(out, "{n} differences"),
        };
        out
    }

    fn entry_text(&self, out: &mut String, e: &Entry) {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "\n{}  record {}  {}  {}/{} {} {} {} {}  subject {}",
            e.change.as_str().to_uppercase(),
            e.seq,
            crate::audit::verify::rfc3339(e.time_unix_ms),
            e.tunnel,
            e.server,
            e.direction,
            e.kind,
            dash(&e.method),
            dash(&e.target),
            e.subject
        );
        let steps = |out: &mut String, steps: &[StepEntry]| {
            if steps.is_empty() {
                let _ = writeln!(out, "        no plugin ran on this message");
            }
            for s in steps {
                let _ = writeln!(out, "        {}", describe_step(s));
            }
        };
        let _ = writeln!(out, "    was: {}", e.was);
        steps(out, &e.was_steps);
        let _ = match e.now_code {
            Some(code) => writeln!(out, "    now: {} (code {code})", e.now),
            None => writeln!(out, "    now: {}", e.now),
        };
        steps(out, &e.now_steps);
        for c in &e.caveats {
            let _ = writeln!(out, "    caveat: {}", c.explain());
        }
        if let Some(v) = &e.values {
            let _ = writeln!(out, "    received: {}", v.received);
            if let Some(o) = &v.recorded_output {
                let _ = writeln!(out, "    recorded output: {o}");
            }
            if let Some(o) = &v.candidate_output {
                let _ = writeln!(out, "    candidate output: {o}");
            }
            if let Some(m) = &v.public_message {
                let _ = writeln!(out, "    public message: {m:?}");
            }
        }
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        let counts = |pairs: Vec<(&'static str, u64)>| -> Value {
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, n)| (k.to_owned(), Value::from(n)))
                    .collect(),
            )
        };
        let changes = Change::ALL
            .iter()
            .map(|c| (c.key(), self.count(*c) as u64))
            .collect();
        let not_replayable = NotReplayable::ALL
            .iter()
            .map(|r| (r.key(), self.not_replayable.get(r).copied().unwrap_or(0)))
            .collect();
        let caveats = Caveat::ALL
            .iter()
            .map(|c| (c.key(), self.caveats.get(c).copied().unwrap_or(0)))
            .collect();
        let problems: Vec<Value> = self
            .chain_problems
            .iter()
            .map(|f| json!({"at": f.at, "problem": f.problem}))
            .collect();
        json!({
            "spool": self.spool.display().to_string(),
            "policy_digest": self.policy_digest,
            "chain": {"records": self.chain_records, "intact": problems.is_empty(), "problems": problems},
            "decisions": self.decisions,
            "filtered": self.filtered,
            "replayed": self.replayed(),
            "unchanged": self.unchanged,
            "differences": self.entries.len(),
            "changes": counts(changes),
            "not_replayable": counts(not_replayable),
            "caveats": counts(caveats),
            "messages": self.entries.iter().map(entry_json).collect::<Vec<_>>(),
        })
    }
}

fn entry_json(e: &Entry) -> Value {
    let mut v = json!({
        "record": e.seq,
        "time_unix_ms": e.time_unix_ms,
        "change": e.change.key(),
        "tunnel": e.tunnel,
        "server": e.server,
        "subject": e.subject,
        "direction": e.direction,
        "kind": e.kind,
        "method": e.method,
        "target": e.target,
        "was": {"outcome": e.was, "steps": e.was_steps},
        "now": {"outcome": e.now, "code": e.now_code, "steps": e.now_steps},
        "caveats": e.caveats.iter().map(|c| c.key()).collect::<Vec<_>>(),
    });
    if let (Some(values), Some(obj)) = (&e.values, v.as_object_mut()) {
        obj.insert(
            "values".into(),
            json!({
                "received": values.received,
                "recorded_output": values.recorded_output,
                "candidate_output": values.candidate_output,
                "public_message": values.public_message,
            }),
        );
    }
    v
}
