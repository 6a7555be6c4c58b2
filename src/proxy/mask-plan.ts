// The policy decision for one statement and one caller: refuse it (deny, statement kind, inference
// through masked columns, anything the analysis cannot see into), or let it run with a mask plan
// that says, per output column, which mask applies. Fail closed: an output that may carry a masked
// column and is not a plain reference to it is fully redacted — when every step from the column to
// the output is on the allow-list of built-ins that cannot fail, wait or compare depending on the
// value (analyse.ts, REDACTABLE_FUNCTIONS); anything else over masked columns, and anything
// unanalysable over masked tables, is refused.
import { parse, type Access, type Analysis, type Equality, type StatementInfo as SqlStatement } from '../sql/index.ts';
import { READ_ONLY_STATEMENTS, type EffectiveRole } from '../policy/policy.ts';
import { describeMask, maskFunction, REDACTED, type MaskFn, type MaskSpec } from '../policy/masks.ts';
import type { Refusal } from './statement-info.ts';

export interface ColumnMask {
  /** The mask applied, for the audit record: 'email', 'partial(keep_last=4)', 'redacted'. */
  label: string;
  fn: MaskFn;
  /** The base column(s) the value came from. */
  source?: string;
}

export interface MaskPlan {
  /** Mask per output column index; undefined entries pass through. */
  columns: (ColumnMask | undefined)[];
  /** Base column -> how it was masked, for the audit record. */
  maskedFields: Record<string, string>;
}

export type PolicyDecision =
  | { kind: 'allow'; plan?: MaskPlan; maskedFields?: Record<string, string> }
  | { kind: 'refuse'; refusal: Refusal };

/** Functions that run SQL text the analyser never sees, or reveal other sessions and values. */
const OPAQUE_FUNCTIONS = new Set([
  'query_to_xml', 'query_to_xml_and_xmlschema', 'query_to_xmlschema', 'table_to_xml', 'table_to_xml_and_xmlschema', 'table_to_xmlschema',
  'cursor_to_xml', 'cursor_to_xmlschema', 'schema_to_xml', 'schema_to_xml_and_xmlschema', 'schema_to_xmlschema', 'database_to_xml',
  'database_to_xml_and_xmlschema', 'database_to_xmlschema', 'dblink', 'dblink_exec', 'dblink_open', 'dblink_fetch', 'lo_import', 'lo_export',
  'pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_get_activity', 'pg_stat_statements', 'pg_get_backend_memory_contexts',
  'pg_stat_get_backend_activity', 'pg_stat_get_backend_pid', 'pg_stat_get_backend_userid', 'pg_stat_get_backend_client_addr',
  // Run a query given as text (built in, and tablefunc/xml2 from contrib).
  'ts_stat', 'ts_rewrite', 'crosstab', 'crosstab2', 'crosstab3', 'crosstab4', 'connectby', 'xpath_table',
]);

/** Side effects a read-only caller must not reach, whatever PostgreSQL would allow. */
const WRITE_FUNCTIONS = new Set([
  'nextval', 'setval', 'set_config', 'pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'pg_rotate_logfile',
  'lo_create', 'lo_creat', 'lo_unlink', 'lo_import', 'lo_export', 'lo_put', 'lo_from_bytea', 'lo_truncate', 'lowrite',
  'pg_advisory_lock', 'pg_advisory_xact_lock', 'pg_try_advisory_lock', 'txid_current', 'pg_notify', 'pg_switch_wal', 'pg_create_restore_point',
]);

/** System views whose rows are other sessions' statements or samples of column values. */
const REVEALING_RELATIONS = new Set([
  'pg_catalog.pg_stats', 'pg_catalog.pg_stats_ext', 'pg_catalog.pg_stats_ext_exprs', 'pg_catalog.pg_stat_activity', 'public.pg_stat_statements',
  'pg_catalog.pg_statistic', 'pg_catalog.pg_statistic_ext_data', 'pg_catalog.pg_prepared_statements', 'pg_catalog.pg_cursors',
]);

const REDACT: ColumnMask = { label: 'redacted', fn: maskFunction({ mask: 'redact' }, '') };

function refuse(rule: string, message: string): PolicyDecision {
  return { kind: 'refuse', refusal: { sqlstate: '42501', message, rule } };
}

function tableOf(column: string): string {
  return column.split('.').slice(0, 2).join('.');
}

export function decide(analysis: Analysis, access: Access | null, role: EffectiveRole, maskKey: string, userFunctions: readonly string[] = []): PolicyDecision {
  if (!analysis.ok) {
    // PostgreSQL will refuse the syntax; masked tables cannot be involved in a statement that never runs.
    return { kind: 'allow' };
  }
  const statements = analysis.statements;
  const hasPolicy = role.masked.size > 0 || role.denied.size > 0;
  const allowedKinds = role.statements ?? (role.write ? undefined : new Set(READ_ONLY_STATEMENTS));

  for (const st of statements) {
    if (allowedKinds && !allowedKinds.has(st.kind) && !(st.transaction && allowedKinds.has('BEGIN'))) {
      return refuse(`roles.${role.names.join('+')}.statements`, `${st.kind} is not allowed for your role (${role.names.join(', ') || 'default'}): ${role.write ? '' : 'read-only roles may run SELECT, EXPLAIN, SHOW, cursors and transaction control'}`.replace(/: $/, ''));
    }
    if (!role.write) {
      if (!st.readOnly && !st.transaction && st.kind !== 'SET' && st.kind !== 'SHOW') return refuse('read_only.statement', `this ${st.kind} writes, and your role is read-only`);
      const fn = st.functions.find((f) => WRITE_FUNCTIONS.has(f.name.toLowerCase()) || f.name.toLowerCase().startsWith('lo_'));
      if (fn) return refuse('read_only.function', `${fn.name}() changes state and your role is read-only`);
      if (st.transaction?.readOnly === false) return refuse('read_only.transaction', 'READ WRITE transactions are not allowed for your read-only role');
      if (st.setting && /transaction_read_only|default_transaction_read_only|session characteristics/.test(st.setting.name ?? '')) return refuse('read_only.setting', 'your role is read-only: transaction read-only settings cannot be changed');
    }
  }
  if (!hasPolicy) return { kind: 'allow' };
  // Fail closed: without the catalog nobody can tell which columns this reads.
  if (!access) return refuse('mask.no_catalog', 'the proxy cannot resolve this statement against the database catalog right now, and your role has masked or denied columns: try again shortly');

  // deny: refused outright when the statement would read the column or table.
  for (const col of access.columns) {
    const rule = role.denied.get(col) ?? role.denied.get(tableOf(col));
    if (rule) return refuse(rule, `policy denies reading ${col} (${rule})`);
  }
  for (const t of access.tables) {
    const rule = role.denied.get(t);
    if (rule) return refuse(rule, `policy denies reading ${t} (${rule})`);
  }
  // Views of values and other sessions, SQL-running functions, user functions and search_path
  // changes: not for callers with masked or denied columns.
  for (const t of access.tables) {
    if (REVEALING_RELATIONS.has(t)) return refuse('mask.system_view', `${t} can reveal masked values or other people's statements: not available to your role`);
  }
  for (const st of statements) {
    const fn = st.functions.find((f) => OPAQUE_FUNCTIONS.has(f.name.toLowerCase()) || f.name.toLowerCase() === 'set_config');
    if (fn) return refuse('mask.opaque_function', `${fn.name}() runs SQL or changes settings the proxy cannot check against the masking policy`);
    if (st.setting?.name === 'search_path') return refuse('mask.search_path', 'changing search_path is not available to roles with masked or denied columns');
    // Notifications carry whatever other sessions put in them, values of masked columns included.
    if (st.kind === 'LISTEN') return refuse('mask.listen', 'LISTEN is not available to roles with masked columns: notification payloads are not checked');
  }
  // A type named text in pg_temp would take over the `::text` casts allowed over masked values.
  const shadow = role.masked.size && statements.some((st) => st.ddl || !st.readOnly) ? shadowsTextType(analysis.sql) : undefined;
  if (shadow) return refuse('mask.shadow_type', `creating a type or relation named ${shadow} is not available to roles with masked columns: it would change what casts to ${shadow} do`);
  // Objects the catalog does not know (created in this session or transaction) may hide anything.
  if (access.unknownTables.length) return refuse('mask.unknown_relation', `${access.unknownTables.join(', ')} is not in the catalog the proxy checks masking against: not available to your role`);
  // A function body may read any table.
  if (userFunctions.length) return refuse('mask.user_function', `${userFunctions[0]}() is not a built-in function and may read masked columns: not available to your role`);
  // So may a function a view calls, or an operator written in SQL or PL/pgSQL.
  const userCode = access.statements.flatMap((sa) => sa.userCode ?? [])[0];
  if (userCode) return refuse('mask.user_function', `${userCode} is user-defined code that may read masked columns: not available to your role`);
  if (role.masked.size === 0) return { kind: 'allow' };

  const maskedTables = new Set([...role.masked.keys()].map(tableOf));
  const touchesMaskedTable = access.tables.some((t) => maskedTables.has(t));
  if (!touchesMaskedTable) return { kind: 'allow' };

  const maskedRead = access.columns.filter((c) => role.masked.has(c));
  if (statements.length !== 1) return refuse('mask.multi_statement', 'send statements that read masked columns one at a time');
  const st = statements[0]!;
  const sa = access.statements[0]!;
  if (st.opaque) return refuse('mask.opaque', `${st.opaque} runs code the proxy cannot check against the masking policy`);
  if (sa.unknownTables.length || sa.unresolved.length) return refuse('mask.unresolved', `cannot resolve ${[...sa.unknownTables, ...sa.unresolved].join(', ')} in a statement over masked tables`);
  if (!maskedRead.length) return { kind: 'allow' };
  // Set-returning functions in FROM hide which input becomes which output column.
  for (const scope of st.scopes) {
    if (scope.from.some(function hasFn(f): boolean { return f.type === 'function' || (f.type === 'join' && (hasFn(f.left) || hasFn(f.right))); })) {
      return refuse('mask.function_in_from', `a function in FROM over masked columns (${maskedRead.join(', ')}) hides where its output comes from: select the columns directly`);
    }
  }

  // Inference: choosing, joining, grouping, ordering or deduplicating rows by a masked column
  // answers questions about its value (WHERE ssn LIKE '1%'), at any depth: the lineage counts the
  // outputs of a subquery compared in WHERE, UNION without ALL, ORDER BY 2… as filters.
  const inferred = sa.otherFilters.find((c) => role.masked.has(c));
  if (inferred) return refuse('mask.inference', inferenceMessage(inferred, role));
  // Equality only — `a.phone = b.phone`, JOIN USING, GROUP BY, DISTINCT, count(DISTINCT), IS NULL —
  // tells which stored values are equal or NULL: what a hash mask shows anyway, when every value
  // compared is a column hashed with the same key. Compared with a literal, a parameter or anything
  // computed, it would answer a guess per statement (`phone = '+1555…'`: a dictionary), so those
  // stay filters, and refused.
  for (const eq of sa.equalities) {
    const problem = equalityProblem(eq, role);
    if (problem) return refuse('mask.inference', problem);
  }
  const writesMasked = sa.columnsWritten.length > 0 || st.flows.length > 0;
  if (writesMasked) return refuse('mask.copy_into', `statement copies or writes data derived from masked columns (${maskedRead.join(', ')})`);
  if (st.command?.type === 'copy') return refuse('mask.copy', `COPY of masked columns (${maskedRead.join(', ')}) is not available to your role: use SELECT`);
  if (st.command?.type === 'declare' || st.command?.type === 'fetch') return refuse('mask.cursor', 'cursors over masked columns are not available to your role: use SELECT');
  if (!sa.outputs) return refuse('mask.no_lineage', `cannot tell which outputs carry masked columns (${maskedRead.join(', ')})`);
  // A value computed over a masked column runs upstream: only through the allow-list of
  // built-ins that cannot fail, wait or compare depending on it (analyse.ts,
  // REDACTABLE_FUNCTIONS); the output is then redacted. Anything else is refused.
  const unsafe = sa.unsafe.find((u) => role.masked.has(u.column));
  if (unsafe) {
    const out = sa.outputs.find((o) => !o.plain && o.sources.includes(unsafe.column));
    const where = out ? `output "${out.name}"` : 'the statement';
    return refuse('mask.computed', `${where} computes over masked ${unsafe.column} with ${unsafe.why}, which could fail, wait or compare depending on the value: select the column itself (it comes back masked), compute with lower, upper, trim, ||, concat, coalesce, left/right/substr, length, md5, format (no widths), casts to text, min/max (of scalar values), count/string_agg/array_agg/json_agg (it comes back redacted), or ask for access`);
  }
  // One step putting two masked values together (`x || x`, concat(email, ssn), format('%1$s%1$s',
  // x)), or one masked column into two fields of a record: chained, doubling builds 2^n copies and
  // fails on PostgreSQL's 1 GB limit exactly when length · 2^n passes it, which tells the length.
  for (const c of sa.combined) {
    const masked = c.args.map((a) => a.filter((x) => role.masked.has(x)));
    const twice = c.record ? masked.flat().find((x, i, all) => all.indexOf(x) !== i) : masked.filter((m) => m.length > 0).length > 1 ? masked.flat()[0] : undefined;
    if (twice === undefined) continue;
    const what = c.record ? `masked ${twice} in two of its fields` : `more than one value derived from masked columns (${[...new Set(masked.flat())].join(', ')})`;
    return refuse('mask.computed', `${c.why} puts ${what} into one value: repeated, that builds a value whose size tells the length of the masked value (PostgreSQL's 1 GB limit). Combine one masked value at a time with constants or unmasked columns, select the columns separately, or ask for access`);
  }

  const columns: (ColumnMask | undefined)[] = [];
  const maskedFields: Record<string, string> = {};
  const note = (column: string, label: string): void => {
    const had = maskedFields[column];
    maskedFields[column] = had === undefined || had === label ? label : had.split('; ').includes(label) ? had : `${had}; ${label}`;
  };
  sa.outputs.forEach((out, i) => {
    const hits = out.sources.filter((s) => role.masked.has(s));
    if (!hits.length) {
      columns.push(undefined);
      return;
    }
    // A plain reference (through aliases, subqueries, CTEs, UNION ALL, views) keeps its column's
    // mask when every branch it may come from is masked, all with the same mask. A branch with no
    // masked column, or different masks, gets the redaction: `hash` in particular must never be
    // applied to a value the caller chose (`SELECT phone … UNION ALL SELECT '+1555…'`).
    const spec = out.plain ? agreedMask(sa.outputBranches?.[i] ?? [out.sources], role) : undefined;
    if (spec) {
      const label = describeMask(spec);
      columns.push({ label, fn: maskFunction(spec, maskKey), source: hits.join(', ') });
      for (const h of hits) note(h, label);
      return;
    }
    columns.push({ ...REDACT, source: hits.join(', ') });
    for (const h of hits) note(h, out.plain ? REDACTED_MIXED : REDACTED_COMPUTED);
  });
  return { kind: 'allow', plan: { columns, maskedFields }, maskedFields };
}

const HASH_EQUALITY = 'a hash-masked column can be used only for equality with another column hashed with the same key (a.phone = b.phone, IS [NOT] DISTINCT FROM, JOIN … USING, GROUP BY phone, DISTINCT, count(DISTINCT phone), phone IS NULL)';

function inferenceMessage(column: string, role: EffectiveRole): string {
  const spec = role.masked.get(column);
  if (spec?.mask === 'hash') {
    return `${column} is masked (hash) for your role: ${HASH_EQUALITY}; comparing it with a literal, a parameter or an expression would test guesses of its value, and ORDER BY, <, LIKE, IN and ANY would tell more than equality`;
  }
  return `${column} is masked for your role: it cannot be used to filter, join, group, order or deduplicate rows (WHERE, JOIN, GROUP BY, ORDER BY, DISTINCT, UNION/INTERSECT/EXCEPT, or a subquery compared in one of them)`;
}

/** Why an equality use over masked columns tells more than the masks show (undefined: it does not). */
function equalityProblem(eq: Equality, role: EffectiveRole): string | undefined {
  const column = eq.operands.flatMap((o) => o.sources).find((s) => role.masked.has(s));
  if (column === undefined) return undefined;
  const spec = role.masked.get(column)!;
  if (spec.mask !== 'hash') return inferenceMessage(column, role);
  if (!role.hashEquality && eq.kind !== 'null') {
    return `${column} is masked (hash) for your role: comparing it, even with another hash-masked column, is off (the policy's hash_equality: PostgreSQL may compare by sorting the clear values, and the rows' order would show it)`;
  }
  const head = `${column} is masked (hash) for your role: ${HASH_EQUALITY}`;
  let agreed: string | undefined;
  let family: string | null | undefined;
  for (const o of eq.operands) {
    if (!o.plain) return `${head}; ${eq.label} here is over a value computed from it`;
    const m = agreedMask(o.branches, role);
    if (!m || m.mask !== 'hash' || (agreed !== undefined && agreed !== describeMask(m))) {
      return `${head}; ${eq.label} here compares it with ${o.sources.length ? o.sources.join(', ') : 'a value'}, which is not (in every branch) a column hashed with the same key`;
    }
    agreed ??= describeMask(m);
    // Equality of NULL-ness is the same for any type; equality of values only where equal values
    // print alike (not numeric 1.0 = 1.00, a case-insensitive collation, citext…).
    if (eq.kind === 'null') continue;
    if (o.family === null || (family !== undefined && family !== o.family)) {
      return `${head}; ${eq.label} here compares values of ${o.sources.join(', ')} whose type or collation makes values equal that print differently, so it would tell more than their hashes`;
    }
    family = o.family;
  }
  if (eq.shadowed) return `${head}; ${eq.label} here could resolve to ${eq.shadowed}`;
  return undefined;
}

/** How a redacted output is named in the audit record's masked_fields. */
export const REDACTED_COMPUTED = 'redact (computed)';
export const REDACTED_MIXED = 'redact (mixed sources)';

/** The one mask every branch of a plain output agrees on, if they do. */
function agreedMask(branches: readonly (readonly string[])[], role: EffectiveRole): MaskSpec | undefined {
  let agreed: MaskSpec | undefined;
  for (const branch of branches) {
    const specs = branch.flatMap((s) => role.masked.get(s) ?? []);
    if (!specs.length) return undefined;
    for (const spec of specs) {
      if (agreed && describeMask(agreed) !== describeMask(spec)) return undefined;
      agreed ??= spec;
    }
  }
  return agreed;
}

/** Names a type a cast to text could resolve to instead of pg_catalog's (see castTarget in analyse.ts). */
const SHADOWED_TYPES = new Set(['text', 'varchar', 'bpchar']);

/**
 * A statement that creates (or renames something to) a type or relation named like a text type: in
 * pg_temp, which the shared catalog does not see, it would take over `::text` for this session and
 * turn an allowed cast into a cast that can fail on a masked value.
 */
function shadowsTextType(sql: string): string | undefined {
  let tree: unknown;
  try {
    tree = parse(sql);
  } catch {
    return undefined; // not parsed: refused elsewhere
  }
  let found: string | undefined;
  const last = (list: unknown): string | undefined => {
    if (!Array.isArray(list)) return undefined;
    const v = (list[list.length - 1] as { String?: { sval?: string } } | undefined)?.String?.sval;
    return typeof v === 'string' ? v : undefined;
  };
  const visit = (n: unknown): void => {
    if (found || n === null || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      for (const x of n) visit(x);
      return;
    }
    const o = n as Record<string, unknown>;
    const candidates = [
      (o.CreateDomainStmt as Record<string, unknown> | undefined)?.domainname,
      (o.CreateEnumStmt as Record<string, unknown> | undefined)?.typeName,
      (o.CreateRangeStmt as Record<string, unknown> | undefined)?.typeName,
      (o.DefineStmt as Record<string, unknown> | undefined)?.defnames,
    ].map(last);
    const relname = (o.RangeVar as Record<string, unknown> | undefined)?.relname ?? (typeof o.relname === 'string' ? o.relname : undefined);
    const renamed = (o.RenameStmt as Record<string, unknown> | undefined)?.newname;
    for (const c of [...candidates, relname, renamed]) if (typeof c === 'string' && SHADOWED_TYPES.has(c)) found = c;
    for (const k in o) visit(o[k]);
  };
  visit(tree);
  return found;
}

/** The mask for a column PostgreSQL reports in RowDescription (table OID, attnum), if any. */
export function maskForOrigin(column: string | undefined, role: EffectiveRole, maskKey: string): ColumnMask | undefined {
  if (!column) return undefined;
  const spec: MaskSpec | undefined = role.masked.get(column);
  return spec ? { label: describeMask(spec), fn: maskFunction(spec, maskKey), source: column } : undefined;
}

export type { SqlStatement };
