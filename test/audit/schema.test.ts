// The schema: versioned idempotent migrations, monthly partitions, and append-only enforced by
// the database itself (privileges for the writer, triggers for everyone, partitions included).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { connect } from '../../src/audit/db.ts';
import { initAuditSchema, LATEST_VERSION, listPartitions, monthPartitionName } from '../../src/audit/schema.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import { type AuditDb, freshAuditDb, intent, startAuditCluster, withClient, WRITER } from './helpers.ts';

let server: PostgresServer;
let env: AuditDb;

beforeAll(async () => {
  server = await startAuditCluster();
  env = await freshAuditDb(server);
  // a few records so UPDATE/DELETE have something to hit
  const store = await openAuditStore(env.config(), { policyVersion: 'pv' });
  for (let i = 0; i < 3; i++) await store.intent(intent());
  await store.close();
});

afterAll(async () => {
  env?.cleanup();
  await server?.stop();
});

const thisMonth = monthPartitionName(new Date());

describe('migrations', () => {
  it('are versioned and idempotent', async () => {
    const c = await connect(env.adminUrl);
    try {
      const again = await initAuditSchema(c, WRITER.user);
      expect(again.migrated.applied).toEqual([]);
      expect(again.migrated.to).toBe(LATEST_VERSION);
      const r = await c.query('SELECT version, applied_by FROM scalple_audit.migrations ORDER BY version');
      expect(r.rows).toEqual([{ version: 1, applied_by: 'scalple_admin' }, { version: 2, applied_by: 'scalple_admin' }, { version: 3, applied_by: 'scalple_admin' }]);
      const owner = await c.query(`SELECT pg_get_userbyid(nspowner) AS o FROM pg_namespace WHERE nspname = 'scalple_audit'`);
      expect(owner.rows[0].o).toBe('scalple_admin');
    } finally {
      await c.end();
    }
  });

  it('keep monthly partitions ahead, each with its own append-only trigger', async () => {
    const c = await connect(env.adminUrl);
    try {
      const parts = await listPartitions(c);
      const names = parts.map((p) => p.name);
      expect(names).toContain(thisMonth);
      expect(names).toContain('records_default');
      const next = new Date();
      next.setUTCMonth(next.getUTCMonth() + 1, 1);
      expect(names).toContain(monthPartitionName(next));
      const trig = await c.query(`SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'scalple_audit' AND t.tgname = 'append_only'`);
      const withTrigger = new Set(trig.rows.map((r) => r.relname as string));
      for (const n of names) expect(withTrigger.has(n), `${n} has its trigger`).toBe(true);
      for (const t of ['records', 'revocations', 'migrations']) expect(withTrigger.has(t)).toBe(true);
    } finally {
      await c.end();
    }
  });

  it('let the writer create future partitions (SECURITY DEFINER) that are append-only too', async () => {
    await withClient(env.writerUrl, (c) => c.query(`SELECT scalple_audit.ensure_partitions('2031-05-10T00:00:00Z', 1)`));
    await withClient(env.adminUrl, async (c) => {
      const r = await c.query(`SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relname = 'records_203105'`);
      expect(r.rows[0].owner).toBe('scalple_admin');
      await expect(c.query('TRUNCATE scalple_audit.records_203105')).rejects.toThrow(/append-only: TRUNCATE refused/);
    });
  });
});

describe('the writer role', () => {
  const attempts = [
    'UPDATE scalple_audit.records SET statement = \'x\'',
    'DELETE FROM scalple_audit.records',
    'TRUNCATE scalple_audit.records',
    `UPDATE scalple_audit.${thisMonth} SET statement = 'x'`,
    `DELETE FROM scalple_audit.${thisMonth}`,
    `TRUNCATE scalple_audit.${thisMonth}`,
    'DELETE FROM scalple_audit.records_default',
    'TRUNCATE scalple_audit.records_default',
    'UPDATE scalple_audit.revocations SET reason = \'x\'',
    'DELETE FROM scalple_audit.revocations',
    'DELETE FROM scalple_audit.migrations',
    `DROP TABLE scalple_audit.${thisMonth}`,
    `ALTER TABLE scalple_audit.records DISABLE TRIGGER append_only`,
    `SELECT * FROM scalple_audit.${thisMonth}`,
    `INSERT INTO scalple_audit.${thisMonth} (chain_id, seq, ts, log_id, record_type, prev_hash, hash) VALUES ('x', 1, now(), 'l', 'intent', '', '')`,
  ];
  for (const sql of attempts) {
    it(`is refused: ${sql.slice(0, 60)}`, async () => {
      await withClient(env.writerUrl, async (c) => {
        await expect(c.query(sql)).rejects.toThrow(/permission denied|must be owner/);
      });
    });
  }

  it('can INSERT and SELECT through the parent table', async () => {
    await withClient(env.writerUrl, async (c) => {
      const r = await c.query('SELECT count(*)::int AS n FROM scalple_audit.records');
      expect(r.rows[0].n).toBe(3);
      const g = await c.query(`SELECT privilege_type FROM information_schema.role_table_grants
        WHERE grantee = $1 AND table_schema = 'scalple_audit' AND table_name = 'records' ORDER BY 1`, [WRITER.user]);
      expect(g.rows.map((x) => x.privilege_type)).toEqual(['INSERT', 'SELECT']);
    });
  });
});

describe('the owner (without disabling triggers)', () => {
  const attempts: [string, RegExp][] = [
    ['UPDATE scalple_audit.records SET statement = \'x\'', /records is append-only: UPDATE refused/],
    ['DELETE FROM scalple_audit.records', /append-only: DELETE refused/],
    ['TRUNCATE scalple_audit.records', /append-only: TRUNCATE refused/],
    [`UPDATE scalple_audit.${thisMonth} SET statement = 'x'`, /append-only: UPDATE refused/],
    [`DELETE FROM scalple_audit.${thisMonth}`, /append-only: DELETE refused/],
    [`TRUNCATE scalple_audit.${thisMonth}`, /append-only: TRUNCATE refused/],
    ['TRUNCATE scalple_audit.records_default', /append-only: TRUNCATE refused/],
    ['DELETE FROM scalple_audit.revocations', /append-only: DELETE refused/],
    ['TRUNCATE scalple_audit.migrations', /append-only: TRUNCATE refused/],
  ];
  for (const [sql, err] of attempts) {
    it(`is refused by the trigger: ${sql.slice(0, 60)}`, async () => {
      await withClient(env.adminUrl, async (c) => {
        await expect(c.query(sql)).rejects.toThrow(err);
      });
    });
  }

  it('leaves every record in place', async () => {
    const n = await withClient(env.adminUrl, (c) => c.query('SELECT count(*)::int AS n FROM scalple_audit.records'));
    expect(n.rows[0].n).toBe(3);
  });
});
