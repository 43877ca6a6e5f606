//! Which principal each MCP session belongs to.
//!
//! A session id is bound to the principal whose session-less POST was
//! answered with it (the `Mcp-Session-Id` of an `initialize` response, or
//! the id a stdio upstream mints when it spawns). Any other principal
//! presenting it is answered exactly as for a session that does not exist
//! ([`McpError::SessionNotFound`]), and nothing of its request travels on.
//!
//! The relay and the gateway each keep a [`SessionTable`]. The relay's is an
//! early check: relays share nothing, so an id it does not know (bound
//! through another relay, or before a restart) goes on to the gateway. The
//! gateway's is authoritative and fails closed: an id it has not bound —
//! never seen, ended, expired, evicted, or bound before a restart — is
//! refused for everyone, and the client initializes a new session.
//!
//! At the gateway, an HTTP upstream's table also mints (`SessionTable::minting`):
//! the agent never sees the upstream's `Mcp-Session-Id`, which is upstream
//! text like any other and could carry data past the chain. It sees a random
//! id of the gateway's, mapped back to the upstream's on the way in.
//!
//! Bounded: each scope (a tunnel at the relay, a server at the gateway)
//! holds at most `capacity` bindings, the least recently used evicted
//! first, and a binding unused for `idle` expires. Ids and owners are kept
//! as SHA-256 digests, so an entry has a fixed size whatever ids an
//! upstream mints, and a presented id is found by lookup, never compared
//! byte by byte.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::mcp::McpError;
use crate::mcp::era::SESSION_HEADER;
use crate::principal::{Principal, PrincipalId};

pub mod owner;

/// What to do with a session id the table does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Let it pass (the relay: the gateway decides).
    Pass,
    /// Refuse it (the gateway: fail closed).
    Refuse,
}

/// One request as the tables see it.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The table's scope: the tunnel at the relay, the server at the gateway.
    pub scope: &'a str,
    /// The server the request is for.
    pub server: &'a str,
    /// The `Mcp-Session-Id` it carries, if any.
    pub session: Option<&'a str>,
    /// Who sent it.
    pub who: &'a Principal,
}

/// Why a presented session id was refused. Both reach the agent as
/// [`McpError::SessionNotFound`]; the difference is for the log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefused {
    #[error("the session is bound to another principal")]
    NotOwner,
    #[error("the session is not bound here (never, ended, expired or evicted)")]
    Unbound,
}

impl From<SessionRefused> for McpError {
    fn from(_: SessionRefused) -> McpError {
        McpError::SessionNotFound
    }
}

type Key = [u8; 32];

fn key(server: &str, session: &str) -> Key {
    let mut h = Sha256::new();
    h.update(server.as_bytes());
    h.update([0]);
    h.update(session.as_bytes());
    h.finalize().into()
}

struct Entry {
    owner: PrincipalId,
    /// The upstream's own id for the session, when the id the agent holds
    /// was minted in its place.
    upstream: Option<Box<str>>,
    used: Instant,
    /// Position in [`Scope::by_use`].
    tick: u64,
}

/// One scope's bindings, with their order of last use.
#[derive(Default)]
struct Scope {
    entries: HashMap<Key, Entry>,
    /// Least recently used first: eviction and expiry both take from here.
    by_use: BTreeMap<u64, Key>,
    clock: u64,
}

impl Scope {
    fn expire(&mut self, now: Instant, idle: Duration) {
        while let Some((&tick, k)) = self.by_use.first_key_value() {
            match self.entries.get(k) {
                Some(e) if now.duration_since(e.used) < idle => return,
                _ => {
                    let k = *k;
                    self.by_use.remove(&tick);
                    self.entries.remove(&k);
                }
            }
        }
    }

    /// Marks `k` used now (it must be held).
    fn touch(&mut self, k: Key, now: Instant) {
        self.clock += 1;
        let tick = self.clock;
        if let Some(e) = self.entries.get_mut(&k) {
            self.by_use.remove(&e.tick);
            e.used = now;
            e.tick = tick;
            self.by_use.insert(tick, k);
        }
    }

    fn check(&mut self, k: Key, who: PrincipalId, now: Instant, idle: Duration) -> Option<bool> {
        self.expire(now, idle);
        let owned = self.entries.get(&k)?.owner == who;
        if owned {
            self.touch(k, now);
        }
        Some(owned)
    }

    /// False when another principal holds `k` (it stays theirs).
    fn bind(&mut self, k: Key, entry: Bound, now: Instant, idle: Duration, cap: usize) -> bool {
        self.expire(now, idle);
        if self.entries.get(&k).is_some_and(|e| e.owner != entry.owner) {
            return false;
        }
        self.unbind(&k);
        self.clock += 1;
        let tick = self.clock;
        self.entries.insert(
            k,
            Entry {
                owner: entry.owner,
                upstream: entry.upstream,
                used: now,
                tick,
            },
        );
        self.by_use.insert(tick, k);
        while self.entries.len() > cap {
            let Some((_, old)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&old);
            tracing::debug!("session binding evicted: the table is full");
        }
        true
    }

    fn unbind(&mut self, k: &Key) {
        if let Some(old) = self.entries.remove(k) {
            self.by_use.remove(&old.tick);
        }
    }
}

/// The spec's session id syntax: visible ASCII (0x21–0x7E), bounded.
pub fn valid_session_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= crate::limits::MAX_ID_LEN
        && v.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// What a new binding holds.
struct Bound {
    owner: PrincipalId,
    upstream: Option<Box<str>>,
}

/// Session bindings per scope, bounded in count and age.
pub struct SessionTable {
    scopes: Mutex<HashMap<Box<str>, Scope>>,
    capacity: usize,
    idle: Duration,
    /// Ids the upstream mints are replaced by the table's own.
    mints: bool,
    /// The gateway instance stamped on the ids this table mints
    /// ([`owner`]); set once, by the gateway that owns the table.
    stamp: std::sync::OnceLock<owner::Instance>,
}

impl SessionTable {
    /// At most `capacity` bindings per scope, each expiring after `idle`
    /// without use.
    pub fn new(capacity: usize, idle: Duration) -> SessionTable {
        SessionTable {
            scopes: Mutex::default(),
            capacity: capacity.max(1),
            idle,
            mints: false,
            stamp: std::sync::OnceLock::new(),
        }
    }

    /// As [`SessionTable::new`], and the session ids an upstream mints are
    /// kept here: [`SessionTable::learn`] hands the agent a random id in
    /// their place and [`SessionTable::upstream_id`] maps it back.
    pub fn minting(capacity: usize, idle: Duration) -> SessionTable {
        SessionTable {
            mints: true,
            ..SessionTable::new(capacity, idle)
        }
    }

    /// Stamps `instance` on every id minted from now on (the first call
    /// wins: a table belongs to one gateway).
    pub fn stamp(&self, instance: owner::Instance) {
        let _ = self.stamp.set(instance);
    }

    /// A fresh session id for an agent: 128 random bits, behind the owning
    /// gateway's stamp when it has one. No binding already holds it.
    pub fn new_id(&self) -> String {
        let id = crate::secret::random_id();
        match self.stamp.get() {
            Some(instance) => instance.stamp(&id),
            None => id,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Scope>> {
        // Poison is ignored: a panic mid-update could at worst leave a key
        // in one of a scope's two maps and not the other, which the sweeps
        // tolerate (each removal looks the key up in the other map).
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a request (one presenting no session: nothing to check). A
    /// use by the owner keeps the binding alive.
    pub fn check(&self, req: &Presented<'_>, unknown: Unknown) -> Result<(), SessionRefused> {
        let Presented {
            scope,
            server,
            session,
            who,
        } = *req;
        let Some(session) = session else {
            return Ok(());
        };
        let (k, who_id) = (key(server, session), who.id());
        let standing = self
            .lock()
            .get_mut(scope)
            .and_then(|s| s.check(k, who_id, Instant::now(), self.idle));
        let refused = match (standing, unknown) {
            (Some(true), _) | (None, Unknown::Pass) => return Ok(()),
            (Some(false), _) => SessionRefused::NotOwner,
            (None, Unknown::Refuse) => SessionRefused::Unbound,
        };
        match refused {
            SessionRefused::NotOwner => {
                tracing::warn!(server, subject = who.subject, "{refused}; refused")
            }
            SessionRefused::Unbound => {
                tracing::info!(server, subject = who.subject, "{refused}; refused")
            }
        }
        Err(refused)
    }

    /// Binds `session` to `who`; false (and no change) when another
    /// principal holds it.
    pub fn bind(&self, scope: &str, server: &str, session: &str, who: &Principal) -> bool {
        self.bind_entry(scope, server, session, who, None)
    }

    fn bind_entry(
        &self,
        scope: &str,
        server: &str,
        session: &str,
        who: &Principal,
        upstream: Option<Box<str>>,
    ) -> bool {
        let k = key(server, session);
        let entry = Bound {
            owner: who.id(),
            upstream,
        };
        let mut scopes = self.lock();
        // Binds are rare (one per session), so the scope's name is copied
        // each time rather than looked up first.
        let s = scopes.entry(scope.into()).or_default();
        // The clock is read under the lock, so the order of use is the
        // order of time and expiry can sweep from the front.
        s.bind(k, entry, Instant::now(), self.idle, self.capacity)
    }

    /// The upstream's own id for a session whose id the table minted; none
    /// when it holds no such binding (the caller has already admitted the
    /// request, so that means it ended or expired in between).
    pub fn upstream_id(&self, scope: &str, server: &str, session: &str) -> Option<Box<str>> {
        self.lock()
            .get(scope)?
            .entries
            .get(&key(server, session))?
            .upstream
            .clone()
    }

    /// Forgets `session` (ended).
    pub fn unbind(&self, scope: &str, server: &str, session: &str) {
        if let Some(s) = self.lock().get_mut(scope) {
            s.unbind(&key(server, session));
        }
    }

    /// Learns from the answer to a request `check` admitted: a
    /// session-less POST answered with success and an `Mcp-Session-Id`
    /// binds that id to its sender; a DELETE answered with success, or any
    /// request answered 404 (the session is gone), unbinds the id presented.
    ///
    /// A minting table never lets the upstream's id through: a new session
    /// gets an id of the table's in `headers`, mapped to the upstream's; an
    /// answer within a session carries the agent's own id back, if any.
    pub fn learn(
        &self,
        req: &Presented<'_>,
        method: &Method,
        status: StatusCode,
        headers: &mut HeaderMap,
    ) {
        let Presented {
            scope,
            server,
            session,
            who,
        } = *req;
        // One well-formed value, or none: a repeated or malformed id is
        // dropped, never bound.
        let upstream = {
            let mut all = headers.get_all(SESSION_HEADER).iter();
            match (all.next(), all.next()) {
                (Some(v), None) => v.to_str().ok().filter(|v| valid_session_id(v)),
                _ => None,
            }
        };
        let opened = session.is_none() && method == Method::POST && status.is_success();
        if self.mints {
            let ours = match (upstream, session) {
                (Some(up), None) if opened => {
                    let ours = self.new_id();
                    self.bind_entry(scope, server, &ours, who, Some(up.into()));
                    Some(ours)
                }
                (Some(_), Some(ours)) => Some(ours.to_owned()),
                _ => None,
            };
            headers.remove(SESSION_HEADER);
            if let Some(v) = ours.and_then(|o| HeaderValue::from_str(&o).ok()) {
                headers.insert(SESSION_HEADER, v);
            }
        } else if let Some(sid) = upstream.filter(|_| opened)
            && !self.bind(scope, server, sid, who)
        {
            tracing::warn!(
                server,
                "a new session's id is bound to another principal; not rebound"
            );
        }
        if let Some(sid) = session
            && (status == StatusCode::NOT_FOUND
                || (method == Method::DELETE && status.is_success()))
        {
            self.unbind(scope, server, sid);
        }
    }

    /// Bindings held in `scope`, expired ones included until swept.
    pub fn len(&self, scope: &str) -> usize {
        self.lock().get(scope).map_or(0, |s| s.entries.len())
    }

    /// True when `scope` holds no binding.
    pub fn is_empty(&self, scope: &str) -> bool {
        self.len(scope) == 0
    }
}

#[cfg(test)]
mod tests;
