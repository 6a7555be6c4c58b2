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


const policyDoc: Record<string, unknown> = {
  pii: {
    'public.customers.email': 'email',
    'public.customers.iban': { mask: 'partial', keep_last: 4 },
    'public.customers.ssn': 'redact',
    'public.customers.date_of_birth': 'year',
    'public.customers.phone': 'hash',
  },
  roles: { support: { groups: ['support'] }, writer: { groups: ['writer'], write: true } },
  mask_key: 'mask-key-for-the-decide-tests-0123',
  hash_equality: true,
};
const policy = parsePolicy(policyDoc);
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

describe('equality between hash columns is off unless the policy turns it on (hash_equality)', () => {
  it('refuses a.phone = b.phone, GROUP BY phone and count(DISTINCT phone) by default; IS NULL stays allowed', () => {
    const { hash_equality: _on, ...rest } = policyDoc;
    const off = effectiveRole(parsePolicy(rest), { kind: 'person', sub: 's', groups: ['support'] } as never) as EffectiveRole;
    const rule = (sql: string, role: EffectiveRole) => {
      const d = judge(sql, role);
      return d.kind === 'refuse' ? d.refusal.rule : 'allow';
    };
    const forms = ['SELECT a.id FROM customers a JOIN customers b ON a.phone = b.phone', 'SELECT phone, count(*) FROM customers GROUP BY phone', 'SELECT count(DISTINCT phone) FROM customers'];
    expect(forms.map((f) => rule(f, off))).toEqual(Array(3).fill('mask.inference'));
    expect(forms.map((f) => rule(f, support))).toEqual(Array(3).fill('allow'));
    expect(rule('SELECT id FROM customers WHERE phone IS NULL', off)).toBe('allow');
  });
});

describe('computed outputs over masked columns', () => {
  it('are redacted when every step is on the allow-list', () => {
    expect(outcome("SELECT id, lower(email), ssn || '', ssn::text, ssn::varchar(3), concat(ssn, region), coalesce(phone, 'x'), format('%s', ssn) FROM customers")).toBe('- redacted redacted redacted redacted redacted redacted redacted');
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

  // min()/max() compare records field by field and stop at the first difference: a field without
  // ordering (json) fails only when the fields before it are equal — an equality oracle. They may
  // compare values of built-in scalar types only, whatever step, block or view made the value.
  it('min()/max() over records or arrays built from a masked value are refused, at any depth', () => {
    for (const sql of [
      "SELECT max(a) FROM (SELECT ARRAY(SELECT ROW(substr(c.ssn, 1, 3), '{}'::json) FROM customers c WHERE c.id = 1) AS a UNION ALL SELECT ARRAY(SELECT ROW('123'::text, '{}'::json))) s",
      "SELECT max(ARRAY(SELECT ROW(ssn, '{}'::json) FROM customers))",
      "SELECT min(a) FROM (SELECT array_agg(ROW(ssn, '{}'::json)) AS a FROM customers) s",
      "WITH x AS (SELECT ARRAY(SELECT ROW(email, '{}'::json) FROM customers) AS a) SELECT max(a) FROM x",
      "WITH x(a) AS (SELECT ARRAY(SELECT ROW(email, '{}'::json) FROM customers) UNION ALL SELECT NULL) SELECT max(coalesce(a, a)) FROM x",
      "SELECT max((SELECT array_agg(ROW(ssn, '{}'::json)) FROM customers))",
      "SELECT max((SELECT a FROM (SELECT ARRAY(SELECT ROW(ssn, '{}'::json) FROM customers) a) s))",
      "SELECT max(a) OVER () FROM (SELECT ARRAY(SELECT ROW(ssn, '{}'::json) FROM customers) a) s",
      "SELECT max(lag(a) OVER ()) FROM (SELECT ARRAY(SELECT ROW(ssn, '{}'::json) FROM customers) a) s",
      'SELECT min(a) FROM (SELECT ARRAY(SELECT c FROM customers c) AS a) s',
      'SELECT min(x) FROM (SELECT c AS x FROM customers c) s',
      'SELECT max(array_agg(ssn)) OVER () FROM customers',
      'SELECT max(CASE WHEN id > 0 THEN ARRAY(SELECT ROW(iban, NULL::json) FROM customers) END) FROM customers',
      "SELECT max(a || ARRAY(SELECT ROW('x'::text, '{}'::json))) FROM (SELECT ARRAY(SELECT ROW(ssn, '{}'::json) FROM customers) a) s",
      'SELECT max((c).ssn) FROM customers c',
    ]) expect(outcome(sql), sql).toBe('refuse mask.computed');
    // Over scalar values, or once a step has made a scalar of a record (::text, to_json, concat), they run.
    expect(outcome("SELECT max(lower(ssn)), min(length(email)), max(ROW(ssn, '{}'::json)::text), min(concat(ROW(iban))) FROM customers")).toBe('redacted redacted redacted redacted');
    expect(outcome("SELECT max(a) FROM (SELECT lower(ssn) AS a FROM customers UNION ALL SELECT 'x') s")).toBe('redacted');
    expect(outcome('SELECT max((SELECT lower(c2.ssn) FROM customers c2 WHERE c2.id = c.id)), min(coalesce(email, iban)) FROM customers c')).toBe('redacted redacted');
    expect(outcome('WITH x AS (SELECT ssn, email FROM customers) SELECT max(ssn), min(e) FROM x, LATERAL (SELECT x.email AS e) l')).toBe('redacted redacted');
    expect(outcome('SELECT max(contact) FROM eu_contacts')).toBe('redacted');
    // Records and arrays that are not compared stay allowed.
    expect(outcome("SELECT array_agg(ROW(ssn, '{}'::json)), ARRAY(SELECT ROW(email, '{}'::json) FROM customers) FROM customers")).toBe('redacted redacted');
  });

  // format() pads to a width: building `width - length(value)` spaces fails with 54000 once that
  // reaches the 1 GB allocation limit, so a width near it tells the length.
  it('format() with a width is refused over masked values', () => {
    for (const sql of [
      "SELECT length(format('%1073741844s', email)) FROM customers WHERE id = 1",
      "SELECT format('%10s', ssn) FROM customers",
      "SELECT format('%-10s', ssn) FROM customers",
      "SELECT format('%1$-1000000s', ssn) FROM customers",
      "SELECT format('%s %2$0s', 'x', ssn) FROM customers",
      "SELECT format('%%%5s', ssn) FROM customers",
      "SELECT format('%1$*2$s', ssn, 5) FROM customers",
      "SELECT format('%s'::text, ssn) FROM customers",
    ]) expect(outcome(sql), sql).toBe('refuse mask.computed');
    expect(outcome("SELECT format('%s|%1$s|%%10s|%-s|%2$I|%L', ssn, email, iban) FROM customers")).toBe('refuse mask.computed');
    expect(outcome("SELECT format('%s|%%10s|%-s|%I', ssn, region, id) FROM customers")).toBe('redacted');
    expect(outcome("SELECT format('%10s|%-3s', region, id), ssn FROM customers")).toBe('- redact');
  });

  it('refuses one step putting two masked values together (doubling towards the 1 GB limit is a length oracle)', () => {
    for (const sql of [
      'SELECT email || email FROM customers',
      'SELECT concat(email, email) FROM customers',
      'SELECT concat(email, ssn) FROM customers',
      "SELECT concat_ws(',', email, iban) FROM customers",
      "SELECT format('%1$s%1$s', email) FROM customers",
      "SELECT format('%s%s', email, email) FROM customers",
      "SELECT format('%s-%1$s', ssn) FROM customers",
      'SELECT string_agg(email, ssn) FROM customers',
      'SELECT lower(email) || upper(email) FROM customers',
      // through blocks: the columns each side comes from
      'WITH a AS MATERIALIZED (SELECT email AS x FROM customers), b AS MATERIALIZED (SELECT x || x AS x FROM a) SELECT length(x) FROM b',
      "WITH a AS MATERIALIZED (SELECT email || '' AS x FROM customers), b AS MATERIALIZED (SELECT concat(x, x) AS x FROM a) SELECT x FROM b",
      'SELECT x || y FROM (SELECT lower(email) AS x, email AS y FROM customers) s',
      'SELECT (SELECT email FROM customers LIMIT 1) || email FROM customers',
      'SELECT contact || contact FROM eu_contacts',
      // one masked column in two fields of a record
      'SELECT ROW(email, email)::text FROM customers',
      'WITH a AS (SELECT email AS x, lower(email) AS y FROM customers) SELECT row_to_json(a) FROM a',
      // an aggregate of an aggregate (through a subquery) multiplies copies
      "SELECT string_agg(s, '') FROM (SELECT string_agg(email, '') AS s FROM customers) t, (VALUES (1), (2)) v",
      "SELECT string_agg((SELECT string_agg(email, '') FROM customers), '') FROM (VALUES (1), (2)) v",
      'SELECT json_agg(a) FROM (SELECT array_agg(email) AS a FROM customers) t',
      "SELECT string_agg(x, '') FROM (SELECT email || 'p' AS x FROM customers) t",
    ]) expect(outcome(sql), sql).toBe('refuse mask.computed');
    // One masked value at a time, with constants or unmasked columns, still runs (redacted).
    expect(outcome("SELECT lower(email), email || '@x', concat(email, ' ', region), format('%s/%s', ssn, id), concat_ws('-', iban, region, id) FROM customers")).toBe('redacted redacted redacted redacted redacted');
    expect(outcome("WITH a AS MATERIALIZED (SELECT email || 'p' AS x FROM customers) SELECT x || region FROM a, (SELECT 'r' AS region) r")).toBe('redacted');
    expect(outcome("SELECT string_agg(email, ','), json_agg(c), row_to_json(c) FROM customers c GROUP BY c.id")).toBe('redacted redacted redacted');
    expect(outcome("SELECT string_agg(x, ',') FROM (SELECT email AS x FROM customers) t")).toBe('redacted');
    expect(outcome('SELECT coalesce(email, ssn), lag(ssn, 1, email) OVER (ORDER BY id) FROM customers')).toBe('redacted redacted');
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

describe('hash-masked columns: equality with another column hashed with the same key, and nothing else', () => {
  it('joins, grouping, DISTINCT, count(DISTINCT) and NULL tests over hash-masked plain references run, with hashed outputs', () => {
    const allowed: [string, string][] = [
      ['SELECT a.id, b.id FROM customers a JOIN customers b ON a.phone = b.phone AND a.id <> b.id', '- -'],
      ['SELECT a.id, a.phone FROM customers a, customers b WHERE a.phone = b.phone AND b.id = 1', '- hash'],
      ['SELECT a.id FROM customers a JOIN customers b ON a.phone IS NOT DISTINCT FROM b.phone', '-'],
      ['SELECT a.id FROM customers a JOIN customers b ON a.phone OPERATOR(pg_catalog.=) b.phone', '-'],
      ['SELECT a.id FROM customers a JOIN customers b ON NOT (a.phone <> b.phone) OR a.phone IS DISTINCT FROM b.phone', '-'],
      ['SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.phone = c.phone AND d.id <> c.id)', '-'],
      ['SELECT phone, a.id, b.id FROM customers a JOIN customers b USING (phone)', 'hash - -'],
      ['SELECT x.id FROM (SELECT id, phone FROM customers) x NATURAL JOIN (SELECT id, phone FROM eu_customers) y', '-'],
      ['WITH x AS (SELECT id, phone FROM customers WHERE id = 1) SELECT c.id FROM customers c JOIN x ON c.phone = x.phone', '-'],
      ['SELECT e.id FROM eu_customers e JOIN customers c ON c.phone = e.phone', '-'],
      ['SELECT phone, count(*) FROM customers GROUP BY phone', 'hash -'],
      ['SELECT phone, count(*) FROM customers GROUP BY 1', 'hash -'],
      ['SELECT c.phone AS p, count(*) FROM customers c GROUP BY p HAVING count(*) > 1', 'hash -'],
      ['SELECT region, count(*) FROM customers GROUP BY region, phone HAVING phone IS NOT NULL', '- -'],
      ['SELECT DISTINCT phone FROM customers', 'hash'],
      ['SELECT DISTINCT region, phone FROM customers', '- hash'],
      ['SELECT count(*) FROM (SELECT DISTINCT phone FROM customers) s', '-'],
      ['SELECT count(DISTINCT phone), count(DISTINCT c.phone) FILTER (WHERE region = \'EU\') FROM customers c', '- -'],
      ['SELECT region, count(DISTINCT phone) FROM customers GROUP BY region HAVING count(DISTINCT phone) > 1', '- -'],
      ['SELECT id FROM customers WHERE phone IS NULL', '-'],
      ['SELECT id, email FROM customers WHERE phone IS NOT NULL AND region = \'EU\'', '- email'],
    ];
    for (const [sql, want] of allowed) expect(outcome(sql), sql).toBe(want);
    // The audit record names the hashed output as usual.
    const d = judge('SELECT phone, count(*) FROM customers GROUP BY phone');
    expect(d.kind === 'allow' && d.maskedFields).toEqual({ 'public.customers.phone': 'hash' });
  });

  it('a literal, a parameter, a subquery or any expression on the other side is a dictionary oracle: refused', () => {
    for (const sql of [
      "SELECT id FROM customers WHERE phone = '+4930123'",
      'SELECT id FROM customers WHERE phone = $1',
      "SELECT id FROM customers WHERE '+4930123' = phone",
      "SELECT id FROM customers WHERE phone IS NOT DISTINCT FROM '+4930123'",
      "SELECT id FROM customers WHERE phone <> '+4930123'",
      'SELECT id FROM customers WHERE phone = (SELECT phone FROM customers WHERE id = 1)',
      "SELECT id FROM customers WHERE phone = ANY (ARRAY['+4930123', '+3314567'])",
      "SELECT id FROM customers WHERE phone IN ('+4930123', '+3314567')",
      'SELECT id FROM customers WHERE phone IN (SELECT phone FROM customers)',
      "SELECT id FROM customers WHERE phone > '+4'",
      "SELECT id FROM customers WHERE phone LIKE '+49%'",
      "SELECT id FROM customers WHERE phone BETWEEN '+4' AND '+5'",
      "SELECT id FROM customers WHERE (phone, id) = ('+4930123', 1)",
      "SELECT id FROM customers WHERE phone = '+4930123'::text",
      "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM (VALUES ('+4930123')) v(p) WHERE v.p = c.phone)",
      "WITH g(phone) AS (VALUES ('+4930123')) SELECT c.id FROM customers c JOIN g USING (phone)",
      "WITH x AS (SELECT phone FROM customers UNION ALL SELECT '+4930123') SELECT c.id FROM customers c JOIN x ON c.phone = x.phone",
      'SELECT a.id FROM customers a JOIN customers b ON a.phone = lower(b.phone)',
      'SELECT a.id FROM customers a JOIN customers b ON lower(a.phone) = lower(b.phone)',
      'SELECT a.id FROM customers a JOIN customers b ON a.phone = b.phone COLLATE "C"',
      'SELECT a.id FROM customers a JOIN customers b ON a.phone = b.region',
      'SELECT a.id FROM customers a JOIN customers b ON a.phone = b.email',
      'SELECT a.id FROM customers a JOIN customers b ON a.phone = b.ssn',
      'SELECT id FROM customers c JOIN (SELECT region AS phone FROM customers) r USING (phone)',
      'SELECT id FROM customers a JOIN billing.customers b ON a.phone = b.note',
    ]) expect(outcome(sql), sql).toBe('refuse mask.inference');
    // A hash column whose value the caller just wrote (a writable CTE) would be a chosen value: writing it is refused.
    expect(outcome("WITH ins AS (INSERT INTO customers (email, phone) VALUES ('x', '+4930123') RETURNING phone) SELECT c.id FROM customers c JOIN ins ON c.phone = ins.phone", writer)).toBe('refuse mask.copy_into');
    expect(outcome("WITH u AS (UPDATE customers SET phone = '+4930123' WHERE id = 1 RETURNING phone) SELECT c.id FROM customers c JOIN u USING (phone)", writer)).toBe('refuse mask.copy_into');
    expect(judge("SELECT id FROM customers WHERE phone = '+4930123'")).toMatchObject({ refusal: { message: expect.stringMatching(/hash.*literal, a parameter or an expression would test guesses/) } });
    expect(judge('SELECT a.id FROM customers a JOIN customers b ON a.phone = b.region')).toMatchObject({ refusal: { message: expect.stringMatching(/compares it with public\.customers\.region, which is not \(in every branch\) a column hashed with the same key/) } });
  });

  it('order, ranges, computed grouping and the other masks stay refused', () => {
    for (const sql of [
      'SELECT id FROM customers ORDER BY phone',
      'SELECT phone FROM customers ORDER BY 1',
      'SELECT DISTINCT phone FROM customers ORDER BY 1',
      'SELECT phone, count(*) FROM customers GROUP BY phone ORDER BY phone',
      'SELECT DISTINCT ON (phone) id FROM customers',
      'SELECT id, row_number() OVER (PARTITION BY phone) FROM customers',
      'SELECT count(*) FROM customers GROUP BY lower(phone)',
      'SELECT count(*) FROM customers GROUP BY ROLLUP (phone)',
      'SELECT lower(phone) AS phone FROM customers GROUP BY phone',
      'SELECT phone FROM customers UNION SELECT phone FROM customers',
      'SELECT phone FROM customers INTERSECT SELECT phone FROM customers',
      'SELECT DISTINCT lower(phone) FROM customers',
      'SELECT DISTINCT c FROM customers c',
      'SELECT id FROM customers c WHERE c IS NOT NULL',
      // the same shapes over columns masked otherwise than with hash
      'SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn',
      'SELECT a.id FROM customers a JOIN customers b USING (email)',
      'SELECT email, count(*) FROM customers GROUP BY email',
      'SELECT DISTINCT iban FROM customers',
      'SELECT count(DISTINCT ssn) FROM customers',
      'SELECT id FROM customers WHERE date_of_birth IS NULL',
    ]) expect(outcome(sql), sql).toBe('refuse mask.inference');
    for (const sql of ["SELECT string_agg(DISTINCT phone, ',') FROM customers", 'SELECT count(DISTINCT lower(phone)) FROM customers', 'SELECT count(DISTINCT phone ORDER BY phone) FROM customers']) {
      expect(outcome(sql), sql).toMatch(/^refuse mask\.(computed|inference)$/);
    }
  });

  it('a view whose definition compares hash-masked columns is still refused (judged as a whole); the comparison made outside it is not', async () => {
    await env.client.query('CREATE VIEW shared_phones AS SELECT a.id FROM customers a JOIN customers b ON a.phone = b.phone AND a.id <> b.id');
    env.catalog.invalidate();
    await env.catalog.ready();
    expect(outcome('SELECT id FROM shared_phones')).toBe('refuse mask.inference');
    expect(outcome('SELECT e.id FROM eu_customers e JOIN eu_customers f USING (phone)')).toBe('-');
  });

  it('only where equal values print alike: not numeric, not a nondeterministic collation, not across types', async () => {
    await env.client.query(`CREATE TABLE public.hashed_things (id int, n numeric, i int, b bigint, t text, v varchar(20), u uuid)`);
    let icu = true;
    try {
      await env.client.query("CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)");
      await env.client.query('ALTER TABLE public.hashed_things ADD COLUMN ci text COLLATE public.ci');
    } catch {
      icu = false; // PostgreSQL built without ICU
    }
    env.catalog.invalidate();
    await env.catalog.ready();
    const p = parsePolicy({
      pii: Object.fromEntries(['n', 'i', 'b', 't', 'v', 'u', 'ci'].map((c) => [`public.hashed_things.${c}`, 'hash'])),
      roles: { support: { groups: ['support'] } },
      mask_key: 'mask-key-for-the-decide-tests-0123',
      hash_equality: true,
    });
    const role = effectiveRole(p, { kind: 'person', sub: 's', groups: ['support'] } as never) as EffectiveRole;
    const run = (sql: string): string => {
      const a = analyse(sql);
      const d = decide(a, resolveAccess(a, env.catalog.current!), role, p.maskKey);
      return d.kind === 'refuse' ? `refuse ${d.refusal.rule}` : 'allow';
    };
    const pair = (x: string, y: string): string => run(`SELECT a.id FROM hashed_things a JOIN hashed_things b ON a.${x} = b.${y}`);
    expect([pair('t', 't'), pair('t', 'v'), pair('v', 'v'), pair('i', 'i'), pair('i', 'b'), pair('u', 'u')]).toEqual(Array(6).fill('allow'));
    // numeric: 1.0 = 1.00 but their hashes differ; text against integer: not the same kind of value
    expect([pair('n', 'n'), run('SELECT count(DISTINCT n) FROM hashed_things'), run('SELECT n FROM hashed_things GROUP BY n')]).toEqual(Array(3).fill('refuse mask.inference'));
    expect(run('SELECT id FROM hashed_things WHERE n IS NULL')).toBe('allow');
    if (icu) {
      expect([pair('ci', 'ci'), run('SELECT DISTINCT ci FROM hashed_things')]).toEqual(['refuse mask.inference', 'refuse mask.inference']);
      expect(run('SELECT id FROM hashed_things WHERE ci IS NOT NULL')).toBe('allow');
    }
    // An operator = defined outside pg_catalog could be the one PostgreSQL picks: fail closed.
    await env.client.query('CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = texteq)');
    env.catalog.invalidate();
    await env.catalog.ready();
    expect(pair('t', 't')).toBe('refuse mask.inference');
    expect(run('SELECT t, count(*) FROM hashed_things GROUP BY t')).toBe('allow');
    await env.client.query('DROP OPERATOR public.= (text, text)');
    env.catalog.invalidate();
    await env.catalog.ready();
    expect(pair('t', 't')).toBe('allow');
  });
});
