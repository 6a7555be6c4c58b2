// `scalple login`: device login against the profile's OpenID issuer; saves the profile's settings
// (so a bare `scalple login` logs in again) and the tokens (keychain, else a 0600 file).
import type { Command } from 'commander';
import { ScalpleError } from '../errors.ts';
import { deviceLogin, type DeviceLoginResult } from '../auth/device-login.ts';
import { parseIssuer } from '../auth/oidc.ts';
import { DEFAULT_AUDIENCE, DEFAULT_CLIENT_ID, loadProfile, parseHostPort, profileName, saveProfile, type ProfileSettings } from '../auth/profile.ts';
import { storeTokens } from '../auth/token-store.ts';
import { chalkFor, processIo, type CliIo } from './io.ts';

export interface LoginOptions {
  profile?: string;
  issuer?: string;
  clientId?: string;
  proxy?: string;
  database?: string;
  audience?: string;
  /** false with --no-browser. */
  browser: boolean;
  insecureStorage?: boolean;
}

export function registerLoginCommand(program: Command, io: CliIo = processIo(), runF: (opts: LoginOptions, io: CliIo) => Promise<void> = runLogin): void {
  program
    .command('login')
    .description('Log in as yourself with your OpenID provider (device login); keeps the token in the system keychain')
    .option('--profile <name>', 'profile to log in (default: $SCALPLE_PROFILE, else "default")')
    .option('--issuer <url>', "OpenID issuer URL (https://; http:// only on loopback); default: the profile's")
    .option('--client-id <id>', `OAuth client id of the CLI at the issuer (default: the profile's, else "${DEFAULT_CLIENT_ID}")`)
    .option('--proxy <host:port>', "the Scalple proxy to query through (default: the profile's)")
    .option('--database <name>', "database to connect to through the proxy (default: the profile's)")
    .option('--audience <aud>', `audience the proxy accepts in access tokens (default: the profile's, else "${DEFAULT_AUDIENCE}")`)
    .option('--no-browser', 'only print the URL; do not offer to open a browser')
    .option('--insecure-storage', 'store the tokens in a plain-text file (mode 0600) instead of the system keychain')
    .addHelpText(
      'after',
      `
The one-time code and the URL to open are printed on stderr; sign in there and the login completes.
Settings are saved per profile in $XDG_CONFIG_HOME/scalple/config.json (default ~/.config), so
a later \`scalple login\` without flags logs in again with the same settings.

Examples:
  $ scalple login --issuer https://login.example.com/realms/acme --proxy db.example.com:6432 --database shop
  $ scalple login                      # again, same settings
  $ scalple login --profile staging --issuer https://login.example.com/realms/staging`,
    )
    .action(async (opts: LoginOptions) => runF(opts, io));
}

export async function runLogin(opts: LoginOptions, io: CliIo): Promise<void> {
  const env = io.env;
  const name = profileName(opts.profile, env);
  const existing = loadProfile(name, env);
  const issuer = opts.issuer ?? existing?.issuer;
  if (!issuer) {
    const flag = name === 'default' ? '' : ` --profile ${name}`;
    throw new ScalpleError('USAGE', `No issuer for profile "${name}": Run \`scalple login${flag} --issuer URL\``);
  }
  parseIssuer(issuer);
  if (opts.proxy !== undefined) parseHostPort(opts.proxy);
  const settings: ProfileSettings = {
    issuer,
    clientId: opts.clientId ?? existing?.clientId ?? DEFAULT_CLIENT_ID,
    audience: opts.audience ?? existing?.audience ?? DEFAULT_AUDIENCE,
  };
  const proxy = opts.proxy ?? existing?.proxy;
  const database = opts.database ?? existing?.database;
  if (proxy) settings.proxy = proxy;
  if (database) settings.database = database;

  const cancel = new AbortController();
  const onSigint = () => cancel.abort();
  process.once('SIGINT', onSigint);
  let login: DeviceLoginResult;
  try {
    login = await deviceLogin({
      issuer: settings.issuer,
      clientId: settings.clientId,
      audience: settings.audience,
      stderr: io.stderr,
      stdin: io.stdin,
      offerBrowser: opts.browser,
      env,
      signal: cancel.signal,
    });
  } finally {
    process.removeListener('SIGINT', onSigint);
  }

  const stored = await storeTokens(name, login.tokens, { env, insecureStorage: opts.insecureStorage === true });
  saveProfile(name, { ...settings, tokenStorage: stored.storage }, env);

  const c = chalkFor(io.stderr, env);
  if (stored.storage === 'keychain') {
    io.stderr.write(`- Token stored in the ${stored.location}\n`);
  } else if (opts.insecureStorage) {
    io.stderr.write(`${c.yellow('!')} Token stored in plain text at ${stored.location} (--insecure-storage)\n`);
  } else {
    io.stderr.write(`${c.yellow('!')} No working keychain (${stored.fallbackReason ?? 'unknown reason'}): token stored in plain text at ${stored.location}\n`);
  }
  io.stderr.write(`${c.green('✓')} Logged in as ${c.bold(login.displayName)}\n`);
}
