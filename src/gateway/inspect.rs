//! The checkpoint: the one function every message passes, in both
//! directions — agent requests, notifications and the agent's answers to
//! server requests on the way in; JSON replies, each SSE event (POST and GET
//! streams), and stdio output on the way out.
//!
//! [`Checkpoint::inspect`] parses the message (limits, duplicate keys),
//! applies the gates that need no plugin (the 2026-07-28 header rules,
//! task ownership, responses that answer nothing in flight), runs the
//! policy chain, records the decision durably and counts it, and returns
//! the verdict. What leaves the gateway is produced from what it returns.

use bytes::Bytes;
use http::HeaderMap;

use crate::audit::{DecisionRecord, Spool};
use crate::gateway::outbound::OutboundLimits;
use crate::gateway::tasks::{self, Tasks};
use crate::mcp::{
    Direction, Era, Kind, McpError, Message, MessageContext, Outcome, check_standard_headers,
};
use crate::policy::catalog::{Catalog, Page};
use crate::policy::verdict::Denial;
use crate::policy::{Policy, Ruling};

/// What the checkpoint needs: the policy in force for this exchange, the
/// shared catalog and task table, the audit spool, the limits.
#[derive(Clone, Copy)]
pub struct Checkpoint<'a> {
    pub policy: Option<&'a Policy>,
    pub catalog: &'a Catalog,
    pub tasks: &'a Tasks,
    pub audit: Option<&'a Spool>,
    pub limits: OutboundLimits,
}

/// Where a message comes from, and what the checkpoint may check it against.
#[derive(Clone, Copy)]
pub enum Exchange<'a> {
    /// The agent's POST, with its headers (the relay's allow-list).
    Agent { headers: &'a HeaderMap },
    /// The upstream's output on an exchange. `answers` is the id (raw JSON
    /// text) of the request whose stream this is; a response to any other
    /// id answers nothing in flight here. `page`: which page of a tool
    /// listing the answer is, when the request is `tools/list`.
    Upstream {
        answers: Option<&'a str>,
        page: Page,
    },
}

/// The checkpoint's verdict on one message that parsed.
#[derive(Debug)]
pub enum Verdict {
    /// Send this: the message as it arrived or as the chain rewrote it.
    Forward(Message),
    /// Refused by the chain or a gate; requests and responses are answered
    /// with this error, anything else is dropped.
    Denied(Denial),
    /// Not delivered at all (a response that answers nothing in flight).
    Dropped,
}

/// A message inspected: its context as the chain saw it, and the verdict.
#[derive(Debug)]
pub struct Inspected {
    pub ctx: MessageContext,
    pub verdict: Verdict,
    /// The chain rewrote the message (what is forwarded is the rewrite).
    pub rewritten: bool,
}

/// Why a message got no verdict.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not one acceptable JSON-RPC message, or its headers contradict it;
    /// refused (and recorded) before any policy. `id` is the message's id
    /// when it got far enough to have one.
    #[error("{error}")]
    Invalid { error: McpError, id: Option<String> },
    /// Strict audit: the decision could not be persisted, so nothing leaves.
    /// `reply_to` is set when the message was a reply (then answered with
    /// an error for that id instead), to the id's raw text if it had one.
    #[error("audit record not persisted")]
    Unrecorded { reply_to: Option<Option<String>> },
}

/// A message that parsed and passed the gates, waiting for the chain.
pub struct Parsed {
    ctx: MessageContext,
    msg: Message,
    gate: Option<Verdict>,
}

impl Parsed {
    /// The message's context as the chain will see it.
    pub fn ctx(&self) -> &MessageContext {
        &self.ctx
    }
}

impl Checkpoint<'_> {
    /// Inspects one message travelling `base.direction`: [`parse`] then
    /// [`decide`]. `base` says what is known before parsing: who, where,
    /// and for replies the request answered (its method, target and id).
    ///
    /// [`parse`]: Checkpoint::parse
    /// [`decide`]: Checkpoint::decide
    pub async fn inspect(
        &self,
        base: &MessageContext,
        raw: Bytes,
        exchange: Exchange<'_>,
    ) -> Result<Inspected, InspectError> {
        let parsed = self
            .parse(base, raw, exchange, &tracing::Span::current())
            .await?;
        self.decide(parsed).await
    }

    /// Parses one message and applies the gates that need no plugin. A
    /// refusal is recorded (in `span`'s trace) before it is returned.
    pub async fn parse(
        &self,
        base: &MessageContext,
        raw: Bytes,
        exchange: Exchange<'_>,
        span: &tracing::Span,
    ) -> Result<Parsed, InspectError> {
        let reading =
            crate::policy::parse_options(self.policy, &base.server, self.limits.max_depth);
        let msg = match parse_off_worker(raw, reading).await {
            Ok(m) => m,
            Err(e) => {
                let error = match exchange {
                    Exchange::Agent { .. } if e.code() == -32700 => McpError::Parse(e.to_string()),
                    Exchange::Agent { .. } => McpError::InvalidRequest(e.to_string()),
                    Exchange::Upstream { .. } => McpError::InvalidUpstreamResponse(e.to_string()),
                };
                self.refused(base, &error, span).await;
                return Err(InspectError::Invalid { error, id: None });
            }
        };
        let mut ctx = base.clone();
        ctx.kind = msg.kind;
        ctx.request_id = msg.id.clone();
        if !matches!(msg.kind, Kind::Response | Kind::Error) {
            ctx.method = msg.method.clone();
            ctx.target = msg.name.clone();
            // A notification or server request inside a tool call's stream
            // belongs to that call (steps scoped to the tool see it).
            if base.method.as_deref() == Some("tools/call") {
                ctx.related_tool = base.target.clone();
            }
        } else if ctx.direction == Direction::ToServer {
            // The agent answering a server request: no method of its own.
            ctx.method = None;
            ctx.target = None;
        }
        let gate = match exchange {
            Exchange::Agent { headers } => self.agent_gates(&mut ctx, &msg, headers),
            Exchange::Upstream { answers, page } => self.upstream_gates(&ctx, &msg, answers, page),
        };
        match gate {
            Gate::Refuse(error) => {
                self.refused(&ctx, &error, span).await;
                Err(InspectError::Invalid { error, id: msg.id })
            }
            Gate::Verdict(v) => Ok(Parsed {
                ctx,
                msg,
                gate: Some(v),
            }),
            Gate::Chain => Ok(Parsed {
                ctx,
                msg,
                gate: None,
            }),
        }
    }

    /// Runs the chain on a parsed message (unless a gate decided), records
    /// the decision durably and counts it, and returns the verdict.
    pub async fn decide(&self, parsed: Parsed) -> Result<Inspected, InspectError> {
        let Parsed { ctx, msg, gate } = parsed;
        let kind = msg.kind;
        let is_reply = matches!(kind, Kind::Response | Kind::Error);
        let id = msg.id.clone();
        // What the chain receives, for a policy that records it (a
        // reference-counted handle, not a copy).
        let received = msg.raw.clone();
        let mut rewritten = false;
        let (outcome, records) = match (gate, self.policy) {
            (Some(v), _) => (v, Vec::new()),
            (None, Some(p)) if p.wants(&ctx) => {
                let (o, r) = p.apply(&ctx, msg.raw.clone(), self.limits.max_depth).await;
                let v = match o {
                    Ruling::Pass(b) if same_bytes(&b, &msg.raw) => Verdict::Forward(msg),
                    Ruling::Pass(b) => {
                        rewritten = true;
                        let reading = crate::policy::parse_options(
                            self.policy,
                            &ctx.server,
                            self.limits.max_depth,
                        );
                        match parse_off_worker(b, reading).await {
                            Ok(m) => Verdict::Forward(m),
                            // The chain checked every rewrite; fail closed all the same.
                            Err(e) => Verdict::Denied(Denial {
                                code: crate::policy::chain::POLICY_FAILURE_CODE,
                                public_message: crate::policy::chain::POLICY_FAILURE_MESSAGE.into(),
                                private_reason: format!("rewrite does not parse: {e}"),
                            }),
                        }
                    }
                    Ruling::Deny(d) => Verdict::Denied(d),
                };
                (v, r)
            }
            (None, _) => (Verdict::Forward(msg), Vec::new()),
        };
        crate::gateway::log_records(&ctx, &records);
        let (label, forwarded) = match &outcome {
            Verdict::Forward(m) if rewritten => (Outcome::Rewritten, Some(&m.raw[..])),
            Verdict::Forward(m) => (Outcome::Forwarded, Some(&m.raw[..])),
            Verdict::Denied(_)
                if is_reply || kind == Kind::Request || ctx.direction == Direction::ToServer =>
            {
                (Outcome::Denied, None)
            }
            Verdict::Denied(_) | Verdict::Dropped => (Outcome::Dropped, None),
        };
        let recorded = crate::gateway::record_decision(
            self.audit,
            self.policy,
            &ctx,
            &records,
            label,
            (Some(&received[..]), forwarded),
        )
        .await;
        // A denial is not delivered either way; anything else that cannot
        // be recorded in strict mode does not leave.
        if recorded.is_err() && !matches!(label, Outcome::Denied | Outcome::Dropped) {
            tracing::error!(
                server = ctx.server,
                "audit record not persisted; message withheld"
            );
            return Err(InspectError::Unrecorded {
                reply_to: is_reply.then_some(id),
            });
        }
        Ok(Inspected {
            ctx,
            verdict: outcome,
            rewritten,
        })
    }

    /// Checks on what the agent sends that need its headers.
    fn agent_gates(&self, ctx: &mut MessageContext, msg: &Message, headers: &HeaderMap) -> Gate {
        let era = match Era::of(headers, Some(msg)) {
            Ok(era) => era,
            Err(e) => return Gate::Refuse(e),
        };
        if era == Era::Stateless {
            if ctx.protocol_version.is_none() {
                ctx.protocol_version = msg.meta_protocol_version.clone();
            }
            if let Err(e) = check_standard_headers(headers, msg) {
                return Gate::Refuse(e);
            }
        }
        if msg.kind == Kind::Request
            && msg.method_str() == "tools/call"
            && crate::mcp::params::any(headers)
        {
            // Mcp-Param-* headers must say what the arguments say.
            let tool = msg.name.as_deref().unwrap_or("");
            let Some(definition) = self.catalog.tool(&ctx.server, tool) else {
                return Gate::Refuse(McpError::HeaderMismatch(format!(
                    "Mcp-Param headers cannot be checked: the definition of tool '{tool}' is not known yet (list the tools first)"
                )));
            };
            let mapping = crate::mcp::params::mirrored(&definition);
            let args = arguments(&msg.raw);
            if let Err(e) = crate::mcp::params::check(headers, args.as_ref(), &mapping) {
                return Gate::Refuse(e);
            }
        }
        if msg.kind == Kind::Request && tasks::names_a_task(msg.method_str()) {
            // The task's tool is the target: its output is checked as that
            // tool's result. Someone else's task has none.
            ctx.target = tasks::requested_task(&msg.raw)
                .and_then(|t| self.tasks.tool_of(&ctx.server, &ctx.principal.subject, &t));
        }
        Gate::Chain
    }

    /// What the gateway learns from, and refuses in, the upstream's output.
    fn upstream_gates(
        &self,
        ctx: &MessageContext,
        msg: &Message,
        answers: Option<&str>,
        page: Page,
    ) -> Gate {
        let answered = ctx.method.as_deref().unwrap_or("");
        match msg.kind {
            Kind::Response | Kind::Error if msg.id.as_deref() != answers => {
                tracing::warn!(
                    server = ctx.server,
                    "upstream response to no request in flight on this exchange; dropped"
                );
                return Gate::Verdict(Verdict::Dropped);
            }
            Kind::Response if answered == "tools/list" => {
                self.catalog.learn(&ctx.server, &msg.raw, page);
            }
            Kind::Notification if msg.method_str() == "notifications/tools/list_changed" => {
                // The next call walks the listing again (`listing.rs`).
                self.catalog.changed(&ctx.server);
            }
            Kind::Response if answered == "tools/call" => {
                if let (Some(task), Some(tool)) = (tasks::created_task(&msg.raw), &ctx.target) {
                    self.tasks
                        .learn(&ctx.server, &ctx.principal.subject, &task, tool);
                }
            }
            Kind::Response if tasks::delivers_output(answered) && ctx.target.is_none() => {
                // A task this gateway did not see this principal create: its
                // output cannot be tied to a tool, and may be someone else's.
                return Gate::Verdict(Verdict::Denied(Denial {
                    code: -32602,
                    public_message: "Unknown task".into(),
                    private_reason:
                        "task output for a task this principal did not create through this gateway"
                            .into(),
                }));
            }
            _ => {}
        }
        Gate::Chain
    }

    /// Records a message refused before any policy.
    async fn refused(&self, ctx: &MessageContext, error: &McpError, span: &tracing::Span) {
        crate::telemetry::metrics::record_decision(&ctx.server, ctx.direction, Outcome::Refused);
        let Some(spool) = self.audit else {
            return;
        };
        let trace = crate::telemetry::span::ids(span);
        let mut record = DecisionRecord::new(ctx, Vec::new(), Outcome::Refused, None, trace);
        record.reason = Some(error.to_string());
        // Already refused; the spool counts a record it loses.
        let _ = spool.append(&record).await;
    }
}

/// True when the chain handed back `original` itself, or the same text:
/// the buffers are compared only when they are not one and the same.
fn same_bytes(out: &Bytes, original: &Bytes) -> bool {
    (out.as_ptr() == original.as_ptr() && out.len() == original.len()) || out == original
}

/// Parses `raw`, on a bulk thread ([`crate::bulk`]) when it is large
/// ([`crate::limits::OFFLOAD_PARSE_BYTES`]) so that no runtime worker is
/// held while unrelated calls wait.
async fn parse_off_worker(
    raw: Bytes,
    reading: crate::mcp::ParseOptions,
) -> Result<Message, crate::mcp::ParseError> {
    if raw.len() < crate::limits::OFFLOAD_PARSE_BYTES {
        return Message::parse(raw, reading);
    }
    match crate::bulk::compute(move || Message::parse(raw, reading)).await {
        Some(parsed) => parsed,
        // The parser does not panic; if the task was lost all the same,
        // the message is refused, never passed.
        None => Err(crate::mcp::ParseError::Invalid(
            "the message could not be read",
        )),
    }
}

/// `params.arguments` of a request.
pub fn arguments(raw: &[u8]) -> Option<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    Some(v.get_mut("params")?.get_mut("arguments")?.take())
}

/// What the gates decided before the chain.
enum Gate {
    Chain,
    Verdict(Verdict),
    Refuse(McpError),
}
