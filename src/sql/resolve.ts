// Resolves an Analysis against a catalog snapshot and a search_path: which tables and which
// schema.table.column values a statement reads or writes, with `*`, `t.*`, whole-row references
// and views expanded, and — the start of column lineage — which base columns flow into each
// output column of the statement's result. Cached per (text, catalog snapshot, search_path): a
// repeated execution costs a few Map lookups.
//
// Sources are reported as closures: a view column lists itself and every column (of views and
// base tables, recursively) its value comes from.
import type { Analysis, AnalysisOk, StatementInfo, FromItem, QueryScope, ColumnRefInfo, ValuePath } from './analyse.ts';
import { analyse, comparedComposite, parseSearchPath } from './analyse.ts';
import { Catalog, CatalogSnapshot, DEFAULT_SEARCH_PATH } from './catalog.ts';
import type { CatalogRelation, EffectivePath } from './catalog.ts';
import { ScalpleError } from '../errors.ts';

/** search_path as a list of entries (`['$user', 'public']`) or in its text form (`"$user", public`). */
export type SearchPathInput = readonly string[] | string;

export interface OutputLineage {
  readonly name: string;
  /** schema.table.column values that flow into this output (closure through views). */
  readonly sources: readonly string[];
  /** A bare column reference (no function, operator, cast, aggregate or subquery in between). */
  readonly plain: boolean;
}

export interface StatementAccess {
  readonly kind: string;
  readonly tables: readonly string[];
  readonly columns: readonly string[];
  readonly tablesWritten: readonly string[];
  readonly columnsWritten: readonly string[];
  /** Relations not in the catalog (created in the same transaction, or misspelt), schema from search_path. */
  readonly unknownTables: readonly string[];
  /** Column references that matched nothing, as written. */
  readonly unresolved: readonly string[];
  /** Columns read to choose, join, group or order rows, rather than returned or copied. */
  readonly filters: readonly string[];
  /**
   * The part of `filters` read otherwise than through `equalities` (WHERE ssn LIKE '1%', phone =
   * '+1555…', ORDER BY, a subquery compared…): a column used both ways is listed.
   */
  readonly otherFilters: readonly string[];
  /**
   * Rows chosen, joined, grouped or deduplicated by equality of bare column references and nothing
   * else (`a.phone = b.phone`, `USING (phone)`, `GROUP BY phone`, `DISTINCT`, `count(DISTINCT phone)`,
   * `phone IS NULL`): what such a use tells is which stored values are equal or NULL. The caller
   * decides per mask (mask-plan.ts allows them over columns hashed with the same key only).
   */
  readonly equalities: readonly Equality[];
  /** Lineage of the result columns (SELECT list, RETURNING, COPY (query), cursor and EXPLAIN queries), or null. */
  readonly outputs: readonly OutputLineage[] | null;
  /** Values copied into table columns (INSERT … SELECT/VALUES, UPDATE SET, MERGE, CREATE TABLE AS / SELECT INTO). */
  readonly flows: readonly ColumnFlow[];
  /**
   * Columns whose values go through something off the redaction allow-list on their way to an
   * output (a cast to integer, reverse(), a CASE condition…), or through any computation while
   * not of a built-in scalar type: such a value would be computed upstream in a way that can fail,
   * wait or compare depending on it. Sorted by column; `why` names the first such step.
   */
  readonly unsafe: readonly { readonly column: string; readonly why: string }[];
  /** Allowed steps that put several values into one, with the columns each argument comes from (see Combined). */
  readonly combined: readonly Combined[];
  /**
   * Per output (parallel to `outputs`): the columns each branch of a plain output comes from — one
   * branch per set-operation branch (or merged column), each the closure of one stored column.
   * For outputs that are not plain, one branch with all the sources. null when `outputs` is.
   */
  readonly outputBranches: readonly (readonly (readonly string[])[])[] | null;
  /**
   * User-defined code the statement runs: functions defined outside pg_catalog (by name, as the
   * proxy's own check), operators implemented outside C (SQL, PL/pgSQL…), and the same called by
   * the views it reads, recursively. Such code may read any table, masked columns included.
   */
  readonly userCode: readonly string[];
  /** Relations read inside the definitions of the views the statement reads (closure): read there, maybe more than once. */
  readonly viewTables: readonly string[];
}

export interface Equality {
  readonly kind: 'equal' | 'null' | 'group' | 'distinct' | 'count distinct';
  /** As written, for messages: 'operator =', 'JOIN USING', 'GROUP BY', 'DISTINCT', 'IS NULL'… */
  readonly label: string;
  /** The values compared: two or more for 'equal' (a USING column merges all its parts), one otherwise. */
  readonly operands: readonly EqualityOperand[];
  /** Why the comparison may not be the built-in equality ('operator =, which is defined outside pg_catalog here'), or null. */
  readonly shadowed: string | null;
}

export interface EqualityOperand {
  /** schema.table.column values that flow into it (closure through views). */
  readonly sources: readonly string[];
  /** A stored column's value as stored (through aliases, subqueries, CTEs, UNION ALL, views): no computation. */
  readonly plain: boolean;
  /** For a plain operand, the stored columns it may come from, one closure each (see outputBranches); otherwise one branch with all the sources. */
  readonly branches: readonly (readonly string[])[];
  /**
   * The kind of value every column it may come from holds when equality there is equality of the
   * text form ('text' for text and varchar with a deterministic collation, 'integer' for
   * smallint/integer/bigint, 'uuid'), so that equal values are exactly those with equal masks;
   * null when not (numeric 1.0 = 1.00, a case-insensitive collation, citext, unknown columns…).
   */
  readonly family: string | null;
}

export interface ColumnFlow {
  /** schema.table.column written ('schema.table.*' when the target's columns are unknown). */
  readonly target: string;
  /** schema.table.column values that flow into it. */
  readonly sources: readonly string[];
}

export interface Access {
  /** schema.table read or written: views, and the tables they read, all listed. Sorted, unique. */
  readonly tables: readonly string[];
  /** schema.table.column read or written. Sorted, unique. */
  readonly columns: readonly string[];
  readonly tablesWritten: readonly string[];
  readonly columnsWritten: readonly string[];
  readonly unknownTables: readonly string[];
  readonly unresolved: readonly string[];
  readonly statements: readonly StatementAccess[];
}

/**
 * A step that puts several values into one (`a || b`, concat(a, b), format('%1$s%1$s', a),
 * ROW(a, b), a whole-row reference) and the columns each argument comes from (closure). The
 * caller refuses it when two arguments carry masked values (for a record: when one masked column
 * fills two fields): chained, doubling a value builds 2^n copies of it and fails on PostgreSQL's
 * 1 GB limit exactly when its length times 2^n passes it (see ValuePath.combines).
 */
export interface Combined {
  readonly why: string;
  readonly record: boolean;
  readonly args: readonly (readonly string[])[];
}

export interface ViewLineage {
  /** View column -> the columns its value comes from (closure, the view column itself excluded). */
  readonly columns: ReadonlyMap<string, readonly string[]>;
  /** Columns the view reads to choose, join, group or order rows (closure). */
  readonly filters: readonly string[];
  /** Relations the view reads (closure). */
  readonly tables: readonly string[];
  /** View columns that are a bare reference to one underlying column (no function, cast, operator…), recursively. */
  readonly plainColumns: ReadonlySet<string>;
  /** false when the definition could not be analysed and pg_depend was used: every column then depends on everything the view reads. */
  readonly exact: boolean;
  /** Columns the definition computes over in ways off the redaction allow-list (see StatementAccess.unsafe), with why. */
  readonly unsafe: ReadonlyMap<string, string>;
  /** Combining steps of the definition (see Combined). */
  readonly combined: readonly Combined[];
  /** User-defined functions and operators the definition calls (recursively through views), see StatementAccess.userCode. */
  readonly userCode: readonly string[];
}

const EMPTY: readonly string[] = Object.freeze([]);
const EMPTY_COMBINED: readonly Combined[] = Object.freeze([]);
const EMPTY_ACCESS: Access = Object.freeze({
  tables: EMPTY,
  columns: EMPTY,
  tablesWritten: EMPTY,
  columnsWritten: EMPTY,
  unknownTables: EMPTY,
  unresolved: EMPTY,
  statements: Object.freeze([]),
});

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

const accessCache = new WeakMap<AnalysisOk, Map<string, Access>>();
const pathTextCache = new Map<string, readonly string[]>();

function pathEntries(searchPath: SearchPathInput): readonly string[] {
  if (typeof searchPath !== 'string') return searchPath;
  let p = pathTextCache.get(searchPath);
  if (!p) {
    p = Object.freeze(parseSearchPath(searchPath));
    if (pathTextCache.size > 256) pathTextCache.clear();
    pathTextCache.set(searchPath, p);
  }
  return p;
}

function snapshotOf(catalog: Catalog | CatalogSnapshot): CatalogSnapshot {
  if (catalog instanceof CatalogSnapshot) return catalog;
  const s = catalog.current;
  if (!s) throw new ScalpleError('INTERNAL', 'the catalog is not loaded yet: await catalog.ready() first');
  return s;
}

/**
 * Tables and columns `analysis` reads and writes, resolved against `catalog` (a Catalog: its
 * current snapshot; await `catalog.ready()` first when it may be stale) with `searchPath` in
 * effect. Cached per (analysis, snapshot, search_path). A parse failure gives empty lists.
 */
export function resolveAccess(analysis: Analysis, catalog: Catalog | CatalogSnapshot, searchPath: SearchPathInput = DEFAULT_SEARCH_PATH): Access {
  if (!analysis.ok) return EMPTY_ACCESS;
  const snap = snapshotOf(catalog);
  const entries = pathEntries(searchPath);
  const key = `${snap.uid}|${typeof searchPath === 'string' ? searchPath : entries.join(',')}`;
  let perText = accessCache.get(analysis);
  if (!perText) {
    perText = new Map();
    accessCache.set(analysis, perText);
  }
  const hit = perText.get(key);
  if (hit) return hit;
  const access = computeAccess(analysis, snap, snap.effectivePath(entries));
  if (perText.size >= 16) perText.clear();
  perText.set(key, access);
  return access;
}

function computeAccess(analysis: AnalysisOk, snap: CatalogSnapshot, path: EffectivePath): Access {
  const memo = memoFor(snap);
  const statements: StatementAccess[] = [];
  const all = { tables: new Set<string>(), columns: new Set<string>(), tw: new Set<string>(), cw: new Set<string>(), unknown: new Set<string>(), unresolved: new Set<string>() };
  for (const st of analysis.statements) {
    const r = new StatementResolver(st, snap, memo, path);
    let outputs: OutputLineage[] | null;
    let outputBranches: (readonly (readonly string[])[])[] | null;
    let flows: ColumnFlow[];
    try {
      r.run();
      const outs = st.root !== null ? r.outputs(st.root) : null;
      outputs = outs ? outs.map((o) => Object.freeze({ name: o.name, sources: sorted(o.src), plain: o.plain })) : null;
      outputBranches = outs ? outs.map((o) => Object.freeze(o.plain ? branchesOf(o).map((b) => sorted(b)) : [sorted(o.src)])) : null;
      flows = r.flows();
    } catch (err) {
      // An analyser bug must not pass as "reads nothing": the caller refuses the statement.
      throw new ScalpleError('INTERNAL', `could not resolve the tables and columns of a ${st.kind} statement: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const sa: StatementAccess = Object.freeze({
      kind: st.kind,
      tables: sorted(r.tables),
      columns: sorted(union(r.read, r.written)),
      tablesWritten: sorted(r.tablesWritten),
      columnsWritten: sorted(r.written),
      unknownTables: sorted(r.unknownTables),
      unresolved: sorted(r.unresolved),
      filters: sorted(r.filters),
      otherFilters: sorted(r.otherFilters),
      equalities: Object.freeze(r.equalityList()),
      outputs: outputs ? Object.freeze(outputs) : null,
      flows: Object.freeze(flows),
      unsafe: Object.freeze([...r.unsafe].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([column, why]) => Object.freeze({ column, why }))),
      combined: Object.freeze([...r.combined]),
      outputBranches: outputBranches ? Object.freeze(outputBranches) : null,
      userCode: sorted(r.userCode),
      viewTables: sorted(r.viewTables),
    });
    statements.push(sa);
    for (const t of sa.tables) all.tables.add(t);
    for (const c of sa.columns) all.columns.add(c);
    for (const t of sa.tablesWritten) all.tw.add(t);
    for (const c of sa.columnsWritten) all.cw.add(c);
    for (const t of sa.unknownTables) all.unknown.add(t);
    for (const u of sa.unresolved) all.unresolved.add(u);
  }
  return Object.freeze({
    tables: sorted(all.tables),
    columns: sorted(all.columns),
    tablesWritten: sorted(all.tw),
    columnsWritten: sorted(all.cw),
    unknownTables: sorted(all.unknown),
    unresolved: sorted(all.unresolved),
    statements: Object.freeze(statements),
  });
}

/** Per-column lineage of a view or materialized view (computed once per snapshot). */
export function viewLineage(catalog: Catalog | CatalogSnapshot, rel: CatalogRelation): ViewLineage {
  const snap = snapshotOf(catalog);
  return lineageOfView(snap, memoFor(snap), rel);
}

/** The columns a relation's column reads: itself, plus for views every column behind it. */
export function columnSources(catalog: Catalog | CatalogSnapshot, rel: CatalogRelation, column: string): readonly string[] {
  const snap = snapshotOf(catalog);
  return colSrc(snap, memoFor(snap), rel, column);
}

function sorted(s: Iterable<string>): readonly string[] {
  return Object.freeze([...s].sort());
}

function union(a: Iterable<string>, b: Iterable<string>): Set<string> {
  const s = new Set(a);
  for (const x of b) s.add(x);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Per-snapshot memo: column sources and view lineage
// ---------------------------------------------------------------------------------------------

interface Memo {
  readonly colSrc: Map<CatalogRelation, Map<string, readonly string[]>>;
  readonly views: Map<CatalogRelation, ViewLineage | null>; // null: being computed
}

const memos = new WeakMap<CatalogSnapshot, Memo>();

function memoFor(snap: CatalogSnapshot): Memo {
  let m = memos.get(snap);
  if (!m) {
    m = { colSrc: new Map(), views: new Map() };
    memos.set(snap, m);
  }
  return m;
}

function isViewLike(rel: CatalogRelation): boolean {
  return rel.relkind === 'v' || rel.relkind === 'm';
}

function colPlain(snap: CatalogSnapshot, memo: Memo, rel: CatalogRelation, column: string): boolean {
  return isViewLike(rel) ? lineageOfView(snap, memo, rel).plainColumns.has(column) : true;
}

function colSrc(snap: CatalogSnapshot, memo: Memo, rel: CatalogRelation, column: string): readonly string[] {
  let perRel = memo.colSrc.get(rel);
  if (!perRel) {
    perRel = new Map();
    memo.colSrc.set(rel, perRel);
  }
  const hit = perRel.get(column);
  if (hit) return hit;
  const own = `${snap.qualifiedName(rel)}.${column}`;
  let result: readonly string[] = [own];
  if (isViewLike(rel)) {
    const vl = lineageOfView(snap, memo, rel);
    const behind = vl.columns.get(column);
    if (behind?.length) result = [own, ...behind];
  }
  result = Object.freeze(result);
  perRel.set(column, result);
  return result;
}

function lineageOfView(snap: CatalogSnapshot, memo: Memo, rel: CatalogRelation): ViewLineage {
  const known = memo.views.get(rel);
  if (known) return known;
  if (known === null) return dependLineage(snap, memo, rel, false); // a cycle: should not happen in PostgreSQL
  memo.views.set(rel, null);
  let result: ViewLineage;
  try {
    result = parsedLineage(snap, memo, rel) ?? dependLineage(snap, memo, rel, true);
  } catch {
    result = dependLineage(snap, memo, rel, true);
  }
  memo.views.set(rel, result);
  return result;
}

/** Lineage from the view's definition, analysed with the real parser and resolved like any query. */
function parsedLineage(snap: CatalogSnapshot, memo: Memo, rel: CatalogRelation): ViewLineage | undefined {
  if (!rel.definition) return undefined;
  const a = analyse(rel.definition);
  if (!a.ok || a.statements.length !== 1) return undefined;
  const st = a.statements[0];
  if (!st || st.root === null) return undefined;
  // pg_get_viewdef() qualifies exactly the names the loading session's search path would not find.
  const path = snap.effectivePath(snap.loadSearchPath.length ? snap.loadSearchPath : DEFAULT_SEARCH_PATH);
  const r = new StatementResolver(st, snap, memo, path);
  r.run();
  const outs = r.outputs(st.root);
  if (outs.length !== rel.columns.length || r.unresolved.size > 0 || r.unknownTables.size > 0) return undefined;
  const columns = new Map<string, readonly string[]>();
  const plainColumns = new Set<string>();
  const covered = new Set<string>();
  rel.columns.forEach((c, i) => {
    const out = outs[i];
    const src = out?.src ?? new Set<string>();
    columns.set(c.name, Object.freeze([...src].sort()));
    // A column that is a set operation over several stored columns is not one stored value.
    if (out?.plain && branchesOf(out).length <= 1) plainColumns.add(c.name);
    for (const s of src) covered.add(s);
  });
  // Every filter of the definition, equality uses included: a view is judged as a whole (conservative).
  const filters = new Set(r.filters);
  // Cross-check with pg_depend: whatever the database says the view reads and the lineage does not
  // place in an output is counted as read to choose rows (conservative).
  for (const s of dependColumns(snap, memo, rel)) if (!covered.has(s)) filters.add(s);
  const tables = new Set(r.tables);
  for (const t of dependTables(snap, memo, rel)) tables.add(t);
  const name = snap.qualifiedName(rel);
  const userCode = [...r.userCode].map((u) => (u.endsWith(')') && u.includes(' (in view ') ? u : `${u} (in view ${name})`));
  return Object.freeze({ columns, plainColumns, filters: sorted(filters), tables: sorted(tables), exact: true, unsafe: new Map(r.unsafe), combined: Object.freeze([...r.combined]), userCode: sorted(userCode) });
}

/** A function that is not pg_catalog's: schema-qualified elsewhere, or a name some schema outside pg_catalog defines. */
function isUserFunction(snap: CatalogSnapshot, schema: string | null, name: string): boolean {
  if (schema !== null) return schema !== 'pg_catalog';
  return snap.shadows.has(`function ${name}`);
}

function dependColumns(snap: CatalogSnapshot, memo: Memo, rel: CatalogRelation): Set<string> {
  const out = new Set<string>();
  for (const d of rel.dependsOn) {
    if (d.attnum <= 0) continue;
    const hit = snap.columnByAttnum(d.oid, d.attnum);
    if (hit) for (const s of colSrc(snap, memo, hit.relation, hit.column.name)) out.add(s);
  }
  return out;
}

function dependTables(snap: CatalogSnapshot, memo: Memo, rel: CatalogRelation): Set<string> {
  const out = new Set<string>();
  for (const d of rel.dependsOn) {
    const r = snap.relationByOid(d.oid);
    if (!r) continue;
    out.add(snap.qualifiedName(r));
    if (isViewLike(r)) for (const t of lineageOfView(snap, memo, r).tables) out.add(t);
  }
  return out;
}

/** Conservative lineage from pg_depend only: every view column may carry anything the view reads. */
function dependLineage(snap: CatalogSnapshot, memo: Memo, rel: CatalogRelation, recurse: boolean): ViewLineage {
  const cols = recurse ? dependColumns(snap, memo, rel) : new Set<string>();
  const all = Object.freeze([...cols].sort());
  const columns = new Map<string, readonly string[]>();
  for (const c of rel.columns) columns.set(c.name, all);
  const tables = recurse ? dependTables(snap, memo, rel) : new Set<string>();
  // A user view whose definition could not be analysed may call anything (system views are built in).
  const userCode = rel.system ? [] : [`the definition of view ${snap.qualifiedName(rel)}, which the proxy could not analyse`];
  return Object.freeze({ columns, plainColumns: new Set<string>(), filters: all, tables: sorted(tables), exact: false, unsafe: new Map<string, string>(), combined: EMPTY_COMBINED, userCode });
}

// ---------------------------------------------------------------------------------------------
// Resolution of one statement
// ---------------------------------------------------------------------------------------------

interface RCol {
  readonly name: string;
  readonly src: readonly string[];
  /** The value is a column's value as stored (through plain view columns too), not a transformation. */
  readonly plain: boolean;
  /** Stands for unknown columns (`(f(x)).*`, a function in FROM without a column list): matches any name nothing else matches. */
  readonly wildcard?: boolean;
  /** For a plain column that merges several stored columns (set operations, USING): one closure per stored column. Absent: one, `src`. */
  readonly branches?: Branches;
  /** The value is known to be of a built-in scalar type (not a record, an array or a composite type): what min()/max() may compare. */
  readonly scalar?: boolean;
}

type Branches = readonly (readonly string[])[];

/** The stored columns a plain value may come from, one closure each. */
function branchesOf(x: { readonly src: Iterable<string>; readonly branches?: Branches }): Branches {
  return x.branches ?? [[...x.src]];
}

/** The branches of several plain values together, each closure once. */
function mergeBranches(xs: readonly { readonly src: Iterable<string>; readonly branches?: Branches }[]): Branches {
  const seen = new Map<string, readonly string[]>();
  for (const x of xs) {
    for (const b of branchesOf(x)) {
      const key = [...b].sort().join('\u0000');
      if (!seen.has(key)) seen.set(key, b);
    }
  }
  return [...seen.values()];
}

/** Columns named `name`; failing that, the wildcard columns. */
function matchCols(cols: readonly RCol[], name: string): RCol[] {
  const exact = cols.filter((c) => c.name === name);
  return exact.length ? exact : cols.filter((c) => c.wildcard === true);
}

interface Resolved {
  readonly src: readonly string[];
  readonly plain: boolean;
  readonly branches?: Branches;
  /** See RCol.scalar. */
  readonly scalar?: boolean;
}

const NOTHING: Resolved = Object.freeze({ src: EMPTY, plain: true });

/** System columns every table has (not in the catalog's attnum > 0 columns). */
const SYSTEM_COLUMNS = new Set(['ctid', 'xmin', 'xmax', 'cmin', 'cmax', 'tableoid']);

/** A name visible in a query block's FROM clause. */
interface Range {
  /** Name it is qualified by: alias, or relation / CTE / function name. */
  readonly qual: string | null;
  /** Schemas that may qualify it (unaliased relations only). */
  readonly schemas: readonly string[] | null;
  /** null: columns unknown (relation missing from the catalog, function without a column list). */
  readonly cols: readonly RCol[] | null;
  /** For a relation missing from the catalog: 'schema.table'. */
  readonly unknownPrefix: string | null;
  /** false for the members of an aliased join (hidden behind the join's alias). */
  readonly visible: boolean;
}

interface ScopeRanges {
  readonly flat: readonly Range[];
  /** What `*` expands to, in PostgreSQL's order (USING/NATURAL columns merged). */
  readonly star: readonly RCol[];
}

interface ROut {
  readonly name: string;
  readonly src: ReadonlySet<string>;
  readonly plain: boolean;
  readonly wildcard?: boolean;
  readonly branches?: Branches;
  /** See RCol.scalar. */
  readonly scalar?: boolean;
}

interface RelRes {
  readonly rel: CatalogRelation | undefined;
  readonly display: string;
}

interface Chain {
  readonly unsafe: string | null;
  readonly computed: boolean;
  readonly test: boolean;
  /** A comparing step (min()/max()) that sees the value as it is (see ValuePath.compares), or null. */
  readonly compares: string | null;
  /** See ValuePath.combines and .aggregates, over the whole way. */
  readonly combines: readonly string[];
  readonly aggregates: number;
}

const NO_CHAIN: Chain = Object.freeze({ unsafe: null, computed: false, test: false, compares: null, combines: EMPTY, aggregates: 0 });

/** Types (format_type, without modifiers) whose values the allow-listed functions, operators and casts handle without user code or shape errors. */
const SCALAR_TYPES = new Set([
  'text', 'character varying', 'character', '"char"', 'name',
  'smallint', 'integer', 'bigint', 'numeric', 'real', 'double precision', 'money', 'boolean', 'uuid', 'bytea', 'json', 'jsonb', 'xml',
  'date', 'time without time zone', 'time with time zone', 'timestamp without time zone', 'timestamp with time zone', 'interval',
  'inet', 'cidr', 'macaddr', 'macaddr8', 'bit', 'bit varying', 'oid',
]);

/** A type name (format_type) is one of SCALAR_TYPES, whatever its modifiers. */
function scalarType(typeName: string): boolean {
  return SCALAR_TYPES.has(typeName.replace(/\(\d+(,\d+)?\)/g, ''));
}

/** Types whose equality is equality of the text form PostgreSQL prints (a hash mask hashes that form), by family: comparable with each other. */
const EQUALITY_FAMILIES: ReadonlyMap<string, string> = new Map([
  ['text', 'text'],
  ['character varying', 'text'],
  ['smallint', 'integer'],
  ['integer', 'integer'],
  ['bigint', 'integer'],
  ['uuid', 'uuid'],
]);

class StatementResolver {
  readonly tables = new Set<string>();
  readonly tablesWritten = new Set<string>();
  readonly read = new Set<string>();
  readonly written = new Set<string>();
  readonly filters = new Set<string>();
  /** See StatementAccess.otherFilters. */
  readonly otherFilters = new Set<string>();
  readonly unknownTables = new Set<string>();
  readonly unresolved = new Set<string>();
  /** Column -> the first step off the redaction allow-list its value goes through (see StatementAccess.unsafe). */
  readonly unsafe = new Map<string, string>();
  readonly userCode = new Set<string>();
  /** See StatementAccess.viewTables. */
  readonly viewTables = new Set<string>();
  /** See StatementAccess.combined. */
  readonly combined: Combined[] = [];
  private readonly equalities = new Map<string, Equality>();
  private readonly rels: RelRes[];
  /** Set-operation branch -> its set operation: a branch's rows go where the set operation's go. */
  private readonly branchOf = new Map<number, number>();
  private readonly chains = new Map<number, Chain>();
  private readonly rangeCache: (ScopeRanges | undefined)[] = [];
  private readonly outCache: (ROut[] | undefined)[] = [];
  private readonly inProgress = new Set<number>();
  private readonly provisional = new Map<number, ROut[]>();
  private readonly recursiveBodies = new Set<number>();

  constructor(
    private readonly st: StatementInfo,
    private readonly snap: CatalogSnapshot,
    private readonly memo: Memo,
    private readonly path: EffectivePath,
  ) {
    this.rels = st.relations.map((r) => {
      const kind = r.scope === null ? 'utility' : st.scopes[r.scope]?.kind;
      // A DDL target (DROP VIEW v, ALTER VIEW v…) acts on the view itself, not on what it reads.
      const expand = !(r.access === 'write' && (kind === 'utility' || kind === undefined));
      return this.resolveRelation(r.schema, r.name, r.access, r.temp, expand);
    });
    for (const c of st.ctes) if (c.recursive && c.scope >= 0) this.recursiveBodies.add(c.scope);
    for (const sc of st.scopes) {
      if (!sc.setOp) continue;
      this.branchOf.set(sc.setOp.left, sc.id);
      this.branchOf.set(sc.setOp.right, sc.id);
    }
    for (const f of st.functions) if (isUserFunction(snap, f.schema, f.name)) this.userCode.add(`${f.schema ? `${f.schema}.` : ''}${f.name}()`);
    for (const op of st.operators) {
      const parts = op.split('.');
      const name = parts[parts.length - 1] ?? '';
      if (snap.shadows.has(`user operator ${name}`) || (parts.length > 1 && parts[0] !== 'pg_catalog')) this.userCode.add(`operator ${op}`);
    }
  }

  private resolveRelation(schema: string | null, name: string, access: 'read' | 'write', temp: boolean, expand: boolean): RelRes {
    const rel = this.snap.lookup(schema, name, this.path);
    if (rel) {
      const q = this.snap.qualifiedName(rel);
      this.tables.add(q);
      if (access === 'write') this.tablesWritten.add(q);
      if (expand && isViewLike(rel)) {
        const vl = lineageOfView(this.snap, this.memo, rel);
        for (const t of vl.tables) {
          this.tables.add(t);
          this.viewTables.add(t);
          if (access === 'write' && rel.relkind === 'v') this.tablesWritten.add(t); // DML through an updatable view
        }
        for (const f of vl.filters) {
          this.read.add(f);
          this.filters.add(f);
          this.otherFilters.add(f);
        }
        for (const u of vl.userCode) this.userCode.add(u);
        // What the definition computes runs whenever the view is read: conservatively, all of it.
        for (const [c, why] of vl.unsafe) {
          this.read.add(c);
          if (!this.unsafe.has(c)) this.unsafe.set(c, `${why} (in view ${q})`);
        }
        for (const c of vl.combined) this.combined.push(c.why.endsWith(')') && c.why.includes(' (in view ') ? c : { ...c, why: `${c.why} (in view ${q})` });
      }
      return { rel, display: q };
    }
    const s = temp || schema === 'pg_temp' ? 'pg_temp' : (schema ?? this.path.creation);
    const display = `${s}.${name}`;
    this.tables.add(display);
    this.unknownTables.add(display);
    if (access === 'write') this.tablesWritten.add(display);
    return { rel: undefined, display };
  }

  private scope(id: number): QueryScope {
    const s = this.st.scopes[id];
    if (!s) throw new Error(`internal: no scope ${id}`);
    return s;
  }

  run(): void {
    const outputRefs = new Set<number>();
    const flowRefs = new Set<number>();
    for (const s of this.st.scopes) for (const o of s.outputs) for (const r of o.refs) outputRefs.add(r);
    for (const f of this.st.flows) if ('refs' in f.source) for (const r of f.source.refs) flowRefs.add(r);
    const equalityRefs = new Set<number>();
    for (const eq of this.st.equalities) for (const r of eq.refs) equalityRefs.add(r);
    // Build every block's ranges (USING / NATURAL join columns are read there).
    for (let i = 0; i < this.st.scopes.length; i++) this.ranges(i);
    // Blocks inside WITH RECURSIVE bodies: a computed value there may grow at every step
    // (`s || s`) until it fails on PostgreSQL's 1 GB limit, at a step that tells its length.
    const recursive = new Set<number>();
    for (const b of this.recursiveBodies) for (let i = b; i < this.scope(b).end; i++) recursive.add(i);
    // Combining steps: step -> argument -> the columns it comes from (see Combined).
    const steps = new Map<string, Map<string, Set<string>>>();
    const addArg = (step: string, arg: string, src: Iterable<string>): void => {
      let m = steps.get(step);
      if (!m) steps.set(step, (m = new Map()));
      let a = m.get(arg);
      if (!a) m.set(arg, (a = new Set()));
      for (const x of src) a.add(x);
    };
    this.st.columns.forEach((ref, i) => {
      let judged = ref.via ? this.judge(ref.via, ref.scope) : undefined;
      if (judged?.computed && judged.unsafe === null && recursive.has(ref.scope)) judged = { ...judged, unsafe: 'a computation inside WITH RECURSIVE' };
      // EXISTS (SELECT * …) reads no column; a computed select list may still be evaluated.
      if (outputRefs.has(i) && this.scope(ref.scope).existsOnly && !judged?.computed) return;
      const resolved = this.resolveRef(ref);
      const { src } = resolved;
      const row = ref.form === 'row' ? this.rowCols(ref) : undefined;
      if (judged) {
        for (const key of judged.combines) {
          const at = key.lastIndexOf(':');
          addArg(key.slice(0, at), key.slice(at + 1), src);
        }
        // A whole row inside a computation puts its columns into one value: a record step.
        if (judged.computed && row) row.forEach((c, k) => addArg(`w${i} the whole-row reference ${ref.qualifier.join('.') || ref.name}`, String(k), c.src));
        // An aggregate of an aggregate's result (through a subquery, a CTE, a view: a column that
        // is not a bare stored column) multiplies copies of the values the inner one concatenated.
        if (judged.aggregates > 0 && judged.unsafe === null) {
          const why = 'string_agg/array_agg/json_agg of a computed value (an aggregate of an aggregate multiplies copies of a value)';
          if (judged.aggregates > 1) judged = { ...judged, unsafe: why };
          else if (row) for (const c of row) if (!c.plain) for (const x of c.src) if (!this.unsafe.has(x)) this.unsafe.set(x, why);
          if (!row && !resolved.plain) judged = { ...judged, unsafe: why };
        }
      }
      const filter = judged?.test === true || (!outputRefs.has(i) && !flowRefs.has(i));
      const other = filter && !equalityRefs.has(i);
      for (const s of src) {
        this.read.add(s);
        if (filter) this.filters.add(s);
        if (other) this.otherFilters.add(s);
        if (!judged || this.unsafe.has(s)) continue;
        if (judged.unsafe !== null) this.unsafe.set(s, judged.unsafe);
        else if (judged.computed && !this.scalar(s)) this.unsafe.set(s, `a computation over ${s}, which is not of a built-in scalar type`);
        // min()/max() over what the reference stands for: a record or array built in a FROM
        // subquery, a CTE or a view, a whole row, a field of a composite value.
        else if (judged.compares !== null && resolved.scalar !== true) this.unsafe.set(s, comparedComposite(judged.compares));
      }
    });
    for (const [step, args] of steps) {
      if (args.size < 2) continue;
      const record = step.startsWith('r') || step.startsWith('w');
      this.combined.push(Object.freeze({ why: step.slice(step.indexOf(' ') + 1), record, args: Object.freeze([...args.values()].map((a) => sorted(a))) }));
    }
    // Rows chosen or ordered by whole output columns: SELECT DISTINCT, UNION/INTERSECT/EXCEPT
    // (without ALL), ORDER BY / GROUP BY / DISTINCT ON by position, SEARCH/CYCLE.
    const choose = (srcs: Iterable<string>): void => {
      for (const s of srcs) {
        this.read.add(s);
        this.filters.add(s);
        this.otherFilters.add(s);
      }
    };
    for (const eq of this.st.equalities) {
      const operands = eq.refs.map((i) => this.st.columns[i]).filter((c): c is ColumnRefInfo => c !== undefined).map((c) => this.operand(this.resolveRef(c)));
      this.addEquality(eq.kind, eq.label, operands, eq.operator);
    }
    for (const sc of this.st.scopes) {
      // SELECT DISTINCT and GROUP BY <position> compare whole outputs for equality only; set
      // operations other than UNION ALL, ORDER BY and DISTINCT ON positions are filters.
      const compared = sc.setOp !== null && !(sc.setOp.op === 'UNION' && sc.setOp.all);
      if (!compared && !sc.distinct && !sc.positions.length && !sc.groupPositions.length) continue;
      const outs = this.outputs(sc.id);
      if (compared) for (const o of outs) choose(o.src);
      if (sc.distinct) {
        for (const o of outs) {
          this.equalityRead(o.src);
          this.addEquality('distinct', 'DISTINCT', [this.operand(o)], null);
        }
      }
      for (const p of sc.positions) choose(outs[p - 1]?.src ?? []);
      for (const p of sc.groupPositions) {
        const o = outs[p - 1];
        if (!o) continue;
        this.equalityRead(o.src);
        this.addEquality('group', 'GROUP BY', [this.operand(o)], null);
      }
    }
    for (const c of this.st.ctes) if (c.searchOrCycle && c.scope >= 0) for (const o of this.outputs(c.scope)) choose(o.src);
    for (const ca of this.st.columnAccess) {
      const rr = this.rels[ca.relation];
      if (!rr) continue;
      const target = ca.access === 'write' ? this.written : this.read;
      if (rr.rel) {
        const names = ca.columns ?? rr.rel.columns.map((c) => c.name);
        for (const n of names) for (const s of colSrc(this.snap, this.memo, rr.rel, n)) target.add(s);
      } else {
        for (const n of ca.columns ?? ['*']) target.add(`${rr.display}.${n}`);
      }
    }
  }

  /**
   * The whole way of a value from where it appears to where it ends up: its path within its
   * expression, then — when its block is a scalar or ARRAY subquery — the path of that subquery
   * within the enclosing block's expression, and so on; `test` when it ends up compared to choose
   * rows (a subquery in WHERE, IN (…)).
   */
  private judge(via: ValuePath, scope: number): Chain {
    const outer = this.chain(scope);
    let unsafe = via.unsafe ?? outer.unsafe;
    // A subquery whose value a comparing step sees (max((SELECT …))) and whose output makes a
    // record or an array of this value.
    if (unsafe === null && outer.compares !== null && via.result === 'composite') unsafe = comparedComposite(outer.compares);
    if (unsafe === null) for (const name of via.shadowable) if (this.snap.shadows.has(name)) unsafe = `${name}, which is defined outside pg_catalog here`;
    const compares = via.compares ?? (via.result === 'same' ? outer.compares : null);
    return { unsafe, computed: via.computed || outer.computed, test: outer.test, compares, combines: [...via.combines, ...outer.combines], aggregates: via.aggregates + outer.aggregates };
  }

  /** The columns of the row a whole-row reference stands for, when its range is found. */
  private rowCols(ref: ColumnRefInfo): readonly RCol[] | undefined {
    if (ref.name === '*') {
      const r = this.findRange(ref.qualifier, ref.scope);
      return r ? rangeCols(r) : undefined;
    }
    if (ref.qualifier.length) return undefined;
    if (this.lookupColumn(ref.name, ref.scope, false)) return undefined;
    const r = this.findRange([ref.name], ref.scope);
    return r ? rangeCols(r) : undefined;
  }

  private chain(scope: number): Chain {
    const hit = this.chains.get(scope);
    if (hit) return hit;
    let res: Chain = NO_CHAIN;
    const setop = this.branchOf.get(scope);
    const sc = this.scope(scope);
    if (setop !== undefined) res = this.chain(setop);
    else if (sc.use.kind === 'test') res = { ...NO_CHAIN, test: true };
    else if (sc.use.kind === 'value' && sc.parent !== null) {
      const up = this.judge(sc.use.path, sc.parent);
      res = up;
    }
    this.chains.set(scope, res);
    return res;
  }

  /** Columns read by an equality use: filters, not otherFilters. */
  private equalityRead(srcs: Iterable<string>): void {
    for (const x of srcs) {
      this.read.add(x);
      this.filters.add(x);
    }
  }

  /** Equality uses found (each once). */
  equalityList(): Equality[] {
    return [...this.equalities.values()];
  }

  private addEquality(kind: Equality['kind'], label: string, operands: EqualityOperand[], operator: string | null): void {
    const name = operator === null ? null : `operator ${operator}`;
    const shadowed = name !== null && this.snap.shadows.has(name) ? `${name}, which is defined outside pg_catalog here` : null;
    const eq: Equality = Object.freeze({ kind, label, operands: Object.freeze(operands), shadowed });
    const key = JSON.stringify(eq);
    if (!this.equalities.has(key)) this.equalities.set(key, eq);
  }

  /** An operand of an equality use: what it may come from, and whether equal values there are equal masks. */
  private operand(x: { readonly src: Iterable<string>; readonly plain: boolean; readonly branches?: Branches }): EqualityOperand {
    const sources = sorted(new Set(x.src));
    const branches = x.plain ? branchesOf(x).map((b) => sorted(b)) : [sources];
    let family: string | null = null;
    for (const s of sources) {
      const f = this.equalityFamily(s);
      if (f === null || (family !== null && f !== family)) {
        family = null;
        break;
      }
      family = f;
    }
    return Object.freeze({ sources, plain: x.plain, branches: Object.freeze(branches), family });
  }

  /** See EqualityOperand.family, for one column. */
  private equalityFamily(source: string): string | null {
    const parts = source.split('.');
    if (parts.length !== 3) return null;
    const col = this.snap.relation(parts[0]!, parts[1]!)?.columnByName.get(parts[2]!);
    if (!col) return null;
    const family = EQUALITY_FAMILIES.get(col.typeName.replace(/\(\d+\)$/, '')) ?? null;
    // A nondeterministic collation ('und-u-ks-level2') makes differently written values equal.
    if (family === 'text' && col.deterministic !== true) return null;
    return family;
  }

  /** The column is of a built-in scalar type (not an array, domain, composite or user-defined type). */
  private scalar(source: string): boolean {
    const parts = source.split('.');
    if (parts.length !== 3) return false;
    const col = this.snap.relation(parts[0]!, parts[1]!)?.columnByName.get(parts[2]!);
    return col !== undefined && scalarType(col.typeName);
  }

  /** Columns written from other values, with where the values come from. */
  flows(): ColumnFlow[] {
    const out: ColumnFlow[] = [];
    for (const f of this.st.flows) {
      const rr = this.rels[f.relation];
      if (!rr) continue;
      const targets = f.columns ?? (rr.rel ? rr.rel.columns.map((c) => c.name) : null);
      let sources: ReadonlySet<string>[];
      if ('scope' in f.source) sources = this.outputs(f.source.scope).map((o) => o.src);
      else {
        const src = new Set<string>();
        for (const i of f.source.refs) {
          const ref = this.st.columns[i];
          if (ref) for (const x of this.resolveRef(ref).src) src.add(x);
        }
        for (const sub of f.source.scopes) for (const o of this.outputs(sub)) for (const x of o.src) src.add(x);
        sources = [src];
      }
      if (targets === null) {
        const all = new Set<string>();
        for (const s of sources) for (const x of s) all.add(x);
        if (all.size) out.push(Object.freeze({ target: `${rr.display}.*`, sources: sorted(all) }));
        continue;
      }
      targets.forEach((t, i) => {
        const src = 'scope' in f.source ? sources[i] : sources[0];
        if (src?.size) out.push(Object.freeze({ target: `${rr.display}.${t}`, sources: sorted(src) }));
      });
    }
    return out;
  }

  // --- FROM items ---

  private ranges(id: number): ScopeRanges {
    const cached = this.rangeCache[id];
    if (cached) return cached;
    const flat: Range[] = [];
    const star: RCol[] = [];
    for (const item of this.scope(id).from) star.push(...this.itemRanges(item, flat, true));
    const res: ScopeRanges = { flat, star };
    this.rangeCache[id] = res;
    return res;
  }

  /** Adds the ranges of a FROM item to `out`; returns its `*` expansion. */
  private itemRanges(item: FromItem, out: Range[], visible: boolean): RCol[] {
    switch (item.type) {
      case 'relation': {
        const rr = this.rels[item.relation];
        const ref = this.st.relations[item.relation];
        if (!rr || !ref) return [];
        const schemas = item.alias ? null : [ref.schema ?? '', rr.rel ? rr.rel.schema : '', rr.display.slice(0, rr.display.lastIndexOf('.'))];
        if (rr.rel) {
          const rel = rr.rel;
          const cols = rel.columns.map((c, i) => ({
            name: item.columnAliases?.[i] ?? c.name,
            src: colSrc(this.snap, this.memo, rel, c.name),
            plain: colPlain(this.snap, this.memo, rel, c.name),
            scalar: scalarType(c.typeName),
          }));
          out.push({ qual: item.alias ?? ref.name, schemas, cols, unknownPrefix: null, visible });
          return cols;
        }
        out.push({ qual: item.alias ?? ref.name, schemas, cols: null, unknownPrefix: rr.display, visible });
        return [{ name: '*', src: [`${rr.display}.*`], plain: true }];
      }
      case 'cte': {
        const def = this.st.ctes[item.cte];
        if (!def) return [];
        let cols = toCols(def.scope >= 0 ? this.outputs(def.scope) : []);
        cols = rename(rename(cols, def.columnAliases), item.columnAliases);
        out.push({ qual: item.alias ?? def.name, schemas: null, cols, unknownPrefix: null, visible });
        return cols;
      }
      case 'subquery': {
        const cols = rename(toCols(this.outputs(item.scope)), item.columnAliases);
        out.push({ qual: item.alias, schemas: null, cols, unknownPrefix: null, visible });
        return cols;
      }
      case 'function': {
        const qual = item.alias ?? (item.functions.length === 1 ? (item.functions[0] ?? null) : null);
        const cols = item.columnAliases ? item.columnAliases.map((n) => ({ name: n, src: EMPTY, plain: true })) : null;
        out.push({ qual, schemas: null, cols, unknownPrefix: null, visible });
        return cols ?? [{ name: qual ?? '?column?', src: EMPTY, plain: true, wildcard: true }];
      }
      case 'join': {
        const inner = visible && item.alias === null;
        const left: Range[] = [];
        const right: Range[] = [];
        const lstar = this.itemRanges(item.left, left, inner);
        const rstar = this.itemRanges(item.right, right, inner);
        out.push(...left, ...right);
        let merged: string[] = [...item.using];
        if (item.natural) {
          const rnames = new Set(rstar.map((c) => c.name));
          merged = lstar.map((c) => c.name).filter((n) => rnames.has(n));
        }
        const star: RCol[] = [];
        const mergedSet = new Set(merged);
        for (const name of merged) {
          const src = new Set<string>();
          for (const c of [...lstar, ...rstar]) if (c.name === name) for (const s of c.src) src.add(s);
          // The join compares its parts with operator = and nothing else: an equality use. Columns of
          // relations missing from the catalog are filters (and refused over masked tables anyway).
          this.equalityRead(src);
          for (const r of [...left, ...right]) {
            if (r.cols !== null || !r.unknownPrefix) continue;
            const x = `${r.unknownPrefix}.${name}`;
            this.equalityRead([x]);
            this.otherFilters.add(x);
            src.add(x);
          }
          const plain = [...lstar, ...rstar].every((c) => c.name !== name || c.plain);
          const parts = [...lstar, ...rstar].filter((c) => c.name === name);
          if (parts.length) this.addEquality('equal', item.natural ? 'NATURAL JOIN' : 'JOIN USING', parts.map((c) => this.operand(c)), '=');
          const scalar = parts.length > 0 && parts.every((c) => c.scalar === true);
          star.push({ name, src: [...src], plain, scalar, ...(plain && parts.length > 1 ? { branches: mergeBranches(parts) } : {}) });
        }
        for (const c of [...lstar, ...rstar]) if (!mergedSet.has(c.name)) star.push(c);
        if (item.alias !== null) {
          const unknown = [...left, ...right].find((r) => r.cols === null && r.unknownPrefix !== null);
          out.push({ qual: item.alias, schemas: null, cols: unknown ? null : star, unknownPrefix: unknown?.unknownPrefix ?? null, visible });
        }
        return star;
      }
    }
  }

  // --- outputs ---

  /** Result columns of a block, with the columns their values come from. */
  outputs(id: number): ROut[] {
    const cached = this.outCache[id];
    if (cached) return cached;
    if (this.inProgress.has(id)) return this.provisional.get(id) ?? [];
    this.inProgress.add(id);
    let res: ROut[];
    try {
      const s = this.scope(id);
      if (this.recursiveBodies.has(id) && s.setOp) {
        // WITH RECURSIVE: the body reads its own output. Iterate to a fixpoint (sources only grow),
        // starting from the non-recursive term.
        let prov = this.outputs(s.setOp.left);
        for (let iter = 0; iter < 16; iter++) {
          this.provisional.set(id, prov);
          this.forgetNested(id);
          const next = this.computeOutputs(s);
          const grown = size(next) !== size(prov);
          prov = next;
          if (!grown) break;
        }
        res = prov;
      } else res = this.computeOutputs(s);
    } finally {
      this.inProgress.delete(id);
    }
    this.outCache[id] = res;
    return res;
  }

  private forgetNested(id: number): void {
    const end = this.scope(id).end;
    for (let i = id + 1; i < end; i++) {
      this.outCache[i] = undefined;
      this.rangeCache[i] = undefined;
    }
  }

  private computeOutputs(s: QueryScope): ROut[] {
    if (s.setOp) {
      const l = this.outputs(s.setOp.left);
      const r = this.outputs(s.setOp.right);
      return l.map((c, i) => {
        const other = r[i];
        const plain = c.plain && (other?.plain ?? true);
        const scalar = c.scalar === true && (other?.scalar ?? true);
        return { name: c.name, src: other ? union(c.src, other.src) : c.src, plain, scalar, ...(plain ? { branches: mergeBranches(other ? [c, other] : [c]) } : {}) };
      });
    }
    const res: ROut[] = [];
    for (const o of s.outputs) {
      if (o.star) {
        for (const c of this.starCols(o.star.qualifier, s.id)) res.push({ name: c.name, src: new Set(c.src), plain: c.plain, wildcard: c.wildcard, scalar: c.scalar, ...(c.branches ? { branches: c.branches } : {}) });
        continue;
      }
      const src = new Set<string>();
      let plain = o.plain;
      // Of a built-in scalar type unless a step makes a record or an array of a value (ROW,
      // ARRAY(…), array_agg…), or passes on one it is given (see ValuePath.result).
      let scalar = true;
      const got: Resolved[] = [];
      for (const r of o.refs) {
        const ref = this.st.columns[r];
        if (!ref) continue;
        const g = this.resolveRef(ref);
        got.push(g);
        for (const x of g.src) src.add(x);
        plain &&= g.plain;
        const kind = ref.via?.result ?? 'composite';
        if (kind === 'composite' || (kind === 'same' && g.scalar !== true)) scalar = false;
      }
      for (const sub of o.scopes) {
        const use = this.scope(sub).use;
        const kind = use.kind === 'value' ? use.path.result : 'scalar'; // a compared subquery gives a boolean
        const outs = this.outputs(sub);
        for (const c of outs) for (const x of c.src) src.add(x);
        if (kind === 'composite' || (kind === 'same' && outs.some((c) => c.scalar !== true))) scalar = false;
      }
      const branches = plain && got.some((g) => g.branches) ? { branches: mergeBranches(got) } : {};
      res.push(o.composite ? { name: '?column?', src, plain: false, wildcard: true } : { name: o.name ?? '?column?', src, plain, scalar, ...branches });
    }
    return res;
  }

  private starCols(qualifier: readonly string[], scope: number): readonly RCol[] {
    if (qualifier.length === 0) return this.ranges(scope).star;
    const r = this.findRange(qualifier, scope);
    if (!r) {
      this.unresolved.add(`${qualifier.join('.')}.*`);
      return [];
    }
    return rangeCols(r);
  }

  // --- column references ---

  private resolveRef(ref: ColumnRefInfo): Resolved {
    const { qualifier, name, scope } = ref;
    if (ref.form === 'star') return colsResolved(this.starCols(qualifier, scope));
    if (qualifier.length === 0) {
      const col = this.lookupColumn(name, scope, false);
      if (ref.outputAlias) {
        // ORDER BY / GROUP BY / DISTINCT ON: a bare name may be an output column (PostgreSQL picks
        // per clause); count both readings.
        const out = this.outputs(scope).find((o) => o.name === name);
        if (out) {
          // Plain only when both readings are (`SELECT phone … GROUP BY phone`).
          const both = col ? [col, out] : [out];
          const plain = both.every((x) => x.plain);
          const scalar = both.every((x) => x.scalar === true);
          return { src: [...(col?.src ?? []), ...out.src], plain, scalar, ...(plain ? { branches: mergeBranches(both) } : {}) };
        }
      }
      if (col) return col;
      // Not a known column: a whole-row reference, or a field of a composite value (both, if both fit).
      const whole = this.findRange([name], scope);
      const field = this.lookupColumn(name, scope, true);
      if (whole) return field ? { src: [...wholeRow(whole).src, ...field.src], plain: false } : wholeRow(whole);
      if (field) return field;
      if (SYSTEM_COLUMNS.has(name)) return NOTHING;
      this.unresolved.add(name);
      return NOTHING;
    }
    if (ref.form === 'row' && name === '*') {
      const r = this.findRange(qualifier, scope);
      if (r) return wholeRow(r);
      this.unresolved.add(`${qualifier.join('.')}.*`);
      return NOTHING;
    }
    const r = this.findRange(qualifier, scope);
    if (r) {
      if (r.cols) {
        const c = matchCols(r.cols, name);
        if (c.length) return colsResolved(c);
      } else if (r.unknownPrefix) return { src: [`${r.unknownPrefix}.${name}`], plain: true };
      else return NOTHING; // a column of a function without a column list
    }
    // `c.field` where c is a composite column, or `t.c.field`: the whole column is read.
    if (qualifier.length > 1) {
      const outer = this.findRange(qualifier.slice(0, -1), scope);
      const colName = qualifier[qualifier.length - 1] ?? '';
      const c = outer?.cols ? matchCols(outer.cols, colName) : undefined;
      if (c?.length) return { src: c.flatMap((x) => x.src), plain: false };
    } else {
      const col = this.lookupColumn(qualifier[0] ?? '', scope);
      if (col) return { src: col.src, plain: false };
    }
    if (SYSTEM_COLUMNS.has(name) && (r || qualifier.length === 1)) return NOTHING; // ctid, xmin… carry no user data
    this.unresolved.add([...qualifier, name].join('.'));
    return NOTHING;
  }

  /**
   * An unqualified column: the innermost block with a FROM item that has it wins; several items
   * with it at that level (USING columns, or an ambiguity PostgreSQL would reject) all count.
   * Relations missing from the catalog may have any column: they count when nothing else matches
   * at that level. Unknown fields of composite values (`(f(x)).*`, functions in FROM without a
   * column list) may hold the name too: their sources are added, and the search goes on outward.
   */
  private lookupColumn(name: string, scope: number, compositeFallback = true): Resolved | undefined {
    const tentative: string[] = [];
    let composite = false;
    for (let s: number | null = scope; s !== null; s = this.scope(s).parent) {
      const found: RCol[] = [];
      const unknown: string[] = [];
      let sourceless = false;
      for (const r of this.ranges(s).flat) {
        if (!r.visible) continue;
        if (r.cols) {
          for (const c of r.cols) {
            if (c.name === name) {
              if (c.src.length) found.push(c);
              else sourceless = true; // a function's or constant's column: carries no table data
            } else if (c.wildcard) {
              composite = true;
              tentative.push(...c.src);
            }
          }
        } else if (r.unknownPrefix) unknown.push(`${r.unknownPrefix}.${name}`);
        else if (r.qual === name) sourceless = true; // scalar function in FROM, named by its alias
        else composite = true;
      }
      if (found.length) {
        const got = colsResolved(found);
        return tentative.length ? { src: [...got.src, ...tentative], plain: false } : got;
      }
      if (sourceless) return tentative.length ? { src: tentative, plain: false } : NOTHING;
      if (unknown.length) return { src: [...unknown, ...tentative], plain: tentative.length === 0 };
    }
    if (composite && compositeFallback) return tentative.length ? { src: tentative, plain: false } : NOTHING;
    return undefined;
  }

  private findRange(qualifier: readonly string[], scope: number): Range | undefined {
    const relName = qualifier[qualifier.length - 1];
    const schema = qualifier.length >= 2 ? qualifier[qualifier.length - 2] : undefined;
    for (let s: number | null = scope; s !== null; s = this.scope(s).parent) {
      for (const r of this.ranges(s).flat) {
        if (!r.visible || r.qual !== relName) continue;
        if (schema !== undefined && !(r.schemas?.includes(schema) ?? false)) continue;
        return r;
      }
    }
    return undefined;
  }
}

function rangeCols(r: Range): readonly RCol[] {
  if (r.cols) return r.cols;
  if (r.unknownPrefix) return [{ name: '*', src: [`${r.unknownPrefix}.*`], plain: true }];
  return [{ name: r.qual ?? '?column?', src: EMPTY, plain: true, wildcard: true }];
}

function colsResolved(cols: readonly RCol[]): Resolved {
  if (cols.length === 1 && cols[0]) return cols[0];
  const plain = cols.every((c) => c.plain);
  const scalar = cols.length > 0 && cols.every((c) => c.scalar === true);
  return { src: cols.flatMap((c) => c.src), plain, scalar, ...(plain ? { branches: mergeBranches(cols) } : {}) };
}

/** A whole-row reference: every column of the range, as one composite value (not plain). */
function wholeRow(r: Range): Resolved {
  return { src: rangeCols(r).flatMap((c) => c.src), plain: false };
}

function toCols(outs: readonly ROut[]): RCol[] {
  return outs.map((o) => ({ name: o.name, src: [...o.src], plain: o.plain, wildcard: o.wildcard, scalar: o.scalar, ...(o.branches ? { branches: o.branches } : {}) }));
}

function rename(cols: RCol[], aliases: readonly string[] | null): RCol[] {
  if (!aliases) return cols;
  return cols.map((c, i) => (i < aliases.length ? { ...c, name: aliases[i] ?? c.name } : c));
}

function size(outs: readonly ROut[]): number {
  let n = 0;
  for (const o of outs) n += o.src.size + (o.branches?.length ?? 0);
  return n;
}
