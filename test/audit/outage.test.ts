// The store goes away for good (the cluster is stopped): statements are refused, and records
// already accepted in buffered mode are never dropped silently: close() fails naming how many and
// logs every one of them.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { PostgresServer } from '../support/services.ts';
import { AuditUnavailable } from '../../src/errors.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import { type AuditDb, captureLogger, freshAuditDb, intent, startAuditCluster, until } from './helpers.ts';

let server: PostgresServer;
let env: AuditDb;
beforeAll(async () => {
  server = await startAuditCluster();
  env = await freshAuditDb(server);
});
afterAll(async () => {
  env?.cleanup();
  await server?.stop();
});

it('refuses statements when the cluster stops and reports every accepted record it could not write', async () => {
  const log = captureLogger();
  const buffered = await openAuditStore(env.config({ durability: 'buffered', flushIntervalMs: 600_000 }), { policyVersion: 'pv', logger: log });
  const strict = await openAuditStore(env.config({ chainId: 'strict' }), { policyVersion: 'pv', logger: log });
  await strict.intent(intent());
  const accepted = [intent(), intent(), intent(), intent(), intent()];
  for (const r of accepted) await buffered.intent(r); // queued: the interval is long and the batch small
  expect(buffered.stats().queued).toBe(5);

  await server.stop();
  await until(() => !buffered.healthy() && !strict.healthy(), 'both writers to notice');
  await expect(buffered.intent(intent())).rejects.toBeInstanceOf(AuditUnavailable);
  await expect(strict.intent(intent())).rejects.toThrow(/audit store unavailable: statement refused/);
  expect(buffered.stats().queued).toBe(5); // kept, not dropped

  await expect(buffered.close({ timeoutMs: 300 })).rejects.toThrow(/audit store closed with 5 records not written/);
  const notWritten = log.lines.filter((l) => l.msg === 'audit record not written').map((l) => (l.obj.record as { log_id: string }).log_id);
  expect(notWritten.sort()).toEqual(accepted.map((r) => r.logId).sort());
  await strict.close({ timeoutMs: 300 }).catch(() => undefined);
});
