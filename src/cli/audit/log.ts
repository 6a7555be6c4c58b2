// `scalple audit log`: statements from the audit store, newest first, each intent joined with its
// completion by log_id. --format json prints an array of objects (stable field names, for SIEMs).
import { Option, type Command } from 'commander';
import Table from 'cli-table3';
import { connect } from '../../audit/db.ts';
import { requireSchema } from '../../audit/schema.ts';
import { parseTime, searchLog, type LogEntry } from '../../audit/search.ts';
import { recordAuditRead } from '../../audit/audit-read.ts';
import { csv, loadAuditConfig, oneLine, out, positiveInt } from './common.ts';

interface LogFlags {
  config?: string;
  user?: string;
  table?: string;
  since?: string;
  until?: string;
  limit: number;
  format: 'table' | 'json' | 'csv';
  url?: string;
}

export const LOG_FIELDS: (keyof LogEntry)[] = [
  'log_id', 'ts', 'sub', 'email', 'name', 'groups', 'principal_kind', 'application', 'acting_for', 'db_role', 'database',
  'client_addr', 'application_name', 'session_id', 'statement', 'params', 'kinds', 'tables', 'columns', 'decision', 'rule',
  'policy_version', 'reason', 'named_query', 'masked_fields', 'rows', 'sqlstate', 'error', 'duration_ms', 'completed_at',
  'chain_id', 'seq',
];

export function registerLog(audit: Command): void {
  audit
    .command('log')
    .description('List audited statements, newest first (intent joined with its completion)')
    .option('-c, --config <file>', 'config file (default: $SCALPLE_CONFIG)')
    .option('--user <email>', 'only this person (email, case-insensitive, or OIDC sub)')
    .option('--table <name>', 'only statements that read or wrote this table (schema.table, or table in any schema)')
    .option('--since <time>', 'from this time: ISO date/time or a duration before now (30d, 12h)')
    .option('--until <time>', 'up to this time: ISO date/time or a duration before now')
    .option('--limit <n>', 'at most n statements', positiveInt, 100)
    .option('--url <url>', 'read the store with this URL instead of audit.url')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json', 'csv']).default('table'))
    .action(async (flags: LogFlags) => {
      const config = loadAuditConfig(flags.config);
      const since = flags.since ? parseTime(flags.since, '--since') : undefined;
      const until = flags.until ? parseTime(flags.until, '--until') : undefined;
      const client = await connect(flags.url ?? config.audit.url, { applicationName: 'scalple-audit-log' });
      let entries: LogEntry[];
      try {
        await requireSchema(client);
        entries = await searchLog(client, {
          ...(flags.user ? { user: flags.user } : {}),
          ...(flags.table ? { table: flags.table } : {}),
          ...(since ? { since } : {}),
          ...(until ? { until } : {}),
          limit: flags.limit,
        });
      } finally {
        await client.end().catch(() => undefined);
      }
      // Reading the log is itself an audit read, recorded before anything is shown.
      await recordAuditRead(config, {
        command: 'log',
        arguments: {
          user: flags.user ?? null, table: flags.table ?? null, since: since?.toISOString() ?? null, until: until?.toISOString() ?? null,
          limit: flags.limit, format: flags.format, ...(flags.url ? { url: 'given' } : {}),
        },
        results: entries.length,
      });
      if (flags.format === 'json') out(JSON.stringify(entries, null, 2));
      else if (flags.format === 'csv') process.stdout.write(csv(LOG_FIELDS, entries as unknown as Record<string, unknown>[]));
      else out(renderTable(entries));
    });
}

function renderTable(entries: LogEntry[]): string {
  if (entries.length === 0) return '(no statements)';
  const t = new Table({ head: ['time', 'person', 'db role', 'decision', 'rows', 'tables', 'statement'], style: { head: [], border: [] } });
  for (const e of entries) {
    const person = (e.email ?? e.sub ?? '') + (e.acting_for && typeof e.acting_for === 'object' && !Array.isArray(e.acting_for) && e.acting_for.email ? ` for ${String(e.acting_for.email)}` : '');
    t.push([
      e.ts.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      person,
      e.db_role ?? '',
      e.decision ?? '',
      { hAlign: 'right', content: e.rows === null ? (e.sqlstate ? `err ${e.sqlstate}` : '-') : String(e.rows) },
      oneLine(e.tables.join(', '), 40),
      oneLine(e.statement, 60),
    ]);
  }
  return t.toString() + `\n(${entries.length} statement${entries.length === 1 ? '' : 's'})`;
}
