//! What a replay compares: the chain's ruling on one message as the record
//! says it was, against the candidate's, reduced to one [`Change`] or none.

use serde_json::Value;

use crate::audit::StepEntry;
use crate::mcp::{Mode, StepDecision};

/// A chain's ruling on one message, as far as a replay can compare it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ruled {
    /// Passed on as received.
    Unchanged,
    /// Passed on rewritten: the output, when it is known (the record keeps
    /// it only when the policy recorded payloads).
    Rewritten(Option<Value>),
    /// Not passed on (denied, or dropped when there was no one to answer).
    Denied,
}

impl Ruled {
    /// A rewrite whose output is the message received, as JSON, is no
    /// rewrite: key order and spacing are not a difference.
    pub fn normalised(self, received: &Value) -> Ruled {
        match self {
            Ruled::Rewritten(Some(out)) if out == *received => Ruled::Unchanged,
            other => other,
        }
    }
}

/// How the candidate's ruling differs from the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Passed (as sent or rewritten), now denied.
    NewlyDenied,
    /// Denied, now passed (as sent or rewritten).
    NewlyAllowed,
    /// Passed as sent, now rewritten.
    NewlyRewritten,
    /// Rewritten, now passed as sent.
    NoLongerRewritten,
    /// Rewritten both times, into different messages — or, where the
    /// recorded output is unknown, by different plugins or with different
    /// annotations.
    RewrittenDifferently,
}

impl Change {
    /// Every change, in report order.
    pub const ALL: [Change; 5] = [
        Change::NewlyDenied,
        Change::NewlyAllowed,
        Change::NewlyRewritten,
        Change::NoLongerRewritten,
        Change::RewrittenDifferently,
    ];

    /// Its words in the report.
    pub const fn as_str(self) -> &'static str {
        match self {
            Change::NewlyDenied => "newly denied",
            Change::NewlyAllowed => "newly allowed",
            Change::NewlyRewritten => "newly rewritten",
            Change::NoLongerRewritten => "no longer rewritten",
            Change::RewrittenDifferently => "rewritten differently",
        }
    }

    /// Its key in the JSON report.
    pub const fn key(self) -> &'static str {
        match self {
            Change::NewlyDenied => "newly_denied",
            Change::NewlyAllowed => "newly_allowed",
            Change::NewlyRewritten => "newly_rewritten",
            Change::NoLongerRewritten => "no_longer_rewritten",
            Change::RewrittenDifferently => "rewritten_differently",
        }
    }
}

/// The enforced rewrites among `steps`: which plugin, with what
/// annotations. What is compared when a rewrite's output is unknown.
pub fn rewriters(steps: &[StepEntry]) -> Vec<(&str, &serde_json::Map<String, Value>)> {
    steps
        .iter()
        .filter(|s| s.mode == Mode::Enforce && s.decision == StepDecision::Rewrite)
        .map(|s| (s.plugin.as_str(), &s.annotations))
        .collect()
}

/// The change from `was` (with the steps recorded) to `now` (with the
/// candidate's steps), or none.
pub fn compare(
    was: &Ruled,
    was_steps: &[StepEntry],
    now: &Ruled,
    now_steps: &[StepEntry],
) -> Option<Change> {
    use Ruled::*;
    match (was, now) {
        (Denied, Denied) | (Unchanged, Unchanged) => None,
        (Unchanged | Rewritten(_), Denied) => Some(Change::NewlyDenied),
        (Denied, Unchanged | Rewritten(_)) => Some(Change::NewlyAllowed),
        (Unchanged, Rewritten(_)) => Some(Change::NewlyRewritten),
        (Rewritten(_), Unchanged) => Some(Change::NoLongerRewritten),
        (Rewritten(Some(a)), Rewritten(Some(b))) => {
            (a != b).then_some(Change::RewrittenDifferently)
        }
        // One output unknown: the verdicts and annotations are what can
        // be compared.
        (Rewritten(_), Rewritten(_)) => {
            (rewriters(was_steps) != rewriters(now_steps)).then_some(Change::RewrittenDifferently)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn step(plugin: &str, mode: Mode, decision: StepDecision, ann: Value) -> StepEntry {
        StepEntry {
            plugin: plugin.into(),
            digest: "d".into(),
            mode,
            decision,
            reason: None,
            annotations: ann.as_object().cloned().unwrap_or_default(),
            elapsed_us: 1,
        }
    }

    #[test]
    fn each_pair_of_rulings_is_one_change_or_none() {
        use Ruled::*;
        let out = |v: Value| Rewritten(Some(v));
        let a = json!({"id": 1, "result": {"text": "****1111"}});
        let b = json!({"id": 1, "result": {"text": "****2222"}});
        let cases = [
            (Unchanged, Unchanged, None),
            (Denied, Denied, None),
            (Unchanged, Denied, Some(Change::NewlyDenied)),
            (out(a.clone()), Denied, Some(Change::NewlyDenied)),
            (Rewritten(None), Denied, Some(Change::NewlyDenied)),
            (Denied, Unchanged, Some(Change::NewlyAllowed)),
            (Denied, out(a.clone()), Some(Change::NewlyAllowed)),
            (Unchanged, out(a.clone()), Some(Change::NewlyRewritten)),
            (out(a.clone()), Unchanged, Some(Change::NoLongerRewritten)),
            (out(a.clone()), out(a.clone()), None),
            (out(a.clone()), out(b), Some(Change::RewrittenDifferently)),
        ];
        for (was, now, want) in cases {
            assert_eq!(compare(&was, &[], &now, &[]), want, "{was:?} -> {now:?}");
        }
    }

    #[test]
    fn rewrites_whose_output_is_unknown_compare_plugins_and_annotations() {
        use StepDecision::{Allow, Rewrite};
        let redact = |cards: u64| step("redact", Mode::Enforce, Rewrite, json!({"card": cards}));
        let authz = step("authz", Mode::Enforce, Allow, json!({"rule": "r"}));
        let was = [authz.clone(), redact(1)];
        let unknown = Ruled::Rewritten(None);
        let known = Ruled::Rewritten(Some(json!({})));
        // The same plugin rewrote with the same counts: no difference
        // visible, whichever side's output is unknown.
        assert_eq!(compare(&unknown, &was, &known, &[redact(1)]), None);
        assert_eq!(compare(&known, &was, &unknown, &[redact(1)]), None);
        // Other counts, or another plugin rewriting, is a difference.
        assert_eq!(
            compare(&unknown, &was, &known, &[redact(2)]),
            Some(Change::RewrittenDifferently)
        );
        let other = step("mask", Mode::Enforce, Rewrite, json!({"card": 1}));
        assert_eq!(
            compare(&unknown, &was, &known, &[other]),
            Some(Change::RewrittenDifferently)
        );
        // An audit-mode rewrite changes nothing, so it is not compared.
        let audit = step("shadow", Mode::Audit, Rewrite, json!({"n": 1}));
        assert_eq!(compare(&unknown, &was, &known, &[redact(1), audit]), None);
    }

    #[test]
    fn a_rewrite_into_the_same_json_is_no_rewrite() {
        let received = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        let same = Ruled::Rewritten(Some(json!({"result": {}, "id": 1, "jsonrpc": "2.0"})));
        assert_eq!(same.normalised(&received), Ruled::Unchanged);
        let other = Ruled::Rewritten(Some(json!({"jsonrpc": "2.0", "id": 2, "result": {}})));
        assert_eq!(other.clone().normalised(&received), other);
        assert_eq!(
            Ruled::Rewritten(None).normalised(&received),
            Ruled::Rewritten(None)
        );
    }
}
