//! Every limit Portcullis enforces, as a named constant with its reason.
//!
//! Config files may override most of these; the constants are the documented
//! defaults.

use std::time::Duration;

/// Largest JSON-RPC message (one POST body, one SSE event's data) the relay or
/// gateway accepts. Larger bodies are refused with HTTP 413 while streaming,
/// before they are buffered whole.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Deepest JSON nesting (objects and arrays) accepted in one message. Deep
/// nesting is a cheap way to exhaust a parser's stack; real MCP traffic stays
/// far below this.
pub const MAX_JSON_DEPTH: usize = 64;

/// Longest object key or key path (in bytes) that a parse error quotes;
/// longer ones are cut. Keys are the sender's text and may be megabytes
/// long, and the error goes to logs and back to the agent.
pub const MAX_QUOTED_KEY_BYTES: usize = 256;

/// Concurrent HTTP/2 streams one tunnel connection carries. The relay spreads
/// calls over a tunnel's connections, so a tunnel with two connections carries
/// twice this.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Time an upstream has to answer a call with response headers (and, for a
/// JSON response, its whole body). SSE streams are not cut by this.
pub const UPSTREAM_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Time an agent has to send complete request headers (slowloris defence).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An agent connection with no request in flight for this long is closed
/// (gracefully: HTTP/2 GOAWAY, or the end of HTTP/1.1 keep-alive). Counts
/// from the connection's start too, so a connection that never sends a
/// request, or opens HTTP/2 and idles, cannot hold a descriptor for ever.
/// A long call or an open SSE stream is a request in flight, never idle.
pub const AGENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Agent connections the relay holds open at once; over this, new
/// connections are closed as soon as they are accepted, so one client
/// cannot take every descriptor the relay has.
pub const MAX_AGENT_CONNECTIONS: usize = 10_000;
/// How long the gateway keeps an idle connection to an HTTP upstream for
/// reuse: below the 5 s after which Node's and uvicorn's servers close one
/// (`src/gateway/http.rs`).
pub const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(4);

/// Longest the gateway's own walk of a server's tool listing may take (the
/// catalog on demand, `src/gateway/listing.rs`): the call that needed it
/// waits at most this long, then is decided with what is known.
pub const LISTING_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed walk of a server's tool listing, how long calls are
/// decided with what is known before the gateway tries again: a dead
/// upstream is not asked once per call.
pub const LISTING_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Connections the relay's tunnel listener holds open at once (live
/// tunnels and handshakes in progress); over this, new ones are closed as
/// soon as they are accepted.
pub const MAX_TUNNEL_CONNECTIONS: usize = 10_000;

/// First wait after `accept` fails (at the descriptor limit it fails at
/// once, every time); each further failure doubles the wait.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Longest wait between failing `accept` calls: a listener out of
/// descriptors tries about once a second instead of spinning a core.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener writes each kind of accept warning (a failure, a connection
/// over the cap) at most once per this interval, with the count it stands
/// for, so a flood cannot fill the disk with log.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Time a gateway has to finish the TCP, proxy, TLS and upgrade handshake with
/// a relay, and a relay has to finish TLS and the upgrade with a gateway.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval of HTTP/2 PING keep-alives on tunnel connections, both ends.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// A tunnel connection whose PING is unanswered this long is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval of the relay's HTTP/2 PINGs on tunnel connections: the liveness
/// signal that takes a frozen or partitioned gateway's connection out of
/// rotation (after [`TUNNEL_PING_TIMEOUT`] without an answer), much sooner
/// than the gateway-side keep-alive.
pub const TUNNEL_PING_INTERVAL: Duration = Duration::from_secs(3);

/// A tunnel connection whose relay PING is unanswered this long is closed;
/// its calls in flight get a clean error, new calls go to other connections.
pub const TUNNEL_PING_TIMEOUT: Duration = Duration::from_secs(4);

/// Time the relay gives a gateway to answer a forwarded call with response
/// headers. Below the 60 s an MCP client typically waits (the SDKs'
/// default request timeout), so the agent hears a clean 504 from the relay
/// rather than its own timeout.
pub const RELAY_CALL_DEADLINE: Duration = Duration::from_secs(55);

/// Calls the relay keeps waiting for a free tunnel stream, per tunnel;
/// beyond this a call is answered 503 with `Retry-After` at once.
pub const TUNNEL_QUEUE_MAX: usize = 2048;

/// Request bytes the relay holds for calls waiting for a free tunnel
/// stream, per tunnel (each call's body is held while it waits).
pub const TUNNEL_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Longest a call waits for a free tunnel stream before a 503.
pub const TUNNEL_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// `Retry-After` on a 503 for an overloaded tunnel, in seconds.
pub const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;

/// Streams the relay may reset before the gateway accepted them (agents that
/// went away mid-call) before HTTP/2's rapid-reset guard closes the tunnel
/// connection. The relay is an authenticated peer, and h2's default (20)
/// would close both tunnel connections when many agents leave at once.
pub const TUNNEL_MAX_PENDING_RESETS: usize = 65_536;

/// Tunnel connections a gateway keeps open per tunnel by default.
pub const DEFAULT_TUNNEL_CONNECTIONS: usize = 2;

/// Fewest tunnel connections a gateway keeps when it counts them per relay
/// (`connections_per_relay`): with a single relay address it opens this
/// many to it, so losing one connection never takes the tunnel offline.
pub const MIN_TUNNEL_CONNECTIONS: usize = 2;

/// Most tunnel connections a config may ask for, in total
/// (`tunnel.connections`) or per relay address (`connections_per_relay`):
/// each is a TLS connection and a task on both ends.
pub const MAX_POOL_CONNECTIONS: usize = 64;

/// Most relay addresses a gateway dials from DNS (`discovery = "dns"`),
/// over all its relay names; the rest of an answer is ignored, so a hostile
/// or broken DNS answer cannot make it open thousands of connections.
pub const MAX_RELAY_ADDRESSES: usize = 64;

/// How often a gateway re-resolves its relay names by default
/// (`resolve_interval_secs`): a relay replica that appears is dialled, and
/// one that disappears is drained, within about this long.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// Longest one lookup of a relay name may take; past it the lookup counts
/// as failed and the addresses already known are kept (a resolver that
/// hangs must not freeze discovery).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest `resolve_interval_secs` accepted: faster would only load the
/// resolver, since a cluster's DNS answers are themselves cached for seconds.
pub const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// Longest `resolve_interval_secs` accepted: a replica that came up must be
/// dialled, and one that went away drained, within the hour.
pub const MAX_RESOLVE_INTERVAL: Duration = Duration::from_secs(3600);

/// First reconnect delay after a tunnel connection fails.
pub const RECONNECT_BASE: Duration = Duration::from_millis(200);

/// Longest reconnect delay; the backoff doubles up to this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Longest reconnect delay for this long after a tunnel connection that
/// was up is lost: a relay that restarts (or flaps) gets every connection
/// slot back within about this delay of listening again. Only failures to
/// connect grow the backoff; a connection that came up resets it.
pub const RECONNECT_AFTER_LOSS_MAX: Duration = Duration::from_secs(1);

/// How long after losing a connection the reconnect delay stays under
/// [`RECONNECT_AFTER_LOSS_MAX`]; after that a relay still unreachable is
/// tried less and less often, up to [`RECONNECT_MAX`].
pub const RECONNECT_AFTER_LOSS_WINDOW: Duration = Duration::from_secs(30);

/// Grace period for in-flight streams after SIGTERM/SIGINT.
pub const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// While a listener drains, an HTTP/1.1 connection idle this long is
/// closed; one in use is closed after its next answer, which says so
/// (`Connection: close`), so no request races the close.
pub const HTTP1_DRAIN_IDLE: Duration = Duration::from_secs(1);

/// How often a draining relay looks whether a tunnel connection's last
/// call ended (only while shutting down).
pub const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Times the relay sends a call again on another tunnel connection when
/// the gateway refused its stream unprocessed (going away: GOAWAY or
/// REFUSED_STREAM), so a gateway restart fails no call.
pub const TUNNEL_RESENDS: usize = 2;

/// Concurrent stdio sessions (child processes) per stdio upstream.
pub const MAX_STDIO_SESSIONS: usize = 64;

/// A stdio session with no traffic for this long is ended and its process
/// killed.
pub const STDIO_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// How long a new stdio process has to answer the gateway's first
/// `server/discover` (2026-07-28) before it is taken for a server that
/// speaks only the session-based protocol.
pub const STDIO_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Task ids the gateway remembers (which tool made each, for whom) across
/// all servers; beyond this the oldest is forgotten, and its output is
/// then refused as an unknown task (fail closed).
pub const MAX_TRACKED_TASKS: usize = 65_536;

/// Session bindings (session id → the principal that opened it) the
/// gateway keeps per server; beyond this the least recently used is
/// forgotten, and its session is then refused (fail closed) until the
/// client initializes again.
pub const MAX_SESSIONS_PER_SERVER: usize = 10_000;

/// Session bindings the relay keeps per tunnel. The relay's table is only
/// the early check (the gateway's decides), so a binding it forgets costs
/// nothing but that check.
pub const RELAY_SESSIONS_PER_TUNNEL: usize = 4_096;

/// A session binding unused for this long is forgotten, at the relay and
/// at the gateway, and its session refused from then on: the stdio idle
/// time, so a binding and a stdio session end together.
pub const SESSION_BINDING_IDLE: Duration = STDIO_SESSION_IDLE;

/// Messages at least this large are parsed on the blocking pool, not on a
/// runtime worker: reading a 1 MiB key-flooded message takes milliseconds
/// of CPU, and on a worker it would hold up every unrelated call queued
/// behind it.
pub const OFFLOAD_PARSE_BYTES: usize = 64 * 1024;

/// Messages a stdio session queues for a GET stream that is not open yet;
/// older ones are dropped beyond this (and logged).
pub const STDIO_BACKLOG: usize = 256;

/// Longest single header value the relay accepts from an upgrade or agent
/// request that it must parse itself (tunnel id, session id).
pub const MAX_ID_LEN: usize = 128;

/// Time to open a TCP connection to an OTLP collector before the attempt
/// counts as failed (and is retried).
pub const OTLP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time an OTLP export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` is not
/// set (the OpenTelemetry specification's default).
pub const OTLP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// On shutdown, how long the process waits for the audit records still
/// queued to be written (best effort queues them; without this wait a clean
/// stop would drop them uncounted).
pub const AUDIT_FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// On shutdown, how long the audit exporter keeps trying to ship what is
/// durable before it stops (the rest ships after the next start).
pub const AUDIT_EXPORT_FINAL_FLUSH: Duration = Duration::from_secs(3);

/// With nothing new announced, how often the audit exporter looks at the
/// spool anyway (a safety net; new records wake it at once).
pub const AUDIT_EXPORT_IDLE_CHECK: Duration = Duration::from_secs(1);

/// Time an admin client has to send complete request headers.
pub const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// An admin connection with no request in flight for this long is closed.
pub const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Admin connections held open at once (scrapers and probes need few).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Time admin requests in flight get at shutdown.
pub const ADMIN_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Largest SSE `retry:` (milliseconds) the gateway passes on; an upstream's
/// larger value is lowered to this. A reconnect delay is a number the
/// upstream chooses and the redaction chain never sees, so an unbounded one
/// could carry a card number to the agent.
pub const MAX_SSE_RETRY_MS: u64 = 60_000;

/// Largest bearer token the relay reads. Real access tokens are a few KiB;
/// a larger one is refused before it is decoded.
pub const MAX_BEARER_TOKEN_BYTES: usize = 16 * 1024;

/// Clock skew allowed on a JWT's `exp` and `nbf`: small, so an expired
/// token stops working within a minute, and named, so operators know it.
pub const JWT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Time an issuer's metadata or JWKS fetch may take, connect included.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest metadata document or JWKS the relay reads from an issuer.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Keys in one JWKS beyond which the rest are ignored (an IdP publishes a
/// handful; a huge set would make every unknown-`kid` lookup a scan).
pub const MAX_JWKS_KEYS: usize = 64;

/// A cached JWKS is refetched by the first call this long after its last
/// successful fetch (within the refetch interval), so a key the issuer
/// rotated out stops being trusted.
pub const JWKS_REFRESH_AFTER: Duration = Duration::from_secs(5 * 60);

/// Longest a JWKS keeps being used while its issuer cannot be reached. An
/// IdP being briefly down does not stop calls; one down for longer than
/// this fails closed, since revoked keys could no longer be learned of.
pub const JWKS_MAX_STALE: Duration = Duration::from_secs(60 * 60);

/// Shortest time between two fetches of one issuer's JWKS triggered by a
/// token with an unknown `kid` (or a failed fetch): tokens with made-up key
/// ids cannot turn the relay into a load generator against the IdP.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Largest principal (subject, groups, issuer, token id and allow-listed
/// claims, as JSON) that travels down the tunnel: a token cannot flood the
/// gateway, the plugins or the audit trail. A token whose principal is
/// larger is refused at the relay, and a larger principal header at the
/// gateway.
pub const MAX_PRINCIPAL_BYTES: usize = 8 * 1024;

/// Groups taken from one token; a token with more is refused.
pub const MAX_PRINCIPAL_GROUPS: usize = 64;

/// Lifetime of an identity token the gateway mints for an upstream: long
/// enough for one call, short enough that a leaked one is soon useless.
pub const MINTED_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Tokens one tunnel remembers as verified (so the next call with the same
/// token skips the signature check); past this the table is emptied.
pub const MAX_VERIFIED_TOKENS: usize = 4096;

/// Longest a verified token is remembered, even if it expires later: a key
/// the issuer withdraws stops being honoured within this (plus
/// [`JWKS_REFRESH_AFTER`] for the relay to learn of it).
pub const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(60);

/// A gateway answer (not an event stream) of at most this many bytes is
/// read whole at the relay and sent to the agent with its length; a longer
/// one streams on.
pub const GATHER_ANSWER_BYTES: usize = 64 * 1024;
