// `scalple audit …` end to end: the real CLI (node bin/scalple.js) against a real store, with a
// config file as an operator writes it.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { loadConfig } from '../../src/policy/config.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import { ALICE, BOB, type AuditDb, completion, freshAuditDb, HMAC_KEY, intent, startAuditCluster, withClient, WRITER, auditConfigYaml } from './helpers.ts';

const BIN = path.resolve(import.meta.dirname, '../../bin/scalple.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function scalple(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    delete childEnv.SCALPLE_CONFIG;
    if (env.SCALPLE_CONFIG) childEnv.SCALPLE_CONFIG = env.SCALPLE_CONFIG;
    execFile(process.execPath, [BIN, ...args], { env: childEnv, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      // Another module's dependency (oidc-provider, loaded by `scalple demo`) prints a Node 22
      // notice on every command under Node 20; it is not ours to assert on.
      resolve({ code, stdout, stderr: stderr.replace(/^oidc-provider WARNING: Unsupported runtime.*\n/m, '') });
    });
  });
}

let server: PostgresServer;
let env: AuditDb;
let configFile: string;
const ids: Record<string, string> = {};

beforeAll(async () => {
  server = await startAuditCluster();
  env = await freshAuditDb(server, { init: false });
  configFile = path.join(env.dir, 'scalple.yaml');
  writeFileSync(configFile, auditConfigYaml(server, env, { audit: `  durability: strict
  chain_id: main
  checkpoint_file: scalple-audit-head.main.json
`, extra: `` }));
});

afterAll(async () => {
  env?.cleanup();
  await server?.stop();
});

describe('scalple audit', () => {
  it('lists its commands', async () => {
    const r = await scalple(['audit', '--help']);
    expect(r.code).toBe(0);
    for (const c of ['init', 'verify', 'log', 'retention']) expect(r.stdout).toContain(c);
  });

  it('init creates the schema under the admin role and grants the writer INSERT and SELECT', async () => {
    const r = await scalple(['audit', 'init', '--admin-url', env.adminUrl, '--config', configFile]);
    expect(r.stderr, r.stderr).toMatch(/✓ scalple_audit at version 3 .* owned by scalple_admin \(applied: 1 records.*; 2 data subjects.*; 3 time-boxed/);
    expect(r.stderr).toContain(`✓ writer role ${WRITER.user}: INSERT and SELECT only`);
    expect(r.code).toBe(0);
    const again = await scalple(['audit', 'init', '--admin-url', env.adminUrl, '--config', configFile]);
    expect(again.stderr).toContain('already up to date');
    expect(again.code).toBe(0);

    // now the proxy side writes some statements, with the config the CLI reads
    const config = loadConfig(configFile);
    const store = await openAuditStore(config.audit, { policyVersion: config.policyVersion });
    const a1 = intent({ ts: new Date(Date.now() - 3000), statement: 'SELECT email FROM customers WHERE id = $1', reason: 'ticket 7', rule: 'roles.support' });
    const b1 = intent({
      ts: new Date(Date.now() - 2000), principal: { kind: 'application', sub: 'app:billing-api', groups: ['service'], application: 'billing-api' },
      actingFor: BOB, statement: 'UPDATE orders SET total = 1 WHERE id = 7', kinds: ['UPDATE'], tables: ['public.orders'], columns: ['public.orders.total'],
      clientAddr: '127.0.0.2', applicationName: 'billing-api', sessionId: 's-2',
    });
    const a2 = intent({ ts: new Date(Date.now() - 1000), statement: 'SELECT * FROM customers', decision: 'mask', maskedFields: { 'public.customers.email': 'email' } });
    for (const r of [a1, b1, a2]) await store.intent(r);
    store.completion(completion(a1.logId, { rows: 1, durationMs: 2.5 }));
    store.completion(completion(b1.logId, { rows: null, sqlstate: '42501', error: 'permission denied', durationMs: 0.7, sessionId: 's-2' }));
    store.completion(completion(a2.logId, { rows: 3, durationMs: 4 }));
    await store.close();
    Object.assign(ids, { a1: a1.logId, b1: b1.logId, a2: a2.logId });
  });

  it('log --format json prints every statement joined with its completion, newest first', async () => {
    const r = await scalple(['audit', 'log', '--config', configFile, '--format', 'json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Record<string, unknown>[];
    expect(rows.map((x) => x.log_id)).toEqual([ids.a2, ids.b1, ids.a1]);
    const required = ['log_id', 'ts', 'sub', 'email', 'db_role', 'statement', 'tables', 'rows', 'decision', 'kinds', 'columns', 'acting_for',
      'rule', 'sqlstate', 'duration_ms', 'reason', 'policy_version', 'client_addr', 'application_name', 'session_id'];
    for (const row of rows) for (const k of required) expect(row, k).toHaveProperty(k);
    expect(rows[2]).toMatchObject({
      log_id: ids.a1, sub: ALICE.sub, email: ALICE.email, db_role: 'app_user', statement: 'SELECT email FROM customers WHERE id = $1',
      tables: ['public.customers'], columns: ['public.customers.id', 'public.customers.email'], kinds: ['SELECT'], rows: 1, decision: 'allow',
      rule: 'roles.support', reason: 'ticket 7', policy_version: 'pv-1', client_addr: '127.0.0.1', application_name: 'psql', session_id: 's-1',
      duration_ms: 2.5, sqlstate: null, acting_for: null, params: ['42'],
    });
    expect(rows[2]!.ts).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(rows[1]).toMatchObject({
      sub: 'app:billing-api', email: null, principal_kind: 'application', application: 'billing-api', rows: null, sqlstate: '42501',
      error: 'permission denied', acting_for: { kind: 'person', sub: BOB.sub, email: BOB.email, name: BOB.name, groups: BOB.groups },
    });
    expect(rows[0]).toMatchObject({ decision: 'mask', masked_fields: { 'public.customers.email': 'email' }, rows: 3 });
  });

  it('log filters by person, table, time and count', async () => {
    const json = async (...args: string[]) => {
      const r = await scalple(['audit', 'log', '--config', configFile, '--format', 'json', ...args]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { log_id: string }[]).map((x) => x.log_id);
    };
    expect(await json('--user', 'ALICE@example.com')).toEqual([ids.a2, ids.a1]);
    expect(await json('--user', 'app:billing-api')).toEqual([ids.b1]);
    expect(await json('--table', 'orders')).toEqual([ids.b1]);
    expect(await json('--table', 'public.customers', '--limit', '1')).toEqual([ids.a2]);
    expect(await json('--since', '1d', '--until', new Date(Date.now() + 60_000).toISOString())).toHaveLength(3);
    expect(await json('--until', '2020-01-01')).toEqual([]);
  });

  it('log renders a table and exact CSV', async () => {
    const t = await scalple(['audit', 'log', '--config', configFile]);
    expect(t.code).toBe(0);
    expect(t.stdout).toContain('alice@example.com');
    expect(t.stdout).toContain('app:billing-api for bob@example.com');
    expect(t.stdout).toContain('(3 statements)');
    const c = await scalple(['audit', 'log', '--config', configFile, '--format', 'csv']);
    const lines = c.stdout.trimEnd().split('\r\n');
    expect(lines[0]!.startsWith('log_id,ts,sub,email,')).toBe(true);
    expect(lines).toHaveLength(4);
    expect(c.stdout).toContain('"{""public.customers.email"":""email""}"');
  });

  it('every log read is itself recorded, on the audit-reads chain, with its filters', async () => {
    const r = await scalple(['audit', 'log', '--config', configFile, '--format', 'json', '--user', 'alice@example.com', '--limit', '2']);
    expect(r.code).toBe(0);
    const reads = await withClient(env.writerUrl, (db) => db.query<{ chain_id: string; detail: { command: string; arguments: Record<string, unknown>; results: number } }>(
      `SELECT chain_id, detail FROM scalple_audit.records WHERE event = 'audit_read' AND detail->>'command' = 'log' ORDER BY seq DESC LIMIT 1`));
    expect(reads.rows[0]).toMatchObject({ chain_id: 'audit-reads', detail: { command: 'log', arguments: { user: 'alice@example.com', limit: 2 }, results: JSON.parse(r.stdout).length } });
  });

  it('verify exits 0 on an intact log and prints the head; 1 naming the first broken record', async () => {
    const ok = await scalple(['audit', 'verify', '--config', configFile]);
    expect(ok.code, ok.stderr).toBe(0);
    const head = /head main:([0-9a-f]{64})/.exec(ok.stdout)?.[1];
    expect(head).toBeDefined();
    expect(ok.stdout).toMatch(/main\s*│\s*intact\s*│\s*6/);
    const j = await scalple(['audit', 'verify', '--config', configFile, '--format', 'json', '--expect-head', `main:${head}`]);
    expect(j.code).toBe(0);
    // The log reads above are on their own chain (audit-reads), verified beside main.
    const report = JSON.parse(j.stdout);
    expect(report.ok).toBe(true);
    expect(report.heads).toContain(`main:${head}`);
    expect(report.chains).toEqual(expect.arrayContaining([expect.objectContaining({ chainId: 'main', verified: 6, headSeq: 6 }), expect.objectContaining({ chainId: 'audit-reads', status: 'intact' })]));

    await withClient(env.superUrl, (c) => c.query(`SET session_replication_role = replica; UPDATE scalple_audit.records SET rows = 0 WHERE seq = 4`));
    const bad = await scalple(['audit', 'verify', '--config', configFile]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/TAMPERED: chain main seq 4 \(log_id [^)]+\): modified: record seq 4 .* was modified/);
    expect(bad.stdout).toContain('head main:');
    expect(bad.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('retention --dry-run reports, and errors are one line without a stack trace or password', async () => {
    const dry = await scalple(['audit', 'retention', '--before', '2000-01-01', '--admin-url', env.adminUrl, '--config', configFile, '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stderr).toMatch(/nothing to drop/);

    const noConfig = await scalple(['audit', 'log']);
    expect(noConfig.code).toBe(1);
    expect(noConfig.stderr).toBe('error: No config file: pass --config FILE or set SCALPLE_CONFIG.\n');

    const badSince = await scalple(['audit', 'log', '--config', configFile, '--since', 'yesterday']);
    expect(badSince.code).toBe(2);
    expect(badSince.stderr).toMatch(/^error: --since must be an ISO date/);

    const badDate = await scalple(['audit', 'retention', '--before', '2024-13-01', '--admin-url', env.adminUrl, '--config', configFile]);
    expect(badDate.code).toBe(2);

    const down = await scalple(['audit', 'log', '--config', configFile, '--url', `postgres://${WRITER.user}:wrong-password@127.0.0.1:${server.port}/${env.db}`]);
    expect(down.code).toBe(1);
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
    expect(down.stderr).toMatch(/^error: cannot connect to the audit store scalple_writer@127\.0\.0\.1:\d+\/audit_\d+_\d+: password authentication failed/);
    expect(down.stderr).not.toContain('wrong-password');

    const badFormat = await scalple(['audit', 'log', '--config', configFile, '--format', 'xml']);
    expect(badFormat.code).toBe(2);
  });
});
