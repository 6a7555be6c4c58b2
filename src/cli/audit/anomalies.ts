// `scalple audit anomalies`: insider anomalies over one window of the audit store — peer outliers
// by new data subjects, bulk reads, access outside working hours, PII without a required reason.
// Thresholds come from the `anomalies:` section of the config (see src/audit/anomalies.ts, which
// also documents the JSON output). Like every audit read, the run is recorded (an audit_read event)
// before anything is printed. Without --config (or SCALPLE_CONFIG) the proxy answers for the
// logged-in person (scalple.anomalies(…, format => 'json'), its own thresholds) and records the read.
import { Option, type Command } from 'commander';
import Table from 'cli-table3';
import { ScalpleError } from '../../errors.ts';
import { recordAuditRead } from '../../audit/audit-read.ts';
import { connect } from '../../audit/db.ts';
import { requireSchema } from '../../audit/schema.ts';
import { parseTime } from '../../audit/search.ts';
import {
  ANOMALY_KINDS, type AnomalyKind, type AnomalyReport, type Finding, detectAnomalies, loadAnomaliesConfig, parseDuration, reasonPolicyFrom,
} from '../../audit/anomalies.ts';
import { collect, csv, loadAuditConfig, oneLine, out, positiveInt } from './common.ts';
import { CONFIG_HELP, PROFILE_HELP, askProxyJson, callSql, throughProxy } from './through-proxy.ts';

interface AnomaliesFlags {
  config?: string;
  profile?: string;
  window?: string;
  until?: string;
  kind?: string[];
  examples: number;
  format: 'table' | 'json' | 'csv';
  url?: string;
}

export const ANOMALY_CSV_FIELDS = [
  'kind', 'person', 'email', 'groups', 'since', 'until', 'summary',
  'new_subjects', 'distinct_subjects', 'statements', 'new_subjects_per_statement', 'peer_median', 'peer_median_statements', 'ratio', 'robust_z',
  'peers', 'peer_basis', 'max_subjects', 'first', 'last', 'example_log_ids',
];

export function registerAnomalies(audit: Command): void {
  audit
    .command('anomalies')
    .description('Insider anomalies in a window: peer outliers by new data subjects, bulk reads, out-of-hours access, PII without a required reason')
    .option('-c, --config <file>', `${CONFIG_HELP}; thresholds from its anomalies: section (the proxy's through the proxy)`)
    .option('--profile <name>', PROFILE_HELP)
    .option('--window <duration>', 'window length before --until (30d, 12h, 2w; default anomalies.window or 30d)')
    .option('--until <time>', 'end of the window: ISO date/time or a duration before now (default now)')
    .option('--kind <kind>', `only this kind (${ANOMALY_KINDS.join(', ')}); repeatable`, collect)
    .option('--examples <n>', 'example statements per finding', positiveInt, 5)
    .option('--url <url>', 'read the store with this URL instead of audit.url (with --config)')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json', 'csv']).default('table'))
    .action(async (flags: AnomaliesFlags) => {
      const windowMs = flags.window ? parseDuration(flags.window, '--window') : undefined;
      if (windowMs !== undefined && windowMs < 60_000) throw new ScalpleError('USAGE', '--window must be at least 1m.');
      const until = flags.until ? parseTime(flags.until, '--until') : new Date();
      const kinds = flags.kind?.map((k) => {
        if (!ANOMALY_KINDS.includes(k as AnomalyKind)) throw new ScalpleError('USAGE', `--kind must be one of ${ANOMALY_KINDS.join(', ')} (got "${k}").`);
        return k as AnomalyKind;
      });
      // Without --config: the proxy detects with its own thresholds, for a role with audit: true, and records the read.
      const report = throughProxy(flags.config, flags.profile, { '--url': flags.url })
        ? await askProxyJson<AnomalyReport>({ ...(flags.profile ? { profile: flags.profile } : {}), command: 'scalple audit anomalies' }, callSql(
          'anomalies', [flags.window, until.toISOString()], { kinds: kinds?.join(','), examples: flags.examples, format: 'json' },
        ))
        : await fromStore(windowMs, until, kinds, flags);
      if (flags.format === 'json') out(JSON.stringify(report, null, 2));
      else if (flags.format === 'csv') process.stdout.write(csv(ANOMALY_CSV_FIELDS, report.findings.map(csvRow)));
      else out(renderTable(report));
    });
}

/** With --config on the proxy host: read the store directly, and record the read (before anything is shown). */
async function fromStore(windowFlag: number | undefined, until: Date, kinds: AnomalyKind[] | undefined, flags: AnomaliesFlags): Promise<AnomalyReport> {
  const config = loadAuditConfig(flags.config);
  const anomalies = loadAnomaliesConfig(config.file);
  const windowMs = windowFlag ?? anomalies.windowMs;
  const client = await connect(flags.url ?? config.audit.url, { applicationName: 'scalple-audit-anomalies' });
  let report: AnomalyReport;
  try {
    await requireSchema(client);
    report = await detectAnomalies(client, {
      config: anomalies, until, windowMs, examples: flags.examples, reasonPolicy: reasonPolicyFrom(config.policy),
      ...(kinds ? { kinds } : {}),
    });
  } finally {
    await client.end().catch(() => undefined);
  }
  // Recorded before anything is shown: a read that cannot be recorded shows nothing.
  await recordAuditRead(config, {
    command: 'anomalies',
    arguments: {
      since: report.window.since, until: report.window.until, kinds: kinds ?? [...ANOMALY_KINDS], examples: flags.examples, format: flags.format,
      ...(flags.url ? { url: 'given' } : {}),
    },
    results: report.findings.length,
  });
  return report;
}

function csvRow(f: Finding): Record<string, unknown> {
  return {
    kind: f.kind, person: f.person, email: f.email, groups: f.groups.join(' '), since: f.window.since, until: f.window.until, summary: f.summary,
    ...f.figures,
    example_log_ids: f.examples.map((e) => e.log_id).join(' '),
  };
}

function figuresText(f: Finding): string {
  const x = f.figures;
  switch (f.kind) {
    case 'peer_outlier':
      return `new subjects ${x.new_subjects} (distinct ${x.distinct_subjects})\npeer median ${x.peer_median} of ${x.peers} (${x.peer_basis}), ratio ${x.ratio}, z ${x.robust_z ?? '∞'}\nstatements ${x.statements} (peer median ${x.peer_median_statements})`;
    case 'bulk_read':
      return `${x.statements} statement(s), largest ${x.max_subjects} subjects`;
    default:
      return `${x.statements} statement(s)\n${String(x.first).replace('T', ' ').slice(0, 16)} … ${String(x.last).replace('T', ' ').slice(0, 16)} UTC`;
  }
}

export function renderTable(r: AnomalyReport): string {
  const head = `window ${r.window.since} … ${r.window.until} (${r.window.days} days), ${r.people_evaluated} people evaluated`;
  if (r.findings.length === 0) return `${head}\n(no anomalies)`;
  const t = new Table({ head: ['kind', 'person', 'groups', 'figures', 'example'], style: { head: [], border: [] } });
  for (const f of r.findings) {
    const ex = f.examples[0];
    t.push([
      f.kind,
      f.email ?? f.person,
      oneLine(f.groups.join(', '), 30),
      figuresText(f),
      ex ? `${ex.ts.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}\n${oneLine(ex.statement, 50)}` : (f.example_subjects ?? []).slice(0, 3).join(', '),
    ]);
  }
  return `${head}\n${t.toString()}\n(${r.findings.length} finding${r.findings.length === 1 ? '' : 's'})`;
}
