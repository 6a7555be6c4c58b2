// `scalple audit who-accessed SUBJECT KEY`: every access to one data subject (customer 42), newest
// first: when, who (and for whom), what statement, which columns and which of them masked, the
// reason given, and whether the access is definite or only possible. The read itself is recorded
// (an audit_read event) before anything is printed. --format json prints SubjectAccess objects
// (documented in src/audit/who-accessed.ts).
import { Option, type Command } from 'commander';
import Table from 'cli-table3';
import { recordAuditRead } from '../../audit/audit-read.ts';
import { connect } from '../../audit/db.ts';
import { actingForLabel, humanTime, maskedList } from '../../audit/report.ts';
import { requireSchema } from '../../audit/schema.ts';
import { parseTime } from '../../audit/search.ts';
import { SUBJECT_ACCESS_FIELDS, checkKey, resolveSubject, whoAccessed, type SubjectAccess } from '../../audit/who-accessed.ts';
import { csv, loadAuditConfig, oneLine, out } from './common.ts';

interface WhoFlags {
  config?: string;
  since?: string;
  until?: string;
  format: 'table' | 'json' | 'csv';
  definiteOnly?: boolean;
  url?: string;
}

export function registerWhoAccessed(audit: Command): void {
  audit
    .command('who-accessed')
    .description('Every access to one data subject (e.g. customer 42): when, who, statement, columns, masking, reason; definite or possible')
    .argument('<subject>', 'data subject name from the config\'s `subjects` (e.g. customer)')
    .argument('<key>', 'its key value as PostgreSQL prints it (e.g. 42)')
    .option('-c, --config <file>', 'config file (default: $SCALPLE_CONFIG)')
    .option('--since <time>', 'accesses from this time: ISO date/time or a duration before now (30d, 12h)')
    .option('--until <time>', 'accesses up to this time: ISO date/time or a duration before now')
    .option('--definite-only', 'leave out possible accesses (statements that read the table without revealing which rows)')
    .option('--url <url>', 'read the store with this URL instead of audit.url')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json', 'csv']).default('table'))
    .action(async (subjectName: string, keyArg: string, flags: WhoFlags) => {
      const config = loadAuditConfig(flags.config);
      const subject = resolveSubject(config.policy, subjectName);
      const key = checkKey(keyArg);
      const since = flags.since ? parseTime(flags.since, '--since') : undefined;
      const until = flags.until ? parseTime(flags.until, '--until') : undefined;
      const client = await connect(flags.url ?? config.audit.url, { applicationName: 'scalple-audit-who-accessed' });
      let accesses: SubjectAccess[];
      try {
        await requireSchema(client);
        accesses = await whoAccessed(client, {
          subject, key, ...(since ? { since } : {}), ...(until ? { until } : {}), ...(flags.definiteOnly ? { definiteOnly: true } : {}),
        });
      } finally {
        await client.end().catch(() => undefined);
      }
      // Recorded before anything is shown: a read that cannot be recorded shows nothing.
      await recordAuditRead(config, {
        command: 'who-accessed',
        arguments: {
          subject: subjectName, key, since: since?.toISOString() ?? null, until: until?.toISOString() ?? null,
          format: flags.format, definite_only: flags.definiteOnly === true, ...(flags.url ? { url: 'given' } : {}),
        },
        results: accesses.length,
      });
      if (flags.format === 'json') out(JSON.stringify(accesses, null, 2));
      else if (flags.format === 'csv') process.stdout.write(csv(SUBJECT_ACCESS_FIELDS, accesses as unknown as Record<string, unknown>[]));
      else out(renderTable(accesses, `${subjectName} ${key}`));
    });
}

export function renderTable(accesses: SubjectAccess[], what: string): string {
  if (accesses.length === 0) return `(no recorded access to ${what})`;
  const t = new Table({
    head: ['time (UTC)', 'person', 'groups', 'access', 'reason', 'statement', 'columns', 'masked'],
    style: { head: [], border: [] },
    colWidths: [21, 26, 12, 22, 16, 44, 28, 22],
    wordWrap: true,
  });
  for (const a of accesses) {
    const af = actingForLabel(a.acting_for);
    t.push([
      humanTime(a.ts).replace(' UTC', ''),
      (a.email ?? a.sub ?? '(unknown)') + (af ? `\nfor ${af}` : ''),
      a.groups.join(', '),
      a.access === 'definite' ? 'definite' : `POSSIBLE\n${a.possible_reason ?? 'keys unknown'}`,
      a.reason ?? '',
      oneLine(a.statement ?? '(statement record missing)', 200),
      a.columns.map((c) => c.split('.').slice(1).join('.')).join(', '),
      maskedList(a.masked_fields).map((m) => m.split('.').slice(1).join('.')).join(', '),
    ]);
  }
  const definite = accesses.filter((a) => a.access === 'definite').length;
  const possible = accesses.length - definite;
  return t.toString() + `\n(${accesses.length} access${accesses.length === 1 ? '' : 'es'} to ${what}: ${definite} definite, ${possible} possible${possible ? ' — POSSIBLE: the statement read the table without revealing which rows; it may have included this subject' : ''})`;
}
