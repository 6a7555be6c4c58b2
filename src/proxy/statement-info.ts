// What the session needs to know about a statement text before forwarding it. The analysis itself
// (libpg-query + live catalog) lives in src/sql; this is the proxy's narrow view of it.
import type { Access, Analysis } from '../sql/index.ts';

export interface ScalpleSetting {
  /** `reason`, `on_behalf_of`, … (the part after `scalple.`). */
  name: string;
  /** null for RESET. */
  value: string | null;
  local: boolean;
}

export interface Refusal {
  sqlstate: string;
  message: string;
  /** Name of the rule that refused, for the audit record. */
  rule: string;
}

export interface StatementInfo {
  kinds: string[];
  tables: string[];
  columns: string[];
  /** Set when the text is a `SET scalple.*` the proxy takes for itself (never forwarded). */
  setting?: ScalpleSetting;
  /** Set when the statement must not be forwarded at all, whoever sends it. */
  refusal?: Refusal;
  /** The statement changes the schema: the catalog cache must be refreshed after it. */
  ddl: boolean;
  /** `SET search_path` in a session the proxy follows (not behind a transaction pooler). */
  searchPath?: string[];
  /** Functions called that are not built in (may read anything): `schema.name` or `name`. */
  userFunctions?: string[];
  /** The analysis behind this view, for the per-role policy decision. */
  analysis?: Analysis;
  access?: Access | null;
  /** The catalog snapshot the analysis was resolved against (absent: resolved without one). */
  catalogUid?: number;
}

export interface StatementAnalyzer {
  /** Sync on a cache hit; may be async (catalog load). */
  describe(sql: string, searchPath: readonly string[]): StatementInfo | Promise<StatementInfo>;
  /** Called after a DDL statement completed, or when the database reports one made elsewhere. */
  schemaChanged(): void;
  /** Was `info` resolved against the catalog as it is now? False once the schema changed since. */
  isCurrent(info: StatementInfo): boolean;
  /** Catalog lookups for RowDescription's (table OID, attnum) cross-check. */
  columnOf(tableOid: number, attnum: number): string | undefined;
  close(): Promise<void>;
}
