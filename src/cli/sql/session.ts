// One person's session with the Scalple proxy for `query`, `run`, `queries` and the shell: a `pg`
// client that presents the profile's token in the startup packet, runs one statement at a time
// with results kept as the server's text, asks the proxy which output columns it masked, cancels
// a running statement with a CancelRequest, and — when the proxy ends the session because the
// token expired — refreshes the token and reconnects once by itself. A statement the expiry cut
// short is run again only when running it twice cannot change anything (repeat.ts); otherwise the
// person is told it may or may not have run.
import net from 'node:net';
import pg from 'pg';
import { decodeJwt } from 'jose';
import { ScalpleError, errorMessage } from '../../errors.ts';
import { getFreshToken, loginHint, type FreshToken, type FreshTokenOptions } from '../../auth/session.ts';
import { parseHostPort } from '../../auth/profile.ts';
import type { QueryResult, ResultField } from '../render.ts';
import type { OutStream } from '../io.ts';
import { sqlLiteral } from './statements.ts';
import type { RepeatDecision } from './repeat.ts';

/** What the proxy reports for each masked output column of the previous statement. */
export interface MaskedColumn {
  column: string;
  /** schema.table.column the value came from. */
  source: string;
  mask: string;
}

/** The outcome of one statement. */
export interface StatementOutcome {
  /** Present when the statement returned rows (a RowDescription), even zero of them. */
  result: QueryResult | undefined;
  /** Details of the masked columns, as the proxy reported them. */
  maskedColumns: MaskedColumn[];
  /** The command tag, e.g. `UPDATE 3`, `SELECT 2`. */
  tag: string;
  durationMs: number;
}

export interface ExecuteOptions {
  /** Ask the proxy which columns it masked (default true); off for the CLI's own catalog lookups. */
  reportMasking?: boolean;
}

/** An error the server sent (ErrorResponse), with the fields the CLI shows. */
export class ServerError extends ScalpleError {
  readonly severity: string;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  /** The server's own message, without the detail and hint lines. */
  readonly serverMessage: string;
  constructor(err: pg.DatabaseError) {
    // One or two lines: the server's message (a policy refusal names its rule), then its hint or detail.
    const second = err.hint ? `hint: ${err.hint}` : err.detail ? `detail: ${err.detail}` : undefined;
    super(err.code === '42501' ? 'POLICY_DENIED' : 'UPSTREAM', second ? `${err.message}\n${second}` : err.message, { sqlstate: err.code ?? 'XX000', cause: err });
    this.name = 'ServerError';
    this.serverMessage = err.message;
    this.severity = err.severity ?? 'ERROR';
    this.detail = err.detail;
    this.hint = err.hint;
  }
}

export interface ProxySessionOptions {
  profile?: string;
  env: NodeJS.ProcessEnv;
  /** Where notices go: reconnections, server NOTICEs, a proxy that cannot report masking. */
  stderr: OutStream;
  /** application_name the proxy records. */
  applicationName: string;
  /** Sent as `SET scalple.reason = …` on connecting (and again after a reconnection). */
  reason?: string;
  /** Called when the proxy ends the session while no statement runs (token expiry, revocation, shutdown). */
  onEnded?: (reason: string, tokenExpired: boolean) => void;
  /** Swapped in tests. */
  freshToken?: (profile: string | undefined, options: FreshTokenOptions) => Promise<FreshToken>;
}

/** pg keeps the BackendKeyData on the client without typing it. */
interface CancelKeys {
  processID: number | null;
  secretKey: number | null;
}

const CANCEL_REQUEST_CODE = 80877102;
const CONNECT_TIMEOUT_MS = 15_000;
const CANCEL_SOCKET_TIMEOUT_MS = 5_000;
const TOKEN_EXPIRED = /^token expired/i;
/** PostgreSQL: "cannot execute … in a read-only transaction". */
const READ_ONLY_TRANSACTION = '25006';

/** Every value as the server's text: numbers, dates and JSON are shown exactly as PostgreSQL wrote them. */
const TEXT_TYPES = { getTypeParser: () => (value: string) => value } as unknown as pg.CustomTypesConfig;

export class ProxySession {
  private client: pg.Client | undefined;
  private fatal: pg.DatabaseError | Error | undefined;
  private reason: string | undefined;
  private maskingUnsupported = false;
  private token: FreshToken | undefined;
  /** A statement is running: an end of the session is reported by execute(), not onEnded. */
  private busy = false;

  private constructor(private readonly opts: ProxySessionOptions) {
    this.reason = opts.reason;
  }

  /**
   * Connects to the profile's proxy. Throws AUTH_REQUIRED (exit 4) when not logged in or the token
   * cannot be refreshed, CONFIG when the profile has no proxy.
   *
   * @example
   * const session = await ProxySession.open({ env, stderr, applicationName: 'scalple query' });
   * const { result } = await session.execute('SELECT id, email FROM customers LIMIT 3');
   */
  static async open(opts: ProxySessionOptions): Promise<ProxySession> {
    const session = new ProxySession(opts);
    try {
      await session.connect(false);
    } catch (err) {
      // The token looked fresh here but the proxy says it expired (clock skew): refresh once.
      if (!(err instanceof ServerError && err.sqlstate === '28000')) throw err;
      await session.reconnect('The proxy says the token expired');
    }
    return session;
  }

  /** host:port and database of the proxy this session talks to. */
  get target(): { host: string; port: number; database: string | undefined; profile: string } {
    const settings = this.token!.settings;
    if (!settings.proxy) throw new ScalpleError('CONFIG', `Profile "${this.token!.profile}" has no proxy: run \`${loginCommand(this.token!.profile)} --proxy HOST:PORT --database NAME\``);
    return { ...parseHostPort(settings.proxy), database: settings.database, profile: this.token!.profile };
  }

  /** The person the token names (its email claim), for the prompt and pg_stat_activity. */
  get who(): string {
    try {
      const claims = decodeJwt(this.token!.token);
      return typeof claims.email === 'string' ? claims.email : typeof claims.sub === 'string' ? claims.sub : 'scalple';
    } catch {
      return 'scalple';
    }
  }

  /** True inside a transaction block (BEGIN … without COMMIT yet). */
  get inTransaction(): boolean {
    const status = this.client?.getTransactionStatus();
    return status === 'T' || status === 'E';
  }

  private async connect(forceRefresh: boolean): Promise<void> {
    const freshToken = this.opts.freshToken ?? getFreshToken;
    this.token = await freshToken(this.opts.profile, { env: this.opts.env, stderr: this.opts.stderr, forceRefresh });
    const { host, port, database } = this.target;
    const client = new pg.Client({
      host,
      port,
      ...(database ? { database } : {}),
      user: this.who,
      application_name: this.opts.applicationName,
      options: `-c scalple.identity=${this.token.token}`,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      types: TEXT_TYPES,
    });
    this.fatal = undefined;
    // The session can end while idle (expiry, revocation, proxy shutdown): remember why.
    client.on('error', (err) => {
      if (this.client !== client) return; // a session already replaced
      const first = this.fatal === undefined;
      if (!this.fatal || !(this.fatal instanceof pg.DatabaseError)) this.fatal = err;
      if (first && !this.busy) this.opts.onEnded?.(errorMessage(err), isTokenExpiry(err));
    });
    client.on('notice', (n) => this.opts.stderr.write(`${n.severity ?? 'NOTICE'}: ${n.message}\n`));
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => undefined);
      throw connectError(err, host, port, this.token.profile);
    }
    this.client = client;
    if (this.reason !== undefined) await this.sendReason(this.reason);
  }

  /** Reconnects, with a refreshed token unless `refresh` is false; an expiry right after means the person must log in again. */
  private async reconnect(why: string, refresh = true): Promise<void> {
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
    this.opts.stderr.write(`! ${why}; reconnecting${refresh ? ' with a refreshed token' : ''}\n`);
    try {
      await this.connect(refresh);
    } catch (err) {
      if (err instanceof ServerError && err.sqlstate === '28000') {
        throw new ScalpleError('AUTH_REQUIRED', `The proxy refused the refreshed token (${err.message}): ${loginHint(this.token?.profile ?? 'default')}`, { cause: err });
      }
      throw err;
    }
  }

  /** Sets the access reason for the following statements (`SET scalple.reason`, kept by the proxy). */
  async setReason(reason: string): Promise<void> {
    this.reason = reason;
    await this.ensureConnected();
    await this.sendReason(reason);
  }

  private async sendReason(reason: string): Promise<void> {
    try {
      await this.client!.query(`SET scalple.reason = ${sqlLiteral(reason)}`);
    } catch (err) {
      throw asServerError(err);
    }
  }

  private async ensureConnected(): Promise<void> {
    // Let an end of the session that has already arrived (a FATAL in the socket's buffer) be seen
    // first: a statement then goes to a fresh session instead of into a closing one.
    if (this.client && !this.fatal) await new Promise<void>((resolve) => setImmediate(resolve));
    if (this.client && !this.fatal) return;
    const why = this.fatal;
    const expired = why instanceof pg.DatabaseError && why.code === '28000' && TOKEN_EXPIRED.test(why.message);
    if (why instanceof pg.DatabaseError && why.code === '28000' && !expired) {
      throw new ScalpleError('AUTH_FAILED', `The proxy ended the session: ${why.message}`);
    }
    // A transaction block open in the session that ended was rolled back with it: the statement
    // meant for it must not run on its own in the new session (it would commit by itself).
    const lostTransaction = this.inTransaction;
    if (expired) await this.reconnect('The proxy ended the session because the token expired');
    else await this.reconnect(`The session with the proxy ended (${why ? errorMessage(why) : 'closed'})`, false);
    if (lostTransaction) {
      throw new ScalpleError('UPSTREAM', 'The session ended while a transaction block was open: the transaction was rolled back, and this statement was not run. Start the transaction again.', { sqlstate: '08006' });
    }
  }

  /**
   * Runs one statement (simple protocol; extended with `values` as $1, $2…) and asks the proxy
   * which of its output columns were masked. When the proxy ends the session because the token
   * expired, reconnects with a refreshed token; the statement is sent again only when it certainly
   * has not run (the session was already over when it was to be sent: it goes to the new session)
   * or when running it twice cannot change anything (repeat.ts: reads only, no transaction block
   * open; run again inside BEGIN READ ONLY). Otherwise it throws an error saying the statement may
   * or may not have run and was not run again.
   */
  async execute(sql: string, values?: readonly string[], options: ExecuteOptions = {}): Promise<StatementOutcome> {
    await this.ensureConnected();
    const wasInTransaction = this.inTransaction;
    const reportMasking = options.reportMasking ?? true;
    this.busy = true;
    try {
      return await this.runOnce(sql, values, reportMasking);
    } catch (err) {
      if (!isTokenExpiry(err)) throw asServerError(err, true);
      this.fatal = err as pg.DatabaseError;
      // Loaded only here: the statement analyser is not needed on any other path.
      const { repeatDecision } = await import('./repeat.ts');
      return await this.afterExpiry(sql, values, reportMasking, await repeatDecision(sql, wasInTransaction));
    } finally {
      this.busy = false;
    }
  }

  /** The token expired while `sql` ran: reconnect, then run it again only if that is harmless. */
  private async afterExpiry(sql: string, values: readonly string[] | undefined, reportMasking: boolean, decision: RepeatDecision): Promise<StatementOutcome> {
    const profile = this.token?.profile ?? 'default';
    if (!decision.repeat) {
      const why = notRepeatedMessage(decision.reason);
      try {
        await this.reconnect('The proxy ended the session because the token expired');
      } catch (err) {
        // Say what became of the statement even when the person must log in again.
        throw err instanceof ScalpleError ? new ScalpleError(err.code, `${why}\n${err.message}`, { cause: err }) : err;
      }
      throw new ScalpleError('UPSTREAM', why, { sqlstate: '08006' });
    }
    await this.reconnect('The proxy ended the session because the token expired');
    this.opts.stderr.write('! The statement only reads data: running it again, in a read-only transaction\n');
    try {
      return await this.runReadOnly(sql, values, reportMasking);
    } catch (again) {
      if (isTokenExpiry(again)) throw new ScalpleError('AUTH_REQUIRED', `The token expired again right after a refresh: ${loginHint(profile)}`);
      if (again instanceof pg.DatabaseError && again.code === READ_ONLY_TRANSACTION) {
        // It writes after all (a function that writes): PostgreSQL refused the second run.
        throw new ScalpleError('UPSTREAM', `${notRepeatedMessage('may-have-written')}\n(Run again in a read-only transaction, it tried to write: ${again.message}.)`, { sqlstate: '08006', cause: again });
      }
      throw asServerError(again);
    }
  }

  /** Runs `sql` inside BEGIN READ ONLY … COMMIT: PostgreSQL refuses any write it would make. */
  private async runReadOnly(sql: string, values: readonly string[] | undefined, reportMasking: boolean): Promise<StatementOutcome> {
    const client = this.client!;
    await client.query('BEGIN READ ONLY');
    try {
      const outcome = await this.runOnce(sql, values, reportMasking);
      // Nothing to commit in a read-only transaction: if the session is gone by now, the next statement reconnects.
      await client.query('COMMIT').catch(() => undefined);
      return outcome;
    } catch (err) {
      if (this.client === client && !this.fatal) await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  private async runOnce(sql: string, values: readonly string[] | undefined, reportMasking: boolean): Promise<StatementOutcome> {
    const started = performance.now();
    const raw = (await this.client!.query({ text: sql, ...(values ? { values: [...values] } : {}), rowMode: 'array' })) as unknown as pg.QueryArrayResult | pg.QueryArrayResult[];
    const durationMs = performance.now() - started;
    const results = Array.isArray(raw) ? raw : [raw];
    const last = results.at(-1)!;
    const returnsRows = last.fields.length > 0 || last.command === 'SELECT';
    let maskedColumns: MaskedColumn[] = [];
    if (returnsRows && reportMasking) {
      try {
        maskedColumns = await this.lastMasked();
      } catch (err) {
        // The statement has run and its rows are here (masked by the proxy): never run it again
        // for want of the masking report. The next statement reconnects.
        if (!isTokenExpiry(err)) throw err;
        this.fatal = err as pg.DatabaseError;
        this.opts.stderr.write('! The token expired right after the statement: its rows are shown, but masked cells are not marked\n');
      }
    }
    const result: QueryResult | undefined = returnsRows
      ? {
          fields: last.fields.map((f): ResultField => ({ name: f.name, typeOid: f.dataTypeID })),
          rows: last.rows as (string | null)[][],
          masked: new Set(maskedColumns.map((m) => m.column)),
        }
      : undefined;
    return { result, maskedColumns, tag: commandTag(last), durationMs };
  }

  /** The proxy's answer to `scalple.last_masked()` for the statement just run. */
  private async lastMasked(): Promise<MaskedColumn[]> {
    if (this.maskingUnsupported || this.fatal) return [];
    try {
      const r = await this.client!.query<{ column_name: string; source: string; mask: string }>('SELECT * FROM scalple.last_masked()');
      return r.rows.map((row) => ({ column: row.column_name, source: row.source, mask: row.mask }));
    } catch (err) {
      if (isTokenExpiry(err)) throw err;
      this.maskingUnsupported = true;
      this.opts.stderr.write(`! This proxy does not report which columns it masked (scalple.last_masked(): ${errorMessage(err)}); masked cells are not marked. Upgrade the proxy.\n`);
      return [];
    }
  }

  /**
   * Asks the proxy to cancel the running statement: a CancelRequest on a new connection with the
   * key the proxy gave at startup. The socket stays open until the server closes it (it processes
   * the request only then), or 5 s pass.
   */
  async cancel(): Promise<void> {
    const client = this.client as (pg.Client & CancelKeys) | undefined;
    if (!client || client.processID === null || client.secretKey === null) return;
    const { host, port } = this.target;
    const packet = Buffer.alloc(16);
    packet.writeInt32BE(16, 0);
    packet.writeInt32BE(CANCEL_REQUEST_CODE, 4);
    packet.writeInt32BE(client.processID, 8);
    packet.writeInt32BE(client.secretKey, 12);
    await new Promise<void>((resolve) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => socket.destroy(), CANCEL_SOCKET_TIMEOUT_MS);
      socket.on('connect', () => socket.write(packet));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.resume();
    });
  }

  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}

/** `scalple login` for this profile, to which a fix adds its flags. */
function loginCommand(profile: string): string {
  return profile === 'default' ? 'scalple login' : `scalple login --profile ${profile}`;
}

function isTokenExpiry(err: unknown): boolean {
  return err instanceof pg.DatabaseError && err.code === '28000' && TOKEN_EXPIRED.test(err.message);
}

/** `duringStatement`: the connection was lost while a statement ran, so nobody knows whether it did. */
function asServerError(err: unknown, duringStatement = false): Error {
  if (err instanceof pg.DatabaseError) return new ServerError(err);
  if (err instanceof ScalpleError) return err;
  const unknown = duringStatement ? ' (while the statement was running: it may or may not have run)' : '';
  return new ScalpleError('UPSTREAM', `The connection to the proxy failed: ${errorMessage(err)}${unknown}`, { cause: err });
}

/** What the person is told when a statement cut short by the token's expiry is not run again. */
function notRepeatedMessage(reason: Exclude<RepeatDecision, { repeat: true }>['reason']): string {
  switch (reason) {
    case 'commit':
      return 'The token expired while the transaction was committing and the proxy ended the session: the transaction may or may not have been committed, and nothing was run again. Check whether its changes are there before running it again.';
    case 'transaction':
      return 'The token expired inside a transaction block: the proxy ended the session and the transaction was rolled back. Run the transaction again.';
    case 'may-have-written':
      return 'The token expired while the statement was running and the proxy ended the session: the statement may or may not have run, and it was not run again. Check whether it took effect before running it again.';
  }
}

function connectError(err: unknown, host: string, port: number, profile: string): Error {
  if (err instanceof pg.DatabaseError) {
    if (err.code === '28000') {
      // An expired token is refreshed by the caller; anything else about the token needs a new login.
      if (TOKEN_EXPIRED.test(err.message)) return new ServerError(err);
      if (/^token\b/i.test(err.message)) return new ScalpleError('AUTH_REQUIRED', `The proxy refused your token (${err.message.replace(/: run `scalple login`$/, '')}): ${loginHint(profile)}`, { cause: err });
      return new ScalpleError('AUTH_FAILED', `The proxy refused the connection: ${err.message}`, { cause: err });
    }
    return new ServerError(err);
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND' || code === 'ETIMEDOUT') {
    return new ScalpleError('UPSTREAM', `Cannot reach the Scalple proxy at ${host}:${port} (${code}): is it running? To use another one: \`${loginCommand(profile)} --proxy HOST:PORT\``, { cause: err });
  }
  return new ScalpleError('UPSTREAM', `Cannot connect to the Scalple proxy at ${host}:${port}: ${errorMessage(err)}`, { cause: err });
}

/** `INSERT 0 1`, `UPDATE 3`, `SELECT 2`, `SET`… as PostgreSQL tags them. */
function commandTag(r: pg.QueryArrayResult): string {
  if (!r.command) return '';
  if (r.rowCount === null || r.rowCount === undefined) return r.command;
  if (r.command === 'INSERT') return `INSERT ${r.oid ?? 0} ${r.rowCount}`;
  return `${r.command} ${r.rowCount}`;
}
