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
    /// The token's issuer (`iss`) when the agent presented an OAuth access
    /// token; `None` for an API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The token's id (`jti`), for the audit trail; never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The token's claims that the tunnel's configuration allow-lists, as
    /// the token carried them (empty for an API key).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Principal {
    /// The anonymous principal used only under `--insecure-no-auth`.
    pub fn anonymous() -> Principal {
        Principal {
            subject: "anonymous".into(),
            ..Principal::default()
        }
    }

    /// A principal with just a subject and groups (an API key's).
    pub fn named(subject: impl Into<String>, groups: Vec<String>) -> Principal {
        Principal {
            subject: subject.into(),
            groups,
            ..Principal::default()
        }
    }

    /// The identity a session is bound to.
    pub fn id(&self) -> PrincipalId {
        match &self.issuer {
            None => PrincipalId(crate::secret::digest(&self.subject)),
            // Length-prefixed, so no issuer/subject split is ambiguous.
            Some(iss) => PrincipalId(crate::secret::digest(&format!(
                "oauth:{}:{iss}{}",
                iss.len(),
                self.subject
            ))),
        }
    }

    /// The claims as JSON object text, as plugins receive them.
    pub fn claims_json(&self) -> std::borrow::Cow<'static, str> {
        if self.claims.is_empty() {
            return std::borrow::Cow::Borrowed("{}");
        }
        std::borrow::Cow::Owned(
            serde_json::to_string(&self.claims).unwrap_or_else(|_| "{}".to_owned()),
        )
    }

    /// The size of this principal as JSON, as [`crate::limits::MAX_PRINCIPAL_BYTES`]
    /// bounds it.
    pub fn json_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }

    /// Encodes for [`PRINCIPAL_HEADER`].
    pub fn to_header(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a [`PRINCIPAL_HEADER`] value; one larger than
    /// [`crate::limits::MAX_PRINCIPAL_BYTES`] is refused.
    pub fn from_header(value: &[u8]) -> Option<Principal> {
        if value.len() > crate::limits::MAX_PRINCIPAL_BYTES.div_ceil(3) * 4 {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = Principal::named("agent-7", vec!["support".into()]);
        assert_eq!(Principal::from_header(p.to_header().as_bytes()), Some(p));
        assert_eq!(Principal::from_header(b"!!"), None);
        let mut claims = serde_json::Map::new();
        claims.insert("department".into(), serde_json::json!("support"));
        let o = Principal {
            issuer: Some("https://idp.example.com".into()),
            token_id: Some("j1".into()),
            claims,
            ..Principal::named("u1", vec!["g".into()])
        };
        assert_eq!(
            Principal::from_header(o.to_header().as_bytes()),
            Some(o.clone())
        );
        assert_eq!(o.claims_json(), r#"{"department":"support"}"#);
        assert_eq!(Principal::named("x", vec![]).claims_json(), "{}");
    }

    #[test]
    fn a_principal_header_over_the_limit_is_refused() {
        let big = Principal::named("x".repeat(crate::limits::MAX_PRINCIPAL_BYTES * 2), vec![]);
        assert_eq!(Principal::from_header(big.to_header().as_bytes()), None);
    }

    #[test]
    fn an_oauth_subject_is_one_agent_only_with_its_issuer() {
        let o = |iss: Option<&str>, sub: &str| Principal {
            issuer: iss.map(str::to_owned),
            ..Principal::named(sub, vec![])
        };
        assert_eq!(
            o(Some("https://a"), "u").id(),
            o(Some("https://a"), "u").id()
        );
        assert_ne!(
            o(Some("https://a"), "u").id(),
            o(Some("https://b"), "u").id()
        );
        assert_ne!(o(Some("https://a"), "u").id(), o(None, "u").id());
        assert_ne!(
            o(Some("https://a"), "bu").id(),
            o(Some("https://ab"), "u").id()
        );
    }

    #[test]
    fn the_same_agent_is_its_subject_whatever_its_groups() {
        let p = |subject: &str, groups: &[&str]| {
            Principal::named(subject, groups.iter().map(|g| (*g).to_owned()).collect())
        };
        assert_eq!(p("a", &["x"]).id(), p("a", &[]).id());
        assert_ne!(p("a", &["x"]).id(), p("b", &["x"]).id());
        assert_ne!(p("a", &[]).id(), p("A", &[]).id());
    }
}
