// A server of long-lived connections, run in a pod namespace: answers every line a client
// sends with `<podName>\n`, on the same connection, for as long as the client keeps it.
// Usage: node keepalive-server.mjs NAME PORT; prints READY once listening.
import net from 'node:net';

const [name, portText] = process.argv.slice(2);
const server = net.createServer((sock) => {
  sock.on('error', () => {});
  let pending = '';
  sock.on('data', (d) => {
    pending += d;
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
      pending = pending.slice(i + 1);
      sock.write(`${name}\n`);
    }
  });
  sock.on('end', () => sock.end());
});
server.listen({ host: '0.0.0.0', port: Number(portText) }, () => process.stdout.write('READY\n'));
