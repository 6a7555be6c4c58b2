// `scalple query`: runs SQL through the proxy as the logged-in person and prints the results —
// a table for people (masked cells marked, footer naming what was masked), JSON, CSV or NDJSON
// for scripts. SQL from the argument, a file, or stdin.
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { ScalpleError, errorMessage } from '../errors.ts';
import { processIo, type CliIo } from './io.ts';
import { OUTPUT_FORMATS, type OutputFormat } from './render.ts';
import { ProxySession } from './sql/session.ts';
import { splitStatements, sqlParserReady } from './sql/statements.ts';
import { quietOnClosedStdout, runScript, signalInterrupts } from './sql/runner.ts';
import { promptReason } from './sql/prompts.ts';

export interface QueryOptions {
  file?: string;
  /** Values for $1, $2… (repeatable --param). */
  param?: string[];
  format: OutputFormat;
  expanded?: boolean;
  reason?: string;
  profile?: string;
  /** false with --no-pager. */
  pager: boolean;
}

export function formatOption(): Option {
  return new Option('--format <format>', 'output format').choices([...OUTPUT_FORMATS]).default('table');
}

export function registerQueryCommand(program: Command, io: CliIo = processIo(), runF: (sql: string | undefined, opts: QueryOptions, io: CliIo) => Promise<void> = runQuery): void {
  program
    .command('query')
    .description('Run SQL through the Scalple proxy as yourself and print the results')
    .argument('[sql]', 'the SQL to run (several statements separated by ";" are run in order)')
    .option('-f, --file <file>', 'read the SQL from a file')
    .option('--param <value>', 'a value for $1, $2, … in order (repeat the flag; one statement only)', (v: string, all: string[] | undefined) => [...(all ?? []), v])
    .addOption(formatOption())
    .option('-x, --expanded', 'one record per block (automatic on a terminal when the table is wider than it)')
    .option('--reason <text>', 'why you access this data (e.g. a ticket); recorded in the audit log')
    .option('--profile <name>', 'profile to use (default: $SCALPLE_PROFILE, else "default")')
    .option('--no-pager', 'do not page long output on a terminal')
    .addHelpText(
      'after',
      `
Without SQL and without -f, the SQL is read from stdin. Statements run one by one and each result
is printed; the first error stops the script (statements before it have run). Masked cells are
marked ⊘ and named in the footer; NULL is shown as [NULL]. JSON and CSV keep the server's values
exactly (one JSON document or CSV block per statement that returns rows). Long output on a
terminal goes through $PAGER (default "less -FRX"). Ctrl-C cancels the running statement; a
second Ctrl-C quits.

Exit codes: 0 ok, 1 error (the server's message; a policy denial names its rule), 2 usage or
cancelled, 4 not logged in.

Examples:
  $ scalple query "SELECT id, email, iban FROM customers ORDER BY id LIMIT 3"
  $ scalple query 'SELECT id, total FROM orders WHERE id = $1' --param 42 --format json
  $ scalple query -f report.sql --format csv > report.csv
  $ echo "SELECT count(*) FROM orders" | scalple query --reason "TICKET-123"`,
    )
    .action(async (sql: string | undefined, opts: QueryOptions) => runF(sql, opts, io));
}

/** The SQL text to run: the argument, -f FILE, or stdin when it is not a terminal. */
export async function readSqlText(sql: string | undefined, file: string | undefined, io: CliIo): Promise<string> {
  if (sql !== undefined && file !== undefined) throw new ScalpleError('USAGE', 'Give the SQL either as an argument or with -f FILE, not both.');
  if (sql !== undefined) return sql;
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new ScalpleError('USAGE', `Cannot read -f ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
    }
  }
  if (io.stdin.isTTY) throw new ScalpleError('USAGE', 'No SQL given: pass it as an argument, with -f FILE or on stdin (for an interactive session: `scalple shell`).');
  let text = '';
  io.stdin.setEncoding('utf8');
  for await (const chunk of io.stdin) text += chunk as string;
  return text;
}

export async function runQuery(sql: string | undefined, opts: QueryOptions, io: CliIo): Promise<void> {
  const text = await readSqlText(sql, opts.file, io);
  quietOnClosedStdout(io);
  await sqlParserReady();
  const statements = splitStatements(text);
  if (!statements.length) throw new ScalpleError('USAGE', 'No SQL statement in the input.');
  const params = opts.param ?? [];
  if (params.length && statements.length > 1) {
    throw new ScalpleError('USAGE', `--param works with one statement; the input has ${statements.length}. Run them separately.`);
  }
  const quit = (): never => process.exit(2);
  const interrupts = signalInterrupts(io, quit);
  let session: ProxySession | undefined;
  try {
    session = await ProxySession.open({ ...(opts.profile ? { profile: opts.profile } : {}), env: io.env, stderr: io.stderr, applicationName: 'scalple query', ...(opts.reason !== undefined ? { reason: opts.reason } : {}) });
    await runScript(
      statements,
      params.length ? params : undefined,
      { format: opts.format, expanded: opts.expanded === true, timing: false, pager: opts.pager },
      {
        io,
        session,
        interrupts,
        quit,
        ...(opts.reason === undefined ? { askReason: (why: string) => promptReason(io, why) } : {}),
        pagerHooks: { before: () => interrupts.paging(true), after: () => interrupts.paging(false) },
      },
    );
  } finally {
    interrupts.dispose();
    await session?.close();
  }
}
