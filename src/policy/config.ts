// Config schema and loading: one YAML file (`--config` or SCALPLE_CONFIG), every secret also
// settable from the environment. Validation errors name the key and the fix.
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import YAML from 'yaml';
import { ConfigError } from '../errors.ts';

export type PoolMode = 'none' | 'session' | 'transaction';
export type Durability = 'strict' | 'buffered';

export interface ApplicationConfig {
  name: string;
  /** sha256 (hex) of a static key presented as the password; the key itself is never stored. */
  keySha256?: string;
  /** OAuth client id whose client-credentials tokens identify this application. */
  clientId?: string;
  /** Subject CN of a client certificate (mTLS) that identifies this application. */
  certCn?: string;
  groups: string[];
}

export interface IdentityConfig {
  issuer: string;
  audience: string[];
  allowPlaintextPassword: boolean;
  algorithms: string[];
  leewaySeconds: number;
  claims: { email: string; name: string; groups: string };
  /** How often a session re-checks the revocation list, in ms. */
  revocationCheckMs: number;
}

export interface TlsConfig {
  cert: string;
  key: string;
  mode: 'required' | 'optional';
  /** CA bundle for client certificates (mTLS application identities). */
  clientCa?: string;
}

export interface AuditConfig {
  url: string;
  durability: Durability;
  hmacKey: string;
  chainId: string;
  /** Bounded queue for buffered mode (records). */
  bufferSize: number;
  /** Longest a buffered record waits before its group commit, in ms. */
  flushIntervalMs: number;
  /** File outside the database where the chain head is kept, so a cut tail is detected. */
  checkpointFile: string;
  /** Also stream every record as a JSON line (SIEM): 'stdout' or a file path. */
  stream?: string;
}

export interface ScalpleConfig {
  file: string;
  listen: { host: string; port: number };
  upstream: string;
  /**
   * Upstream for people whose role may not write: a role with `default_transaction_read_only = on`
   * and SELECT grants only, so PostgreSQL itself refuses writes (through a pooler too).
   */
  upstreamReadonly?: string;
  upstreamPoolMode: PoolMode;
  /**
   * `catalog.watch_url`: a direct connection to the upstream database on which the proxy LISTENs
   * for schema changes (see src/proxy/catalog-watch.ts). Default: the upstream, unless it is a
   * transaction pooler.
   */
  catalogWatchUrl?: string;
  audit: AuditConfig;
  identity: IdentityConfig;
  tls?: TlsConfig;
  applications: ApplicationConfig[];
  http?: { host: string; port: number };
  startupTimeoutMs: number;
  /** The policy part of the file (pii, roles, named_queries, subjects…), raw; see src/policy. */
  policy: Record<string, unknown>;
  /** Hash of the policy section, stored with every audit record. */
  policyVersion: string;
}

const POLICY_KEYS = ['pii', 'roles', 'default_role', 'enforce', 'named_queries', 'subjects', 'mask_key', 'hash_equality', 'anomalies'];

export function configPathFrom(explicit?: string): string {
  const p = explicit ?? process.env.SCALPLE_CONFIG;
  if (!p) throw new ConfigError('No config file: pass --config FILE or set SCALPLE_CONFIG.');
  return path.resolve(p);
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): ScalpleConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`Cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`Config file ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseConfig(raw, file, env);
}

export function parseConfig(raw: unknown, file: string, env: NodeJS.ProcessEnv = process.env): ScalpleConfig {
  const doc = obj(raw, '(top level)');
  const dir = path.dirname(path.resolve(file));
  const upstream = interpolate(env.SCALPLE_UPSTREAM_URL ?? str(doc.upstream, 'upstream'), env, 'upstream');
  checkUrl(upstream, 'upstream');
  const poolMode = oneOf(doc.upstream_pool_mode ?? 'none', ['none', 'session', 'transaction'] as const, 'upstream_pool_mode');
  const upstreamReadonlyRaw = env.SCALPLE_UPSTREAM_READONLY_URL ?? (doc.upstream_readonly === undefined ? undefined : str(doc.upstream_readonly, 'upstream_readonly'));
  const upstreamReadonly = upstreamReadonlyRaw === undefined ? undefined : interpolate(upstreamReadonlyRaw, env, 'upstream_readonly');
  if (upstreamReadonly) checkUrl(upstreamReadonly, 'upstream_readonly');

  const catalogRaw = doc.catalog === undefined ? {} : obj(doc.catalog, 'catalog');
  const watchRaw = env.SCALPLE_CATALOG_WATCH_URL ?? (catalogRaw.watch_url === undefined ? undefined : str(catalogRaw.watch_url, 'catalog.watch_url'));
  const catalogWatchUrl = watchRaw === undefined ? undefined : interpolate(watchRaw, env, 'catalog.watch_url');
  if (catalogWatchUrl) checkUrl(catalogWatchUrl, 'catalog.watch_url');

  const auditRaw = doc.audit === undefined ? {} : obj(doc.audit, 'audit');
  const auditUrl = interpolate(env.SCALPLE_AUDIT_URL ?? (auditRaw.url === undefined ? upstream : str(auditRaw.url, 'audit.url')), env, 'audit.url');
  checkUrl(auditUrl, 'audit.url');
  if (auditRaw.url === undefined && !env.SCALPLE_AUDIT_URL && poolMode === 'transaction') {
    throw new ConfigError('audit.url is required when upstream is a transaction pooler: the audit store must be reached directly (set audit.url to the PostgreSQL server itself).');
  }
  const hmacKey = env.SCALPLE_AUDIT_HMAC_KEY ?? (auditRaw.hmac_key === undefined ? undefined : interpolate(str(auditRaw.hmac_key, 'audit.hmac_key'), env, 'audit.hmac_key'));
  if (!hmacKey || hmacKey.length < 16) {
    throw new ConfigError('audit.hmac_key (or SCALPLE_AUDIT_HMAC_KEY) must be set to a secret of at least 16 characters: it keys the tamper-evident chain and must never be stored in the audit database.');
  }
  const chainId = auditRaw.chain_id === undefined ? 'main' : str(auditRaw.chain_id, 'audit.chain_id');
  const audit: AuditConfig = {
    url: auditUrl,
    durability: oneOf(auditRaw.durability ?? 'strict', ['strict', 'buffered'] as const, 'audit.durability'),
    hmacKey,
    chainId,
    bufferSize: auditRaw.buffer_size === undefined ? 10_000 : int(auditRaw.buffer_size, 'audit.buffer_size', 1),
    flushIntervalMs: auditRaw.flush_interval_ms === undefined ? 20 : int(auditRaw.flush_interval_ms, 'audit.flush_interval_ms', 1),
    checkpointFile: path.resolve(dir, auditRaw.checkpoint_file === undefined ? `scalple-audit-head.${chainId}.json` : str(auditRaw.checkpoint_file, 'audit.checkpoint_file')),
    ...(auditRaw.stream === undefined ? {} : { stream: str(auditRaw.stream, 'audit.stream') === 'stdout' ? 'stdout' : path.resolve(dir, auditRaw.stream as string) }),
  };

  const idRaw = obj(doc.identity, 'identity');
  const audience = Array.isArray(idRaw.audience)
    ? idRaw.audience.map((a, i) => str(a, `identity.audience[${i}]`))
    : [str(idRaw.audience, 'identity.audience')];
  const claims = idRaw.claims === undefined ? {} : obj(idRaw.claims, 'identity.claims');
  const algorithms = idRaw.algorithms === undefined ? ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] : list(idRaw.algorithms, 'identity.algorithms');
  for (const a of algorithms) {
    if (a === 'none' || a.startsWith('HS')) throw new ConfigError(`identity.algorithms: ${a} is not allowed (only asymmetric signatures are accepted).`);
  }
  const identity: IdentityConfig = {
    issuer: str(idRaw.issuer, 'identity.issuer'),
    audience,
    allowPlaintextPassword: idRaw.allow_plaintext_password === true,
    algorithms,
    leewaySeconds: idRaw.leeway_seconds === undefined ? 30 : int(idRaw.leeway_seconds, 'identity.leeway_seconds', 0),
    claims: {
      email: claims.email === undefined ? 'email' : str(claims.email, 'identity.claims.email'),
      name: claims.name === undefined ? 'name' : str(claims.name, 'identity.claims.name'),
      groups: claims.groups === undefined ? 'groups' : str(claims.groups, 'identity.claims.groups'),
    },
    revocationCheckMs: idRaw.revocation_check_ms === undefined ? 2000 : int(idRaw.revocation_check_ms, 'identity.revocation_check_ms', 100),
  };
  checkUrl(identity.issuer, 'identity.issuer');

  let tls: TlsConfig | undefined;
  if (doc.tls !== undefined && doc.tls !== null) {
    const t = obj(doc.tls, 'tls');
    tls = {
      cert: path.resolve(dir, str(t.cert, 'tls.cert')),
      key: path.resolve(dir, str(t.key, 'tls.key')),
      mode: oneOf(t.mode ?? 'required', ['required', 'optional'] as const, 'tls.mode'),
      ...(t.client_ca === undefined ? {} : { clientCa: path.resolve(dir, str(t.client_ca, 'tls.client_ca')) }),
    };
  }

  const applications: ApplicationConfig[] = [];
  if (doc.applications !== undefined) {
    for (const [name, v] of Object.entries(obj(doc.applications, 'applications'))) {
      const a = obj(v, `applications.${name}`);
      const key = a.key === undefined ? undefined : interpolate(str(a.key, `applications.${name}.key`), env, `applications.${name}.key`);
      const envKey = env[`SCALPLE_APP_KEY_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`];
      const plain = envKey ?? key;
      const keySha256 = a.key_sha256 !== undefined ? str(a.key_sha256, `applications.${name}.key_sha256`).toLowerCase()
        : plain !== undefined ? createHash('sha256').update(plain).digest('hex') : undefined;
      applications.push({
        name,
        ...(keySha256 ? { keySha256 } : {}),
        ...(a.client_id !== undefined ? { clientId: str(a.client_id, `applications.${name}.client_id`) } : {}),
        ...(a.cert_cn !== undefined ? { certCn: str(a.cert_cn, `applications.${name}.cert_cn`) } : {}),
        groups: a.groups === undefined ? [] : list(a.groups, `applications.${name}.groups`),
      });
    }
  }

  const listen = hostPort(str(doc.listen ?? '127.0.0.1:6543', 'listen'), 'listen');
  const http = doc.http === undefined ? undefined : hostPort(str(obj(doc.http, 'http').listen, 'http.listen'), 'http.listen');

  const policy: Record<string, unknown> = {};
  for (const k of POLICY_KEYS) if (doc[k] !== undefined) policy[k] = doc[k];
  const policyVersion = createHash('sha256').update(JSON.stringify(policy)).digest('hex').slice(0, 16);

  return {
    file: path.resolve(file),
    listen,
    upstream,
    ...(upstreamReadonly ? { upstreamReadonly } : {}),
    upstreamPoolMode: poolMode,
    ...(catalogWatchUrl ? { catalogWatchUrl } : {}),
    audit,
    identity,
    ...(tls ? { tls } : {}),
    applications,
    ...(http ? { http } : {}),
    startupTimeoutMs: doc.startup_timeout_ms === undefined ? 10_000 : int(doc.startup_timeout_ms, 'startup_timeout_ms', 100),
    policy,
    policyVersion,
  };
}

/** `${VAR}` in a config string is taken from the environment, so secrets stay out of the file. */
function interpolate(value: string, env: NodeJS.ProcessEnv, key: string): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined) throw new ConfigError(`${key} refers to \${${name}}, which is not set in the environment.`);
    return v;
  });
}

function obj(v: unknown, key: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${key} must be a mapping.`);
  return v as Record<string, unknown>;
}
function str(v: unknown, key: string): string {
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(`${key} must be a non-empty string.`);
  return v;
}
function int(v: unknown, key: string, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(`${key} must be an integer >= ${min}.`);
  return v;
}
function list(v: unknown, key: string): string[] {
  if (!Array.isArray(v)) throw new ConfigError(`${key} must be a list of strings.`);
  return v.map((x, i) => str(x, `${key}[${i}]`));
}
function oneOf<T extends string>(v: unknown, allowed: readonly T[], key: string): T {
  if (typeof v !== 'string' || !allowed.includes(v as T)) throw new ConfigError(`${key} must be one of: ${allowed.join(', ')}.`);
  return v as T;
}
function checkUrl(v: string, key: string): void {
  try {
    new URL(v);
  } catch {
    throw new ConfigError(`${key} is not a valid URL.`);
  }
}
export function hostPort(v: string, key: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(v);
  if (!m) throw new ConfigError(`${key} must be HOST:PORT (got "${v}").`);
  const port = Number(m[2]);
  if (port < 0 || port > 65535) throw new ConfigError(`${key}: port out of range.`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}
