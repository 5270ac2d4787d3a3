// A real OpenID Connect provider (the certified npm package oidc-provider) for
// the gateway's sign-in tests. It signs in test clients with the client
// credentials grant and issues JWT access tokens for the gateway's audience,
// carrying Entra ID's claims (tid, oid, name, roles) from each client's
// metadata.
//
//   node provider.mjs PORT CLIENTS_JSON
//
// Every start makes fresh signing keys (RS256, ES256, EdDSA), so a restart on
// the same port is a key rotation. When it listens it prints one JSON line:
// {"issuer": ..., "keys": [{"kid", "alg", "der"}]} (private keys, base64
// DER, so tests can sign tokens with the provider's own keys).
import * as crypto from 'node:crypto';
import { promisify } from 'node:util';
import Provider from 'oidc-provider';

const [port, clientsJson] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const AUDIENCE = 'api://csp';

const specs = [
  { alg: 'RS256', type: 'rsa', options: { modulusLength: 2048 } },
  { alg: 'ES256', type: 'ec', options: { namedCurve: 'P-256' } },
  { alg: 'EdDSA', type: 'ed25519', options: {} },
];
// Generated off the main thread (libuv's pool), not with generateKeyPairSync.
const generateKeyPair = promisify(crypto.generateKeyPair);
const keys = await Promise.all(specs.map(async ({ alg, type, options }) => {
  const { privateKey } = await generateKeyPair(type, options);
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  return {
    alg,
    kid,
    jwk: { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg },
    // PKCS#1 for RSA, PKCS#8 for the others: what jsonwebtoken signs with.
    der: privateKey.export({ type: type === 'rsa' ? 'pkcs1' : 'pkcs8', format: 'der' }).toString('base64'),
  };
}));

const clients = JSON.parse(clientsJson).map((c) => ({
  client_id: c.id,
  client_secret: c.secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
  csp_claims: c.claims,
}));

const provider = new Provider(issuer, {
  jwks: { keys: keys.map((k) => k.jwk) },
  clients,
  extraClientMetadata: { properties: ['csp_claims'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:csp:rs256',
      useGrantedResource: () => true,
      // The resource picks the signing algorithm (and, for one, another
      // audience); every token is a JWT for the gateway.
      getResourceServerInfo: (ctx, resource) => {
        const alg = { 'urn:csp:rs256': 'RS256', 'urn:csp:es256': 'ES256', 'urn:csp:eddsa': 'EdDSA', 'urn:other:api': 'RS256' }[resource];
        if (!alg) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'csp',
          audience: resource === 'urn:other:api' ? 'api://other' : AUDIENCE,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        };
      },
    },
  },
  // Entra ID's claims: the partner (tid), the user (oid), a display name and
  // app roles, from the client's metadata.
  extraTokenClaims: (ctx, token) => ctx.oidc.client?.csp_claims ?? {},
  formats: {
    customizers: {
      // Entra ID tokens carry nbf; so do these.
      jwt: (ctx, token, jwt) => { jwt.payload.nbf = jwt.payload.iat; },
    },
  },
});

const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ issuer, keys: keys.map(({ kid, alg, der }) => ({ kid, alg, der })) })}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The test that started it may die without a signal: stop with its stdin.
process.stdin.on('end', stop);
process.stdin.resume();
