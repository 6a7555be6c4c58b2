// TLS on both sides: the upstream verified with sslmode=verify-full, client certificates (mTLS) as
// application identities, GSSENCRequest answered 'N', and the startup timeout for a silent client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownSync, copyFileSync, chmodSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import YAML from 'yaml';
import { readFileSync, writeFileSync } from 'node:fs';
import { startStack, type Stack, APP_USER, APP_PASSWORD } from '../support/stack.ts';
import { makeCerts, type TestCerts } from '../support/certs.ts';
import { Writer } from '../../src/proxy/protocol.ts';
import { loadConfig } from '../../src/policy/config.ts';
import { startProxy, type RunningProxy } from '../../src/proxy/server.ts';
import { openAuditStore, type AuditStore } from '../../src/audit/writer.ts';
import pino from 'pino';

let stack: Stack;
let certs: TestCerts;
let proxy: RunningProxy;
let audit: AuditStore;

beforeAll(async () => {
  certs = makeCerts();
  stack = await startStack({ poolMode: 'none' });
  // PostgreSQL with TLS, its key readable by the server's user only.
  for (const f of ['server.crt', 'server.key']) {
    const to = path.join(stack.pg.dataDir, f);
    copyFileSync(path.join(certs.dir, f), to);
    chmodSync(to, 0o600);
    if (process.getuid?.() === 0) chownSync(to, 65534, 65534);
  }
  for (const set of ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]) await stack.sql(`ALTER SYSTEM SET ${set}`);
  await stack.sql('SELECT pg_reload_conf()');
  // The postmaster reloads asynchronously: wait until a new session sees TLS on.
  for (const t = Date.now(); (await stack.sql('SHOW ssl')).rows[0]!.ssl !== 'on'; ) {
    if (Date.now() - t > 10_000) throw new Error('PostgreSQL did not turn TLS on');
    await new Promise((r) => setTimeout(r, 50));
  }
  // A second proxy on this stack: verify-full upstream, TLS for clients with a client CA (mTLS).
  const doc = YAML.parse(readFileSync(stack.configFile, 'utf8'));
  doc.listen = '127.0.0.1:0';
  doc.upstream = `postgres://${APP_USER}:${APP_PASSWORD}@localhost:${stack.pg.port}/app?sslmode=verify-full&sslrootcert=${encodeURIComponent(certs.caCert)}`;
  doc.tls = { cert: certs.serverCert, key: certs.serverKey, mode: 'required', client_ca: certs.caCert };
  doc.applications = { batch: { cert_cn: 'billing-batch', groups: ['service'] } };
  doc.startup_timeout_ms = 1500;
  doc.audit.chain_id = 'tls';
  doc.audit.checkpoint_file = path.join(stack.dir, 'head-tls.json');
  const file = path.join(stack.dir, 'tls.yaml');
  writeFileSync(file, YAML.stringify(doc));
  const config = loadConfig(file);
  audit = await openAuditStore(config.audit, { policyVersion: config.policyVersion });
  proxy = await startProxy(config, { audit, logger: pino({ level: 'silent' }) });
});
afterAll(async () => {
  await proxy?.close();
  await audit?.close();
  await stack?.stop();
});

describe('TLS', () => {
  it('reaches the upstream over verified TLS (sslmode=verify-full)', async () => {
    const client = certs.clientCert('billing-batch');
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, database: 'app', user: 'batch', ssl: { ca: readFileSync(certs.caCert), cert: readFileSync(client.cert), key: readFileSync(client.key), servername: 'localhost' } });
    await c.connect();
    const r = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    expect(r.rows[0].ssl).toBe(true);
    await c.end();
  });

  it('takes a client certificate as an application identity (mTLS)', async () => {
    const client = certs.clientCert('billing-batch');
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, database: 'app', user: 'batch', ssl: { ca: readFileSync(certs.caCert), cert: readFileSync(client.cert), key: readFileSync(client.key), servername: 'localhost' } });
    await c.connect();
    await c.query("SELECT 'mtls-marker' AS m");
    await c.end();
    await audit.flush();
    const rec = await stack.sql("SELECT sub, application FROM scalple_audit.records WHERE statement LIKE '%mtls-marker%'");
    expect(rec.rows[0]).toEqual({ sub: 'app:batch', application: 'batch' });
    // A certificate from the right CA but an unknown CN, and no token: refused.
    const other = certs.clientCert('someone-else');
    const bad = new pg.Client({ host: '127.0.0.1', port: proxy.port, database: 'app', user: 'x', ssl: { ca: readFileSync(certs.caCert), cert: readFileSync(other.cert), key: readFileSync(other.key), servername: 'localhost' } });
    await expect(bad.connect()).rejects.toMatchObject({ code: '28000' });
  });

  it('answers GSSENCRequest with N, then goes on with TLS', async () => {
    const s = net.connect({ host: '127.0.0.1', port: proxy.port });
    await new Promise((r) => s.once('connect', r));
    const answer = new Promise<Buffer>((resolve) => s.once('data', resolve));
    s.write(new Writer().int32(80877104).message());
    expect((await answer).toString()).toBe('N');
    s.destroy();
  });

  it('closes a client that never finishes its startup, telling it nothing', async () => {
    const s = net.connect({ host: '127.0.0.1', port: proxy.port });
    const received: Buffer[] = [];
    s.on('data', (d: Buffer) => received.push(d));
    const closed = new Promise<number>((resolve) => {
      const t0 = Date.now();
      s.on('close', () => resolve(Date.now() - t0));
    });
    await new Promise((r) => s.once('connect', r));
    s.write(Buffer.from([0, 0, 0])); // a partial length, then silence
    const elapsed = await closed;
    expect(elapsed).toBeGreaterThanOrEqual(1400);
    expect(Buffer.concat(received).length).toBe(0);
  });

  it('says nothing about the server to a client whose token fails', async () => {
    const s = net.connect({ host: '127.0.0.1', port: stack.proxyPort });
    await new Promise((r) => s.once('connect', r));
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    const closed = new Promise((r) => s.on('close', r));
    const { startupMessage } = await import('../../src/proxy/protocol.ts');
    s.write(startupMessage({ user: 'x', database: 'app', 'scalple.identity': 'a.b.c' }));
    await closed;
    const all = Buffer.concat(got);
    expect(all[0]).toBe(0x45); // one ErrorResponse, no ParameterStatus, no BackendKeyData
    expect(all.readInt32BE(1) + 1).toBe(all.length);
    expect(all.toString()).not.toMatch(/server_version|PostgreSQL/);
  });
});
