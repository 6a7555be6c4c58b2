// `scalple audit verify`: walks every chain in seq order and recomputes the keyed hashes.
//
// Streams each chain through a server-side cursor inside one REPEATABLE READ snapshot (the proxy
// keeps writing meanwhile; millions of rows never sit in memory) and reports the FIRST broken
// record of each chain, classified:
//   modified  - content no longer matches its keyed hash (including re-hashed with plain SHA-256)
//   deleted   - a seq gap: rows deleted or a partition dropped (the missing partition is named)
//   inserted  - a record not signed with the key (duplicate seq, or past the known head)
//   reordered - a record signed for another seq sits at this seq
//   tail-cut  - the checkpoint file or --expect-head says the chain went further than the database
// A signed retention cut (retention.ts) is not tampering: the chain starts right after it.
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { type ChainKeys, type StoredRow, GENESIS_HASH, SELECT_COLUMNS, canonical, deriveKeys, hashRow, rowFromDb, sameHex } from './chain.ts';
import { type Checkpoint, readCheckpoint } from './checkpoint.ts';
import { type RetentionCutEvent, readRetentionCuts } from './cuts.ts';
import { connect } from './db.ts';
import { type PartitionInfo, listPartitions, monthPartitionName, requireSchema } from './schema.ts';

export type ProblemKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'tail-cut' | 'checkpoint';

export interface VerifyProblem {
  chainId: string;
  /** The first broken record's seq (for a gap: the first missing seq). */
  seq: number | null;
  logId: string | null;
  kind: ProblemKind;
  message: string;
}

export interface ChainReport {
  chainId: string;
  status: 'intact' | 'tampered';
  /** Records verified (after the retention cut, up to the first problem). */
  verified: number;
  firstSeq: number | null;
  /** The chain head as stored (even when the chain is broken). */
  headSeq: number | null;
  headHash: string | null;
  headTs: string | null;
  retentionCut?: {
    seq: number;
    hash: string;
    ts: string;
    before: string;
    recordedIn: { chainId: string; seq: number; logId: string; ts: string };
  };
  /** Records at or below the retention cut that are still stored (not verifiable, not tampering). */
  beforeCut: number;
  checkpoint?: { file: string; seq: number; hash: string };
  problem?: VerifyProblem;
}

export interface VerifyReport {
  ok: boolean;
  chains: ChainReport[];
  /** First problem of each chain, plus problems with checkpoint files or expected heads. */
  problems: VerifyProblem[];
}

export interface VerifyOptions {
  /** Verify only this chain. */
  chainId?: string;
  /** Checkpoint files (chain heads kept outside the database) to check the tails against. */
  checkpointFile?: string | string[];
  /** Head hashes kept elsewhere: "HASH" (any chain) or "CHAIN:HASH". A prefix of >= 12 hex digits is enough. */
  expectHead?: string | string[];
  /** Rows per FETCH. */
  batchSize?: number;
}

interface ExpectedHead {
  chainId?: string;
  hash: string;
  found: boolean;
}

export async function verify(url: string, hmacKey: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const keys = deriveKeys(hmacKey);
  const problems: VerifyProblem[] = [];

  // Checkpoints first: they name chains the database may have lost entirely.
  const checkpoints = new Map<string, Checkpoint & { file: string }>();
  for (const file of list(opts.checkpointFile)) {
    const r = await readCheckpoint(file, keys);
    if (r.status === 'missing') continue;
    if (r.status === 'invalid') {
      problems.push({ chainId: chainOfFile(file), seq: null, logId: null, kind: 'checkpoint', message: `checkpoint file ${file} is not valid: ${r.reason}` });
      continue;
    }
    const c = r.checkpoint;
    if (opts.chainId && c.chain_id !== opts.chainId) continue;
    const cur = checkpoints.get(c.chain_id);
    if (!cur || c.seq > cur.seq) checkpoints.set(c.chain_id, { ...c, file });
  }
  const expected: ExpectedHead[] = list(opts.expectHead).map(parseExpected);

  const client = await connect(url, { applicationName: 'scalple-audit-verify' });
  try {
    await requireSchema(client);
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const cuts = await readRetentionCuts(client, keys);
    const partitions = await listPartitions(client);
    const chainIds = new Set<string>(opts.chainId ? [opts.chainId] : await listChains(client));
    if (!opts.chainId) {
      for (const c of checkpoints.keys()) chainIds.add(c);
      for (const c of cuts.byChain.keys()) chainIds.add(c);
      for (const e of expected) if (e.chainId) chainIds.add(e.chainId);
    }
    const chains: ChainReport[] = [];
    for (const chainId of [...chainIds].sort()) {
      const cut = cuts.byChain.get(chainId);
      const report = await walkChain(client, keys, chainId, {
        ...(cut ? { cut } : {}),
        ...(checkpoints.has(chainId) ? { checkpoint: checkpoints.get(chainId)! } : {}),
        expected: expected.filter((e) => !e.chainId || e.chainId === chainId),
        partitions,
        batchSize: opts.batchSize ?? 2000,
      });
      chains.push(report);
      if (report.problem) problems.push(report.problem);
    }
    await client.query('COMMIT');
    for (const e of expected) {
      if (e.found) continue;
      const target = e.chainId ? chains.find((c) => c.chainId === e.chainId) : chains.length === 1 ? chains[0] : undefined;
      const where = target ? `chain ${target.chainId} (which ends at seq ${target.headSeq ?? 0}, hash ${target.headHash ?? 'none'})` : 'any chain';
      const problem: VerifyProblem = {
        chainId: target?.chainId ?? e.chainId ?? '*', seq: null, logId: null, kind: 'tail-cut',
        message: `expected head ${e.hash} is not in ${where}: the chain was cut or rewritten after it`,
      };
      if (target && !target.problem) {
        target.problem = problem;
        target.status = 'tampered';
      }
      problems.push(problem);
    }
    return { ok: problems.length === 0, chains, problems };
  } finally {
    await client.end().catch(() => undefined);
  }
}

function list(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

function chainOfFile(file: string): string {
  return /scalple-audit-head\.(.+)\.json$/.exec(file)?.[1] ?? '?';
}

function parseExpected(s: string): ExpectedHead {
  const i = s.lastIndexOf(':');
  const hash = (i >= 0 ? s.slice(i + 1) : s).trim().toLowerCase();
  const chainId = i >= 0 ? s.slice(0, i) : undefined;
  return { ...(chainId ? { chainId } : {}), hash, found: false };
}

/** Distinct chain ids without scanning the table: a skip scan over the primary key. */
async function listChains(client: pg.Client): Promise<string[]> {
  const r = await client.query<{ id: string }>(`
    WITH RECURSIVE c(id) AS (
      SELECT min(chain_id) FROM scalple_audit.records
      UNION ALL
      SELECT (SELECT min(chain_id) FROM scalple_audit.records WHERE chain_id > c.id) FROM c WHERE c.id IS NOT NULL
    ) SELECT id FROM c WHERE id IS NOT NULL`);
  return r.rows.map((x) => x.id);
}

/** Reads a chain through a cursor, one row of lookahead. */
class ChainCursor {
  private buf: StoredRow[] = [];
  private i = 0;
  private done = false;
  private readonly name: string;

  constructor(private readonly client: pg.Client, private readonly chainId: string, private readonly batch: number) {
    this.name = 'scalple_verify_' + createHash('sha256').update(chainId).digest('hex').slice(0, 16);
  }

  async open(): Promise<void> {
    await this.client.query(
      `DECLARE ${this.name} NO SCROLL CURSOR FOR SELECT ${SELECT_COLUMNS} FROM scalple_audit.records
        WHERE chain_id = ${this.client.escapeLiteral(this.chainId)} ORDER BY seq, ts`,
    );
  }

  private async fill(): Promise<void> {
    if (this.i < this.buf.length || this.done) return;
    const r = await this.client.query(`FETCH FORWARD ${this.batch} FROM ${this.name}`);
    this.buf = r.rows.map((x) => rowFromDb(x as Record<string, unknown>));
    this.i = 0;
    if (this.buf.length === 0) this.done = true;
  }

  async next(): Promise<StoredRow | undefined> {
    await this.fill();
    return this.i < this.buf.length ? this.buf[this.i++] : undefined;
  }

  async peek(): Promise<StoredRow | undefined> {
    await this.fill();
    return this.i < this.buf.length ? this.buf[this.i] : undefined;
  }

  async close(): Promise<void> {
    await this.client.query(`CLOSE ${this.name}`);
  }
}

interface WalkOptions {
  cut?: { seq: number; hash: string; ts: string; event: RetentionCutEvent };
  checkpoint?: Checkpoint & { file: string };
  expected: ExpectedHead[];
  partitions: PartitionInfo[];
  batchSize: number;
}

async function walkChain(client: pg.Client, keys: ChainKeys, chainId: string, o: WalkOptions): Promise<ChainReport> {
  const report: ChainReport = {
    chainId, status: 'intact', verified: 0, firstSeq: null, headSeq: null, headHash: null, headTs: null, beforeCut: 0,
    ...(o.checkpoint ? { checkpoint: { file: o.checkpoint.file, seq: o.checkpoint.seq, hash: o.checkpoint.hash } } : {}),
  };
  if (o.cut) {
    const ev = o.cut.event;
    report.retentionCut = { seq: o.cut.seq, hash: o.cut.hash, ts: o.cut.ts, before: ev.before, recordedIn: { chainId: ev.chainId, seq: ev.seq, logId: ev.logId, ts: ev.ts } };
  }
  let expectedSeq = o.cut ? o.cut.seq + 1 : 1;
  let prevHash = o.cut ? o.cut.hash : GENESIS_HASH;
  let prevTs: string | null = o.cut ? o.cut.ts : null;
  let lastSeq = o.cut ? o.cut.seq : 0;
  let problem: VerifyProblem | undefined;
  const fail = (p: Omit<VerifyProblem, 'chainId'>) => {
    problem = { chainId, ...p };
  };
  const knownHead = o.checkpoint?.seq ?? Number.POSITIVE_INFINITY;

  const cur = new ChainCursor(client, chainId, o.batchSize);
  await cur.open();
  try {
    for (let r = await cur.next(); r && !problem; r = await cur.next()) {
      if (o.cut && r.seq <= o.cut.seq) {
        report.beforeCut++;
        continue;
      }
      const selfValid = sameHex(hashRow(keys, r.prev_hash, r), r.hash);
      if (r.seq < expectedSeq) {
        fail({ seq: r.seq, logId: r.log_id, kind: 'inserted', message: `a second record with seq ${r.seq} (log_id ${r.log_id}) was inserted${selfValid ? '' : forgedHow(r)}` });
        break;
      }
      if (r.seq > expectedSeq) {
        const missing = r.seq - expectedSeq;
        fail({
          seq: expectedSeq, logId: null, kind: 'deleted',
          message: `record${missing > 1 ? `s seq ${expectedSeq}..${r.seq - 1} are` : ` seq ${expectedSeq} is`} missing (${missing} deleted before seq ${r.seq}, log_id ${r.log_id})`
            + missingPartitionHint(prevTs, r.ts, o.partitions),
        });
        break;
      }
      if (!selfValid) {
        const next = await cur.peek();
        if (next && next.seq === r.seq && sameHex(hashRow(keys, next.prev_hash, next), next.hash)) {
          fail({ seq: r.seq, logId: r.log_id, kind: 'inserted', message: `a second record with seq ${r.seq} (log_id ${r.log_id}) was inserted${forgedHow(r)}` });
          break;
        }
        const writtenAs = signedForSeq(keys, r);
        if (writtenAs !== undefined) {
          fail({ seq: r.seq, logId: r.log_id, kind: 'reordered', message: `record at seq ${r.seq} (log_id ${r.log_id}) was written as seq ${writtenAs}: records were reordered` });
          break;
        }
        if (r.seq > knownHead) {
          fail({ seq: r.seq, logId: r.log_id, kind: 'inserted', message: `record seq ${r.seq} (log_id ${r.log_id}), past the checkpointed head ${knownHead}, was inserted${forgedHow(r)}` });
          break;
        }
        fail({ seq: r.seq, logId: r.log_id, kind: 'modified', message: `record seq ${r.seq} (log_id ${r.log_id}) was modified: its content does not match its keyed hash${forgedHow(r)}` });
        break;
      }
      if (!sameHex(r.prev_hash, prevHash)) {
        fail({ seq: r.seq, logId: r.log_id, kind: 'modified', message: `record seq ${r.seq} (log_id ${r.log_id}) does not link to the record before it: a record before it was replaced` });
        break;
      }
      if (o.checkpoint && r.seq === o.checkpoint.seq && !sameHex(r.hash, o.checkpoint.hash)) {
        fail({ seq: r.seq, logId: r.log_id, kind: 'modified', message: `record seq ${r.seq} (log_id ${r.log_id}) differs from the checkpoint file ${o.checkpoint.file}: the chain was rewritten` });
        break;
      }
      for (const e of o.expected) if (!e.found && e.hash.length >= 12 && r.hash.startsWith(e.hash)) e.found = true;
      if (report.firstSeq === null) report.firstSeq = r.seq;
      report.verified++;
      prevHash = r.hash;
      prevTs = r.ts;
      lastSeq = r.seq;
      expectedSeq = r.seq + 1;
    }
  } finally {
    await cur.close();
  }
  // An expected head equal to the retention cut is still "in" the chain.
  if (o.cut) for (const e of o.expected) if (!e.found && e.hash.length >= 12 && o.cut.hash.startsWith(e.hash)) e.found = true;

  if (!problem && o.checkpoint && o.checkpoint.seq > lastSeq) {
    fail({
      seq: lastSeq + 1, logId: null, kind: 'tail-cut',
      message: `the chain ends at seq ${lastSeq} but the checkpoint file ${o.checkpoint.file} says seq ${o.checkpoint.seq} was committed: `
        + `record${o.checkpoint.seq - lastSeq > 1 ? `s ${lastSeq + 1}..${o.checkpoint.seq} were` : ` ${o.checkpoint.seq} was`} cut from the tail`,
    });
  }

  const h = await client.query<{ seq: string; hash: string; ts: Date }>(
    'SELECT seq, hash, ts FROM scalple_audit.records WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1', [chainId]);
  const head = h.rows[0];
  if (head) {
    report.headSeq = Number(head.seq);
    report.headHash = head.hash;
    report.headTs = head.ts.toISOString();
  } else if (o.cut) {
    report.headSeq = o.cut.seq;
    report.headHash = o.cut.hash;
    report.headTs = o.cut.ts;
  }
  if (problem) {
    report.problem = problem;
    report.status = 'tampered';
  }
  return report;
}

/** Was this row signed for a nearby seq? (The row was moved: reordering.) */
function signedForSeq(keys: ChainKeys, r: StoredRow): number | undefined {
  for (let d = 1; d <= 16; d++) {
    for (const s of [r.seq - d, r.seq + d]) {
      if (s < 1) continue;
      if (sameHex(hashRow(keys, r.prev_hash, { ...r, seq: s }), r.hash)) return s;
    }
  }
  return undefined;
}

/** Says how a bad hash was made when we can tell: plain SHA-256 means someone without the key. */
function forgedHow(r: StoredRow): string {
  const plain = createHash('sha256').update(r.prev_hash).update(canonical(r)).digest('hex');
  return sameHex(plain, r.hash)
    ? ' (its hash is a plain SHA-256, not the keyed HMAC: re-hashed by someone without the audit key)'
    : ' (its hash is not signed with the audit key)';
}

/** Names monthly partitions that should lie between two records but do not exist. */
function missingPartitionHint(fromTs: string | null, toTs: string, partitions: PartitionInfo[]): string {
  const generic = '; deleted rows or a dropped partition';
  if (!fromTs) return generic;
  const have = new Set(partitions.map((p) => p.name));
  const from = new Date(fromTs);
  const to = new Date(toTs);
  const endMonth = Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), 1);
  const missing: string[] = [];
  for (let m = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth() + 1, 1)); m.getTime() < endMonth && missing.length < 36;
    m = new Date(Date.UTC(m.getUTCFullYear(), m.getUTCMonth() + 1, 1))) {
    const name = monthPartitionName(m);
    if (!have.has(name)) missing.push(name);
  }
  if (!missing.length) return generic;
  return `; partition${missing.length > 1 ? 's' : ''} ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} missing (dropped without a retention cut)`;
}

/** One line per chain head, for keeping elsewhere (and passing back as --expect-head). */
export function headLines(report: VerifyReport): string[] {
  return report.chains.filter((c) => c.headHash).map((c) => `${c.chainId}:${c.headHash}`);
}
