// OAuth 2.0 device authorization grant (RFC 8628) for `scalple login`, with openid-client:
// discovery, the device authorization request, the one-time code and URL on stderr, an offer to
// open the browser, and polling that honours `interval`, `slow_down` (+5 s) and `expires_in`
// (openid-client's pollDeviceAuthorizationGrant does all three).
import { spawn } from 'node:child_process';
import * as oidc from 'openid-client';
import { ScalpleError } from '../errors.ts';
import { LOGIN_SCOPE, describeOidcError, discoverIssuer, displayNameOf, identityOf, oauthErrorCode, toStoredTokens, type Identity } from './oidc.ts';
import type { StoredTokens } from './token-store.ts';

/**
 * Test-only: seconds between polls, replacing the server's `interval` (RFC 8628 default 5 s) so
 * end-to-end tests do not wait 5 s per login. Never set it against a real issuer.
 */
export const TEST_POLL_INTERVAL_ENV = 'SCALPLE_TEST_DEVICE_POLL_INTERVAL';

export interface TerminalIn extends NodeJS.ReadableStream {
  isTTY?: boolean;
}
export interface TerminalOut {
  write(s: string): unknown;
  isTTY?: boolean;
}

export interface DeviceLoginOptions {
  issuer: string;
  clientId: string;
  /** The proxy's audience: decides whether the access token or the ID token goes to the proxy. */
  audience: string;
  stderr: TerminalOut;
  stdin: TerminalIn;
  /** false with --no-browser: only print the URL. */
  offerBrowser: boolean;
  env: NodeJS.ProcessEnv;
  /** Opens a URL in the person's browser; resolves to a reason when it could not. */
  openBrowser?: (url: string, env: NodeJS.ProcessEnv) => Promise<string | undefined>;
  /** Aborts the login (Ctrl-C). */
  signal?: AbortSignal;
  now?: () => number;
}

export interface DeviceLoginResult {
  tokens: StoredTokens;
  identity: Identity;
  /** What `✓ Logged in as …` names: the email when the tokens carry one. */
  displayName: string;
}

/**
 * Runs the device flow to completion and returns the tokens (not yet stored).
 *
 * @example
 * const { tokens, displayName } = await deviceLogin({ issuer, clientId: 'scalple-cli', audience: 'scalple',
 *   stderr: process.stderr, stdin: process.stdin, offerBrowser: false, env: process.env });
 */
export async function deviceLogin(opts: DeviceLoginOptions): Promise<DeviceLoginResult> {
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000));
  const config = await discoverIssuer(opts.issuer, opts.clientId);
  if (!config.serverMetadata().device_authorization_endpoint) {
    throw new ScalpleError('AUTH_FAILED', `The issuer ${opts.issuer} does not offer the device authorization grant: enable it for client "${opts.clientId}".`);
  }

  let da: oidc.DeviceAuthorizationResponse;
  try {
    da = await oidc.initiateDeviceAuthorization(config, { scope: LOGIN_SCOPE });
  } catch (err) {
    const code = oauthErrorCode(err);
    const fix = code === 'invalid_client' || code === 'unauthorized_client' ? `check --client-id (the issuer refused "${opts.clientId}")` : 'check --issuer and --client-id';
    throw new ScalpleError('AUTH_FAILED', `The issuer refused to start the login (${describeOidcError(err)}): ${fix}.`, { cause: err });
  }

  const out = opts.stderr;
  out.write(`! First copy your one-time code: ${da.user_code}\n`);
  out.write(`Open this URL to continue in your web browser: ${da.verification_uri}\n`);
  if (da.verification_uri_complete) out.write(`  (or this one, with the code already filled in: ${da.verification_uri_complete})\n`);

  // Only web URLs go to the browser opener (an issuer could send any scheme).
  const openable = isWebUrl(da.verification_uri_complete ?? da.verification_uri);
  const interactive = opts.offerBrowser && openable && opts.stdin.isTTY === true && out.isTTY === true;
  const stopOffer = interactive ? offerToOpenBrowser(da, opts) : () => {};

  const testInterval = Number(opts.env[TEST_POLL_INTERVAL_ENV]);
  const pollable = Number.isFinite(testInterval) && testInterval > 0 ? { ...da, interval: testInterval } : da;
  const expiry = AbortSignal.timeout(da.expires_in * 1000);
  const signal = opts.signal ? AbortSignal.any([expiry, opts.signal]) : expiry;

  let response: oidc.TokenEndpointResponse;
  try {
    response = await oidc.pollDeviceAuthorizationGrant(config, pollable, undefined, { signal });
  } catch (err) {
    if (opts.signal?.aborted) throw new ScalpleError('CANCELLED', 'Login cancelled.');
    if (expiry.aborted || oauthErrorCode(err) === 'expired_token') {
      throw new ScalpleError('AUTH_FAILED', 'The one-time code expired before sign-in finished: run `scalple login` again.', { cause: err });
    }
    if (oauthErrorCode(err) === 'access_denied') {
      throw new ScalpleError('AUTH_FAILED', 'Sign-in was denied at the issuer: run `scalple login` again, or ask for access.', { cause: err });
    }
    throw new ScalpleError('AUTH_FAILED', `Login failed (${describeOidcError(err)}): run \`scalple login\` again.`, { cause: err });
  } finally {
    stopOffer();
  }

  const tokens = toStoredTokens(response, undefined, opts, now());
  const identity = identityOf(tokens);
  return { tokens, identity, displayName: displayNameOf(identity, tokens) };
}

function isWebUrl(value: string): boolean {
  try {
    return /^https?:$/.test(new URL(value).protocol);
  } catch {
    return false;
  }
}

/**
 * gh-style: "Press Enter to open … in your browser". Polling goes on meanwhile, so signing in
 * from another device also finishes the login. Returns a function that stops listening.
 */
function offerToOpenBrowser(da: oidc.DeviceAuthorizationResponse, opts: DeviceLoginOptions): () => void {
  const url = da.verification_uri_complete ?? da.verification_uri;
  const open = opts.openBrowser ?? openInBrowser;
  opts.stderr.write(`- Press Enter to open ${new URL(url).host} in your browser...\n`);
  const stdin = opts.stdin;
  let active = true;
  const onData = (chunk: Buffer | string) => {
    if (!String(chunk).includes('\n') && !String(chunk).includes('\r')) return;
    stop();
    void open(url, opts.env).then((reason) => {
      if (reason) opts.stderr.write(`! Could not open a browser (${reason}): open the URL above yourself.\n`);
    });
  };
  const stop = () => {
    if (!active) return;
    active = false;
    stdin.removeListener('data', onData);
    stdin.pause();
  };
  stdin.on('data', onData);
  stdin.resume();
  return stop;
}

/**
 * Opens a URL with $BROWSER, else the platform's opener (xdg-open, open, the Windows URL handler).
 * Resolves to undefined when the opener started, else to the reason it could not.
 */
export function openInBrowser(url: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  let command: string;
  let args: string[];
  const browser = env.BROWSER?.split(':')[0]?.trim();
  if (browser) {
    const parts = browser.split(/\s+/);
    command = parts[0]!;
    args = parts.slice(1).some((p) => p.includes('%s')) ? parts.slice(1).map((p) => p.replace('%s', url)) : [...parts.slice(1), url];
  } else if (process.platform === 'darwin') {
    [command, args] = ['open', [url]];
  } else if (process.platform === 'win32') {
    [command, args] = ['rundll32', ['url.dll,FileProtocolHandler', url]];
  } else {
    if (!env.DISPLAY && !env.WAYLAND_DISPLAY) return Promise.resolve('no graphical display');
    [command, args] = ['xdg-open', [url]];
  }
  return new Promise((resolve) => {
    let settled = false;
    const done = (reason: string | undefined) => {
      if (!settled) {
        settled = true;
        resolve(reason);
      }
    };
    let child;
    try {
      child = spawn(command, args, { stdio: 'ignore', detached: true, env });
    } catch (err) {
      done(`${command}: ${(err as Error).message}`);
      return;
    }
    child.on('error', (err: NodeJS.ErrnoException) => done(err.code === 'ENOENT' ? `${command} not found` : `${command}: ${err.message}`));
    child.on('exit', (code) => done(code === 0 ? undefined : `${command} exited with status ${code}`));
    // A browser run directly (BROWSER=firefox) keeps running: once it has started, it has opened.
    const timer = setTimeout(() => done(undefined), 3000);
    timer.unref();
    child.unref();
  });
}
