// Proxy-side CPU per audited statement (an intent and a completion record): what the audit writer
// does with records between the proxy handing them over and the bytes going to PostgreSQL.
//
//   node --import tsx bench/audit-records.ts [options]
//
// Without a database: records shaped like the proxy's (the same Principal object and analysis
// arrays for every statement of a session and text, a new logId and Date per record) go through
// the writer's real code: encoding when queued (BatchBuilder.encode, as intent() and completion()
// do), then placing batches of 1000 after the chain head (seq, ts, HMAC chain, COPY payload as a
// Buffer: BatchBuilder.place, as the flush loop does). The same records also go through the
// previous implementation ("before": toPendingRow + canonicalBody + copyBody when queued, one
// string concatenation for the hash and one giant COPY string converted to a Buffer per batch),
// rebuilt here from the reference functions chain.ts and copy.ts still export. The two run in
// alternating blocks so machine noise hits both alike; the figures are CPU time (user + system)
// per statement, median over blocks, garbage collection included (the garbage of building the
// records is collected before the clock starts).
//
// Every run first checks (and --check only checks) that nothing changed: the encoder gives exactly
// canonicalBody/copyBody of toPendingRow on awkward records (NUL, lone surrogates, quotes, tabs,
// JSON, sparse arrays, non-string values), on 5000 random ones, and after Principals and arrays
// are mutated in place (stale caches); the "after" COPY payload is byte-identical to the "before"
// one, and the INSERT JSON holds the same rows (jsonb values compared as JSON).
//
// Options:
//   --seconds N     time per workload, per implementation (default 4)
//   --workloads L   comma list: extended,simple,app,strict (default all)
//   --check         only the equivalence checks (exit 1 on a difference)
//   --only NAME     time one implementation (before or after), e.g. under --cpu-prof
//   --e2e           also end to end: a throwaway PostgreSQL (test/support/services.ts), 8 callers
//                   writing through openAuditStore (buffered), process CPU per statement, verified
//   --e2e-only      only the end-to-end run
//   --statements N  statements in the end-to-end run (default 40000)
//
// Run it in a checkout without BatchBuilder and it times "before" alone (the figures of that tree).
import { randomUUID } from 'node:crypto';
import { setImmediate as yieldToIo } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import * as chain from '../src/audit/chain.ts';
import * as copy from '../src/audit/copy.ts';
import * as writer from '../src/audit/writer.ts';
import type { AuditRecord, CompletionRecord, IntentRecord, Principal } from '../src/audit/record.ts';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string): boolean => args.includes(name);
const SECONDS = Number(opt('--seconds') ?? 4);
const WORKLOADS = (opt('--workloads') ?? 'extended,simple,app,strict').split(',').filter(Boolean);
const CHAIN_ID = 'proxy-1';
const POLICY_VERSION = 'policy-2024-06-01.3';
const keys = chain.deriveKeys('bench-hmac-key-that-the-database-never-sees');
const hasAfter = 'BatchBuilder' in writer;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as (opts?: { type: 'minor' | 'major' }) => void;

// ---------------------------------------------------------------------------------------------
// Records like the proxy's

interface Workload {
  name: string;
  what: string;
  /** Records per batch: 1000 (COPY, buffered mode) or a few (INSERT, strict mode). */
  batch: number;
  pair(i: number): [IntentRecord, CompletionRecord];
}

interface Session {
  id: string;
  principal: Principal;
  init: { dbRole: string; database: string; clientAddr: string; applicationName: string };
}

function sessions(n: number, groups: string[]): Session[] {
  return Array.from({ length: n }, (_, i) => ({
    id: randomUUID(),
    principal: { kind: 'person', sub: `00u${(1e6 + i * 7919).toString(36)}x7Qp4d5`, email: `person.${i}@example.com`, name: `Person Number ${i}`, groups: [...groups] },
    init: { dbRole: 'app_user', database: 'bench', clientAddr: `10.1.2.${10 + i}`, applicationName: 'pgbench' },
  }));
}

/** What the proxy's intentRecord() and complete() build (src/proxy/session.ts). */
function intentOf(s: Session, statement: string, info: { kinds: string[]; tables: string[]; columns: string[] }, params: (string | null)[] | undefined): IntentRecord {
  return {
    type: 'intent', logId: randomUUID(), ts: new Date(), sessionId: s.id, principal: s.principal,
    dbRole: s.init.dbRole, database: s.init.database, clientAddr: s.init.clientAddr, applicationName: s.init.applicationName,
    statement, ...(params ? { params } : {}), kinds: info.kinds, tables: info.tables, columns: info.columns,
    decision: 'allow', policyVersion: POLICY_VERSION,
  };
}

function completionOf(s: Session, logId: string, rows: number, subjectKeys?: string[]): CompletionRecord {
  return {
    type: 'completion', logId, ts: new Date(), sessionId: s.id, rows,
    durationMs: Number(process.hrtime.bigint() % 1_000_000n) / 1e6 + 0.05,
    ...(subjectKeys?.length ? { subjectKeys } : {}),
  };
}

function workloads(): Workload[] {
  const pgbench = sessions(8, ['engineering', 'support-tier-2', 'on-call']);
  const selectInfo = { kinds: ['SELECT'], tables: ['public.pgbench_accounts'], columns: ['public.pgbench_accounts.abalance', 'public.pgbench_accounts.aid'] };
  const selectText = 'SELECT abalance FROM pgbench_accounts WHERE aid = $1;';
  const aid = (i: number) => 1 + ((i * 7919) % 100_000);
  const app = sessions(16, ['support', 'billing-readers', 'eu-customers', 'staff']);
  const appInfo = {
    kinds: ['SELECT'], tables: ['public.customers', 'public.orders'],
    columns: ['public.customers.id', 'public.customers.email', 'public.customers.name', 'public.orders.id', 'public.orders.total', 'public.orders.created_at', 'public.orders.customer_id'],
  };
  const appText = 'SELECT c.id, c.email, c.name, o.id AS order_id, o.total\n  FROM customers c\n  JOIN orders o ON o.customer_id = c.id\n WHERE c.id = $1 AND o.created_at >= $2 AND o.status = ANY($3)\n ORDER BY o.created_at DESC\n LIMIT $4';
  return [
    {
      name: 'extended', batch: 1000, what: 'pgbench -S -M extended: one text, a parameter; COPY batches of 1000',
      pair: (i) => {
        const s = pgbench[i % pgbench.length]!;
        const r = intentOf(s, selectText, selectInfo, [String(aid(i))]);
        return [r, completionOf(s, r.logId, 1)];
      },
    },
    {
      name: 'simple', batch: 1000, what: 'pgbench -S -M simple: a new text per statement (literal inline), shared analysis; COPY batches of 1000',
      pair: (i) => {
        const s = pgbench[i % pgbench.length]!;
        const r = intentOf(s, `SELECT abalance FROM pgbench_accounts WHERE aid = ${aid(i)};`, selectInfo, undefined);
        return [r, completionOf(s, r.logId, 1)];
      },
    },
    {
      name: 'app', batch: 1000, what: 'an application: a multi-line join, 4 parameters, 7 columns, subject keys; COPY batches of 1000',
      pair: (i) => {
        const s = app[i % app.length]!;
        const id = String(1000 + (i % 5000));
        const r = intentOf(s, appText, appInfo, [id, '2024-01-01T00:00:00Z', '{paid,shipped}', '50']);
        return [r, completionOf(s, r.logId, 3, [`customer:${id}`])];
      },
    },
    {
      name: 'strict', batch: 8, what: 'pgbench -S -M extended in strict mode: INSERT batches of 8',
      pair: (i) => {
        const s = pgbench[i % pgbench.length]!;
        const r = intentOf(s, selectText, selectInfo, [String(aid(i))]);
        return [r, completionOf(s, r.logId, 1)];
      },
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// The two implementations: queue (encode) and place (hash + payload), as the writer does.

interface Impl {
  name: string;
  /** Queues a record; returns its entry. */
  queue(rec: AuditRecord): unknown;
  /** Places a batch after the head; returns the payload as the connection gets it. */
  place(entries: unknown[], small: boolean): Buffer | string;
  reset(): void;
}

const timeOf = (rec: AuditRecord): number => Math.min(chain.recordTimeMs(rec), Date.now());

/** The writer before this change (HEAD of src/audit/writer.ts enqueue/prepare, copy.ts copyIn). */
function before(): Impl {
  interface Entry { row: chain.PendingRow; tsMs: number; body: string; copy: string; enqueuedAt: number; bytes: number }
  let head = { seq: 0, hash: chain.GENESIS_HASH, tsMs: 0 };
  const rowJson = (row: chain.PendingRow): string => {
    let out = '';
    for (const k of chain.BODY_COLUMNS) {
      const v = row[k];
      if (v !== null) out += `,"${k}":${JSON.stringify(v)}`;
    }
    return '{' + out.slice(1) + '}';
  };
  return {
    name: 'before',
    queue(rec) {
      const row = chain.toPendingRow(rec, POLICY_VERSION);
      const tsMs = timeOf(rec);
      const body = chain.canonicalBody(row);
      const c = copy.copyBody(row);
      return { row, tsMs, body, copy: c, enqueuedAt: Date.now(), bytes: body.length + c.length } satisfies Entry;
    },
    place(list, small) {
      const entries = list as Entry[];
      let { seq, hash, tsMs } = head;
      const chainField = small ? JSON.stringify(CHAIN_ID) : copy.copyField(CHAIN_ID);
      let payload = small ? '[' : '';
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i]!;
        seq++;
        tsMs = Math.max(tsMs, e.tsMs);
        const ts = new Date(tsMs).toISOString();
        const h = chain.chainHash(keys, hash, chain.canonicalHead(CHAIN_ID, seq, ts) + e.body);
        if (small) {
          payload += `${i ? ',' : ''}{"chain_id":${chainField},"seq":${seq},"ts":"${ts}","prev_hash":"${hash}","hash":"${h}",${rowJson(e.row).slice(1)}`;
        } else {
          payload += copy.copyLine(chainField, seq, ts, e.copy, hash, h);
        }
        hash = h;
      }
      head = { seq, hash, tsMs };
      // copyIn converted the string to a Buffer; the INSERT sent the string as a parameter.
      return small ? payload + ']' : Buffer.from(payload, 'utf8');
    },
    reset() {
      head = { seq: 0, hash: chain.GENESIS_HASH, tsMs: 0 };
    },
  };
}

/** The writer as it is: BatchBuilder, which AuditWriter uses for enqueue() and prepare(). */
function after(): Impl {
  let builder = new writer.BatchBuilder(CHAIN_ID, keys);
  let head: writer.Head = { seq: 0, hash: chain.GENESIS_HASH, tsMs: 0 };
  return {
    name: 'after',
    queue(rec) {
      const enc = builder.encode(rec, POLICY_VERSION);
      // the writer's Entry: { rec, tsMs, bytes, waiter, enqueuedAt }
      return { rec: enc, tsMs: timeOf(rec), bytes: enc.body.length + enc.copy.length, waiter: undefined, enqueuedAt: Date.now() };
    },
    place(entries, small) {
      const r = builder.place(entries as writer.Placeable[], head, small);
      head = r.last;
      return r.payload;
    },
    reset() {
      builder = new writer.BatchBuilder(CHAIN_ID, keys);
      head = { seq: 0, hash: chain.GENESIS_HASH, tsMs: 0 };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Equivalence

function awkwardRecords(): AuditRecord[] {
  const weirdPrincipal: Principal = { kind: 'person', sub: 'u-"quoted"\\', email: "o'brien+/*x*/@example.com", name: 'Zoë 日本 🎉\ttab', groups: ['a,b', '{c}', 'd"e', 'back\\slash', '', 'NULL', 'nl\nx', '\u0000', '\ud800x'] };
  const app: Principal = { kind: 'application', sub: 'app:billing', groups: [], application: 'billing' };
  const grants = [{ grantId: 'g-1', role: 'dba', reason: 'incident #7\n"urgent"', by: 'boss@example.com', until: new Date(Date.UTC(2030, 0, 1)) }];
  const base = (o: Partial<IntentRecord>): IntentRecord => ({
    type: 'intent', logId: randomUUID(), ts: new Date(), sessionId: 's-1', principal: weirdPrincipal,
    dbRole: 'app_user', database: 'app', clientAddr: '127.0.0.1', applicationName: 'psql',
    statement: 'SELECT 1', kinds: ['SELECT'], tables: [], columns: [], decision: 'allow', policyVersion: 'pv-1', ...o,
  });
  const recs: AuditRecord[] = [
    base({}),
    base({ principal: app, actingFor: weirdPrincipal, statement: "SELECT '\u0000nul' /* \ud800 lone */, E'\\n' -- 🎉\n\r\t;", params: ['1', null, 'two\nlines', '\udc00', 'q"uote', 'b\\s', '🎉'] }),
    base({ params: [], kinds: ['SELECT', 'UPDATE'], tables: ['public.t,1', 'weird."x"', 'back\\slash'], columns: ['a\tb'], rule: 'mask.email', reason: 'ticket #42', namedQuery: 'q\u2028' }),
    base({ maskedFields: { 'public.customers.email': 'email', '10': 'n', '9': 'm', 'ключ': 'значение', 'tab\t': 'x\\y' }, grants, decision: 'mask' }),
    base({ actingFor: { kind: 'person', sub: 'u-end', email: 'end@example.com', groups: [] }, decision: 'deny', rule: 'deny.all' }),
    base({ policyVersion: undefined as unknown as string, sessionId: 'sess\u0000ion', dbRole: 'r\\ole', database: 'd\tb', clientAddr: '', applicationName: 'app "x"' }),
    base({ params: [1, { a: 1 }, undefined, null] as unknown as (string | null)[] }),
    base({ params: [, 'hole'] as unknown as (string | null)[] }), // eslint-disable-line no-sparse-arrays
    base({ kinds: [, 'HOLE'] as unknown as string[], tables: [1, null, undefined] as unknown as string[] }), // eslint-disable-line no-sparse-arrays
    base({ logId: 'log\ud800id', statement: undefined as unknown as string, kinds: undefined as unknown as string[] }),
    base({ principal: { ...weirdPrincipal, groups: undefined as unknown as string[], email: undefined, name: undefined } }),
    { type: 'completion', logId: 'l-1', ts: new Date(), sessionId: 's-1', rows: 3, durationMs: 0.1 + 0.2 },
    { type: 'completion', logId: 'l-2', ts: new Date(), sessionId: 's\t2', rows: null, sqlstate: '22P02', error: 'invalid input syntax for type integer: "x"\n\\', durationMs: -0 },
    { type: 'completion', logId: 'l-3', ts: new Date(), sessionId: 's-1', rows: 2.7, durationMs: Number.NaN, subjectKeys: ['customer:9', 'customer:10', 'customer:9'], subjectsPossible: { order: 'no key "column"' } },
    { type: 'completion', logId: 'l-4', ts: new Date(), sessionId: 's-1', rows: Number.POSITIVE_INFINITY, durationMs: 1e21, subjectsPossible: {} },
    { type: 'completion', logId: 'l-5', ts: new Date(), sessionId: undefined as unknown as string, rows: -0, durationMs: 5e-324, subjectKeys: [] },
    { type: 'event', logId: 'ev-1', ts: new Date(), event: 'test', principal: weirdPrincipal,
      detail: { n: 1e21, small: 5e-324, neg: -0, f: 0.30000000000000004, big: 2 ** 60, nested: { b: [1, { z: null, a: true }], a: new Date(0) }, skipped: undefined } },
    { type: 'event', logId: 'ev-2', ts: new Date(), event: 'revoke', detail: { by: 'x' } },
    base({ principal: { kind: 'person', sub: 42 as unknown as string, groups: [1, 2.5, true] as unknown as string[] }, dbRole: 7 as unknown as string }),
    base({ principal: 'not an object' as unknown as Principal }),
    base({ principal: undefined as unknown as Principal }),
    { type: 'bogus', logId: 'x', ts: new Date() } as unknown as AuditRecord,
  ];
  return recs;
}

/** Random records over awkward characters, sharing (and mutating) principals and arrays. */
function fuzzRecords(n: number): AuditRecord[] {
  let seed = 12345;
  const rnd = (k: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % k;
  };
  const chars = ['a', 'Z', '0', ' ', ',', '"', '\\', '\n', '\r', '\t', '\u0000', '\u0001', '\u001f', '\u007f', '{', '}', '[', ']', 'é', '日', '\u2028', '\ud83c\udf89', '\ud800', '\udc00', 'N', 'U', 'L'];
  const str = () => Array.from({ length: rnd(12) }, () => chars[rnd(chars.length)]).join('');
  const arr = () => Array.from({ length: rnd(4) }, str);
  const principals: Principal[] = Array.from({ length: 4 }, () => ({ kind: 'person', sub: str(), email: str(), name: str(), groups: arr() }));
  const arrays = Array.from({ length: 6 }, arr);
  const out: AuditRecord[] = [];
  for (let i = 0; i < n; i++) {
    if (rnd(10) === 0) principals[rnd(4)]!.groups.push(str());
    if (rnd(10) === 0) principals[rnd(4)]!.email = rnd(3) ? str() : undefined;
    if (rnd(10) === 0) arrays[rnd(6)]![0] = str();
    if (rnd(2)) {
      out.push({
        type: 'intent', logId: str(), ts: new Date(), sessionId: ['s1', 's2', str()][rnd(3)]!, principal: principals[rnd(4)]!,
        ...(rnd(4) ? {} : { actingFor: principals[rnd(4)]! }),
        dbRole: str(), database: ['db', str()][rnd(2)]!, clientAddr: '127.0.0.1', applicationName: str(),
        statement: ['SELECT 1', str()][rnd(2)]!, ...(rnd(2) ? { params: [str(), null, str()] } : {}),
        kinds: arrays[rnd(6)]!, tables: arrays[rnd(6)]!, columns: arrays[rnd(6)]!, decision: 'allow',
        ...(rnd(3) ? {} : { rule: str(), reason: str(), namedQuery: str() }),
        ...(rnd(5) ? {} : { maskedFields: { [str()]: str(), [str()]: str() } }),
        policyVersion: ['pv', str()][rnd(2)]!,
      });
    } else {
      out.push({
        type: 'completion', logId: str(), ts: new Date(), sessionId: ['s1', 's2', str()][rnd(3)]!, rows: [null, 0, 3, 1.5][rnd(4)]!,
        ...(rnd(2) ? {} : { sqlstate: str(), error: str() }), durationMs: rnd(1000) / 7,
        ...(rnd(3) ? {} : { subjectKeys: arr() }), ...(rnd(5) ? {} : { subjectsPossible: { [str()]: str() } }),
      });
    }
  }
  return out;
}

function check(): boolean {
  if (!hasAfter) {
    console.log('check: this tree has no BatchBuilder (nothing to compare)');
    return true;
  }
  let failures = 0;
  const fail = (what: string, a: unknown, b: unknown) => {
    failures++;
    console.log(`MISMATCH ${what}\n  expected ${JSON.stringify(a)}\n  actual   ${JSON.stringify(b)}`);
  };
  // 1. The encoder against the row-based reference, on awkward records, twice (the second time
  // from the caches), and after mutating the shared objects in place.
  const builder = new writer.BatchBuilder(CHAIN_ID, keys);
  const recs = awkwardRecords();
  const compare = (rec: AuditRecord, label: string) => {
    let row: chain.PendingRow | undefined;
    let refErr: unknown;
    try {
      row = chain.toPendingRow(rec, POLICY_VERSION);
    } catch (err) {
      refErr = err;
    }
    let enc: chain.EncodedRecord | undefined;
    let encErr: unknown;
    try {
      enc = builder.encode(rec, POLICY_VERSION);
    } catch (err) {
      encErr = err;
    }
    if (!row || !enc) {
      if (!!row !== !!enc) fail(`${label}: one threw`, String(refErr), String(encErr));
      return;
    }
    if (chain.canonicalBody(row) !== enc.body) fail(`${label}: canonical body`, chain.canonicalBody(row), enc.body);
    if (copy.copyBody(row) !== enc.copy) fail(`${label}: COPY fields`, copy.copyBody(row), enc.copy);
    if (row.log_id !== enc.logId || row.session_id !== enc.sessionId || row.record_type !== enc.type) fail(`${label}: ids`, [row.log_id, row.session_id, row.record_type], [enc.logId, enc.sessionId, enc.type]);
    // rowOfBody (what is logged for a record that could not be written) gives the row's values
    const b = chain.canonicalJson(row as unknown as chain.Json);
    let a: string;
    try {
      a = chain.canonicalJson(chain.rowOf(enc) as unknown as chain.Json);
    } catch (err) {
      a = String(err);
    }
    if (a !== b) fail(`${label}: rowOf`, b, a);
  };
  for (let round = 0; round < 2; round++) recs.forEach((r, i) => compare(r, `record ${i} (round ${round})`));
  fuzzRecords(5000).forEach((r, i) => compare(r, `fuzz record ${i}`));
  // mutations in place: every cached fragment must notice
  const shared = recs[0] as IntentRecord;
  const p = shared.principal;
  const mutations: [string, () => void][] = [
    ['principal.email', () => { p.email = 'changed@example.com'; }],
    ['principal.groups push', () => { p.groups.push('new-group'); }],
    ['principal.groups[0]', () => { p.groups[0] = 'replaced'; }],
    ['principal.groups swap', () => { p.groups = ['other']; }],
    ['principal.kind', () => { p.kind = 'application'; p.application = 'x'; }],
    ['kinds[0]', () => { shared.kinds[0] = 'DELETE'; }],
    ['tables push', () => { shared.tables.push('public.x'); }],
    ['dbRole', () => { shared.dbRole = 'other_role'; }],
    ['clientAddr', () => { shared.clientAddr = '10.0.0.1'; }],
    ['policyVersion', () => { shared.policyVersion = 'pv-2'; }],
  ];
  for (const [what, mutate] of mutations) {
    mutate();
    compare({ ...shared, logId: randomUUID() }, `after mutating ${what}`);
  }
  const acting = recs[1] as IntentRecord;
  acting.actingFor!.groups.push('added');
  compare({ ...acting, logId: randomUUID() }, 'after mutating actingFor.groups');
  acting.actingFor!.name = 'Renamed';
  compare({ ...acting, logId: randomUUID() }, 'after mutating actingFor.name');

  // 2. Whole payloads: the same records through before and after give the same bytes.
  for (const w of workloads()) {
    const a = before();
    const b = after();
    for (const small of [false, true]) {
      const pairs: AuditRecord[] = Array.from({ length: 600 }, (_, i) => w.pair(i)).flat();
      const accepted = recs.filter((r) => {
        try {
          return chain.toPendingRow(r, POLICY_VERSION) !== undefined;
        } catch {
          return false; // refused by both (compared above)
        }
      });
      pairs.push(...accepted.map((r) => ({ ...r, ts: new Date(Date.now() - 5) }) as AuditRecord));
      // the same tsMs for both (records carry their time; now() clamps future ones only)
      const ea = pairs.map((r) => a.queue(r));
      const eb = pairs.map((r) => b.queue(r));
      for (let i = 0; i < pairs.length; i += small ? 8 : 1000) {
        const pa = a.place(ea.slice(i, i + (small ? 8 : 1000)), small);
        const pb = b.place(eb.slice(i, i + (small ? 8 : 1000)), small);
        if (small) {
          // the INSERT JSON: same rows (JSON objects may list their keys in another order)
          const norm = (s: string) => chain.canonicalJson(JSON.parse(s) as chain.Json);
          if (norm(pa as string) !== norm(pb as string)) fail(`${w.name}: INSERT payload at ${i}`, pa, pb);
        } else if (!Buffer.from(pa).equals(Buffer.from(pb))) {
          fail(`${w.name}: COPY payload at ${i}`, String(pa).slice(0, 2000), String(pb).slice(0, 2000));
        }
      }
    }
  }
  // 3. isoTime against toISOString around the edges.
  for (const ms of [0, 1, 999, 1000, -1, -999, -1000, -1001, 1714564800123, 1714564800999, 1714564801000, 253402300799999, 253402300800000, -62167219200001, 8.64e15, -8.64e15, 8.6e15, -8.6e15, 8599999999999999, -8599999999999999, 8599999999999000, 1e15 + 999, -0, 1.5, Number.NaN]) {
    const want = (() => { try { return new Date(ms).toISOString(); } catch (e) { return String(e); } })();
    const got = (() => { try { return chain.isoTime(ms); } catch (e) { return String(e); } })();
    if (want !== got) fail(`isoTime(${ms})`, want, got);
  }
  console.log(failures ? `check: ${failures} differences` : 'check: the encoder gives canonicalBody/copyBody exactly; before and after give the same payloads');
  return failures === 0;
}

// ---------------------------------------------------------------------------------------------
// Timing

interface Sample { us: number; encodeUs: number; placeUs: number }

function block(impl: Impl, w: Workload, chunks: number): Sample {
  const pairsPerChunk = 1000;
  let cpu = 0;
  let enc = 0;
  let pl = 0;
  let pairs = 0;
  let sink = 0;
  for (let c = 0; c < chunks; c++) {
    // the proxy builds the records: not timed
    const recs: AuditRecord[] = [];
    for (let i = 0; i < pairsPerChunk; i++) {
      const [a, b] = w.pair(c * pairsPerChunk + i);
      recs.push(a, b);
    }
    // the records' own garbage is collected before the clock starts (the records stay alive)
    gc({ type: 'minor' });
    const c0 = process.cpuUsage();
    const entries: unknown[] = new Array(recs.length);
    for (let i = 0; i < recs.length; i++) entries[i] = impl.queue(recs[i]!);
    const c1 = process.cpuUsage();
    for (let i = 0; i < entries.length; i += w.batch) sink += impl.place(entries.slice(i, i + w.batch), w.batch < 32).length;
    const c2 = process.cpuUsage();
    cpu += c2.user + c2.system - c0.user - c0.system;
    enc += c1.user + c1.system - c0.user - c0.system;
    pl += c2.user + c2.system - c1.user - c1.system;
    pairs += pairsPerChunk;
  }
  if (sink < 0) console.log(sink);
  return { us: cpu / pairs, encodeUs: enc / pairs, placeUs: pl / pairs };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function timeAll(): void {
  const only = opt('--only');
  const impls = (hasAfter ? [before(), after()] : [before()]).filter((i) => !only || i.name === only);
  console.log(`\nCPU per statement (intent + completion), µs, median of blocks of 4000 records; ${SECONDS}s per workload and implementation`);
  console.log(`node ${process.version}, ${hasAfter ? 'before vs after' : 'this tree only ("before")'}\n`);
  const rows: string[][] = [];
  for (const w of workloads().filter((x) => WORKLOADS.includes(x.name))) {
    for (const impl of impls) {
      impl.reset();
      block(impl, w, 3); // warm-up
    }
    const samples = new Map<string, Sample[]>(impls.map((i) => [i.name, []]));
    const spent = new Map<string, number>(impls.map((i) => [i.name, 0]));
    let round = 0;
    while (impls.some((i) => spent.get(i.name)! < SECONDS * 1000)) {
      // alternate the order so neither always follows the other's garbage
      const order = round++ % 2 ? [...impls].reverse() : impls;
      for (const impl of order) {
        gc();
        const t = performance.now();
        samples.get(impl.name)!.push(block(impl, w, 2));
        spent.set(impl.name, spent.get(impl.name)! + performance.now() - t);
      }
    }
    const med = (name: string, k: keyof Sample) => median(samples.get(name)!.map((s) => s[k]));
    if (impls.length === 1) {
      const n = impls[0]!.name;
      console.log(`  ${w.name}: ${n} ${med(n, 'us').toFixed(1)} µs (${med(n, 'encodeUs').toFixed(1)} + ${med(n, 'placeUs').toFixed(1)})`);
      continue;
    }
    const b = med('before', 'us');
    const row = [w.name, b.toFixed(1), `${med('before', 'encodeUs').toFixed(1)} + ${med('before', 'placeUs').toFixed(1)}`];
    if (hasAfter) {
      const a = med('after', 'us');
      row.push(a.toFixed(1), `${med('after', 'encodeUs').toFixed(1)} + ${med('after', 'placeUs').toFixed(1)}`, `${(b / a).toFixed(2)}x`);
    }
    row.push(String(samples.get('before')!.length));
    rows.push(row);
    console.log(`  ${w.name}: ${w.what}`);
  }
  if (!rows.length) return;
  const header = hasAfter
    ? ['workload', 'before µs', '(queue + place)', 'after µs', '(queue + place)', 'ratio', 'blocks']
    : ['workload', 'before µs', '(queue + place)', 'blocks'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  console.log('\n' + header.map((h, i) => h.padStart(widths[i]!)).join('  '));
  for (const r of rows) console.log(r.map((c, i) => c.padStart(widths[i]!)).join('  '));
}

// ---------------------------------------------------------------------------------------------
// End to end: the real writer against a real PostgreSQL

async function e2e(): Promise<void> {
  const { ADMIN, WRITER, HMAC_KEY, freshAuditDb } = await import('../test/audit/helpers.ts');
  const { startPostgres, superQuery } = await import('../test/support/services.ts');
  const { verify } = await import('../src/audit/verify.ts');
  const statements = Number(opt('--statements') ?? 40_000);
  const callers = 8;
  const server = await startPostgres();
  try {
    await superQuery(server, `CREATE ROLE ${ADMIN.user} LOGIN PASSWORD '${ADMIN.password}'; CREATE ROLE ${WRITER.user} LOGIN PASSWORD '${WRITER.password}'`);
    const w = workloads().find((x) => x.name === 'extended')!;
    console.log(`\nEnd to end: ${callers} callers, ${statements} statements (${w.what.split(';')[0]}), buffered, PostgreSQL ${server.port}`);
    for (let run = 0; run < 3; run++) {
      const env = await freshAuditDb(server);
      const store = await writer.openAuditStore(env.config({ durability: 'buffered', bufferSize: 10_000, flushIntervalMs: 20 }), { policyVersion: POLICY_VERSION });
      const perCaller = Math.ceil(statements / callers);
      // record building (the proxy's work) is measured alone and subtracted
      const g0 = process.cpuUsage();
      for (let i = 0; i < perCaller * callers; i++) w.pair(i);
      const g = process.cpuUsage(g0);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(Array.from({ length: callers }, async (_, c) => {
        for (let i = 0; i < perCaller; i++) {
          const [intent, completion] = w.pair(c * perCaller + i);
          for (;;) {
            try {
              await store.intent(intent);
              break;
            } catch {
              await store.flush();
            }
          }
          store.completion(completion);
          await yieldToIo();
        }
      }));
      await store.flush();
      const d = process.cpuUsage(c0);
      const seconds = (performance.now() - t0) / 1000;
      const n = perCaller * callers;
      await store.close();
      const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile, batchSize: 5000 });
      if (!report.ok || report.chains[0]?.verified !== n * 2) throw new Error(`the chain does not verify: ${JSON.stringify(report.problems)}`);
      const cpu = (d.user + d.system - (g.user + g.system)) / n;
      console.log(`  run ${run + 1}: ${cpu.toFixed(1)} µs CPU per statement in this process (records built by the caller excluded), ${Math.round(n / seconds)} statements/s, chain verified (${n * 2} records)`);
      env.cleanup();
    }
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------

if (!check()) process.exit(1);
if (!flag('--check')) {
  if (!flag('--e2e-only')) timeAll();
  if (flag('--e2e') || flag('--e2e-only')) await e2e();
}
