// Benchmark of insider-anomaly detection at scale (issue 5):
//   node --import tsx bench/anomalies.ts [--people 300] [--days 250] [--windows 5]
// Generates the Intesa-style history (test/support/intesa-sim.ts) for --people people (groups of
// 10, one insider) over --days working days into a throwaway PostgreSQL, then times the batch
// detector (`scalple audit anomalies`: every kind, 30-day window, 90-day novelty lookback) on
// --windows windows, and LiveAlerts.observe over a replay of the newest 200,000 statements.
import { connect } from '../src/audit/db.ts';
import { DAY_MS, DETECT_SETTINGS, detectAnomalies, median, parseAnomaliesConfig, personWindowsSql, reasonPolicyFrom } from '../src/audit/anomalies.ts';
import { LiveAlerts } from '../src/audit/alerts.ts';
import { freshAuditDb, startAuditCluster } from '../test/audit/helpers.ts';
import { generateIntesaHistory, groupName } from '../test/support/intesa-sim.ts';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

const people = arg('people', 300);
const days = arg('days', 250);
const nWindows = arg('windows', 5);

const server = await startAuditCluster();
try {
  const env = await freshAuditDb(server);
  console.log(`generating ${people} people x ${days} working days …`);
  const sim = await generateIntesaHistory(env.adminUrl, { people, days, insiderStart: 40 });
  console.log(`${sim.statements.toLocaleString('en')} statements = ${sim.records.toLocaleString('en')} records (generation ${(sim.generateMs / 1000).toFixed(1)} s, insert ${(sim.insertMs / 1000).toFixed(1)} s)`);
  const cfg = parseAnomaliesConfig({ working_hours: { start: '08:00', end: '19:00', timezone: 'Europe/Rome' } });
  const reasonPolicy = reasonPolicyFrom({ pii: { 'public.customers.email': 'email' }, roles: { support: { groups: [groupName(0)], require_reason: true } } });
  const c = await connect(env.writerUrl);
  const times: number[] = [];
  const span = sim.endTs.getTime() - sim.startTs.getTime();
  for (let k = 0; k < nWindows; k++) {
    const until = new Date(sim.startTs.getTime() + 120 * DAY_MS + ((span - 120 * DAY_MS) * k) / Math.max(1, nWindows - 1));
    const t = performance.now();
    const r = await detectAnomalies(c, { config: cfg, until, reasonPolicy });
    const ms = performance.now() - t;
    times.push(ms);
    const scanned = await c.query<{ n: string }>(`SELECT count(*) AS n FROM scalple_audit.records WHERE ts >= $1 AND ts < $2`, [r.novelty_since, r.window.until]);
    console.log(`window until ${until.toISOString().slice(0, 10)}: ${ms.toFixed(0)} ms, ${Number(scanned.rows[0]!.n).toLocaleString('en')} records in lookback + window, ${r.people_evaluated} people, findings: ${r.findings.map((f) => `${f.kind}:${f.person}`).join(' ') || 'none'}`);
  }
  console.log(`batch detector: median ${median(times).toFixed(0)} ms per 30-day window`);
  if (process.argv.includes('--explain')) {
    const until = new Date(sim.endTs.getTime() - DAY_MS);
    const since = new Date(until.getTime() - cfg.windowMs);
    await c.query('BEGIN');
    for (const s of DETECT_SETTINGS) await c.query(s);
    const plan = await c.query(`EXPLAIN (ANALYZE, BUFFERS) ${personWindowsSql(cfg)}`, [since.toISOString(), until.toISOString(), new Date(since.getTime() - cfg.noveltyLookbackMs).toISOString()]);
    await c.query('COMMIT');
    console.log(plan.rows.map((r: Record<string, string>) => r['QUERY PLAN']).join('\n'));
  }

  const owner = await connect(env.adminUrl);
  const rows = await owner.query<{ n: string; p: number; g: number; ts: Date; keys: string[] }>('SELECT n, p, g, ts, keys FROM sim.stmt ORDER BY ts DESC LIMIT 200000');
  rows.rows.reverse();
  const live = new LiveAlerts(cfg, { log: () => undefined });
  const t = performance.now();
  for (const x of rows.rows) {
    live.observe({ ts: x.ts, logId: x.n, sub: `u-${x.p}`, groups: [groupName(x.g)], subjectKeys: x.keys, readsPii: true, reason: 'r', requireReason: true, statement: 'SELECT 1' });
  }
  const us = ((performance.now() - t) * 1000) / rows.rows.length;
  console.log(`LiveAlerts.observe: ${us.toFixed(1)} µs per statement over ${rows.rows.length.toLocaleString('en')} statements of ${people} people; ${live.stats().alerts} alerts; heap ${(process.memoryUsage().heapUsed / 1e6).toFixed(0)} MB`);
  await owner.end();
  await c.end();
  env.cleanup();
} finally {
  await server.stop();
}
