// Terminal niceties around a running statement, all of them only on a terminal: a spinner on
// stderr once a statement runs longer than a moment, and a pager for output taller than the
// screen ($PAGER, default `less -FRX`).
import { spawn } from 'node:child_process';
import type { CliIo, OutStream } from '../io.ts';

/** A statement that takes longer than this shows the spinner. */
export const SPINNER_DELAY_MS = 300;
const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const FRAME_MS = 80;

export interface Spinner {
  stop(): void;
}

/** Starts a spinner on `stderr` after SPINNER_DELAY_MS; nothing when stderr is not a terminal. */
export function startSpinner(stderr: OutStream, label = 'running'): Spinner {
  if (!stderr.isTTY) return { stop() {} };
  const started = Date.now();
  let frame = 0;
  let shown = false;
  let ticker: NodeJS.Timeout | undefined;
  const draw = () => {
    shown = true;
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    stderr.write(`\r${FRAMES[frame++ % FRAMES.length]} ${label}… ${seconds}s (Ctrl-C to cancel)\u001b[K`);
  };
  const delay = setTimeout(() => {
    draw();
    ticker = setInterval(draw, FRAME_MS);
  }, SPINNER_DELAY_MS);
  return {
    stop() {
      clearTimeout(delay);
      if (ticker) clearInterval(ticker);
      if (shown) stderr.write('\r\u001b[K');
      shown = false;
    },
  };
}

/** The pager command: $SCALPLE_PAGER, else $PAGER, else `less -FRX`; empty means none. */
export function pagerCommand(env: NodeJS.ProcessEnv): string {
  return (env.SCALPLE_PAGER ?? env.PAGER ?? 'less -FRX').trim();
}

export interface PagerHooks {
  /** Called before the pager takes the terminal (the shell pauses its line editor). */
  before?(): void;
  after?(): void;
}

/**
 * Writes `text` to stdout, through the pager when stdout is a terminal, paging is on and the text
 * is taller than the screen. A pager that cannot start (exit 127) falls back to plain output.
 */
export async function writePaged(text: string, io: CliIo, options: { enabled: boolean; hooks?: PagerHooks }): Promise<void> {
  const out = io.stdout as OutStream & { rows?: number };
  const command = pagerCommand(io.env);
  const rows = out.rows ?? 24;
  const lines = text.split('\n').length - 1;
  if (!options.enabled || !out.isTTY || !command || lines < rows) {
    out.write(text);
    return;
  }
  options.hooks?.before?.();
  try {
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'inherit', 'inherit'], env: { LESSCHARSET: 'utf-8', ...io.env } });
      child.on('error', () => resolve(127));
      child.on('close', (c) => resolve(c));
      child.stdin.on('error', () => undefined); // the person quit the pager before reading it all
      child.stdin.end(text);
    });
    if (code === 127) out.write(text);
  } finally {
    options.hooks?.after?.();
  }
}
