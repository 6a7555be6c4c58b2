// Which customers a statement returned or changed, recorded compactly on the completion record:
// a direct key lookup, a bulk read without the key column (hidden key column, stripped), a join
// through orders.customer_id, an UPDATE, a named query, an extended-protocol prepared statement
// through PgBouncer — and none of the decoys that merely look like 42. (COPY: copy.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { demoPolicy } from '../../src/demo/demo.ts';

let stack: Stack;
const SUBJECTS = { customer: { table: 'public.customers', key: 'id', via: ['public.orders.customer_id', 'public.payments.customer_id'] } };

beforeAll(async () => {
  const policy = demoPolicy('mask-key-for-subject-tests-0123456789') as Record<string, unknown>;
  stack = await startStack({ poolMode: 'transaction', config: { ...policy, subjects: SUBJECTS } });
});
afterAll(async () => {
  await stack?.stop();
});

/** The subject keys recorded for the statement whose text matches `pattern`. */
async function keysOf(pattern: string): Promise<string[][]> {
  await stack.flushAudit();
  const r = await stack.sql<{ subject_keys: string[] | null }>(
    `SELECT c.subject_keys FROM scalple_audit.records i JOIN scalple_audit.records c ON c.log_id = i.log_id AND c.record_type = 'completion'
      WHERE i.record_type = 'intent' AND i.statement LIKE $1 ORDER BY i.seq`,
    [pattern],
  );
  return r.rows.map((x) => x.subject_keys ?? []);
}

describe('data subjects', () => {
  it('records the keys of a direct lookup, and of a bulk read without the key column, which the client never sees', async () => {
    const c = await stack.connect('carol@example.com');
    await c.query('SELECT * FROM customers WHERE id = 42');
    const bulk = await c.query("SELECT email FROM customers WHERE region = 'EU' AND id < 60");
    expect(bulk.fields.map((f) => f.name)).toEqual(['email']);
    expect(Object.keys(bulk.rows[0])).toEqual(['email']);
    expect(bulk.rows.length).toBe(19);
    await c.end();
    expect(await keysOf('SELECT * FROM customers WHERE id = 42')).toEqual([['customer:42']]);
    const [eu] = await keysOf("SELECT email FROM customers WHERE region = 'EU' AND id < 60");
    expect(eu).toContain('customer:42');
    expect(eu).toHaveLength(19);
  });

  it('follows a join through orders.customer_id, an UPDATE, and a prepared statement through PgBouncer', async () => {
    const c = await stack.connect('carol@example.com');
    await c.query('SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 363');
    const upd = await c.query("UPDATE customers SET plan_tier = 'pro' WHERE id = 42");
    expect(upd.rowCount).toBe(1);
    expect(upd.rows).toEqual([]);
    for (let i = 0; i < 3; i++) {
      const r = await c.query({ name: 'by_id', text: 'SELECT email, region FROM customers WHERE id = $1', values: [42] });
      expect(Object.keys(r.rows[0])).toEqual(['email', 'region']);
    }
    await c.end();
    expect(await keysOf('SELECT o.id, o.total FROM orders o JOIN customers c%')).toEqual([['customer:42']]);
    expect(await keysOf("UPDATE customers SET plan_tier = 'pro' WHERE id = 42")).toEqual([['customer:42']]);
    expect(await keysOf('SELECT email, region FROM customers WHERE id = $1')).toEqual([['customer:42'], ['customer:42'], ['customer:42']]);
  });

  it('records named queries, and an aggregate as a possible access', async () => {
    const b = await stack.connect('bob@example.com');
    await b.query("SELECT * FROM scalple.run('get_order_by_id', '363')");
    await b.end();
    expect(await keysOf('SELECT o.id, o.total, c.email FROM orders o JOIN customers c%')).toEqual([['customer:42']]);
    const c = await stack.connect('carol@example.com');
    await c.query("SELECT count(*) FROM customers WHERE region = 'EU'");
    await c.end();
    expect(await keysOf("SELECT count(*) FROM customers WHERE region = 'EU'")).toEqual([['customer:*']]);
  });

  it('does not count decoys that merely look like customer 42', async () => {
    const c = await stack.connect('carol@example.com');
    await c.query('SELECT id, total FROM orders WHERE total BETWEEN 42 AND 43');
    await c.query('SELECT * FROM customers WHERE id = 420');
    await c.query('SELECT * FROM orders WHERE id = 42');
    await c.end();
    for (const pattern of ['SELECT id, total FROM orders WHERE total BETWEEN 42 AND 43', 'SELECT * FROM customers WHERE id = 420', 'SELECT * FROM orders WHERE id = 42']) {
      for (const keys of await keysOf(pattern)) expect(keys, pattern).not.toContain('customer:42');
    }
    expect(await keysOf('SELECT * FROM orders WHERE id = 42')).toEqual([['customer:295']]);
  });

  it('answers who_accessed through the proxy for audit: true roles, records the read, and refuses others', async () => {
    const a = await stack.connect('alice@example.com');
    await expect(a.query("SELECT * FROM scalple.who_accessed('customer', '42')")).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/audit: true/) });
    await a.end();
    await stack.flushAudit();
    const c = await stack.connect('carol@example.com');
    // Possible accesses are summarised in a NOTICE by default, as the CLI does; possible => 'include' lists them.
    const r = await c.query("SELECT * FROM scalple.who_accessed('customer', '42', '30d', possible => 'include')");
    await c.end();
    const statements = r.rows.map((x) => x.statement as string);
    expect(statements).toContain('SELECT * FROM customers WHERE id = 42');
    expect(statements).not.toContain('SELECT * FROM customers WHERE id = 420');
    expect(r.rows.find((x) => x.statement === "SELECT count(*) FROM customers WHERE region = 'EU'")?.access).toBe('possible');
    const reads = await stack.sql("SELECT email, detail->>'command' AS command FROM scalple_audit.records WHERE event = 'audit_read'");
    expect(reads.rows).toEqual([{ email: 'carol@example.com', command: 'who-accessed' }]);
  });
});
