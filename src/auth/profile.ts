// Per-profile settings of the CLI — issuer, client id, proxy, database, audience, and where the
// profile's tokens were stored — in $XDG_CONFIG_HOME/scalple/config.json (default ~/.config).
// No secret ever goes in this file: tokens live in the keychain or in credentials.json beside it.
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { ScalpleError } from '../errors.ts';

export const DEFAULT_PROFILE = 'default';
export const DEFAULT_CLIENT_ID = 'scalple-cli';
export const DEFAULT_AUDIENCE = 'scalple';

/** Where a profile's tokens went at its last login or refresh. */
export type TokenStorage = 'keychain' | 'file';

export interface ProfileSettings {
  issuer: string;
  clientId: string;
  /** The proxy's host:port, as given to --proxy. */
  proxy?: string;
  database?: string;
  /** Audience of access tokens the proxy accepts (its identity.audience). */
  audience: string;
  tokenStorage?: TokenStorage;
}

interface ConfigFile {
  profiles: Record<string, ProfileSettings>;
}

/** The CLI's config directory: $XDG_CONFIG_HOME/scalple, else ~/.config/scalple (%APPDATA% on Windows). */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'scalple');
  if (process.platform === 'win32' && env.APPDATA) return path.join(env.APPDATA, 'scalple');
  return path.join(env.HOME || homedir(), '.config', 'scalple');
}

export function configFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(configDir(env), 'config.json');
}

/** Creates the config directory readable by its owner only. */
export function ensureConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = configDir(env);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** --profile, else $SCALPLE_PROFILE, else `default`. */
export function profileName(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const name = explicit ?? env.SCALPLE_PROFILE ?? DEFAULT_PROFILE;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) {
    throw new ScalpleError('USAGE', `Invalid profile name "${name}": use letters, digits, '.', '_' or '-' (at most 64).`);
  }
  return name;
}

function readConfigFile(env: NodeJS.ProcessEnv): ConfigFile {
  const file = configFilePath(env);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { profiles: {} };
    throw new ScalpleError('CONFIG', `Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const parsed = JSON.parse(text) as Partial<ConfigFile>;
    return { profiles: parsed.profiles && typeof parsed.profiles === 'object' ? parsed.profiles : {} };
  } catch (err) {
    throw new ScalpleError('CONFIG', `${file} is not valid JSON: fix or delete it, then run \`scalple login\`.`, { cause: err });
  }
}

/** Writes a file atomically (temp file + rename) with the given mode. */
export function writeFileAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, text, { mode, flag: 'w' });
    chmodSync(tmp, mode);
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

function writeConfigFile(cfg: ConfigFile, env: NodeJS.ProcessEnv): void {
  ensureConfigDir(env);
  writeFileAtomic(configFilePath(env), JSON.stringify(cfg, null, 2) + '\n', 0o600);
}

export function loadProfile(name: string, env: NodeJS.ProcessEnv = process.env): ProfileSettings | undefined {
  return readConfigFile(env).profiles[name];
}

export function saveProfile(name: string, settings: ProfileSettings, env: NodeJS.ProcessEnv = process.env): void {
  const cfg = readConfigFile(env);
  cfg.profiles[name] = settings;
  writeConfigFile(cfg, env);
}

/** Changes only where the profile's tokens are stored (after a refresh fell back to the file, or logout). */
export function setTokenStorage(name: string, storage: TokenStorage | undefined, env: NodeJS.ProcessEnv = process.env): void {
  const cfg = readConfigFile(env);
  const p = cfg.profiles[name];
  if (!p) return;
  if (storage === undefined) delete p.tokenStorage;
  else p.tokenStorage = storage;
  writeConfigFile(cfg, env);
}

/** Checks `host:port` (`[::1]:6432` for IPv6) and returns its parts. */
export function parseHostPort(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new ScalpleError('USAGE', `Invalid --proxy "${value}": expected HOST:PORT, e.g. 127.0.0.1:6432 or [::1]:6432.`);
  }
  return { host: (m[1] ?? m[2])!, port };
}
