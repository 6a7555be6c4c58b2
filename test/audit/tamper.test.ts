// The attacker's side. A superuser on the audit database disables the triggers (or sets
// session_replication_role = replica) and edits, deletes, reorders, inserts, cuts and drops; they
// know the canonical format (the code is public) but not the HMAC key, so they re-hash with plain
// SHA-256. `verify` must name the first broken record every time, and tell a signed retention cut
// apart from all of it.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { canonical, rowFromDb, SELECT_COLUMNS } from '../../src/audit/chain.ts';
import { applyRetention } from '../../src/audit/retention.ts';
import { verify, type VerifyReport } from '../../src/audit/verify.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import { type AuditDb, HMAC_KEY, completion, freshAuditDb, intent, startAuditCluster, withClient } from './helpers.ts';

let server: PostgresServer;
beforeAll(async () => {
  server = await startAuditCluster();
});
afterAll(async () => {
  await server?.stop();
});

/**
 * Written by the real writer: 10 statements = 20 records (seq 1..20); with months, 3 statements
 * per month (seq 1..6 in the first, 7..12 in the second, …) and 4 more now.
 */
async function populated(opts: { months?: string[] } = {}): Promise<AuditDb> {
  const env = await freshAuditDb(server);
  if (opts.months) await withClient(env.adminUrl, (c) => c.query(`SELECT scalple_audit.ensure_partitions($1::timestamptz, $2)`, [`${opts.months![0]}-01T00:00:00Z`, opts.months!.length]));
  const store = await openAuditStore(env.config(), { policyVersion: 'pv' });
  const stamps = opts.months ? opts.months.flatMap((m) => [1, 2, 3].map((d) => new Date(`${m}-0${d}T12:00:00Z`))) : [];
  const n = opts.months ? stamps.length + 4 : 10;
  for (let i = 0; i < n; i++) {
    const ts = stamps[i] ?? new Date();
    const rec = intent({ ts, statement: `SELECT * FROM customers WHERE id = ${i}` });
    await store.intent(rec);
    store.completion(completion(rec.logId, { ts, rows: 1 }));
  }
  await store.close();
  return env;
}

async function check(env: AuditDb, extra: { expectHead?: string[]; noCheckpoint?: boolean } = {}): Promise<VerifyReport> {
  return verify(env.writerUrl, HMAC_KEY, {
    ...(extra.noCheckpoint ? {} : { checkpointFile: env.config().checkpointFile }),
    ...(extra.expectHead ? { expectHead: extra.expectHead } : {}),
  });
}

/** A superuser session with triggers off. */
async function asAttacker<T>(env: AuditDb, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  return withClient(env.superUrl, async (c) => {
    await c.query('SET session_replication_role = replica');
    return fn(c);
  });
}

/** What a keyless attacker does after an edit: recompute plain SHA-256 hashes forward from seq. */
async function rehashForward(c: pg.Client, chainId: string, fromSeq: number): Promise<void> {
  const r = await c.query(`SELECT ${SELECT_COLUMNS} FROM scalple_audit.records WHERE chain_id = $1 AND seq >= $2 ORDER BY seq`, [chainId, fromSeq - 1]);
  let prev: string | undefined;
  for (const raw of r.rows) {
    const row = rowFromDb(raw);
    if (row.seq < fromSeq) {
      prev = row.hash;
      continue;
    }
    const prevHash = prev ?? row.prev_hash;
    const hash = createHash('sha256').update(prevHash).update(canonical({ ...row, prev_hash: prevHash } as never)).digest('hex');
    await c.query('UPDATE scalple_audit.records SET prev_hash = $1, hash = $2 WHERE chain_id = $3 AND seq = $4', [prevHash, hash, chainId, row.seq]);
    prev = hash;
  }
}

function first(report: VerifyReport) {
  expect(report.ok).toBe(false);
  return report.problems[0]!;
}

describe('verify against a superuser attacker', () => {
  it('passes an untouched log and prints its head', async () => {
    const env = await populated();
    const report = await check(env);
    expect(report.ok).toBe(true);
    expect(report.chains).toHaveLength(1);
    expect(report.chains[0]).toMatchObject({ chainId: 'main', status: 'intact', verified: 20, firstSeq: 1, headSeq: 20 });
    expect(report.chains[0]!.headHash).toMatch(/^[0-9a-f]{64}$/);
    env.cleanup();
  });

  it('names an edited record even when every hash after it is recomputed with plain SHA-256', async () => {
    const env = await populated();
    const logId = await asAttacker(env, async (c) => {
      const r = await c.query(`UPDATE scalple_audit.records SET email = 'someone-else@example.com' WHERE chain_id = 'main' AND seq = 7 RETURNING log_id`);
      await rehashForward(c, 'main', 7);
      return r.rows[0].log_id as string;
    });
    const p = first(await check(env));
    expect(p).toMatchObject({ chainId: 'main', seq: 7, logId, kind: 'modified' });
    expect(p.message).toMatch(/plain SHA-256/);
    env.cleanup();
  });

  it('names an edited record when triggers are disabled with ALTER TABLE (no re-hash)', async () => {
    const env = await populated();
    const part = await withClient(env.superUrl, async (c) => {
      const r = await c.query(`SELECT tableoid::regclass::text AS part FROM scalple_audit.records WHERE seq = 12`);
      const t = r.rows[0].part as string;
      await c.query(`ALTER TABLE ${t} DISABLE TRIGGER append_only`);
      await c.query(`UPDATE ${t} SET rows = 0 WHERE chain_id = 'main' AND seq = 12`);
      await c.query(`ALTER TABLE ${t} ENABLE TRIGGER append_only`);
      return t;
    });
    expect(part).toMatch(/records_\d{6}/);
    expect(first(await check(env))).toMatchObject({ seq: 12, kind: 'modified' });
    env.cleanup();
  });

  it('names a deleted record', async () => {
    const env = await populated();
    await asAttacker(env, (c) => c.query(`DELETE FROM scalple_audit.records WHERE chain_id = 'main' AND seq = 9`));
    const p = first(await check(env));
    expect(p).toMatchObject({ seq: 9, kind: 'deleted' });
    expect(p.message).toMatch(/record seq 9 is missing/);
    env.cleanup();
  });

  it('names a deleted record even when the attacker renumbers and re-hashes the rest', async () => {
    const env = await populated();
    await asAttacker(env, async (c) => {
      await c.query(`DELETE FROM scalple_audit.records WHERE chain_id = 'main' AND seq = 9`);
      await c.query(`UPDATE scalple_audit.records SET seq = seq - 1 WHERE chain_id = 'main' AND seq > 9`);
      await rehashForward(c, 'main', 9);
    });
    const p = first(await check(env));
    expect(p.seq).toBe(9);
    expect(['modified', 'reordered']).toContain(p.kind);
    env.cleanup();
  });

  it('catches a cut tail with the checkpoint file, and with --expect-head', async () => {
    const env = await populated();
    const before = await check(env);
    const head = `main:${before.chains[0]!.headHash}`;
    await asAttacker(env, (c) => c.query(`DELETE FROM scalple_audit.records WHERE chain_id = 'main' AND seq > 17`));
    // the remaining chain is consistent in itself: only a head kept elsewhere shows the cut
    expect((await check(env, { noCheckpoint: true })).ok).toBe(true);
    const p = first(await check(env));
    expect(p).toMatchObject({ seq: 18, kind: 'tail-cut' });
    expect(p.message).toMatch(/ends at seq 17 but the checkpoint file .* says seq 20 was committed: records 18..20 were cut/);
    const q = first(await check(env, { noCheckpoint: true, expectHead: [head] }));
    expect(q).toMatchObject({ kind: 'tail-cut', chainId: 'main' });
    expect(q.message).toMatch(/expected head .* is not in chain main/);
    env.cleanup();
  });

  it('refuses a checkpoint file moved back by hand (its MAC needs the key)', async () => {
    const env = await populated();
    await asAttacker(env, (c) => c.query(`DELETE FROM scalple_audit.records WHERE chain_id = 'main' AND seq > 15`));
    const file = env.config().checkpointFile;
    const cp = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...cp, seq: 15 }));
    const p = first(await check(env));
    expect(p.kind).toBe('checkpoint');
    expect(p.message).toMatch(/MAC does not match/);
    env.cleanup();
  });

  it('names a dropped partition', async () => {
    const env = await populated({ months: ['2024-01', '2024-02', '2024-03'] });
    expect((await check(env)).ok).toBe(true);
    await withClient(env.superUrl, (c) => c.query('DROP TABLE scalple_audit.records_202402'));
    const p = first(await check(env));
    // Jan holds statements 0-2 (seq 1..6); Feb held seq 7..12
    expect(p).toMatchObject({ seq: 7, kind: 'deleted' });
    expect(p.message).toMatch(/records seq 7..12 are missing .*partition records_202402 is missing/);
    env.cleanup();
  });

  it('names reordered records', async () => {
    const env = await populated();
    await asAttacker(env, async (c) => {
      await c.query(`UPDATE scalple_audit.records SET seq = 1000000 WHERE chain_id = 'main' AND seq = 5`);
      await c.query(`UPDATE scalple_audit.records SET seq = 5 WHERE chain_id = 'main' AND seq = 6`);
      await c.query(`UPDATE scalple_audit.records SET seq = 6 WHERE chain_id = 'main' AND seq = 1000000`);
    });
    const p = first(await check(env));
    expect(p).toMatchObject({ seq: 5, kind: 'reordered' });
    expect(p.message).toMatch(/was written as seq 6/);
    env.cleanup();
  });

  it('names a forged record appended past the head', async () => {
    const env = await populated();
    await asAttacker(env, async (c) => {
      const r = await c.query(`SELECT ${SELECT_COLUMNS} FROM scalple_audit.records WHERE chain_id = 'main' AND seq = 20`);
      const last = rowFromDb(r.rows[0]);
      const forged = { ...last, seq: 21, log_id: 'forged-1', record_type: 'intent' as const, statement: 'SELECT 1', prev_hash: last.hash };
      const hash = createHash('sha256').update(forged.prev_hash).update(canonical(forged)).digest('hex');
      await c.query(`INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, email, statement, prev_hash, hash)
                     VALUES ('main', 21, $1, 'forged-1', 'intent', $2, 'SELECT 1', $3, $4)`, [forged.ts, last.email, last.hash, hash]);
    });
    const p = first(await check(env));
    expect(p).toMatchObject({ seq: 21, logId: 'forged-1', kind: 'inserted' });
    env.cleanup();
  });

  it('names a forged record with a duplicate seq', async () => {
    const env = await populated();
    await withClient(env.superUrl, async (c) => {
      // no need to disable anything: INSERT is allowed; only the key is missing
      await c.query(`INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, email, statement, prev_hash, hash)
        SELECT chain_id, seq, ts + interval '1 millisecond', 'forged-2', 'intent', 'alice@example.com', 'SELECT 2', prev_hash, repeat('0', 64)
          FROM scalple_audit.records WHERE chain_id = 'main' AND seq = 10`);
    });
    const p = first(await check(env));
    expect(p).toMatchObject({ seq: 10, logId: 'forged-2', kind: 'inserted' });
    env.cleanup();
  });
});

describe('retention', () => {
  it('drops old partitions through a signed cut that verify reports as retention, not tampering', async () => {
    const env = await populated({ months: ['2024-01', '2024-02', '2024-03'] });
    const dry = await applyRetention({ adminUrl: env.adminUrl, audit: env.config(), policyVersion: 'pv', before: new Date('2024-03-01T00:00:00Z'), dryRun: true });
    expect(dry.partitions).toEqual(['records_202401', 'records_202402']);
    expect(dry.event).toBeUndefined();
    const res = await applyRetention({ adminUrl: env.adminUrl, audit: env.config(), policyVersion: 'pv', before: new Date('2024-03-01T00:00:00Z'), actor: 'ops@example.com' });
    expect(res.partitions).toEqual(['records_202401', 'records_202402']);
    expect(res.dropped.main).toMatchObject({ seq: 12, records: 12 });
    expect(res.event).toMatchObject({ chainId: 'admin', seq: 1 });
    const parts = await withClient(env.superUrl, (c) => c.query(`SELECT to_regclass('scalple_audit.records_202401') AS a, to_regclass('scalple_audit.records_202402') AS b`));
    expect(parts.rows[0]).toEqual({ a: null, b: null });

    const report = await check(env);
    expect(report.problems).toEqual([]);
    const main = report.chains.find((c) => c.chainId === 'main')!;
    expect(main).toMatchObject({ status: 'intact', firstSeq: 13, headSeq: 26, verified: 14 });
    expect(main.retentionCut).toMatchObject({ seq: 12, before: '2024-03-01', recordedIn: { chainId: 'admin', seq: 1 } });
    expect(report.chains.find((c) => c.chainId === 'admin')).toMatchObject({ status: 'intact', verified: 1 });

    // the writer carries on after the cut, and tampering after it is still caught
    const store = await openAuditStore(env.config(), { policyVersion: 'pv' });
    expect(store.head().seq).toBe(26);
    await store.intent(intent());
    await store.close();
    expect((await check(env)).ok).toBe(true);
    await asAttacker(env, (c) => c.query(`DELETE FROM scalple_audit.records WHERE chain_id = 'main' AND seq = 14`));
    expect(first(await check(env))).toMatchObject({ chainId: 'main', seq: 14, kind: 'deleted' });
    env.cleanup();
  });

  it('cuts accumulate: a second retention keeps the first one\'s cuts', async () => {
    const env = await populated({ months: ['2024-01', '2024-02', '2024-03'] });
    await applyRetention({ adminUrl: env.adminUrl, audit: env.config(), policyVersion: 'pv', before: new Date('2024-02-01T00:00:00Z') });
    await applyRetention({ adminUrl: env.adminUrl, audit: env.config(), policyVersion: 'pv', before: new Date('2024-04-01T00:00:00Z') });
    const report = await check(env);
    expect(report.problems).toEqual([]);
    expect(report.chains.find((c) => c.chainId === 'main')!.retentionCut).toMatchObject({ seq: 18, before: '2024-04-01' });
    env.cleanup();
  });

  it('a cut forged without the key does not excuse a dropped partition', async () => {
    const env = await populated({ months: ['2024-01', '2024-02', '2024-03'] });
    await withClient(env.superUrl, async (c) => {
      const r = await c.query(`SELECT seq, hash, ts FROM scalple_audit.records WHERE chain_id = 'main' AND seq = 12`);
      await c.query('DROP TABLE scalple_audit.records_202401, scalple_audit.records_202402');
      const detail = { before: '2024-03-01', partitions: ['records_202401', 'records_202402'], cuts: { main: { seq: 12, hash: r.rows[0].hash, ts: r.rows[0].ts.toISOString() } } };
      await c.query(`INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, event, detail, prev_hash, hash)
        VALUES ('admin', 1, now(), 'fake-cut', 'event', 'retention_cut', $1, repeat('0', 64), repeat('a', 64))`, [detail]);
    });
    const report = await check(env);
    expect(report.ok).toBe(false);
    expect(report.problems.find((p) => p.chainId === 'main')).toMatchObject({ seq: 1, kind: 'deleted' });
    expect(report.problems.find((p) => p.chainId === 'admin')).toMatchObject({ seq: 1, logId: 'fake-cut' });
    env.cleanup();
  });

  it('refuses to drop partitions of a chain that does not verify', async () => {
    const env = await populated({ months: ['2024-01', '2024-02', '2024-03'] });
    await asAttacker(env, (c) => c.query(`UPDATE scalple_audit.records SET statement = 'x' WHERE chain_id = 'main' AND seq = 3`));
    await expect(applyRetention({ adminUrl: env.adminUrl, audit: env.config(), policyVersion: 'pv', before: new Date('2024-03-01T00:00:00Z') }))
      .rejects.toThrow(/retention refused: the audit log does not verify \(record seq 3/);
    env.cleanup();
  });
});
