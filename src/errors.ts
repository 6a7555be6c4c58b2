// One error base for the whole product: a stable `code`, a message that names the fix,
// and (for the proxy) the SQLSTATE a PostgreSQL client should see.

export type ErrorCode =
  | 'CONFIG'
  | 'USAGE'
  | 'AUTH_REQUIRED'
  | 'AUTH_FAILED'
  | 'POLICY_DENIED'
  | 'PROTOCOL'
  | 'AUDIT_UNAVAILABLE'
  | 'AUDIT_TAMPERED'
  | 'UPSTREAM'
  | 'CANCELLED'
  | 'INTERNAL';

export class ScalpleError extends Error {
  readonly code: ErrorCode;
  /** SQLSTATE a client of the proxy receives for this failure. */
  readonly sqlstate: string;
  constructor(code: ErrorCode, message: string, options: { sqlstate?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ScalpleError';
    this.code = code;
    this.sqlstate = options.sqlstate ?? defaultSqlstate(code);
  }
}

function defaultSqlstate(code: ErrorCode): string {
  switch (code) {
    case 'AUTH_REQUIRED':
    case 'AUTH_FAILED':
      return '28000';
    case 'POLICY_DENIED':
      return '42501';
    case 'PROTOCOL':
      return '08P01';
    case 'AUDIT_UNAVAILABLE':
      return '57P03';
    case 'UPSTREAM':
      return '08006';
    default:
      return 'XX000';
  }
}

export class ConfigError extends ScalpleError {
  constructor(message: string, cause?: unknown) {
    super('CONFIG', message, { cause });
    this.name = 'ConfigError';
  }
}

export class AuthError extends ScalpleError {
  constructor(message: string, cause?: unknown) {
    super('AUTH_FAILED', message, { cause });
    this.name = 'AuthError';
  }
}

export class PolicyDenied extends ScalpleError {
  readonly rule: string;
  constructor(message: string, rule: string, sqlstate = '42501') {
    super('POLICY_DENIED', message, { sqlstate });
    this.name = 'PolicyDenied';
    this.rule = rule;
  }
}

export class AuditUnavailable extends ScalpleError {
  constructor(message: string, cause?: unknown) {
    super('AUDIT_UNAVAILABLE', message, { cause });
    this.name = 'AuditUnavailable';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
