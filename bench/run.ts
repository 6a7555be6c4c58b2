// `npm run bench`: pgbench through every path — PostgreSQL directly, PgBouncer (transaction mode),
// Scalple strict and buffered (upstream = PostgreSQL), and Scalple in front of PgBouncer — with the
// paths alternated inside each round so machine noise hits all of them alike. Prints the median
// TPS per (workload, path), the ratios, the issue's targets with PASS/MISS, the CPU each Node proxy
// spent per statement (robust to machine noise, unlike TPS), and how many audit records the
// proxies wrote. A benchmark, not a test: it exits 0 even when a target is missed (1 only when a
// run failed or the audit store did not get its records). Defaults take about 7 minutes.
//
// Settings (environment):
//   BENCH_SECONDS   seconds per pgbench run            (default 6)
//   BENCH_ROUNDS    rounds over all paths               (default 3)
//   BENCH_WARMUP    seconds of warm-up per (workload, path) before round 1; 0 = none (default 2)
//   BENCH_CLIENTS   pgbench -c                          (default 8)
//   BENCH_THREADS   pgbench -j                          (default 2)
//   BENCH_PATHS     comma list of paths to run          (default: direct,pgbouncer,scalple-strict,scalple-buffered,scalple-pgbouncer;
//                   also node-relay: a bare Node socket.pipe relay to PostgreSQL, the ceiling for a Node proxy)
//   BENCH_WORKLOADS comma list of workloads             (default all: select-simple,select-extended,rows100-extended,rows100-masked;
//                   rows100-masked reads 100 rows of bench_customers, whose email, iban and ssn the proxies mask;
//                   rows100-subjects reads 100 rows of bench_people without its key, a data-subject table: the
//                   proxies add the key as a hidden column and record the 100 keys per statement)
//   BENCH_PAUSE_MS  pause between runs, lets buffered audit batches settle (default 500)
//   BENCH_PROFILE   a Scalple path (or node-relay) to run under `node --cpu-prof` (profile in bench/results/profile/;
//                   summarise it with `node --import tsx bench/profile-summary.ts FILE`)
//   BENCH_KEEP      1 = keep the temporary directory (configs, proxy logs)
//   BENCH_NODE_ARGS extra node flags for the Scalple proxies (e.g. --perf-basic-prof for `perf record -p PID`)
//   BENCH_OUT       where the JSON results go           (default bench/results/latest.json)
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, createWriteStream, readFileSync, rmSync, existsSync, type WriteStream } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import YAML from 'yaml';
import { startPostgres, startPgBouncer, superQuery, freePort, PG_BIN, type PostgresServer, type PgBouncerServer } from '../test/support/services.ts';
import { startTestIdp, deviceLogin, type DevIdp } from '../test/support/idp.ts';
import { migrate, grantWriter } from '../src/audit/schema.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCALPLE_BIN = path.join(ROOT, 'bin/scalple.js');

const APP_USER = 'app_user';
const APP_PASSWORD = 'app-secret-pw';
const AUDIT_OWNER = 'scalple_owner';
const AUDIT_WRITER = 'scalple_writer';
const AUDIT_PASSWORD = 'audit-secret-pw';
const HMAC_KEY = 'bench-hmac-key-that-the-database-never-sees';
const BENCH_DB = 'bench';
const AUDIT_DB = 'scalple_audit_store';
const PERSON = 'alice@example.com';

// ---------------------------------------------------------------------------------- settings

function envInt(name: string, def: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min} (got ${raw})`);
  return n;
}

function envList<T extends string>(name: string, all: readonly T[], def: readonly T[] = all): T[] {
  const raw = process.env[name];
  if (!raw) return [...def];
  const picked = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const p of picked) if (!all.includes(p as T)) throw new Error(`${name}: unknown "${p}" (known: ${all.join(', ')})`);
  return all.filter((a) => picked.includes(a));
}

const PATHS = ['direct', 'pgbouncer', 'node-relay', 'scalple-strict', 'scalple-buffered', 'scalple-pgbouncer'] as const;
type PathName = (typeof PATHS)[number];
type ScalplePath = Exclude<PathName, 'direct' | 'pgbouncer' | 'node-relay'>;
const DEFAULT_PATHS: readonly PathName[] = PATHS.filter((p) => p !== 'node-relay');
const WORKLOADS = ['select-simple', 'select-extended', 'rows100-extended', 'rows100-masked', 'rows100-subjects'] as const;
type WorkloadName = (typeof WORKLOADS)[number];

const PATH_LABEL: Record<PathName, string> = {
  direct: 'PostgreSQL direct',
  pgbouncer: 'PgBouncer (txn)',
  'node-relay': 'bare Node relay',
  'scalple-strict': 'Scalple strict',
  'scalple-buffered': 'Scalple buffered',
  'scalple-pgbouncer': 'Scalple buf.->PgB',
};
const WORKLOAD_LABEL: Record<WorkloadName, string> = {
  'select-simple': '-S simple',
  'select-extended': '-S extended',
  'rows100-extended': '100 rows extended',
  'rows100-masked': '100 rows, 3 masked',
  'rows100-subjects': '100 rows, subjects',
};

const settings = {
  seconds: envInt('BENCH_SECONDS', 6, 1),
  rounds: envInt('BENCH_ROUNDS', 3, 1),
  warmup: envInt('BENCH_WARMUP', 2, 0),
  clients: envInt('BENCH_CLIENTS', 8, 1),
  threads: envInt('BENCH_THREADS', 2, 1),
  pauseMs: envInt('BENCH_PAUSE_MS', 500, 0),
  paths: envList('BENCH_PATHS', PATHS, DEFAULT_PATHS),
  workloads: envList('BENCH_WORKLOADS', WORKLOADS),
  profile: process.env.BENCH_PROFILE ? (envList('BENCH_PROFILE', PATHS)[0] as PathName) : undefined,
  keep: process.env.BENCH_KEEP === '1',
  nodeArgs: (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
  out: path.resolve(ROOT, process.env.BENCH_OUT ?? 'bench/results/latest.json'),
};
if (settings.profile && (settings.profile === 'direct' || settings.profile === 'pgbouncer')) throw new Error('BENCH_PROFILE must name a Scalple path or node-relay');
if (settings.clients > 8 && settings.paths.some((p) => p.includes('pgbouncer'))) {
  process.stderr.write(`note: PgBouncer's default_pool_size is ${Math.max(8, settings.clients)} for ${settings.clients} clients\n`);
}

const ROWS100_SCRIPT = `\\set a random(1, 99900)
SELECT * FROM pgbench_accounts WHERE aid BETWEEN :a AND :a + 99;
`;
const MASKED_SCRIPT = `\\set a random(1, 99900)
SELECT * FROM bench_customers WHERE id BETWEEN :a AND :a + 99;
`;
const SUBJECTS_SCRIPT = `\\set a random(1, 99900)
SELECT name, email FROM bench_people WHERE id BETWEEN :a AND :a + 99;
`;
// 100k customers; the proxies' policy masks three of their columns for the bench person.
const BENCH_CUSTOMERS_SQL = `CREATE TABLE bench_customers (id int PRIMARY KEY, name text, email text, iban text, ssn text, region text);
INSERT INTO bench_customers
  SELECT g, 'Customer ' || g, 'user' || g || '@example.com', 'DE89370400440532' || lpad(g::text, 6, '0'),
         lpad(((g::bigint * 7919) % 1000000000)::text, 9, '0'), CASE g % 3 WHEN 0 THEN 'EU' ELSE 'US' END
  FROM generate_series(1, 100000) g;
ANALYZE bench_customers;
CREATE TABLE bench_people (id int PRIMARY KEY, name text, email text);
INSERT INTO bench_people SELECT g, 'Person ' || g, 'person' || g || '@example.com' FROM generate_series(1, 100000) g;
ANALYZE bench_people;`;
const BENCH_POLICY = {
  pii: {
    'public.bench_customers.email': 'email',
    'public.bench_customers.iban': { mask: 'partial', keep_last: 4 },
    'public.bench_customers.ssn': 'redact',
  },
  roles: { support: { groups: ['support'] } },
  default_role: 'support',
  // Subject tracking on its own table, so the other workloads measure the proxy without it.
  subjects: { person: { table: 'public.bench_people', key: 'id' } },
};

// ---------------------------------------------------------------------------------- cleanup

const cleanups: { what: string; fn: () => Promise<void> }[] = [];
const running = new Set<ChildProcess>();
let shuttingDown = false;
let shutdownDone: Promise<never> | undefined;

function onCleanup(what: string, fn: () => Promise<void>): void {
  cleanups.push({ what, fn });
}

const pendingStarts = new Set<Promise<unknown>>();

/**
 * Starts a service and registers its stop in the same step, so an interrupt that arrives while it
 * is still starting waits for it and stops it too (cleanupAll awaits pending starts first).
 */
function tracked<T>(what: string, start: Promise<T>, stop: (v: T) => Promise<void>): Promise<T> {
  const p = start.then((v) => {
    onCleanup(what, () => stop(v));
    if (shuttingDown) throw new Error(`interrupted while starting ${what}`);
    return v;
  });
  pendingStarts.add(p);
  p.then(() => pendingStarts.delete(p), () => pendingStarts.delete(p));
  return p;
}

async function cleanupAll(): Promise<void> {
  await withTimeout(Promise.allSettled([...pendingStarts]), 60_000, 'services still starting').catch(() => undefined);
  for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  while (cleanups.length) {
    const c = cleanups.pop()!;
    try {
      await withTimeout(c.fn(), 20_000, c.what);
    } catch (err) {
      process.stderr.write(`cleanup (${c.what}) failed: ${(err as Error).message}\n`);
    }
  }
}

/** Signal: stop every child, then exit. main() may fail meanwhile; it then waits for this. */
function shutdown(code: number, why: string): Promise<never> {
  if (!shutdownDone) {
    shuttingDown = true;
    process.stderr.write(`\n${why}: stopping everything…\n`);
    shutdownDone = cleanupAll().then(() => process.exit(code));
  }
  return shutdownDone;
}

process.on('SIGINT', () => void shutdown(130, 'interrupted'));
process.on('SIGTERM', () => void shutdown(143, 'terminated'));
process.on('SIGHUP', () => void shutdown(129, 'hang-up'));
// Last resort when the process goes away without the async cleanup: no child outlives the bench.
process.on('exit', () => {
  for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    p.then((v) => {
      clearTimeout(t);
      resolve(v);
    }, (e: unknown) => {
      clearTimeout(t);
      reject(e instanceof Error ? e : new Error(String(e)));
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function log(msg: string): void {
  process.stderr.write(msg + '\n');
}

// ---------------------------------------------------------------------------------- setup

interface ScalpleProxy {
  name: ScalplePath;
  port: number;
  chainId: string;
  child: ChildProcess;
  logFile: string;
  stop(): Promise<void>;
}

async function startScalple(dir: string, name: ScalplePath, doc: Record<string, unknown>, profileDir?: string): Promise<ScalpleProxy> {
  const port = await freePort();
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, YAML.stringify({ listen: `127.0.0.1:${port}`, ...doc }));
  const logFile = path.join(dir, `${name}.log`);
  const logStream: WriteStream = createWriteStream(logFile);
  const nodeArgs = [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), ...settings.nodeArgs];
  const child = spawn(process.execPath, [...nodeArgs, SCALPLE_BIN, 'proxy', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'], cwd: ROOT });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let early = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`scalple proxy (${name}) not ready in 30 s:\n${early.slice(-3000)}`)), 30_000);
    const onData = (d: Buffer) => {
      logStream.write(d);
      if (early.length < 200_000) early += d.toString();
      if (early.includes('"proxy listening"')) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stderr!.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      reject(new Error(`scalple proxy (${name}) exited (${code ?? sig}) before it was ready:\n${early.slice(-3000)}`));
    });
  });
  const chainId = (doc.audit as { chain_id: string }).chain_id;
  const proxy: ScalpleProxy = {
    name,
    port,
    chainId,
    child,
    logFile,
    stop: () => stopChild(child, 'SIGTERM', 30_000).then(() => new Promise<void>((r) => logStream.end(r))),
  };
  return proxy;
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill(signal);
  });
}

/** Runs a command to completion (setup steps: pgbench -i). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', (err) => {
      running.delete(child);
      reject(err);
    });
    child.once('close', (code) => {
      running.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------- pgbench

interface Target {
  port: number;
  user: string;
  password: string;
  options?: string;
}

interface RunResult {
  round: number; // 0 = warm-up
  workload: WorkloadName;
  path: PathName;
  tps: number;
  transactions: number;
  failed: number;
  latencyMs: number;
  ok: boolean;
  error?: string;
  /** Scalple paths: how long after the run the audit store held every record of it. */
  auditDrainMs?: number;
  /** Node paths: CPU time (user + system, all threads) the proxy process used for the run and its audit backlog. */
  proxyCpuMs?: number;
  /** Scalple paths: CPU time of the PostgreSQL backend of the proxy's audit writer connection, same span. */
  auditDbCpuMs?: number;
}

/** CPU time of a process so far, in ms (utime + stime from /proc, all threads). */
function processCpuMs(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime), counted from after the command name: index 11 and 12.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

function pgbenchArgs(workload: WorkloadName, seconds: number, scriptFile: string): string[] {
  if (workload === 'rows100-masked') scriptFile = scriptFile.replace(/rows100\.sql$/, 'masked100.sql');
  if (workload === 'rows100-subjects') scriptFile = scriptFile.replace(/rows100\.sql$/, 'subjects100.sql');
  const common = ['-c', String(settings.clients), '-j', String(settings.threads), '-T', String(seconds), '-n'];
  switch (workload) {
    case 'select-simple':
      return [...common, '-S', '-M', 'simple'];
    case 'select-extended':
      return [...common, '-S', '-M', 'extended'];
    case 'rows100-extended':
    case 'rows100-masked':
    case 'rows100-subjects':
      return [...common, '-f', scriptFile, '-M', 'extended'];
  }
}

async function pgbench(target: Target, workload: WorkloadName, seconds: number, scriptFile: string, round: number, pathName: PathName): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    LANG: 'C.UTF-8',
    PGHOST: '127.0.0.1',
    PGPORT: String(target.port),
    PGUSER: target.user,
    PGPASSWORD: target.password,
    PGDATABASE: BENCH_DB,
    PGSSLMODE: 'disable',
    PGGSSENCMODE: 'disable',
    PGAPPNAME: `pgbench-${pathName}`,
    ...(target.options ? { PGOPTIONS: target.options } : {}),
  };
  const pgbenchBin = existsSync(path.join(PG_BIN, 'pgbench')) ? path.join(PG_BIN, 'pgbench') : 'pgbench';
  const r = await run(pgbenchBin, pgbenchArgs(workload, seconds, scriptFile), env);
  const num = (re: RegExp) => {
    const m = re.exec(r.stdout);
    return m ? Number(m[1]) : NaN;
  };
  const tps = num(/^tps = ([\d.]+)/m);
  const transactions = num(/number of transactions actually processed: (\d+)/);
  const failedM = /number of failed transactions: (\d+)/.exec(r.stdout);
  const failed = failedM ? Number(failedM[1]) : 0;
  const latencyMs = num(/latency average = ([\d.]+) ms/);
  const ok = r.code === 0 && Number.isFinite(tps) && failed === 0 && !/aborted|error/i.test(r.stderr);
  const result: RunResult = { round, workload, path: pathName, tps: Number.isFinite(tps) ? tps : 0, transactions: Number.isFinite(transactions) ? transactions : 0, failed, latencyMs, ok };
  if (!ok) {
    // One line per distinct message (the client number stripped), not one per client.
    const lines = [...new Set((r.stderr || r.stdout).trim().split('\n').map((l) => l.replace(/client \d+ /, 'client N ').trim()).filter(Boolean))];
    result.error = `pgbench exit ${r.code}: ${lines.slice(-4).join(' | ')}`;
  }
  return result;
}

// ---------------------------------------------------------------------------------- statistics

function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function fmtTps(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toString() : 'ERR';
}

function fmtRatio(n: number): string {
  return Number.isFinite(n) ? n.toFixed(2) + 'x' : '-';
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Prints where the profiled process spent its time (the main thread's profile, the largest file). */
async function summariseProfile(dir: string): Promise<void> {
  const { readdirSync, statSync } = await import('node:fs');
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(dir, f)) : [];
  const main = files.sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (!main) {
    log(`no CPU profile in ${dir} (the profiled process did not exit cleanly)`);
    return;
  }
  const r = await run(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench/profile-summary.ts'), main, '15'], { ...process.env });
  log(`\nCPU profile of ${settings.profile} (${path.relative(process.cwd(), main)}):\n${r.stdout.split('\n').slice(0, 45).join('\n')}`);
}

/** Which code was measured: the commit, and whether src/ had uncommitted changes. */
function gitState(): { commit?: string; uncommittedSrcFiles?: number } {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean).length;
    return { commit, uncommittedSrcFiles: dirty };
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  const started = Date.now();
  const loadBefore = os.loadavg()[0]!;
  const runsPerRound = settings.paths.length * settings.workloads.length;
  const estimate = runsPerRound * (settings.rounds * (settings.seconds + 1 + settings.pauseMs / 1000) + (settings.warmup ? settings.warmup + 1 : 0)) + 30;
  log(`Scalple bench: ${settings.workloads.length} workloads x ${settings.paths.length} paths x ${settings.rounds} rounds x ${settings.seconds} s` +
    `${settings.warmup ? ` (+${settings.warmup} s warm-up each)` : ''}, pgbench -c ${settings.clients} -j ${settings.threads}; about ${Math.ceil(estimate / 60)} min`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'scalple-bench-'));
  onCleanup('temporary directory', async () => {
    if (settings.keep) log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  });
  const scriptFile = path.join(dir, 'rows100.sql');
  writeFileSync(scriptFile, ROWS100_SCRIPT);
  writeFileSync(path.join(dir, 'masked100.sql'), MASKED_SCRIPT);
  writeFileSync(path.join(dir, 'subjects100.sql'), SUBJECTS_SCRIPT);

  // PostgreSQL, the pgbench tables, the audit store.
  log('starting PostgreSQL 15 …');
  const pgServer: PostgresServer = await tracked('PostgreSQL', startPostgres({ pgaudit: false }), (s) => s.stop());
  await superQuery(pgServer, `CREATE ROLE ${APP_USER} LOGIN PASSWORD '${APP_PASSWORD}'`);
  await superQuery(pgServer, `CREATE ROLE ${AUDIT_OWNER} LOGIN PASSWORD '${AUDIT_PASSWORD}'`);
  await superQuery(pgServer, `CREATE ROLE ${AUDIT_WRITER} LOGIN PASSWORD '${AUDIT_PASSWORD}'`);
  await superQuery(pgServer, `CREATE DATABASE ${BENCH_DB} OWNER ${APP_USER}`);
  await superQuery(pgServer, `CREATE DATABASE ${AUDIT_DB}`);
  await superQuery(pgServer, `GRANT CREATE ON DATABASE ${AUDIT_DB} TO ${AUDIT_OWNER}`);
  log('pgbench -i -s 1 (100k accounts) …');
  const init = await run(path.join(PG_BIN, 'pgbench'), ['-i', '-s', '1', '-q'], {
    PATH: process.env.PATH, PGHOST: '127.0.0.1', PGPORT: String(pgServer.port), PGUSER: APP_USER, PGPASSWORD: APP_PASSWORD, PGDATABASE: BENCH_DB, PGSSLMODE: 'disable',
  });
  if (init.code !== 0) throw new Error(`pgbench -i failed:\n${init.stderr}`);
  const app = new pg.Client({ connectionString: `postgres://${APP_USER}:${APP_PASSWORD}@127.0.0.1:${pgServer.port}/${BENCH_DB}` });
  await app.connect();
  try {
    await app.query(BENCH_CUSTOMERS_SQL);
  } finally {
    await app.end();
  }
  const owner = new pg.Client({ connectionString: `postgres://${AUDIT_OWNER}:${AUDIT_PASSWORD}@127.0.0.1:${pgServer.port}/${AUDIT_DB}` });
  await owner.connect();
  try {
    await migrate(owner);
    await grantWriter(owner, AUDIT_WRITER);
  } finally {
    await owner.end();
  }
  const pgVersion = (await superQuery(pgServer, 'SHOW server_version')).rows[0]?.server_version as string;

  // PgBouncer in transaction mode.
  const needBouncer = settings.paths.includes('pgbouncer') || settings.paths.includes('scalple-pgbouncer');
  let bouncer: PgBouncerServer | undefined;
  if (needBouncer) {
    log('starting PgBouncer (transaction mode) …');
    bouncer = await tracked('PgBouncer', startPgBouncer(pgServer, { database: BENCH_DB, users: { [APP_USER]: APP_PASSWORD }, poolMode: 'transaction', defaultPoolSize: Math.max(8, settings.clients) }), (b) => b.stop());
  }

  // The IdP and a real token for one person.
  const scalplePaths = settings.paths.filter((p): p is ScalplePath => p.startsWith('scalple-'));
  let idp: DevIdp | undefined;
  let token = '';
  if (scalplePaths.length) {
    log('starting the dev IdP and logging in as ' + PERSON + ' …');
    idp = await tracked('IdP', startTestIdp({ accessTokenTtlSeconds: Math.max(3600, Math.ceil(estimate * 3)) }), (i) => i.close());
    token = (await deviceLogin(idp, PERSON)).accessToken;
  }

  // The Scalple proxies, each with its own audit chain (one writer per chain).
  const proxies = new Map<ScalplePath, ScalpleProxy>();
  const profileDir = path.join(ROOT, 'bench/results/profile');
  if (settings.profile) rmSync(profileDir, { recursive: true, force: true });
  for (const name of scalplePaths) {
    const viaBouncer = name === 'scalple-pgbouncer';
    const durability = name === 'scalple-strict' ? 'strict' : 'buffered';
    const chainId = `bench-${name}-${Date.now().toString(36)}`;
    log(`starting ${PATH_LABEL[name]} (node bin/scalple.js proxy, audit ${durability}${viaBouncer ? ', upstream PgBouncer' : ''}) …`);
    if (settings.profile === name) mkdirSync(profileDir, { recursive: true });
    const proxy = await tracked(`Scalple ${name}`, startScalple(dir, name, {
      upstream: viaBouncer ? bouncer!.url(APP_USER, APP_PASSWORD, BENCH_DB) : `postgres://${APP_USER}:${APP_PASSWORD}@127.0.0.1:${pgServer.port}/${BENCH_DB}`,
      upstream_pool_mode: viaBouncer ? 'transaction' : 'none',
      audit: {
        url: `postgres://${AUDIT_WRITER}:${AUDIT_PASSWORD}@127.0.0.1:${pgServer.port}/${AUDIT_DB}`,
        durability,
        hmac_key: HMAC_KEY,
        chain_id: chainId,
        checkpoint_file: path.join(dir, `${name}.head.json`),
      },
      identity: { issuer: idp!.issuer, audience: idp!.audience, allow_plaintext_password: true },
      ...BENCH_POLICY,
    }, settings.profile === name ? profileDir : undefined), (p) => p.stop());
    proxies.set(name, proxy);
  }

  // The bare Node relay (reference only).
  let relayPort: number | undefined;
  let relayPid: number | undefined;
  if (settings.paths.includes('node-relay')) {
    relayPort = await freePort();
    log('starting the bare Node relay …');
    if (settings.profile === 'node-relay') mkdirSync(profileDir, { recursive: true });
    const nodeArgs = settings.profile === 'node-relay' ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
    const relay = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', path.join(ROOT, 'bench/relay.ts'), String(relayPort), '127.0.0.1', String(pgServer.port)], { stdio: ['ignore', 'ignore', 'pipe'], cwd: ROOT });
    running.add(relay);
    relayPid = relay.pid;
    relay.once('exit', () => running.delete(relay));
    onCleanup('Node relay', () => stopChild(relay, 'SIGTERM', 10_000));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      relay.stderr!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('relay listening')) resolve();
      });
      relay.once('exit', (code) => reject(new Error(`relay exited (${code}): ${out}`)));
    });
  }

  const targets: Record<PathName, Target | undefined> = {
    direct: { port: pgServer.port, user: APP_USER, password: APP_PASSWORD },
    pgbouncer: bouncer ? { port: bouncer.port, user: APP_USER, password: APP_PASSWORD } : undefined,
    'node-relay': relayPort ? { port: relayPort, user: APP_USER, password: APP_PASSWORD } : undefined,
    'scalple-strict': undefined,
    'scalple-buffered': undefined,
    'scalple-pgbouncer': undefined,
  };
  for (const [name, p] of proxies) targets[name] = { port: p.port, user: APP_USER, password: 'unused', options: `-c scalple.identity=${token}` };
  // The masked workload measures nothing unless the proxies really mask: check one row through each.
  if (settings.workloads.includes('rows100-masked')) {
    for (const [name, p] of proxies) {
      const c = new pg.Client({ host: '127.0.0.1', port: p.port, user: APP_USER, database: BENCH_DB, options: `-c scalple.identity=${token}` });
      await c.connect();
      try {
        const row = (await c.query<{ email: string; iban: string; ssn: string }>('SELECT * FROM bench_customers WHERE id = 1')).rows[0];
        if (!row || row.email === 'user1@example.com' || row.iban.startsWith('DE89') || row.ssn === '000007919') throw new Error(`${name}: bench_customers is not masked (${JSON.stringify(row)})`);
      } finally {
        await c.end();
      }
    }
  }

  // Warm-up (JIT of the proxies, PostgreSQL's caches), then the measured rounds.
  const results: RunResult[] = [];
  const txnsByPath = new Map<PathName, number>();
  // Between runs, a proxy's audit backlog is written before the next run starts, so no run pays
  // for the previous one's records (and the buffered queue starts empty).
  const auditMonitor = new pg.Client({ connectionString: pgServer.superUrl(AUDIT_DB) });
  await auditMonitor.connect();
  onCleanup('audit monitor connection', () => auditMonitor.end());
  const chainHead = async (chainId: string): Promise<number> => {
    const r = await auditMonitor.query<{ seq: string | null }>('SELECT max(seq) AS seq FROM scalple_audit.records WHERE chain_id = $1', [chainId]);
    return Number(r.rows[0]?.seq ?? 0);
  };
  const waitForAudit = async (p: ScalplePath): Promise<{ ms: number; seq: number }> => {
    const chainId = proxies.get(p)!.chainId;
    const want = 2 * (txnsByPath.get(p) ?? 0);
    const t0 = Date.now();
    let seq = await chainHead(chainId);
    for (;;) {
      if (Date.now() - t0 > 120_000) throw new Error(`${p}: the audit store still lags after 120 s (head seq ${seq}, expected >= ${want})`);
      await sleep(100);
      const next = await chainHead(chainId);
      if (next >= want && next === seq) return { ms: Date.now() - t0 - 100, seq };
      seq = next;
    }
  };
  // The PostgreSQL backend that serves a proxy's audit writer connection (its CPU is part of the cost of auditing).
  const auditBackendPid = async (p: PathName): Promise<number | undefined> => {
    const proxy = proxies.get(p as ScalplePath);
    if (!proxy) return undefined;
    const r = await auditMonitor.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [`scalple-audit-writer:${proxy.chainId}`.slice(0, 63)]);
    return r.rows.length === 1 ? r.rows[0]!.pid : undefined;
  };
  // PgBouncer's pid, from its own log line, for the same CPU measurement (the competitor's cost per statement).
  const bouncerPid = ((): number | undefined => {
    const m = /\[(\d+)\] LOG process up/.exec(bouncer?.readLog() ?? '');
    const pid = m ? Number(m[1]) : undefined;
    try {
      return pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('pgbouncer') ? pid : undefined;
    } catch {
      return undefined;
    }
  })();
  const pidOf = (p: PathName): number | undefined => (p === 'node-relay' ? relayPid : p === 'pgbouncer' ? bouncerPid : proxies.get(p as ScalplePath)?.child.pid);
  const doRun = async (round: number, workload: WorkloadName, p: PathName, seconds: number) => {
    const cpu0 = processCpuMs(pidOf(p));
    const auditPid = await auditBackendPid(p);
    const auditCpu0 = processCpuMs(auditPid);
    const r = await pgbench(targets[p]!, workload, seconds, scriptFile, round, p);
    txnsByPath.set(p, (txnsByPath.get(p) ?? 0) + r.transactions);
    let extra = '';
    if (proxies.has(p as ScalplePath)) {
      const d = await waitForAudit(p as ScalplePath);
      r.auditDrainMs = d.ms;
      extra += `  audit caught up ${d.ms} ms after the run`;
    }
    const cpu1 = processCpuMs(pidOf(p));
    if (cpu0 !== undefined && cpu1 !== undefined) {
      r.proxyCpuMs = cpu1 - cpu0;
      if (r.transactions) extra += `  proxy CPU ${Math.round((r.proxyCpuMs * 1000) / r.transactions)} µs/stmt`;
    }
    const auditCpu1 = auditPid === (await auditBackendPid(p)) ? processCpuMs(auditPid) : undefined;
    if (auditCpu0 !== undefined && auditCpu1 !== undefined) {
      r.auditDbCpuMs = auditCpu1 - auditCpu0;
      if (r.transactions) extra += `, audit DB backend ${Math.round((r.auditDbCpuMs * 1000) / r.transactions)} µs/stmt`;
    }
    log(`  ${round === 0 ? 'warm-up' : `round ${round}/${settings.rounds}`}  ${WORKLOAD_LABEL[workload].padEnd(18)} ${PATH_LABEL[p].padEnd(18)} ${fmtTps(r.tps).padStart(7)} tps  ${r.latencyMs.toFixed(3)} ms${extra}${r.ok ? '' : `\n      FAILED: ${r.error}`}`);
    if (settings.pauseMs) await sleep(settings.pauseMs);
    return r;
  };
  if (settings.warmup) {
    log('warm-up …');
    for (const w of settings.workloads) for (const p of settings.paths) results.push(await doRun(0, w, p, settings.warmup));
  }
  for (let round = 1; round <= settings.rounds; round++) {
    log(`round ${round}/${settings.rounds} …`);
    for (const w of settings.workloads) {
      // Round-robin, and the starting path rotates per round so no path always runs first or last.
      const order = settings.paths.map((_, i) => settings.paths[(i + round - 1 + settings.workloads.indexOf(w)) % settings.paths.length]!);
      for (const p of order) results.push(await doRun(round, w, p, settings.seconds));
    }
  }

  // Stop the proxies (SIGTERM: sessions closed, audit queue flushed), then count what they wrote.
  log('stopping the proxies (audit queues flush) …');
  for (const p of proxies.values()) await p.stop();
  const audit = new pg.Client({ connectionString: pgServer.superUrl(AUDIT_DB) });
  await audit.connect();
  const auditCounts: Record<string, { intents: number; completions: number; pgbenchTransactions: number; ok: boolean; subjectStatements?: number }> = {};
  try {
    for (const [name, p] of proxies) {
      const r = await audit.query<{ record_type: string; n: string }>('SELECT record_type, count(*) AS n FROM scalple_audit.records WHERE chain_id = $1 GROUP BY 1', [p.chainId]);
      const by = new Map(r.rows.map((x) => [x.record_type, Number(x.n)]));
      const intents = by.get('intent') ?? 0;
      const completions = by.get('completion') ?? 0;
      const t = txnsByPath.get(name) ?? 0;
      // Every pgbench transaction here is one statement: at least one intent and one completion each.
      auditCounts[name] = { intents, completions, pgbenchTransactions: t, ok: intents >= t && completions >= t && t > 0 };
      if (settings.workloads.includes('rows100-subjects')) {
        // The subject workload measures nothing unless each of its statements recorded its 100 keys.
        const k = await audit.query<{ n: string }>("SELECT count(*) AS n FROM scalple_audit.records WHERE chain_id = $1 AND record_type = 'completion' AND cardinality(subject_keys) = 100", [p.chainId]);
        auditCounts[name]!.subjectStatements = Number(k.rows[0]?.n ?? 0);
        if (auditCounts[name]!.subjectStatements === 0) auditCounts[name]!.ok = false;
      }
    }
  } finally {
    await audit.end();
  }

  // ------------------------------------------------------------------ report
  const measured = results.filter((r) => r.round > 0);
  const failedRuns = results.filter((r) => !r.ok);
  // Median over the runs that completed; a (workload, path) with a failed run is flagged with '!'.
  // When every run of a cell failed, the median of what pgbench measured until it stopped (still flagged).
  const med = (w: WorkloadName, p: PathName): number => {
    const all = measured.filter((r) => r.workload === w && r.path === p);
    const ok = all.filter((r) => r.ok);
    const xs = (ok.length ? ok : all).map((r) => r.tps).filter((t) => t > 0);
    return xs.length ? median(xs) : NaN;
  };
  const failures = (w: WorkloadName, p: PathName): number => results.filter((r) => r.workload === w && r.path === p && !r.ok).length;
  const spread = (w: WorkloadName, p: PathName): number => {
    const xs = measured.filter((r) => r.workload === w && r.path === p && r.ok).map((r) => r.tps);
    return xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) / median(xs) : 0;
  };
  const has = (p: PathName) => settings.paths.includes(p);

  const tpsRows = settings.workloads.map((w) => [WORKLOAD_LABEL[w], ...settings.paths.map((p) => `${fmtTps(med(w, p))}${failures(w, p) ? '!' : ''} ±${Math.round((spread(w, p) * 100) / 2)}%`)]);

  type RatioDef = { label: string; num: PathName; den: PathName };
  const ratioDefs: RatioDef[] = ([
    { label: 'PgB/direct', num: 'pgbouncer', den: 'direct' },
    { label: 'relay/PgB', num: 'node-relay', den: 'pgbouncer' },
    { label: 'strict/direct', num: 'scalple-strict', den: 'direct' },
    { label: 'strict/PgB', num: 'scalple-strict', den: 'pgbouncer' },
    { label: 'buffered/direct', num: 'scalple-buffered', den: 'direct' },
    { label: 'buffered/PgB', num: 'scalple-buffered', den: 'pgbouncer' },
    { label: 'buf.->PgB/PgB', num: 'scalple-pgbouncer', den: 'pgbouncer' },
  ] satisfies RatioDef[]).filter((d) => has(d.num) && has(d.den));
  const ratio = (w: WorkloadName, num: PathName, den: PathName) => med(w, num) / med(w, den);
  const ratioRows = settings.workloads.map((w) => [WORKLOAD_LABEL[w], ...ratioDefs.map((d) => fmtRatio(ratio(w, d.num, d.den)))]);

  const targetDefs: { workload: WorkloadName; min: number; text: string }[] = [
    { workload: 'select-simple', min: 0.8, text: 'buffered >= 0.80x PgBouncer on -S simple' },
    { workload: 'select-extended', min: 0.8, text: 'buffered >= 0.80x PgBouncer on -S extended' },
    { workload: 'rows100-extended', min: 0.9, text: 'buffered >= 0.90x PgBouncer on 100 rows (no masked column)' },
    { workload: 'rows100-masked', min: 0.6, text: 'buffered >= 0.60x PgBouncer on 100 rows, 3 masked (issue 3)' },
  ];
  const targetResults = targetDefs
    .filter((t) => settings.workloads.includes(t.workload) && has('scalple-buffered') && has('pgbouncer'))
    .map((t) => {
      const r = ratio(t.workload, 'scalple-buffered', 'pgbouncer');
      const failed = failures(t.workload, 'scalple-buffered') + failures(t.workload, 'pgbouncer');
      return { ...t, ratio: r, failed, pass: Number.isFinite(r) && r >= t.min && failed === 0 };
    });

  const out: string[] = [];
  out.push('');
  out.push(`Scalple bench — pgbench -c ${settings.clients} -j ${settings.threads} -T ${settings.seconds} -n, ${settings.rounds} rounds (paths alternated), median TPS ±half-range`);
  out.push(`PostgreSQL ${pgVersion}, PgBouncer 1.18 transaction mode (pool ${Math.max(8, settings.clients)}), Node ${process.version}, ${os.cpus().length} CPUs; Scalple upstream = PostgreSQL directly (last column: = PgBouncer)`);
  out.push('');
  out.push(table(['TPS', ...settings.paths.map((p) => PATH_LABEL[p])], tpsRows));
  if (failedRuns.length) out.push(`! = runs of this cell failed (listed below); median over the runs that completed, or if none did, of pgbench's figure up to the abort`);
  out.push('');
  if (ratioDefs.length) {
    out.push(table(['Ratios', ...ratioDefs.map((d) => d.label)], ratioRows));
    out.push('');
  }
  // CPU the Node process spent per statement (run + its audit backlog): independent of machine noise.
  const cpuPaths = settings.paths.filter((p) => p !== 'direct' && measured.some((r) => r.path === p && r.proxyCpuMs !== undefined));
  const perStmt = (w: WorkloadName, p: PathName, field: 'proxyCpuMs' | 'auditDbCpuMs'): number => {
    const xs = measured.filter((r) => r.workload === w && r.path === p && r[field] !== undefined && r.transactions > 0).map((r) => (r[field]! * 1000) / r.transactions);
    return xs.length ? median(xs) : NaN;
  };
  const cpuPer = (w: WorkloadName, p: PathName) => perStmt(w, p, 'proxyCpuMs');
  const fmtUs = (n: number) => (Number.isFinite(n) ? Math.round(n).toString() : '-');
  if (cpuPaths.length) {
    const scalpleCpuPaths = cpuPaths.filter((p) => p.startsWith('scalple-'));
    out.push(table(['CPU µs per statement', ...cpuPaths.map((p) => PATH_LABEL[p]), ...scalpleCpuPaths.map((p) => `${PATH_LABEL[p]}: audit DB`)],
      settings.workloads.map((w) => [WORKLOAD_LABEL[w], ...cpuPaths.map((p) => fmtUs(cpuPer(w, p))), ...scalpleCpuPaths.map((p) => fmtUs(perStmt(w, p, 'auditDbCpuMs')))])));
    out.push('(medians; user+system CPU of the proxy process (PgBouncer, Node relay, Scalple: all threads); audit DB = the PostgreSQL backend of its audit writer;');
    out.push(' both over the run and its audit backlog, divided by the statements pgbench completed; unlike TPS, hardly affected by other load)');
    out.push('');
  }
  if (targetResults.length) {
    out.push('Targets (issues 2 and 3, Speed: Scalple buffered vs PgBouncer, same run):');
    for (const t of targetResults) out.push(`  ${t.text.padEnd(60)} ${fmtRatio(t.ratio).padStart(6)}  ${t.pass ? 'PASS' : 'MISS'}${t.failed ? ` (${t.failed} run(s) failed)` : ''}`);
    if (has('scalple-strict')) out.push('  strict mode: reported as measured (no target)');
    out.push('');
  }
  if (proxies.size) {
    out.push('Audit store (records per proxy chain, counted in scalple_audit.records after the proxies stopped):');
    for (const [name, c] of Object.entries(auditCounts)) {
      out.push(`  ${PATH_LABEL[name as PathName].padEnd(18)} intents ${String(c.intents).padStart(9)}  completions ${String(c.completions).padStart(9)}  pgbench transactions ${String(c.pgbenchTransactions).padStart(9)}${c.subjectStatements !== undefined ? `  with 100 subject keys ${String(c.subjectStatements).padStart(8)}` : ''}  ${c.ok ? 'OK (every statement audited)' : 'MISSING RECORDS'}`);
    }
    out.push('');
  }
  if (failedRuns.length) {
    out.push(`${failedRuns.length} run(s) FAILED:`);
    for (const r of failedRuns) out.push(`  ${r.round === 0 ? 'warm-up' : `round ${r.round}`} ${r.workload} ${r.path}: ${r.error}`);
    out.push('');
  }
  const loadAfter = os.loadavg()[0]!;
  out.push(`total time ${((Date.now() - started) / 1000).toFixed(0)} s; load average (1 min) ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} at the end` +
    (loadBefore > 0.5 ? ' — the machine was busy before the bench started: other work skews these figures' : ''));
  process.stdout.write(out.join('\n') + '\n');

  const json = {
    date: new Date().toISOString(),
    source: gitState(),
    machine: { loadAverageBefore: loadBefore, loadAverageAfter: loadAfter, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, postgres: pgVersion, pgbouncer: '1.18' },
    settings: { ...settings, out: path.relative(ROOT, settings.out) },
    medianTps: Object.fromEntries(settings.workloads.map((w) => [w, Object.fromEntries(settings.paths.map((p) => [p, Math.round(med(w, p))]))])),
    proxyCpuUsPerStatement: Object.fromEntries(settings.workloads.map((w) => [w, Object.fromEntries(cpuPaths.map((p) => [p, Math.round(cpuPer(w, p))]))])),
    auditDbCpuUsPerStatement: Object.fromEntries(settings.workloads.map((w) => [w, Object.fromEntries(cpuPaths.filter((p) => p.startsWith('scalple-')).map((p) => [p, Math.round(perStmt(w, p, 'auditDbCpuMs'))]))])),
    ratios: Object.fromEntries(settings.workloads.map((w) => [w, Object.fromEntries(ratioDefs.map((d) => [d.label, Number(ratio(w, d.num, d.den).toFixed(3))]))])),
    targets: targetResults.map((t) => ({ workload: t.workload, requirement: t.text, min: t.min, ratio: Number(t.ratio.toFixed(3)), pass: t.pass, failedRuns: t.failed })),
    audit: auditCounts,
    runs: results.map((r) => ({ round: r.round, workload: r.workload, path: r.path, tps: Math.round(r.tps), latencyMs: r.latencyMs, transactions: r.transactions, ok: r.ok, ...(r.auditDrainMs !== undefined ? { auditDrainMs: r.auditDrainMs } : {}), ...(r.proxyCpuMs !== undefined ? { proxyCpuMs: r.proxyCpuMs } : {}), ...(r.auditDbCpuMs !== undefined ? { auditDbCpuMs: r.auditDbCpuMs } : {}), ...(r.error ? { error: r.error } : {}) })),
  };
  mkdirSync(path.dirname(settings.out), { recursive: true });
  writeFileSync(settings.out, JSON.stringify(json, null, 1) + '\n');
  log(`results written to ${path.relative(process.cwd(), settings.out)}`);
  if (settings.profile) await summariseProfile(profileDir);
  if (failedRuns.length) {
    for (const p of proxies.values()) if (existsSync(p.logFile)) log(`--- ${p.name} log (tail) ---\n${readFileSync(p.logFile, 'utf8').split('\n').slice(-15).join('\n')}`);
  }
  const auditOk = Object.values(auditCounts).every((c) => c.ok);
  return failedRuns.length || !auditOk ? 1 : 0;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  if (!shuttingDown) process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  code = 1;
}
if (shutdownDone) await shutdownDone;
shuttingDown = true;
await cleanupAll();
process.exit(code);
