// A real OpenID provider for the tests: the npm package oidc-provider
// (pinned in package.json / package-lock.json), run by
// internal/testenv/oidcprovider.go as `node provider.mjs` with its config in
// the environment (OIDC_TEST_CONFIG, JSON):
//
//   { "issuer": "http://127.0.0.1:PORT", "port": PORT,
//     "clients": [ { client_id, client_secret, redirect_uris, post_logout_redirect_uris } ],
//     "users": { "alice": { "password": "...", "claims": { ... } } } }
//
// Login is a scripted password form (GET/POST /interaction/:uid) that
// checks the configured users; consent is granted for the scopes asked
// (first-party clients). RP-initiated logout is on; its confirmation page
// is a plain form (POST it to end the provider's session).
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.OIDC_TEST_CONFIG);

const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
signingKey.kid = 'test-rs256';
signingKey.use = 'sig';
signingKey.alg = 'RS256';

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map((c) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: c.client_secret ? 'client_secret_basic' : 'none',
    ...c,
  })),
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile', 'groups', 'roles'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
    roles: ['roles'],
  },
  // The scopes' claims go into the ID token (the tests read them there).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = `<!DOCTYPE html><html><body>${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button></body></html>`;
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const u = cfg.users[id];
    if (!u) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...u.claims }) };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const g = await ctx.oidc.provider.Grant.find(grantId);
      if (g) return g;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(ctx.oidc.params.scope);
    await grant.save();
    return grant;
  },
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));

const loginPage = (uid, error) => `<!DOCTYPE html><html><body>
<h1>Sign in</h1>${error ? `<p class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}">
<input name="login" autocomplete="username"><input name="password" type="password"><button type="submit">Sign in</button>
</form></body></html>`;

const readBody = (req) => new Promise((resolve, reject) => {
  let b = '';
  req.setEncoding('utf8');
  req.on('data', (c) => { b += c; if (b.length > 16384) reject(new Error('body too large')); });
  req.on('end', () => resolve(b));
  req.on('error', reject);
});

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const send = (code, body) => {
    res.writeHead(code, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  };
  if (details.prompt.name !== 'login') {
    send(400, `unexpected prompt ${esc(details.prompt.name)}`);
    return;
  }
  if (req.method === 'GET') {
    send(200, loginPage(details.uid));
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  const login = form.get('login') || '';
  const user = Object.hasOwn(cfg.users, login) ? cfg.users[login] : undefined;
  if (!user || form.get('password') !== user.password) {
    send(401, loginPage(details.uid, 'invalid username or password'));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: login, amr: ['pwd'] } }, { mergeWithLastSubmission: false });
}

const handle = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error('interaction', err);
      if (!res.headersSent) {
        res.writeHead(400, { 'content-type': 'text/plain' });
      }
      res.end(String(err.message || err));
    });
    return;
  }
  handle(req, res);
});
server.listen(cfg.port, '127.0.0.1', () => console.log(`oidc-provider listening on ${cfg.issuer}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
