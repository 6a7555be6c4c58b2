// The live catalog: one query per load, relation kinds and columns, pg_depend, generations,
// invalidation after DDL (CREATE OR REPLACE VIEW, ALTER TABLE ADD COLUMN), TTL with a fake clock.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { ensureParser, analyse, Catalog, resolveAccess } from '../../src/sql/index.ts';
import type { Queryable } from '../../src/sql/index.ts';
import { startSqlTestDb, type SqlTestDb, DB } from './fixture.ts';
import { superQuery } from '../support/services.ts';

let db: SqlTestDb;
let pool: pg.Pool;

/** Counts the queries the catalog sends. */
function counting(q: Queryable): Queryable & { count: number } {
  const wrapper = {
    count: 0,
    query(text: string) {
      wrapper.count++;
      return q.query(text);
    },
  };
  return wrapper;
}

beforeAll(async () => {
  await ensureParser();
  db = await startSqlTestDb();
  pool = new pg.Pool({ connectionString: db.url, max: 3 });
  // An idle client the server ends (shutdown, a test's DDL restart) is not a test failure.
  pool.on('error', () => undefined);
});

afterAll(async () => {
  await pool?.end();
  await db?.stop();
});

describe('loading', () => {
  it('loads every relation, with ordered columns, in one query through a pg.Pool', async () => {
    const q = counting(pool);
    const catalog = new Catalog(q);
    expect(catalog.current).toBeUndefined();
    expect(catalog.generation).toBe(0);
    const snap = await catalog.ready();
    expect(q.count).toBe(1);
    expect(snap.generation).toBe(1);
    expect(snap.currentUser).toBe('app_user');
    const kinds = Object.fromEntries(['customers', 'eu_customers', 'eu_contacts', 'customer_totals'].map((n) => [n, snap.lookup(null, n)?.kind]));
    expect(kinds).toEqual({ customers: 'table', eu_customers: 'view', eu_contacts: 'view', customer_totals: 'materialized view' });
    const customers = snap.relation('public', 'customers');
    expect(customers?.columns.map((c) => `${c.attnum}:${c.name}:${c.typeName}`)).toEqual([
      '1:id:integer',
      '2:email:text',
      '3:iban:text',
      '4:ssn:text',
      '5:date_of_birth:date',
      '6:phone:text',
      '7:region:text',
      '8:created_at:timestamp with time zone',
    ]);
    expect(snap.relation('billing', 'invoices')?.columns.map((c) => c.name)).toEqual(['id', 'customer_id', 'amount', 'iban']);
    expect(snap.relation('pg_catalog', 'pg_stat_activity')?.kind).toBe('view');
    expect(snap.relation('pg_catalog', 'pg_class')?.kind).toBe('table');
    expect(snap.relation('information_schema', 'columns')?.kind).toBe('view');
    // By OID, for RowDescription's table OID + attribute number.
    if (!customers) throw new Error('customers missing');
    expect(snap.columnByAttnum(customers.oid, 4)?.column.name).toBe('ssn');
  });

  it('records views’ definitions and what pg_depend says they read (views over views too)', async () => {
    const snap = await new Catalog(pool).ready();
    const contacts = snap.relation('public', 'eu_contacts');
    const euCustomers = snap.relation('public', 'eu_customers');
    const customers = snap.relation('public', 'customers');
    if (!contacts || !euCustomers || !customers) throw new Error('sample schema missing');
    expect(contacts.definition).toMatch(/lower\(eu_customers\.email\)/);
    const deps = new Set(contacts.dependsOn.map((d) => `${snap.relationByOid(d.oid)?.name}.${d.attnum}`));
    expect(deps).toEqual(new Set(['eu_customers.1', 'eu_customers.2'])); // id, email
    const baseDeps = new Set(euCustomers.dependsOn.map((d) => customers.columns.find((c) => c.attnum === d.attnum)?.name ?? 'relation'));
    expect(baseDeps).toEqual(new Set(['id', 'email', 'phone', 'region'])); // region: read by the WHERE clause
    expect(customers.definition).toBeNull();
  });

  it('shares one load between concurrent callers', async () => {
    const q = counting(pool);
    const catalog = new Catalog(q);
    const [a, b, c] = await Promise.all([catalog.ready(), catalog.ready(), catalog.refresh()]);
    expect(a).toBe(b);
    expect(b).toBe(c);
    expect(q.count).toBe(1);
  });

  it('reports a load failure as an UPSTREAM error', async () => {
    const broken: Queryable = { query: () => Promise.reject(new Error('connection refused')) };
    await expect(new Catalog(broken).ready()).rejects.toMatchObject({ code: 'UPSTREAM', message: /could not load the database catalog: connection refused/ });
  });
});

describe('freshness', () => {
  it('TTL: a snapshot older than ttlMs is reloaded (fake clock, no sleeping)', async () => {
    let now = 1_000_000;
    const q = counting(pool);
    const catalog = new Catalog(q, { ttlMs: 5_000, now: () => now });
    const first = await catalog.ready();
    expect(catalog.fresh()).toBe(first);
    now += 4_999;
    expect(await catalog.ready()).toBe(first);
    expect(q.count).toBe(1);
    now += 1;
    expect(catalog.fresh()).toBeUndefined();
    const second = await catalog.ready();
    expect(second).not.toBe(first);
    expect(second.generation).toBe(first.generation + 1);
    expect(q.count).toBe(2);
  });

  it('invalidate() makes the next ready() reload; a load overtaken by invalidate() is repeated', async () => {
    const q = counting(pool);
    const catalog = new Catalog(q);
    const first = await catalog.ready();
    catalog.invalidate();
    expect(catalog.fresh()).toBeUndefined();
    expect(catalog.current).toBe(first); // still usable by whoever accepts a stale view
    const loading = catalog.ready();
    catalog.invalidate(); // DDL completed while the load was in flight
    const second = await loading;
    expect(q.count).toBe(3);
    expect(second.generation).toBe(3);
    expect(catalog.fresh()).toBe(second);
  });
});

describe('following DDL', () => {
  it('CREATE OR REPLACE VIEW: new view columns are seen after invalidate()', async () => {
    const catalog = new Catalog(pool);
    await catalog.ready();
    const select = analyse('SELECT * FROM eu_customers');
    const before = resolveAccess(select, catalog);
    expect(before.columns).not.toContain('public.customers.ssn');

    const ddl = "CREATE OR REPLACE VIEW public.eu_customers AS SELECT id, email, phone, ssn FROM customers WHERE region = 'EU'";
    const a = analyse(ddl);
    expect(a.ok && a.ddl).toBe(true);
    await superQuery(db.server, ddl, DB); // the view's owner
    // The proxy calls invalidate() when a DDL statement completes.
    catalog.invalidate();
    await catalog.ready();
    const after = resolveAccess(select, catalog);
    expect(after.columns).toContain('public.customers.ssn');
    expect(after.columns).toContain('public.eu_customers.ssn');
    // The view over the view picked up nothing new (it names its columns).
    expect(resolveAccess(analyse('SELECT * FROM eu_contacts'), catalog).columns).not.toContain('public.customers.ssn');
  });

  it('ALTER TABLE ADD COLUMN: * expands to the new column after invalidate()', async () => {
    const catalog = new Catalog(pool);
    await catalog.ready();
    const star = analyse('SELECT * FROM payments');
    expect(resolveAccess(star, catalog).columns).toEqual(['public.payments.amount', 'public.payments.customer_id', 'public.payments.id']);
    const ddl = 'ALTER TABLE payments ADD COLUMN card_last4 text';
    expect(analyse(ddl)).toMatchObject({ ok: true, ddl: true, kinds: ['ALTER TABLE'] });
    await superQuery(db.server, ddl, DB); // the table's owner
    // Stale snapshot: still the old answer (cached per generation)…
    expect(resolveAccess(star, catalog).columns).not.toContain('public.payments.card_last4');
    catalog.invalidate();
    await catalog.ready();
    expect(resolveAccess(star, catalog).columns).toContain('public.payments.card_last4');
  });

  it('DDL inside a transaction is visible to the catalog only after COMMIT: invalidate again when the transaction ends', async () => {
    const catalog = new Catalog(pool);
    await catalog.ready();
    const c = await db.connect();
    try {
      await c.query('BEGIN');
      await c.query('CREATE TABLE in_tx (a int, b text)');
      catalog.invalidate(); // after the DDL statement
      await catalog.ready();
      // Loaded on another connection: the uncommitted table is not there, so it is reported as-is.
      expect(resolveAccess(analyse('SELECT a FROM in_tx'), catalog)).toMatchObject({ unknownTables: ['app_user.in_tx'], columns: ['app_user.in_tx.a'] });
      await c.query('COMMIT');
      catalog.invalidate(); // after COMMIT of a transaction that ran DDL
      await catalog.ready();
      expect(resolveAccess(analyse('SELECT * FROM in_tx'), catalog)).toMatchObject({ unknownTables: [], columns: ['app_user.in_tx.a', 'app_user.in_tx.b'] });
    } finally {
      await c.end();
    }
  });
});
