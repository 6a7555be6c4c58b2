// Anomaly detection: the pure logic (config, peer statistic, working hours across time zones and
// DST, who needs a reason), the batch detector over a real store written by the real writer, the
// `scalple audit anomalies` command, and the live alerts (LiveAlerts) with a webhook on 127.0.0.1.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { ConfigError } from '../../src/errors.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import {
  type AnomalyReport, type WorkingHours, DAY_MS, DEFAULT_ANOMALIES, detectAnomalies, evaluatePeers, localTime, mad, median, missingReason,
  parseAnomaliesConfig, parseWorkingHours, reasonPolicyFrom, requiresReason, withinWorkingHours, withinWorkingHoursSql,
} from '../../src/audit/anomalies.ts';
import { type Alert, LiveAlerts, type ObservedStatement, addToRegisters, hash32, hllEstimate } from '../../src/audit/alerts.ts';
import { ALICE, BOB, type AuditDb, completion, freshAuditDb, HMAC_KEY, intent, startAuditCluster, withClient, auditConfigYaml } from './helpers.ts';

const BIN = path.resolve(import.meta.dirname, '../../bin/scalple.js');
const ROME: WorkingHours = parseWorkingHours({ start: '08:00', end: '19:00', days: ['mon', 'tue', 'wed', 'thu', 'fri'], timezone: 'Europe/Rome' });
const Z = (s: string) => new Date(s);

describe('config', () => {
  it('has documented defaults and parses every key', () => {
    expect(parseAnomaliesConfig(undefined)).toEqual(DEFAULT_ANOMALIES);
    expect(DEFAULT_ANOMALIES).toMatchObject({
      windowMs: 30 * DAY_MS, noveltyLookbackMs: 90 * DAY_MS, peerFactor: 3, peerZ: 3.5, minNewPerDay: 1.5, minPeers: 3, ignoreGroups: [],
      includeApplications: false, bulkSubjects: 100, missingReason: true,
      alerts: { webhookTimeoutMs: 3000, cooldownMs: 600_000, peerCooldownMs: DAY_MS, maxPeople: 50_000 },
    });
    expect(DEFAULT_ANOMALIES.workingHours).toBeUndefined();
    const c = parseAnomaliesConfig({
      window: '14d', novelty_lookback: '0', peer_factor: 2.5, peer_z: 3, min_new_per_day: 2, min_peers: 4, ignore_groups: ['staff'],
      include_applications: true, bulk_subjects: 500, missing_reason: false,
      working_hours: { start: '22:00', end: '06:00', days: ['Monday', 'tue'], timezone: 'America/New_York', holidays: ['2025-12-25'] },
      alerts: { webhook_url: 'http://127.0.0.1:9/hook', webhook_timeout_ms: 500, cooldown: '1h', peer_cooldown: '12h', max_people: 10 },
    });
    expect(c).toMatchObject({
      windowMs: 14 * DAY_MS, noveltyLookbackMs: 0, peerFactor: 2.5, peerZ: 3, minNewPerDay: 2, minPeers: 4, ignoreGroups: ['staff'],
      includeApplications: true, bulkSubjects: 500, missingReason: false,
      workingHours: { start: 1320, end: 360, days: [1, 2], timezone: 'America/New_York', holidays: ['2025-12-25'] },
      alerts: { webhookUrl: 'http://127.0.0.1:9/hook', webhookTimeoutMs: 500, cooldownMs: 3_600_000, peerCooldownMs: 12 * 3_600_000, maxPeople: 10 },
    });
  });

  it('names the key and the fix on errors', () => {
    const bad: [unknown, RegExp][] = [
      [{ windw: '30d' }, /anomalies.windw is not a known key/],
      [{ window: 30 }, /anomalies.window must be a duration/],
      [{ peer_factor: 0.5 }, /anomalies.peer_factor must be a number >= 1/],
      [{ bulk_subjects: 1.5 }, /anomalies.bulk_subjects must be an integer/],
      [{ working_hours: { timezone: 'Europe/Rom' } }, /unknown time zone "Europe\/Rom"/],
      [{ working_hours: { start: '8h' } }, /working_hours.start must be a time HH:MM/],
      [{ working_hours: { days: ['mon', 'funday'] } }, /"funday" is not a day/],
      [{ alerts: { webhook_url: 'ftp://x' } }, /must be an http\(s\) URL/],
    ];
    for (const [raw, re] of bad) {
      expect(() => parseAnomaliesConfig(raw), JSON.stringify(raw)).toThrow(ConfigError);
      expect(() => parseAnomaliesConfig(raw)).toThrow(re);
    }
  });
});

describe('peer statistic', () => {
  const t = { factor: 3, z: 3.5, floor: 45, minPeers: 3, ignoreGroups: ['all-staff'] };
  const group = (g: string, values: number[], prefix = g) => values.map((v, i) => ({ person: `${prefix}${i}`, groups: [g, 'all-staff'], v }));

  it('flags the one far above the median of the people sharing their groups, robustly', () => {
    const rows = [...group('branch', [30, 28, 41, 35, 33, 37, 25, 44, 31, 160]), ...group('contact', [300, 280, 310, 290])];
    const ev = evaluatePeers(rows, (r) => r.v, t);
    expect(ev.filter((e) => e.flagged).map((e) => e.person)).toEqual(['branch9']);
    const x = ev.find((e) => e.person === 'branch9')!;
    expect(x).toMatchObject({ peers: 9, peerBasis: 'same_groups', median: 33 });
    expect(x.ratio).toBeCloseTo(160 / 33);
    // contact-centre people are not anyone's peers in branch: 300 is ordinary there
    expect(ev.find((e) => e.person === 'contact0')!).toMatchObject({ flagged: false, peers: 3 });
    expect(median([1, 2, 3, 4])).toBe(2.5);
    expect(mad([1, 1, 2, 2, 4, 6, 9])).toBe(1);
  });

  it('needs all three gates: floor, ratio and robust z', () => {
    // below the floor (6 against 2 is 3x, but small numbers)
    expect(evaluatePeers(group('g', [2, 2, 2, 2, 6]), (r) => r.v, t)[4]!.flagged).toBe(false);
    // 3x the median but within a very spread group (z small)
    expect(evaluatePeers(group('g', [5, 20, 40, 60, 100, 120, 120]), (r) => r.v, { ...t, floor: 0 })[6]!.flagged).toBe(false);
    // a tight group (MAD 0): z is infinite, the ratio decides
    const tight = evaluatePeers(group('g', [30, 30, 30, 30, 80, 95]), (r) => r.v, t);
    expect(tight[4]).toMatchObject({ flagged: false, z: Infinity });
    expect(tight[5]!.flagged).toBe(true);
  });

  it('falls back to anyone sharing a group, then to everyone', () => {
    const rows = [
      { person: 'a', groups: ['x', 'y'] }, { person: 'b', groups: ['x'] }, { person: 'c', groups: ['x'] }, { person: 'd', groups: ['x'] },
      { person: 'e', groups: ['z'] }, { person: 'f', groups: ['x', 'all-staff'] },
    ];
    const ev = evaluatePeers(rows, () => 1, t);
    expect(ev.map((e) => [e.person, e.peerBasis, e.peers])).toEqual([
      ['a', 'shared_group', 4], ['b', 'same_groups', 3], ['c', 'same_groups', 3], ['d', 'same_groups', 3], ['e', 'everyone', 5], ['f', 'same_groups', 3],
    ]);
    // with only two of the same groups, b's peers are anyone sharing a group
    expect(evaluatePeers(rows.filter((r) => r.person !== 'f'), () => 1, t)[1]).toMatchObject({ person: 'b', peerBasis: 'shared_group', peers: 3 });
  });
});

describe('working hours', () => {
  it('are local to the configured time zone, across daylight saving time', () => {
    // CET (UTC+1) before 31 March 2024, CEST (UTC+2) after.
    const cases: [string, boolean][] = [
      ['2024-03-29T06:59:00Z', false], // Fri 07:59 CET
      ['2024-03-29T07:00:00Z', true], // Fri 08:00 CET
      ['2024-03-29T17:59:00Z', true], // Fri 18:59 CET
      ['2024-03-29T18:00:00Z', false], // Fri 19:00 CET: end is exclusive
      ['2024-03-30T10:00:00Z', false], // Saturday
      ['2024-04-02T05:59:00Z', false], // Tue 07:59 CEST
      ['2024-04-02T06:00:00Z', true], // Tue 08:00 CEST (07:00 UTC would be wrong by an hour)
      ['2024-04-02T16:59:00Z', true], // Tue 18:59 CEST
      ['2024-04-02T17:00:00Z', false], // Tue 19:00 CEST
      ['2024-10-28T07:00:00Z', true], // Mon 08:00 CET, the day after the change back
      ['2024-10-28T06:30:00Z', false], // Mon 07:30 CET
      ['2024-03-28T23:30:00Z', false], // Fri 00:30 local, but Thursday in UTC
    ];
    for (const [ts, inside] of cases) expect(withinWorkingHours(Z(ts), ROME), ts).toBe(inside);
    expect(localTime(Z('2024-04-02T06:00:00Z'), 'Europe/Rome')).toEqual({ isoDow: 2, minutes: 480, date: '2024-04-02' });
  });

  it('local time agrees with Intl in zones with half-hour, 45-minute and 30-minute-DST offsets', () => {
    for (const tz of ['Europe/Rome', 'America/New_York', 'Asia/Kathmandu', 'America/St_Johns', 'Australia/Lord_Howe', 'Asia/Kolkata', 'Pacific/Chatham']) {
      const f = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', weekday: 'short', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
      const dows: Record<string, number> = { Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6, Sun: 7 };
      const bad: string[] = [];
      // every 97 minutes through 2024 (both DST changes of every zone above)
      for (let t = Z('2024-01-01T00:00:00Z').getTime(); t < Z('2025-01-01T00:00:00Z').getTime(); t += 97 * 60_000) {
        const p: Record<string, string> = {};
        for (const x of f.formatToParts(new Date(t))) p[x.type] = x.value;
        const want = { isoDow: dows[p.weekday!], minutes: Number(p.hour) * 60 + Number(p.minute), date: `${p.year}-${p.month}-${p.day}` };
        const got = localTime(new Date(t), tz);
        if (got.isoDow !== want.isoDow || got.minutes !== want.minutes || got.date !== want.date) bad.push(new Date(t).toISOString());
      }
      expect(bad, tz).toEqual([]);
    }
  });

  it('handle holidays, overnight shifts and other zones', () => {
    const xmas = { ...ROME, holidays: ['2024-12-25'] };
    expect(withinWorkingHours(Z('2024-12-25T10:00:00Z'), xmas)).toBe(false);
    expect(withinWorkingHours(Z('2024-12-24T10:00:00Z'), xmas)).toBe(true);
    const night = parseWorkingHours({ start: '22:00', end: '06:00', days: ['mon', 'tue', 'wed', 'thu', 'fri'], timezone: 'America/New_York' });
    // New York is UTC-4 in June
    expect(withinWorkingHours(Z('2024-06-08T03:00:00Z'), night)).toBe(true); // Fri 23:00 local
    expect(withinWorkingHours(Z('2024-06-08T08:00:00Z'), night)).toBe(true); // Sat 04:00 local, the Friday shift
    expect(withinWorkingHours(Z('2024-06-09T03:00:00Z'), night)).toBe(false); // Sat 23:00 local
    expect(withinWorkingHours(Z('2024-06-10T08:00:00Z'), night)).toBe(false); // Mon 04:00 local: Sunday's shift
    expect(withinWorkingHours(Z('2024-06-10T14:00:00Z'), night)).toBe(false); // Mon 10:00 local
    const allDay = parseWorkingHours({ start: '00:00', end: '00:00', days: ['sat'], timezone: 'Asia/Tokyo' });
    expect(withinWorkingHours(Z('2024-06-07T15:30:00Z'), allDay)).toBe(true); // Sat 00:30 Tokyo
    expect(withinWorkingHours(Z('2024-06-07T14:30:00Z'), allDay)).toBe(false); // Fri 23:30 Tokyo
  });
});

describe('missing reason', () => {
  const policy = {
    pii: { 'customers.email': 'email', 'public.customers.iban': { mask: 'partial', keep_last: 4 } },
    roles: {
      support: { groups: ['support'], require_reason: true },
      billing: { groups: ['billing'] },
      guest: { groups: [], require_reason: true },
      oncall: { groups: ['oncall'], require_reason: true },
    },
    default_role: 'guest',
  };
  it('is derived from the roles, default_role and pii of the config', () => {
    const rp = reasonPolicyFrom(policy);
    expect(rp).toEqual({
      groups: ['oncall', 'support'], roles: ['guest', 'oncall', 'support'], roleGroups: ['billing', 'oncall', 'support'], defaultRequires: true,
      piiColumns: ['public.customers.email', 'public.customers.iban'],
    });
    expect(requiresReason(rp, ['support'])).toBe(true);
    expect(requiresReason(rp, ['billing'])).toBe(false);
    expect(requiresReason(rp, ['nobody'])).toBe(true); // the default role requires one
    expect(requiresReason(rp, ['billing'], ['oncall'])).toBe(true); // a time-boxed grant of a role that requires one
    expect(missingReason({ readsPii: true, requireReason: true })).toBe(true);
    expect(missingReason({ readsPii: true, requireReason: true, reason: '  ' })).toBe(true);
    expect(missingReason({ readsPii: true, requireReason: true, reason: 'TCK-1' })).toBe(false);
    expect(missingReason({ readsPii: false, requireReason: true })).toBe(false);
    expect(missingReason({ readsPii: true, requireReason: false })).toBe(false);
  });
});

describe('over a real store', () => {
  let server: PostgresServer;
  let env: AuditDb;
  let configFile: string;
  const DAVE = { kind: 'person' as const, sub: 'u-dave', email: 'dave@example.com', groups: ['support'] };
  const keys = (n: number, from = 1) => Array.from({ length: n }, (_, i) => `customer:${from + i}`);

  beforeAll(async () => {
    server = await startAuditCluster();
    env = await freshAuditDb(server);
    configFile = path.join(env.dir, 'scalple.yaml');
    writeFileSync(configFile, auditConfigYaml(server, env, { audit: ``, extra: `pii:
  public.customers.email: email
roles:
  support: { groups: [support], require_reason: true }
  billing: { groups: [billing] }
enforce: false
anomalies:
  bulk_subjects: 100
  working_hours: { start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri], timezone: Europe/Rome }
` }));
    const store = await openAuditStore(env.config(), { policyVersion: 'pv' });
    const stmt = async (ts: string, i: Parameters<typeof intent>[0], subjectKeys: string[], possible?: Record<string, string>) => {
      const rec = intent({ ts: Z(ts), ...i });
      await store.intent(rec);
      store.completion(completion(rec.logId, { ts: Z(ts), rows: subjectKeys.length, subjectKeys, ...(possible ? { subjectsPossible: possible } : {}) }));
      return rec.logId;
    };
    // Tuesday 4 March 2025, Rome is UTC+1.
    await stmt('2025-03-04T02:00:00Z', { statement: 'SELECT email FROM customers WHERE id = $1', reason: 'TCK-9' }, ['customer:7']); // alice 03:00 local
    await stmt('2025-03-04T09:00:00Z', { statement: `SELECT email FROM customers WHERE region = 'EU'`, reason: 'TCK-1' }, keys(150)); // alice bulk
    await stmt('2025-03-04T09:05:00Z', { statement: 'SELECT count(*) FROM customers', reason: 'TCK-1' }, [], { customer: 'aggregate' }); // possible only
    await stmt('2025-03-04T09:10:00Z', { decision: 'mask', maskedFields: { 'public.customers.email': 'email' } }, ['customer:8']); // alice: PII, no reason
    await stmt('2025-03-04T09:20:00Z', { decision: 'mask', maskedFields: { 'public.customers.email': 'email' }, reason: 'TCK-2' }, ['customer:9']);
    await stmt('2025-03-04T09:30:00Z', { principal: BOB, decision: 'mask', maskedFields: { 'public.customers.email': 'email' } }, ['customer:10']); // billing: no reason needed
    await stmt('2025-03-04T09:40:00Z', { principal: BOB, statement: 'SELECT * FROM orders' }, keys(100, 1000)); // exactly 100: not more than 100
    await stmt('2025-03-04T09:50:00Z', {
      principal: { kind: 'application', sub: 'app:crm', groups: ['service'], application: 'crm' }, actingFor: DAVE,
      statement: 'SELECT * FROM customers WHERE segment = $1', reason: 'export',
    }, keys(200, 5000)); // the app acting for dave: dave's bulk read
    await stmt('2025-03-04T10:00:00Z', { principal: { kind: 'application', sub: 'app:etl', groups: ['service'], application: 'etl' }, statement: 'SELECT * FROM customers' }, keys(300, 9000)); // an app on its own: not a person
    await stmt('2025-03-08T21:00:00Z', { principal: BOB, decision: 'deny', statement: 'SELECT iban FROM customers' }, []); // Saturday, refused: still out of hours
    await store.close();
  }, 120_000);

  afterAll(async () => {
    env?.cleanup();
    await server?.stop();
  });

  it('working hours in SQL agree with the pure function, DST included', async () => {
    const configs = [ROME, { ...ROME, holidays: ['2024-03-29'] }, parseWorkingHours({ start: '22:00', end: '06:00', days: ['mon', 'tue', 'wed', 'thu', 'fri'], timezone: 'America/New_York' })];
    // every 37 minutes from 2024-03-25 to 2024-04-05 and around the autumn change
    const stamps: Date[] = [];
    for (const [a, b] of [['2024-03-25', '2024-04-05'], ['2024-10-24', '2024-11-06']] as const) {
      for (let t = Z(a + 'T00:00:00Z').getTime(); t < Z(b + 'T00:00:00Z').getTime(); t += 37 * 60_000) stamps.push(new Date(t));
    }
    await withClient(env.writerUrl, async (c) => {
      for (const w of configs) {
        const params: unknown[] = [stamps.map((d) => d.toISOString())];
        const p = (v: unknown) => {
          params.push(v);
          return `$${params.length}`;
        };
        const r = await c.query<{ ok: boolean }>(`SELECT ${withinWorkingHoursSql('t', w, p)} AS ok FROM unnest($1::timestamptz[]) WITH ORDINALITY AS x(t, n) ORDER BY n`, params);
        const js = stamps.map((d) => withinWorkingHours(d, w));
        const mismatches = stamps.filter((_, i) => r.rows[i]!.ok !== js[i]).map((d) => d.toISOString());
        expect(mismatches).toEqual([]);
        expect(js.filter(Boolean).length).toBeGreaterThan(50);
      }
    });
  });

  it('finds bulk reads, out-of-hours access and PII without a required reason', async () => {
    const report = await withClient(env.writerUrl, (c) => detectAnomalies(c, {
      config: parseAnomaliesConfig({ working_hours: { start: '08:00', end: '19:00', timezone: 'Europe/Rome' } }),
      until: Z('2025-03-10T00:00:00Z'),
      reasonPolicy: reasonPolicyFrom({ pii: { 'public.customers.email': 'email' }, roles: { support: { groups: ['support'], require_reason: true }, billing: { groups: ['billing'] } } }),
    }));
    const brief = report.findings.map((f) => [f.kind, f.person, f.figures.statements]);
    expect(brief).toEqual([
      ['bulk_read', 'u-alice', 1],
      ['bulk_read', 'u-dave', 1],
      ['out_of_hours', 'u-alice', 1],
      ['out_of_hours', 'u-bob', 1],
      ['missing_reason', 'u-alice', 1],
    ]);
    const bulk = report.findings.find((f) => f.kind === 'bulk_read' && f.person === 'u-dave')!;
    expect(bulk).toMatchObject({ email: 'dave@example.com', groups: ['support'], figures: { max_subjects: 200, threshold: 100 } });
    expect(bulk.examples[0]).toMatchObject({ statement: 'SELECT * FROM customers WHERE segment = $1', subjects: 200, reason: 'export' });
    const night = report.findings.find((f) => f.kind === 'out_of_hours' && f.person === 'u-alice')!;
    expect(night.figures).toMatchObject({ first: '2025-03-04T02:00:00.000Z' });
    const mr = report.findings.find((f) => f.kind === 'missing_reason')!;
    expect(mr.examples).toHaveLength(1);
    expect(mr.examples[0]!.reason).toBeNull();
    // nobody is a peer outlier in this tiny store
    expect(report.findings.filter((f) => f.kind === 'peer_outlier')).toEqual([]);
    expect(report.people_evaluated).toBe(3); // alice, bob, dave (app:etl is not a person)
  });

  it('`scalple audit anomalies` prints stable JSON, CSV and a table', async () => {
    const run = (args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [BIN, 'audit', 'anomalies', '--config', configFile, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr: stderr.replace(/^oidc-provider WARNING: Unsupported runtime.*\n/m, '') });
      });
    });
    const [j, only, c, t, none, bad, badKind] = await Promise.all([
      run(['--until', '2025-03-10', '--window', '30d', '--format', 'json']),
      run(['--until', '2025-03-10', '--kind', 'missing_reason', '--format', 'json']),
      run(['--until', '2025-03-10', '--format', 'csv']),
      run(['--until', '2025-03-10']),
      run(['--until', '2020-01-01']),
      run(['--window', 'a month']),
      run(['--kind', 'snooping']),
    ]);
    expect(j.code, j.stderr).toBe(0);
    const report = JSON.parse(j.stdout) as AnomalyReport;
    expect(Object.keys(report)).toEqual(['window', 'novelty_since', 'generated_at', 'thresholds', 'people_evaluated', 'findings']);
    expect(report.window).toEqual({ since: '2025-02-08T00:00:00.000Z', until: '2025-03-10T00:00:00.000Z', days: 30 });
    expect(report.thresholds).toEqual({
      peer_factor: 3, peer_z: 3.5, min_new_subjects: 45, min_peers: 3, bulk_subjects: 100,
      working_hours: { start: '08:00', end: '19:00', days: ['mon', 'tue', 'wed', 'thu', 'fri'], timezone: 'Europe/Rome', holidays: [] },
      missing_reason: true,
    });
    expect(report.findings.map((f) => `${f.kind}:${f.person}`)).toEqual(['bulk_read:u-alice', 'bulk_read:u-dave', 'out_of_hours:u-alice', 'out_of_hours:u-bob', 'missing_reason:u-alice']);
    for (const f of report.findings) {
      expect(Object.keys(f)).toEqual(['kind', 'person', 'email', 'groups', 'window', 'summary', 'figures', 'examples']);
      for (const e of f.examples) expect(Object.keys(e)).toEqual(['log_id', 'ts', 'statement', 'subjects', 'reason']);
    }

    expect((JSON.parse(only.stdout) as AnomalyReport).findings.map((f) => f.kind)).toEqual(['missing_reason']);

    const lines = c.stdout.trimEnd().split('\r\n');
    expect(lines[0]).toBe('kind,person,email,groups,since,until,summary,new_subjects,distinct_subjects,statements,new_subjects_per_statement,peer_median,peer_median_statements,ratio,robust_z,peers,peer_basis,max_subjects,first,last,example_log_ids');
    expect(lines).toHaveLength(6);
    expect(lines[2]).toMatch(/^bulk_read,u-dave,dave@example.com,support,2025-02-08T00:00:00.000Z,2025-03-10T00:00:00.000Z,/);

    expect(t.code).toBe(0);
    expect(t.stdout).toContain('bulk_read');
    expect(t.stdout).toContain('dave@example.com');
    expect(t.stdout).toContain('(5 findings)');

    expect(none.stdout).toMatch(/\(no anomalies\)/);

    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: --window must be a duration like 30d/);
    expect(badKind.code).toBe(2);

    // every run that showed something was recorded first, as an audit read
    const reads = await withClient(env.writerUrl, (db) => db.query(`SELECT detail FROM scalple_audit.records WHERE event = 'audit_read' AND detail->>'command' = 'anomalies'`));
    expect(reads.rows).toHaveLength(5);
    expect(reads.rows.map((r) => r.detail.results).sort()).toEqual([0, 1, 5, 5, 5]);
    expect(reads.rows[0].detail.arguments).toHaveProperty('until');
  });
});

// ---------------------------------------------------------------------------------------------

interface Hook {
  url: string;
  bodies: Alert[];
  close(): Promise<void>;
}

async function webhookServer(opts: { hang?: boolean } = {}): Promise<Hook> {
  const bodies: Alert[] = [];
  const hanging: http.ServerResponse[] = [];
  const srv = http.createServer((req, res) => {
    let data = '';
    req.on('data', (d) => (data += d));
    req.on('end', () => {
      bodies.push(JSON.parse(data) as Alert);
      if (opts.hang) hanging.push(res);
      else res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/alerts`,
    bodies,
    close: () => new Promise<void>((r) => {
      for (const h of hanging) h.destroy();
      srv.closeAllConnections();
      srv.close(() => r());
    }),
  };
}

function ev(over: Partial<ObservedStatement> = {}): ObservedStatement {
  return {
    ts: Z('2025-03-04T10:00:00Z'), logId: `l-${Math.random().toString(36).slice(2)}`, sub: 'u-alice', email: 'alice@example.com', groups: ['support'],
    subjectKeys: ['customer:1'], readsPii: false, requireReason: false, statement: 'SELECT * FROM customers WHERE id = $1', ...over,
  };
}

describe('LiveAlerts', () => {
  const cfg = parseAnomaliesConfig({ working_hours: { start: '08:00', end: '19:00', timezone: 'Europe/Rome' }, bulk_subjects: 100 });

  it('alerts a bulk read as one JSON line and POSTs it to the webhook on 127.0.0.1', async () => {
    const hook = await webhookServer();
    const logged: Record<string, unknown>[] = [];
    const alerts = new LiveAlerts(cfg, { log: (o) => logged.push(o) }, hook.url);
    try {
      alerts.observe(ev({ logId: 'l-small', subjectKeys: Array.from({ length: 100 }, (_, i) => `customer:${i}`) }));
      alerts.observe(ev({ logId: 'l-bulk', subjectKeys: [...Array.from({ length: 150 }, (_, i) => `customer:${i}`), 'order:*'] }));
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatchObject({
        type: 'scalple_alert', alert: 'bulk_read', log_id: 'l-bulk', person: 'u-alice', email: 'alice@example.com', groups: ['support'],
        figures: { subjects: 150, threshold: 100, suppressed: 0 }, ts: '2025-03-04T10:00:00.000Z',
      });
      expect(JSON.parse(JSON.stringify(logged[0]))).toEqual(logged[0]); // one JSON line
      await alerts.drain();
      expect(hook.bodies).toEqual([logged[0]]);
      expect(alerts.stats()).toMatchObject({ alerts: 1, webhookSent: 1, webhookFailed: 0 });

      // cooldown: one alert per person and kind per 10 minutes; the next one says how many were held back
      alerts.observe(ev({ logId: 'l-bulk2', ts: Z('2025-03-04T10:05:00Z'), subjectKeys: Array.from({ length: 120 }, (_, i) => `customer:${i}`) }));
      alerts.observe(ev({ logId: 'l-bulk3', ts: Z('2025-03-04T10:11:00Z'), subjectKeys: Array.from({ length: 130 }, (_, i) => `customer:${i}`) }));
      expect(logged.map((l) => [l.log_id, (l.figures as Record<string, unknown>).suppressed])).toEqual([['l-bulk', 0], ['l-bulk3', 1]]);
      await alerts.drain();
      expect(hook.bodies.map((b) => b.log_id)).toEqual(['l-bulk', 'l-bulk3']);
    } finally {
      await hook.close();
    }
  });

  it('alerts access outside working hours in the configured time zone', () => {
    const logged: Record<string, unknown>[] = [];
    const alerts = new LiveAlerts(cfg, { log: (o) => logged.push(o) });
    alerts.observe(ev({ sub: 'a', ts: Z('2024-04-02T06:30:00Z') })); // 08:30 CEST: inside
    alerts.observe(ev({ sub: 'b', ts: Z('2024-04-02T05:30:00Z'), logId: 'l-early' })); // 07:30 CEST
    alerts.observe(ev({ sub: 'c', ts: Z('2024-03-29T06:30:00Z') })); // 07:30 CET: outside too
    alerts.observe(ev({ sub: 'd', ts: Z('2024-03-30T10:00:00Z') })); // Saturday
    expect(logged.map((l) => [l.person, l.alert])).toEqual([['b', 'out_of_hours'], ['c', 'out_of_hours'], ['d', 'out_of_hours']]);
    expect(logged[0]).toMatchObject({ log_id: 'l-early', figures: { local_time: '2024-04-02 07:30', timezone: 'Europe/Rome', working_hours: 'mon,tue,wed,thu,fri 08:00-19:00' } });
  });

  it('alerts PII read without the reason the role requires', () => {
    const logged: Record<string, unknown>[] = [];
    const alerts = new LiveAlerts(cfg, { log: (o) => logged.push(o) });
    alerts.observe(ev({ sub: 'a', readsPii: true, requireReason: true, logId: 'l-noreason' }));
    alerts.observe(ev({ sub: 'b', readsPii: true, requireReason: true, reason: 'TCK-4' }));
    alerts.observe(ev({ sub: 'c', readsPii: true, requireReason: false }));
    alerts.observe(ev({ sub: 'd', readsPii: false, requireReason: true }));
    expect(logged.map((l) => [l.person, l.alert, l.log_id])).toEqual([['a', 'missing_reason', 'l-noreason']]);
    const off = new LiveAlerts(parseAnomaliesConfig({ missing_reason: false }), { log: (o) => logged.push(o) });
    off.observe(ev({ sub: 'a', readsPii: true, requireReason: true }));
    expect(logged).toHaveLength(1);
  });

  it('never blocks the proxy: a hanging webhook times out, extra alerts are dropped, observe stays synchronous', async () => {
    const hook = await webhookServer({ hang: true });
    const logged: Record<string, unknown>[] = [];
    const alerts = new LiveAlerts(parseAnomaliesConfig({ alerts: { webhook_timeout_ms: 300 } }), { log: (o) => logged.push(o) }, hook.url, { maxInFlight: 1 });
    try {
      alerts.observe(ev({ sub: 'a', logId: 'l-1', subjectKeys: Array.from({ length: 101 }, (_, i) => `c:${i}`) }));
      alerts.observe(ev({ sub: 'b', logId: 'l-2', subjectKeys: Array.from({ length: 101 }, (_, i) => `c:${i}`) }));
      // observe returned with both alerts logged and nothing delivered yet: the POST is fire-and-forget
      expect(logged.map((l) => l.log_id)).toEqual(['l-1', 'l-2']);
      expect(hook.bodies).toEqual([]);
      await alerts.drain();
      expect(alerts.stats()).toMatchObject({ alerts: 2, webhookSent: 0, webhookFailed: 1, webhookDropped: 1 });
      expect(logged.find((l) => l.type === 'scalple_alert_webhook_failed')).toMatchObject({ alert: 'bulk_read', log_id: 'l-1', msg: 'alert webhook failed: timed out after 300 ms' });
      expect(hook.bodies.map((b) => b.log_id)).toEqual(['l-1']);
    } finally {
      await hook.close();
    }
    // a logger that throws never reaches the caller either
    const bad = new LiveAlerts(cfg, { log: () => { throw new Error('disk full'); } });
    expect(() => bad.observe(ev({ subjectKeys: Array.from({ length: 101 }, (_, i) => `c:${i}`) }))).not.toThrow();
  });

  it('flags the running peer outlier by distinct subjects in the sliding window, and only them', () => {
    const logged: Alert[] = [];
    const alerts = new LiveAlerts(parseAnomaliesConfig({ window: '30d' }), { log: (o) => logged.push(o as unknown as Alert) });
    const start = Z('2025-01-06T08:00:00Z').getTime();
    let n = 0;
    for (let d = 0; d < 60; d++) {
      for (let p = 0; p < 10; p++) {
        const insider = p === 3 && d >= 20;
        // ordinary: 20 lookups a day over the customers of the last 10 days' tickets (1 new a day);
        // the insider: 14 a day, 8 of them customers never seen before
        const perDay = insider ? 14 : 20;
        for (let j = 0; j < perDay; j++) {
          const key = insider && j < 8 ? `customer:snoop-${d}-${j}` : `customer:p${p}-d${d - (j % 10)}`;
          alerts.observe(ev({ ts: new Date(start + d * DAY_MS + j * 60_000 + p), sub: `u-${p}`, email: `p${p}@bank.example`, groups: ['branch'], subjectKeys: [key], logId: `l-${n++}` }));
        }
      }
    }
    const peer = logged.filter((a) => a.alert === 'peer_outlier');
    expect(new Set(peer.map((a) => a.person))).toEqual(new Set(['u-3']));
    const first = peer[0]!;
    const firstDay = Math.floor((Z(first.ts).getTime() - start) / DAY_MS);
    expect(firstDay).toBeGreaterThanOrEqual(20);
    expect(firstDay).toBeLessThanOrEqual(32);
    expect(first.figures).toMatchObject({ peers: 9, peer_basis: 'same_groups', min_subjects: 45 });
    expect(Number(first.figures.ratio)).toBeGreaterThanOrEqual(3);
    expect(Number(first.figures.statements)).toBeLessThan(Number(first.figures.peer_median_statements));
    // at most one per day (peer_cooldown 24h)
    const days = peer.map((a) => Math.floor((Z(a.ts).getTime() - start) / DAY_MS));
    expect(new Set(days).size).toBe(days.length);
  });

  it('estimates distinct subjects across exact and HyperLogLog buckets', () => {
    const logged: Alert[] = [];
    const alerts = new LiveAlerts(parseAnomaliesConfig({ alerts: { peer_cooldown: '1m' }, bulk_subjects: 10_000 }), { log: (o) => logged.push(o as unknown as Alert) });
    const t0 = Z('2025-03-04T10:00:00Z').getTime();
    for (let p = 0; p < 3; p++) alerts.observe(ev({ sub: `peer-${p}`, ts: new Date(t0), subjectKeys: Array.from({ length: 5 }, (_, i) => `customer:${p}-${i}`) }));
    const keys = (from: number, n: number) => Array.from({ length: n }, (_, i) => `customer:${from + i}`);
    alerts.observe(ev({ sub: 'x', ts: new Date(t0 + 1000), subjectKeys: keys(0, 300) })); // > 128 in one bucket: HLL registers
    alerts.observe(ev({ sub: 'x', ts: new Date(t0 + 4 * DAY_MS), subjectKeys: keys(300, 50) })); // a later bucket, exact set
    alerts.observe(ev({ sub: 'x', ts: new Date(t0 + 4 * DAY_MS + 120_000), subjectKeys: keys(0, 20) })); // revisits: no growth
    const est = logged.filter((a) => a.alert === 'peer_outlier').map((a) => Number(a.figures.distinct_subjects));
    expect(est).toHaveLength(3);
    expect(Math.abs(est[0]! - 300) / 300).toBeLessThan(0.15);
    expect(Math.abs(est[1]! - 350) / 350).toBeLessThan(0.15);
    expect(est[2]).toBe(est[1]);
  });

  it('keeps memory bounded: people evicted least recently seen first; distinct counts estimated within a few percent', () => {
    const alerts = new LiveAlerts(parseAnomaliesConfig({ alerts: { max_people: 100 } }), { log: () => undefined });
    for (let p = 0; p < 1000; p++) alerts.observe(ev({ sub: `u-${p}`, ts: new Date(Z('2025-03-04T10:00:00Z').getTime() + p) }));
    expect(alerts.stats().people).toBe(100);
    const reg = new Uint8Array(256);
    for (const n of [1000, 10_000, 100_000]) {
      reg.fill(0);
      for (let i = 0; i < n; i++) addToRegisters(reg, hash32(`customer:${i}`));
      expect(Math.abs(hllEstimate(reg) - n) / n, String(n)).toBeLessThan(0.15);
    }
  });
});
