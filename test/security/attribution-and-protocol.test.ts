// Who the record names, and messages drivers do not send. An application (carol's session stands
// in for one) acting for end users with SET LOCAL scalple.on_behalf_of must have the person on the
// statements of that transaction and on no other, pipelined or not; tokens for on_behalf_of get the
// same checks as login tokens; and messages out of place end the session without running anything.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { SignJWT, decodeJwt } from 'jose';
import { startStack, type Stack } from '../support/stack.ts';
import { mintWithProviderKey } from '../support/idp.ts';
import { startupMessage, cancelRequest, passwordMessage } from '../../src/proxy/protocol.ts';
import { WireClient, Back, queryMessage, simple, errorsOf, rowsOf, maskedPolicy } from './support.ts';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ poolMode: 'transaction', config: maskedPolicy() });
});
afterAll(async () => {
  await stack?.stop();
});

async function actingFor(marker: string): Promise<Record<string, string | null>> {
  await stack.flushAudit();
  const r = await stack.sql<{ statement: string; af: string | null }>(
    `SELECT statement, acting_for->>'email' AS af FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE '%${marker}%' ORDER BY ts`,
  );
  return Object.fromEntries(r.rows.map((x) => [x.statement, x.af]));
}

describe('acting_for stays within its transaction', () => {
  it('a statement pipelined right after COMMIT is not recorded as acting for the previous end user', async () => {
    const bob = (await stack.token('bob@example.com')).accessToken;
    const w = await stack.wire('carol@example.com');
    await simple(w, 'BEGIN');
    expect(errorsOf(await simple(w, `SET LOCAL scalple.on_behalf_of = '${bob}'`))).toEqual([]);
    await simple(w, 'SELECT 1 AS pipe_in_txn');
    // libpq pipeline mode, pgjdbc batches: the next request goes out before COMMIT's reply.
    w.send(queryMessage('COMMIT'), queryMessage('SELECT 2 AS pipe_after_commit'));
    for (let i = 0; i < 2; i++) await w.readUntil((f) => f.type === Back.ReadyForQuery);
    w.close();
    expect(await actingFor('AS pipe_')).toEqual({ 'SELECT 1 AS pipe_in_txn': 'bob@example.com', 'SELECT 2 AS pipe_after_commit': null });
  });

  it('SET LOCAL scalple.on_behalf_of outside a transaction is refused even when pipelined behind another statement', async () => {
    const bob = (await stack.token('bob@example.com')).accessToken;
    const w = await stack.wire('carol@example.com');
    w.send(queryMessage('SELECT 1 AS lone_a'), queryMessage(`SET LOCAL scalple.on_behalf_of = '${bob}'`), queryMessage('SELECT 2 AS lone_b'));
    const replies = [];
    for (let i = 0; i < 3; i++) replies.push(await w.readUntil((f) => f.type === Back.ReadyForQuery));
    w.close();
    expect(errorsOf(replies[1]!).map((e) => e.code)).toEqual(['22023']);
    expect(await actingFor('AS lone_')).toEqual({ 'SELECT 1 AS lone_a': null, 'SELECT 2 AS lone_b': null });
  });

  it('is not inherited by a new session of the same application (held up)', async () => {
    const bob = (await stack.token('bob@example.com')).accessToken;
    const a = await stack.wire('carol@example.com');
    await simple(a, 'BEGIN');
    await simple(a, `SET LOCAL scalple.on_behalf_of = '${bob}'`);
    const b = await stack.wire('carol@example.com');
    await simple(b, 'SELECT 1 AS other_session');
    await simple(a, 'COMMIT');
    a.close();
    b.close();
    expect(await actingFor('AS other_session')).toEqual({ 'SELECT 1 AS other_session': null });
  });

  it('refuses on_behalf_of tokens that are expired, from another issuer, or signed by an unknown key (held up)', async () => {
    const good = decodeJwt((await stack.token('bob@example.com')).accessToken);
    const now = Math.floor(Date.now() / 1000);
    const base = { sub: good.sub, email: good.email, groups: good.groups, iss: stack.idp.issuer, aud: 'scalple', iat: now, exp: now + 600 };
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const tokens = [
      await mintWithProviderKey(stack.idp, { ...base, iat: now - 7200, exp: now - 3600 }),
      await mintWithProviderKey(stack.idp, { ...base, iss: 'https://other-issuer.example.com' }),
      await new SignJWT({ ...base }).setProtectedHeader({ alg: 'RS256', kid: 'not-published' }).sign(privateKey),
    ];
    const w = await stack.wire('carol@example.com');
    await simple(w, 'BEGIN');
    const codes: string[] = [];
    for (const t of tokens) {
      codes.push(...errorsOf(await simple(w, `SET LOCAL scalple.on_behalf_of = '${t}'`)).map((e) => e.code));
      await simple(w, 'ROLLBACK');
      await simple(w, 'BEGIN');
    }
    await simple(w, 'ROLLBACK');
    w.close();
    expect(codes).toEqual(['22023', '22023', '22023']);
  });
});

describe('messages out of place', () => {
  async function sessionEndsOn(bytes: Buffer): Promise<{ closed: boolean; codes: string[] }> {
    const w = await stack.wire('alice@example.com');
    w.send(bytes);
    const frames = await Promise.race([w.readUntil(() => false), new Promise<never[]>((r) => setTimeout(() => r([]), 3000))]);
    const closed = w.closed;
    w.close();
    return { closed, codes: errorsOf(frames).map((e) => e.code) };
  }

  it('a second StartupMessage after login ends the session at once (its first byte is no message type)', async () => {
    // Read as a typed message, the length's first byte (0) is the type and the next four bytes
    // announce ~20 kB: the proxy waits for them, where PostgreSQL ends the session on the unknown
    // type byte. Nothing runs either way; the proxy holds the session (and the buffer) open.
    const r = await sessionEndsOn(startupMessage({ user: 'x', database: 'app', options: '-c default_transaction_read_only=off' }));
    expect(r.closed).toBe(true);
  });

  it('a password message after login ends the session (08P01) (held up)', async () => {
    const r = await sessionEndsOn(passwordMessage('not-a-token'));
    expect(r).toEqual({ closed: true, codes: ['08P01'] });
  });

  it('a message announcing a negative length ends the session (08P01) (held up)', async () => {
    const b = Buffer.from([0x51, 0xff, 0xff, 0xff, 0xf0]);
    const r = await sessionEndsOn(b);
    expect(r).toEqual({ closed: true, codes: ['08P01'] });
  });

  it('a replication connection is refused before anything reaches the server (held up)', async () => {
    const t = await stack.token('alice@example.com');
    await expect(WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', replication: 'database', 'scalple.identity': t.accessToken })).rejects.toThrow(/replication/);
  });

  it("a CancelRequest with a guessed secret does not cancel someone else's statement (held up)", async () => {
    const victim = await stack.wire('carol@example.com');
    victim.send(queryMessage('SELECT pg_sleep(1) AS slow'));
    await new Promise((r) => setTimeout(r, 200));
    for (const secret of [0, 1, victim.secret ^ 1, victim.secret + 1]) {
      const s = net.connect({ host: '127.0.0.1', port: stack.proxyPort });
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      s.end(cancelRequest(victim.pid, secret));
    }
    const frames = await victim.readUntil((f) => f.type === Back.ReadyForQuery);
    victim.close();
    expect(errorsOf(frames)).toEqual([]);
    expect(rowsOf(frames)).toHaveLength(1);
  });
});
