// A real RFC 7591/7592 server for dcr-operator's OIDC tests: panva/node-oidc-provider with
// dynamic registration (an initial access token), registration management (the registration
// access token rotates on every update) and the client_credentials grant.
//
// Environment: OIDC_TLS_CERT, OIDC_TLS_KEY (PEM files; the issuer is https, as the CRD and
// the operator require), OIDC_INITIAL_ACCESS_TOKEN (required), OIDC_PORT (default 0: any free
// port). Prints one line `listening <issuer>` on stdout once it accepts connections.
//
// Okta-style registration auth is emulated in front of the provider: `Authorization: SSWS
// <token>` and `X-API-Key: <token>` are rewritten to `Authorization: Bearer <token>`, so a
// client configured with a header scheme is checked against the same initial access token.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const need = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
};

const initialAccessToken = need('OIDC_INITIAL_ACCESS_TOKEN');
const server = https.createServer({
  cert: readFileSync(need('OIDC_TLS_CERT')),
  key: readFileSync(need('OIDC_TLS_KEY')),
});

server.listen(Number(process.env.OIDC_PORT ?? 0), '127.0.0.1', () => {
  const issuer = `https://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [],
    scopes: ['openid', 'api:read', 'api:write'],
    // Echoed back like any other metadata, so a test sees what the client sent.
    extraClientMetadata: { properties: ['software_id', 'software_version'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: { enabled: true, initialAccessToken },
      registrationManagement: { enabled: true, rotateRegistrationAccessToken: true },
    },
  });
  provider.proxy = false;
  provider.use(async (ctx, next) => {
    const auth = ctx.get('authorization');
    const apiKey = ctx.get('x-api-key');
    if (auth.startsWith('SSWS ')) {
      ctx.req.headers.authorization = `Bearer ${auth.slice(5)}`;
    } else if (apiKey && !auth) {
      ctx.req.headers.authorization = `Bearer ${apiKey}`;
    }
    await next();
  });
  server.on('request', provider.callback());
  console.log(`listening ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
