// `scalple audit who-accessed SUBJECT KEY` against a real store holding records shaped like the
// proxy's (intent + completion with subject_keys): definite and possible accesses (possible ones
// summarised by default, listed with --include-possible), the decoys that merely look like
// customer 42, time ranges (including an intent and its completion in different monthly
// partitions, and a statement that ran for weeks), exact JSON and CSV, usage errors, and the
// audit read recorded as an event on its own chain. Paging (--limit) and the summary over many
// records: who-accessed-paging.test.ts.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { loadConfig } from '../../src/policy/config.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import type { CompletionRecord, IntentRecord } from '../../src/audit/record.ts';
import { SUBJECT_ACCESS_FIELDS, type SubjectAccess } from '../../src/audit/who-accessed.ts';
import { ALICE, BOB, type AuditDb, completion, freshAuditDb, HMAC_KEY, intent, startAuditCluster, withClient, auditConfigYaml } from './helpers.ts';
import { scalple } from './cli-run.ts';

const CAROL = { kind: 'person' as const, sub: 'u-carol', email: 'carol@example.com', name: 'Carol Analyst', groups: ['analytics', 'support'] };
const BILLING_API = { kind: 'application' as const, sub: 'app:billing-api', groups: ['service'], application: 'billing-api' };

let server: PostgresServer;
let env: AuditDb;
let configFile: string;
/** log ids by scenario name */
const id: Record<string, string> = {};
const DAY = 86_400_000;
const recent = Date.now() - 2 * DAY;
const at = (minutes: number) => new Date(recent + minutes * 60_000);

beforeAll(async () => {
  server = await startAuditCluster();
  env = await freshAuditDb(server);
  configFile = path.join(env.dir, 'scalple.yaml');
  writeFileSync(configFile, auditConfigYaml(server, env, { audit: `  durability: strict
  chain_id: main
  checkpoint_file: scalple-audit-head.main.json
`, extra: `subjects:
  customer:
    table: public.customers
    key: id
    via: [public.orders.customer_id, public.payments.customer_id]
  employee:
    table: hr.employees
    key: id
` }));
  // Monthly partitions for early 2025, so one statement can straddle a month boundary.
  await withClient(env.adminUrl, (c) => c.query(`SELECT scalple_audit.ensure_partitions('2025-01-01T00:00:00Z', 2)`));

  const config = loadConfig(configFile);
  const store = await openAuditStore(config.audit, { policyVersion: config.policyVersion });
  // Written oldest first: stored times only move forward along a chain.
  const write = async (name: string, i: Partial<IntentRecord>, c: Partial<CompletionRecord>, completionTs?: Date) => {
    const rec = intent(i);
    id[name] = rec.logId;
    await store.intent(rec);
    store.completion(completion(rec.logId, { ts: completionTs ?? new Date(rec.ts.getTime() + 5), ...c }));
    await store.flush();
  };
  const lookup42 = { statement: 'SELECT * FROM customers WHERE id = $1', params: ['42'], columns: ['public.customers.id', 'public.customers.email', 'public.customers.full_name'] };

  // An intent on 31 January and its completion on 1 February: two partitions.
  await write('boundary', { ts: new Date('2025-01-31T23:59:59.990Z'), principal: BOB, ...lookup42, sessionId: 's-b' },
    { subjectKeys: ['customer:42'], sessionId: 's-b' }, new Date('2025-02-01T00:00:00.020Z'));
  // A statement that ran for weeks: intent on 3 February, completion on 20 February.
  await write('long', { ts: new Date('2025-02-03T10:00:00.000Z'), principal: CAROL, statement: 'SELECT c.id, pg_sleep(1500000) FROM customers c WHERE c.id = 42', params: undefined },
    { subjectKeys: ['customer:42'], durationMs: 1_468_800_000 }, new Date('2025-02-20T10:00:00.000Z'));
  // 40 days ago: outside --since 30d.
  await write('old', { ts: new Date(Date.now() - 40 * DAY), ...lookup42 }, { subjectKeys: ['customer:42'] });

  // Recent accesses, as the proxy records them.
  await write('lookup', {
    ts: at(0), ...lookup42, decision: 'mask', rule: 'roles.support', reason: 'ticket 4711',
    maskedFields: { 'public.customers.email': 'email', 'public.customers.full_name': 'redact' },
  }, { rows: 1, durationMs: 1.5, subjectKeys: ['customer:42'] });
  await write('bulk', {
    ts: at(1), principal: CAROL, statement: "SELECT email FROM customers WHERE region = 'EU'", params: undefined, columns: ['public.customers.email'],
    decision: 'mask', maskedFields: { 'public.customers.email': 'email' },
  }, { rows: 5, subjectKeys: ['customer:7', 'customer:42', 'customer:99', 'customer:420', 'customer:4200'] });
  await write('join', {
    ts: at(2), principal: BOB, statement: 'SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 363', params: undefined,
    tables: ['public.orders', 'public.customers'], columns: ['public.orders.id', 'public.orders.total', 'public.orders.customer_id', 'public.customers.id'],
  }, { subjectKeys: ['customer:42'] });
  await write('update', {
    ts: at(3), principal: BILLING_API, actingFor: BOB, statement: "UPDATE customers SET plan_tier = 'pro' WHERE id = 42", params: undefined,
    kinds: ['UPDATE'], columns: ['public.customers.plan_tier', 'public.customers.id'], reason: 'upgrade requested', applicationName: 'billing-api', clientAddr: '127.0.0.2',
  }, { subjectKeys: ['customer:42'] });
  await write('aggregate', {
    ts: at(4), principal: CAROL, statement: "SELECT count(*) FROM customers WHERE region = 'EU'", params: undefined, columns: ['public.customers.region'],
  }, { subjectsPossible: { customer: 'keys unknown (aggregate): every row the statement\'s predicate matched' } });
  await write('named', {
    ts: at(5), principal: BOB, statement: 'SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1',
    params: ['363'], namedQuery: 'get_order_by_id', tables: ['public.orders', 'public.customers'], columns: ['public.orders.id', 'public.orders.total', 'public.customers.email'],
  }, { subjectKeys: ['customer:42'] });
  // Decoys: they merely look like customer 42.
  await write('decoy420', { ts: at(6), ...lookup42, params: ['420'] }, { subjectKeys: ['customer:420'] });
  await write('decoyOrder42', {
    ts: at(7), statement: 'SELECT * FROM orders WHERE id = 42', params: undefined, tables: ['public.orders'], columns: ['public.orders.id', 'public.orders.customer_id'],
  }, { subjectKeys: ['customer:295', 'order:42'] });
  await write('decoyTotal', {
    ts: at(8), statement: 'SELECT id, total FROM orders WHERE total BETWEEN 42 AND 43', params: undefined, tables: ['public.orders'], columns: ['public.orders.id', 'public.orders.total'],
  }, { subjectKeys: ['customer:8', 'customer:13'] });
  await write('decoyEmployee', {
    ts: at(9), statement: 'SELECT count(*) FROM hr.employees WHERE id = 42', params: undefined, tables: ['hr.employees'], columns: ['hr.employees.id'],
  }, { subjectKeys: ['employee:42'], subjectsPossible: { employee: 'keys unknown (aggregate)' } });
  // 'customer:*' on a statement that never read the customers' tables: not an access to customer 42.
  await write('decoyStray', {
    ts: at(10), statement: 'SELECT count(*) FROM products', params: undefined, tables: ['public.products'], columns: ['public.products.id'],
  }, { subjectsPossible: { customer: 'keys unknown (function)' } });
  await write('decoyNoKeys', { ts: at(11), statement: 'SELECT 42', params: undefined, tables: [], columns: [] }, { rows: 1 });
  await store.close();
});

afterAll(async () => {
  env?.cleanup();
  await server?.stop();
});

async function who(...args: string[]): Promise<SubjectAccess[]> {
  const r = await scalple(['audit', 'who-accessed', ...args, '--config', configFile, '--format', 'json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as SubjectAccess[];
}

describe('scalple audit who-accessed', () => {
  it('with --include-possible finds every access to customer 42, newest first, definite and possible, and none of the decoys', async () => {
    const rows = await who('customer', '42', '--include-possible');
    expect(rows.map((r) => r.log_id)).toEqual([id.named, id.aggregate, id.update, id.join, id.bulk, id.lookup, id.old, id.long, id.boundary]);
    const access = Object.fromEntries(rows.map((r) => [r.log_id, r.access]));
    expect(access[id.aggregate!]).toBe('possible');
    expect(rows.filter((r) => r.access === 'possible')).toHaveLength(1);
    for (const decoy of ['decoy420', 'decoyOrder42', 'decoyTotal', 'decoyEmployee', 'decoyStray', 'decoyNoKeys']) {
      expect(rows.map((r) => r.log_id), decoy).not.toContain(id[decoy]);
    }
    const possible = rows.find((r) => r.log_id === id.aggregate)!;
    expect(possible).toMatchObject({
      access: 'possible', possible_reason: 'keys unknown (aggregate): every row the statement\'s predicate matched',
      statement: "SELECT count(*) FROM customers WHERE region = 'EU'", email: CAROL.email, groups: CAROL.groups,
    });
    const upd = rows.find((r) => r.log_id === id.update)!;
    expect(upd).toMatchObject({
      access: 'definite', sub: 'app:billing-api', principal_kind: 'application', application: 'billing-api', email: null,
      acting_for: { kind: 'person', sub: BOB.sub, email: BOB.email, name: BOB.name, groups: BOB.groups }, kinds: ['UPDATE'], reason: 'upgrade requested',
    });
    expect(rows.find((r) => r.log_id === id.named)).toMatchObject({ named_query: 'get_order_by_id', params: ['363'], access: 'definite' });
  });

  it('by default lists the definite accesses and says on stderr that possible ones were left out of the JSON', async () => {
    const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', configFile, '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as SubjectAccess[];
    expect(rows.map((x) => x.log_id)).toEqual([id.named, id.update, id.join, id.bulk, id.lookup, id.old, id.long, id.boundary]);
    expect(rows.every((x) => x.access === 'definite')).toBe(true);
    expect(r.stderr).toContain('note: plus 1 possible access to customer 42 by 1 person (statements that read the table without revealing which rows), not in this output: --include-possible lists them.');
    expect(r.stderr).not.toMatch(/more/);
    // Nothing possible to say for a subject no aggregate touched.
    const emp = await scalple(['audit', 'who-accessed', 'employee', '42', '--config', configFile, '--format', 'json']);
    expect(emp.code, emp.stderr).toBe(0);
    expect((JSON.parse(emp.stdout) as SubjectAccess[]).map((x) => x.log_id)).toEqual([id.decoyEmployee]);
  });

  it('prints exact JSON objects (every documented field)', async () => {
    const rows = await who('customer', '42');
    const lookup = rows.find((r) => r.log_id === id.lookup)!;
    expect(Object.keys(lookup)).toEqual(SUBJECT_ACCESS_FIELDS);
    expect(lookup).toEqual({
      log_id: id.lookup,
      ts: at(0).toISOString(),
      completed_at: new Date(at(0).getTime() + 5).toISOString(),
      access: 'definite',
      possible_reason: null,
      subject: 'customer',
      key: '42',
      sub: ALICE.sub,
      email: ALICE.email,
      name: ALICE.name,
      groups: ['support'],
      principal_kind: 'person',
      application: null,
      acting_for: null,
      statement: 'SELECT * FROM customers WHERE id = $1',
      params: ['42'],
      named_query: null,
      kinds: ['SELECT'],
      tables: ['public.customers'],
      columns: ['public.customers.id', 'public.customers.email', 'public.customers.full_name'],
      masked_fields: { 'public.customers.email': 'email', 'public.customers.full_name': 'redact' },
      reason: 'ticket 4711',
      grants: [],
      decision: 'mask',
      rule: 'roles.support',
      policy_version: 'pv-1',
      db_role: 'app_user',
      database: 'app',
      client_addr: '127.0.0.1',
      application_name: 'psql',
      session_id: 's-1',
      rows: 1,
      sqlstate: null,
      error: null,
      duration_ms: 1.5,
      chain_id: 'main',
      seq: lookup.completion_seq - 1,
      completion_seq: lookup.completion_seq,
    });
  });

  it('prints exact CSV', async () => {
    const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', configFile, '--format', 'csv', '--since', at(0).toISOString(), '--until', at(0.5).toISOString()]);
    expect(r.code, r.stderr).toBe(0);
    const rows = await who('customer', '42', '--since', at(0).toISOString(), '--until', at(0.5).toISOString());
    expect(rows).toHaveLength(1);
    const s = rows[0]!;
    expect(r.stdout).toBe([
      SUBJECT_ACCESS_FIELDS.join(','),
      [id.lookup, at(0).toISOString(), new Date(at(0).getTime() + 5).toISOString(), 'definite', '', 'customer', '42', ALICE.sub, ALICE.email, ALICE.name,
        '"[""support""]"', 'person', '', '', 'SELECT * FROM customers WHERE id = $1', '"[""42""]"', '', '"[""SELECT""]"', '"[""public.customers""]"',
        '"[""public.customers.id"",""public.customers.email"",""public.customers.full_name""]"',
        '"{""public.customers.email"":""email"",""public.customers.full_name"":""redact""}"', 'ticket 4711', '[]', 'mask', 'roles.support', 'pv-1',
        'app_user', 'app', '127.0.0.1', 'psql', 's-1', '1', '', '', '1.5', 'main', String(s.seq), String(s.completion_seq)].join(','),
    ].join('\r\n') + '\r\n');
  });

  it('renders a table of definite accesses, then possible ones summarised per person and statement', async () => {
    const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', configFile, '--since', '30d']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('alice@example.com');
    expect(r.stdout).toContain('for bob@example.com');
    expect(r.stdout).toContain('(5 definite accesses to customer 42, newest first)');
    const [listed, summary] = r.stdout.split('POSSIBLE accesses to customer 42');
    expect(listed).not.toContain('count(*)');
    expect(summary).toMatch(/│ 1 +│ carol@example\.com +│ analytics, +│/);
    expect(summary).toContain('SELECT count(*) FROM customers WHERE region =');
    expect(summary).toContain('(1 possible access by 1 person, in 1 line of person and statement; --include-possible lists each one)');
    expect(r.stderr).not.toMatch(/note:/);

    const all = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', configFile, '--since', '30d', '--include-possible']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(/│ POSSIBLE +│/);
    expect(all.stdout).toMatch(/│ keys unknown +│/);
    expect(all.stdout).toContain('(6 accesses to customer 42: 5 definite, 1 possible');
    expect(all.stdout).not.toContain('POSSIBLE accesses to');

    // Every customer was possibly accessed by the aggregate; none definitely.
    const none = await scalple(['audit', 'who-accessed', 'customer', '31337', '--config', configFile, '--definite-only']);
    expect(none.code).toBe(0);
    expect(none.stdout).toBe('(no recorded definite access to customer 31337)\n');
    const possibleOnly = await scalple(['audit', 'who-accessed', 'customer', '31337', '--config', configFile]);
    expect(possibleOnly.code).toBe(0);
    expect(possibleOnly.stdout).toMatch(/^\(no recorded definite access to customer 31337\)\n\nPOSSIBLE accesses to customer 31337/);
  });

  it('--since/--until select by completion time; intents are found across partitions and long runs', async () => {
    expect((await who('customer', '42', '--since', '30d', '--include-possible')).map((r) => r.log_id)).toEqual([id.named, id.aggregate, id.update, id.join, id.bulk, id.lookup]);
    expect((await who('customer', '42', '--until', '2025-12-31')).map((r) => r.log_id)).toEqual([id.long, id.boundary]);
    expect(await who('customer', '42', '--since', '2030-01-01')).toEqual([]);

    // Intent in January's partition, completion in February's.
    const parts = await withClient(env.superUrl, (c) => c.query<{ record_type: string; part: string }>(
      `SELECT record_type, tableoid::regclass::text AS part FROM scalple_audit.records WHERE log_id = $1 ORDER BY seq`, [id.boundary]));
    expect(parts.rows).toEqual([{ record_type: 'intent', part: 'scalple_audit.records_202501' }, { record_type: 'completion', part: 'scalple_audit.records_202502' }]);
    const boundary = await who('customer', '42', '--since', '2025-02-01', '--until', '2025-02-02');
    expect(boundary).toHaveLength(1);
    expect(boundary[0]).toMatchObject({ log_id: id.boundary, ts: '2025-01-31T23:59:59.990Z', completed_at: '2025-02-01T00:00:00.020Z', email: BOB.email, statement: 'SELECT * FROM customers WHERE id = $1' });
    expect(boundary[0]!.seq).toBe(boundary[0]!.completion_seq - 1);

    // Intent 17 days before the completion (and before --since): found all the same.
    const long = await who('customer', '42', '--since', '2025-02-15', '--until', '2025-03-01');
    expect(long).toHaveLength(1);
    expect(long[0]).toMatchObject({ log_id: id.long, ts: '2025-02-03T10:00:00.000Z', email: CAROL.email, statement: expect.stringContaining('pg_sleep') });
  });

  it('--definite-only leaves out possible accesses, even their summary; other subjects and keys are separate', async () => {
    const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--since', '30d', '--definite-only', '--config', configFile, '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as SubjectAccess[]).map((x) => x.log_id)).toEqual([id.named, id.update, id.join, id.bulk, id.lookup]);
    expect(r.stderr).toBe('');
    expect((await who('customer', '420')).map((r) => r.log_id)).toEqual([id.decoy420, id.bulk]);
    expect((await who('customer', '420', '--include-possible')).map((r) => r.log_id)).toEqual([id.decoy420, id.aggregate, id.bulk]);
    // A completion holding both the key and 'employee:*' is a definite access, not also a possible one.
    expect((await who('employee', '42', '--include-possible')).map((r) => [r.log_id, r.access])).toEqual([[id.decoyEmployee, 'definite']]);
  });

  it('--limit lists the newest accesses and says on stderr how many more there are', async () => {
    const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--limit', '3', '--config', configFile, '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as SubjectAccess[];
    expect(rows.map((x) => x.log_id)).toEqual([id.named, id.update, id.join]);
    expect(r.stderr).toContain(`note: 5 more definite accesses to customer 42 (at or before ${rows[2]!.completed_at.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}) not shown: --limit 8 includes them (or narrow with --since/--until).\n`);
    // Across partitions and years: the 7 newest, then the last one.
    expect((await who('customer', '42', '--limit', '7')).map((x) => x.log_id)).toEqual([id.named, id.update, id.join, id.bulk, id.lookup, id.old, id.long]);
    const merged = await scalple(['audit', 'who-accessed', 'customer', '42', '--limit', '2', '--include-possible', '--config', configFile, '--format', 'csv']);
    expect(merged.code, merged.stderr).toBe(0);
    expect(merged.stdout.trim().split('\r\n').slice(1).map((l) => l.split(',')[0])).toEqual([id.named, id.aggregate]);
    expect(merged.stderr).toMatch(/^note: 7 more accesses to customer 42 \(at or before .+\) not shown: --limit 9 includes them/);
    for (const bad of ['0', '-1', 'x', '1.5']) {
      const u = await scalple(['audit', 'who-accessed', 'customer', '42', '--limit', bad, '--config', configFile]);
      expect(u.code, bad).toBe(2);
    }
    const both = await scalple(['audit', 'who-accessed', 'customer', '42', '--include-possible', '--definite-only', '--config', configFile]);
    expect(both.code).toBe(2);
    expect(both.stderr).toBe('error: --include-possible and --definite-only exclude each other.\n');
  });

  it('refuses an unknown subject with exit 2 naming the configured ones, and a bad key or time', async () => {
    const r = await scalple(['audit', 'who-accessed', 'customers', '42', '--config', configFile]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: unknown subject "customers": the config defines "customer", "employee".\n');
    expect(r.stdout).toBe('');
    const star = await scalple(['audit', 'who-accessed', 'customer', '*', '--config', configFile]);
    expect(star.code).toBe(2);
    expect(star.stderr).toMatch(/^error: KEY must be/);
    const since = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', configFile, '--since', 'last week']);
    expect(since.code).toBe(2);
    expect(since.stderr).toMatch(/^error: --since must be an ISO date/);
    const missing = await scalple(['audit', 'who-accessed', 'customer', '--config', configFile]);
    expect(missing.code).toBe(2);
  });

  it('records every audit read as an audit_read event on its own chain, which verifies', async () => {
    const before = await readEvents();
    const [a, b] = await Promise.all([
      scalple(['audit', 'who-accessed', 'customer', '42', '--config', configFile, '--format', 'json', '--since', '30d']),
      scalple(['audit', 'who-accessed', 'customer', '420', '--config', configFile, '--format', 'csv']),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const after = await readEvents();
    expect(after.length - before.length).toBe(2);
    const mine = after.slice(before.length);
    expect(mine.every((e) => e.chain_id === 'audit-reads' && e.record_type === 'event' && e.event === 'audit_read')).toBe(true);
    const byKey = Object.fromEntries(mine.map((e) => [(e.detail.arguments as { key: string }).key, e.detail]));
    expect(byKey['42']).toEqual({
      command: 'who-accessed',
      arguments: { subject: 'customer', key: '42', since: expect.stringMatching(/^\d{4}-/), until: null, format: 'json', definite_only: false, include_possible: false, limit: 1000 },
      results: 6,
      by: { via: 'config', os_user: os.userInfo().username, sudo_user: process.env.SUDO_USER ?? null, hostname: os.hostname(), pid: expect.any(Number) },
    });
    expect(byKey['420']).toMatchObject({ command: 'who-accessed', arguments: { key: '420', format: 'csv' }, results: 3 });
    // The reads never take the proxy's chain, and the chains verify.
    const v = await scalple(['audit', 'verify', '--config', configFile, '--format', 'json']);
    expect(v.code, v.stderr + v.stdout).toBe(0);
    const report = JSON.parse(v.stdout) as { ok: boolean; chains: { chainId: string }[] };
    expect(report.chains.map((c) => c.chainId).sort()).toEqual(['audit-reads', 'main']);
  });

  it('shows nothing when the read cannot be recorded (fail closed)', async () => {
    // The writer role loses INSERT on the records: the read must not be shown.
    await withClient(env.adminUrl, (c) => c.query('REVOKE INSERT ON scalple_audit.records FROM scalple_writer'));
    try {
      const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', configFile, '--format', 'json']);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/this audit read could not be recorded, so it was not shown/);
    } finally {
      await withClient(env.adminUrl, (c) => c.query('GRANT INSERT ON scalple_audit.records TO scalple_writer'));
    }
  });
});

async function readEvents(): Promise<{ chain_id: string; record_type: string; event: string; detail: Record<string, unknown> }[]> {
  return withClient(env.superUrl, async (c) => (await c.query(
    `SELECT chain_id, record_type, event, detail FROM scalple_audit.records WHERE event = 'audit_read' ORDER BY chain_id, seq`)).rows);
}
