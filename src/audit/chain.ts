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
import type { AuditRecord, Principal } from './record.ts';

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
