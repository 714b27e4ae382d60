// TCP -> Unix socket forwarder run inside the lan namespace by test/support/topology.ts.
// Usage: node unix-forwarder.mjs LISTEN_IP LISTEN_PORT SOCKET_PATH; prints READY when listening.
import net from 'node:net';

const [host, portText, socketPath] = process.argv.slice(2);
const server = net.createServer((client) => {
  const upstream = net.connect({ path: socketPath });
  client.pipe(upstream);
  upstream.pipe(client);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', () => upstream.end());
  upstream.on('close', () => client.end());
});
server.on('error', (err) => {
  process.stderr.write(`unix-forwarder: ${err.message}\n`);
  process.exit(1);
});
server.listen({ host, port: Number(portText) }, () => process.stdout.write('READY\n'));
process.on('SIGTERM', () => process.exit(0));
