// The small SQL surface the proxy answers itself, never forwarded, so psql and DBeaver users get
// it too:
//   SELECT * FROM scalple.named_queries()            -- what the caller may run
//   SELECT * FROM scalple.run('name', 'arg', …)      -- run one, arguments as text literals
//   SELECT * FROM scalple.last_masked()              -- which outputs of the previous statement were masked
//   SELECT * FROM scalple.admin_revoke('email', 'reason'), scalple.admin_restore('email'),
//                 scalple.admin_grant('email', 'role', '2h', 'reason')   -- roles with admin: true
//   SELECT * FROM scalple.who_accessed('customer', '42' [, '30d'])      -- roles with audit: true
import { parse } from '../sql/index.ts';
import type { NamedQuery, NamedQueryParam } from '../policy/policy.ts';
import { Writer, Back } from './protocol.ts';

export type ScalpleCall =
  | { fn: 'named_queries' }
  | { fn: 'last_masked' }
  | { fn: 'run'; name: string; args: string[] }
  | { fn: 'admin_revoke' | 'admin_restore' | 'admin_grant' | 'who_accessed'; args: string[] }
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
  const args: string[] = [];
  for (const a of (call.args as Node[] | undefined) ?? []) {
    const c = a.A_Const as Node | undefined;
    const sval = (c?.sval as Node | undefined)?.sval;
    const ival = (c?.ival as Node | undefined)?.ival;
    if (typeof sval === 'string') args.push(sval);
    else if (c && c.ival !== undefined) args.push(String(ival ?? 0));
    else return { fn: 'invalid', message: "scalple.run() takes the query name and its arguments as literals: SELECT * FROM scalple.run('get_order_by_id', '7')" };
  }
  switch (names[1]) {
    case 'named_queries':
      return { fn: 'named_queries' };
    case 'last_masked':
      return { fn: 'last_masked' };
    case 'run':
      if (!args.length) return { fn: 'invalid', message: "scalple.run() needs the query name: SELECT * FROM scalple.run('get_order_by_id', '7')" };
      return { fn: 'run', name: args[0]!, args: args.slice(1) };
    case 'admin_revoke':
    case 'admin_restore':
    case 'admin_grant':
    case 'who_accessed':
      return { fn: names[1], args };
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

/** A complete text-only result set: RowDescription, DataRows, CommandComplete. */
export function textResult(columns: string[], rows: (string | null)[][]): Buffer[] {
  const t = new Writer().int16(columns.length);
  for (const c of columns) t.cstring(c).int32(0).int16(0).int32(25).int16(-1).int32(-1).int16(0);
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
