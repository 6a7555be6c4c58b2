// The audit record: what the proxy hands to the audit store for every statement.
// Two chained records per statement: an intent (before forwarding) and a completion (after).

/** Who a session belongs to: a person from an OIDC token, or an application identity. */
export interface Principal {
  kind: 'person' | 'application';
  /** OIDC `sub` (persons), or `app:<name>` for applications. */
  sub: string;
  email?: string;
  name?: string;
  groups: string[];
  /** Application name from the config, when kind is 'application'. */
  application?: string;
}

export type Decision = 'allow' | 'deny' | 'mask' | 'error';

/** A time-boxed role (break glass) given to a person by another person. */
export interface GrantInForce {
  grantId: string;
  role: string;
  reason: string;
  by: string;
  until: Date;
}

export interface IntentRecord {
  type: 'intent';
  logId: string;
  ts: Date;
  sessionId: string;
  principal: Principal;
  /** The end user an application declared with `SET LOCAL scalple.on_behalf_of`. */
  actingFor?: Principal;
  dbRole: string;
  database: string;
  clientAddr: string;
  applicationName: string;
  /** Statement text as the client sent it (literals compared with masked columns redacted). */
  statement: string;
  params?: (string | null)[];
  /** Statement kinds, one per statement in the text: SELECT, INSERT, UPDATE, … */
  kinds: string[];
  /** schema.table read or written. */
  tables: string[];
  /** schema.table.column read or written. */
  columns: string[];
  decision: Decision;
  rule?: string;
  policyVersion: string;
  reason?: string;
  namedQuery?: string;
  maskedFields?: Record<string, string>;
  /** Grants in force for this session: shown in every record they covered. */
  grants?: GrantInForce[];
}

export interface CompletionRecord {
  type: 'completion';
  logId: string;
  ts: Date;
  sessionId: string;
  /** Rows returned or affected; null when the statement failed before any row. */
  rows: number | null;
  sqlstate?: string;
  error?: string;
  durationMs: number;
  /** Data subjects returned or changed, as `subject:key` ('customer:42'). */
  subjectKeys?: string[];
  /** Subjects touched whose keys cannot be known: subject -> why (the intent's statement is the predicate). */
  subjectsPossible?: Record<string, string>;
}

/** Events that are not statements: revocations, grants, audit reads, retention cuts. */
export interface EventRecord {
  type: 'event';
  logId: string;
  ts: Date;
  event: string;
  principal?: Principal;
  detail: Record<string, unknown>;
}

export type AuditRecord = IntentRecord | CompletionRecord | EventRecord;

/** What the proxy needs from the audit store on its hot path. */
export interface AuditSink {
  /**
   * strict: resolves once the intent is committed. buffered: resolves as soon as it is queued.
   * Rejects with AuditUnavailable when the record cannot be taken (queue full, store down):
   * the statement must then not run. When a strict intent was already queued and its commit
   * failed, the store itself appends a completion saying the statement was refused (sqlstate
   * 57P03), so the caller writes no completion for a rejected intent.
   */
  intent(record: IntentRecord): Promise<void>;
  /** Queued for the next group commit; never blocks the client. */
  completion(record: CompletionRecord): void;
  event(record: EventRecord): Promise<void>;
  /** True when the store is reachable and the queue has room (for /readyz). */
  healthy(): boolean;
  /**
   * Backpressure: resolves true once the queue has room again, false when the store is
   * unreachable or closing, or when no room was made within `timeoutMs`.
   */
  whenRoom(timeoutMs: number): Promise<boolean>;
  /** Is this person (sub or email) on the revocation list? */
  isRevoked(principal: Principal): Promise<boolean>;
  /** Time-boxed roles in force for this person now. */
  activeGrants(principal: Principal): Promise<GrantInForce[]>;
  /** Admin actions the proxy performs for people whose role has `admin: true`. */
  revoke(input: { email: string; reason?: string; by: string }): Promise<void>;
  restore(input: { email: string; reason?: string; by: string }): Promise<void>;
  grant(input: { email: string; role: string; reason: string; by: string; until: Date }): Promise<GrantInForce>;
  close(): Promise<void>;
}
