// Runs the real `scalple` launcher (node bin/scalple.js) as a separate process with its own config
// directory, and plays the person at the terminal: reads the one-time code and URL the CLI printed
// on stderr, then signs in with the browser's HTTP steps (test/support/browser.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeJwt, type JWTPayload } from 'jose';
import { completeDeviceSignIn } from '../support/browser.ts';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = path.join(REPO, 'bin', 'scalple.js');

export interface Sandbox {
  dir: string;
  /** $XDG_CONFIG_HOME; the CLI's files are under <configHome>/scalple. */
  configHome: string;
  scalpleDir: string;
  env: NodeJS.ProcessEnv;
  remove(): void;
}

/**
 * A temp HOME and XDG_CONFIG_HOME, and an environment built from scratch: no D-Bus session (so no
 * test touches the developer's real keychain), no display, no $BROWSER; device polling at 50 ms.
 */
export function sandbox(extra: NodeJS.ProcessEnv = {}): Sandbox {
  const dir = mkdtempSync(path.join(tmpdir(), 'scalple-cli-'));
  const configHome = path.join(dir, 'config');
  const home = path.join(dir, 'home');
  mkdirSync(home);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_CONFIG_HOME: configHome,
    LANG: 'C.UTF-8',
    SCALPLE_TEST_DEVICE_POLL_INTERVAL: '0.05',
    ...extra,
  };
  return { dir, configHome, scalpleDir: path.join(configHome, 'scalple'), env, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A running CLI process whose output can be awaited for a pattern. */
export class CliProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  private readonly exited: Promise<CliResult>;
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(command: string, args: string[], env: NodeJS.ProcessEnv, input?: string) {
    this.child = spawn(command, args, { cwd: REPO, env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      this.notify();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      this.notify();
    });
    if (input !== undefined) this.child.stdin!.end(input);
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code) => {
        this.closed = true;
        this.notify();
        resolve({ code, stdout: this.stdout, stderr: this.stderr });
      });
    });
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves with the first match of `pattern` on stderr; rejects if the process ends first. */
  async waitForStderr(pattern: RegExp): Promise<RegExpMatchArray> {
    for (;;) {
      const m = pattern.exec(this.stderr);
      if (m) return m;
      if (this.closed) throw new Error(`CLI exited before printing ${pattern}:\nstdout: ${this.stdout}\nstderr: ${this.stderr}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  done(): Promise<CliResult> {
    return this.exited;
  }
}

export function startCli(args: string[], env: NodeJS.ProcessEnv, input?: string): CliProcess {
  return new CliProcess(process.execPath, [BIN, ...args], env, input);
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<CliResult> {
  return startCli(args, env, input).done();
}

export interface Person {
  login: string;
  password?: string;
}

/** What the person reads on their terminal after `scalple login`. */
export async function readDevicePrompt(cli: CliProcess): Promise<{ userCode: string; verificationUri: string; verificationUriComplete: string | undefined }> {
  const code = await cli.waitForStderr(/one-time code: (\S+)/);
  const uri = await cli.waitForStderr(/continue in your web browser: (\S+)/);
  const complete = /with the code already filled in: (\S+)\)/.exec(cli.stderr);
  return { userCode: code[1]!, verificationUri: uri[1]!, verificationUriComplete: complete?.[1] };
}

/** Runs `scalple login …` and completes the sign-in as `person` from what the CLI printed. */
export async function login(args: string[], env: NodeJS.ProcessEnv, person: Person): Promise<CliResult> {
  const cli = startCli(['login', ...args], env);
  const prompt = await readDevicePrompt(cli);
  await completeDeviceSignIn(prompt.verificationUri, prompt.userCode, { login: person.login, password: person.password ?? 'demo' });
  return cli.done();
}

export function claimsOf(token: string): JWTPayload {
  return decodeJwt(token.trim());
}

/** Resolves once the wall clock is past `epochSeconds` (a token's exp): a wait on that condition. */
export async function untilPast(epochSeconds: number): Promise<void> {
  while (Date.now() <= epochSeconds * 1000) {
    await new Promise((r) => setTimeout(r, Math.max(10, epochSeconds * 1000 - Date.now() + 5)));
  }
}

/** Polls `check` (a file appearing, a pane showing text) until it returns a value. */
export async function waitUntil<T>(check: () => T | undefined | false, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Polls an asynchronous `check` (an audit record committed, a row visible) until it returns a value. */
export async function pollUntil<T>(check: () => Promise<T | undefined | false>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
