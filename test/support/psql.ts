// Runs `psql -c SQL` against a connection string (libpq's own client, as users run it) and
// returns its exit code, raw stdout (COPY output compared byte for byte) and stderr.
import { spawn } from 'node:child_process';

export function psql(conn: string, password: string, sql: string): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('psql', [conn, '-X', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { PATH: process.env.PATH, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' } });
    const out: Buffer[] = [];
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}
