// A real OpenID Connect provider for the tests (npm oidc-provider, pinned in package.json), on
// loopback. Clients: "console" (confidential, authorization code + PKCE, redirect URIs from
// CONSOLE_REDIRECT_URIS, comma-separated) and "cloudctl" (public, device code). Users: alice and
// bob, any password (oidc-provider's development login form). Listens on PORT; prints
// "listening ISSUER" when ready; stops on SIGTERM.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const host = '127.0.0.1';
const accounts = {
  alice: { sub: 'alice', email: 'alice@example.com', email_verified: true, name: 'Alice Liddell', preferred_username: 'alice' },
  bob: { sub: 'bob', email: 'bob@example.com', email_verified: true, name: 'Bob', preferred_username: 'bob' },
};

if (!port) {
  console.error('set PORT');
  process.exit(2);
}
const issuer = `http://${host}:${port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'console',
      client_secret: process.env.CONSOLE_SECRET || 'console-secret',
      redirect_uris: (process.env.CONSOLE_REDIRECT_URIS || 'http://127.0.0.1/auth/callback').split(','),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    {
      // A native app (RFC 8252): its loopback redirect may use any port.
      client_id: 'cloudctl',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token', 'authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
  ],
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return claims; } };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
  cookies: { keys: ['test-only-cookie-key'] },
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
  pkce: { required: () => true },
  ttl: { AccessToken: 3600, IdToken: 3600, DeviceCode: 600, Grant: 3600, Interaction: 600, Session: 3600 },
});
const server = provider.listen(port, host, () => console.log(`listening ${issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
