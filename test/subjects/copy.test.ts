// COPY … TO STDOUT as a definite access: the proxy reads the subject keys from the CopyData rows it
// relays (text and CSV, HEADER, custom DELIMITER/QUOTE/ESCAPE/NULL, rows split across messages and
// TCP chunks), exactly — decoys that look like 42 in other columns are not customer 42 — without
// changing a byte the client receives. Binary COPY, or a COPY without the key, stays possible.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { demoPolicy } from '../../src/demo/demo.ts';
import { Back, Front, Writer, bindMessage, parseMessage, syncMessage } from '../../src/proxy/protocol.ts';
import { scalple } from '../audit/cli-run.ts';
import type { SubjectAccess } from '../../src/audit/who-accessed.ts';
import { psql } from '../support/psql.ts';

let stack: Stack;
const SUBJECTS = { customer: { table: 'public.customers', key: 'id', via: ['public.orders.customer_id', 'public.payments.customer_id'] } };
const HUGE = 300_000;

beforeAll(async () => {
  const policy = demoPolicy('mask-key-for-copy-tests-0123456789') as Record<string, unknown>;
  stack = await startStack({ poolMode: 'transaction', config: { ...policy, subjects: SUBJECTS } });
  // 20,000 more customers (a COPY of several megabytes: many chunks, messages cut between them),
  // a row far larger than a chunk, and rows whose other columns look like customer 42.
  await stack.sql(`INSERT INTO customers (id, email, full_name, region)
    SELECT g, 'c' || g || '@example.org', 'Customer ' || g, CASE WHEN g % 3 = 0 THEN 'EU' ELSE 'US' END FROM generate_series(1001, 21000) g`);
  await stack.sql(`INSERT INTO customers (id, email, full_name, region, iban) VALUES
    (30001, '42', E'x\\n42\\t42,42;"42"|\\\\42\\r\\n42', 'US', NULL),
    (30002, '"42",42', repeat('y', ${HUGE}) || E'\\n42', 'US', '42'),
    (30003, E'42\\n', E'\\\\N', 'US', NULL)`);
  await stack.sql('INSERT INTO orders (id, customer_id, total) VALUES (5001, 7, 42)');
});
afterAll(async () => {
  await stack?.stop();
});


/** Runs `sql` through the proxy as carol (dba) and directly as the superuser: the output must be the same bytes. */
async function copyThroughProxy(sql: string): Promise<Buffer> {
  const t = (await stack.token('carol@example.com')).accessToken;
  const via = await psql(`host=127.0.0.1 port=${stack.proxyPort} dbname=app user=carol`, t, sql);
  expect(via.stderr).toBe('');
  expect(via.code).toBe(0);
  const u = new URL(stack.pg.superUrl('app'));
  const direct = await psql(`host=127.0.0.1 port=${u.port} dbname=app user=${u.username}`, decodeURIComponent(u.password), sql);
  expect(direct.code, direct.stderr).toBe(0);
  expect(via.stdout.equals(direct.stdout), 'the client receives exactly what PostgreSQL sent').toBe(true);
  return via.stdout;
}

/** Subject keys and possible subjects recorded for each execution of exactly `statement`. */
async function recorded(statement: string): Promise<{ keys: string[]; possible: Record<string, string> | null }[]> {
  await stack.flushAudit();
  const r = await stack.sql<{ subject_keys: string[] | null; detail: { subjects_possible?: Record<string, string> } | null }>(
    `SELECT c.subject_keys, c.detail FROM scalple_audit.records i JOIN scalple_audit.records c ON c.log_id = i.log_id AND c.record_type = 'completion'
      WHERE i.record_type = 'intent' AND i.statement = $1 ORDER BY i.seq`,
    [statement],
  );
  return r.rows.map((x) => ({ keys: [...(x.subject_keys ?? [])].sort(), possible: x.detail?.subjects_possible ?? null }));
}

async function ids(where: string): Promise<string[]> {
  const r = await stack.sql<{ id: string }>(`SELECT id::text AS id FROM customers WHERE ${where}`);
  return r.rows.map((x) => `customer:${x.id}`).sort();
}

describe('COPY TO STDOUT records definite subject keys', () => {
  it('COPY customers TO STDOUT: every key exactly, across 20,000 rows and a row larger than a chunk', async () => {
    const sql = 'COPY customers TO STDOUT';
    const out = await copyThroughProxy(sql);
    expect(out.length).toBeGreaterThan(HUGE + 1_000_000);
    const [rec] = await recorded(sql);
    expect(rec!.keys).toHaveLength(20_503);
    expect(rec!.keys).toEqual(await ids('true'));
    expect(rec!.keys).toContain('customer:42');
    expect(rec!.possible).toBeNull();
  });

  it('COPY (SELECT id, email … WHERE region = \'EU\') TO STDOUT CSV HEADER', async () => {
    const sql = "COPY (SELECT id, email FROM customers WHERE region = 'EU') TO STDOUT CSV HEADER";
    const out = await copyThroughProxy(sql);
    expect(out.toString().split('\n')[0]).toBe('id,email');
    const [rec] = await recorded(sql);
    expect(rec!.keys).toEqual(await ids("region = 'EU'"));
    expect(rec!.keys).toContain('customer:42');
    expect(rec!.possible).toBeNull();
  });

  it('custom DELIMITER, QUOTE, ESCAPE, NULL, FORCE_QUOTE and HEADER, key not first, decoys in every other column', async () => {
    const statements = [
      "COPY (SELECT full_name, email, id, iban FROM customers WHERE id IN (30001, 30002, 30003, 42) ORDER BY id) TO STDOUT (FORMAT csv, DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'NULL', FORCE_QUOTE *, HEADER)",
      "COPY (SELECT full_name, email, iban, id FROM customers WHERE id IN (30001, 30002, 30003)) TO STDOUT WITH DELIMITER '|' NULL 'nil' HEADER",
      "COPY (SELECT email, full_name, id FROM customers WHERE id IN (30001, 30002, 30003)) TO STDOUT WITH CSV QUOTE '\"' NULL ''",
      "COPY (SELECT full_name, iban, id FROM customers WHERE id IN (30001, 30003)) TO STDOUT (FORMAT text, HEADER on)",
    ];
    const expected = [['customer:30001', 'customer:30002', 'customer:30003', 'customer:42'], ['customer:30001', 'customer:30002', 'customer:30003'], ['customer:30001', 'customer:30002', 'customer:30003'], ['customer:30001', 'customer:30003']];
    for (const [i, sql] of statements.entries()) {
      const out = await copyThroughProxy(sql);
      expect(out.toString()).toMatch(/42/);
      const [rec] = await recorded(sql);
      expect(rec, sql).toEqual({ keys: expected[i], possible: null });
    }
  });

  it('a COPY of orders with a decoy total = 42 is not customer 42; a COPY without the key is possible', async () => {
    const withKey = 'COPY (SELECT id, total, customer_id FROM orders WHERE total = 42 OR id = 42) TO STDOUT';
    const out = await copyThroughProxy(withKey);
    expect(out.toString().split('\n').sort()).toEqual(['', '42\t546.99\t295', '5001\t42.00\t7']);
    expect(await recorded(withKey)).toEqual([{ keys: ['customer:295', 'customer:7'], possible: null }]);
    const whole = 'COPY orders TO STDOUT (FORMAT csv)';
    await copyThroughProxy(whole);
    const [all] = await recorded(whole);
    const viaKeys = await stack.sql<{ k: string }>("SELECT DISTINCT 'customer:' || customer_id AS k FROM orders");
    expect(all!.keys).toEqual(viaKeys.rows.map((x) => x.k).sort());
    const without = 'COPY (SELECT id, total FROM orders WHERE total = 42) TO STDOUT';
    await copyThroughProxy(without);
    const [w] = await recorded(without);
    expect(w!.keys).toEqual(['customer:*']);
    expect(w!.possible).toEqual({ customer: expect.stringMatching(/COPY output without the key/) });
  });

  it('binary COPY, and a column list without the key, stay possible', async () => {
    for (const [sql, why] of [['COPY customers TO STDOUT (FORMAT binary)', /binary COPY/], ['COPY customers (email, region) TO STDOUT', /without the key/]] as const) {
      await copyThroughProxy(sql);
      const [rec] = await recorded(sql);
      expect(rec!.keys, sql).toEqual(['customer:*']);
      expect(rec!.possible, sql).toEqual({ customer: expect.stringMatching(why) });
    }
  });

  it('COPY through the extended protocol', async () => {
    const sql = 'COPY (SELECT id, email FROM customers WHERE id IN (41, 42)) TO STDOUT';
    const w = await stack.wire('carol@example.com');
    w.send(
      parseMessage('', sql, Buffer.from([0, 0])),
      bindMessage('', '', Buffer.from([0, 0, 0, 0, 0, 0])),
      new Writer().cstring('').int32(0).message(Front.Execute),
      syncMessage,
    );
    const frames = await w.readUntil((f) => f.type === Back.ReadyForQuery);
    w.close();
    const rows = frames.filter((f) => f.type === Back.CopyData).map((f) => f.body.toString());
    expect(rows.sort()).toEqual(['41\tcustomer41@example.org\n', '42\tcustomer42@example.org\n']);
    expect(await recorded(sql)).toEqual([{ keys: ['customer:41', 'customer:42'], possible: null }]);
  });

  it('who-accessed customer 42 lists the COPYs as definite and none of the decoys', async () => {
    await stack.flushAudit();
    const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', stack.configFile, '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as SubjectAccess[];
    const statements = rows.map((x) => x.statement ?? '');
    expect(statements).toContain('COPY customers TO STDOUT');
    expect(statements).toContain("COPY (SELECT id, email FROM customers WHERE region = 'EU') TO STDOUT CSV HEADER");
    expect(statements.filter((s) => /30001/.test(s))).toHaveLength(1); // only the one that returned customer 42
    expect(statements).not.toContain('COPY (SELECT id, total, customer_id FROM orders WHERE total = 42 OR id = 42) TO STDOUT');
    for (const x of rows) expect(x.access).toBe('definite');
  });
});
