//! The gateway: inside the private network. It serves the HTTP/2 streams the
//! relay sends down the tunnel, checks every message in both directions, and
//! reaches only the upstreams its configuration names.
//!
//! - `exchange`: one exchange from the relay up to the upstream's
//!   response; every refusal on the way leaves through [`Gateway::handle`],
//!   the one place that answers errors and denials alike.
//! - [`inspect`]: the checkpoint every message passes.
//! - [`outbound`]: checks on everything an upstream sends back.
//! - `upstream`: the two kinds of upstream behind one method set:
//!   [`http`] (Streamable HTTP) and [`stdio`] (one process per session).
//! - [`identity`]: the short-lived identity token the gateway signs for an
//!   upstream that wants to know the end user (never the agent's token).
//!
//! Every message passes the policy chain (`src/policy`): requests from the
//! agent before they are forwarded, and every reply — JSON bodies and each
//! SSE event — in [`outbound::check_reply`] before it enters the tunnel.

pub mod event_id;
mod exchange;
pub mod http;
pub mod identity;
pub mod inspect;
mod listing;
pub mod outbound;
pub mod stdio;
pub mod tasks;
mod upstream;

pub use upstream::Upstream;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ::http::{Method, Request, Response};
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::audit::{DecisionRecord, Spool, StepEntry};
use crate::body::Body;
use crate::mcp::{MessageContext, Outcome, error_response};
use crate::policy::catalog::Catalog;
use crate::policy::{Policy, StepRecord};
use crate::session::owner::Instance;
use crate::tunnel::connector::{self, PoolConfig, PoolStatus};
use crate::tunnel::dial::DialConfig;
use exchange::{CallInfo, Refusal};
use outbound::OutboundLimits;

/// The gateway's upstreams, limits, policy and tool catalog.
pub struct Gateway {
    instance: Instance,
    upstreams: HashMap<String, Upstream>,
    limits: OutboundLimits,
    policy: RwLock<Option<Arc<Policy>>>,
    catalog: Arc<Catalog>,
    tasks: Arc<tasks::Tasks>,
    event_ids: Arc<event_id::EventIds>,
    audit: std::sync::OnceLock<Arc<Spool>>,
    /// The catalog on demand: one walk of a server's listing at a time.
    walks: listing::Walks,
}

impl crate::policy::reload::Serving for Gateway {
    fn catalog(&self) -> Arc<Catalog> {
        Gateway::catalog(self)
    }

    fn set_policy(&self, policy: Option<Arc<Policy>>) {
        Gateway::set_policy(self, policy);
    }
}

fn server_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (server, tail) = rest.split_once('/')?;
    (tail == "mcp" && !server.is_empty()).then_some(server)
}

/// Logs what each plugin decided (the audit issue turns these into durable
/// records). Never logs message contents.
pub fn log_records(ctx: &MessageContext, records: &[StepRecord]) {
    for r in records {
        tracing::debug!(
            server = ctx.server,
            subject = ctx.principal.subject,
            method = ctx.method.as_deref().unwrap_or(""),
            plugin = r.plugin,
            decision = r.decision.as_str(),
            elapsed_us = r.elapsed.as_micros() as u64,
            "policy step"
        );
    }
}

/// Counts one decision in the metrics and appends its record to `audit`
/// (with the message that left the chain, `forwarded`, and the one the
/// chain received, `received`, where the policy opted in to each; the
/// principal's claims with either). An error means strict mode could not
/// persist it. Both directions record through here.
pub async fn record_decision(
    audit: Option<&Spool>,
    policy: Option<&Policy>,
    ctx: &MessageContext,
    steps: &[StepRecord],
    outcome: Outcome,
    (received, forwarded): (Option<&[u8]>, Option<&[u8]>),
) -> Result<(), crate::audit::SpoolError> {
    crate::policy::chain::observe::count_decision(&ctx.server, ctx.direction, outcome, steps);
    let Some(spool) = audit else {
        return Ok(());
    };
    let mut record = DecisionRecord::new(
        ctx,
        steps.iter().map(StepEntry::from).collect(),
        outcome,
        policy.map(|p| p.digest.as_str()),
        crate::telemetry::span::ids(&tracing::Span::current()),
    );
    let keep_payload = policy.is_some_and(|p| p.records_payload(&ctx.server));
    if let Some(m) = forwarded.filter(|_| keep_payload) {
        record = record.with_payload(m);
    }
    // Passed unchanged, the payload already is the message received.
    let unchanged = keep_payload && outcome == Outcome::Forwarded;
    let keep_received = policy.is_some_and(|p| p.records_received(&ctx.server)) && !unchanged;
    if let Some(m) = received.filter(|_| keep_received) {
        record = record.with_received(m);
    }
    if record.payload.is_some() || record.received.is_some() {
        record.claims = Some(ctx.principal.claims.clone());
    }
    spool.append(&record).await
}

impl Gateway {
    /// A gateway serving `upstreams`, with no policy.
    pub fn new(upstreams: HashMap<String, Upstream>, limits: OutboundLimits) -> Arc<Gateway> {
        // Without system randomness nothing here is safe to run.
        #[allow(clippy::expect_used)]
        let instance = Instance::random();
        #[allow(clippy::expect_used)]
        let event_ids =
            event_id::EventIds::new(instance).expect("the system's random number generator");
        // Every id this gateway hands an agent names it, so a relay routes
        // the session's later requests here ([`crate::session::owner`]).
        for up in upstreams.values() {
            up.sessions().stamp(instance);
        }
        Arc::new(Gateway {
            instance,
            upstreams,
            limits,
            policy: RwLock::new(None),
            catalog: Arc::new(Catalog::default()),
            tasks: Arc::default(),
            event_ids: Arc::new(event_ids),
            audit: std::sync::OnceLock::new(),
            walks: listing::Walks::default(),
        })
    }

    /// This gateway process's instance, stamped on its session and event
    /// ids and announced on its tunnel connections.
    pub fn instance(&self) -> Instance {
        self.instance
    }

    /// Names of the configured servers.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }

    /// The catalog plugins read tool definitions from.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// Swaps the policy in; calls in flight finish on the one they started
    /// with.
    pub fn set_policy(&self, policy: Option<Arc<Policy>>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The audit spool, when one is set.
    pub fn audit(&self) -> Option<Arc<Spool>> {
        self.audit.get().cloned()
    }

    /// Records every decision in `spool` from now on (set once).
    pub fn set_audit(&self, spool: Arc<Spool>) {
        let _ = self.audit.set(spool);
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the tunnel connections and serves them until `shutdown`.
    pub fn connect(
        self: &Arc<Self>,
        dial: DialConfig,
        pool: PoolConfig,
        shutdown: CancellationToken,
    ) -> (PoolStatus, tokio::task::JoinHandle<()>) {
        let gw = self.clone();
        let tunnel: Arc<str> = Arc::from(dial.tunnel_id.as_str());
        let dial = DialConfig {
            instance: Some(self.instance),
            ..dial
        };
        connector::start(
            dial,
            pool,
            move |req| {
                let gw = gw.clone();
                let tunnel = tunnel.clone();
                // Boxed when first polled: hyper moves the stream's future
                // into a task of its own, and a pointer moves cheaper
                // than the whole call's state machine.
                async move { Ok(Box::pin(gw.handle(req, &tunnel)).await) }
            },
            shutdown,
        )
    }

    /// Handles one stream from the relay. Every refusal on the way to the
    /// upstream — an error or a policy denial — leaves here, as the
    /// JSON-RPC error [`error_response`] makes of it. One span per
    /// exchange, a child of the relay's (whose context the tunnel request
    /// carries).
    ///
    /// The body is a tunnel stream's, or, behind the gateway's own agent
    /// listener (`[agent_listener]`), the one the agent front end read.
    pub async fn handle<B>(&self, req: Request<B>, tunnel: &str) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<crate::body::BoxError>,
    {
        let span = crate::mcp_span!("portcullis::gateway", "server");
        crate::telemetry::span::adopt_parent(&span, req.headers(), None);
        if !span.is_disabled() {
            span.record("otel.name", req.method().as_str());
            span.set_attribute("network.transport", "tcp");
            span.set_attribute("portcullis.tunnel", tunnel.to_owned());
        }
        let started = std::time::Instant::now();
        let is_post = req.method() == Method::POST;
        let server = server_of(req.uri().path()).unwrap_or("").to_owned();
        let mut call = CallInfo::default();
        // Not entered yet: its name and parent are final only once dispatch
        // knows the method; dispatch runs the rest inside it.
        let result = self.dispatch(req, tunnel, &mut call, &span).await;
        let resp = match result {
            Ok(r) => r,
            Err(Refusal { error: e, id }) => {
                tracing::info!(error = %e, "call refused at the gateway");
                call.error = Some(e.code());
                if let (Some(spool), Some(ctx)) = (self.audit.get(), call.unrecorded.take()) {
                    let trace = crate::telemetry::span::ids(&span);
                    let mut record =
                        DecisionRecord::new(&ctx, Vec::new(), Outcome::Refused, None, trace);
                    record.reason = Some(e.to_string());
                    // Already refused; the spool counts a record it loses.
                    let _ = spool.append(&record).await;
                }
                crate::telemetry::span::fail(&span, Some(e.code()), "");
                error_response(&e, id.as_deref())
            }
        };
        if is_post {
            crate::telemetry::metrics::record_operation(
                "gateway",
                started.elapsed(),
                Some(server),
                call.method,
                call.tool,
                call.error.map(|c| c.to_string()),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(server_of("/crm/mcp"), Some("crm"));
        assert_eq!(server_of("/crm/other"), None);
        assert_eq!(server_of("//mcp"), None);
    }
}
