// Statement analysis on libpg-query's tree: relations, columns, CTEs, functions, flags.
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureParser, analyse, analyseUncached, parseSearchPath, fingerprint, parse, SqlSyntaxError } from '../../src/sql/index.ts';
import type { AnalysisOk, StatementInfo } from '../../src/sql/index.ts';

beforeAll(async () => {
  await ensureParser();
});

function ok(sql: string): AnalysisOk {
  const a = analyse(sql);
  if (!a.ok) throw new Error(`expected ${sql} to parse: ${a.error.message}`);
  return a;
}

function one(sql: string): StatementInfo {
  const a = ok(sql);
  expect(a.statements).toHaveLength(1);
  const s = a.statements[0];
  if (!s) throw new Error('no statement');
  return s;
}

function rels(sql: string): string[] {
  return one(sql).relations.map((r) => `${r.schema ? r.schema + '.' : ''}${r.name}${r.alias ? ' ' + r.alias : ''}:${r.access}`);
}

function cols(sql: string): string[] {
  return one(sql).columns.map((c) => `${[...c.qualifier, c.name].join('.')}:${c.form}`);
}

describe('parser', () => {
  it('parses once per text and fingerprints ignoring literals', () => {
    expect(parse('SELECT 1')).toBe(parse('SELECT 1'));
    expect(fingerprint('SELECT * FROM customers WHERE id = 1')).toBe(fingerprint('select * from customers where id = 42'));
    expect(fingerprint('SELECT * FROM customers WHERE id = 1')).not.toBe(fingerprint('SELECT * FROM orders WHERE id = 1'));
    expect(() => parse('SELEC 1')).toThrow(SqlSyntaxError);
  });
});

describe('relations, aliases, access', () => {
  it('joins with aliases and schemas', () => {
    expect(rels('SELECT o.id, c.email FROM orders o JOIN customers AS c ON c.id = o.customer_id LEFT JOIN billing.invoices i ON i.customer_id = c.id')).toEqual([
      'orders o:read',
      'customers c:read',
      'billing.invoices i:read',
    ]);
  });

  it('write targets: INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY FROM; SELECT … FOR UPDATE and COPY TO are reads', () => {
    expect(rels('INSERT INTO orders (customer_id, total) SELECT id, 0 FROM customers')).toEqual(['orders:write', 'customers:read']);
    expect(rels('UPDATE customers c SET email = o.x FROM other o WHERE o.id = c.id')).toEqual(['customers c:write', 'other o:read']);
    expect(rels('DELETE FROM payments p USING orders o WHERE o.id = p.id')).toEqual(['payments p:write', 'orders o:read']);
    expect(rels('MERGE INTO payments p USING orders o ON p.id = o.id WHEN MATCHED THEN DELETE')).toEqual(['payments p:write', 'orders o:read']);
    expect(rels('TRUNCATE orders, billing.invoices')).toEqual(['orders:write', 'billing.invoices:write']);
    expect(rels('COPY payments FROM STDIN')).toEqual(['payments:write']);
    expect(rels('COPY customers (id, email) TO STDOUT')).toEqual(['customers:read']);
    expect(rels('SELECT * FROM customers WHERE id = 1 FOR UPDATE')).toEqual(['customers:read']);
    expect(one('SELECT * FROM customers WHERE id = 1 FOR UPDATE').readOnly).toBe(false); // row locks: not allowed in a read-only transaction
  });

  it('a CTE named like a table is not the table; inside a plain WITH body the name is the real table', () => {
    const s = one("WITH customers AS (SELECT id, email FROM customers WHERE region = 'EU') SELECT * FROM customers");
    expect(s.ctes.map((c) => c.name)).toEqual(['customers']);
    expect(s.relations).toHaveLength(1); // only the reference inside the CTE body
    expect(s.relations[0]?.scope).toBe(s.ctes[0]?.scope);
    const outer = s.scopes[s.root ?? -1];
    expect(outer?.from[0]).toMatchObject({ type: 'cte', cte: 0 });
  });

  it('WITH RECURSIVE: the CTE is visible in its own body', () => {
    const s = one('WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT n FROM t');
    expect(s.relations).toHaveLength(0);
    expect(s.ctes[0]).toMatchObject({ name: 't', recursive: true, columnAliases: ['n'] });
  });

  it('data-modifying CTE makes a SELECT a writer', () => {
    const s = one('WITH d AS (DELETE FROM payments WHERE id = 1 RETURNING *) SELECT count(*) FROM d');
    expect(s.kind).toBe('SELECT');
    expect(s.readOnly).toBe(false);
    expect(s.relations.map((r) => r.access)).toEqual(['write']);
  });

  it('DDL targets are writes; relations read by the DDL are reads', () => {
    expect(rels('CREATE TABLE t (LIKE customers)')).toEqual(['t:write', 'customers:read']);
    expect(rels('ALTER TABLE customers ADD COLUMN x int')).toEqual(['customers:write']);
    expect(rels('DROP TABLE a.b, c')).toEqual(['a.b:write', 'c:write']);
    expect(rels('CREATE VIEW v AS SELECT id FROM customers')).toEqual(['customers:read', 'v:write']);
    expect(rels('CREATE INDEX ON customers (lower(email))')).toEqual(['customers:write']);
  });
});

describe('column references', () => {
  it('qualified, unqualified, *, t.*, whole-row', () => {
    expect(cols('SELECT c.email, region, *, c.* FROM customers c')).toEqual(['c.email:column', 'region:column', '*:star', 'c.*:star']);
    expect(cols('SELECT c FROM customers c')).toEqual(['c:row']);
    expect(cols('SELECT row_to_json(c), to_jsonb(c.*) FROM customers c')).toEqual(['c:row', 'c.*:row']);
    expect(cols('SELECT customers FROM customers')).toEqual(['customers:row']);
    expect(cols('SELECT public.customers.email FROM public.customers')).toEqual(['public.customers.email:column']);
  });

  it('records the query block of each reference (correlated subqueries)', () => {
    const s = one('SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)');
    const inner = s.columns.find((c) => c.name === 'customer_id');
    const outerRef = s.columns.find((c) => c.qualifier[0] === 'c');
    expect(inner?.scope).toBe(outerRef?.scope);
    expect(s.scopes[inner?.scope ?? -1]?.parent).toBe(s.root);
    expect(s.scopes[inner?.scope ?? -1]?.existsOnly).toBe(true);
  });

  it('output columns: names, plain references and sublinks', () => {
    const s = one('SELECT c.email, lower(c.email) AS l, c.ssn::text, (SELECT max(total) FROM orders o WHERE o.customer_id = c.id) AS m, 1 FROM customers c');
    const outs = s.scopes[s.root ?? -1]?.outputs ?? [];
    expect(outs.map((o) => o.name)).toEqual(['email', 'l', 'ssn', 'm', '?column?']);
    expect(outs.map((o) => o.plain)).toEqual([true, false, false, false, false]);
    expect(outs[3]?.scopes).toHaveLength(1);
  });

  it('functions called, with schema', () => {
    const fns = one('SELECT lower(email), pg_catalog.now(), public.f(1) FROM customers, generate_series(1, 2) g').functions;
    expect(fns.map((f) => `${f.schema ?? ''}.${f.name}`).sort()).toEqual(['.generate_series', '.lower', 'pg_catalog.now', 'public.f']);
  });

  it('INSERT/UPDATE/DELETE/COPY column access', () => {
    expect(one('INSERT INTO orders (customer_id, total) VALUES (1, 2)').columnAccess).toEqual([{ relation: 0, columns: ['customer_id', 'total'], access: 'write' }]);
    expect(one('INSERT INTO orders VALUES (1, 2)').columnAccess).toEqual([{ relation: 0, columns: null, access: 'write' }]);
    expect(one('UPDATE customers SET email = lower(email), phone = NULL WHERE id = 1').columnAccess).toEqual([{ relation: 0, columns: ['email', 'phone'], access: 'write' }]);
    expect(one('DELETE FROM customers WHERE id = 1').columnAccess).toEqual([{ relation: 0, columns: null, access: 'write' }]);
    expect(one('COPY customers (id, email) TO STDOUT').columnAccess).toEqual([{ relation: 0, columns: ['id', 'email'], access: 'read' }]);
  });
});

describe('flags', () => {
  const audit = (sql: string): boolean => analyse(sql).touchesAuditSchema;

  it('touchesAuditSchema: any mention, any form, fail closed', () => {
    expect(audit('SELECT * FROM scalple_audit.records')).toBe(true);
    expect(audit('SELECT scalple_audit.verify()')).toBe(true);
    expect(audit("SELECT 'scalple_audit.records'::regclass")).toBe(true);
    expect(audit('SELECT NULL::scalple_audit.record_type')).toBe(true);
    expect(audit('SET search_path = scalple_audit')).toBe(true);
    expect(audit("SELECT 'hidden SCALPLE_AUDIT in a literal'")).toBe(true);
    expect(audit('SELECT * FROM "SCALPLE_AUDIT".records')).toBe(true);
    expect(audit('SELECT 1 /* scalple_audit */')).toBe(true);
    expect(audit('SELECT * FROM scalple_audit.records WHERE')).toBe(true); // a syntax error is still flagged
    expect(analyse('SELECT * FROM scalple_audit.records WHERE').ok).toBe(false);
    // Escapes the raw text does not show, decoded by the parser:
    expect(audit('SELECT * FROM U&"scalple\\005faudit".records')).toBe(true);
    expect(audit("SELECT E'scalple\\137audit.records'::regclass")).toBe(true);
    expect(audit('SELECT * FROM customers')).toBe(false);
    expect(audit('SELECT * FROM scalple.audit')).toBe(false);
  });

  it('scalple.* settings, including values with quotes', () => {
    expect(one("SET scalple.reason = 'ticket 42'").scalpleSetting).toEqual({ name: 'scalple.reason', key: 'reason', value: 'ticket 42', local: false, reset: false });
    expect(one("SET LOCAL scalple.on_behalf_of = 'eyJhbGciOi.x.y'").scalpleSetting).toEqual({
      name: 'scalple.on_behalf_of',
      key: 'on_behalf_of',
      value: 'eyJhbGciOi.x.y',
      local: true,
      reset: false,
    });
    expect(one(`SET scalple.reason TO 'it''s "urgent"; DROP TABLE x --'`).scalpleSetting?.value).toBe(`it's "urgent"; DROP TABLE x --`);
    expect(one("SET scalple.reason = E'line\\nbreak'").scalpleSetting?.value).toBe('line\nbreak');
    expect(one('SET Scalple.Anything = 5').scalpleSetting).toMatchObject({ name: 'scalple.anything', key: 'anything', value: '5' });
    expect(one('RESET scalple.reason').scalpleSetting).toEqual({ name: 'scalple.reason', key: 'reason', value: null, local: false, reset: true });
    expect(one('SET LOCAL scalple.reason TO DEFAULT').scalpleSetting).toMatchObject({ value: null, local: true, reset: true });
    expect(one("SET scalple.reason = 'x'").sessionState).toEqual([]); // the proxy handles it; nothing upstream
    expect(one("SET application_name = 'x'").scalpleSetting).toBeNull();
  });

  it('session state that a transaction pooler would leak', () => {
    const kinds = (sql: string): string[] => ok(sql).statements.flatMap((s) => s.sessionState.map((x) => x.kind));
    expect(kinds('SET search_path = billing, public')).toEqual(['search_path']);
    expect(kinds('SET SESSION search_path TO billing')).toEqual(['search_path']);
    expect(kinds('SET ROLE admin')).toEqual(['role']);
    expect(kinds('SET SESSION AUTHORIZATION bob')).toEqual(['session authorization']);
    expect(kinds('RESET ALL')).toEqual(['reset']);
    expect(kinds('RESET statement_timeout')).toEqual(['reset']);
    expect(kinds("SET statement_timeout = '5s'")).toEqual(['set']);
    expect(kinds('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY')).toEqual(['session characteristics']);
    expect(kinds('PREPARE p AS SELECT 1')).toEqual(['prepare']);
    expect(kinds('DEALLOCATE p')).toEqual(['deallocate']);
    expect(kinds('DEALLOCATE ALL')).toEqual(['deallocate']);
    expect(kinds('DECLARE c CURSOR WITH HOLD FOR SELECT 1')).toEqual(['cursor with hold']);
    expect(kinds('LISTEN jobs')).toEqual(['listen']);
    expect(kinds('UNLISTEN *')).toEqual(['unlisten']);
    expect(kinds('DISCARD ALL')).toEqual(['discard']);
    expect(kinds("LOAD 'auto_explain'")).toEqual(['load']);
    expect(kinds('CREATE TEMP TABLE t (a int)')).toEqual(['temporary object']);
    expect(kinds('CREATE TEMPORARY VIEW v AS SELECT 1')).toEqual(['temporary object']);
    expect(kinds('CREATE TEMP TABLE t AS SELECT 1')).toEqual(['temporary object']);
    expect(kinds('SELECT 1 INTO TEMP t')).toEqual(['temporary object']);
    expect(kinds("SELECT set_config('app.user', 'x', false)")).toEqual(['set_config']);
    expect(kinds('SELECT pg_advisory_lock(1)')).toEqual(['advisory lock']);
    expect(one('PREPARE p AS SELECT 1').sessionState[0]?.reason).toMatch(/session/);
    // Transaction-scoped: no leak.
    for (const sql of [
      "SET LOCAL search_path = billing",
      'SET LOCAL ROLE admin',
      "SET LOCAL statement_timeout = '5s'",
      'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
      'DECLARE c CURSOR FOR SELECT 1',
      'CREATE TEMP TABLE t (a int) ON COMMIT DROP',
      "SELECT set_config('app.user', 'x', true)",
      'SELECT pg_advisory_xact_lock(1)',
      'SELECT 1',
      'BEGIN',
    ]) expect(kinds(sql), sql).toEqual([]);
  });

  it('SET/RESET details, for search_path tracking', () => {
    expect(one('SET search_path TO billing, "$user", public').setting).toEqual({ action: 'set', name: 'search_path', values: ['billing', '$user', 'public'], value: 'billing, $user, public', local: false });
    expect(one('SET LOCAL search_path = DEFAULT').setting).toMatchObject({ action: 'set default', name: 'search_path', value: null, local: true });
    expect(one('RESET ALL').setting).toMatchObject({ action: 'reset all', name: null });
    expect(parseSearchPath('"$user", public, "My Schema", Other')).toEqual(['$user', 'public', 'My Schema', 'other']);
  });

  it('transaction control', () => {
    expect(one('BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY').transaction).toEqual({ op: 'BEGIN', savepoint: null, gid: null, chain: false, readOnly: true, isolation: 'serializable' });
    expect(one('START TRANSACTION READ WRITE').transaction).toMatchObject({ op: 'START TRANSACTION', readOnly: false });
    expect(one('COMMIT AND CHAIN').transaction).toMatchObject({ op: 'COMMIT', chain: true });
    expect(one('END').transaction).toMatchObject({ op: 'COMMIT' });
    expect(one('ABORT').transaction).toMatchObject({ op: 'ROLLBACK' });
    expect(one('SAVEPOINT a').transaction).toMatchObject({ op: 'SAVEPOINT', savepoint: 'a' });
    expect(one('ROLLBACK TO SAVEPOINT a').transaction).toMatchObject({ op: 'ROLLBACK TO', savepoint: 'a' });
    expect(one('RELEASE a').transaction).toMatchObject({ op: 'RELEASE', savepoint: 'a' });
    expect(one("PREPARE TRANSACTION 'g1'").transaction).toMatchObject({ op: 'PREPARE TRANSACTION', gid: 'g1' });
    expect(one("COMMIT PREPARED 'g1'").transaction).toMatchObject({ op: 'COMMIT PREPARED', gid: 'g1' });
    expect(one('SELECT 1').transaction).toBeNull();
  });

  it('command details: cursors, prepared statements, EXPLAIN, LISTEN/NOTIFY, COPY', () => {
    expect(one('DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT * FROM customers').command).toEqual({ type: 'declare', cursor: 'c', hold: true, scroll: true, binary: false, statementKind: 'SELECT' });
    expect(one('FETCH 10 FROM c').command).toEqual({ type: 'fetch', cursor: 'c', move: false });
    expect(one('MOVE NEXT IN c').command).toEqual({ type: 'fetch', cursor: 'c', move: true });
    expect(one('CLOSE ALL').command).toEqual({ type: 'close', cursor: null });
    expect(one('PREPARE q (int) AS DELETE FROM orders WHERE id = $1').command).toEqual({ type: 'prepare', name: 'q', statementKind: 'DELETE' });
    expect(one('PREPARE q (int) AS DELETE FROM orders WHERE id = $1').readOnly).toBe(false);
    expect(one('EXECUTE q(1)').command).toEqual({ type: 'execute', name: 'q' });
    expect(one('EXECUTE q(1)').readOnly).toBe(false); // unknown until the proxy maps it to its PREPARE
    expect(one('EXPLAIN (ANALYZE, BUFFERS) DELETE FROM orders').command).toEqual({ type: 'explain', analyze: true, statementKind: 'DELETE' });
    expect(one('EXPLAIN (ANALYZE, BUFFERS) DELETE FROM orders').readOnly).toBe(false);
    expect(one('EXPLAIN DELETE FROM orders').readOnly).toBe(true);
    expect(one('EXPLAIN (ANALYZE false) DELETE FROM orders').readOnly).toBe(true);
    expect(one("NOTIFY jobs, 'payload'").command).toEqual({ type: 'notify', channel: 'jobs', payload: 'payload' });
    expect(one("COPY customers TO '/tmp/x'").command).toEqual({ type: 'copy', direction: 'to', target: 'file', query: false });
    expect(one("COPY customers TO '/tmp/x'").readOnly).toBe(false);
    expect(one('COPY (SELECT ssn FROM customers) TO STDOUT').command).toEqual({ type: 'copy', direction: 'to', target: 'stdio', query: true });
    expect(one('DO $$BEGIN END$$').opaque).toBe('DO block');
    expect(one('CALL p(1)').opaque).toBe('procedure CALL');
  });

  it('read-only and DDL classification', () => {
    expect(one('SELECT nextval(\'s\')').readOnly).toBe(false);
    expect(one("SELECT lo_import('/etc/passwd')").readOnly).toBe(false);
    expect(one('SELECT pg_terminate_backend(1)').readOnly).toBe(false);
    expect(one('SELECT now()').readOnly).toBe(true);
    expect(one('SHOW search_path').readOnly).toBe(true);
    expect(one('CREATE TABLE x (a int)').ddl).toBe(true);
    expect(one('CREATE OR REPLACE VIEW v AS SELECT 1').ddl).toBe(true);
    expect(one('ALTER TABLE customers ADD COLUMN x int').ddl).toBe(true);
    expect(one('SELECT 1 INTO t').ddl).toBe(true);
    expect(one('EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1').ddl).toBe(true);
    expect(one('INSERT INTO t VALUES (1)').ddl).toBe(false);
    expect(one('DISCARD TEMP').ddl).toBe(true);
  });
});

describe('texts, errors, caching', () => {
  it('splits multi-statement texts with each statement’s own text (UTF-8 offsets mapped to characters)', () => {
    const a = ok("BEGIN; SELECT 'naïve €' AS x ; /* ✓ */ UPDATE orders SET total = 1; COMMIT");
    expect(a.kinds).toEqual(['BEGIN', 'SELECT', 'UPDATE', 'COMMIT']);
    expect(a.statements.map((s) => s.text)).toEqual(['BEGIN', "SELECT 'naïve €' AS x", 'UPDATE orders SET total = 1', 'COMMIT']);
    expect(a.readOnly).toBe(false);
    const upd = a.statements[2];
    expect(a.sql.slice(upd?.relations[0]?.location ?? 0).startsWith('orders')).toBe(true);
  });

  it('an empty query has no statements', () => {
    expect(ok(' ; -- nothing').statements).toEqual([]);
  });

  it('a syntax error is a typed value, not an exception', () => {
    const a = analyse('SELECT FROM WHERE 1');
    expect(a.ok).toBe(false);
    if (a.ok) return;
    expect(a.error.message).toMatch(/syntax error/);
    expect(a.error.position).toBeGreaterThanOrEqual(0);
  });

  it('is cached per text and frozen', () => {
    const sql = 'SELECT email FROM customers WHERE id = 7';
    expect(analyse(sql)).toBe(analyse(sql));
    expect(analyseUncached(sql)).not.toBe(analyse(sql));
    expect(analyseUncached(sql)).toEqual(analyse(sql));
    expect(Object.isFrozen(analyse(sql))).toBe(true);
    expect(Object.isFrozen(ok(sql).statements[0]?.columns)).toBe(true);
  });
});

describe('equality uses and literal values', () => {
  it('records equality between two bare column references, NULL tests, GROUP BY columns and count(DISTINCT) apart from filters', () => {
    const uses = (sql: string) => {
      const s = one(sql);
      return s.equalities.map((e) => `${e.kind}:${e.label}:${e.refs.map((r) => [...(s.columns[r]?.qualifier ?? []), s.columns[r]?.name].join('.')).join(',')}`);
    };
    expect(uses('SELECT 1 FROM customers a JOIN customers b ON a.phone = b.phone WHERE a.phone IS NOT DISTINCT FROM b.phone AND NOT (a.id <> b.id)')).toEqual([
      'equal:operator =:a.phone,b.phone',
      'equal:IS NOT DISTINCT FROM:a.phone,b.phone',
      'equal:operator <>:a.id,b.id',
    ]);
    expect(uses('SELECT phone, count(DISTINCT email) FROM customers WHERE ssn IS NULL GROUP BY phone, 1, lower(iban)')).toEqual([
      'count distinct:count(DISTINCT …):email',
      'null:IS NULL:ssn',
      'group:GROUP BY:phone',
    ]);
    // A literal, a parameter or an expression on either side is not one.
    expect(uses("SELECT 1 FROM customers WHERE phone = 'x' OR phone = $1 OR lower(phone) = email OR phone = (SELECT 'x') OR phone < email")).toEqual([]);
    const s = one('SELECT phone, email FROM customers GROUP BY 1, ROLLUP (2) ORDER BY 1');
    expect([s.scopes[0]?.groupPositions, s.scopes[0]?.positions]).toEqual([[1], [1, 2]]);
  });

  it('flags analyses that read a literal value, which texts of the same literal shape must not share', () => {
    for (const sql of ['SELECT id FROM customers ORDER BY 1', 'SELECT phone FROM customers GROUP BY 1', 'SELECT DISTINCT ON (1) id FROM customers', "SELECT format('%s', email) FROM customers", 'SELECT substring(email FROM 1 FOR 2) FROM customers', "SELECT set_config('a.b', 'c', true)", 'EXPLAIN (ANALYZE 0) DELETE FROM orders']) {
      expect(ok(sql).literalValues, sql).toBe(true);
    }
    for (const sql of ["SELECT id FROM customers WHERE id = 1 ORDER BY id LIMIT 5", "SELECT lower(email) FROM customers WHERE region = 'EU'", 'EXPLAIN DELETE FROM orders']) {
      expect(ok(sql).literalValues, sql).toBe(false);
    }
  });
});
