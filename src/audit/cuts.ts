// Retention cuts as the chain records them. A cut is an event record (event = 'retention_cut')
// whose detail names, for every chain, the last seq and hash that retention dropped. It is keyed
// like every record, so only the holder of audit.hmac_key can write one: a verifier that finds a
// valid cut starts that chain right after it, and tells retention apart from tampering.
// Cuts are cumulative (each names the newest cut of every chain ever cut), so a later retention
// that drops the partition holding an earlier cut loses nothing.
import type pg from 'pg';
import { type ChainKeys, type Json, type StoredRow, SELECT_COLUMNS, hashRow, rowFromDb, sameHex } from './chain.ts';

export const RETENTION_EVENT = 'retention_cut';

export interface ChainCut {
  /** Last seq dropped. The chain resumes at seq + 1 with prev_hash = hash. */
  seq: number;
  hash: string;
  /** ts of that last dropped record. */
  ts: string;
}

export interface RetentionCutEvent {
  /** Where the cut itself is recorded. */
  chainId: string;
  seq: number;
  logId: string;
  ts: string;
  before: string;
  partitions: string[];
  cuts: Record<string, ChainCut>;
}

export interface RetentionCuts {
  /** Newest cut per chain (largest seq) among valid cut events. */
  byChain: Map<string, ChainCut & { event: RetentionCutEvent }>;
  events: RetentionCutEvent[];
  /** Cut events whose keyed hash does not verify: ignored (and reported by the chain walk). */
  invalid: StoredRow[];
}

function parseCuts(detail: Json): Record<string, ChainCut> {
  const out: Record<string, ChainCut> = {};
  if (!detail || typeof detail !== 'object' || Array.isArray(detail)) return out;
  const cuts = detail.cuts;
  if (!cuts || typeof cuts !== 'object' || Array.isArray(cuts)) return out;
  for (const [chain, v] of Object.entries(cuts)) {
    if (!v || typeof v !== 'object' || Array.isArray(v)) continue;
    const seq = v.seq;
    const hash = v.hash;
    const ts = v.ts;
    if (typeof seq === 'number' && Number.isInteger(seq) && seq > 0 && typeof hash === 'string' && typeof ts === 'string') {
      out[chain] = { seq, hash, ts };
    }
  }
  return out;
}

export async function readRetentionCuts(client: pg.Client, keys: ChainKeys): Promise<RetentionCuts> {
  const r = await client.query(
    `SELECT ${SELECT_COLUMNS} FROM scalple_audit.records
      WHERE record_type = 'event' AND event = $1 ORDER BY ts, chain_id, seq`,
    [RETENTION_EVENT],
  );
  const byChain: RetentionCuts['byChain'] = new Map();
  const events: RetentionCutEvent[] = [];
  const invalid: StoredRow[] = [];
  for (const raw of r.rows) {
    const row = rowFromDb(raw as Record<string, unknown>);
    if (!sameHex(hashRow(keys, row.prev_hash, row), row.hash)) {
      invalid.push(row);
      continue;
    }
    const d = row.detail && typeof row.detail === 'object' && !Array.isArray(row.detail) ? row.detail : {};
    const ev: RetentionCutEvent = {
      chainId: row.chain_id,
      seq: row.seq,
      logId: row.log_id,
      ts: row.ts,
      before: typeof d.before === 'string' ? d.before : '',
      partitions: Array.isArray(d.partitions) ? d.partitions.filter((p): p is string => typeof p === 'string') : [],
      cuts: parseCuts(row.detail),
    };
    events.push(ev);
    for (const [chain, cut] of Object.entries(ev.cuts)) {
      const cur = byChain.get(chain);
      if (!cur || cut.seq > cur.seq) byChain.set(chain, { ...cut, event: ev });
    }
  }
  return { byChain, events, invalid };
}
