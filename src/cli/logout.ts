// `scalple logout`: revokes the profile's refresh token at the issuer (best effort) and removes its
// tokens from the keychain and from the token file. The profile's settings stay, so a bare
// `scalple login` logs in again.
import type { Command } from 'commander';
import { identityOf, revokeRefreshToken } from '../auth/oidc.ts';
import { loadProfile, profileName, setTokenStorage } from '../auth/profile.ts';
import { readTokens, removeTokens, type StoredTokens } from '../auth/token-store.ts';
import { chalkFor, processIo, type CliIo } from './io.ts';

export interface LogoutOptions {
  profile?: string;
}

export function registerLogoutCommand(program: Command, io: CliIo = processIo(), runF: (opts: LogoutOptions, io: CliIo) => Promise<void> = runLogout): void {
  program
    .command('logout')
    .description("Log out: revoke the profile's refresh token and remove its tokens from the keychain and the token file")
    .option('--profile <name>', 'profile to log out (default: $SCALPLE_PROFILE, else "default")')
    .addHelpText('after', '\nThe profile\'s settings (issuer, proxy, …) are kept: `scalple login` logs in again.\n\nExample:\n  $ scalple logout --profile staging')
    .action(async (opts: LogoutOptions) => runF(opts, io));
}

export async function runLogout(opts: LogoutOptions, io: CliIo): Promise<void> {
  const env = io.env;
  const name = profileName(opts.profile, env);
  const settings = loadProfile(name, env);
  const c = chalkFor(io.stderr, env);

  let tokens: StoredTokens | undefined;
  try {
    tokens = (await readTokens(name, settings?.tokenStorage, { env })) ?? (settings?.tokenStorage === 'keychain' ? await readTokens(name, 'file', { env }) : undefined);
  } catch {
    tokens = undefined; // an unreadable keychain: still remove what can be removed
  }
  const revokeProblem = tokens ? await revokeRefreshToken(tokens) : undefined;
  const removed = await removeTokens(name, { env });
  if (settings) setTokenStorage(name, undefined, env);

  if (typeof removed.keychain === 'string' && settings?.tokenStorage === 'keychain') {
    io.stderr.write(`${c.yellow('!')} Could not remove the token from the keychain (${removed.keychain}): remove the entry service=scalple username=${name} yourself.\n`);
  }
  if (revokeProblem) io.stderr.write(`${c.yellow('!')} Could not revoke the refresh token at the issuer (${revokeProblem}); it stays valid there until it expires.\n`);
  if (!tokens && removed.keychain !== true && !removed.file) {
    io.stderr.write(`${c.yellow('!')} Not logged in (profile "${name}"): nothing to remove.\n`);
    return;
  }
  const who = tokens ? identityOf(tokens).email : undefined;
  io.stderr.write(`${c.green('✓')} Logged out of profile "${name}"${who ? ` (${who})` : ''}\n`);
}
