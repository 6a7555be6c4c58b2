import { startAuditCluster, freshAuditDb, intent, completion } from '/work/main/test/audit/helpers.ts';
import { toPendingRow, placeRow, hashRow, deriveKeys, CHAIN_COLUMNS, paramFor, COLUMN_TYPES } from '/work/main/src/audit/chain.ts';
import pg from 'pg';
const server = await startAuditCluster();
const env = await freshAuditDb(server);
const keys = deriveKeys('x'.repeat(20));
const N = 500;
const recs = Array.from({length: N}, (_, i) => intent({ statement: `SELECT * FROM customers WHERE id = ${i}` }));
let t = performance.now();
const rows = recs.map((r, i) => placeRow(toPendingRow(r, 'pv'), 'main', i + 1, Date.now()));
let prev = '0'.repeat(64);
const params: unknown[] = [];
for (const row of rows) { const h = hashRow(keys, prev, row); for (const c of CHAIN_COLUMNS) params.push(paramFor(c, row[c])); params.push(prev, h); prev = h; }
console.log('prep ms', performance.now() - t);
const cols = [...CHAIN_COLUMNS, 'prev_hash', 'hash'];
const n = cols.length;
const tuples = [];
for (let i = 0; i < N; i++) tuples.push('(' + cols.map((c, j) => `$${i * n + j + 1}::${(COLUMN_TYPES as any)[c]}`).join(',') + ')');
const sql = `INSERT INTO scalple_audit.records (${cols.map((c) => `"${c}"`).join(',')}) VALUES ${tuples.join(',')}`;
const c = new pg.Client({ connectionString: env.writerUrl }); await c.connect();
for (let k = 0; k < 3; k++) {
  t = performance.now();
  await c.query(sql, params.map((p, idx) => idx % n === 1 ? (p as number) + (k+1) * N : p));
  console.log('insert values ms', performance.now() - t);
}
// json populate
for (let k = 0; k < 3; k++) {
  const objs = rows.map((r, i) => ({ ...r, seq: r.seq + (k + 4) * N, prev_hash: 'x', hash: 'y' }));
  t = performance.now();
  const js = JSON.stringify(objs);
  const t1 = performance.now();
  await c.query(`INSERT INTO scalple_audit.records SELECT * FROM json_populate_recordset(null::scalple_audit.records, $1::json)`, [js]);
  console.log('json populate ms', performance.now() - t, 'stringify', t1 - t);
}
await c.query('SET session_replication_role = default');
t = performance.now();
await c.query('EXPLAIN ANALYZE SELECT 1');
await c.end();
await server.stop();
