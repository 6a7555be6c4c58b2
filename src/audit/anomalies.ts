// Insider anomalies over the audit store (`scalple audit anomalies`), and the pure detection logic
// shared with the live alerts (alerts.ts).
//
// Four kinds of finding, each over a window of time [since, until):
// - peer_outlier: a person whose count of NEW data subjects in the window (subject keys they had
//   not touched during `novelty_lookback` before the window) is far above their peer group's.
//   Peers are the other people active in the window with the same OIDC groups.
//   Why new subjects and not query volume: the Intesa Sanpaolo employee ran ~14 small queries a
//   day, below the median of their colleagues, but reached ~8 customers they had never looked at
//   before, every day. Ordinary, ticket-driven work keeps coming back to the same few dozen
//   customers a month; snooping does not. Volume alone misses it (the simulation test proves it).
// - bulk_read: one statement that returned or changed more than `bulk_subjects` subjects.
// - out_of_hours: statements outside `working_hours` (in its time zone), refused ones included
//   (an attempt at 3 a.m. is as interesting as an access).
// - missing_reason: statements that read PII (masked fields, or a configured `pii` column) with
//   decision allow/mask and no reason, by a person whose role has `require_reason: true` (from
//   their groups, a default_role, or a time-boxed grant). An enforcing proxy refuses those, so this
//   finds them in observe-only mode (enforce: false) or from before the role required a reason.
//
// Config (top-level key `anomalies:`; every key optional):
//   anomalies:
//     window: 30d               # default window of the command (--window) and of the live detector
//     novelty_lookback: 90d     # a subject is new for a person when they did not touch it in this
//                               # period before the window (0: every subject in the window is new)
//     peer_factor: 3            # flagged only when new subjects >= peer_factor x peer median
//     peer_z: 3.5               # ... and robust z = (x - median) / (1.4826 MAD) >= peer_z
//     min_new_per_day: 1.5      # ... and new subjects >= min_new_per_day x window days
//     min_peers: 3              # fewest peers for a same-groups comparison (else: anyone sharing
//                               # a group; else: everyone active in the window)
//     ignore_groups: []         # groups not used to form peer groups (e.g. all-staff)
//     include_applications: false  # also evaluate application identities (not acting for a person)
//     bulk_subjects: 100        # bulk read: more than this many subjects in one statement
//     working_hours:            # absent: no out-of-hours detection
//       start: "08:00"
//       end: "19:00"            # exclusive; start > end means an overnight shift
//       days: [mon, tue, wed, thu, fri]
//       timezone: Europe/Rome   # IANA name; DST handled
//       holidays: []            # local dates (YYYY-MM-DD) that are not working days
//     missing_reason: true      # detect PII access without a required reason
//     alerts:                   # the live detector in the proxy (alerts.ts)
//       webhook_url: https://siem.example/hook   # optional; POST of each alert as JSON
//       webhook_timeout_ms: 3000
//       cooldown: 10m           # at most one alert per person and kind in this period
//       peer_cooldown: 24h      # the same for peer_outlier alerts
//       max_people: 50000       # people tracked in memory (least recently seen evicted)
//
// JSON output (`--format json`), stable for SIEM pipelines:
//   { "window": { "since": ISO, "until": ISO, "days": n },
//     "novelty_since": ISO,           // start of the lookback used to decide "new"
//     "generated_at": ISO,
//     "thresholds": { "peer_factor", "peer_z", "min_new_subjects", "min_peers", "bulk_subjects",
//                     "working_hours": {start,end,days,timezone,holidays} | null, "missing_reason" },
//     "people_evaluated": n,
//     "findings": [ Finding… ] }       // kinds in the order peer_outlier, bulk_read, out_of_hours,
//                                      // missing_reason; within a kind strongest first (ratio, or
//                                      // number of statements), then by person
//   Finding = { "kind": "peer_outlier"|"bulk_read"|"out_of_hours"|"missing_reason",
//     "person": sub, "email": string|null, "groups": string[],
//     "window": { "since", "until" }, "summary": one line,
//     "figures": (peer_outlier) { "new_subjects", "distinct_subjects", "statements",
//                   "new_subjects_per_statement", "peer_median", "peer_mad", "ratio",
//                   "robust_z" (null when the peers' MAD is 0), "peers", "peer_basis"
//                   ("same_groups"|"shared_group"|"everyone"), "min_new_subjects",
//                   "peer_median_statements" }
//                (bulk_read) { "statements", "max_subjects", "total_subjects", "threshold" }
//                (out_of_hours) { "statements", "first", "last" }
//                (missing_reason) { "statements", "first", "last" }
//     "examples": [ { "log_id", "ts", "statement", "subjects": n|null, "reason": string|null } ],
//                  // up to --examples: the person's latest statements that returned subjects
//                  // (peer_outlier), the largest (bulk_read), the latest (the others)
//     "example_subjects": [ 'customer:42', … ]   // peer_outlier only: some of the new subjects
//   }
// CSV (`--format csv`): one row per finding, the columns of ANOMALY_CSV_FIELDS in
// src/cli/audit/anomalies.ts (kind, person, email, groups, since, until, summary, then the figures;
// a figure a kind does not have is empty; example_log_ids space-separated).
//
// Possible accesses ('customer:*', an aggregate over the table) are not counted as subjects.
// Subject types are counted together (customer:1 and account:1 are two subjects).
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import YAML from 'yaml';
import { ConfigError, ScalpleError } from '../errors.ts';
import { columnKey } from '../policy/policy.ts';

// ---------------------------------------------------------------------------------------------
// Config

export type AnomalyKind = 'peer_outlier' | 'bulk_read' | 'out_of_hours' | 'missing_reason';
export const ANOMALY_KINDS: readonly AnomalyKind[] = ['peer_outlier', 'bulk_read', 'out_of_hours', 'missing_reason'];

const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;

export interface WorkingHours {
  /** Minutes after local midnight, 0..1440. */
  start: number;
  end: number;
  /** ISO days of week: 1 = Monday … 7 = Sunday. */
  days: number[];
  timezone: string;
  /** Local dates YYYY-MM-DD that are not working days. */
  holidays: string[];
}

export interface LiveAlertsConfig {
  webhookUrl?: string;
  webhookTimeoutMs: number;
  cooldownMs: number;
  peerCooldownMs: number;
  maxPeople: number;
}

export interface AnomaliesConfig {
  windowMs: number;
  noveltyLookbackMs: number;
  peerFactor: number;
  peerZ: number;
  minNewPerDay: number;
  minPeers: number;
  ignoreGroups: string[];
  includeApplications: boolean;
  bulkSubjects: number;
  workingHours?: WorkingHours;
  missingReason: boolean;
  alerts: LiveAlertsConfig;
}

export const DAY_MS = 86_400_000;

export const DEFAULT_ANOMALIES: AnomaliesConfig = {
  windowMs: 30 * DAY_MS,
  noveltyLookbackMs: 90 * DAY_MS,
  peerFactor: 3,
  peerZ: 3.5,
  minNewPerDay: 1.5,
  minPeers: 3,
  ignoreGroups: [],
  includeApplications: false,
  bulkSubjects: 100,
  missingReason: true,
  alerts: { webhookTimeoutMs: 3000, cooldownMs: 10 * 60_000, peerCooldownMs: DAY_MS, maxPeople: 50_000 },
};

/** "30d", "12h", "90m", "45s", "2w" (or "0") as milliseconds. */
export function parseDuration(s: string, key: string): number {
  const t = s.trim();
  if (t === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*([smhdw])$/.exec(t);
  if (!m) throw new ScalpleError('USAGE', `${key} must be a duration like 30d, 12h, 90m or 2w (got "${s}").`);
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS, w: 7 * DAY_MS }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
  return Math.round(Number(m[1]) * unit);
}

function clock(v: unknown, key: string): number {
  const m = typeof v === 'string' ? /^(\d{1,2}):(\d{2})$/.exec(v.trim()) : null;
  const minutes = m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  if (!m || Number(m[2]) > 59 || minutes > 1440) throw new ConfigError(`${key} must be a time HH:MM from 00:00 to 24:00 (got ${JSON.stringify(v)}).`);
  return minutes;
}

export function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

function num(v: unknown, key: string, min: number, integer = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    throw new ConfigError(`anomalies.${key} must be ${integer ? 'an integer' : 'a number'} >= ${min}.`);
  }
  return v;
}

function dur(v: unknown, key: string): number {
  if (typeof v !== 'string') throw new ConfigError(`anomalies.${key} must be a duration like 30d, 12h, 10m.`);
  try {
    return parseDuration(v, `anomalies.${key}`);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
}

/** Parses the `anomalies:` section (undefined: defaults). Errors name the key. */
export function parseAnomaliesConfig(raw: unknown): AnomaliesConfig {
  if (raw === undefined || raw === null) return structuredClone(DEFAULT_ANOMALIES);
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('anomalies must be a mapping.');
  const r = raw as Record<string, unknown>;
  const known = ['window', 'novelty_lookback', 'peer_factor', 'peer_z', 'min_new_per_day', 'min_peers', 'ignore_groups', 'include_applications',
    'bulk_subjects', 'working_hours', 'missing_reason', 'alerts'];
  for (const k of Object.keys(r)) if (!known.includes(k)) throw new ConfigError(`anomalies.${k} is not a known key (known: ${known.join(', ')}).`);
  const d = DEFAULT_ANOMALIES;
  const cfg: AnomaliesConfig = {
    windowMs: r.window === undefined ? d.windowMs : dur(r.window, 'window'),
    noveltyLookbackMs: r.novelty_lookback === undefined ? d.noveltyLookbackMs : dur(r.novelty_lookback, 'novelty_lookback'),
    peerFactor: r.peer_factor === undefined ? d.peerFactor : num(r.peer_factor, 'peer_factor', 1),
    peerZ: r.peer_z === undefined ? d.peerZ : num(r.peer_z, 'peer_z', 0),
    minNewPerDay: r.min_new_per_day === undefined ? d.minNewPerDay : num(r.min_new_per_day, 'min_new_per_day', 0),
    minPeers: r.min_peers === undefined ? d.minPeers : num(r.min_peers, 'min_peers', 1, true),
    ignoreGroups: r.ignore_groups === undefined ? [] : strings(r.ignore_groups, 'anomalies.ignore_groups'),
    includeApplications: r.include_applications === undefined ? d.includeApplications : bool(r.include_applications, 'include_applications'),
    bulkSubjects: r.bulk_subjects === undefined ? d.bulkSubjects : num(r.bulk_subjects, 'bulk_subjects', 1, true),
    missingReason: r.missing_reason === undefined ? d.missingReason : bool(r.missing_reason, 'missing_reason'),
    alerts: { ...d.alerts },
  };
  if (cfg.windowMs < 60_000) throw new ConfigError('anomalies.window must be at least 1m.');
  if (r.working_hours !== undefined && r.working_hours !== null) cfg.workingHours = parseWorkingHours(r.working_hours);
  if (r.alerts !== undefined && r.alerts !== null) {
    if (typeof r.alerts !== 'object' || Array.isArray(r.alerts)) throw new ConfigError('anomalies.alerts must be a mapping.');
    const a = r.alerts as Record<string, unknown>;
    for (const k of Object.keys(a)) {
      if (!['webhook_url', 'webhook_timeout_ms', 'cooldown', 'peer_cooldown', 'max_people'].includes(k)) throw new ConfigError(`anomalies.alerts.${k} is not a known key.`);
    }
    if (a.webhook_url !== undefined) cfg.alerts.webhookUrl = webhookUrl(a.webhook_url, 'anomalies.alerts.webhook_url');
    if (a.webhook_timeout_ms !== undefined) cfg.alerts.webhookTimeoutMs = num(a.webhook_timeout_ms, 'alerts.webhook_timeout_ms', 1, true);
    if (a.cooldown !== undefined) cfg.alerts.cooldownMs = dur(a.cooldown, 'alerts.cooldown');
    if (a.peer_cooldown !== undefined) cfg.alerts.peerCooldownMs = dur(a.peer_cooldown, 'alerts.peer_cooldown');
    if (a.max_people !== undefined) cfg.alerts.maxPeople = num(a.max_people, 'alerts.max_people', 1, true);
  }
  return cfg;
}

export function webhookUrl(v: unknown, key: string): string {
  let u: URL;
  try {
    u = new URL(String(v));
  } catch {
    throw new ConfigError(`${key} is not a valid URL.`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ConfigError(`${key} must be an http(s) URL.`);
  return u.toString();
}

export function parseWorkingHours(raw: unknown): WorkingHours {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('anomalies.working_hours must be a mapping.');
  const w = raw as Record<string, unknown>;
  const timezone = w.timezone === undefined ? 'UTC' : String(w.timezone);
  if (!validTimeZone(timezone)) throw new ConfigError(`anomalies.working_hours.timezone: unknown time zone "${timezone}" (use an IANA name such as Europe/Rome).`);
  const days = (w.days === undefined ? ['mon', 'tue', 'wed', 'thu', 'fri'] : strings(w.days, 'anomalies.working_hours.days')).map((x) => {
    const i = DAY_NAMES.indexOf(x.toLowerCase().slice(0, 3) as (typeof DAY_NAMES)[number]);
    if (i < 0) throw new ConfigError(`anomalies.working_hours.days: "${x}" is not a day (mon … sun).`);
    return i + 1;
  });
  const holidays = w.holidays === undefined ? [] : strings(w.holidays, 'anomalies.working_hours.holidays');
  for (const h of holidays) if (!/^\d{4}-\d{2}-\d{2}$/.test(h)) throw new ConfigError(`anomalies.working_hours.holidays: "${h}" must be YYYY-MM-DD.`);
  return {
    start: w.start === undefined ? 8 * 60 : clock(w.start, 'anomalies.working_hours.start'),
    end: w.end === undefined ? 19 * 60 : clock(w.end, 'anomalies.working_hours.end'),
    days: [...new Set(days)].sort(),
    timezone,
    holidays,
  };
}

function strings(v: unknown, key: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new ConfigError(`${key} must be a list of strings.`);
  return v as string[];
}

function bool(v: unknown, key: string): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(`anomalies.${key} must be true or false.`);
  return v;
}

/**
 * The `anomalies:` section of a config file. ScalpleConfig does not carry it (yet), so the file is
 * read again; returns defaults when the section is absent.
 */
export function loadAnomaliesConfig(file: string): AnomaliesConfig {
  const doc = YAML.parse(readFileSync(file, 'utf8')) as Record<string, unknown> | null;
  return parseAnomaliesConfig(doc?.anomalies);
}

function minutesText(m: number): string {
  return `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
}

export function describeWorkingHours(w: WorkingHours): { start: string; end: string; days: string[]; timezone: string; holidays: string[] } {
  return { start: minutesText(w.start), end: minutesText(w.end), days: w.days.map((d) => DAY_NAMES[d - 1]!), timezone: w.timezone, holidays: w.holidays };
}

// ---------------------------------------------------------------------------------------------
// Who needs a reason (from the policy section: roles, default_role, pii)

export interface ReasonPolicy {
  /** Groups that select a role with require_reason. */
  groups: string[];
  /** Roles with require_reason (for time-boxed grants, recorded on intents). */
  roles: string[];
  /** Every group that selects some role (a person in none of them gets default_role). */
  roleGroups: string[];
  defaultRequires: boolean;
  /** schema.table.column of every pii column. */
  piiColumns: string[];
}

/** Derived from the raw policy section (config.policy), without needing mask keys. */
export function reasonPolicyFrom(policy: Record<string, unknown>): ReasonPolicy {
  const roles = (typeof policy.roles === 'object' && policy.roles !== null ? policy.roles : {}) as Record<string, Record<string, unknown>>;
  const groups = new Set<string>();
  const all = new Set<string>();
  const reasonRoles: string[] = [];
  for (const [name, r] of Object.entries(roles)) {
    const gs = Array.isArray(r?.groups) ? (r.groups as unknown[]).filter((g): g is string => typeof g === 'string') : [];
    for (const g of gs) all.add(g);
    if (r?.require_reason === true) {
      reasonRoles.push(name);
      for (const g of gs) groups.add(g);
    }
  }
  const def = typeof policy.default_role === 'string' ? roles[policy.default_role] : undefined;
  const pii = typeof policy.pii === 'object' && policy.pii !== null ? Object.keys(policy.pii) : [];
  return {
    groups: [...groups].sort(),
    roles: reasonRoles.sort(),
    roleGroups: [...all].sort(),
    defaultRequires: def?.require_reason === true,
    piiColumns: pii.map((c) => columnKey(c, 'pii')).sort(),
  };
}

/** Does a person with these groups (and granted roles) need a reason to read PII? */
export function requiresReason(rp: ReasonPolicy, groups: readonly string[], grantedRoles: readonly string[] = []): boolean {
  if (groups.some((g) => rp.groups.includes(g)) || grantedRoles.some((r) => rp.roles.includes(r))) return true;
  return rp.defaultRequires && !groups.some((g) => rp.roleGroups.includes(g)) && grantedRoles.length === 0;
}

/** The pure check behind missing_reason (batch and live). */
export function missingReason(e: { readsPii: boolean; requireReason: boolean; reason?: string | null }): boolean {
  return e.readsPii && e.requireReason && !(e.reason ?? '').trim();
}

// ---------------------------------------------------------------------------------------------
// Working hours (pure; the SQL below mirrors it)

const formatters = new Map<string, Intl.DateTimeFormat>();

export interface LocalTime {
  /** 1 = Monday … 7 = Sunday */
  isoDow: number;
  /** Minutes after local midnight. */
  minutes: number;
  /** Local date YYYY-MM-DD. */
  date: string;
}

const offsets = new Map<string, { slot: number; offset: number }>();
const SLOT_MS = 15 * 60_000;

/**
 * The zone's UTC offset in minutes at an instant. Offsets are multiples of 15 minutes and change
 * on a local hour or half hour, so the offset is constant within a 15-minute UTC slot: Intl (slow)
 * runs once per slot and zone, not once per statement.
 */
function offsetMinutes(tsMs: number, timezone: string): number {
  const slot = Math.floor(tsMs / SLOT_MS);
  const cached = offsets.get(timezone);
  if (cached && cached.slot === slot) return cached.offset;
  let f = formatters.get(timezone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: timezone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
    formatters.set(timezone, f);
  }
  const at = slot * SLOT_MS;
  const p: Record<string, string> = {};
  for (const part of f.formatToParts(new Date(at))) p[part.type] = part.value;
  const localAsUtc = Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute));
  const offset = Math.round((localAsUtc - at) / 60_000);
  offsets.set(timezone, { slot, offset });
  return offset;
}

/** The local day of week, minutes after midnight and date of an instant in a time zone. */
export function localTime(ts: Date, timezone: string): LocalTime {
  const l = new Date(ts.getTime() + offsetMinutes(ts.getTime(), timezone) * 60_000);
  return { isoDow: ((l.getUTCDay() + 6) % 7) + 1, minutes: l.getUTCHours() * 60 + l.getUTCMinutes(), date: l.toISOString().slice(0, 10) };
}

function previousDate(date: string): string {
  const d = new Date(date + 'T00:00:00Z');
  d.setUTCDate(d.getUTCDate() - 1);
  return d.toISOString().slice(0, 10);
}

function isWorkingDay(w: WorkingHours, isoDow: number, date: string): boolean {
  return w.days.includes(isoDow) && !w.holidays.includes(date);
}

/**
 * Is this instant inside the working hours? start < end: [start, end) on a working day.
 * start > end (overnight shift): from start on a working day until end the next morning.
 * start == end: the whole of every working day.
 */
export function withinWorkingHours(ts: Date, w: WorkingHours): boolean {
  const t = localTime(ts, w.timezone);
  if (w.start === w.end) return isWorkingDay(w, t.isoDow, t.date);
  if (w.start < w.end) return isWorkingDay(w, t.isoDow, t.date) && t.minutes >= w.start && t.minutes < w.end;
  if (t.minutes >= w.start) return isWorkingDay(w, t.isoDow, t.date);
  if (t.minutes < w.end) return isWorkingDay(w, t.isoDow === 1 ? 7 : t.isoDow - 1, previousDate(t.date));
  return false;
}

/** SQL boolean: is `tsExpr` inside the working hours? Parameters are appended with p(). */
export function withinWorkingHoursSql(tsExpr: string, w: WorkingHours, p: (v: unknown) => string): string {
  const tz = p(w.timezone);
  const local = `(${tsExpr} AT TIME ZONE ${tz})`;
  const minutes = `(extract(hour FROM ${local})::int * 60 + extract(minute FROM ${local})::int)`;
  const days = p(w.days);
  const hol = p(w.holidays);
  const working = (date: string) => `(extract(isodow FROM ${date})::int = ANY(${days}::int[]) AND NOT (${date} = ANY(${hol}::date[])))`;
  const today = `(${local})::date`;
  const yesterday = `((${local})::date - 1)`;
  if (w.start === w.end) return working(today);
  if (w.start < w.end) return `(${working(today)} AND ${minutes} >= ${w.start} AND ${minutes} < ${w.end})`;
  return `((${minutes} >= ${w.start} AND ${working(today)}) OR (${minutes} < ${w.end} AND ${working(yesterday)}))`;
}

// ---------------------------------------------------------------------------------------------
// Peer comparison (pure)

export interface PersonWindow {
  person: string;
  email: string | null;
  groups: string[];
  statements: number;
  /** Distinct definite subjects in the window. */
  distinctSubjects: number;
  /** Of those, the ones the person had not touched during the lookback before the window. */
  newSubjects: number;
}

export interface PeerThresholds {
  factor: number;
  z: number;
  /** The value must be at least this (absolute floor). */
  floor: number;
  minPeers: number;
  ignoreGroups: readonly string[];
}

export type PeerBasis = 'same_groups' | 'shared_group' | 'everyone';

export interface PeerEvaluation {
  person: string;
  value: number;
  peers: number;
  peerBasis: PeerBasis;
  median: number;
  mad: number;
  /** value / max(median, 1) */
  ratio: number;
  /** (value - median) / (1.4826 MAD); Infinity when MAD is 0 and value > median. */
  z: number;
  flagged: boolean;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Median absolute deviation (unscaled). */
export function mad(xs: readonly number[], med = median(xs)): number {
  return median(xs.map((x) => Math.abs(x - med)));
}

export function peerKey(groups: readonly string[], ignore: readonly string[]): string {
  return [...new Set(groups.filter((g) => !ignore.includes(g)))].sort().join('\n');
}

/**
 * The peers of one person among `all`: people (other than themselves) with the same groups; when
 * fewer than minPeers, anyone sharing at least one group; when still fewer, everyone.
 */
export function choosePeers<T extends { person: string; groups: readonly string[] }>(me: T, all: readonly T[], minPeers: number, ignore: readonly string[]): { peers: T[]; basis: PeerBasis } {
  const key = peerKey(me.groups, ignore);
  const others = all.filter((x) => x.person !== me.person);
  const same = others.filter((x) => peerKey(x.groups, ignore) === key);
  if (same.length >= minPeers) return { peers: same, basis: 'same_groups' };
  const mine = new Set(me.groups.filter((g) => !ignore.includes(g)));
  const shared = others.filter((x) => x.groups.some((g) => mine.has(g)));
  if (shared.length >= minPeers) return { peers: shared, basis: 'shared_group' };
  return { peers: others, basis: 'everyone' };
}

/**
 * Flags the people whose value is far above their peers'. The statistic, and why:
 * - The centre is the peers' MEDIAN and the spread their MAD (median absolute deviation), with the
 *   person themselves left out. Both have a 50% breakdown point: in a group of 10, one insider
 *   (or a few heavy colleagues) cannot drag them, whereas one insider with 4x the subjects raises
 *   a mean by ~30% and a standard deviation far more, hiding themselves.
 * - Three gates must all pass:
 *   ratio  = value / max(median, 1) >= factor   — an effect size: on a tight group the MAD can be
 *            tiny and a z-score alone would flag 40 against 30;
 *   robust z = (value - median) / (1.4826 MAD) >= z — significance against the group's own spread
 *            (1.4826 makes MAD estimate a standard deviation for normal data): on a heterogeneous
 *            group, 3x the median can be ordinary;
 *   value >= floor                                — small numbers are noise (6 against 2).
 * Peers are people sharing the person's groups (see choosePeers).
 */
export function evaluatePeers<T extends { person: string; groups: readonly string[] }>(rows: readonly T[], value: (r: T) => number, t: PeerThresholds): PeerEvaluation[] {
  return rows.map((me) => {
    const { peers, basis } = choosePeers(me, rows, t.minPeers, t.ignoreGroups);
    const vals = peers.map(value);
    const v = value(me);
    const med = median(vals);
    const m = mad(vals, med);
    const ratio = v / Math.max(med, 1);
    const z = m > 0 ? (v - med) / (1.4826 * m) : v > med ? Infinity : 0;
    const flagged = peers.length > 0 && v >= t.floor && ratio >= t.factor && z >= t.z;
    return { person: me.person, value: v, peers: peers.length, peerBasis: basis, median: med, mad: m, ratio, z, flagged };
  });
}

/** The floor on new subjects for a window of this length. */
export function minNewSubjects(cfg: AnomaliesConfig, windowMs: number): number {
  return Math.ceil(cfg.minNewPerDay * (windowMs / DAY_MS));
}

export function peerThresholds(cfg: AnomaliesConfig, windowMs: number): PeerThresholds {
  return { factor: cfg.peerFactor, z: cfg.peerZ, floor: minNewSubjects(cfg, windowMs), minPeers: cfg.minPeers, ignoreGroups: cfg.ignoreGroups };
}

// ---------------------------------------------------------------------------------------------
// Findings

export interface FindingExample {
  log_id: string;
  ts: string;
  statement: string | null;
  subjects: number | null;
  reason: string | null;
}

export interface Finding {
  kind: AnomalyKind;
  person: string;
  email: string | null;
  groups: string[];
  window: { since: string; until: string };
  summary: string;
  figures: Record<string, number | string | null>;
  examples: FindingExample[];
  example_subjects?: string[];
}

export interface AnomalyReport {
  window: { since: string; until: string; days: number };
  novelty_since: string;
  generated_at: string;
  thresholds: {
    peer_factor: number;
    peer_z: number;
    min_new_subjects: number;
    min_peers: number;
    bulk_subjects: number;
    working_hours: ReturnType<typeof describeWorkingHours> | null;
    missing_reason: boolean;
  };
  people_evaluated: number;
  findings: Finding[];
}

export interface DetectOptions {
  config: AnomaliesConfig;
  /** End of the window (exclusive); default now. */
  until?: Date;
  /** Window length; default config.windowMs. */
  windowMs?: number;
  /** Which kinds to look for; default all. */
  kinds?: readonly AnomalyKind[];
  /** Needed for missing_reason (from config.policy); without it that kind is skipped. */
  reasonPolicy?: ReasonPolicy;
  /** Examples per finding (default 5). */
  examples?: number;
  /** Give the peer evaluation of every person (for reports and tests). */
  onEvaluated?: (rows: PersonWindow[], evals: PeerEvaluation[]) => void;
}

// A person is who the statement was for: the person an application acted for, else the principal.
const PERSON = `COALESCE(i.acting_for->>'sub', i.sub)`;
const EMAIL = `COALESCE(i.acting_for->>'email', i.email)`;
const GROUPS = `CASE WHEN i.acting_for IS NULL THEN i.groups ELSE ARRAY(SELECT jsonb_array_elements_text(i.acting_for->'groups')) END`;
// Completions are written after their intent: look this far back for the intent of a completion.
const INTENT_SLACK = `interval '1 day'`;

function scope(cfg: AnomaliesConfig): string {
  return cfg.includeApplications ? 'true' : `(i.principal_kind IS DISTINCT FROM 'application' OR i.acting_for IS NOT NULL)`;
}

/**
 * Per person active in [since, until): statements, latest email and groups, distinct subjects in
 * the window and how many of them are new (not touched in [noveltySince, since)). One statement,
 * aggregated in PostgreSQL; every scan is bounded by ts so only the partitions of the lookback and
 * the window are read.
 */
export function personWindowsSql(cfg: AnomaliesConfig): string {
  return `
    WITH st AS (
      SELECT ${PERSON} AS person, count(*) AS statements,
             (array_agg(${EMAIL} ORDER BY i.ts DESC))[1] AS email,
             (array_agg(array_to_string(${GROUPS}, E'\\x1f') ORDER BY i.ts DESC))[1] AS groups
        FROM scalple_audit.records i
       WHERE i.record_type = 'intent' AND i.ts >= $1 AND i.ts < $2 AND ${scope(cfg)}
       GROUP BY 1
    ), c AS (
      SELECT c.log_id, c.chain_id, c.ts, c.subject_keys
        FROM scalple_audit.records c
       WHERE c.record_type = 'completion' AND c.subject_keys IS NOT NULL AND c.ts >= $3 AND c.ts < $2
    ), ii AS (
      SELECT i.log_id, i.chain_id, ${PERSON} AS person
        FROM scalple_audit.records i
       WHERE i.record_type = 'intent' AND i.ts >= $3::timestamptz - ${INTENT_SLACK} AND i.ts < $2 AND ${scope(cfg)}
    ), pk AS (
      SELECT ii.person, k.key, bool_or(c.ts >= $1) AS in_window, bool_or(c.ts < $1) AS before
        FROM c JOIN ii ON ii.log_id = c.log_id AND ii.chain_id = c.chain_id
        CROSS JOIN LATERAL unnest(c.subject_keys) AS k(key)
       WHERE right(k.key, 2) <> ':*'
       GROUP BY 1, 2
    ), sk AS (
      SELECT person, count(*) FILTER (WHERE in_window) AS distinct_subjects,
             count(*) FILTER (WHERE in_window AND NOT before) AS new_subjects
        FROM pk GROUP BY person
    )
    SELECT st.person, st.email, st.groups, st.statements, sk.distinct_subjects, sk.new_subjects
      FROM st LEFT JOIN sk USING (person)
     ORDER BY st.person`;
}

export async function personWindows(client: pg.Client, since: Date, until: Date, noveltySince: Date, cfg: AnomaliesConfig): Promise<PersonWindow[]> {
  const r = await client.query<{ person: string; email: string | null; groups: string | null; statements: string; distinct_subjects: string | null; new_subjects: string | null }>(
    personWindowsSql(cfg), [since.toISOString(), until.toISOString(), noveltySince.toISOString()]);
  return r.rows.map((x) => ({
    person: x.person,
    email: x.email,
    groups: x.groups ? x.groups.split('\x1f') : [],
    statements: Number(x.statements),
    distinctSubjects: Number(x.distinct_subjects ?? 0),
    newSubjects: Number(x.new_subjects ?? 0),
  }));
}

async function newSubjectExamples(client: pg.Client, person: string, since: Date, until: Date, noveltySince: Date, limit: number): Promise<string[]> {
  const r = await client.query<{ key: string }>(`
    WITH pk AS (
      SELECT k.key, min(c.ts) AS first_ts, bool_or(c.ts < $1) AS before
        FROM scalple_audit.records i
        JOIN scalple_audit.records c ON c.log_id = i.log_id AND c.chain_id = i.chain_id AND c.record_type = 'completion'
             AND c.subject_keys IS NOT NULL AND c.ts >= $3 AND c.ts < $2
        CROSS JOIN LATERAL unnest(c.subject_keys) AS k(key)
       WHERE i.record_type = 'intent' AND i.ts >= $3::timestamptz - ${INTENT_SLACK} AND i.ts < $2
         AND (i.sub = $4 OR i.acting_for->>'sub' = $4) AND ${PERSON} = $4 AND right(k.key, 2) <> ':*'
       GROUP BY k.key
    )
    SELECT key FROM pk WHERE NOT before ORDER BY first_ts, key LIMIT $5`, [since.toISOString(), until.toISOString(), noveltySince.toISOString(), person, limit]);
  return r.rows.map((x) => x.key);
}

async function statementExamples(client: pg.Client, person: string, since: Date, until: Date, limit: number): Promise<FindingExample[]> {
  const r = await client.query(`
    SELECT i.log_id, i.ts, i.statement, i.reason,
           (SELECT count(*) FROM unnest(c.subject_keys) k WHERE right(k, 2) <> ':*') AS subjects
      FROM scalple_audit.records i
      JOIN scalple_audit.records c ON c.log_id = i.log_id AND c.chain_id = i.chain_id AND c.record_type = 'completion'
           AND c.subject_keys IS NOT NULL AND c.ts >= $1 AND c.ts < $2::timestamptz + ${INTENT_SLACK}
     WHERE i.record_type = 'intent' AND i.ts >= $1 AND i.ts < $2
       AND (i.sub = $3 OR i.acting_for->>'sub' = $3) AND ${PERSON} = $3
     ORDER BY i.ts DESC LIMIT $4`, [since.toISOString(), until.toISOString(), person, limit]);
  return r.rows.map(exampleOf);
}

function exampleOf(x: Record<string, unknown>): FindingExample {
  return {
    log_id: String(x.log_id),
    ts: (x.ts as Date).toISOString(),
    statement: x.statement === null || x.statement === undefined ? null : truncate(String(x.statement), 300),
    subjects: x.subjects === null || x.subjects === undefined ? null : Number(x.subjects),
    reason: (x.reason as string | null | undefined) ?? null,
  };
}

function truncate(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

/**
 * Grouped findings: `base` selects rows (person, email, groups_text, log_id, ts, statement,
 * reason, subjects) of matching statements; returns per person the count, first/last, max/sum of
 * subjects and the top `examples` rows (most subjects first, then latest).
 */
async function groupedRows(client: pg.Client, base: string, params: unknown[], examples: number): Promise<Map<string, { email: string | null; groups: string[]; count: number; first: Date; last: Date; maxSubjects: number; totalSubjects: number; examples: FindingExample[] }>> {
  params.push(examples);
  const r = await client.query(`
    WITH b AS (${base}),
    agg AS (
      SELECT person, count(*) AS n, min(ts) AS first_ts, max(ts) AS last_ts, max(subjects) AS max_subjects, sum(subjects) AS total_subjects,
             (array_agg(email ORDER BY ts DESC))[1] AS email, (array_agg(groups_text ORDER BY ts DESC))[1] AS groups_text
        FROM b GROUP BY person
    ),
    ex AS (
      SELECT * FROM (SELECT b.*, row_number() OVER (PARTITION BY person ORDER BY subjects DESC NULLS LAST, ts DESC) AS rn FROM b) x
       WHERE rn <= $${params.length}
    )
    SELECT agg.person, agg.n, agg.first_ts, agg.last_ts, agg.max_subjects, agg.total_subjects, agg.email, agg.groups_text,
           ex.log_id, ex.ts, ex.statement, ex.reason, ex.subjects
      FROM agg JOIN ex USING (person)
     ORDER BY agg.person, ex.rn`, params);
  const out = new Map<string, { email: string | null; groups: string[]; count: number; first: Date; last: Date; maxSubjects: number; totalSubjects: number; examples: FindingExample[] }>();
  for (const x of r.rows as Record<string, unknown>[]) {
    const person = String(x.person);
    let g = out.get(person);
    if (!g) {
      g = {
        email: (x.email as string | null) ?? null,
        groups: x.groups_text ? String(x.groups_text).split('\x1f') : [],
        count: Number(x.n),
        first: x.first_ts as Date,
        last: x.last_ts as Date,
        maxSubjects: Number(x.max_subjects ?? 0),
        totalSubjects: Number(x.total_subjects ?? 0),
        examples: [],
      };
      out.set(person, g);
    }
    g.examples.push(exampleOf(x));
  }
  return out;
}

const BASE_COLUMNS = `${PERSON} AS person, ${EMAIL} AS email, array_to_string(${GROUPS}, E'\\x1f') AS groups_text, i.log_id, i.ts, i.statement, i.reason`;

async function bulkReads(client: pg.Client, since: Date, until: Date, cfg: AnomaliesConfig, examples: number): Promise<Finding[]> {
  const params: unknown[] = [since.toISOString(), until.toISOString(), cfg.bulkSubjects];
  const base = `
    SELECT * FROM (
      SELECT ${BASE_COLUMNS}, (SELECT count(*) FROM unnest(c.subject_keys) k WHERE right(k, 2) <> ':*') AS subjects
        FROM scalple_audit.records c
        JOIN scalple_audit.records i ON i.log_id = c.log_id AND i.chain_id = c.chain_id AND i.record_type = 'intent'
             AND i.ts >= $1::timestamptz - ${INTENT_SLACK} AND i.ts < $2
       WHERE c.record_type = 'completion' AND c.subject_keys IS NOT NULL AND c.ts >= $1 AND c.ts < $2
         AND cardinality(c.subject_keys) > $3 AND ${scope(cfg)}
    ) s WHERE subjects > $3`;
  const groups = await groupedRows(client, base, params, examples);
  return [...groups].map(([person, g]) => ({
    kind: 'bulk_read' as const, person, email: g.email, groups: g.groups, window: win(since, until),
    summary: `${g.count} statement${g.count === 1 ? '' : 's'} returned more than ${cfg.bulkSubjects} subjects (largest: ${g.maxSubjects})`,
    figures: { statements: g.count, max_subjects: g.maxSubjects, total_subjects: g.totalSubjects, threshold: cfg.bulkSubjects },
    examples: g.examples,
  }));
}

async function outOfHours(client: pg.Client, since: Date, until: Date, cfg: AnomaliesConfig, examples: number): Promise<Finding[]> {
  const w = cfg.workingHours!;
  const params: unknown[] = [since.toISOString(), until.toISOString()];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  const base = `
    SELECT ${BASE_COLUMNS}, NULL::bigint AS subjects
      FROM scalple_audit.records i
     WHERE i.record_type = 'intent' AND i.ts >= $1 AND i.ts < $2 AND ${scope(cfg)}
       AND NOT ${withinWorkingHoursSql('i.ts', w, p)}`;
  const groups = await groupedRows(client, base, params, examples);
  const wh = describeWorkingHours(w);
  return [...groups].map(([person, g]) => ({
    kind: 'out_of_hours' as const, person, email: g.email, groups: g.groups, window: win(since, until),
    summary: `${g.count} statement${g.count === 1 ? '' : 's'} outside working hours (${wh.days.join(',')} ${wh.start}-${wh.end} ${wh.timezone})`,
    figures: { statements: g.count, first: g.first.toISOString(), last: g.last.toISOString() },
    examples: g.examples,
  }));
}

async function missingReasons(client: pg.Client, since: Date, until: Date, cfg: AnomaliesConfig, rp: ReasonPolicy, examples: number): Promise<Finding[]> {
  if (!rp.groups.length && !rp.roles.length && !rp.defaultRequires) return [];
  const params: unknown[] = [since.toISOString(), until.toISOString(), rp.groups, rp.roles, rp.roleGroups, rp.piiColumns, rp.defaultRequires];
  const granted = `ARRAY(SELECT g->>'role' FROM jsonb_array_elements(CASE WHEN jsonb_typeof(i.detail->'grants') = 'array' THEN i.detail->'grants' ELSE '[]'::jsonb END) g)`;
  const base = `
    SELECT ${BASE_COLUMNS}, NULL::bigint AS subjects
      FROM scalple_audit.records i
     WHERE i.record_type = 'intent' AND i.ts >= $1 AND i.ts < $2 AND ${scope(cfg)}
       AND i.decision IN ('allow', 'mask')
       AND COALESCE(btrim(i.reason), '') = ''
       AND ((i.masked_fields IS NOT NULL AND i.masked_fields <> '{}'::jsonb) OR i.columns && $6::text[])
       AND (i.groups && $3::text[] OR ${granted} && $4::text[]
            OR ($7::boolean AND NOT (COALESCE(i.groups, '{}') && $5::text[]) AND cardinality(${granted}) = 0))`;
  const groups = await groupedRows(client, base, params, examples);
  return [...groups].map(([person, g]) => ({
    kind: 'missing_reason' as const, person, email: g.email, groups: g.groups, window: win(since, until),
    summary: `${g.count} statement${g.count === 1 ? '' : 's'} read PII without the reason their role requires`,
    figures: { statements: g.count, first: g.first.toISOString(), last: g.last.toISOString() },
    examples: g.examples,
  }));
}

function win(since: Date, until: Date): { since: string; until: string } {
  return { since: since.toISOString(), until: until.toISOString() };
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The peer outliers of one window, from per-person figures (pure). */
export function peerOutlierFindings(rows: PersonWindow[], cfg: AnomaliesConfig, since: Date, until: Date): { findings: Finding[]; evals: PeerEvaluation[] } {
  const windowMs = until.getTime() - since.getTime();
  const t = peerThresholds(cfg, windowMs);
  const evals = evaluatePeers(rows, (r) => r.newSubjects, t);
  const byPerson = new Map(rows.map((r) => [r.person, r]));
  const findings: Finding[] = [];
  for (const e of evals) {
    if (!e.flagged) continue;
    const r = byPerson.get(e.person)!;
    const { peers } = choosePeers(r, rows, t.minPeers, t.ignoreGroups);
    findings.push({
      kind: 'peer_outlier', person: r.person, email: r.email, groups: r.groups, window: win(since, until),
      summary: `${r.newSubjects} new subjects in ${round(windowMs / DAY_MS, 1)} days, ${round(e.ratio, 1)}x the median of ${e.peers} peers (${e.median}); ${r.statements} statements (peer median ${median(peers.map((x) => x.statements))})`,
      figures: {
        new_subjects: r.newSubjects,
        distinct_subjects: r.distinctSubjects,
        statements: r.statements,
        new_subjects_per_statement: r.statements ? round(r.newSubjects / r.statements, 3) : null,
        peer_median: e.median,
        peer_mad: e.mad,
        ratio: round(e.ratio),
        robust_z: Number.isFinite(e.z) ? round(e.z) : null,
        peers: e.peers,
        peer_basis: e.peerBasis,
        min_new_subjects: t.floor,
        peer_median_statements: median(peers.map((x) => x.statements)),
      },
      examples: [],
    });
  }
  findings.sort((a, b) => Number(b.figures.ratio) - Number(a.figures.ratio) || a.person.localeCompare(b.person));
  return { findings, evals };
}

/**
 * Session settings of the detector's transaction. JIT off: on a 3-million-record store the JIT
 * compiled these aggregates for ~20 s of CPU (the query itself takes a few seconds); work_mem so
 * the person/subject hash aggregate and the intent/completion hash join stay in memory.
 */
export const DETECT_SETTINGS = [`SET LOCAL work_mem = '64MB'`, 'SET LOCAL jit = off'];

/** `scalple audit anomalies`: every finding of the window ending at `until`. */
export async function detectAnomalies(client: pg.Client, opts: DetectOptions): Promise<AnomalyReport> {
  const cfg = opts.config;
  const windowMs = opts.windowMs ?? cfg.windowMs;
  const until = opts.until ?? new Date();
  const since = new Date(until.getTime() - windowMs);
  const noveltySince = new Date(since.getTime() - cfg.noveltyLookbackMs);
  const kinds = new Set(opts.kinds ?? ANOMALY_KINDS);
  const nEx = opts.examples ?? 5;
  const findings: Finding[] = [];
  let evaluated = 0;
  // One snapshot for every query; more memory for the per-person/subject hash aggregate.
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    for (const s of DETECT_SETTINGS) await client.query(s);
    if (kinds.has('peer_outlier')) {
      const rows = await personWindows(client, since, until, noveltySince, cfg);
      evaluated = rows.length;
      const { findings: peer, evals } = peerOutlierFindings(rows, cfg, since, until);
      opts.onEvaluated?.(rows, evals);
      for (const f of peer) {
        f.examples = await statementExamples(client, f.person, since, until, nEx);
        f.example_subjects = await newSubjectExamples(client, f.person, since, until, noveltySince, 10);
      }
      findings.push(...peer);
    }
    if (kinds.has('bulk_read')) findings.push(...sortByCount(await bulkReads(client, since, until, cfg, nEx)));
    if (kinds.has('out_of_hours') && cfg.workingHours) findings.push(...sortByCount(await outOfHours(client, since, until, cfg, nEx)));
    if (kinds.has('missing_reason') && cfg.missingReason && opts.reasonPolicy) {
      findings.push(...sortByCount(await missingReasons(client, since, until, cfg, opts.reasonPolicy, nEx)));
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return {
    window: { ...win(since, until), days: round(windowMs / DAY_MS, 3) },
    novelty_since: noveltySince.toISOString(),
    generated_at: new Date().toISOString(),
    thresholds: {
      peer_factor: cfg.peerFactor,
      peer_z: cfg.peerZ,
      min_new_subjects: minNewSubjects(cfg, windowMs),
      min_peers: cfg.minPeers,
      bulk_subjects: cfg.bulkSubjects,
      working_hours: cfg.workingHours ? describeWorkingHours(cfg.workingHours) : null,
      missing_reason: cfg.missingReason && opts.reasonPolicy !== undefined,
    },
    people_evaluated: evaluated,
    findings,
  };
}

function sortByCount(fs: Finding[]): Finding[] {
  return fs.sort((a, b) => Number(b.figures.statements) - Number(a.figures.statements) || a.person.localeCompare(b.person));
}
