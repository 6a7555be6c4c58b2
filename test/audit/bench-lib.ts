// Audit writer throughput: N concurrent callers each writing intents (and queuing a completion
// per intent) as a proxy session would. Used by throughput.test.ts (small, with floors) and by
// bench-audit.ts (the figures reported).
import { setImmediate as yieldToIo } from 'node:timers/promises';
import type { AuditConfig } from '../../src/policy/config.ts';
import { openAuditStore } from '../../src/audit/writer.ts';
import { intent, completion } from './helpers.ts';

export interface BenchResult {
  durability: AuditConfig['durability'];
  callers: number;
  intents: number;
  records: number;
  seconds: number;
  intentsPerSecond: number;
  recordsPerSecond: number;
  refusals: number;
  batches: number;
  largestBatch: number;
}

export async function benchWriter(config: AuditConfig, callers: number, perCaller: number): Promise<BenchResult> {
  const store = await openAuditStore(config, { policyVersion: 'bench' });
  let refusals = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: callers }, async (_, c) => {
    for (let i = 0; i < perCaller; i++) {
      const rec = intent({ sessionId: `s-${c}`, statement: `SELECT * FROM customers WHERE id = ${i}` });
      for (;;) {
        try {
          await store.intent(rec);
          break;
        } catch {
          // buffered and full: a proxy would refuse the statement; the benchmark waits for room
          refusals++;
          await store.flush();
        }
      }
      store.completion(completion(rec.logId, { sessionId: `s-${c}` }));
      // a session does I/O between statements; without this, buffered callers never yield
      if (config.durability === 'buffered') await yieldToIo();
    }
  }));
  await store.flush();
  const seconds = (performance.now() - t0) / 1000;
  const stats = store.stats();
  await store.close();
  const intents = callers * perCaller;
  return {
    durability: config.durability, callers, intents, records: intents * 2, seconds,
    intentsPerSecond: Math.round(intents / seconds), recordsPerSecond: Math.round((intents * 2) / seconds),
    refusals, batches: stats.batches, largestBatch: stats.largestBatch,
  };
}
