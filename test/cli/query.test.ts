// `scalple query`, `queries` and `run` end to end: the real launcher in its own process, logged in
// through the real OpenID provider (device login completed from what the CLI printed), querying
// the real proxy in front of PgBouncer (transaction mode) and PostgreSQL with pgAudit.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { freePort } from '../support/services.ts';
import { CLI_FIXTURES_SQL, cliTestPolicy } from './policy.ts';
import { BIN, CliProcess, claimsOf, login, pollUntil, runCli, sandbox, startCli, untilPast, type Sandbox } from './harness.ts';

let stack: Stack;
let alice: Sandbox;
let dave: Sandbox;
let carol: Sandbox;
let nobody: Sandbox;

async function loginAs(box: Sandbox, email: string): Promise<void> {
  const r = await login(['--issuer', stack.idp.issuer, '--no-browser', '--insecure-storage', '--proxy', `127.0.0.1:${stack.proxyPort}`, '--database', 'app'], box.env, { login: email });
  expect(r.stderr).toContain(`✓ Logged in as ${email}`);
}

beforeAll(async () => {
  // No clock leeway: the proxy ends a session exactly when its token expires.
  stack = await startStack({ poolMode: 'transaction', config: cliTestPolicy(), identity: { leeway_seconds: 0 } });
  await stack.sql(CLI_FIXTURES_SQL);
  alice = sandbox();
  dave = sandbox();
  carol = sandbox();
  nobody = sandbox();
  await loginAs(alice, 'alice@example.com');
  await loginAs(dave, 'dave@example.com');
  await loginAs(carol, 'carol@example.com');
});
afterAll(async () => {
  for (const b of [alice, dave, carol, nobody]) b?.remove();
  await stack?.stop();
});
afterEach(() => {
  stack.idp.setAccessTokenTtl(3600);
});

const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);

/** How many orders carry this status (the marker of a test's statement). */
async function ordersWithStatus(status: string): Promise<number> {
  return Number((await stack.sql<{ n: string }>('SELECT count(*) AS n FROM orders WHERE status = $1', [status])).rows[0]!.n);
}

/** Resolves once the proxy recorded the intent of a statement containing `text`: it is on its way upstream. */
async function untilIntent(text: string): Promise<void> {
  await pollUntil(async () => (await stack.sql("SELECT 1 FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE $1", [`%${text}%`])).rowCount! > 0, `the statement with ${text} to start`);
}

describe('scalple query', () => {
  it('renders a table with masked cells marked, NULL distinct from empty, and the footer naming what was masked', async () => {
    const r = await runCli(['query', "SELECT id, email, iban, region, NULL::text AS note, '' AS empty FROM customers WHERE id IN (9001, 9002) ORDER BY id"], alice.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        '┌──────┬────────────────┬────────────┬────────┬────────┬───────┐',
        '│   id │ email ⊘        │ iban ⊘     │ region │ note   │ empty │',
        '├──────┼────────────────┼────────────┼────────┼────────┼───────┤',
        '│ 9001 │ ⊘ a***@***.org │ ⊘ ****9001 │ EU     │ [NULL] │       │',
        '│ 9002 │ ⊘ g***@***.org │ ⊘ ****9002 │ APAC   │ [NULL] │       │',
        '└──────┴────────────────┴────────────┴────────┴────────┴───────┘',
        '(2 rows · masked: email, iban)',
        '',
      ].join('\n'),
    );
  });

  it('-x prints one record per block', async () => {
    const r = await runCli(['query', '-x', 'SELECT id, email FROM customers WHERE id = 9001'], alice.env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(['-[ RECORD 1 ]+---------------', 'id      | 9001', 'email ⊘ | ⊘ a***@***.org', '(1 row · masked: email)', ''].join('\n'));
  });

  it('prints exact JSON and CSV for scripts', async () => {
    const sql = "SELECT id, total, status, NULL::text AS note, '' AS empty FROM orders WHERE id IN (9001, 9002) ORDER BY id";
    const json = await runCli(['query', sql, '--format', 'json'], alice.env);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([
      // 26.90 is not a JSON number without loss: the whole column stays text.
      { id: 9001, total: '13.99', status: 'paid', note: null, empty: '' },
      { id: 9002, total: '26.90', status: 'refunded', note: null, empty: '' },
    ]);
    const csv = await runCli(['query', sql, '--format', 'csv'], alice.env);
    expect(csv.code).toBe(0);
    expect(csv.stdout).toBe('id,total,status,note,empty\r\n9001,13.99,paid,,""\r\n9002,26.90,refunded,,""\r\n');
    const ndjson = await runCli(['query', 'SELECT id, email, region FROM customers WHERE id IN (9001, 9002) ORDER BY id', '--format', 'ndjson'], alice.env);
    expect(ndjson.code).toBe(0);
    expect(ndjson.stdout).toBe('{"id":9001,"email":"a***@***.org","region":"EU"}\n{"id":9002,"email":"g***@***.org","region":"APAC"}\n');
  });

  it('reads SQL from stdin and runs each statement of a script', async () => {
    const r = await runCli(['query', '--format', 'csv'], alice.env, "SELECT 1 AS a;\n-- a comment; with a semicolon\nSELECT 'x;y' AS b;\n");
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('a\r\n1\r\nb\r\nx;y\r\n');
  });

  it('reads SQL from a file with -f', async () => {
    const { writeFileSync } = await import('node:fs');
    const file = `${alice.dir}/q.sql`;
    writeFileSync(file, 'SELECT count(*) AS n FROM orders WHERE customer_id = 9001;\n');
    const r = await runCli(['query', '-f', file, '--format', 'json'], alice.env);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([{ n: 2 }]);
  });

  it('binds --param values to $1, $2 (extended protocol)', async () => {
    const r = await runCli(['query', 'SELECT id, status FROM orders WHERE id = $1 OR id = $2 ORDER BY id', '--param', '9002', '--param', '9003', '--format', 'json'], alice.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { id: 9002, status: 'refunded' },
      { id: 9003, status: 'paid' },
    ]);
  });

  it('records --reason in the audit log', async () => {
    const marker = `reason-check-${Date.now()}`;
    const r = await runCli(['query', `SELECT '${marker}' AS m`, '--reason', 'TICKET-4242 customer asked'], alice.env);
    expect(r.code).toBe(0);
    await stack.flushAudit();
    const rows = await pollUntil(async () => {
      const r = await stack.sql<{ reason: string; email: string }>("SELECT reason, email FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE $1", [`%${marker}%`]);
      return r.rows.length ? r.rows : undefined;
    }, 'the audit record');
    expect(rows).toEqual([{ reason: 'TICKET-4242 customer asked', email: 'alice@example.com' }]);
  });

  it('a policy denial exits 1 with the server message naming the rule', async () => {
    const r = await runCli(['query', 'SELECT id, amount FROM payments LIMIT 1'], alice.env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('error: policy denies reading public.payments.amount (roles.support.deny: public.payments)\n');
  });

  it('a named_only role may not run ad-hoc SQL (42501, exit 1)', async () => {
    const r = await runCli(['query', 'SELECT 1'], dave.env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: .*named/m);
  });

  it('a required reason: without a terminal, exit 1 naming the rule and the fix; with --reason the statement runs', async () => {
    const sql = 'SELECT id, email FROM customers WHERE id = 9002';
    const refused = await runCli(['query', sql], carol.env, '');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe('error: a reason is required for statements that touch personal data: run with --reason "…", or SET scalple.reason = \'…\' (rule roles.dba.require_reason)\n');
    const ok = await runCli(['query', sql, '--reason', 'INC-1', '--format', 'csv'], carol.env);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe('id,email\r\n9002,grace@example.org\r\n');
  });

  it('a SQL error exits 1 with one line and no stack trace; later statements do not run', async () => {
    const r = await runCli(['query', 'SELECT 1 AS a; SELECT 1 / 0 AS b; SELECT 3 AS c', '--format', 'csv'], alice.env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('a\r\n1\r\n');
    expect(r.stderr).toBe('error: statement 2 of 3: division by zero\n');
  });

  it('without login exits 4 naming `scalple login`', async () => {
    const r = await runCli(['query', 'SELECT 1'], nobody.env);
    expect(r.code).toBe(4);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('error: Not logged in (profile "default"): Run `scalple login`\n');
  });

  it('stops quietly when the reader closes stdout early (| head)', async () => {
    // Not spawnSync: the proxy runs in this process and must keep answering.
    const shell = new CliProcess('bash', ['-c', `set -o pipefail; '${process.execPath}' '${BIN}' query 'SELECT g FROM generate_series(1, 200000) g' --format csv | head -2`], alice.env);
    const r = await shell.done();
    expect({ stdout: r.stdout, stderr: r.stderr, code: r.code }).toEqual({ stdout: 'g\r\n1\r\n', stderr: '', code: 0 });
  });

  it('a profile without a proxy, or a proxy that is down, exits 1 naming the fix', async () => {
    const box = sandbox();
    try {
      const r = await login(['--issuer', stack.idp.issuer, '--no-browser', '--insecure-storage'], box.env, { login: 'alice@example.com' });
      expect(r.code).toBe(0);
      const noProxy = await runCli(['query', 'SELECT 1'], box.env);
      expect(noProxy.code).toBe(1);
      expect(noProxy.stderr).toBe('error: Profile "default" has no proxy: run `scalple login --proxy HOST:PORT --database NAME`\n');

      const closed = await freePort();
      const again = await login(['--proxy', `127.0.0.1:${closed}`], box.env, { login: 'alice@example.com' });
      expect(again.code).toBe(0);
      const down = await runCli(['query', 'SELECT 1'], box.env);
      expect(down.code).toBe(1);
      expect(down.stderr).toBe(`error: Cannot reach the Scalple proxy at 127.0.0.1:${closed} (ECONNREFUSED): is it running? To use another one: \`scalple login --proxy HOST:PORT\`\n`);
    } finally {
      box.remove();
    }
  });

  it('usage errors exit 2', async () => {
    const noSql = await runCli(['query'], alice.env, '');
    expect(noSql.code).toBe(2);
    expect(noSql.stderr).toBe('error: No SQL statement in the input.\n');
    const both = await runCli(['query', 'SELECT 1', '-f', 'x.sql'], alice.env);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('either as an argument or with -f FILE');
    const params = await runCli(['query', 'SELECT $1; SELECT 2', '--param', '1'], alice.env);
    expect(params.code).toBe(2);
    expect(params.stderr).toContain('--param works with one statement');
    const format = await runCli(['query', 'SELECT 1', '--format', 'xml'], alice.env);
    expect(format.code).toBe(2);
    expect(format.stderr).toContain('Allowed choices are table, json, csv, ndjson');
    noStackTrace(format.stderr);
  });

  it('a statement that only reads, cut short by the token expiry, is run again once in a read-only transaction', async () => {
    // Tokens live 2 s: the CLI refreshes the stored one (it expires within a minute) and connects
    // with a 2 s token; the statement (3 s) outlives it.
    stack.idp.setAccessTokenTtl(2);
    const box = sandbox();
    try {
      await loginAs(box, 'erin@example.com');
      const marker = `expiry-${Date.now()}`;
      const cli = startCli(['query', `SELECT '${marker}' AS m, pg_sleep(3) IS NOT NULL AS slept`, '--format', 'json'], box.env);
      // Once the statement reached the proxy, the CLI holds its short token: make the next one long.
      await untilIntent(marker);
      stack.idp.setAccessTokenTtl(3600);
      const r = await cli.done();
      expect(r.stderr).toBe('! The proxy ended the session because the token expired; reconnecting with a refreshed token\n! The statement only reads data: running it again, in a read-only transaction\n');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([{ m: marker, slept: true }]);
      // The statement ran twice, both times as erin: the first run cut short by the expiry, the
      // second between BEGIN READ ONLY and COMMIT.
      await stack.flushAudit();
      const intents = await stack.sql<{ email: string; statement: string }>(
        "SELECT email, statement FROM scalple_audit.records WHERE record_type = 'intent' AND email = 'erin@example.com' AND ts >= (SELECT min(ts) FROM scalple_audit.records WHERE statement LIKE $1) ORDER BY seq",
        [`%${marker}%`],
      );
      expect(intents.rows.map((x) => (x.statement.includes(marker) ? 'the statement' : x.statement))).toEqual(['the statement', 'BEGIN READ ONLY', 'the statement', 'COMMIT']);
    } finally {
      box.remove();
    }
  });

  it('a statement that may have written, cut short by the token expiry, is not run again: the CLI says it may or may not have run (exit 1)', async () => {
    stack.idp.setAccessTokenTtl(2);
    const box = sandbox();
    try {
      await loginAs(box, 'carol@example.com');
      const marker = `write-expiry-${Date.now()}`;
      // One new order, 3 s long: a second run would add a second one.
      const insert = `INSERT INTO orders (id, customer_id, total, status) SELECT max(id) + 1, 1, 0.01, '${marker}' FROM orders HAVING pg_sleep(3) IS NOT NULL`;
      const cli = startCli(['query', insert, '--reason', 'TICKET-7'], box.env);
      await untilIntent(marker);
      stack.idp.setAccessTokenTtl(3600);
      const r = await cli.done();
      expect(r.stderr).toBe(
        '! The proxy ended the session because the token expired; reconnecting with a refreshed token\n' +
          'error: The token expired while the statement was running and the proxy ended the session: the statement may or may not have run, and it was not run again. Check whether it took effect before running it again.\n',
      );
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      // PostgreSQL finished the statement after its client went away: it did run — once.
      const ran = await pollUntil(async () => (await ordersWithStatus(marker)) || undefined, 'the cut statement to finish upstream');
      expect(ran).toBe(1);
      await stack.flushAudit();
      const intents = await stack.sql("SELECT 1 FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE $1", [`%${marker}%`]);
      expect(intents.rowCount).toBe(1);
    } finally {
      box.remove();
    }
  });

  it('a read that calls a function that writes is stopped by PostgreSQL when run again (read-only transaction), and reported as not run again', async () => {
    await stack.sql(`CREATE OR REPLACE FUNCTION public.cli_note(m text) RETURNS boolean LANGUAGE sql AS $$
      INSERT INTO public.orders (id, customer_id, total, status) SELECT max(id) + 1, 1, 0.01, m FROM public.orders;
      SELECT true $$`);
    stack.idp.setAccessTokenTtl(2);
    const box = sandbox();
    try {
      await loginAs(box, 'carol@example.com');
      const marker = `udf-expiry-${Date.now()}`;
      const cli = startCli(['query', `SELECT cli_note('${marker}') AS noted, pg_sleep(3) IS NOT NULL AS slept`, '--reason', 'TICKET-8'], box.env);
      await untilIntent(marker);
      stack.idp.setAccessTokenTtl(3600);
      const r = await cli.done();
      expect(r.stderr).toBe(
        '! The proxy ended the session because the token expired; reconnecting with a refreshed token\n' +
          '! The statement only reads data: running it again, in a read-only transaction\n' +
          'error: The token expired while the statement was running and the proxy ended the session: the statement may or may not have run, and it was not run again. Check whether it took effect before running it again.\n' +
          '(Run again in a read-only transaction, it tried to write: cannot execute INSERT in a read-only transaction.)\n',
      );
      expect(r.code).toBe(1);
      const ran = await pollUntil(async () => (await ordersWithStatus(marker)) || undefined, 'the cut statement to finish upstream');
      expect(ran).toBe(1);
    } finally {
      box.remove();
    }
  });

  it('the shell: a COMMIT cut short by the token expiry may or may not have committed; it says so, reconnects and goes on', async () => {
    // A deferred trigger makes COMMIT take 4 s for rows with this status.
    await stack.sql(`CREATE OR REPLACE FUNCTION public.cli_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(4); RETURN NULL; END $$;
      DROP TRIGGER IF EXISTS cli_slow_commit ON public.orders;
      CREATE CONSTRAINT TRIGGER cli_slow_commit AFTER INSERT ON public.orders DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status LIKE 'slow-commit-%') EXECUTE FUNCTION public.cli_slow_commit()`);
    stack.idp.setAccessTokenTtl(3);
    const box = sandbox();
    try {
      await loginAs(box, 'carol@example.com');
      const marker = `slow-commit-${Date.now()}`;
      const script = ['BEGIN;', `INSERT INTO orders (id, customer_id, total, status) SELECT max(id) + 1, 1, 0.01, '${marker}' FROM orders;`, 'COMMIT;', 'SELECT 2 AS after;', ''].join('\n');
      const cli = startCli(['shell', '--reason', 'TICKET-9'], box.env);
      cli.child.stdin!.end(script);
      // The shell holds its short token once the INSERT reached the proxy; COMMIT follows at once.
      await untilIntent(marker);
      stack.idp.setAccessTokenTtl(3600);
      const r = await cli.done();
      expect(r.stderr).toContain(
        '! The proxy ended the session because the token expired; reconnecting with a refreshed token\n' +
          'error: The token expired while the transaction was committing and the proxy ended the session: the transaction may or may not have been committed, and nothing was run again. Check whether its changes are there before running it again.\n',
      );
      expect(r.stdout).toMatch(/│ after │\n├───────┤\n│     2 │/);
      expect(r.code).toBe(1);
      // It did commit, once: PostgreSQL finished the COMMIT after the client went away.
      const ran = await pollUntil(async () => (await ordersWithStatus(marker)) || undefined, 'the cut COMMIT to finish upstream');
      expect(ran).toBe(1);
    } finally {
      box.remove();
      await stack.sql('DROP TRIGGER IF EXISTS cli_slow_commit ON public.orders');
    }
  });

  it('the shell says when the proxy ends an idle session at token expiry, then reconnects for the next statement', async () => {
    stack.idp.setAccessTokenTtl(2);
    const box = sandbox();
    try {
      await loginAs(box, 'erin@example.com');
      const cli = startCli(['shell'], box.env);
      cli.child.stdin!.write('SELECT 1 AS a;\n');
      await pollUntil(async () => cli.stdout.includes('(1 row)'), 'the first result');
      stack.idp.setAccessTokenTtl(3600);
      await cli.waitForStderr(/The proxy ended the session \(token expired\); the next statement reconnects with a refreshed token\./);
      cli.child.stdin!.end('SELECT 2 AS b;\n');
      const r = await cli.done();
      expect(r.code).toBe(0);
      expect(r.stderr).toContain('! The proxy ended the session because the token expired; reconnecting with a refreshed token\n');
      expect(r.stdout).toMatch(/│ b │\n├───┤\n│ 2 │/);
    } finally {
      box.remove();
    }
  });

  it('the shell: a statement typed after the session ended inside a transaction block is not run on its own', async () => {
    stack.idp.setAccessTokenTtl(2);
    const box = sandbox();
    try {
      await loginAs(box, 'carol@example.com');
      const [first, second] = [`lost-tx-a-${Date.now()}`, `lost-tx-b-${Date.now()}`];
      const insert = (status: string) => `INSERT INTO orders (id, customer_id, total, status) SELECT max(id) + 1, 1, 0.01, '${status}' FROM orders;\n`;
      const cli = startCli(['shell', '--reason', 'TICKET-10'], box.env);
      cli.child.stdin!.write('BEGIN;\n' + insert(first));
      await untilIntent(first);
      stack.idp.setAccessTokenTtl(3600);
      await cli.waitForStderr(/The proxy ended the session \(token expired\); the next statement reconnects with a refreshed token\./);
      cli.child.stdin!.end(insert(second) + 'SELECT 3 AS after;\n');
      const r = await cli.done();
      expect(r.stderr).toContain(
        '! The proxy ended the session because the token expired; reconnecting with a refreshed token\n' +
          'error: The session ended while a transaction block was open: the transaction was rolled back, and this statement was not run. Start the transaction again.\n',
      );
      expect(r.stdout).toMatch(/│ after │\n├───────┤\n│     3 │/);
      expect(r.code).toBe(1);
      expect(await ordersWithStatus(first)).toBe(0); // rolled back with the session
      expect(await ordersWithStatus(second)).toBe(0); // never sent
    } finally {
      box.remove();
    }
  });

  it('a token that expired before connecting is refreshed first (no reconnect needed)', async () => {
    stack.idp.setAccessTokenTtl(1);
    const box = sandbox();
    try {
      await loginAs(box, 'erin@example.com');
      const { readFileSync } = await import('node:fs');
      const stored = JSON.parse(readFileSync(`${box.scalpleDir}/credentials.json`, 'utf8')).profiles.default;
      await untilPast(claimsOf(stored.accessToken).exp!);
      stack.idp.setAccessTokenTtl(3600);
      const r = await runCli(['query', 'SELECT 1 AS one', '--format', 'csv'], box.env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('one\r\n1\r\n');
    } finally {
      box.remove();
    }
  });
});

describe('scalple shell without a terminal', () => {
  it('runs a piped script: statements over several lines, backslash commands, errors reported in the exit code', async () => {
    const script = ['SELECT id,', '  status FROM orders', 'WHERE id = 9002;', '\\x', "SELECT 'a;b' AS s;", 'SELECT 1/0;', 'SELECT 3 AS after_error;', ''].join('\n');
    const r = await runCli(['shell'], alice.env, script);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('│ 9002 │ refunded │');
    expect(r.stdout).toContain('-[ RECORD 1 ]');
    expect(r.stdout).toContain('s | a;b');
    expect(r.stdout).toContain('after_error | 3');
    expect(r.stderr).toBe('Expanded display is on.\nerror: division by zero\n');
  });
});

describe('named queries', () => {
  it('`scalple queries` lists what the caller may run, from the proxy', async () => {
    const json = await runCli(['queries', '--format', 'json'], alice.env);
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([
      { name: 'get_order_by_id', description: 'One order with its customer', params: [{ name: 'order_id', type: 'int', flag: '--order-id' }], roles: ['support', 'billing', 'analyst'] },
      {
        name: 'orders_of_customer',
        description: "A customer's orders since a date",
        params: [
          { name: 'customer_id', type: 'bigint', flag: '--customer-id' },
          { name: 'since', type: 'date', flag: '--since' },
        ],
        roles: ['support', 'billing'],
      },
    ]);
    const table = await runCli(['queries'], dave.env);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('get_order_by_id');
    expect(table.stdout).toContain('--order-id <integer>');
    expect(table.stdout).not.toContain('orders_of_customer');
  });

  it('`scalple run` runs one with its parameter flags; masking applies', async () => {
    const r = await runCli(['run', 'get_order_by_id', '--order-id', '9001', '--format', 'json'], alice.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([{ id: 9001, total: 13.99, email: 'a***@***.org' }]);

    const table = await runCli(['run', 'orders_of_customer', '--customer-id=9001', '--since', '2000-01-01'], alice.env);
    expect(table.stderr).toBe('');
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('│ 9002 │ 26.90 │ refunded │');
    expect(table.stdout.trimEnd().split('\n').at(-1)).toBe('(2 rows)');
  });

  it('the audit record names the query and its parameters', async () => {
    const r = await runCli(['run', 'get_order_by_id', '--order-id', '1234', '--format', 'csv', '--reason', 'named-query audit check'], alice.env);
    expect(r.code).toBe(0);
    await stack.flushAudit();
    const rows = await pollUntil(async () => {
      const r = await stack.sql<{ named_query: string; params: unknown }>("SELECT named_query, params FROM scalple_audit.records WHERE record_type = 'intent' AND reason = 'named-query audit check'");
      return r.rows.length ? r.rows : undefined;
    }, 'the audit record');
    expect(rows).toHaveLength(1);
    expect(rows[0]!.named_query).toBe('get_order_by_id');
    expect(rows[0]!.params).toHaveLength(1);
  });

  it('a named_only person can run the named query', async () => {
    const r = await runCli(['run', 'get_order_by_id', '--order-id', '9003', '--format', 'csv'], dave.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('id,total,email\r\n9003,100.00,g***@***.org\r\n');
  });

  it('without a terminal, missing parameters exit 2 naming them', async () => {
    const r = await runCli(['run', 'orders_of_customer', '--since', '2024-01-01'], alice.env);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('error: Missing parameter for orders_of_customer: --customer-id (64-bit integer). Example: scalple run orders_of_customer --customer-id VALUE\n');
  });

  it('unknown flags exit 2 naming the valid ones; unknown queries exit 2 naming yours', async () => {
    const flag = await runCli(['run', 'get_order_by_id', '--order', '7'], alice.env);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe('error: Unknown option --order for get_order_by_id: its parameters are --order-id (integer)\n');
    const name = await runCli(['run', 'drop_everything'], alice.env);
    expect(name.code).toBe(2);
    expect(name.stderr).toBe('error: No named query "drop_everything" that you may run (yours: get_order_by_id, orders_of_customer): see `scalple queries`\n');
  });

  it('a value of the wrong type is refused by the proxy, naming the parameter (exit 2)', async () => {
    const r = await runCli(['run', 'get_order_by_id', '--order-id', 'seven'], alice.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: .*order_id/);
    noStackTrace(r.stderr);
  });
});
