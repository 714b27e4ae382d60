/** The libc bindings against the kernel: socket addresses as it reads them, and a splice through a pipe. */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { C, loadLibc } from '../native/libc.js';
import { sockaddr } from '../src/modes/userspace/splice/sockaddr.js';

describe('sockaddr', () => {
  it('writes IPv4 and IPv6 addresses and ports in network order', () => {
    expect(sockaddr('10.1.2.3', 8080).toString('hex')).toBe('0200' + '1f90' + '0a010203' + '00'.repeat(8));
    const v6 = sockaddr('fd00::1', 443);
    expect(v6.length).toBe(28);
    expect(v6.subarray(0, 4).toString('hex')).toBe('0a0001bb');
    expect(v6.subarray(8, 24).toString('hex')).toBe('fd00' + '0'.repeat(26) + '01');
    expect(sockaddr('1:2:3:4:5:6:7:8', 1).subarray(8, 24).toString('hex')).toBe('00010002000300040005000600070008');
    expect(sockaddr('::', 1).subarray(8, 24).toString('hex')).toBe('0'.repeat(32));
    expect(() => sockaddr('host.example', 1)).toThrow(/not an IP/);
  });
});

describe('libc', () => {
  it('connects a non-blocking socket and splices what it reads through a pipe to another socket', async () => {
    const libc = await loadLibc();
    let got = '';
    const done = new Promise<void>((resolve) => {
      const srv = net.createServer((s) => {
        s.on('data', (d) => (got += d));
        s.on('end', () => (srv.close(), resolve()));
      });
      srv.listen(0, '127.0.0.1', () => {
        const port = (srv.address() as net.AddressInfo).port;
        const fd = libc.socket(C.AF_INET, C.SOCK_STREAM, 0);
        expect(libc.connect(fd, sockaddr('127.0.0.1', port))).toBe(0);
        const [r, w] = libc.pipe2(C.O_CLOEXEC)!;
        const text = Buffer.from('through a pipe');
        expect(libc.write(w, text, text.length)).toBe(text.length);
        expect(libc.splice(r, fd, 100, C.SPLICE_F_NONBLOCK)).toBe(text.length);
        // Nothing left: a non-blocking splice says EAGAIN.
        expect(libc.splice(r, fd, 100, C.SPLICE_F_NONBLOCK)).toBe(-1);
        expect(libc.errno()).toBe(C.EAGAIN);
        expect(libc.getInt(fd, C.SOL_SOCKET, C.SO_ERROR)).toBe(0);
        for (const x of [r, w, fd]) libc.close(x);
      });
    });
    await done;
    expect(got).toBe('through a pipe');
    expect(libc.close(-1)).toBe(-1);
    expect(libc.strerror(9)).toMatch(/bad file descriptor/i);
  });
});
