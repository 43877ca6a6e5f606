// A real OAuth 2.1 authorization server for Portcullis' tests:
// `oidc-provider` (a certified OpenID provider), installed by
// .ci/install-peers, served over HTTPS with the test's CA-issued
// certificate, on loopback only.
//
// It issues JWT access tokens (RFC 9068) by the client-credentials grant,
// bound to the resource the client asks for (RFC 8707, `resource=`), and
// publishes its metadata and JWKS. Clients and the algorithm each signs
// with are fixed below; `extraTokenClaims` gives each client the groups and
// claims a test asserts on.
//
// Usage: node oauth_as.mjs --modules DIR --cert PEM --key PEM [--port N]
// (DIR: the node_modules holding oidc-provider)
// Prints one JSON line {"issuer": "..."} once listening, then obeys
// commands on stdin, one per line, answering each with a JSON line:
//   rotate        new signing keys (new kids) first in the JWKS, old ones kept
//   clock S       shift the AS's clock by S seconds (tokens issued "then")
//   stats         {"jwks_fetches": N}: JWKS requests served so far
//   stop / start  close the listener (the IdP is down) / listen again
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => {
    if (a.startsWith('--')) pairs.push([a.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const tlsOptions = { cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) };

// The AS's clock, shifted on command (`clock S`) before oidc-provider reads it.
let offsetMs = 0;
const realNow = Date.now;
Date.now = () => realNow() + offsetMs;

const { default: Provider } = await import(
  pathToFileURL(path.join(args.modules, 'oidc-provider/lib/index.js')).href
);

/// Client id → [secret, signing alg, extra claims].
const CLIENTS = {
  agent: ['agent-secret', 'RS256', { groups: ['support'], department: 'support', acr: 'mfa', salary: 100 }],
  'agent-es': ['agent-es-secret', 'ES256', { groups: ['sales', 'emea'], department: 'sales' }],
  'agent-ed': ['agent-ed-secret', 'EdDSA', { groups: ['ops'] }],
};
const SCOPES = ['mcp:tools', 'other'];

let generation = 0;
function keySet() {
  generation += 1;
  const keys = [];
  for (const [alg, type, opts] of [
    ['RS256', 'rsa', { modulusLength: 2048 }],
    ['ES256', 'ec', { namedCurve: 'P-256' }],
    ['EdDSA', 'ed25519', {}],
  ]) {
    const { privateKey } = crypto.generateKeyPairSync(type, opts);
    const jwk = privateKey.export({ format: 'jwk' });
    keys.push({ ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-g${generation}` });
  }
  return keys;
}

let keys = keySet();
let server;
let port = Number(args.port || 0);
let issuer;
let jwksFetches = 0;

function provider() {
  const p = new Provider(issuer, {
    clients: Object.entries(CLIENTS).map(([id, [secret]]) => ({
      client_id: id,
      client_secret: secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPES.join(' '),
    })),
    jwks: { keys },
    scopes: SCOPES,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // A token is for exactly the resource asked for; none asked, none issued.
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: SCOPES.join(' '),
          audience: resource,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: CLIENTS[client.clientId][1] } },
        }),
      },
    },
    ttl: { ClientCredentials: 300 },
    extraTokenClaims: (ctx, token) => CLIENTS[token.clientId]?.[2] ?? {},
  });
  p.on('server_error', (ctx, err) => console.error('oauth_as server_error', err));
  return p;
}

function listen() {
  return new Promise((resolve) => {
    server = https.createServer(tlsOptions);
    server.listen(port, '127.0.0.1', () => {
      port = server.address().port;
      issuer = `https://127.0.0.1:${port}`;
      const callback = provider().callback();
      server.on('request', (req, res) => {
        if (req.url.startsWith('/jwks')) jwksFetches += 1;
        callback(req, res);
      });
      resolve();
    });
  });
}

function close() {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

await listen();
console.log(JSON.stringify({ issuer }));

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  try {
    if (cmd === 'rotate') {
      const old = keys;
      keys = [...keySet(), ...old];
      await close();
      await listen();
      console.log(JSON.stringify({ rotated: keys.slice(0, 3).map((k) => k.kid) }));
    } else if (cmd === 'clock') {
      offsetMs = Number(arg) * 1000;
      console.log(JSON.stringify({ clock: Number(arg) }));
    } else if (cmd === 'stats') {
      console.log(JSON.stringify({ jwks_fetches: jwksFetches }));
    } else if (cmd === 'stop') {
      await close();
      console.log(JSON.stringify({ stopped: true }));
    } else if (cmd === 'start') {
      await listen();
      console.log(JSON.stringify({ started: true }));
    } else {
      console.log(JSON.stringify({ error: `unknown command ${cmd}` }));
    }
  } catch (e) {
    console.log(JSON.stringify({ error: String(e) }));
  }
});
rl.on('close', () => process.exit(0));
