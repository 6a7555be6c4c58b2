/**
 * Where the CLI keeps a profile's tokens (access, refresh, ID, expiry): the OS keychain, else a
 * private file.
 *
 * Keychain library: `@napi-rs/keyring`, not `keytar`.
 * - keytar (named in the design card) was archived by its owner (Atom/GitHub) in 2022: no fixes,
 *   no prebuilt binaries for current Node ABIs, so `npm install` compiles it from source, which on
 *   Linux needs a C++ toolchain and `libsecret-1-dev` on every developer machine and CI image.
 * - @napi-rs/keyring is maintained, binds the Rust `keyring` crate (Secret Service on Linux,
 *   Keychain on macOS, Credential Manager on Windows), ships prebuilt N-API binaries (no compiler,
 *   no -dev package, ABI-stable across Node versions), has an async API that takes an AbortSignal,
 *   and reports a locked store as an error on write.
 * - Its default Linux store silently falls back to the kernel keyring (keyutils), which does not
 *   survive a reboot or a logout: a user would be logged out without being told. We pin the entry
 *   to the Secret Service (`{ linux: { store: 'secret-service' } }`); when the Secret Service is
 *   missing the call fails and we fall back, loudly, to the file.
 *
 * Every keychain call runs under a timeout (3 s): a keychain that waits for an unlock prompt nobody
 * answers, or a hung session bus, must not hang the CLI. The call runs in a child process that is
 * killed at the timeout, because the binding blocks a thread that Node cannot abandon (its
 * constructor connects to D-Bus synchronously, on the main thread). A keychain is trusted only after a test write is read back
 * unchanged: a locked keyring can answer a read with "nothing" rather than an error. When no
 * keychain works, or with `--insecure-storage`, tokens go to credentials.json (mode 0600) in the
 * config directory and the user is told so on stderr. The profile records which store it used so
 * `scalple auth status` can say where the token lives.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { ScalpleError, errorMessage } from '../errors.ts';
import { configDir, ensureConfigDir, writeFileAtomic, type TokenStorage } from './profile.ts';

export const KEYCHAIN_SERVICE = 'scalple';
export const KEYCHAIN_TIMEOUT_MS = 3000;

export interface StoredTokens {
  accessToken: string;
  refreshToken?: string;
  idToken?: string;
  /** Seconds since the epoch at which the access token expires, when known. */
  accessTokenExpiresAt?: number;
  /** Which token the CLI presents to the proxy: the access token (a JWT for the proxy's audience) or the ID token. */
  proxyToken: 'access' | 'id';
  issuer: string;
  clientId: string;
  /** Seconds since the epoch at which these tokens were obtained. */
  obtainedAt: number;
}

/** The few keychain operations we need, each bounded by a timeout. Accounts are profile names. */
export interface Keychain {
  /** Human name of the store, for messages and `auth status`. */
  readonly description: string;
  set(account: string, secret: string): Promise<void>;
  get(account: string): Promise<string | null>;
  delete(account: string): Promise<boolean>;
}

export class KeychainUnavailable extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'KeychainUnavailable';
  }
}

function keychainDescription(): string {
  if (process.platform === 'darwin') return 'macOS Keychain';
  if (process.platform === 'win32') return 'Windows Credential Manager';
  return 'system keychain (Secret Service)';
}

/**
 * The keychain call itself, run in a short-lived child process. @napi-rs/keyring's constructor
 * talks to D-Bus synchronously, and its async calls run on libuv's thread pool: a hung bus or an
 * unanswered unlock prompt would block the CLI's event loop, or keep the process from exiting
 * after our timeout. A child can be killed; it costs about 0.1 s per call.
 */
const KEYCHAIN_CHILD = `
const { AsyncEntry } = require(process.env.SCALPLE_KEYRING_MODULE);
let input = '';
process.stdin.setEncoding('utf8').on('data', (d) => (input += d)).on('end', async () => {
  const reply = (o) => process.stdout.write(JSON.stringify(o));
  try {
    const req = JSON.parse(input);
    const entry = new AsyncEntry(req.service, req.account, { linux: { store: 'secret-service' } });
    let value = null;
    if (req.op === 'set') await entry.setPassword(req.secret);
    else if (req.op === 'get') value = await entry.getPassword();
    else if (req.op === 'delete') value = await entry.deleteCredential();
    reply({ ok: true, value });
  } catch (e) {
    reply({ ok: false, message: String((e && e.message) || e) });
  }
});
`;

interface KeychainRequest {
  op: 'set' | 'get' | 'delete';
  account: string;
  secret?: string;
}

/** The OS keychain through @napi-rs/keyring, pinned to the Secret Service on Linux; 3 s per call. */
export function systemKeychain(env: NodeJS.ProcessEnv = process.env, timeoutMs = KEYCHAIN_TIMEOUT_MS): Keychain {
  const what = { set: 'write', get: 'read', delete: 'delete' } as const;

  function call(req: KeychainRequest): Promise<unknown> {
    if (process.platform === 'linux' && !env.DBUS_SESSION_BUS_ADDRESS) {
      return Promise.reject(new KeychainUnavailable('no D-Bus session: DBUS_SESSION_BUS_ADDRESS is not set'));
    }
    let modulePath: string;
    try {
      modulePath = createRequire(import.meta.url).resolve('@napi-rs/keyring');
    } catch (err) {
      return Promise.reject(new KeychainUnavailable('the keychain library @napi-rs/keyring is not installed', err));
    }
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', KEYCHAIN_CHILD], {
        env: { ...env, SCALPLE_KEYRING_MODULE: modulePath },
        stdio: ['pipe', 'pipe', 'ignore'],
        windowsHide: true,
      });
      let out = '';
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(new KeychainUnavailable(`cannot run the keychain helper: ${err.message}`, err));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (timedOut) return reject(new KeychainUnavailable(`the keychain did not answer a ${what[req.op]} within ${timeoutMs / 1000} s`));
        let reply: { ok: boolean; value?: unknown; message?: string };
        try {
          reply = JSON.parse(out) as typeof reply;
        } catch {
          return reject(new KeychainUnavailable(`the keychain helper failed (${signal ?? `exit ${code}`})`));
        }
        if (reply.ok) resolve(reply.value ?? null);
        else reject(new KeychainUnavailable(shortKeyringMessage(reply.message)));
      });
      child.stdin!.on('error', () => {}); // the child may die before reading: reported on close
      child.stdin!.end(JSON.stringify({ ...req, service: KEYCHAIN_SERVICE }));
    });
  }

  return {
    description: keychainDescription(),
    set: async (account, secret) => {
      await call({ op: 'set', account, secret });
    },
    get: async (account) => {
      const v = await call({ op: 'get', account });
      return typeof v === 'string' ? v : null;
    },
    delete: async (account) => (await call({ op: 'delete', account })) === true,
  };
}

function shortKeyringMessage(err: unknown): string {
  if (/Did not receive a reply|NoReply|Timeout was reached/i.test(errorMessage(err))) return 'the keychain did not answer: no D-Bus reply';
  const msg = errorMessage(err).split('\n')[0]!.replace(/^Couldn't access platform storage: /, '').replace(/^Platform failure: /, '');
  return msg.length > 160 ? msg.slice(0, 157) + '…' : msg;
}

// ---- the private file ----------------------------------------------------------------------

interface CredentialsFile {
  profiles: Record<string, StoredTokens>;
}

export function credentialsFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(configDir(env), 'credentials.json');
}

function readCredentialsFile(env: NodeJS.ProcessEnv): CredentialsFile {
  const file = credentialsFilePath(env);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { profiles: {} };
    throw new ScalpleError('AUTH_REQUIRED', `Cannot read ${file} (${errorMessage(err)}): Run \`scalple login\``, { cause: err });
  }
  try {
    const parsed = JSON.parse(text) as Partial<CredentialsFile>;
    return { profiles: parsed.profiles && typeof parsed.profiles === 'object' ? parsed.profiles : {} };
  } catch (err) {
    throw new ScalpleError('AUTH_REQUIRED', `${file} is damaged: delete it, then Run \`scalple login\``, { cause: err });
  }
}

function writeCredentialsFile(cfg: CredentialsFile, env: NodeJS.ProcessEnv): void {
  const file = credentialsFilePath(env);
  if (Object.keys(cfg.profiles).length === 0) {
    rmSync(file, { force: true });
    return;
  }
  ensureConfigDir(env);
  writeFileAtomic(file, JSON.stringify(cfg, null, 2) + '\n', 0o600);
}

function removeFromFile(profile: string, env: NodeJS.ProcessEnv): boolean {
  const cfg = readCredentialsFile(env);
  if (!(profile in cfg.profiles)) return false;
  delete cfg.profiles[profile];
  writeCredentialsFile(cfg, env);
  return true;
}

/** Mode bits of the credentials file (for tests and `auth status`), or undefined when absent. */
export function credentialsFileMode(env: NodeJS.ProcessEnv = process.env): number | undefined {
  try {
    return statSync(credentialsFilePath(env)).mode & 0o777;
  } catch {
    return undefined;
  }
}

// ---- the store -----------------------------------------------------------------------------

export interface TokenStoreOptions {
  env?: NodeJS.ProcessEnv;
  /** Swap the OS keychain (tests of callers); defaults to systemKeychain(env). */
  keychain?: Keychain;
}

export interface StoreResult {
  storage: TokenStorage;
  /** The keychain's name or the file's path. */
  location: string;
  /** Why the keychain was not used, when it was wanted. */
  fallbackReason?: string;
}

/**
 * Saves a profile's tokens: to the keychain unless `insecureStorage`, verified by reading them
 * back; otherwise, or when that fails, to the 0600 credentials file. The copy in the store not
 * chosen is removed, so a token lives in one place only.
 */
export async function storeTokens(profile: string, tokens: StoredTokens, options: TokenStoreOptions & { insecureStorage?: boolean } = {}): Promise<StoreResult> {
  const env = options.env ?? process.env;
  const json = JSON.stringify(tokens);
  let fallbackReason: string | undefined;
  if (!options.insecureStorage) {
    const keychain = options.keychain ?? systemKeychain(env);
    let written = false;
    try {
      await keychain.set(profile, json);
      written = true;
      const back = await keychain.get(profile);
      if (back === json) {
        removeFromFile(profile, env);
        return { storage: 'keychain', location: keychain.description };
      }
      fallbackReason = back === null ? 'the keychain accepted the token but gave nothing back (is it locked?)' : 'the keychain gave back different data';
    } catch (err) {
      fallbackReason = errorMessage(err);
    }
    if (written) await keychain.delete(profile).catch(() => false);
  }
  const cfg = readCredentialsFile(env);
  cfg.profiles[profile] = tokens;
  writeCredentialsFile(cfg, env);
  return { storage: 'file', location: credentialsFilePath(env), ...(fallbackReason ? { fallbackReason } : {}) };
}

/** Reads a profile's tokens from the store its profile names; undefined when there are none. */
export async function readTokens(profile: string, storage: TokenStorage | undefined, options: TokenStoreOptions = {}): Promise<StoredTokens | undefined> {
  const env = options.env ?? process.env;
  if (storage === 'keychain') {
    const keychain = options.keychain ?? systemKeychain(env);
    let text: string | null;
    try {
      text = await keychain.get(profile);
    } catch (err) {
      throw new ScalpleError('AUTH_REQUIRED', `Cannot read the token from the ${keychain.description}: ${errorMessage(err)}. Unlock the keychain, or Run \`scalple login --insecure-storage\``, { cause: err });
    }
    if (text === null) return undefined;
    try {
      return JSON.parse(text) as StoredTokens;
    } catch (err) {
      throw new ScalpleError('AUTH_REQUIRED', `The token in the ${keychain.description} is damaged: Run \`scalple login\``, { cause: err });
    }
  }
  return readCredentialsFile(env).profiles[profile];
}

export interface RemoveResult {
  /** Removed from the keychain; false when absent; a message when the keychain could not be asked. */
  keychain: boolean | string;
  file: boolean;
}

/** Removes a profile's tokens from the keychain and from the file. */
export async function removeTokens(profile: string, options: TokenStoreOptions = {}): Promise<RemoveResult> {
  const env = options.env ?? process.env;
  const keychain = options.keychain ?? systemKeychain(env);
  let fromKeychain: boolean | string;
  try {
    fromKeychain = await keychain.delete(profile);
  } catch (err) {
    fromKeychain = errorMessage(err);
  }
  return { keychain: fromKeychain, file: removeFromFile(profile, env) };
}
