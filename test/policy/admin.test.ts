// `scalple admin`: revoke closes a live session within seconds while the token is still valid;
// grant gives a role for a while, shown in every record it covers, and ending by itself.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { startStack, type Stack, SCALPLE_BIN } from '../support/stack.ts';
import { demoPolicy } from '../../src/demo/demo.ts';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ poolMode: 'transaction', config: demoPolicy('mask-key-for-admin-tests-0123456789') });
});
afterAll(async () => {
  await stack?.stop();
});

function scalple(args: string[]) {
  return spawnSync(process.execPath, [SCALPLE_BIN, ...args, '--config', stack.configFile], { encoding: 'utf8' });
}

describe('scalple admin', () => {
  it('revoke closes a live session within seconds, refuses new ones; restore lets them back', async () => {
    const c = await stack.connect('erin@example.com');
    const ended = new Promise<Error>((resolve) => c.on('error', resolve));
    expect((await c.query('SELECT 1 AS ok')).rows[0].ok).toBe(1);
    const t0 = Date.now();
    const r = scalple(['admin', 'revoke', 'erin@example.com', '--reason', 'laptop stolen']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/✓ erin@example\.com revoked/);
    expect((await ended).message).toMatch(/access revoked/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    await expect(stack.connect('erin@example.com')).rejects.toMatchObject({ code: '28000' });
    expect(scalple(['admin', 'restore', 'erin@example.com']).status).toBe(0);
    let back: Awaited<ReturnType<Stack['connect']>> | undefined;
    // The proxy caches the list for up to two seconds: poll until the restore is seen.
    for (const t = Date.now(); !back && Date.now() - t < 15_000; ) {
      back = await stack.connect('erin@example.com').catch(() => undefined);
      if (!back) await new Promise((r) => setTimeout(r, 100));
    }
    expect(back).toBeDefined();
    await back!.end();
    const ev = await stack.sql("SELECT event, detail FROM scalple_audit.records WHERE record_type = 'event' AND event IN ('revoke', 'restore') ORDER BY ts");
    expect(ev.rows.map((e) => [e.event, e.detail.email, e.detail.reason])).toEqual([['revoke', 'erin@example.com', 'laptop stolen'], ['restore', 'erin@example.com', null]]);
  });

  it('grant elevates for a while, the grant shows in the records it covered, and it ends by itself', async () => {
    const before = await stack.connect('alice@example.com');
    expect((await before.query('SELECT email FROM customers WHERE id = 5')).rows[0].email).toBe('c***@***.org');
    await before.end();
    const bad = scalple(['admin', 'grant', 'alice@example.com', '--role', 'root', '--for', '2h', '--reason', 'x']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/no role named root/);
    const g = scalple(['admin', 'grant', 'alice@example.com', '--role', 'dba', '--for', '5s', '--reason', 'INC-4411 stuck payments']);
    expect(g.status, g.stderr).toBe(0);
    let elevated: Awaited<ReturnType<Stack['connect']>> | undefined;
    // The grant is read with a short cache: wait until a new session sees it.
    for (const t = Date.now(); Date.now() - t < 15_000; await new Promise((r) => setTimeout(r, 100))) {
      const c = await stack.connect('alice@example.com');
      const r = await c.query('SELECT email FROM customers WHERE id = 5');
      if (r.rows[0].email === 'customer5@example.org') {
        elevated = c;
        break;
      }
      await c.end();
    }
    expect(elevated).toBeDefined();
    const ended = new Promise<Error>((resolve) => elevated!.on('error', resolve));
    expect((await ended).message).toMatch(/temporary role has expired/);
    await stack.flushAudit();
    const rec = await stack.sql("SELECT detail FROM scalple_audit.records WHERE record_type = 'intent' AND email = 'alice@example.com' AND detail IS NOT NULL ORDER BY seq DESC LIMIT 1");
    expect(rec.rows[0]!.detail.grants[0]).toMatchObject({ role: 'dba', reason: 'INC-4411 stuck payments' });
    // After expiry: masked again.
    const after = await stack.connect('alice@example.com');
    expect((await after.query('SELECT email FROM customers WHERE id = 5')).rows[0].email).toBe('c***@***.org');
    await after.end();
  });

  it('works through the proxy for roles with admin: true, as the caller, and only for them', async () => {
    const a = await stack.connect('alice@example.com');
    await expect(a.query("SELECT * FROM scalple.admin_revoke('bob@example.com', 'x')")).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/admin: true/) });
    await a.end();
    const c = await stack.connect('carol@example.com');
    expect((await c.query("SELECT * FROM scalple.admin_revoke('bob@example.com', 'audit finding 12')")).rows).toEqual([{ status: 'revoke done' }]);
    await expect(c.query("SELECT * FROM scalple.admin_grant('carol@example.com', 'dba', '1h', 'self')")).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/another person/) });
    expect((await c.query("SELECT * FROM scalple.admin_restore('bob@example.com')")).rows).toEqual([{ status: 'restore done' }]);
    await c.end();
    await stack.flushAudit();
    const ev = await stack.sql("SELECT event, detail->>'by' AS by FROM scalple_audit.records WHERE record_type = 'event' AND detail->>'email' = 'bob@example.com' ORDER BY ts");
    expect(ev.rows).toEqual([{ event: 'revoke', by: 'carol@example.com' }, { event: 'restore', by: 'carol@example.com' }]);
  });
});
