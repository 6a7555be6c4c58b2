// `scalple run NAME --param-name VALUE …`: runs one of the proxy's named, typed queries
// (`SELECT * FROM scalple.run('name', 'value', …)`). Parameter flags come from the proxy's
// definition; missing ones are asked for on a terminal, with typed validation.
import type { Command } from 'commander';
import { ScalpleError } from '../errors.ts';
import { processIo, type CliIo } from './io.ts';
import type { OutputFormat } from './render.ts';
import { formatOption } from './query.ts';
import { ProxySession, ServerError } from './sql/session.ts';
import { describeType, flagName, listNamedQueries, runStatementFor, type NamedQueryInfo } from './sql/named.ts';
import { quietOnClosedStdout, runScript, signalInterrupts } from './sql/runner.ts';
import { canPrompt, promptParam, promptReason } from './sql/prompts.ts';

export interface RunOptions {
  format: OutputFormat;
  expanded?: boolean;
  reason?: string;
  profile?: string;
  pager: boolean;
}

export function registerRunCommand(program: Command, io: CliIo = processIo(), runF: (name: string, paramArgs: string[], opts: RunOptions, io: CliIo) => Promise<void> = runNamed): void {
  program
    .command('run')
    .description('Run a named query defined in the proxy, with its typed parameters as flags')
    .argument('<name>', 'the named query (see `scalple queries`)')
    .argument('[params...]', "the query's parameters as flags: order_id is --order-id 7 (or --order-id=7)")
    .addOption(formatOption())
    .option('-x, --expanded', 'one record per block')
    .option('--reason <text>', 'why you access this data (e.g. a ticket); recorded in the audit log')
    .option('--profile <name>', 'profile to use (default: $SCALPLE_PROFILE, else "default")')
    .option('--no-pager', 'do not page long output on a terminal')
    .allowUnknownOption()
    .addHelpText(
      'after',
      `
The parameters are the named query's own, in kebab-case (\`scalple queries\` lists them). On a
terminal, missing parameters are asked for and checked for their type; otherwise the command
exits 2 naming them. The proxy checks the types again and records the query's name and
parameters in the audit log.

Examples:
  $ scalple run get_order_by_id --order-id 7
  $ scalple run get_order_by_id --order-id=7 --format json --reason "TICKET-123"`,
    )
    .action(async (name: string, paramArgs: string[], opts: RunOptions) => runF(name, paramArgs, opts, io));
}

/** `--order-id 7 --note=x` -> { 'order-id': '7', note: 'x' }, flags as typed (without dashes). */
export function parseParamFlags(args: readonly string[]): Map<string, string> {
  const values = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const m = /^--([^=]+)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new ScalpleError('USAGE', `Unexpected argument "${arg}": parameters are flags, e.g. --order-id 7`);
    const flag = m[1]!;
    let value = m[2];
    if (value === undefined) {
      const next = args[i + 1];
      if (next === undefined || /^--[^-]/.test(next)) throw new ScalpleError('USAGE', `--${flag} needs a value`);
      value = next;
      i++;
    }
    if (values.has(flag)) throw new ScalpleError('USAGE', `--${flag} is given twice`);
    values.set(flag, value);
  }
  return values;
}

function paramList(q: NamedQueryInfo): string {
  return q.params.length ? q.params.map((p) => `--${flagName(p.name)} (${describeType(p.type)})`).join(', ') : 'none';
}

/** The named query's arguments in call order, from the flags; prompts for missing ones on a terminal. */
export async function resolveArguments(q: NamedQueryInfo, flags: Map<string, string>, io: CliIo): Promise<string[]> {
  const byFlag = new Map(q.params.flatMap((p) => [[flagName(p.name), p] as const, [p.name, p] as const]));
  for (const flag of flags.keys()) {
    if (!byFlag.has(flag)) {
      throw new ScalpleError('USAGE', `Unknown option --${flag} for ${q.name}: its parameters are ${paramList(q)}`);
    }
  }
  const given = new Map<string, string>();
  for (const [flag, value] of flags) given.set(byFlag.get(flag)!.name, value);
  const missing = q.params.filter((p) => !given.has(p.name));
  if (missing.length && !canPrompt(io)) {
    const names = missing.map((p) => `--${flagName(p.name)} (${describeType(p.type)})`).join(', ');
    throw new ScalpleError('USAGE', `Missing parameter${missing.length > 1 ? 's' : ''} for ${q.name}: ${names}. Example: scalple run ${q.name} ${missing.map((p) => `--${flagName(p.name)} VALUE`).join(' ')}`);
  }
  for (const p of missing) given.set(p.name, await promptParam(p, io));
  return q.params.map((p) => given.get(p.name)!);
}

export async function runNamed(name: string, paramArgs: string[], opts: RunOptions, io: CliIo): Promise<void> {
  if (name.startsWith('-')) throw new ScalpleError('USAGE', `Put the query's name first: scalple run NAME ${name} …`);
  const flags = parseParamFlags(paramArgs);
  quietOnClosedStdout(io);
  const quit = (): never => process.exit(2);
  const interrupts = signalInterrupts(io, quit);
  let session: ProxySession | undefined;
  try {
    session = await ProxySession.open({ ...(opts.profile ? { profile: opts.profile } : {}), env: io.env, stderr: io.stderr, applicationName: 'scalple run', ...(opts.reason !== undefined ? { reason: opts.reason } : {}) });
    const available = await listNamedQueries(session);
    const q = available.find((x) => x.name === name);
    if (!q) {
      const names = available.map((x) => x.name).join(', ');
      throw new ScalpleError('USAGE', `No named query "${name}" that you may run${names ? ` (yours: ${names})` : ' (none are available to you)'}: see \`scalple queries\``);
    }
    const args = await resolveArguments(q, flags, io);
    try {
      await runScript(
        [runStatementFor(q.name, args)],
        undefined,
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
    } catch (err) {
      // The proxy refused a value for its type: a usage error, named by the proxy.
      if (err instanceof ServerError && err.sqlstate === '22P02') throw new ScalpleError('USAGE', err.message);
      throw err;
    }
  } finally {
    interrupts.dispose();
    await session?.close();
  }
}
