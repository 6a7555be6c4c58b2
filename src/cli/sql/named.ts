// Named, typed queries as the CLI sees them: the list the proxy answers for
// `SELECT * FROM scalple.named_queries()` (only those the caller may run), the statement that runs
// one (`SELECT * FROM scalple.run('name', 'arg', …)`), parameter flags in kebab-case, and the
// typed checks used while prompting. The proxy validates the types again: it is the authority.
import { ScalpleError } from '../../errors.ts';
import type { ProxySession } from './session.ts';
import { sqlLiteral } from './statements.ts';

export interface ParamSpec {
  name: string;
  /** int, bigint, numeric, bool, date, timestamp, uuid, text (others are accepted as text). */
  type: string;
}

export interface NamedQueryInfo {
  name: string;
  description: string;
  /** In call order. */
  params: ParamSpec[];
  roles: string[];
}

export const LIST_NAMED_QUERIES = 'SELECT * FROM scalple.named_queries()';

/** The named queries the caller may run, as the proxy lists them. */
export async function listNamedQueries(session: ProxySession): Promise<NamedQueryInfo[]> {
  const { result } = await session.execute(LIST_NAMED_QUERIES, undefined, { reportMasking: false });
  if (!result) throw new ScalpleError('UPSTREAM', 'The proxy did not answer scalple.named_queries() with rows: is it a Scalple proxy?');
  const col = (name: string) => {
    const i = result.fields.findIndex((f) => f.name === name);
    if (i < 0) throw new ScalpleError('UPSTREAM', `The proxy's scalple.named_queries() has no column "${name}": upgrade the CLI or the proxy`);
    return i;
  };
  const [iName, iDesc, iParams, iRoles] = [col('name'), col('description'), col('params'), col('roles')];
  return result.rows.map((row) => {
    const name = row[iName] ?? '';
    return {
      name,
      description: row[iDesc] ?? '',
      params: parseParams(name, row[iParams] ?? '[]'),
      roles: (row[iRoles] ?? '')
        .split(',')
        .map((r) => r.trim())
        .filter(Boolean),
    };
  });
}

function parseParams(query: string, text: string): ParamSpec[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || !parsed.every((p) => p && typeof p === 'object' && typeof p.name === 'string' && typeof p.type === 'string')) {
    throw new ScalpleError('UPSTREAM', `The proxy listed invalid parameters for ${query}: ${text}`);
  }
  return parsed.map((p: { name: string; type: string }) => ({ name: p.name, type: p.type }));
}

/** `SELECT * FROM scalple.run('get_order_by_id', '7')`: every argument a quoted literal. */
export function runStatementFor(name: string, args: readonly string[]): string {
  return `SELECT * FROM scalple.run(${[name, ...args].map(sqlLiteral).join(', ')})`;
}

/** A parameter's command-line flag: order_id -> order-id. */
export function flagName(param: string): string {
  return param.replace(/_/g, '-');
}

export function describeType(type: string): string {
  switch (type) {
    case 'int':
      return 'integer';
    case 'bigint':
      return '64-bit integer';
    case 'numeric':
      return 'number';
    case 'bool':
      return 'true or false';
    case 'date':
      return 'date, YYYY-MM-DD';
    case 'timestamp':
      return 'timestamp, YYYY-MM-DD HH:MM[:SS]';
    case 'uuid':
      return 'UUID';
    default:
      return type;
  }
}

const INT4 = { min: -(2n ** 31n), max: 2n ** 31n - 1n };
const INT8 = { min: -(2n ** 63n), max: 2n ** 63n - 1n };

/** Why `value` is not a valid `type`, or undefined when it is. */
export function checkParamValue(type: string, value: string): string | undefined {
  const v = value.trim();
  const inRange = (range: { min: bigint; max: bigint }) => /^[+-]?\d+$/.test(v) && BigInt(v) >= range.min && BigInt(v) <= range.max;
  switch (type) {
    case 'int':
      return inRange(INT4) ? undefined : `expected an integer from ${INT4.min} to ${INT4.max}`;
    case 'bigint':
      return inRange(INT8) ? undefined : 'expected a 64-bit integer';
    case 'numeric':
      return /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(v) ? undefined : 'expected a number, e.g. 12.50';
    case 'bool':
      return /^(t|f|true|false|y|n|yes|no|on|off|1|0)$/i.test(v) ? undefined : 'expected true or false';
    case 'date':
      return validDate(v) ? undefined : 'expected a date as YYYY-MM-DD';
    case 'timestamp': {
      const m = /^(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?$/i.exec(v);
      const timeOk = m && (m[2] === undefined || (Number(m[2]) < 24 && Number(m[3]) < 60 && Number(m[4] ?? 0) < 60));
      return m && validDate(m[1]!) && timeOk ? undefined : 'expected a timestamp as YYYY-MM-DD HH:MM[:SS]';
    }
    case 'uuid':
      return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v) ? undefined : 'expected a UUID, e.g. 123e4567-e89b-12d3-a456-426614174000';
    default:
      return value.includes('\u0000') ? 'the NUL character cannot be sent' : undefined;
  }
}

function validDate(v: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
}
