// The interactive side of querying on a real terminal (tmux's pseudo-terminal), end to end through
// the real proxy: the shell (multi-line statements, \x, \d, \d TABLE, \timing, tab completion,
// history, \q), prompts for missing named-query parameters and for a required reason, the spinner
// and Ctrl-C cancelling a running statement, the pager, colour, and the automatic expanded layout.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { startStack, type Stack } from '../support/stack.ts';
import { CLI_FIXTURES_SQL, cliTestPolicy } from './policy.ts';
import { BIN, login, pollUntil, sandbox, waitUntil, type Sandbox } from './harness.ts';

let stack: Stack;
const people = new Map<string, Sandbox>();
const terminals: Terminal[] = [];
/** Every terminal gets a socket of its own: a name reused right after kill-server can meet the dying server. */
let terminalCount = 0;

/** One tmux server (its own socket) running one command in a pane of the given size. */
class Terminal {
  private readonly socket: string;
  constructor(
    private readonly box: Sandbox,
    command: string[],
    options: { width?: number; height?: number; env?: Record<string, string> } = {},
  ) {
    this.socket = `scalple-q-${path.basename(box.dir)}-${++terminalCount}`;
    const env = Object.entries(options.env ?? {})
      .map(([k, v]) => `${k}='${v}' `)
      .join('');
    const quoted = [process.execPath, BIN, ...command].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    this.tmux('new-session', '-d', '-x', String(options.width ?? 200), '-y', String(options.height ?? 50), `${env}${quoted}; echo "EXIT=$?"; exec cat`);
    terminals.push(this);
  }

  tmux(...args: string[]): string {
    const r = spawnSync('tmux', ['-L', this.socket, '-f', '/dev/null', ...args], { env: { ...this.box.env, TERM: 'xterm-256color', TMUX_TMPDIR: this.box.dir }, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tmux ${args[0]} failed: ${r.stderr}`);
    return r.stdout;
  }

  /** The pane's text (wrapped lines joined); with `escapes`, its colours as ANSI sequences. */
  screen(escapes = false): string {
    return this.tmux('capture-pane', '-p', '-J', ...(escapes ? ['-e'] : []), '-S', '-200');
  }

  /** Types text literally (no key names), then the given keys (Enter, Tab, C-c…). */
  type(text: string, ...keys: string[]): void {
    // tmux reads an argument ending in ";" as a command separator: send a final ";" as its byte.
    const body = text.endsWith(';') ? text.slice(0, -1) : text;
    if (body) this.tmux('send-keys', '-l', body);
    if (body !== text) this.tmux('send-keys', '-H', '3b');
    if (keys.length) this.tmux('send-keys', ...keys);
  }

  /** Waits until the screen matches; returns the screen. */
  async waitFor(pattern: RegExp | string, what = String(pattern)): Promise<string> {
    const test = (s: string) => (typeof pattern === 'string' ? s.includes(pattern) : pattern.test(s));
    return waitUntil(() => {
      const s = this.screen();
      return test(s) ? s : undefined;
    }, `${what}; screen:\n${this.screen()}`);
  }

  /** Counts occurrences on screen (to wait for the next prompt after one already shown). */
  count(text: string): number {
    return this.screen().split(text).length - 1;
  }

  async waitForCount(text: string, n: number): Promise<string> {
    return waitUntil(() => (this.count(text) >= n ? this.screen() : undefined), `${n}× "${text}"; screen:\n${this.screen()}`);
  }

  kill(): void {
    try {
      this.tmux('kill-server');
    } catch {
      // already gone
    }
  }
}

async function person(email: string): Promise<Sandbox> {
  const box = sandbox({ TERM: 'xterm-256color' });
  const r = await login(['--issuer', stack.idp.issuer, '--no-browser', '--insecure-storage', '--proxy', `127.0.0.1:${stack.proxyPort}`, '--database', 'app'], box.env, { login: email });
  expect(r.stderr).toContain(`✓ Logged in as ${email}`);
  people.set(email, box);
  return box;
}

beforeAll(async () => {
  if (!existsSync('/usr/bin/tmux')) throw new Error('this test needs tmux: apt-get install tmux');
  stack = await startStack({ poolMode: 'transaction', config: cliTestPolicy() });
  await stack.sql(CLI_FIXTURES_SQL);
  await person('alice@example.com');
  await person('carol@example.com');
});
afterEach(() => {
  for (const t of terminals.splice(0)) t.kill();
});
afterAll(async () => {
  for (const b of people.values()) b.remove();
  await stack?.stop();
});

const alice = () => people.get('alice@example.com')!;
const carol = () => people.get('carol@example.com')!;

describe('scalple shell on a terminal', () => {
  it('runs multi-line statements, toggles \\x and \\timing, describes tables, completes names, keeps history, quits with \\q', async () => {
    const t = new Terminal(alice(), ['shell'], { env: { PAGER: '' } });
    await t.waitFor('app=> ', 'the prompt');
    expect(t.screen()).toContain('scalple shell — alice@example.com at 127.0.0.1:');

    // A statement over two lines: the continuation prompt, then the result with masking marked.
    t.type('SELECT id, email', 'Enter');
    await t.waitFor('app-> ', 'the continuation prompt');
    t.type('FROM customers WHERE id = 9001;', 'Enter');
    let s = await t.waitFor('(1 row · masked: email)');
    expect(s).toMatch(/│ +id │ email ⊘ +│/);
    expect(s).toMatch(/│ 9001 │ ⊘ a\*\*\*@\*\*\*\.org │/);

    // \x: one record per block.
    t.type('\\x', 'Enter');
    await t.waitFor('Expanded display is on.');
    t.type('SELECT id, region FROM customers WHERE id = 9002;', 'Enter');
    s = await t.waitFor('-[ RECORD 1 ]');
    expect(s).toMatch(/region \| APAC/);
    t.type('\\x off', 'Enter');
    await t.waitFor('Expanded display is off.');

    // \d and \d TABLE, through the proxy.
    t.type('\\d', 'Enter');
    s = await t.waitFor(/│ public +│ payments +│ table +│/);
    expect(s).toMatch(/│ public +│ customers +│ table +│/);
    t.type('\\d customers', 'Enter');
    s = await t.waitFor('Table "public.customers"');
    s = await t.waitFor(/│ date_of_birth +│ date +│/);
    expect(s).toMatch(/│ email +│ text +│ not null +│/);
    expect(s).toMatch(/│ iban +│ text +│ +│/);

    // Tab completes column and table names loaded from information_schema.columns.
    t.type('SELECT stat', 'Tab');
    await t.waitFor('SELECT status');
    t.type(' FROM ord', 'Tab');
    await t.waitFor('SELECT status FROM orders');
    t.type(' WHERE id = 9002;', 'Enter');
    s = await t.waitFor(/│ status +│[\s\S]*│ refunded │/);

    // \timing.
    t.type('\\timing', 'Enter');
    await t.waitFor('Timing is on.');
    t.type('SELECT 42 AS answer;', 'Enter');
    await t.waitFor(/Time: \d+\.\d{3} ms/);

    // An error is shown and the shell carries on.
    t.type('SELECT 1/0;', 'Enter');
    await t.waitFor('error: division by zero');

    t.type('\\?', 'Enter');
    await t.waitFor('\\d NAME           describe a table or view');
    t.type('\\q', 'Enter');
    await t.waitFor('EXIT=0');

    // History: the two-line statement is one entry; the up arrow brings it back next time.
    const historyFile = path.join(alice().dir, 'home', '.local', 'state', 'scalple', 'history');
    const history = readFileSync(historyFile, 'utf8').split('\n');
    expect(history).toContain('SELECT id, email FROM customers WHERE id = 9001;');
    expect(history).toContain('\\d customers');
    const again = new Terminal(alice(), ['shell'], { env: { PAGER: '' } });
    await again.waitFor('app=> ');
    for (let i = 0; i < 8; i++) again.type('', 'Up'); // \q, \?, 1/0, 42, \timing, status, \d customers, \d
    await again.waitFor(/app=> \\d\s*$/m, 'history entry \\d');
    again.type('', 'Up', 'Up');
    await again.waitFor(/app=> SELECT id, region FROM customers WHERE id = 9002;\s*$/m);
    again.type('', 'C-u', 'C-d'); // clear the recalled line; Ctrl-D on an empty line quits
    await again.waitFor('EXIT=0');
  });

  it('`scalple` alone on a terminal starts the shell', async () => {
    const t = new Terminal(alice(), []);
    await t.waitFor('app=> ');
    t.type('\\q', 'Enter');
    await t.waitFor('EXIT=0');
  });

  it('Ctrl-C at the prompt clears the statement being typed', async () => {
    const t = new Terminal(alice(), ['shell']);
    await t.waitFor('app=> ');
    t.type('SELECT this is', 'Enter');
    await t.waitFor('app-> ');
    t.type('never run', 'C-c');
    await t.waitForCount('app=> ', 2);
    t.type('SELECT 7 AS seven;', 'Enter');
    const s = await t.waitFor('(1 row)');
    expect(s).not.toContain('syntax error');
    t.type('\\q', 'Enter');
    await t.waitFor('EXIT=0');
  });
});

describe('scalple shell on a terminal: cancelling and reasons', () => {
  it('Ctrl-C cancels a running statement and the shell carries on', async () => {
    const t = new Terminal(alice(), ['shell']);
    await t.waitFor('app=> ');
    t.type('SELECT pg_sleep(62);', 'Enter');
    await t.waitFor(/running… \d+\.\ds/, 'the spinner');
    t.type('', 'C-c');
    await t.waitFor('error: Cancelled: the server stopped the statement (Ctrl-C).');
    await t.waitForCount('app=> ', 2);
    t.type('SELECT 8 AS eight;', 'Enter');
    await t.waitFor(/│ eight │[\s\S]*\(1 row\)/);
    t.type('\\q', 'Enter');
    await t.waitFor('EXIT=0');
  });

  it('asks for a reason when the policy requires one, then keeps it for the session', async () => {
    const t = new Terminal(carol(), ['shell']);
    await t.waitFor('app=> ');
    t.type('SELECT email FROM customers WHERE id = 9001;', 'Enter');
    await t.waitFor('Reason for this access (recorded in the audit log): ');
    t.type('INC-88', 'Enter');
    await t.waitFor('ada@example.org');
    t.type('SELECT email FROM customers WHERE id = 9002;', 'Enter');
    const s = await t.waitFor('grace@example.org');
    expect(s.split('Reason for this access').length - 1).toBe(1);
    t.type('\\q', 'Enter');
    await t.waitFor('EXIT=0');
    await stack.flushAudit();
    const rows = await pollUntil(async () => {
      const r = await stack.sql<{ reason: string }>("SELECT reason FROM scalple_audit.records WHERE record_type = 'intent' AND email = 'carol@example.com' AND statement LIKE '%id = 900_%' AND application_name = 'scalple shell' AND reason IS NOT NULL");
      return r.rows.length >= 2 ? r.rows : undefined;
    }, 'the audit records');
    expect(rows).toEqual([{ reason: 'INC-88' }, { reason: 'INC-88' }]);
  });
});

describe('scalple shell on a terminal: pager and prompts', () => {
  it('pages long results through less; Ctrl-C in the pager does not end the shell', async () => {
    const t = new Terminal(alice(), ['shell'], { height: 20, env: { PAGER: 'less -FRX' } });
    await t.waitFor('app=> ');
    t.type('SELECT g AS n FROM generate_series(1, 60) g;', 'Enter');
    await t.waitFor(/│ +10 │/, 'the first page in less');
    expect(t.screen()).not.toContain('(60 rows)');
    t.type('', 'C-c');
    t.type('', 'G'); // less: to the end
    await t.waitFor('(60 rows)');
    t.type('', 'q');
    await t.waitForCount('app=> ', 2);
    t.type('SELECT 9 AS nine;', 'Enter');
    await t.waitFor(/│ nine │/);
    t.type('\\q', 'Enter');
    await t.waitFor('EXIT=0');
  });

  it('Ctrl-C while a reason is asked for gives up: the refusal stands and the shell carries on', async () => {
    const t = new Terminal(carol(), ['shell']);
    await t.waitFor('app=> ');
    t.type('SELECT email FROM customers WHERE id = 9001;', 'Enter');
    await t.waitFor('Reason for this access (recorded in the audit log): ');
    t.type('', 'C-c');
    await t.waitFor('error: a reason is required for statements that touch personal data');
    await t.waitForCount('app=> ', 2);
    t.type('\\q', 'Enter');
    await t.waitFor('EXIT=0');
  });
});

describe('scalple query on a terminal', () => {
  it('shows a spinner while a statement runs; Ctrl-C cancels it (exit 2)', async () => {
    const t = new Terminal(alice(), ['query', 'SELECT pg_sleep(60)']);
    await t.waitFor(/running… \d+\.\ds \(Ctrl-C to cancel\)/, 'the spinner');
    t.type('', 'C-c');
    await t.waitFor('Cancelling the statement… (Ctrl-C again to quit)');
    const s = await t.waitFor('EXIT=2');
    expect(s).toContain('error: Cancelled: the server stopped the statement (Ctrl-C).');
    // The upstream statement is gone, not left running.
    await pollUntil(async () => (await stack.sql("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()")).rowCount === 0, 'the statement to stop');
  });

  it('a second Ctrl-C quits (exit 2), and the statement still stops upstream', async () => {
    const t = new Terminal(alice(), ['query', 'SELECT pg_sleep(61)']);
    await t.waitFor(/running…/, 'the spinner');
    t.type('', 'C-c');
    await t.waitFor('Cancelling the statement…');
    t.type('', 'C-c');
    const s = await t.waitFor('EXIT=2');
    // Either the second Ctrl-C quit ("Cancelled.") or the server had already stopped the statement;
    // the runner's second-Ctrl-C path itself is proven deterministically in query-units.test.ts.
    expect(s).toMatch(/Cancelled\.|error: Cancelled: the server stopped the statement/);
    // The CancelRequest sent on the first Ctrl-C still stops the statement upstream.
    await pollUntil(async () => (await stack.sql("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(61)%' AND pid <> pg_backend_pid()")).rowCount === 0, 'the statement to stop');
  });

  it('pages output taller than the terminal, and only then', async () => {
    const paged = path.join(alice().dir, 'paged.txt');
    const pager = `cat > '${paged}'`;
    const short = new Terminal(alice(), ['query', 'SELECT 1 AS one'], { env: { PAGER: pager }, height: 30 });
    await short.waitFor('EXIT=0');
    expect(short.screen()).toContain('(1 row)');
    expect(existsSync(paged)).toBe(false);

    const long = new Terminal(alice(), ['query', 'SELECT g AS n FROM generate_series(1, 100) g'], { env: { PAGER: pager }, height: 30 });
    await long.waitFor('EXIT=0');
    expect(long.screen()).not.toContain('(100 rows)');
    const text = readFileSync(paged, 'utf8');
    expect(text).toContain('│ 100 │');
    expect(text.trimEnd().split('\n').at(-1)).toBe('(100 rows)');
  });

  it('colours on a terminal, none with NO_COLOR; switches to expanded when the table is wider than the terminal', async () => {
    const colour = new Terminal(alice(), ['query', 'SELECT id, email FROM customers WHERE id = 9001'], { env: { PAGER: '' } });
    await colour.waitFor('EXIT=0');
    expect(colour.screen(true)).toMatch(/\u001b\[[0-9;]*m/);
    const plain = new Terminal(alice(), ['query', 'SELECT id, email FROM customers WHERE id = 9001'], { env: { PAGER: '', NO_COLOR: '1' } });
    await plain.waitFor('EXIT=0');
    expect(plain.screen(true)).not.toMatch(/\u001b\[[0-9;]*m/);

    const narrow = new Terminal(alice(), ['query', "SELECT id, full_name, region, plan_tier, repeat('x', 40) AS wide FROM customers WHERE id = 9001"], { env: { PAGER: '' }, width: 60 });
    const s = await narrow.waitFor('EXIT=0');
    expect(s).toContain('-[ RECORD 1 ]');
    expect(s).toMatch(/full_name \| Ada Lovelace/);
  });

  it('asks for a reason when the policy requires one, records it, and runs the statement', async () => {
    const t = new Terminal(carol(), ['query', 'SELECT id, email FROM customers WHERE id = 9002']);
    await t.waitFor('! a reason is required for statements that touch personal data');
    await t.waitFor('Reason for this access (recorded in the audit log):');
    t.type('INC-77 checking a refund', 'Enter');
    const s = await t.waitFor('EXIT=0');
    expect(s).toContain('grace@example.org'); // dba sees clear values
    await stack.flushAudit();
    const rows = await pollUntil(async () => {
      const r = await stack.sql<{ reason: string }>("SELECT reason FROM scalple_audit.records WHERE record_type = 'intent' AND email = 'carol@example.com' AND statement LIKE '%WHERE id = 9002%' AND application_name = 'scalple query' AND reason IS NOT NULL");
      return r.rows.length ? r.rows : undefined;
    }, 'the audit record');
    expect(rows).toEqual([{ reason: 'INC-77 checking a refund' }]);
  });
});

describe('scalple run on a terminal', () => {
  it('prompts for missing parameters with typed validation', async () => {
    const t = new Terminal(alice(), ['run', 'orders_of_customer', '--format', 'csv']);
    await t.waitFor('customer-id (64-bit integer):');
    t.type('abc', 'Enter');
    await t.waitFor('expected a 64-bit integer');
    t.type('', 'BSpace', 'BSpace', 'BSpace');
    t.type('9001', 'Enter');
    await t.waitFor('since (date, YYYY-MM-DD):');
    t.type('2000-02-30', 'Enter');
    await t.waitFor('expected a date as YYYY-MM-DD');
    for (let i = 0; i < 10; i++) t.type('', 'BSpace');
    t.type('2000-01-01', 'Enter');
    const s = await t.waitFor('EXIT=0');
    expect(s).toContain('id,total,status');
    expect(s).toContain('9002,26.90,refunded');
  });

  it('Ctrl-C in a prompt cancels (exit 2)', async () => {
    const t = new Terminal(alice(), ['run', 'get_order_by_id']);
    await t.waitFor('order-id (integer):');
    t.type('', 'C-c');
    const s = await t.waitFor('EXIT=2');
    expect(s).toContain('error: Cancelled.');
  });
});
