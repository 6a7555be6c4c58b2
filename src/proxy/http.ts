// Optional HTTP endpoint: /healthz (process up), /readyz (upstream and audit store reachable),
// /metrics (Prometheus).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HttpProbes {
  ready(): Promise<{ ok: boolean; detail: Record<string, boolean> }>;
  metrics(): string;
}

export async function startHttp(host: string, port: number, probes: HttpProbes): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (url === '/readyz') {
      probes.ready().then(
        (r) => res.writeHead(r.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(r) + '\n'),
        () => res.writeHead(503).end('{"ok":false}\n'),
      );
    } else if (url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(probes.metrics());
    } else res.writeHead(404).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return { server, port: (server.address() as AddressInfo).port };
}
