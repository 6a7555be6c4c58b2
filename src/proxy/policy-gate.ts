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

/**
 * A temporary view (or a rule, which turns a table into a view) lives in the session's pg_temp,
 * which the shared catalog does not see, and shadows a table of the same name: the proxy would plan
 * `SELECT status FROM orders` against public.orders while PostgreSQL reads the view. Refused to
 * roles with masked or denied columns. Temporary tables stay allowed: what they hold came through
 * the proxy, masked columns excluded.
 */
function shadowRefusal(info: StatementInfo, role: EffectiveRole): PolicyDecision | undefined {
  if (!role.masked.size && !role.denied.size) return undefined;
  const analysis = info.analysis;
  if (!analysis?.ok) return undefined;
  const tempView = analysis.statements.some((st) => st.sessionState.some((s) => s.kind === 'temporary object' && / view /.test(s.reason)));
  const rule = analysis.kinds.includes('CREATE RULE');
  if (!tempView && !rule) return undefined;
  const what = tempView ? 'temporary views' : 'rules';
  return {
    kind: 'refuse',
    refusal: { sqlstate: '42501', message: `${what} are not allowed to roles with masked columns (${role.names.join(', ') || 'default'}): the proxy could not see what they read`, rule: 'policy.temporary_view' },
  };
}
