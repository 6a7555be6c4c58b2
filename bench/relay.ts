// A bare Node.js TCP relay (socket.pipe both ways, TCP_NODELAY on both sockets): the ceiling for
// any proxy written in Node on this machine, used by `npm run bench` as the optional `node-relay`
// path. It understands nothing of the protocol.
//   node bench/relay.ts LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT   (prints "relay listening" when ready)
import net from 'node:net';

const [listenPort, upHost, upPort] = [Number(process.argv[2]), process.argv[3] ?? '127.0.0.1', Number(process.argv[4])];
if (!listenPort || !upPort) {
  process.stderr.write('usage: relay.ts LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT\n');
  process.exit(2);
}

const server = net.createServer({ noDelay: true }, (client) => {
  const upstream = net.connect({ host: upHost, port: upPort, noDelay: true });
  client.setNoDelay(true);
  client.pipe(upstream);
  upstream.pipe(client);
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', end);
  upstream.on('error', end);
  client.on('close', end);
  upstream.on('close', end);
});
server.listen(listenPort, '127.0.0.1', () => process.stderr.write('relay listening\n'));
const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
