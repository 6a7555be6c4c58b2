// `scalple login`, `auth status`, `token`, `logout` end to end: the real launcher in its own
// process, the real OpenID provider on loopback, sign-in done only through what a person does
// (read the code and URL the CLI printed, then the browser's GETs and form POSTs). Tokens go to
// the 0600 file here (--insecure-storage, or no D-Bus); the keychain is proven in keychain.test.ts.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import * as oidc from 'openid-client';
import { startTestIdp, type DevIdp } from '../support/idp.ts';
import { claimsOf, login, readDevicePrompt, runCli, sandbox, startCli, untilPast, type Sandbox } from './harness.ts';

const ALICE = { login: 'alice@example.com' };
const BOB = { login: 'bob@example.com' };

let idp: DevIdp;
let box: Sandbox;

beforeAll(async () => {
  idp = await startTestIdp();
});
afterAll(async () => {
  await idp.close();
});
beforeEach(() => {
  box = sandbox();
  idp.setAccessTokenTtl(3600);
});
afterEach(() => {
  box.remove();
});

function credentialsFile(): string {
  return path.join(box.scalpleDir, 'credentials.json');
}
function storedTokens(profile = 'default'): { accessToken: string; refreshToken: string; idToken: string; proxyToken: string } {
  return JSON.parse(readFileSync(credentialsFile(), 'utf8')).profiles[profile];
}
function loginArgs(...more: string[]): string[] {
  return ['--issuer', idp.issuer, '--no-browser', '--insecure-storage', ...more];
}
const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);

describe('device login', () => {
  it('logs in from the code and URL printed on stderr, stores a 0600 token file, and reports status', async () => {
    const r = await login(loginArgs('--proxy', '127.0.0.1:6432', '--database', 'shop'), box.env, ALICE);
    expect(r.stderr).toMatch(/^! First copy your one-time code: [A-Z]{4}-[A-Z]{4}$/m);
    expect(r.stderr).toContain(`Open this URL to continue in your web browser: ${idp.issuer}/device\n`);
    expect(r.stderr).toContain(`with the code already filled in: ${idp.issuer}/device?user_code=`);
    expect(r.stderr).toContain('✓ Logged in as alice@example.com');
    expect(r.stderr).toContain(`Token stored in plain text at ${credentialsFile()} (--insecure-storage)`);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(0);

    expect(statSync(credentialsFile()).mode & 0o777).toBe(0o600);
    expect(statSync(box.scalpleDir).mode & 0o777).toBe(0o700);
    const config = JSON.parse(readFileSync(path.join(box.scalpleDir, 'config.json'), 'utf8'));
    expect(config.profiles.default).toEqual({
      issuer: idp.issuer,
      clientId: 'scalple-cli',
      audience: 'scalple',
      proxy: '127.0.0.1:6432',
      database: 'shop',
      tokenStorage: 'file',
    });
    expect(JSON.stringify(config)).not.toContain('eyJ');

    const status = await runCli(['auth', 'status', '--format', 'json'], box.env);
    expect(status.code).toBe(0);
    const s = JSON.parse(status.stdout);
    expect(s).toMatchObject({
      profile: 'default',
      subject: 'u-alice',
      email: 'alice@example.com',
      name: 'Alice Support',
      groups: ['support'],
      issuer: idp.issuer,
      clientId: 'scalple-cli',
      proxy: '127.0.0.1:6432',
      database: 'shop',
      audience: 'scalple',
      tokenKind: 'access',
      expired: false,
      refreshable: true,
      storage: 'file',
      storageLocation: credentialsFile(),
    });
    const stored = storedTokens();
    expect(s.token).toBe(`${stored.accessToken.slice(0, 6)}…(${stored.accessToken.length} chars)`);
    expect(Date.parse(s.expiresAt) / 1000).toBeGreaterThan(Date.now() / 1000 + 3000);
    expect(status.stdout).not.toContain(stored.accessToken);

    const table = await runCli(['auth', 'status'], box.env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^Logged in as\s+Alice Support <alice@example\.com>$/m);
    expect(table.stdout).toMatch(/^Stored in\s+.*credentials\.json \(plain text, mode 0600\)$/m);
    expect(table.stdout).toMatch(/^Token\s+eyJ\w{3}…\(\d+ chars\), the access token \(audience "scalple"\)$/m);
    expect(table.stdout).not.toContain(stored.accessToken);

    const token = await runCli(['token'], box.env);
    expect(token.code).toBe(0);
    expect(token.stderr).toBe('');
    expect(token.stdout).toBe(stored.accessToken + '\n');
    const claims = claimsOf(token.stdout);
    expect(claims.email).toBe('alice@example.com');
    expect(claims.aud === 'scalple' || (Array.isArray(claims.aud) && claims.aud.includes('scalple'))).toBe(true);
  });

  it('logs in again with no flags, reusing the profile settings', async () => {
    expect((await login(loginArgs('--database', 'shop'), box.env, ALICE)).code).toBe(0);
    const again = await login(['--no-browser'], box.env, BOB);
    expect(again.stderr).toContain(`Open this URL to continue in your web browser: ${idp.issuer}/device`);
    expect(again.stderr).toContain('✓ Logged in as bob@example.com');
    expect(again.code).toBe(0);
    // No keychain here (no D-Bus): the CLI says so and falls back to the 0600 file.
    expect(again.stderr).toContain(`! No working keychain (no D-Bus session: DBUS_SESSION_BUS_ADDRESS is not set): token stored in plain text at ${credentialsFile()}`);
    expect(statSync(credentialsFile()).mode & 0o777).toBe(0o600);
    const s = JSON.parse((await runCli(['auth', 'status', '--format', 'json'], box.env)).stdout);
    expect(s).toMatchObject({ email: 'bob@example.com', database: 'shop', issuer: idp.issuer });
  });

  it('keeps profiles apart', async () => {
    expect((await login(loginArgs(), box.env, ALICE)).code).toBe(0);
    expect((await login(loginArgs('--profile', 'ops'), box.env, { login: 'carol@example.com' })).code).toBe(0);
    expect(claimsOf((await runCli(['token'], box.env)).stdout).email).toBe('alice@example.com');
    expect(claimsOf((await runCli(['token', '--profile', 'ops'], box.env)).stdout).email).toBe('carol@example.com');
    expect(claimsOf((await runCli(['token'], { ...box.env, SCALPLE_PROFILE: 'ops' })).stdout).email).toBe('carol@example.com');
  });

  it('sends the ID token when the access token is not for the proxy audience', async () => {
    const r = await login(loginArgs('--audience', 'some-other-proxy'), box.env, ALICE);
    expect(r.code).toBe(0);
    const token = (await runCli(['token'], box.env)).stdout;
    expect(token.trim()).toBe(storedTokens().idToken);
    expect(claimsOf(token)).toMatchObject({ aud: 'scalple-cli', email: 'alice@example.com', iss: idp.issuer });
    const s = JSON.parse((await runCli(['auth', 'status', '--format', 'json'], box.env)).stdout);
    expect(s.tokenKind).toBe('id');
  });

  it('refuses an http:// issuer that is not on a loopback address', async () => {
    const r = await runCli(['login', '--issuer', 'http://login.example.com', '--no-browser'], box.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: Issuer http://login.example.com uses plain http: use its https:// URL (http:// is accepted only on loopback addresses such as 127.0.0.1, for development).\n');
    expect(existsSync(box.scalpleDir)).toBe(false);
  });

  it('asks for an issuer when the profile has none', async () => {
    const r = await runCli(['login', '--no-browser'], box.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: No issuer for profile "default": Run `scalple login --issuer URL`\n');
  });

  it('names --client-id when the issuer does not know the client', async () => {
    const r = await runCli(['login', ...loginArgs('--client-id', 'nobody')], box.env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: The issuer refused to start the login \(invalid_client.*\): check --client-id \(the issuer refused "nobody"\)\.\n$/);
  });

  it('a refused sign-in leaves the CLI waiting; Ctrl-C cancels it with exit 2 and stores nothing', async () => {
    const cli = startCli(['login', ...loginArgs()], box.env);
    const prompt = await readDevicePrompt(cli);
    const { completeDeviceSignIn } = await import('../support/browser.ts');
    await expect(completeDeviceSignIn(prompt.verificationUri, prompt.userCode, { login: 'alice@example.com', password: 'wrong' })).rejects.toThrow(/sign-in refused/);
    cli.child.kill('SIGINT');
    const r = await cli.done();
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error: Login cancelled\.\n$/);
    expect(existsSync(credentialsFile())).toBe(false);
  });
});

describe('not logged in', () => {
  it('token and auth status exit 4 naming `scalple login`', async () => {
    for (const args of [['token'], ['auth', 'status'], ['auth', 'status', '--format', 'json', '--profile', 'ops']]) {
      const r = await runCli(args, box.env);
      expect(r.code).toBe(4);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^error: Not logged in \(profile "(default|ops)"\): Run `scalple login( --profile ops)?`\n$/);
    }
  });
});

describe('refresh', () => {
  it('refreshes an expired access token with the refresh token', async () => {
    idp.setAccessTokenTtl(1);
    expect((await login(loginArgs(), box.env, ALICE)).code).toBe(0);
    const first = storedTokens();
    const exp = claimsOf(first.accessToken).exp!;
    expect(exp - claimsOf(first.accessToken).iat!).toBe(1);
    idp.setAccessTokenTtl(3600);
    await untilPast(exp);

    const expiredStatus = JSON.parse((await runCli(['auth', 'status', '--format', 'json'], box.env)).stdout);
    expect(expiredStatus.expired).toBe(true);

    const r = await runCli(['token'], box.env);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const token = r.stdout.trim();
    expect(token).not.toBe(first.accessToken);
    expect(claimsOf(token).email).toBe('alice@example.com');
    expect(claimsOf(token).exp!).toBeGreaterThan(Date.now() / 1000 + 3000);
    const second = storedTokens();
    expect(second.accessToken).toBe(token);
    expect(second.refreshToken).not.toBe(first.refreshToken); // the issuer rotates refresh tokens
    expect(statSync(credentialsFile()).mode & 0o777).toBe(0o600);
    // Fresh now: the next call returns the same token without refreshing.
    expect((await runCli(['token'], box.env)).stdout.trim()).toBe(token);
    expect(JSON.parse((await runCli(['auth', 'status', '--format', 'json'], box.env)).stdout).expired).toBe(false);
  });

  it('refreshes a token that expires within a minute', async () => {
    idp.setAccessTokenTtl(30);
    expect((await login(loginArgs(), box.env, ALICE)).code).toBe(0);
    const first = storedTokens().accessToken;
    idp.setAccessTokenTtl(3600);
    const r = await runCli(['token'], box.env);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).not.toBe(first);
    expect(claimsOf(r.stdout).exp! - Date.now() / 1000).toBeGreaterThan(3000);
  });

  it('refreshes once when several `scalple token` run at the same time (rotated refresh tokens are single-use)', async () => {
    idp.setAccessTokenTtl(30);
    expect((await login(loginArgs(), box.env, ALICE)).code).toBe(0);
    const first = storedTokens().accessToken;
    idp.setAccessTokenTtl(3600);
    const results = await Promise.all([1, 2, 3, 4].map(() => runCli(['token'], box.env)));
    for (const r of results) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    const tokens = new Set(results.map((r) => r.stdout.trim()));
    expect(tokens.size).toBe(1);
    expect(tokens.has(first)).toBe(false);
    expect(readdirSync(box.scalpleDir).filter((f) => f.endsWith('.lock'))).toEqual([]);
  });

  it('exits 4 with "Run `scalple login`" when the refresh token was revoked', async () => {
    idp.setAccessTokenTtl(30);
    expect((await login(loginArgs(), box.env, ALICE)).code).toBe(0);
    // The person revokes their own refresh token at the issuer's revocation endpoint.
    const config = await oidc.discovery(new URL(idp.issuer), 'scalple-cli', undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
    await oidc.tokenRevocation(config, storedTokens().refreshToken, { token_type_hint: 'refresh_token' });

    const r = await runCli(['token'], box.env);
    expect(r.code).toBe(4);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('error: Session expired: Run `scalple login`\n');
  });

  it('exits 4 with "Run `scalple login`" when the issuer cannot be reached to refresh', async () => {
    const down = await startTestIdp({ accessTokenTtlSeconds: 30 });
    try {
      expect((await login(['--issuer', down.issuer, '--no-browser', '--insecure-storage'], box.env, ALICE)).code).toBe(0);
    } finally {
      await down.close();
    }
    const r = await runCli(['token'], box.env);
    expect(r.code).toBe(4);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: Session expired and could not be refreshed \(Cannot reach the OpenID issuer http:\/\/127\.0\.0\.1:\d+ \(unreachable: ECONNREFUSED\)\): Run `scalple login`\n$/);
    noStackTrace(r.stderr);
  });
});

describe('logout', () => {
  it('revokes the refresh token and removes the tokens; settings stay for the next login', async () => {
    expect((await login(loginArgs('--database', 'shop'), box.env, ALICE)).code).toBe(0);
    const before = storedTokens();
    const r = await runCli(['logout'], box.env);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('✓ Logged out of profile "default" (alice@example.com)\n');
    expect(existsSync(credentialsFile())).toBe(false);
    expect(readdirSync(box.scalpleDir)).toEqual(['config.json']);
    const config = JSON.parse(readFileSync(path.join(box.scalpleDir, 'config.json'), 'utf8'));
    expect(config.profiles.default.tokenStorage).toBeUndefined();
    expect(config.profiles.default.database).toBe('shop');

    expect((await runCli(['token'], box.env)).code).toBe(4);
    expect((await runCli(['auth', 'status'], box.env)).code).toBe(4);
    // The refresh token is dead at the issuer too.
    const config2 = await oidc.discovery(new URL(idp.issuer), 'scalple-cli', undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
    await expect(oidc.refreshTokenGrant(config2, before.refreshToken)).rejects.toMatchObject({ error: 'invalid_grant' });

    const again = await runCli(['logout'], box.env);
    expect(again.code).toBe(0);
    expect(again.stderr).toBe('! Not logged in (profile "default"): nothing to remove.\n');
  });
});

describe('--help', () => {
  it('documents every option of each command', async () => {
    const help = async (...args: string[]) => {
      const r = await runCli([...args, '--help'], box.env);
      expect(r.code).toBe(0);
      return r.stdout;
    };
    const loginHelp = await help('login');
    for (const opt of ['--profile <name>', '--issuer <url>', '--client-id <id>', '--proxy <host:port>', '--database <name>', '--audience <aud>', '--no-browser', '--insecure-storage']) {
      expect(loginHelp).toContain(opt);
    }
    expect(await help('logout')).toContain('--profile <name>');
    const status = await help('auth', 'status');
    expect(status).toContain('--profile <name>');
    expect(status).toMatch(/--format <format>\s+output format: table or json \(default: "table"\)/);
    const token = await help('token');
    expect(token).toContain('--profile <name>');
    expect(token).toContain('PGPASSWORD=$(scalple token) psql');
    const top = await help();
    for (const cmd of ['login', 'logout', 'auth', 'token']) expect(top).toMatch(new RegExp(`^  ${cmd}\\b`, 'm'));
  });

  it('rejects an unknown --format with exit 2', async () => {
    expect((await login(loginArgs(), box.env, ALICE)).code).toBe(0);
    const r = await runCli(['auth', 'status', '--format', 'yaml'], box.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: Unknown --format "yaml": use table or json.\n');
  });
});
