// A logged-in profile's session for the rest of the CLI: `getFreshToken` gives the token to send to
// the proxy, refreshing it with the refresh token when it expires within a minute. Refreshes are
// serialised across processes with a lock file, because the issuer rotates refresh tokens and
// treats a second use of an old one as theft (it revokes the whole grant): two `scalple token`
// calls at once (DBeaver, a shell loop) must not both refresh.
import { closeSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import * as oidc from 'openid-client';
import { ScalpleError } from '../errors.ts';
import { configDir, ensureConfigDir, loadProfile, profileName, setTokenStorage, type ProfileSettings } from './profile.ts';
import { describeOidcError, discoverIssuer, oauthErrorCode, proxyTokenOf, toStoredTokens } from './oidc.ts';
import { readTokens, storeTokens, type Keychain, type StoredTokens } from './token-store.ts';

/** Refresh when the token sent to the proxy expires within this many seconds. */
export const REFRESH_MARGIN_SECONDS = 60;
/** Each HTTP request of a refresh gives up after this long (an unreachable issuer must not stall `scalple token`). */
const REFRESH_HTTP_TIMEOUT_SECONDS = 10;

export interface FreshToken {
  /** The token to present to the proxy (as the password, or `-c scalple.identity=<token>`). */
  token: string;
  /** Which token it is: the access token, or the ID token when the access token is not for the proxy. */
  kind: 'access' | 'id';
  /** Seconds since the epoch when it expires, when known. */
  expiresAt: number | undefined;
  /** The profile's name and settings (proxy host:port, database, …). */
  profile: string;
  settings: ProfileSettings;
  /** True when this call refreshed the tokens. */
  refreshed: boolean;
}

export interface FreshTokenOptions {
  env?: NodeJS.ProcessEnv;
  /** Refresh even if the token looks fresh (the proxy said it expired: clock skew). */
  forceRefresh?: boolean;
  /** Where notices go (a fallback to the file store); default process.stderr. */
  stderr?: { write(s: string): unknown };
  keychain?: Keychain;
  now?: () => number;
}

export function loginHint(profile: string): string {
  return profile === 'default' ? 'Run `scalple login`' : `Run \`scalple login --profile ${profile}\``;
}

/** A profile's settings and stored tokens; AUTH_REQUIRED (exit 4) when it is not logged in. */
export async function loadSession(profile: string | undefined, options: Pick<FreshTokenOptions, 'env' | 'keychain'> = {}): Promise<{ profile: string; settings: ProfileSettings; tokens: StoredTokens }> {
  const env = options.env ?? process.env;
  const name = profileName(profile, env);
  const settings = loadProfile(name, env);
  const tokens = settings?.tokenStorage ? await readTokens(name, settings.tokenStorage, { env, ...(options.keychain ? { keychain: options.keychain } : {}) }) : undefined;
  if (!settings || !tokens) throw new ScalpleError('AUTH_REQUIRED', `Not logged in (profile "${name}"): ${loginHint(name)}`);
  return { profile: name, settings, tokens };
}

/**
 * The token to send to the proxy, fresh for at least a minute when the issuer allows.
 *
 * @example
 * const { token, settings } = await getFreshToken(opts.profile);
 * new pg.Client({ host, port, password: token, options: `-c scalple.identity=${token}` });
 *
 * @throws ScalpleError AUTH_REQUIRED ("Session expired: Run `scalple login`") when the profile is
 * not logged in or its refresh fails; main.ts turns it into exit code 4.
 */
export async function getFreshToken(profile?: string, options: FreshTokenOptions = {}): Promise<FreshToken> {
  const env = options.env ?? process.env;
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const session = await loadSession(profile, options);
  if (!options.forceRefresh && !expiresSoon(session.tokens, now())) return result(session, false);

  const release = await acquireRefreshLock(session.profile, env);
  try {
    // Another process may have refreshed while we waited for the lock.
    const current = await loadSession(session.profile, options);
    const someoneRefreshed = current.tokens.refreshToken !== session.tokens.refreshToken || current.tokens.accessToken !== session.tokens.accessToken;
    if (someoneRefreshed && !expiresSoon(current.tokens, now())) return result(current, false);
    const tokens = await refresh(current.profile, current.settings, current.tokens, now());
    const stored = await storeTokens(current.profile, tokens, { env, insecureStorage: current.settings.tokenStorage === 'file', ...(options.keychain ? { keychain: options.keychain } : {}) });
    if (stored.storage !== current.settings.tokenStorage) {
      setTokenStorage(current.profile, stored.storage, env);
      (options.stderr ?? process.stderr).write(`! The keychain did not take the refreshed token (${stored.fallbackReason ?? 'unknown reason'}); stored in plain text at ${stored.location}\n`);
    }
    return result({ ...current, settings: { ...current.settings, tokenStorage: stored.storage }, tokens }, true);
  } finally {
    release();
  }
}

function expiresSoon(tokens: StoredTokens, now: number): boolean {
  const { expiresAt } = proxyTokenOf(tokens);
  return expiresAt !== undefined && expiresAt - now < REFRESH_MARGIN_SECONDS;
}

function result(session: { profile: string; settings: ProfileSettings; tokens: StoredTokens }, refreshed: boolean): FreshToken {
  const { token, kind, expiresAt } = proxyTokenOf(session.tokens);
  return { token, kind, expiresAt, profile: session.profile, settings: session.settings, refreshed };
}

async function refresh(profile: string, settings: ProfileSettings, tokens: StoredTokens, now: number): Promise<StoredTokens> {
  const hint = loginHint(profile);
  if (!tokens.refreshToken) throw new ScalpleError('AUTH_REQUIRED', `Session expired: ${hint}`);
  let response: oidc.TokenEndpointResponse;
  try {
    const config = await discoverIssuer(tokens.issuer, tokens.clientId, REFRESH_HTTP_TIMEOUT_SECONDS);
    response = await oidc.refreshTokenGrant(config, tokens.refreshToken);
  } catch (err) {
    const code = oauthErrorCode(err);
    if (code === 'invalid_grant') throw new ScalpleError('AUTH_REQUIRED', `Session expired: ${hint}`, { cause: err });
    const reason = err instanceof ScalpleError ? err.message.replace(/: check --issuer\.$/, '') : `the issuer refused the refresh: ${describeOidcError(err)}`;
    throw new ScalpleError('AUTH_REQUIRED', `Session expired and could not be refreshed (${reason}): ${hint}`, { cause: err });
  }
  const next = toStoredTokens(response, tokens, { issuer: tokens.issuer, clientId: tokens.clientId, audience: settings.audience }, now);
  const { expiresAt } = proxyTokenOf(next);
  if (expiresAt !== undefined && expiresAt <= now) throw new ScalpleError('AUTH_REQUIRED', `Session expired (the issuer gave back an expired token): ${hint}`);
  return next;
}

// ---- cross-process refresh lock ----------------------------------------------------------------

const LOCK_WAIT_MS = 15_000;
const LOCK_STALE_MS = 30_000;

/** Takes `<profile>.refresh.lock` in the config dir (O_EXCL); steals it when older than 30 s. */
async function acquireRefreshLock(profile: string, env: NodeJS.ProcessEnv): Promise<() => void> {
  ensureConfigDir(env);
  const file = path.join(configDir(env), `${profile}.refresh.lock`);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let age = 0;
    try {
      age = Date.now() - statSync(file).mtimeMs;
    } catch {
      continue; // released meanwhile
    }
    if (age > LOCK_STALE_MS || Date.now() > deadline) {
      rmSync(file, { force: true });
      continue;
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}
