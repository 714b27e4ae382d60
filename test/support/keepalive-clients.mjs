// Long-lived clients, run in a client namespace: COUNT connections to IP:PORT, each sending
// a request line, waiting for the answer (a pod name), pausing THINK_MS, and again; a
// connection the other side ends is opened again at once, as HTTP/gRPC clients do.
// Every 500 ms prints one JSON line: {"t": ms since start, "counts": {pod: answers in those 500 ms}, "reconnects": n}.
// Usage: node keepalive-clients.mjs IP PORT COUNT THINK_MS
import net from 'node:net';

const [ip, portText, countText, thinkText] = process.argv.slice(2);
const port = Number(portText);
const think = Number(thinkText);
const started = Date.now();
let counts = {};
let reconnects = 0;

function client() {
  const sock = net.connect({ host: ip, port });
  let pending = '';
  let closed = false;
  const ask = () => !closed && sock.write('req\n');
  sock.setNoDelay(true);
  sock.on('connect', ask);
  sock.on('data', (d) => {
    pending += d;
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
      const pod = pending.slice(0, i);
      pending = pending.slice(i + 1);
      counts[pod] = (counts[pod] ?? 0) + 1;
      setTimeout(ask, think);
    }
  });
  const again = () => {
    if (closed) return;
    closed = true;
    sock.destroy();
    reconnects++;
    setTimeout(client, 10);
  };
  sock.on('end', again);
  sock.on('error', again);
  sock.on('close', again);
}

for (let i = 0; i < Number(countText); i++) client();
setInterval(() => {
  process.stdout.write(`${JSON.stringify({ t: Date.now() - started, counts, reconnects })}\n`);
  counts = {};
}, 500);
