//! Verifying one access token into a [`Principal`].
//!
//! Order: size and shape; the header (a supported asymmetric algorithm, no
//! `crit`); the issuer named by the unverified `iss`, which must be one of
//! the tunnel's exactly; that issuer's key for the header's `kid` and
//! `alg`; then the signature and `iss`, `aud`, `exp`, `nbf` (with
//! [`limits::JWT_CLOCK_SKEW`]) and `sub` by `jsonwebtoken`; then scopes;
//! then the principal, bounded by [`limits::MAX_PRINCIPAL_BYTES`].
//! Nothing from a token is trusted before its signature is checked except
//! which issuer's keys to check it with.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::jwks::{KeyError, SUPPORTED_ALGORITHMS};
use super::{GroupsSource, OAuthError, OAuthPolicy};
use crate::limits;
use crate::principal::Principal;

/// Longest subject, issuer or token id taken from a token.
const MAX_IDENTIFIER_BYTES: usize = 1024;

/// Verifies `token` for the endpoint `resource`: the principal it proves
/// and its `exp`.
pub async fn verify(
    policy: &OAuthPolicy,
    token: &str,
    resource: &str,
) -> Result<(Principal, u64), OAuthError> {
    use OAuthError::InvalidToken;
    if token.len() > limits::MAX_BEARER_TOKEN_BYTES {
        return Err(InvalidToken("the token is too large"));
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InvalidToken("not a JWT"));
    };
    // `crit` names extensions the verifier must understand (RFC 7515
    // §4.1.11); this one understands none.
    let raw_head = segment(head).ok_or(InvalidToken("malformed token header"))?;
    if raw_head.contains_key("crit") {
        return Err(InvalidToken("unsupported critical header"));
    }
    // `alg: none` and unknown algorithms do not parse; HMAC ones parse and
    // are refused here, before any key is looked at.
    let header = decode_header(token).map_err(|_| InvalidToken("unsupported token algorithm"))?;
    if !SUPPORTED_ALGORITHMS.contains(&header.alg) {
        return Err(InvalidToken("unsupported token algorithm"));
    }
    let unverified = segment(body).ok_or(InvalidToken("malformed token payload"))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(InvalidToken("the token has no issuer"))?;
    let issuer = policy
        .issuers
        .iter()
        .find(|i| i.issuer() == iss)
        .ok_or(InvalidToken("the token's issuer is not trusted here"))?;
    let key = issuer
        .key(header.kid.as_deref(), header.alg)
        .await
        .map_err(|e| match e {
            KeyError::Unknown => InvalidToken("unknown signing key"),
            KeyError::Unavailable => InvalidToken("the issuer's signing keys are unavailable"),
        })?;

    let mut v = Validation::new(key.alg);
    v.algorithms = vec![key.alg];
    v.leeway = limits::JWT_CLOCK_SKEW.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[issuer.issuer()]);
    let mut audiences: Vec<&str> = vec![resource];
    audiences.extend(policy.audiences.iter().map(String::as_str));
    v.set_audience(&audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = decode::<Map<String, Value>>(token, &key.key, &v)
        .map_err(|e| {
            InvalidToken(match e.kind() {
                ErrorKind::InvalidSignature => "invalid signature",
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidAudience => "the token is not for this resource",
                ErrorKind::InvalidIssuer => "the token's issuer is not trusted here",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks exp, iss, aud or sub",
                ErrorKind::InvalidAlgorithm => "unsupported token algorithm",
                _ => "malformed token",
            })
        })?
        .claims;

    let scopes = scopes(&claims).ok_or(InvalidToken("malformed scope claim"))?;
    if !policy
        .required_scopes
        .iter()
        .all(|s| scopes.iter().any(|t| t == s))
    {
        return Err(OAuthError::InsufficientScope);
    }
    // `jsonwebtoken` checked that `exp` is a number in the future.
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    Ok((principal(policy, issuer.issuer(), &claims, scopes)?, exp))
}

/// A base64url JSON object segment.
fn segment(text: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The token's scopes: `scope` (RFC 9068: space-separated) or `scp` (an
/// array, or a string, as Entra ID and Okta send it). `None` when present
/// but malformed.
fn scopes(claims: &Map<String, Value>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            None => {}
            Some(v) => out.extend(string_list(v)?),
        }
    }
    Some(out)
}

/// An array of strings, or one space-separated string.
fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn identifier(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, OAuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_IDENTIFIER_BYTES => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(OAuthError::InvalidToken("malformed sub or jti claim")),
    }
}

fn principal(
    policy: &OAuthPolicy,
    issuer: &str,
    claims: &Map<String, Value>,
    scopes: Vec<String>,
) -> Result<Principal, OAuthError> {
    use OAuthError::InvalidToken;
    let subject = identifier(claims, "sub")?.ok_or(InvalidToken("the token has no subject"))?;
    let groups = match &policy.groups {
        GroupsSource::Scopes => scopes,
        GroupsSource::Claim(name) => match claims.get(name) {
            None => Vec::new(),
            Some(v) => string_list(v).ok_or(InvalidToken("malformed groups claim"))?,
        },
    };
    if groups.len() > limits::MAX_PRINCIPAL_GROUPS {
        return Err(InvalidToken("too many groups"));
    }
    let kept = policy
        .claims
        .iter()
        .filter_map(|name| Some((name.clone(), claims.get(name)?.clone())))
        .collect();
    let p = Principal {
        subject,
        groups,
        issuer: Some(issuer.to_owned()),
        token_id: identifier(claims, "jti")?,
        claims: kept,
    };
    if p.json_len() > limits::MAX_PRINCIPAL_BYTES {
        return Err(InvalidToken("the token's identity is too large"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> OAuthPolicy {
        OAuthPolicy {
            issuers: Vec::new(),
            audiences: Vec::new(),
            required_scopes: Vec::new(),
            groups: GroupsSource::Claim("roles".into()),
            claims: vec!["department".into(), "acr".into()],
            api_keys: false,
            verified: Default::default(),
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        assert_eq!(scopes(&map(json!({"scope": "a b"}))).unwrap(), ["a", "b"]);
        assert_eq!(
            scopes(&map(json!({"scp": ["a", "b"]}))).unwrap(),
            ["a", "b"]
        );
        assert_eq!(scopes(&map(json!({}))).unwrap(), Vec::<String>::new());
        assert!(scopes(&map(json!({"scope": 7}))).is_none());
        assert!(scopes(&map(json!({"scp": [1]}))).is_none());
    }

    #[test]
    fn the_principal_takes_only_allow_listed_claims() {
        let claims = map(json!({"sub": "u1", "jti": "j1", "roles": ["support"],
            "department": "support", "acr": "mfa", "salary": 100, "email": "u@x"}));
        let p = principal(&policy(), "https://idp", &claims, vec!["s".into()]).unwrap();
        assert_eq!(p.subject, "u1");
        assert_eq!(p.issuer.as_deref(), Some("https://idp"));
        assert_eq!(p.token_id.as_deref(), Some("j1"));
        assert_eq!(p.groups, ["support"]);
        assert_eq!(
            Value::Object(p.claims),
            json!({"department": "support", "acr": "mfa"})
        );
        let mut by_scope = policy();
        by_scope.groups = GroupsSource::Scopes;
        let p = principal(&by_scope, "https://idp", &claims, vec!["s".into()]).unwrap();
        assert_eq!(p.groups, ["s"]);
    }

    #[test]
    fn an_oversized_or_malformed_identity_is_refused() {
        let many: Vec<String> = (0..=limits::MAX_PRINCIPAL_GROUPS)
            .map(|i| i.to_string())
            .collect();
        let claims = map(json!({"sub": "u1", "roles": many}));
        assert_eq!(
            principal(&policy(), "i", &claims, vec![]),
            Err(OAuthError::InvalidToken("too many groups"))
        );
        let claims =
            map(json!({"sub": "u1", "department": "x".repeat(limits::MAX_PRINCIPAL_BYTES)}));
        assert_eq!(
            principal(&policy(), "i", &claims, vec![]),
            Err(OAuthError::InvalidToken(
                "the token's identity is too large"
            ))
        );
        for bad in [json!({"sub": 7}), json!({"sub": ""}), json!({})] {
            assert!(principal(&policy(), "i", &map(bad), vec![]).is_err());
        }
        assert!(
            principal(
                &policy(),
                "i",
                &map(json!({"sub": "u", "roles": 3})),
                vec![]
            )
            .is_err()
        );
    }
}
