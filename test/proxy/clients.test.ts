// Real clients through Scalple -> PgBouncer (transaction mode): psql with the token as its password
// over TLS, COPY in both directions, cancel (Ctrl-C), and a pgjdbc-style pipeline of named statements.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { startStack, type Stack } from '../support/stack.ts';
import { makeCerts } from '../support/certs.ts';
import { cancelRequest } from '../../src/proxy/protocol.ts';
import { WireClient } from '../support/wire.ts';

let stack: Stack;

beforeAll(async () => {
  const certs = makeCerts();
  stack = await startStack({ poolMode: 'transaction', config: { tls: { cert: certs.serverCert, key: certs.serverKey, mode: 'required' } }, identity: { allow_plaintext_password: false } });
});
afterAll(async () => {
  await stack?.stop();
});

function psql(token: string, args: string[], stdin = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('psql', [`host=127.0.0.1 port=${stack.proxyPort} dbname=app user=alice sslmode=require`, '-X', '-v', 'ON_ERROR_STOP=1', ...args], {
      env: { PATH: process.env.PATH, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(stdin);
  });
}

describe('psql, COPY, cancel', () => {
  it('psql connects with the token as password over TLS; plaintext is refused when TLS is required', async () => {
    const t = (await stack.token('alice@example.com')).accessToken;
    const r = await psql(t, ['-At', '-c', "SELECT 'psql-marker', count(*) FROM customers"]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('psql-marker|500');
    const plain = spawn('psql', [`host=127.0.0.1 port=${stack.proxyPort} dbname=app user=alice sslmode=disable`, '-c', 'select 1'], { env: { PATH: process.env.PATH, PGPASSWORD: t } });
    let err = '';
    plain.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise((r) => plain.on('close', r));
    expect(err).toMatch(/requires TLS/);
    await stack.flushAudit();
    const rec = await stack.sql("SELECT email FROM scalple_audit.records WHERE statement LIKE '%psql-marker%'");
    expect(rec.rows[0]!.email).toBe('alice@example.com');
  });

  it('runs COPY out and COPY in through psql, audited with row counts', async () => {
    const t = (await stack.token('carol@example.com')).accessToken;
    const out = await psql(t, ['-c', 'COPY (SELECT id, region FROM customers WHERE id <= 5 ORDER BY id) TO STDOUT']);
    expect(out.code).toBe(0);
    expect(out.stdout.trim().split('\n')).toEqual(['1\tUS', '2\tAPAC', '3\tEU', '4\tUS', '5\tAPAC']);
    await stack.sql('CREATE TABLE IF NOT EXISTS copy_target (id int, note text); GRANT ALL ON copy_target TO app_user');
    const rows = Array.from({ length: 300 }, (_, i) => `${i}\tnote ${i}`).join('\n') + '\n';
    const inn = await psql(t, ['-c', 'COPY copy_target FROM STDIN'], rows);
    expect(inn.stderr).toBe('');
    expect(inn.stdout.trim()).toBe('COPY 300');
    expect((await stack.sql('SELECT count(*)::int AS n FROM copy_target')).rows[0]!.n).toBe(300);
    await stack.flushAudit();
    const rec = await stack.sql<{ rows: string; kinds: string[] }>("SELECT c.rows, i.kinds FROM scalple_audit.records i JOIN scalple_audit.records c ON c.log_id = i.log_id AND c.record_type = 'completion' WHERE i.record_type = 'intent' AND i.statement = 'COPY copy_target FROM STDIN'");
    expect(rec.rows[0]).toMatchObject({ rows: '300', kinds: ['COPY'] });
  });

  it('cancels a running statement with the proxy\'s own BackendKeyData (Ctrl-C)', async () => {
    const c = await stack.connect('bob@example.com', { ssl: { rejectUnauthorized: false } });
    const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
    const running = c.query('SELECT pg_sleep(30)');
    // Cancel once the statement is executing on the server (observed, not slept for).
    for (;;) {
      const r = await stack.sql("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND usename = 'app_user'");
      if (r.rows[0]!.n > 0) break;
    }
    const s = net.connect({ host: '127.0.0.1', port: stack.proxyPort });
    await new Promise((r) => s.once('connect', r));
    s.end(cancelRequest(processID, secretKey));
    const started = Date.now();
    await expect(running).rejects.toMatchObject({ code: '57014' });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect((await c.query('SELECT 1 AS ok')).rows[0].ok).toBe(1);
    await c.end();
  });

  it('answers a pgjdbc-style named statement executed without Describe, across pooled transactions', async () => {
    const t = (await stack.token('alice@example.com')).accessToken;
    const w = await WireClient.connect(stack.proxyPort, { user: 'x', database: 'app', 'scalple.identity': t }).catch(() => undefined);
    // TLS is required on this stack: the raw client is refused, as it should be.
    expect(w).toBeUndefined();
    const c = await stack.connect('alice@example.com', { ssl: { rejectUnauthorized: false } });
    for (let i = 1; i <= 8; i++) {
      const r = await c.query({ name: 'jdbc_like', text: 'SELECT id, region FROM customers WHERE id = $1', values: [i] });
      expect(r.rows).toEqual([{ id: String(i), region: ['EU', 'US', 'APAC'][i % 3] }]);
    }
    await c.end();
  });
});
