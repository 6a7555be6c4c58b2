// Which data subjects (customer 42, …) a statement returned or changed. Keys are read from the
// result: from output columns that are the subject's key (or a `via` column pointing at it), and,
// when a statement reads a subject table without returning its key, from a hidden key column the
// proxy adds to the statement and strips before the client sees it (SELECT … , c.id FROM …;
// UPDATE/DELETE/INSERT … RETURNING id). Where keys cannot be known without changing what the
// client receives (aggregates, DISTINCT, set operations, functions), the access is recorded as
// *possible*, with the statement as its predicate.
import { scanSync } from 'libpg-query';
import { parse, type Access, type Analysis } from '../sql/index.ts';
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
}

type Node = Record<string, unknown>;

const AGGREGATES = new Set([
  'count', 'sum', 'avg', 'min', 'max', 'string_agg', 'array_agg', 'json_agg', 'jsonb_agg', 'json_object_agg', 'jsonb_object_agg', 'bool_and',
  'bool_or', 'every', 'bit_and', 'bit_or', 'bit_xor', 'xmlagg', 'stddev', 'stddev_pop', 'stddev_samp', 'variance', 'var_pop', 'var_samp',
  'covar_pop', 'covar_samp', 'corr', 'regr_avgx', 'regr_avgy', 'regr_count', 'regr_intercept', 'regr_r2', 'regr_slope', 'regr_sxx', 'regr_sxy',
  'regr_syy', 'percentile_cont', 'percentile_disc', 'mode', 'range_agg', 'range_intersect_agg', 'any_value',
]);

function quoteIdent(s: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(s) ? s : `"${s.replace(/"/g, '""')}"`;
}

function tableOf(col: string): string {
  return col.split('.').slice(0, 2).join('.');
}

/** Relations in a FROM list, through joins but not into subqueries: [schema|null, name, alias|null]. */
function fromRelations(items: Node[] | undefined): { schema: string | null; name: string; alias: string | null }[] {
  const out: { schema: string | null; name: string; alias: string | null }[] = [];
  const walk = (n: Node | undefined) => {
    if (!n) return;
    const rv = n.RangeVar as Node | undefined;
    if (rv) {
      out.push({ schema: (rv.schemaname as string | undefined) ?? null, name: rv.relname as string, alias: ((rv.alias as Node | undefined)?.aliasname as string | undefined) ?? null });
      return;
    }
    const j = n.JoinExpr as Node | undefined;
    if (j) {
      walk(j.larg as Node);
      walk(j.rarg as Node);
    }
  };
  for (const i of items ?? []) walk(i);
  return out;
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
  for (const t of tokens) {
    if (t.text.startsWith('/*') || t.text.startsWith('--')) continue;
    if (t.text === '(') depth++;
    else if (t.text === ')') depth--;
    else if (depth === 0 && from === undefined && t.text.toUpperCase() === 'FROM') from = t.start;
    if (t.text !== ';') end = t.end;
  }
  return { from, end };
}

function spliceBytes(sql: string, at: number, insert: string): string {
  const b = Buffer.from(sql, 'utf8');
  return Buffer.concat([b.subarray(0, at), Buffer.from(insert, 'utf8'), b.subarray(at)]).toString('utf8');
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
  const keyCols = (s: SubjectDef) => [`${s.table}.${s.key}`, ...s.via];
  // Outputs the client sees that already carry a key.
  for (const [i, o] of (sa.outputs ?? []).entries()) {
    if (!o.plain || o.sources.length !== 1) continue;
    const s = touched.find((t) => keyCols(t).includes(o.sources[0]!));
    if (s) plan.capture.set(i, s.name);
  }
  const captured = new Set(plan.capture.values());
  const missing = touched.filter((s) => !captured.has(s.name));
  if (!missing.length) return plan;

  let tree: { stmts: { stmt: Node }[] };
  try {
    tree = parse(analysis.sql) as unknown as typeof tree;
  } catch {
    for (const s of missing) plan.possible.set(s.name, 'statement could not be parsed');
    return plan;
  }
  const root = tree.stmts[0]!.stmt;
  const additions: { expr: string; subject: string }[] = [];
  let why: string | undefined;
  const sel = root.SelectStmt as Node | undefined;
  const dml = (root.UpdateStmt ?? root.DeleteStmt ?? root.InsertStmt) as Node | undefined;
  if (sel) {
    if (sel.op !== 'SETOP_NONE') why = 'set operation';
    else if (sel.distinctClause) why = 'DISTINCT';
    else if (sel.groupClause || sel.havingClause || hasAggregate(sel.targetList)) why = 'aggregate';
    else if (sel.intoClause) why = 'SELECT INTO';
    else if (st.command?.type === 'copy' || st.command?.type === 'declare') why = st.command.type;
    const rels = fromRelations(sel.fromClause as Node[] | undefined);
    for (const s of missing) {
      if (why) break;
      const [schema, name] = s.table.split('.') as [string, string];
      const direct = rels.find((r) => r.name === name && (r.schema === null || r.schema === schema));
      const via = direct ? undefined : s.via.map((v) => ({ v, r: rels.find((r) => r.name === v.split('.')[1] && (r.schema === null || r.schema === v.split('.')[0])) })).find((x) => x.r);
      const rel = direct ?? via?.r;
      const column = direct ? s.key : via?.v.split('.')[2];
      if (!rel || !column) continue; // reached only inside a subquery or function: possible
      const qualifier = rel.alias ?? (rel.schema ? `${quoteIdent(rel.schema)}.${quoteIdent(rel.name)}` : quoteIdent(rel.name));
      additions.push({ expr: `${qualifier}.${quoteIdent(column)}`, subject: s.name });
    }
    if (!why && additions.length) {
      const { from } = spliceOffsets(analysis.sql);
      if (from === undefined) why = 'no FROM';
      else {
        plan.upstreamSql = spliceBytes(analysis.sql, from, `${additions.map((a, i) => `, ${a.expr} AS __scalple_subject_${i}`).join('')} `);
        plan.hidden = additions.map((a) => a.subject);
      }
    }
  } else if (dml) {
    const rel = dml.relation as Node;
    const relName = rel.relname as string;
    const relSchema = (rel.schemaname as string | undefined) ?? 'public';
    const alias = ((rel.alias as Node | undefined)?.aliasname as string | undefined) ?? relName;
    for (const s of missing) {
      const column = s.table === `${relSchema}.${relName}` ? s.key : s.via.find((v) => tableOf(v) === `${relSchema}.${relName}`)?.split('.')[2];
      if (column) additions.push({ expr: `${quoteIdent(alias)}.${quoteIdent(column)}`, subject: s.name });
    }
    if (additions.length) {
      const { end } = spliceOffsets(analysis.sql);
      const had = Array.isArray(dml.returningList) && (dml.returningList as unknown[]).length > 0;
      plan.upstreamSql = spliceBytes(analysis.sql, end, `${had ? ',' : ' RETURNING'} ${additions.map((a) => a.expr).join(', ')}`);
      plan.hidden = additions.map((a) => a.subject);
      plan.dropAll = !had;
    }
  } else why = st.kind;
  for (const s of missing) {
    if (!plan.hidden.includes(s.name)) plan.possible.set(s.name, `keys unknown (${why ?? 'read inside a subquery or function'}): every row the statement's predicate matched`);
  }
  return plan;
}
