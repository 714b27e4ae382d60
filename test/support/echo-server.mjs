// Echo server run inside a pod namespace by test/support/topology.ts.
// Usage: node echo-server.mjs <podName> [--tcp PORT]... [--udp PORT]...
// Answers every TCP connection and every UDP datagram with one line:
// `<podName> <clientIP>:<clientPort>`, then prints READY on stdout once every socket listens.
import net from 'node:net';
import dgram from 'node:dgram';

const [name, ...rest] = process.argv.slice(2);
if (!name) {
  process.stderr.write('usage: echo-server.mjs NAME [--tcp PORT]... [--udp PORT]...\n');
  process.exit(2);
}
const tcp = [];
const udp = [];
for (let i = 0; i < rest.length; i += 2) {
  const port = Number(rest[i + 1]);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`bad port ${rest[i + 1]}`);
  if (rest[i] === '--tcp') tcp.push(port);
  else if (rest[i] === '--udp') udp.push(port);
  else throw new Error(`unknown option ${rest[i]}`);
}

const strip = (a) => (a && a.startsWith('::ffff:') ? a.slice(7) : a);
const listening = [];

for (const port of tcp) {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.end(`${name} ${strip(sock.remoteAddress)}:${sock.remotePort}\n`);
  });
  listening.push(
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '0.0.0.0', port }, resolve);
    }),
  );
}

for (const port of udp) {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (_msg, rinfo) => {
    sock.send(`${name} ${rinfo.address}:${rinfo.port}\n`, rinfo.port, rinfo.address);
  });
  listening.push(
    new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind({ address: '0.0.0.0', port }, resolve);
    }),
  );
}

Promise.all(listening).then(
  () => process.stdout.write('READY\n'),
  (err) => {
    process.stderr.write(`echo-server ${name}: ${err && err.message}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', () => process.exit(0));
