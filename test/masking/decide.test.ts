// The masking decision on its own, against the live catalog of a real PostgreSQL (test/sql's
// fixture): which computed outputs over masked columns are redacted and which are refused, and
// the catalog facts the allow-list depends on (operators and types defined outside pg_catalog,
// views whose definitions compute over masked columns). The corpus in leaks.test.ts checks the
// same through the proxy, end to end.
import { describe, expect, it } from 'vitest';
import { analyse, resolveAccess } from '../../src/sql/index.ts';
import { decide, type PolicyDecision } from '../../src/proxy/mask-plan.ts';
import { effectiveRole, parsePolicy, type EffectiveRole } from '../../src/policy/policy.ts';
import { useCatalogDb } from '../sql/fixture.ts';


const policy = parsePolicy({
  pii: {
    'public.customers.email': 'email',
    'public.customers.iban': { mask: 'partial', keep_last: 4 },
    'public.customers.ssn': 'redact',
    'public.customers.date_of_birth': 'year',
    'public.customers.phone': 'hash',
  },
  roles: { support: { groups: ['support'] }, writer: { groups: ['writer'], write: true } },
  mask_key: 'mask-key-for-the-decide-tests-0123',
});
const support = effectiveRole(policy, { kind: 'person', sub: 's', groups: ['support'] } as never) as EffectiveRole;
const writer = effectiveRole(policy, { kind: 'person', sub: 'w', groups: ['writer'] } as never) as EffectiveRole;

const env = useCatalogDb();

function judge(sql: string, role: EffectiveRole = support): PolicyDecision {
  const a = analyse(sql);
  return decide(a, resolveAccess(a, env.catalog.current!), role, policy.maskKey);
}

/** 'refuse <rule>' or the plan's labels ('-' for a column passed through). */
function outcome(sql: string, role?: EffectiveRole): string {
  const d = judge(sql, role);
  if (d.kind === 'refuse') return `refuse ${d.refusal.rule}`;
  return (d.plan?.columns ?? []).map((c) => c?.label ?? '-').join(' ');
}

describe('computed outputs over masked columns', () => {
  it('are redacted when every step is on the allow-list', () => {
    expect(outcome("SELECT id, lower(email), ssn || '', ssn::text, ssn::varchar(3), concat(ssn, iban), coalesce(phone, 'x'), format('%s', ssn) FROM customers")).toBe('- redacted redacted redacted redacted redacted redacted redacted');
    expect(outcome('SELECT substring(ssn FROM 2 FOR 3), left(iban, 4), substr(ssn, 1), length(email), md5(phone), trim(ssn) FROM customers')).toBe('redacted redacted redacted redacted redacted redacted');
    expect(outcome("SELECT region, string_agg(ssn, ','), array_agg(iban), json_agg(email), min(date_of_birth), max(phone), count(ssn) FROM customers GROUP BY region")).toBe('- redacted redacted redacted redacted redacted redacted');
    expect(outcome('SELECT lag(ssn) OVER (ORDER BY id), first_value(email) OVER () FROM customers')).toBe('redacted redacted');
    expect(outcome("SELECT CASE WHEN id > 1 THEN ssn ELSE 'none' END FROM customers")).toBe('redacted');
    expect(outcome('SELECT c FROM customers c')).toBe('redacted');
  });

  it('are refused when a step could fail, wait, compare or pick another overload depending on the value', () => {
    for (const sql of [
      'SELECT ssn::int FROM customers',
      "SELECT CASE WHEN ssn > '5' THEN 1 / 0 END FROM customers",
      "SELECT CASE ssn WHEN '1' THEN 'a' END FROM customers",
      'SELECT 1 / (length(ssn) - 11) FROM customers',
      'SELECT pg_sleep(length(ssn)) FROM customers',
      "SELECT substr('abc', 1, length(ssn) - 11) FROM customers",
      "SELECT substring(ssn FROM '1.*') FROM customers",
      'SELECT format(ssn) FROM customers',
      "SELECT format('%*s', ssn, 'x') FROM customers",
      "SELECT nullif(ssn, 'x') FROM customers",
      'SELECT reverse(ssn) FROM customers',
      'SELECT ssn::text[] FROM customers',
      "SELECT string_agg(id::text, ',' ORDER BY ssn) FROM customers",
      "SELECT string_agg(DISTINCT ssn, ',') FROM customers",
      'SELECT concat(VARIADIC ARRAY[ssn]) FROM customers',
      'SELECT (c).* FROM customers c',
      'SELECT to_jsonb(c) FROM customers c',
      'SELECT EXISTS (SELECT max(ssn)::int FROM customers)',
      'WITH x AS MATERIALIZED (SELECT ssn::int FROM customers) SELECT count(*) FROM x',
      "SELECT left('abc', (SELECT length(ssn) FROM customers LIMIT 1))",
      'WITH RECURSIVE r(s, n) AS (SELECT ssn, 1 FROM customers UNION ALL SELECT s || s, n + 1 FROM r WHERE n < 30) SELECT n FROM r',
    ]) expect(outcome(sql), sql).toBe('refuse mask.computed');
    expect(outcome('WITH RECURSIVE r(s, n) AS (SELECT ssn, 1 FROM customers UNION ALL SELECT s, n + 1 FROM r WHERE n < 3) SELECT lower(s) FROM r')).toBe('redacted');
  });

  it('choosing or ordering rows by them stays refused, at any depth', () => {
    for (const sql of [
      "SELECT id FROM customers c WHERE (SELECT lower(c.ssn)) LIKE '1%'",
      'SELECT id FROM customers WHERE id IN (SELECT length(ssn) FROM customers)',
      "SELECT 'a' IN (SELECT ssn FROM customers)",
      'SELECT count(*) FROM (SELECT DISTINCT ssn FROM customers) s',
      'SELECT id FROM (SELECT id, ssn FROM customers ORDER BY 2 LIMIT 1) s',
      "SELECT count(*) FROM (SELECT substr(ssn, 1, 1) FROM customers UNION SELECT '1') x",
      'SELECT ssn FROM customers INTERSECT ALL SELECT ssn FROM customers',
      "SELECT lower(email) AS x FROM customers ORDER BY x",
      'SELECT lower(email) FROM customers ORDER BY 1',
      'SELECT DISTINCT lower(email) FROM customers',
      'SELECT count(*) FROM customers GROUP BY left(ssn, 1)',
      "SELECT * FROM (SELECT id, upper(ssn) u FROM customers) s WHERE u LIKE '1%'",
      'WITH RECURSIVE r(v) AS (SELECT ssn FROM customers UNION ALL SELECT v FROM r) CYCLE v SET c USING p SELECT v FROM r',
      'SELECT ssn FROM customers UNION ALL SELECT ssn FROM customers ORDER BY 1',
    ]) expect(outcome(sql), sql).toBe('refuse mask.inference');
  });
});

describe('plain references through subqueries, CTEs and set operations', () => {
  it('keep their mask when every branch agrees, and are redacted otherwise', () => {
    expect(outcome('SELECT e FROM (SELECT email AS e FROM customers) s')).toBe('email');
    expect(outcome('WITH x AS (SELECT phone, iban FROM customers) SELECT * FROM x')).toBe('hash partial(keep_last=4)');
    expect(outcome('SELECT email FROM customers UNION ALL SELECT email FROM customers')).toBe('email');
    expect(outcome('SELECT email FROM customers UNION ALL SELECT iban FROM customers')).toBe('redacted');
    // hash is never applied to a value the caller chose or can see elsewhere
    expect(outcome("SELECT phone FROM customers UNION ALL SELECT '+1555'")).toBe('redacted');
    expect(outcome('SELECT phone FROM customers UNION ALL SELECT region FROM customers')).toBe('redacted');
    expect(outcome('SELECT (SELECT email FROM customers LIMIT 1)')).toBe('redacted');
    expect(outcome('SELECT email, phone FROM eu_customers')).toBe('email hash');
  });

  it('names them in masked_fields', () => {
    const d = judge('SELECT email, lower(email), iban FROM customers UNION ALL SELECT email, ssn, phone FROM customers');
    expect(d.kind === 'allow' && d.maskedFields).toEqual({
      'public.customers.email': 'email; redact (computed)',
      'public.customers.ssn': 'redact (computed)',
      'public.customers.iban': 'redact (mixed sources)',
      'public.customers.phone': 'redact (mixed sources)',
    });
  });
});

describe('what the allow-list depends on in the catalog', () => {
  it('a view that computes over a masked column in a way off the list is refused, whatever is selected from it', async () => {
    await env.client.query("CREATE VIEW ssn_numbers AS SELECT id, ssn::bigint AS n, lower(email) AS e FROM customers WHERE region = 'nowhere'");
    await env.client.query('CREATE VIEW lowered AS SELECT id, lower(email) AS e FROM customers');
    env.catalog.invalidate();
    await env.catalog.ready();
    expect(outcome('SELECT id FROM ssn_numbers')).toBe('refuse mask.computed');
    expect(outcome('SELECT e FROM lowered')).toBe('redacted');
  });

  it('|| and ::text count only while no operator or type outside pg_catalog can take them over', async () => {
    expect(outcome("SELECT ssn || 'x', ssn::text FROM customers")).toBe('redacted redacted');
    await env.client.query("CREATE FUNCTION public.cat_int(text, int) RETURNS text LANGUAGE sql AS 'SELECT $1'");
    await env.client.query('CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = int, FUNCTION = public.cat_int)');
    env.catalog.invalidate();
    await env.catalog.ready();
    expect(env.catalog.current!.shadows.has('operator ||')).toBe(true);
    // An operator || written in SQL: user code wherever || is used, and never allowed over a masked value.
    expect(outcome("SELECT ssn || 'x' FROM customers")).toBe('refuse mask.user_function');
    expect(judge("SELECT ssn || 'x' FROM customers").kind === 'allow').toBe(false);
    expect(outcome('SELECT ssn::text, concat(ssn) FROM customers')).toBe('redacted redacted');
    await env.client.query('CREATE DOMAIN public.text AS pg_catalog.text');
    env.catalog.invalidate();
    await env.catalog.ready();
    expect(outcome('SELECT ssn::text FROM customers')).toBe('refuse mask.computed');
    expect(outcome('SELECT ssn::pg_catalog.text, ssn::varchar FROM customers')).toBe('redacted redacted');
    await env.client.query('DROP OPERATOR public.|| (text, int); DROP FUNCTION public.cat_int(text, int); DROP DOMAIN public.text');
    env.catalog.invalidate();
    await env.catalog.ready();
  });

  it('user-defined code the statement does not name is refused too: a function a view calls, an operator written in SQL', async () => {
    await env.client.query("CREATE FUNCTION public.ssn_of(i int) RETURNS text LANGUAGE sql AS 'SELECT ssn FROM customers WHERE id = i'");
    await env.client.query('CREATE VIEW ssn_via_function AS SELECT id, public.ssn_of(id) AS x FROM customers');
    await env.client.query('CREATE VIEW ssn_via_view AS SELECT id FROM ssn_via_function');
    await env.client.query("CREATE FUNCTION public.first_ssn(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT length(ssn) FROM customers WHERE id = a'");
    await env.client.query('CREATE OPERATOR public.### (LEFTARG = int, RIGHTARG = int, FUNCTION = public.first_ssn)');
    env.catalog.invalidate();
    await env.catalog.ready();
    // Nothing masked in the lineage: the function reads ssn where the proxy cannot see.
    expect(outcome('SELECT x FROM ssn_via_function')).toBe('refuse mask.user_function');
    expect(outcome('SELECT id FROM ssn_via_view')).toBe('refuse mask.user_function');
    expect(outcome('SELECT id ### 1 FROM customers')).toBe('refuse mask.user_function');
    // Built-in operators and functions in views stay fine.
    expect(outcome('SELECT contact FROM eu_contacts')).toBe('redacted');
    expect(outcome('SELECT id + 1, email FROM customers')).toBe('- email');
  });

  it('a role with masked columns cannot create a type or relation named like a text type (pg_temp is not in the shared catalog)', () => {
    for (const sql of [
      "CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (VALUE LIKE '1%')",
      'CREATE TYPE pg_temp.varchar AS (a int)',
      'CREATE TEMP TABLE text (a int)',
      'ALTER TYPE mood RENAME TO text',
      'SELECT 1 AS a INTO TEMP text',
      'CREATE TEMP TABLE text ON COMMIT DROP AS SELECT 1 AS a',
      'CREATE TEMP TABLE U&"\\0074ext" (a int)',
    ]) expect(outcome(sql, writer), sql).toBe('refuse mask.shadow_type');
    expect(outcome('CREATE DOMAIN pg_temp.short_text AS pg_catalog.text', writer)).toBe('');
  });
});
