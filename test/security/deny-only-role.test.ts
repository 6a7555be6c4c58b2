// A role that sees every PII column but one, which it may not read at all:
//   auditor: { groups: [auditor], unmask: ["*"], deny: [public.customers.ssn] }
// Its masked set is empty, and decide() returns before the checks that only run "when the role
// has masked columns": functions that run SQL text, system views with column samples, user
// functions. Each is a way to read the denied column. dave is the auditor.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { WireClient, simple, textOf, errorsOf, maskedPolicy } from './support.ts';

let stack: Stack;
let ssns: string[];
let dave: WireClient;

beforeAll(async () => {
  stack = await startStack({ poolMode: 'transaction', config: maskedPolicy({ auditor: { groups: ['auditor'], unmask: ['*'], deny: ['public.customers.ssn'] } }) });
  await stack.sql("CREATE FUNCTION public.ssn_of(i bigint) RETURNS text LANGUAGE sql AS 'SELECT ssn FROM customers WHERE id = i'; ANALYZE customers");
  ssns = (await stack.sql<{ ssn: string }>('SELECT ssn FROM customers WHERE id <= 3 ORDER BY id')).rows.map((r) => r.ssn);
  const t = await stack.token('dave@example.com');
  dave = await WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', 'scalple.identity': t.accessToken });
});
afterAll(async () => {
  dave?.close();
  await stack?.stop();
});

describe('a denied column stays unreadable for a role without masks', () => {
  it('the column itself is refused (the baseline)', async () => {
    const frames = await simple(dave, 'SELECT ssn FROM customers WHERE id = 1');
    expect(errorsOf(frames).map((e) => e.code)).toEqual(['42501']);
  });

  it('query_to_xml() with the column in its SQL text', async () => {
    const frames = await simple(dave, "SELECT query_to_xml('select ssn from customers where id <= 3', true, true, '')");
    expect(ssns.filter((s) => textOf(frames).includes(s))).toEqual([]);
  });

  it('pg_stats histogram bounds of the column', async () => {
    const frames = await simple(dave, "SELECT histogram_bounds::text, most_common_vals::text FROM pg_stats WHERE tablename = 'customers' AND attname = 'ssn'");
    expect(ssns.filter((s) => textOf(frames).includes(s))).toEqual([]);
  });

  it('a user function that reads the column', async () => {
    const frames = await simple(dave, 'SELECT ssn_of(1), ssn_of(2), ssn_of(3)');
    expect(ssns.filter((s) => textOf(frames).includes(s))).toEqual([]);
  });
});
