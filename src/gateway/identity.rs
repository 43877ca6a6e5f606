//! The identity the gateway vouches for to an upstream: a short-lived JWT
//! it signs itself (ES256, a key from the gateway's config), naming the
//! verified principal, for that one upstream. The agent's own token never
//! reaches the gateway, let alone an upstream; this is what an upstream gets
//! instead, and verifies against the gateway's JWKS (served on its admin
//! listener at [`JWKS_PATH`]).
//!
//! Claims: `iss` (the gateway's configured issuer), `sub`, `groups`, `aud`
//! (the upstream's configured audience), `iat`, `nbf`, `exp` (after
//! [`limits::MINTED_TOKEN_LIFETIME`]), `jti` (random), and when the
//! principal came from an OAuth token, `idp_iss` (its issuer).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair as _;
use serde_json::{Value, json};

use crate::limits;
use crate::principal::Principal;

/// Where the admin listener serves the gateway's public keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Why a signing key is unusable, or a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the identity key is not a PKCS#8 P-256 (ES256) private key: {0}")]
    Key(String),
    #[error("cannot sign the identity token: {0}")]
    Sign(String),
}

/// The gateway's signing key and issuer name.
pub struct Minter {
    issuer: String,
    kid: String,
    key: EncodingKey,
    public: Value,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// A minter signing with the P-256 key `pkcs8` (DER), as `issuer`.
    /// The key id is derived from the public key, so a new key is a new
    /// `kid` without configuration.
    pub fn new(issuer: &str, pkcs8: &[u8]) -> Result<Minter, IdentityError> {
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| IdentityError::Key(e.to_string()))?;
        // An uncompressed point: 0x04, x (32 bytes), y (32 bytes).
        let point = pair.public_key().as_ref();
        let (x, y) = match point {
            [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => return Err(IdentityError::Key("unexpected public key form".into())),
        };
        let kid = crate::secret::digest(&URL_SAFE_NO_PAD.encode(point));
        let kid = URL_SAFE_NO_PAD.encode(kid.get(..16).unwrap_or_default());
        Ok(Minter {
            issuer: issuer.to_owned(),
            public: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
            kid,
            key: EncodingKey::from_ec_der(pkcs8),
        })
    }

    /// The issuer name tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public JWKS upstreams verify with.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.public] })
    }

    /// A token saying `principal` calls through this gateway, for the
    /// upstream known as `audience`.
    pub fn mint(&self, principal: &Principal, audience: &str) -> Result<String, IdentityError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = json!({
            "iss": self.issuer,
            "sub": principal.subject,
            "groups": principal.groups,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + limits::MINTED_TOKEN_LIFETIME.as_secs(),
            "jti": crate::secret::random_id(),
        });
        if let (Some(iss), Some(map)) = (&principal.issuer, claims.as_object_mut()) {
            map.insert("idp_iss".into(), json!(iss));
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| IdentityError::Sign(e.to_string()))
    }
}

/// One upstream's minted identity: the gateway's minter and the audience
/// that upstream expects.
#[derive(Debug, Clone)]
pub struct UpstreamIdentity {
    pub minter: Arc<Minter>,
    pub audience: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode, jwk::Jwk};

    fn minter() -> Minter {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Minter::new("https://gateway.example.com", &key.serialize_der()).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_against_the_published_jwks() {
        let m = minter();
        let p = Principal {
            issuer: Some("https://idp.example.com".into()),
            ..Principal::named("alice", vec!["support".into()])
        };
        let token = m.mint(&p, "https://crm.internal").unwrap();
        let jwk: Jwk = serde_json::from_value(m.jwks()["keys"][0].clone()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["https://crm.internal"]);
        v.set_issuer(&["https://gateway.example.com"]);
        let claims = decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["groups"], json!(["support"]));
        assert_eq!(claims["idp_iss"], "https://idp.example.com");
        let exp = claims["exp"].as_u64().unwrap();
        assert_eq!(
            exp - claims["iat"].as_u64().unwrap(),
            limits::MINTED_TOKEN_LIFETIME.as_secs()
        );
        // Another audience does not accept it.
        v.set_audience(&["https://billing.internal"]);
        assert!(decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &v).is_err());
    }

    #[test]
    fn a_key_that_is_not_p256_is_refused() {
        let rsa_like = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(Minter::new("https://g", &rsa_like.serialize_der()).is_err());
        assert!(Minter::new("https://g", b"garbage").is_err());
    }
}
