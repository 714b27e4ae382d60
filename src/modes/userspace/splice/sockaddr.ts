/** `struct sockaddr_in` and `sockaddr_in6` as the kernel reads them, from an address's text. */
import { C } from '../../../../native/libc.js';
import { parseIP } from '../../../net/ip.js';

/** A socket address for bind or connect; throws on an address that is not an IP. */
export function sockaddr(ip: string, port: number): Buffer {
  const parsed = parseIP(ip);
  if (!parsed) throw new Error(`${JSON.stringify(ip)} is not an IP address`);
  const v4 = parsed.family === 'IPv4';
  const b = Buffer.alloc(v4 ? 16 : 28);
  b.writeUInt16LE(v4 ? C.AF_INET : C.AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  // sin_addr follows the port; sin6_addr follows the port and sin6_flowinfo.
  b.set(parsed.bytes, v4 ? 4 : 8);
  return b;
}
