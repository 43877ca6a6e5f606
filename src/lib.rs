//! Portcullis: hosted AI agents reach MCP servers inside a private network
//! through a tunnel the network opens outbound, with every message passing a
//! policy chain at the perimeter.
//!
//! # Layout
//! - [`limits`]: every enforced limit, as a named and documented constant.
//! - [`body`]: the boxed HTTP body type and bounded reads.
//! - [`bulk`]: low-priority threads for large parses and the plugin calls
//!   on them, so a big message cannot hold up small ones.
//! - [`mcp`]: JSON-RPC parsing with limits (depth, repeated and
//!   case-colliding object keys), protocol eras and their headers,
//!   the SSE codec, and the one place that turns errors into JSON-RPC errors;
//!   in [`mcp::context`] the vocabulary every layer shares: a message's
//!   context, direction and kind, and the step decisions, modes and outcomes
//!   the audit records spell.
//! - [`tls`]: PEM loading, rustls configs, in-memory CA for `up` and tests.
//! - [`secret`]: credential generation, hashing, comparison.
//! - [`principal`]: the verified agent identity the relay sends to the
//!   gateway: subject, groups and, from an OAuth token, issuer, `jti` and
//!   allow-listed claims, bounded in size.
//! - [`session`]: which principal each MCP session belongs to: the bounded
//!   binding tables the relay and the gateway both check.
//! - [`accept`]: accepting TCP connections: the cap per listener, backoff
//!   on accept errors, warnings at a bounded rate.
//! - [`server`]: the accept loop shared by HTTP listeners: TLS, HTTP/1.1
//!   and HTTP/2, the idle timeout, the drain.
//! - [`tunnel`]: dialing, the upgrade handshake, reversed HTTP/2, the
//!   gateway's connection pool (with relay discovery by DNS) and the
//!   relay's connection registry.
//! - [`relay`]: the agent endpoint: authentication (API keys, and per
//!   tunnel OAuth access tokens verified against each issuer's JWKS, with
//!   RFC 9728 metadata), `Origin`/`Host` checks, routing down a tunnel,
//!   or in-process to the gateway whose own agent listener it fronts.
//! - [`gateway`]: serving tunnel streams (one exchange each, one error
//!   exit), upstreams behind one method set (Streamable HTTP, and stdio:
//!   router, process, HTTP mapping), message checks and the policy chain in
//!   both directions, and the identity tokens it mints for upstreams.
//! - [`plugin`]: the wasmtime component host: the one `bindgen!` of
//!   `wit/policy.wit`, the engine and its checked artifact cache, sandboxed
//!   instances, pools and limits; a loaded plugin implements the chain's
//!   `Evaluate`.
//! - [`policy`]: the chain's contract (`verdict`: verdicts, interests,
//!   `Evaluate`) and the tool catalog plugins read; above the plugin host,
//!   policy files, chains (phases, modes, failure modes, verdict merging,
//!   what they tell telemetry), cases, hot reload, and replaying an audit
//!   spool through a candidate policy.
//! - [`demo`]: the built-in demo MCP server used by `portcullis up`.
//! - [`config`]: relay and gateway TOML files: raw serde types, validated
//!   into settings (the binary builds the live objects).
//! - [`up`]: the embedded default: relay, gateway and demo in one process.
//! - [`client`]: a minimal Streamable HTTP client for the benchmark and tests.
//! - [`audit`]: decision records (built from the caller's steps and trace
//!   ids), the spool line (written, parsed and hashed in one place),
//!   segments, the hash-chained durable spool and its writer, verify and
//!   tail, the OTLP exporter.
//! - [`telemetry`]: OpenTelemetry traces and metrics (MCP semantic
//!   conventions, W3C trace context), `OTEL_*` settings, Prometheus text;
//!   it takes primitive and `mcp` types only.
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz`.
//! - Not here: the binary's `src/cli/`, one composition root per subcommand
//!   (building these modules' live objects from their settings) and the
//!   benchmark behind `portcullis bench`.
//! - `fuzzing` (hidden): the properties the fuzz targets in `fuzz/` check,
//!   replayed on the committed corpora by the integration tests.
//!
//! Imports run down this order, never up (`tests/integration/layers.rs`
//! reads the sources and fails on an import up a layer or a circle):
//! `limits`, `body`, `secret`, `tls`, `bulk`, `accept`, `server` and
//! `principal` at the bottom; `mcp`, `session`, `client`; `telemetry`;
//! `audit`, `tunnel`; the chain's contract (`policy::verdict`,
//! `policy::catalog`); `plugin`; the rest of `policy`; `gateway`, `relay`,
//! `demo`; `admin`, `config`; `up`; and the binary's `src/cli/` above them.

pub mod accept;
pub mod admin;
pub mod audit;
pub mod body;
pub mod bulk;
pub mod client;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod limits;
pub mod mcp;
pub mod plugin;
pub mod policy;
pub mod principal;
pub mod relay;
pub mod secret;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
pub mod up;
