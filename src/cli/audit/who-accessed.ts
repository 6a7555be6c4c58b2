// `scalple audit who-accessed SUBJECT KEY`: accesses to one data subject (customer 42), newest
// first: when, who (and for whom), what statement, which columns and which of them masked, the
// reason given. Definite accesses are listed (at most --limit, 1000 by default; how many more is
// said on stderr); possible accesses (statements that read the subject's table without revealing
// which rows: aggregates, DISTINCT, …) are summarised, one line per person and statement shape,
// unless --include-possible lists each one or --definite-only leaves them out. The read itself is
// recorded (an audit_read event) before anything is printed. --format json prints SubjectAccess
// objects (documented in src/audit/who-accessed.ts); with json or csv the summary of possible
// accesses goes to stderr, so stdout stays data. With --config (or SCALPLE_CONFIG) it reads the
// store directly on the proxy host; without, it asks the proxy as the logged-in person
// (scalple.who_accessed(…, format => 'json'): same answer, recorded by the proxy with their name).
import { Option, type Command } from 'commander';
import Table from 'cli-table3';
import { recordAuditRead } from '../../audit/audit-read.ts';
import { connect } from '../../audit/db.ts';
import { actingForLabel, humanTime, maskedList } from '../../audit/report.ts';
import { requireSchema } from '../../audit/schema.ts';
import { parseTime } from '../../audit/search.ts';
import {
  DEFAULT_LIMIT, SUBJECT_ACCESS_FIELDS, answerWhoAccessed, checkKey, resolveSubject, type MoreAccesses, type PossibleSummary, type SubjectAccess,
  type WhoAccessedAnswer,
} from '../../audit/who-accessed.ts';
import { ScalpleError } from '../../errors.ts';
import { csv, loadAuditConfig, oneLine, out, positiveInt, status } from './common.ts';
import { CONFIG_HELP, PROFILE_HELP, askProxyJson, callSql, throughProxy } from './through-proxy.ts';

interface WhoFlags {
  config?: string;
  profile?: string;
  since?: string;
  until?: string;
  format: 'table' | 'json' | 'csv';
  definiteOnly?: boolean;
  includePossible?: boolean;
  limit: number;
  url?: string;
}

export function registerWhoAccessed(audit: Command): void {
  audit
    .command('who-accessed')
    .description('Accesses to one data subject (e.g. customer 42), newest first: when, who, statement, columns, masking, reason. '
      + 'Definite accesses are listed; possible ones (aggregates, DISTINCT, … over the table) are summarised per person and statement')
    .argument('<subject>', 'data subject name from the config\'s `subjects` (e.g. customer)')
    .argument('<key>', 'its key value as PostgreSQL prints it (e.g. 42)')
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--profile <name>', PROFILE_HELP)
    .option('--since <time>', 'accesses from this time: ISO date/time or a duration before now (30d, 12h)')
    .option('--until <time>', 'accesses up to this time: ISO date/time or a duration before now')
    .option('--limit <n>', `list at most n accesses, newest first (and summarise at most n possible ones); how many more is said on stderr`, positiveInt, DEFAULT_LIMIT)
    .option('--include-possible', 'list each possible access (statements that read the table without revealing which rows) among the definite ones, instead of a summary')
    .option('--definite-only', 'leave possible accesses out, not even summarised')
    .option('--url <url>', 'read the store with this URL instead of audit.url (with --config)')
    .addOption(new Option('--format <format>', 'output format (json and csv: the accesses listed; the possible-access summary goes to stderr)').choices(['table', 'json', 'csv']).default('table'))
    .action(async (subjectName: string, keyArg: string, flags: WhoFlags) => {
      if (flags.includePossible && flags.definiteOnly) throw new ScalpleError('USAGE', '--include-possible and --definite-only exclude each other.');
      const key = checkKey(keyArg);
      const since = flags.since ? parseTime(flags.since, '--since') : undefined;
      const until = flags.until ? parseTime(flags.until, '--until') : undefined;
      // Without --config: the proxy answers (and records the read) for a role with audit: true.
      const answer = throughProxy(flags.config, flags.profile, { '--url': flags.url })
        ? await askProxyJson<WhoAccessedAnswer>({ ...(flags.profile ? { profile: flags.profile } : {}), command: 'scalple audit who-accessed' }, callSql(
          'who_accessed', [subjectName, key, since?.toISOString(), flags.limit],
          { until: until?.toISOString(), possible: flags.includePossible ? 'include' : flags.definiteOnly ? 'none' : 'summary', format: 'json' },
        ))
        : await fromStore(subjectName, key, since, until, flags);
      const { accesses, possible } = answer;
      const what = `${subjectName} ${key}`;
      if (flags.format === 'json') out(JSON.stringify(accesses, null, 2));
      else if (flags.format === 'csv') process.stdout.write(csv(SUBJECT_ACCESS_FIELDS, accesses as unknown as Record<string, unknown>[]));
      else {
        out(renderTable(accesses, what, { includePossible: flags.includePossible === true }));
        if (possible?.accesses) out('\n' + renderPossibleSummary(possible, what));
      }
      if (flags.format !== 'table' && possible?.accesses) status(possibleNote(possible, what));
      if (answer.more.count) status(moreNote(answer.more, flags.includePossible ? 'access' : 'definite access', what, 'not shown', flags.limit));
      if (possible?.more.count) status(moreNote(possible.more, 'possible access', what, 'not summarised', flags.limit));
    });
}

/** With --config on the proxy host: read the store directly, and record the read (before anything is shown). */
async function fromStore(subjectName: string, key: string, since: Date | undefined, until: Date | undefined, flags: WhoFlags): Promise<WhoAccessedAnswer> {
  const config = loadAuditConfig(flags.config);
  const subject = resolveSubject(config.policy, subjectName);
  const url = flags.url ?? config.audit.url;
  const client = await connect(url, { applicationName: 'scalple-audit-who-accessed' });
  let answer: WhoAccessedAnswer;
  try {
    await requireSchema(client);
    answer = await answerWhoAccessed(client, {
      subject, key, ...(since ? { since } : {}), ...(until ? { until } : {}), ...(flags.definiteOnly ? { definiteOnly: true } : {}),
    }, {
      limit: flags.limit, ...(flags.includePossible ? { includePossible: true } : {}),
      // The possible-access summary on a second connection, at the same time.
      connect: () => connect(url, { applicationName: 'scalple-audit-who-accessed' }),
    });
  } finally {
    await client.end().catch(() => undefined);
  }
  // Recorded before anything is shown: a read that cannot be recorded shows nothing.
  await recordAuditRead(config, {
    command: 'who-accessed',
    arguments: {
      subject: subjectName, key, since: since?.toISOString() ?? null, until: until?.toISOString() ?? null,
      format: flags.format, definite_only: flags.definiteOnly === true, include_possible: flags.includePossible === true, limit: flags.limit,
      ...(flags.url ? { url: 'given' } : {}),
    },
    results: answer.accesses.length + (answer.possible?.accesses ?? 0),
  });
  return answer;
}

/** "1 access", "1,734 accesses", "2 people". */
function plural(n: number, word: string): string {
  const many = word.endsWith('person') ? word.replace(/person$/, 'people') : word.endsWith('s') ? `${word}es` : `${word}s`;
  return `${n.toLocaleString('en')} ${n === 1 ? word : many}`;
}

/** "1,734 more definite accesses to customer 42 (before …) not shown: --limit 2734 lists them …" */
export function moreNote(m: MoreAccesses, noun: string, what: string, verb: string, limit: number): string {
  const before = m.before ? ` (at or before ${humanTime(m.before)})` : '';
  return m.exact
    ? `note: ${plural(m.count, `more ${noun}`)} to ${what}${before} ${verb}: --limit ${limit + m.count} includes them (or narrow with --since/--until).`
    : `note: more than ${plural(m.count, `more ${noun}`)} to ${what}${before} ${verb}: raise --limit, or narrow with --since/--until.`;
}

/** For json/csv output: the possible-access summary in one line on stderr. */
function possibleNote(p: PossibleSummary, what: string): string {
  const people = new Set(p.groups.map((g) => g.sub ?? g.email ?? '?')).size;
  return `note: plus ${plural(p.accesses, 'possible access')} to ${what} by ${plural(people, 'person')} (statements that read the table without revealing which rows), not in this output: --include-possible lists them.`;
}

export function renderTable(accesses: SubjectAccess[], what: string, opts: { includePossible?: boolean } = {}): string {
  if (accesses.length === 0) return `(no recorded ${opts.includePossible ? '' : 'definite '}access to ${what})`;
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
  if (!opts.includePossible) return t.toString() + `\n(${plural(accesses.length, 'definite access')} to ${what}, newest first)`;
  const definite = accesses.filter((a) => a.access === 'definite').length;
  const possible = accesses.length - definite;
  return t.toString() + `\n(${plural(accesses.length, 'access')} to ${what}: ${definite} definite, ${possible} possible${possible ? ' — POSSIBLE: the statement read the table without revealing which rows; it may have included this subject' : ''})`;
}

/** Possible accesses, one line per person and statement shape. */
export function renderPossibleSummary(p: PossibleSummary, what: string): string {
  const t = new Table({
    head: ['count', 'person', 'groups', 'first (UTC)', 'last (UTC)', 'statement', 'why the rows are unknown'],
    style: { head: [], border: [] },
    colWidths: [8, 26, 12, 18, 18, 50, 30],
    wordWrap: true,
  });
  for (const g of p.groups) {
    const af = actingForLabel(g.acting_for);
    t.push([
      String(g.count),
      (g.email ?? g.sub ?? '(unknown)') + (af ? `\nfor ${af}` : ''),
      g.groups.join(', '),
      g.first.slice(0, 16).replace('T', ' '),
      g.last.slice(0, 16).replace('T', ' '),
      g.named_query ? `named query ${g.named_query}` : oneLine(g.statement ?? '(statement record missing)', 200),
      g.reasons.join('; '),
    ]);
  }
  const people = new Set(p.groups.map((g) => g.sub ?? g.email ?? '?')).size;
  return `POSSIBLE accesses to ${what}: statements that read the table without revealing which rows (aggregates, DISTINCT, functions…); each may have included it.\n`
    + t.toString()
    + `\n(${plural(p.accesses, 'possible access')} by ${plural(people, 'person')}, in ${plural(p.groups.length, 'line')} of person and statement; --include-possible lists each one)`;
}
