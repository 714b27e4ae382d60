/**
 * The endpoint side of the userspace bench, in a process of its own. On PORT (printed):
 * - a connection that starts with `B` is a bulk upload: counted to its end, answered `ok`;
 * - one that starts with `C` is answered `x` and closed (connection rate);
 * - one that starts with `R` is request/response: each 64-byte request gets 64 bytes back.
 */
import net from 'node:net';

const RESPONSE = Buffer.alloc(64, 0x72);

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  s.on('error', () => {});
  s.once('data', (first) => {
    const kind = String.fromCharCode(first[0]!);
    if (kind === 'C') {
      s.end('x');
      return;
    }
    if (kind === 'B') {
      s.on('data', () => {});
      s.on('end', () => s.end('ok'));
      return;
    }
    let pending = first.length - 1;
    const answer = () => {
      while (pending >= 64) {
        pending -= 64;
        s.write(RESPONSE);
      }
    };
    answer();
    s.on('data', (d) => {
      pending += d.length;
      answer();
    });
    s.on('end', () => s.end());
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`));
