// `scalple demo`: the whole product on this machine in one command — an embedded PostgreSQL with
// a sample schema, a development OpenID provider with three demo people, the audit store, and the
// proxy with a demo policy. Prints what to try next; Ctrl-C stops everything.
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import YAML from 'yaml';
import type { Logger } from 'pino';
import { freePort, startPostgres, superQuery, type PostgresServer } from './embedded-postgres.ts';
import { locatePostgres } from './postgres-binaries.ts';
import { startDevIdp, DEMO_PEOPLE, type DevIdp } from '../devidp/provider.ts';
import { loadConfig } from '../policy/config.ts';
import { migrate, grantWriter } from '../audit/schema.ts';
import { openAuditStore, type AuditStore } from '../audit/writer.ts';
import { startProxy, type RunningProxy } from '../proxy/server.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));

export interface DemoOptions {
  port?: number;
  /** Read for SCALPLE_PG_BIN (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** PostgreSQL binaries: a directory or "npm" (overrides SCALPLE_PG_BIN). */
  pgBin?: string;
  idpPort?: number;
  stateDir: string;
  logger: Logger;
  out: NodeJS.WritableStream;
}

export interface RunningDemo {
  configFile: string;
  proxyPort: number;
  issuer: string;
  stop(): Promise<void>;
}

export const DEMO_PASSWORD = 'demo';

export function demoPolicy(maskKey: string): Record<string, unknown> {
  return {
    pii: {
      'public.customers.email': 'email',
      'public.customers.iban': { mask: 'partial', keep_last: 4 },
      'public.customers.ssn': 'redact',
      'public.customers.date_of_birth': 'year',
      'public.customers.phone': 'hash',
    },
    roles: {
      support: { groups: ['support'] },
      billing: { groups: ['billing'], unmask: ['public.customers.iban'] },
      dba: { groups: ['dba'], unmask: ['*'], write: true, audit: true, admin: true },
    },
    default_role: 'support',
    enforce: true,
    mask_key: maskKey,
    named_queries: {
      get_order_by_id: {
        description: 'One order with its customer',
        sql: 'SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1',
        params: [{ name: 'order_id', type: 'int' }],
        roles: ['support', 'billing'],
      },
    },
  };
}

/** PostgreSQL from the system's binaries, else the npm-packaged ones (see postgres-binaries.ts). */
async function embeddedPostgres(env: NodeJS.ProcessEnv, pgBin: string | undefined, step: (s: string) => void): Promise<PostgresServer> {
  const binaries = locatePostgres({ env, ...(pgBin !== undefined ? { pgBin } : {}) });
  step(`starting PostgreSQL (${binaries.label})`);
  let server: PostgresServer;
  try {
    server = await startPostgres({ bin: binaries.bin });
  } catch (err) {
    binaries.cleanup();
    throw err;
  }
  return { ...server, stop: () => server.stop().finally(() => binaries.cleanup()) };
}

export async function startDemo(opts: DemoOptions): Promise<RunningDemo> {
  const { logger, out } = opts;
  const step = (s: string) => out.write(`  … ${s}\n`);
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const stoppers: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stoppers.reverse()) await s().catch(() => undefined);
  };
  try {
    const server = await embeddedPostgres(opts.env ?? process.env, opts.pgBin, step);
    stoppers.push(() => server.stop());
    const appPw = randomBytes(12).toString('hex');
    const auditPw = randomBytes(12).toString('hex');
    await superQuery(server, `CREATE ROLE app_user LOGIN PASSWORD '${appPw}'`);
    await superQuery(server, `CREATE ROLE scalple_owner LOGIN PASSWORD '${auditPw}'`);
    await superQuery(server, `CREATE ROLE scalple_writer LOGIN PASSWORD '${auditPw}'`);
    await superQuery(server, 'CREATE DATABASE app');
    await superQuery(server, 'GRANT CREATE ON DATABASE app TO scalple_owner', 'app');
    step('loading the sample schema (customers, orders, payments)');
    await superQuery(server, readFileSync(path.join(HERE, 'sample-schema.sql'), 'utf8'), 'app');
    await superQuery(server, 'GRANT USAGE ON SCHEMA public TO app_user; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_user', 'app');
    const owner = new pg.Client({ connectionString: `postgres://scalple_owner:${auditPw}@127.0.0.1:${server.port}/app` });
    await owner.connect();
    await migrate(owner);
    await grantWriter(owner, 'scalple_writer');
    await owner.end();

    step('starting the development OpenID provider');
    const idp: DevIdp = await startDevIdp({ people: DEMO_PEOPLE, password: DEMO_PASSWORD, ...(opts.idpPort ? { port: opts.idpPort } : {}) });
    stoppers.push(() => idp.close());

    const port = opts.port ?? (await freePort());
    const configFile = path.join(opts.stateDir, 'scalple-demo.yaml');
    const doc = {
      listen: `127.0.0.1:${port}`,
      upstream: `postgres://app_user:${appPw}@127.0.0.1:${server.port}/app?sslmode=disable`,
      upstream_pool_mode: 'none',
      audit: { url: `postgres://scalple_writer:${auditPw}@127.0.0.1:${server.port}/app?sslmode=disable`, durability: 'strict', hmac_key: randomBytes(24).toString('hex'), checkpoint_file: path.join(opts.stateDir, 'audit-head.json') },
      identity: { issuer: idp.issuer, audience: idp.audience, allow_plaintext_password: true },
      ...demoPolicy(randomBytes(24).toString('hex')),
    };
    writeFileSync(configFile, '# Written by `scalple demo`: a throwaway config for this demo run only.\n' + YAML.stringify(doc), { mode: 0o600 });
    const config = loadConfig(configFile);
    step('starting the audit store and the proxy');
    const audit: AuditStore = await openAuditStore(config.audit, { policyVersion: config.policyVersion, logger });
    stoppers.push(() => audit.close());
    const proxy: RunningProxy = await startProxy(config, { audit, logger });
    stoppers.push(() => proxy.close());
    return { configFile, proxyPort: proxy.port, issuer: idp.issuer, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export function demoInstructions(d: RunningDemo): string {
  const people = DEMO_PEOPLE.map((p) => `${p.email} (${p.groups.join(', ')})`).join(', ');
  return `
Scalple demo is running. Everything listens on 127.0.0.1 only; Ctrl-C stops it all.

  proxy      127.0.0.1:${d.proxyPort}   (database "app")
  issuer     ${d.issuer}   people: ${people}, password "${DEMO_PASSWORD}"
  config     ${d.configFile}

Try, in another terminal:

  scalple login --issuer ${d.issuer} --proxy 127.0.0.1:${d.proxyPort} --database app
  scalple query "SELECT id, email, iban, region FROM customers ORDER BY id LIMIT 5"
  scalple audit log --config ${d.configFile} --limit 10
  scalple audit verify --config ${d.configFile}
  PGPASSWORD=$(scalple token) psql "host=127.0.0.1 port=${d.proxyPort} dbname=app user=you"
`;
}

export function defaultDemoStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME ?? path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'scalple', 'demo');
}
