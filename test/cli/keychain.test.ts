// The keychain path for real: gnome-keyring's Secret Service in a private D-Bus session
// (dbus-run-session), the CLI and `secret-tool` both talking to it; a locked keyring and no D-Bus
// at all fall back to the 0600 file, and say so.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { startTestIdp, type DevIdp } from '../support/idp.ts';
import { completeDeviceSignIn } from '../support/browser.ts';
import { claimsOf, login, readDevicePrompt, runCli, sandbox, startCli, type Sandbox } from './harness.ts';

const TOOLS = ['/usr/bin/dbus-run-session', '/usr/bin/gnome-keyring-daemon', '/usr/bin/secret-tool'];
const KEYRING_PASSWORD = 'keyring-pw';

/**
 * A private session bus with gnome-keyring's Secret Service on it. gnome-keyring keeps its
 * keyrings under $XDG_DATA_HOME/keyrings and its sockets under $XDG_RUNTIME_DIR (both in the
 * sandbox). `unlock` creates (first time) or unlocks the login keyring with a password read on
 * stdin; without it the daemon is started with its keyring locked, as after a login without PAM.
 * The session lives until stop(): `cat` holds it open until its stdin closes.
 */
class KeyringSession {
  private constructor(
    private readonly child: ChildProcess,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  static async start(box: Sandbox, unlock: boolean): Promise<KeyringSession> {
    const base: NodeJS.ProcessEnv = {
      ...box.env,
      XDG_DATA_HOME: path.join(box.dir, 'data'),
      XDG_RUNTIME_DIR: path.join(box.dir, 'run'),
    };
    mkdirSync(base.XDG_DATA_HOME!, { recursive: true });
    mkdirSync(base.XDG_RUNTIME_DIR!, { recursive: true, mode: 0o700 });
    const daemon = unlock
      ? `printf %s "$KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null`
      : 'gnome-keyring-daemon --start --components=secrets >/dev/null';
    // gnome-keyring-daemon outlives the bus: at the end, stop the process that owns the Secret
    // Service name on this bus (the one this session started), by its pid.
    const stopDaemon =
      'pid=$(dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.secrets 2>/dev/null | awk \'/uint32/ {print $2}\'); [ -n "$pid" ] && kill "$pid"';
    // The daemon forks and takes its bus name a moment later: wait for the name (at most 10 s).
    const waitForName =
      'n=0; until dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetNameOwner string:org.freedesktop.secrets >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 200 ] && exit 1; sleep 0.05; done';
    const child = spawn('dbus-run-session', ['--', 'sh', '-c', `${daemon} && ${waitForName} && echo "BUS=$DBUS_SESSION_BUS_ADDRESS" && cat; ${stopDaemon}; exit 0`], {
      env: { ...base, KEYRING_PASSWORD },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const address = await new Promise<string>((resolve, reject) => {
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const m = /^BUS=(.+)$/m.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on('close', (code) => reject(new Error(`dbus-run-session ended (${code}) before the keyring was up: ${err}`)));
    });
    return new KeyringSession(child, { ...base, DBUS_SESSION_BUS_ADDRESS: address });
  }

  secretTool(...args: string[]): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('secret-tool', args, { env: this.env, encoding: 'utf8', timeout: 10_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  /** The pid of the process that owns `name` on this bus (org.freedesktop.DBus: the bus daemon). */
  pidOf(name: string): number {
    const r = spawnSync(
      'dbus-send',
      ['--session', '--print-reply', '--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.GetConnectionUnixProcessID', `string:${name}`],
      { env: this.env, encoding: 'utf8', timeout: 10_000 },
    );
    const m = /uint32 (\d+)/.exec(r.stdout);
    if (!m) throw new Error(`no ${name} on the bus: ${r.stderr}`);
    return Number(m[1]);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const closed = new Promise((r) => this.child.on('close', r));
    this.child.stdin!.end();
    await closed;
  }
}

let idp: DevIdp;
let box: Sandbox;
let sessions: KeyringSession[] = [];

beforeAll(async () => {
  const missing = TOOLS.filter((t) => !existsSync(t));
  if (missing.length) throw new Error(`keychain tests need ${missing.join(', ')}: apt-get install dbus gnome-keyring libsecret-tools`);
  idp = await startTestIdp();
});
afterAll(async () => {
  await idp?.close();
});
beforeEach(() => {
  box = sandbox();
  idp.setAccessTokenTtl(3600);
});
afterEach(async () => {
  await Promise.all(sessions.map((s) => s.stop()));
  sessions = [];
  box.remove();
});

async function keyring(unlock: boolean): Promise<KeyringSession> {
  const s = await KeyringSession.start(box, unlock);
  sessions.push(s);
  return s;
}

const credentialsFile = () => path.join(box.scalpleDir, 'credentials.json');

/** Every file the CLI wrote, concatenated: a token must not appear in any of them. */
function allConfigText(): string {
  return readdirSync(box.scalpleDir)
    .map((f) => readFileSync(path.join(box.scalpleDir, f), 'utf8'))
    .join('\n');
}

describe('system keychain (gnome-keyring over D-Bus)', () => {
  it('keeps the tokens in the unlocked keychain and in no file; refresh and logout update it', async () => {
    const kr = await keyring(true);
    idp.setAccessTokenTtl(30); // so the first `token` refreshes, through the keychain
    const r = await login(['--issuer', idp.issuer, '--no-browser'], kr.env, { login: 'alice@example.com' });
    expect(r.stderr).toContain('- Token stored in the system keychain (Secret Service)\n');
    expect(r.stderr).toContain('✓ Logged in as alice@example.com');
    expect(r.code).toBe(0);

    expect(existsSync(credentialsFile())).toBe(false);
    const lookup = kr.secretTool('lookup', 'service', 'scalple', 'username', 'default');
    expect(lookup.status).toBe(0);
    const inKeychain = JSON.parse(lookup.stdout);
    expect(claimsOf(inKeychain.accessToken).email).toBe('alice@example.com');
    expect(inKeychain.refreshToken).toEqual(expect.any(String));
    expect(allConfigText()).not.toContain(inKeychain.accessToken.split('.')[2]);
    expect(allConfigText()).not.toContain(inKeychain.refreshToken);

    const status = JSON.parse((await runCli(['auth', 'status', '--format', 'json'], kr.env)).stdout);
    expect(status).toMatchObject({ email: 'alice@example.com', storage: 'keychain', storageLocation: 'system keychain (Secret Service)' });

    idp.setAccessTokenTtl(3600);
    const token = await runCli(['token'], kr.env);
    expect(token.code).toBe(0);
    expect(token.stderr).toBe('');
    expect(token.stdout.trim()).not.toBe(inKeychain.accessToken); // refreshed
    const afterRefresh = JSON.parse(kr.secretTool('lookup', 'service', 'scalple', 'username', 'default').stdout);
    expect(afterRefresh.accessToken).toBe(token.stdout.trim());
    expect(existsSync(credentialsFile())).toBe(false);

    const out = await runCli(['logout'], kr.env);
    expect(out.code).toBe(0);
    expect(out.stderr).toBe('✓ Logged out of profile "default" (alice@example.com)\n');
    const gone = kr.secretTool('lookup', 'service', 'scalple', 'username', 'default');
    expect(gone.status).not.toBe(0);
    expect(gone.stdout).toBe('');
    expect(existsSync(credentialsFile())).toBe(false);
    expect((await runCli(['token'], kr.env)).code).toBe(4);
  });

  it('--insecure-storage writes the 0600 file even with a working keychain', async () => {
    const kr = await keyring(true);
    const r = await login(['--issuer', idp.issuer, '--no-browser', '--insecure-storage'], kr.env, { login: 'bob@example.com' });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`! Token stored in plain text at ${credentialsFile()} (--insecure-storage)`);
    expect(statSync(credentialsFile()).mode & 0o777).toBe(0o600);
    expect(kr.secretTool('lookup', 'service', 'scalple', 'username', 'default').status).not.toBe(0);
  });

  it('falls back to the 0600 file, and says so, when the keyring is locked', async () => {
    // First session: create the login keyring with a password. Second: the same keyring, locked.
    await (await keyring(true)).stop();
    const kr = await keyring(false);
    const r = await login(['--issuer', idp.issuer, '--no-browser'], kr.env, { login: 'alice@example.com' });
    expect(r.code).toBe(0);
    // gnome-keyring cannot show its unlock prompt here (no display), so the write is refused.
    expect(r.stderr).toMatch(/^! No working keychain \(.*(unlock|locked).*\): token stored in plain text at .*credentials\.json$/m);
    expect(r.stderr).toContain('✓ Logged in as alice@example.com');
    expect(statSync(credentialsFile()).mode & 0o777).toBe(0o600);
    const status = JSON.parse((await runCli(['auth', 'status', '--format', 'json'], kr.env)).stdout);
    expect(status).toMatchObject({ storage: 'file', storageLocation: credentialsFile() });
    expect(claimsOf((await runCli(['token'], kr.env)).stdout).email).toBe('alice@example.com');
  });

  it('gives up on a keychain that does not answer, and falls back to the file', async () => {
    const kr = await keyring(true);
    const pid = kr.pidOf('org.freedesktop.secrets');
    process.kill(pid, 'SIGSTOP'); // the keyring daemon hangs: D-Bus queues the calls, nobody answers
    try {
      const started = Date.now();
      const r = await login(['--issuer', idp.issuer, '--no-browser'], kr.env, { login: 'alice@example.com' });
      expect(r.code).toBe(0);
      // Whichever gives up first: our 3 s timeout, or the D-Bus call's own reply timeout.
      expect(r.stderr).toMatch(/^! No working keychain \(the keychain did not answer[^)]*\): token stored in plain text at .*credentials\.json$/m);
      expect(r.stderr).toContain('✓ Logged in as alice@example.com');
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(statSync(credentialsFile()).mode & 0o777).toBe(0o600);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  it('times out (3 s) when the session bus itself does not answer, and falls back to the file', async () => {
    const kr = await keyring(true);
    const pid = kr.pidOf('org.freedesktop.DBus');
    const cli = startCli(['login', '--issuer', idp.issuer, '--no-browser'], kr.env);
    try {
      const prompt = await readDevicePrompt(cli);
      process.kill(pid, 'SIGSTOP'); // the bus daemon hangs: connecting to it never completes
      await completeDeviceSignIn(prompt.verificationUri, prompt.userCode, { login: 'alice@example.com', password: 'demo' });
      const signedIn = Date.now();
      const r = await cli.done();
      expect(Date.now() - signedIn).toBeLessThan(15_000); // the CLI exits: nothing is left blocked
      expect(r.stderr).toContain(`! No working keychain (the keychain did not answer a write within 3 s): token stored in plain text at ${credentialsFile()}\n`);
      expect(r.code).toBe(0);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  it('falls back to the 0600 file, and says so, when there is no D-Bus session', async () => {
    expect(box.env.DBUS_SESSION_BUS_ADDRESS).toBeUndefined();
    const r = await login(['--issuer', idp.issuer, '--no-browser'], box.env, { login: 'alice@example.com' });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`! No working keychain (no D-Bus session: DBUS_SESSION_BUS_ADDRESS is not set): token stored in plain text at ${credentialsFile()}\n`);
    expect(statSync(credentialsFile()).mode & 0o777).toBe(0o600);
    expect(claimsOf((await runCli(['token'], box.env)).stdout).email).toBe('alice@example.com');
  });
});
