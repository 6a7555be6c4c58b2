// Security review of the computed-output redaction (66b3608), refusals failing upstream (69453a8),
// the catalog watch (e63caaa) and the temporary view/rule refusal (1bda9e2). Each test below is an
// attack that got a masked value (or a reliable bit of one) out through the proxy; the ones still
// open are `it.fails` (green while the hole is open) and name their hole in a comment. When a hole
// is closed its test starts failing: turn it into a plain `it` then.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { WireClient, parse, bind, syncMessage, roundTrip, simple, rowsOf, errorsOf, textOf, leaked, piiValues, maskedPolicy } from './support.ts';

interface Result {
  rows: (string | null)[][];
  errors: { code: string; message: string }[];
  text: string;
  ms: number;
}

async function run(w: WireClient, sql: string): Promise<Result> {
  const t0 = Date.now();
  const frames = await simple(w, sql);
  return { rows: rowsOf(frames), errors: errorsOf(frames), text: textOf(frames), ms: Date.now() - t0 };
}

// alice: support, every PII column masked, read-only. bob: every PII column masked too, and may write.
const POLICY = maskedPolicy({ billing: { groups: ['billing'], write: true } });

describe('behind the transaction pooler (alice read-only, bob a writing role with every PII column masked)', () => {
  let stack: Stack;
  let pii: string[];
  let ssn1: string;
  let email1: string;
  let phone1: string;
  let alice: WireClient;
  const q = (sql: string) => run(alice, sql);

  beforeAll(async () => {
    stack = await startStack({ poolMode: 'transaction', config: POLICY });
    pii = await piiValues((t) => stack.sql(t), 10);
    const r = await stack.sql<{ ssn: string; email: string; phone: string }>('SELECT ssn, email, phone FROM customers WHERE id = 1');
    ({ ssn: ssn1, email: email1, phone: phone1 } = r.rows[0]!);
    alice = await stack.wire('alice@example.com');
  });
  afterAll(async () => {
    alice?.close();
    await stack?.stop();
  });

  // Was a hole, closed: SQL FETCH reads a protocol-level named portal; the FETCH statement reads no table, so it gets no mask plan.
  it('FETCH of a protocol-level named portal returns its masked columns in clear', async () => {
    const w = await stack.wire('alice@example.com');
    await simple(w, 'BEGIN');
    const bound = await roundTrip(w, [parse('review_s1', 'SELECT id, ssn, email, iban, phone FROM customers WHERE id <= 3'), bind('review_p1', 'review_s1'), syncMessage]);
    const fetched = await simple(w, 'FETCH ALL FROM review_p1');
    await simple(w, 'ROLLBACK');
    w.close();
    expect(errorsOf(bound)).toEqual([]);
    expect(leaked(textOf(fetched), pii)).toEqual([]);
  });

  // Was a hole, closed: ts_stat(text) runs the SQL text it is given (like query_to_xml); it is not in OPAQUE_FUNCTIONS.
  it('ts_stat() runs a query over masked columns that the proxy never sees', async () => {
    const r = await q("SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', ssn) || to_tsvector(''simple'', email) FROM customers WHERE id <= 5')");
    expect(leaked(r.text, pii)).toEqual([]);
  });

  // Was a hole, closed: ts_rewrite(tsquery, text) runs the SQL text it is given; not in OPAQUE_FUNCTIONS either.
  it('ts_rewrite() runs a query over masked columns that the proxy never sees', async () => {
    const r = await q("SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, quote_literal(ssn)::tsquery FROM customers WHERE id = 1')");
    expect(r.text).not.toContain(ssn1);
  });

  // Was a hole, closed: texts that differ only in literals share one analysis (analyzer.ts shapes / literalShape), but a literal
  // can change what a statement does: substring(x FROM 2) is allowed, substring(x FROM '^1') is a regular expression
  // whose NULL-ness (a match or not) comes back.
  it('a literal-shape twin of an allowed statement runs unchecked: substring(ssn FROM pattern) rebuilds an ssn', async () => {
    const allowed = 'SELECT id, substring(ssn FROM 2) FROM customers WHERE id = 1';
    const matches = async (prefix: string): Promise<boolean | undefined> => {
      await q(allowed); // analysed (allowed) and cached under the shape `… substring(ssn FROM ?) … id = ?`
      const r = await q(`SELECT id, substring(ssn FROM '^${prefix}') FROM customers WHERE id = 1`);
      if (r.errors.length) return undefined;
      return r.rows[0]?.[1] !== null;
    };
    let got = '';
    for (let k = 0; k < ssn1.length; k++) {
      let digit: string | undefined;
      for (let d = 0; d <= 9 && digit === undefined; d++) {
        const m = await matches(got + String(d));
        if (m === undefined) return expect(got).not.toBe(ssn1); // refused: closed
        if (m) digit = String(d);
      }
      got += digit ?? '?';
    }
    expect(got).not.toBe(ssn1);
  });

  // Was a hole, closed: the same shape sharing turns ORDER BY 1 (a clean column) into ORDER BY 2 (a masked one): a sort oracle.
  it('a literal-shape twin of an allowed statement runs unchecked: ORDER BY <position> of a masked column', async () => {
    const probe = (position: number, guess: string) => `SELECT o, x FROM (SELECT 1 AS o, ssn AS x FROM customers WHERE id = 1 UNION ALL SELECT 0, '${guess}') u ORDER BY ${position}`;
    await q(probe(1, 'z'));
    const below = await q(probe(2, ssn1.slice(0, 6)));
    const above = await q(probe(2, `${ssn1.slice(0, 5)}${Number(ssn1[5]) + 1}`));
    // Refused like `ORDER BY 2` on its own; otherwise the first row says on which side of the value the guess sorts.
    expect([below.errors.map((e) => e.code), above.errors.map((e) => e.code)]).toEqual([['42501'], ['42501']]);
    expect([below.rows[0]?.[0], above.rows[0]?.[0]]).not.toEqual(['0', '1']);
  });

  // Was a hole, closed: max()/min() over record[] compare records lazily: a second field of a type without a btree
  // comparison (json) is only looked at when the first fields are equal, and then fails (42883): an equality oracle
  // through allow-listed steps only (ROW, substr, ARRAY subquery, UNION ALL, max). min/max now compare values of
  // built-in scalar types only, whatever step, block or view made the value (ValuePath.compares).
  it('max() over arrays of records fails only when a masked prefix equals a guess: ssn rebuilt digit by digit', async () => {
    const equal = async (k: number, guess: string): Promise<boolean | undefined> => {
      const r = await q(`SELECT max(a) FROM (SELECT ARRAY(SELECT ROW(substr(c.ssn, 1, ${k}), '{}'::json) FROM customers c WHERE c.id = 1) AS a
        UNION ALL SELECT ARRAY(SELECT ROW('${guess}'::text, '{}'::json))) s`);
      if (r.errors.some((e) => e.code === '42501')) return undefined;
      return r.errors.some((e) => e.code === '42883');
    };
    let got = '';
    for (let k = 1; k <= ssn1.length; k++) {
      let digit: string | undefined;
      for (let d = 0; d <= 9 && digit === undefined; d++) {
        const hit = await equal(k, got + String(d));
        if (hit === undefined) return expect(got).not.toBe(ssn1); // refused: closed
        if (hit) digit = String(d);
      }
      got += digit ?? '?';
    }
    expect(got).not.toBe(ssn1);
  });

  // Was a hole, closed: format() with a constant width fails with 54000 at once when width - length(value) reaches
  // PostgreSQL's 1 GB allocation limit, and only builds (seconds, 1 GB) otherwise: a length oracle. Only the cheap
  // side is run here: with width 1073741823 + 21 it fails at once iff length(email) <= 21; with + 20 it would spend
  // ~4 s building 1 GB first (customer 1's email has 21 characters). format() over masked values takes no widths now.
  it('format() with a huge constant width is a length oracle (MaxAllocSize)', async () => {
    const r = await q(`SELECT length(format('%${1073741823 + email1.length}s', email)) FROM customers WHERE id = 1`);
    expect(r.errors.map((e) => e.code)).not.toContain('54000');
    expect(r.errors.map((e) => e.code)).toEqual(['42501']);
  });

  // Closed: user code the statement never names (a cast over a type the writer created, whose function reads the
  // masked table and raises a notice) cannot be defined by a role with masks (policy.code_definition).
  it('a writing role runs a user-defined cast function that reads masked columns (CREATE CAST)', async () => {
    const bob = await stack.wire('bob@example.com');
    const setup = [
      "CREATE TYPE public.review_peek_t AS ENUM ('x')",
      `CREATE FUNCTION public.review_peek_fn(t text) RETURNS public.review_peek_t LANGUAGE plpgsql AS $$
       BEGIN RAISE NOTICE '%', (SELECT string_agg(ssn || ' ' || email || ' ' || iban, ', ') FROM public.customers WHERE id <= 3); RETURN 'x'; END $$`,
      'CREATE CAST (text AS public.review_peek_t) WITH FUNCTION public.review_peek_fn(text)',
    ];
    const codes: string[][] = [];
    for (const s of setup) codes.push((await run(bob, s)).errors.map((e) => e.code));
    const r = await run(bob, "SELECT 'x'::text::public.review_peek_t");
    bob.close();
    expect(codes).toEqual([['42501'], ['42501'], ['42501']]);
    expect(leaked(r.text, pii)).toEqual([]);
  });

  // Closed: CREATE TEMP TABLE customers … AS would shadow public.customers, and `SELECT phone FROM customers` would
  // return the caller's own values under the keyed hash of public.customers.phone — a dictionary of h(guess).
  // Roles with masks may not create temporary objects (policy.temporary_object).
  it('a writing role gets the keyed hash of values it chose through a temporary table shadowing customers', async () => {
    const bob = await stack.wire('bob@example.com');
    await run(bob, 'BEGIN');
    const created = await run(bob, "CREATE TEMP TABLE customers ON COMMIT DROP AS SELECT g::bigint AS id, '+49 30 ' || lpad(g::text, 7, '0') AS phone FROM generate_series(0, 99999) g");
    const dictionary = (await run(bob, 'SELECT id, phone FROM customers')).rows;
    await run(bob, 'COMMIT');
    const target = (await run(bob, 'SELECT phone FROM customers WHERE id = 1')).rows[0]?.[0];
    bob.close();
    expect(created.errors.map((e) => e.code)).toEqual(['42501']);
    const hit = dictionary.find((r) => r[1] !== null && r[1] === target);
    const recovered = hit ? `+49 30 ${String(hit[0]).padStart(7, '0')}` : undefined;
    expect(recovered).not.toBe(phone1);
  });
});

describe('straight to PostgreSQL (upstream_pool_mode: none), bob a writing role with every PII column masked', () => {
  let stack: Stack;
  let pii: string[];
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'none', config: POLICY });
    pii = await piiValues((t) => stack.sql(t), 5);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  // Closed: EXECUTE reads no table, so its rows would get no mask plan: PREPARE over a table with masked columns is
  // refused to roles with masks (policy.prepare).
  it('SQL PREPARE then EXECUTE returns masked columns in clear', async () => {
    const bob = await stack.wire('bob@example.com');
    const prepared = await run(bob, 'PREPARE review_p AS SELECT id, ssn, email, iban, phone FROM customers WHERE id <= 3');
    const executed = await run(bob, 'EXECUTE review_p');
    bob.close();
    expect(prepared.errors.map((e) => e.code)).toEqual(['42501']);
    expect(leaked(executed.text, pii)).toEqual([]);
  });
});
