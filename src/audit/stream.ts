// Audit records as JSON lines, for Splunk, Datadog, Elastic and the like (config
// `audit.stream: stdout | /path/file`). The audit store stays the record of truth (chained,
// verified); the stream is a copy for the SIEM, written as records are handed to the store.
//
// Line format (stable; fields may be added, none renamed or removed): one JSON object per record,
// every line with the same keys, named as the columns of scalple_audit.records (and as the fields
// of `scalple audit log --format json`), in this order:
//
//   ts, log_id, record_type ('intent' | 'completion' | 'event'),
//   sub, email, name, groups, principal_kind, application, acting_for,
//   db_role, database, client_addr, application_name, session_id,
//   statement, params, kinds, tables, columns,
//   decision, rule, policy_version, reason, named_query, masked_fields,
//   rows, sqlstate, error, duration_ms, event, detail, subject_keys
//
// Columns that do not apply to a record type are null. `ts` is the record's own time (ISO 8601 UTC,
// milliseconds); the store may move a stored ts forward by a few ms to keep its chain monotonic.
// Intents carry who/what (statement already with masked literals redacted), completions carry
// rows/sqlstate/error/duration_ms and subject_keys ('customer:42'; 'customer:*' for a possible
// access, with detail.subjects_possible = {customer: why}), events carry event and detail. Chain
// position (chain_id, seq, hashes) is assigned at commit and is not part of the stream.
//
// Never blocks the proxy: a file is written through a buffered stream; when the reader (a pipe on
// stdout) or the disk falls behind by more than maxBufferBytes, lines are dropped and counted,
// with a warning, rather than growing memory without bound.
import { openSync, createWriteStream, type WriteStream } from 'node:fs';
import { ConfigError, errorMessage } from '../errors.ts';
import { BODY_COLUMNS, recordTimeMs, toPendingRow } from './chain.ts';
import type { AuditRecord } from './record.ts';

export interface RecordStreamOptions {
  /** policy_version filled in for completions and events (intents carry their own). Default null. */
  policyVersion?: string;
  /** Largest backlog before lines are dropped, in bytes. Default 64 MiB. */
  maxBufferBytes?: number;
  /** Told about write errors and dropped lines (default: one JSON line on stderr). */
  warn?: (msg: string, detail: Record<string, unknown>) => void;
}

export interface RecordStream {
  write(record: AuditRecord): void;
  /** Flushes what is buffered; closes a file (stdout stays open). */
  close(): Promise<void>;
  /** Lines dropped so far (backlog full, or the target failed). */
  readonly dropped: number;
}

/** The stream line of a record, as an object with the documented keys in order. */
export function streamLine(record: AuditRecord, policyVersion?: string): Record<string, unknown> {
  const row = toPendingRow(record, policyVersion ?? '');
  if (policyVersion === undefined && record.type !== 'intent') row.policy_version = null;
  const out: Record<string, unknown> = { ts: new Date(recordTimeMs(record)).toISOString() };
  for (const c of BODY_COLUMNS) out[c] = row[c];
  return out;
}

const defaultWarn = (msg: string, detail: Record<string, unknown>) =>
  process.stderr.write(JSON.stringify({ level: 'warn', ...detail, msg }) + '\n');

export function createRecordStream(target: 'stdout' | string, opts: RecordStreamOptions = {}): RecordStream {
  const maxBuffer = opts.maxBufferBytes ?? 64 * 1024 * 1024;
  const warn = opts.warn ?? defaultWarn;
  let out: NodeJS.WritableStream & { writableLength: number };
  let file: WriteStream | undefined;
  if (target === 'stdout') {
    out = process.stdout;
  } else {
    let fd: number;
    try {
      // Opened now, so a wrong path is a startup error rather than a silent gap later.
      fd = openSync(target, 'a', 0o640);
    } catch (err) {
      throw new ConfigError(`audit.stream: cannot open ${target} for appending: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`, err);
    }
    file = createWriteStream(target, { fd, flags: 'a' });
    out = file;
  }
  let dropped = 0;
  let dropping = false;
  let failed: string | undefined;
  let closed = false;
  const onError = (err: Error) => {
    if (!failed) warn('audit stream failed: records are no longer streamed (they are still in the audit store)', { target, err: errorMessage(err) });
    failed = errorMessage(err);
  };
  out.on('error', onError);

  return {
    get dropped() {
      return dropped;
    },
    write(record: AuditRecord): void {
      if (closed || failed) {
        dropped++;
        return;
      }
      if (out.writableLength > maxBuffer) {
        if (!dropping) warn('audit stream is behind: dropping lines until it catches up (records are still in the audit store)', { target, backlog_bytes: out.writableLength });
        dropping = true;
        dropped++;
        return;
      }
      if (dropping) {
        warn('audit stream caught up', { target, dropped });
        dropping = false;
      }
      let line: string;
      try {
        line = JSON.stringify(streamLine(record, opts.policyVersion)) + '\n';
      } catch (err) {
        warn('audit stream: record could not be serialised', { target, err: errorMessage(err) });
        dropped++;
        return;
      }
      out.write(line);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      if (file) {
        await new Promise<void>((resolve) => {
          if (file.destroyed) return resolve();
          file.once('close', () => resolve());
          file.end();
        });
      } else if (!failed && out.writableLength > 0) {
        await new Promise<void>((resolve) => {
          const done = () => {
            out.off('drain', done);
            out.off('error', done);
            resolve();
          };
          out.once('drain', done);
          out.once('error', done);
        });
      }
      out.off('error', onError);
    },
  };
}
