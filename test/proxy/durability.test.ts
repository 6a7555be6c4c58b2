// Nothing is lost: SIGKILL the proxy process in the middle of a load. In strict mode every statement
// that pgAudit saw executed (matched by log id) has its intent record; in buffered mode the loss
// stays within the documented bound (audit.buffer_size records). The chain verifies afterwards.
import { afterEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startStack, type Stack, HMAC_KEY, AUDIT_WRITER, AUDIT_PASSWORD } from '../support/stack.ts';
import { verify } from '../../src/audit/verify.ts';

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

/** Runs statements on `n` connections until the proxy dies; returns how many completed. */
async function loadUntilKilled(s: Stack, n: number, killAfterLogged: number): Promise<number> {
  const token = (await s.token('alice@example.com')).accessToken;
  const clients = await Promise.all(
    Array.from({ length: n }, async () => {
      const c = new pg.Client({ host: '127.0.0.1', port: s.proxyPort, database: 'app', user: 'x', options: `-c scalple.identity=${token}` });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    }),
  );
  let done = 0;
  let killed = false;
  const workers = clients.map(async (c, w) => {
    for (let i = 0; !killed; i++) {
      try {
        await c.query('SELECT $1::int AS w, $2::int AS i, count(*) FROM orders WHERE customer_id = $3', [w, i, (i % 500) + 1]);
        done++;
        await c.query(`UPDATE orders SET status = 'paid' WHERE id = ${(i % 2000) + 1}`);
        done++;
      } catch {
        return;
      }
    }
  });
  // Kill once the server has logged enough of our statements (observed, not timed).
  for (;;) {
    const logged = (s.pg.readLog().match(/AUDIT: SESSION.*scalple log_id=/g) ?? []).length;
    if (logged >= killAfterLogged) break;
    await new Promise((r) => setImmediate(r));
  }
  s.proxyProcess!.kill('SIGKILL');
  killed = true;
  await Promise.all(workers);
  return done;
}

function loggedIds(s: Stack): string[] {
  return [...s.pg.readLog().matchAll(/AUDIT: SESSION,\d+,\d+,(?:READ|WRITE),[A-Z]+,.*?scalple log_id=([0-9a-f-]{36})/g)].map((m) => m[1]!);
}

async function intentIds(s: Stack): Promise<Set<string>> {
  const r = await s.sql<{ log_id: string }>("SELECT log_id FROM scalple_audit.records WHERE record_type = 'intent'");
  return new Set(r.rows.map((x) => x.log_id));
}

describe('SIGKILL in the middle of a load', () => {
  it('strict: every statement pgAudit saw executed has its intent record, and the chain verifies', async () => {
    stack = await startStack({ poolMode: 'none', durability: 'strict', processProxy: true });
    const done = await loadUntilKilled(stack, 6, 400);
    expect(done).toBeGreaterThan(100);
    const seen = loggedIds(stack);
    const intents = await intentIds(stack);
    expect(seen.length).toBeGreaterThanOrEqual(400);
    const missing = seen.filter((id) => !intents.has(id));
    if (missing.length) console.log(stack.pg.readLog().split('\n').filter((l) => missing.some((m) => l.includes(m))).join('\n'));
    expect(missing).toEqual([]);
    const report = await verify(`postgres://${AUDIT_WRITER}:${AUDIT_PASSWORD}@127.0.0.1:${stack.pg.port}/app`, HMAC_KEY);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
  });

  it('buffered: what is lost stays within audit.buffer_size, and the chain verifies', async () => {
    const bufferSize = 200;
    stack = await startStack({ poolMode: 'none', durability: 'buffered', processProxy: true, config: {} });
    // buffer_size is an audit key: rewrite the config with it and restart the proxy process.
    const { readFileSync, writeFileSync } = await import('node:fs');
    const YAML = (await import('yaml')).default;
    const doc = YAML.parse(readFileSync(stack.configFile, 'utf8'));
    doc.audit.buffer_size = bufferSize;
    writeFileSync(stack.configFile, YAML.stringify(doc));
    await stack.stopProxy('SIGTERM');
    const { spawn } = await import('node:child_process');
    const { SCALPLE_BIN } = await import('../support/stack.ts');
    const child = spawn(process.execPath, [SCALPLE_BIN, 'proxy', '--config', stack.configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve) => {
      let log = '';
      child.stderr.on('data', (d: Buffer) => {
        log += d.toString();
        if (log.includes('"proxy listening"')) resolve();
      });
    });
    stack.proxyProcess = child;
    const done = await loadUntilKilled(stack, 6, 600);
    expect(done).toBeGreaterThan(100);
    const seen = loggedIds(stack);
    const intents = await intentIds(stack);
    const missing = seen.filter((id) => !intents.has(id));
    expect(missing.length).toBeLessThanOrEqual(bufferSize);
    const report = await verify(`postgres://${AUDIT_WRITER}:${AUDIT_PASSWORD}@127.0.0.1:${stack.pg.port}/app`, HMAC_KEY);
    expect(report.ok).toBe(true);
    console.log(`buffered SIGKILL: ${seen.length} statements logged by pgAudit, ${missing.length} without an intent record (bound ${bufferSize})`);
  });

  it('buffered: a full queue holds statements back until the store makes room (backpressure), and refuses after 2 s', async () => {
    stack = await startStack({ poolMode: 'none', durability: 'buffered', audit: { buffer_size: 20, flush_interval_ms: 5 } });
    const c = await stack.connect('alice@example.com');
    const locker = new pg.Client({ connectionString: stack.pg.superUrl('app') });
    await locker.connect();
    await locker.query('BEGIN; LOCK TABLE scalple_audit.records IN ACCESS EXCLUSIVE MODE');
    // Each statement is an intent and a completion: 10 statements fill the 20-record queue.
    for (let i = 0; i < 10; i++) await c.query('SELECT 1 AS filling');
    expect(stack.audit!.healthy()).toBe(false);
    const held = c.query('SELECT 2 AS held_back');
    const state = await Promise.race([held.then(() => 'ran', () => 'refused'), stack.audit!.whenRoom(300).then(() => 'still waiting')]);
    expect(state).toBe('still waiting');
    await locker.query('COMMIT');
    expect((await held).rows).toEqual([{ held_back: 2 }]);

    await stack.flushAudit();
    await locker.query('BEGIN; LOCK TABLE scalple_audit.records IN ACCESS EXCLUSIVE MODE');
    for (let i = 0; i < 10; i++) await c.query('SELECT 1 AS filling_again');
    const err = await c.query('SELECT 3 AS refused_in_the_end').then(() => undefined, (e: { code?: string }) => e);
    await locker.query('COMMIT');
    await locker.end();
    await c.end();
    expect(err?.code).toBe('57P03');
  });
});
