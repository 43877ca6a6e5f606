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
}
