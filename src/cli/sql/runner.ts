// Runs statements for `query`, `run` and the shell and shows their results: the spinner while a
// statement runs, Ctrl-C as a CancelRequest (a second Ctrl-C quits), a reason asked for when the
// policy wants one, the result rendered (table, expanded, JSON, CSV, NDJSON) and paged on a terminal.
import { ScalpleError } from '../../errors.ts';
import { colorEnabled, type CliIo } from '../io.ts';
import { renderResult, type OutputFormat } from '../render.ts';
import { ServerError, type ProxySession, type StatementOutcome } from './session.ts';
import { startSpinner, writePaged, type PagerHooks } from './terminal.ts';

/** After a second Ctrl-C, how long the CancelRequest may take to reach the proxy before the command exits anyway. */
const QUIT_GRACE_MS = 1000;

/** How results are shown; the shell changes these with \x and \timing. */
export interface Display {
  format: OutputFormat;
  /** -x / \x: one record per block. */
  expanded: boolean;
  /** \timing: the time each statement took, on stderr. */
  timing: boolean;
  /** Page long output on a terminal (off with --no-pager). */
  pager: boolean;
}

/**
 * Ctrl-C while a statement runs. `query` and `run` listen to SIGINT; the shell to its line editor
 * (which holds the terminal in raw mode, so Ctrl-C reaches it as a key, not a signal).
 */
export interface Interrupts {
  /** Calls `handler` on each Ctrl-C until the returned function is called. */
  during(handler: () => void): () => void;
}

export interface RunnerDeps {
  io: CliIo;
  session: ProxySession;
  interrupts: Interrupts;
  /** Asks the person for an access reason (a TTY prompt), showing why; undefined when nobody can answer. */
  askReason?: (why: string) => Promise<string | undefined>;
  /** Called on the second Ctrl-C: the command exits (code 2). */
  quit: () => never;
  pagerHooks?: PagerHooks;
}

/** True when the proxy refused a statement because an access reason is required. */
export function needsReason(err: unknown): boolean {
  return err instanceof ServerError && err.sqlstate === '42501' && /reason/i.test(err.serverMessage);
}

/**
 * Runs one statement with the spinner and Ctrl-C cancellation. A statement the proxy refuses for
 * want of a reason is retried once after asking for one (on a terminal).
 */
export async function runStatement(sql: string, values: readonly string[] | undefined, deps: RunnerDeps): Promise<StatementOutcome> {
  try {
    return await runCancellable(sql, values, deps);
  } catch (err) {
    if (!needsReason(err) || !deps.askReason) throw err;
    const reason = await deps.askReason((err as ServerError).serverMessage);
    if (!reason) throw err;
    await deps.session.setReason(reason);
    return runCancellable(sql, values, deps);
  }
}

async function runCancellable(sql: string, values: readonly string[] | undefined, deps: RunnerDeps): Promise<StatementOutcome> {
  const { io, session } = deps;
  let cancelling = false;
  let cancelSent: Promise<void> = Promise.resolve();
  const spinner = startSpinner(io.stderr);
  const stopListening = deps.interrupts.during(() => {
    spinner.stop();
    if (cancelling) {
      io.stderr.write('Cancelled.\n');
      // Quit once the CancelRequest has reached the proxy (at most a second), so the statement stops upstream too.
      void Promise.race([cancelSent, new Promise((r) => setTimeout(r, QUIT_GRACE_MS))]).then(() => deps.quit());
      return;
    }
    cancelling = true;
    io.stderr.write('Cancelling the statement… (Ctrl-C again to quit)\n');
    cancelSent = session.cancel().catch(() => undefined);
  });
  try {
    return await session.execute(sql, values);
  } catch (err) {
    if (cancelling && err instanceof ServerError && err.sqlstate === '57014') {
      throw new ScalpleError('CANCELLED', 'Cancelled: the server stopped the statement (Ctrl-C).');
    }
    throw err;
  } finally {
    spinner.stop();
    stopListening();
  }
}

/** Shows one statement's outcome: its rows on stdout, or its command tag (table format) on stderr. */
export async function showOutcome(outcome: StatementOutcome, display: Display, deps: Pick<RunnerDeps, 'io' | 'pagerHooks'>): Promise<void> {
  const { io } = deps;
  if (outcome.result) {
    let text = '';
    const out = io.stdout as { isTTY?: boolean; columns?: number };
    renderResult(
      outcome.result,
      { write: (s: string) => (text += s), isTTY: out.isTTY === true, ...(out.columns ? { columns: out.columns } : {}) },
      { format: display.format, expanded: display.expanded, color: colorEnabled(io.stdout, io.env), env: io.env, ...(out.isTTY && out.columns ? { width: out.columns } : {}) },
    );
    await writePaged(text, io, { enabled: display.pager, ...(deps.pagerHooks ? { hooks: deps.pagerHooks } : {}) });
  } else if (display.format === 'table' && outcome.tag) {
    io.stderr.write(`${outcome.tag}\n`);
  }
  if (display.timing) io.stderr.write(`Time: ${outcome.durationMs.toFixed(3)} ms\n`);
}

/**
 * Runs a script's statements in order and shows each result; stops at the first error, naming
 * which statement failed when there are several (those before it have run).
 */
export async function runScript(statements: readonly string[], values: readonly string[] | undefined, display: Display, deps: RunnerDeps): Promise<void> {
  for (const [i, sql] of statements.entries()) {
    let outcome: StatementOutcome;
    try {
      outcome = await runStatement(sql, values, deps);
    } catch (err) {
      if (statements.length > 1 && err instanceof Error && !(err instanceof ScalpleError && err.code === 'AUTH_REQUIRED')) {
        err.message = `statement ${i + 1} of ${statements.length}: ${err.message}`;
      }
      throw err;
    }
    await showOutcome(outcome, display, deps);
  }
}

/** Ctrl-C as SIGINT for commands without a line editor. Outside a statement it exits (code 2). */
export function signalInterrupts(io: CliIo, quit: () => never): Interrupts & { dispose(): void; paging(on: boolean): void } {
  let handler: (() => void) | undefined;
  let paging = false;
  const onSigint = () => {
    if (paging) return; // the pager handles its own Ctrl-C
    if (handler) return handler();
    io.stderr.write('\nCancelled.\n');
    quit();
  };
  process.on('SIGINT', onSigint);
  return {
    during(h) {
      handler = h;
      return () => {
        if (handler === h) handler = undefined;
      };
    },
    paging(on) {
      paging = on;
    },
    dispose() {
      process.off('SIGINT', onSigint);
    },
  };
}

/** A reader that stops early (`| head`) closes stdout: stop quietly, as command-line tools do. */
export function quietOnClosedStdout(io: CliIo): void {
  if (io.stdout !== process.stdout) return;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}
