//! The relay as an OAuth 2.1 resource server (MCP authorization,
//! 2025-06-18 and 2026-07-28): JWT access tokens from configured issuers,
//! verified against each issuer's JWKS, bound to the endpoint they were
//! issued for (RFC 8707), with RFC 9728 metadata so clients find the
//! authorization server from a 401.
//!
//! - [`jwks`]: one issuer and its cached, refetched signing keys.
//! - [`token`]: verifying one token into a [`Principal`].
//! - [`verified`]: tokens already verified, so repeat calls skip the
//!   signature check.
//!
//! A token never goes further than this module: what travels down the
//! tunnel is the principal it proved (subject, groups, issuer, `jti`, the
//! allow-listed claims).

pub mod jwks;
pub mod token;
pub mod verified;

use std::sync::Arc;

use serde_json::json;

use crate::mcp::McpError;
use crate::principal::Principal;
pub use jwks::{Issuer, IssuerSettings};

/// Where a principal's groups come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupsSource {
    /// A top-level claim holding an array of strings (or one
    /// space-separated string): `groups`, `roles`, or a namespaced name
    /// like `https://example.com/groups`.
    Claim(String),
    /// The token's scopes.
    Scopes,
}

/// How one tunnel accepts OAuth access tokens.
#[derive(Debug, Clone)]
pub struct OAuthPolicy {
    /// Trusted issuers; a token's `iss` must be one of them exactly.
    pub issuers: Vec<Arc<Issuer>>,
    /// Audiences accepted besides the endpoint's own URL (RFC 8707 binds a
    /// token to the resource it was requested for).
    pub audiences: Vec<String>,
    /// Scopes every token must carry (`scope` or `scp`).
    pub required_scopes: Vec<String>,
    /// Where groups come from.
    pub groups: GroupsSource,
    /// Top-level claims copied into the principal, when present.
    pub claims: Vec<String>,
    /// Whether the relay's API keys also work on this tunnel.
    pub api_keys: bool,
    /// Tokens already verified on this tunnel.
    pub verified: Arc<verified::VerifiedTokens>,
}

/// Why a bearer token was refused, as the agent learns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// No token: the challenge points at the metadata.
    #[error("a bearer token is required")]
    Missing,
    /// 401 `error="invalid_token"` with this description.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// 403 `error="insufficient_scope"`.
    #[error("the token lacks a required scope")]
    InsufficientScope,
}

/// The endpoint URLs of one tunnel and server, from the relay's public URL.
#[derive(Debug, Clone)]
pub struct Resource {
    /// `{public}/t/{tunnel}/{server}/mcp`: the RFC 8707 resource.
    pub url: String,
    /// `{public}/.well-known/oauth-protected-resource/t/{tunnel}/{server}/mcp`.
    pub metadata_url: String,
}

impl Resource {
    pub fn new(public_url: &str, tunnel: &str, server: &str) -> Resource {
        let base = public_url.trim_end_matches('/');
        Resource {
            url: format!("{base}/t/{tunnel}/{server}/mcp"),
            metadata_url: format!("{base}{METADATA_PREFIX}/t/{tunnel}/{server}/mcp"),
        }
    }
}

/// The RFC 9728 well-known prefix, inserted before the endpoint's path.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

impl OAuthPolicy {
    /// Verifies `token` for `resource`.
    pub async fn authenticate(
        &self,
        token: &str,
        resource: &Resource,
    ) -> Result<Principal, OAuthError> {
        let key = verified::key(&resource.url, token);
        if let Some(p) = self.verified.get(&key) {
            return Ok(p);
        }
        let (principal, exp) = token::verify(self, token, &resource.url).await?;
        self.verified.insert(key, principal.clone(), exp);
        Ok(principal)
    }

    /// The RFC 9728 protected-resource metadata of `resource`.
    pub fn metadata(&self, resource: &Resource) -> serde_json::Value {
        let mut doc = json!({
            "resource": resource.url,
            "authorization_servers": self.issuers.iter().map(|i| i.issuer()).collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": "Portcullis",
        });
        if !self.required_scopes.is_empty()
            && let Some(map) = doc.as_object_mut()
        {
            map.insert("scopes_supported".into(), json!(self.required_scopes));
        }
        doc
    }

    /// The `WWW-Authenticate` value for `error` (RFC 6750 §3, RFC 9728 §5.1).
    pub fn challenge(&self, resource: &Resource, error: &OAuthError) -> String {
        let mut parts = Vec::new();
        match error {
            OAuthError::Missing => {}
            OAuthError::InvalidToken(d) => {
                parts.push(r#"error="invalid_token""#.to_owned());
                parts.push(format!(r#"error_description="{d}""#));
            }
            OAuthError::InsufficientScope => {
                parts.push(r#"error="insufficient_scope""#.to_owned());
                parts.push(r#"error_description="the token lacks a required scope""#.to_owned());
            }
        }
        parts.push(format!(r#"resource_metadata="{}""#, resource.metadata_url));
        if !self.required_scopes.is_empty() {
            parts.push(format!(r#"scope="{}""#, self.required_scopes.join(" ")));
        }
        format!("Bearer {}", parts.join(", "))
    }

    /// The agent-facing error for `error`.
    pub fn refusal(&self, resource: &Resource, error: &OAuthError) -> McpError {
        McpError::Challenge {
            status: match error {
                OAuthError::InsufficientScope => http::StatusCode::FORBIDDEN,
                _ => http::StatusCode::UNAUTHORIZED,
            },
            message: error.to_string(),
            challenge: self.challenge(resource, error),
        }
    }
}

/// True when `token` has the shape of a JWT (three dot-separated parts),
/// which no API key has.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(scopes: &[&str]) -> OAuthPolicy {
        OAuthPolicy {
            issuers: Vec::new(),
            audiences: Vec::new(),
            required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            groups: GroupsSource::Claim("groups".into()),
            claims: Vec::new(),
            api_keys: false,
            verified: Default::default(),
        }
    }

    #[test]
    fn challenges_point_at_the_endpoints_metadata() {
        let r = Resource::new("https://relay.example.com/", "t1", "crm");
        assert_eq!(r.url, "https://relay.example.com/t/t1/crm/mcp");
        assert_eq!(
            r.metadata_url,
            "https://relay.example.com/.well-known/oauth-protected-resource/t/t1/crm/mcp"
        );
        let p = policy(&["mcp:tools", "crm"]);
        assert_eq!(
            p.challenge(&r, &OAuthError::Missing),
            r#"Bearer resource_metadata="https://relay.example.com/.well-known/oauth-protected-resource/t/t1/crm/mcp", scope="mcp:tools crm""#
        );
        assert_eq!(
            p.challenge(&r, &OAuthError::InsufficientScope),
            r#"Bearer error="insufficient_scope", error_description="the token lacks a required scope", resource_metadata="https://relay.example.com/.well-known/oauth-protected-resource/t/t1/crm/mcp", scope="mcp:tools crm""#
        );
        assert!(
            policy(&[])
                .challenge(&r, &OAuthError::InvalidToken("expired"))
                .starts_with(r#"Bearer error="invalid_token", error_description="expired", resource_metadata=""#)
        );
        assert_eq!(
            p.refusal(&r, &OAuthError::InsufficientScope)
                .status_and_code()
                .0,
            http::StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn jwts_are_told_from_api_keys_by_shape() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("pck_agent_abcdef"));
        assert!(!looks_like_jwt("a.b"));
    }
}
