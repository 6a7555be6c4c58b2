// createRecordStream: audit records as JSON lines (stdout or a file) for SIEM pipelines, with the
// documented field names, every line with the same keys, never blocking and bounded in memory.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createRecordStream, streamLine } from '../../src/audit/stream.ts';
import type { EventRecord } from '../../src/audit/record.ts';
import { BOB, completion, intent } from './helpers.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'scalple-stream-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEYS = [
  'ts', 'log_id', 'record_type', 'sub', 'email', 'name', 'groups', 'principal_kind', 'application', 'acting_for',
  'db_role', 'database', 'client_addr', 'application_name', 'session_id', 'statement', 'params', 'kinds', 'tables', 'columns',
  'decision', 'rule', 'policy_version', 'reason', 'named_query', 'masked_fields', 'rows', 'sqlstate', 'error', 'duration_ms',
  'event', 'detail', 'subject_keys',
];

const ts = new Date('2026-03-01T09:00:00.123Z');
const i = intent({ ts, actingFor: BOB, reason: 'ticket 7', maskedFields: { 'public.customers.email': 'email' }, decision: 'mask' });
const c = completion(i.logId, { ts: new Date(ts.getTime() + 4), rows: 3, durationMs: 2.5, subjectKeys: ['customer:7', 'customer:42'], subjectsPossible: { order: 'keys unknown (aggregate)' } });
const e: EventRecord = { type: 'event', logId: 'ev-1', ts, event: 'revoke', detail: { email: 'mallory@example.com', by: 'admin@example.com' } };

describe('audit record stream', () => {
  it('writes one JSON line per record to a file, with the documented keys in order', async () => {
    const file = path.join(dir, 'records.jsonl');
    writeFileSync(file, '{"earlier":"line"}\n'); // appends, never truncates
    const s = createRecordStream(file, { policyVersion: 'pv-9' });
    s.write(i);
    s.write(c);
    s.write(e);
    await s.close();
    const lines = readFileSync(file, 'utf8').split('\n');
    expect(lines[0]).toBe('{"earlier":"line"}');
    expect(lines[4]).toBe('');
    const [li, lc, le] = lines.slice(1, 4).map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const l of [li, lc, le]) expect(Object.keys(l!)).toEqual(KEYS);
    expect(li).toEqual({
      ts: '2026-03-01T09:00:00.123Z', log_id: i.logId, record_type: 'intent', sub: 'u-alice', email: 'alice@example.com', name: 'Alice Support',
      groups: ['support'], principal_kind: 'person', application: null,
      acting_for: { kind: 'person', sub: BOB.sub, email: BOB.email, name: BOB.name, groups: BOB.groups },
      db_role: 'app_user', database: 'app', client_addr: '127.0.0.1', application_name: 'psql', session_id: 's-1',
      statement: 'SELECT id, email FROM customers WHERE id = $1', params: ['42'], kinds: ['SELECT'], tables: ['public.customers'],
      columns: ['public.customers.id', 'public.customers.email'], decision: 'mask', rule: null, policy_version: 'pv-1', reason: 'ticket 7',
      named_query: null, masked_fields: { 'public.customers.email': 'email' }, rows: null, sqlstate: null, error: null, duration_ms: null,
      event: null, detail: null, subject_keys: null,
    });
    expect(lc).toMatchObject({
      ts: '2026-03-01T09:00:00.127Z', log_id: i.logId, record_type: 'completion', sub: null, session_id: 's-1', rows: 3, duration_ms: 2.5,
      policy_version: 'pv-9', subject_keys: ['customer:42', 'customer:7', 'order:*'], detail: { subjects_possible: { order: 'keys unknown (aggregate)' } },
    });
    expect(le).toMatchObject({ record_type: 'event', event: 'revoke', log_id: 'ev-1', detail: { email: 'mallory@example.com', by: 'admin@example.com' }, statement: null });
  });

  it('writes to stdout (a child process, read through a pipe)', async () => {
    const script = path.join(dir, 'to-stdout.mts');
    writeFileSync(script, `
import { createRecordStream } from ${JSON.stringify(path.resolve(import.meta.dirname, '../../src/audit/stream.ts'))};
const s = createRecordStream('stdout');
for (let n = 0; n < 500; n++) s.write({ type: 'event', logId: 'e' + n, ts: new Date(0), event: 'test', detail: { n } });
await s.close();
process.stderr.write('closed\\n');
`);
    const r = await new Promise<{ out: string; err: string; code: number }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', script], { maxBuffer: 16 * 1024 * 1024 }, (err, out, errOut) => resolve({ out, err: errOut, code: err ? 1 : 0 }));
    });
    expect(r.code, r.err).toBe(0);
    expect(r.err).toBe('closed\n');
    const lines = r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as { log_id: string; detail: { n: number }; policy_version: unknown; ts: string });
    expect(lines).toHaveLength(500);
    expect(lines[499]).toMatchObject({ log_id: 'e499', detail: { n: 499 }, policy_version: null, ts: '1970-01-01T00:00:00.000Z' });
  });

  it('drops (and counts) lines instead of growing without bound when the target falls behind', async () => {
    const file = path.join(dir, 'slow.jsonl');
    const warnings: string[] = [];
    const s = createRecordStream(file, { maxBufferBytes: 1, warn: (msg) => warnings.push(msg) });
    s.write(e); // taken: nothing is buffered yet
    s.write(e); // the first line is still being written: over the 1-byte bound
    s.write(e);
    expect(s.dropped).toBe(2);
    expect(warnings).toEqual([expect.stringMatching(/audit stream is behind: dropping lines/)]);
    await s.close();
    expect(readFileSync(file, 'utf8').trimEnd().split('\n')).toHaveLength(1);
    expect(streamLine(e).record_type).toBe('event');
  });

  it('refuses a file it cannot open, at once', () => {
    expect(() => createRecordStream(path.join(dir, 'no-such-dir', 'x.jsonl'))).toThrow(/audit\.stream: cannot open .* for appending: ENOENT/);
  });
});
