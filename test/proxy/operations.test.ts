// Running the proxy: revocation cuts new and live sessions, the HTTP probes, SIGHUP reload, and
// structured logs — against a real `scalple proxy` process where it matters.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import YAML from 'yaml';
import { startStack, type Stack } from '../support/stack.ts';
import { freePort } from '../support/services.ts';

describe('revocation', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'transaction' });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('closes a revoked person\'s live session within seconds and refuses new ones, token still valid', async () => {
    const live = await stack.connect('erin@example.com');
    const ended = new Promise<Error>((resolve) => live.on('error', resolve));
    expect((await live.query('SELECT 1 AS ok')).rows[0].ok).toBe(1);
    const other = await stack.connect('alice@example.com');
    const t0 = Date.now();
    await stack.audit!.revoke({ email: 'erin@example.com', reason: 'left the company', by: 'admin@example.com' });
    const err = await ended;
    expect(err.message).toMatch(/access revoked/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    await expect(stack.connect('erin@example.com')).rejects.toMatchObject({ code: '28000', message: expect.stringMatching(/access revoked/) });
    // Others are untouched.
    expect((await other.query('SELECT 2 AS ok')).rows[0].ok).toBe(2);
    await other.end();
    await stack.audit!.restore({ email: 'erin@example.com', by: 'admin@example.com' });
    let back: Awaited<ReturnType<Stack['connect']>> | undefined;
    // The revocation cache answers for up to two seconds: retry until the restore is seen.
    for (let i = 0; i < 50 && !back; i++) back = await stack.connect('erin@example.com').catch(() => undefined);
    expect(back).toBeDefined();
    await back!.end();
    await stack.flushAudit();
    const ev = await stack.sql("SELECT event FROM scalple_audit.records WHERE record_type = 'event' ORDER BY seq");
    expect(ev.rows.map((r) => r.event)).toEqual(expect.arrayContaining(['revoke', 'restore']));
  });
});

describe('a scalple proxy process', () => {
  let stack: Stack;
  let httpPort: number;
  beforeAll(async () => {
    httpPort = await freePort();
    stack = await startStack({ poolMode: 'transaction', processProxy: true, config: { http: { listen: `127.0.0.1:${httpPort}` }, roles: { support: { groups: ['support'] } } } });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('answers /healthz, /readyz and /metrics', async () => {
    expect((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status).toBe(200);
    const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ok: true, detail: { audit: true, upstream: true } });
    const c = await stack.connect('alice@example.com');
    await c.query('SELECT 1');
    await c.end();
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(metrics).toMatch(/^scalple_statements_total [1-9]/m);
    expect(metrics).toMatch(/^scalple_sessions_opened_total [1-9]/m);
  });

  it('reloads the policy on SIGHUP; the new policy version is in the records that follow', async () => {
    const before = await stack.connect('alice@example.com');
    await before.query("SELECT 'before-reload' AS m");
    const doc = YAML.parse(readFileSync(stack.configFile, 'utf8'));
    doc.roles.billing = { groups: ['billing'] };
    writeFileSync(stack.configFile, YAML.stringify(doc));
    const reloaded = new Promise<void>((resolve) => {
      let log = '';
      stack.proxyProcess!.stderr!.on('data', (d: Buffer) => {
        log += d.toString();
        if (log.includes('"policy reloaded"')) resolve();
      });
    });
    stack.proxyProcess!.kill('SIGHUP');
    await reloaded;
    await before.query("SELECT 'after-reload' AS m");
    await before.end();
    // The process commits strictly before forwarding: the records are there.
    const r = await stack.sql<{ statement: string; policy_version: string }>("SELECT statement, policy_version FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE '%-reload%' ORDER BY seq");
    expect(r.rows).toHaveLength(2);
    expect(r.rows[0]!.policy_version).not.toBe(r.rows[1]!.policy_version);
  });
});
