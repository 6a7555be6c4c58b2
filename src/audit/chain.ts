// The keyed hash chain. Every stored record carries the previous record's hash and its own:
//
//   hash = HMAC-SHA256(chainKey, prev_hash || canonical(row))
//
// chainKey is derived from audit.hmac_key, which never reaches the database, so a superuser who
// edits a row and recomputes plain SHA-256 hashes forward still produces hashes `verify` rejects.
//
// The canonical form is computed from the *stored row* (column names, not the in-memory record),
// and every value is normalised before it is hashed to exactly what PostgreSQL will give back
// (well-formed UTF-16 without NUL, ms-precision timestamps, JSON without undefined). That way the
// writer (hashing what it is about to insert) and the verifier (hashing what it reads back) can
// never disagree on an honest row.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { AuditRecord, CompletionRecord, GrantInForce, IntentRecord, Principal } from './record.ts';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The hashed columns of scalple_audit.records, in canonical order (prev_hash and hash excluded). */
export const CHAIN_COLUMNS = [
  'chain_id', 'seq', 'ts', 'log_id', 'record_type',
  'sub', 'email', 'name', 'groups', 'principal_kind', 'application', 'acting_for',
  'db_role', 'database', 'client_addr', 'application_name', 'session_id',
  'statement', 'params', 'kinds', 'tables', 'columns',
  'decision', 'rule', 'policy_version', 'reason', 'named_query', 'masked_fields',
  'rows', 'sqlstate', 'error', 'duration_ms', 'event', 'detail',
  'subject_keys',
] as const;

export type ChainColumn = (typeof CHAIN_COLUMNS)[number];

/** A record as stored: one field per column. `ts` is an ISO string with millisecond precision. */
export interface ChainRow {
  chain_id: string;
  seq: number;
  ts: string;
  log_id: string;
  record_type: 'intent' | 'completion' | 'event';
  sub: string | null;
  email: string | null;
  name: string | null;
  groups: string[] | null;
  principal_kind: string | null;
  application: string | null;
  acting_for: Json;
  db_role: string | null;
  database: string | null;
  client_addr: string | null;
  application_name: string | null;
  session_id: string | null;
  statement: string | null;
  params: Json;
  kinds: string[] | null;
  tables: string[] | null;
  columns: string[] | null;
  decision: string | null;
  rule: string | null;
  policy_version: string | null;
  reason: string | null;
  named_query: string | null;
  masked_fields: Json;
  rows: number | null;
  sqlstate: string | null;
  error: string | null;
  duration_ms: number | null;
  event: string | null;
  detail: Json;
  /** Data subjects returned or changed ('customer:42'; 'customer:*' for a possible access). */
  subject_keys: string[] | null;
}

export interface StoredRow extends ChainRow {
  prev_hash: string;
  hash: string;
}

/** A row before the writer places it in the chain (chain id, seq and final ts come at commit). */
export type PendingRow = Omit<ChainRow, 'chain_id' | 'seq' | 'ts'>;

/** The columns after chain_id, seq and ts: what is known before a record is placed in a chain. */
export const BODY_COLUMNS = CHAIN_COLUMNS.slice(3) as readonly Exclude<ChainColumn, 'chain_id' | 'seq' | 'ts'>[];

/** prev_hash of a chain's first record. */
export const GENESIS_HASH = '0'.repeat(64);
const CANONICAL_VERSION = 'scalple-audit-v1';

// ---------------------------------------------------------------------------------------------
// Keys. Sub-keys are derived so that a chain hash can never be replayed as a checkpoint MAC.

export interface ChainKeys {
  chain: Buffer;
  checkpoint: Buffer;
}

export function deriveKeys(hmacKey: string): ChainKeys {
  const master = Buffer.from(hmacKey, 'utf8');
  return {
    chain: createHmac('sha256', master).update('scalple-audit chain v1').digest(),
    checkpoint: createHmac('sha256', master).update('scalple-audit checkpoint v1').digest(),
  };
}

/** hash = HMAC-SHA256(chainKey, prev_hash || canonical). */
export function chainHash(keys: ChainKeys, prevHash: string, canonicalText: string): string {
  return createHmac('sha256', keys.chain).update(prevHash, 'utf8').update(canonicalText, 'utf8').digest('hex');
}

/**
 * chainHash(keys, prevHash, head + body), without concatenating the body: HMAC is a stream, so
 * feeding the parts in order gives the same digest. prev_hash and the head (short) go in as one
 * update: an update() call costs about as much as hashing a hundred bytes.
 */
export function chainHashParts(keys: ChainKeys, prevHash: string, head: string, body: string): string {
  return createHmac('sha256', keys.chain).update(prevHash + head, 'utf8').update(body, 'utf8').digest('hex');
}

export function hashRow(keys: ChainKeys, prevHash: string, row: ChainRow): string {
  return chainHash(keys, prevHash, canonical(row));
}

export function macOf(key: Buffer, value: Json): string {
  return createHmac('sha256', key).update(canonicalJson(value), 'utf8').digest('hex');
}

export function sameHex(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// Canonical serialisation: a JSON array of the column values in CHAIN_COLUMNS order, objects with
// keys sorted by UTF-16 code units, explicit nulls, prefixed by a format version.

export function canonical(row: ChainRow): string {
  return canonicalHead(row.chain_id, row.seq, row.ts) + canonicalBody(row);
}

/**
 * The canonical form in two parts, so the writer can serialise the body when a record is queued
 * (off the serial commit path) and only add chain id, seq and ts when it places the record.
 */
export function canonicalHead(chainId: string, seq: number, ts: string): string {
  return `["${CANONICAL_VERSION}",${JSON.stringify(chainId)},${canonicalJson(seq)},${JSON.stringify(ts)}`;
}

/**
 * The part of canonicalHead that is the same for every record of a chain: canonicalHead(chainId,
 * seq, ts) is this + seq + ',"' + ts + '"' for an integer seq and an ISO ts (nothing to escape).
 */
export function canonicalHeadPrefix(chainId: string): string {
  return `["${CANONICAL_VERSION}",${JSON.stringify(chainId)},`;
}

export function canonicalBody(row: PendingRow): string {
  let out = '';
  for (const col of BODY_COLUMNS) out += ',' + canonicalJson(row[col] as Json);
  return out + ']';
}

export function canonicalJson(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      return Number.isFinite(v) ? JSON.stringify(v) : 'null';
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      const keys = Object.keys(v).sort();
      return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonicalJson(v[k] as Json)).join(',') + '}';
    }
    default:
      return 'null';
  }
}

// ---------------------------------------------------------------------------------------------
// Normalisation: make a value exactly what PostgreSQL (text, text[], jsonb) will hand back.

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

// eslint-disable-next-line no-control-regex
const SUSPECT = /[\u0000\uD800-\uDFFF]/;

/** PostgreSQL text cannot hold NUL, and UTF-8 cannot hold lone surrogates: both become U+FFFD. */
export function normText(s: string): string {
  if (!SUSPECT.test(s)) return s; // the common case: nothing to replace, no copy
  // eslint-disable-next-line no-control-regex
  return s.replace(LONE_SURROGATE, '\uFFFD').replace(/\u0000/g, '\uFFFD');
}

function optText(s: string | undefined | null): string | null {
  return s === undefined || s === null ? null : normText(String(s));
}

function textArray(a: readonly unknown[] | undefined | null): string[] | null {
  if (a === undefined || a === null) return null;
  return a.map((x) => normText(x === null || x === undefined ? '' : String(x)));
}

/** A JSON value as jsonb returns it: Dates as ISO strings, undefined dropped, non-finite numbers null. */
export function normJson(v: unknown, depth = 0): Json {
  if (depth > 64) return null;
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case 'string':
      return normText(v);
    case 'number':
      return Number.isFinite(v) ? (Object.is(v, -0) ? 0 : v) : null;
    case 'boolean':
      return v;
    case 'bigint':
      return v.toString();
    case 'object': {
      if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString();
      if (Buffer.isBuffer(v)) return '\\x' + v.toString('hex');
      if (Array.isArray(v)) return v.map((x) => (x === undefined || typeof x === 'function' ? null : normJson(x, depth + 1)));
      const withJson = v as { toJSON?: () => unknown };
      if (typeof withJson.toJSON === 'function') return normJson(withJson.toJSON(), depth + 1);
      const out: { [key: string]: Json } = {};
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (x === undefined || typeof x === 'function' || typeof x === 'symbol') continue;
        out[normText(k)] = normJson(x, depth + 1);
      }
      return out;
    }
    default:
      return null;
  }
}

function finiteOrNull(n: number | null | undefined): number | null {
  return typeof n === 'number' && Number.isFinite(n) ? (Object.is(n, -0) ? 0 : n) : null;
}

function principalJson(p: Principal | undefined): Json {
  if (!p) return null;
  return normJson({ kind: p.kind, sub: p.sub, email: p.email, name: p.name, groups: p.groups, application: p.application });
}

function timeOf(d: Date): number {
  const t = d instanceof Date ? d.getTime() : Number.NaN;
  return Number.isFinite(t) ? t : Date.now();
}

/** When a record happened, in ms (an invalid Date counts as now). */
export function recordTimeMs(rec: AuditRecord): number {
  return timeOf(rec.ts);
}

/** Every column null, in canonical order (one object shape for all records: fast property access). */
function blankRow(logId: string, type: PendingRow['record_type'], policyVersion: string): PendingRow {
  return {
    log_id: normText(String(logId)), record_type: type,
    sub: null, email: null, name: null, groups: null, principal_kind: null, application: null, acting_for: null,
    db_role: null, database: null, client_addr: null, application_name: null, session_id: null,
    statement: null, params: null, kinds: null, tables: null, columns: null,
    decision: null, rule: null, policy_version: normText(policyVersion), reason: null, named_query: null, masked_fields: null,
    rows: null, sqlstate: null, error: null, duration_ms: null, event: null, detail: null,
    subject_keys: null,
  };
}

/**
 * The stored form of a record (a deep, normalised copy: later changes by the caller do not reach
 * the chain). `policyVersion` fills policy_version for completions and events, which carry none.
 * The writer's RecordEncoder (below) serialises intents and completions without building this
 * row and must agree with it exactly: change both together (bench/audit-records.ts --check).
 */
export function toPendingRow(rec: AuditRecord, policyVersion: string): PendingRow {
  const row = blankRow(rec.logId, rec.type, policyVersion);
  switch (rec.type) {
    case 'intent': {
      const p = rec.principal;
      row.sub = optText(p.sub); row.email = optText(p.email); row.name = optText(p.name); row.groups = textArray(p.groups ?? []);
      row.principal_kind = optText(p.kind); row.application = optText(p.application); row.acting_for = principalJson(rec.actingFor);
      row.db_role = optText(rec.dbRole); row.database = optText(rec.database); row.client_addr = optText(rec.clientAddr);
      row.application_name = optText(rec.applicationName); row.session_id = optText(rec.sessionId);
      row.statement = optText(rec.statement); row.params = rec.params === undefined ? null : normJson(rec.params);
      row.kinds = textArray(rec.kinds ?? []); row.tables = textArray(rec.tables ?? []); row.columns = textArray(rec.columns ?? []);
      row.decision = optText(rec.decision); row.rule = optText(rec.rule); row.policy_version = optText(rec.policyVersion ?? policyVersion);
      row.reason = optText(rec.reason); row.named_query = optText(rec.namedQuery);
      row.masked_fields = rec.maskedFields === undefined ? null : normJson(rec.maskedFields);
      if (rec.grants?.length) row.detail = normJson({ grants: rec.grants.map((g) => ({ grant_id: g.grantId, role: g.role, reason: g.reason, by: g.by, until: g.until.toISOString() })) });
      return row;
    }
    case 'completion':
      row.session_id = optText(rec.sessionId);
      row.rows = finiteOrNull(rec.rows === null ? null : Math.trunc(rec.rows));
      row.sqlstate = optText(rec.sqlstate); row.error = optText(rec.error); row.duration_ms = finiteOrNull(rec.durationMs);
      if (rec.subjectKeys?.length || rec.subjectsPossible) {
        const possible = Object.keys(rec.subjectsPossible ?? {}).map((s) => `${s}:*`);
        row.subject_keys = textArray([...new Set([...(rec.subjectKeys ?? []), ...possible])].sort());
        if (rec.subjectsPossible) row.detail = normJson({ subjects_possible: rec.subjectsPossible });
      }
      return row;
    case 'event': {
      const p = rec.principal;
      if (p) {
        row.sub = optText(p.sub); row.email = optText(p.email); row.name = optText(p.name); row.groups = textArray(p.groups ?? []);
        row.principal_kind = optText(p.kind); row.application = optText(p.application);
      }
      row.event = optText(rec.event); row.detail = normJson(rec.detail ?? {});
      return row;
    }
  }
}

/** Places a pending row in a chain. */
export function placeRow(p: PendingRow, chainId: string, seq: number, tsMs: number): ChainRow {
  return { chain_id: chainId, seq, ts: new Date(tsMs).toISOString(), ...p };
}

/** A row as node-postgres returns it (int8 as string, timestamptz as Date) -> the canonical shape. */
export function rowFromDb(r: Record<string, unknown>): StoredRow {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  const txt = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
  const arr = (v: unknown): string[] | null => (Array.isArray(v) ? v.map((x) => (x === null ? '' : String(x))) : null);
  const json = (v: unknown): Json => (v === undefined ? null : (v as Json));
  const ts = r.ts instanceof Date ? r.ts.toISOString() : new Date(String(r.ts)).toISOString();
  return {
    chain_id: String(r.chain_id), seq: Number(r.seq), ts, log_id: String(r.log_id),
    record_type: String(r.record_type) as ChainRow['record_type'],
    sub: txt(r.sub), email: txt(r.email), name: txt(r.name), groups: arr(r.groups), principal_kind: txt(r.principal_kind),
    application: txt(r.application), acting_for: json(r.acting_for), db_role: txt(r.db_role), database: txt(r.database),
    client_addr: txt(r.client_addr), application_name: txt(r.application_name), session_id: txt(r.session_id),
    statement: txt(r.statement), params: json(r.params), kinds: arr(r.kinds), tables: arr(r.tables), columns: arr(r.columns),
    decision: txt(r.decision), rule: txt(r.rule), policy_version: txt(r.policy_version), reason: txt(r.reason),
    named_query: txt(r.named_query), masked_fields: json(r.masked_fields), rows: num(r.rows), sqlstate: txt(r.sqlstate),
    error: txt(r.error), duration_ms: num(r.duration_ms), event: txt(r.event), detail: json(r.detail),
    subject_keys: arr(r.subject_keys),
    prev_hash: String(r.prev_hash), hash: String(r.hash),
  };
}

/** All stored columns, for SELECTs that feed rowFromDb. */
export const ALL_COLUMNS: readonly string[] = [...CHAIN_COLUMNS, 'prev_hash', 'hash'];
export const SELECT_COLUMNS = ALL_COLUMNS.map((c) => `"${c}"`).join(', ');

// ---------------------------------------------------------------------------------------------
// COPY text format (copy.ts sends it): backslash, newline, carriage return and tab are escaped;
// NULL is \N. Here because the record encoder below produces COPY fields with the canonical form.

/** A text field in COPY text format. */
export function copyText(s: string): string {
  return /[\\\n\r\t]/.test(s) ? s.replace(/[\\\n\r\t]/g, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t')) : s;
}

/** A text[] field in COPY text format: every element quoted, so commas, braces, quotes and "NULL" stay text. */
export function copyTextArray(a: readonly string[]): string {
  return copyText('{' + a.map((x) => '"' + x.replace(/[\\"]/g, (c) => '\\' + c) + '"').join(',') + '}');
}

// ---------------------------------------------------------------------------------------------
// The writer's encoder: each record serialised once, when it is queued, into both what the chain
// hashes (canonicalBody(toPendingRow(rec))) and what COPY stores (copyBody(toPendingRow(rec))),
// without building the row. It must give exactly those two strings for every record (verify
// recomputes the canonical form from the stored row); `node --import tsx bench/audit-records.ts
// --check` compares them on awkward records. Keep it in step with toPendingRow.
//
// What repeats from one record to the next is serialised once and reused: the principal's fields
// (per Principal object), the session's (per session id), string arrays such as kinds, tables and
// columns (per array: the proxy passes the same arrays from its analysis cache), statement texts
// and the policy version. Every cache hit is checked against the current values (=== per field
// and per element), so a caller that mutates a Principal or an array in place gets a fresh
// serialisation, never a stale one.

/** What the writer keeps for a queued record. */
export interface EncodedRecord {
  readonly type: ChainRow['record_type'];
  /** log_id and session_id as stored (normalised). */
  readonly logId: string;
  readonly sessionId: string | null;
  /** canonicalBody(row): what chainHashParts hashes after canonicalHead. */
  readonly body: string;
  /** copyBody(row): the body columns as COPY text fields, tab-separated. */
  readonly copy: string;
  /**
   * The row, for the records encoded through toPendingRow (events, and values the fast path does
   * not take, such as sparse arrays). Otherwise rowOfBody(body) gives it back.
   */
  readonly row?: PendingRow;
}

/** The columns the encoder writes, in this order; if CHAIN_COLUMNS ever differs it encodes through toPendingRow. */
const ENCODER_COLUMNS = 'log_id,record_type,sub,email,name,groups,principal_kind,application,acting_for,db_role,database,client_addr,'
  + 'application_name,session_id,statement,params,kinds,tables,columns,decision,rule,policy_version,reason,named_query,masked_fields,'
  + 'rows,sqlstate,error,duration_ms,event,detail,subject_keys';
const ENCODER_MATCHES = BODY_COLUMNS.join(',') === ENCODER_COLUMNS;

// A string with none of these is its own canonical JSON (between quotes) and its own COPY field:
// JSON escapes < U+0020, '"' and '\\'; COPY escapes '\\', \\n, \\r, \\t; normText replaces NUL and
// lone surrogates (a surrogate pair takes the slow path, which gives the same result).
// eslint-disable-next-line no-control-regex
const NOT_PLAIN = /[\u0000-\u001f"\\\uD800-\uDFFF]/;

/** The COPY field of the last fragment built (fragments return their canonical JSON). */
let fragCopy = '';

/** Thrown by the fast path for a value it leaves to toPendingRow (a sparse array). */
const IRREGULAR = new Error('irregular audit record value');

/** Does a JSON value hold a sparse array (whose canonical form is not JSON)? */
function hasHole(v: Json): boolean {
  if (v === null || typeof v !== 'object') return false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (!(i in v) || hasHole(v[i]!)) return true;
    return false;
  }
  for (const k in v) if (hasHole(v[k]!)) return true;
  return false;
}

/** A text value: canonical JSON returned, COPY field in fragCopy. */
function textFrag(s: string): string {
  if (!NOT_PLAIN.test(s)) {
    fragCopy = s;
    return '"' + s + '"';
  }
  const n = normText(s);
  fragCopy = copyText(n);
  return JSON.stringify(n);
}

/** optText(v) as a fragment. */
function optTextFrag(v: unknown): string {
  if (v === undefined || v === null) {
    fragCopy = '\\N';
    return 'null';
  }
  return textFrag(typeof v === 'string' ? v : String(v));
}

/** A jsonb value (already normalised) as a fragment. */
function jsonFrag(v: Json): string {
  if (v === null) {
    fragCopy = '\\N';
    return 'null';
  }
  if (hasHole(v)) throw IRREGULAR;
  const c = canonicalJson(v);
  fragCopy = copyText(c);
  return c;
}

/** A number column (finiteOrNull already applied) as a fragment. */
function numFrag(n: number | null): string {
  if (n === null) {
    fragCopy = '\\N';
    return 'null';
  }
  const s = String(n); // JSON.stringify and String agree on finite numbers
  fragCopy = s;
  return s;
}

function isPrimitive(v: unknown): boolean {
  return v === null || (typeof v !== 'object' && typeof v !== 'function');
}

/** textArray(a) as a fragment, computed (no cache). */
function textArrayFragNew(a: readonly unknown[]): string {
  const t = textArray(a)!;
  if (!Array.isArray(t)) throw IRREGULAR; // an array-like with its own map()
  let plain = true;
  let c = '';
  for (let i = 0; i < t.length; i++) {
    const x = t[i];
    if (x === undefined) throw IRREGULAR; // a hole in a sparse array (textArray keeps it)
    if (NOT_PLAIN.test(x)) {
      plain = false;
      c += (i ? ',' : '') + JSON.stringify(x);
    } else {
      c += (i ? ',"' : '"') + x + '"';
    }
  }
  // Plain elements read the same in a JSON array and in a quoted text[] literal.
  fragCopy = plain ? '{' + c + '}' : copyTextArray(t);
  return '[' + c + ']';
}

interface ArrayFrag {
  /** The elements when serialised (all primitives). */
  items: unknown[];
  canon: string;
  copy: string;
}

function sameItems(a: readonly unknown[], items: readonly unknown[]): boolean {
  if (a.length !== items.length) return false;
  for (let i = 0; i < items.length; i++) if (a[i] !== items[i]) return false;
  return true;
}

interface PrincipalFrag {
  kind: unknown; sub: unknown; email: unknown; name: unknown; application: unknown; groups: unknown;
  /** groups' elements when serialised (groups is an array of primitives, or undefined/null). */
  groupItems: unknown[] | undefined;
  /** sub, email, name, groups, principal_kind, application. */
  canon: string;
  copy: string;
  /** acting_for, when this principal acts as one (computed on first use). */
  actingCanon?: string;
  actingCopy?: string;
}

interface SessionFrag {
  /** session_id as stored. */
  sid: string;
  sidCanon: string;
  sidCopy: string;
  dbRole: unknown; database: unknown; clientAddr: unknown; applicationName: unknown;
  /** db_role, database, client_addr, application_name, session_id ('' until an intent needs it). */
  canon: string;
  copy: string;
}

interface StringFrag {
  canon: string;
  copy: string;
}

const MAX_SESSIONS = 4096;
/** Statement texts remembered, and the longest remembered (a bulk INSERT's text is not kept). */
const MAX_STATEMENTS = 1024;
const MAX_STATEMENT_LENGTH = 4096;
const NULLS = (n: number) => ({ canon: ',null'.repeat(n), copy: '\t\\N'.repeat(n) });
const NULL5 = NULLS(5);
const NULL11 = NULLS(11);
const NULL3 = NULLS(3);
const NULL2 = NULLS(2);

/** optText(v) as a fragment, remembered for the last value (the policy version). */
class OneValue {
  private raw: unknown = undefined;
  private f: StringFrag | undefined;

  frag(v: unknown): StringFrag {
    if (this.f === undefined || v !== this.raw || !isPrimitive(v)) {
      const canon = optTextFrag(v);
      this.f = { canon, copy: fragCopy };
      this.raw = v;
    }
    return this.f;
  }
}

export class RecordEncoder {
  private readonly arrays = new WeakMap<object, ArrayFrag>();
  private readonly principals = new WeakMap<object, PrincipalFrag>();
  private readonly sessions = new Map<string, SessionFrag>();
  private readonly statements = new Map<string, StringFrag>();
  private readonly intentPv = new OneValue();
  private readonly completionPv = new OneValue();

  /** The record as queued: canonical body and COPY fields, from one pass over it. */
  encode(rec: AuditRecord, policyVersion: string): EncodedRecord {
    if (!ENCODER_MATCHES || typeof policyVersion !== 'string' || (rec.type !== 'intent' && rec.type !== 'completion')) return encodeRow(rec, policyVersion);
    try {
      return rec.type === 'intent' ? this.intent(rec, policyVersion) : this.completion(rec, policyVersion);
    } catch (err) {
      if (err === IRREGULAR) return encodeRow(rec, policyVersion);
      throw err;
    }
  }

  private intent(rec: IntentRecord, policyVersion: string): EncodedRecord {
    const rawLogId = String(rec.logId);
    let c = ',' + textFrag(rawLogId) + ',"intent"';
    const logId = fragCopy === rawLogId ? rawLogId : normText(rawLogId);
    let p = fragCopy + '\tintent';
    const pr = this.principal(rec.principal);
    c += pr.canon;
    p += pr.copy;
    if (rec.actingFor) {
      const a = this.actingFor(rec.actingFor);
      c += ',' + a.canon;
      p += '\t' + a.copy;
    } else {
      c += ',null';
      p += '\t\\N';
    }
    const s = this.session(rec);
    c += s.canon;
    p += s.copy;
    const st = this.statement(rec.statement);
    c += ',' + st.canon;
    p += '\t' + st.copy;
    c += ',' + paramsFrag(rec.params);
    p += '\t' + fragCopy;
    c += ',' + this.textArrayFrag(rec.kinds ?? []);
    p += '\t' + fragCopy;
    c += ',' + this.textArrayFrag(rec.tables ?? []);
    p += '\t' + fragCopy;
    c += ',' + this.textArrayFrag(rec.columns ?? []);
    p += '\t' + fragCopy;
    c += ',' + optTextFrag(rec.decision);
    p += '\t' + fragCopy;
    c += ',' + optTextFrag(rec.rule);
    p += '\t' + fragCopy;
    const pv = this.intentPv.frag(rec.policyVersion ?? policyVersion);
    c += ',' + pv.canon;
    p += '\t' + pv.copy;
    c += ',' + optTextFrag(rec.reason);
    p += '\t' + fragCopy;
    c += ',' + optTextFrag(rec.namedQuery);
    p += '\t' + fragCopy;
    c += ',' + (rec.maskedFields === undefined ? optTextFrag(null) : jsonFrag(normJson(rec.maskedFields)));
    p += '\t' + fragCopy;
    c += NULL5.canon; // rows, sqlstate, error, duration_ms, event
    p += NULL5.copy;
    c += ',' + (rec.grants?.length ? jsonFrag(grantsDetail(rec.grants)) : optTextFrag(null)); // detail
    p += '\t' + fragCopy;
    c += ',null]'; // subject_keys
    p += '\t\\N';
    return { type: 'intent', logId, sessionId: s.sessionId, body: c, copy: p };
  }

  private completion(rec: CompletionRecord, policyVersion: string): EncodedRecord {
    const rawLogId = String(rec.logId);
    let c = ',' + textFrag(rawLogId) + ',"completion"';
    const logId = fragCopy === rawLogId ? rawLogId : normText(rawLogId);
    let p = fragCopy + '\tcompletion';
    c += NULL11.canon; // sub … application_name
    p += NULL11.copy;
    let sessionId: string | null;
    const sid = rec.sessionId;
    if (typeof sid === 'string') {
      const s = this.sessionFrag(sid);
      sessionId = s.sid;
      c += ',' + s.sidCanon;
      p += '\t' + s.sidCopy;
    } else {
      c += ',' + optTextFrag(sid);
      p += '\t' + fragCopy;
      sessionId = sid === undefined || sid === null ? null : normText(String(sid));
    }
    c += NULL5.canon + NULL2.canon; // statement … columns, decision, rule
    p += NULL5.copy + NULL2.copy;
    const pv = this.completionPv.frag(policyVersion);
    c += ',' + pv.canon;
    p += '\t' + pv.copy;
    c += NULL3.canon; // reason, named_query, masked_fields
    p += NULL3.copy;
    c += ',' + numFrag(finiteOrNull(rec.rows === null ? null : Math.trunc(rec.rows)));
    p += '\t' + fragCopy;
    c += ',' + optTextFrag(rec.sqlstate);
    p += '\t' + fragCopy;
    c += ',' + optTextFrag(rec.error);
    p += '\t' + fragCopy;
    c += ',' + numFrag(finiteOrNull(rec.durationMs));
    p += '\t' + fragCopy;
    c += ',null'; // event
    p += '\t\\N';
    if (rec.subjectKeys?.length || rec.subjectsPossible) {
      const possible = Object.keys(rec.subjectsPossible ?? {}).map((s) => `${s}:*`);
      const keys = [...new Set([...(rec.subjectKeys ?? []), ...possible])].sort();
      c += ',' + (rec.subjectsPossible ? jsonFrag(normJson({ subjects_possible: rec.subjectsPossible })) : optTextFrag(null));
      p += '\t' + fragCopy;
      c += ',' + textArrayFragNew(keys) + ']';
      p += '\t' + fragCopy;
    } else {
      c += ',null,null]'; // detail, subject_keys
      p += '\t\\N\t\\N';
    }
    return { type: 'completion', logId, sessionId, body: c, copy: p };
  }

  /** sub, email, name, groups, principal_kind, application: ',' + … each. */
  private principal(pr: Principal): PrincipalFrag {
    if (typeof pr !== 'object' || pr === null) return principalFrag(pr);
    const hit = this.principals.get(pr);
    if (hit && samePrincipal(pr, hit)) return hit;
    const f = principalFrag(pr);
    if (f.groupItems !== undefined || f.groups === undefined || f.groups === null) {
      if (isPrimitive(f.kind) && isPrimitive(f.sub) && isPrimitive(f.email) && isPrimitive(f.name) && isPrimitive(f.application)) this.principals.set(pr, f);
    }
    return f;
  }

  /** acting_for: principalJson(p) as a fragment. */
  private actingFor(pr: Principal): StringFrag {
    const f = this.principal(pr);
    if (f.actingCanon === undefined || this.principals.get(pr) !== f) {
      const canon = jsonFrag(principalJson(pr));
      f.actingCanon = canon;
      f.actingCopy = fragCopy;
    }
    return { canon: f.actingCanon, copy: f.actingCopy! };
  }

  /** db_role … session_id: ',' + … each; and the stored session id. */
  private session(rec: IntentRecord): StringFrag & { sessionId: string | null } {
    const sid = rec.sessionId;
    if (typeof sid !== 'string') {
      let canon = ',' + optTextFrag(rec.dbRole);
      let copy = '\t' + fragCopy;
      canon += ',' + optTextFrag(rec.database);
      copy += '\t' + fragCopy;
      canon += ',' + optTextFrag(rec.clientAddr);
      copy += '\t' + fragCopy;
      canon += ',' + optTextFrag(rec.applicationName);
      copy += '\t' + fragCopy;
      canon += ',' + optTextFrag(sid);
      copy += '\t' + fragCopy;
      return { canon, copy, sessionId: sid === undefined || sid === null ? null : normText(String(sid)) };
    }
    const s = this.sessionFrag(sid);
    const { dbRole, database, clientAddr, applicationName } = rec;
    if (s.canon === '' || s.dbRole !== dbRole || s.database !== database || s.clientAddr !== clientAddr || s.applicationName !== applicationName) {
      let canon = ',' + optTextFrag(dbRole);
      let copy = '\t' + fragCopy;
      canon += ',' + optTextFrag(database);
      copy += '\t' + fragCopy;
      canon += ',' + optTextFrag(clientAddr);
      copy += '\t' + fragCopy;
      canon += ',' + optTextFrag(applicationName);
      copy += '\t' + fragCopy;
      canon += ',' + s.sidCanon;
      copy += '\t' + s.sidCopy;
      if (!(isPrimitive(dbRole) && isPrimitive(database) && isPrimitive(clientAddr) && isPrimitive(applicationName))) {
        return { canon, copy, sessionId: s.sid };
      }
      s.dbRole = dbRole;
      s.database = database;
      s.clientAddr = clientAddr;
      s.applicationName = applicationName;
      s.canon = canon;
      s.copy = copy;
    }
    return { canon: s.canon, copy: s.copy, sessionId: s.sid };
  }

  private sessionFrag(sid: string): SessionFrag {
    let s = this.sessions.get(sid);
    if (!s) {
      const sidCanon = textFrag(sid);
      s = { sid: normText(sid), sidCanon, sidCopy: fragCopy, dbRole: undefined, database: undefined, clientAddr: undefined, applicationName: undefined, canon: '', copy: '' };
      if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
      this.sessions.set(sid, s);
    }
    return s;
  }

  private statement(text: unknown): StringFrag {
    if (typeof text !== 'string' || text.length > MAX_STATEMENT_LENGTH) {
      const canon = optTextFrag(text);
      return { canon, copy: fragCopy };
    }
    let f = this.statements.get(text);
    if (!f) {
      const canon = textFrag(text);
      f = { canon, copy: fragCopy };
      if (this.statements.size >= MAX_STATEMENTS) this.statements.delete(this.statements.keys().next().value!);
      this.statements.set(text, f);
    }
    return f;
  }

  /** textArray(a) as a fragment (canonical returned, COPY in fragCopy), cached per array. */
  private textArrayFrag(a: readonly unknown[]): string {
    const hit = this.arrays.get(a);
    if (hit && sameItems(a, hit.items)) {
      fragCopy = hit.copy;
      return hit.canon;
    }
    const canon = textArrayFragNew(a);
    if (Array.isArray(a) && a.every(isPrimitive)) this.arrays.set(a, { items: a.slice(), canon, copy: fragCopy });
    return canon;
  }
}

function samePrincipal(pr: Principal, f: PrincipalFrag): boolean {
  if (pr.sub !== f.sub || pr.email !== f.email || pr.name !== f.name || pr.kind !== f.kind || pr.application !== f.application) return false;
  const g = pr.groups;
  if (g !== f.groups) return false;
  return f.groupItems === undefined || sameItems(g, f.groupItems);
}

function principalFrag(pr: Principal): PrincipalFrag {
  const { kind, sub, email, name, application, groups } = pr;
  let canon = ',' + optTextFrag(sub);
  let copy = '\t' + fragCopy;
  canon += ',' + optTextFrag(email);
  copy += '\t' + fragCopy;
  canon += ',' + optTextFrag(name);
  copy += '\t' + fragCopy;
  canon += ',' + textArrayFragNew(groups ?? []);
  copy += '\t' + fragCopy;
  canon += ',' + optTextFrag(kind);
  copy += '\t' + fragCopy;
  canon += ',' + optTextFrag(application);
  copy += '\t' + fragCopy;
  const groupItems = Array.isArray(groups) && groups.every(isPrimitive) ? groups.slice() : undefined;
  return { kind, sub, email, name, application, groups, groupItems, canon, copy };
}

/** params: normJson(params) as a fragment; arrays of strings and nulls (the usual) without normJson. */
function paramsFrag(params: unknown): string {
  if (params === undefined) return optTextFrag(null);
  if (!Array.isArray(params)) return jsonFrag(normJson(params));
  let c = '[';
  let plain = true;
  for (let i = 0; i < params.length; i++) {
    const x: unknown = params[i];
    if (i) c += ',';
    if (typeof x === 'string') {
      if (NOT_PLAIN.test(x)) {
        plain = false;
        c += JSON.stringify(normText(x));
      } else {
        c += '"' + x + '"';
      }
    } else if (x === null || x === undefined) {
      if (x === undefined && !(i in params)) throw IRREGULAR;
      c += 'null';
    } else {
      return jsonFrag(normJson(params));
    }
  }
  c += ']';
  // Plain strings have no backslash: the COPY field is the JSON text itself.
  fragCopy = plain ? c : copyText(c);
  return c;
}

function grantsDetail(grants: readonly GrantInForce[]): Json {
  return normJson({ grants: grants.map((g) => ({ grant_id: g.grantId, role: g.role, reason: g.reason, by: g.by, until: g.until.toISOString() })) });
}

/** Any record, through toPendingRow (events; and the fallback if the columns ever change). */
function encodeRow(rec: AuditRecord, policyVersion: string): EncodedRecord {
  const row = toPendingRow(rec, policyVersion);
  return { type: row.record_type, logId: row.log_id, sessionId: row.session_id, body: canonicalBody(row), copy: copyFields(row), row };
}

const ARRAY_COLUMNS: ReadonlySet<string> = new Set(['groups', 'kinds', 'tables', 'columns', 'subject_keys']);
const JSON_COLUMNS: ReadonlySet<string> = new Set(['acting_for', 'params', 'masked_fields', 'detail']);

/** The body columns of a row as COPY text fields, tab-separated (no leading or trailing tab). */
export function copyFields(row: PendingRow): string {
  let out = '';
  for (let i = 0; i < BODY_COLUMNS.length; i++) {
    const col = BODY_COLUMNS[i]!;
    const v = row[col];
    let f: string;
    if (v === null) f = '\\N';
    else if (ARRAY_COLUMNS.has(col)) f = copyTextArray(v as string[]);
    else if (JSON_COLUMNS.has(col)) f = copyText(canonicalJson(v as Json));
    else if (typeof v === 'number') f = String(v);
    else f = copyText(String(v));
    out += i === 0 ? f : '\t' + f;
  }
  return out;
}

/** The row of an encoded record (its canonical body is the JSON array of the row's values). */
export function rowOf(rec: EncodedRecord): PendingRow {
  if (rec.row) return rec.row;
  const values = JSON.parse('[' + rec.body.slice(1)) as Json[];
  const row: Record<string, Json> = {};
  for (let i = 0; i < BODY_COLUMNS.length; i++) row[BODY_COLUMNS[i]!] = values[i] ?? null;
  return row as unknown as PendingRow;
}

// ---------------------------------------------------------------------------------------------
// Timestamps: the stored ts is new Date(ms).toISOString(); records of the same second share the
// formatted prefix.

let isoSecond = Number.NaN;
let isoPrefix = '';
let isoLastMs = Number.NaN;
let isoLast = '';

/** new Date(ms).toISOString(), cheaper when consecutive calls fall in the same second. */
export function isoTime(ms: number): string {
  if (ms === isoLastMs) return isoLast;
  if (!Number.isInteger(ms) || ms < -8.6e15 || ms > 8.6e15) return new Date(ms).toISOString();
  let frac = ms % 1000; // exact, unlike a floating-point ms / 1000
  if (frac < 0) frac += 1000;
  const sec = (ms - frac) / 1000;
  if (sec !== isoSecond) {
    const iso = new Date(sec * 1000).toISOString();
    isoPrefix = iso.slice(0, iso.length - 4); // up to and including the '.'
    isoSecond = sec;
  }
  isoLast = isoPrefix + (frac < 10 ? '00' : frac < 100 ? '0' : '') + frac + 'Z';
  isoLastMs = ms;
  return isoLast;
}
