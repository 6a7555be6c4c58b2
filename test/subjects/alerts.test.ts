// Live alerts from the proxy: a statement returning more subjects than anomalies.bulk_subjects
// is reported on the proxy's log and to the webhook, as it happens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startStack, type Stack } from '../support/stack.ts';

let stack: Stack;
let hook: Server;
const received: Record<string, unknown>[] = [];
let notify: (() => void) | undefined;

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
});
afterAll(async () => {
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
});
