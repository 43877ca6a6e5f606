//! `cargo bench --bench oauth`: what verifying an agent's access token costs
//! the relay per call with the issuer's JWKS cached, through
//! `OAuthPolicy::authenticate` exactly as the agent endpoint calls it: a
//! token's first call (header checks, key lookup, signature, claims, scopes,
//! the principal) and its repeat calls (the verified-token table).
//! ES256 and EdDSA (the keys are generated here; ring generates no RSA keys,
//! so RS256 is measured only through the integration tests' real AS).
//! Prints a table; the target (20 µs p50) is read, not asserted.
//!
//! `cargo bench --bench oauth -- [--calls N]` (default 5000 per algorithm).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../src/cli/bench/stats.rs"]
mod stats;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use portcullis::relay::oauth::jwks::Key;
use portcullis::relay::oauth::{GroupsSource, Issuer, IssuerSettings, OAuthPolicy, Resource};
use ring::signature::KeyPair as _;
use serde_json::json;
use stats::{WARMUP, percentile};

const DEFAULT_CALLS: usize = 5000;
const ISSUER: &str = "https://idp.example.com";

/// A signing key and its verification key, for `alg`.
fn keys(alg: Algorithm) -> (EncodingKey, DecodingKey) {
    match alg {
        Algorithm::ES256 => {
            let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let der = k.serialize_der();
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &der,
                &ring::rand::SystemRandom::new(),
            )
            .unwrap();
            let point = pair.public_key().as_ref();
            let (x, y) = point[1..].split_at(32);
            (
                EncodingKey::from_ec_der(&der),
                DecodingKey::from_ec_components(
                    &URL_SAFE_NO_PAD.encode(x),
                    &URL_SAFE_NO_PAD.encode(y),
                )
                .unwrap(),
            )
        }
        _ => {
            let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let der = k.serialize_der();
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
            (
                EncodingKey::from_ed_der(&der),
                DecodingKey::from_ed_components(
                    &URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                )
                .unwrap(),
            )
        }
    }
}

fn main() {
    let mut calls = DEFAULT_CALLS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--calls" {
            calls = args.next().and_then(|n| n.parse().ok()).expect("--calls N");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resource = Resource::new("https://relay.example.com", "t1", "crm");
    let tls = portcullis::tls::client_config(Some(&[]), None, &[]).unwrap();
    println!("| token validation per call (cached JWKS) | p50 µs | p99 µs | target |");
    println!("|---|---:|---:|---:|");
    for (alg, name) in [(Algorithm::ES256, "ES256"), (Algorithm::EdDSA, "EdDSA")] {
        let (sign, verify) = keys(alg);
        let issuer = Issuer::with_keys(
            IssuerSettings {
                issuer: ISSUER.into(),
                jwks_uri: Some(format!("{ISSUER}/jwks")),
                tls: tls.clone(),
                refetch_interval: Duration::from_secs(10),
            },
            vec![Key {
                kid: Some("k1".into()),
                alg,
                key: verify,
            }],
        );
        let mut policy = OAuthPolicy {
            issuers: vec![Arc::new(issuer)],
            audiences: Vec::new(),
            required_scopes: vec!["mcp:tools".into()],
            groups: GroupsSource::Claim("groups".into()),
            claims: vec!["department".into(), "acr".into()],
            api_keys: false,
            verified: Default::default(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = Header::new(alg);
        header.kid = Some("k1".into());
        header.typ = Some("at+jwt".into());
        let claims = json!({
            "iss": ISSUER, "sub": "agent-7", "aud": resource.url, "exp": now + 3600,
            "iat": now, "jti": "b2f1c0", "scope": "mcp:tools openid",
            "groups": ["support", "emea"], "department": "support", "acr": "mfa",
            "client_id": "agent", "email": "agent@example.com",
        });
        let token = jsonwebtoken::encode(&header, &claims, &sign).unwrap();
        // A first call with a token: every check and the signature. Then
        // the agent's next calls with the same token: the verified table.
        for (what, fresh) in [("first call with a token", true), ("repeat call", false)] {
            let mut times = Vec::with_capacity(calls);
            rt.block_on(async {
                for i in 0..calls + WARMUP {
                    if fresh {
                        policy.verified = Default::default();
                    }
                    let t = Instant::now();
                    let p = policy.authenticate(&token, &resource).await.unwrap();
                    let elapsed = t.elapsed();
                    assert_eq!(p.subject, "agent-7");
                    if i >= WARMUP {
                        times.push(elapsed);
                    }
                }
            });
            times.sort();
            println!(
                "| {name}, {what} | {:.1} | {:.1} | 20 |",
                percentile(&times, 0.50).as_secs_f64() * 1e6,
                percentile(&times, 0.99).as_secs_f64() * 1e6,
            );
        }
    }
}
