// Echo server run inside a pod namespace by test/support/topology.ts.
// Usage: node echo-server.mjs <podName> [--tcp PORT]... [--udp PORT]...
// Answers every TCP connection and every UDP datagram, IPv4 or IPv6, with one line:
// `<podName> <clientIP>:<clientPort>` (`<podName> [<clientIPv6>]:<clientPort>` for an IPv6
// client), then prints READY on stdout once every socket listens.
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

// IPv4 clients of a dual-stack socket show as ::ffff:a.b.c.d: report them as a.b.c.d:port;
// IPv6 clients as [addr]:port, so `client.split(':')[0]` still reads an IPv4 address.
const strip = (a) => (a && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
const show = (address, port) => {
  const a = strip(address);
  return a && a.includes(':') ? `[${a}]:${port}` : `${a}:${port}`;
};
const listening = [];

// Listen on :: for both families; where a namespace has no IPv6, on 0.0.0.0 alone.
const noIPv6 = (err) => err && ['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT', 'EINVAL'].includes(err.code);

function listenTcp(port, host) {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.end(`${name} ${show(sock.remoteAddress, sock.remotePort)}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => {
      if (host === '::' && noIPv6(err)) listenTcp(port, '0.0.0.0').then(resolve, reject);
      else reject(err);
    });
    server.listen({ host, port, ipv6Only: false }, resolve);
  });
}

function bindUdp(port, type) {
  const sock = dgram.createSocket({ type, ipv6Only: false });
  sock.on('message', (_msg, rinfo) => {
    sock.send(`${name} ${show(rinfo.address, rinfo.port)}\n`, rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    sock.once('error', (err) => {
      try {
        sock.close();
      } catch {}
      if (type === 'udp6' && noIPv6(err)) bindUdp(port, 'udp4').then(resolve, reject);
      else reject(err);
    });
    sock.bind({ address: type === 'udp6' ? '::' : '0.0.0.0', port }, resolve);
  });
}

for (const port of tcp) listening.push(listenTcp(port, '::'));
for (const port of udp) listening.push(bindUdp(port, 'udp6'));

Promise.all(listening).then(
  () => process.stdout.write('READY\n'),
  (err) => {
    process.stderr.write(`echo-server ${name}: ${err && err.message}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', () => process.exit(0));
