// Identity from the attacker's side: forged, expired, not-yet-valid, wrong-issuer, wrong-audience
// and alg:none tokens are refused with 28000, and no upstream connection is ever opened for them.
// Also the three carriers, static application keys, TLS-only passwords, and expiry mid-session.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, createHash } from 'node:crypto';
import { SignJWT, exportJWK, decodeJwt } from 'jose';
import pg from 'pg';
import { startStack, type Stack } from '../support/stack.ts';
import { mintWithProviderKey } from '../support/idp.ts';
import { makeCerts } from '../support/certs.ts';

let stack: Stack;
const APP_KEY = 'static-app-key-for-the-reporting-pool';

beforeAll(async () => {
  const certs = makeCerts();
  stack = await startStack({
    poolMode: 'none',
    config: {
      tls: { cert: certs.serverCert, key: certs.serverKey, mode: 'optional' },
      applications: { reporting: { key_sha256: createHash('sha256').update(APP_KEY).digest('hex'), groups: ['reporting'] } },
    },
    identity: { allow_plaintext_password: false },
  });
});
afterAll(async () => {
  await stack?.stop();
});

/** Connections the shared role holds on the server right now (other than ours). */
async function upstreamConnections(): Promise<number> {
  const r = await stack.sql<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'app_user'");
  return Number(r.rows[0]!.n);
}

async function attempt(token: string, extra: Partial<pg.ClientConfig> = {}): Promise<{ code?: string; message: string }> {
  const c = new pg.Client({ host: '127.0.0.1', port: stack.proxyPort, database: 'app', user: 'x', options: `-c scalple.identity=${token}`, ...extra });
  try {
    await c.connect();
    await c.end();
    return { message: 'connected' };
  } catch (err) {
    return { code: (err as { code?: string }).code, message: (err as Error).message };
  }
}

describe('tokens an attacker might present', () => {
  it('refuses each bad token with 28000, an actionable message, and no upstream connection', async () => {
    const good = decodeJwt((await stack.token('alice@example.com')).accessToken);
    const now = Math.floor(Date.now() / 1000);
    const base = { sub: good.sub, email: good.email, groups: good.groups, iss: stack.idp.issuer, aud: 'scalple', iat: now, exp: now + 600 };
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forged = await new SignJWT({ ...base }).setProtectedHeader({ alg: 'RS256', kid: stack.idp.signingJwk.kid as string }).sign(privateKey);
    const hmacWithPublicKey = await new SignJWT({ ...base }).setProtectedHeader({ alg: 'HS256', kid: stack.idp.signingJwk.kid as string }).sign(Buffer.from(JSON.stringify(await exportJWK(privateKey))));
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(base)).toString('base64url')}.`;
    const cases: [string, string, RegExp][] = [
      ['forged signature', forged, /signature is invalid|key the identity provider does not publish/],
      ['HMAC with a public key', hmacWithPublicKey, /algorithm is not allowed/],
      ['alg none', none, /algorithm is not allowed|malformed/],
      ['expired', await mintWithProviderKey(stack.idp, { ...base, iat: now - 7200, exp: now - 3600 }), /token expired: run `scalple login`/],
      ['not yet valid', await mintWithProviderKey(stack.idp, { ...base, nbf: now + 3600 }), /not yet valid/],
      ['wrong issuer', await mintWithProviderKey(stack.idp, { ...base, iss: 'https://evil.example.com' }), /not by the configured issuer/],
      ['wrong audience', await mintWithProviderKey(stack.idp, { ...base, aud: 'some-other-api' }), /audience .* is not accepted/],
      ['tampered payload', (() => { const [h, , s] = forged.split('.'); return `${h}.${Buffer.from(JSON.stringify({ ...base, email: 'ceo@example.com' })).toString('base64url')}.${s}`; })(), /signature is invalid|key the identity provider/],
      ['garbage', 'not-a-token', /not a token/],
    ];
    const before = await upstreamConnections();
    for (const [name, token, message] of cases) {
      const r = await attempt(token);
      expect(r.code, name).toBe('28000');
      expect(r.message, name).toMatch(message);
    }
    expect(await upstreamConnections()).toBe(before);
    const { rows } = await stack.sql<{ n: string }>("SELECT count(*) AS n FROM scalple_audit.records WHERE email = 'ceo@example.com'");
    expect(Number(rows[0]!.n)).toBe(0);
  });

  it('accepts the real token through each carrier, and strips it before upstream', async () => {
    const t = (await stack.token('bob@example.com')).accessToken;
    const viaOptions = await stack.connect('bob@example.com');
    const { rows } = await viaOptions.query("SELECT current_user AS u, current_setting('application_name') AS app");
    expect(rows[0].u).toBe('app_user');
    await viaOptions.end();
    // As a startup parameter of its own (raw protocol; drivers that pass arbitrary parameters).
    const { WireClient } = await import('../support/wire.ts');
    const w = await WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', 'scalple.identity': t });
    expect(w.pid).toBeGreaterThan(0);
    w.close();
    // The token never reaches the server: not in pg_stat_activity, not in the server log.
    const probe = await stack.connect('bob@example.com');
    const act = await stack.sql<{ q: string }>("SELECT string_agg(coalesce(query,'') || application_name, ' ') AS q FROM pg_stat_activity");
    expect(act.rows[0]!.q ?? '').not.toContain(t.slice(-20));
    await probe.end();
    expect(stack.pg.readLog()).not.toContain(t.slice(-20));
  });

  it('asks for the token as a password only over TLS, and takes it there (psql, DBeaver, JDBC)', async () => {
    const t = (await stack.token('carol@example.com')).accessToken;
    const plain = new pg.Client({ host: '127.0.0.1', port: stack.proxyPort, database: 'app', user: 'carol', password: t, ssl: false });
    await expect(plain.connect()).rejects.toMatchObject({ code: '28000', message: expect.stringMatching(/over TLS/) });
    const tlsClient = new pg.Client({ host: '127.0.0.1', port: stack.proxyPort, database: 'app', user: 'carol', password: t, ssl: { rejectUnauthorized: false } });
    await tlsClient.connect();
    expect((await tlsClient.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await tlsClient.end();
  });

  it('takes a static application key as the password, compared by hash', async () => {
    const ok = new pg.Client({ host: '127.0.0.1', port: stack.proxyPort, database: 'app', user: 'reporting', password: APP_KEY, ssl: { rejectUnauthorized: false } });
    await ok.connect();
    await ok.query("SELECT 'static-key-marker' AS m");
    await ok.end();
    await stack.flushAudit();
    const r = await stack.sql<{ sub: string; application: string }>("SELECT sub, application FROM scalple_audit.records WHERE statement LIKE '%static-key-marker%'");
    expect(r.rows[0]).toMatchObject({ sub: 'app:reporting', application: 'reporting' });
    const bad = new pg.Client({ host: '127.0.0.1', port: stack.proxyPort, database: 'app', user: 'reporting', password: APP_KEY + 'x', ssl: { rejectUnauthorized: false } });
    await expect(bad.connect()).rejects.toMatchObject({ code: '28000' });
  });

  it('closes a session when its token expires, with the message that names the fix', async () => {
    const good = decodeJwt((await stack.token('alice@example.com')).accessToken);
    const now = Math.floor(Date.now() / 1000);
    // leeway_seconds defaults to 30: a token that expires 28 s ago is still valid for ~2 s.
    const token = await mintWithProviderKey(stack.idp, { sub: good.sub, email: good.email, groups: good.groups, iss: stack.idp.issuer, aud: 'scalple', iat: now - 60, exp: now - 28 });
    const c = new pg.Client({ host: '127.0.0.1', port: stack.proxyPort, database: 'app', user: 'x', options: `-c scalple.identity=${token}` });
    const ended = new Promise<Error>((resolve) => c.on('error', resolve));
    await c.connect();
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const err = await ended;
    expect(err.message).toMatch(/token expired: run `scalple login`/);
  });
});
