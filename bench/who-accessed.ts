// `scalple audit who-accessed` over a large audit store: generates N audit records inside
// PostgreSQL (generate_series, INSERT … SELECT as the schema owner), spread over 12 monthly
// partitions, then times who-accessed for a typical customer, the busiest one and one never seen,
// all time and --since 30d, as the CLI asks by default (the newest 1000 definite accesses listed,
// possible ones summarised: answerWhoAccessed) and with --include-possible, cold (PostgreSQL
// restarted and the OS page cache dropped, when allowed) and warm; then the unlimited listing the
// subject access report uses (whoAccessed, for reference: no target), and the CLI as a process.
// Prints EXPLAIN (ANALYZE, BUFFERS) of the first window query and checks that it uses the GIN index
// on subject_keys. Not a test: exits 0 even when a target is missed (1 only on failure).
//
//   node --import tsx bench/who-accessed.ts [records]        (default 10000000; "10M", "500k" work)
//
// 10M records took 4.5 minutes to generate on a quiet 2-core machine, 8 on a busy one (half of it
// building the GIN index); the measurements 1-3 minutes more. BENCH_KEEP=1 then BENCH_REUSE=<dir>
// measures again without generating.
//
// Environment:
//   BENCH_DIR      where the throwaway cluster lives (default: the OS temp directory)
//   BENCH_KEEP     1 = keep the cluster's directory afterwards (its path is printed)
//   BENCH_REUSE    a directory kept by BENCH_KEEP=1: measure on its data instead of generating
//   BENCH_WARM     warm runs per key (default 5; the median is reported)
//   BENCH_SHARED_BUFFERS  PostgreSQL shared_buffers (default: PostgreSQL's own, 128MB; a production
//                  store would give it ~25 % of RAM, e.g. 4GB)
//
// The data (deterministic: hashint4 and a seeded random()):
//   - 99.5 % of the records are statements (an intent and a completion each), 0.5 % events;
//     4 chains (proxy instances), 300 people in 3 groups, evenly over the last 12 months;
//   - per statement, by a hash of its number: 20 % touch no subject (orders only: no keys),
//     72 % carry 1-5 customer keys (lookups), 7.4 % 6-50 (list screens), 0.5 % 100-1000 (bulk
//     reads and exports), 0.1 % are possible accesses ('customer:*', aggregates over customers);
//   - customer ids 1..1,000,000 drawn skewed (id = 1 + floor(1e6 * random()^2)): low ids are hot,
//     customer 1 is the worst case, a customer near 500,000 the typical one.
// The chain hashes are filler: the benchmark data does not verify (`audit verify` is not measured).
import { execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { PG_BIN, NOBODY, runAsRoot, freePort, spawnUnprivileged, stopChild, waitForOutput } from '../src/demo/embedded-postgres.ts';
import { initAuditSchema } from '../src/audit/schema.ts';
import { answerWhoAccessed, buildWindowQuery, timeWindows, whoAccessed, type AnswerOptions, type WhoAccessedQuery } from '../src/audit/who-accessed.ts';
import type { SubjectDef } from '../src/policy/subjects.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin/scalple.js');

function parseCount(s: string | undefined): number {
  if (!s) return 10_000_000;
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(s.trim());
  if (!m) throw new Error(`records must be a number like 10000000, 10M or 500k (got ${s})`);
  return Math.round(Number(m[1]) * (m[2]?.toLowerCase() === 'm' ? 1e6 : m[2]?.toLowerCase() === 'k' ? 1e3 : 1));
}

const RECORDS = parseCount(process.argv[2]);
const WARM = Number(process.env.BENCH_WARM ?? 5);
const STATEMENTS = Math.floor((RECORDS * 0.995) / 2);
const EVENTS = RECORDS - 2 * STATEMENTS;
const MONTHS = 12;
const SUPER_PW = 'bench-super-pw';
const ADMIN = { user: 'scalple_admin', password: 'bench-admin-pw' };
const WRITER = { user: 'scalple_writer', password: 'bench-writer-pw' };
const HMAC_KEY = 'bench-hmac-key-0123456789abcdef';
const CUSTOMER: SubjectDef = { name: 'customer', table: 'public.customers', key: 'id', via: ['public.orders.customer_id', 'public.payments.customer_id'] };

const log = (s: string) => process.stdout.write(s + '\n');
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

// ---------------------------------------------------------------------------------------------
// A PostgreSQL cluster that can be restarted on the same data directory (for cold runs).

interface Cluster {
  port: number;
  url(user: string, password: string, db?: string): string;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

async function startCluster(): Promise<Cluster> {
  const reuse = process.env.BENCH_REUSE;
  const base = process.env.BENCH_DIR ?? os.tmpdir();
  mkdirSync(base, { recursive: true });
  const root = reuse ?? mkdtempSync(path.join(base, 'scalple-bench-who-'));
  const dataDir = path.join(root, 'data');
  const sock = path.join(root, 'sock');
  if (!reuse) mkdirSync(sock);
  const pwFile = path.join(root, 'pw');
  writeFileSync(pwFile, SUPER_PW + '\n');
  if (runAsRoot) for (const p of [root, sock, pwFile]) chownSync(p, NOBODY, NOBODY);
  if (!reuse) execFileSync(path.join(PG_BIN, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--pwfile', pwFile, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--no-sync'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
    ...(runAsRoot ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  const port = await freePort();
  // PostgreSQL defaults (shared_buffers 128MB, work_mem 4MB) except for what speeds up loading;
  // none of these changes how the query runs.
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1', port: String(port), unix_socket_directories: sock,
    fsync: 'off', full_page_writes: 'off', synchronous_commit: 'off', max_wal_size: '8GB', checkpoint_timeout: '30min',
    autovacuum: 'off',
    ...(process.env.BENCH_SHARED_BUFFERS ? { shared_buffers: process.env.BENCH_SHARED_BUFFERS } : {}),
  };
  let child: ChildProcess | undefined;
  const start = async () => {
    const args = ['-D', dataDir];
    for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
    child = spawnUnprivileged(path.join(PG_BIN, 'postgres'), args);
    const out: string[] = [];
    child.stderr?.on('data', (d: Buffer) => {
      out.push(d.toString());
      if (out.length > 50) out.shift();
    });
    child.stdout?.resume();
    await waitForOutput(child, /database system is ready to accept connections/, 'PostgreSQL', out, 120_000);
  };
  await start();
  return {
    port,
    url: (user, password, db = 'audit') => `postgres://${user}:${password}@127.0.0.1:${port}/${db}`,
    async restart() {
      if (child) await stopChild(child, 'SIGINT');
      await start();
    },
    async stop() {
      if (child) await stopChild(child, 'SIGINT');
      if (process.env.BENCH_KEEP === '1' || reuse) log(`kept ${root} (BENCH_REUSE=${root} measures on it again)`);
      else rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Drops the OS page cache when this process may (root, writable /proc/sys/vm/drop_caches). */
function dropOsCache(): boolean {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  // A dropped connection fails the query in flight; it must not crash the process unreported.
  c.on('error', (err) => process.stderr.write(`bench: connection lost: ${err.message}\n`));
  await c.connect();
  return c;
}

// ---------------------------------------------------------------------------------------------
// Data

/** Statements g in [lo, hi]: their intents and completions, in one INSERT … SELECT each. */
function statementsSql(lo: number, hi: number, startIso: string, stepMs: number): string[] {
  // u: the statement's class (0..99999), from a hash of g: the intent and the completion agree.
  const common = `
    FROM generate_series(${lo}, ${hi}) AS g,
         LATERAL (SELECT (hashint4(g) & 2147483647) % 100000 AS u, (g::bigint * 7919) % 300 AS p,
                         '${startIso}'::timestamptz + (g::double precision * ${stepMs}) * interval '1 millisecond' AS t) x`;
  const intents = `
    INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, sub, email, name, groups, principal_kind,
      db_role, database, client_addr, application_name, session_id, statement, params, kinds, tables, columns,
      decision, rule, policy_version, reason, masked_fields, prev_hash, hash)
    SELECT 'proxy-' || (g % 4), 2 * g - 1, x.t, md5('s' || g)::uuid::text, 'intent',
           'u-' || x.p, 'person' || x.p || '@example.com', 'Person ' || x.p,
           CASE x.p % 3 WHEN 0 THEN ARRAY['support'] WHEN 1 THEN ARRAY['billing'] ELSE ARRAY['analytics', 'support'] END, 'person',
           'app_user', 'app', '10.1.' || (x.p % 250) || '.' || (x.p % 200), 'psql', 's-' || (g / 20),
           CASE WHEN x.u < 20000 THEN 'SELECT id, total FROM orders WHERE id = $1'
                WHEN x.u >= 99900 THEN 'SELECT count(*) FROM customers WHERE region = $1'
                WHEN x.u >= 99400 THEN 'SELECT id, email, region FROM customers WHERE region = $1 ORDER BY id LIMIT 1000'
                WHEN x.u >= 92000 THEN 'SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > $1'
                ELSE 'SELECT * FROM customers WHERE id = $1' END,
           jsonb_build_array((g % 100000)::text), ARRAY['SELECT'],
           CASE WHEN x.u < 20000 THEN ARRAY['public.orders'] WHEN x.u >= 92000 AND x.u < 99400 THEN ARRAY['public.orders', 'public.customers'] ELSE ARRAY['public.customers'] END,
           CASE WHEN x.u < 20000 THEN ARRAY['public.orders.id', 'public.orders.total'] ELSE ARRAY['public.customers.id', 'public.customers.email', 'public.customers.region'] END,
           CASE WHEN x.p % 3 = 0 THEN 'mask' ELSE 'allow' END, 'roles.' || CASE x.p % 3 WHEN 0 THEN 'support' WHEN 1 THEN 'billing' ELSE 'analytics' END,
           'pv-bench', CASE WHEN g % 5 = 0 THEN 'ticket ' || (g % 100000) END,
           CASE WHEN x.p % 3 = 0 THEN '{"public.customers.email": "email"}'::jsonb END,
           md5('p' || g) || md5('q' || g), md5('h' || g) || md5('i' || g)
    ${common}`;
  const completions = `
    INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, session_id, rows, duration_ms, policy_version,
      subject_keys, detail, prev_hash, hash)
    SELECT 'proxy-' || (g % 4), 2 * g, x.t + interval '3 milliseconds', md5('s' || g)::uuid::text, 'completion', 's-' || (g / 20),
           coalesce(cardinality(k.keys), 1), 0.4 + (g % 50) / 10.0, 'pv-bench',
           k.keys,
           CASE WHEN x.u >= 99900 THEN '{"subjects_possible": {"customer": "keys unknown (aggregate): every row the statement''s predicate matched"}}'::jsonb END,
           md5('r' || g) || md5('s' || g), md5('j' || g) || md5('k' || g)
    ${common},
         LATERAL (SELECT CASE
             WHEN x.u < 20000 THEN NULL
             WHEN x.u >= 99900 THEN ARRAY['customer:*']
             ELSE ARRAY(SELECT DISTINCT 'customer:' || (1 + floor(1000000 * random() ^ 2))::bigint
                          FROM generate_series(1, CASE WHEN x.u >= 99400 THEN 100 + (g % 901)
                                                       WHEN x.u >= 92000 THEN 6 + (g % 45)
                                                       ELSE 1 + (g % 5) END) ORDER BY 1)
           END AS keys) k`;
  return [intents, completions];
}

function eventsSql(n: number, startIso: string, stepMs: number): string {
  return `
    INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, event, detail, policy_version, prev_hash, hash)
    SELECT 'admin', g, '${startIso}'::timestamptz + (g::double precision * ${stepMs}) * interval '1 millisecond', md5('e' || g)::uuid::text, 'event',
           CASE g % 3 WHEN 0 THEN 'audit_read' WHEN 1 THEN 'revoke' ELSE 'restore' END,
           jsonb_build_object('by', 'admin@example.com', 'n', g), 'pv-bench', md5('x' || g) || md5('y' || g), md5('z' || g) || md5('w' || g)
      FROM generate_series(1, ${n}) AS g`;
}

async function generate(cluster: Cluster): Promise<void> {
  const su = await client(cluster.url('postgres', SUPER_PW, 'postgres'));
  await su.query(`CREATE ROLE ${ADMIN.user} LOGIN PASSWORD '${ADMIN.password}'; CREATE ROLE ${WRITER.user} LOGIN PASSWORD '${WRITER.password}'`);
  await su.query(`CREATE DATABASE audit OWNER ${ADMIN.user} ENCODING 'UTF8'`);
  await su.end();

  const admin = await client(cluster.url(ADMIN.user, ADMIN.password));
  await initAuditSchema(admin, WRITER.user);
  const now = Date.now();
  const start = new Date(now - 365 * 86_400_000);
  await admin.query(`SELECT scalple_audit.ensure_partitions($1::timestamptz, ${MONTHS + 1})`, [start.toISOString()]);
  const parts = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'scalple_audit.records'::regclass`);
  log(`partitions: ${parts.rows[0]!.n} (monthly, plus the default)`);

  // Indexes are dropped for the load and rebuilt from their own catalog definitions afterwards
  // (what a live store has built incrementally; the primary key stays throughout).
  const idx = await admin.query<{ name: string; def: string }>(`
    SELECT c.relname AS name, pg_get_indexdef(c.oid) AS def
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = 'scalple_audit.records'::regclass AND NOT i.indisprimary`);
  for (const r of idx.rows) await admin.query(`DROP INDEX scalple_audit.${r.name}`);
  await admin.end();

  const stepMs = (now - 60_000 - start.getTime()) / STATEMENTS;
  log(`generating ${RECORDS.toLocaleString('en')} records: ${STATEMENTS.toLocaleString('en')} statements (intent + completion) and ${EVENTS.toLocaleString('en')} events, ${start.toISOString().slice(0, 10)} .. now`);
  const t0 = performance.now();
  // Two loaders (the machine's cores), each taking the next slice.
  const chunk = Math.max(10_000, Math.ceil(STATEMENTS / 40));
  const slices: [number, number][] = [];
  for (let lo = 1; lo <= STATEMENTS; lo += chunk) slices.push([lo, Math.min(STATEMENTS, lo + chunk - 1)]);
  let done = 0;
  let nextSlice = 0;
  const loader = async (n: number) => {
    const c = await client(cluster.url(ADMIN.user, ADMIN.password));
    await c.query(`SELECT setseed(${0.1 + n / 10})`);
    for (;;) {
      const s = slices[nextSlice++];
      if (!s) break;
      for (const q of statementsSql(s[0], s[1], start.toISOString(), stepMs)) await c.query(q);
      done += s[1] - s[0] + 1;
      process.stdout.write(`\r  ${((100 * done) / STATEMENTS).toFixed(0)} % of statements (${secs(performance.now() - t0)})   `);
    }
    await c.end();
  };
  await Promise.all([loader(1), loader(2)]);
  const ec = await client(cluster.url(ADMIN.user, ADMIN.password));
  await ec.query(eventsSql(EVENTS, start.toISOString(), (now - 60_000 - start.getTime()) / Math.max(1, EVENTS)));
  process.stdout.write('\n');
  const tLoad = performance.now();
  log(`  loaded in ${secs(tLoad - t0)}; building ${idx.rows.length} indexes`);
  await ec.query(`SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2`);
  for (const r of idx.rows) {
    const ti = performance.now();
    // pg_get_indexdef says "ON ONLY" for a partitioned index (the parent alone): build it on
    // every partition, as the migration did.
    await ec.query(r.def.replace(' ON ONLY ', ' ON '));
    log(`  ${r.name}: ${secs(performance.now() - ti)}`);
  }
  log('  VACUUM ANALYZE');
  await ec.query('VACUUM ANALYZE scalple_audit.records');
  const size = await ec.query<{ total: string; n: string; gin: string }>(`
    SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) AS total,
           (SELECT count(*) FROM scalple_audit.records) AS n,
           (SELECT pg_size_pretty(sum(pg_relation_size(c.oid))) FROM pg_class c WHERE c.relname LIKE '%subject_keys%' AND c.relkind = 'i') AS gin
      FROM pg_inherits WHERE inhparent = 'scalple_audit.records'::regclass`);
  log(`  ${Number(size.rows[0]!.n).toLocaleString('en')} records, ${size.rows[0]!.total} on disk (subject_keys GIN indexes: ${size.rows[0]!.gin}); total ${secs(performance.now() - t0)}`);
  await ec.end();
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface Case {
  label: string;
  q: WhoAccessedQuery;
  /** The CLI's answer (limit 1000, possible accesses summarised unless includePossible); undefined: every access (the report's listing). */
  opts?: AnswerOptions;
}

interface Measure {
  ms: number;
  listed: number;
  definite: number;
  /** Possible accesses summarised (or listed, with --include-possible). */
  possible: number;
  more: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timeOnce(url: string, k: Case): Promise<Measure> {
  const c = await client(url);
  try {
    const t = performance.now();
    if (!k.opts) {
      const rows = await whoAccessed(c, k.q);
      const definite = rows.filter((r) => r.access === 'definite').length;
      return { ms: performance.now() - t, listed: rows.length, definite, possible: rows.length - definite, more: '-' };
    }
    // As the CLI asks: the possible-access summary on a second connection, in the same snapshot.
    const a = await answerWhoAccessed(c, k.q, { ...k.opts, connect: () => client(url) });
    const ms = performance.now() - t;
    const definite = a.accesses.filter((r) => r.access === 'definite').length;
    const more = a.more.count ? `${a.more.exact ? '' : '>'}${a.more.count}` : '0';
    return { ms, listed: a.accesses.length, definite, possible: a.possible?.accesses ?? a.accesses.length - definite, more };
  } finally {
    await c.end();
  }
}

function cli(configFile: string, args: string[]): { ms: number; out: string } {
  const t = performance.now();
  const out = execFileSync(process.execPath, [BIN, 'audit', 'who-accessed', ...args, '--config', configFile, '--format', 'json'], { maxBuffer: 256 * 1024 * 1024, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return { ms: performance.now() - t, out };
}

const load = () => os.loadavg().map((x) => x.toFixed(1)).join(' ');

async function main(): Promise<void> {
  log(`PostgreSQL binaries: ${PG_BIN}; ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM; shared_buffers ${process.env.BENCH_SHARED_BUFFERS ?? '128MB (default)'}`);
  const cluster = await startCluster();
  try {
    if (process.env.BENCH_REUSE) log(`reusing the data in ${process.env.BENCH_REUSE}`);
    else await generate(cluster);
    const url = cluster.url(WRITER.user, WRITER.password);
    const counter = await client(url);
    const total = Number((await counter.query<{ n: string }>('SELECT count(*) AS n FROM scalple_audit.records')).rows[0]!.n);
    const partitions = Number((await counter.query<{ n: string }>(`SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'scalple_audit.records'::regclass`)).rows[0]!.n);
    await counter.end();
    const d30 = new Date(Date.now() - 30 * 86_400_000);
    const CLI: AnswerOptions = { limit: 1000 };
    const ALL: AnswerOptions = { limit: 1000, includePossible: true };
    // Typical customer: one near the median of the skewed draw; customer 1 is the busiest.
    const cases: Case[] = [
      { label: 'customer 250000 (typical)', q: { subject: CUSTOMER, key: '250000' }, opts: CLI },
      { label: 'customer 250000 --since 30d', q: { subject: CUSTOMER, key: '250000', since: d30 }, opts: CLI },
      { label: 'customer 42 (all time)', q: { subject: CUSTOMER, key: '42' }, opts: CLI },
      { label: 'customer 42 --since 30d', q: { subject: CUSTOMER, key: '42', since: d30 }, opts: CLI },
      { label: 'customer 42 --include-possible', q: { subject: CUSTOMER, key: '42' }, opts: ALL },
      { label: 'customer 1 (busiest key)', q: { subject: CUSTOMER, key: '1' }, opts: CLI },
      { label: 'customer 1 --since 30d', q: { subject: CUSTOMER, key: '1', since: d30 }, opts: CLI },
      { label: 'customer 1 --include-possible', q: { subject: CUSTOMER, key: '1' }, opts: ALL },
      { label: 'customer 9999999 (never seen)', q: { subject: CUSTOMER, key: '9999999' }, opts: CLI },
      { label: 'report listing, customer 42', q: { subject: CUSTOMER, key: '42' } },
      { label: 'report listing, customer 1', q: { subject: CUSTOMER, key: '1' } },
    ];

    // The plan of the first window query (the newest partition), and proof that the GIN index is used.
    const c = await client(url);
    const explain = async (q: WhoAccessedQuery): Promise<string> => {
      const w = (await timeWindows(c, q))[0]!;
      const { text, values } = buildWindowQuery(q, 'definite', w, 1000);
      return (await c.query({ text: `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${text}`, values })).rows.map((r: Record<string, string>) => r['QUERY PLAN']).join('\n');
    };
    const plan = await explain(cases[2]!.q);
    const plan30 = await explain(cases[3]!.q);
    await c.end();
    log('\nEXPLAIN (ANALYZE, BUFFERS) who-accessed customer 42, first window (newest partition):\n' + plan);
    log('\nEXPLAIN (ANALYZE, BUFFERS) who-accessed customer 42 --since 30d, first window:\n' + plan30);
    const gin = /Bitmap Index Scan on records_\w+subject_keys\w*/.test(plan);
    log(`\nGIN index on subject_keys used: ${gin ? 'yes' : 'NO'}`);
    const scanned = (plan.match(/Bitmap Heap Scan on records_\w+/g) ?? []).length;
    log(`partitions read by the first window query: ${scanned} of ${partitions}`);

    // Cold: PostgreSQL restarted (empty shared buffers) and, when allowed, the OS cache dropped.
    const results: ({ label: string; cold: number; warm: number; target: boolean } & Omit<Measure, 'ms'>)[] = [];
    let dropped = false;
    log(`\nload average before: ${load()}`);
    for (const k of cases) {
      await cluster.restart();
      dropped = dropOsCache();
      const cold = await timeOnce(url, k);
      const warm: number[] = [];
      for (let i = 0; i < WARM; i++) warm.push((await timeOnce(url, k)).ms);
      results.push({ ...cold, label: k.label, cold: cold.ms, warm: median(warm), target: k.opts !== undefined });
    }
    log(`load average after: ${load()}`);
    log(`\nwho-accessed over ${total.toLocaleString('en')} audit records (query + row mapping, in process; cold = PostgreSQL restarted${dropped ? ' and OS page cache dropped' : ', OS page cache NOT dropped (not permitted)'}; warm = median of ${WARM})`);
    log('listed: accesses listed (newest first, --limit 1000); possible: summarised (listed with --include-possible); more: left out by the limit (">": counted up to the cap)');
    log('case                              listed  definite  possible     more   cold ms   warm ms   < 1 s');
    for (const r of results) {
      const ok = !r.target ? 'n/a' : r.cold < 1000 && r.warm < 1000 ? 'yes' : r.warm < 1000 ? 'warm only' : 'NO';
      log(`${r.label.padEnd(32)} ${String(r.listed).padStart(7)}  ${String(r.definite).padStart(8)}  ${String(r.possible).padStart(8)}  ${r.more.padStart(7)}  ${r.cold.toFixed(0).padStart(8)}  ${r.warm.toFixed(0).padStart(8)}   ${ok}`);
    }
    log('(report listing: every access, definite and possible, no limit, as `scalple audit report` and scalple.who_accessed() read them; no target)');

    // The operator's command end to end (node + tsx start-up, the query, recording the audit read, JSON out).
    const dir = mkdtempSync(path.join(os.tmpdir(), 'scalple-bench-who-cfg-'));
    const configFile = path.join(dir, 'scalple.yaml');
    writeFileSync(configFile, `upstream: "postgres://app_user:x@127.0.0.1:${cluster.port}/app"
identity: { issuer: "http://127.0.0.1:1/", audience: scalple }
audit: { url: "${url}", hmac_key: "${HMAC_KEY}", checkpoint_file: scalple-audit-head.json }
subjects:
  customer: { table: public.customers, key: id, via: [public.orders.customer_id, public.payments.customer_id] }
`);
    for (const key of ['42', '1']) {
      await cluster.restart();
      dropOsCache();
      const cold = cli(configFile, ['customer', key]);
      const warm: number[] = [];
      for (let i = 0; i < 3; i++) warm.push(cli(configFile, ['customer', key]).ms);
      const n = (JSON.parse(cold.out) as unknown[]).length;
      log(`\n\`scalple audit who-accessed customer ${key} --format json\` as a process: cold ${cold.ms.toFixed(0)} ms, warm ${median(warm).toFixed(0)} ms (${n} accesses listed)`);
    }
    const bare = performance.now();
    execFileSync(process.execPath, [BIN, '--version']);
    log(`(of which CLI start-up, \`scalple --version\`: ${(performance.now() - bare).toFixed(0)} ms)`);
    rmSync(dir, { recursive: true, force: true });
  } finally {
    await cluster.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
