// Batches go to PostgreSQL with COPY FROM STDIN: the cheapest way for the server to take many
// rows (measured here: a 1000-row batch costs the server several times less than a multi-row
// INSERT with 36 parameters per row, or than unpacking one JSON parameter), and one COPY is one
// statement, so one transaction: a batch commits whole or not at all.
//
// node-postgres runs COPY through its documented "submittable" extension point (the mechanism
// pg-cursor and pg-copy-streams use); this one sends a prepared buffer and needs no stream.
import type pg from 'pg';
import { type Json, type PendingRow, BODY_COLUMNS, canonicalJson } from './chain.ts';

/** COPY text format: backslash, newline, carriage return and tab are escaped; NULL is \N. */
function esc(s: string): string {
  return /[\\\n\r\t]/.test(s) ? s.replace(/[\\\n\r\t]/g, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t')) : s;
}

/** A text[] literal: every element quoted, so commas, braces, quotes and "NULL" stay text. */
function arrayLiteral(a: string[]): string {
  return '{' + a.map((x) => '"' + x.replace(/[\\"]/g, (c) => '\\' + c) + '"').join(',') + '}';
}

const ARRAY_COLUMNS = new Set(['groups', 'kinds', 'tables', 'columns', 'subject_keys']);
const JSON_COLUMNS = new Set(['acting_for', 'params', 'masked_fields', 'detail']);

/** The body columns of a row as COPY text fields, tab-separated (no leading or trailing tab). */
export function copyBody(row: PendingRow): string {
  let out = '';
  for (let i = 0; i < BODY_COLUMNS.length; i++) {
    const col = BODY_COLUMNS[i]!;
    const v = row[col];
    let f: string;
    if (v === null) f = '\\N';
    else if (ARRAY_COLUMNS.has(col)) f = esc(arrayLiteral(v as string[]));
    else if (JSON_COLUMNS.has(col)) f = esc(canonicalJson(v as Json));
    else if (typeof v === 'number') f = String(v);
    else f = esc(String(v));
    out += i === 0 ? f : '\t' + f;
  }
  return out;
}

/** One full COPY line: chain_id, seq, ts, the body, prev_hash, hash. */
export function copyLine(chainIdField: string, seq: number, ts: string, body: string, prevHash: string, hash: string): string {
  return `${chainIdField}\t${seq}\t${ts}\t${body}\t${prevHash}\t${hash}\n`;
}

export function copyField(s: string): string {
  return esc(s);
}

export const COPY_SQL = `COPY scalple_audit.records (chain_id, seq, ts, ${BODY_COLUMNS.map((c) => `"${c}"`).join(', ')}, prev_hash, hash) FROM STDIN`;

interface CopyConnection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
}

/** A submittable that runs COPY … FROM STDIN with the given data. */
class CopyIn {
  callback: ((err: Error | null) => void) | undefined;
  private error: Error | undefined;

  constructor(private readonly text: string, private readonly data: Buffer, private readonly onSent?: () => void) {}

  submit(connection: CopyConnection): void {
    connection.query(this.text);
  }

  handleCopyInResponse(connection: CopyConnection): void {
    const chunk = 1 << 20;
    for (let i = 0; i < this.data.length; i += chunk) connection.sendCopyFromChunk(this.data.subarray(i, i + chunk));
    connection.endCopyFrom();
    this.onSent?.();
  }

  handleCommandComplete(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyData(): void {}

  handleError(err: Error): void {
    // node-postgres clears the active query on an error, so ReadyForQuery will not reach us.
    this.error = err;
    this.finish();
  }

  handleReadyForQuery(): void {
    this.finish();
  }

  private finish(): void {
    const cb = this.callback;
    this.callback = undefined;
    cb?.(this.error ?? null);
  }
}

/** Runs COPY with `data`; resolves once the server has committed it (autocommit). `onSent`: the data is written. */
export function copyIn(client: pg.Client, data: string, onSent?: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const q = new CopyIn(COPY_SQL, Buffer.from(data, 'utf8'), onSent);
    q.callback = (err) => (err ? reject(err) : resolve());
    (client as unknown as { query(q: CopyIn): void }).query(q);
  });
}
