/**
 * Addresses as a trace takes them: `IP`, `IP:PORT`, `[IPv6]:PORT`; and the checks that
 * make a packet traceable at all.
 */
import { parseIP, type IPFamily } from '../net/ip.js';
import { TraceError, type Packet } from './types.js';

export interface HostPort {
  ip: string;
  port: number | null;
}

/** `IP`, `IP:PORT` or `[IPv6]:PORT` (a bare IPv6 address has no port); null when malformed. */
export function parseHostPort(text: string): HostPort | null {
  const bracketed = /^\[([^\]]+)\]:([0-9]{1,5})$/.exec(text);
  const v4 = /^([0-9.]+):([0-9]{1,5})$/.exec(text);
  const m = bracketed ?? v4;
  const ip = parseIP(m ? m[1]! : text);
  if (!ip) return null;
  if (!m) return { ip: ip.text, port: null };
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { ip: ip.text, port } : null;
}

/** The family of a packet; both addresses must be of it. */
export function packetFamily(p: Packet): IPFamily {
  const src = parseIP(p.src);
  const dst = parseIP(p.dst);
  if (!src) throw new TraceError(`source ${p.src} is not an IP address`);
  if (!dst) throw new TraceError(`destination ${p.dst} is not an IP address`);
  if (src.family !== dst.family) throw new TraceError(`source ${p.src} and destination ${p.dst} are of different IP families`);
  return dst.family;
}
