//! The policy chain: steps (which plugin runs on which messages, in what
//! phase and mode, failing open or closed) and a loaded [`Policy`].
//!
//! - [`run`]: running a chain on one message and combining the verdicts.
//! - [`observe`]: what the chain tells telemetry: each plugin call's span
//!   attributes and each decision's metrics.
//!
//! A step holds an [`Evaluate`]: the Wasm plugin host implements it, and
//! the unit tests of the combine rules (`tests.rs`) use fakes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::verdict::{Annotation, AnnotationValue, Denial, Evaluate, glob_match};
use crate::audit::StepEntry;
use crate::mcp::{Direction, MessageContext, Mode, ParseOptions, StepDecision};

pub mod observe;
pub mod run;
#[cfg(test)]
mod tests;

pub use run::validate_rewrite;

/// Chain key that applies to every server.
pub const ALL_SERVERS: &str = "*";
/// JSON-RPC code when a plugin failed and the step fails closed.
pub const POLICY_FAILURE_CODE: i32 = -32603;
/// Public message when a plugin failed and the step fails closed.
pub const POLICY_FAILURE_MESSAGE: &str = "Blocked by policy: the policy could not decide";

/// Which messages a step sees.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Agent → server.
    Request,
    /// Server → agent.
    Response,
    #[default]
    Both,
}

/// One plugin in a chain.
pub struct Step {
    pub plugin: Arc<dyn Evaluate>,
    pub phase: Phase,
    pub mode: Mode,
    pub fail_open: bool,
    /// Only messages naming one of these tools (globs); empty = all.
    pub tools: Vec<String>,
}

impl Step {
    /// True when this step runs on `ctx`: its phase, its tools and the
    /// plugin's interests all admit the message.
    fn applies(&self, ctx: &MessageContext) -> bool {
        let phase_ok = match self.phase {
            Phase::Both => true,
            Phase::Request => ctx.direction == Direction::ToServer,
            Phase::Response => ctx.direction == Direction::ToClient,
        };
        let names = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| self.tools.iter().any(|g| glob_match(g, t)))
        };
        let tools_ok = self.tools.is_empty() || names(&ctx.target) || names(&ctx.related_tool);
        phase_ok
            && tools_ok
            && self
                .plugin
                .interests()
                .wants(ctx.direction, ctx.method.as_deref())
    }
}

/// What one step did, for the audit.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub plugin: String,
    pub digest: String,
    pub mode: Mode,
    pub decision: StepDecision,
    /// Private reason of a deny, or the error.
    pub reason: Option<String>,
    pub annotations: Vec<Annotation>,
    pub elapsed: Duration,
}

impl From<&StepRecord> for StepEntry {
    fn from(s: &StepRecord) -> StepEntry {
        StepEntry {
            plugin: s.plugin.clone(),
            digest: s.digest.clone(),
            mode: s.mode,
            decision: s.decision,
            reason: s.reason.clone(),
            annotations: s
                .annotations
                .iter()
                .map(|a| {
                    let v = match &a.value {
                        AnnotationValue::Count(n) => serde_json::Value::from(*n),
                        AnnotationValue::Label(l) => serde_json::Value::from(l.clone()),
                    };
                    (a.key.clone(), v)
                })
                .collect(),
            elapsed_us: s.elapsed.as_micros() as u64,
        }
    }
}

/// The chain's ruling on one message.
#[derive(Debug)]
pub enum Ruling {
    /// Send this (the original bytes, or the last rewrite).
    Pass(Bytes),
    /// Do not send; answer with this.
    Deny(Denial),
}

/// A loaded policy.
pub struct Policy {
    /// SHA-256 of the policy file, hex.
    pub digest: String,
    chains: BTreeMap<String, Vec<Step>>,
    /// Servers (or `"*"`) whose audit records keep the message as it left
    /// the chain. Empty by default: records hold no payload.
    pub record_payloads: BTreeSet<String>,
    /// Servers (or `"*"`) whose audit records also keep the message as the
    /// chain received it, before any rewrite or denial (unredacted), for
    /// `policy replay`. Empty by default.
    pub record_received: BTreeSet<String>,
    /// Servers (or `"*"`) whose messages may hold object keys that are one
    /// key under case folding. Empty by default: such messages are refused.
    pub allow_case_colliding_keys: BTreeSet<String>,
}

/// How messages to and from `server` are read under `policy` (with no
/// policy, the strict default).
pub fn parse_options(policy: Option<&Policy>, server: &str, max_depth: usize) -> ParseOptions {
    match policy {
        Some(p) => p.parse_options(server, max_depth),
        None => ParseOptions::new(max_depth),
    }
}

impl Policy {
    pub fn new(digest: String, chains: BTreeMap<String, Vec<Step>>) -> Policy {
        Policy {
            digest,
            chains,
            record_payloads: Default::default(),
            record_received: Default::default(),
            allow_case_colliding_keys: Default::default(),
        }
    }

    /// How messages to and from `server` are read: `max_depth`, and
    /// case-colliding keys only where this policy allows them.
    pub fn parse_options(&self, server: &str, max_depth: usize) -> ParseOptions {
        let keys = &self.allow_case_colliding_keys;
        ParseOptions {
            max_depth,
            allow_case_colliding_keys: keys.contains(server) || keys.contains(ALL_SERVERS),
        }
    }

    /// True when the policy opted in to payloads in `server`'s records.
    pub fn records_payload(&self, server: &str) -> bool {
        self.record_payloads.contains(server) || self.record_payloads.contains(ALL_SERVERS)
    }

    /// True when the policy opted in to the received message in
    /// `server`'s records.
    pub fn records_received(&self, server: &str) -> bool {
        self.record_received.contains(server) || self.record_received.contains(ALL_SERVERS)
    }

    /// The step plugin called `name`, if a chain uses it.
    pub fn evaluator(&self, name: &str) -> Option<Arc<dyn Evaluate>> {
        self.chains
            .values()
            .flatten()
            .find(|s| s.plugin.name() == name)
            .map(|s| s.plugin.clone())
    }

    /// Plugins and their digests, in chain order, without repeats.
    pub fn plugins(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for step in self.chains.values().flatten() {
            if !out.iter().any(|(n, _)| n == step.plugin.name()) {
                out.push((
                    step.plugin.name().to_owned(),
                    step.plugin.digest().to_owned(),
                ));
            }
        }
        out
    }

    /// The steps for `server`: the `"*"` chain, then the server's own.
    fn steps<'a>(&'a self, server: &str) -> impl Iterator<Item = &'a Step> {
        let all = self.chains.get(ALL_SERVERS).into_iter().flatten();
        let own = self
            .chains
            .get(server)
            .filter(|_| server != ALL_SERVERS)
            .into_iter()
            .flatten();
        all.chain(own)
    }

    /// True when some step would look at this message.
    pub fn wants(&self, ctx: &MessageContext) -> bool {
        self.steps(&ctx.server).any(|s| s.applies(ctx))
    }

    /// True when some step that would look at this message may read the
    /// upstream's tool definitions.
    pub fn reads_definitions(&self, ctx: &MessageContext) -> bool {
        self.steps(&ctx.server)
            .any(|s| s.applies(ctx) && s.plugin.reads_definitions())
    }
}
