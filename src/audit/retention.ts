// Retention: drop whole monthly partitions older than a date, as a recorded, signed cut.
//
// Order matters: (1) the chains are verified (a tampered stretch must not be dropped out of
// sight), (2) a 'retention_cut' event naming, per chain, the last seq and hash about to be dropped
// is committed in the chain (keyed like every record, so nobody without the key can fake one),
// (3) only then are the partitions dropped. If (3) fails, the rows stay and the cut simply covers
// rows that still exist, which verify skips; running retention again finishes the job.
// Cuts are cumulative: each event repeats every chain's newest cut, so a later retention that drops
// the partition holding an earlier cut event loses nothing.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { ScalpleError } from '../errors.ts';
import type { AuditConfig } from '../policy/config.ts';
import { type Json, deriveKeys } from './chain.ts';
import { checkpointFilesNear, checkpointPathFor } from './checkpoint.ts';
import { type ChainCut, RETENTION_EVENT, readRetentionCuts } from './cuts.ts';
import { AuditStoreError, connect, pgMessage, quoteIdent } from './db.ts';
import { listPartitions, requireSchema } from './schema.ts';
import { verify } from './verify.ts';
import { type AuditLogger, openAuditStore } from './writer.ts';

export const ADMIN_CHAIN = 'admin';

export interface RetentionOptions {
  /** Owner of the schema (DROP TABLE needs it). */
  adminUrl: string;
  audit: AuditConfig;
  policyVersion: string;
  /** Partitions whose whole month lies before this instant are dropped. */
  before: Date;
  /** The chain that records the cut (one writer at a time). Default 'admin'. */
  chainId?: string;
  /** Who ran it, for the record. */
  actor?: string;
  dryRun?: boolean;
  /** Drop even if verify finds a problem in the chains (the problem is recorded in the cut). */
  force?: boolean;
  logger?: AuditLogger;
  now?: Date;
}

export interface RetentionResult {
  dryRun: boolean;
  partitions: string[];
  /** Per chain: the last record dropped now, and how many records this run drops. */
  dropped: Record<string, ChainCut & { records: number }>;
  event?: { chainId: string; seq: number; hash: string; logId: string };
}

export function parseDay(s: string): Date {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  const d = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : undefined;
  if (!m || !d || d.getUTCDate() !== Number(m[3]) || d.getUTCMonth() !== Number(m[2]) - 1) throw new ScalpleError('USAGE', `--before must be a date YYYY-MM-DD (got "${s}").`);
  return d;
}

export async function applyRetention(o: RetentionOptions): Promise<RetentionResult> {
  const keys = deriveKeys(o.audit.hmacKey);
  const now = o.now ?? new Date();
  const thisMonth = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  const chainId = o.chainId ?? ADMIN_CHAIN;
  const admin = await connect(o.adminUrl, { applicationName: 'scalple-audit-retention' });
  let result: RetentionResult;
  let partitions: string[];
  try {
    await requireSchema(admin);
    partitions = (await listPartitions(admin))
      .filter((p) => !p.isDefault && p.to && p.to.getTime() <= o.before.getTime() && p.to.getTime() <= thisMonth)
      .map((p) => p.name);
    result = { dryRun: o.dryRun === true, partitions, dropped: {} };
    if (partitions.length === 0) return result;
    result.dropped = await lastDropped(admin, partitions);
  } finally {
    await admin.end().catch(() => undefined);
  }
  if (o.dryRun) return result;

  const report = await verify(o.adminUrl, o.audit.hmacKey, { checkpointFile: await checkpointFilesNear(o.audit) });
  if (!report.ok && !o.force) {
    throw new AuditStoreError(`retention refused: the audit log does not verify (${report.problems[0]!.message}). Investigate with \`scalple audit verify\` first (--force drops anyway and records the problem in the cut).`);
  }

  // The cut, cumulative over every earlier cut.
  const check = await connect(o.adminUrl, { applicationName: 'scalple-audit-retention' });
  let cuts: Record<string, ChainCut>;
  try {
    const previous = await readRetentionCuts(check, keys);
    cuts = {};
    for (const [c, cut] of previous.byChain) cuts[c] = { seq: cut.seq, hash: cut.hash, ts: cut.ts };
    for (const [c, d] of Object.entries(result.dropped)) {
      if (!cuts[c] || d.seq > cuts[c]!.seq) cuts[c] = { seq: d.seq, hash: d.hash, ts: d.ts };
    }
  } finally {
    await check.end().catch(() => undefined);
  }

  const store = await openAuditStore(
    { ...o.audit, url: o.adminUrl, chainId, durability: 'strict', checkpointFile: checkpointPathFor(o.audit, chainId) },
    { policyVersion: o.policyVersion, autoMigrate: false, ...(o.logger ? { logger: o.logger } : {}) },
  );
  const logId = randomUUID();
  try {
    const detail: Record<string, Json> = {
      before: o.before.toISOString().slice(0, 10),
      partitions,
      cuts: cuts as unknown as Json,
      dropped: Object.fromEntries(Object.entries(result.dropped).map(([c, d]) => [c, d.records])),
      by: o.actor ?? null,
      ...(report.ok ? {} : { forced_despite: report.problems.map((p) => p.message) }),
    };
    await store.event({ type: 'event', logId, ts: now, event: RETENTION_EVENT, detail });
    const h = store.head();
    result.event = { chainId, seq: h.seq, hash: h.hash, logId };
  } finally {
    await store.close();
  }

  const drop = await connect(o.adminUrl, { applicationName: 'scalple-audit-retention' });
  try {
    await drop.query(`DROP TABLE ${partitions.map((p) => `scalple_audit.${quoteIdent(p)}`).join(', ')}`);
  } catch (err) {
    throw new AuditStoreError(`the retention cut is recorded but dropping ${partitions.join(', ')} failed: ${pgMessage(err)}. Run the same command again.`, err);
  } finally {
    await drop.end().catch(() => undefined);
  }
  return result;
}

async function lastDropped(client: pg.Client, partitions: string[]): Promise<RetentionResult['dropped']> {
  const union = partitions.map((p) => `SELECT chain_id, seq, hash, ts FROM scalple_audit.${quoteIdent(p)}`).join(' UNION ALL ');
  const r = await client.query<{ chain_id: string; seq: string; hash: string; ts: Date; n: string }>(
    `SELECT DISTINCT ON (chain_id) chain_id, seq, hash, ts, count(*) OVER (PARTITION BY chain_id) AS n
       FROM (${union}) x ORDER BY chain_id, seq DESC`,
  );
  const out: RetentionResult['dropped'] = {};
  for (const row of r.rows) out[row.chain_id] = { seq: Number(row.seq), hash: row.hash, ts: row.ts.toISOString(), records: Number(row.n) };
  return out;
}
