// The audit writer: one per chain, group commit, fail closed.
//
// - One writer per chain: a session advisory lock keyed by the chain id, held by the same
//   connection that does the inserts. If that connection dies, lock and writes are lost together,
//   so no record can ever be written without the lock, and a second instance cannot fork the chain.
// - Group commit: intent(), completion() and event() only enqueue. A single loop takes everything
//   queued, assigns seq and chains the keyed hashes in memory, writes the batch as one statement
//   (an INSERT for a few records, COPY for many: one statement = one transaction,
//   synchronous_commit on), then resolves the waiters. seq/hash become the chain head only once
//   the batch is committed; the next batch is prepared while the server commits this one.
// - Memory is bounded: intents are refused once bufferSize records are pending; completions (of
//   statements already running) get headroom up to twice that. So a crash loses at most
//   bufferSize intents and 2 x bufferSize records in buffered mode, and nothing acknowledged in
//   strict mode.
// - strict: intent() resolves after its commit. buffered: after enqueue; flushed every
//   flushIntervalMs or as soon as a batch is large. Both refuse new intents (AuditUnavailable)
//   when the queue is full, the store is unreachable or the last flush failed. Nothing is dropped:
//   a failed batch is kept and retried after a reconnect that reads the chain head back, which also
//   settles whether a batch whose COMMIT reply was lost did commit.
// - After each commit the head {chain_id, seq, hash} + MAC goes to the checkpoint file (atomic
//   rename, coalesced), so a cut tail is detected by `scalple audit verify`.
import pg from 'pg';
import { createHash, randomUUID } from 'node:crypto';
import type { GrantInForce } from './record.ts';
import { AuditUnavailable, ScalpleError, errorMessage } from '../errors.ts';
import type { AuditConfig } from '../policy/config.ts';
import type { AuditSink, CompletionRecord, EventRecord, IntentRecord, Principal, AuditRecord } from './record.ts';
import {
  type ChainKeys, type EncodedRecord, BODY_COLUMNS, CHAIN_COLUMNS, GENESIS_HASH, RecordEncoder,
  canonicalHeadPrefix, chainHashParts, deriveKeys, isoTime, recordTimeMs, rowOf, sameHex,
} from './chain.ts';
import { CheckpointWriter, readCheckpoint } from './checkpoint.ts';
import { CopyPayload, copyField, copyIn } from './copy.ts';
import { readRetentionCuts } from './cuts.ts';
import { AuditStoreError, connect, describeUrl, pgMessage, roleOfUrl } from './db.ts';
import { LATEST_VERSION, migrate, schemaState } from './schema.ts';

export interface AuditLogger {
  info(obj: Record<string, unknown>, msg?: string): void;
  warn(obj: Record<string, unknown>, msg?: string): void;
  error(obj: Record<string, unknown>, msg?: string): void;
}

/** Default: warnings and errors as JSON lines on stderr (never silent about lost records). */
export const stderrLogger: AuditLogger = {
  info: () => undefined,
  warn: (obj, msg) => process.stderr.write(JSON.stringify({ level: 'warn', ...obj, msg }) + '\n'),
  error: (obj, msg) => process.stderr.write(JSON.stringify({ level: 'error', ...obj, msg }) + '\n'),
};

export interface AuditStoreOptions {
  /** Policy version stored on completions and events (intents carry their own). */
  policyVersion: string;
  logger?: AuditLogger;
  /** Migrate the schema on open when this role owns it (or may create it). Default true. */
  autoMigrate?: boolean;
  /** How long isRevoked() answers from cache, in ms. Default 2000. */
  revocationCacheMs?: number;
  /** Largest batch per INSERT, in records. Default 1000. */
  maxBatch?: number;
  /** Batches of at least this many records go by COPY, smaller ones by INSERT. Default 32. */
  copyMinRows?: number;
  /** statement_timeout of the writer connection, in ms; a hung INSERT becomes a retry. Default 30000. */
  statementTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** How often future partitions are ensured, in ms. Default 6 h. */
  maintenanceIntervalMs?: number;
}

export interface AuditStats {
  chainId: string;
  durability: AuditConfig['durability'];
  healthy: boolean;
  /** Why the store refuses statements right now, if it does. */
  refusing?: string;
  queued: number;
  inFlight: number;
  committed: number;
  batches: number;
  largestBatch: number;
  headSeq: number;
  headHash: string;
}

export interface RevokeInput {
  sub?: string;
  email?: string;
  reason?: string;
  /** Who did it (email or sub of the administrator). */
  by: string;
}

export interface GrantInput {
  sub?: string;
  email?: string;
  role: string;
  reason: string;
  /** Who gives it (email or sub of another person). */
  by: string;
  until: Date;
}

export type ActiveGrant = GrantInForce;

/** What openAuditStore returns: the proxy's AuditSink plus operations for admin commands and health. */
export interface AuditStore extends AuditSink {
  readonly chainId: string;
  /** Resolves once every record queued before the call is committed. */
  flush(): Promise<void>;
  head(): { seq: number; hash: string };
  stats(): AuditStats;
  /** SIGHUP: policy version used from now on for completions and events. */
  setPolicyVersion(version: string): void;
  /** Puts a person on the revocation list (and records an event in the chain). */
  revoke(input: RevokeInput): Promise<void>;
  /** Takes a person off the revocation list (and records an event in the chain). */
  restore(input: RevokeInput): Promise<void>;
  /** A time-boxed role for a person, given by another person (recorded in the chain). */
  grant(input: GrantInput): Promise<ActiveGrant>;
  /** Grants in force for this person now (cached briefly, like revocations). */
  activeGrants(principal: Principal): Promise<ActiveGrant[]>;
  close(opts?: { timeoutMs?: number }): Promise<void>;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/** A queued record, as BatchBuilder places it. */
export interface Placeable {
  /** Its canonical body and COPY fields, computed when queued (off the serial commit path). */
  rec: EncodedRecord;
  /** When it happened (the stored ts is this, or the previous record's if later). */
  tsMs: number;
  /** Rough size, to keep a batch (and one INSERT) within a few MB. */
  bytes: number;
}

interface Entry extends Placeable {
  waiter?: Waiter;
  enqueuedAt: number;
}

export interface Head {
  seq: number;
  hash: string;
  tsMs: number;
}

interface Prepared {
  entries: Entry[];
  prev: Head;
  last: Head;
  small: boolean;
  payload: Buffer | string;
}

interface InDoubt {
  entries: Entry[];
  prev: Head;
  last: Head;
}

/** The advisory lock key of a chain: 64 bits of sha256, as a signed bigint string. */
export function chainLockKey(chainId: string): string {
  const h = createHash('sha256').update(`scalple_audit chain ${chainId}`).digest();
  return h.readBigInt64BE(0).toString();
}

/** Single-consumer wake-up: the flush loop sleeps on it; enqueue, close and flush() notify it. */
class Signal {
  private flagged = false;
  private waiter: (() => void) | undefined;

  notify(): void {
    this.flagged = true;
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  wait(timeoutMs?: number): Promise<void> {
    if (this.flagged) {
      this.flagged = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) clearTimeout(timer);
        this.flagged = false;
        this.waiter = undefined;
        resolve();
      };
      this.waiter = done;
      if (timeoutMs !== undefined) {
        timer = setTimeout(done, Math.max(0, timeoutMs));
        timer.unref();
      }
    });
  }
}

// A small batch travels as one JSON parameter that PostgreSQL unpacks into rows: one round trip.
const INSERT_COLUMNS = [...CHAIN_COLUMNS, 'prev_hash', 'hash'].map((c) => `"${c}"`).join(',');
const INSERT_SQL = `INSERT INTO scalple_audit.records (${INSERT_COLUMNS})
  SELECT ${INSERT_COLUMNS} FROM json_populate_recordset(NULL::scalple_audit.records, $1::json)`;

/** The body columns of a record as JSON object members without its nulls (json_populate_recordset makes them NULL). */
function rowJsonMembers(rec: EncodedRecord): string {
  if (rec.row) {
    let out = '';
    for (const k of BODY_COLUMNS) {
      const v = rec.row[k];
      if (v !== null) out += `,"${k}":${JSON.stringify(v)}`;
    }
    return out.slice(1);
  }
  // The canonical body is ',' + the column values as JSON, comma-separated, + ']': cut it at the
  // commas outside strings, arrays and objects, and name each value.
  const body = rec.body;
  let out = '';
  let col = 0;
  let start = 1;
  let depth = 0;
  for (let i = 1; i < body.length; i++) {
    const ch = body.charCodeAt(i);
    if (ch === 0x22) { // '"': skip the string
      for (i++; i < body.length; i++) {
        const c = body.charCodeAt(i);
        if (c === 0x5c) i++; // '\\' escapes the next character
        else if (c === 0x22) break;
      }
    } else if (ch === 0x5b || ch === 0x7b) { // '[' '{'
      depth++;
    } else if (ch === 0x5d || ch === 0x7d) { // ']' '}'
      if (depth === 0) break; // the body's closing ']'
      depth--;
    } else if (ch === 0x2c && depth === 0) { // ','
      const v = body.slice(start, i);
      if (v !== 'null') out += `${out ? ',' : ''}"${BODY_COLUMNS[col]}":${v}`;
      col++;
      start = i + 1;
    }
  }
  const v = body.slice(start, body.length - 1);
  if (v !== 'null') out += `${out ? ',' : ''}"${BODY_COLUMNS[col]}":${v}`;
  return out;
}

const MAX_BATCH_BYTES = 8 * 1024 * 1024;

/**
 * The writer's CPU work on records, apart from the database: encodes a record when it is queued
 * (canonical body and COPY fields in one pass) and places a batch after the chain head (seq, ts,
 * chained keyed hashes, and the INSERT or COPY payload). Exported for bench/audit-records.ts.
 */
export class BatchBuilder {
  private readonly encoder = new RecordEncoder();
  private readonly headPrefix: string;
  private readonly chainCopy: string;
  private readonly chainJson: string;

  constructor(readonly chainId: string, private readonly keys: ChainKeys) {
    this.headPrefix = canonicalHeadPrefix(chainId);
    this.chainCopy = copyField(chainId);
    this.chainJson = JSON.stringify(chainId);
  }

  /** What intent(), completion() and event() queue. Throws when the record cannot be built. */
  encode(record: AuditRecord, policyVersion: string): EncodedRecord {
    return this.encoder.encode(record, policyVersion);
  }

  /**
   * Places `entries` after `prev`: seq, monotonic ts and chained keyed hashes, and the payload:
   * a JSON array for the INSERT (small) or the COPY data.
   */
  place(entries: readonly Placeable[], prev: Head, small: boolean): { payload: Buffer | string; last: Head } {
    let seq = prev.seq;
    let hash = prev.hash;
    let tsMs = prev.tsMs;
    const headPrefix = this.headPrefix;
    // ts never goes backwards along a chain (callers' clocks race by microseconds), so monthly
    // partitions hold contiguous seq ranges and retention cuts are clean.
    if (small) {
      let payload = '[';
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i]!;
        seq++;
        tsMs = Math.max(tsMs, e.tsMs);
        const ts = isoTime(tsMs);
        const h = chainHashParts(this.keys, hash, headPrefix + seq + ',"' + ts + '"', e.rec.body);
        payload += `${i ? ',' : ''}{"chain_id":${this.chainJson},"seq":${seq},"ts":"${ts}","prev_hash":"${hash}","hash":"${h}",${rowJsonMembers(e.rec)}}`;
        hash = h;
      }
      return { payload: payload + ']', last: { seq, hash, tsMs } };
    }
    let estimate = 0;
    for (let i = 0; i < entries.length; i++) estimate += entries[i]!.rec.copy.length + 200;
    const out = new CopyPayload(estimate);
    const chainCopy = this.chainCopy;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      seq++;
      tsMs = Math.max(tsMs, e.tsMs);
      const ts = isoTime(tsMs);
      const h = chainHashParts(this.keys, hash, headPrefix + seq + ',"' + ts + '"', e.rec.body);
      // chain_id, seq, ts, the body columns, prev_hash, hash (one write per line: each costs a call)
      out.write(chainCopy + '\t' + seq + '\t' + ts + '\t' + e.rec.copy + '\t' + hash + '\t' + h + '\n');
      hash = h;
    }
    return { payload: out.data(), last: { seq, hash, tsMs } };
  }
}

class AuditWriter implements AuditStore {
  readonly chainId: string;
  private readonly keys: ChainKeys;
  private readonly builder: BatchBuilder;
  private readonly log: AuditLogger;
  private readonly lockKey: string;
  private readonly maxBatch: number;
  private readonly copyMinRows: number;
  private readonly checkpoint: CheckpointWriter;
  private readonly pool: pg.Pool;
  private policyVersion: string;

  private conn: pg.Client | undefined;
  private flushing = false;
  private head_: Head = { seq: 0, hash: GENESIS_HASH, tsMs: 0 };
  private queue: Entry[] = [];
  private roomWaiters: { resolve: (ok: boolean) => void }[] = [];
  private inflight: Entry[] = [];
  /** The next batch, prepared while `inflight` is being committed. */
  private inflightNext: Entry[] = [];
  private inDoubt: InDoubt | undefined;
  private waitersQueued = 0;
  private failing: string | undefined;
  private overflow = false;
  private closing = false;
  private stopped = false;
  private enqueued = 0;
  private committed = 0;
  private batches = 0;
  private largestBatch = 0;
  private expediteUntil = 0;
  private flushWaiters: { target: number; resolve: () => void }[] = [];
  private readonly wake = new Signal();
  private loopDone: Promise<void> = Promise.resolve();
  private closePromise: Promise<void> | undefined;
  private nextMaintenance = 0;
  private readonly revCache = new Map<string, { revoked: boolean; until: number }>();
  private readonly grantCache = new Map<string, { grants: ActiveGrant[]; until: number }>();

  constructor(private readonly config: AuditConfig, private readonly opts: AuditStoreOptions) {
    this.chainId = config.chainId;
    this.keys = deriveKeys(config.hmacKey);
    this.builder = new BatchBuilder(config.chainId, this.keys);
    this.log = opts.logger ?? stderrLogger;
    this.lockKey = chainLockKey(config.chainId);
    this.maxBatch = Math.max(1, Math.min(opts.maxBatch ?? 1000, 10_000));
    this.copyMinRows = Math.max(1, opts.copyMinRows ?? 32);
    this.policyVersion = opts.policyVersion;
    this.checkpoint = new CheckpointWriter(config.checkpointFile, this.keys, (err) =>
      this.log.warn({ chain: this.chainId, file: config.checkpointFile, err: errorMessage(err) }, 'audit checkpoint file could not be written'));
    this.pool = new pg.Pool({
      connectionString: config.url,
      max: 2,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
      application_name: `scalple-audit-reader:${config.chainId}`,
    });
    this.pool.on('error', (err) => this.log.warn({ err: errorMessage(err) }, 'audit reader connection lost'));
  }

  // ------------------------------------------------------------------------------------------
  // Opening

  async open(): Promise<void> {
    const conn = await this.openConnection();
    try {
      await this.ensureSchema(conn);
      await this.ensurePartitions(conn);
      const head = await this.readHead(conn);
      await this.crossCheckCheckpoint(conn, head);
      this.head_ = head;
      this.conn = conn;
    } catch (err) {
      await conn.end().catch(() => undefined);
      await this.pool.end().catch(() => undefined);
      throw err;
    }
    this.nextMaintenance = Date.now() + (this.opts.maintenanceIntervalMs ?? 6 * 3600_000);
    this.log.info({ chain: this.chainId, seq: this.head_.seq, durability: this.config.durability, store: describeUrl(this.config.url) }, 'audit store open');
    this.loopDone = this.loop().catch((err) => {
      this.log.error({ chain: this.chainId, err: errorMessage(err) }, 'audit writer loop stopped');
      this.failing = `writer stopped: ${errorMessage(err)}`;
    });
  }

  /** Connects and takes the chain's advisory lock on that same connection. */
  private async openConnection(): Promise<pg.Client> {
    const conn: pg.Client = await connect(this.config.url, {
      applicationName: `scalple-audit-writer:${this.chainId}`.slice(0, 63),
      statementTimeoutMs: this.opts.statementTimeoutMs ?? 30_000,
      ...(this.opts.connectTimeoutMs ? { connectTimeoutMs: this.opts.connectTimeoutMs } : {}),
      onError: (err) => this.connectionLost(conn, err),
    });
    conn.on('end', () => this.connectionLost(conn, new Error('connection closed')));
    try {
      await conn.query('SET synchronous_commit = on');
      const r = await conn.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [this.lockKey]);
      if (!r.rows[0]?.ok) {
        const holder = await this.describeLockHolder(conn);
        throw new AuditStoreError(`audit chain "${this.chainId}" is already being written by another Scalple instance${holder}: give each proxy instance its own audit.chain_id (one writer per chain).`);
      }
      return conn;
    } catch (err) {
      await conn.end().catch(() => undefined);
      if (err instanceof ScalpleError) throw err;
      throw new AuditStoreError(`audit store ${describeUrl(this.config.url)}: ${pgMessage(err)}`, err);
    }
  }

  private async describeLockHolder(conn: pg.Client): Promise<string> {
    try {
      const key = BigInt.asUintN(64, BigInt(this.lockKey));
      const r = await conn.query<{ pid: number; app: string | null; addr: string | null }>(
        `SELECT l.pid, a.application_name AS app, host(a.client_addr) AS addr
           FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 1`,
        [(key >> 32n).toString(), (key & 0xffffffffn).toString()],
      );
      const h = r.rows[0];
      if (!h) return '';
      return ` (server pid ${h.pid}${h.addr ? ` from ${h.addr}` : ''}${h.app ? `, ${h.app}` : ''})`;
    } catch {
      return '';
    }
  }

  private async ensureSchema(conn: pg.Client): Promise<void> {
    const state = await schemaState(conn);
    if (state.exists && state.version === LATEST_VERSION) return;
    if (state.version > LATEST_VERSION) {
      throw new AuditStoreError(`the audit schema is at version ${state.version}, newer than this Scalple knows (${LATEST_VERSION}): upgrade Scalple.`);
    }
    const role = roleOfUrl(this.config.url) ?? 'this role';
    const canCreate = state.exists ? false
      : (await conn.query<{ ok: boolean }>(`SELECT has_database_privilege(current_database(), 'CREATE') AS ok`)).rows[0]?.ok === true;
    const canMigrate = (this.opts.autoMigrate ?? true) && (state.exists ? state.owned : canCreate);
    if (!canMigrate) {
      throw new AuditStoreError(state.exists
        ? `the audit schema is at version ${state.version} (needs ${LATEST_VERSION}) and is owned by ${state.owner}, not ${role}: run \`scalple audit init --admin-url URL --config FILE\`.`
        : `the audit store has no scalple_audit schema: run \`scalple audit init --admin-url URL --config FILE\`.`);
    }
    const res = await migrate(conn);
    if (res.applied.length) {
      this.log.warn({ role, from: res.from, to: res.to, migrations: res.applied.map((m) => m.name) },
        `audit schema migrated to version ${res.to} by the proxy (its role ${role} owns scalple_audit); a separate owner with \`scalple audit init\` is recommended`);
    }
  }

  private async ensurePartitions(conn: pg.Client): Promise<void> {
    try {
      await conn.query(`SELECT scalple_audit.ensure_partitions(now() - interval '1 month', 4)`);
    } catch (err) {
      // Not fatal: records still land in the default partition.
      this.log.warn({ chain: this.chainId, err: pgMessage(err) }, 'could not create future audit partitions (records go to the default partition)');
    }
  }

  /** The chain head in the database; after a retention cut that dropped every record, the cut. */
  private async readHead(conn: pg.Client): Promise<Head> {
    const r = await conn.query<{ seq: string; hash: string; ts: Date }>(
      'SELECT seq, hash, ts FROM scalple_audit.records WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1',
      [this.chainId],
    );
    const row = r.rows[0];
    let head: Head = row ? { seq: Number(row.seq), hash: row.hash, tsMs: row.ts.getTime() } : { seq: 0, hash: GENESIS_HASH, tsMs: 0 };
    const cuts = await readRetentionCuts(conn, this.keys);
    const cut = cuts.byChain.get(this.chainId);
    if (cut && cut.seq > head.seq) head = { seq: cut.seq, hash: cut.hash, tsMs: Date.parse(cut.ts) || 0 };
    return head;
  }

  /** The checkpoint file must not be ahead of the database, nor disagree with it. */
  private async crossCheckCheckpoint(conn: pg.Client, head: Head): Promise<void> {
    const file = this.config.checkpointFile;
    const read = await readCheckpoint(file, this.keys);
    const fix = `Run \`scalple audit verify\`; to start anyway, move ${file} aside (the incident stays visible to verify only through a copy of it).`;
    if (read.status === 'missing') {
      if (head.seq > 0) this.log.warn({ chain: this.chainId, file }, 'no audit checkpoint file yet: creating it');
      return;
    }
    if (read.status === 'invalid') throw new AuditStoreError(`audit checkpoint file ${file} is not valid: ${read.reason}. ${fix}`);
    const c = read.checkpoint;
    if (c.chain_id !== this.chainId) {
      throw new AuditStoreError(`audit checkpoint file ${file} belongs to chain "${c.chain_id}", not "${this.chainId}": set audit.checkpoint_file per chain.`);
    }
    if (c.seq > head.seq) {
      throw new AuditStoreError(`audit chain "${this.chainId}": the checkpoint file says seq ${c.seq} was committed but the database ends at seq ${head.seq}: the tail of the audit log was cut. ${fix}`);
    }
    if (c.seq === head.seq) {
      if (!sameHex(c.hash, head.hash)) throw new AuditStoreError(`audit chain "${this.chainId}": head seq ${c.seq} differs from the checkpoint file: the audit log was rewritten. ${fix}`);
      return;
    }
    const r = await conn.query<{ hash: string }>('SELECT hash FROM scalple_audit.records WHERE chain_id = $1 AND seq = $2', [this.chainId, c.seq]);
    if (r.rows.length > 0 && !r.rows.some((x) => sameHex(x.hash, c.hash))) {
      throw new AuditStoreError(`audit chain "${this.chainId}": record seq ${c.seq} differs from the checkpoint file: the audit log was rewritten. ${fix}`);
    }
  }

  // ------------------------------------------------------------------------------------------
  // The sink

  intent(record: IntentRecord): Promise<void> {
    const refused = this.refusal();
    if (refused) return Promise.reject(new AuditUnavailable(`audit store unavailable: statement refused (${refused})`));
    let rec: EncodedRecord;
    try {
      rec = this.builder.encode(record, this.policyVersion);
    } catch (err) {
      return Promise.reject(new AuditUnavailable(`audit store unavailable: statement refused (record could not be built: ${errorMessage(err)})`, err));
    }
    const tsMs = this.timeOf(record);
    if (this.config.durability === 'buffered') {
      this.enqueue(rec, tsMs);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.enqueue(rec, tsMs, { resolve, reject }));
  }

  completion(record: CompletionRecord): void {
    if (this.stopped) {
      this.log.error({ chain: this.chainId, record: loggable(record) }, 'audit completion after close: not recorded');
      return;
    }
    // Completions of accepted intents get headroom beyond bufferSize; past it memory wins, and
    // the loss is loud: the record goes to the log and new statements are refused.
    if (this.pending() >= this.config.bufferSize * 2) {
      this.overflow = true;
      this.log.error({ chain: this.chainId, record: loggable(record) }, 'audit queue overflow: completion record could not be queued; new statements are refused until the queue drains');
      return;
    }
    let rec: EncodedRecord;
    try {
      rec = this.builder.encode(record, this.policyVersion);
    } catch (err) {
      this.log.error({ chain: this.chainId, record: loggable(record), err: errorMessage(err) }, 'audit completion record could not be built');
      return;
    }
    this.enqueue(rec, this.timeOf(record));
  }

  /** Events are always committed before the promise resolves, whatever the durability. */
  event(record: EventRecord): Promise<void> {
    const refused = this.refusal();
    if (refused) return Promise.reject(new AuditUnavailable(`audit store unavailable: event not recorded (${refused})`));
    let rec: EncodedRecord;
    try {
      rec = this.builder.encode(record, this.policyVersion);
    } catch (err) {
      return Promise.reject(new AuditUnavailable(`audit event could not be built: ${errorMessage(err)}`, err));
    }
    const tsMs = this.timeOf(record);
    return new Promise((resolve, reject) => this.enqueue(rec, tsMs, { resolve, reject }));
  }

  /**
   * A record's time, never in the future: stored times only move forward along a chain, so one
   * record stamped next year would otherwise drag every later record (and its partition) with it.
   */
  private timeOf(record: AuditRecord): number {
    return Math.min(recordTimeMs(record), Date.now());
  }

  healthy(): boolean {
    return this.refusal() === undefined;
  }

  whenRoom(timeoutMs: number): Promise<boolean> {
    if (this.refusal() === undefined) return Promise.resolve(true);
    if (!this.queueFullOnly()) return Promise.resolve(false);
    return new Promise((resolve) => {
      const w = {
        resolve: (ok: boolean) => {
          clearTimeout(timer);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => {
        this.roomWaiters = this.roomWaiters.filter((x) => x !== w);
        resolve(false);
      }, timeoutMs);
      timer.unref();
      this.roomWaiters.push(w);
    });
  }

  /** Refusing only because the queue is full (the store is up and draining it). */
  private queueFullOnly(): boolean {
    return !this.closing && !this.stopped && !this.failing && this.conn !== undefined;
  }

  /** After a commit made room (or the store failed): wakes the statements waiting for room. */
  private settleRoomWaiters(): void {
    if (!this.roomWaiters.length) return;
    const room = this.refusal() === undefined;
    if (!room && this.queueFullOnly()) return;
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const w of waiters) w.resolve(room);
  }

  head(): { seq: number; hash: string } {
    return { seq: this.head_.seq, hash: this.head_.hash };
  }

  stats(): AuditStats {
    const refusing = this.refusal();
    return {
      chainId: this.chainId,
      durability: this.config.durability,
      healthy: refusing === undefined,
      ...(refusing ? { refusing } : {}),
      queued: this.queue.length + (this.inDoubt?.entries.length ?? 0),
      inFlight: this.inflight.length + this.inflightNext.length,
      committed: this.committed,
      batches: this.batches,
      largestBatch: this.largestBatch,
      headSeq: this.head_.seq,
      headHash: this.head_.hash,
    };
  }

  setPolicyVersion(version: string): void {
    this.policyVersion = version;
  }

  flush(): Promise<void> {
    const target = this.enqueued;
    if (this.committed >= target) return Promise.resolve();
    this.expediteUntil = Math.max(this.expediteUntil, target);
    this.wake.notify();
    return new Promise((resolve) => this.flushWaiters.push({ target, resolve }));
  }

  async isRevoked(principal: Principal): Promise<boolean> {
    const key = `${principal.sub}\u0000${principal.email ?? ''}`;
    const now = Date.now();
    const hit = this.revCache.get(key);
    if (hit && hit.until > now) return hit.revoked;
    let revoked: boolean;
    try {
      const r = await this.pool.query<{ action: string }>(
        `SELECT action FROM scalple_audit.revocations
          WHERE sub = $1 OR ($2::text IS NOT NULL AND lower(email) = lower($2::text))
          ORDER BY id DESC LIMIT 1`,
        [principal.sub, principal.email ?? null],
      );
      revoked = r.rows[0]?.action === 'revoke';
    } catch (err) {
      // Fail closed: the caller refuses the person when the list cannot be read.
      throw new AuditUnavailable(`audit store unavailable: cannot check the revocation list (${pgMessage(err)})`, err);
    }
    if (this.revCache.size > 10_000) this.revCache.clear();
    this.revCache.set(key, { revoked, until: now + (this.opts.revocationCacheMs ?? 2000) });
    return revoked;
  }

  revoke(input: RevokeInput): Promise<void> {
    return this.revocation('revoke', input);
  }

  restore(input: RevokeInput): Promise<void> {
    return this.revocation('restore', input);
  }

  private async revocation(action: 'revoke' | 'restore', input: RevokeInput): Promise<void> {
    if (!input.sub && !input.email) throw new ScalpleError('USAGE', `${action} needs the person's sub or email.`);
    // The chain records it first: a revocation that is in force is always in the log.
    await this.event({
      type: 'event', logId: randomUUID(), ts: new Date(), event: action,
      detail: { sub: input.sub ?? null, email: input.email ?? null, reason: input.reason ?? null, by: input.by },
    });
    try {
      if (action === 'revoke') {
        await this.pool.query(
          `INSERT INTO scalple_audit.revocations (action, sub, email, revoked_at, reason, revoked_by) VALUES ('revoke', $1, $2, now(), $3, $4)`,
          [input.sub ?? null, input.email ?? null, input.reason ?? null, input.by],
        );
      } else {
        await this.pool.query(
          `INSERT INTO scalple_audit.revocations (action, sub, email, restored_at, reason, restored_by) VALUES ('restore', $1, $2, now(), $3, $4)`,
          [input.sub ?? null, input.email ?? null, input.reason ?? null, input.by],
        );
      }
    } catch (err) {
      throw new AuditUnavailable(`audit store unavailable: ${action} not applied (${pgMessage(err)})`, err);
    }
    this.revCache.clear();
  }

  async grant(input: GrantInput): Promise<ActiveGrant> {
    if (!input.sub && !input.email) throw new ScalpleError('USAGE', 'grant needs the person\'s sub or email.');
    // ASCII only: JavaScript's and PostgreSQL's lower() agree on it, so "another person" is judged
    // as the grant will be matched ('alİce@…' would otherwise pass here and match alice there).
    if (input.email && !/^[\x21-\x7e]+@[\x21-\x7e]+$/.test(input.email)) throw new ScalpleError('USAGE', 'a grant needs a plain ASCII email address.');
    if (input.email && input.by.toLowerCase() === input.email.toLowerCase()) throw new ScalpleError('USAGE', 'a grant must be given by another person.');
    const grantId = randomUUID();
    const now = new Date();
    await this.event({
      type: 'event', logId: grantId, ts: now, event: 'grant',
      detail: { sub: input.sub ?? null, email: input.email ?? null, role: input.role, reason: input.reason, by: input.by, until: input.until.toISOString() },
    });
    try {
      await this.pool.query(
        `INSERT INTO scalple_audit.grants (grant_id, sub, email, role, reason, granted_by, starts_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [grantId, input.sub ?? null, input.email ?? null, input.role, input.reason, input.by, now, input.until],
      );
    } catch (err) {
      throw new AuditUnavailable(`audit store unavailable: grant not applied (${pgMessage(err)})`, err);
    }
    this.grantCache.clear();
    return { grantId, role: input.role, reason: input.reason, by: input.by, until: input.until };
  }

  async activeGrants(principal: Principal): Promise<ActiveGrant[]> {
    const key = `${principal.sub}\u0000${principal.email ?? ''}`;
    const now = Date.now();
    const hit = this.grantCache.get(key);
    if (hit && hit.until > now) return hit.grants.filter((g) => g.until.getTime() > now);
    let grants: ActiveGrant[];
    try {
      const r = await this.pool.query<{ grant_id: string; role: string; reason: string; granted_by: string; expires_at: Date }>(
        `SELECT grant_id, role, reason, granted_by, expires_at FROM scalple_audit.grants
          WHERE (sub = $1 OR ($2::text IS NOT NULL AND lower(email) = lower($2::text))) AND starts_at <= now() AND expires_at > now()`,
        [principal.sub, principal.email ?? null],
      );
      grants = r.rows.map((g) => ({ grantId: g.grant_id, role: g.role, reason: g.reason, by: g.granted_by, until: g.expires_at }));
    } catch (err) {
      throw new AuditUnavailable(`audit store unavailable: cannot read the grants (${pgMessage(err)})`, err);
    }
    if (this.grantCache.size > 10_000) this.grantCache.clear();
    this.grantCache.set(key, { grants, until: now + (this.opts.revocationCacheMs ?? 2000) });
    return grants;
  }

  close(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.closePromise ??= this.doClose(opts.timeoutMs ?? 30_000);
    return this.closePromise;
  }

  // ------------------------------------------------------------------------------------------
  // Queue and flush loop

  private pending(): number {
    return this.queue.length + this.inflight.length + this.inflightNext.length + (this.inDoubt?.entries.length ?? 0);
  }

  /** Why a new intent or event is refused right now (undefined: accepted). */
  private refusal(): string | undefined {
    if (this.closing || this.stopped) return 'audit store is closing';
    if (this.failing) return `store unreachable: ${this.failing}`;
    if (!this.conn) return 'store unreachable: reconnecting';
    if (this.overflow) return 'audit queue overflowed';
    const n = this.pending();
    if (n >= this.config.bufferSize) return `audit queue full: ${n} records waiting`;
    return undefined;
  }

  private enqueue(rec: EncodedRecord, tsMs: number, waiter?: Waiter): void {
    // One object shape for every entry (waiter undefined when there is none).
    this.queue.push({ rec, tsMs, bytes: rec.body.length + rec.copy.length, waiter, enqueuedAt: Date.now() });
    this.enqueued++;
    if (waiter) this.waitersQueued++;
    // Wake the loop: now (strict, a waiter, a full batch), or so it arms the interval (first record).
    if (waiter || this.config.durability === 'strict' || this.queue.length === 1 || this.queue.length >= this.batchThreshold()) this.wake.notify();
  }

  private batchThreshold(): number {
    return Math.max(1, Math.min(this.maxBatch, Math.floor(this.config.bufferSize / 2)));
  }

  private async loop(): Promise<void> {
    let backoff = 50;
    for (;;) {
      if (this.stopped) return;
      if (!this.conn) {
        try {
          await this.reconnect();
          backoff = 50;
        } catch (err) {
          this.noteFailure(err);
          await this.wake.wait(backoff);
          backoff = Math.min(backoff * 2, 2000);
        }
        continue;
      }
      if (this.queue.length === 0) {
        if (this.closing) return;
        if (Date.now() >= this.nextMaintenance) {
          this.nextMaintenance = Date.now() + (this.opts.maintenanceIntervalMs ?? 6 * 3600_000);
          await this.ensurePartitions(this.conn);
          continue;
        }
        await this.wake.wait(this.nextMaintenance - Date.now());
        continue;
      }
      if (!this.dueNow()) {
        await this.wake.wait(Math.max(1, this.queue[0]!.enqueuedAt + this.config.flushIntervalMs - Date.now()));
        continue;
      }
      await this.flushLoop(this.conn);
    }
  }

  /** Should what is queued be written now, rather than wait for a bigger batch? */
  private dueNow(): boolean {
    if (this.queue.length === 0) return false;
    if (this.config.durability === 'strict' || this.closing || this.waitersQueued > 0 || this.committed < this.expediteUntil) return true;
    if (this.queue.length >= this.batchThreshold()) return true;
    return this.queue[0]!.enqueuedAt + this.config.flushIntervalMs <= Date.now();
  }

  private takeBatch(): Entry[] {
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && n < this.maxBatch) {
      bytes += this.queue[n]!.bytes;
      if (n > 0 && bytes > MAX_BATCH_BYTES) break;
      n++;
    }
    const batch = this.queue.splice(0, n);
    for (const e of batch) if (e.waiter) this.waitersQueued--;
    return batch;
  }

  /** Puts taken (never sent) entries back at the front of the queue, unassigned. */
  private requeue(entries: Entry[]): void {
    this.queue.unshift(...entries);
    for (const e of entries) if (e.waiter) this.waitersQueued++;
  }

  /** Places a batch after `prev`: seq, monotonic ts and chained keyed hashes, and the payload. */
  private prepare(entries: Entry[], prev: Head): Prepared {
    const small = entries.length < this.copyMinRows;
    const { payload, last } = this.builder.place(entries, prev, small);
    return { entries, prev, last, small, payload };
  }

  /**
   * Small batches (strict mode's usual few records) go as one INSERT in one round trip; large ones
   * as COPY (two round trips, far less server work per row). Both are a single statement, so a
   * batch commits whole or not at all. `sent` fires once the data is on its way.
   */
  private send(conn: pg.Client, p: Prepared, sent: () => void): Promise<void> {
    if (!p.small) return copyIn(conn, p.payload, sent);
    const done = conn.query(INSERT_SQL, [p.payload as string]).then(() => undefined);
    sent();
    return done;
  }

  /**
   * Writes batches until nothing is due. While the server works on one batch, the next is
   * prepared (hashed on the assumption that the first commits); if the first fails, the
   * prepared one goes back to the queue unassigned and the first is settled on reconnect.
   */
  private async flushLoop(conn: pg.Client): Promise<void> {
    let cur: Prepared | undefined = this.prepare(this.takeBatch(), this.head_);
    while (cur) {
      this.inflight = cur.entries;
      this.flushing = true;
      let markSent!: () => void;
      const sent = new Promise<void>((r) => { markSent = r; });
      const done = this.send(conn, cur, markSent);
      await Promise.race([sent, done.then(() => undefined, () => undefined)]);
      let next: Prepared | undefined;
      if (!this.stopped && this.dueNow()) {
        next = this.prepare(this.takeBatch(), cur.last);
        this.inflightNext = next.entries;
      }
      try {
        await done;
      } catch (err) {
        // The outcome is unknown if the connection died around the commit. Keep the batch aside;
        // the reconnect reads the head back and either accepts it as committed or requeues it.
        this.flushing = false;
        this.inflight = [];
        this.inflightNext = [];
        if (next) this.requeue(next.entries);
        this.inDoubt = { entries: cur.entries, prev: cur.prev, last: cur.last };
        this.dropConnection(conn);
        this.noteFailure(err);
        return;
      }
      this.flushing = false;
      this.inflight = [];
      this.inflightNext = [];
      this.commitDone(cur.entries, cur.last);
      if (this.stopped && next) {
        this.requeue(next.entries);
        return;
      }
      cur = next;
    }
  }

  private commitDone(batch: Entry[], last: Head): void {
    this.head_ = last;
    this.committed += batch.length;
    this.batches++;
    if (batch.length > this.largestBatch) this.largestBatch = batch.length;
    for (const e of batch) e.waiter?.resolve();
    if (this.overflow && this.pending() < this.config.bufferSize / 2) this.overflow = false;
    this.settleRoomWaiters();
    this.checkpoint.update({ chain_id: this.chainId, seq: last.seq, hash: last.hash, ts: isoTime(last.tsMs) });
    if (this.flushWaiters.length) {
      const still: typeof this.flushWaiters = [];
      for (const w of this.flushWaiters) (w.target <= this.committed ? w.resolve() : still.push(w));
      this.flushWaiters = still;
    }
  }

  private connectionLost(conn: pg.Client, err: Error): void {
    if (this.conn !== conn) return;
    this.conn = undefined;
    this.settleRoomWaiters();
    if (this.flushing) return; // the failing query reports it
    this.noteFailure(err);
    this.wake.notify();
  }

  private dropConnection(conn: pg.Client): void {
    if (this.conn === conn) this.conn = undefined;
    conn.end().catch(() => undefined);
  }

  /**
   * Enters (or stays in) the failing state: new intents are refused, statements waiting for a
   * commit are refused now rather than hanging, and each refused intent gets a completion saying
   * so, so the log tells what happened to it. Queued records are kept for the retry.
   */
  private noteFailure(err: unknown): void {
    const reason = pgMessage(err);
    if (!this.failing) {
      this.log.error({ chain: this.chainId, err: reason, queued: this.pending() }, 'audit store unavailable: refusing new statements until it recovers');
    }
    this.failing = reason;
    this.settleRoomWaiters();
    const refused = new AuditUnavailable(`audit store unavailable: statement refused (${reason})`, err);
    const waiting = [...(this.inDoubt?.entries ?? []), ...this.queue].filter((e) => e.waiter);
    for (const e of waiting) {
      const w = e.waiter!;
      delete e.waiter;
      if (this.queue.includes(e)) this.waitersQueued--;
      w.reject(refused);
      if (e.rec.type === 'intent') {
        this.enqueue(this.builder.encode({ type: 'completion', logId: e.rec.logId, ts: new Date(), sessionId: e.rec.sessionId ?? '', rows: null,
          sqlstate: refused.sqlstate, error: refused.message, durationMs: 0 }, this.policyVersion), Date.now());
      }
    }
  }

  /** Reconnects, retakes the lock, reads the head back and settles a batch left in doubt. */
  private async reconnect(): Promise<void> {
    const conn = await this.openConnection();
    let head: Head;
    try {
      head = await this.readHead(conn);
    } catch (err) {
      await conn.end().catch(() => undefined);
      throw err;
    }
    const d = this.inDoubt;
    if (d) {
      if (head.seq === d.last.seq && sameHex(head.hash, d.last.hash)) {
        this.inDoubt = undefined;
        this.commitDone(d.entries, d.last);
      } else {
        if (!(head.seq === d.prev.seq && sameHex(head.hash, d.prev.hash))) {
          this.log.error({ chain: this.chainId, expected: d.prev.seq, found: head.seq }, 'audit chain head moved while disconnected: continuing from the database head');
        }
        this.inDoubt = undefined;
        this.queue.unshift(...d.entries);
      }
    } else if (head.seq !== this.head_.seq || !sameHex(head.hash, this.head_.hash)) {
      this.log.error({ chain: this.chainId, expected: this.head_.seq, found: head.seq }, 'audit chain head moved while disconnected: continuing from the database head');
    }
    this.head_ = head;
    this.conn = conn;
    if (this.failing) this.log.warn({ chain: this.chainId, queued: this.pending() }, 'audit store reachable again');
    this.failing = undefined;
    if (this.stopped) this.dropConnection(conn);
  }

  private async doClose(timeoutMs: number): Promise<void> {
    this.closing = true;
    this.settleRoomWaiters();
    this.expediteUntil = Number.MAX_SAFE_INTEGER;
    this.wake.notify();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<boolean>((r) => { timer = setTimeout(() => r(true), timeoutMs); });
    let timedOut = false;
    for (;;) {
      timedOut = await Promise.race([this.loopDone.then(() => false), deadline]);
      // A completion may arrive between the loop finishing and this line: drain it too.
      if (timedOut || (this.queue.length === 0 && !this.inDoubt) || this.failing?.startsWith('writer stopped')) break;
      this.loopDone = this.loop().catch((err) => {
        this.failing = `writer stopped: ${errorMessage(err)}`;
      });
    }
    clearTimeout(timer);
    this.stopped = true;
    this.wake.notify();
    const conn = this.conn;
    this.conn = undefined;
    if (conn) await conn.end().catch(() => undefined); // releases the advisory lock
    await this.loopDone;
    const unwritten = [...(this.inDoubt?.entries ?? []), ...this.inflight, ...this.inflightNext, ...this.queue];
    await this.pool.end().catch(() => undefined);
    await this.checkpoint.idle();
    for (const w of this.flushWaiters) w.resolve();
    this.flushWaiters = [];
    if (unwritten.length) {
      const err = new AuditUnavailable(`audit store closed with ${unwritten.length} records not written (${this.failing ?? 'store unreachable'}); they were logged as errors`);
      for (const e of unwritten) {
        this.log.error({ chain: this.chainId, record: { ...rowOf(e.rec), ts: new Date(e.tsMs).toISOString() } }, 'audit record not written');
        e.waiter?.reject(err);
      }
      throw err;
    }
  }
}

function loggable(r: AuditRecord): Record<string, unknown> {
  return { ...r, ts: r.ts instanceof Date ? r.ts.toISOString() : r.ts };
}

/**
 * Opens the writer of config.chainId: takes the chain's lock (refusing if another instance holds
 * it), migrates the schema when this role owns it, reads the chain head and cross-checks it with
 * the checkpoint file. The returned store is the proxy's AuditSink.
 */
export async function openAuditStore(config: AuditConfig, opts: AuditStoreOptions): Promise<AuditStore> {
  const w = new AuditWriter(config, opts);
  await w.open();
  return w;
}
