// The whole product on loopback for integration tests: PostgreSQL 15 with pgAudit, PgBouncer in
// transaction mode (default_pool_size=2), the OpenID provider, the audit schema initialised by its
// owner, and the proxy — in-process, or as a real `scalple proxy` child process.
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import YAML from 'yaml';
import { CATALOG_TRIGGER_SQL } from '../../src/proxy/catalog-watch.ts';
import { startPostgres, startPgBouncer, superQuery, freePort, type PostgresServer, type PgBouncerServer } from './services.ts';
import { startTestIdp, deviceLogin, type DevIdp, type Tokens } from './idp.ts';
import { WireClient } from './wire.ts';
import { loadConfig, type ScalpleConfig } from '../../src/policy/config.ts';
import { migrate, grantWriter } from '../../src/audit/schema.ts';
import { openAuditStore, type AuditStore } from '../../src/audit/writer.ts';
import { startProxy, type RunningProxy } from '../../src/proxy/server.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SCALPLE_BIN = path.join(ROOT, 'bin/scalple.js');
export const SAMPLE_SCHEMA = readFileSync(path.join(ROOT, 'src/demo/sample-schema.sql'), 'utf8');

export const APP_USER = 'app_user';
export const APP_PASSWORD = 'app-secret-pw';
export const APP_READONLY = 'app_readonly';
export const AUDIT_OWNER = 'scalple_owner';
export const AUDIT_WRITER = 'scalple_writer';
export const AUDIT_PASSWORD = 'audit-secret-pw';
export const HMAC_KEY = 'test-hmac-key-that-the-database-never-sees';

export interface StackOptions {
  poolMode?: 'transaction' | 'none';
  durability?: 'strict' | 'buffered';
  /** More `audit:` keys (buffer_size, flush_interval_ms, …). */
  audit?: Record<string, unknown>;
  /** Extra top-level config keys (tls, applications, policy…), merged over the defaults. */
  config?: Record<string, unknown>;
  identity?: Record<string, unknown>;
  /** Run the proxy as a child `scalple proxy` process instead of in-process. */
  processProxy?: boolean;
  pgaudit?: boolean;
  /** Also create app_readonly (default_transaction_read_only = on) and set upstream_readonly. */
  readonlyUpstream?: boolean;
}

export interface Stack {
  pg: PostgresServer;
  bouncer: PgBouncerServer | undefined;
  idp: DevIdp;
  dir: string;
  configFile: string;
  config: ScalpleConfig;
  proxyPort: number;
  audit: AuditStore | undefined;
  proxyProcess: ChildProcess | undefined;
  /** Device-login tokens per email, cached. */
  token(email: string): Promise<Tokens>;
  /** A pg client through the proxy with the token in the startup `options`. */
  connect(email: string, extra?: Partial<pg.ClientConfig>): Promise<pg.Client>;
  /** A raw protocol client through the proxy, the token as a startup parameter. */
  wire(email: string, params?: Record<string, string>): Promise<WireClient>;
  /** Superuser query on the app database (setup and assertions only). */
  sql<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  /**
   * Runs `ddl` as the superuser (outside the proxy, like a migration) and waits until the proxy
   * has been told of the change by the database (catalog watch; in-process proxy).
   */
  ddlOutside(ddl: string): Promise<void>;
  /** Waits until every queued audit record is committed (in-process proxy). */
  flushAudit(): Promise<void>;
  stopProxy(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const poolMode = opts.poolMode ?? 'transaction';
  const pgServer = await startPostgres({ pgaudit: opts.pgaudit ?? true });
  await superQuery(pgServer, `CREATE ROLE ${APP_USER} LOGIN PASSWORD '${APP_PASSWORD}'`);
  await superQuery(pgServer, `CREATE ROLE ${AUDIT_OWNER} LOGIN PASSWORD '${AUDIT_PASSWORD}'`);
  await superQuery(pgServer, `CREATE ROLE ${AUDIT_WRITER} LOGIN PASSWORD '${AUDIT_PASSWORD}'`);
  await superQuery(pgServer, 'CREATE DATABASE app');
  await superQuery(pgServer, `GRANT CREATE ON DATABASE app TO ${AUDIT_OWNER}`, 'app');
  if (opts.pgaudit ?? true) await superQuery(pgServer, 'CREATE EXTENSION pgaudit', 'app');
  await superQuery(pgServer, SAMPLE_SCHEMA, 'app');
  // As `scalple catalog install` does: DDL made outside the proxy is announced to it at once.
  await superQuery(pgServer, CATALOG_TRIGGER_SQL, 'app');
  await superQuery(pgServer, `GRANT USAGE, CREATE ON SCHEMA public TO ${APP_USER}; GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO ${APP_USER}`, 'app');
  if (opts.readonlyUpstream) {
    await superQuery(pgServer, `CREATE ROLE ${APP_READONLY} LOGIN PASSWORD '${APP_PASSWORD}'; ALTER ROLE ${APP_READONLY} SET default_transaction_read_only = on`);
    await superQuery(pgServer, `GRANT USAGE ON SCHEMA public TO ${APP_READONLY}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${APP_READONLY}; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO ${APP_READONLY}`, 'app');
  }

  const ownerUrl = `postgres://${AUDIT_OWNER}:${AUDIT_PASSWORD}@127.0.0.1:${pgServer.port}/app`;
  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  await migrate(owner);
  await grantWriter(owner, AUDIT_WRITER);
  await owner.end();

  const bouncer = poolMode === 'transaction' ? await startPgBouncer(pgServer, { database: 'app', users: { [APP_USER]: APP_PASSWORD, [APP_READONLY]: APP_PASSWORD }, defaultPoolSize: 2 }) : undefined;
  const idp = await startTestIdp();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'scalple-stack-'));
  const upstream = bouncer ? bouncer.url(APP_USER, APP_PASSWORD, 'app') : `postgres://${APP_USER}:${APP_PASSWORD}@127.0.0.1:${pgServer.port}/app`;
  const port = await freePort();
  const doc: Record<string, unknown> = {
    listen: `127.0.0.1:${port}`,
    upstream,
    upstream_pool_mode: poolMode,
    catalog: { watch_url: `postgres://${APP_USER}:${APP_PASSWORD}@127.0.0.1:${pgServer.port}/app` },
    ...(opts.readonlyUpstream ? { upstream_readonly: upstream.replace(`${APP_USER}:`, `${APP_READONLY}:`) } : {}),
    audit: { url: `postgres://${AUDIT_WRITER}:${AUDIT_PASSWORD}@127.0.0.1:${pgServer.port}/app`, durability: opts.durability ?? 'strict', hmac_key: HMAC_KEY, checkpoint_file: path.join(dir, 'head.json'), ...opts.audit },
    identity: { issuer: idp.issuer, audience: 'scalple', allow_plaintext_password: true, revocation_check_ms: 300, ...opts.identity },
    ...opts.config,
  };
  const configFile = path.join(dir, 'scalple.yaml');
  writeFileSync(configFile, YAML.stringify(doc));
  const config = loadConfig(configFile);

  let audit: AuditStore | undefined;
  let proxy: RunningProxy | undefined;
  let child: ChildProcess | undefined;
  if (opts.processProxy) {
    child = spawn(process.execPath, [SCALPLE_BIN, 'proxy', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      let log = '';
      const onData = (d: Buffer) => {
        log += d.toString();
        if (log.includes('"proxy listening"')) {
          child!.stderr!.off('data', onData);
          child!.stderr!.resume();
          resolve();
        }
      };
      child!.stderr!.on('data', onData);
      child!.once('exit', (code) => reject(new Error(`scalple proxy exited (${code}):\n${log}`)));
    });
  } else {
    const logger = pino({ level: process.env.SCALPLE_TEST_LOG ?? 'silent' });
    audit = await openAuditStore(config.audit, { policyVersion: config.policyVersion, logger });
    proxy = await startProxy(config, { audit, logger });
  }

  const tokens = new Map<string, Promise<Tokens>>();
  const token = (email: string) => {
    let t = tokens.get(email);
    if (!t) {
      t = deviceLogin(idp, email);
      tokens.set(email, t);
    }
    return t;
  };

  const stack: Stack = {
    pg: pgServer,
    bouncer,
    idp,
    dir,
    configFile,
    config,
    proxyPort: proxy?.port ?? port,
    audit,
    proxyProcess: child,
    token,
    async connect(email, extra = {}) {
      const t = await token(email);
      const c = new pg.Client({ host: '127.0.0.1', port: proxy?.port ?? port, database: 'app', user: 'ignored', options: `-c scalple.identity=${t.accessToken}`, ...extra });
      await c.connect();
      return c;
    },
    async wire(email, params = {}) {
      const t = await token(email);
      return WireClient.connect(proxy?.port ?? port, { user: 'x', database: 'app', 'scalple.identity': t.accessToken, ...params });
    },
    sql: (text, values) => {
      const c = new pg.Client({ connectionString: pgServer.superUrl('app') });
      return c.connect().then(() => c.query(text, values as unknown[]).finally(() => c.end()));
    },
    async ddlOutside(ddl) {
      if (!proxy) throw new Error('ddlOutside needs the in-process proxy');
      const before = proxy.catalogChanges();
      await stack.sql(ddl);
      await proxy.whenCatalogChanged(before);
    },
    flushAudit: () => audit?.flush() ?? Promise.resolve(),
    async stopProxy(signal: NodeJS.Signals = 'SIGTERM') {
      const proc = stack.proxyProcess;
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        await new Promise<void>((resolve) => {
          proc.once('exit', () => resolve());
          proc.kill(signal);
        });
      }
      if (proxy) {
        await proxy.close();
        proxy = undefined;
      }
      if (audit) {
        await audit.close();
        audit = undefined;
      }
    },
    async stop() {
      await stack.stopProxy();
      await idp.close();
      await bouncer?.stop();
      await pgServer.stop();
    },
  };
  return stack;
}
