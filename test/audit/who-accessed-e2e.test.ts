// End to end: people run real statements through the proxy (PgBouncer in transaction mode behind
// it), the proxy records the subject keys, and `scalple audit who-accessed customer 42 --config`
// — the operator's command on the proxy host — lists exactly the accesses to customer 42: a direct
// lookup, a bulk region read without the key column, a join through orders.customer_id, an
// UPDATE, a named query, an extended-protocol prepared statement, a COPY (keys read from its
// CopyData rows; more in test/subjects/copy.test.ts), and (with --include-possible;
// summarised by default) an aggregate as a possible access; none of the decoys that merely look
// like 42.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { demoPolicy } from '../../src/demo/demo.ts';
import type { SubjectAccess } from '../../src/audit/who-accessed.ts';
import { scalple } from './cli-run.ts';
import { Back, queryMessage } from '../../src/proxy/protocol.ts';

let stack: Stack;
const SUBJECTS = { customer: { table: 'public.customers', key: 'id', via: ['public.orders.customer_id', 'public.payments.customer_id'] } };

const LOOKUP = 'SELECT * FROM customers WHERE id = 42';
const BULK = "SELECT email FROM customers WHERE region = 'EU'";
const JOIN = 'SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 363';
const UPDATE = "UPDATE customers SET plan_tier = 'pro' WHERE id = 42";
const NAMED = 'SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1';
const PREPARED = 'SELECT email, region FROM customers WHERE id = $1';
const AGGREGATE = "SELECT count(*) FROM customers WHERE region = 'EU'";
const COPY = "COPY (SELECT id, email FROM customers WHERE region = 'EU') TO STDOUT CSV HEADER";
// Statements that run are stored as sent (only refused ones over masked columns are normalised).
const LOOKUP_STORED = LOOKUP;
const BULK_STORED = BULK;
const DECOYS = ['SELECT id, total FROM orders WHERE total BETWEEN 42 AND 43', 'SELECT * FROM customers WHERE id = 420', 'SELECT * FROM orders WHERE id = 42'];

beforeAll(async () => {
  const policy = demoPolicy('mask-key-for-who-accessed-e2e-0123456789') as Record<string, unknown>;
  stack = await startStack({ poolMode: 'transaction', config: { ...policy, subjects: SUBJECTS } });
});
afterAll(async () => {
  await stack?.stop();
});

describe('who-accessed through the whole product', () => {
  it('lists exactly the accesses to customer 42 that people made through the proxy', async () => {
    // Alice (support: personal data masked) gives a reason in her startup options.
    const t = await stack.token('alice@example.com');
    const alice = await stack.connect('alice@example.com', { options: `-c scalple.identity=${t.accessToken} -c scalple.reason=ticket-4711` });
    await alice.query(LOOKUP);
    const bulk = await alice.query(BULK);
    expect(bulk.fields.map((f) => f.name)).toEqual(['email']); // the hidden key column never reaches the client
    const prepared = await alice.query({ name: 'by_id', text: PREPARED, values: [42] });
    expect(Object.keys(prepared.rows[0])).toEqual(['email', 'region']);
    // A decoy whose stored text is the same as the lookup's once normalised.
    await alice.query('SELECT * FROM customers WHERE id = 420');
    await alice.end();

    const carol = await stack.connect('carol@example.com');
    for (const d of DECOYS) await carol.query(d);
    await carol.query(JOIN);
    expect((await carol.query(UPDATE)).rowCount).toBe(1);
    await carol.query(AGGREGATE);
    await carol.end();
    const copier = await stack.wire('carol@example.com');
    copier.send(queryMessage(COPY));
    const copied = await copier.readUntil((f) => f.type === Back.ReadyForQuery);
    copier.close();
    expect(copied.filter((f) => f.type === Back.CopyData).map((f) => f.body.toString())).toContain('42,customer42@example.org\n');

    const bob = await stack.connect('bob@example.com');
    await bob.query("SELECT * FROM scalple.run('get_order_by_id', '363')");
    await bob.end();
    await stack.flushAudit();

    const r = await scalple(['audit', 'who-accessed', 'customer', '42', '--include-possible', '--config', stack.configFile, '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as SubjectAccess[];
    const seen = rows.map((x) => [x.statement, x.email, x.access]);
    // Newest first.
    expect(seen).toEqual([
      [NAMED, 'bob@example.com', 'definite'],
      [COPY, 'carol@example.com', 'definite'],
      [AGGREGATE, 'carol@example.com', 'possible'],
      [UPDATE, 'carol@example.com', 'definite'],
      [JOIN, 'carol@example.com', 'definite'],
      [PREPARED, 'alice@example.com', 'definite'],
      [BULK_STORED, 'alice@example.com', 'definite'],
      [LOOKUP_STORED, 'alice@example.com', 'definite'],
    ]);
    for (const d of DECOYS) expect(rows.map((x) => x.statement)).not.toContain(d);

    const by = (s: string) => rows.find((x) => x.statement === s)!;
    expect(by(LOOKUP_STORED)).toMatchObject({ sub: 'u-alice', name: 'Alice Support', groups: ['support'], reason: 'ticket-4711', kinds: ['SELECT'], tables: ['public.customers'], decision: 'mask', rows: 1 });
    expect(by(LOOKUP_STORED).masked_fields).toMatchObject({ 'public.customers.email': expect.any(String) });
    expect(by(LOOKUP_STORED).columns).toEqual(expect.arrayContaining(['public.customers.id', 'public.customers.email']));
    expect(by(BULK_STORED)).toMatchObject({ reason: 'ticket-4711', decision: 'mask', masked_fields: { 'public.customers.email': expect.any(String) } });
    expect(by(PREPARED)).toMatchObject({ params: ['42'], reason: 'ticket-4711' });
    expect(by(JOIN)).toMatchObject({ groups: ['dba'], reason: null });
    expect(by(UPDATE)).toMatchObject({ kinds: ['UPDATE'], groups: ['dba'], rows: 1 });
    expect(by(NAMED)).toMatchObject({ named_query: 'get_order_by_id', groups: ['billing'] });
    expect(by(AGGREGATE).possible_reason).toMatch(/aggregate/);
    for (const x of rows) {
      expect(x.seq, `intent joined: ${x.statement}`).not.toBeNull();
      expect(x.chain_id).toBe('main');
    }

    // The decoys were recorded (with other keys), so leaving them out is the query's doing.
    const decoys = await stack.sql<{ statement: string; subject_keys: string[] | null }>(
      `SELECT i.statement, c.subject_keys FROM scalple_audit.records i JOIN scalple_audit.records c ON c.log_id = i.log_id AND c.record_type = 'completion'
        WHERE i.record_type = 'intent' AND i.statement = ANY($1)`, [DECOYS]);
    expect(new Set(decoys.rows.map((d) => d.statement))).toEqual(new Set(DECOYS));
    for (const d of decoys.rows) expect(d.subject_keys ?? []).not.toContain('customer:42');
    const sameText = await stack.sql<{ subject_keys: string[] | null }>(
      `SELECT c.subject_keys FROM scalple_audit.records i JOIN scalple_audit.records c ON c.log_id = i.log_id AND c.record_type = 'completion'
        WHERE i.record_type = 'intent' AND i.statement = ANY($1) ORDER BY i.seq`, [[LOOKUP_STORED, 'SELECT * FROM customers WHERE id = 420']]);
    expect(sameText.rows.map((x) => x.subject_keys)).toContainEqual(['customer:42']);
    expect(sameText.rows.map((x) => x.subject_keys)).toContainEqual(['customer:420']);

    // And the operator's read is itself in the audit log, on its own chain.
    const reads = await stack.sql<{ chain_id: string; detail: { command: string; arguments: { key: string }; results: number; by: { via: string } } }>(
      `SELECT chain_id, detail FROM scalple_audit.records WHERE event = 'audit_read'`);
    expect(reads.rows).toHaveLength(1);
    expect(reads.rows[0]).toMatchObject({ chain_id: 'audit-reads', detail: { command: 'who-accessed', arguments: { key: '42' }, results: 8, by: { via: 'config' } } });

    // By default the possible access is summarised (on stderr with --format json), not listed.
    const d = await scalple(['audit', 'who-accessed', 'customer', '42', '--config', stack.configFile, '--format', 'json']);
    expect(d.code, d.stderr).toBe(0);
    expect((JSON.parse(d.stdout) as SubjectAccess[]).map((x) => x.statement)).toEqual(seen.filter((x) => x[2] === 'definite').map((x) => x[0]));
    expect(d.stderr).toMatch(/^note: plus 1 possible access to customer 42 by 1 person /);
  });
});
