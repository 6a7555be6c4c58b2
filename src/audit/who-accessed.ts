// "Who accessed customer 42?": every statement whose completion record lists the subject key
// ('customer:42': a *definite* access), or says the subject was touched with keys unknown
// ('customer:*': a *possible* access, e.g. an aggregate over the table), with its intent record
// (who, when, what) found by log_id.
//
// How it answers in well under a second over tens of millions of records, cold or warm, without
// any index beyond those the write path already keeps (the GIN index on subject_keys, the log_id
// index, and ts as the partition key):
// - The answer is a page: the newest `limit` accesses (the CLI's --limit, 1000 by default). The
//   completions are found through the GIN index on subject_keys (`&&` on an exact element, so
//   'customer:420' never matches 'customer:42') one time window at a time, newest first, each
//   window a whole monthly partition (or several, sized from the density seen so far), so the
//   months older than the page are never read. Only the narrow completion columns are read here.
// - Intent records (the wide rows: person, statement, columns) are fetched only for the accesses on
//   the page, by the log_id index, bounded to the partitions between "completion minus the
//   statement's duration" and the completion (an intent is written before its completion on the
//   same chain; stored times never go backwards): grouped by month so that each query probes one
//   or two partitions as a bitmap scan (heap pages read in physical order, with read-ahead), or for
//   a short page, one nested loop pruned per row at run time. An intent not found there (a
//   statement that ran for longer, or written elsewhere) takes a second, unbounded lookup.
// - How many more accesses the page left out is counted up to a cap (twice the limit, at least
//   1000), so the hottest key never costs a full count; past the cap the answer says "more than N".
// - Possible accesses are the same for every key of a subject (every aggregate over customers may
//   have included any customer): listed one by one they drown the definite ones. By default they
//   are summarised (one line per person and statement shape, with a count and the first and last
//   time), over the newest `limit` of them; --include-possible lists each one.
// - Every query of one answer runs in one REPEATABLE READ, READ ONLY snapshot, with
//   effective_io_concurrency raised for the bitmap heap scans (cold reads prefetched) and JIT off
//   (its compile time would exceed the query's). Given a way to open a second connection (the CLI
//   gives one), the possible-access summary runs on it at the same time as the definite accesses,
//   in the same snapshot (pg_export_snapshot): their cold reads overlap.
import type pg from 'pg';
import { ScalpleError } from '../errors.ts';
import { parseSubjects, type SubjectDef } from '../policy/subjects.ts';
import type { Json } from './chain.ts';
import { listPartitions } from './schema.ts';
import type { RecordPerson } from './search.ts';

/**
 * One access to a data subject, as `scalple audit who-accessed --format json` prints it (an array
 * of these, newest first) and as `scalple audit report --format json` lists it under `accesses`.
 * Stable field names (for SIEM pipelines); new fields may be added, none renamed or removed.
 *
 * - `log_id`        the statement's log id (intent and completion records share it)
 * - `ts`            when the statement was sent (intent time), ISO 8601 UTC with milliseconds;
 *                   the completion time when the intent record is missing
 * - `completed_at`  when it completed (completion time); --since/--until select on this time
 * - `access`        'definite': the subject's key is among the rows returned or changed;
 *                   'possible': the statement read the subject's table but its keys could not be
 *                   known (aggregate, DISTINCT, function…): it may have included this subject
 * - `possible_reason` why the keys were unknown (null for a definite access)
 * - `subject`, `key` the subject name and key asked about ('customer', '42')
 * - `sub`, `email`, `name`, `groups`, `principal_kind` ('person' | 'application'), `application`:
 *                   who ran the statement (for an application: its identity)
 * - `acting_for`    the person an application acted for ({kind, sub, email, name, groups,
 *                   application}) or null
 * - `statement`     the statement text as stored (literals compared with masked columns redacted)
 * - `params`        bind parameters as stored (same rule), or null
 * - `named_query`   the named query run through scalple.run(), or null
 * - `kinds`         statement kinds (SELECT, UPDATE, …)
 * - `tables`        schema.table read or written
 * - `columns`       schema.table.column read or written
 * - `masked_fields` { "schema.table.column": "mask" } for columns that were masked, or null
 * - `reason`        the access reason the person gave, or null
 * - `grants`        time-boxed roles (break glass) in force for the statement:
 *                   [{ grant_id, role, reason, by, until }], [] when none
 * - `decision`, `rule`, `policy_version` the policy decision ('allow' | 'mask' | …) and why
 * - `db_role`, `database`, `client_addr`, `application_name`, `session_id`
 * - `rows`          rows returned or affected (null when it failed before any row)
 * - `sqlstate`, `error`  set when the statement failed (rows sent before the failure still count)
 * - `duration_ms`
 * - `chain_id`, `seq`, `completion_seq`  where the intent and completion sit in the audit chain
 *                   (`seq` is null when the intent record is missing)
 */
export interface SubjectAccess extends RecordPerson {
  log_id: string;
  ts: string;
  completed_at: string;
  access: 'definite' | 'possible';
  possible_reason: string | null;
  subject: string;
  key: string;
  statement: string | null;
  params: Json;
  named_query: string | null;
  kinds: string[];
  tables: string[];
  columns: string[];
  masked_fields: Json;
  reason: string | null;
  grants: Json[];
  decision: string | null;
  rule: string | null;
  policy_version: string | null;
  db_role: string | null;
  database: string | null;
  client_addr: string | null;
  application_name: string | null;
  session_id: string | null;
  rows: number | null;
  sqlstate: string | null;
  error: string | null;
  duration_ms: number | null;
  chain_id: string;
  seq: number | null;
  completion_seq: number;
}

/** Field order of the CSV outputs (and of the documented JSON objects). */
export const SUBJECT_ACCESS_FIELDS: (keyof SubjectAccess)[] = [
  'log_id', 'ts', 'completed_at', 'access', 'possible_reason', 'subject', 'key', 'sub', 'email', 'name', 'groups', 'principal_kind',
  'application', 'acting_for', 'statement', 'params', 'named_query', 'kinds', 'tables', 'columns', 'masked_fields', 'reason', 'grants',
  'decision', 'rule', 'policy_version', 'db_role', 'database', 'client_addr', 'application_name', 'session_id', 'rows', 'sqlstate', 'error',
  'duration_ms', 'chain_id', 'seq', 'completion_seq',
];

export interface WhoAccessedQuery {
  subject: SubjectDef;
  key: string;
  /** Completions at or after this time. */
  since?: Date;
  /** Completions at or before this time. */
  until?: Date;
  /** Leave out possible accesses. */
  definiteOnly?: boolean;
}

/** `--limit` when none is given: accesses listed (and possible accesses summarised). */
export const DEFAULT_LIMIT = 1000;
/**
 * How many more accesses past the page are counted, as a multiple of the limit: each costs a heap
 * read, and the hottest keys have tens of thousands ("more than N" past the cap).
 */
const MORE_COUNT_FACTOR = 2;
/** …and at least this many, whatever the limit. */
const MIN_MORE_COUNT = 1000;
/** Slack below "completion time minus duration" where the intent is first looked for. */
const INTENT_SLACK_MS = 3_600_000;
/** Pages up to this many accesses fetch their intents in one nested-loop query, whatever months they span. */
const SMALL_PAGE = 100;

/** The subject named on the command line, from the config's `subjects`; a usage error (exit 2) otherwise. */
export function resolveSubject(policy: Record<string, unknown>, name: string): SubjectDef {
  const subjects = parseSubjects(policy.subjects);
  const found = subjects.find((s) => s.name === name);
  if (found) return found;
  if (!subjects.length) {
    throw new ScalpleError('USAGE', `unknown subject "${name}": the config defines no data subjects (add a \`subjects\` section, e.g. subjects: { customer: { table: public.customers, key: id } }).`);
  }
  throw new ScalpleError('USAGE', `unknown subject "${name}": the config defines ${subjects.map((s) => `"${s.name}"`).join(', ')}.`);
}

/** The key as it is stored: PostgreSQL's text output of the key column, taken verbatim. */
export function checkKey(key: string): string {
  if (key === '' || key === '*') {
    throw new ScalpleError('USAGE', `KEY must be the subject's key value as PostgreSQL prints it (e.g. 42)${key === '*' ? ': "*" is how possible accesses are stored and is never a key' : ''}.`);
  }
  return key;
}

/** The tables through which a statement reaches the subject: its own and those of its `via` columns. */
export function subjectTables(s: SubjectDef): string[] {
  return [...new Set([s.table, ...s.via.map((v) => v.split('.').slice(0, 2).join('.'))])];
}

// ---------------------------------------------------------------------------------------------
// Completions: which statements, in which order.

/** Which accesses a query looks for: definite ones, possible ones (not also definite), or both. */
export type AccessScope = 'definite' | 'possible' | 'all';

/** A time window [lo, hi) (either end open), within the query's --since/--until. */
export interface TimeWindow {
  lo?: Date;
  hi?: Date;
}

/** The narrow completion row an access starts from. */
interface CompletionRow {
  chain_id: string;
  seq: string;
  ts: Date;
  /** ts as PostgreSQL prints it (microseconds kept): the keyset cursor. */
  ts_key: string;
  log_id: string;
  rows: string | null;
  sqlstate: string | null;
  error: string | null;
  duration_ms: number | null;
  definite: boolean;
  possible_reason: string | null;
  window_total?: string;
}

function params(): { values: unknown[]; p: (v: unknown) => string } {
  const values: unknown[] = [];
  return {
    values,
    p: (v: unknown) => {
      values.push(v);
      return `$${values.length}`;
    },
  };
}

/** Where a page ended: the next one starts strictly after it in (ts, seq, chain_id) descending order. */
interface Cursor {
  ts_key: string;
  seq: string;
  chain_id: string;
}

/** WHERE conditions on completions c for the subject key, the scope, the time range and the cursor. */
function completionWhere(q: WhoAccessedQuery, scope: AccessScope, w: TimeWindow, p: (v: unknown) => string, after?: Cursor): { where: string; definite: string } {
  const key = checkKey(q.key);
  const exact = `${q.subject.name}:${key}`;
  const star = `${q.subject.name}:*`;
  const cond: string[] = [];
  let definite: string;
  if (scope === 'definite') {
    cond.push(`c.subject_keys && ARRAY[${p(exact)}::text]`);
    definite = 'true';
  } else if (scope === 'possible') {
    // A completion holding both the key and '*' (a UNION, say) is a definite access.
    cond.push(`c.subject_keys && ARRAY[${p(star)}::text]`, `NOT c.subject_keys @> ARRAY[${p(exact)}::text]`);
    definite = 'false';
  } else {
    const e = p(exact);
    cond.push(`c.subject_keys && ARRAY[${e}::text, ${p(star)}::text]`);
    definite = `c.subject_keys @> ARRAY[${e}::text]`;
  }
  cond.push(`c.record_type = 'completion'`);
  // ts is the partition key: literal bounds prune the partitions at plan time.
  if (q.since) cond.push(`c.ts >= ${p(q.since.toISOString())}::timestamptz`);
  if (q.until) cond.push(`c.ts <= ${p(q.until.toISOString())}::timestamptz`);
  if (w.lo) cond.push(`c.ts >= ${p(w.lo.toISOString())}::timestamptz`);
  if (w.hi) cond.push(`c.ts < ${p(w.hi.toISOString())}::timestamptz`);
  if (after) cond.push(`(c.ts, c.seq, c.chain_id) < (${p(after.ts_key)}::timestamptz, ${p(after.seq)}::bigint, ${p(after.chain_id)}::text)`);
  return { where: cond.join(' AND '), definite };
}

/**
 * The completions of one time window, newest first (exported so the benchmark can EXPLAIN it).
 * With a limit, only that many rows come back, each carrying the window's total (count(*) over
 * the window, computed from the rows the sort reads anyway), so the caller knows how many it left.
 */
export function buildWindowQuery(q: WhoAccessedQuery, scope: AccessScope, w: TimeWindow, limit?: number, after?: Cursor): { text: string; values: unknown[] } {
  const { values, p } = params();
  const { where, definite } = completionWhere(q, scope, w, p, after);
  const reason = scope === 'definite' ? 'NULL::text' : `c.detail -> 'subjects_possible' ->> ${p(q.subject.name)}::text`;
  const text = `
    SELECT c.chain_id, c.seq, c.ts, c.ts::text AS ts_key, c.log_id, c.rows, c.sqlstate, c.error, c.duration_ms,
           ${definite} AS definite, ${reason} AS possible_reason${limit === undefined ? '' : ', count(*) OVER () AS window_total'}
      FROM scalple_audit.records c
     WHERE ${where}
     ORDER BY c.ts DESC, c.seq DESC, c.chain_id DESC${limit === undefined ? '' : `
     LIMIT ${p(limit)}::bigint`}`;
  return { text, values };
}

/** How many completions match in a window, counting at most `cap` of them (each costs a heap read). */
function buildCountQuery(q: WhoAccessedQuery, scope: AccessScope, w: TimeWindow, cap: number, after?: Cursor): { text: string; values: unknown[] } {
  const { values, p } = params();
  const { where } = completionWhere(q, scope, w, p, after);
  return { text: `SELECT count(*)::int AS n FROM (SELECT 1 FROM scalple_audit.records c WHERE ${where} LIMIT ${p(cap)}::bigint) x`, values };
}

/**
 * The query's time range cut at the monthly partition boundaries, newest window first: each
 * window reads one partition (plus the default partition), and the walk stops at the first
 * window that completes the page.
 */
export async function timeWindows(client: pg.Client, q: Pick<WhoAccessedQuery, 'since' | 'until'>, now = new Date()): Promise<TimeWindow[]> {
  const lo = q.since?.getTime() ?? -Infinity;
  const hi = (q.until ?? now).getTime();
  const bounds = new Set<number>();
  for (const part of await listPartitions(client)) {
    for (const d of [part.from, part.to]) if (d && d.getTime() > lo && d.getTime() < hi) bounds.add(d.getTime());
  }
  const b = [...bounds].sort((x, y) => y - x); // newest first
  if (!b.length) return [{}];
  const out: TimeWindow[] = [{ lo: new Date(b[0]!) }];
  for (let i = 1; i < b.length; i++) out.push({ lo: new Date(b[i]!), hi: new Date(b[i - 1]!) });
  out.push({ hi: new Date(b[b.length - 1]!) });
  return out;
}

interface Walk {
  rows: CompletionRow[];
  /** Matching completions left out past the limit (a lower bound when `moreExact` is false). */
  more: number;
  moreExact: boolean;
}

/**
 * The newest `limit` completions in scope (all of them without a limit), walking the time windows
 * newest first. The first query reads one window; later ones as many as the density seen so far
 * says the page still needs (×1.5), so a rare key takes two queries and a hot one stops at the
 * first partition.
 */
async function walk(client: pg.Client, q: WhoAccessedQuery, scope: AccessScope, limit: number | undefined, all: TimeWindow[], after?: Cursor & { ts: Date }): Promise<Walk> {
  if (limit === undefined) {
    const r = await client.query<CompletionRow>(buildWindowQuery(q, scope, {}));
    return { rows: r.rows, more: 0, moreExact: true };
  }
  // After a cursor: the windows from the one holding it.
  const windows = after ? all.filter((w) => !w.lo || w.lo.getTime() <= after.ts.getTime()) : all;
  const rows: CompletionRow[] = [];
  let i = 0;
  let left = 0;
  while (i < windows.length && rows.length < limit) {
    const need = limit - rows.length;
    let k = 1;
    if (i > 0) k = rows.length ? Math.ceil((1.5 * need * i) / rows.length) : windows.length - i;
    k = Math.max(1, Math.min(k, windows.length - i));
    const w: TimeWindow = { ...(windows[i]!.hi ? { hi: windows[i]!.hi } : {}), ...(windows[i + k - 1]!.lo ? { lo: windows[i + k - 1]!.lo } : {}) };
    const r = await client.query<CompletionRow>(buildWindowQuery(q, scope, w, need, after));
    rows.push(...r.rows);
    i += k;
    if (r.rows.length) left = Number(r.rows[0]!.window_total) - r.rows.length;
  }
  if (rows.length < limit) return { rows, more: 0, moreExact: true };
  let more = left;
  let moreExact = true;
  if (i < windows.length) {
    // Older windows: counted up to a cap (the hottest key has tens of thousands).
    const cap = Math.max(MORE_COUNT_FACTOR * limit, MIN_MORE_COUNT);
    const older: TimeWindow = { hi: windows[i - 1]!.lo! };
    const n = (await client.query<{ n: number }>(buildCountQuery(q, scope, older, cap, after))).rows[0]!.n;
    more += n;
    moreExact = n < cap;
  }
  return { rows, more, moreExact };
}

// ---------------------------------------------------------------------------------------------
// Intents: who, what, for the completions on the page only.

const INTENT_FIELDS = ['seq', 'ts', 'sub', 'email', 'name', 'groups', 'principal_kind', 'application', 'acting_for', 'db_role', 'database',
  'client_addr', 'application_name', 'session_id', 'statement', 'params', 'kinds', 'tables', 'columns', 'decision', 'rule',
  'policy_version', 'reason', 'named_query', 'masked_fields', 'detail'];
/** The intent's columns (seq and ts prefixed: the completion has its own). */
const INTENT_COLUMNS = ['i.log_id', 'i.chain_id', ...INTENT_FIELDS.map((f) => (f === 'seq' || f === 'ts' ? `i.${f} AS i_${f}` : `i.${f}`))].join(', ');

type IntentRow = Record<string, unknown> & { log_id: string; chain_id: string; i_seq: string; i_ts: Date };

const monthOf = (ms: number): number => {
  const d = new Date(ms);
  return d.getUTCFullYear() * 12 + d.getUTCMonth();
};

/** Earliest time the completion's intent is looked for at first: its start, less an hour of slack. */
function intentFloor(c: CompletionRow): number {
  return c.ts.getTime() - Math.max(0, Number(c.duration_ms ?? 0)) - INTENT_SLACK_MS;
}

/**
 * The intent of each completion (keyed by chain_id/seq of the completion), looked for between the
 * statement's start (completion time less its duration, less an hour) and the completion, on the
 * completion's chain; then, for any not found there, anywhere.
 */
async function fetchIntents(client: pg.Client, rows: CompletionRow[]): Promise<Map<string, IntentRow>> {
  const out = new Map<string, IntentRow>();
  if (!rows.length) return out;
  const found = new Map<string, IntentRow[]>();
  const keep = (x: IntentRow) => {
    if (x.record_type !== 'intent') return;
    const l = found.get(x.log_id);
    if (l) l.push(x);
    else found.set(x.log_id, [x]);
  };
  // record_type is tested in JS (or as "record_type || ''"), never as "record_type = 'intent'":
  // that would let the planner AND the bitmap with a whole partial index (records_tables_idx,
  // intents only) to prove it.
  if (rows.length <= SMALL_PAGE) {
    // A short page (a rare key, spread over many months): one nested loop, each completion probing
    // the log_id index of the one or two partitions its intent can be in (pruned at run time).
    const r = await client.query<IntentRow>(`
      SELECT i.record_type, ${INTENT_COLUMNS}
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(log_id, chain_id, lo, hi)
        CROSS JOIN LATERAL (
          SELECT * FROM scalple_audit.records i
           WHERE i.log_id = u.log_id AND i.chain_id = u.chain_id AND i.record_type || '' = 'intent' AND i.ts >= u.lo AND i.ts <= u.hi
           LIMIT 1) i`,
    [rows.map((c) => c.log_id), rows.map((c) => c.chain_id), rows.map((c) => new Date(intentFloor(c)).toISOString()), rows.map((c) => c.ts.toISOString())]);
    r.rows.forEach(keep);
  } else {
    // Grouped by the months the intent can be in: each query probes the log_id index of one or two
    // partitions (pruned at plan time by its literal ts bounds) as one bitmap scan.
    const groups = new Map<string, CompletionRow[]>();
    for (const c of rows) {
      const g = `${monthOf(intentFloor(c))}:${monthOf(c.ts.getTime())}`;
      const list = groups.get(g);
      if (list) list.push(c);
      else groups.set(g, [c]);
    }
    for (const list of groups.values()) {
      const lo = Math.min(...list.map(intentFloor));
      const hi = Math.max(...list.map((c) => c.ts.getTime()));
      const r = await client.query<IntentRow>(`
        SELECT i.record_type, ${INTENT_COLUMNS}
          FROM scalple_audit.records i
         WHERE i.log_id = ANY($1::text[]) AND i.ts >= $2::timestamptz AND i.ts <= $3::timestamptz`,
      [[...new Set(list.map((c) => c.log_id))], new Date(lo).toISOString(), new Date(hi).toISOString()]);
      r.rows.forEach(keep);
    }
  }
  const missing: CompletionRow[] = [];
  for (const c of rows) {
    // Its own chain, not after the completion: the newest such intent (there is one per log_id).
    let best: IntentRow | undefined;
    for (const x of found.get(c.log_id) ?? []) {
      if (x.chain_id !== c.chain_id || x.i_ts.getTime() > c.ts.getTime()) continue;
      if (!best || x.i_ts.getTime() > best.i_ts.getTime() || (x.i_ts.getTime() === best.i_ts.getTime() && Number(x.i_seq) > Number(best.i_seq))) best = x;
    }
    if (best) out.set(`${c.chain_id}/${c.seq}`, best);
    else missing.push(c);
  }
  if (missing.length) {
    // Statements that ran for longer than their recorded duration says, or intents written elsewhere.
    const m = await client.query<IntentRow>(`
      SELECT DISTINCT ON (i.log_id) ${INTENT_COLUMNS}
        FROM scalple_audit.records i
       WHERE i.log_id = ANY($1::text[]) AND i.record_type || '' = 'intent' -- not proving the partial index (see above)
       ORDER BY i.log_id, i.ts DESC, i.seq DESC`, [[...new Set(missing.map((c) => c.log_id))]]);
    const byId = new Map(m.rows.map((x) => [x.log_id, x]));
    for (const c of missing) {
      const x = byId.get(c.log_id);
      if (x) out.set(`${c.chain_id}/${c.seq}`, x);
    }
  }
  return out;
}

/** Completions with their intents, as accesses; possible ones that never reached the subject's tables are dropped. */
async function toAccesses(client: pg.Client, q: WhoAccessedQuery, rows: CompletionRow[]): Promise<SubjectAccess[]> {
  const key = checkKey(q.key);
  const intents = await fetchIntents(client, rows);
  const reach = subjectTables(q.subject);
  const out: SubjectAccess[] = [];
  for (const c of rows) {
    const i = intents.get(`${c.chain_id}/${c.seq}`);
    // A possible access counts only if the statement touched the subject's table (or a table of a
    // `via` column). Without its intent record the statement is unknown: kept, to be safe.
    if (c.definite !== true && i && !((i.tables as string[] | null) ?? []).some((t) => reach.includes(t))) continue;
    out.push(toAccess(c, i, q.subject.name, key));
  }
  return out;
}

/**
 * Runs fn in one REPEATABLE READ, READ ONLY transaction (one snapshot for every query of an
 * answer), with bitmap heap scans prefetching (effective_io_concurrency; refused on platforms
 * without posix_fadvise, then left as it is) and JIT off.
 */
export async function withReadSnapshot<T>(client: pg.Client, fn: () => Promise<T>, snapshot?: string): Promise<T> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
  try {
    if (snapshot !== undefined) {
      // Another connection's snapshot (pg_export_snapshot): both see exactly the same records.
      if (!/^[0-9A-F]+(-[0-9A-F]+)+$/i.test(snapshot)) throw new Error(`not a snapshot id: ${snapshot}`);
      await client.query(`SET TRANSACTION SNAPSHOT '${snapshot}'`);
    }
    await client.query('SET LOCAL jit = off');
    await client.query('SAVEPOINT io');
    try {
      await client.query('SET LOCAL effective_io_concurrency = 64');
      await client.query('RELEASE SAVEPOINT io'); // no subtransaction left open (pg_export_snapshot refuses one)
    } catch {
      await client.query('ROLLBACK TO SAVEPOINT io');
      await client.query('RELEASE SAVEPOINT io');
    }
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Answers

/** Accesses past the page: `count` of them (at least `count` when not `exact`), all older than `before`. */
export interface MoreAccesses {
  count: number;
  exact: boolean;
  /** Completion time of the oldest access listed (the ones left out are at or before it). */
  before: string | null;
}

/**
 * Possible accesses collapsed to one line per person (and the person an application acted for)
 * and statement shape: the named query, else the statement's libpg-query fingerprint (texts that
 * differ only in literals are one shape), else its text.
 */
export interface PossibleGroup extends RecordPerson {
  count: number;
  first: string;
  last: string;
  named_query: string | null;
  /** The newest statement of the group, as stored. */
  statement: string | null;
  tables: string[];
  /** Why the keys were unknown (distinct reasons of the group). */
  reasons: string[];
}

export interface PossibleSummary {
  /** Possible accesses summarised (the newest `limit` of them at most). */
  accesses: number;
  groups: PossibleGroup[];
  /** Older possible accesses not summarised. */
  more: MoreAccesses;
}

export interface WhoAccessedAnswer {
  /** Newest first: definite accesses, and possible ones too with includePossible. */
  accesses: SubjectAccess[];
  /** Accesses of the listed kinds left out by the limit. */
  more: MoreAccesses;
  /** Possible accesses summarised; null when they are listed (includePossible) or left out (definiteOnly). */
  possible: PossibleSummary | null;
}

export interface AnswerOptions {
  /** At most this many accesses listed (and possible accesses summarised); DEFAULT_LIMIT by default. */
  limit?: number;
  /** List possible accesses one by one among the definite ones instead of summarising them. */
  includePossible?: boolean;
  /**
   * Opens a second connection to the same store: the possible-access summary is then computed on
   * it while the definite accesses are read on the first, in the same snapshot (their cold reads
   * overlap). Without it, or when it fails, one after the other on `client`.
   */
  connect?: () => Promise<pg.Client>;
}

/**
 * The newest `limit` accesses in scope, as accesses. A possible access whose statement never
 * reached the subject's tables is dropped only once its intent is read, so a page that lost some
 * is topped up from where it ended (keyset: strictly older in (ts, seq, chain_id)).
 */
async function page(client: pg.Client, q: WhoAccessedQuery, scope: AccessScope, limit: number, windows: TimeWindow[]): Promise<{ accesses: SubjectAccess[]; more: MoreAccesses }> {
  const accesses: SubjectAccess[] = [];
  let after: (Cursor & { ts: Date }) | undefined;
  for (;;) {
    const w = await walk(client, q, scope, limit - accesses.length, windows, after);
    const got = await toAccesses(client, q, w.rows);
    accesses.push(...got);
    const last = w.rows[w.rows.length - 1];
    if (got.length === w.rows.length || !w.more || !last) {
      // Counts are of recorded completions: one that never reached the subject's tables is counted
      // among the "more" until it is read.
      return { accesses, more: { count: w.more, exact: w.moreExact, before: w.more && accesses.length ? accesses[accesses.length - 1]!.completed_at : null } };
    }
    after = { ts: last.ts, ts_key: last.ts_key, seq: last.seq, chain_id: last.chain_id };
  }
}

/**
 * `scalple audit who-accessed`: the newest `limit` definite accesses (with includePossible, the
 * newest `limit` accesses of both kinds), and unless the query is definiteOnly, a summary of the
 * newest `limit` possible accesses. One snapshot for all of it.
 */
export async function answerWhoAccessed(client: pg.Client, q: WhoAccessedQuery, opts: AnswerOptions = {}): Promise<WhoAccessedAnswer> {
  const limit = opts.limit ?? DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw new ScalpleError('USAGE', '--limit must be a positive integer.');
  checkKey(q.key);
  if (opts.includePossible && q.definiteOnly) throw new ScalpleError('USAGE', '--include-possible and --definite-only exclude each other.');
  const summarise = !opts.includePossible && !q.definiteOnly;
  return withReadSnapshot(client, async () => {
    const windows = await timeWindows(client, q);
    const snapshot = summarise && opts.connect ? (await client.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s : undefined;
    // The definite accesses' first query is on its way before the second connection is opened.
    const listing = page(client, q, opts.includePossible ? 'all' : 'definite', limit, windows);
    let parallel: Promise<PossibleSummary> | undefined;
    if (snapshot !== undefined && opts.connect) {
      const connect = opts.connect;
      parallel = (async () => {
        const other = await connect();
        try {
          return await withReadSnapshot(other, () => possibleSummary(other, q, limit, windows), snapshot);
        } finally {
          await other.end().catch(() => undefined);
        }
      })();
      parallel.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
    }
    let listed: Awaited<typeof listing>;
    try {
      listed = await listing;
    } catch (err) {
      await parallel?.catch(() => undefined);
      throw err;
    }
    const { accesses, more } = listed;
    // Awaited before this transaction ends: the exported snapshot lives as long as it does.
    const possible = !summarise ? null
      : parallel ? await parallel.catch(() => possibleSummary(client, q, limit, windows))
      : await possibleSummary(client, q, limit, windows);
    return { accesses, more, possible };
  });
}

/** The newest `limit` possible accesses to the subject, one line per person and statement shape. */
export async function summarisePossible(client: pg.Client, q: WhoAccessedQuery, limit = DEFAULT_LIMIT): Promise<PossibleSummary> {
  return withReadSnapshot(client, async () => possibleSummary(client, q, limit, await timeWindows(client, q)));
}

async function possibleSummary(client: pg.Client, q: WhoAccessedQuery, limit: number, windows: TimeWindow[]): Promise<PossibleSummary> {
  const { accesses, more } = await page(client, q, 'possible', limit, windows);
  const shapeOf = await shapeFunction(accesses);
  const groups = new Map<string, PossibleGroup>();
  for (const a of accesses) {
    // Newest first: the first access of a group sets its person, statement and last time.
    const id = JSON.stringify([a.sub ?? a.email, actingForId(a.acting_for), shapeOf(a)]);
    let g = groups.get(id);
    if (!g) {
      g = {
        count: 0, first: a.ts, last: a.ts, sub: a.sub, email: a.email, name: a.name, groups: a.groups, principal_kind: a.principal_kind,
        application: a.application, acting_for: a.acting_for, named_query: a.named_query, statement: a.statement, tables: a.tables, reasons: [],
      };
      groups.set(id, g);
    }
    g.count++;
    if (a.ts < g.first) g.first = a.ts;
    if (a.ts > g.last) g.last = a.ts;
    const why = a.possible_reason ?? 'keys unknown';
    if (!g.reasons.includes(why)) g.reasons.push(why);
  }
  return {
    accesses: accesses.length,
    groups: [...groups.values()].sort((a, b) => b.count - a.count || b.last.localeCompare(a.last)),
    more,
  };
}

function actingForId(v: Json): string | null {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const s = v.sub ?? v.email;
  return typeof s === 'string' ? s : null;
}

/**
 * Statement shape: the named query, else the libpg-query fingerprint of the text (equal for texts
 * that differ only in literals), else the text. The parser (WebAssembly, ~60 ms to load) is
 * loaded only when there are two texts or more to tell apart.
 */
async function shapeFunction(accesses: SubjectAccess[]): Promise<(a: SubjectAccess) => string> {
  let fp: ((sql: string) => string) | undefined;
  const texts = new Set(accesses.filter((a) => !a.named_query && a.statement).map((a) => a.statement));
  if (texts.size > 1) {
    try {
      const parser = await import('../sql/parser.ts');
      await parser.ensureParser();
      fp = parser.fingerprint;
    } catch {
      fp = undefined; // grouped by exact text instead
    }
  }
  return (a) => {
    if (a.named_query) return `named:${a.named_query}`;
    if (!a.statement) return 'unknown';
    if (fp) {
      try {
        return `fp:${fp(a.statement)}`;
      } catch {
        // not parseable: its text
      }
    }
    return `text:${a.statement}`;
  };
}

/**
 * Every access to subject:key in the range, newest first, definite and possible (only definite
 * with definiteOnly), with no limit: for the subject access report and scalple.who_accessed().
 */
export async function whoAccessed(client: pg.Client, q: WhoAccessedQuery): Promise<SubjectAccess[]> {
  checkKey(q.key);
  return withReadSnapshot(client, async () => {
    const w = await walk(client, q, q.definiteOnly ? 'definite' : 'all', undefined, []);
    return toAccesses(client, q, w.rows);
  });
}

function toAccess(c: CompletionRow, i: IntentRow | undefined, subject: string, key: string): SubjectAccess {
  const x: Record<string, unknown> = i ?? {};
  const str = (v: unknown): string | null => (v === null || v === undefined ? null : (v as string));
  const completedAt = c.ts.toISOString();
  const definite = c.definite === true;
  return {
    log_id: c.log_id,
    ts: i ? i.i_ts.toISOString() : completedAt,
    completed_at: completedAt,
    access: definite ? 'definite' : 'possible',
    possible_reason: definite ? null : (c.possible_reason ?? 'keys unknown'),
    subject,
    key,
    sub: str(x.sub),
    email: str(x.email),
    name: str(x.name),
    groups: (x.groups as string[] | null | undefined) ?? [],
    principal_kind: str(x.principal_kind),
    application: str(x.application),
    acting_for: (x.acting_for ?? null) as Json,
    statement: str(x.statement),
    params: (x.params ?? null) as Json,
    named_query: str(x.named_query),
    kinds: (x.kinds as string[] | null | undefined) ?? [],
    tables: (x.tables as string[] | null | undefined) ?? [],
    columns: (x.columns as string[] | null | undefined) ?? [],
    masked_fields: (x.masked_fields ?? null) as Json,
    reason: str(x.reason),
    grants: grantsOf(x.detail),
    decision: str(x.decision),
    rule: str(x.rule),
    policy_version: str(x.policy_version),
    db_role: str(x.db_role),
    database: str(x.database),
    client_addr: str(x.client_addr),
    application_name: str(x.application_name),
    session_id: str(x.session_id),
    rows: c.rows === null ? null : Number(c.rows),
    sqlstate: c.sqlstate,
    error: c.error,
    duration_ms: c.duration_ms,
    chain_id: c.chain_id,
    seq: i ? Number(i.i_seq) : null,
    completion_seq: Number(c.seq),
  };
}

function grantsOf(detail: unknown): Json[] {
  const g = detail && typeof detail === 'object' ? (detail as { grants?: unknown }).grants : undefined;
  return Array.isArray(g) ? (g as Json[]) : [];
}

/** Earliest record the store still holds (older ones were dropped by retention), or null. */
export async function oldestRecord(client: pg.Client): Promise<string | null> {
  const r = await client.query<{ ts: Date | null }>('SELECT min(ts) AS ts FROM scalple_audit.records');
  return r.rows[0]?.ts ? r.rows[0].ts.toISOString() : null;
}
