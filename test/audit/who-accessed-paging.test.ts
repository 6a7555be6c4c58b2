// who-accessed pages over a store with months of records: the newest --limit accesses found one
// monthly partition at a time (the default partition included), in the same order as a brute-force
// join of every completion with its intent; "N more" exact up to its cap and "more than N" past it;
// a page topped up when a possible access turns out not to reach the subject's tables; an intent
// found by the unbounded fallback; and possible accesses summarised per person and statement shape
// (texts that differ only in literals are one shape). Records are written by the real store, plus
// 1,220 inserted in bulk as the schema owner for the counts.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { loadConfig } from '../../src/policy/config.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import type { CompletionRecord, IntentRecord, Principal } from '../../src/audit/record.ts';
import type { SubjectDef } from '../../src/policy/subjects.ts';
import { answerWhoAccessed, summarisePossible, whoAccessed, type SubjectAccess } from '../../src/audit/who-accessed.ts';
import { ALICE, BOB, type AuditDb, completion, freshAuditDb, intent, startAuditCluster, withClient, auditConfigYaml } from './helpers.ts';
import { scalple } from './cli-run.ts';

const CAROL: Principal = { kind: 'person', sub: 'u-carol', email: 'carol@example.com', name: 'Carol Analyst', groups: ['analytics'] };
const BILLING_API: Principal = { kind: 'application', sub: 'app:billing-api', groups: ['service'], application: 'billing-api' };
const CUSTOMER: SubjectDef = { name: 'customer', table: 'public.customers', key: 'id', via: ['public.orders.customer_id'] };
const DAY = 86_400_000;

let server: PostgresServer;
let env: AuditDb;
let configFile: string;
const id: Record<string, string> = {};

beforeAll(async () => {
  server = await startAuditCluster();
  env = await freshAuditDb(server);
  configFile = path.join(env.dir, 'scalple.yaml');
  writeFileSync(configFile, auditConfigYaml(server, env, { audit: '  durability: strict\n  chain_id: main\n', extra: `subjects:
  customer:
    table: public.customers
    key: id
    via: [public.orders.customer_id]
` }));
  // March and April 2025 get monthly partitions; May and June 2025 land in the default partition.
  await withClient(env.adminUrl, (c) => c.query(`SELECT scalple_audit.ensure_partitions('2025-03-01T00:00:00Z', 2)`));

  const config = loadConfig(configFile);
  const store = await openAuditStore(config.audit, { policyVersion: config.policyVersion });
  const recent = Date.now() - 3 * DAY;
  type S = { name: string; at: Date; i?: Partial<IntentRecord>; c: Partial<CompletionRecord>; completedAt?: Date };
  const statements: S[] = [];
  const lookup = (n: string, at: Date, who: Principal = ALICE): S => ({
    name: n, at, i: { principal: who, statement: 'SELECT * FROM customers WHERE id = $1', params: ['7'] }, c: { subjectKeys: ['customer:7'] },
  });
  // Customer 7: four definite accesses in each of March, April, June 2025 and recently.
  for (let k = 0; k < 4; k++) {
    statements.push(lookup(`mar${k}`, new Date(Date.UTC(2025, 2, 10 + k, 9))));
    statements.push(lookup(`apr${k}`, new Date(Date.UTC(2025, 3, 10 + k, 9)), BOB));
    statements.push(lookup(`jun${k}`, new Date(Date.UTC(2025, 5, 10 + k, 9))));
    statements.push(lookup(`now${k}`, new Date(recent + k * 60_000), BOB));
  }
  // Possible accesses: Carol's count with two different literals (one shape), Bob's DISTINCT, an
  // application's named query for Alice, and a UNION that returned customer 7 among unknown others.
  const count = (literal: string) => `SELECT count(*) FROM customers WHERE region = '${literal}'`;
  statements.push({ name: 'countEU', at: new Date(Date.UTC(2025, 3, 11, 12)), i: { principal: CAROL, statement: count('EU'), params: undefined }, c: { subjectsPossible: { customer: 'keys unknown (aggregate)' } } });
  statements.push({ name: 'countUS', at: new Date(recent + 10 * 60_000), i: { principal: CAROL, statement: count('US'), params: undefined }, c: { subjectsPossible: { customer: 'keys unknown (aggregate)' } } });
  statements.push({ name: 'distinct', at: new Date(Date.UTC(2025, 5, 11, 12)), i: { principal: BOB, statement: 'SELECT DISTINCT region FROM customers', params: undefined }, c: { subjectsPossible: { customer: 'keys unknown (DISTINCT)' } } });
  statements.push({
    name: 'named', at: new Date(recent + 11 * 60_000), i: { principal: BILLING_API, actingFor: ALICE, namedQuery: 'region_counts', statement: 'SELECT region, count(*) FROM customers GROUP BY region', params: undefined },
    c: { subjectsPossible: { customer: 'keys unknown (aggregate)' } },
  });
  statements.push({
    name: 'union', at: new Date(Date.UTC(2025, 3, 12, 12)), i: { principal: CAROL, statement: 'SELECT id FROM customers WHERE id = 7 UNION SELECT count(*) FROM customers', params: undefined },
    c: { subjectKeys: ['customer:7'], subjectsPossible: { customer: 'keys unknown (set operation)' } },
  });
  // 'customer:*' on a statement that never read the customers' tables, newest of all.
  statements.push({ name: 'stray', at: new Date(recent + 20 * 60_000), i: { statement: 'SELECT count(*) FROM products', params: undefined, tables: ['public.products'], columns: [] }, c: { subjectsPossible: { customer: 'keys unknown (function)' } } });
  // Completed three days after its intent while its recorded duration says 5 ms: found by the
  // fallback (for customer 7 on a short page, for customer 8 on a long one).
  statements.push({ name: 'fallback', at: new Date(Date.UTC(2025, 4, 20, 12)), i: { principal: CAROL, statement: 'SELECT * FROM customers WHERE id IN (7, 8)', params: undefined }, c: { subjectKeys: ['customer:7', 'customer:8'], durationMs: 5 }, completedAt: new Date(Date.UTC(2025, 4, 23, 12)) });

  // Written oldest first: stored times only move forward along a chain.
  statements.sort((a, b) => a.at.getTime() - b.at.getTime());
  for (const s of statements) {
    const rec = intent({ ts: s.at, ...s.i });
    id[s.name] = rec.logId;
    await store.intent(rec);
    store.completion(completion(rec.logId, { ts: s.completedAt ?? new Date(s.at.getTime() + 5), ...s.c }));
    await store.flush();
  }
  await store.close();

  // Customer 8: 1,200 accesses in March and April 2025 and 20 at the start of this month, on a chain of their own.
  await withClient(env.adminUrl, (c) => c.query(`
    WITH s AS (
      SELECT g, CASE WHEN g <= 1200 THEN '2025-03-02T00:00:00Z'::timestamptz + g * interval '1 hour'
                     ELSE date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + (g - 1200) * interval '1 minute' END AS t
        FROM generate_series(1, 1220) g
    ), i AS (
      INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, sub, email, name, groups, principal_kind, session_id,
        statement, kinds, tables, columns, decision, policy_version, prev_hash, hash)
      SELECT 'bulk', 2 * g - 1, t, 'bulk-' || g, 'intent', 'u-alice', 'alice@example.com', 'Alice Support', ARRAY['support'], 'person', 's-bulk',
             'SELECT * FROM customers WHERE id = 8', ARRAY['SELECT'], ARRAY['public.customers'], ARRAY['public.customers.id'], 'allow', 'pv-1', 'p', 'h'
        FROM s
    )
    INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, session_id, rows, duration_ms, subject_keys, prev_hash, hash)
    SELECT 'bulk', 2 * g, t + interval '2 milliseconds', 'bulk-' || g, 'completion', 's-bulk', 1, 1.5, ARRAY['customer:8'], 'p', 'h' FROM s`));
  await withClient(env.adminUrl, (c) => c.query('ANALYZE scalple_audit.records'));
});

afterAll(async () => {
  env?.cleanup();
  await server?.stop();
});

async function withWriter<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  return withClient(env.writerUrl, fn);
}

/** Every access by brute force: each completion joined with its intent, newest first. */
async function reference(key: string): Promise<{ log_id: string; access: 'definite' | 'possible' }[]> {
  return withWriter(async (c) => (await c.query(`
    SELECT c.log_id, CASE WHEN c.subject_keys @> ARRAY[$1] THEN 'definite' ELSE 'possible' END AS access
      FROM scalple_audit.records c
      LEFT JOIN scalple_audit.records i ON i.log_id = c.log_id AND i.record_type = 'intent'
     WHERE c.record_type = 'completion' AND c.subject_keys && ARRAY[$1, 'customer:*']
       AND (c.subject_keys @> ARRAY[$1] OR i.tables && ARRAY['public.customers', 'public.orders'])
     ORDER BY c.ts DESC, c.seq DESC, c.chain_id DESC`, [`customer:${key}`])).rows);
}

const ids = (a: SubjectAccess[]) => a.map((x) => x.log_id);

describe('who-accessed paging and summaries', () => {
  it('lists every access in the order of a brute-force join (no limit: report and scalple.who_accessed)', async () => {
    const ref = await reference('7');
    expect(ref).toHaveLength(18 + 4); // 18 definite (the UNION among them), 4 possible (not the stray)
    const all = await withWriter((c) => whoAccessed(c, { subject: CUSTOMER, key: '7' }));
    expect(all.map((a) => ({ log_id: a.log_id, access: a.access }))).toEqual(ref);
    expect(all.find((a) => a.log_id === id.union)).toMatchObject({ access: 'definite', possible_reason: null });
    // The intent three days before its completion, found by the unbounded lookup.
    expect(all.find((a) => a.log_id === id.fallback)).toMatchObject({ ts: '2025-05-20T12:00:00.000Z', completed_at: '2025-05-23T12:00:00.000Z', email: CAROL.email });
    const definite = await withWriter((c) => whoAccessed(c, { subject: CUSTOMER, key: '7', definiteOnly: true }));
    expect(ids(definite)).toEqual(ref.filter((r) => r.access === 'definite').map((r) => r.log_id));
  });

  it('pages the definite accesses across partitions and the default partition, saying exactly how many more', async () => {
    const ref = (await reference('7')).filter((r) => r.access === 'definite').map((r) => r.log_id);
    await withWriter(async (c) => {
      for (const limit of [1, 3, 4, 5, 8, 9, 13, 17, 18, 19, 1000]) {
        const a = await answerWhoAccessed(c, { subject: CUSTOMER, key: '7', definiteOnly: true }, { limit });
        expect(ids(a.accesses), `limit ${limit}`).toEqual(ref.slice(0, limit));
        const more = Math.max(0, ref.length - limit);
        expect(a.more, `limit ${limit}`).toEqual({ count: more, exact: true, before: more ? a.accesses[a.accesses.length - 1]!.completed_at : null });
        expect(a.possible).toBeNull();
      }
      // --since/--until still bound the page.
      const june = await answerWhoAccessed(c, { subject: CUSTOMER, key: '7', since: new Date('2025-05-01'), until: new Date('2025-06-30') }, { limit: 2 });
      expect(ids(june.accesses)).toEqual([id.jun3, id.jun2]);
      expect(june.more).toMatchObject({ count: 3, exact: true }); // jun1, jun0 and the fallback in May
    });
  });

  it('lists possible accesses among the definite ones with includePossible, topping up a page that lost a stray', async () => {
    const ref = (await reference('7')).map((r) => r.log_id);
    await withWriter(async (c) => {
      for (const limit of [1, 2, 6, 21, 22, 50]) {
        const a = await answerWhoAccessed(c, { subject: CUSTOMER, key: '7' }, { limit, includePossible: true });
        expect(ids(a.accesses), `limit ${limit}`).toEqual(ref.slice(0, limit));
        expect(a.possible).toBeNull();
        if (limit >= ref.length) expect(a.more.count).toBe(0);
        else expect(a.more.count).toBeGreaterThanOrEqual(ref.length - limit);
      }
    });
  });

  it('summarises possible accesses per person and statement shape (literals aside), newest first within the limit', async () => {
    await withWriter(async (c) => {
      const a = await answerWhoAccessed(c, { subject: CUSTOMER, key: '7' }, { limit: 1000 });
      expect(a.possible!.accesses).toBe(4);
      expect(a.possible!.more.count).toBe(0);
      expect(a.possible!.groups.map((g) => [g.email ?? g.sub, g.count, g.first, g.last, g.named_query, g.statement, g.reasons])).toEqual([
        [CAROL.email, 2, '2025-04-11T12:00:00.000Z', expect.any(String), null, "SELECT count(*) FROM customers WHERE region = 'US'", ['keys unknown (aggregate)']],
        ['app:billing-api', 1, expect.any(String), expect.any(String), 'region_counts', 'SELECT region, count(*) FROM customers GROUP BY region', ['keys unknown (aggregate)']],
        [BOB.email, 1, '2025-06-11T12:00:00.000Z', '2025-06-11T12:00:00.000Z', null, 'SELECT DISTINCT region FROM customers', ['keys unknown (DISTINCT)']],
      ]);
      expect(a.possible!.groups[1]!.acting_for).toMatchObject({ email: ALICE.email });
      // For a customer the UNION did not name, it is one more possible access (Carol's, another shape).
      const other = await summarisePossible(c, { subject: CUSTOMER, key: '9' });
      expect(other.accesses).toBe(5);
      expect(other.groups.filter((g) => g.email === CAROL.email).map((g) => g.count).sort()).toEqual([1, 2]);
      // The summary covers the newest `limit` possible accesses and counts the others.
      const two = await summarisePossible(c, { subject: CUSTOMER, key: '7' }, 2);
      expect(two.accesses).toBe(2);
      expect(two.groups.map((g) => g.email ?? g.sub).sort()).toEqual(['app:billing-api', CAROL.email]);
      expect(two.more).toMatchObject({ count: 2, exact: true });
    });
  });

  it('counts the accesses past the page up to a cap, and says "more than" past it', async () => {
    await withWriter(async (c) => {
      const capped = await answerWhoAccessed(c, { subject: CUSTOMER, key: '8', definiteOnly: true }, { limit: 10 });
      expect(capped.accesses).toHaveLength(10);
      expect(capped.accesses.every((x) => x.email === ALICE.email && x.statement === 'SELECT * FROM customers WHERE id = 8')).toBe(true);
      // 10 more in the newest month, then at least 1,000 (the cap) in older ones: 1,211 in truth.
      expect(capped.more).toMatchObject({ count: 1010, exact: false });
      const exact = await answerWhoAccessed(c, { subject: CUSTOMER, key: '8', definiteOnly: true }, { limit: 100 });
      expect(exact.more).toMatchObject({ count: 1121, exact: true });
      const all = await answerWhoAccessed(c, { subject: CUSTOMER, key: '8', definiteOnly: true }, { limit: 1500 });
      expect(all.accesses).toHaveLength(1221);
      expect(all.more.count).toBe(0);
      const bulk = (from: number, to: number) => Array.from({ length: from - to + 1 }, (_, k) => `bulk-${from - k}`);
      expect(all.accesses.map((x) => x.log_id)).toEqual([...bulk(1220, 1201), id.fallback, ...bulk(1200, 1)]);
      expect(all.accesses[20]).toMatchObject({ ts: '2025-05-20T12:00:00.000Z', completed_at: '2025-05-23T12:00:00.000Z', email: CAROL.email });
    });
    const r = await scalple(['audit', 'who-accessed', 'customer', '8', '--limit', '10', '--config', configFile, '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveLength(10);
    expect(r.stderr).toMatch(/^note: plus 5 possible accesses to customer 8 by 3 people .*--include-possible lists them\.\nnote: more than 1,010 more definite accesses to customer 8 \(at or before [^)]+\) not shown: raise --limit, or narrow with --since\/--until\.\n$/);
  });

  it('the CLI table shows the summary of possible accesses after the definite ones', async () => {
    const r = await scalple(['audit', 'who-accessed', 'customer', '7', '--limit', '4', '--config', configFile]);
    expect(r.code, r.stderr).toBe(0);
    const [listed, summary] = r.stdout.split('POSSIBLE accesses to customer 7');
    expect(listed).toContain('(4 definite accesses to customer 7, newest first)');
    expect(summary).toMatch(/│ 2 +│ carol@example\.com +│/);
    expect(summary).toMatch(/│ 1 +│ app:billing-api +│/);
    expect(summary).toMatch(/│ 1 +│ bob@example\.com +│/);
    expect(summary).toContain('for alice@example.com');
    expect(summary).toContain('named query region_counts');
    expect(summary).toContain('(4 possible accesses by 3 people, in 3 lines of person and statement; --include-possible lists each one)');
    expect(r.stderr).toMatch(/^note: 14 more definite accesses to customer 7 \(at or before [^)]+\) not shown: --limit 18 includes them \(or narrow with --since\/--until\)\.\n$/);
    const two = await scalple(['audit', 'who-accessed', 'customer', '7', '--limit', '2', '--config', configFile]);
    expect(two.code, two.stderr).toBe(0);
    expect(two.stdout).toContain('(2 possible accesses by 2 people, in 2 lines of person and statement; --include-possible lists each one)');
    expect(two.stderr).toContain('note: 16 more definite accesses to customer 7');
    expect(two.stderr).toMatch(/note: 2 more possible accesses to customer 7 \(at or before [^)]+\) not summarised: --limit 4 includes them/);
  });
  // Last: it adds a possible access.
  it('computes the summary on a second connection in the snapshot of the first, or on the first when that fails', async () => {
    const q = { subject: CUSTOMER, key: '7' };
    await withWriter(async (c) => {
      const alone = await answerWhoAccessed(c, q, { limit: 5 });
      const failed = await answerWhoAccessed(c, q, { limit: 5, connect: () => Promise.reject(new Error('no second connection')) });
      expect(failed).toEqual(alone);
      // A possible access committed after the first connection took its snapshot, before the
      // second one starts: neither sees it.
      let opened = 0;
      const both = await answerWhoAccessed(c, q, {
        limit: 5,
        connect: async () => {
          opened++;
          await withClient(env.adminUrl, (a) => a.query(`
            INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, sub, email, groups, principal_kind, statement, kinds, tables, columns, decision, policy_version, prev_hash, hash)
            VALUES ('late', 1, now(), 'late-1', 'intent', 'u-dave', 'dave@example.com', ARRAY['analytics'], 'person', 'SELECT avg(id) FROM customers', ARRAY['SELECT'], ARRAY['public.customers'], ARRAY['public.customers.id'], 'allow', 'pv-1', 'p', 'h');
            INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, rows, duration_ms, subject_keys, prev_hash, hash)
            VALUES ('late', 2, now(), 'late-1', 'completion', 1, 1, ARRAY['customer:*'], 'p', 'h')`));
          const d = new pg.Client({ connectionString: env.writerUrl });
          await d.connect();
          return d;
        },
      });
      expect(opened).toBe(1);
      expect(both).toEqual(alone);
      const after = await answerWhoAccessed(c, q, { limit: 5 });
      expect(after.possible!.groups.find((g) => g.email === 'dave@example.com')).toMatchObject({ count: 1, statement: 'SELECT avg(id) FROM customers' });
      expect(after.possible!.accesses).toBe(5);
    });
  });
});
