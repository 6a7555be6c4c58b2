// `scalple shell` (and `scalple` alone on a terminal): the interactive session that replaces psql
// for daily use — multi-line statements ended by `;`, persistent history, \d, \x, \timing, \q, \?,
// tab completion of table and column names, results rendered as `scalple query` renders them.
import readline from 'node:readline';
import type { Command } from 'commander';
import { ScalpleError, errorMessage } from '../../errors.ts';
import { chalkFor, processIo, type CliIo } from '../io.ts';
import { ProxySession } from '../sql/session.ts';
import { isCompleteInput, splitStatements, sqlParserReady } from '../sql/statements.ts';
import { quietOnClosedStdout, runStatement, showOutcome, type Display, type Interrupts, type RunnerDeps } from '../sql/runner.ts';
import { catalogLoader, complete } from './completion.ts';
import { History, historyEntry } from './history.ts';
import { runMeta } from './meta.ts';

export interface ShellOptions {
  expanded?: boolean;
  reason?: string;
  profile?: string;
  /** false with --no-pager. */
  pager: boolean;
}

export function registerShellCommand(program: Command, io: CliIo = processIo(), runF: (opts: ShellOptions, io: CliIo) => Promise<void> = runShell): void {
  program
    .command('shell')
    .description('Interactive SQL session through the proxy (psql-like); also what `scalple` alone starts on a terminal')
    .option('-x, --expanded', 'start with expanded output (one record per block)')
    .option('--reason <text>', 'why you access this data (e.g. a ticket); recorded with every statement of the session')
    .option('--profile <name>', 'profile to use (default: $SCALPLE_PROFILE, else "default")')
    .option('--no-pager', 'do not page long output')
    .addHelpText(
      'after',
      `
Statements end with ";" and may span several lines. Backslash commands: \\d, \\d NAME, \\x, \\timing,
\\q, \\? (help). Tab completes table and column names. History is kept in
$XDG_STATE_HOME/scalple/history (default ~/.local/state/scalple/history). Ctrl-C cancels the
running statement (twice quits) or clears the line; Ctrl-D or \\q quits.

Example:
  $ scalple shell
  app=> SELECT id, email
  app-> FROM customers LIMIT 2;
  app=> \\d customers`,
    )
    .action(async (opts: ShellOptions) => runF(opts, io));
}

export async function runShell(opts: ShellOptions, io: CliIo): Promise<void> {
  await sqlParserReady();
  quietOnClosedStdout(io);
  const interactive = io.stdin.isTTY === true;
  let rl: readline.Interface | undefined;
  const session = await ProxySession.open({
    ...(opts.profile ? { profile: opts.profile } : {}),
    env: io.env,
    stderr: io.stderr,
    applicationName: 'scalple shell',
    ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
    // Said at once, over the prompt, rather than when the next statement fails.
    onEnded: (reason, tokenExpired) => {
      const what = tokenExpired ? '! The proxy ended the session (token expired); the next statement reconnects with a refreshed token.' : `! The proxy ended the session: ${reason}`;
      io.stderr.write(`${interactive ? '\r\u001b[K' : ''}${what}\n`);
      if (interactive) rl?.prompt(true);
    },
  });
  const c = chalkFor(io.stderr, io.env);
  const history = History.load(io.env);
  const loadCatalog = catalogLoader(() => session);

  rl = readline.createInterface({
    input: io.stdin,
    output: io.stderr as unknown as NodeJS.WritableStream,
    terminal: interactive && io.stderr.isTTY === true,
    history: [...history.entries],
    historySize: 1000,
    removeHistoryDuplicates: true,
    tabSize: 4,
    completer: (line: string, callback: (err: Error | null, result: [string[], string]) => void) => {
      loadCatalog().then(
        (catalog) => callback(null, complete(line, catalog)),
        () => callback(null, [[], line]),
      );
    },
  });
  const rlHistory = (rl as unknown as { history?: string[] }).history;

  // Ctrl-C reaches the line editor as a key: cancel the running statement, or clear the line.
  let onInterrupt: (() => void) | undefined;
  let buffer: string[] = [];
  const interrupts: Interrupts = {
    during(handler) {
      onInterrupt = handler;
      return () => {
        if (onInterrupt === handler) onInterrupt = undefined;
      };
    },
  };
  const prompt = () => {
    const db = session.target.database ?? 'scalple';
    rl.setPrompt(buffer.length ? `${db}-> ` : `${db}=${session.inTransaction ? '*' : ''}> `);
    if (interactive) rl.prompt();
  };
  // A reason being asked for: Ctrl-C gives up on it (the refusal stands).
  let abandonQuestion: (() => void) | undefined;
  const ask = (question: string): Promise<string | undefined> =>
    new Promise((resolve) => {
      const abort = new AbortController();
      abandonQuestion = () => {
        abort.abort();
        resolve(undefined);
      };
      rl.question(question, { signal: abort.signal }, (answer) => {
        abandonQuestion = undefined;
        resolve(answer.trim() || undefined);
      });
    });
  rl.on('SIGINT', () => {
    if (onInterrupt) return onInterrupt();
    if (abandonQuestion) {
      const abandon = abandonQuestion;
      abandonQuestion = undefined;
      io.stderr.write('^C\n');
      return abandon();
    }
    buffer = [];
    rl.write(null, { ctrl: true, name: 'u' });
    io.stderr.write('^C\n');
    prompt();
  });

  let exitCode: number | undefined;
  let failed = false;
  const quit = (): never => {
    rl.close();
    process.exit(2);
  };
  const deps: RunnerDeps = {
    io,
    session,
    interrupts,
    quit,
    askReason: (why: string) => {
      if (!interactive) return Promise.resolve(undefined);
      io.stderr.write(`! ${why}\n`);
      return ask('Reason for this access (recorded in the audit log): ');
    },
    // The pager lets Ctrl-C through as a signal to the whole terminal group: it is the pager's.
    pagerHooks: {
      before: () => {
        rl.pause();
        process.on('SIGINT', ignoreSignal);
      },
      after: () => {
        process.off('SIGINT', ignoreSignal);
        rl.resume();
      },
    },
  };
  const display: Display = { format: 'table', expanded: opts.expanded === true, timing: false, pager: opts.pager };

  /** Replaces the lines of a multi-line statement in the up-arrow history with the whole statement. */
  const remember = (lines: string[]) => {
    const entry = historyEntry(lines.join('\n'));
    if (rlHistory && interactive) {
      const typed = lines.filter((l) => l.trim()).length;
      rlHistory.splice(0, Math.min(typed, rlHistory.length));
      if (rlHistory[0] !== entry) rlHistory.unshift(entry);
    }
    history.append(entry);
  };

  if (interactive) {
    io.stderr.write(`${c.bold('scalple shell')} — ${session.who} at ${session.target.host}:${session.target.port}/${session.target.database ?? ''}. Type \\? for help, \\q to quit.\n`);
  }
  prompt();
  try {
    for await (const line of rl) {
      if (!buffer.length && /^\s*\\/.test(line)) {
        remember([line]);
        try {
          if ((await runMeta(line, { io, display, session, deps })) === 'quit') break;
        } catch (err) {
          failed = true;
          exitCode = reportShellError(err, io);
          if (exitCode !== undefined) break;
        }
        prompt();
        continue;
      }
      if (!buffer.length && !line.trim()) {
        prompt();
        continue;
      }
      buffer.push(line);
      const text = buffer.join('\n');
      if (!isCompleteInput(text)) {
        prompt();
        continue;
      }
      const lines = buffer;
      buffer = [];
      remember(lines);
      for (const sql of splitStatements(text)) {
        try {
          const outcome = await runStatement(sql, undefined, deps);
          await showOutcome(outcome, display, deps);
        } catch (err) {
          failed = true;
          exitCode = reportShellError(err, io);
          break;
        }
      }
      if (exitCode !== undefined) break;
      prompt();
    }
  } finally {
    rl.close();
    await session.close();
  }
  if (buffer.length && exitCode === undefined) io.stderr.write('! The last statement had no ";" and was not run.\n');
  // A script piped into the shell reports its errors in the exit code, as `scalple query` does.
  if (exitCode === undefined && failed && !interactive) exitCode = 1;
  if (exitCode !== undefined) process.exitCode = exitCode;
}

/** Prints a statement's error and carries on; returns an exit code when the shell must stop (login needed). */
function reportShellError(err: unknown, io: CliIo): number | undefined {
  io.stderr.write(`error: ${errorMessage(err)}\n`);
  if (err instanceof ScalpleError && err.code === 'AUTH_REQUIRED') return 4;
  return undefined;
}

function ignoreSignal(): void {}
