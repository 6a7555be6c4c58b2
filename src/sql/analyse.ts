// Statement analysis on PostgreSQL's own parse tree (libpg-query): for every statement in a text,
// its command tag, whether it is read-only, the relations and columns it references (with the
// query-block structure needed to resolve them against the catalog later: FROM items, CTEs,
// subqueries, output columns and where their values come from), functions called, and the flags
// the proxy acts on (audit schema, scalple.* settings, session state, transaction control).
//
// The result is catalog-independent and cached per distinct text: a cache hit is a Map lookup.
// Catalog-dependent work (search_path, `*` expansion, views) is in resolve.ts.
import type {
  Node,
  SelectStmt,
  InsertStmt,
  UpdateStmt,
  DeleteStmt,
  MergeStmt,
  ColumnRef,
  A_Expr,
  ResTarget,
  FuncCall,
  WithClause,
  RangeVar,
  Alias,
  VariableSetStmt,
  TransactionStmt,
  CopyStmt,
} from 'libpg-query';
import { tagOf, payload, as, str, names, constText, isObject, looksLikeRangeVar } from './nodes.ts';
import type { NodeTag } from './nodes.ts';
import { commandTag, isDdl, explainAnalyze, defBoolean, dropObjectNames } from './commandTag.ts';
import { tryParse, fingerprint as fingerprintText, Lru, MAX_CACHED_TEXT } from './parser.ts';
import { ScalpleError } from '../errors.ts';

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

export type RelationAccess = 'read' | 'write';

/** A table-like name the statement references (never a CTE). */
export interface RelationRef {
  /** Schema as written, or null (resolved against search_path later). */
  readonly schema: string | null;
  readonly name: string;
  readonly alias: string | null;
  /** write: INSERT/UPDATE/DELETE/MERGE/TRUNCATE/COPY FROM targets, DDL targets; read otherwise (SELECT … FOR UPDATE too). */
  readonly access: RelationAccess;
  /** Created as a temporary object (CREATE TEMP …, SELECT INTO TEMP) or written in schema pg_temp. */
  readonly temp: boolean;
  /** Query block it belongs to (a FROM item or DML target), or null for DDL/utility references. */
  readonly scope: number | null;
  /** Character offset in the whole text, -1 when unknown. */
  readonly location: number;
}

/**
 * column: `c.email`, `email`; star: `*` / `t.*` as a select-list entry (expanded against the
 * catalog); row: a whole-row reference — `t.*` inside an expression (`row_to_json(c.*)`) or a bare
 * name that matches a FROM item (`SELECT c FROM customers c`; PostgreSQL still prefers a column of
 * that name when one exists, and so does resolution).
 */
export type ColumnRefForm = 'column' | 'star' | 'row';

export interface ColumnRefInfo {
  /** Name parts before the column: [] | [rel] | [schema, rel] | [db, schema, rel]. */
  readonly qualifier: readonly string[];
  /** Column name, or '*'. */
  readonly name: string;
  readonly form: ColumnRefForm;
  /** Query block the reference appears in. */
  readonly scope: number;
  /** In ORDER BY / GROUP BY / DISTINCT ON, where a bare name may name an output column. */
  readonly outputAlias: boolean;
  readonly location: number;
  /**
   * How the value reaches an output (or a written column) of its block, when it does: null when
   * the reference is read to choose, join, group or order rows instead (WHERE, ON, GROUP BY…).
   */
  readonly via: ValuePath | null;
}

/**
 * The way from a value to the output it ends up in, within one expression: what the database does
 * to the value on the way. The proxy lets a masked value through a computation only when every
 * step is on a short allow-list of built-ins that cannot fail, wait, compare or change the row
 * count depending on the value (the output is then redacted); `unsafe` names the first step that
 * is not.
 */
export interface ValuePath {
  /** The first construct on the way that is not on the allow-list ('a cast to integer', 'function reverse()'), or null. */
  readonly unsafe: string | null;
  /** Something (a function, operator, cast, CASE, subquery…) lies between the value and the output. */
  readonly computed: boolean;
  /**
   * Allowed steps that are only safe while they resolve to the built-in: names a user-defined
   * object could take over ('operator ||', 'type text'). Checked against the catalog.
   */
  readonly shadowable: readonly string[];
  /**
   * A step that compares the values it is given ('max()', 'min()') and sees this value's type as
   * it is: every step between passes its input's type through (coalesce, CASE results, a scalar
   * subquery, window functions…). Comparing is only safe over a built-in scalar type: records
   * compare field by field and stop at the first difference, so a field whose type has no
   * ordering (json) fails exactly when the fields before it are equal. resolve.ts checks what a
   * reference (or a scalar subquery) with such a step pending stands for. null: none.
   */
  readonly compares: string | null;
  /**
   * The type of the expression's result, relative to this value: 'same' when every step passes
   * its input's type through; otherwise what the outermost step that does not makes of it —
   * 'scalar' (text, a length, json…) or 'composite' (a record, an array, or unknown: ROW(…),
   * ARRAY(…), array_agg, a field of a composite value).
   */
  readonly result: ValueKind;
  /**
   * Allowed steps that put several values into one (`a || b`, concat(a, b), format('%s%s', a, b),
   * string_agg(a, b), ROW(a, b)) that this value passes through, as `step:argument` (unique in the
   * statement; `r…` for a record, whose fields only count when one column fills two of them; a
   * format() argument the format string uses twice is two arguments). resolve.ts gathers the
   * columns each argument comes from and mask-plan.ts refuses a step two masked arguments reach:
   * doubling a value (`x || x`, chained) builds 2^n copies and fails on PostgreSQL's 1 GB limit
   * exactly when `length · 2^n` passes it, which tells the length.
   */
  readonly combines: readonly string[];
  /** How many concatenating aggregates (string_agg, array_agg, json_agg, ARRAY(subquery)) the value goes through. */
  readonly aggregates: number;
}

/** Why a comparing step (min()/max()) may not see a record or an array (see ValuePath.compares). */
export function comparedComposite(compares: string): string {
  return `${compares} over a record or an array (compared field by field, it fails on a field without ordering only when the fields before it are equal)`;
}

/** What kind of value a step produces: its input's type ('same'), or a kind of its own. */
export type ValueKind = 'same' | 'scalar' | 'composite';

/** What an allowed step does to the type of a value: passes it through, makes a scalar or a composite of it, or compares it (passing it through). */
type StepKind = ValueKind | 'compare';

/**
 * Where the rows of a block go. rows: read through references from the enclosing query (FROM
 * item, CTE body, set-operation branch, statement result, DML source, EXISTS) — each reference is
 * judged where it is; value: a scalar or ARRAY subquery inside an expression of the enclosing
 * block (`parent`), its output continuing along `path`; test: a subquery whose output is compared
 * to choose rows (WHERE, ON, HAVING, LIMIT, IN/ANY/ALL…).
 */
export type ScopeUse = { readonly kind: 'rows' } | { readonly kind: 'value'; readonly path: ValuePath } | { readonly kind: 'test' };

/**
 * A use of column references that tests them for equality and nothing else: `a = b`, `a <> b`,
 * `a IS [NOT] DISTINCT FROM b` between two bare column references in a condition (WHERE, ON,
 * HAVING…), `a IS [NOT] NULL`, a bare column reference in GROUP BY, `count(DISTINCT a)`. Which
 * stored values are equal and which are NULL is all such a use tells about them — what a `hash`
 * mask shows anyway — so the proxy may allow it over hash-masked columns (resolve.ts,
 * StatementAccess.equalities; mask-plan.ts). Its references are not counted as filters; anything
 * else (a literal, a parameter, an expression, `<`, LIKE, IN, ORDER BY) still is.
 */
export interface EqualityUse {
  readonly kind: 'equal' | 'null' | 'group' | 'count distinct';
  /** As written, for messages: 'operator =', 'IS NOT DISTINCT FROM', 'IS NULL', 'GROUP BY', 'count(DISTINCT …)'. */
  readonly label: string;
  /** Indices into StatementInfo.columns: two for 'equal', one otherwise. */
  readonly refs: readonly number[];
  /** The operator PostgreSQL looks up by name in the search path ('=', '<>'), or null (NULL tests, grouping: the type's default equality). */
  readonly operator: string | null;
}

export interface FunctionRef {
  readonly schema: string | null;
  readonly name: string;
  readonly location: number;
}

export interface CteDef {
  readonly name: string;
  /** The query block of the CTE's body. */
  readonly scope: number;
  readonly columnAliases: readonly string[] | null;
  /** Declared in WITH RECURSIVE (the body may reference itself). */
  readonly recursive: boolean;
  /** Has a SEARCH or CYCLE clause: rows are ordered or compared by (some of) its columns. */
  readonly searchOrCycle: boolean;
}

export type FromItem =
  | { readonly type: 'relation'; readonly relation: number; readonly alias: string | null; readonly columnAliases: readonly string[] | null }
  | { readonly type: 'cte'; readonly cte: number; readonly alias: string | null; readonly columnAliases: readonly string[] | null }
  | { readonly type: 'subquery'; readonly scope: number; readonly alias: string | null; readonly columnAliases: readonly string[] | null; readonly lateral: boolean }
  | { readonly type: 'function'; readonly functions: readonly string[]; readonly alias: string | null; readonly columnAliases: readonly string[] | null }
  | {
      readonly type: 'join';
      readonly left: FromItem;
      readonly right: FromItem;
      readonly alias: string | null;
      readonly using: readonly string[];
      readonly natural: boolean;
    };

export interface OutputColumn {
  /** Output name (alias, or PostgreSQL's FigureColname); null for a `*` / `t.*` entry. */
  readonly name: string | null;
  /** Set for a `*` / `t.*` entry: expanded against the FROM items on resolution. */
  readonly star: { readonly qualifier: readonly string[]; readonly ref: number } | null;
  /** Column references (indices into StatementInfo.columns) whose values flow into this output. */
  readonly refs: readonly number[];
  /** Subquery blocks (scalar/ARRAY sublinks) whose outputs flow into this output. */
  readonly scopes: readonly number[];
  /** The expression is a bare column reference: no function, operator, cast or subquery. */
  readonly plain: boolean;
  /** `(expr).*`: expands to the fields of a composite value, unknown here — any column name of the block may come from it. */
  readonly composite: boolean;
}

export type ScopeKind = 'select' | 'values' | 'setop' | 'insert' | 'update' | 'delete' | 'merge' | 'copy' | 'utility';

/** One query block: a SELECT core, VALUES, a set operation, or the body of a DML statement. */
export interface QueryScope {
  readonly id: number;
  readonly kind: ScopeKind;
  /** Enclosing block whose FROM items are visible here (correlated references, LATERAL). */
  readonly parent: number | null;
  /** Blocks id+1 … end-1 are nested inside this one. */
  readonly end: number;
  readonly from: readonly FromItem[];
  /** Result columns (select list, VALUES columns, RETURNING list). */
  readonly outputs: readonly OutputColumn[];
  /** CTEs declared by this block's WITH (indices into StatementInfo.ctes). */
  readonly ctes: readonly number[];
  readonly setOp: { readonly op: 'UNION' | 'INTERSECT' | 'EXCEPT'; readonly all: boolean; readonly left: number; readonly right: number } | null;
  /** An EXISTS subquery: its select list is never evaluated. */
  readonly existsOnly: boolean;
  /** Where this block's rows go (see ScopeUse). */
  readonly use: ScopeUse;
  /** SELECT DISTINCT (without ON): rows are compared on every output column. */
  readonly distinct: boolean;
  /** Output positions (1-based) named by number in ORDER BY or DISTINCT ON (rows ordered or compared by them). */
  readonly positions: readonly number[];
  /** Output positions (1-based) named by number directly in GROUP BY (not in grouping sets): rows grouped by equality. */
  readonly groupPositions: readonly number[];
}

/** Columns of a relation read or written as a whole (INSERT/UPDATE targets, COPY, DELETE, TRUNCATE). */
export interface ColumnAccess {
  readonly relation: number;
  /** null: every column of the relation. */
  readonly columns: readonly string[] | null;
  readonly access: RelationAccess;
}

/** Data copied into table columns (INSERT … SELECT, UPDATE SET, MERGE, CREATE TABLE AS). */
export interface DataFlow {
  readonly relation: number;
  /** Target columns in order; null: the relation's columns in order. */
  readonly columns: readonly string[] | null;
  /** Either a query block whose outputs map positionally onto the columns, or the refs/blocks of one expression. */
  readonly source: { readonly scope: number } | { readonly refs: readonly number[]; readonly scopes: readonly number[] };
}

export interface ScalpleSetting {
  /** Full name, lower-case: 'scalple.reason'. */
  readonly name: string;
  /** Part after 'scalple.': 'reason', 'on_behalf_of'. */
  readonly key: string;
  /** The value; null for RESET or SET … TO DEFAULT. */
  readonly value: string | null;
  readonly local: boolean;
  readonly reset: boolean;
}

export type SetAction = 'set' | 'set default' | 'set from current' | 'set multi' | 'reset' | 'reset all';

export interface VariableSetting {
  readonly action: SetAction;
  /** GUC name, lower-case ('search_path', 'role', 'session_authorization', 'timezone', 'transaction'…); null for RESET ALL. */
  readonly name: string | null;
  /** Arguments as text, in order (each search_path entry is one value). */
  readonly values: readonly string[];
  /** Values joined with ', ', null for reset/default. */
  readonly value: string | null;
  readonly local: boolean;
}

export type SessionStateKind =
  | 'set'
  | 'reset'
  | 'role'
  | 'session authorization'
  | 'search_path'
  | 'session characteristics'
  | 'prepare'
  | 'deallocate'
  | 'cursor with hold'
  | 'listen'
  | 'unlisten'
  | 'discard'
  | 'load'
  | 'temporary object'
  | 'set_config'
  | 'advisory lock';

/** State that outlives the transaction: behind a transaction pooler it would leak to other people. */
export interface SessionState {
  readonly kind: SessionStateKind;
  readonly reason: string;
}

export type TransactionOp =
  | 'BEGIN'
  | 'START TRANSACTION'
  | 'COMMIT'
  | 'ROLLBACK'
  | 'SAVEPOINT'
  | 'RELEASE'
  | 'ROLLBACK TO'
  | 'PREPARE TRANSACTION'
  | 'COMMIT PREPARED'
  | 'ROLLBACK PREPARED';

export interface TransactionControl {
  readonly op: TransactionOp;
  readonly savepoint: string | null;
  /** Two-phase commit transaction id. */
  readonly gid: string | null;
  /** COMMIT/ROLLBACK AND CHAIN. */
  readonly chain: boolean;
  /** BEGIN READ ONLY (true) / READ WRITE (false), null when not given. */
  readonly readOnly: boolean | null;
  readonly isolation: string | null;
}

export type CommandDetail =
  | { readonly type: 'prepare'; readonly name: string; readonly statementKind: string }
  | { readonly type: 'execute'; readonly name: string }
  | { readonly type: 'deallocate'; readonly name: string | null }
  | { readonly type: 'declare'; readonly cursor: string; readonly hold: boolean; readonly scroll: boolean; readonly binary: boolean; readonly statementKind: string }
  | { readonly type: 'fetch'; readonly cursor: string | null; readonly move: boolean }
  | { readonly type: 'close'; readonly cursor: string | null }
  | { readonly type: 'explain'; readonly analyze: boolean; readonly statementKind: string }
  | { readonly type: 'listen'; readonly channel: string }
  | { readonly type: 'unlisten'; readonly channel: string | null }
  | { readonly type: 'notify'; readonly channel: string; readonly payload: string | null }
  | { readonly type: 'copy'; readonly direction: 'to' | 'from'; readonly target: 'stdio' | 'file' | 'program'; readonly query: boolean };

export interface StatementInfo {
  /** Command tag, as PostgreSQL's CreateCommandTag() gives it ('???' for an unknown node). */
  readonly kind: string;
  /** This statement's own text (trimmed). */
  readonly text: string;
  /** Character offset and length of the statement in the whole text. */
  readonly location: number;
  readonly length: number;
  /**
   * Changes nothing, as far as the text shows: no write target, no DDL, no row locks, no known
   * side-effect function (nextval, lo_*, pg_terminate_backend…). User-defined functions may still
   * write: enforce read-only roles with a read-only transaction upstream, not with this flag alone.
   * EXPLAIN without ANALYZE is read-only; EXECUTE is not (look its PREPARE up by name).
   */
  readonly readOnly: boolean;
  /** Changes the catalog (PostgreSQL's log_statement = ddl class, plus DO/CALL/DISCARD): refresh the catalog cache. */
  readonly ddl: boolean;
  readonly relations: readonly RelationRef[];
  readonly columns: readonly ColumnRefInfo[];
  readonly ctes: readonly CteDef[];
  readonly functions: readonly FunctionRef[];
  /** Operator names used in expressions ('=', '||', '~~' for LIKE…), each once, schema-qualified as written ('pg_catalog.||'). */
  readonly operators: readonly string[];
  /** Equality-only uses of bare column references (see EqualityUse). */
  readonly equalities: readonly EqualityUse[];
  readonly scopes: readonly QueryScope[];
  /** Block whose outputs are the rows this statement returns (SELECT, RETURNING, COPY (query), DECLARE, EXPLAIN's inner), or null. */
  readonly root: number | null;
  readonly columnAccess: readonly ColumnAccess[];
  readonly flows: readonly DataFlow[];
  /** Any mention of schema scalple_audit: the text (comments and literals included, any case) or a decoded name/literal. */
  readonly touchesAuditSchema: boolean;
  /**
   * The analysis read the value of a literal: an output position (ORDER BY 2, GROUP BY 1, DISTINCT
   * ON), a format string, substring() bounds, set_config()'s is_local, EXPLAIN options. A text that
   * differs only in literals may then mean something else (ORDER BY 1 vs ORDER BY 2): it must not
   * share this analysis.
   */
  readonly literalValues: boolean;
  /** SET/RESET scalple.*: handled by the proxy, never forwarded. */
  readonly scalpleSetting: ScalpleSetting | null;
  /** Any SET/RESET (search_path, role, …). */
  readonly setting: VariableSetting | null;
  /** Effects that outlive the transaction (empty when none). */
  readonly sessionState: readonly SessionState[];
  readonly transaction: TransactionControl | null;
  readonly command: CommandDetail | null;
  /** Code runs that the analyser cannot see into (DO block, procedure CALL); null otherwise. */
  readonly opaque: string | null;
}

export interface AnalysisOk {
  readonly ok: true;
  readonly sql: string;
  /** libpg-query fingerprint of the whole text (equal for texts that differ only in literals). */
  readonly fingerprint: string;
  /** One per statement; empty for an empty query (only comments/semicolons). */
  readonly statements: readonly StatementInfo[];
  readonly kinds: readonly string[];
  /** Every statement is read-only. */
  readonly readOnly: boolean;
  /** Some statement changes the catalog. */
  readonly ddl: boolean;
  readonly touchesAuditSchema: boolean;
  /** Some statement's analysis read a literal's value (see StatementInfo.literalValues). */
  readonly literalValues: boolean;
}

export interface AnalysisError {
  readonly ok: false;
  readonly sql: string;
  readonly error: { readonly message: string; readonly position: number | null };
  /** Raw-text check only: any 'scalple_audit', any case. */
  readonly touchesAuditSchema: boolean;
}

export type Analysis = AnalysisOk | AnalysisError;

// ---------------------------------------------------------------------------------------------
// Entry point and cache
// ---------------------------------------------------------------------------------------------

const AUDIT_RE = /scalple_audit/i;
const cache = new Lru<string, Analysis>(5000);

export function setAnalysisCacheSize(max: number): void {
  cache.resize(max);
}

/**
 * Analyses `sql` (one or more statements). Cached per distinct text: a repeated text costs a Map
 * lookup. Requires `await ensureParser()` once at start-up. Never throws for bad SQL: a text the
 * grammar rejects gives `{ ok: false, error }`. Throws ScalpleError('INTERNAL') only when the
 * analyser itself fails (a bug, a tree too deep): refuse the statement then, never forward it. The result is shared and (shallowly) frozen: never mutate it.
 */
export function analyse(sql: string): Analysis {
  const hit = cache.get(sql);
  if (hit) return hit;
  const result = analyseUncached(sql);
  if (sql.length <= MAX_CACHED_TEXT) cache.set(sql, result);
  return result;
}

export function analyseUncached(sql: string): Analysis {
  const audit = AUDIT_RE.test(sql);
  const parsed = tryParse(sql);
  if (!parsed.ok) {
    return freezeAnalysis<AnalysisError>({
      ok: false,
      sql,
      error: { message: parsed.error.message, position: parsed.error.position },
      touchesAuditSchema: audit,
    });
  }
  const toChar = byteToChar(sql);
  const statements: StatementInfo[] = [];
  const raw = parsed.tree.stmts ?? [];
  for (const rs of raw) {
    if (!rs.stmt) continue;
    const start = toChar(rs.stmt_location ?? 0);
    const end = rs.stmt_len ? toChar((rs.stmt_location ?? 0) + rs.stmt_len) : sql.length;
    const text = sql.slice(start, end);
    try {
      statements.push(new StatementBuilder(toChar).build(rs.stmt, text.trim(), start, end - start, audit && AUDIT_RE.test(text)));
    } catch (err) {
      // Not a syntax error: an analyser bug (or a tree too deep to walk). Reporting it as a syntax
      // error would let the text through to PostgreSQL unanalysed; the caller must refuse instead.
      throw new ScalpleError('INTERNAL', `could not analyse the statement: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }
  let fp: string;
  try {
    fp = fingerprintText(sql);
  } catch {
    fp = '';
  }
  return freezeAnalysis<AnalysisOk>({
    ok: true,
    sql,
    fingerprint: fp,
    statements,
    kinds: statements.map((s) => s.kind),
    readOnly: statements.every((s) => s.readOnly),
    ddl: statements.some((s) => s.ddl),
    touchesAuditSchema: audit || statements.some((s) => s.touchesAuditSchema),
    literalValues: statements.some((s) => s.literalValues),
  });
}

/**
 * Freezes the analysis and each statement with its lists (cached values are shared by every session).
 * Deeper objects are typed readonly but not frozen: a recursive freeze cost more than the analysis.
 */
function freezeAnalysis<T extends Analysis>(a: T): T {
  if (a.ok) {
    for (const st of a.statements) {
      for (const k of Object.keys(st)) {
        const v = (st as unknown as Record<string, unknown>)[k];
        if (Array.isArray(v)) Object.freeze(v);
      }
      Object.freeze(st);
    }
    Object.freeze(a.statements);
    Object.freeze(a.kinds);
  } else Object.freeze(a.error);
  return Object.freeze(a);
}

/** libpg-query reports byte offsets into the UTF-8 text; JavaScript strings index UTF-16 units. */
function byteToChar(sql: string): (b: number) => number {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(sql)) return (b) => (b < 0 ? -1 : Math.min(b, sql.length));
  const map: number[] = [];
  let ci = 0;
  for (const ch of sql) {
    const cp = ch.codePointAt(0) ?? 0;
    const len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (let k = 0; k < len; k++) map.push(ci);
    ci += ch.length;
  }
  map.push(ci);
  return (b) => (b < 0 ? -1 : (map[b] ?? ci));
}

// ---------------------------------------------------------------------------------------------
// Known functions
// ---------------------------------------------------------------------------------------------

/** Built-in functions with effects outside the statement's result (not allowed in a read-only transaction, or visible to others). */
const WRITE_FUNCTIONS = new Set([
  'nextval',
  'setval',
  'lo_create',
  'lo_creat',
  'lo_import',
  'lo_export',
  'lo_unlink',
  'lo_put',
  'lo_from_bytea',
  'lo_truncate',
  'lo_truncate64',
  'lowrite',
  'lo_open',
  'pg_terminate_backend',
  'pg_cancel_backend',
  'pg_reload_conf',
  'pg_rotate_logfile',
  'pg_switch_wal',
  'pg_create_restore_point',
  'pg_notify',
  'pg_promote',
  'pg_stat_reset',
  'pg_stat_reset_shared',
  'pg_stat_reset_single_table_counters',
  'pg_stat_reset_single_function_counters',
  'pg_stat_reset_slru',
  'pg_stat_reset_replication_slot',
  'pg_create_physical_replication_slot',
  'pg_create_logical_replication_slot',
  'pg_drop_replication_slot',
  'pg_import_system_collations',
  'pg_file_write',
  'pg_file_unlink',
  'pg_file_rename',
  'dblink_exec',
  'dblink_connect',
  'dblink_connect_u',
]);

const SESSION_ADVISORY_LOCKS = new Set(['pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared']);

// ---------------------------------------------------------------------------------------------
// The builder: one per top-level statement
// ---------------------------------------------------------------------------------------------

interface MutableScope {
  id: number;
  kind: ScopeKind;
  parent: number | null;
  end: number;
  from: FromItem[];
  outputs: OutputColumn[];
  ctes: number[];
  setOp: QueryScope['setOp'];
  existsOnly: boolean;
  use: ScopeUse;
  distinct: boolean;
  positions: number[];
  groupPositions: number[];
}

interface Sink {
  refs: number[];
  scopes: number[];
  /** How a value found at this point reaches the output. */
  path: ValuePath;
}

const DIRECT: ValuePath = Object.freeze({ unsafe: null, computed: false, shadowable: Object.freeze([]) as readonly string[], compares: null, result: 'same', combines: Object.freeze([]) as readonly string[], aggregates: 0 });

function newSink(): Sink {
  return { refs: [], scopes: [], path: DIRECT };
}

type CteEnv = { readonly name: string; readonly cte: number; readonly next: CteEnv } | null;

/** Statement node tags that open a query block wherever they appear. */
const QUERY_TAGS = new Set<NodeTag>(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

const CURSOR_OPT_BINARY = 0x1;
const CURSOR_OPT_SCROLL = 0x2;
const CURSOR_OPT_HOLD = 0x20;

class StatementBuilder {
  private readonly relations: RelationRef[] = [];
  private readonly columns: ColumnRefInfo[] = [];
  private readonly scopes: MutableScope[] = [];
  private readonly ctes: CteDef[] = [];
  private readonly functions: FunctionRef[] = [];
  private readonly operators = new Set<string>();
  private readonly equalities: EqualityUse[] = [];
  private readonly columnAccess: ColumnAccess[] = [];
  private readonly flows: DataFlow[] = [];
  private readonly sessionState: SessionState[] = [];
  private writes = false;
  private locks = false;
  private writeFunction = false;
  private serverFile = false;
  private auditInTree = false;
  /** See StatementInfo.literalValues (positions are read from the scopes). */
  private literalValues = false;
  /** Combining steps numbered so far (see ValuePath.combines). */
  private steps = 0;
  private scalpleSetting: ScalpleSetting | null = null;
  private setting: VariableSetting | null = null;
  private transaction: TransactionControl | null = null;
  private command: CommandDetail | null = null;
  private opaque: string | null = null;
  private root: number | null = null;

  constructor(private readonly toChar: (b: number) => number) {}

  build(stmt: Node, text: string, location: number, length: number, auditInText: boolean): StatementInfo {
    const kind = commandTag(stmt);
    this.scanStrings(stmt);
    this.root = this.statement(stmt);
    const ddl = isDdl(stmt) || kind === 'DO' || kind === 'CALL' || kind.startsWith('DISCARD');
    const readOnly = this.readOnly(stmt, kind);
    return {
      kind,
      text,
      location,
      length,
      readOnly,
      ddl,
      relations: this.relations,
      columns: this.columns,
      ctes: this.ctes,
      functions: this.functions,
      operators: [...this.operators],
      equalities: this.equalities,
      scopes: this.scopes,
      root: this.root,
      columnAccess: this.columnAccess,
      flows: this.flows,
      touchesAuditSchema: auditInText || this.auditInTree,
      literalValues: this.literalValues || this.scopes.some((sc) => sc.positions.length > 0 || sc.groupPositions.length > 0),
      scalpleSetting: this.scalpleSetting,
      setting: this.setting,
      sessionState: this.sessionState,
      transaction: this.transaction,
      command: this.command,
      opaque: this.opaque,
    };
  }

  private readOnly(stmt: Node, kind: string): boolean {
    const tag = tagOf(stmt);
    switch (tag) {
      case 'SelectStmt':
      case 'DeclareCursorStmt':
      case 'PrepareStmt':
        return !this.writes && !this.locks && !this.writeFunction && kind !== 'SELECT INTO';
      case 'ExplainStmt': {
        const e = payload(stmt, 'ExplainStmt');
        if (!explainAnalyze(e.options)) return true;
        return e.query ? !isDdl(e.query) && !this.writes && !this.locks && !this.writeFunction && !WRITE_KINDS_INNER.has(commandTag(e.query)) : true;
      }
      case 'CopyStmt':
        return !payload(stmt, 'CopyStmt').is_from && !this.serverFile && !this.writes && !this.writeFunction;
      case 'TransactionStmt': {
        const k = payload(stmt, 'TransactionStmt').kind;
        return k !== 'TRANS_STMT_PREPARE' && k !== 'TRANS_STMT_COMMIT_PREPARED' && k !== 'TRANS_STMT_ROLLBACK_PREPARED';
      }
      case 'VariableSetStmt':
      case 'VariableShowStmt':
      case 'FetchStmt':
      case 'ClosePortalStmt':
      case 'ListenStmt':
      case 'UnlistenStmt':
      case 'DiscardStmt':
      case 'DeallocateStmt':
        return !this.writeFunction;
      default:
        return false;
    }
  }

  // --- strings: the structural half of the audit-schema check (escapes the raw text hides) ---

  private scanStrings(v: unknown): void {
    if (this.auditInTree) return;
    if (typeof v === 'string') {
      if (v.length >= 13 && AUDIT_RE.test(v)) this.auditInTree = true;
      return;
    }
    if (Array.isArray(v)) {
      for (const x of v) this.scanStrings(x);
      return;
    }
    if (isObject(v)) for (const k in v) this.scanStrings(v[k]);
  }

  // --- scopes, refs, relations ---

  private newScope(kind: ScopeKind, parent: number | null): MutableScope {
    const s: MutableScope = { id: this.scopes.length, kind, parent, end: -1, from: [], outputs: [], ctes: [], setOp: null, existsOnly: false, use: ROWS, distinct: false, positions: [], groupPositions: [] };
    this.scopes.push(s);
    return s;
  }

  private close(s: MutableScope): number {
    s.end = this.scopes.length;
    return s.id;
  }

  private scope(id: number): MutableScope {
    const s = this.scopes[id];
    if (!s) throw new Error(`internal: no scope ${id}`);
    return s;
  }

  private loc(n: number | undefined): number {
    return n === undefined ? -1 : this.toChar(n);
  }

  private addRelation(rv: RangeVar, access: RelationAccess, scope: number | null, temp = false): number {
    const schema = rv.schemaname ?? null;
    this.relations.push({
      schema,
      name: rv.relname ?? '',
      alias: rv.alias?.aliasname ?? null,
      access,
      temp: temp || rv.relpersistence === 't' || schema === 'pg_temp',
      scope,
      location: this.loc(rv.location),
    });
    if (access === 'write') this.writes = true;
    return this.relations.length - 1;
  }

  private lookupCte(env: CteEnv, name: string): number | undefined {
    for (let e = env; e; e = e.next) if (e.name === name) return e.cte;
    return undefined;
  }

  /** Names a bare identifier could denote as a FROM item in `scope` or an enclosing block. */
  private isRangeName(scope: number, name: string): boolean {
    for (let s: number | null = scope; s !== null; s = this.scope(s).parent) {
      for (const item of this.scope(s).from) if (this.itemHasName(item, name)) return true;
    }
    return false;
  }

  private itemHasName(item: FromItem, name: string): boolean {
    switch (item.type) {
      case 'relation':
        return (item.alias ?? this.relations[item.relation]?.name) === name;
      case 'cte':
        return (item.alias ?? this.ctes[item.cte]?.name) === name;
      case 'subquery':
        return item.alias === name;
      case 'function':
        return (item.alias ?? (item.functions.length === 1 ? item.functions[0] : undefined)) === name;
      case 'join':
        return item.alias !== null ? item.alias === name : this.itemHasName(item.left, name) || this.itemHasName(item.right, name);
    }
  }

  private columnRef(cr: ColumnRef, scope: number, sink: Sink | null, outputAlias: boolean, selectListEntry: boolean, via: ValuePath | null = sink?.path ?? null): number {
    const parts: string[] = [];
    let star = false;
    for (const f of cr.fields ?? []) {
      const t = tagOf(f);
      if (t === 'A_Star') star = true;
      else if (t === 'String') parts.push(payload(f, 'String').sval ?? '');
    }
    const name = star ? '*' : (parts.pop() ?? '');
    const qualifier = parts;
    let form: ColumnRefForm = 'column';
    if (star) form = selectListEntry ? 'star' : 'row';
    else if (qualifier.length === 0 && this.isRangeName(scope, name)) form = 'row';
    this.columns.push({ qualifier, name, form, scope, outputAlias, location: this.loc(cr.location), via });
    const idx = this.columns.length - 1;
    sink?.refs.push(idx);
    return idx;
  }

  private addFunction(funcname: readonly Node[] | undefined, location: number | undefined, args: readonly Node[] | undefined): void {
    const parts = names(funcname);
    const name = parts[parts.length - 1] ?? '';
    const schema = parts.length > 1 ? (parts[parts.length - 2] ?? null) : null;
    this.functions.push({ schema, name, location: this.loc(location) });
    if (schema !== null && schema !== 'pg_catalog') return;
    if (WRITE_FUNCTIONS.has(name) || name.startsWith('lo_')) this.writeFunction = true;
    if (name === 'set_config') {
      this.literalValues = true;
      const isLocal = args?.[2] !== undefined ? constText(args[2]) : undefined;
      const local = isLocal !== undefined && /^(t|true|on|yes|1)$/i.test(isLocal);
      if (!local) this.sessionState.push({ kind: 'set_config', reason: 'set_config(…, false) changes a setting for the rest of the session' });
    }
    if (SESSION_ADVISORY_LOCKS.has(name)) {
      this.sessionState.push({ kind: 'advisory lock', reason: `${name}() takes a session-level advisory lock that outlives the transaction` });
    }
  }

  // --- statements ---

  /** Dispatches a statement node; returns the block whose outputs are its result rows, if any. */
  private statement(stmt: Node): number | null {
    const tag = tagOf(stmt);
    if (!tag) return null;
    if (QUERY_TAGS.has(tag)) return this.query(stmt, null, null);
    switch (tag) {
      case 'ExplainStmt': {
        const e = payload(stmt, 'ExplainStmt');
        if (e.options?.length) this.literalValues = true; // (ANALYZE 0) vs (ANALYZE 1)
        const analyze = explainAnalyze(e.options);
        this.command = { type: 'explain', analyze, statementKind: e.query ? commandTag(e.query) : '???' };
        return e.query ? this.statement(e.query) : null;
      }
      case 'PrepareStmt': {
        const p = payload(stmt, 'PrepareStmt');
        this.command = { type: 'prepare', name: p.name ?? '', statementKind: p.query ? commandTag(p.query) : '???' };
        this.sessionState.push({ kind: 'prepare', reason: `PREPARE ${p.name ?? ''} creates a prepared statement that lives until the session ends` });
        return p.query ? this.statement(p.query) : null;
      }
      case 'ExecuteStmt': {
        const x = payload(stmt, 'ExecuteStmt');
        this.command = { type: 'execute', name: x.name ?? '' };
        if (x.params?.length) this.utilityExprs(x.params);
        return null;
      }
      case 'DeallocateStmt': {
        const d = payload(stmt, 'DeallocateStmt');
        const name = d.isall ? null : (d.name ?? null);
        this.command = { type: 'deallocate', name };
        this.sessionState.push({ kind: 'deallocate', reason: name ? `DEALLOCATE ${name} drops a session-level prepared statement` : 'DEALLOCATE ALL drops every prepared statement of the session' });
        return null;
      }
      case 'DeclareCursorStmt': {
        const d = payload(stmt, 'DeclareCursorStmt');
        const opts = d.options ?? 0;
        const hold = (opts & CURSOR_OPT_HOLD) !== 0;
        this.command = {
          type: 'declare',
          cursor: d.portalname ?? '',
          hold,
          scroll: (opts & CURSOR_OPT_SCROLL) !== 0,
          binary: (opts & CURSOR_OPT_BINARY) !== 0,
          statementKind: d.query ? commandTag(d.query) : '???',
        };
        if (hold) this.sessionState.push({ kind: 'cursor with hold', reason: `cursor ${d.portalname ?? ''} is declared WITH HOLD and outlives the transaction` });
        return d.query ? this.statement(d.query) : null;
      }
      case 'FetchStmt': {
        const f = payload(stmt, 'FetchStmt');
        this.command = { type: 'fetch', cursor: f.portalname ?? null, move: f.ismove === true };
        return null;
      }
      case 'ClosePortalStmt':
        this.command = { type: 'close', cursor: payload(stmt, 'ClosePortalStmt').portalname ?? null };
        return null;
      case 'CopyStmt':
        return this.copy(payload(stmt, 'CopyStmt'));
      case 'TruncateStmt': {
        for (const r of payload(stmt, 'TruncateStmt').relations ?? []) {
          const rv = as(r, 'RangeVar');
          if (!rv) continue;
          const idx = this.addRelation(rv, 'write', null);
          this.columnAccess.push({ relation: idx, columns: null, access: 'write' });
        }
        return null;
      }
      case 'VariableSetStmt':
        this.variableSet(payload(stmt, 'VariableSetStmt'));
        return null;
      case 'TransactionStmt':
        this.transaction = transactionControl(payload(stmt, 'TransactionStmt'));
        return null;
      case 'ListenStmt': {
        const channel = payload(stmt, 'ListenStmt').conditionname ?? '';
        this.command = { type: 'listen', channel };
        this.sessionState.push({ kind: 'listen', reason: `LISTEN ${channel} subscribes the session, not the transaction` });
        return null;
      }
      case 'UnlistenStmt': {
        const channel = payload(stmt, 'UnlistenStmt').conditionname ?? null;
        this.command = { type: 'unlisten', channel };
        this.sessionState.push({ kind: 'unlisten', reason: 'UNLISTEN changes the session’s subscriptions' });
        return null;
      }
      case 'NotifyStmt': {
        const n = payload(stmt, 'NotifyStmt');
        this.command = { type: 'notify', channel: n.conditionname ?? '', payload: n.payload ?? null };
        return null;
      }
      case 'DiscardStmt':
        this.sessionState.push({ kind: 'discard', reason: `${commandTag(stmt)} resets session state (plans, temporary tables, sequences)` });
        return null;
      case 'LoadStmt':
        this.sessionState.push({ kind: 'load', reason: 'LOAD loads a shared library into the server process for the rest of the session' });
        return null;
      case 'DoStmt':
        this.opaque = 'DO block';
        return null;
      case 'CallStmt': {
        const c = payload(stmt, 'CallStmt');
        this.opaque = 'procedure CALL';
        if (c.funccall) {
          const s = this.newScope('utility', null);
          this.funcCall(c.funccall, s.id, null, null);
          this.close(s);
        }
        return null;
      }
      case 'CreateTableAsStmt': {
        const c = payload(stmt, 'CreateTableAsStmt');
        const rel = c.into?.rel;
        const temp = rel?.relpersistence === 't';
        const q = c.query ? this.statement(c.query) : null;
        if (rel) {
          const idx = this.addRelation(rel, 'write', null);
          const cols = c.into?.colNames ? names(c.into.colNames) : null;
          if (q !== null) this.flows.push({ relation: idx, columns: cols, source: { scope: q } });
          if (temp && c.into?.onCommit !== 'ONCOMMIT_DROP') this.tempObject('table', rel.relname);
        }
        return q;
      }
      case 'ViewStmt': {
        const v = payload(stmt, 'ViewStmt');
        const q = v.query ? this.statement(v.query) : null;
        if (v.view) {
          this.addRelation(v.view, 'write', null);
          if (v.view.relpersistence === 't') this.tempObject('view', v.view.relname);
        }
        return q;
      }
      case 'CreateStmt': {
        const c = payload(stmt, 'CreateStmt');
        if (c.relation && (c.relation.relpersistence === 't' || c.relation.schemaname === 'pg_temp') && c.oncommit !== 'ONCOMMIT_DROP') {
          this.tempObject('table', c.relation.relname);
        }
        this.utility(stmt, true);
        return null;
      }
      case 'CreateSeqStmt': {
        const c = payload(stmt, 'CreateSeqStmt');
        if (c.sequence?.relpersistence === 't') this.tempObject('sequence', c.sequence.relname);
        this.utility(stmt, true);
        return null;
      }
      case 'DropStmt': {
        const d = payload(stmt, 'DropStmt');
        const t = d.removeType;
        if (t === 'OBJECT_TABLE' || t === 'OBJECT_VIEW' || t === 'OBJECT_MATVIEW' || t === 'OBJECT_FOREIGN_TABLE') {
          for (const o of d.objects ?? []) {
            const parts = dropObjectNames(o);
            const name = parts[parts.length - 1];
            if (name === undefined) continue;
            const schema = parts.length > 1 ? (parts[parts.length - 2] ?? null) : null;
            this.relations.push({ schema, name, alias: null, access: 'write', temp: schema === 'pg_temp', scope: null, location: -1 });
            this.writes = true;
          }
        }
        return null;
      }
      default:
        this.utility(stmt, isDdl(stmt));
        return null;
    }
  }

  private tempObject(what: string, name: string | undefined): void {
    this.sessionState.push({ kind: 'temporary object', reason: `temporary ${what} ${name ?? ''} lives until the session ends` });
  }

  /** A query-producing node in any position: SELECT (incl. VALUES, set operations), INSERT, UPDATE, DELETE, MERGE. */
  private query(n: Node, parent: number | null, env: CteEnv): number {
    const tag = tagOf(n);
    switch (tag) {
      case 'SelectStmt':
        return this.select(payload(n, 'SelectStmt'), parent, env);
      case 'InsertStmt':
        return this.insert(payload(n, 'InsertStmt'), parent, env);
      case 'UpdateStmt':
        return this.update(payload(n, 'UpdateStmt'), parent, env);
      case 'DeleteStmt':
        return this.delete(payload(n, 'DeleteStmt'), parent, env);
      case 'MergeStmt':
        return this.merge(payload(n, 'MergeStmt'), parent, env);
      default: {
        // Not a query (e.g. a utility statement inside EXPLAIN/PREPARE): walk it, fail-closed.
        const s = this.newScope('utility', parent);
        this.utility(n, false);
        return this.close(s);
      }
    }
  }

  private withClause(w: WithClause | undefined, s: MutableScope, parent: number | null, env: CteEnv): CteEnv {
    if (!w?.ctes) return env;
    const recursive = w.recursive === true;
    const defs: { name: string; cte: number; query: Node | undefined }[] = [];
    // Reserve the CTE definitions first so that a recursive CTE (and its siblings) can see them.
    for (const c of w.ctes) {
      const cte = as(c, 'CommonTableExpr');
      if (!cte) continue;
      const name = cte.ctename ?? '';
      this.ctes.push({ name, scope: -1, columnAliases: cte.aliascolnames ? names(cte.aliascolnames) : null, recursive, searchOrCycle: cte.search_clause !== undefined || cte.cycle_clause !== undefined });
      const idx = this.ctes.length - 1;
      s.ctes.push(idx);
      defs.push({ name, cte: idx, query: cte.ctequery });
    }
    let all: CteEnv = env;
    if (recursive) for (const d of defs) all = { name: d.name, cte: d.cte, next: all };
    let visible: CteEnv = env;
    for (const d of defs) {
      // WITH RECURSIVE: every CTE of the list is visible in every body. Plain WITH: only earlier ones
      // (so `WITH customers AS (SELECT * FROM customers)` reads the real table inside).
      const bodyEnv = recursive ? all : visible;
      const scope = d.query ? this.query(d.query, parent, bodyEnv) : this.close(this.newScope('utility', parent));
      const prev = this.ctes[d.cte];
      if (prev) this.ctes[d.cte] = { ...prev, scope };
      visible = { name: d.name, cte: d.cte, next: visible };
    }
    return recursive ? all : visible;
  }

  private select(sel: SelectStmt, parent: number | null, env: CteEnv): number {
    const s = this.newScope('select', parent);
    env = this.withClause(sel.withClause, s, parent, env);
    if (sel.op && sel.op !== 'SETOP_NONE') {
      s.kind = 'setop';
      const left = sel.larg ? this.select(sel.larg, parent, env) : this.close(this.newScope('utility', parent));
      const right = sel.rarg ? this.select(sel.rarg, parent, env) : this.close(this.newScope('utility', parent));
      const op = sel.op === 'SETOP_UNION' ? 'UNION' : sel.op === 'SETOP_INTERSECT' ? 'INTERSECT' : 'EXCEPT';
      s.setOp = { op, all: sel.all === true, left, right };
      s.positions = outputPositions(sel.sortClause);
      this.exprs(sel.sortClause, s.id, env, null, true);
      this.expr(sel.limitCount, s.id, env, null);
      this.expr(sel.limitOffset, s.id, env, null);
      if (sel.lockingClause?.length) this.locks = true;
      return this.close(s);
    }
    if (sel.valuesLists) {
      s.kind = 'values';
      const sinks: Sink[] = [];
      for (const row of sel.valuesLists) {
        const items = as(row, 'List')?.items ?? [];
        items.forEach((item, i) => {
          let sink = sinks[i];
          if (!sink) {
            sink = newSink();
            sinks[i] = sink;
          }
          this.expr(item, s.id, env, sink);
        });
      }
      s.outputs = sinks.map((k, i) => ({ name: `column${i + 1}`, star: null, refs: k.refs, scopes: k.scopes, plain: false, composite: false }));
      s.positions = outputPositions(sel.sortClause);
      this.exprs(sel.sortClause, s.id, env, null, true);
      this.expr(sel.limitCount, s.id, env, null);
      this.expr(sel.limitOffset, s.id, env, null);
      return this.close(s);
    }
    for (const f of sel.fromClause ?? []) {
      const item = this.fromItem(f, s.id, env);
      if (item) s.from.push(item);
    }
    if (sel.intoClause?.rel) {
      const rel = sel.intoClause.rel;
      const idx = this.addRelation(rel, 'write', null);
      this.flows.push({ relation: idx, columns: sel.intoClause.colNames ? names(sel.intoClause.colNames) : null, source: { scope: s.id } });
      if (rel.relpersistence === 't' && sel.intoClause.onCommit !== 'ONCOMMIT_DROP') this.tempObject('table', rel.relname);
    }
    s.outputs = this.targetList(sel.targetList, s.id, env);
    // SELECT DISTINCT has a list with one empty node; DISTINCT ON lists its expressions.
    s.distinct = Array.isArray(sel.distinctClause) && sel.distinctClause.some((d) => tagOf(d) === undefined);
    // GROUP BY groups rows by equality: a bare column (or output position) there is an equality use;
    // inside grouping sets (ROLLUP, CUBE…) it stays a filter.
    const grouping = (sel.groupClause ?? []).filter((g) => tagOf(g) !== 'GroupingSet');
    s.positions = [...outputPositions(sel.sortClause), ...outputPositions(sel.groupClause?.filter((g) => !grouping.includes(g))), ...outputPositions(sel.distinctClause)];
    s.groupPositions = outputPositions(grouping);
    this.expr(sel.whereClause, s.id, env, null);
    for (const g of sel.groupClause ?? []) {
      const cr = grouping.includes(g) ? bareColumnRef(g) : undefined;
      if (cr) this.equalities.push({ kind: 'group', label: 'GROUP BY', refs: [this.columnRef(cr, s.id, null, true, false)], operator: null });
      else this.expr(g, s.id, env, null, true);
    }
    this.expr(sel.havingClause, s.id, env, null);
    this.exprs(sel.windowClause, s.id, env, null);
    this.exprs(sel.distinctClause, s.id, env, null, true);
    this.exprs(sel.sortClause, s.id, env, null, true);
    this.expr(sel.limitCount, s.id, env, null);
    this.expr(sel.limitOffset, s.id, env, null);
    if (sel.lockingClause?.length) this.locks = true; // lockedRels name FROM items, not new relations
    return this.close(s);
  }

  private targetList(list: readonly Node[] | undefined, scope: number, env: CteEnv): OutputColumn[] {
    const outs: OutputColumn[] = [];
    for (const t of list ?? []) {
      const rt = as(t, 'ResTarget');
      if (!rt) continue;
      outs.push(this.output(rt, scope, env));
    }
    return outs;
  }

  private output(rt: ResTarget, scope: number, env: CteEnv): OutputColumn {
    const val = rt.val;
    const cr = as(val, 'ColumnRef');
    if (cr) {
      const last = cr.fields?.[cr.fields.length - 1];
      if (tagOf(last) === 'A_Star') {
        const ref = this.columnRef(cr, scope, null, false, true, DIRECT);
        const info = this.columns[ref];
        return { name: null, star: { qualifier: info?.qualifier ?? [], ref }, refs: [ref], scopes: [], plain: true, composite: false };
      }
    }
    const sink = newSink();
    this.expr(val, scope, env, sink);
    const ind = as(val, 'A_Indirection');
    const last = ind?.indirection?.[ind.indirection.length - 1];
    const composite = last !== undefined && tagOf(last) === 'A_Star';
    return { name: rt.name ?? (composite ? null : figureColname(val)), star: null, refs: sink.refs, scopes: sink.scopes, plain: cr !== undefined, composite };
  }

  private returning(r: { exprs?: Node[] } | undefined, scope: number, env: CteEnv): OutputColumn[] {
    return r?.exprs ? this.targetList(r.exprs, scope, env) : [];
  }

  private insert(ins: InsertStmt, parent: number | null, env: CteEnv): number {
    const s = this.newScope('insert', parent);
    env = this.withClause(ins.withClause, s, parent, env);
    if (!ins.relation) return this.close(s);
    const rel = this.addRelation(ins.relation, 'write', s.id);
    const alias = ins.relation.alias?.aliasname ?? null;
    s.from.push({ type: 'relation', relation: rel, alias, columnAliases: null });
    const cols: string[] | null = ins.cols?.length ? ins.cols.map((c) => as(c, 'ResTarget')?.name ?? '') : null;
    this.columnAccess.push({ relation: rel, columns: cols, access: 'write' });
    if (ins.selectStmt) {
      // The source does not see the target table: its parent is the INSERT's parent.
      const src = this.query(ins.selectStmt, parent, env);
      this.flows.push({ relation: rel, columns: cols, source: { scope: src } });
    }
    const oc = ins.onConflictClause;
    if (oc) {
      const qual = alias ?? ins.relation.relname ?? '';
      for (const e of oc.infer?.indexElems ?? []) {
        const ie = as(e, 'IndexElem');
        if (ie?.name) this.syntheticRef([qual], ie.name, s.id);
        if (ie?.expr) this.expr(ie.expr, s.id, env, null);
      }
      this.expr(oc.infer?.whereClause, s.id, env, null);
      if (oc.action === 'ONCONFLICT_UPDATE') {
        s.from.push({ type: 'relation', relation: rel, alias: 'excluded', columnAliases: null });
        this.assignments(oc.targetList, rel, s.id, env);
        this.expr(oc.whereClause, s.id, env, null);
      }
    }
    s.outputs = this.returning(ins.returningClause, s.id, env);
    return this.close(s);
  }

  private syntheticRef(qualifier: string[], name: string, scope: number, via: ValuePath | null = null): number {
    this.columns.push({ qualifier, name, form: 'column', scope, outputAlias: false, location: -1, via });
    return this.columns.length - 1;
  }

  /** UPDATE SET / ON CONFLICT DO UPDATE SET / MERGE UPDATE SET: written columns and where their values come from. */
  private assignments(list: readonly Node[] | undefined, rel: number, scope: number, env: CteEnv): void {
    const written: string[] = [];
    for (const t of list ?? []) {
      const rt = as(t, 'ResTarget');
      if (!rt) continue;
      const col = rt.name ?? '';
      written.push(col);
      this.exprs(rt.indirection, scope, env, null);
      const sink = newSink();
      this.expr(rt.val, scope, env, sink);
      this.flows.push({ relation: rel, columns: [col], source: { refs: sink.refs, scopes: sink.scopes } });
    }
    if (written.length) this.columnAccess.push({ relation: rel, columns: written, access: 'write' });
  }

  private update(upd: UpdateStmt, parent: number | null, env: CteEnv): number {
    const s = this.newScope('update', parent);
    env = this.withClause(upd.withClause, s, parent, env);
    if (!upd.relation) return this.close(s);
    const rel = this.addRelation(upd.relation, 'write', s.id);
    s.from.push({ type: 'relation', relation: rel, alias: upd.relation.alias?.aliasname ?? null, columnAliases: null });
    for (const f of upd.fromClause ?? []) {
      const item = this.fromItem(f, s.id, env);
      if (item) s.from.push(item);
    }
    this.assignments(upd.targetList, rel, s.id, env);
    this.expr(upd.whereClause, s.id, env, null);
    s.outputs = this.returning(upd.returningClause, s.id, env);
    return this.close(s);
  }

  private delete(del: DeleteStmt, parent: number | null, env: CteEnv): number {
    const s = this.newScope('delete', parent);
    env = this.withClause(del.withClause, s, parent, env);
    if (!del.relation) return this.close(s);
    const rel = this.addRelation(del.relation, 'write', s.id);
    s.from.push({ type: 'relation', relation: rel, alias: del.relation.alias?.aliasname ?? null, columnAliases: null });
    for (const f of del.usingClause ?? []) {
      const item = this.fromItem(f, s.id, env);
      if (item) s.from.push(item);
    }
    // A deleted row loses every value: all columns are written.
    this.columnAccess.push({ relation: rel, columns: null, access: 'write' });
    this.expr(del.whereClause, s.id, env, null);
    s.outputs = this.returning(del.returningClause, s.id, env);
    return this.close(s);
  }

  private merge(m: MergeStmt, parent: number | null, env: CteEnv): number {
    const s = this.newScope('merge', parent);
    env = this.withClause(m.withClause, s, parent, env);
    if (!m.relation) return this.close(s);
    const rel = this.addRelation(m.relation, 'write', s.id);
    s.from.push({ type: 'relation', relation: rel, alias: m.relation.alias?.aliasname ?? null, columnAliases: null });
    if (m.sourceRelation) {
      const item = this.fromItem(m.sourceRelation, s.id, env);
      if (item) s.from.push(item);
    }
    this.expr(m.joinCondition, s.id, env, null);
    for (const w of m.mergeWhenClauses ?? []) {
      const wc = as(w, 'MergeWhenClause');
      if (!wc) continue;
      this.expr(wc.condition, s.id, env, null);
      if (wc.commandType === 'CMD_UPDATE') this.assignments(wc.targetList, rel, s.id, env);
      else if (wc.commandType === 'CMD_INSERT') {
        const cols = wc.targetList?.length ? wc.targetList.map((t) => as(t, 'ResTarget')?.name ?? '') : null;
        this.columnAccess.push({ relation: rel, columns: cols, access: 'write' });
        const sink = newSink();
        this.exprs(wc.values, s.id, env, sink);
        this.flows.push({ relation: rel, columns: cols, source: { refs: sink.refs, scopes: sink.scopes } });
      } else if (wc.commandType === 'CMD_DELETE') this.columnAccess.push({ relation: rel, columns: null, access: 'write' });
    }
    s.outputs = this.returning(m.returningClause, s.id, env);
    return this.close(s);
  }

  private copy(c: CopyStmt): number | null {
    const target: 'stdio' | 'file' | 'program' = c.is_program ? 'program' : c.filename ? 'file' : 'stdio';
    if (target !== 'stdio') this.serverFile = true;
    const direction = c.is_from ? 'from' : 'to';
    this.command = { type: 'copy', direction, target, query: c.query !== undefined };
    if (c.query) return this.statement(c.query);
    if (!c.relation) return null;
    const s = this.newScope('copy', null);
    const access: RelationAccess = c.is_from ? 'write' : 'read';
    const rel = this.addRelation(c.relation, access, s.id);
    s.from.push({ type: 'relation', relation: rel, alias: null, columnAliases: null });
    const cols = c.attlist?.length ? names(c.attlist) : null;
    this.columnAccess.push({ relation: rel, columns: cols, access });
    this.expr(c.whereClause, s.id, null, null);
    if (!c.is_from) {
      // COPY table TO: the copied columns are the result; model them as the block's outputs.
      if (cols) s.outputs = cols.map((col) => {
        const ref = this.syntheticRef([], col, s.id, DIRECT);
        return { name: col, star: null, refs: [ref], scopes: [], plain: true, composite: false };
      });
      else {
        const ref = this.columns.push({ qualifier: [], name: '*', form: 'star', scope: s.id, outputAlias: false, location: -1, via: DIRECT }) - 1;
        s.outputs = [{ name: null, star: { qualifier: [], ref }, refs: [ref], scopes: [], plain: true, composite: false }];
      }
    }
    this.close(s);
    return c.is_from ? null : s.id;
  }

  private variableSet(v: VariableSetStmt): void {
    const local = v.is_local === true;
    const kind = v.kind ?? 'VAR_SET_VALUE';
    const action: SetAction =
      kind === 'VAR_SET_DEFAULT' ? 'set default' : kind === 'VAR_SET_CURRENT' ? 'set from current' : kind === 'VAR_SET_MULTI' ? 'set multi' : kind === 'VAR_RESET' ? 'reset' : kind === 'VAR_RESET_ALL' ? 'reset all' : 'set';
    const name = kind === 'VAR_RESET_ALL' ? null : (v.name ?? '').toLowerCase();
    const values: string[] = [];
    if (kind === 'VAR_SET_VALUE') for (const a of v.args ?? []) values.push(constText(a) ?? typeCastText(a) ?? '');
    const value = kind === 'VAR_SET_VALUE' ? values.join(', ') : null;
    this.setting = { action, name, values, value, local };
    if (name !== null && name.startsWith('scalple.')) {
      const reset = action === 'reset' || action === 'set default';
      this.scalpleSetting = { name, key: name.slice('scalple.'.length), value: reset ? null : value, local, reset };
      return; // handled by the proxy, never forwarded: not session state upstream
    }
    if (local || kind === 'VAR_SET_MULTI' && name === 'transaction') return;
    if (kind === 'VAR_RESET_ALL') this.sessionState.push({ kind: 'reset', reason: 'RESET ALL resets every session setting' });
    else if (name === 'role') this.sessionState.push({ kind: 'role', reason: `SET ROLE changes the privileges of the session (${value ?? 'default'})` });
    else if (name === 'session_authorization') this.sessionState.push({ kind: 'session authorization', reason: 'SET SESSION AUTHORIZATION changes the session user' });
    else if (name === 'search_path') this.sessionState.push({ kind: 'search_path', reason: 'SET search_path changes name resolution for the rest of the session' });
    else if (name === 'session characteristics') this.sessionState.push({ kind: 'session characteristics', reason: 'SET SESSION CHARACTERISTICS changes the defaults of later transactions' });
    else if (action === 'reset') this.sessionState.push({ kind: 'reset', reason: `RESET ${name ?? ''} changes a setting for the rest of the session` });
    else this.sessionState.push({ kind: 'set', reason: `SET ${name ?? ''} (without LOCAL) lasts for the rest of the session` });
  }

  // --- FROM items ---

  private fromItem(n: Node, scope: number, env: CteEnv): FromItem | null {
    const tag = tagOf(n);
    switch (tag) {
      case 'RangeVar':
        return this.rangeVarItem(payload(n, 'RangeVar'), scope, env);
      case 'RangeSubselect': {
        const r = payload(n, 'RangeSubselect');
        const sub = r.subquery ? this.query(r.subquery, scope, env) : this.close(this.newScope('utility', scope));
        return { type: 'subquery', scope: sub, alias: r.alias?.aliasname ?? null, columnAliases: aliasColumns(r.alias), lateral: r.lateral === true };
      }
      case 'RangeFunction': {
        const r = payload(n, 'RangeFunction');
        const fnames: string[] = [];
        let coldefs: string[] | null = null;
        for (const f of r.functions ?? []) {
          const items = as(f, 'List')?.items ?? [];
          const call = items[0];
          const fc = as(call, 'FuncCall');
          if (fc) {
            const parts = names(fc.funcname);
            fnames.push(parts[parts.length - 1] ?? '');
          }
          this.expr(call, scope, env, null);
          const defs = items[1] ? as(items[1], 'List')?.items : undefined;
          if (defs?.length) coldefs = [...(coldefs ?? []), ...defs.map((d) => as(d, 'ColumnDef')?.colname ?? '')];
        }
        if (r.coldeflist?.length) coldefs = r.coldeflist.map((d) => as(d, 'ColumnDef')?.colname ?? '');
        const aliasCols = aliasColumns(r.alias);
        let cols = aliasCols ?? coldefs;
        if (cols && r.ordinality && !aliasCols) cols = [...cols, 'ordinality'];
        return { type: 'function', functions: fnames, alias: r.alias?.aliasname ?? null, columnAliases: cols };
      }
      case 'JoinExpr': {
        const j = payload(n, 'JoinExpr');
        const left = j.larg ? this.fromItem(j.larg, scope, env) : null;
        const right = j.rarg ? this.fromItem(j.rarg, scope, env) : null;
        this.expr(j.quals, scope, env, null);
        if (!left || !right) return left ?? right;
        return { type: 'join', left, right, alias: j.alias?.aliasname ?? null, using: names(j.usingClause), natural: j.isNatural === true };
      }
      case 'RangeTableSample': {
        const r = payload(n, 'RangeTableSample');
        this.exprs(r.args, scope, env, null);
        this.expr(r.repeatable, scope, env, null);
        return r.relation ? this.fromItem(r.relation, scope, env) : null;
      }
      case 'RangeTableFunc': {
        const r = payload(n, 'RangeTableFunc');
        this.expr(r.docexpr, scope, env, null);
        this.expr(r.rowexpr, scope, env, null);
        this.exprs(r.namespaces, scope, env, null);
        const cols: string[] = [];
        for (const c of r.columns ?? []) {
          const col = as(c, 'RangeTableFuncCol');
          if (!col) continue;
          cols.push(col.colname ?? '');
          this.expr(col.colexpr, scope, env, null);
          this.expr(col.coldefexpr, scope, env, null);
        }
        return { type: 'function', functions: ['xmltable'], alias: r.alias?.aliasname ?? null, columnAliases: aliasColumns(r.alias) ?? cols };
      }
      case 'JsonTable': {
        const r = payload(n, 'JsonTable');
        this.expr(r.context_item, scope, env, null);
        this.exprs(r.passing, scope, env, null);
        const cols: string[] = [];
        const collect = (list: readonly Node[] | undefined): void => {
          for (const c of list ?? []) {
            const col = as(c, 'JsonTableColumn');
            if (!col) continue;
            if (col.name) cols.push(col.name);
            collect(col.columns);
          }
        };
        collect(r.columns);
        return { type: 'function', functions: ['json_table'], alias: r.alias?.aliasname ?? null, columnAliases: aliasColumns(r.alias) ?? cols };
      }
      default: {
        // Unknown FROM construct: walk it for references; it contributes no known columns.
        this.expr(n, scope, env, null);
        return { type: 'function', functions: [], alias: null, columnAliases: null };
      }
    }
  }

  private rangeVarItem(rv: RangeVar, scope: number, env: CteEnv): FromItem {
    const alias = rv.alias?.aliasname ?? null;
    const columnAliases = aliasColumns(rv.alias);
    if (!rv.schemaname && !rv.catalogname) {
      const cte = this.lookupCte(env, rv.relname ?? '');
      if (cte !== undefined) return { type: 'cte', cte, alias, columnAliases };
    }
    return { type: 'relation', relation: this.addRelation(rv, 'read', scope), alias, columnAliases };
  }

  // --- expressions ---

  private exprs(list: readonly Node[] | undefined, scope: number, env: CteEnv, sink: Sink | null, outputAlias = false): void {
    if (!list) return;
    for (const n of list) this.expr(n, scope, env, sink, outputAlias);
  }

  /**
   * A sink for the values found one step further down: the same refs and blocks, with the step
   * added to the path. `unsafe` names the step when it is not on the allow-list (null when it is);
   * `shadowable` names what must still be the built-in for the step to be safe; `kind` says what
   * the step does to the value's type (see ValuePath.compares and .result), `compare` names a
   * comparing step. A step that makes a record or an array of a value a comparing step above it
   * would see is not allowed. Steps off the allow-list count as 'composite' (unknown).
   */
  private through(sink: Sink | null, unsafe: string | null, shadowable?: string, kind: StepKind = 'composite', compare?: string): Sink | null {
    if (!sink) return null;
    const p = sink.path;
    let why = p.unsafe ?? unsafe;
    let compares = p.compares;
    let result = p.result;
    if (kind === 'compare') compares = compare ?? 'a comparison';
    else if (kind !== 'same') {
      if (kind === 'composite' && compares !== null && why === null) why = comparedComposite(compares);
      compares = null;
      if (result === 'same') result = kind;
    }
    const shadow = shadowable && !p.shadowable.includes(shadowable) ? [...p.shadowable, shadowable] : p.shadowable;
    if (p.computed && why === p.unsafe && compares === p.compares && result === p.result && shadow === p.shadowable) return sink;
    const path: ValuePath = { unsafe: why, computed: true, shadowable: shadow, compares, result, combines: p.combines, aggregates: p.aggregates };
    return { refs: sink.refs, scopes: sink.scopes, path };
  }

  /** A sink one step further down that is argument `args` of combining step `step` (see ValuePath.combines), or a concatenating aggregate. */
  private combine(sink: Sink | null, step: string | null, args: readonly string[], aggregate = false): Sink | null {
    if (!sink || (step === null && !aggregate)) return sink;
    const p = sink.path;
    const combines = step === null ? p.combines : [...p.combines, ...args.map((a) => `${step}:${a}`)];
    const path: ValuePath = { ...p, combines, aggregates: p.aggregates + (aggregate ? 1 : 0) };
    return { refs: sink.refs, scopes: sink.scopes, path };
  }

  /** A new combining step: `[r]n label` (r: a record, see ValuePath.combines). */
  private nextStep(label: string, record = false): string {
    return `${record ? 'r' : ''}${this.steps++} ${label}`;
  }

  /** Walks an expression: records column refs, functions and subquery blocks; unknown nodes are walked generically. */
  private expr(n: unknown, scope: number, env: CteEnv, sink: Sink | null, outputAlias = false): void {
    if (n === undefined || n === null || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      for (const x of n) this.expr(x, scope, env, sink, outputAlias);
      return;
    }
    const tag = tagOf(n);
    if (tag === undefined) {
      if (looksLikeRangeVar(n)) return; // e.g. LockingClause.lockedRels-like names, not new references
      for (const k in n) this.expr((n as Record<string, unknown>)[k], scope, env, sink, outputAlias);
      return;
    }
    const node = n as Node;
    switch (tag) {
      case 'ColumnRef':
        this.columnRef(payload(node, 'ColumnRef'), scope, sink, outputAlias, false);
        return;
      case 'A_Const':
      case 'String':
      case 'Integer':
      case 'Float':
      case 'Boolean':
      case 'BitString':
      case 'ParamRef':
      case 'A_Star':
        return;
      case 'SortBy': {
        const sb = payload(node, 'SortBy');
        const useOp = names(sb.useOp);
        if (useOp.length) this.operators.add(useOp.join('.'));
        this.expr(sb.node, scope, env, this.through(sink, 'ORDER BY'), outputAlias);
        return;
      }
      case 'SubLink': {
        const sl = payload(node, 'SubLink');
        const type = sl.subLinkType ?? 'EXPR_SUBLINK';
        const opName = names(sl.operName);
        if (opName.length) this.operators.add(opName.join('.'));
        const value = type === 'EXPR_SUBLINK' || type === 'ARRAY_SUBLINK';
        this.expr(sl.testexpr, scope, env, this.through(sink, `a comparison with a subquery (${SUBLINK_LABELS[type] ?? type})`));
        if (sl.subselect) {
          const id = this.query(sl.subselect, scope, env);
          const s = this.scope(id);
          if (type === 'EXISTS_SUBLINK') s.existsOnly = true;
          else {
            sink?.scopes.push(id);
            // Only a scalar or ARRAY subquery passes its value on; the others compare it.
            // A scalar subquery's value is its output's; ARRAY(…) makes an array of it.
            const on = value ? this.combine(this.through(sink, null, undefined, type === 'ARRAY_SUBLINK' ? 'composite' : 'same'), null, [], type === 'ARRAY_SUBLINK') : null;
            s.use = on ? { kind: 'value', path: on.path } : { kind: 'test' };
          }
        }
        return;
      }
      case 'FuncCall':
        this.funcCall(payload(node, 'FuncCall'), scope, env, sink);
        return;
      case 'TypeCast': {
        const tc = payload(node, 'TypeCast');
        const target = castTarget(tc.typeName);
        this.expr(tc.arg, scope, env, this.through(sink, target.unsafe, target.shadowable, 'scalar'), outputAlias);
        return;
      }
      case 'CollateClause':
        this.expr(payload(node, 'CollateClause').arg, scope, env, this.through(sink, null, undefined, 'same'), outputAlias);
        return;
      case 'A_Expr': {
        const e = payload(node, 'A_Expr');
        const op = names(e.name);
        const opName = op[op.length - 1] ?? '';
        if (op.length) this.operators.add(op.join('.'));
        if (sink === null && this.equality(e, op, scope)) return;
        const concat = e.kind === 'AEXPR_OP' && opName === '||' && (op.length === 1 || (op.length === 2 && op[0] === 'pg_catalog'));
        // `||` gives text, or an array when an operand is one: it keeps its operands' kind. (A
        // scalar value and a clean array give an array of the scalar's type, which compares element
        // by element without failing on some values only: text has an ordering, json none at all.)
        const next = concat ? this.through(sink, null, 'operator ||', 'same') : this.through(sink, aExprLabel(e.kind, op));
        const step = concat && e.lexpr && e.rexpr ? this.nextStep('operator ||') : null;
        this.expr(e.lexpr, scope, env, this.combine(next, step, ['0']));
        this.expr(e.rexpr, scope, env, this.combine(next, step, ['1']));
        return;
      }
      case 'CoalesceExpr':
        this.exprs(payload(node, 'CoalesceExpr').args, scope, env, this.through(sink, null, undefined, 'same'));
        return;
      case 'RowExpr': {
        const next = this.through(sink, null, undefined, 'composite');
        const step = this.nextStep('ROW(…)', true);
        (payload(node, 'RowExpr').args ?? []).forEach((a, i) => this.expr(a, scope, env, this.combine(next, step, [String(i)])));
        return;
      }
      case 'CaseExpr': {
        const c = payload(node, 'CaseExpr');
        // Which branch is taken must not depend on a masked value: operand and conditions are
        // not on the allow-list; results are.
        this.expr(c.arg, scope, env, this.through(sink, 'a CASE operand'));
        for (const w of c.args ?? []) {
          const cw = as(w, 'CaseWhen');
          if (!cw) {
            this.expr(w, scope, env, this.through(sink, 'CASE'));
            continue;
          }
          this.expr(cw.expr, scope, env, this.through(sink, 'a CASE WHEN condition'));
          this.expr(cw.result, scope, env, this.through(sink, null, undefined, 'same'));
        }
        this.expr(c.defresult, scope, env, this.through(sink, null, undefined, 'same'));
        return;
      }
      case 'NullTest': {
        const nt = payload(node, 'NullTest');
        const cr = sink === null ? bareColumnRef(nt.arg) : undefined;
        if (cr) {
          const label = nt.nulltesttype === 'IS_NOT_NULL' ? 'IS NOT NULL' : 'IS NULL';
          this.equalities.push({ kind: 'null', label, refs: [this.columnRef(cr, scope, null, false, false)], operator: null });
          return;
        }
        this.expr(nt, scope, env, this.through(sink, NODE_LABELS.NullTest ?? 'IS NULL'), outputAlias);
        return;
      }
      case 'A_Indirection': {
        const ind = payload(node, 'A_Indirection');
        const fieldsOnly = (ind.indirection ?? []).every((x) => tagOf(x) === 'String');
        // A field of a composite value: of a type not known here (it may be a record itself).
        this.expr(ind.arg, scope, env, this.through(sink, fieldsOnly ? null : 'a subscript or (…).* expansion', undefined, 'composite'));
        this.exprs(ind.indirection, scope, env, this.through(sink, 'a subscript'));
        return;
      }
      case 'RangeVar': {
        // A relation named inside an expression-bearing utility node: count it as read.
        this.addRelation(payload(node, 'RangeVar'), 'read', null);
        return;
      }
      case 'List':
        this.exprs(payload(node, 'List').items, scope, env, sink, outputAlias);
        return;
      default:
        if (QUERY_TAGS.has(tag)) {
          const id = this.query(node, scope, env);
          sink?.scopes.push(id);
          const on = this.through(sink, 'a nested statement');
          this.scope(id).use = on ? { kind: 'value', path: on.path } : { kind: 'test' };
          return;
        }
        this.expr(payload(node, tag), scope, env, this.through(sink, NODE_LABELS[tag] ?? tag), outputAlias);
    }
  }

  /**
   * In a condition (no output in sight): `a = b`, `a <> b` or `a IS [NOT] DISTINCT FROM b` between
   * two bare column references is recorded as an equality use (see EqualityUse) instead of two
   * filters. Returns false for anything else (a literal, a parameter, an expression on either side).
   */
  private equality(e: A_Expr, op: readonly string[], scope: number): boolean {
    const opName = op[op.length - 1] ?? '';
    if (op.length > 2 || (op.length === 2 && op[0] !== 'pg_catalog')) return false;
    let label: string;
    if (e.kind === 'AEXPR_OP' && (opName === '=' || opName === '<>')) label = `operator ${opName}`;
    else if (e.kind === 'AEXPR_NOT_DISTINCT' && opName === '=') label = 'IS NOT DISTINCT FROM';
    else if (e.kind === 'AEXPR_DISTINCT' && opName === '=') label = 'IS DISTINCT FROM';
    else return false;
    const l = bareColumnRef(e.lexpr);
    const r = bareColumnRef(e.rexpr);
    if (!l || !r) return false;
    const refs = [this.columnRef(l, scope, null, false, false), this.columnRef(r, scope, null, false, false)];
    this.equalities.push({ kind: 'equal', label, refs, operator: opName });
    return true;
  }

  private funcCall(fc: FuncCall, scope: number, env: CteEnv, sink: Sink | null): void {
    this.addFunction(fc.funcname, fc.location, fc.args);
    const parts = names(fc.funcname);
    const fname = parts[parts.length - 1] ?? '';
    const builtin = parts.length === 1 || (parts.length === 2 && parts[0] === 'pg_catalog');
    // count(DISTINCT a) over a bare column: the number of distinct values, an equality use. The
    // column's value does not reach the output.
    const counted = builtin && fname === 'count' && fc.agg_distinct && fc.args?.length === 1 && !fc.agg_order?.length && !fc.over && !fc.func_variadic && !fc.agg_within_group ? bareColumnRef(fc.args[0]) : undefined;
    if (counted) {
      this.equalities.push({ kind: 'count distinct', label: 'count(DISTINCT …)', refs: [this.columnRef(counted, scope, null, false, false)], operator: null });
      this.expr(fc.agg_filter, scope, env, null);
      return;
    }
    const spec = builtin ? REDACTABLE_FUNCTIONS.get(fname) : undefined;
    let all: string | null = null;
    if (!spec) all = `function ${parts.join('.')}()`;
    else if (fc.agg_distinct) all = `DISTINCT inside ${fname}()`;
    else if (fc.func_variadic) all = `VARIADIC in ${fname}()`;
    else if (fc.agg_within_group) all = `${fname}() WITHIN GROUP`;
    else {
      if (spec.check) this.literalValues = true; // format('%s') vs format('%*s'), substring bounds
      all = spec.check?.(fc.args ?? []) ?? null;
    }
    const args = fc.args ?? [];
    const isData = (i: number): boolean => spec !== undefined && (spec.data === 'all' ? i >= (spec.from ?? 0) : spec.data.includes(i));
    // format() puts each argument in as many times as the format string names it.
    const uses = fname === 'format' ? formatUses(as(args[0], 'A_Const')?.sval?.sval, args.length - 1) : null;
    const copies = (i: number): number => (uses ? (i === 0 ? 1 : (uses[i - 1] ?? 0)) : 1);
    const dataArgs = args.reduce((n, _, i) => n + (isData(i) ? copies(i) : 0), 0);
    const step = all === null && dataArgs > 1 && COMBINING_FUNCTIONS.has(fname) ? this.nextStep(`${fname}()`) : null;
    const aggregate = all === null && CONCATENATING_AGGREGATES.has(fname);
    args.forEach((a, i) => {
      const data = isData(i);
      const next = this.through(sink, all ?? (data ? null : `argument ${i + 1} of ${fname}()`), undefined, spec?.kind ?? 'composite', `${fname}()`);
      const keys = Array.from({ length: copies(i) }, (_, j) => `${i}.${j}`);
      this.expr(a, scope, env, data ? this.combine(next, step, keys, aggregate) : next);
    });
    this.exprs(fc.agg_order, scope, env, this.through(sink, `ORDER BY inside ${fname}()`));
    this.expr(fc.agg_filter, scope, env, null);
    if (fc.over) {
      this.exprs(fc.over.partitionClause, scope, env, null);
      this.exprs(fc.over.orderClause, scope, env, null);
      this.expr(fc.over.startOffset, scope, env, null);
      this.expr(fc.over.endOffset, scope, env, null);
    }
  }

  /** Expressions with no FROM (EXECUTE parameters). */
  private utilityExprs(list: readonly Node[]): void {
    const s = this.newScope('utility', null);
    this.exprs(list, s.id, null, null);
    this.close(s);
  }

  /**
   * Any other statement: relations in its top-level fields are its targets (write when it is DDL),
   * nested queries are analysed as query blocks, expressions (CHECK, index expressions, defaults)
   * resolve against the statement's own relations.
   */
  private utility(stmt: Node, ddl: boolean): void {
    const tag = tagOf(stmt);
    if (!tag) return;
    const body: unknown = (stmt as Record<string, unknown>)[tag];
    const s = this.newScope('utility', null);
    if (isObject(body)) {
      for (const k in body) {
        const v = body[k];
        const access: RelationAccess = ddl && TARGET_FIELDS.has(k) ? 'write' : 'read';
        if (looksLikeRangeVar(v)) this.utilityRelation(v as RangeVar, access, s);
        else if (Array.isArray(v)) {
          for (const item of v) {
            const rv = as(item, 'RangeVar');
            if (rv) this.utilityRelation(rv, access, s);
            else this.utilityWalk(item, s);
          }
        } else this.utilityWalk(v, s);
      }
    }
    this.close(s);
  }

  private utilityRelation(rv: RangeVar, access: RelationAccess, s: MutableScope): void {
    const idx = this.addRelation(rv, access, s.id);
    s.from.push({ type: 'relation', relation: idx, alias: rv.alias?.aliasname ?? null, columnAliases: null });
  }

  private utilityWalk(v: unknown, s: MutableScope): void {
    if (v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      for (const x of v) this.utilityWalk(x, s);
      return;
    }
    const tag = tagOf(v);
    if (tag === undefined) {
      if (looksLikeRangeVar(v)) {
        this.utilityRelation(v as RangeVar, 'read', s);
        return;
      }
      for (const k in v) this.utilityWalk((v as Record<string, unknown>)[k], s);
      return;
    }
    const node = v as Node;
    if (QUERY_TAGS.has(tag)) {
      this.query(node, s.id, null);
      return;
    }
    switch (tag) {
      case 'RangeVar':
        this.utilityRelation(payload(node, 'RangeVar'), 'read', s);
        return;
      case 'ColumnRef':
        this.columnRef(payload(node, 'ColumnRef'), s.id, null, false, false);
        return;
      case 'FuncCall':
        this.funcCall(payload(node, 'FuncCall'), s.id, null, null);
        return;
      case 'SubLink': {
        const sl = payload(node, 'SubLink');
        this.utilityWalk(sl.testexpr, s);
        if (sl.subselect) this.query(sl.subselect, s.id, null);
        return;
      }
      case 'ExplainStmt':
      case 'CreateTableAsStmt':
      case 'PrepareStmt':
      case 'DeclareCursorStmt': {
        this.statement(node);
        return;
      }
      default:
        this.utilityWalk(payload(node, tag), s);
    }
  }
}

const ROWS: ScopeUse = Object.freeze({ kind: 'rows' });

// ---------------------------------------------------------------------------------------------
// The redaction allow-list: what a masked value may go through on its way to an output that is
// then redacted. Each entry is a built-in that cannot raise an error, wait or change the number
// of rows depending on the value it is given in a data position, and whose result is NULL only
// when its inputs are (so NULL-ness, which masks already show, is all it tells). Other arguments
// ("clean" positions: lengths, offsets, format strings) must not carry a masked value: a length
// computed from one could fail (`substr(x, 1, length(ssn) - 11)`).
// ---------------------------------------------------------------------------------------------

interface RedactableFunction {
  /** Argument positions (0-based) that may carry a masked value; 'all': every one from `from`. */
  readonly data: 'all' | readonly number[];
  readonly from?: number;
  /** A reason the whole call is not allowed (it would pick another overload), or null. */
  readonly check?: (args: readonly Node[]) => string | null;
  /** What the call does to the type of its data arguments (see StepKind): 'compare' for min/max. */
  readonly kind: StepKind;
}

function integerConstant(n: Node | undefined): boolean {
  return as(n, 'A_Const')?.ival !== undefined;
}

/**
 * A format() string that pads: a conversion with a width (`%10s`, `%-10s`, `%1$10s`, `%*s`).
 * Padding a value to a width the caller chooses costs `width - length(value)` and fails with
 * 54000 when that reaches PostgreSQL's 1 GB allocation limit: with a width near the limit, an
 * error (at once) or not (after building up to 1 GB) tells the value's length. Parsed as
 * PostgreSQL's text_format() does: `%%`, then `[n$][-…][width|*[n$]]type`.
 */
function formatPads(fmt: string): boolean {
  for (let i = 0; i < fmt.length; i++) {
    if (fmt[i] !== '%') continue;
    i++;
    if (fmt[i] === '%') continue;
    const digits = (): boolean => {
      const from = i;
      while (i < fmt.length && fmt[i]! >= '0' && fmt[i]! <= '9') i++;
      return i > from;
    };
    if (digits()) {
      if (fmt[i] !== '$') return true; // `%10s`: a width
      i++;
    }
    while (fmt[i] === '-') i++;
    if (fmt[i] === '*' || digits()) return true;
    // fmt[i] is the conversion type (s, I, L; anything else is an error whatever the values)
  }
  return false;
}

/**
 * How many times a format() string (without widths: see formatPads) puts in each of `n`
 * arguments: `%s` takes the next one, `%2$s` the second (and moves on from there). Unknown format
 * strings (not a constant): once each (the call is refused anyway).
 */
function formatUses(fmt: string | undefined, n: number): number[] {
  const uses: number[] = Array.from({ length: Math.max(0, n) }, () => (fmt === undefined ? 1 : 0));
  if (fmt === undefined) return uses;
  let next = 0;
  for (let i = 0; i < fmt.length; i++) {
    if (fmt[i] !== '%') continue;
    i++;
    if (fmt[i] === '%') continue;
    let j = i;
    while (j < fmt.length && fmt[j]! >= '0' && fmt[j]! <= '9') j++;
    if (j > i && fmt[j] === '$') {
      next = Number(fmt.slice(i, j)) - 1;
      i = j + 1;
    }
    while (fmt[i] === '-') i++;
    if (next >= 0 && next < uses.length) uses[next] = (uses[next] ?? 0) + 1;
    next++;
  }
  return uses;
}

/** Allowed functions whose result holds every data argument they are given (lag/lead, coalesce, trim pick or cut one). */
const COMBINING_FUNCTIONS = new Set(['concat', 'concat_ws', 'format', 'string_agg']);

/** Aggregates whose result holds every value they are given: an aggregate of their results multiplies copies. */
const CONCATENATING_AGGREGATES = new Set(['string_agg', 'array_agg', 'json_agg']);

export const REDACTABLE_FUNCTIONS: ReadonlyMap<string, RedactableFunction> = new Map<string, RedactableFunction>([
  ['lower', { data: [0], kind: 'scalar' }],
  ['upper', { data: [0], kind: 'scalar' }],
  ['initcap', { data: [0], kind: 'scalar' }],
  ['btrim', { data: 'all', kind: 'scalar' }],
  ['ltrim', { data: 'all', kind: 'scalar' }],
  ['rtrim', { data: 'all', kind: 'scalar' }],
  ['concat', { data: 'all', kind: 'scalar' }],
  ['concat_ws', { data: 'all', kind: 'scalar' }],
  ['left', { data: [0], kind: 'scalar' }],
  ['right', { data: [0], kind: 'scalar' }],
  ['substr', { data: [0], kind: 'scalar' }],
  // substring(x, 'pattern') is a regular expression (its time depends on the value): only the
  // integer forms, substring(x FROM 2 FOR 3).
  ['substring', { data: [0], kind: 'scalar', check: (args) => (args.slice(1).every(integerConstant) ? null : 'substring() with a pattern or non-constant bounds') }],
  ['length', { data: [0], kind: 'scalar' }],
  ['char_length', { data: [0], kind: 'scalar' }],
  ['character_length', { data: [0], kind: 'scalar' }],
  ['octet_length', { data: [0], kind: 'scalar' }],
  ['bit_length', { data: [0], kind: 'scalar' }],
  ['md5', { data: [0], kind: 'scalar' }],
  // format(): the format string must be a constant, without a width (`%10s`, or `*`: from an
  // argument) — padding to a chosen width is a length oracle at the 1 GB limit (formatPads).
  [
    'format',
    {
      data: 'all',
      from: 1,
      kind: 'scalar',
      check: (args) => {
        const fmt = as(args[0], 'A_Const')?.sval?.sval;
        if (fmt === undefined) return 'format() with a format string that is not a constant';
        return formatPads(fmt) ? 'format() with a width (padding to a chosen width)' : null;
      },
    },
  ],
  ['to_json', { data: [0], kind: 'scalar' }],
  ['row_to_json', { data: [0], kind: 'scalar' }],
  // Aggregates and window functions (their FILTER, ORDER BY, PARTITION BY and frames choose rows:
  // masked columns there are refused as filters). min/max compare the values they are given:
  // only values of built-in scalar types (a record, or an array of records, compares field by
  // field and fails on a field without ordering only when the fields before it are equal).
  ['count', { data: 'all', kind: 'scalar' }],
  ['min', { data: 'all', kind: 'compare' }],
  ['max', { data: 'all', kind: 'compare' }],
  ['string_agg', { data: 'all', kind: 'scalar' }],
  ['array_agg', { data: 'all', kind: 'composite' }],
  ['json_agg', { data: 'all', kind: 'scalar' }],
  ['first_value', { data: [0], kind: 'same' }],
  ['last_value', { data: [0], kind: 'same' }],
  ['nth_value', { data: [0], kind: 'same' }],
  ['lag', { data: [0, 2], kind: 'same' }],
  ['lead', { data: [0, 2], kind: 'same' }],
]);

/** The SQL spelling of internal type names, for messages. */
const SQL_TYPE_NAMES: Record<string, string> = {
  int2: 'smallint', int4: 'integer', int8: 'bigint', float4: 'real', float8: 'double precision', bool: 'boolean', bpchar: 'character',
  varchar: 'character varying', timestamptz: 'timestamp with time zone', timetz: 'time with time zone',
};

/** Cast targets a masked value may be cast to: text types, whose input never fails and whose explicit casts truncate instead of failing. */
const REDACTABLE_CASTS = new Set(['text', 'varchar', 'bpchar']);

function castTarget(tn: { names?: Node[]; arrayBounds?: Node[]; setof?: boolean; pct_type?: boolean } | undefined): { unsafe: string | null; shadowable?: string } {
  const parts = names(tn?.names);
  const shown = parts.filter((p) => p !== 'pg_catalog').map((p) => SQL_TYPE_NAMES[p] ?? p);
  const label = `a cast to ${shown.join('.') || '?'}${tn?.arrayBounds?.length ? '[]' : ''}`;
  if (!tn || tn.arrayBounds?.length || tn.setof || tn.pct_type) return { unsafe: label };
  const name = parts[parts.length - 1] ?? '';
  if (!REDACTABLE_CASTS.has(name)) return { unsafe: label };
  if (parts.length === 2 && parts[0] === 'pg_catalog') return { unsafe: null };
  // An unqualified name: a type of that name earlier in the search path would be used instead.
  if (parts.length === 1) return { unsafe: null, shadowable: `type ${name}` };
  return { unsafe: label };
}

const SUBLINK_LABELS: Record<string, string> = {
  ANY_SUBLINK: 'IN / ANY',
  ALL_SUBLINK: 'ALL',
  ROWCOMPARE_SUBLINK: 'row comparison',
  MULTIEXPR_SUBLINK: 'multiple assignment',
  CTE_SUBLINK: 'CTE',
  EXISTS_SUBLINK: 'EXISTS',
};

function aExprLabel(kind: string | undefined, op: readonly string[]): string {
  const name = op.join('.');
  switch (kind) {
    case 'AEXPR_OP':
      return `operator ${name}`;
    case 'AEXPR_OP_ANY':
      return `${name} ANY`;
    case 'AEXPR_OP_ALL':
      return `${name} ALL`;
    case 'AEXPR_DISTINCT':
      return 'IS DISTINCT FROM';
    case 'AEXPR_NOT_DISTINCT':
      return 'IS NOT DISTINCT FROM';
    case 'AEXPR_NULLIF':
      return 'NULLIF';
    case 'AEXPR_IN':
      return 'IN';
    case 'AEXPR_LIKE':
      return 'LIKE';
    case 'AEXPR_ILIKE':
      return 'ILIKE';
    case 'AEXPR_SIMILAR':
      return 'SIMILAR TO';
    default:
      return kind?.startsWith('AEXPR_BETWEEN') || kind?.startsWith('AEXPR_NOT_BETWEEN') ? 'BETWEEN' : `operator ${name || kind || '?'}`;
  }
}

const NODE_LABELS: Partial<Record<NodeTag, string>> = {
  BoolExpr: 'AND / OR / NOT',
  NullTest: 'IS NULL',
  BooleanTest: 'IS TRUE / IS FALSE',
  A_ArrayExpr: 'an array constructor',
  MinMaxExpr: 'GREATEST / LEAST',
  XmlExpr: 'an XML function',
  XmlSerialize: 'XMLSERIALIZE',
  NamedArgExpr: 'a named argument',
  GroupingFunc: 'GROUPING()',
  CaseWhen: 'CASE',
  A_Indices: 'a subscript',
  SQLValueFunction: 'a SQL value function',
};

/** A column reference with no `*` (`phone`, `c.phone`): the operand of an equality use. */
function bareColumnRef(n: Node | undefined): ColumnRef | undefined {
  const cr = as(n, 'ColumnRef');
  if (!cr?.fields?.length || !cr.fields.every((f) => tagOf(f) === 'String')) return undefined;
  return cr;
}

/** Integer constants in ORDER BY / GROUP BY (grouping sets included) / DISTINCT ON: PostgreSQL reads them as output positions. */
function outputPositions(list: readonly Node[] | undefined): number[] {
  const out: number[] = [];
  const visit = (n: unknown): void => {
    if (n === null || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      for (const x of n) visit(x);
      return;
    }
    const c = as(n, 'A_Const');
    if (c) {
      if (c.ival !== undefined) out.push(c.ival.ival ?? 0);
      return;
    }
    const sb = as(n, 'SortBy');
    if (sb) return visit(sb.node);
    const gs = as(n, 'GroupingSet');
    if (gs) return visit(gs.content);
  };
  visit(list);
  return out;
}

/** Top-level fields of a utility statement that name the objects it acts on. */
const TARGET_FIELDS = new Set(['relation', 'relations', 'objects', 'view', 'sequence', 'rel']);

const WRITE_KINDS_INNER = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE', 'SELECT INTO', 'CREATE TABLE AS', 'CREATE MATERIALIZED VIEW']);

function aliasColumns(alias: Alias | undefined): string[] | null {
  return alias?.colnames?.length ? names(alias.colnames) : null;
}

function typeCastText(n: Node): string | undefined {
  const tc = as(n, 'TypeCast');
  return tc ? constText(tc.arg) : undefined;
}

function transactionControl(t: TransactionStmt): TransactionControl {
  const opMap: Record<string, TransactionOp> = {
    TRANS_STMT_BEGIN: 'BEGIN',
    TRANS_STMT_START: 'START TRANSACTION',
    TRANS_STMT_COMMIT: 'COMMIT',
    TRANS_STMT_ROLLBACK: 'ROLLBACK',
    TRANS_STMT_SAVEPOINT: 'SAVEPOINT',
    TRANS_STMT_RELEASE: 'RELEASE',
    TRANS_STMT_ROLLBACK_TO: 'ROLLBACK TO',
    TRANS_STMT_PREPARE: 'PREPARE TRANSACTION',
    TRANS_STMT_COMMIT_PREPARED: 'COMMIT PREPARED',
    TRANS_STMT_ROLLBACK_PREPARED: 'ROLLBACK PREPARED',
  };
  let readOnly: boolean | null = null;
  let isolation: string | null = null;
  for (const o of t.options ?? []) {
    const d = as(o, 'DefElem');
    if (!d) continue;
    if (d.defname === 'transaction_read_only') readOnly = defBoolean(d.arg);
    else if (d.defname === 'transaction_isolation') isolation = (d.arg ? constText(d.arg) : undefined) ?? null;
  }
  return {
    op: opMap[t.kind ?? 'TRANS_STMT_BEGIN'] ?? 'BEGIN',
    savepoint: t.savepoint_name ?? null,
    gid: t.gid ?? null,
    chain: t.chain === true,
    readOnly,
    isolation,
  };
}

/** PostgreSQL's FigureColname(): the output name of an unnamed select-list expression. */
export function figureColname(n: Node | undefined): string {
  return figure(n) ?? '?column?';
}

function figure(n: Node | undefined): string | undefined {
  if (!n) return undefined;
  const tag = tagOf(n);
  switch (tag) {
    case 'ColumnRef': {
      const fields = payload(n, 'ColumnRef').fields ?? [];
      for (let i = fields.length - 1; i >= 0; i--) {
        const s = str(fields[i]);
        if (s !== undefined) return s;
      }
      return undefined;
    }
    case 'A_Indirection': {
      const ind = payload(n, 'A_Indirection');
      const list = ind.indirection ?? [];
      for (let i = list.length - 1; i >= 0; i--) {
        const s = str(list[i]);
        if (s !== undefined) return s;
      }
      return figure(ind.arg);
    }
    case 'FuncCall': {
      const parts = names(payload(n, 'FuncCall').funcname);
      return parts[parts.length - 1];
    }
    case 'A_Expr': {
      const e = payload(n, 'A_Expr');
      return e.kind === 'AEXPR_NULLIF' ? 'nullif' : undefined;
    }
    case 'TypeCast': {
      const tc = payload(n, 'TypeCast');
      const inner = figure(tc.arg);
      if (inner !== undefined) return inner;
      const tn = names(tc.typeName?.names);
      const last = tn[tn.length - 1];
      return last;
    }
    case 'CollateClause':
      return figure(payload(n, 'CollateClause').arg);
    case 'GroupingFunc':
      return 'grouping';
    case 'MergeSupportFunc':
      return 'merge_action';
    case 'SubLink': {
      const sl = payload(n, 'SubLink');
      switch (sl.subLinkType) {
        case 'EXISTS_SUBLINK': return 'exists';
        case 'ARRAY_SUBLINK': return 'array';
        case 'EXPR_SUBLINK':
        case 'MULTIEXPR_SUBLINK': {
          const sel = as(sl.subselect, 'SelectStmt');
          const first = as(sel?.targetList?.[0], 'ResTarget');
          if (first?.name) return first.name;
          return first?.val ? figure(first.val) : undefined;
        }
        default: return undefined;
      }
    }
    case 'CaseExpr':
      return 'case';
    case 'A_ArrayExpr':
      return 'array';
    case 'RowExpr':
      return 'row';
    case 'CoalesceExpr':
      return 'coalesce';
    case 'MinMaxExpr':
      return payload(n, 'MinMaxExpr').op === 'IS_LEAST' ? 'least' : 'greatest';
    case 'SQLValueFunction': {
      const op = payload(n, 'SQLValueFunction').op ?? '';
      return SVF_NAMES[op];
    }
    case 'XmlExpr':
      return 'xmlelement';
    case 'XmlSerialize':
      return 'xmlserialize';
    default:
      return undefined;
  }
}

const SVF_NAMES: Record<string, string> = {
  SVFOP_CURRENT_DATE: 'current_date',
  SVFOP_CURRENT_TIME: 'current_time',
  SVFOP_CURRENT_TIME_N: 'current_time',
  SVFOP_CURRENT_TIMESTAMP: 'current_timestamp',
  SVFOP_CURRENT_TIMESTAMP_N: 'current_timestamp',
  SVFOP_LOCALTIME: 'localtime',
  SVFOP_LOCALTIME_N: 'localtime',
  SVFOP_LOCALTIMESTAMP: 'localtimestamp',
  SVFOP_LOCALTIMESTAMP_N: 'localtimestamp',
  SVFOP_CURRENT_ROLE: 'current_role',
  SVFOP_CURRENT_USER: 'current_user',
  SVFOP_USER: 'user',
  SVFOP_SESSION_USER: 'session_user',
  SVFOP_CURRENT_CATALOG: 'current_catalog',
  SVFOP_CURRENT_SCHEMA: 'current_schema',
};

/** Parses a search_path value in its text form (`"$user", public`, as SHOW prints it) into entries. */
export function parseSearchPath(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    while (i < n && /[\s,]/.test(text[i] ?? '')) i++;
    if (i >= n) break;
    if (text[i] === '"') {
      let v = '';
      i++;
      while (i < n) {
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            v += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        v += text[i];
        i++;
      }
      out.push(v);
    } else {
      let v = '';
      while (i < n && text[i] !== ',') v += text[i++];
      out.push(v.trim().toLowerCase());
    }
  }
  return out;
}
