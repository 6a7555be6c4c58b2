// Group commit under concurrency: 8 callers, thousands of records, one chain that verifies; and
// several chains written at once. Floors are far below the measured figures (bench-audit.ts), so
// a slow CI machine does not flake, while a writer that commits one record at a time would fail.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { verify } from '../../src/audit/verify.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import { benchWriter } from './bench-lib.ts';
import { HMAC_KEY, freshAuditDb, intent, startAuditCluster } from './helpers.ts';

let server: PostgresServer;
beforeAll(async () => {
  server = await startAuditCluster();
});
afterAll(async () => {
  await server?.stop();
});

describe('group commit', () => {
  it('strict: 8 concurrent callers, 4000 intents + 4000 completions, one intact chain', async () => {
    const env = await freshAuditDb(server);
    const r = await benchWriter(env.config(), 8, 500);
    process.stderr.write(`audit strict: ${JSON.stringify(r)}\n`);
    expect(r.batches).toBeLessThan(r.records / 2); // commits were grouped
    expect(r.intentsPerSecond).toBeGreaterThan(500);
    const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile });
    expect(report.ok).toBe(true);
    expect(report.chains[0]!.verified).toBe(8000);
    env.cleanup();
  });

  it('buffered: 8 concurrent callers, 20000 intents + 20000 completions, one intact chain', async () => {
    const env = await freshAuditDb(server);
    const r = await benchWriter(env.config({ durability: 'buffered', bufferSize: 10_000 }), 8, 2500);
    process.stderr.write(`audit buffered: ${JSON.stringify(r)}\n`);
    expect(r.intentsPerSecond).toBeGreaterThan(2000);
    const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: env.config().checkpointFile, batchSize: 5000 });
    expect(report.ok).toBe(true);
    expect(report.chains[0]!.verified).toBe(40_000);
    env.cleanup();
  });

  it('several chains (one per proxy instance) written at once all verify', async () => {
    const env = await freshAuditDb(server);
    const stores = await Promise.all(['p1', 'p2', 'p3'].map((chainId) => openAuditStore(env.config({ chainId }), { policyVersion: 'pv' })));
    await Promise.all(stores.flatMap((s) => Array.from({ length: 4 }, async () => {
      for (let i = 0; i < 100; i++) await s.intent(intent());
    })));
    await Promise.all(stores.map((s) => s.close()));
    const report = await verify(env.writerUrl, HMAC_KEY, { checkpointFile: ['p1', 'p2', 'p3'].map((c) => env.config({ chainId: c }).checkpointFile) });
    expect(report.ok).toBe(true);
    expect(report.chains.map((c) => [c.chainId, c.verified])).toEqual([['p1', 400], ['p2', 400], ['p3', 400]]);
    env.cleanup();
  });
});
