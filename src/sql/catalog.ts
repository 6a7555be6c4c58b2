// A live cache of the database catalog: every relation (tables, views, materialized views, foreign
// and partitioned tables) outside the system schemas, plus pg_catalog and information_schema, with
// their ordered columns; for user views and materialized views, their definition and what
// pg_depend says they read. Loaded in one query; refreshed after DDL (`invalidate()`) and on a TTL.
// Each load is an immutable CatalogSnapshot with a generation number, so results derived from it
// (resolve.ts) can be cached per generation.
import { ScalpleError, errorMessage } from '../errors.ts';

/** What the catalog needs from the database: `pg.Pool`, `pg.Client` and `pg.PoolClient` all fit. */
export interface Queryable {
  query(text: string): Promise<{ rows: unknown[] }>;
}

export type RelKindCode = 'r' | 'v' | 'm' | 'f' | 'p';
export type RelKind = 'table' | 'view' | 'materialized view' | 'foreign table' | 'partitioned table';

export interface CatalogColumn {
  readonly name: string;
  readonly attnum: number;
  readonly typeOid: number;
  /** format_type(): 'integer', 'character varying(200)', 'date'… */
  readonly typeName: string;
  /**
   * The column's collation compares bytes for equality (true also for types without collation);
   * false for a nondeterministic collation ('und-u-ks-level2': 'A' = 'a'); absent when not loaded.
   */
  readonly deterministic?: boolean;
}

export interface CatalogRelation {
  readonly oid: number;
  /** The real schema name (a session's temporary schema is pg_temp_N). */
  readonly schema: string;
  readonly name: string;
  readonly relkind: RelKindCode;
  readonly kind: RelKind;
  readonly temp: boolean;
  /** In pg_catalog or information_schema. */
  readonly system: boolean;
  /** Ordered by attnum; dropped columns excluded. */
  readonly columns: readonly CatalogColumn[];
  readonly columnByName: ReadonlyMap<string, CatalogColumn>;
  /** pg_get_viewdef() for user views and materialized views, else null. */
  readonly definition: string | null;
  /**
   * For user views and materialized views: what their rewrite rule depends on in pg_depend — the
   * relations (attnum 0) and columns (attnum > 0) the definition reads, by OID. The database's own
   * account, used to cross-check (and as a fallback for) the per-column lineage in resolve.ts.
   */
  readonly dependsOn: readonly { readonly oid: number; readonly attnum: number }[];
}

/** search_path entries resolved to existing schemas, in lookup order (implicit pg_temp and pg_catalog included). */
export interface EffectivePath {
  readonly key: string;
  readonly schemas: readonly string[];
  /** Where an unqualified CREATE would put an object: the first existing explicit schema ('pg_temp' when that comes first). */
  readonly creation: string;
}

export const DEFAULT_SEARCH_PATH: readonly string[] = Object.freeze(['$user', 'public']);

const SYSTEM_SCHEMAS = new Set(['pg_catalog', 'information_schema']);
const KINDS: Record<RelKindCode, RelKind> = { r: 'table', v: 'view', m: 'materialized view', f: 'foreign table', p: 'partitioned table' };

let snapshotUid = 0;

/** One load of the catalog. Immutable. */
export class CatalogSnapshot {
  /** Unique across every catalog in the process (cache keys). */
  readonly uid: number;
  readonly relations: readonly CatalogRelation[];
  readonly schemas: ReadonlySet<string>;
  private readonly bySchema = new Map<string, Map<string, CatalogRelation>>();
  private readonly byOid = new Map<number, CatalogRelation>();
  private readonly paths = new Map<string, EffectivePath>();

  constructor(
    /** Increases by one with every load of the same Catalog. */
    readonly generation: number,
    /** When the load finished (the Catalog's clock, ms). */
    readonly loadedAt: number,
    /** The role the catalog was read as: what "$user" means in search_path. */
    readonly currentUser: string,
    /** The loading session's temporary schema (pg_temp_N), if it has one. */
    readonly tempSchema: string | null,
    /** current_schemas(true) of the loading session: how names in view definitions resolve. */
    readonly loadSearchPath: readonly string[],
    schemas: Iterable<string>,
    relations: readonly CatalogRelation[],
    /**
     * Names of objects defined outside pg_catalog and information_schema, as the proxy needs them:
     * 'function f' for every function (a view that calls one may read anything); 'operator ||' for
     * every operator (an extension's `text || ltree` would take `||` over, and parse the value);
     * 'user operator ###' for operators implemented in SQL, PL/pgSQL… (code that may run queries);
     * 'type text' for types named like the text types (they would take over an unqualified `::text`).
     */
    readonly shadows: ReadonlySet<string> = new Set(),
  ) {
    this.uid = ++snapshotUid;
    this.schemas = new Set(schemas);
    this.relations = relations;
    for (const r of relations) {
      let m = this.bySchema.get(r.schema);
      if (!m) {
        m = new Map();
        this.bySchema.set(r.schema, m);
      }
      m.set(r.name, r);
      this.byOid.set(r.oid, r);
    }
  }

  /** The relation `schema.name` (real schema name; 'pg_temp' means the loading session's temp schema). */
  relation(schema: string, name: string): CatalogRelation | undefined {
    const s = schema === 'pg_temp' ? this.tempSchema : schema;
    return s === null ? undefined : this.bySchema.get(s)?.get(name);
  }

  relationByOid(oid: number): CatalogRelation | undefined {
    return this.byOid.get(oid);
  }

  /** A column by attribute number (RowDescription gives table OID + attnum). */
  columnByAttnum(oid: number, attnum: number): { relation: CatalogRelation; column: CatalogColumn } | undefined {
    const relation = this.byOid.get(oid);
    const column = relation?.columns.find((c) => c.attnum === attnum);
    return relation && column ? { relation, column } : undefined;
  }

  /** Resolves a relation name as PostgreSQL would: schema-qualified, or the first match along the search path. */
  lookup(schema: string | null, name: string, searchPath: readonly string[] | EffectivePath = DEFAULT_SEARCH_PATH): CatalogRelation | undefined {
    if (schema !== null) return this.relation(schema, name);
    const path = isEffectivePath(searchPath) ? searchPath : this.effectivePath(searchPath);
    for (const s of path.schemas) {
      const r = this.bySchema.get(s)?.get(name);
      if (r) return r;
    }
    return undefined;
  }

  /**
   * The schemas a search_path means here: "$user" is the catalog's role, nonexistent schemas are
   * skipped, the temporary schema is searched first and pg_catalog next unless listed explicitly.
   */
  effectivePath(searchPath: readonly string[]): EffectivePath {
    const key = searchPath.join(',');
    const cached = this.paths.get(key);
    if (cached) return cached;
    const explicit: string[] = [];
    let sawTemp = false;
    let sawCatalog = false;
    let creation: string | undefined;
    for (const raw of searchPath) {
      let s = raw.trim();
      if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) s = s.slice(1, -1).replace(/""/g, '"');
      if (s === '$user') s = this.currentUser;
      if (s === 'pg_temp' || (this.tempSchema !== null && s === this.tempSchema)) {
        sawTemp = true;
        creation ??= 'pg_temp';
        if (this.tempSchema) explicit.push(this.tempSchema);
        continue;
      }
      if (s === 'pg_catalog') sawCatalog = true;
      if (!this.schemas.has(s)) continue;
      explicit.push(s);
      if (s !== 'pg_catalog') creation ??= s;
    }
    const schemas = [...(!sawTemp && this.tempSchema ? [this.tempSchema] : []), ...(!sawCatalog ? ['pg_catalog'] : []), ...explicit];
    const p: EffectivePath = { key, schemas, creation: creation ?? 'public' };
    if (this.paths.size > 256) this.paths.clear();
    this.paths.set(key, p);
    return p;
  }

  /** Schema name as reported in access lists: a temporary schema is 'pg_temp'. */
  displaySchema(schema: string): string {
    return schema === this.tempSchema || /^pg_temp_\d+$/.test(schema) ? 'pg_temp' : schema;
  }

  /** `schema.name` as reported in access lists. */
  qualifiedName(rel: CatalogRelation): string {
    return `${this.displaySchema(rel.schema)}.${rel.name}`;
  }
}

export function isEffectivePath(p: unknown): p is EffectivePath {
  return typeof p === 'object' && p !== null && !Array.isArray(p) && 'schemas' in p && 'creation' in p;
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/**
 * One query, one row: the session facts name resolution needs, every schema, and every relation
 * with its columns (and, for user views/matviews, definition and pg_depend dependencies) as JSON.
 * Other sessions' temporary schemas and TOAST are left out.
 */
export const CATALOG_QUERY = `
SELECT current_user::text AS current_user,
       array_to_json(current_schemas(true))::text AS search_path,
       CASE WHEN pg_my_temp_schema() = 0 THEN NULL ELSE pg_my_temp_schema()::regnamespace::text END AS temp_schema,
       (SELECT coalesce(json_agg(n.nspname), '[]')::text FROM pg_namespace n
         WHERE (n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%') OR n.oid = pg_my_temp_schema()) AS schemas,
       (SELECT coalesce(json_agg(json_build_array(
                  c.oid, n.nspname, c.relname, c.relkind,
                  (SELECT coalesce(json_agg(json_build_array(a.attname, a.attnum, a.atttypid, format_type(a.atttypid, a.atttypmod), coalesce(co.collisdeterministic, true)) ORDER BY a.attnum), '[]')
                     FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                  CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') THEN pg_get_viewdef(c.oid) END,
                  CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') THEN
                    (SELECT coalesce(json_agg(DISTINCT jsonb_build_array(d.refobjid, d.refobjsubid)), '[]')
                       FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                      WHERE r.ev_class = c.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> c.oid) END
               ) ORDER BY c.oid), '[]')::text
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
           AND ((n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%') OR n.oid = pg_my_temp_schema())) AS relations,
       (SELECT coalesce(json_agg(DISTINCT s.x), '[]')::text FROM (
          SELECT CASE WHEN l.lanname IN ('c', 'internal') THEN 'operator ' ELSE 'user operator ' END || o.oprname AS x
            FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
            JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_language l ON l.oid = p.prolang
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          UNION ALL
          SELECT 'operator ' || o.oprname FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          UNION ALL
          SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          UNION ALL
          SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND t.typname IN ('text', 'varchar', 'bpchar')) s) AS shadows`;

interface CatalogRow {
  current_user: string;
  search_path: string;
  temp_schema: string | null;
  schemas: string;
  relations: string;
  /** JSON array of names (see CatalogSnapshot.shadows); absent from rows of older queries. */
  shadows?: string | null;
}

function isCatalogRow(r: unknown): r is CatalogRow {
  if (typeof r !== 'object' || r === null) return false;
  const o = r as Record<string, unknown>;
  return typeof o.current_user === 'string' && typeof o.search_path === 'string' && typeof o.schemas === 'string' && typeof o.relations === 'string';
}

function asString(v: unknown): string {
  return typeof v === 'string' ? v : String(v ?? '');
}

function asNumber(v: unknown): number {
  return typeof v === 'number' ? v : Number(v);
}

/** Builds a snapshot from the catalog query's row. */
export function snapshotFromRow(row: unknown, generation: number, loadedAt: number): CatalogSnapshot {
  if (!isCatalogRow(row)) throw new ScalpleError('UPSTREAM', 'the catalog query returned an unexpected row');
  const searchPath = (JSON.parse(row.search_path) as unknown[]).map(asString);
  const schemas = (JSON.parse(row.schemas) as unknown[]).map(asString);
  const tempSchema = row.temp_schema ?? null;
  const rels: CatalogRelation[] = [];
  for (const item of JSON.parse(row.relations) as unknown[]) {
    if (!Array.isArray(item)) continue;
    const [oid, schema, name, relkind, cols, def, deps] = item as unknown[];
    const kindCode = asString(relkind) as RelKindCode;
    const columns: CatalogColumn[] = [];
    for (const c of Array.isArray(cols) ? (cols as unknown[]) : []) {
      if (!Array.isArray(c)) continue;
      const [cname, attnum, typeOid, typeName, deterministic] = c as unknown[];
      columns.push(Object.freeze({ name: asString(cname), attnum: asNumber(attnum), typeOid: asNumber(typeOid), typeName: asString(typeName), ...(typeof deterministic === 'boolean' ? { deterministic } : {}) }));
    }
    const dependsOn: { oid: number; attnum: number }[] = [];
    for (const d of Array.isArray(deps) ? (deps as unknown[]) : []) {
      if (Array.isArray(d)) dependsOn.push(Object.freeze({ oid: asNumber(d[0]), attnum: asNumber(d[1]) }));
    }
    const schemaName = asString(schema);
    rels.push(
      Object.freeze({
        oid: asNumber(oid),
        schema: schemaName,
        name: asString(name),
        relkind: kindCode,
        kind: KINDS[kindCode] ?? 'table',
        temp: tempSchema !== null && schemaName === tempSchema,
        system: SYSTEM_SCHEMAS.has(schemaName),
        columns: Object.freeze(columns),
        columnByName: new Map(columns.map((c) => [c.name, c])),
        definition: typeof def === 'string' ? def : null,
        dependsOn: Object.freeze(dependsOn),
      }),
    );
  }
  // Missing: assume `||` and `::text` are taken over (fail closed: no `||` or `::text` over masked values).
  const shadows = typeof row.shadows === 'string' ? (JSON.parse(row.shadows) as unknown[]).map(asString) : ['operator ||', 'type text'];
  return new CatalogSnapshot(generation, loadedAt, row.current_user, tempSchema, searchPath, schemas, rels, new Set(shadows));
}

export interface CatalogOptions {
  /** Reload when the snapshot is older than this (ms). Default 60 s. */
  ttlMs?: number;
  /** Clock (ms), for tests. Default Date.now. */
  now?: () => number;
}

/**
 * The live catalog. `current` is the last loaded snapshot; `fresh()` returns it only when it is
 * neither invalidated nor older than the TTL; `ready()` reloads when needed (one load at a time;
 * a load overtaken by invalidate() is repeated). Temporary objects are those of the session that
 * `db` hands out for the load: give a per-session Catalog on that session's own connection when
 * temporary tables must be seen.
 */
export class Catalog {
  private snap: CatalogSnapshot | undefined;
  private loading: Promise<CatalogSnapshot> | undefined;
  private epoch = 0;
  private loadedEpoch = -1;
  private gen = 0;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly db: Queryable,
    opts: CatalogOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Generation of the current snapshot (0 before the first load). */
  get generation(): number {
    return this.snap?.generation ?? 0;
  }

  /** The last loaded snapshot, fresh or not. */
  get current(): CatalogSnapshot | undefined {
    return this.snap;
  }

  /** The current snapshot when it may be used as is (not invalidated since its load began, within the TTL). */
  fresh(): CatalogSnapshot | undefined {
    const s = this.snap;
    if (!s || this.loadedEpoch !== this.epoch || this.now() - s.loadedAt >= this.ttlMs) return undefined;
    return s;
  }

  /** Marks the catalog stale: call after a statement that changes the catalog completes, and when its transaction ends. */
  invalidate(): void {
    this.epoch++;
  }

  /** A fresh snapshot, loading one if needed. */
  ready(): Promise<CatalogSnapshot> {
    const s = this.fresh();
    return s ? Promise.resolve(s) : this.refresh();
  }

  /** Loads now (joins a load in progress; repeats it if invalidate() was called meanwhile). */
  refresh(): Promise<CatalogSnapshot> {
    if (!this.loading) {
      const p = this.loadLoop();
      this.loading = p;
      const clear = (): void => {
        if (this.loading === p) this.loading = undefined;
      };
      p.then(clear, clear);
    }
    return this.loading;
  }

  private async loadLoop(): Promise<CatalogSnapshot> {
    for (let attempt = 0; ; attempt++) {
      const startEpoch = this.epoch;
      let res: { rows: unknown[] };
      try {
        res = await this.db.query(CATALOG_QUERY);
      } catch (err) {
        throw new ScalpleError('UPSTREAM', `could not load the database catalog: ${errorMessage(err)}`, { cause: err });
      }
      const snap = snapshotFromRow(res.rows[0], ++this.gen, this.now());
      this.snap = snap;
      // Fresh only if nothing was invalidated while the query ran (it may predate that DDL).
      this.loadedEpoch = startEpoch;
      if (this.epoch === startEpoch || attempt >= 4) return snap;
    }
  }
}
