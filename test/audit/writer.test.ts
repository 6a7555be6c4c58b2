// The writer: strict and buffered durability, one writer per chain, group commit, failures that
// refuse statements instead of losing records, checkpoint file, revocations.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { superQuery, type PostgresServer } from '../support/services.ts';
import { AuditUnavailable } from '../../src/errors.ts';
import { openAuditStore, type AuditStore } from '../../src/audit/writer.ts';
import { verify } from '../../src/audit/verify.ts';
import { readCheckpoint } from '../../src/audit/checkpoint.ts';
import { deriveKeys } from '../../src/audit/chain.ts';
import {
  ADMIN, BOB, HMAC_KEY, WRITER, captureLogger, completion, freshAuditDb, intent, startAuditCluster, until, withClient,
} from './helpers.ts';

let server: PostgresServer;
beforeAll(async () => {
  server = await startAuditCluster();
});
afterAll(async () => {
  await server?.stop();
});

async function count(url: string, where = 'true', params: unknown[] = []): Promise<number> {
  const r = await withClient(url, (c) => c.query(`SELECT count(*)::int AS n FROM scalple_audit.records WHERE ${where}`, params));
  return r.rows[0].n as number;
}

describe('strict durability', () => {
  it('commits the intent before intent() resolves, and chains intent and completion', async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config(), { policyVersion: 'pv-9' });
    try {
      for (let i = 0; i < 5; i++) {
        const rec = intent();
        await store.intent(rec);
        // seen from another connection, right away: committed, not merely sent
        expect(await count(env.superUrl, 'log_id = $1', [rec.logId])).toBe(1);
        store.completion(completion(rec.logId, { rows: i }));
      }
      await store.flush();
      expect(await count(env.superUrl, `record_type = 'completion'`)).toBe(5);
      const r = await withClient(env.superUrl, (c) => c.query(`SELECT seq, record_type, policy_version FROM scalple_audit.records WHERE chain_id = 'main' ORDER BY seq`));
      expect(r.rows.map((x) => Number(x.seq))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(r.rows.filter((x) => x.record_type === 'completion').every((x) => x.policy_version === 'pv-9')).toBe(true);
      expect(r.rows.filter((x) => x.record_type === 'intent').every((x) => x.policy_version === 'pv-1')).toBe(true);
    } finally {
      await store.close();
    }
    const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile });
    expect(report.ok).toBe(true);
    expect(report.chains[0]).toMatchObject({ chainId: 'main', verified: 10, headSeq: 10 });
    // the checkpoint file holds the head, with a MAC
    const cp = await readCheckpoint(env.config().checkpointFile, deriveKeys(HMAC_KEY));
    expect(cp.status).toBe('ok');
    if (cp.status === 'ok') expect(cp.checkpoint).toMatchObject({ chain_id: 'main', seq: 10, hash: report.chains[0]!.headHash });
    env.cleanup();
  });

  for (const [how, copyMinRows] of [['INSERT', 1000], ['COPY', 1]] as const) {
  it(`stores awkward values exactly as hashed (unicode, NUL, lone surrogates, JSON, arrays) and verifies (${how})`, async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config(), { policyVersion: 'pv', copyMinRows });
    const weird = intent({
      principal: { kind: 'person', sub: 'u-"quoted"', email: "o'brien+/*x*/@example.com", name: 'Zoë 日本 🎉', groups: ['a,b', '{c}', 'd"e', 'back\\slash', ''] },
      actingFor: { kind: 'person', sub: 'u-end', email: 'end@example.com', groups: [] },
      statement: "SELECT '\u0000nul' /* \ud800 lone */, E'\\n' -- 🎉\n;",
      params: ['1', null, 'two\nlines', '\udc00'],
      tables: ['public.t,1', 'weird."x"'],
      maskedFields: { 'public.customers.email': 'email', '10': 'n', '9': 'm', 'ключ': 'значение' },
      reason: 'ticket #42',
      namedQuery: 'get_order_by_id',
    });
    await store.intent(weird);
    store.completion(completion(weird.logId, { rows: null, sqlstate: '22P02', error: 'invalid input syntax for type integer: "x"', durationMs: 0.1 + 0.2 }));
    await store.event({ type: 'event', logId: 'ev-1', ts: new Date(), event: 'test', principal: BOB,
      detail: { n: 1e21, small: 5e-324, neg: -0, f: 0.30000000000000004, big: 2 ** 60, nested: { b: [1, { z: null, a: true }], a: new Date(0) }, skipped: undefined } });
    await store.close();
    const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile });
    expect(report.problems).toEqual([]);
    expect(report.chains[0]!.verified).toBe(3);
    const r = await withClient(env.superUrl, (c) => c.query(`SELECT statement, groups, params FROM scalple_audit.records WHERE log_id = $1 AND record_type = 'intent'`, [weird.logId]));
    expect(r.rows[0].statement).toBe("SELECT '\uFFFDnul' /* \uFFFD lone */, E'\\n' -- 🎉\n;");
    expect(r.rows[0].groups).toEqual(['a,b', '{c}', 'd"e', 'back\\slash', '']);
    expect(r.rows[0].params).toEqual(['1', null, 'two\nlines', '\uFFFD']);
    env.cleanup();
  });
  }

  it('continues the chain across restarts', async () => {
    const env = await freshAuditDb(server);
    for (let round = 0; round < 3; round++) {
      const store = await openAuditStore(env.config(), { policyVersion: 'pv' });
      expect(store.head().seq).toBe(round * 4);
      for (let i = 0; i < 4; i++) await store.intent(intent());
      await store.close();
    }
    const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile });
    expect(report.ok).toBe(true);
    expect(report.chains[0]!.verified).toBe(12);
    env.cleanup();
  });

  it('refuses waiting statements when the connection dies mid-commit, then writes the records and says they were refused', async () => {
    const env = await freshAuditDb(server);
    const log = captureLogger();
    const store = await openAuditStore(env.config(), { policyVersion: 'pv', logger: log });
    await store.intent(intent());
    // Hold the table so the next INSERT waits, then kill the writer's connection under it.
    const locker = await import('pg').then(({ default: pg }) => new pg.Client({ connectionString: env.superUrl }));
    await locker.connect();
    await locker.query('BEGIN; LOCK TABLE scalple_audit.records IN ACCESS EXCLUSIVE MODE');
    const rec = intent();
    const pending = store.intent(rec);
    pending.catch(() => undefined); // rejected while the test is busy elsewhere; asserted below
    await until(async () => (await locker.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'`, [WRITER.user])).rows[0].n === 1, 'the INSERT to wait for the lock');
    await locker.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND application_name LIKE 'scalple-audit-writer%'`, [WRITER.user]);
    await expect(pending).rejects.toBeInstanceOf(AuditUnavailable);
    await expect(store.intent(intent())).rejects.toThrow(/audit store unavailable: statement refused/);
    expect(store.healthy()).toBe(false);
    await locker.query('COMMIT');
    await locker.end();
    await until(() => store.healthy(), 'the writer to reconnect');
    await store.flush();
    await store.close();
    // the refused intent is in the log, followed by a completion that says it was refused
    const r = await withClient(env.superUrl, (c) => c.query(`SELECT record_type, sqlstate, error FROM scalple_audit.records WHERE log_id = $1 ORDER BY seq`, [rec.logId]));
    expect(r.rows.map((x) => x.record_type)).toEqual(['intent', 'completion']);
    expect(r.rows[1]).toMatchObject({ sqlstate: '57P03' });
    expect(r.rows[1].error).toMatch(/statement refused/);
    expect(log.lines.some((l) => l.level === 'error' && /audit store unavailable/.test(l.msg ?? ''))).toBe(true);
    const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile });
    expect(report.problems).toEqual([]);
    env.cleanup();
  });
});

describe('buffered durability', () => {
  it('refuses new statements with AuditUnavailable when the queue is full, and loses none it accepted', async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config({ durability: 'buffered', bufferSize: 20, flushIntervalMs: 60_000 }), { policyVersion: 'pv' });
    const locker = await import('pg').then(({ default: pg }) => new pg.Client({ connectionString: env.superUrl }));
    await locker.connect();
    await locker.query('BEGIN; LOCK TABLE scalple_audit.records IN ACCESS EXCLUSIVE MODE');
    let accepted = 0;
    let refused: unknown;
    for (let i = 0; i < 100 && !refused; i++) {
      try {
        await store.intent(intent()); // buffered: resolves on enqueue
        accepted++;
      } catch (err) {
        refused = err;
      }
    }
    expect(refused).toBeInstanceOf(AuditUnavailable);
    expect((refused as Error).message).toMatch(/^audit store unavailable: statement refused \(audit queue full/);
    expect(accepted).toBe(20);
    expect(store.healthy()).toBe(false);
    expect(store.stats().queued + store.stats().inFlight).toBe(20);
    await locker.query('COMMIT');
    await locker.end();
    await store.close();
    expect(await count(env.superUrl)).toBe(20);
    expect((await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile })).ok).toBe(true);
    env.cleanup();
  });

  it('whenRoom: a full queue makes room once the store commits (backpressure); a wait that runs out says no', async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config({ durability: 'buffered', bufferSize: 10, flushIntervalMs: 5 }), { policyVersion: 'pv' });
    const locker = await import('pg').then(({ default: pg }) => new pg.Client({ connectionString: env.superUrl }));
    await locker.connect();
    await locker.query('BEGIN; LOCK TABLE scalple_audit.records IN ACCESS EXCLUSIVE MODE');
    for (let i = 0; i < 10; i++) await store.intent(intent());
    expect(store.healthy()).toBe(false);
    // The lock holds: no room within 50 ms.
    expect(await store.whenRoom(50)).toBe(false);
    // Room comes when the commit goes through: released by the lock's end, not by a timer.
    const waiting = store.whenRoom(30_000);
    await locker.query('COMMIT');
    expect(await waiting).toBe(true);
    expect(store.healthy()).toBe(true);
    await locker.end();
    await store.close();
    expect(await count(env.superUrl)).toBe(10);
    env.cleanup();
  });

  it('a completion that finds no room marks the store unhealthy and is logged, never silently lost', async () => {
    const env = await freshAuditDb(server);
    const log = captureLogger();
    const store = await openAuditStore(env.config({ durability: 'buffered', bufferSize: 4, flushIntervalMs: 60_000 }), { policyVersion: 'pv', logger: log });
    const locker = await import('pg').then(({ default: pg }) => new pg.Client({ connectionString: env.superUrl }));
    await locker.connect();
    await locker.query('BEGIN; LOCK TABLE scalple_audit.records IN ACCESS EXCLUSIVE MODE');
    const recs = [intent(), intent(), intent(), intent()];
    for (const r of recs) await store.intent(r);
    await expect(store.intent(intent())).rejects.toThrow(/audit queue full/);
    // completions of running statements get headroom (up to twice the buffer) ...
    for (const r of recs) store.completion(completion(r.logId));
    expect(log.lines.filter((l) => l.level === 'error')).toEqual([]);
    // ... past it the record is logged in full and the store refuses statements
    const lost = completion('no-room');
    store.completion(lost);
    expect(store.healthy()).toBe(false);
    const line = log.lines.find((l) => /completion record could not be queued/.test(l.msg ?? ''));
    expect((line?.obj.record as { logId: string }).logId).toBe('no-room');
    await locker.query('COMMIT');
    await locker.end();
    await store.flush();
    expect(store.healthy()).toBe(true);
    await store.close();
    expect(await count(env.superUrl)).toBe(8);
    env.cleanup();
  });

  it('flushes on its interval without anyone waiting', async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config({ durability: 'buffered', flushIntervalMs: 5 }), { policyVersion: 'pv' });
    const rec = intent();
    await store.intent(rec);
    await until(async () => (await count(env.superUrl, 'log_id = $1', [rec.logId])) === 1, 'the interval flush');
    await store.close();
    env.cleanup();
  });

  it('refuses statements while the store is unreachable, keeps what it accepted, and recovers', async () => {
    const env = await freshAuditDb(server);
    const log = captureLogger();
    const store = await openAuditStore(env.config({ durability: 'buffered', flushIntervalMs: 5 }), { policyVersion: 'pv', logger: log });
    let accepted = 0;
    for (let i = 0; i < 10; i++, accepted++) await store.intent(intent());
    await store.flush();
    // The store becomes unreachable: the writer's connection is killed and its role may not log in.
    await superQuery(server, `ALTER ROLE ${WRITER.user} NOLOGIN`);
    try {
      await superQuery(server, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '${WRITER.user}'`);
      await until(() => !store.healthy(), 'the writer to notice');
      await expect(store.intent(intent())).rejects.toThrow(/audit store unavailable: statement refused \(store unreachable/);
      // completions of statements already running are still queued, not dropped
      const rec = intent();
      store.completion(completion(rec.logId));
      expect(store.stats().queued).toBe(1);
    } finally {
      await superQuery(server, `ALTER ROLE ${WRITER.user} LOGIN`);
    }
    await until(() => store.healthy(), 'the writer to reconnect');
    for (let i = 0; i < 10; i++, accepted++) await store.intent(intent());
    await store.close();
    expect(await count(env.superUrl, `record_type = 'intent'`)).toBe(accepted);
    expect(await count(env.superUrl, `record_type = 'completion'`)).toBe(1);
    expect(log.lines.some((l) => l.level === 'error' && /refusing new statements/.test(l.msg ?? ''))).toBe(true);
    expect((await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile })).ok).toBe(true);
    env.cleanup();
  });
});

describe('one writer per chain', () => {
  it('refuses a second writer on the same chain, naming it; other chains are fine', async () => {
    const env = await freshAuditDb(server);
    const first = await openAuditStore(env.config(), { policyVersion: 'pv' });
    let other: AuditStore | undefined;
    try {
      await expect(openAuditStore(env.config(), { policyVersion: 'pv' })).rejects.toThrow(/audit chain "main" is already being written by another Scalple instance \(server pid \d+/);
      other = await openAuditStore(env.config({ chainId: 'proxy-2' }), { policyVersion: 'pv' });
      await other.intent(intent());
      await first.intent(intent());
    } finally {
      await other?.close();
      await first.close();
    }
    // released on close
    const again = await openAuditStore(env.config(), { policyVersion: 'pv' });
    expect(again.head().seq).toBe(1);
    await again.close();
    env.cleanup();
  });

  it('refuses to start when the checkpoint file is ahead of the database (a cut tail)', async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config(), { policyVersion: 'pv' });
    for (let i = 0; i < 5; i++) await store.intent(intent());
    await store.close();
    await superQuery(server, `SET session_replication_role = replica; DELETE FROM scalple_audit.records WHERE seq > 3`, env.db);
    await expect(openAuditStore(env.config(), { policyVersion: 'pv' })).rejects.toThrow(/checkpoint file says seq 5 was committed but the database ends at seq 3: the tail of the audit log was cut/);
    env.cleanup();
  });
});

describe('schema on start', () => {
  it('migrates when the proxy role owns the schema, and says so', async () => {
    const env = await freshAuditDb(server, { init: false });
    const log = captureLogger();
    const store = await openAuditStore(env.config({ url: env.adminUrl }), { policyVersion: 'pv', logger: log });
    await store.intent(intent());
    await store.close();
    expect(log.lines.some((l) => /audit schema migrated to version 3 by the proxy/.test(l.msg ?? ''))).toBe(true);
    env.cleanup();
  });

  it('tells the writer to run `scalple audit init` when the schema is missing', async () => {
    const env = await freshAuditDb(server, { init: false });
    await expect(openAuditStore(env.config(), { policyVersion: 'pv' })).rejects.toThrow(/no scalple_audit schema: run `scalple audit init/);
    env.cleanup();
  });
});

describe('revocations', () => {
  it('revoke and restore are table rows and chain events; isRevoked follows the latest', async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config(), { policyVersion: 'pv', revocationCacheMs: 0 });
    try {
      expect(await store.isRevoked(BOB)).toBe(false);
      await store.revoke({ email: 'BOB@example.com', reason: 'left the company', by: 'admin@example.com' });
      expect(await store.isRevoked(BOB)).toBe(true);
      expect(await store.isRevoked({ ...BOB, email: undefined })).toBe(false);
      await store.revoke({ sub: BOB.sub, by: 'admin@example.com' });
      expect(await store.isRevoked({ ...BOB, email: undefined })).toBe(true);
      await store.restore({ sub: BOB.sub, email: BOB.email, reason: 'rehired', by: 'admin@example.com' });
      expect(await store.isRevoked(BOB)).toBe(false);
    } finally {
      await store.close();
    }
    const ev = await withClient(env.superUrl, (c) => c.query(`SELECT event, detail FROM scalple_audit.records WHERE record_type = 'event' ORDER BY seq`));
    expect(ev.rows.map((r) => r.event)).toEqual(['revoke', 'revoke', 'restore']);
    expect(ev.rows[0].detail).toMatchObject({ email: 'BOB@example.com', reason: 'left the company', by: 'admin@example.com' });
    const rows = await withClient(env.superUrl, (c) => c.query('SELECT action FROM scalple_audit.revocations ORDER BY id'));
    expect(rows.rows.map((r) => r.action)).toEqual(['revoke', 'revoke', 'restore']);
    // the writer may not rewrite the list
    await withClient(env.writerUrl, async (c) => {
      await expect(c.query('DELETE FROM scalple_audit.revocations')).rejects.toThrow(/permission denied/);
    });
    env.cleanup();
  });
});

describe('closing', () => {
  it('flushes everything on close and refuses afterwards', async () => {
    const env = await freshAuditDb(server);
    const store = await openAuditStore(env.config({ durability: 'buffered', flushIntervalMs: 60_000 }), { policyVersion: 'pv' });
    for (let i = 0; i < 7; i++) await store.intent(intent());
    await store.close();
    expect(await count(env.superUrl)).toBe(7);
    await expect(store.intent(intent())).rejects.toThrow(/closing/);
    expect(JSON.parse(readFileSync(env.config().checkpointFile, 'utf8')).seq).toBe(7);
    env.cleanup();
  });
});

void ADMIN;
