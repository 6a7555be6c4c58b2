// The proxy analyses a statement's text with libpg-query (PostgreSQL 18's grammar, lexer settings
// fixed: standard_conforming_strings on, UTF-8), then PostgreSQL 15 parses the same bytes with the
// session's own settings. Wherever the two read the text differently, the proxy checks one
// statement and PostgreSQL runs another. Every test here is an attack by alice, whose role masks
// every PII column and may not write: none of them may return a clear value or change a row.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { WireClient, simple, rowsOf, textOf, leaked, piiValues, maskedPolicy } from './support.ts';

describe('behind the transaction pooler (default deployment)', () => {
  let stack: Stack;
  let pii: string[];
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'transaction', config: maskedPolicy() });
    pii = await piiValues((t) => stack.sql(t), 3);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('standard_conforming_strings=off in the startup packet does not hide a read of ssn inside a "string"', async () => {
    // libpg-query: '\' is a whole string, and the rest is a comment: SELECT of a constant, no table.
    // PostgreSQL with standard_conforming_strings=off: '\' AS a --' is one string; ssn is selected.
    // The proxy refuses the setting at startup: the statement never runs.
    await expect(stack.wire('alice@example.com', { standard_conforming_strings: 'off' })).rejects.toThrow(/standard_conforming_strings must stay on/);
  });

  it('client_encoding=SJIS in the startup packet does not hide a read of ssn inside an E\'\' string', async () => {
    // Bytes C3 81 5C 27 ("Á\'" in UTF-8): the proxy sees an escaped quote and a string running to
    // the end; SJIS reads C3 as one character and 81 5C as another, so the quote closes the string.
    // The proxy refuses any client encoding but UTF-8 at startup: the statement never runs.
    await expect(stack.wire('alice@example.com', { client_encoding: 'SJIS' })).rejects.toThrow(/client_encoding SJIS is not supported/);
  });

  it('a statement PostgreSQL 15 accepts and the PostgreSQL 18 grammar rejects is not let through unchecked', async () => {
    // SYSTEM_USER became a reserved keyword in PostgreSQL 16: libpg-query 18 fails to parse this,
    // the proxy treats the failure as "PostgreSQL will refuse it" and allows it with no mask plan.
    const w = await stack.wire('alice@example.com');
    const frames = await simple(w, 'SELECT system_user.ssn, system_user.email FROM customers system_user WHERE id <= 2');
    w.close();
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });

  it('a read-only role cannot write through a statement the proxy cannot parse', async () => {
    const before = await stack.sql<{ region: string }>('SELECT region FROM customers WHERE id = 3');
    const w = await stack.wire('alice@example.com');
    const frames = await simple(w, "UPDATE customers system_user SET region = 'HACKED' WHERE system_user.id = 3 RETURNING system_user.ssn");
    w.close();
    const after = await stack.sql<{ region: string }>('SELECT region FROM customers WHERE id = 3');
    if (after.rows[0]!.region !== before.rows[0]!.region) await stack.sql(`UPDATE customers SET region = '${before.rows[0]!.region}' WHERE id = 3`);
    expect(after.rows[0]!.region).toBe(before.rows[0]!.region);
    expect(rowsOf(frames)).toEqual([]);
  });

  it('records the customers table for a read the proxy could not parse (who-accessed must find it)', async () => {
    const w = await stack.wire('alice@example.com');
    await simple(w, 'SELECT system_user.id FROM customers system_user WHERE id = 1');
    w.close();
    await stack.flushAudit();
    const r = await stack.sql<{ tables: string[]; decision: string }>("SELECT tables, decision FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE '%FROM customers system_user WHERE id = 1%' ORDER BY ts DESC LIMIT 1");
    // Either refused, or recorded as a read of public.customers.
    expect(r.rows[0]!.decision === 'deny' || (r.rows[0]!.tables ?? []).includes('public.customers')).toBe(true);
  });
});

describe('straight to PostgreSQL (upstream_pool_mode: none)', () => {
  let stack: Stack;
  let pii: string[];
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'none', config: maskedPolicy() });
    pii = await piiValues((t) => stack.sql(t), 3);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('"-c standard_conforming_strings=off" in the startup options is not forwarded to change the lexer', async () => {
    const w = await stack.wire('alice@example.com', { options: '-c standard_conforming_strings=off' });
    const frames = await simple(w, "SELECT '\\' AS a --', ssn, email FROM customers WHERE id <= 2");
    w.close();
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });

  it('read-only sessions stay read-only: BEGIN READ WRITE hidden in an unparseable statement', async () => {
    const before = await stack.sql<{ region: string }>('SELECT region FROM customers WHERE id = 4');
    const w = await stack.wire('alice@example.com');
    await simple(w, 'BEGIN READ WRITE; SELECT 1 FROM customers system_user LIMIT 1');
    await simple(w, "UPDATE customers system_user SET region = 'HACKED' WHERE system_user.id = 4");
    await simple(w, 'COMMIT');
    w.close();
    const after = await stack.sql<{ region: string }>('SELECT region FROM customers WHERE id = 4');
    if (after.rows[0]!.region !== before.rows[0]!.region) await stack.sql(`UPDATE customers SET region = '${before.rows[0]!.region}' WHERE id = 4`);
    expect(after.rows[0]!.region).toBe(before.rows[0]!.region);
  });
});
