// Adapter from the SQL analysis (src/sql: libpg-query and the live catalog) to what the session
// needs: kinds, tables, columns, scalple.* settings, and refusals that do not depend on the
// caller's role (the audit schema; session state a transaction pooler would leak).
import pg from 'pg';
import type { Logger } from 'pino';
import type { PoolMode } from '../policy/config.ts';
import { analyse, ensureParser, resolveAccess, Catalog, DEFAULT_SEARCH_PATH, type Access, type Analysis } from '../sql/index.ts';
import { errorMessage } from '../errors.ts';
import type { StatementAnalyzer, StatementInfo } from './statement-info.ts';
import { literalShape } from './literal-shape.ts';

export interface AnalyzerOptions {
  /**
   * May this analysis serve other texts of the same literal shape? No when the proxy rewrites the
   * text itself (hidden subject keys) or takes values from it (scalple.* settings).
   */
  shareable?: (info: StatementInfo) => boolean;
  poolMode: PoolMode;
  /** Where the catalog is read from: the upstream, with the shared credential. */
  upstreamUrl: string;
  logger: Logger;
}

/** Built-in (and contrib) functions that run a query, or read a table, given as text. */
const SQL_RUNNING_FUNCTIONS = new Set([
  'query_to_xml', 'query_to_xml_and_xmlschema', 'query_to_xmlschema', 'table_to_xml', 'table_to_xml_and_xmlschema', 'table_to_xmlschema',
  'cursor_to_xml', 'cursor_to_xmlschema', 'schema_to_xml', 'schema_to_xml_and_xmlschema', 'schema_to_xmlschema', 'database_to_xml',
  'database_to_xml_and_xmlschema', 'database_to_xmlschema', 'ts_stat', 'ts_rewrite', 'crosstab', 'crosstab2', 'crosstab3', 'crosstab4',
  'connectby', 'xpath_table', 'dblink', 'dblink_exec', 'dblink_open', 'dblink_fetch', 'dblink_send_query',
]);

const AUDIT_REFUSAL = { sqlstate: '42501', message: 'statements that touch the scalple_audit schema are not allowed through the proxy', rule: 'audit.schema' };

export async function createAnalyzer(opts: AnalyzerOptions): Promise<StatementAnalyzer> {
  await ensureParser();
  const pool = new pg.Pool({ connectionString: opts.upstreamUrl, max: 2, idleTimeoutMillis: 30_000, application_name: 'scalple-catalog' });
  pool.on('error', (err) => opts.logger.warn({ err: err.message }, 'catalog connection error'));
  const catalog = new Catalog(pool);
  // Names of functions defined outside pg_catalog: they may read anything, so roles with masked
  // columns may not call them. Loaded with the catalog, refreshed on the same events.
  let userFunctions: { at: number; names: Set<string> } | undefined;
  let loadingFunctions: Promise<void> | undefined;
  const loadUserFunctions = (): Promise<void> => {
    loadingFunctions ??= pool
      .query<{ proname: string }>("SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')")
      .then((r) => {
        userFunctions = { at: Date.now(), names: new Set(r.rows.map((x) => x.proname.toLowerCase())) };
      })
      .finally(() => {
        loadingFunctions = undefined;
      });
    return loadingFunctions;
  };
  // Role-independent views, per text and search_path; cleared when the catalog changes.
  const cache = new Map<string, { uid: number; info: StatementInfo }>();
  // Texts that differ only in literal values share one analysis (keyed by shape).
  const shapes = new Map<string, { uid: number; info: StatementInfo }>();
  // Not an analysis that read a literal's value (ORDER BY 1 and ORDER BY 2 share a shape).
  const shareable = (info: StatementInfo) => !info.setting && !info.searchPath && !info.refusal && info.analysis?.ok === true && !info.analysis.literalValues && !/scalple/i.test(info.analysis.sql) && (opts.shareable?.(info) ?? true);

  function build(sql: string, analysis: Analysis, access: Access | null): StatementInfo {
    if (!analysis.ok) {
      // Fail closed: what the proxy cannot parse it cannot check (PostgreSQL 15 accepts a few
      // texts the newer grammar rejects), so it is not forwarded.
      const refusal = analysis.touchesAuditSchema ? AUDIT_REFUSAL : { sqlstate: '42601', message: `Scalple could not parse this statement, so it is not run: ${analysis.error.message}`, rule: 'sql.unparsed' };
      return { kinds: ['UNKNOWN'], tables: [], columns: [], ddl: false, refusal, analysis, access };
    }
    const written = analysis.statements.flatMap((st) => st.relations.map((r) => `${r.schema ?? 'public'}.${r.name}`));
    const info: StatementInfo = {
      kinds: [...analysis.kinds],
      // Without the catalog: the relations as written (schema from the default search_path).
      tables: access ? [...access.tables] : [...new Set(written)].sort(),
      columns: access ? [...access.columns] : [],
      ddl: analysis.ddl,
      analysis,
      access,
    };
    if (analysis.touchesAuditSchema) {
      info.refusal = AUDIT_REFUSAL;
      return info;
    }
    // Functions that run SQL (or read a relation) named by text built at run time: the proxy can
    // tell neither what they read — the audit schema included — nor whose data, for any role.
    const opaque = analysis.statements.flatMap((st) => st.functions).find((f) => (f.schema === null || f.schema === 'pg_catalog' || f.schema === 'public') && SQL_RUNNING_FUNCTIONS.has(f.name.toLowerCase()));
    if (opaque) {
      info.refusal = { sqlstate: '42501', message: `${opaque.name}() runs SQL built at run time, which Scalple cannot check or audit: run the query itself`, rule: 'sql.opaque_function' };
      return info;
    }
    // set_config() of search_path, or of a name built at run time, would steer name resolution
    // (towards the audit schema, or a table shadowing a masked one) behind the analysis' back.
    if (analysis.statements.some((st) => st.functions.some((f) => f.name.toLowerCase() === 'set_config'))) {
      const literal = [...sql.matchAll(/set_config\s*\(\s*('(?:[^']|'')*'|[^,)]*)/gi)].map((m) => m[1]!.trim());
      if (literal.some((a) => !/^'[^']*'$/.test(a) || /search_path/i.test(a))) {
        info.refusal = { sqlstate: '42501', message: 'set_config() of search_path, or of a setting named at run time, is not allowed through the proxy', rule: 'sql.set_config' };
        return info;
      }
    }
    const setting = analysis.statements.find((s) => s.scalpleSetting)?.scalpleSetting;
    if (setting) {
      info.setting = { name: setting.key, value: setting.value, local: setting.local };
      return info;
    }
    const pathSet = analysis.statements.find((s) => s.setting?.name === 'search_path' && !s.setting.local);
    // SET search_path TO DEFAULT and RESET give no values: back to the default path.
    if (pathSet?.setting) info.searchPath = pathSet.setting.values.length ? [...pathSet.setting.values] : [...DEFAULT_SEARCH_PATH];
    info.userFunctions = analysis.statements.flatMap((st) => st.functions).filter((f) => f.schema !== 'pg_catalog' && (f.schema !== null || userFunctions?.names.has(f.name.toLowerCase()) !== false)).map((f) => `${f.schema ?? ''}${f.schema ? '.' : ''}${f.name}`);
    if (opts.poolMode === 'transaction') {
      const leak = analysis.statements.flatMap((s) => s.sessionState)[0];
      if (leak) {
        info.refusal = {
          sqlstate: '0A000',
          message: `${leak.reason}: behind the transaction pooler it would outlive the transaction and leak to other people (use SET LOCAL inside a transaction, or protocol-level prepared statements)`,
          rule: 'pooler.session_state',
        };
      }
    }
    return info;
  }

  return {
    describe(sql: string, searchPath: readonly string[]): StatementInfo | Promise<StatementInfo> {
      const key = searchPath === DEFAULT_SEARCH_PATH ? sql : `${searchPath.join(',')}\u0000${sql}`;
      const snap = catalog.fresh();
      const hit = cache.get(key);
      if (hit && snap && hit.uid === snap.uid) return hit.info;
      const shape = searchPath === DEFAULT_SEARCH_PATH && sql.length < 8192 ? literalShape(sql) : undefined;
      if (shape && snap) {
        const same = shapes.get(shape);
        if (same && same.uid === snap.uid) return same.info;
      }
      const analysis = analyse(sql);
      if (!analysis.ok || analysis.touchesAuditSchema) return build(sql, analysis, null);
      const resolve = (s: Parameters<typeof resolveAccess>[1]): Access | null => {
        try {
          return resolveAccess(analysis, s, searchPath);
        } catch (err) {
          opts.logger.warn({ err: errorMessage(err) }, 'statement could not be resolved against the catalog');
          return null;
        }
      };
      const finish = (s: { uid: number }, access: Access | null) => {
        const info = build(sql, analysis, access);
        info.catalogUid = s.uid;
        if (cache.size >= 5000) cache.delete(cache.keys().next().value as string);
        cache.set(key, { uid: s.uid, info });
        if (shape && shareable(info)) {
          if (shapes.size >= 5000) shapes.delete(shapes.keys().next().value as string);
          shapes.set(shape, { uid: s.uid, info });
        }
        return info;
      };
      if (snap && userFunctions && Date.now() - userFunctions.at < 60_000) return finish(snap, resolve(snap));
      return Promise.all([catalog.ready(), loadUserFunctions()]).then(
        ([s]) => finish(s, resolve(s)),
        (err) => {
          // Without the catalog the statement still runs and is audited, with tables as written.
          opts.logger.warn({ err: errorMessage(err) }, 'catalog unavailable; auditing without column resolution');
          return build(sql, analysis, null);
        },
      );
    },
    schemaChanged() {
      catalog.invalidate();
      userFunctions = undefined;
    },
    isCurrent(info: StatementInfo): boolean {
      return info.catalogUid !== undefined && catalog.fresh()?.uid === info.catalogUid;
    },
    columnOf(tableOid: number, attnum: number): string | undefined {
      const snap = catalog.current;
      const hit = snap?.columnByAttnum(tableOid, attnum);
      return hit ? `${snap!.qualifiedName(hit.relation)}.${hit.column.name}` : undefined;
    },
    async close() {
      await pool.end();
    },
  };
}

export { DEFAULT_SEARCH_PATH };
