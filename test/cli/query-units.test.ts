// The querying side of the CLI piece by piece, without a server: statement splitting with the real
// parser, named-query parameters (flags, types, prompts' checks), tab completion, history, the
// pager and spinner, and the runner's Ctrl-C and reason handling against a stand-in session.
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { isCompleteInput, splitStatements, sqlLiteral, sqlParserReady } from '../../src/cli/sql/statements.ts';
import { checkParamValue, flagName, runStatementFor, type NamedQueryInfo } from '../../src/cli/sql/named.ts';
import { parseParamFlags, resolveArguments } from '../../src/cli/run.ts';
import { buildCatalog, complete } from '../../src/cli/shell/completion.ts';
import { relationName } from '../../src/cli/shell/meta.ts';
import { History, historyEntry, historyFile } from '../../src/cli/shell/history.ts';
import { pagerCommand, startSpinner, writePaged } from '../../src/cli/sql/terminal.ts';
import { needsReason, runStatement, type Interrupts, type RunnerDeps } from '../../src/cli/sql/runner.ts';
import { ServerError, type ProxySession, type StatementOutcome } from '../../src/cli/sql/session.ts';
import { repeatDecision } from '../../src/cli/sql/repeat.ts';
import { ScalpleError } from '../../src/errors.ts';
import type { CliIo } from '../../src/cli/io.ts';
import { runCli, sandbox } from './harness.ts';

beforeAll(async () => {
  await sqlParserReady();
});

describe('statements', () => {
  it('splits a script with the PostgreSQL parser, not at every semicolon', () => {
    expect(splitStatements("SELECT 1; SELECT ';' AS s")).toEqual(['SELECT 1', "SELECT ';' AS s"]);
    expect(splitStatements('SELECT $$ a; b $$;\n-- c; d\nSELECT 2;')).toEqual(['SELECT $$ a; b $$', 'SELECT 2']);
    expect(splitStatements("SELECT 'é;ü' AS x; SELECT 'ß'")).toEqual(["SELECT 'é;ü' AS x", "SELECT 'ß'"]);
    expect(splitStatements('CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3')).toEqual([
      'CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END',
      'SELECT 3',
    ]);
    expect(splitStatements(';;  ;')).toEqual([]);
    expect(splitStatements('-- only a comment')).toEqual([]);
  });

  it('keeps a script the parser rejects whole, for the server to report', () => {
    expect(splitStatements('SELECT 1; SELEC 2; SELECT 3')).toEqual(['SELECT 1; SELEC 2; SELECT 3']);
  });

  it('knows when typed input is complete', () => {
    expect(isCompleteInput('SELECT 1;')).toBe(true);
    expect(isCompleteInput('SELECT 1')).toBe(false);
    expect(isCompleteInput("SELECT ';")).toBe(false);
    expect(isCompleteInput("SELECT ';';")).toBe(true);
    expect(isCompleteInput('SELECT 1; -- done')).toBe(true);
    expect(isCompleteInput('SELECT 1 /* ; */')).toBe(false);
    expect(isCompleteInput('CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;')).toBe(false);
    expect(isCompleteInput('CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;')).toBe(true);
    expect(isCompleteInput('SELEC 1;')).toBe(true); // a syntax error is the server's to report
  });

  it('quotes literals', () => {
    expect(sqlLiteral("it's")).toBe("'it''s'");
    expect(sqlLiteral('a\\b')).toBe("'a\\b'");
    expect(() => sqlLiteral('a\u0000b')).toThrow(/NUL/);
    expect(runStatementFor('get_order_by_id', ['7', "O'Brien"])).toBe("SELECT * FROM scalple.run('get_order_by_id', '7', 'O''Brien')");
  });
});

describe('running a statement again after the token expired in the middle of it', () => {
  const again = (sql: string, inTransaction = false) => repeatDecision(sql, inTransaction);

  it('runs again only what reads: SELECT, TABLE, VALUES, SHOW, EXPLAIN without ANALYZE', async () => {
    for (const sql of [
      'SELECT id, email FROM customers WHERE id = $1',
      'TABLE orders',
      "VALUES (1, 'a')",
      'SHOW search_path',
      'EXPLAIN SELECT * FROM orders',
      'EXPLAIN (COSTS OFF) SELECT 1',
      'WITH recent AS (SELECT * FROM orders ORDER BY id DESC LIMIT 3) SELECT count(*) FROM recent',
      "SELECT 1; SELECT 'a;b'",
      'SELECT now(), pg_sleep(1) IS NOT NULL',
      'SELECT * FROM scalple.named_queries()',
    ]) {
      expect(await again(sql), sql).toEqual({ repeat: true });
    }
  });

  it('never runs again what may have written, or what it cannot read', async () => {
    for (const sql of [
      "INSERT INTO orders (id, customer_id, total) VALUES (1, 1, 1)",
      'UPDATE orders SET total = total + 1',
      'DELETE FROM orders',
      'MERGE INTO orders o USING orders s ON o.id = s.id WHEN MATCHED THEN DO NOTHING',
      'TRUNCATE orders',
      'CREATE TABLE t (a int)',
      'WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone',
      'SELECT * INTO copy_of_orders FROM orders',
      'SELECT * FROM orders FOR UPDATE',
      'EXPLAIN ANALYZE SELECT 1',
      'EXPLAIN (ANALYZE, COSTS OFF) DELETE FROM orders',
      "SELECT nextval('orders_id_seq')",
      "SELECT set_config('work_mem', '1MB', false)",
      'SELECT pg_advisory_lock(1)',
      'SELECT pg_terminate_backend(42)',
      "SELECT * FROM scalple.run('get_order_by_id', '7')",
      'SELECT 1; DELETE FROM orders',
      "SET scalple.reason = 'x'",
      'CALL do_things()',
      'DO $$ BEGIN END $$',
      'COPY orders TO STDOUT',
      'SELEC 1',
      '',
    ]) {
      expect(await again(sql), sql).toEqual({ repeat: false, reason: 'may-have-written' });
    }
  });

  it('inside a transaction block nothing runs again; a cut COMMIT may or may not have committed', async () => {
    expect(await again('SELECT 1', true)).toEqual({ repeat: false, reason: 'transaction' });
    expect(await again('UPDATE orders SET total = 1', true)).toEqual({ repeat: false, reason: 'transaction' });
    for (const sql of ['COMMIT', 'END', 'COMMIT AND CHAIN', "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'"]) {
      expect(await again(sql, true), sql).toEqual({ repeat: false, reason: 'commit' });
    }
    expect(await again('BEGIN; UPDATE orders SET total = 1; COMMIT')).toEqual({ repeat: false, reason: 'commit' });
  });
});

describe('named-query parameters', () => {
  it('checks values for their type', () => {
    const ok: [string, string][] = [
      ['int', '7'],
      ['int', '-2147483648'],
      ['bigint', '9223372036854775807'],
      ['numeric', '12.50'],
      ['numeric', '-1e3'],
      ['bool', 'true'],
      ['bool', 'F'],
      ['date', '2024-02-29'],
      ['timestamp', '2024-02-29 13:45'],
      ['timestamp', '2024-02-29T13:45:10.123Z'],
      ['uuid', '123e4567-e89b-12d3-a456-426614174000'],
      ['text', ''],
    ];
    for (const [type, v] of ok) expect(checkParamValue(type, v), `${type} ${v}`).toBeUndefined();
    const bad: [string, string][] = [
      ['int', 'seven'],
      ['int', '2147483648'],
      ['int', '1.5'],
      ['bigint', '9223372036854775808'],
      ['numeric', '1,5'],
      ['bool', 'maybe'],
      ['date', '2023-02-29'],
      ['date', '29/02/2024'],
      ['timestamp', '2024-02-29 25:00'],
      ['uuid', '123e4567'],
      ['text', 'a\u0000'],
    ];
    for (const [type, v] of bad) expect(checkParamValue(type, v), `${type} ${v}`).toBeTypeOf('string');
  });

  it('reads parameter flags', () => {
    expect([...parseParamFlags(['--order-id', '7', '--note=a=b', '--amount', '-5'])]).toEqual([
      ['order-id', '7'],
      ['note', 'a=b'],
      ['amount', '-5'],
    ]);
    expect(() => parseParamFlags(['7'])).toThrow(/Unexpected argument "7"/);
    expect(() => parseParamFlags(['--order-id'])).toThrow(/--order-id needs a value/);
    expect(() => parseParamFlags(['--a', '1', '--a', '2'])).toThrow(/given twice/);
    expect(flagName('customer_id')).toBe('customer-id');
  });

  const query: NamedQueryInfo = {
    name: 'orders_of_customer',
    description: '',
    params: [
      { name: 'customer_id', type: 'bigint' },
      { name: 'since', type: 'date' },
    ],
    roles: [],
  };
  const noTty: CliIo = { stdout: { write: () => true }, stderr: { write: () => true }, stdin: new PassThrough(), env: {} };

  it('maps flags to arguments in call order (kebab or snake case)', async () => {
    expect(await resolveArguments(query, new Map([['since', '2024-01-01'], ['customer_id', '5']]), noTty)).toEqual(['5', '2024-01-01']);
    expect(await resolveArguments(query, new Map([['customer-id', '5'], ['since', '2024-01-01']]), noTty)).toEqual(['5', '2024-01-01']);
  });

  it('refuses unknown flags naming the valid ones, and names missing parameters without a terminal', async () => {
    await expect(resolveArguments(query, new Map([['customer', '5']]), noTty)).rejects.toThrow('Unknown option --customer for orders_of_customer: its parameters are --customer-id (64-bit integer), --since (date, YYYY-MM-DD)');
    const missing = resolveArguments(query, new Map(), noTty);
    await expect(missing).rejects.toMatchObject({ code: 'USAGE' });
    await expect(missing).rejects.toThrow('Missing parameters for orders_of_customer: --customer-id (64-bit integer), --since (date, YYYY-MM-DD).');
  });
});

describe('tab completion', () => {
  const catalog = buildCatalog([
    ['public', 'customers', 'id'],
    ['public', 'customers', 'email'],
    ['public', 'customers', 'plan_tier'],
    ['public', 'orders', 'customer_id'],
    ['billing', 'invoices', 'id'],
  ]);

  it('completes table and column names by prefix, case-insensitively', () => {
    expect(complete('SELECT pla', catalog)).toEqual([['plan_tier'], 'pla']);
    expect(complete('SELECT * FROM Cust', catalog)).toEqual([['customers', 'customer_id'], 'Cust']);
    expect(complete('SELECT * FROM bill', catalog)).toEqual([['billing.invoices'], 'bill']);
  });

  it("completes a table's columns after `table.`, tables only after \\d, and backslash commands", () => {
    expect(complete('SELECT customers.e', catalog)).toEqual([['customers.email'], 'customers.e']);
    expect(complete('\\d cu', catalog)).toEqual([['customers'], 'cu']);
    expect(complete('\\ti', catalog)).toEqual([['\\timing'], '\\ti']);
    expect(complete('SELECT x', undefined)).toEqual([[], 'x']);
  });

  it('reads relation names as PostgreSQL does', () => {
    expect(relationName('Customers')).toEqual({ schema: '', name: 'customers' });
    expect(relationName('billing.Invoices')).toEqual({ schema: 'billing', name: 'invoices' });
    expect(relationName('"My Schema"."T.x"')).toEqual({ schema: 'My Schema', name: 'T.x' });
  });
});

describe('history', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps one line per statement in a 0600 file under XDG_STATE_HOME, most recent first', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'scalple-hist-'));
    const env = { XDG_STATE_HOME: path.join(dir, 'state') };
    expect(historyEntry('SELECT id,\n   email\nFROM t;')).toBe('SELECT id, email FROM t;');
    const h = History.load(env);
    expect(h.entries).toEqual([]);
    h.append('SELECT 1;');
    h.append('\\d');
    const file = historyFile(env);
    expect(file).toBe(path.join(dir, 'state', 'scalple', 'history'));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(History.load(env).entries).toEqual(['\\d', 'SELECT 1;']);
  });

  it('trims a long history file to the most recent entries', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'scalple-hist-'));
    const env = { XDG_STATE_HOME: dir };
    mkdirSync(path.join(dir, 'scalple'));
    writeFileSync(historyFile(env), Array.from({ length: 2500 }, (_, i) => `SELECT ${i};`).join('\n') + '\n');
    const h = History.load(env);
    expect(h.entries).toHaveLength(1000);
    expect(h.entries[0]).toBe('SELECT 2499;');
    expect(readFileSync(historyFile(env), 'utf8').split('\n').filter(Boolean)).toHaveLength(1000);
  });
});

describe('terminal output', () => {
  let dir: string;
  afterEach(() => {
    vi.useRealTimers();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function ioWith(out: { isTTY?: boolean; rows?: number }, env: NodeJS.ProcessEnv): CliIo & { written: () => string } {
    let written = '';
    return { stdout: { ...out, write: (s: string) => (written += s) }, stderr: { write: () => true }, stdin: new PassThrough(), env, written: () => written };
  }

  it('pages only on a terminal, only when taller than the screen, through $PAGER', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'scalple-pager-'));
    const paged = path.join(dir, 'paged');
    const env = { PAGER: `cat > '${paged}'`, PATH: process.env.PATH };
    const long = Array.from({ length: 30 }, (_, i) => `line ${i}\n`).join('');

    const pipe = ioWith({ isTTY: false }, env);
    await writePaged(long, pipe, { enabled: true });
    expect(pipe.written()).toBe(long);

    const short = ioWith({ isTTY: true, rows: 40 }, env);
    await writePaged(long, short, { enabled: true });
    expect(short.written()).toBe(long);
    expect(existsSync(paged)).toBe(false);

    const tty = ioWith({ isTTY: true, rows: 20 }, env);
    const hooks = { before: vi.fn(), after: vi.fn() };
    await writePaged(long, tty, { enabled: true, hooks });
    expect(tty.written()).toBe('');
    expect(readFileSync(paged, 'utf8')).toBe(long);
    expect(hooks.before).toHaveBeenCalledOnce();
    expect(hooks.after).toHaveBeenCalledOnce();

    const off = ioWith({ isTTY: true, rows: 20 }, env);
    await writePaged(long, off, { enabled: false });
    expect(off.written()).toBe(long);
  });

  it('falls back to plain output when the pager cannot start', async () => {
    const io = ioWith({ isTTY: true, rows: 5 }, { PAGER: 'no-such-pager-xyz', PATH: process.env.PATH });
    const text = Array.from({ length: 10 }, (_, i) => `${i}\n`).join('');
    await writePaged(text, io, { enabled: true });
    expect(io.written()).toBe(text);
  });

  it('chooses the pager from SCALPLE_PAGER, PAGER, else less -FRX; empty disables', () => {
    expect(pagerCommand({})).toBe('less -FRX');
    expect(pagerCommand({ PAGER: 'more' })).toBe('more');
    expect(pagerCommand({ PAGER: 'more', SCALPLE_PAGER: 'most' })).toBe('most');
    expect(pagerCommand({ PAGER: '' })).toBe('');
  });

  it('shows the spinner on a terminal after a moment, and clears it', () => {
    vi.useFakeTimers();
    let text = '';
    const spinner = startSpinner({ isTTY: true, write: (s: string) => (text += s) });
    vi.advanceTimersByTime(250);
    expect(text).toBe('');
    vi.advanceTimersByTime(100);
    expect(text).toMatch(/^\r⠋ running… 0\.\ds \(Ctrl-C to cancel\)\u001b\[K$/);
    spinner.stop();
    expect(text.endsWith('\r\u001b[K')).toBe(true);

    let piped = '';
    const none = startSpinner({ isTTY: false, write: (s: string) => (piped += s) });
    vi.advanceTimersByTime(1000);
    none.stop();
    expect(piped).toBe('');
  });
});

describe('runner', () => {
  function dbError(code: string, message: string): pg.DatabaseError {
    const e = new pg.DatabaseError(message, 0, 'error');
    e.code = code;
    e.severity = 'ERROR';
    return e;
  }
  const outcome: StatementOutcome = { result: undefined, maskedColumns: [], tag: 'SELECT 1', durationMs: 1 };

  function harness(session: Partial<ProxySession>) {
    let handler: (() => void) | undefined;
    let stderr = '';
    const interrupts: Interrupts = {
      during(h) {
        handler = h;
        return () => (handler = undefined);
      },
    };
    const quit = vi.fn(() => undefined as never);
    const deps: RunnerDeps = {
      io: { stdout: { write: () => true }, stderr: { write: (s: string) => (stderr += s) }, stdin: new PassThrough(), env: {} },
      session: session as ProxySession,
      interrupts,
      quit,
    };
    return { deps, quit, press: () => handler?.(), stderr: () => stderr };
  }

  it('Ctrl-C sends a CancelRequest; the server stopping the statement is a cancellation (exit 2)', async () => {
    let reject: (e: unknown) => void = () => undefined;
    const cancel = vi.fn(async () => reject(new ServerError(dbError('57014', 'canceling statement due to user request'))));
    const h = harness({ execute: () => new Promise<StatementOutcome>((_, r) => (reject = r)), cancel });
    const running = runStatement('SELECT pg_sleep(60)', undefined, h.deps);
    h.press();
    await expect(running).rejects.toMatchObject({ code: 'CANCELLED', message: 'Cancelled: the server stopped the statement (Ctrl-C).' });
    expect(cancel).toHaveBeenCalledOnce();
    expect(h.stderr()).toBe('Cancelling the statement… (Ctrl-C again to quit)\n');
  });

  it('a second Ctrl-C quits once the CancelRequest is out', async () => {
    let cancelDone: () => void = () => undefined;
    const cancel = vi.fn(() => new Promise<void>((r) => (cancelDone = r)));
    const h = harness({ execute: () => new Promise<StatementOutcome>(() => undefined), cancel });
    void runStatement('SELECT pg_sleep(60)', undefined, h.deps);
    h.press();
    h.press();
    expect(h.stderr()).toBe('Cancelling the statement… (Ctrl-C again to quit)\nCancelled.\n');
    await new Promise((r) => setTimeout(r, 10));
    expect(h.quit).not.toHaveBeenCalled();
    cancelDone();
    await vi.waitFor(() => expect(h.quit).toHaveBeenCalledOnce());
  });

  it('asks for a reason when the proxy requires one, sets it and runs the statement again', async () => {
    const refusal = new ServerError(dbError('42501', 'a reason is required for statements that touch personal data (rule roles.dba.require_reason)'));
    expect(needsReason(refusal)).toBe(true);
    expect(needsReason(new ServerError(dbError('42501', 'policy denies reading public.payments')))).toBe(false);
    const execute = vi.fn().mockRejectedValueOnce(refusal).mockResolvedValueOnce(outcome);
    const setReason = vi.fn(async () => undefined);
    const h = harness({ execute, setReason });
    const askReason = vi.fn(async () => 'INC-1');
    await expect(runStatement('SELECT email FROM customers', undefined, { ...h.deps, askReason })).resolves.toBe(outcome);
    expect(askReason).toHaveBeenCalledWith(refusal.serverMessage);
    expect(setReason).toHaveBeenCalledWith('INC-1');
    expect(execute).toHaveBeenCalledTimes(2);

    // Nobody to ask: the refusal stands.
    const again = harness({ execute: vi.fn().mockRejectedValue(refusal) });
    await expect(runStatement('SELECT email FROM customers', undefined, { ...again.deps, askReason: async () => undefined })).rejects.toBe(refusal);
  });

  it("server errors keep the server's message, a hint as a second line, and map 42501 to a policy denial", () => {
    const e = dbError('42501', 'policy denies reading public.payments (roles.support.deny: public.payments)');
    e.hint = 'ask for the billing role';
    const err = new ServerError(e);
    expect(err.message).toBe('policy denies reading public.payments (roles.support.deny: public.payments)\nhint: ask for the billing role');
    expect(err.code).toBe('POLICY_DENIED');
    expect(err.sqlstate).toBe('42501');
    expect(new ServerError(dbError('22012', 'division by zero'))).toBeInstanceOf(ScalpleError);
  });
});

describe('--help', () => {
  /** The long flags a help text documents in its Options section. */
  function documentedFlags(help: string): Set<string> {
    const options = help.split(/^Options:$/m)[1]!.split(/^\S/m)[0]!;
    return new Set([...options.matchAll(/--[a-z][a-z-]*/g)].map((m) => m[0]));
  }

  it.each([
    ['query', ['--file', '--param', '--format', '--expanded', '--reason', '--profile', '--no-pager'], []],
    ['shell', ['--expanded', '--reason', '--profile', '--no-pager'], []],
    ['queries', ['--format', '--profile'], []],
    ['run', ['--format', '--expanded', '--reason', '--profile', '--no-pager'], ['--order-id']],
  ])('`scalple %s --help` documents its options and gives examples that use only them', async (command, flags, paramFlags) => {
    const box = sandbox();
    try {
      const r = await runCli([command, '--help'], box.env);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`^Usage: scalple ${command} `));
      const documented = documentedFlags(r.stdout);
      for (const f of flags) expect(documented, f).toContain(f);
      const examples = r.stdout.split(/^Examples?:$/m)[1];
      expect(examples, 'an example').toBeTruthy();
      const used = [...examples!.matchAll(/(?<=\s)--[a-z][a-z-]*/g)].map((m) => m[0]);
      for (const f of used) expect([...documented, ...paramFlags], `example flag ${f}`).toContain(f);
    } finally {
      box.remove();
    }
  });

  it('`scalple --help` lists the query commands', async () => {
    const box = sandbox();
    try {
      const r = await runCli(['--help'], box.env);
      expect(r.code).toBe(0);
      for (const c of ['query [options] [sql]', 'shell [options]', 'queries [options]', 'run [options] <name> [params...]']) expect(r.stdout).toContain(c);
    } finally {
      box.remove();
    }
  });
});
