/**
 * Upstream kube-proxy's chain names: a prefix plus the first 16 characters of the
 * RFC 4648 base32 encoding of a SHA-256 digest. Tools and people that know upstream's
 * `iptables-save` output find the same names here.
 */
import { createHash } from 'node:crypto';
import type { Endpoint, ServicePort } from '../model/types.js';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function base32(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const b of bytes) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(buffer << (5 - bits)) & 31];
  return out;
}

export function hash16(s: string): string {
  return base32(createHash('sha256').update(s).digest()).slice(0, 16);
}

export interface ServiceChains {
  svc: string;
  svl: string;
  ext: string;
  fw: string;
}

export function serviceChains(sp: Pick<ServicePort, 'name' | 'protocol'>): ServiceChains {
  const h = hash16(sp.name + sp.protocol.toLowerCase());
  return { svc: `KUBE-SVC-${h}`, svl: `KUBE-SVL-${h}`, ext: `KUBE-EXT-${h}`, fw: `KUBE-FW-${h}` };
}

export function endpointChain(sp: Pick<ServicePort, 'name' | 'protocol'>, ep: Pick<Endpoint, 'address'>): string {
  return `KUBE-SEP-${hash16(sp.name + sp.protocol.toLowerCase() + ep.address)}`;
}
