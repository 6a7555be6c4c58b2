// Batches go to PostgreSQL with COPY FROM STDIN: the cheapest way for the server to take many
// rows (measured here: a 1000-row batch costs the server several times less than a multi-row
// INSERT with 36 parameters per row, or than unpacking one JSON parameter), and one COPY is one
// statement, so one transaction: a batch commits whole or not at all.
//
// node-postgres runs COPY through its documented "submittable" extension point (the mechanism
// pg-cursor and pg-copy-streams use); this one sends a prepared buffer and needs no stream.
import type pg from 'pg';
import { type PendingRow, BODY_COLUMNS, copyFields, copyText } from './chain.ts';

// COPY text format: backslash, newline, carriage return and tab are escaped; NULL is \N. The
// escaping lives in chain.ts, whose record encoder produces a record's COPY fields together with
// its canonical form (one pass when the record is queued).

/** The body columns of a row as COPY text fields, tab-separated (no leading or trailing tab). */
export function copyBody(row: PendingRow): string {
  return copyFields(row);
}

/** One full COPY line: chain_id, seq, ts, the body, prev_hash, hash. */
export function copyLine(chainIdField: string, seq: number, ts: string, body: string, prevHash: string, hash: string): string {
  return `${chainIdField}\t${seq}\t${ts}\t${body}\t${prevHash}\t${hash}\n`;
}

export function copyField(s: string): string {
  return copyText(s);
}

/**
 * The COPY data of a batch, written line by line as UTF-8 into one growing Buffer (no giant
 * string to build, flatten and convert at the end).
 */
export class CopyPayload {
  private buf: Buffer;
  private len = 0;

  /** `estimate`: expected size in UTF-16 code units (the sum of the lines' lengths). */
  constructor(estimate: number) {
    this.buf = Buffer.allocUnsafe(Math.max(4096, Math.ceil(estimate * 1.25)));
  }

  write(s: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    if (this.buf.length - this.len < s.length * 3) {
      const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + s.length * 3));
      this.buf.copy(bigger, 0, 0, this.len);
      this.buf = bigger;
    }
    this.len += this.buf.write(s, this.len, 'utf8');
  }

  /** The data written (shares memory with the builder). */
  data(): Buffer {
    return this.buf.subarray(0, this.len);
  }
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
export function copyIn(client: pg.Client, data: Buffer | string, onSent?: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const q = new CopyIn(COPY_SQL, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, onSent);
    q.callback = (err) => (err ? reject(err) : resolve());
    (client as unknown as { query(q: CopyIn): void }).query(q);
  });
}
