// `scalple audit report SUBJECT KEY`: the subject access report a DPO sends. HTML (one
// self-contained file, checked in headless Chromium: a screenshot that is not blank and a PDF of
// more than one page), JSON (summary, people, accesses) and CSV; the read is recorded.
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { loadConfig } from '../../src/policy/config.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import type { CompletionRecord, IntentRecord } from '../../src/audit/record.ts';
import { buildReport, renderReportHtml, type SubjectAccessReport } from '../../src/audit/report.ts';
import { SUBJECT_ACCESS_FIELDS } from '../../src/audit/who-accessed.ts';
import { ALICE, BOB, type AuditDb, completion, freshAuditDb, HMAC_KEY, intent, startAuditCluster, withClient, auditConfigYaml } from './helpers.ts';
import { chromium, chromiumPath, decodePng, pngStats, scalple } from './cli-run.ts';

const CAROL = { kind: 'person' as const, sub: 'u-carol', email: 'carol@example.com', name: 'Carol Analyst', groups: ['analytics'] };
const BILLING_API = { kind: 'application' as const, sub: 'app:billing-api', groups: ['service'], application: 'billing-api' };

let server: PostgresServer;
let env: AuditDb;
let configFile: string;
let out: string;
const start = Date.now() - 5 * 86_400_000;
const at = (minutes: number) => new Date(start + minutes * 60_000);

beforeAll(async () => {
  server = await startAuditCluster();
  env = await freshAuditDb(server);
  out = path.join(env.dir, 'out');
  mkdirSync(out);
  configFile = path.join(env.dir, 'scalple.yaml');
  writeFileSync(configFile, auditConfigYaml(server, env, { audit: `  durability: strict
`, extra: `subjects:
  customer: { table: public.customers, key: id, via: [public.orders.customer_id] }
` }));
  const config = loadConfig(configFile);
  const store = await openAuditStore(config.audit, { policyVersion: config.policyVersion });
  const write = async (i: Partial<IntentRecord>, c: Partial<CompletionRecord>) => {
    const rec = intent(i);
    await store.intent(rec);
    store.completion(completion(rec.logId, { ts: new Date(rec.ts.getTime() + 3), ...c }));
  };
  const lookup = { statement: 'SELECT * FROM customers WHERE id = $1', params: ['42'], columns: ['public.customers.id', 'public.customers.email', 'public.customers.iban'] };
  // Alice: ten ticket-driven lookups with masked columns.
  for (let n = 0; n < 10; n++) {
    await write({ ts: at(n * 30), ...lookup, reason: `ticket ${4700 + n}`, decision: 'mask', maskedFields: { 'public.customers.email': 'email', 'public.customers.iban': 'partial' } },
      { subjectKeys: ['customer:42'] });
  }
  await write({ ts: at(400), principal: CAROL, statement: "SELECT email FROM customers WHERE region = 'EU'", params: undefined, columns: ['public.customers.email'] },
    { rows: 19, subjectKeys: ['customer:7', 'customer:42', 'customer:420'] });
  await write({ ts: at(401), principal: CAROL, statement: "SELECT avg(total) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.region = 'EU'", params: undefined,
    tables: ['public.orders', 'public.customers'], columns: ['public.orders.total', 'public.customers.region'] },
  { subjectsPossible: { customer: 'keys unknown (aggregate): every row the statement\'s predicate matched' } });
  await write({ ts: at(402), principal: BILLING_API, actingFor: BOB, statement: "UPDATE customers SET plan_tier = 'pro' WHERE id = 42", params: undefined, kinds: ['UPDATE'],
    columns: ['public.customers.plan_tier'], reason: 'upgrade requested by the customer' }, { subjectKeys: ['customer:42'] });
  // Markup in a statement must come out as text.
  await write({ ts: at(403), principal: BOB, statement: "SELECT * FROM customers WHERE note = '<script>alert(1)</script>' AND id = 42", params: undefined,
    grants: [{ grantId: 'g-1', role: 'dba', reason: 'incident 99', by: 'erin@example.com', until: at(500) }] }, { subjectKeys: ['customer:42'] });
  await write({ ts: at(404), ...lookup, params: ['420'] }, { subjectKeys: ['customer:420'] });
  await store.close();
});

afterAll(async () => {
  env?.cleanup();
  await server?.stop();
});

describe('scalple audit report', () => {
  it('JSON: summary, people and accesses, oldest first', async () => {
    const r = await scalple(['audit', 'report', 'customer', '42', '--config', configFile, '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout) as SubjectAccessReport;
    expect(Object.keys(rep)).toEqual(['format', 'subject', 'key', 'subject_key', 'generated_at', 'generated_by', 'period', 'log_starts', 'summary', 'people', 'accesses']);
    expect(rep).toMatchObject({ format: 'scalple-subject-access-report/1', subject: 'customer', key: '42', subject_key: 'customer:42', period: { since: null } });
    expect(rep.summary).toEqual({ accesses: 14, definite: 13, possible: 1, people: 4, first_access: at(0).toISOString(), last_access: at(403).toISOString() });
    expect(rep.log_starts).toBe(at(0).toISOString());
    expect(rep.people).toEqual([
      { sub: ALICE.sub, email: ALICE.email, name: ALICE.name, principal_kind: 'person', groups: ['support'], accesses: 10, definite: 10, possible: 0, first: at(0).toISOString(), last: at(270).toISOString(), acting_for: [] },
      { sub: CAROL.sub, email: CAROL.email, name: CAROL.name, principal_kind: 'person', groups: ['analytics'], accesses: 2, definite: 1, possible: 1, first: at(400).toISOString(), last: at(401).toISOString(), acting_for: [] },
      { sub: BILLING_API.sub, email: null, name: null, principal_kind: 'application', groups: ['service'], accesses: 1, definite: 1, possible: 0, first: at(402).toISOString(), last: at(402).toISOString(), acting_for: [BOB.email] },
      { sub: BOB.sub, email: BOB.email, name: BOB.name, principal_kind: 'person', groups: ['billing'], accesses: 1, definite: 1, possible: 0, first: at(403).toISOString(), last: at(403).toISOString(), acting_for: [] },
    ]);
    expect(rep.accesses.map((a) => a.ts)).toEqual([...rep.accesses.map((a) => a.ts)].sort());
    expect(Object.keys(rep.accesses[0]!)).toEqual(SUBJECT_ACCESS_FIELDS);
    expect(rep.accesses.find((a) => a.access === 'possible')).toMatchObject({ email: CAROL.email, possible_reason: expect.stringContaining('aggregate') });
    expect(rep.accesses[13]!.grants).toEqual([{ grant_id: 'g-1', role: 'dba', reason: 'incident 99', by: 'erin@example.com', until: at(500).toISOString() }]);
    const since = JSON.parse((await scalple(['audit', 'report', 'customer', '42', '--config', configFile, '--format', 'json', '--since', at(400).toISOString()])).stdout) as SubjectAccessReport;
    expect(since.summary).toMatchObject({ accesses: 4, people: 3 });
    expect(since.period.since).toBe(at(400).toISOString());
  });

  it('CSV: one row per access with the who-accessed columns', async () => {
    const file = path.join(out, 'report.csv');
    const r = await scalple(['audit', 'report', 'customer', '42', '--config', configFile, '--format', 'csv', '-o', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`✓ CSV report for customer 42 written to ${file}: 14 accesses (13 definite, 1 possible) by 4 people`);
    const lines = readFileSync(file, 'utf8').trimEnd().split('\r\n');
    expect(lines[0]).toBe(SUBJECT_ACCESS_FIELDS.join(','));
    expect(lines).toHaveLength(15);
    expect(lines[1]!.split(',')[1]).toBe(at(0).toISOString());
  });

  it('HTML: one self-contained file that Chromium renders (screenshot) and prints (PDF, several pages)', async () => {
    chromiumPath(); // fails naming `apt-get install chromium` when it is missing
    const file = path.join(out, 'report.html');
    const r = await scalple(['audit', 'report', 'customer', '42', '--config', configFile, '-o', file]);
    expect(r.code, r.stderr).toBe(0);
    const html = readFileSync(file, 'utf8');
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    // Self-contained: no scripts, no external resources of any kind.
    expect(html).not.toMatch(/<script\b|<link\b|<img\b|<iframe\b|\bsrc=|@import|url\(|https?:\/\//i);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('@media print');
    expect(html).toContain('Subject access report: customer 42');
    expect(html).toContain('Possible access');
    expect(html).toContain('upgrade requested by the customer');
    expect(html).toContain('acting for bob@example.com');
    expect(html).toContain('dba until');
    expect(html.match(/class="access( possible)?"/g)).toHaveLength(14);

    const png = path.join(out, 'report.png');
    const shot = await chromium(['--screenshot=' + png, '--window-size=1200,1600'], file);
    expect(shot.code, shot.stderr).toBe(0);
    expect(statSync(png).size).toBeGreaterThan(20_000);
    const img = decodePng(png);
    expect([img.width, img.height]).toEqual([1200, 1600]);
    const stats = pngStats(img);
    expect(stats.distinctColours).toBeGreaterThan(50); // text, borders, anti-aliasing: not one colour
    expect(stats.dark).toBeGreaterThan(0.005); // there is text
    expect(stats.inked).toBeLessThan(0.5); // and no dark background

    const pdf = path.join(out, 'report.pdf');
    const printed = await chromium(['--print-to-pdf=' + pdf, '--no-pdf-header-footer'], file);
    expect(printed.code, printed.stderr).toBe(0);
    const bytes = readFileSync(pdf);
    expect(bytes.subarray(0, 5).toString('latin1')).toBe('%PDF-');
    expect(bytes.length).toBeGreaterThan(10_000);
    const pages = bytes.toString('latin1').match(/\/Type\s*\/Page[^s]/g) ?? [];
    expect(pages.length).toBeGreaterThanOrEqual(2); // the accesses start on a new page
    // To look at them: SCALPLE_KEEP_REPORT=/some/dir npx vitest run test/audit/report.test.ts
    const keep = process.env.SCALPLE_KEEP_REPORT;
    if (keep) for (const f of [file, png, pdf]) copyFileSync(f, path.join(keep, path.basename(f)));
  });

  it('an empty period says so, in every format', () => {
    const rep = buildReport({ subject: 'customer', key: '7', accesses: [], until: new Date('2026-01-31T00:00:00Z'), since: new Date('2026-01-01T00:00:00Z'),
      logStarts: '2025-06-01T00:00:00.000Z', generatedAt: new Date('2026-02-01T10:00:00Z'), generatedBy: { via: 'config', os_user: 'dpo', hostname: 'h' } });
    expect(rep.summary).toEqual({ accesses: 0, definite: 0, possible: 0, people: 0, first_access: null, last_access: null });
    const html = renderReportHtml(rep);
    expect(html).toContain('Nobody accessed this data subject in the period.');
    expect(html).toContain('No accesses recorded in the period.');
    expect(html).toContain('2026-01-01 00:00:00 UTC to 2026-01-31 00:00:00 UTC');
    expect(html).not.toContain('The oldest record in the audit log'); // the log covers the whole period
  });

  it('records the read, and refuses an unknown subject with exit 2', async () => {
    const events = await withClient(env.superUrl, async (c) => (await c.query<{ detail: { command: string; arguments: Record<string, unknown>; results: number } }>(
      `SELECT detail FROM scalple_audit.records WHERE chain_id = 'audit-reads' AND event = 'audit_read' ORDER BY seq`)).rows);
    const reports = events.filter((e) => e.detail.command === 'report');
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(reports.some((e) => e.detail.arguments.format === 'html' && e.detail.results === 14 && String(e.detail.arguments.output).endsWith('report.html'))).toBe(true);
    const bad = await scalple(['audit', 'report', 'client', '42', '--config', configFile]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('error: unknown subject "client": the config defines "customer".\n');
  });
});
