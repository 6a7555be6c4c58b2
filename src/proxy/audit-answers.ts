// Audit answers the proxy gives itself, from the audit store, to people whose role has
// `audit: true` — the same answers `scalple audit … --config` gives on the proxy host, so that an
// auditor away from it asks with their own login (`scalple audit who-accessed customer 42` without
// --config does exactly this):
//
//   SELECT * FROM scalple.who_accessed('customer', '42' [, since [, limit]]
//                                       [, until => ISO] [, possible => 'summary'|'include'|'none']
//                                       [, format => 'rows'|'json'])
//     rows (default): one row per access, the columns of `--format json` (SUBJECT_ACCESS_FIELDS),
//     newest first, at most `limit` (default 1000); NOTICEs say how many more there are and
//     summarise the possible accesses (possible => 'include' lists them, 'none' leaves them out).
//     json: one row, one json column `answer`: { accesses, more, possible } (WhoAccessedAnswer).
//   SELECT * FROM scalple.access_report('customer', '42' [, since [, until]])
//     one row, one json column `report`: the subject access report (SubjectAccessReport), every
//     access with no limit, generated_by naming the person who asked.
//   SELECT * FROM scalple.anomalies(['30d' [, until]] [, kinds => 'bulk_read,out_of_hours']
//                                   [, examples => 5] [, format => 'rows'|'json'])
//     rows (default): one row per finding; json: one row, one json column `report` (AnomalyReport).
//     Thresholds from the proxy's `anomalies:` config.
//
// since/until: an ISO date or time, or a duration before now ('30d', '12h'). Every answer is an
// audit read recorded (an audit_read event on the audit-reads chain, its principal the person)
// before anything is sent; a read that cannot be recorded is refused.
import { ScalpleError, errorMessage } from '../errors.ts';
import type { ScalpleConfig } from '../policy/config.ts';
import type { Principal } from '../audit/record.ts';
import type { Json } from '../audit/chain.ts';
import type { Refusal } from './statement-info.ts';
import { noticeMessage, typedResult, type AuditFunction, type ResultColumn } from './scalple-functions.ts';

export interface AuditAsker {
  principal: Principal;
  /** Role names (joined for messages) and whether any of them has audit: true. */
  roleNames: string[];
  audit: boolean;
  /** Columns (schema.table.column) and tables denied to the asker: see scrubForAsker. */
  restricted: string[];
  sessionId: string;
  clientAddr: string;
  applicationName: string;
}

export type AuditAnswer = { messages: Buffer[] } | { refusal: Refusal };

/** Positional parameters of each function, in order; named arguments may use these names and the extras. */
const PARAMS: Record<AuditFunction, { positional: string[]; named: string[]; required: number }> = {
  who_accessed: { positional: ['subject', 'key', 'since', 'limit'], named: ['until', 'possible', 'format'], required: 2 },
  access_report: { positional: ['subject', 'key', 'since', 'until'], named: [], required: 2 },
  anomalies: { positional: ['window', 'until'], named: ['kinds', 'examples', 'format'], required: 0 },
};

const USAGE: Record<AuditFunction, string> = {
  who_accessed: "SELECT * FROM scalple.who_accessed('customer', '42' [, since [, limit]] [, until => '2026-01-01'] [, possible => 'summary'|'include'|'none'] [, format => 'rows'|'json'])",
  access_report: "SELECT * FROM scalple.access_report('customer', '42' [, since [, until]])",
  anomalies: "SELECT * FROM scalple.anomalies(['30d' [, until]] [, kinds => 'peer_outlier,bulk_read'] [, examples => 5] [, format => 'rows'|'json'])",
};

class BadArgument extends ScalpleError {
  constructor(message: string) {
    super('USAGE', message, { sqlstate: '22023' });
  }
}

/** The arguments by parameter name (positional ones first), unknown and repeated names refused. */
function bindArgs(fn: AuditFunction, args: (string | null)[], named: Record<string, string | null>): Map<string, string> {
  const p = PARAMS[fn];
  if (args.length > p.positional.length) throw new BadArgument(`scalple.${fn}() takes at most ${p.positional.length} positional arguments: ${USAGE[fn]}`);
  const out = new Map<string, string>();
  args.forEach((v, i) => {
    if (v !== null) out.set(p.positional[i]!, v);
  });
  for (const [k, v] of Object.entries(named)) {
    if (!p.positional.includes(k) && !p.named.includes(k)) throw new BadArgument(`scalple.${fn}() has no argument ${k}: ${USAGE[fn]}`);
    const i = p.positional.indexOf(k);
    if (i >= 0 && i < args.length) throw new BadArgument(`scalple.${fn}(): ${k} is given twice`);
    if (v !== null) out.set(k, v);
  }
  for (const k of p.positional.slice(0, p.required)) if (!out.has(k)) throw new BadArgument(`scalple.${fn}() needs ${k}: ${USAGE[fn]}`);
  return out;
}

/** Accesses one report built by the proxy may list. */
const MAX_REPORT_ACCESSES = 1000;

/** Upper bounds, so one call cannot make the proxy hold an unbounded answer. */
const MAX_INT: Record<string, number> = { limit: 10_000, examples: 100 };

function positiveInt(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const max = MAX_INT[name] ?? 10_000;
  if (!/^\d+$/.test(v.trim()) || Number(v) < 1 || !Number.isSafeInteger(Number(v))) throw new BadArgument(`${name} must be a positive integer (got "${v}")`);
  if (Number(v) > max) throw new BadArgument(`${name} may be at most ${max} through the proxy (got ${v}): narrow with since/until, or run the command with --config on the proxy host`);
  return Number(v);
}

function choice<T extends string>(v: string | undefined, name: string, choices: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (!choices.includes(v as T)) throw new BadArgument(`${name} must be one of ${choices.map((c) => `'${c}'`).join(', ')} (got '${v}')`);
  return v as T;
}

/** Answers one of the audit functions for `who`, or says why not. */
export async function answerAuditFunction(fn: AuditFunction, args: (string | null)[], named: Record<string, string | null>, config: ScalpleConfig, who: AuditAsker): Promise<AuditAnswer> {
  const roleName = who.roleNames.join('+') || 'default';
  if (!who.audit) {
    return { refusal: { sqlstate: '42501', message: `scalple.${fn}() needs a role with audit: true (yours: ${roleName}); on the proxy host, scalple audit … --config reads the store directly`, rule: `roles.${roleName}.audit` } };
  }
  try {
    const bound = bindArgs(fn, args, named);
    const { parseTime } = await import('../audit/search.ts');
    const time = (name: string, now: Date): Date | undefined => {
      const v = bound.get(name);
      return v === undefined ? undefined : parseTime(v, name, now);
    };
    switch (fn) {
      case 'who_accessed':
        return await whoAccessed(bound, time, config, who);
      case 'access_report':
        return await accessReport(bound, time, config, who);
      case 'anomalies':
        return await anomalies(bound, time, config, who);
    }
  } catch (err) {
    const sqlstate = err instanceof ScalpleError ? (err.code === 'USAGE' || err.code === 'CONFIG' ? '22023' : err.sqlstate) : '57P03';
    return { refusal: { sqlstate, message: errorMessage(err).replace(/--(since|until)\b/g, '$1'), rule: 'audit.read' } };
  }
}

type TimeArg = (name: string, now: Date) => Date | undefined;

async function storeClient(config: ScalpleConfig): Promise<import('pg').Client> {
  const { connect } = await import('../audit/db.ts');
  return connect(config.audit.url, { applicationName: 'scalple-audit-read' });
}

async function record(config: ScalpleConfig, who: AuditAsker, command: string, args: Record<string, Json>, results: number): Promise<void> {
  const { recordAuditRead, proxyReader } = await import('../audit/audit-read.ts');
  await recordAuditRead(config, { command, arguments: { ...args, via: 'proxy' }, results, principal: who.principal, reader: proxyReader(who) }, {
    info: () => undefined, warn: () => undefined, error: () => undefined,
  });
}

// ---------------------------------------------------------------------------------------------
// who_accessed

const JSON_FIELDS = new Set(['groups', 'acting_for', 'params', 'kinds', 'tables', 'columns', 'masked_fields', 'grants']);
const INT_FIELDS = new Set(['rows', 'seq', 'completion_seq']);

function cell(v: unknown, json: boolean): string | null {
  if (v === null || v === undefined) return null;
  return json ? JSON.stringify(v) : String(v);
}

function plural(n: number, word: string): string {
  const many = word.endsWith('person') ? word.replace(/person$/, 'people') : word.endsWith('s') ? `${word}es` : `${word}s`;
  return `${n.toLocaleString('en')} ${n === 1 ? word : many}`;
}

async function whoAccessed(bound: Map<string, string>, time: TimeArg, config: ScalpleConfig, who: AuditAsker): Promise<AuditAnswer> {
  const { answerWhoAccessed, checkKey, resolveSubject, DEFAULT_LIMIT, SUBJECT_ACCESS_FIELDS } = await import('../audit/who-accessed.ts');
  const { connect } = await import('../audit/db.ts');
  const { humanTime } = await import('../audit/report.ts');
  const subjectName = bound.get('subject')!;
  const subject = resolveSubject(config.policy, subjectName);
  const key = checkKey(bound.get('key')!);
  const now = new Date();
  const since = time('since', now);
  const until = time('until', now);
  const limit = positiveInt(bound.get('limit'), 'limit', DEFAULT_LIMIT);
  const possibleMode = choice(bound.get('possible'), 'possible', ['summary', 'include', 'none'] as const, 'summary');
  const format = choice(bound.get('format'), 'format', ['rows', 'json'] as const, 'rows');
  const client = await storeClient(config);
  let answer: Awaited<ReturnType<typeof answerWhoAccessed>>;
  try {
    answer = await answerWhoAccessed(client, {
      subject, key, ...(since ? { since } : {}), ...(until ? { until } : {}), ...(possibleMode === 'none' ? { definiteOnly: true } : {}),
    }, {
      limit, ...(possibleMode === 'include' ? { includePossible: true } : {}),
      connect: () => connect(config.audit.url, { applicationName: 'scalple-audit-read' }),
    });
  } finally {
    await client.end().catch(() => undefined);
  }
  answer.accesses = scrubForAsker(answer.accesses, who);
  if (answer.possible) answer.possible.groups = scrubForAsker(answer.possible.groups, who);
  // Recorded before anything is sent: a read that cannot be recorded shows nothing.
  await record(config, who, 'who-accessed', {
    subject: subjectName, key, since: since?.toISOString() ?? null, until: until?.toISOString() ?? null,
    format, definite_only: possibleMode === 'none', include_possible: possibleMode === 'include', limit,
  }, answer.accesses.length + (answer.possible?.accesses ?? 0));
  if (format === 'json') return { messages: typedResult([{ name: 'answer', type: 'json' }], [[JSON.stringify(answer)]]) };

  const columns: ResultColumn[] = SUBJECT_ACCESS_FIELDS.map((f) => ({ name: f, type: JSON_FIELDS.has(f) ? 'json' : INT_FIELDS.has(f) ? 'int8' : f === 'duration_ms' ? 'float8' : 'text' }));
  const rows = answer.accesses.map((a) => SUBJECT_ACCESS_FIELDS.map((f) => cell(a[f], JSON_FIELDS.has(f))));
  const messages = typedResult(columns, rows);
  const what = `${subjectName} ${key}`;
  const more = (m: { count: number; exact: boolean; before: string | null }, noun: string, verb: string): string => {
    const before = m.before ? ` (at or before ${humanTime(m.before)})` : '';
    return m.exact
      ? `${plural(m.count, `more ${noun}`)} to ${what}${before} ${verb}: a limit of ${limit + m.count} (the 4th argument) includes them, or narrow with since/until`
      : `more than ${plural(m.count, `more ${noun}`)} to ${what}${before} ${verb}: raise the limit (the 4th argument), or narrow with since/until`;
  };
  if (answer.more.count) messages.push(noticeMessage(more(answer.more, possibleMode === 'include' ? 'access' : 'definite access', 'not shown')));
  const p = answer.possible;
  if (p?.accesses) {
    const people = new Set(p.groups.map((g) => g.sub ?? g.email ?? '?')).size;
    const detail = p.groups.map((g) => {
      const af = g.acting_for && typeof g.acting_for === 'object' && !Array.isArray(g.acting_for) ? (g.acting_for.email ?? g.acting_for.sub ?? null) : null;
      const person = (g.email ?? g.sub ?? '(unknown)') + (af ? ` for ${String(af)}` : '');
      const stmt = g.named_query ? `named query ${g.named_query}` : (g.statement ?? '(statement record missing)').replace(/\s+/g, ' ').slice(0, 200);
      return `${g.count} × ${person}, ${g.first.slice(0, 16).replace('T', ' ')} … ${g.last.slice(0, 16).replace('T', ' ')} UTC: ${stmt} (${g.reasons.join('; ')})`;
    }).join('\n');
    messages.push(noticeMessage(
      `plus ${plural(p.accesses, 'possible access')} to ${what} by ${plural(people, 'person')} (statements that read the table without revealing which rows), not listed: possible => 'include' lists them`,
      detail,
    ));
    if (p.more.count) messages.push(noticeMessage(more(p.more, 'possible access', 'not summarised')));
  }
  return { messages };
}

// ---------------------------------------------------------------------------------------------
// access_report

async function accessReport(bound: Map<string, string>, time: TimeArg, config: ScalpleConfig, who: AuditAsker): Promise<AuditAnswer> {
  const { checkKey, oldestRecord, resolveSubject, whoAccessed } = await import('../audit/who-accessed.ts');
  const { buildReport } = await import('../audit/report.ts');
  const subjectName = bound.get('subject')!;
  const subject = resolveSubject(config.policy, subjectName);
  const key = checkKey(bound.get('key')!);
  const now = new Date();
  const since = time('since', now);
  const until = time('until', now) ?? now;
  if (since && since > until) throw new BadArgument('since is after until');
  const client = await storeClient(config);
  let accesses: Awaited<ReturnType<typeof whoAccessed>>;
  let logStarts: string | null;
  try {
    accesses = await whoAccessed(client, { subject, key, ...(since ? { since } : {}), until });
    logStarts = await oldestRecord(client);
  } finally {
    await client.end().catch(() => undefined);
  }
  if (accesses.length > MAX_REPORT_ACCESSES) {
    // The whole report is one value held in the proxy that relays everybody's sessions: bounded.
    throw new BadArgument(`the report for ${subjectName} ${key} would list ${accesses.length.toLocaleString('en')} accesses, more than the ${MAX_REPORT_ACCESSES.toLocaleString('en')} the proxy builds: narrow it with since/until, or run scalple audit report --config on the proxy host`);
  }
  accesses = scrubForAsker(accesses, who);
  await record(config, who, 'report', { subject: subjectName, key, since: since?.toISOString() ?? null, until: until.toISOString() }, accesses.length);
  const p = who.principal;
  const report = buildReport({
    subject: subjectName, key, accesses, ...(since ? { since } : {}), until, logStarts, generatedAt: now,
    generatedBy: { via: 'proxy', sub: p.sub, email: p.email ?? null, name: p.name ?? null, groups: p.groups },
  });
  return { messages: typedResult([{ name: 'report', type: 'json' }], [[JSON.stringify(report)]]) };
}

// ---------------------------------------------------------------------------------------------
// anomalies

async function anomalies(bound: Map<string, string>, time: TimeArg, config: ScalpleConfig, who: AuditAsker): Promise<AuditAnswer> {
  const { ANOMALY_KINDS, detectAnomalies, parseAnomaliesConfig, parseDuration, reasonPolicyFrom } = await import('../audit/anomalies.ts');
  type Kind = (typeof ANOMALY_KINDS)[number];
  const cfg = parseAnomaliesConfig(config.policy.anomalies);
  const w = bound.get('window');
  const windowMs = w === undefined ? cfg.windowMs : parseDuration(w, 'window');
  if (windowMs < 60_000) throw new BadArgument('window must be at least 1m');
  const until = time('until', new Date()) ?? new Date();
  const kindsArg = bound.get('kinds');
  const kinds = kindsArg === undefined ? undefined : kindsArg.split(/[\s,]+/).filter(Boolean).map((k) => {
    if (!ANOMALY_KINDS.includes(k as Kind)) throw new BadArgument(`kinds must be among ${ANOMALY_KINDS.join(', ')} (got "${k}")`);
    return k as Kind;
  });
  const examples = positiveInt(bound.get('examples'), 'examples', 5);
  const format = choice(bound.get('format'), 'format', ['rows', 'json'] as const, 'rows');
  const client = await storeClient(config);
  let report: Awaited<ReturnType<typeof detectAnomalies>>;
  try {
    report = await detectAnomalies(client, { config: cfg, until, windowMs, examples, reasonPolicy: reasonPolicyFrom(config.policy), ...(kinds ? { kinds } : {}) });
  } finally {
    await client.end().catch(() => undefined);
  }
  await record(config, who, 'anomalies', {
    since: report.window.since, until: report.window.until, kinds: kinds ?? [...ANOMALY_KINDS], examples, format,
  }, report.findings.length);
  if (format === 'json') return { messages: typedResult([{ name: 'report', type: 'json' }], [[JSON.stringify(report)]]) };
  const columns: ResultColumn[] = [
    { name: 'kind', type: 'text' }, { name: 'person', type: 'text' }, { name: 'email', type: 'text' }, { name: 'groups', type: 'json' },
    { name: 'since', type: 'text' }, { name: 'until', type: 'text' }, { name: 'summary', type: 'text' }, { name: 'figures', type: 'json' },
    { name: 'examples', type: 'json' }, { name: 'example_subjects', type: 'json' },
  ];
  const rows = report.findings.map((f) => [
    f.kind, f.person, f.email, JSON.stringify(f.groups), f.window.since, f.window.until, f.summary, JSON.stringify(f.figures),
    JSON.stringify(f.examples), f.example_subjects ? JSON.stringify(f.example_subjects) : null,
  ]);
  const messages = typedResult(columns, rows);
  messages.push(noticeMessage(`window ${report.window.since} … ${report.window.until} (${report.window.days} days), ${report.people_evaluated} people evaluated, ${plural(report.findings.length, 'finding')}`));
  return { messages };
}

/**
 * An auditor's own `deny` still applies to what audit answers show: for an access that touched a
 * column (or table) denied to the asker, the statement's literals, its parameters and its error
 * text (which may quote values) are withheld — `UPDATE customers SET ssn = '…'` keeps its shape,
 * not the value. Masks do not: `audit: true` is the right to read the trail, literals included.
 */
function scrubForAsker<T extends { statement: string | null; tables?: string[]; columns?: string[]; params?: unknown; error?: string | null }>(rows: T[], who: AuditAsker): T[] {
  if (!who.restricted.length) return rows;
  // A denied entry is a column (schema.table.column) or a whole table (schema.table).
  const denied = new Set(who.restricted);
  const touches = (r: T): boolean =>
    (r.columns ?? []).some((c) => denied.has(c) || denied.has(c.split('.').slice(0, 2).join('.'))) || (r.tables ?? []).some((t) => denied.has(t)) || (!r.columns && !r.tables);
  return rows.map((r) => {
    if (!touches(r)) return r;
    const out = { ...r, statement: r.statement === null ? null : scrubLiterals(r.statement) };
    if ('params' in r && r.params !== null && r.params !== undefined) (out as { params: unknown }).params = Array.isArray(r.params) ? r.params.map(() => '[withheld]') : '[withheld]';
    if ('error' in r && r.error) (out as { error: string | null }).error = scrubLiterals(r.error);
    return out;
  });
}

/** String, dollar-quoted and numeric literals replaced, so no value of a column survives. */
function scrubLiterals(sql: string): string {
  return sql
    .replace(/\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$/g, "'…'")
    .replace(/[EeBbXxNnUu]?&?'(?:[^']|'')*'/g, "'…'")
    .replace(/(?<![A-Za-z0-9_$])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g, '…');
}
