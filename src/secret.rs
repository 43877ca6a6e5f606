//! Credentials: generation, hashing and constant-time comparison.
//!
//! Relay configs store only SHA-256 digests of agent keys and tunnel tokens, so
//! a leaked config does not leak a credential. Every generated id or secret
//! carries 256 bits from the OS random source.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of agent API keys.
pub const AGENT_KEY_PREFIX: &str = "pk_";
/// Prefix of tunnel tokens.
pub const TUNNEL_TOKEN_PREFIX: &str = "pt_";

/// `prefix` followed by 32 random bytes, base64url.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A random identifier of 128 bits, hex (tunnel ids, session ids).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Lower-case hex SHA-256 of a secret, as stored in configs.
pub fn digest_hex(secret: &str) -> String {
    hex::encode(digest(secret))
}

/// Parses a stored hex digest.
pub fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digest.trim()).ok()?;
    bytes.try_into().ok()
}

/// Compares two digests without an early exit.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_distinct_and_hash_stably() {
        let a = generate(AGENT_KEY_PREFIX);
        let b = generate(AGENT_KEY_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("pk_") && a.len() > 40);
        assert_eq!(parse_digest(&digest_hex(&a)), Some(digest(&a)));
        assert!(digests_equal(&digest(&a), &digest(&a)));
        assert!(!digests_equal(&digest(&a), &digest(&b)));
        assert_eq!(random_id().len(), 32);
    }
}
