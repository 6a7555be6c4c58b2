// Tables and columns read or written, resolved against the live catalog of a real PostgreSQL.
import { describe, expect, it } from 'vitest';
import { analyse, Catalog, resolveAccess, viewLineage } from '../../src/sql/index.ts';
import type { Access, SearchPathInput } from '../../src/sql/index.ts';
import { useCatalogDb } from './fixture.ts';


const CUSTOMER_COLUMNS = ['created_at', 'date_of_birth', 'email', 'iban', 'id', 'phone', 'region', 'ssn'].map((c) => `public.customers.${c}`);

const env = useCatalogDb();

function access(sql: string, searchPath?: SearchPathInput): Access {
  return resolveAccess(analyse(sql), env.catalog, searchPath);
}

function outputs(sql: string, searchPath?: SearchPathInput): Record<string, string[]> {
  const o = access(sql, searchPath).statements[0]?.outputs ?? [];
  return Object.fromEntries(o.map((x) => [x.name, [...x.sources]]));
}

/** Sanity: every statement used here runs on the real server (inside a rolled-back transaction). */
async function runs(sql: string): Promise<void> {
  await env.client.query('BEGIN');
  try {
    await env.client.query(sql);
  } finally {
    await env.client.query('ROLLBACK');
  }
}

describe('joins, aliases, unqualified names', () => {
  it('resolves qualified and unqualified columns to the right tables', async () => {
    const sql = 'SELECT o.id, email, total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE region = $1';
    await runs(sql.replace('$1', "'EU'"));
    const a = access(sql);
    expect(a.tables).toEqual(['public.customers', 'public.orders']);
    expect(a.columns).toEqual(['public.customers.email', 'public.customers.id', 'public.customers.region', 'public.orders.customer_id', 'public.orders.id', 'public.orders.total']);
    expect(a.statements[0]?.filters).toEqual(['public.customers.id', 'public.customers.region', 'public.orders.customer_id']);
    expect(outputs(sql)).toEqual({ id: ['public.orders.id'], email: ['public.customers.email'], total: ['public.orders.total'] });
  });

  it('an ambiguous or unresolvable name is attributed to every candidate relation that has it', () => {
    expect(access('SELECT created_at FROM orders, customers').columns).toEqual(['public.customers.created_at', 'public.orders.created_at']);
  });

  it('USING and NATURAL join columns are read and merged in *', async () => {
    const sql = 'SELECT * FROM orders JOIN payments USING (customer_id)';
    await runs(sql);
    const a = access(sql);
    expect(a.columns).toEqual(['public.orders.created_at', 'public.orders.customer_id', 'public.orders.id', 'public.orders.total', 'public.payments.amount', 'public.payments.customer_id', 'public.payments.id']);
    expect(Object.keys(outputs(sql))).toEqual(['customer_id', 'id', 'total', 'created_at', 'amount']);
    expect(outputs(sql).customer_id).toEqual(['public.orders.customer_id', 'public.payments.customer_id']);
  });

  it('schema-qualified column references', () => {
    expect(access('SELECT public.customers.email FROM public.customers').columns).toEqual(['public.customers.email']);
  });
});

describe('*, t.*, whole-row references', () => {
  it('* and t.* expand against the catalog', () => {
    expect(access('SELECT * FROM customers').columns).toEqual(CUSTOMER_COLUMNS);
    expect(access('TABLE customers').columns).toEqual(CUSTOMER_COLUMNS);
    const a = access('SELECT o.*, c.email FROM orders o JOIN customers c ON c.id = o.customer_id');
    expect(a.columns).toEqual(['public.customers.email', 'public.customers.id', 'public.orders.created_at', 'public.orders.customer_id', 'public.orders.id', 'public.orders.total']);
  });

  it('whole-row references read every column', async () => {
    for (const sql of ['SELECT c FROM customers c', 'SELECT row_to_json(c) FROM customers c', 'SELECT to_jsonb(c.*) FROM customers c', 'SELECT customers FROM customers', 'SELECT (c).email FROM customers c']) {
      await runs(sql);
      expect(access(sql).columns, sql).toEqual(CUSTOMER_COLUMNS);
      expect(access(sql).statements[0]?.outputs?.[0]?.plain, sql).toBe(false);
    }
  });

  it('a column named like the alias wins over the whole row (PostgreSQL’s rule)', async () => {
    await env.client.query('CREATE TABLE IF NOT EXISTS public.tricky (tricky int, secret text)');
    await env.catalog.refresh();
    expect(access('SELECT tricky FROM tricky').columns).toEqual(['public.tricky.tricky']);
  });

  it('EXISTS (SELECT * …) reads only its predicates', () => {
    const a = access('SELECT id FROM customers c WHERE EXISTS (SELECT * FROM orders o WHERE o.customer_id = c.id)');
    expect(a.columns).toEqual(['public.customers.id', 'public.orders.customer_id']);
  });
});

describe('subqueries, CTEs, set operations', () => {
  it('a column of a subquery maps back to its base columns', async () => {
    const sql = 'SELECT s.e, s.n FROM (SELECT lower(email) AS e, id AS n FROM customers WHERE ssn IS NOT NULL) s';
    await runs(sql);
    expect(outputs(sql)).toEqual({ e: ['public.customers.email'], n: ['public.customers.id'] });
    expect(access(sql).columns).toEqual(['public.customers.email', 'public.customers.id', 'public.customers.ssn']);
    expect(access(sql).statements[0]?.outputs?.map((o) => o.plain)).toEqual([false, true]);
  });

  it('subquery column aliases map positionally', () => {
    expect(outputs('SELECT x FROM (SELECT ssn, email FROM customers) AS s(x, y)')).toEqual({ x: ['public.customers.ssn'] });
  });

  it('scalar and correlated subqueries in the select list', () => {
    const sql = 'SELECT c.email, (SELECT max(o.total) FROM orders o WHERE o.customer_id = c.id) AS biggest FROM customers c';
    expect(outputs(sql)).toEqual({ email: ['public.customers.email'], biggest: ['public.orders.total'] });
    expect(access(sql).columns).toEqual(['public.customers.email', 'public.customers.id', 'public.orders.customer_id', 'public.orders.total']);
  });

  it('a CTE named customers hides the table, and its columns are only what it selects', async () => {
    const sql = "WITH customers AS (SELECT id, email FROM customers WHERE region = 'EU') SELECT * FROM customers";
    await runs(sql);
    const a = access(sql);
    expect(a.tables).toEqual(['public.customers']);
    expect(a.columns).toEqual(['public.customers.email', 'public.customers.id', 'public.customers.region']);
    expect(outputs(sql)).toEqual({ id: ['public.customers.id'], email: ['public.customers.email'] });
  });

  it('CTE column aliases and chained CTEs', () => {
    const sql = 'WITH a(k, v) AS (SELECT id, iban FROM customers), b AS (SELECT v AS w FROM a) SELECT w FROM b';
    expect(outputs(sql)).toEqual({ w: ['public.customers.iban'] });
  });

  it('recursive CTE: lineage reaches a fixpoint through the self-reference', async () => {
    const sql = `WITH RECURSIVE r(n, a, b) AS (
        SELECT 1, ''::text, ''::text
        UNION ALL
        SELECT r.n + 1, r.b, c.ssn FROM r JOIN customers c ON c.id = r.n WHERE r.n < 3)
      SELECT a FROM r`;
    await runs(sql);
    // a only receives ssn via b from the previous iteration: found only by iterating.
    expect(outputs(sql)).toEqual({ a: ['public.customers.ssn'] });
  });

  it('UNION combines the lineage of both branches', async () => {
    const sql = 'SELECT email AS x FROM customers UNION SELECT iban FROM billing.invoices ORDER BY x';
    await runs(sql);
    expect(outputs(sql)).toEqual({ x: ['billing.invoices.iban', 'public.customers.email'] });
    expect(access(sql).tables).toEqual(['billing.invoices', 'public.customers']);
  });

  it('functions, operators, casts, CASE and aggregates keep their sources but are not plain', async () => {
    const sql = `SELECT lower(email) AS a, email || '' AS b, ssn::text AS c, format('%s', iban) AS d, coalesce(phone, '') AS e,
                        CASE WHEN ssn > '5' THEN 1 END AS f, date_of_birth AS g FROM customers`;
    await runs(sql);
    const o = access(sql).statements[0]?.outputs ?? [];
    expect(o.map((x) => [x.name, x.sources, x.plain])).toEqual([
      ['a', ['public.customers.email'], false],
      ['b', ['public.customers.email'], false],
      ['c', ['public.customers.ssn'], false],
      ['d', ['public.customers.iban'], false],
      ['e', ['public.customers.phone'], false],
      ['f', ['public.customers.ssn'], false],
      ['g', ['public.customers.date_of_birth'], true],
    ]);
    expect(outputs("SELECT string_agg(ssn, ','), max(iban), count(*) FROM customers")).toEqual({ string_agg: ['public.customers.ssn'], max: ['public.customers.iban'], count: [] });
    const w = access('SELECT id, rank() OVER (PARTITION BY region ORDER BY ssn) FROM customers').statements[0];
    expect(w?.outputs?.map((x) => x.sources)).toEqual([['public.customers.id'], []]);
    expect(w?.filters).toEqual(['public.customers.region', 'public.customers.ssn']); // ordering by ssn is read, and shows
  });

  it('unknown composite fields are attributed conservatively; a function in FROM never hides an outer column', async () => {
    expect(outputs('SELECT x.email FROM (SELECT (c).* FROM customers c) x').email).toEqual(CUSTOMER_COLUMNS);
    const sql = 'SELECT (SELECT email FROM generate_series(1, 1) g) FROM customers';
    await runs(sql);
    expect(access(sql).columns).toEqual(['public.customers.email']);
    expect(access('SELECT k.key FROM customers c, jsonb_each(to_jsonb(c)) k').columns).toEqual(CUSTOMER_COLUMNS);
  });

  it('ORDER BY an output alias reads the aliased expression', () => {
    expect(access('SELECT lower(ssn) AS k, id FROM customers ORDER BY k').columns).toEqual(['public.customers.id', 'public.customers.ssn']);
  });

  it('LATERAL and functions in FROM', async () => {
    const sql = 'SELECT c.id, x.t, g FROM customers c, LATERAL (SELECT sum(total) AS t FROM orders o WHERE o.customer_id = c.id) x, generate_series(1, 2) g';
    await runs(sql);
    expect(outputs(sql)).toEqual({ id: ['public.customers.id'], t: ['public.orders.total'], g: [] });
  });
});

describe('writes', () => {
  it('INSERT: listed target columns, or all of them; INSERT … SELECT reads its source', async () => {
    expect(access('INSERT INTO orders (customer_id, total) VALUES (1, 2)')).toMatchObject({
      tables: ['public.orders'],
      tablesWritten: ['public.orders'],
      columns: ['public.orders.customer_id', 'public.orders.total'],
      columnsWritten: ['public.orders.customer_id', 'public.orders.total'],
    });
    expect(access('INSERT INTO payments VALUES (10, 1, 2)').columnsWritten).toEqual(['public.payments.amount', 'public.payments.customer_id', 'public.payments.id']);
    const sql = 'INSERT INTO billing.invoices (customer_id, iban) SELECT id, iban FROM customers RETURNING id';
    await runs(sql);
    const a = access(sql);
    expect(a.tablesWritten).toEqual(['billing.invoices']);
    expect(a.columns).toEqual(['billing.invoices.customer_id', 'billing.invoices.iban', 'billing.invoices.id', 'public.customers.iban', 'public.customers.id']);
    expect(outputs(sql)).toEqual({ id: ['billing.invoices.id'] });
  });

  it('UPDATE: SET columns written, SET expressions and WHERE read', async () => {
    const sql = "UPDATE customers SET email = lower(email), phone = NULL WHERE region = 'EU' RETURNING id";
    await runs(sql);
    const a = access(sql);
    expect(a.columnsWritten).toEqual(['public.customers.email', 'public.customers.phone']);
    expect(a.columns).toEqual(['public.customers.email', 'public.customers.id', 'public.customers.phone', 'public.customers.region']);
  });

  it('UPDATE … FROM', () => {
    const a = access('UPDATE orders o SET total = p.amount FROM payments p WHERE p.customer_id = o.customer_id');
    expect(a.tablesWritten).toEqual(['public.orders']);
    expect(a.columns).toEqual(['public.orders.customer_id', 'public.orders.total', 'public.payments.amount', 'public.payments.customer_id']);
  });

  it('DELETE writes every column of the rows it removes', () => {
    const a = access("DELETE FROM customers WHERE region = 'EU'");
    expect(a.columnsWritten).toEqual(CUSTOMER_COLUMNS);
    expect(a.statements[0]?.filters).toEqual(['public.customers.region']);
  });

  it('MERGE', async () => {
    const sql = `MERGE INTO payments p USING orders o ON p.id = o.id
      WHEN MATCHED AND o.total > 100 THEN DELETE
      WHEN MATCHED THEN UPDATE SET amount = o.total
      WHEN NOT MATCHED THEN INSERT (id, customer_id, amount) VALUES (o.id, o.customer_id, o.total)`;
    await runs(sql);
    const a = access(sql);
    expect(a.tablesWritten).toEqual(['public.payments']);
    expect(a.columnsWritten).toEqual(['public.payments.amount', 'public.payments.customer_id', 'public.payments.id']);
    expect(a.columns).toContain('public.orders.total');
    expect(a.columns).toContain('public.orders.customer_id');
  });

  it('COPY table (cols) TO, COPY table FROM, COPY (query) TO', () => {
    expect(access('COPY customers (id, email) TO STDOUT')).toMatchObject({ columns: ['public.customers.email', 'public.customers.id'], columnsWritten: [] });
    expect(outputs('COPY customers (id, email) TO STDOUT')).toEqual({ id: ['public.customers.id'], email: ['public.customers.email'] });
    expect(access('COPY customers TO STDOUT').columns).toEqual(CUSTOMER_COLUMNS);
    expect(access('COPY payments FROM STDIN').columnsWritten).toEqual(['public.payments.amount', 'public.payments.customer_id', 'public.payments.id']);
    expect(access('COPY payments (amount) FROM STDIN WHERE amount > 0').columns).toEqual(['public.payments.amount']);
    expect(outputs('COPY (SELECT ssn FROM customers) TO STDOUT')).toEqual({ ssn: ['public.customers.ssn'] });
  });

  it('flows: which values are copied into which columns (copying PII into another table shows)', () => {
    expect(access('INSERT INTO billing.invoices (customer_id, iban) SELECT id, upper(iban) FROM customers').statements[0]?.flows).toEqual([
      { target: 'billing.invoices.customer_id', sources: ['public.customers.id'] },
      { target: 'billing.invoices.iban', sources: ['public.customers.iban'] },
    ]);
    expect(access('UPDATE billing.invoices i SET iban = c.iban FROM customers c WHERE c.id = i.customer_id').statements[0]?.flows).toEqual([
      { target: 'billing.invoices.iban', sources: ['public.customers.iban'] },
    ]);
    expect(access('CREATE TABLE scratch AS SELECT ssn AS s FROM customers').statements[0]?.flows).toEqual([{ target: 'app_user.scratch.*', sources: ['public.customers.ssn'] }]);
    expect(access('INSERT INTO payments VALUES (1, 2, 3)').statements[0]?.flows).toEqual([]);
  });

  it('TRUNCATE', () => {
    expect(access('TRUNCATE payments')).toMatchObject({ tablesWritten: ['public.payments'], columnsWritten: ['public.payments.amount', 'public.payments.customer_id', 'public.payments.id'] });
  });
});

describe('views over views, materialized views', () => {
  it('a view is listed and expanded to the tables it reads; its WHERE columns are read', async () => {
    const sql = 'SELECT email FROM eu_customers';
    await runs(sql);
    const a = access(sql);
    expect(a.tables).toEqual(['public.customers', 'public.eu_customers']);
    expect(a.columns).toEqual(['public.customers.email', 'public.customers.region', 'public.eu_customers.email']);
    expect(a.statements[0]?.outputs).toEqual([{ name: 'email', sources: ['public.customers.email', 'public.eu_customers.email'], plain: true }]);
  });

  it('a view over a view resolves recursively, and knows lower(email) is not a plain column', async () => {
    const sql = 'SELECT * FROM eu_contacts';
    await runs(sql);
    const a = access(sql);
    expect(a.tables).toEqual(['public.customers', 'public.eu_contacts', 'public.eu_customers']);
    expect(a.columns).not.toContain('public.customers.ssn');
    expect(a.columns).toContain('public.customers.region');
    expect(a.statements[0]?.outputs).toEqual([
      { name: 'customer_id', sources: ['public.customers.id', 'public.eu_contacts.customer_id', 'public.eu_customers.id'], plain: true },
      { name: 'contact', sources: ['public.customers.email', 'public.eu_contacts.contact', 'public.eu_customers.email'], plain: false },
    ]);
    const snap = env.catalog.current;
    const rel = snap?.lookup(null, 'eu_contacts');
    if (!snap || !rel) throw new Error('eu_contacts missing from the catalog');
    const vl = viewLineage(snap, rel);
    expect(vl.exact).toBe(true);
    expect(vl.columns.get('contact')).toEqual(['public.customers.email', 'public.eu_customers.email']);
  });

  it('DML through an updatable view writes its base table; DROP VIEW only the view', () => {
    expect(access("UPDATE eu_customers SET phone = '0' WHERE id = 1")).toMatchObject({
      tablesWritten: ['public.customers', 'public.eu_customers'],
      columnsWritten: ['public.customers.phone', 'public.eu_customers.phone'],
    });
    expect(access('DROP VIEW eu_contacts')).toMatchObject({ tables: ['public.eu_contacts'], tablesWritten: ['public.eu_contacts'], columns: [] });
  });

  it('a materialized view carries its base columns', () => {
    expect(outputs('SELECT total, region FROM customer_totals')).toEqual({
      total: ['public.customer_totals.total', 'public.orders.total'],
      region: ['public.customer_totals.region', 'public.customers.region'],
    });
    expect(access('SELECT total FROM customer_totals').tables).toEqual(['public.customer_totals', 'public.customers', 'public.orders']);
  });
});

describe('search_path', () => {
  it('resolves unqualified names along the search path, "$user" first by default', () => {
    expect(access('SELECT * FROM notes').tables).toEqual(['app_user.notes']);
    expect(access('SELECT id FROM customers').columns).toEqual(['public.customers.id']);
    expect(access('SELECT id FROM customers', ['billing', 'public']).columns).toEqual(['billing.customers.id']);
    expect(access('SELECT id FROM customers', 'billing, public').columns).toEqual(['billing.customers.id']);
    expect(access('SELECT amount FROM invoices', ['billing']).tables).toEqual(['billing.invoices']);
    expect(access('SELECT relname FROM pg_class', []).tables).toEqual(['pg_catalog.pg_class']);
  });

  it('caches per (text, catalog generation, search_path)', () => {
    const a = analyse('SELECT id FROM customers');
    expect(resolveAccess(a, env.catalog, ['billing', 'public'])).toBe(resolveAccess(a, env.catalog, ['billing', 'public']));
    expect(resolveAccess(a, env.catalog, ['public'])).not.toBe(resolveAccess(a, env.catalog, ['billing', 'public']));
  });

  it('relations missing from the catalog are reported as written, with the creation schema of the search path', () => {
    const a = access('SELECT a, t.b FROM brand_new t', ['billing', 'public']);
    expect(a.unknownTables).toEqual(['billing.brand_new']);
    expect(a.columns).toEqual(['billing.brand_new.a', 'billing.brand_new.b']);
    expect(access('SELECT * FROM nowhere.t').columns).toEqual(['nowhere.t.*']);
  });

  it('a temporary table shadows a table for its own session', async () => {
    const c2 = await env.db.connect();
    try {
      await c2.query('CREATE TEMP TABLE customers (id int, nickname text)');
      const temp = new Catalog(c2);
      await temp.ready();
      const a = resolveAccess(analyse('SELECT * FROM customers'), temp);
      expect(a.columns).toEqual(['pg_temp.customers.id', 'pg_temp.customers.nickname']);
      expect(resolveAccess(analyse('SELECT id FROM public.customers'), temp).columns).toEqual(['public.customers.id']);
      // pg_temp listed explicitly later in the path: public wins.
      expect(resolveAccess(analyse('SELECT id FROM customers'), temp, ['public', 'pg_temp']).columns).toEqual(['public.customers.id']);
      // Other sessions (the shared env.catalog) do not see it.
      expect(access('SELECT id FROM customers').columns).toEqual(['public.customers.id']);
    } finally {
      await c2.end();
    }
  });
});

describe('multiple statements and errors', () => {
  it('unions the statements of a text', () => {
    const a = access("BEGIN; UPDATE orders SET total = 0 WHERE id = 1; SELECT email FROM customers; COMMIT");
    expect(a.tables).toEqual(['public.customers', 'public.orders']);
    expect(a.statements.map((s) => s.kind)).toEqual(['BEGIN', 'UPDATE', 'SELECT', 'COMMIT']);
  });

  it('a syntax error resolves to nothing', () => {
    expect(access('SELECT FROM WHERE').tables).toEqual([]);
  });

  it('EXPLAIN, PREPARE and DECLARE expose their inner statement', () => {
    expect(access('EXPLAIN ANALYZE SELECT ssn FROM customers').columns).toEqual(['public.customers.ssn']);
    expect(access('PREPARE q AS SELECT iban FROM customers WHERE id = $1').columns).toEqual(['public.customers.iban', 'public.customers.id']);
    expect(outputs('DECLARE k CURSOR FOR SELECT phone FROM customers')).toEqual({ phone: ['public.customers.phone'] });
  });
});
