/** `struct sockaddr_in` and `sockaddr_in6` as the kernel reads them, from an address's text. */
import net from 'node:net';
import { C } from './libc.js';

/** A socket address for bind or connect; throws on an address that is not an IP. */
export function sockaddr(ip: string, port: number): Buffer {
  if (net.isIPv4(ip)) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(C.AF_INET, 0);
    b.writeUInt16BE(port, 2);
    ipv4Bytes(ip).copy(b, 4);
    return b;
  }
  if (net.isIPv6(ip)) {
    const b = Buffer.alloc(28);
    b.writeUInt16LE(C.AF_INET6, 0);
    b.writeUInt16BE(port, 2);
    ipv6Bytes(ip).copy(b, 8);
    return b;
  }
  throw new Error(`${JSON.stringify(ip)} is not an IP address`);
}

function ipv4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

/** The 16 bytes of an IPv6 address: `::` expanded, a trailing dotted quad taken as two groups. */
export function ipv6Bytes(ip: string): Buffer {
  let text = ip.split('%')[0]!;
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const q = ipv4Bytes(quad[1]!);
    text = `${text.slice(0, quad.index)}${q.readUInt16BE(0).toString(16)}:${q.readUInt16BE(2).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, null];
  const groups = (s: string | undefined) => (s ? s.split(':') : []);
  const h = groups(head);
  const t = tail === null ? [] : groups(tail);
  const all = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  all.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}
