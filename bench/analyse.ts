// Micro-benchmark of statement analysis (not a test): µs per analyse() cache hit and miss, and per
// resolveAccess() hit and miss, on a catalog snapshot shaped like the test schema (built in memory
// from the catalog query's row format, so no database is needed).
//   node --import tsx bench/analyse.ts
// Figures move a lot with machine load (other processes on a 2-core box): compare runs, not digits.
import { ensureParser, analyse, analyseUncached, resolveAccess, snapshotFromRow, parse } from '../src/sql/index.ts';
import type { Analysis } from '../src/sql/index.ts';

await ensureParser();

const STATEMENTS = [
  'SELECT * FROM customers WHERE id = $1',
  'SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1',
  "WITH customers AS (SELECT id, email FROM customers WHERE region = 'EU') SELECT * FROM customers",
  'SELECT c.email, (SELECT max(o.total) FROM orders o WHERE o.customer_id = c.id) FROM customers c WHERE c.region = $1 ORDER BY 1 LIMIT 50',
  'SELECT contact FROM eu_contacts WHERE customer_id = $1',
  'UPDATE customers SET email = lower(email) WHERE id = $1 RETURNING id',
  'INSERT INTO orders (customer_id, total) VALUES ($1, $2)',
  'SELECT email FROM customers UNION SELECT iban FROM billing.invoices',
  "SET LOCAL scalple.reason = 'ticket 42'",
  'BEGIN',
];

// A snapshot in the catalog query's row format: customers, orders, payments, billing.invoices,
// a view over customers and a view over that view (definitions as pg_get_viewdef prints them).
let oid = 16384;
const col = (name: string, n: number, type = 'text'): [string, number, number, string] => [name, n, 25, type];
const rel = (schema: string, name: string, kind: string, cols: [string, number, number, string][], def: string | null = null, deps: [number, number][] | null = null): unknown[] => [
  ++oid,
  schema,
  name,
  kind,
  cols,
  def,
  deps,
];
const customers = rel('public', 'customers', 'r', ['id', 'email', 'iban', 'ssn', 'date_of_birth', 'phone', 'region', 'created_at'].map((c, i) => col(c, i + 1)));
const customersOid = oid;
const relations = [
  customers,
  rel('public', 'orders', 'r', ['id', 'customer_id', 'total', 'created_at'].map((c, i) => col(c, i + 1))),
  rel('public', 'payments', 'r', ['id', 'customer_id', 'amount'].map((c, i) => col(c, i + 1))),
  rel('billing', 'invoices', 'r', ['id', 'customer_id', 'amount', 'iban'].map((c, i) => col(c, i + 1))),
  rel('public', 'eu_customers', 'v', ['id', 'email', 'phone'].map((c, i) => col(c, i + 1)), " SELECT customers.id,\n    customers.email,\n    customers.phone\n   FROM customers\n  WHERE customers.region = 'EU'::text;", [
    [customersOid, 1],
    [customersOid, 2],
    [customersOid, 6],
    [customersOid, 7],
  ]),
];
const euOid = oid;
relations.push(rel('public', 'eu_contacts', 'v', [col('customer_id', 1), col('contact', 2)], ' SELECT eu_customers.id AS customer_id,\n    lower(eu_customers.email) AS contact\n   FROM eu_customers;', [
  [euOid, 1],
  [euOid, 2],
]));
const snapshot = snapshotFromRow(
  {
    current_user: 'app_user',
    search_path: JSON.stringify(['pg_catalog', 'public']),
    temp_schema: null,
    schemas: JSON.stringify(['pg_catalog', 'public', 'billing', 'information_schema']),
    relations: JSON.stringify(relations),
  },
  1,
  Date.now(),
);

function bench(label: string, iterations: number, fn: (i: number) => void): number {
  for (let i = 0; i < Math.min(iterations, 2000); i++) fn(i); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn(i);
  const us = Number(process.hrtime.bigint() - t0) / 1000 / iterations;
  console.log(`${label.padEnd(58)} ${us.toFixed(us < 1 ? 3 : 1).padStart(8)} µs`);
  return us;
}

let sink = 0;
console.log(`statement mix: ${STATEMENTS.length} shapes (joins, CTE, subquery, view over view, UPDATE, INSERT, UNION, SET, BEGIN)\n`);

bench('libpg-query parseSync, distinct texts (reference)', 20_000, (i) => {
  sink += parse(`${STATEMENTS[i % STATEMENTS.length]} /* ${i} */`).stmts?.length ?? 0;
});
bench('analyse() miss: parse + fingerprint + analysis', 20_000, (i) => {
  sink += analyse(`${STATEMENTS[i % STATEMENTS.length]} /* m${i} */`).sql.length;
});
for (const s of STATEMENTS) analyse(s);
bench('  of which analysis alone (tree + fingerprint cached)', 20_000, (i) => {
  sink += analyseUncached(STATEMENTS[i % STATEMENTS.length] ?? '').sql.length;
});
bench('analyse() hit (same text again)', 1_000_000, (i) => {
  sink += analyse(STATEMENTS[i % STATEMENTS.length] ?? '').sql.length;
});

const analyses: Analysis[] = STATEMENTS.map((s) => analyse(s));
const path = ['$user', 'public'];
bench('resolveAccess() hit (text, catalog generation, search_path)', 1_000_000, (i) => {
  sink += resolveAccess(analyses[i % analyses.length] as Analysis, snapshot, path).tables.length;
});
const fresh: Analysis[] = [];
for (let i = 0; i < 20_000; i++) fresh.push(analyseUncached(STATEMENTS[i % STATEMENTS.length] ?? ''));
bench('resolveAccess() miss (new analysis; view lineage memoised)', 20_000, (i) => {
  sink += resolveAccess(fresh[i] as Analysis, snapshot, path).tables.length;
});
bench('analyse() hit + resolveAccess() hit (per execution)', 1_000_000, (i) => {
  sink += resolveAccess(analyse(STATEMENTS[i % STATEMENTS.length] ?? ''), snapshot, path).columns.length;
});
if (sink === 42) console.log('');
