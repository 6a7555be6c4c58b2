// Which data subjects (customer 42, …) a statement returned or changed. Keys are read from the
// result: from output columns that are the subject's key (or a `via` column pointing at it), and,
// when a statement reads a subject table without returning its key, from a hidden key column the
// proxy adds to the statement and strips before the client sees it (SELECT … , c.id FROM …;
// UPDATE/DELETE/INSERT … RETURNING id). Where keys cannot be known without changing what the
// client receives (aggregates, DISTINCT, set operations, functions, window functions, grouping
// sets), the access is recorded as *possible*, with the statement as its predicate.
//
// Keys are per read, not per subject: each range-table entry of the subject's table or of a `via`
// table (at any depth: joins, subqueries, WITH queries, views) must be captured by its own key. A
// key in the output counts for the one read there is; with several reads, each read in the
// statement's own FROM list gets its own hidden key column (or RETURNING), and any other read
// (a subquery, a view, a WITH query read twice, a COPY, which cannot be given a column) leaves
// the keys read and makes the access possible as well.
//
// COPY … TO STDOUT in text or CSV format whose output has the key (COPY customers, a column list
// with the key, COPY (SELECT id, …)) is read like a result: CopyKeyReader parses the CopyData the
// proxy relays (rows split across messages and chunks, escapes, quoting, HEADER, DELIMITER, QUOTE,
// ESCAPE, NULL) and takes the key field of every row. Binary COPY, COPY to a server file or
// program, COPY FROM and a COPY whose output lacks the key stay possible.
import { scanSync } from 'libpg-query';
import { parse, type Access, type Analysis, type FromItem, type StatementAccess, type StatementInfo } from '../sql/index.ts';
import type { SubjectDef } from '../policy/subjects.ts';

export interface SubjectPlan {
  /** Output index -> subject, for columns the client sees. */
  capture: Map<number, string>;
  /** Subjects of the hidden columns appended at the end, in order. */
  hidden: string[];
  /** The statement had no result rows of its own (RETURNING added): drop RowDescription and rows. */
  dropAll: boolean;
  /** Text to send upstream instead of the client's, when hidden columns were added. */
  upstreamSql?: string;
  /** Subject -> why its keys are unknown, for a possible access (the intent's statement is the predicate). */
  possible: Map<string, string>;
  /** Output columns the client sees, when the lineage knows (to extend Bind's result formats). */
  visible: number | undefined;
  /** COPY … TO STDOUT (text or CSV): `capture` indexes the fields of its CopyData rows, read this way. */
  copy?: CopyCapture;
}

/** How to read the rows of a COPY … TO STDOUT, from its options (PostgreSQL's defaults otherwise). */
export interface CopyCapture {
  format: 'text' | 'csv';
  /** Single bytes: PostgreSQL allows only one-byte delimiter, quote and escape characters. */
  delimiter: number;
  quote: number;
  escape: number;
  /** The NULL string as sent (`\N` in text, empty in CSV). */
  null: Buffer;
  /** Text format: the NULL string is also what some non-null value looks like (`NULL 'x'`). */
  nullAmbiguous: boolean;
  header: boolean;
  /** Fields in every row, from the lineage: checked against CopyOutResponse and each row. */
  columns: number;
}

type Node = Record<string, unknown>;

const AGGREGATES = new Set([
  'count', 'sum', 'avg', 'min', 'max', 'string_agg', 'array_agg', 'json_agg', 'jsonb_agg', 'json_object_agg', 'jsonb_object_agg', 'bool_and',
  'bool_or', 'every', 'bit_and', 'bit_or', 'bit_xor', 'xmlagg', 'stddev', 'stddev_pop', 'stddev_samp', 'variance', 'var_pop', 'var_samp',
  'covar_pop', 'covar_samp', 'corr', 'regr_avgx', 'regr_avgy', 'regr_count', 'regr_intercept', 'regr_r2', 'regr_slope', 'regr_sxx', 'regr_sxy',
  'regr_syy', 'percentile_cont', 'percentile_disc', 'mode', 'range_agg', 'range_intersect_agg', 'any_value',
]);

/** Always quoted: a name as the parser gave it may be a keyword (`user`, `order`) or need its case. */
function quoteIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

function tableOf(col: string): string {
  return col.split('.').slice(0, 2).join('.');
}

function hasAggregate(n: unknown): boolean {
  if (Array.isArray(n)) return n.some(hasAggregate);
  if (!n || typeof n !== 'object') return false;
  const o = n as Node;
  if (o.SubLink) return false; // a subquery's aggregates do not group the outer query
  const fc = o.FuncCall as Node | undefined;
  if (fc) {
    const names = (fc.funcname as Node[]).map((x) => (x.String as Node).sval as string);
    if (!fc.over && (fc.agg_star || fc.agg_distinct || fc.agg_filter || fc.agg_within_group || AGGREGATES.has(names[names.length - 1]!.toLowerCase()))) return true;
  }
  return Object.values(o).some(hasAggregate);
}

/** Byte offset of the top-level FROM keyword of a SELECT, or of the end of the last real token. */
function spliceOffsets(sql: string): { from: number | undefined; end: number } {
  const { tokens } = scanSync(sql) as { tokens: { start: number; end: number; text: string }[] };
  let depth = 0;
  let from: number | undefined;
  let end = 0;
  let prev = '';
  for (const t of tokens) {
    if (t.text.startsWith('/*') || t.text.startsWith('--')) continue;
    if (t.text === '(') depth++;
    else if (t.text === ')') depth--;
    // `a IS [NOT] DISTINCT FROM b` in the select list is not the FROM clause.
    else if (depth === 0 && from === undefined && t.text.toUpperCase() === 'FROM' && prev !== 'DISTINCT') from = t.start;
    prev = t.text.toUpperCase();
    if (t.text !== ';') end = t.end;
  }
  return { from, end };
}

function spliceBytes(sql: string, at: number, insert: string): string {
  const b = Buffer.from(sql, 'utf8');
  return Buffer.concat([b.subarray(0, at), Buffer.from(insert, 'utf8'), b.subarray(at)]).toString('utf8');
}

/** One place a statement reads a subject's table or one of its `via` tables: a range-table entry. */
interface Occurrence {
  /** Index into the statement's relations. */
  ref: number;
  /** The subject's key, or the `via` column, in that table. */
  column: string;
}

interface Occurrences {
  list: Occurrence[];
  /** Why `list` may miss a read of these tables, or an entry may be read more than once (a view, a repeated WITH query…). */
  uncertain?: string;
}

/**
 * Every relation reference of the statement (at any depth: FROM, joins, subqueries, WITH queries,
 * set-operation branches, DML targets) that is the subject's table or one of its `via` tables.
 * What cannot be told apart from the analysis alone is `uncertain`: a table also read inside a
 * view, a WITH query read other than exactly once (or recursive), a name that another schema's
 * table of the statement also has.
 */
function occurrencesOf(s: SubjectDef, st: StatementInfo, sa: StatementAccess): Occurrences {
  const targets = [{ table: s.table, column: s.key }, ...s.via.map((v) => ({ table: tableOf(v), column: v.split('.')[2]! }))];
  const out: Occurrences = { list: [] };
  for (const t of targets) if (sa.viewTables.includes(t.table)) out.uncertain ??= `${t.table} read inside a view`;
  const uses = cteUses(st);
  st.relations.forEach((r, i) => {
    for (const t of targets) {
      const [schema, name] = t.table.split('.') as [string, string];
      if (r.name !== name || (r.schema !== null && r.schema !== schema)) continue;
      out.list.push({ ref: i, column: t.column });
      if (r.schema === null && sa.tables.some((x) => x !== t.table && x.split('.')[1] === name)) out.uncertain ??= `another schema's ${name} is read too`;
      const cte = r.scope === null ? undefined : st.ctes.find((c, k) => c.scope >= 0 && r.scope! >= c.scope && r.scope! < (st.scopes[c.scope]?.end ?? 0) && uses[k] !== 1);
      if (cte) out.uncertain ??= `${t.table} read in WITH query ${cte.name}, which the statement reads ${uses[st.ctes.indexOf(cte)] ?? 0} times`;
      break;
    }
  });
  return out;
}

/** How many FROM items (anywhere in the statement, its own body included) read each WITH query. */
function cteUses(st: StatementInfo): number[] {
  const uses = st.ctes.map(() => 0);
  const walk = (f: FromItem) => {
    if (f.type === 'cte') uses[f.cte] = (uses[f.cte] ?? 0) + 1;
    else if (f.type === 'join') {
      walk(f.left);
      walk(f.right);
    }
  };
  for (const sc of st.scopes) for (const f of sc.from) walk(f);
  return uses;
}

/**
 * Relations of the statement's own FROM list (through joins without an alias, which would hide
 * them), by relation index, with the name their columns are qualified by there. A relation
 * whose columns are renamed (`customers AS c(a, b)`) is left out.
 */
function topLevelQualifiers(st: StatementInfo, scope: number | null): Map<number, string> {
  const out = new Map<number, string>();
  const walk = (f: FromItem) => {
    if (f.type === 'relation') {
      const r = st.relations[f.relation];
      if (r && f.columnAliases === null) out.set(f.relation, f.alias !== null ? quoteIdent(f.alias) : r.schema !== null ? `${quoteIdent(r.schema)}.${quoteIdent(r.name)}` : quoteIdent(r.name));
    } else if (f.type === 'join' && f.alias === null) {
      walk(f.left);
      walk(f.right);
    }
  };
  for (const f of (scope === null ? undefined : st.scopes[scope])?.from ?? []) walk(f);
  return out;
}

/** Anything in the tree for which `hit` holds (a window function, a grouping set…). */
function findNode(n: unknown, hit: (o: Node) => boolean): boolean {
  if (Array.isArray(n)) return n.some((x) => findNode(x, hit));
  if (!n || typeof n !== 'object') return false;
  const o = n as Node;
  return hit(o) || Object.values(o).some((x) => findNode(x, hit));
}

/**
 * Why an output row may carry the values of rows whose keys it does not hold, whatever the
 * occurrences: a window function (lag(), first_value(), count(*) OVER ()) reads other rows of its
 * partition, and a grouping set (ROLLUP, CUBE, GROUPING SETS) adds rows that sum several keys.
 */
function otherRowsWhy(stmt: Node): string | undefined {
  if (findNode(stmt, (o) => Boolean((o.FuncCall as Node | undefined)?.over))) return 'window function';
  if (findNode(stmt, (o) => o.GroupingSet !== undefined)) return 'GROUPING SETS, ROLLUP or CUBE';
  return undefined;
}

export function planSubjects(analysis: Analysis, access: Access | null, subjects: readonly SubjectDef[]): SubjectPlan | undefined {
  if (!subjects.length || !analysis.ok || !access) return undefined;
  const touched = subjects.filter((s) => access.tables.includes(s.table) || s.via.some((v) => access.tables.includes(tableOf(v))));
  if (!touched.length) return undefined;
  const plan: SubjectPlan = { capture: new Map(), hidden: [], dropAll: false, possible: new Map(), visible: access.statements[0]?.outputs?.length };
  if (analysis.statements.length !== 1) {
    for (const s of touched) plan.possible.set(s.name, `several statements in one text read ${s.table}`);
    return plan;
  }
  const st = analysis.statements[0]!;
  const sa = access.statements[0]!;
  const unknown = (why: string) => `keys unknown (${why}): every row the statement's predicate matched`;
  const keyCols = (s: SubjectDef) => [`${s.table}.${s.key}`, ...s.via];
  // Outputs the client sees that already carry a key (EXPLAIN's rows are its plan, not its query's).
  if (st.command?.type !== 'explain') {
    for (const [i, o] of (sa.outputs ?? []).entries()) {
      if (!o.plain || o.sources.length !== 1) continue;
      const s = touched.find((t) => keyCols(t).includes(o.sources[0]!));
      if (s) plan.capture.set(i, s.name);
    }
  }
  const captured = new Set(plan.capture.values());
  let root: Node | undefined;
  try {
    root = (parse(analysis.sql) as unknown as { stmts: { stmt: Node }[] }).stmts[0]!.stmt;
  } catch {
    // Not reached: the analysis parsed the same text.
  }
  const otherRows = root ? otherRowsWhy(root) : 'statement could not be parsed';
  // Each read of a subject's table (or a `via` table) must be captured by its own key: a key in the
  // output stands for that read only when it is the one read of those tables there is.
  const occ = new Map(touched.map((s) => [s.name, occurrencesOf(s, st, sa)]));
  const single = (s: SubjectDef) => occ.get(s.name)!.list.length === 1 && !occ.get(s.name)!.uncertain;
  const several = (s: SubjectDef) => {
    const o = occ.get(s.name)!;
    return o.uncertain ?? `${[s.table, ...s.via.map(tableOf)].join(', ')} read ${o.list.length} times in one statement, not each with its key in the result`;
  };
  if (st.command?.type === 'copy') {
    // Its rows are CopyData, read by CopyKeyReader, when the output is text or CSV to the client.
    const c = st.command;
    const how = c.direction === 'from' ? 'COPY FROM' : c.target !== 'stdio' ? `COPY to a server ${c.target}` : copyCapture(analysis.sql, sa.outputs?.length ?? 0);
    if (typeof how === 'string') plan.capture.clear();
    else if (plan.capture.size) plan.copy = how;
    for (const s of touched) {
      if (typeof how === 'string') plan.possible.set(s.name, unknown(how));
      else if (!captured.has(s.name)) plan.possible.set(s.name, unknown('COPY output without the key'));
      else if (!single(s)) plan.possible.set(s.name, unknown(several(s)));
      else if (otherRows) plan.possible.set(s.name, unknown(otherRows));
    }
    return plan;
  }
  // Definite from the output alone: one read, its key in the result.
  const open = touched.filter((s) => !(captured.has(s.name) && single(s)));
  if (!root) {
    for (const s of open) plan.possible.set(s.name, unknown('statement could not be parsed'));
    return plan;
  }
  // The others get a hidden key column for every read (SELECT), or a RETURNING (writes), when
  // every read is in the statement's own FROM list; otherwise the access is possible.
  const additions: { expr: string; subject: string }[] = [];
  const reasons = new Map<string, string>();
  let why: string | undefined;
  const sel = root.SelectStmt as Node | undefined;
  const dml = (root.UpdateStmt ?? root.DeleteStmt ?? root.InsertStmt) as Node | undefined;
  const top = topLevelQualifiers(st, st.root);
  const addFor = (s: SubjectDef) => {
    const o = occ.get(s.name)!;
    // The reads in the FROM list get their key either way: the keys are exact, the rest possible.
    for (const x of o.list) {
      const q = top.get(x.ref);
      const expr = q === undefined ? undefined : `${q}.${quoteIdent(x.column)}`;
      if (expr && !additions.some((a) => a.expr === expr && a.subject === s.name)) additions.push({ expr, subject: s.name });
    }
    if (o.uncertain) reasons.set(s.name, o.uncertain);
    else if (!o.list.length) reasons.set(s.name, 'read inside a function');
    else if (!o.list.every((x) => top.has(x.ref))) reasons.set(s.name, o.list.length > 1 ? several(s) : 'read inside a subquery or function, or behind a join alias or column aliases');
  };
  if (sel) {
    if (sel.op !== 'SETOP_NONE') why = 'set operation';
    else if (sel.distinctClause) why = 'DISTINCT';
    else if (sel.groupClause || sel.havingClause || hasAggregate(sel.targetList)) why = 'aggregate';
    else if (sel.intoClause) why = 'SELECT INTO';
    else if (st.command?.type === 'declare') why = st.command.type;
    for (const s of open) {
      if (why) reasons.set(s.name, occ.get(s.name)!.uncertain ?? (occ.get(s.name)!.list.length > 1 ? several(s) : why));
      else addFor(s);
    }
    if (!why && additions.length) {
      const { from } = spliceOffsets(analysis.sql);
      if (from === undefined) for (const a of additions) reasons.set(a.subject, 'no FROM');
      else {
        const list = additions.map((a, i) => `${a.expr} AS __scalple_subject_${i}`).join(', ');
        const empty = !Array.isArray(sel.targetList) || !(sel.targetList as unknown[]).length; // SELECT FROM t
        plan.upstreamSql = spliceBytes(analysis.sql, from, `${empty ? '' : ', '}${list} `);
        plan.hidden = additions.map((a) => a.subject);
      }
    }
  } else if (dml) {
    const kind = st.root === null ? undefined : st.scopes[st.root]?.kind;
    for (const s of open) {
      if (kind === 'insert' || kind === 'update' || kind === 'delete') addFor(s);
      else reasons.set(s.name, 'statement not understood');
    }
    if (additions.length) {
      const { end } = spliceOffsets(analysis.sql);
      const had = Array.isArray(dml.returningList) && (dml.returningList as unknown[]).length > 0;
      plan.upstreamSql = spliceBytes(analysis.sql, end, `${had ? ',' : ' RETURNING'} ${additions.map((a) => a.expr).join(', ')}`);
      plan.hidden = additions.map((a) => a.subject);
      plan.dropAll = !had;
    }
  } else for (const s of open) reasons.set(s.name, st.kind);
  for (const s of touched) {
    const r = reasons.get(s.name);
    if (r !== undefined) plan.possible.set(s.name, unknown(r));
    else if (open.includes(s) && !plan.hidden.includes(s.name)) plan.possible.set(s.name, unknown('read inside a subquery or function'));
    else if (otherRows) plan.possible.set(s.name, unknown(otherRows));
  }
  return plan;
}

// ------------------------------------------------------------------ COPY … TO STDOUT

/** A DefElem's argument as PostgreSQL's defGetString reads it; undefined when it has none. */
function optionText(arg: Node | undefined): string | undefined {
  if (!arg) return undefined;
  if (arg.String) return ((arg.String as Node).sval as string | undefined) ?? '';
  if (arg.Integer) return String(((arg.Integer as Node).ival as number | undefined) ?? 0);
  if (arg.Float) return String((arg.Float as Node).fval ?? '');
  if (arg.Boolean) return (arg.Boolean as Node).boolval ? 'true' : 'false';
  return undefined;
}

/**
 * How to read a COPY … TO STDOUT's rows, or why they cannot be read (binary, another encoding, an
 * option not understood: PostgreSQL rejects most of those itself).
 */
function copyCapture(sql: string, columns: number): CopyCapture | string {
  let options: Node[];
  try {
    const tree = parse(sql) as unknown as { stmts: { stmt: Node }[] };
    options = (((tree.stmts[0]!.stmt.CopyStmt as Node | undefined)?.options as Node[] | undefined) ?? []);
  } catch {
    return 'statement could not be parsed';
  }
  let format = 'text';
  let header = false;
  let delimiter: string | undefined;
  let nul: string | undefined;
  let quote: string | undefined;
  let escape: string | undefined;
  for (const o of options) {
    const d = o.DefElem as Node | undefined;
    if (!d) return 'COPY option not understood';
    const name = d.defname as string;
    const arg = d.arg as Node | undefined;
    const text = optionText(arg);
    switch (name) {
      case 'format':
        if (text !== 'text' && text !== 'csv') return text === 'binary' ? 'binary COPY' : `COPY format ${text ?? ''}`;
        format = text;
        break;
      case 'header': {
        // defGetCopyHeaderChoice: no argument, 0/1, true/false/on/off (any case).
        const v = arg === undefined ? 'true' : text?.toLowerCase();
        if (v === 'true' || v === 'on' || v === '1') header = true;
        else if (v === 'false' || v === 'off' || v === '0') header = false;
        else return `COPY HEADER ${text ?? ''}`;
        break;
      }
      case 'delimiter':
        delimiter = text;
        break;
      case 'null':
        nul = text;
        break;
      case 'quote':
        quote = text;
        break;
      case 'escape':
        escape = text;
        break;
      case 'encoding':
        // Client encoding is UTF-8 (the session ends otherwise); another COPY encoding is not read.
        if (!text || !/^(utf-?8|unicode)$/i.test(text)) return `COPY ENCODING ${text ?? ''}`;
        break;
      case 'force_quote':
      case 'log_verbosity':
        break; // quoting does not change values
      default:
        return `COPY option ${name}`;
    }
  }
  delimiter ??= format === 'csv' ? ',' : '\t';
  nul ??= format === 'csv' ? '' : '\\N';
  quote ??= '"';
  escape ??= quote;
  const oneByte = (x: string) => Buffer.byteLength(x) === 1;
  if (!oneByte(delimiter) || !oneByte(quote) || !oneByte(escape)) return 'COPY delimiter, quote or escape not one byte';
  const delim = delimiter.charCodeAt(0);
  const nullBytes = Buffer.from(nul, 'utf8');
  return {
    format: format as 'text' | 'csv',
    delimiter: delim,
    quote: quote.charCodeAt(0),
    escape: escape.charCodeAt(0),
    null: nullBytes,
    nullAmbiguous: format === 'text' && couldBeTextValue(nullBytes, delim),
    header,
    columns,
  };
}

/**
 * Whether `raw` is what COPY's text output (CopyAttributeOutText) may print for some value: every
 * backslash starts an escape it writes (\\, \b \f \n \r \t \v, \<delimiter>), and no byte it would
 * have escaped appears bare.
 */
function couldBeTextValue(raw: Buffer, delim: number): boolean {
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === BSL) {
      const n = raw[++i];
      if (n === undefined || !(n === BSL || n === delim || 'bfnrtv'.includes(String.fromCharCode(n)))) return false;
    } else if (c === delim || (c >= 0x08 && c <= 0x0d)) return false;
  }
  return true;
}

const NL = 0x0a;
const BSL = 0x5c;
const DOT = 0x2e;
/** A row longer than this is not assembled: the COPY's subjects become possible. */
const MAX_COPY_ROW = 64 * 1024 * 1024;

/** Where a COPY's keys go: the execution's definite keys and possible subjects. */
export interface SubjectSink {
  subjectKeys?: Set<string>;
  subjectsPossible?: Record<string, string>;
}

/**
 * Reads the subject keys of a COPY … TO STDOUT from the CopyData bytes relayed to the client, in
 * any split: rows may span CopyData messages and TCP chunks. Parses as PostgreSQL's own COPY FROM
 * would (CopyReadLineText, CopyReadAttributesText/CSV), so a key is exactly the value the row holds.
 * Anything unexpected (a row with the wrong number of fields, an unterminated quote) drops the keys
 * read so far and makes the access possible: keys are exact or not claimed.
 */
export class CopyKeyReader {
  private readonly keys = new Set<string>();
  private readonly possible = new Map<string, string>();
  private failed: string | undefined;
  /** Bytes of a row not yet complete (copied). */
  private parts: Buffer[] = [];
  private partBytes = 0;
  /** CSV row scan state across pushes (CopyReadLineText). */
  private inQuote = false;
  private lastWasEsc = false;
  private skipHeader: boolean;
  /** Field index -> subject, for the fields that are keys. */
  private readonly want: (string | undefined)[];
  private readonly last: number;
  private readonly values: (Buffer | null | undefined)[];
  private readonly subjects: string[];

  /** Checks CopyOutResponse against the plan; a reason string when the rows cannot be read. */
  static start(plan: SubjectPlan, copyOutResponse: Buffer): CopyKeyReader | string {
    const copy = plan.copy!;
    const format = copyOutResponse[0];
    const n = copyOutResponse.length >= 3 ? copyOutResponse.readInt16BE(1) : -1;
    if (format !== 0) return 'binary COPY';
    if (n !== copy.columns) return `COPY sent ${n} columns where its lineage has ${copy.columns}`;
    return new CopyKeyReader(copy, plan.capture);
  }

  constructor(private readonly copy: CopyCapture, capture: ReadonlyMap<number, string>) {
    this.skipHeader = copy.header;
    this.want = [];
    for (const [i, s] of capture) this.want[i] = s;
    this.last = Math.max(-1, ...capture.keys());
    this.values = new Array(this.last + 1);
    this.subjects = [...new Set(capture.values())];
  }

  /** The payload of a CopyData message, or any part of it, in order. */
  push(data: Buffer): void {
    if (this.failed) return;
    let start = 0;
    while (start < data.length) {
      const end = this.copy.format === 'csv' ? this.csvRowEnd(data, start) : data.indexOf(NL, start);
      if (end < 0) {
        this.partBytes += data.length - start;
        if (this.partBytes > MAX_COPY_ROW) return this.fail(`a COPY row over ${MAX_COPY_ROW >> 20} MiB`);
        this.parts.push(Buffer.from(data.subarray(start)));
        return;
      }
      let row = data.subarray(start, end);
      if (this.parts.length) {
        this.parts.push(row);
        row = Buffer.concat(this.parts);
        this.parts = [];
        this.partBytes = 0;
      }
      this.row(row);
      if (this.failed) return;
      start = end + 1;
    }
  }

  /** The COPY ended (CopyDone or an error): its keys and possible subjects go to the execution. */
  finish(into: SubjectSink): void {
    const possible = (why: string) => {
      into.subjectsPossible ??= {};
      for (const s of this.subjects) into.subjectsPossible[s] ??= `keys unknown (${why}): every row the statement's predicate matched`;
    };
    if (this.failed) return possible(this.failed);
    if (this.parts.length) possible('COPY data ended inside a row');
    for (const [s, why] of this.possible) (into.subjectsPossible ??= {})[s] ??= why;
    if (this.keys.size) {
      const k = (into.subjectKeys ??= new Set());
      for (const x of this.keys) k.add(x);
    }
  }

  private fail(why: string): void {
    this.failed = why;
    this.parts = [];
    this.keys.clear();
  }

  /** Index of the newline that ends the row, or -1; follows CopyReadLineText's CSV quote state. */
  private csvRowEnd(data: Buffer, start: number): number {
    const quote = this.copy.quote;
    // PostgreSQL ignores the escape character here when it is the quote character.
    const esc = this.copy.escape === quote ? -1 : this.copy.escape;
    let inQuote = this.inQuote;
    let lastWasEsc = this.lastWasEsc;
    const n = data.length;
    for (let i = start; i < n; i++) {
      const c = data[i]!;
      if (c === NL) {
        if (!inQuote) {
          this.inQuote = false;
          this.lastWasEsc = false;
          return i;
        }
      } else if (inQuote && c === esc) {
        lastWasEsc = !lastWasEsc;
        continue;
      } else if (c === quote && !lastWasEsc) inQuote = !inQuote;
      lastWasEsc = false;
    }
    this.inQuote = inQuote;
    this.lastWasEsc = lastWasEsc;
    return -1;
  }

  private row(row: Buffer): void {
    if (this.skipHeader) {
      this.skipHeader = false;
      return;
    }
    // The end-of-data marker (not sent by servers speaking protocol 3, but harmless): no value is
    // printed this way, in text (a backslash is doubled) or CSV (quoted).
    if (row.length === 2 && row[0] === BSL && row[1] === DOT) return;
    this.values.fill(undefined);
    const n = this.copy.format === 'csv' ? this.csvFields(row) : this.textFields(row);
    if (n !== this.copy.columns) return this.fail(n < 0 ? 'a COPY row could not be read' : `a COPY row had ${n} fields where ${this.copy.columns} were expected`);
    for (let i = 0; i <= this.last; i++) {
      const s = this.want[i];
      if (!s) continue;
      const v = this.values[i];
      if (v === undefined) return this.fail('a COPY row could not be read');
      if (v !== null) this.keys.add(`${s}:${v.toString('utf8')}`);
      else if (this.copy.nullAmbiguous) this.possible.set(s, `keys unknown (a key field equal to the NULL string "${this.copy.null.toString('utf8')}" of a text COPY may be a value): every row the statement's predicate matched`);
    }
  }

  /** Text format (CopyReadAttributesText): the number of fields; key fields decoded into `values`. */
  private textFields(row: Buffer): number {
    const delim = this.copy.delimiter;
    const n = row.length;
    // A row ending in an unescaped backslash would have escaped its newline: not COPY's output.
    if (n && row[n - 1] === BSL) {
      let k = 0;
      for (let j = n - 1; j >= 0 && row[j] === BSL; j--) k++;
      if (k % 2) return -1;
    }
    let field = 0;
    let s = 0;
    let escaped = false;
    for (let i = 0; ; i++) {
      if (i >= n || row[i] === delim) {
        if (field <= this.last && this.want[field] !== undefined) {
          this.values[field] = this.isNull(row, s, i) ? null : escaped ? unescapeText(row.subarray(s, i)) : row.subarray(s, i);
        }
        field++;
        if (i >= n) return field;
        s = i + 1;
        escaped = false;
      } else if (row[i] === BSL) {
        escaped = true;
        i++; // the escaped byte, a delimiter included
      }
    }
  }

  /** CSV format (CopyReadAttributesCSV): the number of fields, or -1; key fields into `values`. */
  private csvFields(row: Buffer): number {
    const { delimiter: delim, quote, escape } = this.copy;
    const n = row.length;
    let field = 0;
    let i = 0;
    for (;;) {
      const s = i;
      const wanted = field <= this.last && this.want[field] !== undefined;
      let out: number[] | undefined; // the value, once a wanted field turned out to be quoted
      let sawQuote = false;
      let foundDelim = false;
      let end = i;
      for (;;) {
        // Not in quote.
        const from = i;
        while (i < n && row[i] !== delim && row[i] !== quote) i++;
        if (out) for (let k = from; k < i; k++) out.push(row[k]!);
        end = i;
        if (i >= n) break;
        if (row[i] === delim) {
          foundDelim = true;
          i++;
          break;
        }
        sawQuote = true;
        if (wanted && !out) out = [...row.subarray(s, i)];
        i++;
        // In quote: an escape before a quote or an escape takes it literally; a quote ends it.
        for (;;) {
          if (i >= n) return -1; // unterminated quoted field
          const c = row[i++]!;
          if (c === escape && i < n && (row[i] === escape || row[i] === quote)) {
            if (out) out.push(row[i]!);
            i++;
            continue;
          }
          if (c === quote) break;
          if (out) out.push(c);
        }
      }
      if (wanted) this.values[field] = !sawQuote ? (this.isNull(row, s, end) ? null : row.subarray(s, end)) : Buffer.from(out!);
      field++;
      if (!foundDelim) return field;
    }
  }

  /** Whether the raw field is the NULL string (PostgreSQL compares the bytes before unescaping). */
  private isNull(row: Buffer, s: number, e: number): boolean {
    const nul = this.copy.null;
    return e - s === nul.length && row.compare(nul, 0, nul.length, s, e) === 0;
  }
}

/** A text-format field's value: \b \f \n \r \t \v, octal \ooo, hex \xhh, else the next byte itself. */
function unescapeText(raw: Buffer): Buffer {
  if (raw.indexOf(BSL) < 0) return raw;
  const out: number[] = [];
  const oct = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x37;
  const hex = (c: number | undefined) => c !== undefined && /[0-9a-fA-F]/.test(String.fromCharCode(c));
  for (let i = 0; i < raw.length; i++) {
    let c = raw[i]!;
    if (c === BSL) {
      if (i + 1 >= raw.length) break; // a trailing backslash is dropped
      c = raw[++i]!;
      if (oct(c)) {
        let v = c - 0x30;
        if (oct(raw[i + 1])) {
          v = (v << 3) + raw[++i]! - 0x30;
          if (oct(raw[i + 1])) v = (v << 3) + raw[++i]! - 0x30;
        }
        c = v & 0xff;
      } else if (c === 0x78 /* x */ && hex(raw[i + 1])) {
        let v = parseInt(String.fromCharCode(raw[++i]!), 16);
        if (hex(raw[i + 1])) v = (v << 4) + parseInt(String.fromCharCode(raw[++i]!), 16);
        c = v & 0xff;
      } else {
        const j = 'bfnrtv'.indexOf(String.fromCharCode(c));
        if (j >= 0) c = [0x08, 0x0c, 0x0a, 0x0d, 0x09, 0x0b][j]!;
      }
    }
    out.push(c);
  }
  return Buffer.from(out);
}
