// A throwaway PostgreSQL cluster from PostgreSQL's server binaries — the system's (Debian layout),
// or, for `scalple demo` only, the npm-packaged ones (postgres-binaries.ts): `scalple demo` runs on
// it, and so do the integration tests. PostgreSQL refuses to run as root, so as root the cluster
// runs as `nobody`; it listens on a free loopback port and readiness is awaited on its own log line.
import { spawn, type ChildProcess, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chownSync, mkdirSync, existsSync, createWriteStream, readFileSync, rmSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

/** Where Debian and Ubuntu install PostgreSQL's server binaries: <root>/<major>/bin. */
export const SYSTEM_PG_ROOT = '/usr/lib/postgresql';

/** The newest system PostgreSQL server binaries (Debian layout: /usr/lib/postgresql/<major>/bin). */
export function findSystemPgBin(root = SYSTEM_PG_ROOT): string | undefined {
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'postgres')) && existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length ? path.join(root, versions[0]!, 'bin') : undefined;
}

/**
 * SCALPLE_PG_BIN when it names a directory, else the newest system binaries: what the tests and
 * benchmarks run on. (`scalple demo` also takes SCALPLE_PG_BIN=npm, see postgres-binaries.ts.)
 */
export function findPgBin(): string | undefined {
  const env = process.env.SCALPLE_PG_BIN;
  if (env && env !== 'npm') return env;
  return findSystemPgBin();
}

export const PG_BIN = findPgBin() ?? '/usr/lib/postgresql/15/bin';
export const NOBODY = 65534;
export const runAsRoot = process.getuid?.() === 0;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export function ownedTempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  if (runAsRoot) chownSync(dir, NOBODY, NOBODY);
  return dir;
}

export function spawnUnprivileged(cmd: string, args: string[], opts: { cwd?: string } = {}): ChildProcess {
  return spawn(cmd, args, {
    cwd: opts.cwd ?? os.tmpdir(),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
    ...(runAsRoot ? { uid: NOBODY, gid: NOBODY } : {}),
  });
}

function runUnprivileged(cmd: string, args: string[]): void {
  execFileSync(cmd, args, {
    cwd: os.tmpdir(),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
    ...(runAsRoot ? { uid: NOBODY, gid: NOBODY } : {}),
  });
}

/** Resolves when `pattern` appears in the process output; rejects if it exits first or on timeout. */
export function waitForOutput(child: ChildProcess, pattern: RegExp, what: string, log: string[], timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => done(new Error(`${what} did not start within ${timeoutMs} ms:\n${log.join('').slice(-2000)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      buf += d.toString();
      if (pattern.test(buf)) done();
      else if (buf.length > 65536) buf = buf.slice(-4096);
    };
    const onExit = (code: number | null) => done(new Error(`${what} exited (${code}) before it was ready:\n${log.join('').slice(-2000)}`));
    function done(err?: Error) {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve();
    }
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

export interface PostgresServer {
  host: string;
  port: number;
  dataDir: string;
  logFile: string;
  superUrl: (db?: string) => string;
  /** Everything the server logged so far (pgAudit lines included). */
  readLog(): string;
  stop(): Promise<void>;
}

export interface PostgresOptions {
  /** Directory holding initdb and postgres (default PG_BIN). */
  bin?: string;
  pgaudit?: boolean;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
}

export const SUPERUSER = 'postgres';
export const SUPERUSER_PASSWORD = 'super-secret-pw';

export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresServer> {
  const bin = opts.bin ?? PG_BIN;
  const root = ownedTempDir('scalple-pg-');
  const dataDir = path.join(root, 'data');
  const sockDir = path.join(root, 'sock');
  mkdirSync(sockDir);
  if (runAsRoot) chownSync(sockDir, NOBODY, NOBODY);
  const pwFile = path.join(root, 'pw');
  writeFileSync(pwFile, SUPERUSER_PASSWORD + '\n');
  if (runAsRoot) chownSync(pwFile, NOBODY, NOBODY);
  runUnprivileged(path.join(bin, 'initdb'), ['-D', dataDir, '-U', SUPERUSER, '--pwfile', pwFile, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    port: String(port),
    unix_socket_directories: sockDir,
    fsync: 'off',
    full_page_writes: 'off',
    max_connections: '200',
    log_line_prefix: '%m [%p] user=%u,db=%d,app=%a ',
    ...(opts.pgaudit ? { shared_preload_libraries: 'pgaudit', 'pgaudit.log': 'read,write,ddl,misc', 'pgaudit.log_parameter': 'off' } : {}),
    ...opts.settings,
  };
  const args = ['-D', dataDir];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
  const child = spawnUnprivileged(path.join(bin, 'postgres'), args);
  const logFile = path.join(root, 'server.log');
  const logStream = createWriteStream(logFile);
  const log: string[] = [];
  const keep = (d: Buffer) => {
    logStream.write(d);
    log.push(d.toString());
    if (log.length > 200) log.splice(0, 100);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  await waitForOutput(child, /database system is ready to accept connections/, 'PostgreSQL', log);
  const host = '127.0.0.1';
  return {
    host,
    port,
    dataDir,
    logFile,
    superUrl: (db = 'postgres') => `postgres://${SUPERUSER}:${SUPERUSER_PASSWORD}@${host}:${port}/${db}`,
    readLog: () => readFileSync(logFile, 'utf8'),
    stop: () => stopChild(child, 'SIGINT').then(() => new Promise<void>((r) => logStream.end(r))).finally(() => rmSync(root, { recursive: true, force: true })),
  };
}

export function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill(signal);
  });
}

/** Runs SQL as the superuser (setup only). */
export async function superQuery(server: PostgresServer, sql: string, db = 'postgres'): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: server.superUrl(db) });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

