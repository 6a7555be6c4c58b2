// Inference through masked columns: alice (every PII column masked) never receives a masked value
// in a result cell, but the value still decides which rows come back, how many, in which order,
// whether the statement fails, and what the error says. Each test reconstructs a value that way,
// or shows a value in an error or in another session's statement; issue 3: "predicates, joins,
// ORDER BY and GROUP BY on masked columns are refused … must not work as oracles".
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { WireClient, simple, rowsOf, errorsOf, textOf, leaked, piiValues, maskedPolicy } from './support.ts';

let stack: Stack;
let pii: string[];
let ssn1: string;
let email1: string;
let alice: WireClient;

beforeAll(async () => {
  stack = await startStack({ poolMode: 'transaction', config: maskedPolicy() });
  pii = await piiValues((t) => stack.sql(t), 10);
  const r = await stack.sql<{ ssn: string; email: string }>('SELECT ssn, email FROM customers WHERE id = 1');
  ssn1 = r.rows[0]!.ssn;
  email1 = r.rows[0]!.email;
  const t = await stack.token('alice@example.com');
  alice = await WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', 'scalple.identity': t.accessToken });
});
afterAll(async () => {
  alice?.close();
  await stack?.stop();
});

async function q(sql: string): Promise<{ rows: (string | null)[][]; errors: { code: string; message: string }[]; text: string; ms: number }> {
  const t0 = Date.now();
  const frames = await simple(alice, sql);
  return { rows: rowsOf(frames), errors: errorsOf(frames), text: textOf(frames), ms: Date.now() - t0 };
}

describe('subqueries outside the select list (WHERE, JOIN, HAVING, LIMIT) are not treated as filters', () => {
  it('a masked column in the output of a WHERE subquery chooses rows: ssn rebuilt digit by digit in one statement', async () => {
    const r = await q(`SELECT string_agg((o.id - 1000)::text, '' ORDER BY p.id) AS x FROM orders o, payments p
      WHERE p.id <= 9 AND o.id = (SELECT substr(c.ssn, p.id::int, 1)::int + 1000 FROM customers c WHERE c.id = 1)`);
    expect(r.text).not.toContain(ssn1);
    expect(r.rows.flat()).not.toContain(ssn1);
  });

  it('the same for an email, character by character', async () => {
    const r = await q(`SELECT string_agg(chr((o.id - 1000)::int), '' ORDER BY p.id) AS x FROM orders o, payments p
      WHERE p.id <= 40 AND o.id = (SELECT nullif(ascii(substr(c.email, p.id::int, 1)), 0) + 1000 FROM customers c WHERE c.id = 1)`);
    expect(r.text).not.toContain(email1);
  });

  it('a correlated scalar subquery over a masked column in WHERE is refused like the column itself', async () => {
    const r = await q("SELECT id FROM customers c WHERE id <= 3 AND (SELECT c.ssn) LIKE '1%'");
    expect(r.errors.map((e) => e.code)).toEqual(['42501']);
  });

  it('ORDER BY a subquery over a masked column is refused', async () => {
    const r = await q('SELECT id FROM customers c WHERE id <= 12 ORDER BY (SELECT c.email)');
    expect(r.errors.map((e) => e.code)).toEqual(['42501']);
  });

  it('HAVING and IN (subquery) over masked values are refused', async () => {
    const a = await q('SELECT region, count(*) FROM customers GROUP BY region HAVING count(*) > (SELECT length(max(ssn)) FROM customers)');
    const b = await q('SELECT id FROM customers WHERE id IN (SELECT length(ssn) FROM customers WHERE id = 1)');
    expect([a.errors.map((e) => e.code), b.errors.map((e) => e.code)]).toEqual([['42501'], ['42501']]);
  });

  it('LIMIT computed from a masked value: ssn rebuilt from row counts', async () => {
    const r = await q(`SELECT string_agg(n::text, '' ORDER BY pos) AS x FROM (
        SELECT p.id AS pos, (SELECT count(*) FROM (SELECT 1 FROM orders LIMIT (SELECT substr(c.ssn, p.id::int, 1)::int FROM customers c WHERE c.id = 1)) z) AS n
        FROM payments p WHERE p.id <= 9) d`);
    expect(r.text).not.toContain(ssn1);
  });
});

describe('values that are redacted in the cell still act on the result', () => {
  it('a set-returning function over a masked value multiplies rows: ssn rebuilt from row counts', async () => {
    const digits: string[] = [];
    for (let k = 1; k <= ssn1.length; k++) {
      const r = await q(`SELECT id, generate_series(1, substr(ssn, ${k}, 1)::int) FROM customers WHERE id = 1`);
      digits.push(String(r.errors.length ? 'x' : r.rows.length));
    }
    expect(digits.join('')).not.toBe(ssn1);
  });

  it('an error raised only for some values is an oracle (CASE … THEN 1/0): ssn rebuilt from errors', async () => {
    let got = '';
    for (let k = 1; k <= ssn1.length; k++) {
      let digit = '?';
      for (let d = 0; d <= 9; d++) {
        const r = await q(`SELECT id, CASE WHEN substr(ssn, ${k}, 1) = '${d}' THEN 1 / (id - id) ELSE 0 END FROM customers WHERE id = 1`);
        if (r.errors.some((e) => e.code === '22012')) {
          digit = String(d);
          break;
        }
      }
      got += digit;
    }
    expect(got).not.toBe(ssn1);
  });

  it('time spent only for some values is an oracle (CASE … THEN pg_sleep)', async () => {
    const hit = await q("SELECT id, CASE WHEN substr(ssn, 1, 1) = '1' THEN pg_sleep(0.7) END FROM customers WHERE id = 1");
    // Refused, or the expression over the masked value is not evaluated.
    expect(hit.errors.length > 0 || hit.ms < 500).toBe(true);
  });

  it('ORDER BY <ordinal> of a masked column is refused like ORDER BY the column', async () => {
    const r = await q('SELECT id, email FROM customers WHERE id <= 12 ORDER BY 2');
    expect(r.errors.map((e) => e.code)).toEqual(['42501']);
  });

  it('GROUP BY <ordinal> of a masked column is refused like GROUP BY the column', async () => {
    const r = await q('SELECT email, count(*) FROM customers WHERE id <= 3 GROUP BY 1');
    expect(r.errors.map((e) => e.code)).toEqual(['42501']);
  });

  it('ORDER BY <ordinal> against probe rows: ssn rebuilt by binary search on the sort order', async () => {
    // One probe row (id 0) beside the real one (id 1), sorted by the masked column (ties: probe
    // first): whichever comes first says whether the probe sorts before the value.
    const probeFirst = async (probe: string) => {
      const r = await q(`SELECT id, e FROM (SELECT 1 AS id, ssn COLLATE "C" AS e FROM customers WHERE id = 1 UNION ALL SELECT 0, '${probe}' COLLATE "C") x ORDER BY 2, 1`);
      if (r.errors.length) return undefined;
      return r.rows[0]?.[0] === '0';
    };
    let prefix = '';
    for (let k = 0; k < ssn1.length; k++) {
      let lo = 0;
      let hi = 9;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        const first = await probeFirst(prefix + String(mid));
        if (first === undefined) return; // refused: the oracle is closed
        if (first) lo = mid;
        else hi = mid - 1;
      }
      prefix += String(lo);
    }
    expect(prefix).not.toBe(ssn1);
  });

  it('UNION deduplication against a guessed value: ssn rebuilt from count(*)', async () => {
    let got = '';
    for (let k = 1; k <= ssn1.length; k++) {
      let digit = '?';
      for (let d = 0; d <= 9; d++) {
        const r = await q(`SELECT count(*) FROM (SELECT substr(ssn, ${k}, 1) FROM customers WHERE id = 1 UNION SELECT '${d}') x`);
        if (r.errors.length) break;
        if (r.rows[0]?.[0] === '1') {
          digit = String(d);
          break;
        }
      }
      got += digit;
    }
    expect(got).not.toBe(ssn1);
  });
});

describe('computed outputs come back redacted, and are not oracles', () => {
  it('an allowed computation runs and comes back redacted, NULL staying NULL', async () => {
    const r = await q("SELECT id, lower(ssn), ssn || '', concat(email, region), substr(ssn, 1, 3), length(email), ssn || NULL FROM customers WHERE id <= 3 ORDER BY id");
    expect(r.errors).toEqual([]);
    expect(r.rows.map((row) => row.slice(1))).toEqual([1, 2, 3].map(() => ['[redacted]', '[redacted]', '[redacted]', '[redacted]', '[redacted]', null]));
    expect(leaked(r.text, pii)).toEqual([]);
  });

  it('NULL-ness that depends on the value (NULLIF against a guess) is refused: no digit by digit rebuild', async () => {
    let got = '';
    for (let k = 1; k <= ssn1.length; k++) {
      let digit = '?';
      for (let d = 0; d <= 9; d++) {
        const r = await q(`SELECT nullif(substr(ssn, ${k}, 1), '${d}') FROM customers WHERE id = 1`);
        if (r.errors.length) break;
        if (r.rows[0]?.[0] === null) {
          digit = String(d);
          break;
        }
      }
      got += digit;
    }
    expect(got).not.toBe(ssn1);
  });

  it('a length or offset computed from a masked value (an error when negative) is refused', async () => {
    let got = '';
    for (let k = 1; k <= ssn1.length; k++) {
      let digit = '?';
      for (let d = 0; d <= 9; d++) {
        // Only allow-listed functions: ltrim() empties the digit when it is d, and substr() fails
        // on the negative length otherwise. The masked value sits in a length argument: refused.
        const r = await q(`SELECT substr('abcdefghij', 1, -length(ltrim(substr(ssn, ${k}, 1), '${d}'))) FROM customers WHERE id = 1`);
        if (r.errors.some((e) => e.code === '42501')) break;
        if (!r.errors.length) {
          digit = String(d);
          break;
        }
      }
      got += digit;
    }
    expect(got).not.toBe(ssn1);
  });

  it('the keyed hash is never applied to a value the caller chose (no dictionary through UNION ALL)', async () => {
    const phone1 = (await stack.sql<{ phone: string }>('SELECT phone FROM customers WHERE id = 1')).rows[0]!.phone;
    const r = await q(`SELECT phone FROM customers WHERE id = 1 UNION ALL SELECT '${phone1}'`);
    expect(r.rows).toEqual([['[redacted]'], ['[redacted]']]);
    const plain = await q('SELECT phone FROM customers WHERE id = 1');
    expect(plain.rows[0]?.[0]).toMatch(/^h:/);
  });

  it('a subquery whose output is computed over a masked value and compared outside is refused like the column', async () => {
    const a = await q("SELECT id FROM (SELECT id, lower(email) AS e FROM customers) s WHERE e LIKE 'customer1%'");
    const b = await q("SELECT count(*) FROM (SELECT DISTINCT left(ssn, 1) FROM customers) s");
    const c = await q("SELECT id FROM customers c WHERE id <= 3 AND (SELECT upper(c.ssn)) > '5'");
    expect([a, b, c].map((r) => r.errors.map((e) => e.code))).toEqual([['42501'], ['42501'], ['42501']]);
  });
});

describe('texts that differ only in literals', () => {
  it('do not reuse an analysis that read a literal: ORDER BY 1 then ORDER BY 2, format strings, DISTINCT ON, EXPLAIN options', async () => {
    const pairs: [string, string][] = [
      ['SELECT id, ssn FROM customers WHERE id <= 5 ORDER BY 1', 'SELECT id, ssn FROM customers WHERE id <= 5 ORDER BY 2'],
      ['SELECT DISTINCT ON (1) id, email FROM customers WHERE id <= 5', 'SELECT DISTINCT ON (2) id, email FROM customers WHERE id <= 5'],
      ['SELECT phone, max(ssn) FROM customers WHERE id <= 5 GROUP BY 1', 'SELECT phone, max(ssn) FROM customers WHERE id <= 5 GROUP BY 2'],
      ["SELECT id, format('%s', ssn, 'x') FROM customers WHERE id <= 2", "SELECT id, format('%*s', ssn, 'x') FROM customers WHERE id <= 2"],
      ['EXPLAIN (ANALYZE 0) DELETE FROM payments WHERE id = -1', 'EXPLAIN (ANALYZE 1) DELETE FROM payments WHERE id = -1'],
    ];
    for (const [first, second] of pairs) {
      const a = await q(first);
      const b = await q(second);
      expect(`${a.errors.map((e) => e.code).join(',') || 'ok'} / ${b.errors.map((e) => e.code).join(',') || 'ok'}`, second).toBe('ok / 42501');
    }
  });
});

describe('hash-masked columns: equality between hashed columns only', () => {
  it('a guess of the clear value is refused in every form that compares it; equality between hashed columns returns hashes only', async () => {
    const [row] = (await stack.sql<{ phone: string }>('SELECT phone FROM customers WHERE id = 1')).rows;
    const phone1 = row!.phone;
    const guesses = [
      `SELECT id FROM customers WHERE phone = '${phone1}'`,
      `SELECT id FROM customers WHERE phone IS NOT DISTINCT FROM '${phone1}'`,
      `SELECT count(*) FROM customers WHERE phone <> '${phone1}'`,
      `SELECT id FROM customers WHERE phone IN ('${phone1}', 'x')`,
      `SELECT id FROM customers WHERE phone = lower('${phone1}')`,
      `SELECT id FROM customers WHERE phone = (SELECT '${phone1}')`,
      `WITH g(p) AS (VALUES ('${phone1}')) SELECT c.id FROM customers c JOIN g ON c.phone = g.p`,
      `WITH g(phone) AS (SELECT '${phone1}'::text) SELECT c.id FROM customers c JOIN g USING (phone)`,
      `SELECT c.id FROM customers c JOIN (SELECT phone FROM customers WHERE id = 2 UNION ALL SELECT '${phone1}') g ON c.phone = g.phone`,
      `SELECT c.id FROM customers c JOIN orders o ON c.phone = o.status`,
      `SELECT id FROM customers WHERE phone < '${phone1}'`,
      `SELECT id FROM customers ORDER BY phone LIMIT 1`,
    ];
    const outcomes: string[] = [];
    for (const sql of guesses) {
      const r = await q(sql);
      outcomes.push(`${r.errors.map((e) => e.code).join(',')}:${r.rows.length}`);
    }
    expect(outcomes).toEqual(guesses.map(() => '42501:0'));
    const ok = await q('SELECT a.phone, b.phone, count(*) FROM customers a JOIN customers b ON a.phone = b.phone GROUP BY a.phone, b.phone HAVING count(*) >= 1');
    expect(ok.errors).toEqual([]);
    expect(ok.rows.length).toBeGreaterThan(100);
    expect(ok.rows.every(([a, b]) => a === b && /^h:[0-9a-f]{16}$/.test(a ?? ''))).toBe(true);
    expect(leaked(ok.text, pii)).toEqual([]);
  });

  // KNOWN HOLE (README, Known limitations): the proxy does not choose the plan. With an index on
  // the hashed column, PostgreSQL answers an equality join with a merge join over that index, and
  // the rows (and what LIMIT keeps) come in the order of the clear value — what ORDER BY phone is
  // refused for. Closing it needs the proxy to reorder rows (session.ts) and refuse LIMIT and
  // order-sensitive aggregates next to hash equality, or the comparison to run on a keyed digest
  // upstream. This test fails while the hole is open; it.fails keeps the suite green until then.
  it.fails('rows joined by equality of a hashed column do not come back in the order of its clear value', async () => {
    await stack.sql('CREATE INDEX customers_phone_hole ON customers (phone); ANALYZE customers');
    try {
      const r = await q('SELECT a.id FROM customers a JOIN customers b ON a.phone = b.phone LIMIT 20');
      const clear = await stack.sql<{ id: string }>('SELECT id::text AS id FROM customers ORDER BY phone LIMIT 20');
      expect(r.errors).toEqual([]);
      expect(r.rows.map(([id]) => id)).not.toEqual(clear.rows.map((x) => x.id));
    } finally {
      await stack.sql('DROP INDEX customers_phone_hole; ANALYZE customers');
    }
  });
});

describe('errors', () => {
  it('messages that print a value without quotes are scrubbed too (chr, make_date, get_byte, set_bit)', async () => {
    const texts: string[] = [];
    for (const sql of [
      'SELECT chr(ssn::int) FROM customers WHERE id = 1',
      'SELECT make_date(ssn::int, 1, 1) FROM customers WHERE id = 1',
      "SELECT get_byte('\\x00'::bytea, ssn::int) FROM customers WHERE id = 1",
      "SELECT set_bit('\\x00'::bytea, ssn::int, 1) FROM customers WHERE id = 1",
    ]) texts.push((await q(sql)).text);
    expect(leaked(texts.join('\n'), pii)).toEqual([]);
  });
});

describe("other sessions' statements", () => {
  it("pg_stat_get_backend_activity() does not show another person's running statement and its literals", async () => {
    const email5 = (await stack.sql<{ email: string }>('SELECT email FROM customers WHERE id = 5')).rows[0]!.email;
    const carol = await stack.connect('carol@example.com');
    const running = carol.query(`SELECT id, pg_sleep(1.5) FROM customers WHERE email = '${email5}'`);
    await new Promise((r) => setTimeout(r, 400));
    const r = await q('SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s');
    await running;
    await carol.end();
    expect(r.text).not.toContain(email5);
    expect(r.text).not.toContain('carol@example.com');
  });
});
