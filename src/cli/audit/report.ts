// `scalple audit report SUBJECT KEY [--since] [--until] [--format html|json|csv] [-o FILE]`: a subject
// access report a DPO can send. HTML (default) is one self-contained file; JSON is a
// SubjectAccessReport (documented in src/audit/report.ts); CSV has one row per access with the
// who-accessed columns. The read is recorded (an audit_read event) before the report is written.
// With --config (or SCALPLE_CONFIG) the store is read directly on the proxy host; without, the
// proxy builds the report for the logged-in person (scalple.access_report()) and records the read.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { localReader, recordAuditRead } from '../../audit/audit-read.ts';
import type { Json } from '../../audit/chain.ts';
import { connect } from '../../audit/db.ts';
import { buildReport, renderReportHtml, type SubjectAccessReport } from '../../audit/report.ts';
import { requireSchema } from '../../audit/schema.ts';
import { parseTime } from '../../audit/search.ts';
import { SUBJECT_ACCESS_FIELDS, checkKey, oldestRecord, resolveSubject, whoAccessed, type SubjectAccess } from '../../audit/who-accessed.ts';
import { ScalpleError } from '../../errors.ts';
import { csv, loadAuditConfig, out, status } from './common.ts';
import { CONFIG_HELP, PROFILE_HELP, askProxyJson, callSql, throughProxy } from './through-proxy.ts';

interface ReportFlags {
  config?: string;
  profile?: string;
  since?: string;
  until?: string;
  format: 'html' | 'json' | 'csv';
  output?: string;
  url?: string;
}

export function registerReport(audit: Command): void {
  audit
    .command('report')
    .description('Subject access report (Article 15) for one data subject: summary, people, then every access; HTML, JSON or CSV')
    .argument('<subject>', 'data subject name from the config\'s `subjects` (e.g. customer)')
    .argument('<key>', 'its key value as PostgreSQL prints it (e.g. 42)')
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--profile <name>', PROFILE_HELP)
    .option('--since <time>', 'accesses from this time: ISO date/time or a duration before now (30d, 12h)')
    .option('--until <time>', 'accesses up to this time (default: now)')
    .option('-o, --output <file>', 'write the report to this file (default: stdout)')
    .option('--url <url>', 'read the store with this URL instead of audit.url (with --config)')
    .addOption(new Option('--format <format>', 'output format').choices(['html', 'json', 'csv']).default('html'))
    .action(async (subjectName: string, keyArg: string, flags: ReportFlags) => {
      const key = checkKey(keyArg);
      const now = new Date();
      const since = flags.since ? parseTime(flags.since, '--since', now) : undefined;
      const until = flags.until ? parseTime(flags.until, '--until', now) : undefined;
      if (since && since > (until ?? now)) throw new ScalpleError('USAGE', '--since is after --until.');
      const output = flags.output ? path.resolve(flags.output) : undefined;
      // Without --config: the proxy builds the report (every access, generated_by naming you) and records the read.
      const report = throughProxy(flags.config, flags.profile, { '--url': flags.url })
        ? await askProxyJson<SubjectAccessReport>({ ...(flags.profile ? { profile: flags.profile } : {}), command: 'scalple audit report' },
          callSql('access_report', [subjectName, key, since?.toISOString(), until?.toISOString()]))
        : await fromStore(subjectName, key, since, until ?? now, now, output, flags);
      const text = flags.format === 'json' ? JSON.stringify(report, null, 2) + '\n'
        : flags.format === 'csv' ? csv(SUBJECT_ACCESS_FIELDS, report.accesses as unknown as Record<string, unknown>[])
        : renderReportHtml(report);
      if (output) {
        try {
          writeFileSync(output, text, { mode: 0o600 });
        } catch (err) {
          throw new Error(`cannot write the report to ${output}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
        }
        status(`✓ ${flags.format.toUpperCase()} report for ${subjectName} ${key} written to ${output}: ${report.summary.accesses} accesses (${report.summary.definite} definite, ${report.summary.possible} possible) by ${report.summary.people} ${report.summary.people === 1 ? 'person' : 'people'}`);
      } else if (flags.format === 'html' || flags.format === 'csv') {
        process.stdout.write(text);
      } else {
        out(text);
      }
    });
}

/** With --config on the proxy host: read the store directly, record the read, then build the report. */
async function fromStore(subjectName: string, key: string, since: Date | undefined, until: Date, now: Date, output: string | undefined, flags: ReportFlags): Promise<SubjectAccessReport> {
  const config = loadAuditConfig(flags.config);
  const subject = resolveSubject(config.policy, subjectName);
  const client = await connect(flags.url ?? config.audit.url, { applicationName: 'scalple-audit-report' });
  let accesses: SubjectAccess[];
  let logStarts: string | null;
  try {
    await requireSchema(client);
    accesses = await whoAccessed(client, { subject, key, ...(since ? { since } : {}), until });
    logStarts = await oldestRecord(client);
  } finally {
    await client.end().catch(() => undefined);
  }
  const reader = localReader();
  await recordAuditRead(config, {
    command: 'report',
    arguments: {
      subject: subjectName, key, since: since?.toISOString() ?? null, until: until.toISOString(), format: flags.format,
      output: output ?? null, ...(flags.url ? { url: 'given' } : {}),
    },
    results: accesses.length,
    reader,
  });
  return buildReport({
    subject: subjectName, key, accesses, ...(since ? { since } : {}), until, logStarts, generatedAt: now,
    generatedBy: { via: reader.via, os_user: reader.os_user, sudo_user: reader.sudo_user, hostname: reader.hostname } as Record<string, Json>,
  });
}
