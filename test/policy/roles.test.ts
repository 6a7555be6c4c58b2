// Roles at work through the pooler: named queries (the proxy's own SQL surface), named-only roles,
// required reasons, read-only enforced by PostgreSQL itself, and observe-only mode.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { demoPolicy } from '../../src/demo/demo.ts';

let stack: Stack;
const policy = demoPolicy('mask-key-for-the-role-tests-0123456789') as { roles: Record<string, object>; named_queries: Record<string, object> };

beforeAll(async () => {
  stack = await startStack({
    poolMode: 'transaction',
    readonlyUpstream: true,
    config: {
      ...policy,
      roles: {
        ...policy.roles,
        support: { groups: ['support'], require_reason: true },
        auditor: { groups: ['auditor'], named_only: true },
      },
      named_queries: {
        ...policy.named_queries,
        orders_of_customer: { description: 'Orders of one customer', sql: 'SELECT id, total, status FROM orders WHERE customer_id = $1 ORDER BY id', params: [{ name: 'customer_id', type: 'bigint' }], roles: ['auditor', 'billing'] },
      },
    },
  });
  await stack.sql(`CREATE FUNCTION public.sneaky_write() RETURNS int LANGUAGE sql AS 'UPDATE orders SET status = status WHERE id = 1 RETURNING 1'; GRANT EXECUTE ON FUNCTION public.sneaky_write() TO app_readonly, app_user`);
});
afterAll(async () => {
  await stack?.stop();
});

describe('named queries', () => {
  it('lists only what the caller may run, and runs it with typed, audited parameters', async () => {
    const c = await stack.connect('dave@example.com');
    const list = await c.query('SELECT * FROM scalple.named_queries()');
    expect(list.rows.map((r) => r.name)).toEqual(['orders_of_customer']);
    expect(JSON.parse(list.rows[0].params)).toEqual([{ name: 'customer_id', type: 'bigint' }]);
    const r = await c.query("SELECT * FROM scalple.run('orders_of_customer', '42')");
    expect(r.rows.length).toBeGreaterThan(0);
    expect(r.fields.map((f) => f.name)).toEqual(['id', 'total', 'status']);
    await expect(c.query("SELECT * FROM scalple.run('orders_of_customer', '42; drop table orders')")).rejects.toMatchObject({ code: '22P02', message: expect.stringMatching(/customer_id/) });
    await expect(c.query("SELECT * FROM scalple.run('get_order_by_id', '7')")).rejects.toMatchObject({ code: '42501' });
    // named_only: ad-hoc SQL is refused, naming the rule.
    await expect(c.query('SELECT id FROM orders LIMIT 1')).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/named queries only/) });
    await c.end();
    await stack.flushAudit();
    const rec = await stack.sql("SELECT named_query, params, email FROM scalple_audit.records WHERE record_type = 'intent' AND named_query IS NOT NULL");
    expect(rec.rows).toEqual([{ named_query: 'orders_of_customer', params: ['42'], email: 'dave@example.com' }]);
  });

  it('masks named query results like any statement, and says what was masked', async () => {
    const c = await stack.connect('bob@example.com');
    const r = await c.query("SELECT * FROM scalple.run('get_order_by_id', '7')");
    expect(r.rows[0].email).toMatch(/^c\*\*\*@\*\*\*\.org$/);
    const masked = await c.query('SELECT * FROM scalple.last_masked()');
    expect(masked.rows).toEqual([{ column_name: 'email', source: 'public.customers.email', mask: 'email' }]);
    await c.end();
  });
});

describe('require_reason', () => {
  it('refuses PII access without a reason, and records the reason when given', async () => {
    const c = await stack.connect('alice@example.com');
    await expect(c.query('SELECT email FROM customers WHERE id = 3')).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/reason is required/) });
    expect((await c.query('SELECT count(*) FROM orders')).rows[0].count).toBe('2000');
    await c.query("SET scalple.reason = 'ticket SUP-77'");
    const r = await c.query('SELECT email FROM customers WHERE id = 3');
    expect(r.rows[0].email).toBe('c***@***.org');
    await c.end();
    await stack.flushAudit();
    const rec = await stack.sql("SELECT reason, decision FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE 'SELECT email FROM customers WHERE id = %' ORDER BY seq");
    expect(rec.rows).toEqual([{ reason: null, decision: 'deny' }, { reason: 'ticket SUP-77', decision: 'mask' }]);
  });
});

describe('read-only roles', () => {
  for (const mode of ['transaction', 'none'] as const) {
    it(`are enforced by PostgreSQL itself (${mode === 'transaction' ? 'read-only upstream role behind PgBouncer' : 'read-only session straight to PostgreSQL'})`, async () => {
      const s = await startStack({
        poolMode: mode,
        readonlyUpstream: mode === 'transaction',
        config: { roles: { reader: { groups: ['support'], unmask: ['*'] }, dba: { groups: ['dba'], unmask: ['*'], write: true } } },
      });
      try {
        await s.sql(`CREATE FUNCTION public.sneaky_write() RETURNS int LANGUAGE sql AS 'UPDATE orders SET status = status WHERE id = 1 RETURNING 1'; GRANT EXECUTE ON FUNCTION public.sneaky_write() TO PUBLIC`);
        const c = await s.connect('alice@example.com');
        // The analysis cannot see into the function: PostgreSQL refuses the write.
        await expect(c.query('SELECT public.sneaky_write()')).rejects.toMatchObject({ code: '25006' });
        // What the analysis can see is refused before it leaves the proxy.
        await expect(c.query('WITH x AS (UPDATE orders SET status = status WHERE id = 1 RETURNING id) SELECT * FROM x')).rejects.toMatchObject({ code: '42501' });
        await expect(c.query('BEGIN READ WRITE')).rejects.toMatchObject({ code: '42501' });
        expect((await c.query('SELECT count(*) AS n FROM orders')).rows[0].n).toBe('2000');
        await c.end();
        const d = await s.connect('carol@example.com');
        expect((await d.query('SELECT public.sneaky_write() AS w')).rows[0].w).toBe(1);
        await d.end();
      } finally {
        await s.stop();
      }
    });
  }
  it('the user function itself is refused to roles with masked columns (it may read anything)', async () => {
    const c = await stack.connect('bob@example.com');
    await expect(c.query('SELECT public.sneaky_write()')).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/not a built-in function/) });
    await c.end();
  });
});
