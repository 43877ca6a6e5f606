//! One trusted issuer and its signing keys: the JWKS, found from the
//! issuer's metadata (RFC 8414, else OpenID Connect discovery) or
//! configured, fetched over HTTPS only, cached, refetched when a token names
//! a key the cache does not hold (at most once per
//! [`IssuerSettings::refetch_interval`]), refreshed after
//! [`limits::JWKS_REFRESH_AFTER`], and used for up to
//! [`limits::JWKS_MAX_STALE`] while the issuer cannot be reached.
//!
//! Only asymmetric signature keys are kept: a JWKS entry of type `oct`
//! (an HMAC secret) or for encryption is ignored, so no token can be
//! verified with a shared secret, let alone with a public key used as one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::limits;

/// The signature algorithms accepted on access tokens. No `none`, no HMAC.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// How to reach one issuer.
#[derive(Clone)]
pub struct IssuerSettings {
    /// The issuer identifier, exactly as tokens carry it in `iss`.
    pub issuer: String,
    /// The JWKS URL; when `None`, found in the issuer's metadata.
    pub jwks_uri: Option<String>,
    /// TLS for the metadata and JWKS fetches (the issuer's CA, or the
    /// system roots).
    pub tls: Arc<rustls::ClientConfig>,
    /// Shortest time between fetches caused by an unknown key id or a
    /// failed fetch.
    pub refetch_interval: std::time::Duration,
}

impl std::fmt::Debug for IssuerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerSettings")
            .field("issuer", &self.issuer)
            .field("jwks_uri", &self.jwks_uri)
            .finish_non_exhaustive()
    }
}

/// A usable verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The issuer's JWKS has no key with this id and algorithm.
    #[error("the token's signing key is not one of the issuer's keys")]
    Unknown,
    /// No JWKS could be fetched (recently enough to trust).
    #[error("the issuer's signing keys cannot be fetched")]
    Unavailable,
}

/// Why a fetch failed (for the log; the agent sees [`KeyError`]).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not an https URL")]
    NotHttps(String),
    #[error("GET {url}: {reason}")]
    Get { url: String, reason: String },
    #[error("{url}: {reason}")]
    Document { url: String, reason: String },
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Default)]
struct Cache {
    keys: Vec<Key>,
    /// Last successful JWKS fetch.
    fetched: Option<Instant>,
    /// Last fetch attempt, successful or not.
    attempted: Option<Instant>,
    /// The JWKS URL, once configured or discovered.
    jwks_uri: Option<String>,
}

/// A trusted issuer and its cached keys.
pub struct Issuer {
    settings: IssuerSettings,
    client: HttpsClient,
    cache: Mutex<Cache>,
    /// One fetch at a time; callers that waited re-check the cache.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer whose keys are fetched on first use.
    pub fn new(settings: IssuerSettings) -> Issuer {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(limits::JWKS_FETCH_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*settings.tls).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let cache = Cache {
            jwks_uri: settings.jwks_uri.clone(),
            ..Cache::default()
        };
        Issuer {
            client: Client::builder(TokioExecutor::new()).build(connector),
            settings,
            cache: Mutex::new(cache),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// An issuer whose JWKS is `keys`, as if just fetched: for benchmarks
    /// and tests that measure verification without an IdP.
    #[doc(hidden)]
    pub fn with_keys(settings: IssuerSettings, keys: Vec<Key>) -> Issuer {
        let issuer = Issuer::new(settings);
        {
            let mut c = issuer.lock();
            c.keys = keys;
            c.fetched = Some(Instant::now());
            c.attempted = Some(Instant::now());
        }
        issuer
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache is replaced whole under the lock; a panic elsewhere
        // cannot leave it half-written, so poison is safe to ignore.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key to verify a token signed with `alg` under key id `kid`.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Key, KeyError> {
        let now = Instant::now();
        let (found, fresh, usable, may_fetch) = {
            let c = self.lock();
            let age = c.fetched.map(|t| now.saturating_duration_since(t));
            let may_fetch = c
                .attempted
                .is_none_or(|t| now.saturating_duration_since(t) >= self.settings.refetch_interval);
            (
                select(&c.keys, kid, alg),
                age.is_some_and(|a| a < limits::JWKS_REFRESH_AFTER),
                age.is_some_and(|a| a < limits::JWKS_MAX_STALE),
                may_fetch,
            )
        };
        match found {
            Some(key) if fresh => return Ok(key),
            Some(key) if usable && !may_fetch => return Ok(key),
            _ => {}
        }
        if may_fetch {
            self.refetch().await;
        }
        let c = self.lock();
        let usable = c
            .fetched
            .is_some_and(|t| Instant::now().saturating_duration_since(t) < limits::JWKS_MAX_STALE);
        if !usable {
            return Err(KeyError::Unavailable);
        }
        select(&c.keys, kid, alg).ok_or(KeyError::Unknown)
    }

    /// Fetches the JWKS unless another caller just did; a failure keeps the
    /// keys already cached.
    async fn refetch(&self) {
        let _one = self.fetching.lock().await;
        let attempted = self.lock().attempted;
        if attempted.is_some_and(|t| t.elapsed() < self.settings.refetch_interval) {
            return;
        }
        self.lock().attempted = Some(Instant::now());
        match tokio::time::timeout(limits::JWKS_FETCH_TIMEOUT * 2, self.fetch()).await {
            Ok(Ok((uri, keys))) => {
                tracing::info!(issuer = %self.settings.issuer, keys = keys.len(), "fetched the issuer's JWKS");
                let mut c = self.lock();
                c.keys = keys;
                c.jwks_uri = Some(uri);
                c.fetched = Some(Instant::now());
            }
            Ok(Err(e)) => {
                tracing::warn!(issuer = %self.settings.issuer, error = %e, "cannot fetch the issuer's JWKS; keeping the cached keys")
            }
            Err(_) => {
                tracing::warn!(issuer = %self.settings.issuer, "fetching the issuer's JWKS timed out; keeping the cached keys")
            }
        }
    }

    async fn fetch(&self) -> Result<(String, Vec<Key>), FetchError> {
        let known = self.lock().jwks_uri.clone();
        let uri = match known {
            Some(u) => u,
            None => self.discover().await?,
        };
        let doc = self.get_json(&uri).await?;
        Ok((uri, parse_jwks(&doc)))
    }

    /// The `jwks_uri` from the issuer's metadata: RFC 8414 first, then
    /// OpenID Connect discovery. The document must name this issuer.
    async fn discover(&self) -> Result<String, FetchError> {
        let mut last = None;
        for url in metadata_urls(&self.settings.issuer)? {
            match self.get_json(&url).await {
                Ok(doc) => {
                    if doc.get("issuer").and_then(Value::as_str) != Some(&self.settings.issuer) {
                        return Err(FetchError::Document {
                            url,
                            reason: "its issuer is not the configured issuer".into(),
                        });
                    }
                    let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| {
                        FetchError::Document {
                            url: url.clone(),
                            reason: "no jwks_uri".into(),
                        }
                    })?;
                    if !jwks.starts_with("https://") {
                        return Err(FetchError::NotHttps(jwks.to_owned()));
                    }
                    return Ok(jwks.to_owned());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| FetchError::NotHttps(self.settings.issuer.clone())))
    }

    async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let get = |reason: String| FetchError::Get {
            url: url.to_owned(),
            reason,
        };
        if !url.starts_with("https://") {
            return Err(FetchError::NotHttps(url.to_owned()));
        }
        let uri: Uri = url.parse().map_err(|_| get("not a URL".into()))?;
        let req = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| get(e.to_string()))?;
        let resp = tokio::time::timeout(limits::JWKS_FETCH_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| get("timed out".into()))?
            .map_err(|e| get(e.to_string()))?;
        if resp.status() != StatusCode::OK {
            return Err(get(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = tokio::time::timeout(
            limits::JWKS_FETCH_TIMEOUT,
            crate::body::read_limited(resp.into_body(), limits::MAX_JWKS_BYTES),
        )
        .await
        .map_err(|_| get("timed out reading the body".into()))?
        .map_err(|e| get(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| FetchError::Document {
            url: url.to_owned(),
            reason: format!("not JSON: {e}"),
        })
    }
}

/// RFC 8414's path-aware URL, then OpenID Connect's.
fn metadata_urls(issuer: &str) -> Result<Vec<String>, FetchError> {
    let rest = issuer
        .strip_prefix("https://")
        .ok_or_else(|| FetchError::NotHttps(issuer.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = path.trim_end_matches('/');
    Ok(vec![
        format!("https://{authority}/.well-known/oauth-authorization-server{path}"),
        format!("https://{authority}{path}/.well-known/openid-configuration"),
    ])
}

/// The key for `kid` and `alg`: by id when the token names one, else the
/// only key of that algorithm.
fn select(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<Key> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid) && k.alg == alg)
            .cloned(),
        None => {
            let mut of_alg = keys.iter().filter(|k| k.alg == alg);
            match (of_alg.next(), of_alg.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        }
    }
}

/// The usable keys of a JWKS document: signature keys of a supported
/// algorithm; anything else (HMAC secrets, encryption keys, other curves,
/// entries that do not parse) is skipped.
pub fn parse_jwks(doc: &Value) -> Vec<Key> {
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    entries
        .iter()
        .take(limits::MAX_JWKS_KEYS)
        .filter_map(parse_key)
        .collect()
}

fn parse_key(v: &Value) -> Option<Key> {
    let text = |name: &str| v.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let implied = match (text("kty")?, text("crv")) {
        ("RSA", _) => Algorithm::RS256,
        ("EC", Some("P-256")) => Algorithm::ES256,
        ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
        _ => return None,
    };
    let alg = match text("alg") {
        None => implied,
        Some(a) => {
            let named = SUPPORTED_ALGORITHMS
                .into_iter()
                .find(|s| alg_name(*s) == a)?;
            // A key's declared algorithm must fit its type.
            (named == implied).then_some(named)?
        }
    };
    let jwk: Jwk = serde_json::from_value(v.clone()).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: text("kid").map(str::to_owned),
        alg,
        key,
    })
}

/// The JOSE name of a supported algorithm.
pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_urls_are_path_aware() {
        assert_eq!(
            metadata_urls("https://idp.example.com/realms/acme").unwrap(),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server/realms/acme",
                "https://idp.example.com/realms/acme/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            metadata_urls("https://idp.example.com/").unwrap(),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration"
            ]
        );
        assert!(metadata_urls("http://idp.example.com").is_err());
    }

    #[test]
    fn only_asymmetric_signature_keys_are_kept() {
        let ec = json!({"kty": "EC", "crv": "P-256", "kid": "e1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h1", "alg": "HS256"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": ec["x"], "y": ec["y"]},
            {"kty": "EC", "crv": "P-256", "kid": "liar", "alg": "RS256",
             "x": ec["x"], "y": ec["y"]},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "broken"},
            ec,
        ]});
        let keys = parse_jwks(&doc);
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["e1"]);
        assert_eq!(keys[0].alg, Algorithm::ES256);
        assert!(select(&keys, Some("e1"), Algorithm::ES256).is_some());
        assert!(select(&keys, Some("e1"), Algorithm::RS256).is_none());
        assert!(select(&keys, None, Algorithm::ES256).is_some());
        assert!(select(&keys, Some("h1"), Algorithm::ES256).is_none());
    }
}
