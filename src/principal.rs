//! The verified identity of an agent, as the relay hands it to the gateway.
//!
//! The relay authenticates the agent and drops its credential; what travels
//! down the tunnel is this structured principal in one header, which the
//! gateway trusts because only the relay can send on a tunnel.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Header carrying the base64url-encoded JSON principal, relay → gateway.
pub const PRINCIPAL_HEADER: &str = "portcullis-principal";

/// What makes two principals the same agent, for owning a session: the
/// subject, compared exactly (kept as its SHA-256 digest).
///
/// Groups are not part of it: they say what the agent may do today and
/// change with the directory, while a session belongs to whoever opened it
/// (each of its messages still passes the policy chain with the groups of
/// the moment). The issuer is part of it by construction: today every
/// principal comes from one issuer, the relay's agent keys, where the
/// subject is the agent's configured name, so two keys sharing a subject
/// (a key being rotated) are one agent and keys with different subjects
/// are different agents. A principal from a second issuer (OAuth, whose
/// `sub` is unique only per `iss`) has to bring the issuer into this
/// digest. Under `--insecure-no-auth` every agent is `anonymous`, so all
/// agents share their sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrincipalId([u8; 32]);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Stable identifier of the agent (an API key's subject or a token's `sub`).
    pub subject: String,
    /// Groups the subject belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Principal {
    /// The anonymous principal used only under `--insecure-no-auth`.
    pub fn anonymous() -> Principal {
        Principal {
            subject: "anonymous".into(),
            groups: Vec::new(),
        }
    }

    /// The identity a session is bound to.
    pub fn id(&self) -> PrincipalId {
        PrincipalId(crate::secret::digest(&self.subject))
    }

    /// Encodes for [`PRINCIPAL_HEADER`].
    pub fn to_header(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a [`PRINCIPAL_HEADER`] value.
    pub fn from_header(value: &[u8]) -> Option<Principal> {
        let json = URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = Principal {
            subject: "agent-7".into(),
            groups: vec!["support".into()],
        };
        assert_eq!(Principal::from_header(p.to_header().as_bytes()), Some(p));
        assert_eq!(Principal::from_header(b"!!"), None);
    }

    #[test]
    fn the_same_agent_is_its_subject_whatever_its_groups() {
        let p = |subject: &str, groups: &[&str]| Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        assert_eq!(p("a", &["x"]).id(), p("a", &[]).id());
        assert_ne!(p("a", &["x"]).id(), p("b", &["x"]).id());
        assert_ne!(p("a", &[]).id(), p("A", &[]).id());
    }
}
