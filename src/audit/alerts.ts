// Live alerts from the proxy: called after every completed statement, synchronously and cheaply;
// emits one JSON line per alert on the proxy's log and, when a webhook is configured, POSTs the
// same JSON to it (fire-and-forget, with a timeout, a bounded number in flight; never blocks or
// fails a statement).
//
//   const alerts = new LiveAlerts(parseAnomaliesConfig(raw.anomalies), { log: (o) => logger.info(o) }, webhookUrl);
//   alerts.observe({ ts, logId, sub, email, groups, subjectKeys, readsPii, reason, requireReason, statement });
//
// Alert line: { "type": "scalple_alert", "alert": kind, "ts", "log_id", "person", "email", "groups",
//   "figures": {…}, "statement" (first 200 characters) , "msg" }
//   figures: bulk_read { subjects, threshold } · out_of_hours { local_time, timezone, working_hours }
//   · missing_reason { } · peer_outlier { distinct_subjects, window_days, peer_median, ratio,
//   robust_z (null when MAD 0), peers, peer_basis, min_subjects, statements, peer_median_statements }
//   and always suppressed: alerts of this person and kind held back by the cooldown since the last one.
//
// What the live detector sees, compared with `scalple audit anomalies` (the batch command):
// - bulk_read, out_of_hours and missing_reason are per statement: the same as the batch, at once.
// - peer_outlier counts DISTINCT subjects in a sliding window (anomalies.window, in 10 buckets),
//   not NEW subjects: it has no memory of what a person touched before the window, so revisits of
//   customers first seen before the window count too (the batch discounts them). It is an estimate:
//   exact up to 128 keys per bucket (a set of 32-bit hashes), then a HyperLogLog of 256 registers
//   (about 6.5% standard error); memory per person is bounded (≤ 10 x 256 bytes dense) and so is the
//   number of people (alerts.max_people, least recently seen evicted).
// - It only knows what this proxy process observed since it started: after a restart the window
//   refills over `window`, peers are the people seen by THIS instance (several proxies each see a
//   part), and peers who did nothing since the start are missing. Until min_peers peers are known
//   it compares with whoever it has seen (same fallbacks as the batch). The batch command over the
//   store has none of these limits and is the reference; the live alert is the early warning.
// - It uses the statement's timestamp as its clock (deterministic, and replayable).
import { ConfigError } from '../errors.ts';
import {
  type AnomaliesConfig, type PeerBasis, DAY_MS, describeWorkingHours, localTime, mad, median, minNewSubjects,
  missingReason, peerKey, webhookUrl as checkWebhookUrl, withinWorkingHours,
} from './anomalies.ts';

export interface ObservedStatement {
  ts: Date;
  logId: string;
  sub: string;
  email?: string;
  groups: string[];
  /** 'customer:42'; 'customer:*' (a possible access) is not counted as a subject. */
  subjectKeys: string[];
  readsPii: boolean;
  reason?: string;
  requireReason: boolean;
  statement: string;
}

export type AlertKind = 'bulk_read' | 'out_of_hours' | 'missing_reason' | 'peer_outlier';

export interface Alert {
  type: 'scalple_alert';
  alert: AlertKind;
  ts: string;
  log_id: string;
  person: string;
  email: string | null;
  groups: string[];
  figures: Record<string, number | string | null | Record<string, unknown>>;
  statement: string;
  msg: string;
}

export interface AlertSink {
  log(obj: Record<string, unknown>): void;
}

export interface LiveAlertsOptions {
  /** Largest number of webhook POSTs in flight; more are dropped (and counted). Default 32. */
  maxInFlight?: number;
  /** How often (event time) a peer group's median is recomputed, in ms. Default 5 min. */
  peerRefreshMs?: number;
  /** For tests: the fetch used for the webhook. */
  fetch?: typeof fetch;
}

export interface LiveAlertsStats {
  people: number;
  alerts: number;
  suppressed: number;
  webhookSent: number;
  webhookFailed: number;
  webhookDropped: number;
}

const BUCKETS = 10;
const SPARSE_MAX = 128;
const P = 8;
const M = 1 << P;

/** 32-bit hash of a string: FNV-1a over UTF-16 code units, then the murmur3 finaliser (avalanche). */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Adds a 32-bit hash to HyperLogLog registers (256 of them); true when a register grew. */
export function addToRegisters(reg: Uint8Array, h: number): boolean {
  const idx = h >>> (32 - P);
  const w = (h << P) >>> 0;
  const rank = w === 0 ? 32 - P + 1 : Math.clz32(w) + 1;
  if (rank > reg[idx]!) {
    reg[idx] = rank;
    return true;
  }
  return false;
}

/** HyperLogLog estimate with linear counting for small cardinalities. */
export function hllEstimate(reg: Uint8Array): number {
  let sum = 0;
  let zeros = 0;
  for (let i = 0; i < reg.length; i++) {
    sum += 2 ** -reg[i]!;
    if (reg[i] === 0) zeros++;
  }
  const m = reg.length;
  const alpha = 0.7213 / (1 + 1.079 / m);
  const e = (alpha * m * m) / sum;
  if (e <= 2.5 * m && zeros > 0) return m * Math.log(m / zeros);
  return e;
}

/** Distinct keys of one bucket: exact (a set of hashes) while small, then HLL registers. */
class Bucket {
  sparse: Set<number> | null = new Set();
  dense: Uint8Array | null = null;
  constructor(readonly index: number) {}
}

interface PersonState {
  sub: string;
  email?: string;
  groups: string[];
  key: string;
  buckets: Bucket[];
  /** Statements per bucket index (same indexes as buckets). */
  statements: Map<number, number>;
  lastMs: number;
  /** Hash -> number of sparse buckets of the window holding it: the exact union while no bucket is dense. */
  union: Map<number, number>;
  denseBuckets: number;
  estimate: number;
  /** A dense bucket changed or left: the HLL estimate must be recomputed. */
  dirty: boolean;
  lastAlert: Map<AlertKind, number>;
  suppressed: Map<AlertKind, number>;
}

interface SnapshotEntry {
  person: string;
  groups: string[];
  key: string;
  subjects: number;
  statements: number;
}

interface Snapshot {
  atMs: number;
  version: number;
  entries: SnapshotEntry[];
  byKey: Map<string, SnapshotEntry[]>;
}

interface PeerFigures {
  version: number;
  key: string;
  median: number;
  mad: number;
  peers: number;
  basis: PeerBasis;
  medianStatements: number;
}

export class LiveAlerts {
  readonly #cfg: AnomaliesConfig;
  readonly #sink: AlertSink;
  readonly #webhook?: string;
  readonly #bucketMs: number;
  readonly #maxInFlight: number;
  readonly #peerRefreshMs: number;
  readonly #fetch: typeof fetch;
  readonly #floor: number;
  readonly #people = new Map<string, PersonState>();
  readonly #peerCache = new Map<string, PeerFigures>();
  #snapshot: Snapshot | undefined;
  readonly #inFlight = new Set<Promise<void>>();
  #stats: LiveAlertsStats = { people: 0, alerts: 0, suppressed: 0, webhookSent: 0, webhookFailed: 0, webhookDropped: 0 };

  /**
   * @param config   the parsed `anomalies:` section (parseAnomaliesConfig)
   * @param logger   receives one object per alert (write it as one JSON line)
   * @param webhookUrl optional; overrides anomalies.alerts.webhook_url
   */
  constructor(config: AnomaliesConfig, logger: AlertSink, webhookUrl?: string, options: LiveAlertsOptions = {}) {
    this.#cfg = config;
    this.#sink = logger;
    const url = webhookUrl ?? config.alerts.webhookUrl;
    if (url) this.#webhook = checkWebhookUrl(url, 'webhook URL');
    this.#bucketMs = Math.max(60_000, Math.floor(config.windowMs / BUCKETS));
    this.#maxInFlight = options.maxInFlight ?? 32;
    this.#peerRefreshMs = options.peerRefreshMs ?? 5 * 60_000;
    this.#fetch = options.fetch ?? fetch;
    this.#floor = minNewSubjects(config, config.windowMs);
    if (this.#maxInFlight < 1) throw new ConfigError('LiveAlerts: maxInFlight must be at least 1.');
  }

  /** Called after every completed statement. Synchronous; never throws. */
  observe(e: ObservedStatement): void {
    try {
      this.#observe(e);
    } catch (err) {
      try {
        this.#sink.log({ type: 'scalple_alert_error', msg: `live alerts: ${(err as Error).message}` });
      } catch {
        // a logger that throws must not reach the proxy either
      }
    }
  }

  #observe(e: ObservedStatement): void {
    const cfg = this.#cfg;
    const tsMs = e.ts.getTime();
    const definite = e.subjectKeys.filter((k) => !k.endsWith(':*'));
    const p = this.#person(e, tsMs);

    if (definite.length > cfg.bulkSubjects) {
      this.#emit(p, 'bulk_read', e, { subjects: definite.length, threshold: cfg.bulkSubjects },
        `one statement returned ${definite.length} subjects (more than ${cfg.bulkSubjects})`);
    }
    const wh = cfg.workingHours;
    if (wh && !withinWorkingHours(e.ts, wh)) {
      const lt = localTime(e.ts, wh.timezone);
      const d = describeWorkingHours(wh);
      const local = `${lt.date} ${String(Math.floor(lt.minutes / 60)).padStart(2, '0')}:${String(lt.minutes % 60).padStart(2, '0')}`;
      this.#emit(p, 'out_of_hours', e, { local_time: local, timezone: wh.timezone, working_hours: `${d.days.join(',')} ${d.start}-${d.end}` },
        `access at ${local} ${wh.timezone}, outside working hours`);
    }
    if (cfg.missingReason && missingReason(e)) {
      this.#emit(p, 'missing_reason', e, {}, 'read PII without the reason their role requires');
    }

    // Sliding window of distinct subjects.
    const bi = Math.floor(tsMs / this.#bucketMs);
    p.statements.set(bi, (p.statements.get(bi) ?? 0) + 1);
    if (definite.length) {
      let b = p.buckets.find((x) => x.index === bi);
      if (!b && bi > this.#currentBucket(p) - BUCKETS) {
        b = new Bucket(bi);
        p.buckets.push(b);
      }
      if (b) for (const k of definite) this.#add(p, b, hash32(k));
    }
    this.#expire(p, bi);
    const est = this.#estimate(p);
    if (est >= this.#floor) this.#checkPeer(p, e, est, this.#floor, tsMs);
  }

  #add(p: PersonState, b: Bucket, h: number): void {
    if (b.dense) {
      if (addToRegisters(b.dense, h)) p.dirty = true;
      return;
    }
    const sp = b.sparse!;
    if (sp.has(h)) return;
    sp.add(h);
    p.union.set(h, (p.union.get(h) ?? 0) + 1);
    if (p.denseBuckets) p.dirty = true; // the estimate is the HLL merge: recompute it
    if (sp.size > SPARSE_MAX) {
      // Too many for a set: this bucket becomes HLL registers and leaves the exact union.
      b.dense = new Uint8Array(M);
      for (const x of sp) {
        addToRegisters(b.dense, x);
        this.#unref(p, x);
      }
      b.sparse = null;
      p.denseBuckets++;
      p.dirty = true;
    }
  }

  #unref(p: PersonState, h: number): void {
    const n = p.union.get(h) ?? 0;
    if (n <= 1) p.union.delete(h);
    else p.union.set(h, n - 1);
  }

  #currentBucket(p: PersonState): number {
    return Math.floor(p.lastMs / this.#bucketMs);
  }

  #person(e: ObservedStatement, tsMs: number): PersonState {
    let p = this.#people.get(e.sub);
    if (p) {
      this.#people.delete(e.sub); // re-insert: Map order is least recently seen first
    } else {
      p = { sub: e.sub, groups: [], key: '', buckets: [], statements: new Map(), lastMs: tsMs, union: new Map(), denseBuckets: 0, estimate: 0, dirty: false, lastAlert: new Map(), suppressed: new Map() };
      while (this.#people.size >= this.#cfg.alerts.maxPeople) {
        const oldest = this.#people.keys().next().value;
        if (oldest === undefined) break;
        this.#people.delete(oldest);
      }
    }
    this.#people.set(e.sub, p);
    if (e.email !== undefined) p.email = e.email;
    if (p.groups.length !== e.groups.length || p.groups.some((g, i) => g !== e.groups[i])) {
      p.groups = [...e.groups];
      p.key = peerKey(e.groups, this.#cfg.ignoreGroups);
    }
    p.lastMs = Math.max(p.lastMs, tsMs);
    this.#stats.people = this.#people.size;
    return p;
  }

  /** Drops buckets that left the window ending at bucket `bi`. */
  #expire(p: PersonState, bi: number): void {
    const cur = Math.max(bi, this.#currentBucket(p));
    const lo = cur - BUCKETS + 1;
    if (p.buckets.some((b) => b.index < lo)) {
      for (const b of p.buckets) {
        if (b.index >= lo) continue;
        if (b.sparse) for (const h of b.sparse) this.#unref(p, h);
        else p.denseBuckets--;
      }
      p.buckets = p.buckets.filter((b) => b.index >= lo);
      p.dirty = true;
    }
    for (const k of p.statements.keys()) if (k < lo) p.statements.delete(k);
  }

  #estimate(p: PersonState): number {
    if (p.denseBuckets === 0) return (p.estimate = p.union.size); // exact (up to 32-bit hash collisions), O(1)
    if (!p.dirty) return p.estimate;
    p.dirty = false;
    {
      const reg = new Uint8Array(M);
      for (const b of p.buckets) {
        if (b.dense) for (let i = 0; i < M; i++) reg[i] = Math.max(reg[i]!, b.dense[i]!);
        else for (const h of b.sparse!) addToRegisters(reg, h);
      }
      p.estimate = Math.round(hllEstimate(reg));
    }
    return p.estimate;
  }

  /** A person's figures as of `nowMs` (their window may have slid since they were last seen). */
  #windowOf(p: PersonState, nowMs: number): { subjects: number; statements: number } | undefined {
    const lo = Math.floor(nowMs / this.#bucketMs) - BUCKETS + 1;
    if (Math.floor(p.lastMs / this.#bucketMs) < lo) return undefined; // not active in the window
    this.#expire(p, Math.floor(nowMs / this.#bucketMs));
    let statements = 0;
    for (const n of p.statements.values()) statements += n;
    return { subjects: this.#estimate(p), statements };
  }

  /**
   * Everyone active in the window, at most once per peerRefreshMs of event time: O(people), and
   * people idle for a whole window are forgotten here.
   */
  #refreshSnapshot(nowMs: number): Snapshot {
    const snap = this.#snapshot;
    if (snap && nowMs - snap.atMs < this.#peerRefreshMs && nowMs >= snap.atMs) return snap;
    const entries: SnapshotEntry[] = [];
    const byKey = new Map<string, SnapshotEntry[]>();
    for (const q of [...this.#people.values()]) {
      const w = this.#windowOf(q, nowMs);
      if (!w) {
        this.#people.delete(q.sub);
        continue;
      }
      const x: SnapshotEntry = { person: q.sub, groups: q.groups, key: q.key, ...w };
      entries.push(x);
      const list = byKey.get(q.key);
      if (list) list.push(x);
      else byKey.set(q.key, [x]);
    }
    this.#stats.people = this.#people.size;
    this.#snapshot = { atMs: nowMs, version: (snap?.version ?? 0) + 1, entries, byKey };
    return this.#snapshot;
  }

  /** The peers' figures for one person, from the snapshot (cached until the next snapshot). */
  #peersOf(p: PersonState, snap: Snapshot): PeerFigures {
    const cached = this.#peerCache.get(p.sub);
    if (cached && cached.version === snap.version && cached.key === p.key) return cached;
    const ignore = this.#cfg.ignoreGroups;
    let basis: PeerBasis = 'same_groups';
    let peers = (snap.byKey.get(p.key) ?? []).filter((x) => x.person !== p.sub);
    if (peers.length < this.#cfg.minPeers) {
      const mine = new Set(p.groups.filter((g) => !ignore.includes(g)));
      peers = snap.entries.filter((x) => x.person !== p.sub && x.groups.some((g) => mine.has(g)));
      basis = 'shared_group';
      if (peers.length < this.#cfg.minPeers) {
        peers = snap.entries.filter((x) => x.person !== p.sub);
        basis = 'everyone';
      }
    }
    const vals = peers.map((x) => x.subjects);
    const med = median(vals);
    const figures: PeerFigures = {
      version: snap.version, key: p.key, median: med, mad: mad(vals, med), peers: peers.length, basis, medianStatements: median(peers.map((x) => x.statements)),
    };
    this.#peerCache.set(p.sub, figures);
    if (this.#peerCache.size > 2 * this.#cfg.alerts.maxPeople) this.#peerCache.clear();
    return figures;
  }

  #checkPeer(p: PersonState, e: ObservedStatement, est: number, floor: number, nowMs: number): void {
    const cfg = this.#cfg;
    const peer = this.#peersOf(p, this.#refreshSnapshot(nowMs));
    if (peer.peers === 0) return;
    const ratio = est / Math.max(peer.median, 1);
    const z = peer.mad > 0 ? (est - peer.median) / (1.4826 * peer.mad) : est > peer.median ? Infinity : 0;
    if (ratio < cfg.peerFactor || z < cfg.peerZ) return;
    let statements = 0;
    for (const n of p.statements.values()) statements += n;
    this.#emit(p, 'peer_outlier', e, {
      distinct_subjects: est,
      window_days: Math.round((cfg.windowMs / DAY_MS) * 10) / 10,
      peer_median: peer.median,
      ratio: Math.round(ratio * 100) / 100,
      robust_z: Number.isFinite(z) ? Math.round(z * 100) / 100 : null,
      peers: peer.peers,
      peer_basis: peer.basis,
      min_subjects: floor,
      statements,
      peer_median_statements: peer.medianStatements,
    }, `${est} distinct subjects in the last ${Math.round(cfg.windowMs / DAY_MS)} days, ${Math.round(ratio * 10) / 10}x the median of ${peer.peers} peers (${peer.median})`);
  }

  #emit(p: PersonState, kind: AlertKind, e: ObservedStatement, figures: Alert['figures'], msg: string): void {
    const tsMs = e.ts.getTime();
    const cooldown = kind === 'peer_outlier' ? this.#cfg.alerts.peerCooldownMs : this.#cfg.alerts.cooldownMs;
    const last = p.lastAlert.get(kind);
    if (last !== undefined && tsMs >= last && tsMs - last < cooldown) {
      p.suppressed.set(kind, (p.suppressed.get(kind) ?? 0) + 1);
      this.#stats.suppressed++;
      return;
    }
    p.lastAlert.set(kind, tsMs);
    const suppressed = p.suppressed.get(kind) ?? 0;
    p.suppressed.delete(kind);
    const alert: Alert = {
      type: 'scalple_alert',
      alert: kind,
      ts: e.ts.toISOString(),
      log_id: e.logId,
      person: e.sub,
      email: e.email ?? null,
      groups: e.groups,
      figures: { ...figures, suppressed },
      statement: e.statement.length > 200 ? e.statement.slice(0, 199) + '…' : e.statement,
      msg,
    };
    this.#stats.alerts++;
    this.#sink.log(alert as unknown as Record<string, unknown>);
    if (this.#webhook) this.#post(alert);
  }

  #post(alert: Alert): void {
    if (this.#inFlight.size >= this.#maxInFlight) {
      this.#stats.webhookDropped++;
      return;
    }
    const body = JSON.stringify(alert);
    const req = (async () => {
      try {
        const res = await this.#fetch(this.#webhook!, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(this.#cfg.alerts.webhookTimeoutMs),
        });
        await res.body?.cancel().catch(() => undefined);
        if (res.ok) this.#stats.webhookSent++;
        else this.#failed(alert, `HTTP ${res.status}`);
      } catch (err) {
        this.#failed(alert, (err as Error).name === 'TimeoutError' ? `timed out after ${this.#cfg.alerts.webhookTimeoutMs} ms` : (err as Error).message);
      }
    })();
    this.#inFlight.add(req);
    void req.finally(() => this.#inFlight.delete(req));
  }

  #failed(alert: Alert, why: string): void {
    this.#stats.webhookFailed++;
    try {
      this.#sink.log({ type: 'scalple_alert_webhook_failed', alert: alert.alert, log_id: alert.log_id, msg: `alert webhook failed: ${why}` });
    } catch {
      // never reaches the proxy
    }
  }

  /** Resolves when the webhook POSTs in flight have settled (shutdown, tests). */
  async drain(): Promise<void> {
    while (this.#inFlight.size) await Promise.allSettled([...this.#inFlight]);
  }

  stats(): LiveAlertsStats {
    return { ...this.#stats };
  }
}
