// The small SQL surface the proxy answers itself, never forwarded, so psql and DBeaver users get
// it too:
//   SELECT * FROM scalple.named_queries()            -- what the caller may run
//   SELECT * FROM scalple.run('name', 'arg', …)      -- run one, arguments as text literals
//   SELECT * FROM scalple.last_masked()              -- which outputs of the previous statement were masked
//   SELECT * FROM scalple.admin_revoke('email', 'reason'), scalple.admin_restore('email'),
//                 scalple.admin_grant('email', 'role', '2h', 'reason')   -- roles with admin: true
//   SELECT * FROM scalple.who_accessed('customer', '42' [, since [, limit]])   -- roles with audit: true
//   SELECT * FROM scalple.access_report('customer', '42' [, since [, until]])  -- (see audit-answers.ts)
//   SELECT * FROM scalple.anomalies(['30d' [, until]])
// The audit functions also take named arguments (`until => '2026-01-01'`, `format => 'json'`), and
// NULL for an optional positional argument left out.
import { parse } from '../sql/index.ts';
import type { NamedQuery, NamedQueryParam } from '../policy/policy.ts';
import { Writer, Back, errorResponse } from './protocol.ts';

/** The proxy's answers from the audit store (audit: true roles). */
export type AuditFunction = 'who_accessed' | 'access_report' | 'anomalies';

export type ScalpleCall =
  | { fn: 'named_queries' }
  | { fn: 'last_masked' }
  | { fn: 'run'; name: string; args: string[] }
  | { fn: 'admin_revoke' | 'admin_restore' | 'admin_grant'; args: string[] }
  | { fn: AuditFunction; args: (string | null)[]; named: Record<string, string | null> }
  | { fn: 'invalid'; message: string };

type Node = Record<string, unknown>;

const USAGE = "the scalple schema is answered by the proxy: SELECT * FROM scalple.named_queries(), SELECT * FROM scalple.run('name', 'arg', …) or SELECT * FROM scalple.last_masked()";

/** Recognises a call to the proxy's own functions; undefined when the text does not mention them. */
export function scalpleCall(sql: string, functions: readonly { schema: string | null; name: string }[]): ScalpleCall | undefined {
  if (!functions.some((f) => f.schema === 'scalple')) return undefined;
  let tree: { stmts?: { stmt: Node }[] };
  try {
    tree = parse(sql) as unknown as typeof tree;
  } catch {
    return { fn: 'invalid', message: USAGE };
  }
  const stmts = tree.stmts ?? [];
  const select = stmts.length === 1 ? (stmts[0]!.stmt.SelectStmt as Node | undefined) : undefined;
  const from = select?.fromClause as Node[] | undefined;
  const rf = from?.length === 1 ? (from[0]!.RangeFunction as Node | undefined) : undefined;
  const items = ((rf?.functions as Node[] | undefined)?.[0]?.List as Node | undefined)?.items as Node[] | undefined;
  const call = items?.[0]?.FuncCall as Node | undefined;
  const names = (call?.funcname as Node[] | undefined)?.map((n) => (n.String as Node | undefined)?.sval);
  if (!call || !names || names.length !== 2 || names[0] !== 'scalple' || select?.whereClause || from!.length !== 1) return { fn: 'invalid', message: USAGE };
  const args: (string | null)[] = [];
  const named: Record<string, string | null> = {};
  const audit = names[1] === 'who_accessed' || names[1] === 'access_report' || names[1] === 'anomalies';
  for (const a of (call.args as Node[] | undefined) ?? []) {
    // Named arguments (name => 'value') and NULL only for the audit functions.
    const na = audit ? (a.NamedArgExpr as Node | undefined) : undefined;
    const c = ((na ? (na.arg as Node | undefined) : a)?.A_Const) as Node | undefined;
    const sval = (c?.sval as Node | undefined)?.sval;
    const ival = (c?.ival as Node | undefined)?.ival;
    let v: string | null;
    if (typeof sval === 'string') v = sval;
    else if (c && c.ival !== undefined) v = String(ival ?? 0);
    else if (c && c.isnull === true && audit) v = null;
    else return { fn: 'invalid', message: audit ? `scalple.${names[1]}() takes literals (text, integers, NULL) and named arguments like until => '2026-01-01'` : "scalple.run() takes the query name and its arguments as literals: SELECT * FROM scalple.run('get_order_by_id', '7')" };
    if (na) {
      const name = String(na.name ?? '');
      if (name in named) return { fn: 'invalid', message: `scalple.${names[1]}(): argument ${name} given twice` };
      named[name] = v;
    } else if (Object.keys(named).length) {
      return { fn: 'invalid', message: `scalple.${names[1]}(): positional arguments come before named ones` };
    } else args.push(v);
  }
  const texts = (): string[] | undefined => (args.every((x): x is string => x !== null) ? args : undefined);
  switch (names[1]) {
    case 'named_queries':
      return { fn: 'named_queries' };
    case 'last_masked':
      return { fn: 'last_masked' };
    case 'run': {
      const a = texts();
      if (!a?.length) return { fn: 'invalid', message: "scalple.run() needs the query name: SELECT * FROM scalple.run('get_order_by_id', '7')" };
      return { fn: 'run', name: a[0]!, args: a.slice(1) };
    }
    case 'admin_revoke':
    case 'admin_restore':
    case 'admin_grant': {
      const a = texts();
      return a ? { fn: names[1], args: a } : { fn: 'invalid', message: `scalple.${names[1]}() takes text literals` };
    }
    case 'who_accessed':
    case 'access_report':
    case 'anomalies':
      return { fn: names[1], args, named };
    default:
      return { fn: 'invalid', message: USAGE };
  }
}

const TYPE_OIDS: Record<NamedQueryParam['type'], number> = { int: 23, bigint: 20, numeric: 1700, text: 25, bool: 16, date: 1082, timestamp: 1114, uuid: 2950 };

export function paramTypeOid(t: NamedQueryParam['type']): number {
  return TYPE_OIDS[t];
}

/** Checks each argument against its declared type; returns a message naming the first bad one. */
export function checkArgs(q: NamedQuery, args: string[]): string | undefined {
  if (args.length !== q.params.length) {
    return `${q.name} takes ${q.params.length} argument(s) (${q.params.map((p) => `${p.name} ${p.type}`).join(', ') || 'none'}), got ${args.length}`;
  }
  for (let i = 0; i < args.length; i++) {
    const p = q.params[i]!;
    const v = args[i]!;
    const ok =
      p.type === 'int' ? /^-?\d{1,10}$/.test(v) && Math.abs(Number(v)) <= 2147483647
      : p.type === 'bigint' ? /^-?\d{1,19}$/.test(v)
      : p.type === 'numeric' ? /^-?\d+(\.\d+)?$/.test(v)
      : p.type === 'bool' ? /^(true|false|t|f|yes|no|1|0)$/i.test(v)
      : p.type === 'date' ? /^\d{4}-\d{2}-\d{2}$/.test(v) && !Number.isNaN(Date.parse(v))
      : p.type === 'timestamp' ? !Number.isNaN(Date.parse(v))
      : p.type === 'uuid' ? /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v)
      : true;
    if (!ok) return `invalid value for ${p.name} (${p.type}): ${JSON.stringify(v.slice(0, 40))}`;
  }
  return undefined;
}

/** A result column: its name and type (text, json or int8; values are sent as text either way). */
export interface ResultColumn {
  name: string;
  type: 'text' | 'json' | 'int8' | 'float8';
}

const COLUMN_OIDS: Record<ResultColumn['type'], number> = { text: 25, json: 114, int8: 20, float8: 701 };

/** Like textResult, with typed columns: psql aligns numbers, drivers parse json. */
export function typedResult(columns: ResultColumn[], rows: (string | null)[][]): Buffer[] {
  const t = new Writer().int16(columns.length);
  for (const c of columns) t.cstring(c.name).int32(0).int16(0).int32(COLUMN_OIDS[c.type]).int16(-1).int32(-1).int16(0);
  const out = [t.message(Back.RowDescription)];
  for (const r of rows) {
    const d = new Writer().int16(r.length);
    for (const v of r) {
      if (v === null) d.int32(-1);
      else {
        const b = Buffer.from(v, 'utf8');
        d.int32(b.length).bytes(b);
      }
    }
    out.push(d.message(Back.DataRow));
  }
  out.push(new Writer().cstring(`SELECT ${rows.length}`).message(Back.CommandComplete));
  return out;
}

/** A complete text-only result set: RowDescription, DataRows, CommandComplete. */
export function textResult(columns: string[], rows: (string | null)[][]): Buffer[] {
  return typedResult(columns.map((name) => ({ name, type: 'text' })), rows);
}

/** A NoticeResponse (psql prints it as "NOTICE:  message" with its DETAIL lines). */
export function noticeMessage(message: string, detail?: string): Buffer {
  return errorResponse({ severity: 'NOTICE', code: '00000', message, ...(detail ? { detail } : {}) }, Back.NoticeResponse);
}
