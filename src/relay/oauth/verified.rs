//! Tokens this tunnel already verified, so an agent's next call with the
//! same token costs a digest and a lookup instead of a signature check.
//!
//! Keyed by the SHA-256 of the endpoint URL and the token together (the
//! audience check depends on the endpoint), holding the principal it proved
//! and its `exp`. An entry is used while the token has not expired (with
//! the same skew as a full check) and for at most
//! [`limits::VERIFIED_TOKEN_TTL`] after it was verified, so a key the
//! issuer withdrew stops being honoured soon after the JWKS says so. Only
//! successful verifications are kept; the table is bounded.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::limits;
use crate::principal::Principal;

struct Entry {
    principal: Principal,
    /// The token's `exp`, Unix seconds.
    exp: u64,
    verified: Instant,
}

/// The verified-token table of one tunnel's OAuth policy.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedTokens")
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The table key of `token` presented at `resource`.
pub fn key(resource: &str, token: &str) -> [u8; 32] {
    crate::secret::digest(&format!("{}:{resource}{token}", resource.len()))
}

impl VerifiedTokens {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // Entries are inserted and removed whole; poison is safe to ignore.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal `key`'s token proved, while it is still good.
    pub fn get(&self, key: &[u8; 32]) -> Option<Principal> {
        let mut map = self.lock();
        let e = map.get(key)?;
        let good = now_unix() <= e.exp.saturating_add(limits::JWT_CLOCK_SKEW.as_secs())
            && e.verified.elapsed() < limits::VERIFIED_TOKEN_TTL;
        if good {
            return Some(e.principal.clone());
        }
        map.remove(key);
        None
    }

    /// Remembers a token verified just now.
    pub fn insert(&self, key: [u8; 32], principal: Principal, exp: u64) {
        let mut map = self.lock();
        if map.len() >= limits::MAX_VERIFIED_TOKENS {
            let now = now_unix();
            map.retain(|_, e| now <= e.exp && e.verified.elapsed() < limits::VERIFIED_TOKEN_TTL);
            if map.len() >= limits::MAX_VERIFIED_TOKENS {
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                principal,
                exp,
                verified: Instant::now(),
            },
        );
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_remembered_for_its_endpoint_until_it_expires() {
        let t = VerifiedTokens::default();
        let p = Principal::named("u", vec![]);
        let k = key("https://r/t/a/s/mcp", "tok");
        t.insert(k, p.clone(), now_unix() + 300);
        assert_eq!(t.get(&k), Some(p.clone()));
        assert_eq!(t.get(&key("https://r/t/b/s/mcp", "tok")), None);
        let old = key("https://r/t/a/s/mcp", "old");
        t.insert(old, p, now_unix() - limits::JWT_CLOCK_SKEW.as_secs() - 1);
        assert_eq!(t.get(&old), None);
        assert_eq!(t.len(), 1, "an expired entry is dropped when found");
    }

    #[test]
    fn the_table_is_bounded() {
        let t = VerifiedTokens::default();
        for i in 0..=limits::MAX_VERIFIED_TOKENS {
            t.insert(
                key("r", &i.to_string()),
                Principal::named("u", vec![]),
                now_unix() + 300,
            );
        }
        assert!(t.len() <= limits::MAX_VERIFIED_TOKENS);
    }
}
