// The development and test OpenID Connect provider of Nimbus: npm `oidc-provider` (a certified
// OpenID provider) with Nimbus's demo users. NEVER for production: the signing key below is a
// committed dev key, the login page is oidc-provider's `devInteractions`, accounts live in this file.
//
//   node server.js            (PORT, OIDC_ISSUER, NIMBUS_REDIRECT_URIS, ... from the environment)
//
// Environment:
//   PORT                      port to listen on (127.0.0.1), default 9000
//   OIDC_ISSUER               issuer URL, default http://127.0.0.1:$PORT
//   NIMBUS_CLIENT_SECRET      secret of the confidential BFF client `nimbus`, default `nimbus-dev-secret`
//   NIMBUS_REDIRECT_URIS      comma-separated redirect URIs of `nimbus`; `*` as the port accepts any
//                             port (tests run the API on random ports), default http://127.0.0.1:*/auth/callback
//   NIMBUS_POST_LOGOUT_URIS   comma-separated post-logout redirect URIs (same `*` rule), default http://127.0.0.1:*/
//   OIDC_ACCESS_TOKEN_TTL     access token lifetime in seconds, default 300
//
// Clients:
//   nimbus      confidential (client_secret_basic), authorization code + PKCE S256 + refresh tokens:
//               the API's backend-for-frontend sign-in.
//   nimbus-cli  public (no secret), authorization code + PKCE S256 + refresh tokens, loopback
//               redirect URIs on any port (RFC 8252 §7.3): scripts that want a JWT for the API.
// Access tokens are RS256 JWTs for the resource `urn:nimbus:api`, audience `nimbus-api`, carrying
// email, name and realm_access like Keycloak's.

import { readFileSync } from 'node:fs';
import { createPrivateKey } from 'node:crypto';
import * as querystring from 'node:querystring';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import Provider from 'oidc-provider';

const here = dirname(fileURLToPath(import.meta.url));
const port = Number(process.env.PORT || 9000);
const issuer = process.env.OIDC_ISSUER || `http://127.0.0.1:${port}`;
const clientSecret = process.env.NIMBUS_CLIENT_SECRET || 'nimbus-dev-secret';
const list = (v, d) => (v || d).split(',').map((s) => s.trim()).filter(Boolean);
const redirectPatterns = list(process.env.NIMBUS_REDIRECT_URIS, 'http://127.0.0.1:*/auth/callback');
const postLogoutPatterns = list(process.env.NIMBUS_POST_LOGOUT_URIS, 'http://127.0.0.1:*/');
const accessTokenTtl = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 300);

// The resource indicator (RFC 8707) of the Nimbus API and the `aud` of its access tokens.
const RESOURCE = 'urn:nimbus:api';
const AUDIENCE = 'nimbus-api';

// DEV KEY: committed on purpose so tokens and tests survive restarts. Never use it anywhere real.
const devKey = createPrivateKey(readFileSync(join(here, 'dev-signing-key.pem')));
const jwk = { ...devKey.export({ format: 'jwk' }), kid: 'nimbus-dev-rs256', use: 'sig', alg: 'RS256' };

// Demo users (documented in the README). `sub` is stable and unrelated to the email, as at real
// providers; roles are Keycloak-shaped (`realm_access.roles`).
const USERS = [
  { sub: 'b6f1c1e0-0000-4000-8000-00000000ad01', email: 'admin@nimbus.test', name: 'Ada Admin', password: 'admin-pass', roles: ['admin'] },
  { sub: 'b6f1c1e0-0000-4000-8000-0000000a11ce', email: 'alice@acme.test', name: 'Alice Acme', password: 'alice-pass', roles: ['user'] },
  { sub: 'b6f1c1e0-0000-4000-8000-000000000b0b', email: 'bob@globex.test', name: 'Bob Globex', password: 'bob-pass', roles: ['user'] },
];
const bySub = new Map(USERS.map((u) => [u.sub, u]));
const byEmail = new Map(USERS.map((u) => [u.email, u]));

function profile(user) {
  return { email: user.email, email_verified: true, name: user.name, realm_access: { roles: user.roles } };
}

// `http://127.0.0.1:*/auth/callback` matches that URI on any port.
function matches(patterns, uri) {
  let url;
  try { url = new URL(uri); } catch { return false; }
  return patterns.some((p) => {
    if (!p.includes(':*')) return p === uri;
    const [before, after] = p.split(':*');
    const probe = new URL(`${before}${after}`);
    return url.protocol === probe.protocol && url.hostname === probe.hostname
      && url.pathname === probe.pathname && url.search === probe.search;
  });
}

const loopbackCli = (uri) => {
  try {
    const u = new URL(uri);
    return u.protocol === 'http:' && (u.hostname === '127.0.0.1' || u.hostname === '[::1]');
  } catch { return false; }
};

const configuration = {
  clients: [
    {
      client_id: 'nimbus',
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // Placeholders: the real check is `redirectUriAllowed` below (ports vary in tests).
      redirect_uris: ['http://127.0.0.1/auth/callback'],
      post_logout_redirect_uris: ['http://127.0.0.1/'],
    },
    {
      client_id: 'nimbus-cli',
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: ['nimbus-dev-cookie-key-not-secret'] },
  // PKCE S256 for every client, confidential ones included (OAuth 2.1).
  pkce: { required: () => true },
  claims: {
    openid: ['sub', 'realm_access'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Profile claims in the ID token itself, as Keycloak does, so the RP needs no userinfo call.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (resource !== RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'api',
          audience: AUDIENCE,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Both clients are first-party: no consent screen, everything requested is granted.
  loadExistingGrant: async (ctx) => {
    const { client, session, params } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
    if (!grant) grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(String(params.scope || 'openid'));
    grant.addResourceScope(RESOURCE, 'api');
    await grant.save();
    return grant;
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  extraTokenClaims: async (_ctx, token) => {
    const user = token.accountId && bySub.get(token.accountId);
    return user ? profile(user) : undefined;
  },
  findAccount: async (_ctx, sub) => {
    const user = bySub.get(sub);
    if (!user) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...profile(user) }) };
  },
  ttl: {
    AccessToken: accessTokenTtl,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Session: 24 * 3600,
    Grant: 14 * 24 * 3600,
    Interaction: 600,
    AuthorizationCode: 60,
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

const Client = provider.Client;
const baseRedirectAllowed = Client.prototype.redirectUriAllowed;
Client.prototype.redirectUriAllowed = function redirectUriAllowed(uri) {
  if (this.clientId === 'nimbus') return matches(redirectPatterns, uri);
  if (this.clientId === 'nimbus-cli') return loopbackCli(uri);
  return baseRedirectAllowed.call(this, uri);
};
const basePostLogoutAllowed = Client.prototype.postLogoutRedirectUriAllowed;
Client.prototype.postLogoutRedirectUriAllowed = function postLogoutRedirectUriAllowed(uri) {
  if (this.clientId === 'nimbus') return matches(postLogoutPatterns, uri);
  return basePostLogoutAllowed.call(this, uri);
};

// devInteractions accepts any login and ignores the password: check both against the demo users
// here, and hand devInteractions the account's `sub`. The check runs on EVERY form POST, not on one
// path: oidc-provider's router matches paths case-insensitively and ignores a trailing `/`, so a
// path test here would be bypassed by `/INTERACTION/<uid>` or `/interaction/<uid>/`. Whatever
// route a body with `prompt=login` reaches, it has been checked (or refused) first.
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const BODY_LIMIT = 56 * 1024; // oidc-provider's own limit
provider.use(async (ctx, next) => {
  if (ctx.method !== 'POST' || !ctx.is('application/x-www-form-urlencoded')) return next();
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > BODY_LIMIT) ctx.throw(413);
    chunks.push(chunk);
  }
  const body = querystring.parse(Buffer.concat(chunks).toString('utf8'));
  // A repeated `prompt` (`prompt=login&prompt=login`) or a `login` sent twice could be read
  // differently here and downstream: refused outright.
  if (Array.isArray(body.prompt) || Array.isArray(body.login) || Array.isArray(body.password)) {
    ctx.status = 400;
    ctx.type = 'text';
    ctx.body = 'repeated form fields are refused';
    return undefined;
  }
  if (body.prompt === 'login') {
    const user = byEmail.get(String(body.login || '').trim().toLowerCase());
    if (!user || user.password !== body.password) {
      const uid = /^\/interaction\/([^/]+)\/?$/i.exec(ctx.path)?.[1];
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><title>Sign-in failed</title><p>Wrong email or password.</p>${
        uid ? `\n<p><a href="/interaction/${escape(uid)}">Try again</a></p>` : ''}`;
      return undefined;
    }
    body.login = user.sub;
    delete body.password;
  }
  ctx.request.body = body;
  return next();
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening: issuer ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
