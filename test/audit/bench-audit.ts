// Audit writer throughput, standalone (not part of the test run):
//   node --import tsx test/audit/bench-audit.ts [perCallerStrict] [perCallerBuffered]
// 8 concurrent callers; each intent is followed by a queued completion (2 records per statement).
// Runs against a throwaway PostgreSQL 15 twice: fsync off (the test clusters' setting) and
// fsync on with synchronous_commit on (what a production store does).
import { benchWriter, type BenchResult } from './bench-lib.ts';
import { ADMIN, WRITER, freshAuditDb } from './helpers.ts';
import { startPostgres, superQuery } from '../support/services.ts';

const strictN = Number(process.argv[2] ?? 2000);
const bufferedN = Number(process.argv[3] ?? 10000);

const rows: (BenchResult & { fsync: string })[] = [];
for (const fsync of ['off', 'on']) {
  const server = await startPostgres({ settings: { fsync, synchronous_commit: 'on' } });
  try {
    await superQuery(server, `CREATE ROLE ${ADMIN.user} LOGIN PASSWORD '${ADMIN.password}'; CREATE ROLE ${WRITER.user} LOGIN PASSWORD '${WRITER.password}'`);
    for (const durability of ['strict', 'buffered'] as const) {
      const env = await freshAuditDb(server);
      const r = await benchWriter(env.config({ durability, bufferSize: 10_000 }), 8, durability === 'strict' ? strictN : bufferedN);
      rows.push({ ...r, fsync });
      env.cleanup();
    }
  } finally {
    await server.stop();
  }
}
console.log('fsync  durability  callers  statements  records  seconds  statements/s  records/s  batches  largest batch  refusals');
for (const r of rows) {
  console.log([r.fsync.padEnd(5), r.durability.padEnd(10), String(r.callers).padStart(7), String(r.intents).padStart(10), String(r.records).padStart(8),
    r.seconds.toFixed(2).padStart(8), String(r.intentsPerSecond).padStart(13), String(r.recordsPerSecond).padStart(10), String(r.batches).padStart(8),
    String(r.largestBatch).padStart(14), String(r.refusals).padStart(9)].join('  '));
}
