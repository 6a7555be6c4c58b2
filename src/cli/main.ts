// The `scalple` command: one commander program; each command lives in its own module and
// registers itself here. Data goes to stdout, everything else to stderr; exit codes:
// 0 ok, 1 error, 2 usage or cancelled, 4 authentication needed.
import { Command, CommanderError } from 'commander';
import { ScalpleError } from '../errors.ts';
import { registerProxyCommand } from './proxy.ts';
import { registerDemoCommand } from './demo.ts';
import { registerAdminCommands } from './admin.ts';
import { registerPolicyCommands } from './policy/explain.ts';
import { registerAuditCommands } from './audit/index.ts';
import { registerLoginCommand } from './login.ts';
import { registerLogoutCommand } from './logout.ts';
import { registerAuthCommands } from './auth/index.ts';
import { registerTokenCommand } from './token.ts';
import { registerQueryCommand } from './query.ts';
import { registerShellCommand } from './shell/index.ts';
import { registerQueriesCommand } from './queries.ts';
import { registerRunCommand } from './run.ts';
import { registerCatalogCommands } from './catalog.ts';

export const EXIT = { ok: 0, error: 1, usage: 2, auth: 4 } as const;

export function buildProgram(): Command {
  const program = new Command('scalple')
    .description('Per-person access to PostgreSQL: OIDC identity at a proxy, field masking, tamper-evident audit log')
    .version('0.1.0')
    .option('--debug', 'print stack traces on errors')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) });
  registerProxyCommand(program);
  registerDemoCommand(program);
  registerAdminCommands(program);
  registerPolicyCommands(program);
  registerAuditCommands(program);
  registerLoginCommand(program);
  registerLogoutCommand(program);
  registerAuthCommands(program);
  registerTokenCommand(program);
  registerQueryCommand(program);
  registerShellCommand(program);
  registerQueriesCommand(program);
  registerRunCommand(program);
  registerCatalogCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  // `scalple` alone on a terminal starts the interactive shell.
  if (argv.length === 2 && process.stdin.isTTY && process.stdout.isTTY) argv = [...argv, 'shell'];
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    return reportError(err, argv.includes('--debug'));
  }
}

export function reportError(err: unknown, debug: boolean): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
    return EXIT.usage;
  }
  if (err instanceof ScalpleError) {
    process.stderr.write(`error: ${err.message}\n`);
    if (debug && err.stack) process.stderr.write(err.stack + '\n');
    if (err.code === 'USAGE' || err.code === 'CANCELLED') return EXIT.usage;
    if (err.code === 'AUTH_REQUIRED') return EXIT.auth;
    return EXIT.error;
  }
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`error: ${message}\n`);
  if (debug && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  return EXIT.error;
}
