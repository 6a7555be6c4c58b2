// `scalple auth status`: who the profile is logged in as, with which issuer and proxy, until when,
// and where its token is stored; the token itself only masked. Reads, never refreshes.
import type { Command } from 'commander';
import { ScalpleError } from '../../errors.ts';
import { identityOf, proxyTokenOf } from '../../auth/oidc.ts';
import { loadSession } from '../../auth/session.ts';
import { credentialsFilePath, systemKeychain } from '../../auth/token-store.ts';
import { chalkFor, processIo, type CliIo } from '../io.ts';

export interface AuthStatusOptions {
  profile?: string;
  format: string;
}

export interface AuthStatus {
  profile: string;
  subject: string | null;
  email: string | null;
  name: string | null;
  groups: string[];
  issuer: string;
  clientId: string;
  proxy: string | null;
  database: string | null;
  audience: string;
  /** Which token goes to the proxy. */
  tokenKind: 'access' | 'id';
  /** ISO 8601, or null when the token carries no expiry. */
  expiresAt: string | null;
  expired: boolean;
  refreshable: boolean;
  storage: 'keychain' | 'file';
  /** The keychain's name or the token file's path. */
  storageLocation: string;
  /** The token, masked: its first 6 characters and its length. */
  token: string;
}

export function registerAuthStatusCommand(auth: Command, io: CliIo = processIo(), runF: (opts: AuthStatusOptions, io: CliIo) => Promise<void> = runAuthStatus): void {
  auth
    .command('status')
    .description('Show who you are logged in as, the issuer and proxy, the expiry, and where the token is stored')
    .option('--profile <name>', 'profile to show (default: $SCALPLE_PROFILE, else "default")')
    .option('--format <format>', 'output format: table or json', 'table')
    .addHelpText('after', '\nExits 4 when the profile is not logged in. The token is never shown in full: use `scalple token`.\n\nExample:\n  $ scalple auth status --format json | jq -r .email')
    .action(async (opts: AuthStatusOptions) => runF(opts, io));
}

export function maskToken(token: string): string {
  return `${token.slice(0, 6)}…(${token.length} chars)`;
}

export async function authStatus(profile: string | undefined, env: NodeJS.ProcessEnv, now = Math.floor(Date.now() / 1000)): Promise<AuthStatus> {
  const { profile: name, settings, tokens } = await loadSession(profile, { env });
  const identity = identityOf(tokens);
  const { token, kind, expiresAt } = proxyTokenOf(tokens);
  const storage = settings.tokenStorage ?? 'file';
  return {
    profile: name,
    subject: identity.subject ?? null,
    email: identity.email ?? null,
    name: identity.name ?? null,
    groups: identity.groups,
    issuer: tokens.issuer,
    clientId: tokens.clientId,
    proxy: settings.proxy ?? null,
    database: settings.database ?? null,
    audience: settings.audience,
    tokenKind: kind,
    expiresAt: expiresAt === undefined ? null : new Date(expiresAt * 1000).toISOString(),
    expired: expiresAt !== undefined && expiresAt <= now,
    refreshable: tokens.refreshToken !== undefined,
    storage,
    storageLocation: storage === 'keychain' ? systemKeychain(env).description : credentialsFilePath(env),
    token: maskToken(token),
  };
}

export async function runAuthStatus(opts: AuthStatusOptions, io: CliIo): Promise<void> {
  if (opts.format !== 'table' && opts.format !== 'json') throw new ScalpleError('USAGE', `Unknown --format "${opts.format}": use table or json.`);
  const now = Math.floor(Date.now() / 1000);
  const s = await authStatus(opts.profile, io.env, now);
  if (opts.format === 'json') {
    io.stdout.write(JSON.stringify(s, null, 2) + '\n');
    return;
  }
  const c = chalkFor(io.stdout, io.env);
  const none = c.dim('—');
  const expiry = s.expiresAt === null ? 'no expiry' : `${s.expiresAt} (${relative(Date.parse(s.expiresAt) / 1000 - now)})`;
  const rows: [string, string][] = [
    ['Profile', s.profile],
    ['Logged in as', s.name ? `${s.name} <${s.email ?? s.subject ?? '?'}>` : (s.email ?? s.subject ?? '?')],
    ['Email', s.email ?? none],
    ['Groups', s.groups.length ? s.groups.join(', ') : none],
    ['Subject', s.subject ?? none],
    ['Issuer', s.issuer],
    ['Client ID', s.clientId],
    ['Proxy', s.proxy ?? `${none} (set with scalple login --proxy HOST:PORT)`],
    ['Database', s.database ?? none],
    ['Token', `${s.token}, the ${s.tokenKind === 'access' ? `access token (audience "${s.audience}")` : 'ID token'}`],
    ['Expires', s.expired ? c.red(expiry) + (s.refreshable ? ' — refreshed on next use' : ' — Run `scalple login`') : expiry],
    ['Refresh token', s.refreshable ? 'yes' : 'no'],
    ['Stored in', s.storage === 'keychain' ? s.storageLocation : `${s.storageLocation} (plain text, mode 0600)`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  io.stdout.write(rows.map(([k, v]) => `${c.bold(k.padEnd(width))}  ${v}\n`).join(''));
}

function relative(seconds: number): string {
  const abs = Math.abs(Math.round(seconds));
  const text = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : abs < 172800 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} days`;
  return seconds >= 0 ? `in ${text}` : `expired ${text} ago`;
}
