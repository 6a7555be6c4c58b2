// Statement kinds against the real server: every shape is analysed, then run on PostgreSQL 15, and
// the kind must match the command tag PostgreSQL sends back (row counts stripped). Where PostgreSQL
// itself reports a different tag on the wire than its CreateCommandTag() (CREATE TABLE AS, SELECT
// INTO, EXECUTE), the expected wire tag is given; statements a plain role cannot run (or that need
// COPY data) are analysed only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { ensureParser, analyse } from '../../src/sql/index.ts';
import { startSqlTestDb, type SqlTestDb } from './fixture.ts';

interface Shape {
  sql: string;
  kind: string;
  readOnly: boolean;
  ddl?: boolean;
  /** Tag on the wire when it differs from kind; null: do not run. */
  wire?: string | null;
}

const SHAPES: Shape[] = [
  { sql: 'SELECT 1', kind: 'SELECT', readOnly: true },
  { sql: 'SELECT * FROM customers WHERE id = 1', kind: 'SELECT', readOnly: true },
  { sql: 'TABLE customers', kind: 'SELECT', readOnly: true },
  { sql: 'VALUES (1, 2), (3, 4)', kind: 'SELECT', readOnly: true },
  { sql: 'WITH x AS (SELECT id FROM customers) SELECT count(*) FROM x', kind: 'SELECT', readOnly: true },
  { sql: 'SELECT email FROM customers UNION SELECT iban FROM billing.invoices', kind: 'SELECT', readOnly: true },
  { sql: 'SELECT * FROM customers WHERE id = 1 FOR UPDATE', kind: 'SELECT', readOnly: false },
  { sql: 'SELECT * FROM orders FOR SHARE', kind: 'SELECT', readOnly: false },
  { sql: 'INSERT INTO orders (customer_id, total) VALUES (1, 5)', kind: 'INSERT', readOnly: false },
  { sql: 'INSERT INTO orders (customer_id, total) SELECT id, 1 FROM customers RETURNING id', kind: 'INSERT', readOnly: false },
  { sql: 'INSERT INTO payments (id, customer_id, amount) VALUES (1, 1, 1) ON CONFLICT (id) DO UPDATE SET amount = excluded.amount', kind: 'INSERT', readOnly: false },
  { sql: 'UPDATE orders SET total = total + 1 WHERE id = 1', kind: 'UPDATE', readOnly: false },
  { sql: 'DELETE FROM payments WHERE id = -1', kind: 'DELETE', readOnly: false },
  { sql: 'MERGE INTO payments p USING orders o ON p.id = o.id WHEN MATCHED THEN UPDATE SET amount = o.total WHEN NOT MATCHED THEN DO NOTHING', kind: 'MERGE', readOnly: false },
  { sql: 'WITH d AS (DELETE FROM payments WHERE id = -1 RETURNING *) SELECT count(*) FROM d', kind: 'SELECT', readOnly: false },
  { sql: 'COPY customers (id, email) TO STDOUT', kind: 'COPY', readOnly: true, wire: null },
  { sql: 'COPY payments FROM STDIN', kind: 'COPY', readOnly: false, wire: null },
  { sql: 'CREATE TABLE k1 (a int, b text)', kind: 'CREATE TABLE', readOnly: false, ddl: true },
  { sql: 'CREATE TEMP TABLE k_temp (a int)', kind: 'CREATE TABLE', readOnly: false, ddl: true },
  { sql: 'CREATE TABLE k2 AS SELECT 1 AS a', kind: 'CREATE TABLE AS', readOnly: false, ddl: true, wire: 'SELECT' },
  { sql: 'SELECT 1 AS a INTO k3', kind: 'SELECT INTO', readOnly: false, ddl: true, wire: 'SELECT' },
  { sql: 'CREATE VIEW k_v AS SELECT id FROM customers', kind: 'CREATE VIEW', readOnly: false, ddl: true },
  { sql: 'CREATE OR REPLACE VIEW k_v AS SELECT id, email FROM customers', kind: 'CREATE VIEW', readOnly: false, ddl: true },
  { sql: 'ALTER VIEW k_v RENAME TO k_v2', kind: 'ALTER VIEW', readOnly: false, ddl: true },
  { sql: 'CREATE MATERIALIZED VIEW k_mv AS SELECT 1 AS a', kind: 'CREATE MATERIALIZED VIEW', readOnly: false, ddl: true, wire: 'SELECT' },
  { sql: 'REFRESH MATERIALIZED VIEW k_mv', kind: 'REFRESH MATERIALIZED VIEW', readOnly: false, ddl: true },
  { sql: 'ALTER TABLE k1 ADD COLUMN c int', kind: 'ALTER TABLE', readOnly: false, ddl: true },
  { sql: 'CREATE INDEX k1_a ON k1 (a)', kind: 'CREATE INDEX', readOnly: false, ddl: true },
  { sql: 'CREATE SEQUENCE k_seq', kind: 'CREATE SEQUENCE', readOnly: false, ddl: true },
  { sql: "SELECT nextval('k_seq')", kind: 'SELECT', readOnly: false },
  { sql: "CREATE TYPE k_mood AS ENUM ('ok')", kind: 'CREATE TYPE', readOnly: false, ddl: true },
  { sql: "ALTER TYPE k_mood ADD VALUE 'meh'", kind: 'ALTER TYPE', readOnly: false, ddl: true },
  { sql: 'CREATE SCHEMA k_schema', kind: 'CREATE SCHEMA', readOnly: false, ddl: true },
  { sql: "CREATE FUNCTION k_f() RETURNS int LANGUAGE sql AS 'SELECT 1'", kind: 'CREATE FUNCTION', readOnly: false, ddl: true },
  { sql: "CREATE PROCEDURE k_p() LANGUAGE sql AS 'SELECT 1'", kind: 'CREATE PROCEDURE', readOnly: false, ddl: true },
  { sql: 'CALL k_p()', kind: 'CALL', readOnly: false, ddl: true },
  { sql: 'DO $$ BEGIN PERFORM 1; END $$', kind: 'DO', readOnly: false, ddl: true },
  { sql: 'GRANT SELECT ON k1 TO PUBLIC', kind: 'GRANT', readOnly: false, ddl: true },
  { sql: 'REVOKE SELECT ON k1 FROM PUBLIC', kind: 'REVOKE', readOnly: false, ddl: true },
  { sql: "COMMENT ON TABLE k1 IS 'scratch'", kind: 'COMMENT', readOnly: false, ddl: true },
  { sql: 'ANALYZE k1', kind: 'ANALYZE', readOnly: false },
  { sql: 'VACUUM k1', kind: 'VACUUM', readOnly: false },
  { sql: 'TRUNCATE k2', kind: 'TRUNCATE TABLE', readOnly: false },
  { sql: 'DROP INDEX k1_a', kind: 'DROP INDEX', readOnly: false, ddl: true },
  { sql: 'DROP VIEW k_v2', kind: 'DROP VIEW', readOnly: false, ddl: true },
  { sql: 'DROP MATERIALIZED VIEW k_mv', kind: 'DROP MATERIALIZED VIEW', readOnly: false, ddl: true },
  { sql: 'DROP TABLE k2, k3', kind: 'DROP TABLE', readOnly: false, ddl: true },
  { sql: 'SHOW search_path', kind: 'SHOW', readOnly: true },
  { sql: 'SET search_path = public', kind: 'SET', readOnly: true },
  { sql: "SET statement_timeout = '5s'", kind: 'SET', readOnly: true },
  { sql: 'RESET statement_timeout', kind: 'RESET', readOnly: true },
  { sql: 'RESET ALL', kind: 'RESET', readOnly: true },
  { sql: 'SET ROLE app_user', kind: 'SET', readOnly: true },
  { sql: 'SET SESSION AUTHORIZATION postgres', kind: 'SET', readOnly: true, wire: null },
  { sql: 'EXPLAIN SELECT * FROM customers', kind: 'EXPLAIN', readOnly: true },
  { sql: 'EXPLAIN ANALYZE DELETE FROM payments WHERE id = -1', kind: 'EXPLAIN', readOnly: false },
  { sql: 'BEGIN', kind: 'BEGIN', readOnly: true },
  { sql: "SET LOCAL statement_timeout = '5s'", kind: 'SET', readOnly: true },
  { sql: 'DECLARE k_c CURSOR FOR SELECT * FROM customers', kind: 'DECLARE CURSOR', readOnly: true },
  { sql: 'FETCH 1 FROM k_c', kind: 'FETCH', readOnly: true },
  { sql: 'MOVE 1 IN k_c', kind: 'MOVE', readOnly: true },
  { sql: 'CLOSE k_c', kind: 'CLOSE CURSOR', readOnly: true },
  { sql: 'LOCK TABLE k1 IN SHARE MODE', kind: 'LOCK TABLE', readOnly: false },
  { sql: 'SAVEPOINT s1', kind: 'SAVEPOINT', readOnly: true },
  { sql: 'ROLLBACK TO SAVEPOINT s1', kind: 'ROLLBACK', readOnly: true },
  { sql: 'RELEASE SAVEPOINT s1', kind: 'RELEASE', readOnly: true },
  { sql: 'SET CONSTRAINTS ALL DEFERRED', kind: 'SET CONSTRAINTS', readOnly: false },
  { sql: 'COMMIT', kind: 'COMMIT', readOnly: true },
  { sql: 'START TRANSACTION READ ONLY', kind: 'START TRANSACTION', readOnly: true },
  { sql: 'ROLLBACK', kind: 'ROLLBACK', readOnly: true },
  { sql: 'DECLARE k_h CURSOR WITH HOLD FOR SELECT 1', kind: 'DECLARE CURSOR', readOnly: true },
  { sql: 'CLOSE ALL', kind: 'CLOSE CURSOR ALL', readOnly: true },
  { sql: 'PREPARE k_q (int) AS SELECT * FROM customers WHERE id = $1', kind: 'PREPARE', readOnly: true },
  { sql: 'EXECUTE k_q(1)', kind: 'EXECUTE', readOnly: false, wire: 'SELECT' },
  { sql: 'DEALLOCATE k_q', kind: 'DEALLOCATE', readOnly: true },
  { sql: 'DEALLOCATE ALL', kind: 'DEALLOCATE ALL', readOnly: true },
  { sql: 'LISTEN k_chan', kind: 'LISTEN', readOnly: true },
  { sql: "NOTIFY k_chan, 'hi'", kind: 'NOTIFY', readOnly: false },
  { sql: 'UNLISTEN *', kind: 'UNLISTEN', readOnly: true },
  { sql: 'DISCARD ALL', kind: 'DISCARD ALL', readOnly: true, ddl: true },
  { sql: "PREPARE TRANSACTION 'k_g'", kind: 'PREPARE TRANSACTION', readOnly: false, wire: null },
  { sql: 'CHECKPOINT', kind: 'CHECKPOINT', readOnly: false, wire: null },
  { sql: 'CREATE DATABASE k_db', kind: 'CREATE DATABASE', readOnly: false, ddl: true, wire: null },
];

let db: SqlTestDb;
let client: pg.Client;
let lastTag = '';

beforeAll(async () => {
  await ensureParser();
  db = await startSqlTestDb();
  client = await db.connect();
  client.connection.on('commandComplete', (msg: { text?: string }) => {
    lastTag = msg.text ?? '';
  });
});

afterAll(async () => {
  await client?.end();
  await db?.stop();
});

describe('statement kinds', () => {
  it(`covers ${SHAPES.length} statement shapes`, () => {
    expect(SHAPES.length).toBeGreaterThanOrEqual(40);
    expect(new Set(SHAPES.map((s) => s.kind)).size).toBeGreaterThanOrEqual(40);
  });

  it('analysis gives the kind, read-only and DDL flags, and PostgreSQL reports the same tag', async () => {
    const mismatches: string[] = [];
    for (const shape of SHAPES) {
      const a = analyse(shape.sql);
      if (!a.ok) {
        mismatches.push(`${shape.sql}: does not parse: ${a.error.message}`);
        continue;
      }
      const s = a.statements[0];
      if (s?.kind !== shape.kind) mismatches.push(`${shape.sql}: kind ${s?.kind} != ${shape.kind}`);
      if (s?.readOnly !== shape.readOnly) mismatches.push(`${shape.sql}: readOnly ${s?.readOnly} != ${shape.readOnly}`);
      if (s?.ddl !== (shape.ddl ?? false)) mismatches.push(`${shape.sql}: ddl ${s?.ddl} != ${shape.ddl ?? false}`);
      if (shape.wire === null) continue;
      lastTag = '';
      try {
        await client.query(shape.sql);
      } catch (err) {
        mismatches.push(`${shape.sql}: PostgreSQL refused it: ${(err as Error).message}`);
        continue;
      }
      const wire = lastTag.replace(/( \d+)+$/, '');
      if (wire !== (shape.wire ?? shape.kind)) mismatches.push(`${shape.sql}: PostgreSQL said ${lastTag}, expected ${shape.wire ?? shape.kind}`);
    }
    expect(mismatches).toEqual([]);
  });
});
