// The audit store's schema, as versioned migrations recorded in scalple_audit.migrations.
//
// Why it looks like this:
// - records is partitioned by month on ts, so retention drops whole partitions (a recorded,
//   signed cut; see retention.ts) instead of deleting rows. A DEFAULT partition catches any ts
//   that has no monthly partition yet: an insert must never fail for want of a partition.
// - Append-only is enforced by the database: statement-level triggers refuse UPDATE, DELETE and
//   TRUNCATE on every table and on every partition (TRUNCATE triggers are not inherited by
//   partitions, so each partition gets its own), and the writer role is granted INSERT and SELECT
//   only. The owner (or a superuser) can still disable triggers; the keyed hash chain is what
//   catches them.
// - Future partitions are created by scalple_audit.ensure_partitions(), a SECURITY DEFINER
//   function owned by the schema owner, so the writer (INSERT/SELECT only) can keep them ahead of
//   time without holding CREATE rights.
import type pg from 'pg';
import { ConfigError, errorMessage } from '../errors.ts';
import { AuditStoreError, pgMessage, quoteIdent } from './db.ts';

export const SCHEMA = 'scalple_audit';
const MIGRATION_LOCK = 'scalple_audit.migrate';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const APPEND_ONLY_FN = `
CREATE OR REPLACE FUNCTION scalple_audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION 'scalple_audit.% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = '42501',
          HINT = 'Audit records are never updated or deleted; retention drops whole partitions with a signed cut (scalple audit retention).';
END
$fn$;
`;

function appendOnlyTrigger(table: string): string {
  return `
DROP TRIGGER IF EXISTS append_only ON scalple_audit.${table};
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON scalple_audit.${table}
  FOR EACH STATEMENT EXECUTE FUNCTION scalple_audit.refuse_change();`;
}

const ENSURE_PARTITIONS_FN = `
CREATE OR REPLACE FUNCTION scalple_audit.ensure_partitions(from_ts timestamptz, months integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  m date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
  part text;
  created integer := 0;
BEGIN
  IF months IS NULL OR months < 1 OR months > 36 THEN
    RAISE EXCEPTION 'ensure_partitions: months must be between 1 and 36';
  END IF;
  FOR i IN 1 .. months LOOP
    part := 'records_' || to_char(m, 'YYYYMM');
    IF to_regclass('scalple_audit.' || part) IS NULL THEN
      BEGIN
        EXECUTE format('CREATE TABLE scalple_audit.%I PARTITION OF scalple_audit.records FOR VALUES FROM (%L) TO (%L)',
                       part, (m::timestamp AT TIME ZONE 'UTC'), ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
        -- TRUNCATE (and statement-level) triggers are not inherited: every partition gets its own.
        EXECUTE format('CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON scalple_audit.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION scalple_audit.refuse_change()', part);
        created := created + 1;
      EXCEPTION
        WHEN check_violation THEN
          -- The default partition already holds rows of that month: they stay there (still chained).
          RAISE WARNING 'scalple_audit: partition % not created: the default partition already holds records of that month', part;
        WHEN duplicate_table THEN
          NULL; -- created concurrently by another instance
      END;
    END IF;
    m := (m + interval '1 month')::date;
  END LOOP;
  RETURN created;
END
$fn$;
REVOKE ALL ON FUNCTION scalple_audit.ensure_partitions(timestamptz, integer) FROM PUBLIC;
`;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'records, revocations, append-only triggers, monthly partitions',
    sql: `
${APPEND_ONLY_FN}

CREATE TABLE IF NOT EXISTS scalple_audit.records (
  chain_id         text        NOT NULL,
  seq              bigint      NOT NULL CHECK (seq > 0),
  ts               timestamptz NOT NULL,
  log_id           text        NOT NULL,
  record_type      text        NOT NULL CHECK (record_type IN ('intent', 'completion', 'event')),
  sub              text,
  email            text,
  name             text,
  groups           text[],
  principal_kind   text,
  application      text,
  acting_for       jsonb,
  db_role          text,
  database         text,
  client_addr      text,
  application_name text,
  session_id       text,
  statement        text,
  params           jsonb,
  kinds            text[],
  tables           text[],
  columns          text[],
  decision         text,
  rule             text,
  policy_version   text,
  reason           text,
  named_query      text,
  masked_fields    jsonb,
  rows             bigint,
  sqlstate         text,
  error            text,
  duration_ms      double precision,
  event            text,
  detail           jsonb,
  prev_hash        text        NOT NULL,
  hash             text        NOT NULL,
  PRIMARY KEY (chain_id, seq, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS scalple_audit.records_default PARTITION OF scalple_audit.records DEFAULT;

-- Search indexes. Person and table indexes cover intents only (completions carry neither): half
-- the index maintenance on the write path.
CREATE INDEX IF NOT EXISTS records_ts_idx      ON scalple_audit.records (ts);
CREATE INDEX IF NOT EXISTS records_log_id_idx  ON scalple_audit.records (log_id);
CREATE INDEX IF NOT EXISTS records_email_idx   ON scalple_audit.records (lower(email), ts) WHERE record_type = 'intent';
CREATE INDEX IF NOT EXISTS records_sub_idx     ON scalple_audit.records (sub, ts) WHERE record_type = 'intent';
CREATE INDEX IF NOT EXISTS records_tables_idx  ON scalple_audit.records USING gin (tables) WHERE record_type = 'intent';
CREATE INDEX IF NOT EXISTS records_event_idx   ON scalple_audit.records (event, ts) WHERE record_type = 'event';

-- A revocation and a restore are each a new row (the table is append-only too): the latest row
-- for a person decides. Both are also written to the chain as event records.
CREATE TABLE IF NOT EXISTS scalple_audit.revocations (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  action      text        NOT NULL CHECK (action IN ('revoke', 'restore')),
  sub         text,
  email       text,
  revoked_at  timestamptz,
  reason      text,
  revoked_by  text,
  restored_at timestamptz,
  restored_by text,
  CHECK (sub IS NOT NULL OR email IS NOT NULL),
  CHECK ((action = 'revoke') = (revoked_at IS NOT NULL AND restored_at IS NULL))
);
CREATE INDEX IF NOT EXISTS revocations_sub_idx   ON scalple_audit.revocations (sub, id);
CREATE INDEX IF NOT EXISTS revocations_email_idx ON scalple_audit.revocations (lower(email), id);

${appendOnlyTrigger('records')}
${appendOnlyTrigger('records_default')}
${appendOnlyTrigger('revocations')}
${appendOnlyTrigger('migrations')}

${ENSURE_PARTITIONS_FN}
`,
  },
  {
    version: 2,
    name: 'data subjects: one key array per completion record, GIN-indexed',
    sql: `
ALTER TABLE scalple_audit.records ADD COLUMN IF NOT EXISTS subject_keys text[];
CREATE INDEX IF NOT EXISTS records_subject_keys_idx ON scalple_audit.records USING gin (subject_keys) WHERE subject_keys IS NOT NULL;
`,
  },
  {
    version: 3,
    name: 'time-boxed role grants (break glass)',
    sql: `
CREATE TABLE IF NOT EXISTS scalple_audit.grants (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  grant_id    text        NOT NULL,
  sub         text,
  email       text,
  role        text        NOT NULL,
  reason      text        NOT NULL,
  granted_by  text        NOT NULL,
  starts_at   timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  CHECK (sub IS NOT NULL OR email IS NOT NULL),
  CHECK (expires_at > starts_at)
);
CREATE INDEX IF NOT EXISTS grants_email_idx ON scalple_audit.grants (lower(email), expires_at);
CREATE INDEX IF NOT EXISTS grants_sub_idx ON scalple_audit.grants (sub, expires_at);
${appendOnlyTrigger('grants')}
`,
  },
];

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

export interface MigrateResult {
  from: number;
  to: number;
  applied: Migration[];
}

export interface SchemaState {
  exists: boolean;
  /** 0 when the schema or its migrations table does not exist. */
  version: number;
  /** Does the connected role own the schema (directly or through membership)? */
  owned: boolean;
  owner?: string;
}

export async function schemaState(client: pg.Client): Promise<SchemaState> {
  const r = await client.query<{ owner: string; owned: boolean; has_migrations: boolean }>(
    `SELECT pg_get_userbyid(n.nspowner) AS owner, pg_has_role(n.nspowner, 'USAGE') AS owned,
            to_regclass('scalple_audit.migrations') IS NOT NULL AS has_migrations
       FROM pg_namespace n WHERE n.nspname = $1`,
    [SCHEMA],
  );
  const row = r.rows[0];
  if (!row) return { exists: false, version: 0, owned: false };
  let version = 0;
  if (row.has_migrations) {
    const v = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM scalple_audit.migrations');
    version = v.rows[0]?.v ?? 0;
  }
  return { exists: true, version, owned: row.owned, owner: row.owner };
}

/**
 * Creates or upgrades the scalple_audit schema, one transaction per run, serialised between
 * concurrent callers by an advisory lock. Idempotent: applied versions are skipped. The schema and
 * everything in it is owned by the connected role.
 */
export async function migrate(client: pg.Client): Promise<MigrateResult> {
  const enc = await client.query<{ enc: string }>('SELECT pg_encoding_to_char(encoding) AS enc FROM pg_database WHERE datname = current_database()');
  if (enc.rows[0]?.enc !== 'UTF8') {
    // Hashes are computed over text as the writer sent it; a non-UTF8 database could alter it.
    throw new ConfigError(`the audit database must use UTF8 encoding (it uses ${enc.rows[0]?.enc ?? 'unknown'}): create it with ENCODING 'UTF8'.`);
  }
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [MIGRATION_LOCK]);
    await client.query('CREATE SCHEMA IF NOT EXISTS scalple_audit');
    await client.query(`CREATE TABLE IF NOT EXISTS scalple_audit.migrations (
      version    integer     PRIMARY KEY,
      name       text        NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      applied_by text        NOT NULL DEFAULT current_user
    )`);
    const cur = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM scalple_audit.migrations');
    const from = cur.rows[0]?.v ?? 0;
    if (from > LATEST_VERSION) {
      throw new ConfigError(`the audit schema is at version ${from}, newer than this Scalple knows (${LATEST_VERSION}): upgrade Scalple.`);
    }
    const applied: Migration[] = [];
    for (const m of MIGRATIONS) {
      if (m.version <= from) continue;
      await client.query(m.sql);
      await client.query('INSERT INTO scalple_audit.migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m);
    }
    // Keep monthly partitions ahead of time (last month to two months ahead).
    await client.query(`SELECT scalple_audit.ensure_partitions(now() - interval '1 month', 4)`);
    await client.query('COMMIT');
    return { from, to: Math.max(from, LATEST_VERSION), applied };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    if (err instanceof ConfigError) throw err;
    throw new AuditStoreError(`audit schema migration failed: ${pgMessage(err)}`, err);
  }
}

/**
 * Gives the writer role exactly what the proxy needs: USAGE on the schema, INSERT and SELECT on
 * the tables (never on partitions directly), SELECT on migrations, the identity sequence, and
 * EXECUTE on ensure_partitions. Anything more it may have had is revoked.
 */
export async function grantWriter(client: pg.Client, writerRole: string): Promise<void> {
  const exists = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [writerRole]);
  if (exists.rowCount === 0) {
    throw new ConfigError(`role "${writerRole}" (the user in audit.url) does not exist: create it first, e.g. CREATE ROLE ${quoteIdent(writerRole)} LOGIN PASSWORD '…'.`);
  }
  const w = quoteIdent(writerRole);
  const statements = [
    'REVOKE ALL ON SCHEMA scalple_audit FROM PUBLIC',
    `REVOKE ALL ON ALL TABLES IN SCHEMA scalple_audit FROM ${w}`,
    `GRANT USAGE ON SCHEMA scalple_audit TO ${w}`,
    `GRANT SELECT, INSERT ON scalple_audit.records, scalple_audit.revocations, scalple_audit.grants TO ${w}`,
    `GRANT SELECT ON scalple_audit.migrations TO ${w}`,
    `GRANT USAGE ON ALL SEQUENCES IN SCHEMA scalple_audit TO ${w}`,
    `GRANT EXECUTE ON FUNCTION scalple_audit.ensure_partitions(timestamptz, integer) TO ${w}`,
  ];
  await client.query('BEGIN');
  try {
    for (const s of statements) await client.query(s);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new AuditStoreError(`granting ${writerRole} access to the audit schema failed: ${pgMessage(err)}`, err);
  }
}

export interface PartitionInfo {
  name: string;
  /** Start of the month (UTC) for monthly partitions; undefined for the default partition. */
  from?: Date;
  to?: Date;
  isDefault: boolean;
}

/** The partitions of scalple_audit.records, oldest first (default last). */
export async function listPartitions(client: pg.Client): Promise<PartitionInfo[]> {
  const r = await client.query<{ name: string; bound: string }>(
    `SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'scalple_audit.records'::regclass`,
  );
  const out: PartitionInfo[] = [];
  for (const row of r.rows) {
    if (row.bound === 'DEFAULT') {
      out.push({ name: row.name, isDefault: true });
      continue;
    }
    const m = /^records_(\d{4})(\d{2})$/.exec(row.name);
    if (!m) {
      out.push({ name: row.name, isDefault: false });
      continue;
    }
    const y = Number(m[1]);
    const mo = Number(m[2]) - 1;
    out.push({ name: row.name, from: new Date(Date.UTC(y, mo, 1)), to: new Date(Date.UTC(y, mo + 1, 1)), isDefault: false });
  }
  return out.sort((a, b) => (a.isDefault ? 1 : 0) - (b.isDefault ? 1 : 0) || (a.from?.getTime() ?? 0) - (b.from?.getTime() ?? 0));
}

export function monthPartitionName(d: Date): string {
  return `records_${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
}

/** Raises a clear error when the schema is missing or behind (for readers such as `audit log`). */
export async function requireSchema(client: pg.Client): Promise<void> {
  let state: SchemaState;
  try {
    state = await schemaState(client);
  } catch (err) {
    throw new AuditStoreError(`cannot read the audit schema: ${errorMessage(err)}`, err);
  }
  if (!state.exists || state.version === 0) {
    throw new ConfigError('the audit store has no scalple_audit schema yet: run `scalple audit init --admin-url URL --config FILE`.');
  }
  if (state.version < LATEST_VERSION) {
    throw new ConfigError(`the audit schema is at version ${state.version}, this Scalple needs ${LATEST_VERSION}: run \`scalple audit init --admin-url URL\` to migrate it.`);
  }
}

export interface InitResult {
  owner: string;
  writer?: string;
  migrated: MigrateResult;
  /** The writer is the owner: the triggers still refuse changes, but the owner can disable them. */
  writerIsOwner: boolean;
}

/**
 * `scalple audit init`: creates and migrates the schema as the admin role (its owner), then grants
 * the writer role INSERT and SELECT only.
 */
export async function initAuditSchema(client: pg.Client, writerRole?: string): Promise<InitResult> {
  const me = await client.query<{ u: string }>('SELECT current_user AS u');
  const owner = me.rows[0]!.u;
  const migrated = await migrate(client);
  const writerIsOwner = writerRole !== undefined && writerRole === owner;
  if (writerRole && !writerIsOwner) await grantWriter(client, writerRole);
  return { owner, ...(writerRole ? { writer: writerRole } : {}), migrated, writerIsOwner };
}
