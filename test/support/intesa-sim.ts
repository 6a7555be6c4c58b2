// A generated audit history for the insider-anomaly proof (issue 5, the Intesa Sanpaolo pattern):
// 30 people in three groups of 10, ticket-driven lookups of customers on working days, and one
// insider who, from `insiderStart` on, runs about 14 small queries a day (below their peers'
// median) but reaches about 8 customers they never looked at before, every day.
//
// Everything is generated inside PostgreSQL (generate_series and a keyed hash as the random
// source: deterministic for a seed), then inserted as intent + completion records straight into
// scalple_audit.records as the schema owner: INSERT … SELECT, not the writer. The synthetic records
// carry placeholder hashes (chain 'sim'): they are not meant to verify as a chain.
//
// The model (per person p, working day d):
// - present unless a random 7% day off or a 10-working-day holiday block (one per ~230 days);
// - n statements: q_p x U(0.7, 1.3), with q_p from 10 to 34 per person (the daily volume varies
//   by person and by day);
// - tickets opened that day: floor(lambda_p + U), lambda_p from 0.6 to 1.5 (each ticket = a customer);
// - each statement: 1% a name search returning 2 to 4 customers; otherwise a lookup of one
//   customer of an open ticket: opened today (45%), 1 day ago (20%), 2 (13%), 3 (10%) or 4 to 9
//   working days ago (12%); on a day without tickets, one of the person's 12 regular customers.
//   So ordinary people keep revisiting the same few dozen customers a month.
// - the insider, from insiderStart: ~6 statements of ticket work (lambda 0.4) plus 7 to 10 lookups
//   of random customers (out of 200,000), one each: ~14.5 statements and ~8.8 new customers a day
//   present (they take days off like everyone: ~7.8 per working day, as in the case).
import pg from 'pg';

export interface SimOptions {
  seed?: number;
  /** Working days (Mon-Fri) of history. */
  days?: number;
  /** Working day (0-based) the insider starts. */
  insiderStart?: number;
  /** First day (a Monday, UTC date). */
  startDate?: string;
  customers?: number;
  /** People, in groups of 10 (default 30: three groups). The insider is person 3. */
  people?: number;
}

export interface SimPerson {
  person: string;
  email: string;
  group: string;
  insider: boolean;
}

export interface SimResult {
  people: SimPerson[];
  insider: SimPerson;
  /** Local dates (Europe/Rome) of the working days, in order. */
  workdays: string[];
  /** First instant of the insider's first working day of the pattern (local midnight, as UTC). */
  insiderStartTs: Date;
  startTs: Date;
  endTs: Date;
  statements: number;
  records: number;
  generateMs: number;
  insertMs: number;
}

export const SIM_GROUPS = ['branch', 'contact-centre', 'back-office'];
export const INSIDER_INDEX = 3;

/** Group g (of 10 people): branch, contact-centre, back-office, then branch-1, contact-centre-1, … */
export function groupName(g: number): string {
  return g < 3 ? SIM_GROUPS[g]! : `${SIM_GROUPS[g % 3]}-${Math.floor(g / 3)}`;
}

/** `url`: the audit database as the schema owner. Two connections insert intents and completions in parallel. */
export async function generateIntesaHistory(url: string, opts: SimOptions = {}): Promise<SimResult> {
  const client = new pg.Client({ connectionString: url });
  const client2 = new pg.Client({ connectionString: url });
  await client.connect();
  await client2.connect();
  try {
    return await generate(client, client2, opts);
  } finally {
    await client.end();
    await client2.end();
  }
}

async function generate(client: pg.Client, client2: pg.Client, opts: SimOptions): Promise<SimResult> {
  const seed = opts.seed ?? 20260314;
  const days = opts.days ?? 500;
  const insiderStart = opts.insiderStart ?? 40;
  const startDate = opts.startDate ?? '2024-01-01';
  const customers = opts.customers ?? 200_000;
  const nPeople = opts.people ?? 30;
  const groups = Array.from({ length: Math.ceil(nPeople / 10) }, (_, g) => groupName(g));
  const t0 = Date.now();
  // U(0,1) from a keyed 64-bit hash of an integer key: one stream per tag, deterministic per seed.
  const u = (tag: number, key: string) => `((hashint8extended((${key})::bigint, ${Number(seed) * 100 + tag}) & 281474976710655)::float8 / 281474976710656)`;
  const pdj = `(p::bigint * 1000000 + wd * 1000 + j)`;
  await client.query('CREATE SCHEMA IF NOT EXISTS sim');
  await client.query('DROP TABLE IF EXISTS sim.stmt');
  await client.query(`
    CREATE UNLOGGED TABLE sim.stmt AS
    WITH days AS (
      SELECT d::date AS day, (row_number() OVER (ORDER BY d) - 1)::int AS wd
        FROM generate_series($1::date::timestamp, ($1::date + ($2::int * 2 + 14))::timestamp, interval '1 day') d
       WHERE extract(isodow FROM d) < 6
       ORDER BY d LIMIT $2
    ), people AS (
      SELECT p, p / 10 AS g, p = ${INSIDER_INDEX} AS insider,
             10 + floor(24 * ((p % 10) + ${u(1, 'p')}) / 10)::int AS q,
             0.6 + 0.9 * (((p * 7) % 10) + ${u(2, 'p')}) / 10 AS lam
        FROM generate_series(0, $5::int - 1) p
    ), pd AS (
      SELECT pe.p, pe.g, pe.insider AND d.wd >= $3 AS snooping, pe.q, pe.lam, d.day, d.wd
        FROM people pe CROSS JOIN days d
       WHERE ${u(3, 'pe.p * 1000 + d.wd')} >= 0.07
         AND (d.wd + 37 * pe.p) % 230 >= 10
    ), plan AS (
      SELECT pd.*,
             CASE WHEN snooping THEN 7 + floor(${u(4, 'p * 1000 + wd')} * 4)::int ELSE 0 END AS snoops,
             greatest(1, round((CASE WHEN snooping THEN 6 ELSE q END) * (0.7 + 0.6 * ${u(5, 'p * 1000 + wd')})))::int AS work,
             CASE WHEN snooping THEN 0.4 ELSE lam END AS lam_now
        FROM pd
    ), st AS (
      SELECT pl.p, pl.g, pl.day, pl.wd, j, j <= pl.snoops AS snoop, pl.lam_now,
             ${u(6, pdj)} AS r_kind, ${u(7, pdj)} AS r_age, ${u(8, pdj)} AS r_tick, ${u(9, pdj)} AS r_time
        FROM plan pl CROSS JOIN LATERAL generate_series(1, pl.snoops + pl.work) j
    ), st2 AS (
      SELECT st.*,
             CASE WHEN snoop THEN 'snoop' WHEN r_kind < 0.01 THEN 'search' ELSE 'ticket' END AS kind,
             greatest(0, wd - CASE WHEN r_age < 0.45 THEN 0 WHEN r_age < 0.65 THEN 1 WHEN r_age < 0.78 THEN 2 WHEN r_age < 0.88 THEN 3
                                   ELSE 4 + floor((r_age - 0.88) / 0.12 * 6)::int END) AS twd
        FROM st
    ), st3 AS (
      SELECT st2.*, floor(lam_now + ${u(10, 'p * 1000 + twd')})::int AS tickets FROM st2
    )
    SELECT row_number() OVER () AS n, p, g, kind,
           ((day + make_interval(secs => 30600 + r_time * 32400)) AT TIME ZONE 'Europe/Rome') AS ts,
           CASE kind
             WHEN 'snoop' THEN ARRAY['customer:' || (1 + floor(${u(11, 'wd * 1000 + j')} * $4))::int]
             WHEN 'search' THEN ARRAY(SELECT 'customer:' || (1 + floor(${u(12, `${pdj} * 10 + k`)} * $4))::int
                                        FROM generate_series(1, 2 + floor(r_tick * 3)::int) k)
             ELSE ARRAY['customer:' || CASE WHEN tickets = 0 THEN 1 + floor(${u(13, 'p * 100 + floor(r_tick * 12)::int')} * $4)::int
                                            ELSE 1 + floor(${u(14, '(p * 1000 + twd) * 100 + floor(r_tick * tickets)::int')} * $4)::int END]
           END AS keys,
           twd
      FROM st3`, [startDate, days, insiderStart, customers, nPeople]);
  const count = await client.query<{ n: string; first: Date; last: Date }>('SELECT count(*) AS n, min(ts) AS first, max(ts) AS last FROM sim.stmt');
  const generateMs = Date.now() - t0;

  const t1 = Date.now();
  await client.query(`SELECT scalple_audit.ensure_partitions($1::timestamptz, 36)`, [startDate]);
  const intents = client.query(`
    INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, sub, email, name, groups, principal_kind, db_role, database,
                                       client_addr, application_name, session_id, statement, kinds, tables, columns, decision, policy_version,
                                       reason, prev_hash, hash)
    SELECT 'sim', 2 * n - 1, ts, 'sim-' || n, 'intent', 'u-' || lpad(p::text, greatest(2, length(p::text)), '0'), 'p' || lpad(p::text, greatest(2, length(p::text)), '0') || '@bank.example',
           'Person ' || p, ARRAY[($1::text[])[g + 1]], 'person', 'app_user', 'bank',
           '10.0.0.' || p, 'crm', 's-' || p || '-' || to_char(ts, 'YYYYMMDD'),
           CASE kind WHEN 'search' THEN 'SELECT id, name, email FROM customers WHERE name ILIKE $1'
                     ELSE 'SELECT id, name, email, phone, iban FROM customers WHERE id = $1' END,
           '{SELECT}', '{public.customers}', '{public.customers.id,public.customers.name,public.customers.email}', 'allow', 'sim',
           CASE WHEN kind = 'ticket' THEN 'TCK-' || p || '-' || twd ELSE NULL END, 'sim', 'sim'
      FROM sim.stmt`, [groups]);
  const completions = client2.query(`
    INSERT INTO scalple_audit.records (chain_id, seq, ts, log_id, record_type, rows, duration_ms, subject_keys, policy_version, prev_hash, hash)
    SELECT 'sim', 2 * n, ts + interval '3 milliseconds', 'sim-' || n, 'completion', cardinality(keys), 1.5, keys, 'sim', 'sim', 'sim'
      FROM sim.stmt`);
  await Promise.all([intents, completions]);
  await client.query('ANALYZE scalple_audit.records');
  const insertMs = Date.now() - t1;

  const wdays = await client.query<{ day: string }>(`
    SELECT to_char(d, 'YYYY-MM-DD') AS day FROM generate_series($1::date::timestamp, ($1::date + ($2::int * 2 + 14))::timestamp, interval '1 day') d
     WHERE extract(isodow FROM d) < 6 ORDER BY d LIMIT $2`, [startDate, days]);
  const workdays = wdays.rows.map((r) => r.day);
  const startTs = await client.query<{ t: Date }>(`SELECT ($1::date::timestamp AT TIME ZONE 'Europe/Rome') AS t`, [workdays[insiderStart]]);
  const people: SimPerson[] = Array.from({ length: nPeople }, (_, p) => ({
    person: `u-${String(p).padStart(2, '0')}`,
    email: `p${String(p).padStart(2, '0')}@bank.example`,
    group: groupName(Math.floor(p / 10)),
    insider: p === INSIDER_INDEX,
  }));
  const statements = Number(count.rows[0]!.n);
  return {
    people,
    insider: people[INSIDER_INDEX]!,
    workdays,
    insiderStartTs: startTs.rows[0]!.t,
    startTs: count.rows[0]!.first,
    endTs: count.rows[0]!.last,
    statements,
    records: statements * 2,
    generateMs,
    insertMs,
  };
}
