//! Agent authentication at the relay: API keys stored as SHA-256 digests,
//! each mapped to a principal and the tunnels it may use.

use std::collections::HashMap;

use crate::principal::Principal;
use crate::secret;

/// Which tunnels a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelScope {
    /// Every tunnel on this relay.
    All,
    /// Only these tunnel ids.
    Only(Vec<String>),
}

impl TunnelScope {
    /// True when `tunnel` is in scope.
    pub fn allows(&self, tunnel: &str) -> bool {
        match self {
            TunnelScope::All => true,
            TunnelScope::Only(ids) => ids.iter().any(|t| t == tunnel),
        }
    }
}

/// One agent key's grant.
#[derive(Debug, Clone)]
pub struct AgentGrant {
    pub principal: Principal,
    pub tunnels: TunnelScope,
}

/// The relay's agent keys, by digest.
#[derive(Debug, Clone, Default)]
pub struct AgentAuth {
    keys: HashMap<[u8; 32], AgentGrant>,
}

impl AgentAuth {
    /// From `(key digest, grant)` pairs.
    pub fn new(entries: impl IntoIterator<Item = ([u8; 32], AgentGrant)>) -> AgentAuth {
        AgentAuth {
            keys: entries.into_iter().collect(),
        }
    }

    /// The grant of a presented key. Looking up by the digest means a key is
    /// never compared byte by byte against stored material.
    pub fn verify(&self, key: &str) -> Option<&AgentGrant> {
        self.keys.get(&secret::digest(key))
    }
}

/// Extracts the token of an `Authorization: Bearer …` header value.
pub fn bearer(value: Option<&http::HeaderValue>) -> Option<&str> {
    let v = value?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}
