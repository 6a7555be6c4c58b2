// Masking from the attacker's side: every attempt in corpus.ts, through the simple and the extended
// protocol (binary results asked for), as a person whose role masks every PII column. Nothing they
// receive may contain a masked value in any form. Also: the unmasked role gets byte-identical
// results to a direct connection, and typed clients decode masked results.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import pg from 'pg';
import { startStack, type Stack, APP_USER, APP_PASSWORD } from '../support/stack.ts';
import { WireClient } from '../support/wire.ts';
import { ATTEMPTS } from './corpus.ts';
import { demoPolicy } from '../../src/demo/demo.ts';
import { queryMessage, parseMessage, describeMessage, syncMessage, Writer, Front, Back, decodeFields } from '../../src/proxy/protocol.ts';
import { connectUpstream, parseUpstreamUrl } from '../../src/proxy/upstream.ts';
import type { Frame } from '../../src/proxy/framing.ts';

let stack: Stack;
let forbidden: string[] = [];
const TARGET_IDS = 'id <= 10';

const SETUP = `
CREATE VIEW customer_contacts AS SELECT id, email, phone, region FROM customers;
CREATE VIEW customer_contacts_eu AS SELECT id, email FROM customer_contacts WHERE region = 'EU' AND id <= 10;
CREATE MATERIALIZED VIEW customer_snapshot AS SELECT id, ssn, iban, email FROM customers;
CREATE FUNCTION public.leak_ssn(i int) RETURNS text LANGUAGE sql AS 'SELECT ssn FROM customers WHERE id = i';
GRANT SELECT ON customer_contacts, customer_contacts_eu, customer_snapshot TO app_user;
ANALYZE customers;
`;

beforeAll(async () => {
  stack = await startStack({ poolMode: 'transaction', config: { ...demoPolicy('mask-key-for-the-leak-tests-0123456789'), hash_equality: true, roles: { ...(demoPolicy('x').roles as object), auditor: { groups: ['auditor'], deny: ['public.customers.ssn'] } } } });
  await stack.sql(SETUP);
  const pii = await stack.sql<{ v: string }>(`SELECT unnest(ARRAY[email, iban, ssn, date_of_birth::text, phone]) AS v FROM customers WHERE ${TARGET_IDS}`);
  const base = await stack.sql<{ t: string }>(`SELECT string_agg(concat_ws('|', id, full_name, region, plan_tier, created_at::text), '|') AS t FROM customers
    UNION ALL SELECT string_agg(concat_ws('|', id, customer_id, total, status, created_at::text), '|') FROM orders
    UNION ALL SELECT string_agg(concat_ws('|', id, customer_id, amount, paid_at::text), '|') FROM payments`);
  const baseline = base.rows.map((r) => r.t).join('|') + ATTEMPTS.map((a) => [a.sql].flat().join(' ')).join(' ');
  const set = new Set<string>();
  for (const { v } of pii.rows) {
    if (!v) continue;
    const b = Buffer.from(v, 'utf8');
    for (const form of [v, [...v].reverse().join(''), b.toString('hex'), b.toString('hex').toUpperCase(), b.toString('base64')]) set.add(form);
    // Any leak of 7+ characters contains a leak of 6.
    for (let i = 0; i + 6 <= v.length; i++) set.add(v.slice(i, i + 6));
  }
  // Strings that also occur in data the caller may see are not evidence of a leak.
  forbidden = [...set].filter((s) => !baseline.includes(s));
});
afterAll(async () => {
  await stack?.stop();
});

/** What an attempt expected and did not get ('refused' but it ran, 'ok' but it failed), or undefined. */
function missedExpectation(a: (typeof ATTEMPTS)[number], frames: Frame[]): string | undefined {
  if (!a.expect || typeof a.sql !== 'string') return undefined;
  const codes = frames.filter((f) => f.type === Back.ErrorResponse).map((f) => decodeFields(f.body).get('C') ?? '?');
  const rows = frames.filter((f) => f.type === Back.DataRow).length;
  if (a.expect === 'refused') return codes.includes('42501') && rows === 0 ? undefined : `${a.name}: expected a refusal, got ${codes.join(',') || 'no error'} and ${rows} rows`;
  const messages = frames.filter((f) => f.type === Back.ErrorResponse).map((f) => decodeFields(f.body).get('M'));
  return codes.length === 0 && rows > 0 ? undefined : `${a.name}: expected rows, got ${codes.join(',') || 'no error'} ${messages.join(' | ')} and ${rows} rows`;
}

function leaksIn(frames: Frame[]): string[] {
  const text = Buffer.concat(frames.map((f) => f.raw)).toString('latin1');
  return forbidden.filter((s) => text.includes(s));
}

async function viaSimple(w: WireClient, sql: string): Promise<Frame[]> {
  w.send(queryMessage(sql));
  const out = await w.readUntil((f) => f.type === Back.ReadyForQuery);
  // COPY FROM would wait for data; none of the attempts copy in.
  return out;
}

async function viaExtended(w: WireClient, sql: string): Promise<Frame[]> {
  const bind = new Writer().cstring('').cstring('').int16(0).int16(0).int16(1).int16(1).message(Front.Bind);
  const exec = new Writer().cstring('').int32(0).message(Front.Execute);
  w.send(parseMessage('', sql, Buffer.from([0, 0])), bind, describeMessage('P', ''), exec, syncMessage);
  return w.readUntil((f) => f.type === Back.ReadyForQuery);
}

describe('no masked value gets out', () => {
  it('has a corpus of at least 80 attempts and a meaningful forbidden list', () => {
    expect(ATTEMPTS.length).toBeGreaterThanOrEqual(80);
    expect(forbidden.length).toBeGreaterThan(200);
    // The list is right: a direct read shows these values.
    expect(forbidden).toContain('customer1@example.org');
  });

  for (const protocol of ['simple', 'extended'] as const) {
    it(`survives the whole corpus through the ${protocol} protocol`, async () => {
      const failures: string[] = [];
      const outcomes: string[] = [];
      for (const a of ATTEMPTS) {
        const w = await stack.wire('alice@example.com');
        const frames: Frame[] = [];
        for (const sql of [a.sql].flat()) frames.push(...(protocol === 'simple' ? await viaSimple(w, sql) : await viaExtended(w, sql)));
        w.close();
        const leaks = leaksIn(frames);
        if (leaks.length) failures.push(`${a.name}: ${leaks.slice(0, 3).join(', ')}`);
        const missed = missedExpectation(a, frames);
        if (missed) outcomes.push(missed);
      }
      expect(failures).toEqual([]);
      // Computed outputs through the allow-list run (redacted); oracles are refused.
      expect(outcomes).toEqual([]);
    });
  }

  it('gives masked values, not errors, for the plain cases, and records masked_fields', async () => {
    const c = await stack.connect('alice@example.com');
    const r = await c.query('SELECT id, email, iban, ssn, date_of_birth, phone FROM customers WHERE id = 1');
    expect(r.rows[0]).toEqual({ id: '1', email: 'c***@***.org', iban: '****3001', ssn: '[redacted]', date_of_birth: '1960', phone: expect.stringMatching(/^h:[0-9a-f]{16}$/) });
    // hash is stable: equal inputs, equal outputs.
    const again = await c.query('SELECT phone FROM customers WHERE id = 1');
    expect(again.rows[0].phone).toBe(r.rows[0].phone);
    await c.end();
    await stack.flushAudit();
    const rec = await stack.sql("SELECT decision, masked_fields FROM scalple_audit.records WHERE record_type = 'intent' AND statement = 'SELECT id, email, iban, ssn, date_of_birth, phone FROM customers WHERE id = 1'");
    expect(rec.rows[0]!.decision).toBe('mask');
    expect(rec.rows[0]!.masked_fields).toEqual({ 'public.customers.email': 'email', 'public.customers.iban': 'partial(keep_last=4)', 'public.customers.ssn': 'redact', 'public.customers.date_of_birth': 'year', 'public.customers.phone': 'hash' });
  });

  it('redacts computed outputs, keeps masks through subqueries and UNION ALL only when every branch agrees, and names them in masked_fields', async () => {
    const c = await stack.connect('alice@example.com');
    const computed = await c.query("SELECT id, lower(email) AS l, ssn || '' AS s, length(iban) AS n, date_of_birth::text AS d, coalesce(NULL::text, phone) AS p FROM customers WHERE id = 1");
    expect(computed.rows[0]).toEqual({ id: '1', l: '[redacted]', s: '[redacted]', n: '[redacted]', d: '[redacted]', p: '[redacted]' });
    expect(computed.fields.map((f) => f.dataTypeID)).toEqual([20, 25, 25, 25, 25, 25]);
    // NULL stays NULL (masks show NULL-ness already; every allowed function is NULL only for NULL inputs).
    const nulls = await c.query('SELECT lower(NULL::text) AS a, ssn || NULL AS b FROM customers WHERE id = 1');
    expect(nulls.rows[0]).toEqual({ a: null, b: null });
    const through = await c.query('WITH x AS (SELECT id, email, phone FROM customers) SELECT s.email, s.phone FROM (SELECT * FROM x WHERE id = 1) s');
    expect(through.rows[0]).toEqual({ email: 'c***@***.org', phone: expect.stringMatching(/^h:[0-9a-f]{16}$/) });
    const same = await c.query('SELECT phone FROM customers WHERE id = 1 UNION ALL SELECT phone FROM customers WHERE id = 1');
    expect(same.rows[0].phone).toMatch(/^h:/);
    expect(same.rows[1].phone).toBe(same.rows[0].phone);
    // The keyed hash is never applied to a value the caller chose: that would be a dictionary.
    const chosen = await c.query("SELECT phone FROM customers WHERE id = 1 UNION ALL SELECT '+15550100'");
    expect(chosen.rows.map((r) => r.phone)).toEqual(['[redacted]', '[redacted]']);
    const mixed = await c.query('SELECT email FROM customers WHERE id = 1 UNION ALL SELECT iban FROM customers WHERE id = 1');
    expect(mixed.rows.map((r) => r.email)).toEqual(['[redacted]', '[redacted]']);
    await c.end();
    await stack.flushAudit();
    const rec = await stack.sql("SELECT masked_fields FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE 'SELECT id, lower(email) AS l%'");
    expect(rec.rows[0]!.masked_fields).toEqual({
      'public.customers.email': 'redact (computed)',
      'public.customers.ssn': 'redact (computed)',
      'public.customers.iban': 'redact (computed)',
      'public.customers.date_of_birth': 'redact (computed)',
      'public.customers.phone': 'redact (computed)',
    });
    const rec2 = await stack.sql("SELECT masked_fields FROM scalple_audit.records WHERE record_type = 'intent' AND statement LIKE 'SELECT email FROM customers WHERE id = 1 UNION ALL%'");
    expect(rec2.rows[0]!.masked_fields).toEqual({ 'public.customers.email': 'redact (mixed sources)', 'public.customers.iban': 'redact (mixed sources)' });
  });

  it('hash-masked columns compare for equality with each other (join, USING, GROUP BY, DISTINCT, count(DISTINCT), IS NULL) and come back hashed; a guess is refused', async () => {
    const [p450] = (await stack.sql<{ phone: string }>('SELECT phone FROM customers WHERE id = 450')).rows;
    const [p451] = (await stack.sql<{ phone: string }>('SELECT phone FROM customers WHERE id = 451')).rows;
    // Two customers sharing a phone number.
    await stack.sql('UPDATE customers SET phone = (SELECT phone FROM customers WHERE id = 450) WHERE id = 451');
    const c = await stack.connect('alice@example.com');
    try {
      const own = await c.query('SELECT id, phone FROM customers WHERE id IN (450, 452) ORDER BY id');
      const [h450, h452] = own.rows.map((r) => r.phone as string);
      expect(h450).toMatch(/^h:[0-9a-f]{16}$/);
      const pairs = await c.query('SELECT a.id AS a, b.id AS b, a.phone AS pa, b.phone AS pb FROM customers a JOIN customers b ON a.phone = b.phone AND a.id < b.id');
      expect(pairs.rows).toEqual([{ a: '450', b: '451', pa: h450, pb: h450 }]);
      const same = await c.query('SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.phone = c.phone AND d.id <> c.id) ORDER BY id');
      expect(same.rows.map((r) => r.id)).toEqual(['450', '451']);
      const using = await c.query('SELECT phone, a.id AS a FROM customers a JOIN customers b USING (phone) WHERE a.id IN (450, 452) AND b.id <> 451 ORDER BY a.id');
      expect(using.rows).toEqual([{ phone: h450, a: '450' }, { phone: h452, a: '452' }]);
      const dup = await c.query('SELECT phone, count(*)::int AS n FROM customers GROUP BY phone HAVING count(*) > 1');
      expect(dup.rows).toEqual([{ phone: h450, n: 2 }]);
      const distinct = await c.query('SELECT DISTINCT phone FROM customers WHERE id BETWEEN 450 AND 452');
      expect(distinct.rows.map((r) => r.phone).sort()).toEqual([h450, h452].sort());
      const counted = await c.query('SELECT count(DISTINCT phone)::int AS n, count(*) FILTER (WHERE phone IS NULL)::int AS nulls FROM customers');
      const direct = await stack.sql<{ n: number; nulls: number }>('SELECT count(DISTINCT phone)::int AS n, count(*) FILTER (WHERE phone IS NULL)::int AS nulls FROM customers');
      expect(counted.rows[0]).toEqual(direct.rows[0]);
      // The clear value never comes back, and guessing it is refused, as a literal or a parameter.
      expect(JSON.stringify([pairs.rows, using.rows, dup.rows, distinct.rows])).not.toContain(p450!.phone);
      await expect(c.query(`SELECT id FROM customers WHERE phone = '${p450!.phone}'`)).rejects.toMatchObject({ code: '42501', message: expect.stringContaining('hash') });
      await expect(c.query('SELECT id FROM customers WHERE phone = $1', [p450!.phone])).rejects.toMatchObject({ code: '42501' });
      await expect(c.query('SELECT a.id FROM customers a JOIN customers b ON a.phone = b.full_name')).rejects.toMatchObject({ code: '42501' });
    } finally {
      await c.end();
      await stack.sql(`UPDATE customers SET phone = '${p451!.phone}' WHERE id = 451`);
    }
  });

  it('keeps literals and parameters compared with masked columns out of the audit log', async () => {
    const c = await stack.connect('alice@example.com');
    await expect(c.query("SELECT id FROM customers WHERE ssn = '999-88-7777'")).rejects.toMatchObject({ code: '42501' });
    await expect(c.query('SELECT id FROM customers WHERE email = $1', ['guess.who@example.org'])).rejects.toMatchObject({ code: '42501' });
    await c.end();
    await stack.flushAudit();
    const all = await stack.sql<{ t: string }>('SELECT string_agg(coalesce(statement, \'\') || coalesce(params::text, \'\'), \' \') AS t FROM scalple_audit.records');
    expect(all.rows[0]!.t).not.toContain('999-88-7777');
    expect(all.rows[0]!.t).not.toContain('guess.who');
  });

  it('billing sees iban in clear and the rest masked; auditor is refused ssn naming the rule', async () => {
    const b = await stack.connect('bob@example.com');
    const r = await b.query('SELECT iban, email FROM customers WHERE id = 1');
    expect(r.rows[0].iban).toMatch(/^DE89/);
    expect(r.rows[0].email).toBe('c***@***.org');
    await b.end();
    const d = await stack.connect('dave@example.com');
    await expect(d.query('SELECT ssn FROM customers WHERE id = 1')).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/roles\.auditor\.deny/) });
    await expect(d.query('SELECT * FROM customers WHERE id = 1')).rejects.toMatchObject({ code: '42501' });
    await d.end();
  });

  it('read-only roles cannot write, even through functions', async () => {
    const c = await stack.connect('alice@example.com');
    for (const sql of ["UPDATE customers SET region = 'EU' WHERE id = 1", "SELECT nextval('x')", "SELECT set_config('a.b', 'c', false)", 'SELECT pg_terminate_backend(1)', 'SELECT lo_create(0)', 'BEGIN READ WRITE']) {
      // Refused by the read-only rule (42501), or first by the pooler's session-state rule (0A000).
      await expect(c.query(sql), sql).rejects.toMatchObject({ code: expect.stringMatching(/^(42501|0A000)$/) });
    }
    await c.end();
  });

  it('psql COPY as a masked role is refused and leaks nothing', async () => {
    const t = (await stack.token('alice@example.com')).accessToken;
    const out = await new Promise<string>((resolve) => {
      const p = spawn('psql', [`host=127.0.0.1 port=${stack.proxyPort} dbname=app user=alice`, '-X', '-c', '\\copy customers to stdout', '-c', 'COPY (SELECT * FROM customers) TO STDOUT'], { env: { PATH: process.env.PATH, PGPASSWORD: t } });
      let s = '';
      p.stdout.on('data', (d: Buffer) => (s += d.toString()));
      p.stderr.on('data', (d: Buffer) => (s += d.toString()));
      p.on('close', () => resolve(s));
    });
    expect(out).toMatch(/COPY of masked columns|COPY is not allowed for your role/);
    expect(forbidden.filter((f) => out.includes(f))).toEqual([]);
  });
});

describe('no corruption for the unmasked role', () => {
  const STATEMENTS = [
    'SELECT * FROM customers ORDER BY id LIMIT 50',
    'SELECT o.id, o.total, c.email, c.date_of_birth FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id LIMIT 100',
    "SELECT region, count(*), sum(total) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY region ORDER BY region",
    'SELECT ssn, iban, phone FROM customers WHERE id BETWEEN 100 AND 140 ORDER BY id',
    "SELECT NULL::text AS n, ''::text AS e, 1.5::numeric AS x, now()::date - now()::date AS z",
  ];

  it('returns byte-identical rows to a direct connection, in text and binary', async () => {
    const direct = await connectUpstream(parseUpstreamUrl(`postgres://${APP_USER}:${APP_PASSWORD}@127.0.0.1:${stack.pg.port}/app?sslmode=disable`), {});
    const d = WireClient.fromSocket(direct.socket, direct.leftover);
    const p = await stack.wire('carol@example.com');
    const keep = (fs: Frame[]) => fs.filter((f) => f.type === Back.RowDescription || f.type === Back.DataRow || f.type === Back.CommandComplete).map((f) => f.raw.toString('hex'));
    for (const sql of STATEMENTS) {
      expect(keep(await viaSimple(p, sql)), sql).toEqual(keep(await viaSimple(d, sql)));
      expect(keep(await viaExtended(p, sql)), sql).toEqual(keep(await viaExtended(d, sql)));
    }
    p.close();
    d.close();
  });

  it('typed clients decode masked results (pg type parsers, named statements without Describe)', async () => {
    const c = await stack.connect('alice@example.com');
    for (let i = 0; i < 7; i++) {
      const r = await c.query({ name: 'typed', text: 'SELECT id, date_of_birth, created_at, email FROM customers WHERE id = $1', values: [i + 1] });
      expect(typeof r.rows[0].date_of_birth).toBe('string');
      expect(r.rows[0].created_at).toBeInstanceOf(Date);
    }
    await c.end();
    // pgjdbc after prepareThreshold: Bind (binary results) + Execute, never a Describe.
    const w = await stack.wire('alice@example.com');
    w.send(parseMessage('S_1', 'SELECT id, ssn, date_of_birth FROM customers WHERE id = 3', Buffer.from([0, 0])), syncMessage);
    await w.readUntil((f) => f.type === Back.ReadyForQuery);
    const bind = new Writer().cstring('').cstring('S_1').int16(0).int16(0).int16(1).int16(1).message(Front.Bind);
    w.send(bind, new Writer().cstring('').int32(0).message(Front.Execute), syncMessage);
    const frames = await w.readUntil((f) => f.type === Back.ReadyForQuery);
    const row = frames.find((f) => f.type === Back.DataRow)!;
    expect(row.raw.toString('latin1')).toContain('[redacted]');
    expect(row.raw.toString('latin1')).toContain('1960');
    expect(leaksIn(frames)).toEqual([]);
    w.close();
    void pg;
  });
});
