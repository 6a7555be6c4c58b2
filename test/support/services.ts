// Throwaway services for integration tests: PostgreSQL (src/demo/embedded-postgres.ts) and
// PgBouncer in transaction mode, as an unprivileged user on free loopback ports.
import { writeFileSync, chownSync, existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { freePort, ownedTempDir, spawnUnprivileged, waitForOutput, stopChild, NOBODY, runAsRoot, type PostgresServer } from '../../src/demo/embedded-postgres.ts';

export { freePort, startPostgres, superQuery, PG_BIN, SUPERUSER, SUPERUSER_PASSWORD, type PostgresServer, type PostgresOptions } from '../../src/demo/embedded-postgres.ts';

export interface PgBouncerServer {
  host: string;
  port: number;
  url: (user: string, password: string, db: string) => string;
  readLog(): string;
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  database: string;
  users: Record<string, string>;
  poolMode?: 'transaction' | 'session';
  defaultPoolSize?: number;
}

export async function startPgBouncer(pgServer: PostgresServer, opts: PgBouncerOptions): Promise<PgBouncerServer> {
  const bin = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
  if (!bin) throw new Error('PgBouncer is not installed: apt-get install pgbouncer');
  const root = ownedTempDir('scalple-pgb-');
  const port = await freePort();
  const userlist = Object.entries(opts.users).map(([u, p]) => `"${u}" "${p}"`).join('\n') + '\n';
  writeFileSync(path.join(root, 'userlist.txt'), userlist);
  const logFile = path.join(root, 'pgbouncer.log');
  const ini = `[databases]
${opts.database} = host=${pgServer.host} port=${pgServer.port} dbname=${opts.database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = ${path.join(root, 'userlist.txt')}
pool_mode = ${opts.poolMode ?? 'transaction'}
default_pool_size = ${opts.defaultPoolSize ?? 2}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits,options
server_reset_query =
logfile = ${logFile}
pidfile = ${path.join(root, 'pgbouncer.pid')}
log_connections = 0
log_disconnections = 0
`;
  writeFileSync(path.join(root, 'pgbouncer.ini'), ini);
  if (runAsRoot) for (const f of ['userlist.txt', 'pgbouncer.ini']) chownSync(path.join(root, f), NOBODY, NOBODY);
  const child = spawnUnprivileged(bin, [path.join(root, 'pgbouncer.ini')], { cwd: root });
  const log: string[] = [];
  child.stdout?.on('data', (d: Buffer) => log.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
  await waitForOutput(child, /process up|listening on 127\.0\.0\.1/, 'PgBouncer', log);
  return {
    host: '127.0.0.1',
    port,
    url: (user, password, db) => `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`,
    readLog: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    stop: () => stopChild(child, 'SIGINT').finally(() => rmSync(root, { recursive: true, force: true })),
  };
}
