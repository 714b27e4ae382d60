// One-shot client run inside a namespace by test/support/topology.ts; prints one JSON line.
// Usage:
//   node probe.mjs tcp IP PORT TIMEOUT_MS [COUNT]     COUNT>1: sequential connections, JSON array
//   node probe.mjs udp IP PORT TIMEOUT_MS [SOURCE_PORT]
// IP is IPv4 or IPv6 (plain or in brackets).
// Each result is {ok:true,pod,client,answer} or {ok:false,error}; error is 'refused',
// 'timeout', 'unreachable', 'reset', 'no-answer' or an errno code.
import net from 'node:net';
import dgram from 'node:dgram';

const [mode, ipText, portText, timeoutText, extra] = process.argv.slice(2);
const ip = /^\[.*\]$/.test(ipText ?? '') ? ipText.slice(1, -1) : ipText;
const v6 = net.isIPv6(ip);
const port = Number(portText);
const timeoutMs = Number(timeoutText);

function classify(err) {
  switch (err && err.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    case 'ECONNRESET':
      return 'reset';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return String((err && (err.code || err.message)) || err);
  }
}

function parse(text) {
  const line = text.split('\n')[0].trim();
  const m = /^(\S+) (\S+)$/.exec(line);
  if (!m) return { ok: false, error: line ? `bad-answer: ${line}` : 'no-answer' };
  return { ok: true, pod: m[1], client: m[2], answer: line };
}

function tcpOnce() {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    let connected = false;
    const sock = net.connect({ host: ip, port });
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, error: connected ? 'no-answer' : 'timeout' }), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => (connected = true));
    sock.on('data', (d) => {
      data += d;
      if (data.includes('\n')) finish(parse(data));
    });
    sock.on('end', () => finish(parse(data)));
    sock.on('error', (err) => finish({ ok: false, error: classify(err) }));
  });
}

function udpOnce(sourcePort) {
  return new Promise((resolve) => {
    let done = false;
    const sock = dgram.createSocket(v6 ? 'udp6' : 'udp4');
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {}
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), timeoutMs);
    sock.on('error', (err) => finish({ ok: false, error: classify(err) }));
    sock.on('message', (msg) => finish(parse(msg.toString('utf8'))));
    sock.bind({ address: v6 ? '::' : '0.0.0.0', port: sourcePort ?? 0 }, () => {
      // A connected socket reports ICMP port-unreachable as ECONNREFUSED.
      sock.connect(port, ip, (err) => {
        if (err) return finish({ ok: false, error: classify(err) });
        sock.send('probe\n', (e) => e && finish({ ok: false, error: classify(e) }));
      });
    });
  });
}

async function main() {
  if (mode === 'tcp') {
    const count = extra === undefined ? 0 : Number(extra);
    if (count === 0) return tcpOnce();
    const out = [];
    for (let i = 0; i < count; i++) out.push(await tcpOnce());
    return out;
  }
  if (mode === 'udp') return udpOnce(extra === undefined || extra === '' ? undefined : Number(extra));
  throw new Error(`unknown mode ${mode}`);
}

main().then(
  (r) => {
    process.stdout.write(JSON.stringify(r) + '\n');
    process.exit(0);
  },
  (err) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(err && err.message) }) + '\n');
    process.exit(0);
  },
);
