// The chain head kept outside the database: {chain_id, seq, hash} plus an HMAC over them, written
// after each commit. A superuser who cuts the tail of the chain (deletes the newest records) leaves
// a chain that is internally consistent; only a head kept elsewhere shows it went further. The
// MAC stops anyone without the key from moving the checkpoint back to match the cut.
import { open, readFile, rename, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { AuditConfig } from '../policy/config.ts';
import { type ChainKeys, macOf, sameHex } from './chain.ts';

export const CHECKPOINT_FORMAT = 'scalple-audit-checkpoint/1';

export interface Checkpoint {
  chain_id: string;
  seq: number;
  hash: string;
  ts: string;
}

export interface CheckpointFile extends Checkpoint {
  format: string;
  mac: string;
}

export function checkpointMac(keys: ChainKeys, c: Checkpoint): string {
  return macOf(keys.checkpoint, { chain_id: c.chain_id, seq: c.seq, hash: c.hash, ts: c.ts });
}

/** Where a chain's head is kept: audit.checkpoint_file for the configured chain, a sibling file for others. */
export function checkpointPathFor(audit: AuditConfig, chainId: string): string {
  if (chainId === audit.chainId) return audit.checkpointFile;
  return path.join(path.dirname(audit.checkpointFile), `scalple-audit-head.${chainId.replace(/[^A-Za-z0-9_.-]/g, '_')}.json`);
}

/** The configured checkpoint file plus every `scalple-audit-head.*.json` beside it. */
export async function checkpointFilesNear(audit: AuditConfig): Promise<string[]> {
  const dir = path.dirname(audit.checkpointFile);
  const files = new Set<string>([audit.checkpointFile]);
  try {
    for (const f of await readdir(dir)) if (/^scalple-audit-head\..+\.json$/.test(f)) files.add(path.join(dir, f));
  } catch {
    // no directory: nothing beside it
  }
  return [...files];
}

export type ReadCheckpoint =
  | { status: 'missing'; file: string }
  | { status: 'invalid'; file: string; reason: string }
  | { status: 'ok'; file: string; checkpoint: Checkpoint };

export async function readCheckpoint(file: string, keys: ChainKeys): Promise<ReadCheckpoint> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { status: 'missing', file };
    return { status: 'invalid', file, reason: `cannot read it: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  let raw: Partial<CheckpointFile>;
  try {
    raw = JSON.parse(text) as Partial<CheckpointFile>;
  } catch {
    return { status: 'invalid', file, reason: 'not valid JSON' };
  }
  if (raw.format !== CHECKPOINT_FORMAT || typeof raw.chain_id !== 'string' || typeof raw.seq !== 'number'
    || typeof raw.hash !== 'string' || typeof raw.ts !== 'string' || typeof raw.mac !== 'string') {
    return { status: 'invalid', file, reason: `not a ${CHECKPOINT_FORMAT} file` };
  }
  const c: Checkpoint = { chain_id: raw.chain_id, seq: raw.seq, hash: raw.hash, ts: raw.ts };
  if (!sameHex(checkpointMac(keys, c), raw.mac)) {
    return { status: 'invalid', file, reason: 'its MAC does not match this audit.hmac_key (edited, forged, or from another deployment)' };
  }
  return { status: 'ok', file, checkpoint: c };
}

/** Atomic replace: write a temporary file, fsync it, rename it over the old one. */
export async function writeCheckpoint(file: string, keys: ChainKeys, c: Checkpoint): Promise<void> {
  const body: CheckpointFile = { format: CHECKPOINT_FORMAT, ...c, mac: checkpointMac(keys, c) };
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(JSON.stringify(body, null, 2) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/**
 * Coalesces checkpoint writes: at most one write in flight; a head that arrives meanwhile is
 * written right after, and intermediate heads are skipped (only the newest matters).
 */
export class CheckpointWriter {
  private pending: Checkpoint | undefined;
  private running: Promise<void> | undefined;
  lastError: unknown;

  constructor(
    private readonly file: string,
    private readonly keys: ChainKeys,
    private readonly onError: (err: unknown) => void,
  ) {}

  update(c: Checkpoint): void {
    this.pending = c;
    if (!this.running) this.running = this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending) {
        const c = this.pending;
        this.pending = undefined;
        try {
          await writeCheckpoint(this.file, this.keys, c);
          this.lastError = undefined;
        } catch (err) {
          this.lastError = err;
          this.onError(err);
        }
      }
    } finally {
      this.running = undefined;
    }
  }

  /** Resolves once the newest head given so far is on disk (or failed to be written). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }
}
