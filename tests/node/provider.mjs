// An OpenID Certified provider (the npm package `oidc-provider`) for
// tests/it/browser.rs: PKCE required for every client, `amr` and
// `auth_time` in ID tokens, one confidential client for the gateway, and
// minimal login and consent pages of our own (the package's development
// pages set no `amr`).
//
// Usage: node provider.mjs <redirect_uri> <client_id> <client_secret>
// Listens on 127.0.0.1 (an ephemeral port) and prints one JSON line
// {"issuer": ...} once it is ready. Any password logs in; the login name
// is the account id and the email.
import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const [redirectUri, clientId, clientSecret] = process.argv.slice(2);
if (!redirectUri || !clientId || !clientSecret) {
  console.error('usage: node provider.mjs <redirect_uri> <client_id> <client_secret>');
  process.exit(2);
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

// A signing key of our own per run (the package's built-in one is for
// quick starts only).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    require_auth_time: true,
  }],
  pkce: { required: () => true },
  // email in the ID token itself (the gateway reads no userinfo).
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub', 'amr', 'auth_time'],
    email: ['email', 'email_verified'],
    amr: null,
    auth_time: null,
  },
  features: { devInteractions: { enabled: false } },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, email_verified: true }),
  }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});
// Plain http on loopback: tell the provider it is not behind TLS.
provider.proxy = false;

const page = (res, title, body) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1>${body}</body></html>`);
};

const readForm = (req) => new Promise((resolve, reject) => {
  let data = '';
  req.on('data', (c) => { data += c; if (data.length > 16384) reject(new Error('too large')); });
  req.on('end', () => resolve(new URLSearchParams(data)));
  req.on('error', reject);
});

const callback = provider.callback();
server.on('request', async (req, res) => {
  const m = req.url.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/confirm)?$/);
  if (!m) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    const { uid, prompt, params, session } = details;
    if (req.method === 'GET' && !m[2]) {
      if (prompt.name === 'login') {
        return page(res, 'Sign in', `<p>Client ${params.client_id}</p>
<form method="post" action="/interaction/${uid}/login">
<input name="login" id="login" placeholder="email"><input name="password" id="password" type="password">
<button type="submit" id="submit">Sign in</button></form>`);
      }
      return page(res, 'Authorize', `<p>${session?.accountId ?? ''}: allow ${params.client_id} to read ${params.scope}?</p>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit" id="allow">Allow</button></form>`);
    }
    if (req.method === 'POST' && m[2] === '/login' && prompt.name === 'login') {
      const form = await readForm(req);
      const login = form.get('login');
      if (!login || !form.get('password')) return page(res, 'Sign in failed', '<p>login and password are required</p>');
      return provider.interactionFinished(req, res, { login: { accountId: login, amr: ['pwd'] } }, { mergeWithLastSubmission: false });
    }
    if (req.method === 'POST' && m[2] === '/confirm' && prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`unexpected ${req.method} for prompt ${prompt.name}\n`);
  } catch (e) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${e.message}\n`);
  }
});

console.log(JSON.stringify({ issuer }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
