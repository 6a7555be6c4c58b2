// The mask plan is computed from the proxy's picture of the catalog and of the session (search
// path, temporary objects); PostgreSQL resolves names with the real ones. Whenever the two differ,
// a masked column can come back under a name the proxy believes harmless. The RowDescription
// cross-check does not save these cases: it maps (table OID, attnum) to a column of the snapshot,
// and a view's column, or an OID the snapshot does not know, maps to nothing masked.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { WireClient, parse, bind, execute, syncMessage, roundTrip, simple, errorsOf, textOf, leaked, piiValues, maskedPolicy } from './support.ts';

describe('DDL done outside the proxy (a migration) while people are connected', () => {
  let stack: Stack;
  let pii: string[];
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'transaction', config: maskedPolicy() });
    await stack.sql('CREATE VIEW region_view_1 AS SELECT id, region FROM customers; CREATE VIEW region_view_2 AS SELECT id, region FROM customers; GRANT SELECT ON region_view_1, region_view_2 TO app_user');
    pii = await piiValues((t) => stack.sql(t), 3);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  // A migration outside the proxy; the database announces it (catalog watch: event trigger + LISTEN).
  const swap = (view: string) => stack.ddlOutside(`DROP VIEW ${view}; CREATE VIEW ${view} AS SELECT id, ssn AS region FROM customers; GRANT SELECT ON ${view} TO app_user`);

  it('a named statement prepared before a view changed is checked against the new definition', async () => {
    const w = await stack.wire('alice@example.com');
    const before = await roundTrip(w, [parse('s', 'SELECT * FROM region_view_1 WHERE id <= 2'), bind('', 's'), execute(''), syncMessage]);
    expect(leaked(textOf(before), pii)).toEqual([]);
    await swap('region_view_1');
    const after = await roundTrip(w, [bind('', 's'), execute(''), syncMessage]);
    w.close();
    expect(leaked(textOf(after), pii)).toEqual([]);
  });

  it('scalple catalog install (re)installs the event trigger, idempotently, and says so', async () => {
    const { execFileSync } = await import('node:child_process');
    const { SCALPLE_BIN } = await import('../support/stack.ts');
    execFileSync(process.execPath, [SCALPLE_BIN, 'catalog', 'install', '--admin-url', stack.pg.superUrl('app')], { stdio: 'ignore' });
    const r = await stack.sql<{ n: string }>("SELECT count(*) AS n FROM pg_event_trigger WHERE evtname = 'scalple_ddl_notify' AND evtenabled <> 'D'");
    expect(r.rows[0]!.n).toBe('1');
  });

  it('a new statement over a view changed a moment ago is not planned with the old definition', async () => {
    const w = await stack.wire('alice@example.com');
    await simple(w, 'SELECT * FROM region_view_2 WHERE id <= 2');
    await swap('region_view_2');
    const frames = await simple(w, 'SELECT * FROM region_view_2 WHERE id <= 3');
    w.close();
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });
});

describe('session state the proxy does not see (upstream_pool_mode: none, a role with masks that may write)', () => {
  let stack: Stack;
  let pii: string[];
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'none', config: maskedPolicy({ support: { groups: ['support'], write: true } }) });
    // A second schema with a table of the same name, outside the pii list (a staging copy).
    await stack.sql("CREATE SCHEMA staging; CREATE TABLE staging.customers (id bigint, ssn text); INSERT INTO staging.customers VALUES (1, 'staging-row'); GRANT USAGE ON SCHEMA staging TO app_user; GRANT SELECT ON staging.customers TO app_user");
    pii = await piiValues((t) => stack.sql(t), 3);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  // Temporary objects of a session are not in the shared catalog: a role with masks may not create
  // the ones that could shadow a table with other contents (views, rules).
  it('a temporary view shadowing a table is not mistaken for the table (it cannot be created)', async () => {
    const w = await stack.wire('alice@example.com');
    const created = await simple(w, 'CREATE TEMP VIEW orders AS SELECT id, ssn AS status FROM customers');
    const viaRule = await simple(w, "CREATE TEMP TABLE invoices (id bigint, status text); CREATE RULE \"_RETURN\" AS ON SELECT TO invoices DO INSTEAD SELECT id, ssn AS status FROM customers");
    const frames = await simple(w, 'SELECT id, status FROM orders WHERE id <= 2');
    w.close();
    expect(errorsOf(created).map((e) => e.code)).toEqual(['42501']);
    expect(errorsOf(viaRule).map((e) => e.code)).toEqual(['42501']);
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });

  it('SET search_path rolled back with its transaction is rolled back in the proxy too', async () => {
    const w = await stack.wire('alice@example.com');
    await simple(w, 'BEGIN');
    await simple(w, 'SET search_path = staging, public');
    await simple(w, 'ROLLBACK');
    // PostgreSQL is back on "$user", public: customers is public.customers again.
    const frames = await simple(w, 'SELECT id, ssn FROM customers WHERE id <= 2');
    w.close();
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });
});

describe('SET LOCAL search_path behind the transaction pooler (PII in a second schema, a role with masks that may write)', () => {
  let stack: Stack;
  beforeAll(async () => {
    const policy = maskedPolicy({ support: { groups: ['support'], write: true } });
    policy.pii = { ...(policy.pii as object), 'crm.contacts.email': 'redact' };
    stack = await startStack({ poolMode: 'transaction', config: policy });
    await stack.sql(`CREATE SCHEMA crm; CREATE TABLE crm.contacts (id int, email text); INSERT INTO crm.contacts VALUES (1, 'crm-secret-1@example.net'), (2, 'crm-secret-2@example.net');
      CREATE TABLE public.contacts (id int, email text); INSERT INTO public.contacts VALUES (1, 'public-ok@example.net');
      GRANT USAGE ON SCHEMA crm TO app_user; GRANT SELECT ON crm.contacts, public.contacts TO app_user`);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('the proxy resolves names with the path SET LOCAL gave PostgreSQL', async () => {
    const w = await stack.wire('alice@example.com');
    await simple(w, 'BEGIN');
    await simple(w, 'SET LOCAL search_path = crm, public');
    const frames = await simple(w, 'SELECT id, email FROM contacts');
    await simple(w, 'ROLLBACK');
    w.close();
    expect(textOf(frames)).not.toContain('crm-secret-1@example.net');
  });

  it('… and the path set_config(…, true) gave it', async () => {
    const w = await stack.wire('alice@example.com');
    await simple(w, 'BEGIN');
    await simple(w, "SELECT set_config('search_path', 'crm, public', true)");
    const frames = await simple(w, 'SELECT id, email FROM contacts');
    await simple(w, 'ROLLBACK');
    w.close();
    expect(textOf(frames)).not.toContain('crm-secret-1@example.net');
  });
});

describe('search_path from the startup packet (upstream_pool_mode: none, read-only alice, PII in a second schema)', () => {
  let stack: Stack;
  beforeAll(async () => {
    const policy = maskedPolicy();
    policy.pii = { ...(policy.pii as object), 'crm.contacts.email': 'redact' };
    stack = await startStack({ poolMode: 'none', config: policy });
    await stack.sql(`CREATE SCHEMA crm; CREATE TABLE crm.contacts (id int, email text); INSERT INTO crm.contacts VALUES (1, 'crm-secret-1@example.net');
      CREATE TABLE public.contacts (id int, email text); INSERT INTO public.contacts VALUES (1, 'public-ok@example.net');
      GRANT USAGE ON SCHEMA crm TO app_user; GRANT SELECT ON crm.contacts, public.contacts TO app_user`);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  for (const [carrier, params] of [
    ['a search_path startup parameter', { search_path: 'crm, public' }],
    ['-c search_path in options', { options: '-c search_path=crm,public' }],
  ] as const) {
    it(`${carrier} is not forwarded behind the proxy's back`, async () => {
      const t = await stack.token('alice@example.com');
      const w = await WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', 'scalple.identity': t.accessToken, ...params });
      const frames = await simple(w, 'SELECT id, email FROM contacts');
      w.close();
      expect(textOf(frames)).not.toContain('crm-secret-1@example.net');
    });
  }
});
