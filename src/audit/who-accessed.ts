// "Who accessed customer 42?": every statement whose completion record lists the subject key
// ('customer:42'), or says the subject was touched with keys unknown ('customer:*', a *possible*
// access), joined to its intent record (who, when, what) by log_id.
//
// How it stays fast over tens of millions of records:
// - completions are found through the GIN index on subject_keys (`&&` on an exact element, so
//   'customer:420' never matches 'customer:42'), and the time range is a predicate on ts, the
//   partition key, so months outside the range are never read;
// - each completion's intent is fetched by the log_id index, bounded to the completion's own chain
//   and to the week before the completion (an intent is always written before its completion on
//   the same chain, and stored times never go backwards), so only the partitions around the access
//   are probed (run-time partition pruning). A statement that ran longer than that is found by a
//   second, unbounded lookup by log_id.
import type pg from 'pg';
import { ScalpleError } from '../errors.ts';
import { parseSubjects, type SubjectDef } from '../policy/subjects.ts';
import type { Json } from './chain.ts';

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
export interface SubjectAccess {
  log_id: string;
  ts: string;
  completed_at: string;
  access: 'definite' | 'possible';
  possible_reason: string | null;
  subject: string;
  key: string;
  sub: string | null;
  email: string | null;
  name: string | null;
  groups: string[];
  principal_kind: string | null;
  application: string | null;
  acting_for: Json;
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

/** How far before its completion an intent is first looked for (longer statements take a second lookup). */
const INTENT_WINDOW = "interval '7 days'";

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

const INTENT_FIELDS = ['seq', 'ts', 'sub', 'email', 'name', 'groups', 'principal_kind', 'application', 'acting_for', 'db_role', 'database',
  'client_addr', 'application_name', 'session_id', 'statement', 'params', 'kinds', 'tables', 'columns', 'decision', 'rule',
  'policy_version', 'reason', 'named_query', 'masked_fields', 'detail'];
/** The intent's columns as the outer query names them (seq and ts are the completion's too: prefixed). */
const INTENT_COLUMNS = INTENT_FIELDS.map((f) => (f === 'seq' || f === 'ts' ? `i.${f} AS i_${f}` : `i.${f}`)).join(', ');
const INTENT_SELECT = INTENT_FIELDS.map((f) => `i.${f}`).join(', ');

/**
 * The main query of who-accessed, with its parameters (exported so the benchmark can EXPLAIN it).
 * Completions come from the GIN index on subject_keys within the ts range (partitions pruned at
 * plan time); each one's intent from the log_id index, bounded to [completion ts - 7 days,
 * completion ts] so only the partitions around it are probed (pruned at run time). The intent
 * lookup has no ORDER BY on purpose: there is one intent per log_id, and an ordering would tempt
 * the planner to walk the primary key (chain_id, seq, ts) backwards instead of probing log_id.
 */
export function buildWhoAccessedQuery(q: WhoAccessedQuery): { text: string; values: unknown[] } {
  const key = checkKey(q.key);
  const exact = `${q.subject.name}:${key}`;
  const keys = q.definiteOnly ? [exact] : [exact, `${q.subject.name}:*`];
  const values: unknown[] = [keys, exact, q.subject.name];
  const p = (v: unknown) => {
    values.push(v);
    return `$${values.length}`;
  };
  const range: string[] = [];
  if (q.since) range.push(`c.ts >= ${p(q.since.toISOString())}::timestamptz`);
  if (q.until) range.push(`c.ts <= ${p(q.until.toISOString())}::timestamptz`);
  const text = `
    WITH c AS (
      SELECT c.chain_id, c.seq, c.ts, c.log_id, c.rows, c.sqlstate, c.error, c.duration_ms,
             c.subject_keys @> ARRAY[$2::text] AS definite,
             c.detail -> 'subjects_possible' ->> $3::text AS possible_reason
        FROM scalple_audit.records c
       WHERE c.subject_keys && $1::text[] AND c.record_type = 'completion'
             ${range.map((x) => `AND ${x}`).join(' ')}
       ORDER BY c.ts DESC, c.seq DESC -- sorted while the rows are narrow; the join keeps the order
    )
    SELECT c.chain_id, c.seq AS c_seq, c.ts AS c_ts, c.log_id, c.rows, c.sqlstate, c.error, c.duration_ms, c.definite, c.possible_reason,
           ${INTENT_COLUMNS}
      FROM c
      LEFT JOIN LATERAL (
        SELECT ${INTENT_SELECT}
          FROM scalple_audit.records i
         WHERE i.log_id = c.log_id AND i.chain_id = c.chain_id AND i.record_type = 'intent'
               AND i.ts <= c.ts AND i.ts >= c.ts - ${INTENT_WINDOW}
         LIMIT 1
      ) i ON true
     ORDER BY c.ts DESC, c.seq DESC`;
  return { text, values };
}

/** Every access to subject:key in the range, newest first. */
export async function whoAccessed(client: pg.Client, q: WhoAccessedQuery): Promise<SubjectAccess[]> {
  const key = checkKey(q.key);
  const r = await client.query(buildWhoAccessedQuery(q));
  const rows = r.rows as Record<string, unknown>[];

  // Intents older than the window (a statement that ran for days), or written elsewhere.
  const missing = rows.filter((x) => x.i_seq === null || x.i_seq === undefined).map((x) => String(x.log_id));
  if (missing.length) {
    const m = await client.query(`
      SELECT DISTINCT ON (i.log_id) i.log_id, ${INTENT_COLUMNS}
        FROM scalple_audit.records i
       WHERE i.log_id = ANY($1::text[]) AND i.record_type = 'intent'
       ORDER BY i.log_id, i.ts DESC, i.seq DESC`, [missing]);
    const byId = new Map((m.rows as Record<string, unknown>[]).map((x) => [String(x.log_id), x]));
    for (const row of rows) {
      const found = row.i_seq === null || row.i_seq === undefined ? byId.get(String(row.log_id)) : undefined;
      if (found) Object.assign(row, found);
    }
  }

  const reach = subjectTables(q.subject);
  const out: SubjectAccess[] = [];
  for (const x of rows) {
    const tables = (x.tables as string[] | null) ?? [];
    const definite = x.definite === true;
    // A possible access counts only if the statement touched the subject's table (or a table of a
    // `via` column). Without its intent record the statement is unknown: kept, to be safe.
    if (!definite && x.i_seq !== null && x.i_seq !== undefined && !tables.some((t) => reach.includes(t))) continue;
    out.push(toAccess(x, q.subject.name, key, definite));
  }
  return out;
}

function toAccess(x: Record<string, unknown>, subject: string, key: string, definite: boolean): SubjectAccess {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  const iso = (v: unknown): string | null => (v instanceof Date ? v.toISOString() : v === null || v === undefined ? null : new Date(String(v)).toISOString());
  const completedAt = iso(x.c_ts)!;
  return {
    log_id: String(x.log_id),
    ts: iso(x.i_ts) ?? completedAt,
    completed_at: completedAt,
    access: definite ? 'definite' : 'possible',
    possible_reason: definite ? null : ((x.possible_reason as string | null) ?? 'keys unknown'),
    subject,
    key,
    sub: (x.sub as string | null) ?? null,
    email: (x.email as string | null) ?? null,
    name: (x.name as string | null) ?? null,
    groups: (x.groups as string[] | null) ?? [],
    principal_kind: (x.principal_kind as string | null) ?? null,
    application: (x.application as string | null) ?? null,
    acting_for: (x.acting_for ?? null) as Json,
    statement: (x.statement as string | null) ?? null,
    params: (x.params ?? null) as Json,
    named_query: (x.named_query as string | null) ?? null,
    kinds: (x.kinds as string[] | null) ?? [],
    tables: (x.tables as string[] | null) ?? [],
    columns: (x.columns as string[] | null) ?? [],
    masked_fields: (x.masked_fields ?? null) as Json,
    reason: (x.reason as string | null) ?? null,
    grants: grantsOf(x.detail),
    decision: (x.decision as string | null) ?? null,
    rule: (x.rule as string | null) ?? null,
    policy_version: (x.policy_version as string | null) ?? null,
    db_role: (x.db_role as string | null) ?? null,
    database: (x.database as string | null) ?? null,
    client_addr: (x.client_addr as string | null) ?? null,
    application_name: (x.application_name as string | null) ?? null,
    session_id: (x.session_id as string | null) ?? null,
    rows: num(x.rows),
    sqlstate: (x.sqlstate as string | null) ?? null,
    error: (x.error as string | null) ?? null,
    duration_ms: num(x.duration_ms),
    chain_id: String(x.chain_id),
    seq: num(x.i_seq),
    completion_seq: Number(x.c_seq),
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
