//! Portcullis: hosted AI agents reach MCP servers inside a private network
//! through a tunnel the network opens outbound, with every message passing a
//! policy chain at the perimeter.
//!
//! # Layout
//! - [`limits`]: every enforced limit, as a named and documented constant.
//! - [`body`]: the boxed HTTP body type and bounded reads.
//! - [`mcp`]: JSON-RPC parsing with limits (depth, repeated and
//!   case-colliding object keys), protocol eras and their headers,
//!   the SSE codec, and the one place that turns errors into JSON-RPC errors.
//! - [`tls`]: PEM loading, rustls configs, in-memory CA for `up` and tests.
//! - [`secret`]: credential generation, hashing, comparison.
//! - [`principal`]: the verified agent identity the relay sends to the gateway.
//! - [`session`]: which principal each MCP session belongs to: the bounded
//!   binding tables the relay and the gateway both check.
//! - [`accept`]: accepting TCP connections: the cap per listener, backoff
//!   on accept errors, warnings at a bounded rate.
//! - [`server`]: the accept loop shared by HTTP listeners: TLS, HTTP/1.1
//!   and HTTP/2, the idle timeout, the drain.
//! - [`tunnel`]: dialing, the upgrade handshake, reversed HTTP/2, the
//!   gateway's connection pool and the relay's connection registry.
//! - [`relay`]: the agent endpoint: authentication, `Origin`/`Host` checks,
//!   routing down a tunnel.
//! - [`gateway`]: serving tunnel streams, upstreams (Streamable HTTP and
//!   stdio), message checks and the policy chain in both directions.
//! - [`plugin`]: the wasmtime component host: the one `bindgen!` of
//!   `wit/policy.wit`, the engine and its checked artifact cache, sandboxed
//!   instances, pools and limits.
//! - [`policy`]: policy files, chains (phases, modes, failure modes), verdict
//!   merging, and the tool catalog plugins read.
//! - [`demo`]: the built-in demo MCP server used by `portcullis up`.
//! - [`config`]: relay and gateway TOML files: raw serde types, validated.
//! - [`up`]: the embedded default: relay, gateway and demo in one process.
//! - [`client`]: a minimal Streamable HTTP client for the benchmark and tests.
//! - [`audit`]: decision records, the hash-chained durable spool, verify and tail.
//! - [`telemetry`]: OpenTelemetry traces and metrics (MCP semantic
//!   conventions, W3C trace context), `OTEL_*` settings, Prometheus text.
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`bench`]: the end-to-end benchmark behind `portcullis bench`.
//! - `fuzzing` (hidden): the properties the fuzz targets in `fuzz/` check,
//!   replayed on the committed corpora by the integration tests.

// The panic lints are denied for every target in Cargo.toml's `[lints]`;
// the library's own unit tests may panic.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod accept;
pub mod admin;
pub mod audit;
pub mod bench;
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
