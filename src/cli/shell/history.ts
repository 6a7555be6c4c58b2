// The shell's persistent history: one entry per statement or backslash command (a multi-line
// statement is kept as one line), in $XDG_STATE_HOME/scalple/history (default
// ~/.local/state/scalple/history), readable by its owner only.
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

export const HISTORY_SIZE = 1000;

/** The state directory of the CLI: $XDG_STATE_HOME/scalple, else ~/.local/state/scalple. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_STATE_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'scalple');
  return path.join(env.HOME || homedir(), '.local', 'state', 'scalple');
}

export function historyFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(stateDir(env), 'history');
}

/** A statement as one history line: its lines joined with a space. */
export function historyEntry(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
}

export class History {
  private constructor(
    readonly file: string,
    /** Most recent first, as readline wants it. */
    readonly entries: string[],
  ) {}

  /** Loads the history (the most recent HISTORY_SIZE entries); an unreadable file is an empty history. */
  static load(env: NodeJS.ProcessEnv): History {
    const file = historyFile(env);
    let lines: string[] = [];
    try {
      lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    } catch {
      lines = [];
    }
    if (lines.length > 2 * HISTORY_SIZE) {
      lines = lines.slice(-HISTORY_SIZE);
      try {
        writeFileSync(file, lines.join('\n') + '\n', { mode: 0o600 });
      } catch {
        // a read-only state dir: keep going without trimming
      }
    }
    return new History(file, lines.slice(-HISTORY_SIZE).reverse());
  }

  /** Appends one entry to the file (created 0600 in a 0700 directory). */
  append(entry: string): void {
    if (!entry) return;
    try {
      mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      appendFileSync(this.file, entry + '\n', { mode: 0o600 });
    } catch {
      // history is a convenience: never fail a statement over it
    }
  }
}
