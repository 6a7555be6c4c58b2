// `scalple login` on a real terminal (tmux's pseudo-terminal): it offers to open the browser, opens
// the URL with the code filled in when the person presses Enter, says so when it cannot, and the
// login completes from the page that opened.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startTestIdp, type DevIdp } from '../support/idp.ts';
import { completeDeviceSignIn } from '../support/browser.ts';
import { BIN, sandbox, waitUntil, type Sandbox } from './harness.ts';

let idp: DevIdp;
let box: Sandbox;
let socket: string;
let started = false;

beforeAll(async () => {
  if (!existsSync('/usr/bin/tmux')) throw new Error('this test needs tmux: apt-get install tmux');
  idp = await startTestIdp();
});
afterAll(async () => {
  await idp?.close();
});
beforeEach(() => {
  box = sandbox({ TERM: 'xterm-256color' });
  box.env.TMUX_TMPDIR = box.dir;
  socket = `scalple-${path.basename(box.dir)}`;
  started = false;
});
afterEach(() => {
  if (started) tmux('kill-server');
  box.remove();
});

function tmux(...args: string[]): string {
  const r = spawnSync('tmux', ['-L', socket, '-f', '/dev/null', ...args], { env: box.env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tmux ${args[0]} failed: ${r.stderr}`);
  return r.stdout;
}

/** Runs `scalple login …` in a terminal; the pane stays after it exits, showing EXIT=<code>. */
function loginInTerminal(args: string[]): void {
  const quoted = [process.execPath, BIN, 'login', ...args].map((a) => `'${a}'`).join(' ');
  tmux('new-session', '-d', '-x', '250', '-y', '50', `${quoted}; echo "EXIT=$?"; exec cat`);
  started = true;
}

const screen = () => tmux('capture-pane', '-p', '-J');

/** A stand-in for the person's browser: records the URL it was asked to open. */
function fakeBrowser(script: string): string {
  const file = path.join(box.dir, 'browser.sh');
  writeFileSync(file, `#!/bin/sh\n${script}\n`);
  chmodSync(file, 0o755);
  return file;
}

describe('login on a terminal', () => {
  it('opens the verification URL (code filled in) in the browser when the person presses Enter', async () => {
    const opened = path.join(box.dir, 'opened-url');
    box.env.BROWSER = fakeBrowser(`printf '%s' "$1" > '${opened}'`);
    loginInTerminal(['--issuer', idp.issuer, '--insecure-storage']);

    const text = await waitUntil(() => (/Press Enter to open/.test(screen()) ? screen() : undefined), 'the offer to open a browser');
    const host = new URL(idp.issuer).host;
    expect(text).toContain(`- Press Enter to open ${host} in your browser...`);
    const code = /one-time code: (\S+)/.exec(text)![1]!;

    tmux('send-keys', 'Enter');
    const url = await waitUntil(() => existsSync(opened) && readFileSync(opened, 'utf8'), 'the browser to be opened');
    expect(url).toBe(`${idp.issuer}/device?user_code=${code}`);

    await completeDeviceSignIn(url, code, { login: 'bob@example.com', password: 'demo' });
    const done = await waitUntil(() => (/EXIT=\d+/.test(screen()) ? screen() : undefined), 'the login to finish');
    expect(done).toContain('✓ Logged in as bob@example.com');
    expect(done).toContain('EXIT=0');
  });

  it('says so when the browser cannot be opened, and the printed URL still works', async () => {
    box.env.BROWSER = fakeBrowser('exit 3');
    loginInTerminal(['--issuer', idp.issuer, '--insecure-storage']);
    const text = await waitUntil(() => (/Press Enter to open/.test(screen()) ? screen() : undefined), 'the offer to open a browser');
    tmux('send-keys', 'Enter');
    const failed = await waitUntil(() => (/Could not open a browser/.test(screen()) ? screen() : undefined), 'the failure notice');
    expect(failed).toMatch(/! Could not open a browser \(.*browser\.sh exited with status 3\): open the URL above yourself\./);

    const code = /one-time code: (\S+)/.exec(text)![1]!;
    const uri = /continue in your web browser: (\S+)/.exec(text)![1]!;
    await completeDeviceSignIn(uri, code, { login: 'alice@example.com', password: 'demo' });
    const done = await waitUntil(() => (/EXIT=\d+/.test(screen()) ? screen() : undefined), 'the login to finish');
    expect(done).toContain('✓ Logged in as alice@example.com');
    expect(done).toContain('EXIT=0');
  });

  it('finishes without Enter when the person signs in from another device', async () => {
    box.env.BROWSER = fakeBrowser('exit 0');
    loginInTerminal(['--issuer', idp.issuer, '--insecure-storage']);
    const text = await waitUntil(() => (/Press Enter to open/.test(screen()) ? screen() : undefined), 'the offer to open a browser');
    const code = /one-time code: (\S+)/.exec(text)![1]!;
    const uri = /continue in your web browser: (\S+)/.exec(text)![1]!;
    await completeDeviceSignIn(uri, code, { login: 'carol@example.com', password: 'demo' });
    const done = await waitUntil(() => (/EXIT=\d+/.test(screen()) ? screen() : undefined), 'the login to finish (stdin released)');
    expect(done).toContain('✓ Logged in as carol@example.com');
    expect(done).toContain('EXIT=0');
  });

  it('with --no-browser only prints the URL', async () => {
    loginInTerminal(['--issuer', idp.issuer, '--insecure-storage', '--no-browser']);
    const text = await waitUntil(() => (/continue in your web browser: \S+/.test(screen()) ? screen() : undefined), 'the URL');
    expect(text).not.toContain('Press Enter');
    const code = /one-time code: (\S+)/.exec(text)![1]!;
    const uri = /continue in your web browser: (\S+)/.exec(text)![1]!;
    await completeDeviceSignIn(uri, code, { login: 'alice@example.com', password: 'demo' });
    const done = await waitUntil(() => (/EXIT=\d+/.test(screen()) ? screen() : undefined), 'the login to finish');
    expect(done).not.toContain('Press Enter');
    expect(done).toContain('EXIT=0');
  });
});
