// The subject access report (`scalple audit report customer 42`): what a data protection officer
// sends in answer to an Article 15 request. A summary (period, counts, the people who accessed the
// data) then every access, oldest first. Rendered as one self-contained HTML file (inline CSS, no
// scripts, no external resources; reads well on screen and prints well), as JSON, or as CSV.
import type { Json } from './chain.ts';
import type { SubjectAccess } from './who-accessed.ts';

export const REPORT_FORMAT = 'scalple-subject-access-report/1';

/** One person (or application) who accessed the subject's data. */
export interface ReportPerson {
  sub: string | null;
  email: string | null;
  name: string | null;
  principal_kind: string | null;
  groups: string[];
  accesses: number;
  definite: number;
  possible: number;
  first: string;
  last: string;
  /** People an application acted for in these accesses (email, else sub). */
  acting_for: string[];
}

/**
 * `scalple audit report --format json`: one object. Stable field names; new fields may be added.
 *
 * - `format`        'scalple-subject-access-report/1'
 * - `subject`, `key`, `subject_key`  what the report is about ('customer', '42', 'customer:42')
 * - `generated_at`  ISO time the report was made
 * - `generated_by`  who made it: { via: 'config', os_user, sudo_user, hostname } for
 *                   `--config` on the proxy host; { via: 'proxy', sub, email, name, groups } for a
 *                   person who asked through the proxy with their own login
 * - `period`        { since, until }: the requested range (since null: from the oldest record kept)
 * - `log_starts`    time of the oldest record the audit store still holds (older ones were dropped
 *                   by retention), or null when it holds none
 * - `summary`       { accesses, definite, possible, people, first_access, last_access }
 * - `people`        ReportPerson[], most accesses first: { sub, email, name, principal_kind,
 *                   groups, accesses, definite, possible, first, last, acting_for }
 * - `accesses`      SubjectAccess[] (the who-accessed objects), oldest first
 */
export interface SubjectAccessReport {
  format: typeof REPORT_FORMAT;
  subject: string;
  key: string;
  subject_key: string;
  generated_at: string;
  generated_by: Record<string, Json>;
  period: { since: string | null; until: string };
  log_starts: string | null;
  summary: { accesses: number; definite: number; possible: number; people: number; first_access: string | null; last_access: string | null };
  people: ReportPerson[];
  accesses: SubjectAccess[];
}

export interface BuildReportInput {
  subject: string;
  key: string;
  /** Accesses in any order (who-accessed gives newest first). */
  accesses: SubjectAccess[];
  since?: Date;
  until: Date;
  logStarts: string | null;
  generatedAt: Date;
  generatedBy: Record<string, Json>;
}

export function buildReport(i: BuildReportInput): SubjectAccessReport {
  const accesses = [...i.accesses].sort((a, b) => a.ts.localeCompare(b.ts) || a.completion_seq - b.completion_seq);
  const people = new Map<string, ReportPerson>();
  for (const a of accesses) {
    const id = a.sub ?? a.email ?? '(unknown)';
    let p = people.get(id);
    if (!p) {
      p = { sub: a.sub, email: a.email, name: a.name, principal_kind: a.principal_kind, groups: a.groups, accesses: 0, definite: 0, possible: 0, first: a.ts, last: a.ts, acting_for: [] };
      people.set(id, p);
    }
    p.accesses++;
    if (a.access === 'definite') p.definite++;
    else p.possible++;
    if (a.ts < p.first) p.first = a.ts;
    if (a.ts > p.last) p.last = a.ts;
    // The newest record's groups (they may change over time).
    if (a.ts >= p.last) p.groups = a.groups;
    const af = actingForLabel(a.acting_for);
    if (af && !p.acting_for.includes(af)) p.acting_for.push(af);
  }
  const definite = accesses.filter((a) => a.access === 'definite').length;
  return {
    format: REPORT_FORMAT,
    subject: i.subject,
    key: i.key,
    subject_key: `${i.subject}:${i.key}`,
    generated_at: i.generatedAt.toISOString(),
    generated_by: i.generatedBy,
    period: { since: i.since ? i.since.toISOString() : null, until: i.until.toISOString() },
    log_starts: i.logStarts,
    summary: {
      accesses: accesses.length,
      definite,
      possible: accesses.length - definite,
      people: people.size,
      first_access: accesses[0]?.ts ?? null,
      last_access: accesses[accesses.length - 1]?.ts ?? null,
    },
    people: [...people.values()].sort((a, b) => b.accesses - a.accesses || (a.email ?? a.sub ?? '').localeCompare(b.email ?? b.sub ?? '')),
    accesses,
  };
}

/** "email" (else sub) of the person an application acted for. */
export function actingForLabel(v: Json): string | null {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const email = typeof v.email === 'string' ? v.email : null;
  const sub = typeof v.sub === 'string' ? v.sub : null;
  return email ?? sub;
}

/** The person who ran a statement, for people: email, else sub (and "for X" when acting for someone). */
export function personLabel(a: Pick<SubjectAccess, 'email' | 'sub' | 'acting_for'>): string {
  const who = a.email ?? a.sub ?? '(unknown)';
  const af = actingForLabel(a.acting_for);
  return af ? `${who} for ${af}` : who;
}

/** Masked columns as "schema.table.column (mask)". */
export function maskedList(v: Json): string[] {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return [];
  return Object.entries(v).map(([c, m]) => `${c} (${typeof m === 'string' ? m : JSON.stringify(m)})`);
}

/** "2025-03-01 09:00" (UTC, minutes) for tables. */
function shortTime(iso: string): string {
  return iso.slice(0, 16).replace('T', ' ');
}

/** A break-glass grant in force: "dba until 2025-03-01 11:00:00 UTC, given by x: reason". */
export function grantLabel(g: Json): string {
  if (!g || typeof g !== 'object' || Array.isArray(g)) return String(g);
  const str = (v: Json | undefined) => (typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v));
  return `${str(g.role)}${g.until ? ` until ${humanTime(str(g.until))}` : ''}${g.by ? `, given by ${str(g.by)}` : ''}${g.reason ? `: ${str(g.reason)}` : ''}`;
}

/** "2025-03-01 09:00:00 UTC" */
export function humanTime(iso: string | null): string {
  if (!iso) return '—';
  return iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC');
}

// ---------------------------------------------------------------------------------------------
// HTML

function esc(s: string | null | undefined): string {
  return (s ?? '').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

const CSS = `
:root { color-scheme: light; }
* { box-sizing: border-box; }
html { background: #fff; }
body { margin: 0 auto; max-width: 1100px; padding: 32px 40px 48px; color: #1a1a1a; background: #fff;
  font: 15px/1.5 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 26px; margin: 0 0 4px; font-weight: 700; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #1a1a1a; }
p.lead { margin: 0 0 20px; color: #444; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid #d0d0d0; }
th { font-size: 13px; text-transform: uppercase; letter-spacing: .03em; color: #444; border-bottom: 2px solid #888; }
table.meta th { width: 220px; text-transform: none; letter-spacing: 0; font-size: 14px; border-bottom: 1px solid #d0d0d0; color: #333; }
.figures { display: flex; gap: 16px; margin: 8px 0 8px; flex-wrap: wrap; }
.figure { flex: 1 1 160px; border: 1px solid #bbb; border-radius: 6px; padding: 10px 14px; }
.figure .n { font-size: 28px; font-weight: 700; line-height: 1.2; }
.figure .l { font-size: 13px; color: #444; }
.figure.possible { border-style: dashed; }
td.num, th.num { text-align: right; }
td.time { white-space: nowrap; }
.access { border: 1px solid #bbb; border-left: 6px solid #1f5fa8; border-radius: 4px; padding: 10px 14px; margin: 0 0 12px;
  break-inside: avoid; page-break-inside: avoid; }
.access.possible { border-left: 6px dashed #b26b00; }
.access .head { display: flex; justify-content: space-between; gap: 12px; flex-wrap: wrap; margin-bottom: 6px; }
.access .when { font-weight: 700; }
.access .no { color: #666; font-weight: 400; margin-right: 6px; }
.badge { display: inline-block; font-size: 12px; font-weight: 700; letter-spacing: .04em; text-transform: uppercase;
  padding: 1px 8px; border-radius: 10px; border: 1.5px solid #1f5fa8; color: #1f5fa8; }
.badge.possible { border: 1.5px dashed #b26b00; color: #8a5300; }
dl { display: grid; grid-template-columns: 170px 1fr; gap: 3px 12px; margin: 0; }
dt { color: #555; font-size: 14px; }
dd { margin: 0; overflow-wrap: anywhere; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
pre.sql { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; background: #f4f4f4; border: 1px solid #e0e0e0; padding: 6px 8px; border-radius: 3px; }
.muted { color: #666; }
.note { border: 1px solid #d8c9a8; background: #fffaf0; padding: 8px 12px; border-radius: 4px; margin: 12px 0; }
.empty { padding: 16px; border: 1px dashed #999; text-align: center; color: #444; }
footer { margin-top: 36px; padding-top: 8px; border-top: 1px solid #ccc; font-size: 12px; color: #555; }
@page { size: A4; margin: 16mm 14mm 18mm;
  @bottom-right { content: "Page " counter(page) " of " counter(pages); font-size: 8pt; color: #555; } }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; line-height: 1.4; }
  h1 { font-size: 20pt; }
  h2 { font-size: 14pt; margin-top: 20px; }
  .access { padding: 6px 10px; margin-bottom: 8px; }
  dl { gap: 1px 10px; }
  pre.sql { padding: 3px 6px; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h2.accesses { break-before: page; page-break-before: always; }
  thead { display: table-header-group; }
  tr, .figure { break-inside: avoid; page-break-inside: avoid; }
  .access { border-color: #888; }
  pre.sql { background: #fff; border-color: #bbb; }
  a { color: inherit; text-decoration: none; }
}
`;

/** A CSS string literal that cannot end the <style> element. */
function cssString(s: string): string {
  return '"' + s.replace(/[\\"]/g, '\\$&').replace(/[<>\n\r]/g, (c) => `\\${c.charCodeAt(0).toString(16)} `) + '"';
}

function accessHtml(a: SubjectAccess, n: number): string {
  const possible = a.access === 'possible';
  const masked = maskedList(a.masked_fields);
  const af = actingForLabel(a.acting_for);
  const rows: [string, string][] = [
    ['Person', `${esc(a.name ? `${a.name} <${a.email ?? a.sub ?? ''}>` : a.email ?? a.sub ?? '(unknown)')}${a.principal_kind === 'application' ? ' <span class="muted">(application)</span>' : ''}`],
    ...(af ? [['Acting for', esc(af)] as [string, string]] : []),
    ['Groups', a.groups.length ? esc(a.groups.join(', ')) : '<span class="muted">none</span>'],
    ['Reason given', a.reason ? esc(a.reason) : '<span class="muted">none given</span>'],
    ...(a.grants.length ? [['Temporary role', esc(a.grants.map(grantLabel).join('; '))] as [string, string]] : []),
    ...(possible ? [['Why only possible', esc(a.possible_reason ?? 'keys unknown')] as [string, string]] : []),
    ...(a.named_query ? [['Named query', `<code>${esc(a.named_query)}</code>`] as [string, string]] : []),
    ['Statement', `<pre class="sql">${esc(a.statement ?? '(statement record missing)')}</pre>`],
    ['Columns', a.columns.length ? esc(a.columns.join(', ')) : '<span class="muted">—</span>'],
    ['Masked columns', masked.length ? esc(masked.join(', ')) : '<span class="muted">none</span>'],
    ['Result', a.sqlstate ? `failed (SQLSTATE ${esc(a.sqlstate)})${a.rows !== null ? `, ${plural(a.rows, 'row')} before the failure` : ''}` : a.rows === null ? '—' : `${plural(a.rows, 'row')} (${esc(a.kinds.join(', ') || 'statement')})`],
    ['Audit record', `<span class="muted">log id <code>${esc(a.log_id)}</code>, chain ${esc(a.chain_id)}, ${a.seq === null ? '' : `seq ${a.seq} (statement) and `}${a.completion_seq} (completion)</span>`],
  ];
  return `<section class="access${possible ? ' possible' : ''}">
  <div class="head"><div class="when"><span class="no">#${n}</span>${esc(humanTime(a.ts))}</div>
  <div><span class="badge${possible ? ' possible' : ''}">${possible ? 'Possible access' : 'Definite access'}</span></div></div>
  <dl>${rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('')}</dl>
</section>`;
}

export function renderReportHtml(r: SubjectAccessReport): string {
  const title = `Subject access report: ${r.subject} ${r.key}`;
  const s = r.summary;
  const by = r.generated_by;
  const byLabel = by.via === 'proxy'
    ? `${by.name ? `${String(by.name)} <${String(by.email ?? by.sub ?? '')}>` : String(by.email ?? by.sub ?? '(unknown)')} through the Scalple proxy`
    : [by.os_user ? String(by.os_user) : null, by.sudo_user ? `(sudo by ${String(by.sudo_user)})` : null, by.hostname ? `on ${String(by.hostname)}` : null]
      .filter(Boolean).join(' ');
  const periodFrom = r.period.since ? humanTime(r.period.since) : `the oldest record kept (${humanTime(r.log_starts)})`;
  const retentionNote = r.log_starts && (!r.period.since || r.log_starts > r.period.since)
    ? `<p class="note">The oldest record in the audit log is from ${esc(humanTime(r.log_starts))}. Accesses before then are not in the log (they happened before Scalple recorded this database, or their records were removed under the retention policy), so this report cannot cover them.</p>`
    : '';
  const people = r.people.length
    ? `<table><thead><tr><th>Person</th><th>Groups</th><th class="num">Accesses</th><th class="num">Definite</th><th class="num">Possible</th><th>First (UTC)</th><th>Last (UTC)</th></tr></thead><tbody>
${r.people.map((p) => `<tr><td>${esc(p.name ? `${p.name} <${p.email ?? p.sub ?? ''}>` : p.email ?? p.sub ?? '(unknown)')}${p.principal_kind === 'application' ? ' <span class="muted">(application)</span>' : ''}${p.acting_for.length ? `<br><span class="muted">acting for ${esc(p.acting_for.join(', '))}</span>` : ''}</td><td>${esc(p.groups.join(', '))}</td><td class="num">${p.accesses}</td><td class="num">${p.definite}</td><td class="num">${p.possible}</td><td class="time">${esc(shortTime(p.first))}</td><td class="time">${esc(shortTime(p.last))}</td></tr>`).join('\n')}
</tbody></table>`
    : '<p class="empty">Nobody accessed this data subject in the period.</p>';
  const accesses = r.accesses.length ? r.accesses.map((a, i) => accessHtml(a, i + 1)).join('\n') : '<p class="empty">No accesses recorded in the period.</p>';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="Scalple">
<title>${esc(title)}</title>
<style>${CSS}
@page { @bottom-left { content: ${cssString(`${title} · generated ${humanTime(r.generated_at)}`)}; font-size: 8pt; color: #555; } }
</style>
</head>
<body>
<header>
<h1>${esc(title)}</h1>
<p class="lead">Every recorded access to the data of ${esc(r.subject)} <strong>${esc(r.key)}</strong>, from the Scalple audit log.</p>
</header>
<table class="meta"><tbody>
<tr><th>Data subject</th><td>${esc(r.subject)} ${esc(r.key)} <span class="muted">(<code>${esc(r.subject_key)}</code>)</span></td></tr>
<tr><th>Period</th><td>${esc(periodFrom)} to ${esc(humanTime(r.period.until))}</td></tr>
<tr><th>Generated</th><td>${esc(humanTime(r.generated_at))}${byLabel ? ` by ${esc(byLabel)}` : ''}</td></tr>
<tr><th>Source</th><td>Scalple tamper-evident audit log (statements recorded at the database proxy)</td></tr>
</tbody></table>
${retentionNote}
<h2>Summary</h2>
<div class="figures">
<div class="figure"><div class="n">${s.accesses}</div><div class="l">${s.accesses === 1 ? 'access' : 'accesses'} in total</div></div>
<div class="figure"><div class="n">${s.definite}</div><div class="l">definite</div></div>
<div class="figure possible"><div class="n">${s.possible}</div><div class="l">possible</div></div>
<div class="figure"><div class="n">${s.people}</div><div class="l">${s.people === 1 ? 'person or application' : 'people or applications'}</div></div>
</div>
<p class="muted">${s.first_access ? `First access ${esc(humanTime(s.first_access))}, last access ${esc(humanTime(s.last_access))}.` : 'No access in the period.'}</p>
<h2>Who accessed the data</h2>
${people}
<h2>What the terms mean</h2>
<dl>
<dt>Definite access</dt><dd>The statement returned or changed this data subject's record: its key was among the rows the database sent back or modified.</dd>
<dt>Possible access</dt><dd>The statement read the table holding this subject's data in a way that does not reveal which records it used (for example a count or an average over many customers). It may have included this subject's data; the statement shows which records it covered.</dd>
<dt>Masked columns</dt><dd>Columns whose values the person saw only in masked form (for example an e-mail address replaced by a pseudonym).</dd>
<dt>Statement</dt><dd>The database statement as recorded; values compared with masked columns are redacted.</dd>
</dl>
<h2 class="accesses">Accesses (${s.accesses}), oldest first</h2>
${accesses}
<footer>${esc(r.format)} · generated ${esc(humanTime(r.generated_at))} · ${esc(r.subject_key)}</footer>
</body>
</html>
`;
}
