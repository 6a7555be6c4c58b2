// Per-person attribution through PgBouncer in transaction mode (default_pool_size=2): three people
// interleave transactions with simple, unnamed-extended and named-extended statements, so server
// connections are shared between them. Every audit record must name the right person, and pgAudit
// must show only app_user, with the Scalple log id in the statement text.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { startStack, type Stack } from '../support/stack.ts';
import { clientCredentialsToken, TEST_APPS } from '../support/idp.ts';
import { WireClient, typesOf } from '../support/wire.ts';
import { Writer, Front, Back, decodeFields, parseMessage, syncMessage } from '../../src/proxy/protocol.ts';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({
    poolMode: 'transaction',
    config: { applications: { 'billing-api': { client_id: 'billing-api', groups: ['service'] } } },
  });
});
afterAll(async () => {
  await stack?.stop();
});

const PEOPLE = ['alice@example.com', 'bob@example.com', 'carol@example.com'];

interface AuditRow {
  log_id: string;
  record_type: string;
  email: string | null;
  sub: string | null;
  statement: string | null;
  params: (string | null)[] | null;
  kinds: string[] | null;
  tables: string[] | null;
  acting_for: { email?: string; sub?: string } | null;
  rows: string | null;
  sqlstate: string | null;
  decision: string | null;
  reason: string | null;
  db_role: string | null;
}

async function records(where = 'true', values: unknown[] = []): Promise<AuditRow[]> {
  await stack.flushAudit();
  return (await stack.sql<AuditRow>(`SELECT * FROM scalple_audit.records WHERE ${where} ORDER BY seq`, values)).rows;
}

/** One person's workload; every statement carries the person's email so records can be checked. */
async function workload(c: pg.Client, email: string, rounds: number): Promise<number> {
  let n = 0;
  for (let i = 0; i < rounds; i++) {
    await c.query('BEGIN');
    await c.query(`SELECT '${email}' AS who, count(*) FROM customers WHERE region = 'EU'`);
    await c.query('SELECT $1::text AS who, id, email FROM customers WHERE id = $2', [email, (i % 50) + 1]);
    await c.query({ name: 'by_region', text: 'SELECT $1::text AS who, count(*) AS n FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.region = $2', values: [email, 'EU'] });
    await c.query('COMMIT');
    // Outside a transaction too: each statement may land on a different server connection.
    await c.query({ name: 'one_order', text: 'SELECT $1::text AS who, total FROM orders WHERE id = $2', values: [email, i + 1] });
    n += 6;
  }
  return n;
}

describe('attribution through PgBouncer transaction pooling', () => {
  it('names the right person on every one of hundreds of interleaved records', async () => {
    const clients = await Promise.all(PEOPLE.map((e) => stack.connect(e)));
    const counts = await Promise.all(clients.map((c, i) => workload(c, PEOPLE[i]!, 20)));
    await Promise.all(clients.map((c) => c.end()));
    const total = counts.reduce((a, b) => a + b, 0);

    const intents = await records(`record_type = 'intent' AND (statement LIKE '%who%')`);
    // BEGIN and COMMIT carry no marker: 4 of each round's 6 statements do.
    expect(intents.length).toBe((total / 6) * 4);
    for (const r of intents) {
      const marker = r.statement!.includes("'") ? /'([^']+@example\.com)'/.exec(r.statement!)![1] : r.params![0];
      expect(r.email).toBe(marker);
      expect(r.db_role).toBe('app_user');
    }
    // Each person's named statement ran 20 times per name: 20 records each, not one.
    for (const email of PEOPLE) {
      const named = intents.filter((r) => r.email === email && r.statement!.includes('FROM orders WHERE id'));
      expect(named.length).toBe(20);
    }
    // Every intent has its completion.
    const completions = new Set((await records(`record_type = 'completion'`)).map((r) => r.log_id));
    for (const r of intents) expect(completions.has(r.log_id)).toBe(true);
  });

  it('pgAudit shows only app_user, and every statement it logged carries a log id of a record of the right person', async () => {
    const lines = stack.pg.readLog().split('\n').filter((l) => l.includes('AUDIT: SESSION') && l.includes(' who'));
    expect(lines.length).toBeGreaterThan(200);
    const byLogId = new Map((await records(`record_type = 'intent'`)).map((r) => [r.log_id, r]));
    for (const line of lines) {
      expect(line).toContain('user=app_user');
      const m = /scalple log_id=([0-9a-f-]{36}) user=([^ ]+) \*\//.exec(line);
      expect(m, line).not.toBeNull();
      const rec = byLogId.get(m![1]!);
      expect(rec, `no intent record for ${m![1]}`).toBeDefined();
      expect(rec!.email).toBe(decodeURIComponent(m![2]!));
      const who = /'([^']+@example\.com)'/.exec(line);
      if (who) expect(rec!.email).toBe(who[1]);
    }
  });

  it('records an application acting for a person with SET LOCAL scalple.on_behalf_of, and never forwards the SET', async () => {
    const appToken = await clientCredentialsToken(stack.idp, TEST_APPS[0]!.clientId, TEST_APPS[0]!.clientSecret);
    const bob = await stack.token('bob@example.com');
    const { default: pgmod } = await import('pg');
    const c = new pgmod.Client({ host: '127.0.0.1', port: stack.proxyPort, database: 'app', user: 'svc', options: `-c scalple.identity=${appToken}` });
    await c.connect();
    await c.query('BEGIN');
    await c.query(`SET LOCAL scalple.on_behalf_of = '${bob.accessToken}'`);
    await c.query("SELECT 'obo-marker-1' AS m, id FROM customers WHERE id = 7");
    await c.query('SELECT $1::text AS m', ['obo-marker-2']);
    await c.query('COMMIT');
    await c.query("SELECT 'obo-marker-3' AS m");
    // Outside a transaction the setting is refused: it would apply to nothing.
    await expect(c.query(`SET LOCAL scalple.on_behalf_of = '${bob.accessToken}'`)).rejects.toThrow(/inside a transaction/);
    // A forged end-user token is refused and the transaction continues without acting_for.
    await c.query('BEGIN');
    await expect(c.query(`SET LOCAL scalple.on_behalf_of = '${bob.accessToken.slice(0, -4)}AAAA'`)).rejects.toThrow(/on_behalf_of refused/);
    await c.query('ROLLBACK');
    await c.end();

    const rows = await records(`record_type = 'intent' AND (statement LIKE '%obo-marker%' OR params::text LIKE '%obo-marker%')`);
    expect(rows).toHaveLength(3);
    for (const r of rows) expect(r.sub).toBe('app:billing-api');
    expect(rows.slice(0, 2).map((r) => r.acting_for?.email)).toEqual(['bob@example.com', 'bob@example.com']);
    expect(rows[2]!.acting_for).toBeNull();
    const leaked = stack.pg.readLog().split('\n').filter((l) => /on_behalf_of/i.test(l));
    expect(leaked).toEqual([]);
    // pgAudit attributes the transaction's statements to bob through the tag.
    const tagged = stack.pg.readLog().split('\n').filter((l) => l.includes('obo-marker-1'));
    expect(tagged[0]).toMatch(/user=app%3Abilling-api for=bob@example\.com/);
  });

  it('keeps the access reason from SET scalple.reason and never forwards it', async () => {
    const c = await stack.connect('alice@example.com');
    await c.query("SET scalple.reason = 'ticket SUP-1234'");
    await c.query("SELECT 'reason-marker' AS m");
    await c.end();
    const [r] = await records(`record_type = 'intent' AND statement LIKE '%reason-marker%'`);
    expect(r!.reason).toBe('ticket SUP-1234');
    expect(stack.pg.readLog()).not.toContain('SUP-1234');
  });

  it('refuses session state that transaction pooling would leak, and the audit schema', async () => {
    const c = await stack.connect('alice@example.com');
    for (const sql of ['SET search_path = evil', 'SET ROLE postgres', 'SET SESSION AUTHORIZATION postgres', 'PREPARE p AS SELECT 1', 'LISTEN chan', 'DECLARE c CURSOR WITH HOLD FOR SELECT 1']) {
      await expect(c.query(sql), sql).rejects.toMatchObject({ code: '0A000' });
    }
    await c.query('BEGIN');
    await c.query('SET LOCAL statement_timeout = 1000');
    await c.query('COMMIT');
    for (const sql of ['SELECT * FROM scalple_audit.records', "SELECT 'scalple_audit.records'::regclass", 'DELETE FROM "scalple_audit".records']) {
      await expect(c.query(sql), sql).rejects.toMatchObject({ code: '42501' });
    }
    await c.end();
    const denied = await records(`record_type = 'intent' AND decision = 'deny'`);
    expect(denied.length).toBeGreaterThanOrEqual(9);
  });

  it('executes a named statement with Bind/Execute and no Describe, on whichever server the pooler picks', async () => {
    const t = await stack.token('erin@example.com');
    const w = await WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', 'scalple.identity': t.accessToken });
    const typeOids = new Writer().int16(1).int32(20).message(0).subarray(5);
    w.send(parseMessage('S_1', 'SELECT email FROM customers WHERE id = $1', typeOids), syncMessage);
    expect(typesOf(await w.readUntil((f) => f.type === Back.ReadyForQuery))).toBe('1Z');
    for (let i = 1; i <= 6; i++) {
      // pgjdbc after prepareThreshold: Bind + Execute of the server statement, no Describe.
      const bind = new Writer().cstring('').cstring('S_1').int16(0).int16(1).int32(String(i).length).bytes(Buffer.from(String(i))).int16(0).message(Front.Bind);
      const exec = new Writer().cstring('').int32(0).message(Front.Execute);
      w.send(bind, exec, syncMessage);
      const reply = await w.readUntil((f) => f.type === Back.ReadyForQuery);
      expect(typesOf(reply)).toBe('2DCZ');
      expect(reply[1]!.body.toString()).toContain(`customer${i}@example.org`);
    }
    w.send(new Writer().byte(0x53).cstring('S_1').message(Front.Close), syncMessage);
    expect(typesOf(await w.readUntil((f) => f.type === Back.ReadyForQuery))).toBe('3Z');
    w.close();
    const recs = await records(`record_type = 'intent' AND email = 'erin@example.com' AND statement LIKE '%WHERE id = $1'`);
    expect(recs).toHaveLength(6);
    expect(recs.map((r) => r.params)).toEqual([['1'], ['2'], ['3'], ['4'], ['5'], ['6']]);
  });

  it('refuses the fast-path FunctionCall message', async () => {
    const t = await stack.token('alice@example.com');
    const w = await WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', 'scalple.identity': t.accessToken });
    w.send(new Writer().int32(1598).int16(0).int16(0).int16(0).message(Front.FunctionCall));
    const reply = await w.readUntil((f) => f.type === Back.ReadyForQuery);
    expect(typesOf(reply)).toBe('EZ');
    expect(decodeFields(reply[0]!.body).get('M')).toMatch(/fast-path function calls are not allowed/);
    w.close();
  });
});
