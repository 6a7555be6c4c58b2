// Audit commands without --config: the person's own login, through the proxy. Dave's OIDC group
// `auditor` gives him a role with `audit: true`: `scalple audit who-accessed customer 42`, `report`
// and `anomalies` (the real launcher, logged in with the device flow) get from the proxy exactly
// what `--config` prints on the proxy host, and the proxy records each read as an audit_read event
// naming him. Alice (support) is refused with a clear message; nobody logged in gets exit 4.
// Carol (dba: admin: true) revokes, restores and grants through the proxy.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { demoPolicy } from '../../src/demo/demo.ts';
import type { SubjectAccess } from '../../src/audit/who-accessed.ts';
import type { SubjectAccessReport } from '../../src/audit/report.ts';
import type { AnomalyReport } from '../../src/audit/anomalies.ts';
import { login, runCli, sandbox, type Sandbox } from '../cli/harness.ts';
import { scalple } from './cli-run.ts';

let stack: Stack;
let dave: Sandbox;
let alice: Sandbox;
let carol: Sandbox;
let nobody: Sandbox;
const SUBJECTS = { customer: { table: 'public.customers', key: 'id', via: ['public.orders.customer_id', 'public.payments.customer_id'] } };

const LOOKUP = 'SELECT * FROM customers WHERE id = 42';
const BULK = "SELECT email FROM customers WHERE region = 'EU'";
const JOIN = 'SELECT o.id, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 363';
const AGGREGATE = "SELECT count(*) FROM customers WHERE region = 'EU'";
const DECOY = 'SELECT * FROM customers WHERE id = 420';

async function loginAs(box: Sandbox, email: string): Promise<void> {
  const r = await login(['--issuer', stack.idp.issuer, '--no-browser', '--insecure-storage', '--proxy', `127.0.0.1:${stack.proxyPort}`, '--database', 'app'], box.env, { login: email });
  expect(r.stderr).toContain(`✓ Logged in as ${email}`);
}

const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);

interface ReadRow {
  email: string | null;
  name: string | null;
  chain_id: string;
  detail: { command: string; arguments: Record<string, unknown>; results: number; by: Record<string, unknown> };
}
async function auditReads(command: string): Promise<ReadRow[]> {
  return (await stack.sql<ReadRow>(`SELECT email, name, chain_id, detail FROM scalple_audit.records WHERE event = 'audit_read' AND detail->>'command' = $1 ORDER BY seq`, [command])).rows;
}

beforeAll(async () => {
  const policy = demoPolicy('mask-key-for-through-proxy-tests-0123456789') as { roles: Record<string, unknown> } & Record<string, unknown>;
  stack = await startStack({
    poolMode: 'transaction',
    config: {
      ...policy,
      roles: { ...policy.roles, auditor: { groups: ['auditor'], audit: true, named_only: true } },
      subjects: SUBJECTS,
      anomalies: { bulk_subjects: 10 },
    },
  });
  dave = sandbox();
  alice = sandbox();
  carol = sandbox();
  nobody = sandbox();
  await Promise.all([loginAs(dave, 'dave@example.com'), loginAs(alice, 'alice@example.com'), loginAs(carol, 'carol@example.com')]);

  // What the auditor will ask about: people's statements through the proxy.
  const a = await stack.connect('alice@example.com', { options: `-c scalple.identity=${(await stack.token('alice@example.com')).accessToken} -c scalple.reason=ticket-7` });
  await a.query(LOOKUP);
  await a.query(BULK);
  await a.query(DECOY);
  await a.end();
  const c = await stack.connect('carol@example.com');
  await c.query(JOIN);
  await c.query(AGGREGATE);
  await c.end();
  await stack.flushAudit();
}, 120_000);
afterAll(async () => {
  for (const b of [dave, alice, carol, nobody]) b?.remove();
  await stack?.stop();
});

describe('audit commands through the proxy, with the person\'s own login', () => {
  it('who-accessed: an auditor gets through the proxy exactly what --config prints, and the read is recorded with his name', async () => {
    const via = await runCli(['audit', 'who-accessed', 'customer', '42', '--format', 'json'], dave.env);
    expect(via.code, via.stderr).toBe(0);
    const rows = JSON.parse(via.stdout) as SubjectAccess[];
    expect(rows.map((x) => [x.statement, x.email, x.access])).toEqual([
      [JOIN, 'carol@example.com', 'definite'],
      [BULK, 'alice@example.com', 'definite'],
      [LOOKUP, 'alice@example.com', 'definite'],
    ]);
    expect(rows.find((x) => x.statement === LOOKUP)).toMatchObject({ reason: 'ticket-7', groups: ['support'], decision: 'mask', chain_id: 'main' });
    expect(via.stderr).toMatch(/^note: plus 1 possible access to customer 42 by 1 person /);

    const local = await scalple(['audit', 'who-accessed', 'customer', '42', '--format', 'json', '--config', stack.configFile]);
    expect(local.code, local.stderr).toBe(0);
    expect(via.stdout).toBe(local.stdout); // same objects, same field names and order
    expect(via.stderr).toBe(local.stderr);
    for (const format of ['table', 'csv']) {
      const v = await runCli(['audit', 'who-accessed', 'customer', '42', '--format', format, '--include-possible'], dave.env);
      const l = await scalple(['audit', 'who-accessed', 'customer', '42', '--format', format, '--include-possible', '--config', stack.configFile]);
      expect(v.code, v.stderr).toBe(0);
      expect(v.stdout, format).toBe(l.stdout);
      expect(v.stdout).toContain(format === 'csv' ? AGGREGATE : 'POSSIBLE');
    }
    // --limit pages as with --config, saying how many more on stderr.
    const one = await runCli(['audit', 'who-accessed', 'customer', '42', '--format', 'json', '--limit', '1'], dave.env);
    expect(one.code, one.stderr).toBe(0);
    expect((JSON.parse(one.stdout) as SubjectAccess[]).map((x) => x.statement)).toEqual([JOIN]);
    expect(one.stderr).toMatch(/note: 2 more definite accesses to customer 42 \(at or before .*\) not shown: --limit 3 includes them/);

    const reads = await auditReads('who-accessed');
    const mine = reads.filter((r) => r.email === 'dave@example.com');
    expect(mine).toHaveLength(4);
    expect(mine[0]).toMatchObject({
      name: 'Dave Auditor', chain_id: 'audit-reads',
      detail: { arguments: { subject: 'customer', key: '42', via: 'proxy', format: 'json', limit: 1000, definite_only: false, include_possible: false }, results: 4, by: { via: 'proxy', application_name: 'scalple audit who-accessed' } },
    });
    expect(reads.filter((r) => r.email === null).map((r) => r.detail.by.via)).toEqual(['config', 'config', 'config']);
  });

  it('refuses a support person with a clear message, and asks someone not logged in to log in', async () => {
    const before = (await auditReads('who-accessed')).length;
    const r = await runCli(['audit', 'who-accessed', 'customer', '42'], alice.env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: `scalple audit who-accessed` through the proxy as alice@example\.com was refused: scalple\.who_accessed\(\) needs a role with audit: true \(yours: support\)/);
    noStackTrace(r.stderr);
    for (const args of [['audit', 'report', 'customer', '42'], ['audit', 'anomalies']]) {
      const x = await runCli(args, alice.env);
      expect(x.code, args.join(' ')).toBe(1);
      expect(x.stderr).toMatch(/needs a role with audit: true \(yours: support\)/);
      noStackTrace(x.stderr);
    }
    expect(await auditReads('who-accessed')).toHaveLength(before);
    // The refused call is itself in the audit log, as alice's.
    const refused = await stack.sql("SELECT email, decision FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE 'SELECT * FROM scalple.who_accessed(%' AND email = 'alice@example.com'");
    expect(refused.rowCount).toBe(1);

    const n = await runCli(['audit', 'who-accessed', 'customer', '42'], nobody.env);
    expect(n.code).toBe(4);
    expect(n.stderr).toMatch(/Run `scalple login`/);
    noStackTrace(n.stderr);
    const u = await runCli(['audit', 'who-accessed', 'customer', '42', '--url', 'postgres://x@127.0.0.1/app'], dave.env);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/--url reads the audit store directly: it needs --config/);
    const both = await runCli(['audit', 'who-accessed', 'customer', '42', '--profile', 'default', '--config', stack.configFile], dave.env);
    expect(both.code).toBe(2);
    expect(both.stderr).toBe('error: --profile asks the proxy with your login, and --config reads the audit store directly: use one of them.\n');
    const bad = await runCli(['audit', 'who-accessed', 'planet', '42'], dave.env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: unknown subject "planet": the config defines "customer"\./);
  });

  it('report: the HTML report through the proxy, naming the auditor who asked; the JSON as --config makes it', async () => {
    const file = path.join(dave.dir, 'customer-42.html');
    const r = await runCli(['audit', 'report', 'customer', '42', '-o', file], dave.env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(`✓ HTML report for customer 42 written to ${file}: 4 accesses (3 definite, 1 possible) by 2 people\n`);
    expect(existsSync(file)).toBe(true);
    const html = readFileSync(file, 'utf8');
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain('<title>Subject access report: customer 42</title>');
    expect(html).toContain('by Dave Auditor &lt;dave@example.com&gt; through the Scalple proxy');
    for (const s of [LOOKUP, JOIN]) expect(html).toContain(s.replace(/'/g, '&#39;'));
    expect(html).not.toContain(DECOY);

    const until = new Date(Date.now() + 60_000).toISOString();
    const via = await runCli(['audit', 'report', 'customer', '42', '--format', 'json', '--until', until], dave.env);
    const local = await scalple(['audit', 'report', 'customer', '42', '--format', 'json', '--until', until, '--config', stack.configFile]);
    expect(via.code, via.stderr).toBe(0);
    expect(local.code, local.stderr).toBe(0);
    const v = JSON.parse(via.stdout) as SubjectAccessReport;
    const l = JSON.parse(local.stdout) as SubjectAccessReport;
    expect(v.generated_by).toEqual({ via: 'proxy', sub: 'u-dave', email: 'dave@example.com', name: 'Dave Auditor', groups: ['auditor'] });
    expect(l.generated_by).toMatchObject({ via: 'config' });
    const { generated_at: _a, generated_by: _b, ...vRest } = v;
    const { generated_at: _c, generated_by: _d, ...lRest } = l;
    expect(Object.keys(v)).toEqual(Object.keys(l));
    expect(vRest).toEqual(lRest);
    expect(v.summary).toMatchObject({ accesses: 4, definite: 3, possible: 1, people: 2 });

    const reads = (await auditReads('report')).filter((x) => x.email === 'dave@example.com');
    expect(reads).toHaveLength(2);
    expect(reads[1]).toMatchObject({ detail: { arguments: { subject: 'customer', key: '42', until, via: 'proxy' }, results: 4, by: { via: 'proxy' } } });
  });

  it('anomalies: the JSON report through the proxy, with the proxy\'s thresholds, as --config makes it', async () => {
    const until = new Date(Date.now() + 60_000).toISOString();
    const via = await runCli(['audit', 'anomalies', '--format', 'json', '--until', until, '--window', '7d'], dave.env);
    expect(via.code, via.stderr).toBe(0);
    const v = JSON.parse(via.stdout) as AnomalyReport;
    // alice's region read returned more than anomalies.bulk_subjects (10) customers.
    const bulk = v.findings.filter((f) => f.kind === 'bulk_read');
    expect(bulk.map((f) => f.email)).toEqual(['alice@example.com']);
    expect(bulk[0]!.examples.map((e) => e.statement)).toEqual([BULK]);
    expect(v.thresholds.bulk_subjects).toBe(10);
    const local = await scalple(['audit', 'anomalies', '--format', 'json', '--until', until, '--window', '7d', '--config', stack.configFile]);
    expect(local.code, local.stderr).toBe(0);
    const l = JSON.parse(local.stdout) as AnomalyReport;
    const { generated_at: _a, ...vRest } = v;
    const { generated_at: _b, ...lRest } = l;
    expect(vRest).toEqual(lRest);
    const only = await runCli(['audit', 'anomalies', '--format', 'csv', '--kind', 'bulk_read', '--until', until], dave.env);
    expect(only.code, only.stderr).toBe(0);
    expect(only.stdout.split('\r\n')[1]).toMatch(/^bulk_read,u-alice,alice@example\.com,support,/);
    const reads = (await auditReads('anomalies')).filter((x) => x.email === 'dave@example.com');
    expect(reads.map((x) => x.detail.arguments.kinds)).toEqual([['peer_outlier', 'bulk_read', 'out_of_hours', 'missing_reason'], ['bulk_read']]);
  });

  it('psql: scalple.who_accessed pages with a limit and says in NOTICEs how many more and what was possible', async () => {
    const c = await stack.connect('dave@example.com');
    const notices: { message: string; detail?: string }[] = [];
    c.on('notice', (n) => notices.push({ message: n.message ?? '', ...(n.detail ? { detail: n.detail } : {}) }));
    try {
    const r = await c.query("SELECT * FROM scalple.who_accessed('customer', '42', NULL, 2)");
    expect(r.fields.map((f) => f.name).slice(0, 5)).toEqual(['log_id', 'ts', 'completed_at', 'access', 'possible_reason']);
    expect(r.rows.map((x) => [x.statement, x.email])).toEqual([[JOIN, 'carol@example.com'], [BULK, 'alice@example.com']]);
    expect(r.rows[1]).toMatchObject({ groups: ['support'], kinds: ['SELECT'], reason: 'ticket-7', rows: expect.any(String) });
    await new Promise((res) => setImmediate(res));
    expect(notices.map((n) => n.message)).toEqual([
      expect.stringMatching(/^1 more definite access to customer 42 \(at or before .*\) not shown: a limit of 3 \(the 4th argument\) includes them/),
      expect.stringMatching(/^plus 1 possible access to customer 42 by 1 person .*possible => 'include' lists them$/),
    ]);
    expect(notices[1]!.detail).toMatch(/^1 × carol@example\.com, .* UTC: SELECT count\(\*\) FROM customers WHERE region = 'EU' \(keys unknown \(aggregate\).*\)$/);
    const all = await c.query("SELECT * FROM scalple.who_accessed('customer', '42', since => '30d', possible => 'include')");
    expect(all.rows.map((x) => x.access)).toEqual(['possible', 'definite', 'definite', 'definite']);
    await expect(c.query("SELECT * FROM scalple.who_accessed('customer', '42', colour => 'red')")).rejects.toMatchObject({ code: '22023', message: expect.stringMatching(/has no argument colour/) });
    const an = await c.query("SELECT * FROM scalple.anomalies('7d', kinds => 'bulk_read')");
    expect(an.rows.map((x) => [x.kind, x.email])).toEqual([['bulk_read', 'alice@example.com']]);
    } finally {
      await c.end();
    }
  });

  it('admin commands through the proxy need admin: true', async () => {
    const refused = await runCli(['admin', 'revoke', 'erin@example.com', '--reason', 'test'], dave.env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/scalple\.admin_revoke\(\) needs a role with admin: true \(yours: auditor\)/);
    noStackTrace(refused.stderr);
    const revoked = await runCli(['admin', 'revoke', 'erin@example.com', '--reason', 'left the company'], carol.env);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stderr).toBe('✓ erin@example.com revoked: new connections are refused and live sessions close within seconds\n');
    await expect(stack.connect('erin@example.com')).rejects.toThrow(/revoked/);
    const restored = await runCli(['admin', 'restore', 'erin@example.com'], carol.env);
    expect(restored.code, restored.stderr).toBe(0);
    const granted = await runCli(['admin', 'grant', 'erin@example.com', '--role', 'billing', '--for', '1h', '--reason', 'INC-1'], carol.env);
    expect(granted.code, granted.stderr).toBe(0);
    expect(granted.stderr).toMatch(/^✓ erin@example\.com has role billing until \S+ \(new sessions; it ends by itself\)\n$/);
    const noRole = await runCli(['admin', 'grant', 'erin@example.com', '--role', 'wizard', '--for', '1h', '--reason', 'INC-1'], carol.env);
    expect(noRole.code).toBe(2);
    expect(noRole.stderr).toBe('error: no role named wizard in the policy\n');
    const events = await stack.sql("SELECT event, detail->>'email' AS email, detail->>'by' AS by FROM scalple_audit.records WHERE event IN ('revoke', 'restore', 'grant') ORDER BY seq");
    expect(events.rows).toEqual(['revoke', 'restore', 'grant'].map((event) => ({ event, email: 'erin@example.com', by: 'carol@example.com' })));
  });
});
