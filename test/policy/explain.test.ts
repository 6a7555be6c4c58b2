// `scalple policy explain` against the live catalog, and observe-only mode (enforce: false):
// nothing is masked or refused, but the record says what would have been.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { startStack, type Stack, SCALPLE_BIN } from '../support/stack.ts';
import { demoPolicy } from '../../src/demo/demo.ts';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ poolMode: 'none', config: { ...demoPolicy('mask-key-for-explain-tests-0123456789'), enforce: false } });
});
afterAll(async () => {
  await stack?.stop();
});

function scalple(args: string[]) {
  return spawnSync(process.execPath, [SCALPLE_BIN, ...args], { encoding: 'utf8', env: { ...process.env, SCALPLE_CONFIG: stack.configFile } });
}

describe('scalple policy explain', () => {
  it('tells, per output column, where it comes from and what the role receives', () => {
    const r = scalple(['policy', 'explain', 'SELECT c.id, c.email AS e, c.iban, o.total FROM customers c JOIN orders o ON o.customer_id = c.id', '--role', 'support', '--format', 'json']);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.decision).toBe('allow');
    expect(out.columns).toEqual([
      { column: 'id', sources: ['public.customers.id'], receives: 'plain' },
      { column: 'e', sources: ['public.customers.email'], receives: 'masked: email' },
      { column: 'iban', sources: ['public.customers.iban'], receives: 'masked: partial(keep_last=4)' },
      { column: 'total', sources: ['public.orders.total'], receives: 'plain' },
    ]);
    // A value computed from a masked column through the allow-list (built-ins that cannot fail or
    // wait depending on the value) comes back redacted; anything else over it is refused, naming why.
    const computed = JSON.parse(scalple(['policy', 'explain', "SELECT id, lower(email) AS l, ssn || '' AS s FROM customers", '--role', 'support', '--format', 'json']).stdout);
    expect(computed).toMatchObject({ decision: 'allow' });
    expect(computed.columns).toEqual([
      { column: 'id', sources: ['public.customers.id'], receives: 'plain' },
      { column: 'l', sources: ['public.customers.email'], receives: 'redacted (computed from public.customers.email)' },
      { column: 's', sources: ['public.customers.ssn'], receives: 'redacted (computed from public.customers.ssn)' },
    ]);
    const through = JSON.parse(scalple(['policy', 'explain', 'WITH x AS (SELECT email FROM customers) SELECT e FROM (SELECT email AS e FROM x) s', '--role', 'support', '--format', 'json']).stdout);
    expect(through.columns).toEqual([{ column: 'e', sources: ['public.customers.email'], receives: 'masked: email' }]);
    const oracle = JSON.parse(scalple(['policy', 'explain', 'SELECT ssn::int FROM customers', '--role', 'support', '--format', 'json']).stdout);
    expect(oracle).toMatchObject({ decision: 'refuse', rule: 'mask.computed', message: expect.stringMatching(/ssn.*a cast to integer/) });
    expect(oracle.columns).toEqual([{ column: 'ssn', sources: ['public.customers.ssn'], receives: 'refused' }]);
    const redactedTable = scalple(['policy', 'explain', 'SELECT upper(email) FROM customers', '--role', 'support']);
    expect(redactedTable.stdout).toMatch(/upper.*public\.customers\.email.*redacted \(computed from public\.customers\.email\)/);
    const billing = JSON.parse(scalple(['policy', 'explain', 'SELECT iban FROM customers', '--role', 'billing', '--format', 'json']).stdout);
    expect(billing.columns[0].receives).toBe('plain');
    const refused = scalple(['policy', 'explain', "SELECT id FROM customers WHERE ssn LIKE '1%'", '--role', 'support']);
    expect(refused.stdout).toMatch(/REFUSED for role support: .*ssn.*rule mask\.inference/);
    const table = scalple(['policy', 'explain', 'SELECT email FROM customers', '--role', 'support']);
    expect(table.stdout).toMatch(/email.*public\.customers\.email.*masked: email/);
  });

  it('exits 2 naming the roles when the role does not exist', () => {
    const r = scalple(['policy', 'explain', 'SELECT 1', '--role', 'nobody']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/no role named nobody .*support, billing, dba/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('enforce: false', () => {
  it('masks and refuses nothing, and records what would have been masked or denied', async () => {
    const c = await stack.connect('alice@example.com');
    const r = await c.query('SELECT ssn FROM customers WHERE id = 1');
    expect(r.rows[0].ssn).toMatch(/^\d{9}$/);
    await c.query("SELECT id FROM customers WHERE ssn LIKE '1%' LIMIT 1");
    await c.end();
    await stack.flushAudit();
    const rec = await stack.sql("SELECT decision, rule FROM scalple_audit.records WHERE record_type = 'intent' AND email = 'alice@example.com' ORDER BY seq");
    expect(rec.rows).toEqual([
      { decision: 'allow', rule: 'would mask: public.customers.ssn=redact' },
      { decision: 'allow', rule: 'would deny: mask.inference' },
    ]);
  });
});
