// Mask functions: what a caller receives instead of a PII value. Every mask returns valid text
// (or NULL for `null`); NULL input stays NULL. `hash` is keyed, so equal inputs give equal outputs
// without the hash being reversible by a dictionary of likely values.
import { createHmac } from 'node:crypto';

export type MaskSpec =
  | { mask: 'email' }
  | { mask: 'partial'; keepLast: number }
  | { mask: 'redact' }
  | { mask: 'null' }
  | { mask: 'year' }
  | { mask: 'hash' };

export type MaskName = MaskSpec['mask'];
export const MASK_NAMES: readonly MaskName[] = ['email', 'partial', 'redact', 'null', 'year', 'hash'];

export const REDACTED = '[redacted]';

export function describeMask(m: MaskSpec): string {
  return m.mask === 'partial' ? `partial(keep_last=${m.keepLast})` : m.mask;
}

/** A mask function over the text form of a value; returns null for SQL NULL. */
export type MaskFn = (value: string) => string | null;

const redactFn: MaskFn = () => REDACTED;
const nullFn: MaskFn = () => null;

/** Masks whose output does not depend on the value: the proxy need not even decode it. */
export function isConstantMask(fn: MaskFn): boolean {
  return fn === redactFn || fn === nullFn;
}

export function maskFunction(spec: MaskSpec, hashKey: string): MaskFn {
  switch (spec.mask) {
    case 'email':
      return maskEmail;
    case 'partial': {
      const n = spec.keepLast;
      // A fixed number of stars: the mask does not reveal the value's length.
      return (v) => '****' + (n > 0 && v.length > n ? v.slice(-n) : '');
    }
    case 'redact':
      return redactFn;
    case 'null':
      return nullFn;
    case 'year':
      return (v) => (/^\d{4}-/.test(v) ? v.slice(0, 4) : REDACTED);
    case 'hash':
      return (v) => 'h:' + createHmac('sha256', hashKey).update(v).digest('hex').slice(0, 16);
  }
}

/** `jane.doe@example.com` -> `j***@***.com`. */
export function maskEmail(v: string): string {
  const at = v.lastIndexOf('@');
  if (at <= 0) return REDACTED;
  const dot = v.lastIndexOf('.');
  const tld = dot > at && v.length - dot <= 6 ? v.slice(dot) : '';
  return `${v[0]}***@***${tld}`;
}
