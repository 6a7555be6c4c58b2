// `scalple queries`: the named queries the caller may run, as the proxy lists them
// (`SELECT * FROM scalple.named_queries()`), so the list is the proxy's truth.
import { Option, type Command } from 'commander';
import { processIo, colorEnabled, type CliIo } from './io.ts';
import { renderResult } from './render.ts';
import { ProxySession } from './sql/session.ts';
import { describeType, flagName, listNamedQueries, type NamedQueryInfo } from './sql/named.ts';

export interface QueriesOptions {
  format: 'table' | 'json';
  profile?: string;
}

export function registerQueriesCommand(program: Command, io: CliIo = processIo(), runF: (opts: QueriesOptions, io: CliIo) => Promise<void> = runQueries): void {
  program
    .command('queries')
    .description('List the named queries you may run (as the proxy defines them)')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json']).default('table'))
    .option('--profile <name>', 'profile to use (default: $SCALPLE_PROFILE, else "default")')
    .addHelpText(
      'after',
      `
Named queries are defined in the proxy's config; only those your roles may run are listed.
Run one with \`scalple run NAME --param-name VALUE\`.

Examples:
  $ scalple queries
  $ scalple queries --format json | jq -r '.[].name'`,
    )
    .action(async (opts: QueriesOptions) => runF(opts, io));
}

export async function runQueries(opts: QueriesOptions, io: CliIo): Promise<void> {
  const session = await ProxySession.open({ ...(opts.profile ? { profile: opts.profile } : {}), env: io.env, stderr: io.stderr, applicationName: 'scalple queries' });
  let list: NamedQueryInfo[];
  try {
    list = await listNamedQueries(session);
  } finally {
    await session.close();
  }
  if (opts.format === 'json') {
    io.stdout.write(JSON.stringify(list.map((q) => ({ ...q, params: q.params.map((p) => ({ ...p, flag: `--${flagName(p.name)}` })) })), null, 2) + '\n');
    return;
  }
  if (!list.length) {
    io.stderr.write('No named queries are available to you here.\n');
    return;
  }
  const text = { typeOid: 25 };
  renderResult(
    {
      fields: [
        { name: 'name', ...text },
        { name: 'parameters', ...text },
        { name: 'description', ...text },
        { name: 'roles', ...text },
      ],
      rows: list.map((q) => [q.name, q.params.map((p) => `--${flagName(p.name)} <${describeType(p.type)}>`).join(' '), q.description, q.roles.join(', ')]),
      masked: new Set(),
    },
    io.stdout,
    { format: 'table', color: colorEnabled(io.stdout, io.env), env: io.env },
  );
}
