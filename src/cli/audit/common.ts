// Shared by the `scalple audit …` commands: config loading, option parsing and output helpers.
// Data goes to stdout; status and errors to stderr (main.ts prints ScalpleErrors as one line).
import { InvalidArgumentError } from 'commander';
import { ScalpleError } from '../../errors.ts';
import { configPathFrom, loadConfig, type ScalpleConfig } from '../../policy/config.ts';

export function loadAuditConfig(configFlag: string | undefined): ScalpleConfig {
  return loadConfig(configPathFrom(configFlag));
}

/** --admin-url, or SCALPLE_AUDIT_ADMIN_URL so the owner's password stays out of shell history. */
export function adminUrlFrom(flag: string | undefined): string {
  const url = flag ?? process.env.SCALPLE_AUDIT_ADMIN_URL;
  if (!url) throw new ScalpleError('USAGE', 'pass --admin-url URL (or set SCALPLE_AUDIT_ADMIN_URL): the role that owns the audit schema.');
  try {
    new URL(url);
  } catch {
    throw new ScalpleError('USAGE', '--admin-url is not a valid URL (postgres://owner:password@host:port/db).');
  }
  return url;
}

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer.');
  return n;
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

export function status(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : text + '\n');
}

/** RFC 4180: a field is quoted when it holds a comma, quote or line break; objects as JSON. */
export function csvField(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v);
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

export function csv(columns: string[], rows: Record<string, unknown>[]): string {
  const lines = [columns.join(',')];
  for (const r of rows) lines.push(columns.map((c) => csvField(r[c])).join(','));
  return lines.join('\r\n') + '\r\n';
}

/** One line, at most n characters. */
export function oneLine(s: string | null | undefined, n: number): string {
  const t = (s ?? '').replace(/\s+/g, ' ').trim();
  return t.length > n ? t.slice(0, n - 1) + '…' : t;
}
