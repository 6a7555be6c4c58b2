#!/usr/bin/env node
// `npm test`: makes sure the system packages the integration tests need are present (installs them
// with apt-get when running as root on Debian, otherwise names them), then runs vitest.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const NEEDS = [
  { pkg: 'postgresql-15', present: () => existsSync('/usr/lib/postgresql/15/bin/postgres') },
  { pkg: 'pgbouncer', present: () => ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].some(existsSync) },
  { pkg: 'postgresql-15-pgaudit', present: () => existsSync('/usr/lib/postgresql/15/lib/pgaudit.so') },
  { pkg: 'gnome-keyring', present: () => existsSync('/usr/bin/gnome-keyring-daemon') },
  { pkg: 'libsecret-tools', present: () => existsSync('/usr/bin/secret-tool') },
  { pkg: 'dbus', present: () => existsSync('/usr/bin/dbus-run-session') },
  { pkg: 'tmux', present: () => existsSync('/usr/bin/tmux') },
  { pkg: 'chromium', present: () => existsSync('/usr/bin/chromium') },
];

const missing = NEEDS.filter((n) => !n.present()).map((n) => n.pkg);
if (missing.length) {
  const isRoot = process.getuid?.() === 0;
  if (isRoot && existsSync('/usr/bin/apt-get')) {
    console.error(`installing test dependencies: ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    let r = spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    if (r.status === 0) r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
    if (r.status !== 0) {
      console.error(`apt-get failed; install these by hand: apt-get install ${missing.join(' ')}`);
      process.exit(1);
    }
  } else {
    console.error(`The tests need these Debian packages: ${missing.join(' ')}\n  sudo apt-get install ${missing.join(' ')}`);
    process.exit(1);
  }
}

const r = spawnSync(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', ...process.argv.slice(2)], { stdio: 'inherit' });
// Clusters of a crashed test run would otherwise linger: stop any we started.
spawnSync('pkill', ['-f', '/tmp/scalple-pg-'], { stdio: 'ignore' });
spawnSync('pkill', ['-f', '/tmp/scalple-pgb-'], { stdio: 'ignore' });
process.exit(r.status ?? 1);
