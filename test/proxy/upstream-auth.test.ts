// The shared credential upstream with each method PostgreSQL offers (SCRAM is used everywhere
// else): md5 and trust; ParameterStatus relayed; NOTIFY delivered through the proxy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import YAML from 'yaml';
import { startStack, type Stack } from '../support/stack.ts';
import { loadConfig } from '../../src/policy/config.ts';
import { startProxy, type RunningProxy } from '../../src/proxy/server.ts';
import { openAuditStore, type AuditStore } from '../../src/audit/writer.ts';

let stack: Stack;
const extra: { proxy: RunningProxy; audit: AuditStore }[] = [];

async function proxyWithUpstream(upstream: string, chain: string): Promise<RunningProxy> {
  const doc = YAML.parse(readFileSync(stack.configFile, 'utf8'));
  doc.listen = '127.0.0.1:0';
  doc.upstream = upstream;
  doc.audit.chain_id = chain;
  doc.audit.checkpoint_file = path.join(stack.dir, `head-${chain}.json`);
  const file = path.join(stack.dir, `${chain}.yaml`);
  writeFileSync(file, YAML.stringify(doc));
  const config = loadConfig(file);
  const audit = await openAuditStore(config.audit, { policyVersion: config.policyVersion });
  const proxy = await startProxy(config, { audit, logger: pino({ level: 'silent' }) });
  extra.push({ proxy, audit });
  return proxy;
}

beforeAll(async () => {
  stack = await startStack({ poolMode: 'none' });
  await stack.sql("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret'");
  await stack.sql('CREATE ROLE trust_user LOGIN; GRANT SELECT ON customers TO md5_user, trust_user');
  // pg_hba: first match wins, so these lines go before the default scram line.
  const hba = path.join(stack.pg.dataDir, 'pg_hba.conf');
  const lines = readFileSync(hba, 'utf8');
  writeFileSync(hba, 'host all md5_user 127.0.0.1/32 md5\nhost all trust_user 127.0.0.1/32 trust\n' + lines);
  await stack.sql('SELECT pg_reload_conf()');
  // The postmaster reloads asynchronously: wait until trust_user gets in without a password.
  for (const t = Date.now(); ; ) {
    const c = new pg.Client({ host: '127.0.0.1', port: stack.pg.port, database: 'app', user: 'trust_user' });
    const ok = await c.connect().then(() => true, () => false);
    await c.end().catch(() => undefined);
    if (ok) break;
    if (Date.now() - t > 10_000) throw new Error('pg_hba.conf was not reloaded');
    await new Promise((r) => setTimeout(r, 50));
  }
});
afterAll(async () => {
  for (const e of extra) {
    await e.proxy.close();
    await e.audit.close();
  }
  await stack?.stop();
});

describe('upstream authentication', () => {
  for (const [method, url] of [
    ['md5', (port: number) => `postgres://md5_user:md5-secret@127.0.0.1:${port}/app?sslmode=disable`],
    ['trust', (port: number) => `postgres://trust_user@127.0.0.1:${port}/app?sslmode=disable`],
  ] as const) {
    it(`logs in upstream with ${method} and relays the server's parameters`, async () => {
      const proxy = await proxyWithUpstream(url(stack.pg.port), `auth-${method}`);
      const t = await stack.token('carol@example.com');
      const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, database: 'app', user: 'x', options: `-c scalple.identity=${t.accessToken}`, application_name: 'upstream-auth-test' });
      await c.connect();
      const r = await c.query('SELECT current_user AS u, count(*)::int AS n FROM customers');
      expect(r.rows[0]).toEqual({ u: `${method}_user`, n: 500 });
      const v = await c.query('SHOW application_name');
      expect(v.rows[0].application_name).toBe('upstream-auth-test');
      await c.end();
    });
  }
});

describe('notifications', () => {
  it('delivers NOTIFY to a listening session through the proxy', async () => {
    const listener = await stack.connect('carol@example.com');
    const got = new Promise<pg.Notification>((resolve) => listener.on('notification', resolve));
    await listener.query('LISTEN scalple_test');
    const sender = await stack.connect('bob@example.com');
    await sender.query("NOTIFY scalple_test, 'hello from bob'");
    const n = await got;
    expect(n).toMatchObject({ channel: 'scalple_test', payload: 'hello from bob' });
    await sender.end();
    await listener.end();
  });
});
