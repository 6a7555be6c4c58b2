// A development OpenID provider (panva's oidc-provider) for `scalple demo` and the test suite:
// device flow for the CLI, client credentials for applications, JWT access tokens for the proxy's
// audience carrying email, name and groups. Loopback only; its sign-in accepts the demo people
// with the demo password. Never a production IdP.
import { createServer, type Server } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

export interface DevPerson {
  sub: string;
  email: string;
  name: string;
  groups: string[];
}

export interface DevApplication {
  clientId: string;
  clientSecret: string;
  groups?: string[];
}

export interface DevIdpOptions {
  people: DevPerson[];
  applications?: DevApplication[];
  /** Audience of access tokens (the proxy's identity.audience). */
  audience?: string;
  cliClientId?: string;
  /** Password every demo person signs in with. */
  password?: string;
  accessTokenTtlSeconds?: number;
  port?: number;
}

export interface DevIdp {
  issuer: string;
  audience: string;
  cliClientId: string;
  /** The provider's signing key (private JWK): tests use it to mint expired or odd tokens. */
  signingJwk: Record<string, unknown>;
  setAccessTokenTtl(seconds: number): void;
  close(): Promise<void>;
}

export const DEMO_PEOPLE: DevPerson[] = [
  { sub: 'u-alice', email: 'alice@example.com', name: 'Alice Support', groups: ['support'] },
  { sub: 'u-bob', email: 'bob@example.com', name: 'Bob Billing', groups: ['billing'] },
  { sub: 'u-carol', email: 'carol@example.com', name: 'Carol DBA', groups: ['dba'] },
];

const RESOURCE = 'urn:scalple:proxy';

export async function startDevIdp(opts: DevIdpOptions): Promise<DevIdp> {
  const audience = opts.audience ?? 'scalple';
  const cliClientId = opts.cliClientId ?? 'scalple-cli';
  const password = opts.password ?? 'demo';
  let accessTokenTtl = opts.accessTokenTtlSeconds ?? 3600;
  const people = new Map<string, DevPerson>();
  for (const p of opts.people) {
    people.set(p.sub, p);
    people.set(p.email, p);
  }
  const apps = new Map((opts.applications ?? []).map((a) => [a.clientId, a]));

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: `dev-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };

  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: cliClientId,
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      ...[...apps.values()].map((a) => ({
        client_id: a.clientId,
        client_secret: a.clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      })),
    ],
    jwks: { keys: [signingJwk] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    conformIdTokenClaims: false,
    findAccount: async (_ctx, id) => {
      const p = people.get(id);
      if (!p) return undefined;
      return {
        accountId: p.sub,
        claims: async () => ({ sub: p.sub, email: p.email, email_verified: true, name: p.name, groups: p.groups }),
      };
    },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: 'openid email profile groups offline_access',
          audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: accessTokenTtl,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: async (_ctx, token) => {
      const t = token as { accountId?: string; clientId?: string };
      if (t.accountId) {
        const p = people.get(t.accountId);
        return p ? { email: p.email, name: p.name, groups: p.groups } : undefined;
      }
      const app = t.clientId ? apps.get(t.clientId) : undefined;
      return app ? { groups: app.groups ?? [] } : undefined;
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: () => accessTokenTtl,
      ClientCredentials: () => accessTokenTtl,
      DeviceCode: 600,
      IdToken: () => accessTokenTtl,
      RefreshToken: 86400,
      Grant: 86400,
      Interaction: 600,
      Session: 86400,
    },
    pkce: { required: () => false },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><title>Error</title></head><body><h1>${escapeHtml(String(out.error))}</h1><p>${escapeHtml(String(out.error_description ?? ''))}</p></body></html>`;
    },
  });
  // The dev sign-in form takes any login; only the demo people with the demo password get through.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)) {
      const body = await readForm(ctx.req);
      if (body.get('prompt') === 'login' && (!people.has(body.get('login') ?? '') || body.get('password') !== password)) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = '<!DOCTYPE html><html><body><h1>Sign-in failed</h1><p>Unknown person or wrong password.</p></body></html>';
        return;
      }
      // The account id is the person's subject, whichever of sub or email they typed.
      if (body.get('prompt') === 'login') body.set('login', people.get(body.get('login')!)!.sub);
      // Hand the already-read body on to the provider's own parser.
      (ctx.req as unknown as { body: Record<string, string> }).body = Object.fromEntries(body);
    }
    await next();
  });
  if (process.env.SCALPLE_IDP_DEBUG) for (const ev of ['server_error', 'device_resume.error', 'grant.error', 'code_verification.error', 'authorization.error']) (provider.on as (e: string, f: (...a: unknown[]) => void) => void)(ev, (...a: unknown[]) => console.error('[idp]', ev, a[1] ?? a[0]));
  server.on('request', provider.callback());

  return {
    issuer,
    audience,
    cliClientId,
    signingJwk,
    setAccessTokenTtl(seconds: number) {
      accessTokenTtl = seconds;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function readForm(req: NodeJS.ReadableStream): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
