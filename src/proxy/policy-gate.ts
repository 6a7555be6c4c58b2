// The policy in force (reloaded on SIGHUP) and the per-role decisions it gives, cached per
// statement text, role and catalog generation so the hot path is a Map lookup.
import type { ScalpleConfig } from '../policy/config.ts';
import { effectiveRole, parsePolicy, type EffectiveRole, type Policy } from '../policy/policy.ts';
import type { Principal } from '../audit/record.ts';
import { decide, type PolicyDecision } from './mask-plan.ts';
import type { StatementInfo } from './statement-info.ts';
import { parseSubjects, type SubjectDef } from '../policy/subjects.ts';
import { planSubjects, type SubjectPlan } from './subject-plan.ts';

export class PolicyGate {
  private policy: Policy;
  private generation = 0;
  private readonly cache = new Map<string, { info: StatementInfo; decision: PolicyDecision }>();
  private subjects: SubjectDef[];
  private readonly subjectPlans = new WeakMap<StatementInfo, SubjectPlan | null>();

  constructor(config: ScalpleConfig) {
    this.policy = parsePolicy(config.policy);
    this.subjects = parseSubjects(config.policy.subjects);
  }

  /** How to learn the data subjects of this statement (cached with the statement's analysis). */
  subjectPlan(info: StatementInfo): SubjectPlan | undefined {
    if (!info.analysis || !this.subjects.length) return undefined;
    let p = this.subjectPlans.get(info);
    if (p === undefined) {
      p = planSubjects(info.analysis, info.access ?? null, this.subjects) ?? null;
      this.subjectPlans.set(info, p);
    }
    return p ?? undefined;
  }

  /** Replaces the policy (SIGHUP); a bad policy throws and the old one stays. */
  reload(config: ScalpleConfig): void {
    this.policy = parsePolicy(config.policy);
    this.subjects = parseSubjects(config.policy.subjects);
    this.generation++;
    this.cache.clear();
  }

  get enforce(): boolean {
    return this.policy.enforce;
  }

  get maskKey(): string {
    return this.policy.maskKey;
  }

  get current(): Policy {
    return this.policy;
  }

  roleFor(principal: Principal, grantedRoles: readonly string[] = []): EffectiveRole | { refused: string } {
    return effectiveRole(this.policy, principal, grantedRoles);
  }

  /** Role identity for caching: the merged role depends only on the role names and the policy. */
  roleKey(role: EffectiveRole): string {
    return `${this.generation}:${role.names.join('+')}`;
  }

  decide(info: StatementInfo, role: EffectiveRole, roleKey: string): PolicyDecision {
    if (!info.analysis) return { kind: 'allow' };
    const key = `${roleKey}\u0000${info.analysis.sql}`;
    const hit = this.cache.get(key);
    if (hit && hit.info === info) return hit.decision;
    const decision = shadowRefusal(info, role) ?? decide(info.analysis, info.access ?? null, role, this.policy.maskKey, info.userFunctions);
    if (this.cache.size >= 10_000) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(key, { info, decision });
    return decision;
  }
}

/** DDL that defines code PostgreSQL may later run without the statement naming it (casts, triggers, operators…). */
const CODE_DEFINITIONS = new Set([
  'CREATE FUNCTION', 'CREATE PROCEDURE', 'CREATE CAST', 'CREATE TRIGGER', 'CREATE CONSTRAINT TRIGGER', 'CREATE AGGREGATE',
  'CREATE OPERATOR', 'CREATE OPERATOR CLASS', 'CREATE OPERATOR FAMILY', 'CREATE TYPE', 'CREATE DOMAIN', 'CREATE RULE',
  'CREATE EVENT TRIGGER', 'CREATE LANGUAGE', 'CREATE TRANSFORM', 'CREATE CONVERSION', 'CREATE COLLATION', 'CREATE ACCESS METHOD',
  'CREATE TEXT SEARCH PARSER', 'CREATE TEXT SEARCH TEMPLATE', 'CREATE TEXT SEARCH DICTIONARY', 'CREATE TEXT SEARCH CONFIGURATION',
  'ALTER FUNCTION', 'ALTER PROCEDURE', 'ALTER OPERATOR', 'ALTER TYPE', 'ALTER DOMAIN', 'ALTER AGGREGATE', 'ALTER TRIGGER', 'ALTER RULE',
  'ALTER EVENT TRIGGER', 'ALTER LANGUAGE', 'ALTER CONVERSION', 'ALTER COLLATION', 'ALTER OPERATOR CLASS', 'ALTER OPERATOR FAMILY',
]);

/**
 * What a role with masked (or denied) columns may not do, because it would take PostgreSQL out of
 * the proxy's sight:
 * - temporary objects (tables, views, sequences) and rules live in the session's pg_temp, which the
 *   shared catalog does not see, and shadow tables of the same name: `CREATE TEMP TABLE customers
 *   AS …` would have the proxy apply public.customers' masks to values the caller chose (a
 *   dictionary for the `hash` mask);
 * - code definitions (functions, casts, triggers, operators, types…) run later without being named;
 * - SQL-level PREPARE over a table with masked columns: its EXECUTE names no table.
 */
function shadowRefusal(info: StatementInfo, role: EffectiveRole): PolicyDecision | undefined {
  if (!role.masked.size && !role.denied.size) return undefined;
  const analysis = info.analysis;
  if (!analysis?.ok) return undefined;
  const roleName = role.names.join(', ') || 'default';
  const refuse = (what: string, rule: string): PolicyDecision => ({
    kind: 'refuse',
    refusal: { sqlstate: '42501', message: `${what} are not allowed to roles with masked columns (${roleName}): the proxy could not see what they read`, rule },
  });
  if (analysis.statements.some((st) => st.sessionState.some((s) => s.kind === 'temporary object') || st.relations.some((r) => r.temp))) return refuse('temporary objects', 'policy.temporary_object');
  const code = analysis.kinds.find((k) => CODE_DEFINITIONS.has(k));
  if (code) return refuse(`definitions of code (${code})`, 'policy.code_definition');
  if (analysis.statements.some((st) => st.command?.type === 'prepare') && touchesMaskedTable(info, role)) return refuse('SQL PREPARE statements over tables with masked columns', 'policy.prepare');
  return undefined;
}

/** Does the statement read or write a table that has a column masked or denied for this role? */
function touchesMaskedTable(info: StatementInfo, role: EffectiveRole): boolean {
  const tables = new Set([...role.masked.keys(), ...role.denied.keys()].map((c) => c.split('.').slice(0, 2).join('.')));
  return info.tables.some((t) => tables.has(t)) || info.columns.some((c) => tables.has(c.split('.').slice(0, 2).join('.')));
}
