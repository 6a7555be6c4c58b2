// Audit and admin commands without --config (and without SCALPLE_CONFIG) ask the proxy, as the
// logged-in person (`scalple login`, `--profile`), exactly as `scalple query` connects
// (ProxySession: the token in the startup packet, refreshed before it expires, exit 4 when a login
// is needed). The proxy answers from its audit store when the person's role has `audit: true`
// (`admin: true` for admin commands) and records the read with their name: see
// src/proxy/audit-answers.ts. The command prints what it gets exactly as with --config.
import { ScalpleError } from '../../errors.ts';
import { processIo } from '../io.ts';
import { ProxySession, ServerError } from '../sql/session.ts';
import { sqlLiteral } from '../sql/statements.ts';

/**
 * True when the command must go through the proxy: no --config and no SCALPLE_CONFIG. Options that
 * only make sense on the proxy host (--url) are then a usage error, as --profile is with a config.
 */
export function throughProxy(configFlag: string | undefined, profile: string | undefined, hostOnly: Record<string, unknown> = {}): boolean {
  if (configFlag !== undefined || process.env.SCALPLE_CONFIG) {
    if (profile !== undefined) {
      throw new ScalpleError('USAGE', `--profile asks the proxy with your login, and ${configFlag !== undefined ? '--config' : 'SCALPLE_CONFIG'} reads the audit store directly: use one of them.`);
    }
    return false;
  }
  for (const [flag, v] of Object.entries(hostOnly)) {
    if (v !== undefined && v !== false) {
      throw new ScalpleError('USAGE', `${flag} reads the audit store directly: it needs --config FILE (or SCALPLE_CONFIG) on the proxy host. Without them the command asks the proxy as you.`);
    }
  }
  return true;
}

type Arg = string | number | undefined;

/**
 * `SELECT * FROM scalple.fn('a', 'b', NULL, 100, name => 'x')`: positional arguments (NULL for one
 * left out before a later one given), then named ones that are given.
 */
export function callSql(fn: string, positional: Arg[], named: Record<string, Arg> = {}): string {
  const lit = (v: string | number) => (typeof v === 'number' ? String(v) : sqlLiteral(v));
  let last = positional.length;
  while (last > 0 && positional[last - 1] === undefined) last--;
  const args = positional.slice(0, last).map((v) => (v === undefined ? 'NULL' : lit(v)));
  for (const [k, v] of Object.entries(named)) if (v !== undefined) args.push(`${k} => ${lit(v)}`);
  return `SELECT * FROM scalple.${fn}(${args.join(', ')})`;
}

export interface AskOptions {
  profile?: string;
  /** The command, e.g. "scalple audit who-accessed": application_name in the proxy's records, and in messages. */
  command: string;
}

/** Runs one scalple.* call through the proxy as the logged-in person; its rows as the server's text. */
export async function askProxy(opts: AskOptions, sql: string): Promise<(string | null)[][]> {
  const io = processIo();
  let session: ProxySession;
  try {
    session = await ProxySession.open({ ...(opts.profile ? { profile: opts.profile } : {}), env: io.env, stderr: io.stderr, applicationName: opts.command });
  } catch (err) {
    if (err instanceof ScalpleError && err.code === 'AUTH_REQUIRED') {
      throw new ScalpleError('AUTH_REQUIRED', `${err.message} (without --config, \`${opts.command}\` asks the proxy as you; on the proxy host, pass --config FILE instead)`, { cause: err });
    }
    throw err;
  }
  try {
    const { result } = await session.execute(sql, undefined, { reportMasking: false });
    return result?.rows ?? [];
  } catch (err) {
    if (err instanceof ServerError) {
      const as = `\`${opts.command}\` through the proxy as ${session.who}`;
      if (err.sqlstate === '42501') throw new ScalpleError('POLICY_DENIED', `${as} was refused: ${err.serverMessage}`, { sqlstate: err.sqlstate, cause: err });
      // Bad arguments (an unknown subject, a malformed time): usage errors, as with --config.
      if (err.sqlstate === '22023') throw new ScalpleError('USAGE', err.serverMessage, { sqlstate: err.sqlstate, cause: err });
      if (err.sqlstate === '42883') throw new ScalpleError('UPSTREAM', `${as}: ${err.serverMessage} (the proxy may be older than this CLI: upgrade it)`, { sqlstate: err.sqlstate, cause: err });
      throw new ScalpleError(err.code, `${as}: ${err.message}`, { sqlstate: err.sqlstate, cause: err });
    }
    throw err;
  } finally {
    await session.close();
  }
}

/** A call that answers one row with one json column (format => 'json', scalple.access_report()). */
export async function askProxyJson<T>(opts: AskOptions, sql: string): Promise<T> {
  const rows = await askProxy(opts, sql);
  const cell = rows[0]?.[0];
  if (rows.length !== 1 || typeof cell !== 'string') throw new ScalpleError('UPSTREAM', `\`${opts.command}\`: the proxy's answer was not the one JSON document expected (${rows.length} rows)`);
  try {
    return JSON.parse(cell) as T;
  } catch {
    throw new ScalpleError('UPSTREAM', `\`${opts.command}\`: the proxy's answer is not valid JSON`);
  }
}

export const PROFILE_HELP = 'without --config: the login profile to ask the proxy with (default: $SCALPLE_PROFILE, else "default")';
export const CONFIG_HELP = 'config file (default: $SCALPLE_CONFIG); without either, the command asks the proxy as you (your role needs audit: true)';
