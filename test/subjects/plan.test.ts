// planSubjects against the sample schema of the src/sql tests (customers 1–3, orders 1–4 of
// customers 1, 1, 2, 3, views eu_customers and eu_contacts over customers): every read of the
// subject's table or of a `via` table must be captured by its own key — from that read, not
// another — or get a hidden key column (RETURNING for writes), or the access is possible.
// Each statement runs on the real server as the proxy would send it (hidden columns included),
// and the keys are read from its rows as the proxy reads them.
import { describe, expect, it } from 'vitest';
import { analyse, resolveAccess } from '../../src/sql/index.ts';
import { planSubjects, type SubjectPlan } from '../../src/proxy/subject-plan.ts';
import type { SubjectDef } from '../../src/policy/subjects.ts';
import { useCatalogDb } from '../sql/fixture.ts';

const env = useCatalogDb();
const SUBJECTS: SubjectDef[] = [{ name: 'customer', table: 'public.customers', key: 'id', via: ['public.orders.customer_id', 'public.payments.customer_id'] }];

function plan(sql: string): SubjectPlan {
  const a = analyse(sql);
  const p = planSubjects(a, resolveAccess(a, env.catalog), SUBJECTS);
  if (!p) throw new Error(`no subject plan for ${sql}`);
  return p;
}

/** What the proxy would record: keys read from the rows of the statement as sent upstream, and the possible subjects. */
async function recorded(sql: string): Promise<{ keys: string[]; possible: string[]; rewritten: boolean }> {
  const p = plan(sql);
  const keys = new Set<string>();
  if (!p.copy) {
    await env.client.query('BEGIN');
    try {
      const r = await env.client.query({ text: p.upstreamSql ?? sql, rowMode: 'array' });
      for (const row of r.rows as unknown[][]) {
        const firstHidden = row.length - p.hidden.length;
        row.forEach((v, i) => {
          const s = i >= firstHidden ? p.hidden[i - firstHidden] : p.capture.get(i);
          if (s && v !== null) keys.add(`${s}:${String(v)}`);
        });
      }
    } finally {
      await env.client.query('ROLLBACK');
    }
  }
  return { keys: [...keys].sort(), possible: [...p.possible.keys()], rewritten: p.upstreamSql !== undefined };
}

describe('one read of the subject: definite, as before', () => {
  it('a key lookup, a bulk read with a hidden key, a via column, a join through customer_id, a write', async () => {
    expect(await recorded('SELECT * FROM customers WHERE id = 2')).toEqual({ keys: ['customer:2'], possible: [], rewritten: false });
    expect(await recorded("SELECT email FROM customers WHERE region = 'EU'")).toEqual({ keys: ['customer:1', 'customer:2'], possible: [], rewritten: true });
    expect(await recorded('SELECT * FROM orders WHERE id = 3')).toEqual({ keys: ['customer:2'], possible: [], rewritten: false });
    expect(await recorded('SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 3')).toEqual({ keys: ['customer:2'], possible: [], rewritten: true });
    expect(await recorded('SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 4')).toEqual({ keys: ['customer:3'], possible: [], rewritten: true });
    expect(await recorded("UPDATE customers SET region = 'US' WHERE id = 2")).toEqual({ keys: ['customer:2'], possible: [], rewritten: true });
    expect(await recorded("UPDATE public.customers SET region = 'US' WHERE id = 2")).toEqual({ keys: ['customer:2'], possible: [], rewritten: true });
    expect(await recorded("INSERT INTO public.customers (id, email) VALUES (9, 'x@example.com')")).toEqual({ keys: ['customer:9'], possible: [], rewritten: true });
    expect(await recorded('DELETE FROM ONLY public.orders WHERE id = 4')).toEqual({ keys: ['customer:3'], possible: [], rewritten: true });
    expect(await recorded('SELECT x.id, x.email FROM (SELECT id, email FROM customers WHERE id = 3) x')).toEqual({ keys: ['customer:3'], possible: [], rewritten: false });
    expect(plan('COPY (SELECT id, email FROM customers) TO STDOUT').possible.size).toBe(0);
    expect(plan('COPY customers TO STDOUT').possible.size).toBe(0);
  });

  it('hidden columns are quoted, and placed after `IS DISTINCT FROM` and into an empty select list', async () => {
    expect(plan('SELECT email FROM customers AS "user" WHERE "user".id = 1').upstreamSql).toBe('SELECT email , "user"."id" AS __scalple_subject_0 FROM customers AS "user" WHERE "user".id = 1');
    expect(await recorded('SELECT region IS DISTINCT FROM email FROM customers WHERE id = 1')).toMatchObject({ keys: ['customer:1'], possible: [] });
    expect(await recorded('SELECT FROM customers WHERE id = 3')).toMatchObject({ keys: ['customer:3'], possible: [] });
  });
});

describe('several reads: each captured by its own key, or possible', () => {
  it('a self-join, a LEFT JOIN with a NULL key, and a join beside orders.customer_id record the customer whose row came back', async () => {
    expect(await recorded('SELECT c1.id, c2.email FROM customers c1, customers c2 WHERE c1.id = 1 AND c2.id = 3')).toEqual({ keys: ['customer:1', 'customer:3'], possible: [], rewritten: true });
    expect(await recorded('SELECT c1.id, c2.email FROM customers c2 LEFT JOIN customers c1 ON false WHERE c2.id = 3')).toEqual({ keys: ['customer:3'], possible: [], rewritten: true });
    expect(await recorded('SELECT o.customer_id, c.email FROM orders o JOIN customers c ON c.id = 3 WHERE o.id = 1')).toEqual({ keys: ['customer:1', 'customer:3'], possible: [], rewritten: true });
    expect(await recorded('SELECT * FROM customers c1 JOIN customers c2 ON c2.id = 3 WHERE c1.id = 2')).toEqual({ keys: ['customer:2', 'customer:3'], possible: [], rewritten: true });
  });

  it('writes: UPDATE … FROM another read of customers returns both keys', async () => {
    expect(await recorded('UPDATE customers c SET email = c2.email FROM customers c2 WHERE c.id = 1 AND c2.id = 3')).toEqual({ keys: ['customer:1', 'customer:3'], possible: [], rewritten: true });
    expect(await recorded('DELETE FROM payments p USING customers c WHERE c.id = 3 AND p.id = 1')).toEqual({ keys: ['customer:1', 'customer:3'], possible: [], rewritten: true });
  });

  it('a read the proxy cannot give a key column (subquery, WITH, view, aliased join, renamed columns) is possible, with the keys it has', async () => {
    const cases: [string, string[], RegExp][] = [
      ['SELECT c.id, (SELECT email FROM customers WHERE id = 3) FROM customers c WHERE c.id = 1', ['customer:1'], /read 2 times/],
      ['SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM customers x WHERE x.id = 3 AND x.ssn LIKE \'5%\') AND id = 1', ['customer:1'], /read 2 times/],
      ['WITH x AS (SELECT * FROM customers) SELECT a.id, b.email FROM x a, x b WHERE a.id = 1 AND b.id = 3', ['customer:1'], /WITH query x, which the statement reads 2 times/],
      ['SELECT c.id, v.email FROM customers c, eu_customers v WHERE c.id = 3 AND v.id = 1', ['customer:3'], /read inside a view/],
      ['SELECT c.id, v.contact FROM customers c, eu_contacts v WHERE c.id = 3 AND v.customer_id = 1', ['customer:3'], /read inside a view/],
      ['SELECT id, email FROM customers WHERE id = 1 UNION ALL SELECT id, email FROM customers WHERE id = 3', ['customer:1', 'customer:3'], /read 2 times/],
      ['SELECT o.customer_id, o.total FROM orders o WHERE o.id = 4 AND EXISTS (SELECT 1 FROM customers WHERE id = 1)', ['customer:3'], /read 2 times/],
    ];
    for (const [sql, keys, why] of cases) {
      const r = await recorded(sql);
      expect(r.keys, sql).toEqual(keys);
      expect(r.possible, sql).toEqual(['customer']);
      expect(plan(sql).possible.get('customer'), sql).toMatch(why);
    }
    // An aliased join hides c and o (PostgreSQL would reject c.id); renamed columns have no `id`.
    const joined = await recorded('SELECT j.email FROM (customers c JOIN orders o ON o.customer_id = c.id) j');
    expect(joined).toEqual({ keys: [], possible: ['customer'], rewritten: false });
    const renamed = plan('SELECT c.b FROM customers AS c(a, b) WHERE c.a = 1');
    expect(renamed.upstreamSql).toBeUndefined();
    expect(renamed.possible.get('customer')).toMatch(/column aliases/);
  });

  it('INSERT … SELECT: the inserted rows\' keys, and the read of customers possible', async () => {
    expect(await recorded('INSERT INTO orders (customer_id, total) SELECT id, 1 FROM customers WHERE id = 3')).toEqual({ keys: ['customer:3'], possible: ['customer'], rewritten: true });
  });

  it('COPY of a self-join or of orders JOIN customers USING (id): keys read, and the access possible', () => {
    const self = plan('COPY (SELECT c1.id, c2.email FROM customers c1, customers c2 WHERE c1.id = 1 AND c2.id = 3) TO STDOUT');
    expect(self.copy).toBeDefined();
    expect([...self.capture.values()]).toEqual(['customer']);
    expect(self.possible.get('customer')).toMatch(/read 2 times/);
    const using = plan('COPY (SELECT * FROM orders o JOIN customers c USING (id) WHERE o.id = 3) TO STDOUT (FORMAT csv)');
    expect(using.possible.get('customer')).toMatch(/read 2 times/);
    const cte = plan('COPY (WITH x AS (SELECT id, email FROM customers) SELECT a.id, b.email FROM x a, x b) TO STDOUT');
    expect(cte.possible.get('customer')).toMatch(/WITH query x/);
    const view = plan('COPY (SELECT c.id, v.email FROM customers c, eu_customers v) TO STDOUT');
    expect(view.possible.get('customer')).toMatch(/inside a view/);
  });

  it('values from other rows than the keys returned: window functions and grouping sets are possible', async () => {
    for (const sql of [
      'SELECT id, lag(email) OVER (ORDER BY id) FROM customers ORDER BY id OFFSET 2',
      'SELECT x.id, x.prev FROM (SELECT id, lag(email) OVER (ORDER BY id) AS prev FROM customers) x WHERE x.id = 3',
      'SELECT id, string_agg(email, \',\') FROM customers GROUP BY ROLLUP (id) HAVING id IS NULL OR id = 1',
    ]) {
      const r = await recorded(sql);
      expect(r.possible, sql).toEqual(['customer']);
    }
    expect(plan('COPY (SELECT id, lag(email) OVER (ORDER BY id) FROM customers) TO STDOUT').possible.get('customer')).toMatch(/window function/);
  });

  it('EXPLAIN returns a plan, not its query\'s keys', () => {
    const p = plan('EXPLAIN SELECT id FROM customers');
    expect(p.capture.size).toBe(0);
    expect(p.possible.get('customer')).toBeDefined();
  });
});
