// Support for the audit store tests: a real PostgreSQL 15 cluster with an owner role
// (scalple_admin) and a writer role (scalple_writer), one fresh database per scenario, records
// that look like the proxy's, and condition waits (never sleeps as synchronisation).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { startPostgres, superQuery, type PostgresServer } from '../support/services.ts';
import type { AuditConfig } from '../../src/policy/config.ts';
import type { CompletionRecord, IntentRecord } from '../../src/audit/record.ts';
import { connect } from '../../src/audit/db.ts';
import { initAuditSchema } from '../../src/audit/schema.ts';
import type { AuditLogger } from '../../src/audit/writer.ts';

export const HMAC_KEY = 'test-hmac-key-0123456789abcdef';
export const ADMIN = { user: 'scalple_admin', password: 'admin-pw-1' };
export const WRITER = { user: 'scalple_writer', password: 'writer-pw-1' };

export async function startAuditCluster(): Promise<PostgresServer> {
  const server = await startPostgres();
  await superQuery(server, `CREATE ROLE ${ADMIN.user} LOGIN PASSWORD '${ADMIN.password}'; CREATE ROLE ${WRITER.user} LOGIN PASSWORD '${WRITER.password}'`);
  return server;
}

export interface AuditDb {
  server: PostgresServer;
  db: string;
  adminUrl: string;
  writerUrl: string;
  superUrl: string;
  /** A temp directory for checkpoint files and configs. */
  dir: string;
  config(overrides?: Partial<AuditConfig>): AuditConfig;
  cleanup(): void;
}

let counter = 0;

/** A fresh database owned by the admin role, initialised with `audit init` semantics. */
export async function freshAuditDb(server: PostgresServer, opts: { init?: boolean } = {}): Promise<AuditDb> {
  const db = `audit_${process.pid}_${++counter}`;
  await superQuery(server, `CREATE DATABASE ${db} OWNER ${ADMIN.user} ENCODING 'UTF8'`);
  const url = (u: { user: string; password: string }) => `postgres://${u.user}:${u.password}@${server.host}:${server.port}/${db}`;
  const adminUrl = url(ADMIN);
  if (opts.init !== false) {
    const c = await connect(adminUrl);
    try {
      await initAuditSchema(c, WRITER.user);
    } finally {
      await c.end();
    }
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'scalple-audit-test-'));
  const writerUrl = url(WRITER);
  return {
    server, db, adminUrl, writerUrl, superUrl: server.superUrl(db), dir,
    config: (o = {}) => ({
      url: writerUrl, durability: 'strict', hmacKey: HMAC_KEY, chainId: 'main', bufferSize: 10_000, flushIntervalMs: 20,
      checkpointFile: path.join(dir, `scalple-audit-head.${o.chainId ?? 'main'}.json`), ...o,
    }),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export const ALICE = { kind: 'person' as const, sub: 'u-alice', email: 'alice@example.com', name: 'Alice Support', groups: ['support'] };
export const BOB = { kind: 'person' as const, sub: 'u-bob', email: 'bob@example.com', name: 'Bob Billing', groups: ['billing'] };

export function intent(overrides: Partial<IntentRecord> = {}): IntentRecord {
  return {
    type: 'intent', logId: randomUUID(), ts: new Date(), sessionId: 's-1', principal: ALICE,
    dbRole: 'app_user', database: 'app', clientAddr: '127.0.0.1', applicationName: 'psql',
    statement: 'SELECT id, email FROM customers WHERE id = $1', params: ['42'], kinds: ['SELECT'],
    tables: ['public.customers'], columns: ['public.customers.id', 'public.customers.email'],
    decision: 'allow', policyVersion: 'pv-1', ...overrides,
  };
}

export function completion(logId: string, overrides: Partial<CompletionRecord> = {}): CompletionRecord {
  return { type: 'completion', logId, ts: new Date(), sessionId: 's-1', rows: 1, durationMs: 1.25, ...overrides };
}

/** Polls a condition (a state we wait for, not a guessed delay). */
export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface CapturedLog extends AuditLogger {
  lines: { level: string; msg?: string; obj: Record<string, unknown> }[];
}

export function captureLogger(): CapturedLog {
  const lines: CapturedLog['lines'] = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', obj, ...(msg ? { msg } : {}) }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj, ...(msg ? { msg } : {}) }),
    error: (obj, msg) => lines.push({ level: 'error', obj, ...(msg ? { msg } : {}) }),
  };
}

/**
 * The config file audit commands read: upstream, identity and audit.url/hmac_key for this test
 * database, plus `audit` lines (indented under audit:) and any other top-level YAML.
 */
export function auditConfigYaml(server: PostgresServer, env: AuditDb, opts: { audit?: string; extra?: string } = {}): string {
  return `
upstream: "postgres://app_user:secret@127.0.0.1:${server.port}/app"
identity:
  issuer: "http://127.0.0.1:1/"
  audience: scalple
audit:
  url: "${env.writerUrl}"
  hmac_key: "${HMAC_KEY}"
${opts.audit ?? ''}${opts.extra ?? ''}`;
}
