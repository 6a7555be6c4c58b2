// Connections to the audit store. Kept here so every audit module opens them the same way:
// a direct PostgreSQL connection (never a transaction pooler), errors that name the server and
// role but never the password, and an 'error' listener so a dropped connection cannot crash the
// process (node-postgres emits 'error' on an idle client).
import pg from 'pg';
import { ScalpleError, errorMessage } from '../errors.ts';

export type PgClient = pg.Client;

/** user@host:port/db — for messages; never contains the password. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    const db = u.pathname.replace(/^\//, '') || '(default db)';
    return `${u.username ? decodeURIComponent(u.username) + '@' : ''}${u.hostname}${u.port ? ':' + u.port : ''}/${decodeURIComponent(db)}`;
  } catch {
    return '(invalid URL)';
  }
}

/** The role a URL logs in as (the writer role of audit.url). */
export function roleOfUrl(url: string): string | undefined {
  try {
    const u = new URL(url);
    return u.username ? decodeURIComponent(u.username) : undefined;
  } catch {
    return undefined;
  }
}

export class AuditStoreError extends ScalpleError {
  constructor(message: string, cause?: unknown) {
    super('AUDIT_UNAVAILABLE', message, { cause });
    this.name = 'AuditStoreError';
  }
}

export interface ConnectOptions {
  applicationName?: string;
  connectTimeoutMs?: number;
  /** statement_timeout for the session, in ms (0: none). */
  statementTimeoutMs?: number;
  onError?: (err: Error) => void;
}

export async function connect(url: string, opts: ConnectOptions = {}): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: url,
    application_name: opts.applicationName ?? 'scalple-audit',
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    keepAlive: true,
    ...(opts.statementTimeoutMs ? { statement_timeout: opts.statementTimeoutMs } : {}),
  });
  client.on('error', (err) => opts.onError?.(err));
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw new AuditStoreError(`cannot connect to the audit store ${describeUrl(url)}: ${pgMessage(err)}`, err);
  }
  return client;
}

/** A short, one-line description of a pg error (SQLSTATE included when there is one). */
export function pgMessage(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const msg = (errorMessage(err) || String(e.code ?? 'unknown error')).split('\n')[0]!;
  return typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) ? `${msg} (SQLSTATE ${e.code})` : msg;
}

export function sqlstateOf(err: unknown): string | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && /^[0-9A-Z]{5}$/.test(c) ? c : undefined;
}

export function quoteIdent(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}
