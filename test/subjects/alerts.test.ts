// Live alerts from the proxy: a statement returning more subjects than anomalies.bulk_subjects
// is reported on the proxy's log and to the webhook, as it happens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { startStack, type Stack } from '../support/stack.ts';
import { loadConfig } from '../../src/policy/config.ts';
import { startProxy, type RunningProxy } from '../../src/proxy/server.ts';
import { openAuditStore, type AuditStore } from '../../src/audit/writer.ts';

let stack: Stack;
let hook: Server;
const received: Record<string, unknown>[] = [];
let notify: (() => void) | undefined;
let streamFile = '';
let streamed: RunningProxy | undefined;
let streamedAudit: AuditStore | undefined;

beforeAll(async () => {
  hook = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body) as Record<string, unknown>);
      res.end('ok');
      notify?.();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  const port = (hook.address() as AddressInfo).port;
  stack = await startStack({
    poolMode: 'none',
    config: {
      subjects: { customer: { table: 'public.customers', key: 'id', via: ['public.orders.customer_id'] } },
      anomalies: { bulk_subjects: 50, alerts: { webhook_url: `http://127.0.0.1:${port}/alerts` } },
    },
  });
  // The SIEM stream is configured per proxy: a second proxy on this stack streams to a file.
  const YAML = (await import('yaml')).default;
  const doc = YAML.parse(readFileSync(stack.configFile, 'utf8'));
  doc.listen = '127.0.0.1:0';
  doc.audit.chain_id = 'streamed';
  doc.audit.checkpoint_file = path.join(stack.dir, 'head-streamed.json');
  doc.audit.stream = streamFile = path.join(stack.dir, 'records.jsonl');
  const file = path.join(stack.dir, 'streamed.yaml');
  writeFileSync(file, YAML.stringify(doc));
  const config = loadConfig(file);
  streamedAudit = await openAuditStore(config.audit, { policyVersion: config.policyVersion });
  streamed = await startProxy(config, { audit: streamedAudit, logger: pino({ level: 'silent' }) });
});
afterAll(async () => {
  await streamed?.close();
  await streamedAudit?.close();
  await stack?.stop();
  await new Promise<void>((r) => hook.close(() => r()));
});

describe('live alerts', () => {
  it('reports a bulk read to the webhook as it happens, and not a small lookup', async () => {
    const c = await stack.connect('carol@example.com');
    await c.query('SELECT id FROM customers WHERE id = 7');
    const arrived = new Promise<void>((r) => (notify = r));
    await c.query("SELECT email FROM customers WHERE region = 'EU'");
    await arrived;
    await c.end();
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ type: 'scalple_alert', alert: 'bulk_read', email: 'carol@example.com' });
  });

  it('streams every record as a JSON line to audit.stream (SIEM)', async () => {
    const t = await stack.token('bob@example.com');
    const c = new pg.Client({ host: '127.0.0.1', port: streamed!.port, database: 'app', user: 'x', options: `-c scalple.identity=${t.accessToken}` });
    await c.connect();
    await c.query("SELECT 'siem-marker' AS m");
    await c.end();
    await streamed!.close();
    streamed = undefined;
    const lines = readFileSync(streamFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const intent = lines.find((l) => l.record_type === 'intent' && String(l.statement).includes('siem-marker'));
    expect(intent).toMatchObject({ email: 'bob@example.com', db_role: 'app_user' });
    expect(lines.some((l) => l.record_type === 'completion' && l.log_id === intent!.log_id)).toBe(true);
  });
});
