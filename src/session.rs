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
//! Bounded: each scope (a tunnel at the relay, a server at the gateway)
//! holds at most `capacity` bindings, the least recently used evicted
//! first, and a binding unused for `idle` expires. Ids and owners are kept
//! as SHA-256 digests, so an entry has a fixed size whatever ids an
//! upstream mints, and a presented id is found by lookup, never compared
//! byte by byte.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::mcp::McpError;
use crate::mcp::era::SESSION_HEADER;
use crate::principal::{Principal, PrincipalId};

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

    fn touch(&mut self, k: Key, owner: PrincipalId, now: Instant) {
        self.clock += 1;
        let tick = self.clock;
        let entry = Entry {
            owner,
            used: now,
            tick,
        };
        if let Some(old) = self.entries.insert(k, entry) {
            self.by_use.remove(&old.tick);
        }
        self.by_use.insert(tick, k);
    }

    fn check(&mut self, k: Key, who: PrincipalId, now: Instant, idle: Duration) -> Option<bool> {
        self.expire(now, idle);
        let owned = self.entries.get(&k)?.owner == who;
        if owned {
            self.touch(k, who, now);
        }
        Some(owned)
    }

    /// False when another principal holds `k` (it stays theirs).
    fn bind(&mut self, k: Key, who: PrincipalId, now: Instant, idle: Duration, cap: usize) -> bool {
        self.expire(now, idle);
        if self.entries.get(&k).is_some_and(|e| e.owner != who) {
            return false;
        }
        self.touch(k, who, now);
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

/// Session bindings per scope, bounded in count and age.
pub struct SessionTable {
    scopes: Mutex<HashMap<Box<str>, Scope>>,
    capacity: usize,
    idle: Duration,
}

impl SessionTable {
    /// At most `capacity` bindings per scope, each expiring after `idle`
    /// without use.
    pub fn new(capacity: usize, idle: Duration) -> SessionTable {
        SessionTable {
            scopes: Mutex::default(),
            capacity: capacity.max(1),
            idle,
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
        let (k, who_id) = (key(server, session), who.id());
        let mut scopes = self.lock();
        // Binds are rare (one per session), so the scope's name is copied
        // each time rather than looked up first.
        let s = scopes.entry(scope.into()).or_default();
        // The clock is read under the lock, so the order of use is the
        // order of time and expiry can sweep from the front.
        s.bind(k, who_id, Instant::now(), self.idle, self.capacity)
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
    pub fn learn(
        &self,
        req: &Presented<'_>,
        method: &Method,
        status: StatusCode,
        headers: &HeaderMap,
    ) {
        let Presented {
            scope,
            server,
            session,
            who,
        } = *req;
        match session {
            None if method == Method::POST && status.is_success() => {
                let minted = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
                if let Some(sid) = minted
                    && !self.bind(scope, server, sid, who)
                {
                    tracing::warn!(
                        server,
                        "a new session's id is bound to another principal; not rebound"
                    );
                }
            }
            Some(sid)
                if status == StatusCode::NOT_FOUND
                    || (method == Method::DELETE && status.is_success()) =>
            {
                self.unbind(scope, server, sid);
            }
            _ => {}
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
mod tests {
    use super::*;

    fn p(subject: &str, groups: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn req<'a>(
        at: (&'a str, &'a str),
        session: Option<&'a str>,
        who: &'a Principal,
    ) -> Presented<'a> {
        Presented {
            scope: at.0,
            server: at.1,
            session,
            who,
        }
    }

    const IDLE: Duration = Duration::from_secs(60);
    const CRM: (&str, &str) = ("t1", "crm");

    #[test]
    fn only_the_owner_is_admitted_and_unknown_ids_follow_the_rule() {
        let t = SessionTable::new(8, IDLE);
        let (a, b) = (p("a", &["x"]), p("b", &["x"]));
        assert!(t.bind("t1", "crm", "s1", &a));
        assert_eq!(t.check(&req(CRM, Some("s1"), &a), Unknown::Refuse), Ok(()));
        // Groups change; the agent does not.
        let a_later = p("a", &["y"]);
        assert_eq!(
            t.check(&req(CRM, Some("s1"), &a_later), Unknown::Refuse),
            Ok(())
        );
        for unknown in [Unknown::Pass, Unknown::Refuse] {
            let stranger = t.check(&req(CRM, Some("s1"), &b), unknown);
            assert_eq!(stranger, Err(SessionRefused::NotOwner));
        }
        // The same id on another server or in another scope is another session.
        for at in [("t1", "hr"), ("t2", "crm")] {
            assert_eq!(t.check(&req(at, Some("s1"), &b), Unknown::Pass), Ok(()));
            let unbound = t.check(&req(at, Some("s1"), &a), Unknown::Refuse);
            assert_eq!(unbound, Err(SessionRefused::Unbound));
        }
        assert_eq!(t.check(&req(CRM, None, &b), Unknown::Refuse), Ok(()));
        // A stranger cannot take a bound id over.
        assert!(!t.bind("t1", "crm", "s1", &b));
        assert_eq!(t.check(&req(CRM, Some("s1"), &a), Unknown::Refuse), Ok(()));
    }

    #[test]
    fn the_least_recently_used_binding_is_evicted_and_then_refused() {
        let mut s = Scope::default();
        let now = Instant::now();
        let a = p("a", &[]).id();
        for i in 0u8..3 {
            assert!(s.bind([i; 32], a, now, IDLE, 3));
        }
        // Using the oldest makes the second the least recently used.
        assert_eq!(s.check([0; 32], a, now, IDLE), Some(true));
        assert!(s.bind([3; 32], a, now, IDLE, 3));
        assert_eq!(s.entries.len(), 3);
        assert_eq!(s.by_use.len(), 3);
        assert_eq!(s.check([1; 32], a, now, IDLE), None);
        for kept in [0, 2, 3] {
            assert_eq!(s.check([kept; 32], a, now, IDLE), Some(true));
        }
    }

    #[test]
    fn an_idle_binding_expires_and_use_keeps_it_alive() {
        let mut s = Scope::default();
        let t0 = Instant::now();
        let a = p("a", &[]).id();
        assert!(s.bind([1; 32], a, t0, IDLE, 8));
        assert!(s.bind([2; 32], a, t0, IDLE, 8));
        let t1 = t0 + IDLE / 2;
        assert_eq!(s.check([2; 32], a, t1, IDLE), Some(true));
        let t2 = t0 + IDLE;
        assert_eq!(s.check([1; 32], a, t2, IDLE), None);
        assert_eq!(s.check([2; 32], a, t2, IDLE), Some(true));
        assert_eq!(s.check([2; 32], a, t2 + IDLE, IDLE), None);
        assert!(s.entries.is_empty() && s.by_use.is_empty());
    }

    #[test]
    fn exchanges_bind_new_sessions_and_end_deleted_ones() {
        let t = SessionTable::new(8, IDLE);
        let a = p("a", &[]);
        let (new, s9) = (req(CRM, None, &a), req(CRM, Some("s9"), &a));
        let mut minted = HeaderMap::new();
        minted.insert(SESSION_HEADER, "s9".parse().unwrap());
        let (ok, none) = (StatusCode::OK, HeaderMap::new());
        // Only a session-less POST answered with success binds.
        t.learn(&new, &Method::POST, StatusCode::BAD_GATEWAY, &minted);
        t.learn(&new, &Method::GET, ok, &minted);
        t.learn(&req(CRM, Some("s1"), &a), &Method::POST, ok, &minted);
        assert!(t.is_empty("t1"));
        t.learn(&new, &Method::POST, ok, &minted);
        assert_eq!(t.check(&s9, Unknown::Refuse), Ok(()));
        // A DELETE the upstream refused leaves the session.
        t.learn(&s9, &Method::DELETE, StatusCode::METHOD_NOT_ALLOWED, &none);
        assert_eq!(t.len("t1"), 1);
        t.learn(&s9, &Method::DELETE, ok, &none);
        assert!(t.is_empty("t1"));
        // An upstream that no longer knows the session ended it.
        t.learn(&new, &Method::POST, ok, &minted);
        t.learn(&s9, &Method::POST, StatusCode::NOT_FOUND, &none);
        assert!(t.is_empty("t1"));
    }
}
