// The access policy from the config (`pii`, `roles`, `default_role`, `enforce`, `named_queries`):
// which columns are PII and how they are masked, and what each role — chosen by the person's OIDC
// groups — may see, write and run. A person in several roles gets the union of their `unmask` and
// `write`; `deny` wins over `unmask`.
import { ConfigError } from '../errors.ts';
import type { Principal } from '../audit/record.ts';
import { MASK_NAMES, type MaskName, type MaskSpec } from './masks.ts';

export interface RoleDef {
  name: string;
  groups: string[];
  /** Columns this role sees unmasked; '*' for all. */
  unmask: string[];
  /** Columns or tables this role may not read at all (refused, not masked). */
  deny: string[];
  write: boolean;
  /** Statement kinds allowed; undefined = the default for read-only or writing roles. */
  statements?: string[];
  namedOnly: boolean;
  requireReason: boolean;
  audit: boolean;
  admin: boolean;
}

export interface NamedQueryParam {
  name: string;
  type: 'int' | 'bigint' | 'numeric' | 'text' | 'bool' | 'date' | 'timestamp' | 'uuid';
}

export interface NamedQuery {
  name: string;
  description: string;
  sql: string;
  params: NamedQueryParam[];
  roles: string[];
}

export interface Policy {
  pii: Map<string, MaskSpec>;
  roles: Map<string, RoleDef>;
  defaultRole?: string;
  enforce: boolean;
  maskKey: string;
  /**
   * `hash_equality: true`: hash-masked columns may be compared with each other for equality
   * (joins, GROUP BY, DISTINCT). Off by default: PostgreSQL may run such a comparison as a sort on
   * (or an index scan of) the clear values, so the rows' order can follow them (README, Known
   * limitations).
   */
  hashEquality: boolean;
  namedQueries: Map<string, NamedQuery>;
}

/** What one caller may do: the merge of every role their groups select. */
export interface EffectiveRole {
  names: string[];
  /** column -> mask, for PII columns this caller does not see in clear. */
  masked: Map<string, MaskSpec>;
  /** column or table -> the rule that denies it. */
  denied: Map<string, string>;
  write: boolean;
  statements: Set<string> | undefined;
  namedOnly: boolean;
  requireReason: boolean;
  audit: boolean;
  admin: boolean;
  /** The policy's `hash_equality` (see Policy). */
  hashEquality: boolean;
}

export const READ_ONLY_STATEMENTS = ['SELECT', 'TABLE', 'VALUES', 'EXPLAIN', 'SHOW', 'DECLARE CURSOR', 'FETCH', 'MOVE', 'CLOSE CURSOR', 'BEGIN', 'START', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE', 'ROLLBACK TO', 'PREPARE TRANSACTION', 'COMMIT PREPARED', 'ROLLBACK PREPARED'];

const PARAM_TYPES = ['int', 'bigint', 'numeric', 'text', 'bool', 'date', 'timestamp', 'uuid'] as const;

export function columnKey(name: string, where: string): string {
  const parts = name.toLowerCase().split('.');
  if (parts.length === 2) return `public.${parts[0]}.${parts[1]}`;
  if (parts.length === 3 && parts.every(Boolean)) return parts.join('.');
  throw new ConfigError(`${where}: "${name}" must be schema.table.column`);
}

function relationOrColumn(name: string, where: string): string {
  const parts = name.toLowerCase().split('.');
  if (parts.length === 1) return `public.${parts[0]}`;
  if (parts.length === 2 || parts.length === 3) return parts.join('.');
  throw new ConfigError(`${where}: "${name}" must be schema.table or schema.table.column`);
}

export function parsePolicy(raw: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): Policy {
  const pii = new Map<string, MaskSpec>();
  const piiRaw = raw.pii ?? {};
  if (typeof piiRaw !== 'object' || piiRaw === null || Array.isArray(piiRaw)) throw new ConfigError('pii must be a mapping of schema.table.column to a mask');
  for (const [col, v] of Object.entries(piiRaw)) pii.set(columnKey(col, 'pii'), maskSpec(v, `pii.${col}`));

  const roles = new Map<string, RoleDef>();
  const rolesRaw = raw.roles ?? {};
  if (typeof rolesRaw !== 'object' || rolesRaw === null || Array.isArray(rolesRaw)) throw new ConfigError('roles must be a mapping of role name to its settings');
  for (const [name, v] of Object.entries(rolesRaw)) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(`roles.${name} must be a mapping`);
    const r = v as Record<string, unknown>;
    const unmask = strList(r.unmask, `roles.${name}.unmask`).map((c) => (c === '*' ? '*' : columnKey(c, `roles.${name}.unmask`)));
    roles.set(name, {
      name,
      groups: strList(r.groups, `roles.${name}.groups`),
      unmask,
      deny: strList(r.deny, `roles.${name}.deny`).map((c) => relationOrColumn(c, `roles.${name}.deny`)),
      write: r.write === true,
      ...(r.statements !== undefined ? { statements: strList(r.statements, `roles.${name}.statements`).map((s) => s.toUpperCase()) } : {}),
      namedOnly: r.named_only === true,
      requireReason: r.require_reason === true,
      audit: r.audit === true,
      admin: r.admin === true,
    });
  }
  let defaultRole: string | undefined;
  if (raw.default_role !== undefined) {
    if (typeof raw.default_role !== 'string' || !roles.has(raw.default_role)) throw new ConfigError(`default_role must name one of the roles (${[...roles.keys()].join(', ') || 'none defined'})`);
    defaultRole = raw.default_role;
  }
  const needsKey = [...pii.values()].some((m) => m.mask === 'hash');
  const maskKey = env.SCALPLE_MASK_KEY ?? (typeof raw.mask_key === 'string' ? raw.mask_key : '');
  if (needsKey && maskKey.length < 16) throw new ConfigError('a `hash` mask needs mask_key (or SCALPLE_MASK_KEY) of at least 16 characters');
  if (raw.hash_equality !== undefined && typeof raw.hash_equality !== 'boolean') throw new ConfigError('hash_equality must be true or false');
  const hashEquality = raw.hash_equality === true;

  const namedQueries = new Map<string, NamedQuery>();
  const nqRaw = raw.named_queries ?? {};
  if (typeof nqRaw !== 'object' || nqRaw === null || Array.isArray(nqRaw)) throw new ConfigError('named_queries must be a mapping');
  for (const [name, v] of Object.entries(nqRaw)) {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new ConfigError(`named_queries.${name}: names are lower_snake_case`);
    const q = v as Record<string, unknown>;
    if (typeof q.sql !== 'string' || !q.sql.trim()) throw new ConfigError(`named_queries.${name}.sql is required`);
    const params = (Array.isArray(q.params) ? q.params : []).map((p, i) => {
      const pp = p as Record<string, unknown>;
      if (typeof pp.name !== 'string' || !/^[a-z_][a-z0-9_]*$/.test(pp.name)) throw new ConfigError(`named_queries.${name}.params[${i}].name must be lower_snake_case`);
      const type = (pp.type ?? 'text') as NamedQueryParam['type'];
      if (!PARAM_TYPES.includes(type)) throw new ConfigError(`named_queries.${name}.params[${i}].type must be one of ${PARAM_TYPES.join(', ')}`);
      return { name: pp.name, type };
    });
    const qRoles = strList(q.roles, `named_queries.${name}.roles`);
    for (const r of qRoles) if (!roles.has(r)) throw new ConfigError(`named_queries.${name}.roles: unknown role ${r}`);
    namedQueries.set(name, { name, description: typeof q.description === 'string' ? q.description : '', sql: q.sql, params, roles: qRoles });
  }
  return { pii, roles, ...(defaultRole ? { defaultRole } : {}), enforce: raw.enforce !== false, maskKey, hashEquality, namedQueries };
}

function maskSpec(v: unknown, where: string): MaskSpec {
  const name = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as Record<string, unknown>).mask : undefined;
  if (typeof name !== 'string' || !MASK_NAMES.includes(name as MaskName)) throw new ConfigError(`${where}: mask must be one of ${MASK_NAMES.join(', ')}`);
  if (name === 'partial') {
    const keep = typeof v === 'object' && v !== null ? (v as Record<string, unknown>).keep_last : undefined;
    const n = keep === undefined ? 4 : keep;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 8) throw new ConfigError(`${where}.keep_last must be an integer from 0 to 8`);
    return { mask: 'partial', keepLast: n };
  }
  return { mask: name as Exclude<MaskName, 'partial'> };
}

function strList(v: unknown, where: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new ConfigError(`${where} must be a list of strings`);
  return v as string[];
}

/** The merged role of a caller, or a refusal message when no role applies and there is no default. */
export function effectiveRole(policy: Policy, principal: Principal, grantedRoles: readonly string[] = []): EffectiveRole | { refused: string } {
  const groups = new Set(principal.groups);
  // Roles from groups, plus roles granted for a while (break glass) that exist in this policy.
  let chosen = [...policy.roles.values()].filter((r) => r.groups.some((g) => groups.has(g)) || grantedRoles.includes(r.name));
  if (!chosen.length && policy.defaultRole) chosen = [policy.roles.get(policy.defaultRole)!];
  if (!chosen.length) {
    if (policy.roles.size === 0) return unrestricted();
    return { refused: `none of your groups (${principal.groups.join(', ') || 'none'}) has a role here, and there is no default_role: ask for access` };
  }
  const unmaskAll = chosen.some((r) => r.unmask.includes('*'));
  const unmasked = new Set(chosen.flatMap((r) => r.unmask));
  const denied = new Map<string, string>();
  for (const r of chosen) for (const d of r.deny) denied.set(d, `roles.${r.name}.deny: ${d}`);
  const masked = new Map<string, MaskSpec>();
  for (const [col, spec] of policy.pii) {
    if (denied.has(col) || denied.has(col.split('.').slice(0, 2).join('.'))) continue;
    if (!unmaskAll && !unmasked.has(col)) masked.set(col, spec);
  }
  const explicit = chosen.filter((r) => r.statements);
  return {
    names: chosen.map((r) => r.name),
    masked,
    denied,
    write: chosen.some((r) => r.write),
    statements: explicit.length ? new Set(explicit.flatMap((r) => r.statements!)) : undefined,
    // Restricted only when every role that applies is restricted.
    namedOnly: chosen.every((r) => r.namedOnly),
    requireReason: chosen.some((r) => r.requireReason),
    audit: chosen.some((r) => r.audit),
    admin: chosen.some((r) => r.admin),
    hashEquality: policy.hashEquality,
  };
}

/** No policy configured: everything in clear, writes allowed (the proxy then only attributes). */
function unrestricted(): EffectiveRole {
  return { names: [], masked: new Map(), denied: new Map(), write: true, statements: undefined, namedOnly: false, requireReason: false, audit: false, admin: false, hashEquality: false };
}
