// Rendering of one query result for `scalple query` / `scalple run` / the shell: a table for people
// (masked cells marked, NULL distinct from '', numbers right-aligned, a footer naming what was
// masked, one-record-per-block when too wide), and exact JSON, CSV (RFC 4180) and NDJSON for
// scripts. Pure: no I/O besides the stream it is given; colour only on a TTY without NO_COLOR.
import Table from 'cli-table3';
import { Chalk, type ChalkInstance } from 'chalk';

/** One output column: its name and the PostgreSQL type OID from RowDescription. */
export interface ResultField {
  name: string;
  typeOid: number;
}

export interface QueryResult {
  fields: ResultField[];
  /** Text-format values, one array per row, null for SQL NULL. */
  rows: (string | null)[][];
  /** Names of the columns the proxy masked. */
  masked: ReadonlySet<string>;
}

export type OutputFormat = 'table' | 'json' | 'csv' | 'ndjson';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'json', 'csv', 'ndjson'];

export interface RenderTarget {
  write(s: string): unknown;
  isTTY?: boolean;
  /** Terminal width, when the target is a terminal. */
  columns?: number;
}

export interface RenderOptions {
  format?: OutputFormat;
  /** -x: one record per block. Without it, the table turns expanded when wider than `width`. */
  expanded?: boolean;
  /** Terminal width; default: the target's `columns` when it is a TTY (no automatic switch otherwise). */
  width?: number;
  /** Default: the target is a TTY and NO_COLOR is not set. */
  color?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface TextOptions {
  color?: boolean;
  /** Switch to the expanded layout when the table is wider than this. */
  width?: number;
}

/** PostgreSQL type OIDs the renderer treats specially. */
export const PgType = {
  bool: 16,
  int8: 20,
  int2: 21,
  int4: 23,
  oid: 26,
  float4: 700,
  float8: 701,
  money: 790,
  numeric: 1700,
} as const;

const RIGHT_ALIGNED = new Set<number>([PgType.int2, PgType.int4, PgType.int8, PgType.oid, PgType.float4, PgType.float8, PgType.numeric, PgType.money]);

/** How NULL and masked cells are shown in the table and expanded layouts. */
export const NULL_TEXT = '[NULL]';
export const MASK_MARK = '⊘';

/**
 * Writes a result to `out` in the chosen format.
 *
 * @example
 * renderResult({ fields, rows, masked: new Set(['email']) }, process.stdout, { format: 'table', expanded: opts.x });
 */
export function renderResult(result: QueryResult, out: RenderTarget, options: RenderOptions = {}): void {
  const format = options.format ?? 'table';
  switch (format) {
    case 'json':
      out.write(formatJson(result));
      return;
    case 'ndjson':
      out.write(formatNdjson(result));
      return;
    case 'csv':
      out.write(formatCsv(result));
      return;
    case 'table': {
      const env = options.env ?? process.env;
      const color = options.color ?? (out.isTTY === true && !env.NO_COLOR);
      const width = options.width ?? (out.isTTY ? out.columns : undefined);
      out.write(options.expanded ? formatExpanded(result, { color }) : formatTable(result, { color, ...(width ? { width } : {}) }));
      return;
    }
  }
}

// ---- for people --------------------------------------------------------------------------------

function painter(color: boolean | undefined): ChalkInstance {
  return new Chalk({ level: color ? 1 : 0 });
}

/** A table (cli-table3); the expanded layout instead when the table is wider than `width`. */
export function formatTable(result: QueryResult, options: TextOptions = {}): string {
  const c = painter(options.color);
  const table = new Table({
    head: result.fields.map((f) => c.bold(result.masked.has(f.name) ? `${displayText(f.name)} ${MASK_MARK}` : displayText(f.name))),
    colAligns: result.fields.map((f) => (RIGHT_ALIGNED.has(f.typeOid) ? 'right' : 'left')),
    style: { head: [], border: [], compact: true },
  });
  for (const row of result.rows) table.push(result.fields.map((f, i) => cellText(row[i] ?? null, result.masked.has(f.name), c)));
  const text = result.fields.length ? table.toString() : '';
  if (options.width !== undefined && displayWidth(text.split('\n')[0] ?? '') > options.width) return formatExpanded(result, options);
  return (text ? text + '\n' : '') + footer(result) + '\n';
}

/** psql's `\x` layout: one block per record, a line per column. */
export function formatExpanded(result: QueryResult, options: TextOptions = {}): string {
  const c = painter(options.color);
  const names = result.fields.map((f) => displayText(f.name) + (result.masked.has(f.name) ? ` ${MASK_MARK}` : ''));
  const keyWidth = Math.max(0, ...names.map(displayWidth));
  const lines: string[] = [];
  result.rows.forEach((row, r) => {
    const cells = result.fields.map((f, i) => cellText(row[i] ?? null, result.masked.has(f.name), c));
    const valueWidth = Math.max(0, ...cells.flatMap((v) => v.split('\n').map(displayWidth)));
    const title = `-[ RECORD ${r + 1} ]`;
    lines.push(c.dim(title + '-'.repeat(Math.max(0, keyWidth + 1 - title.length)) + '+' + '-'.repeat(valueWidth + 1)));
    cells.forEach((v, i) => {
      v.split('\n').forEach((part, k) => {
        const key = k === 0 ? names[i]! : '';
        lines.push(`${c.bold(key)}${' '.repeat(keyWidth - displayWidth(key))} | ${part}`);
      });
    });
  });
  lines.push(footer(result));
  return lines.join('\n') + '\n';
}

function cellText(value: string | null, masked: boolean, c: ChalkInstance): string {
  const shown = value === null ? c.dim.italic(NULL_TEXT) : displayText(value);
  return masked ? c.yellow(`${MASK_MARK} `) + c.yellow(shown) : shown;
}

/** `(3 rows · masked: email, iban)` */
export function footer(result: QueryResult): string {
  const n = result.rows.length;
  const masked = result.fields.map((f) => f.name).filter((name, i, all) => result.masked.has(name) && all.indexOf(name) === i);
  return `(${n} ${n === 1 ? 'row' : 'rows'}${masked.length ? ` · masked: ${masked.join(', ')}` : ''})`;
}

/** Control characters (a terminal escape in the data, a tab) shown escaped; newlines kept. */
function displayText(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/g, (ch) => {
    if (ch === '\t') return '\\t';
    if (ch === '\r') return '\\r';
    return `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;

/** Terminal columns a line takes (ANSI colours stripped; East Asian wide characters count 2). */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s.replace(ANSI, '')) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0x300 && cp <= 0x36f) continue; // combining marks
    w += isWide(cp) ? 2 : 1;
  }
  return w;
}

function isWide(cp: number): boolean {
  return (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1faff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  );
}

// ---- for scripts -------------------------------------------------------------------------------

type JsonValue = string | number | boolean | null;

/**
 * How each column becomes JSON: numbers as JSON numbers only when every value of the column
 * converts without loss (int8 beyond 2^53, numeric with trailing zeros such as 10.50, NaN and
 * Infinity keep the whole column as strings, so a column never mixes types); booleans as true/false;
 * masked columns and everything else as the server's text.
 */
function jsonConverters(result: QueryResult): ((v: string) => JsonValue)[] {
  return result.fields.map((f, i) => {
    if (result.masked.has(f.name)) return asText;
    const values = result.rows.map((r) => r[i]).filter((v): v is string => v !== null && v !== undefined);
    const convertible = (test: (v: string) => boolean) => values.every(test);
    switch (f.typeOid) {
      case PgType.int2:
      case PgType.int4:
      case PgType.oid:
      case PgType.int8:
        return convertible((v) => /^-?\d+$/.test(v) && Number.isSafeInteger(Number(v))) ? Number : asText;
      case PgType.float4:
      case PgType.float8:
        return convertible((v) => Number.isFinite(Number(v)) && v.trim() === v && sameDecimal(v, String(Number(v)))) ? Number : asText;
      case PgType.numeric:
        return convertible((v) => String(Number(v)) === v) ? Number : asText;
      case PgType.bool:
        return convertible((v) => v === 't' || v === 'f') ? (v: string) => v === 't' : asText;
      default:
        return asText;
    }
  });
}

const asText = (v: string): JsonValue => v;

/** Two decimal literals denote the same number (1.5e-07 and 1.5e-7; 0.10 and 0.1). */
function sameDecimal(a: string, b: string): boolean {
  return canonicalDecimal(a) === canonicalDecimal(b);
}

function canonicalDecimal(s: string): string | undefined {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(s);
  if (!m) return undefined;
  const frac = m[3] ?? '';
  let digits = ((m[2] ?? '') + frac).replace(/^0+/, '');
  let exp = Number(m[4] ?? 0) - frac.length;
  if (digits === '') return '0';
  while (digits.endsWith('0')) {
    digits = digits.slice(0, -1);
    exp++;
  }
  return `${m[1] === '-' ? '-' : ''}${digits}e${exp}`;
}

/** Object keys: the column names, a duplicate name suffixed _2, _3… so no value is lost. */
function jsonKeys(result: QueryResult): string[] {
  const seen = new Set<string>();
  return result.fields.map((f) => {
    let key = f.name;
    for (let n = 2; seen.has(key); n++) key = `${f.name}_${n}`;
    seen.add(key);
    return key;
  });
}

function jsonRows(result: QueryResult): Record<string, JsonValue>[] {
  const keys = jsonKeys(result);
  const convert = jsonConverters(result);
  return result.rows.map((row) => {
    const obj: Record<string, JsonValue> = {};
    keys.forEach((k, i) => {
      const v = row[i];
      obj[k] = v === null || v === undefined ? null : convert[i]!(v);
    });
    return obj;
  });
}

/** An array of objects, one per row. */
export function formatJson(result: QueryResult): string {
  return JSON.stringify(jsonRows(result), null, 2) + '\n';
}

/** One JSON object per line. */
export function formatNdjson(result: QueryResult): string {
  return jsonRows(result)
    .map((o) => JSON.stringify(o) + '\n')
    .join('');
}

/**
 * RFC 4180: a header line, CRLF line ends, fields quoted when they hold a comma, a quote, CR or LF.
 * NULL is an empty unquoted field and the empty string is `""` (PostgreSQL's COPY … CSV convention).
 */
export function formatCsv(result: QueryResult): string {
  const line = (cells: (string | null)[]) => cells.map(csvField).join(',') + '\r\n';
  return line(result.fields.map((f) => f.name)) + result.rows.map((r) => line(result.fields.map((_, i) => r[i] ?? null))).join('');
}

function csvField(v: string | null): string {
  if (v === null) return '';
  if (v === '' || /[",\r\n]/.test(v)) return `"${v.replace(/"/g, '""')}"`;
  return v;
}
