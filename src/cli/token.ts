// `scalple token`: prints the token to present to the proxy, refreshed when it expires within a
// minute, on stdout and nothing else, for `PGPASSWORD=$(scalple token) psql …`.
import type { Command } from 'commander';
import { getFreshToken } from '../auth/session.ts';
import { processIo, type CliIo } from './io.ts';

export interface TokenOptions {
  profile?: string;
}

export function registerTokenCommand(program: Command, io: CliIo = processIo(), runF: (opts: TokenOptions, io: CliIo) => Promise<void> = runToken): void {
  program
    .command('token')
    .description('Print a fresh token for the proxy on stdout (refreshed when it expires within a minute)')
    .option('--profile <name>', 'profile whose token to print (default: $SCALPLE_PROFILE, else "default")')
    .addHelpText(
      'after',
      `
Prints the access token when the issuer makes it a JWT for the proxy's audience, else the ID token.
Exits 4 when not logged in or when the session cannot be refreshed.

Example:
  $ PGPASSWORD=$(scalple token) psql "host=db.example.com port=6432 dbname=shop user=alice@example.com"`,
    )
    .action(async (opts: TokenOptions) => runF(opts, io));
}

export async function runToken(opts: TokenOptions, io: CliIo): Promise<void> {
  const fresh = await getFreshToken(opts.profile, { env: io.env, stderr: io.stderr });
  io.stdout.write(fresh.token + '\n');
}
