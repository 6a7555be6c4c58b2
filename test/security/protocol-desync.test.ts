// The proxy decides how to treat each upstream reply (mask rows or not, whose audit record it
// completes) from its own model of the protocol: which statement the upstream's unnamed statement
// holds, which portal a name means, how many replies each client message brings. Every test here
// makes that model differ from what PostgreSQL really did, as alice (every PII column masked), and
// looks for clear values in what she receives. Raw protocol messages (test/support/wire.ts).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { startupMessage, passwordMessage } from '../../src/proxy/protocol.ts';
import {
  WireClient, Back, parse, bind, execute, syncMessage, queryMessage, copyData, copyDone, roundTrip, simple, rowsOf, errorsOf, textOf, leaked,
  piiValues, maskedPolicy,
} from './support.ts';

describe('behind the transaction pooler, read-only role with masks (alice)', () => {
  let stack: Stack;
  let pii: string[];
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'transaction', config: maskedPolicy() });
    pii = await piiValues((t) => stack.sql(t), 3);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('a named portal re-bound by a failed Bind keeps the masks of the statement PostgreSQL will run', async () => {
    // PostgreSQL refuses the second Bind of portal "c" (42P03, it already exists) and keeps the
    // first; the proxy replaced its record of "c" before the answer came. A savepoint rolls the
    // error back, and Execute "c" runs the ssn query with the harmless statement's (empty) plan.
    const w = await stack.wire('alice@example.com');
    await simple(w, 'BEGIN');
    await roundTrip(w, [parse('a', 'SELECT ssn, email FROM customers WHERE id <= 2'), bind('c', 'a'), syncMessage]);
    await simple(w, 'SAVEPOINT sp');
    const rebind = await roundTrip(w, [parse('b', "SELECT 'harmless' AS x, 'y' AS z"), bind('c', 'b'), syncMessage]);
    expect(errorsOf(rebind).map((e) => e.code)).toEqual(['42P03']);
    await simple(w, 'ROLLBACK TO SAVEPOINT sp');
    const frames = await roundTrip(w, [execute('c'), syncMessage]);
    await simple(w, 'COMMIT');
    w.close();
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });

  it('the audit record of that Execute names the statement that ran, not the one whose Bind failed', async () => {
    await stack.flushAudit();
    const r = await stack.sql<{ statement: string; tables: string[] }>(
      "SELECT statement, tables FROM scalple_audit.records WHERE record_type = 'intent' AND session_id = (SELECT session_id FROM scalple_audit.records WHERE statement = 'SAVEPOINT sp' ORDER BY ts DESC LIMIT 1) ORDER BY ts DESC LIMIT 2",
    );
    // The last two intents of that session: COMMIT, then the Execute of portal "c".
    const exec = r.rows[1]!;
    expect(exec.statement).not.toContain('harmless');
  });

  it('an extended batch the proxy refuses half-way is not half-committed (PostgreSQL would roll back its implicit transaction)', async () => {
    const w = await stack.wire('carol@example.com');
    const frames = await roundTrip(w, [
      parse('', 'INSERT INTO orders (id, customer_id, total) VALUES (900777, 1, 1)'), bind('', ''), execute(''),
      parse('x', 'SELECT * FROM scalple_audit.records'), syncMessage,
    ]);
    w.close();
    expect(errorsOf(frames).map((e) => e.code)).toEqual(['42501']);
    const r = await stack.sql<{ n: string }>('SELECT count(*) AS n FROM orders WHERE id = 900777');
    await stack.sql('DELETE FROM orders WHERE id = 900777');
    expect(r.rows[0]!.n).toBe('0');
  });

  it('a statement refused inside a transaction block aborts the block upstream, as PostgreSQL\'s own error would', async () => {
    const w = await stack.wire('carol@example.com');
    await simple(w, 'BEGIN');
    await simple(w, 'INSERT INTO orders (id, customer_id, total) VALUES (900778, 1, 1)');
    const refused = await simple(w, 'SELECT * FROM scalple_audit.records');
    const commit = await simple(w, 'COMMIT');
    w.close();
    expect(errorsOf(refused).map((e) => e.code)).toEqual(['42501']);
    // The client is told the block failed ('E'), and its COMMIT became a ROLLBACK.
    expect(refused.at(-1)!.body.toString('latin1')).toBe('E');
    expect(commit.find((f) => f.type === Back.CommandComplete)!.body.toString('latin1')).toContain('ROLLBACK');
    const r = await stack.sql<{ n: string }>('SELECT count(*) AS n FROM orders WHERE id = 900778');
    await stack.sql('DELETE FROM orders WHERE id = 900778');
    expect(r.rows[0]!.n).toBe('0');
  });

  it('a password message of 1 GiB announced before authentication is refused at once, not buffered', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: stack.proxyPort });
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.on('error', () => undefined);
    sock.write(startupMessage({ user: 'x', database: 'app' }));
    // Wait for AuthenticationCleartextPassword, then announce a huge password and trickle bytes.
    await new Promise<void>((resolve) => sock.once('data', () => resolve()));
    const header = Buffer.alloc(5);
    header[0] = 0x70;
    header.writeInt32BE(1 << 30, 1);
    const t0 = Date.now();
    sock.write(header);
    const closed = new Promise<number>((resolve) => sock.once('close', () => resolve(Date.now() - t0)));
    const chunk = Buffer.alloc(1 << 20, 0x41);
    const pump = setInterval(() => {
      if (!sock.destroyed) sock.write(chunk);
    }, 20);
    const ms = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(Infinity), 3000))]);
    clearInterval(pump);
    sock.destroy();
    expect(ms).toBeLessThan(1000);
    void passwordMessage;
  });
});

describe('audit completions', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'transaction', config: maskedPolicy() });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('a Query that PostgreSQL skips (after an extended-protocol error, before Sync) still gets a completion record', async () => {
    const w = await stack.wire('carol@example.com');
    const frames = await roundTrip(w, [parse('', 'SELECT nosuchcolumn FROM orders'), queryMessage('SELECT 1 AS skipped_marker'), syncMessage]);
    w.close();
    expect(errorsOf(frames).map((e) => e.code)).toEqual(['42703']);
    await stack.flushAudit();
    const r = await stack.sql<{ record_type: string }>("SELECT record_type FROM scalple_audit.records WHERE log_id IN (SELECT log_id FROM scalple_audit.records WHERE statement = 'SELECT 1 AS skipped_marker') ORDER BY seq");
    expect(r.rows.map((x) => x.record_type)).toEqual(['intent', 'completion']);
  });
});

describe('behind the transaction pooler, a role with masks that may write (support + write: true)', () => {
  let stack: Stack;
  let pii: string[];
  beforeAll(async () => {
    stack = await startStack({ poolMode: 'transaction', config: maskedPolicy({ support: { groups: ['support'], write: true } }) });
    pii = await piiValues((t) => stack.sql(t), 3);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('a Sync sent during COPY FROM STDIN (PostgreSQL ignores it) does not shift the replies onto the next statement', async () => {
    const w = await stack.wire('alice@example.com');
    w.send(queryMessage('COPY orders (id, customer_id, total) FROM STDIN'));
    const started = await w.readUntil((f) => f.type === Back.CopyInResponse || f.type === Back.ReadyForQuery);
    expect(started.some((f) => f.type === Back.CopyInResponse)).toBe(true);
    w.send(syncMessage, copyData('900001\t1\t1.00\n'), copyDone);
    await w.readUntil((f) => f.type === Back.ReadyForQuery);
    await new Promise((r) => setTimeout(r, 200));
    await simple(w, 'SELECT 1 AS one');
    const frames = await simple(w, 'SELECT id, ssn, email FROM customers WHERE id <= 2');
    w.close();
    await stack.sql('DELETE FROM orders WHERE id = 900001');
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });

  it('a Query sent during COPY FROM STDIN does not shift the replies (held up: PostgreSQL ends the session, protocol synchronization lost)', async () => {
    const w = await stack.wire('alice@example.com');
    w.send(queryMessage('COPY orders (id, customer_id, total) FROM STDIN'));
    await w.readUntil((f) => f.type === Back.CopyInResponse || f.type === Back.ReadyForQuery);
    w.send(queryMessage('SELECT 1 AS swallowed'));
    await w.readUntil((f) => f.type === Back.ReadyForQuery);
    await new Promise((r) => setTimeout(r, 200));
    const frames = await roundTrip(w, [queryMessage('SELECT id, ssn, email FROM customers WHERE id <= 2')], 1, 3000);
    w.close();
    expect(leaked(textOf(frames), pii)).toEqual([]);
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

  it('a Parse skipped by PostgreSQL after an error does not leave the proxy believing the unnamed statement changed', async () => {
    const w = await stack.wire('alice@example.com');
    // The upstream's unnamed statement now holds the ssn query (masked plan).
    await roundTrip(w, [parse('a', 'SELECT ssn, email FROM customers WHERE id <= 2'), syncMessage]);
    // An error, then a Parse that PostgreSQL skips; the proxy records "b" as held upstream.
    const second = await roundTrip(w, [execute('nope'), parse('b', "SELECT 'harmless' AS x, 'y' AS z"), syncMessage]);
    expect(errorsOf(second).map((e) => e.code)).toEqual(['34000']);
    // Binding "b" binds whatever the upstream's unnamed statement holds: the ssn query.
    const frames = await roundTrip(w, [bind('', 'b'), execute(''), syncMessage]);
    w.close();
    expect(leaked(textOf(frames), pii)).toEqual([]);
  });

  it('a named statement still works after a simple query (which drops the upstream unnamed statement)', async () => {
    const w = await stack.wire('alice@example.com');
    await roundTrip(w, [parse('s', 'SELECT id FROM orders WHERE id = 1'), syncMessage]);
    await simple(w, 'SELECT 2');
    const frames = await roundTrip(w, [bind('', 's'), execute(''), syncMessage]);
    w.close();
    expect(errorsOf(frames)).toEqual([]);
    expect(rowsOf(frames)).toEqual([['1']]);
  });
});
