// The leading SQL comment that carries the audit log id and the person into PostgreSQL, so
// pg_stat_activity and pgAudit lines show who. Block comments nest in PostgreSQL, so no value may
// open or close one: everything outside a small safe set is percent-encoded.
import type { Principal } from '../audit/record.ts';

const SAFE = /[^A-Za-z0-9@._+-]/g;

export function encodeTagValue(v: string): string {
  return v.replace(SAFE, (ch) => [...Buffer.from(ch, 'utf8')].map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join(''));
}

export function principalLabel(p: Principal): string {
  return encodeTagValue(p.email ?? p.sub);
}

/** `/* scalple log_id=… user=… [for=…] *\/ ` — `userLabel`/`forLabel` already encoded. */
export function tagFor(logId: string, userLabel: string, forLabel?: string): string {
  return `/* scalple log_id=${logId} user=${userLabel}${forLabel ? ` for=${forLabel}` : ''} */ `;
}
