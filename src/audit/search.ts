// Log search: statements (intent records) joined with their completion by log_id, newest first.
// Filters use the indexes the schema keeps for them: lower(email) / sub, ts, and the GIN index on
// tables (for a schema-qualified name).
import type pg from 'pg';
import { ScalpleError } from '../errors.ts';
import type { Json } from './chain.ts';

export interface LogFilter {
  /** Email (case-insensitive) or sub of the person. */
  user?: string;
  /** Table read or written: "schema.table", or "table" in any schema. */
  table?: string;
  since?: Date;
  until?: Date;
  limit?: number;
}

/** Who ran a statement, as every audit answer reports it (the intent record's principal columns). */
export interface RecordPerson {
  sub: string | null;
  email: string | null;
  name: string | null;
  groups: string[];
  principal_kind: string | null;
  application: string | null;
  acting_for: Json;
}

export interface LogEntry extends RecordPerson {
  log_id: string;
  ts: string;
  db_role: string | null;
  database: string | null;
  client_addr: string | null;
  application_name: string | null;
  session_id: string | null;
  statement: string | null;
  params: Json;
  kinds: string[];
  tables: string[];
  columns: string[];
  decision: string | null;
  rule: string | null;
  policy_version: string | null;
  reason: string | null;
  named_query: string | null;
  masked_fields: Json;
  /** From the completion record; null when the statement has not completed (or failed before rows). */
  rows: number | null;
  sqlstate: string | null;
  error: string | null;
  duration_ms: number | null;
  completed_at: string | null;
  chain_id: string;
  seq: number;
}

/** "30d", "12h", "90m", "2w" before now, or an ISO date/time. */
export function parseTime(s: string, flag: string, now = new Date()): Date {
  const rel = /^(\d+)\s*([smhdw])$/.exec(s.trim());
  if (rel) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[rel[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    return new Date(now.getTime() - Number(rel[1]) * unit);
  }
  const d = new Date(s);
  if (!/^\d{4}-\d{2}-\d{2}/.test(s.trim()) || Number.isNaN(d.getTime())) {
    throw new ScalpleError('USAGE', `${flag} must be an ISO date or time (2024-03-01, 2024-03-01T09:00:00Z) or a duration like 30d, 12h (got "${s}").`);
  }
  return d;
}

export async function searchLog(client: pg.Client, f: LogFilter): Promise<LogEntry[]> {
  const where: string[] = [`i.record_type = 'intent'`];
  const params: unknown[] = [];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  if (f.user) {
    const v = p(f.user);
    where.push(`(lower(i.email) = lower(${v}) OR i.sub = ${v})`);
  }
  if (f.table) {
    const v = p(f.table);
    where.push(f.table.includes('.')
      ? `i.tables @> ARRAY[${v}::text]`
      : `EXISTS (SELECT 1 FROM unnest(i.tables) t WHERE t = ${v}::text OR right(t, length(${v}::text) + 1) = '.' || ${v}::text)`);
  }
  if (f.since) where.push(`i.ts >= ${p(f.since.toISOString())}::timestamptz`);
  if (f.until) where.push(`i.ts <= ${p(f.until.toISOString())}::timestamptz`);
  const limit = p(f.limit ?? 100);
  const r = await client.query(`
    SELECT i.log_id, i.ts, i.sub, i.email, i.name, i.groups, i.principal_kind, i.application, i.acting_for,
           i.db_role, i.database, i.client_addr, i.application_name, i.session_id, i.statement, i.params,
           i.kinds, i.tables, i.columns, i.decision, i.rule, i.policy_version, i.reason, i.named_query,
           i.masked_fields, c.rows, c.sqlstate, c.error, c.duration_ms, c.ts AS completed_at, i.chain_id, i.seq
      FROM scalple_audit.records i
      LEFT JOIN LATERAL (
        SELECT c.rows, c.sqlstate, c.error, c.duration_ms, c.ts
          FROM scalple_audit.records c
         WHERE c.log_id = i.log_id AND c.record_type = 'completion' AND c.chain_id = i.chain_id AND c.ts >= i.ts
         ORDER BY c.seq LIMIT 1
      ) c ON true
     WHERE ${where.join(' AND ')}
     ORDER BY i.ts DESC, i.seq DESC
     LIMIT ${limit}::bigint`, params);
  return r.rows.map((x: Record<string, unknown>) => ({
    log_id: String(x.log_id),
    ts: (x.ts as Date).toISOString(),
    sub: x.sub as string | null,
    email: x.email as string | null,
    name: x.name as string | null,
    groups: (x.groups as string[] | null) ?? [],
    principal_kind: x.principal_kind as string | null,
    application: x.application as string | null,
    acting_for: (x.acting_for ?? null) as Json,
    db_role: x.db_role as string | null,
    database: x.database as string | null,
    client_addr: x.client_addr as string | null,
    application_name: x.application_name as string | null,
    session_id: x.session_id as string | null,
    statement: x.statement as string | null,
    params: (x.params ?? null) as Json,
    kinds: (x.kinds as string[] | null) ?? [],
    tables: (x.tables as string[] | null) ?? [],
    columns: (x.columns as string[] | null) ?? [],
    decision: x.decision as string | null,
    rule: x.rule as string | null,
    policy_version: x.policy_version as string | null,
    reason: x.reason as string | null,
    named_query: x.named_query as string | null,
    masked_fields: (x.masked_fields ?? null) as Json,
    rows: x.rows === null || x.rows === undefined ? null : Number(x.rows),
    sqlstate: x.sqlstate as string | null,
    error: x.error as string | null,
    duration_ms: x.duration_ms === null || x.duration_ms === undefined ? null : Number(x.duration_ms),
    completed_at: x.completed_at instanceof Date ? x.completed_at.toISOString() : null,
    chain_id: String(x.chain_id),
    seq: Number(x.seq),
  }));
}
