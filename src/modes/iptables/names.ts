/**
 * Upstream kube-proxy's chain names: a prefix plus the first 16 characters of the
 * RFC 4648 base32 encoding of a SHA-256 digest. Tools and people that know upstream's
 * `iptables-save` output find the same names here.
 */
import { hash } from 'node:crypto';
import { flat } from '../../model/flat.js';
import type { Endpoint, ServicePort } from '../../model/types.js';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * First 16 characters of base32(sha256(s)): 80 bits, read as four 20-bit groups of the
 * hex digest. (One-shot `hash` to hex is the cheapest digest Node offers per call; a
 * render hashes every service port and endpoint, 110,000 names at 10k x 10.)
 */
export function hash16(s: string): string {
  const hex = hash('sha256', s, 'hex');
  let out = '';
  for (let i = 0; i < 20; i += 5) {
    const v = Number.parseInt(hex.slice(i, i + 5), 16);
    out += BASE32[v >>> 15]! + BASE32[(v >>> 10) & 31]! + BASE32[(v >>> 5) & 31]! + BASE32[v & 31]!;
  }
  return flat(out);
}

/** Lowercase protocol names, as they appear in rules and hashed names. */
export const PROTOCOL_NAMES = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;

export interface ServiceChains {
  svc: string;
  svl: string;
  ext: string;
  fw: string;
}

// Names depend only on immutable model objects, and the agent re-renders the same objects
// on every sync: remembering them per object makes a re-render skip 110,000 digests.
const serviceChainCache = new WeakMap<ServicePort, ServiceChains>();
const endpointChainCache = new WeakMap<ServicePort, Map<Endpoint, string>>();

export function serviceChains(sp: ServicePort): ServiceChains {
  let names = serviceChainCache.get(sp);
  if (!names) {
    const h = hash16(sp.name + PROTOCOL_NAMES[sp.protocol]);
    names = { svc: `KUBE-SVC-${h}`, svl: `KUBE-SVL-${h}`, ext: `KUBE-EXT-${h}`, fw: `KUBE-FW-${h}` };
    serviceChainCache.set(sp, names);
  }
  return names;
}

export function endpointChain(sp: ServicePort, ep: Endpoint): string {
  let known = endpointChainCache.get(sp);
  if (!known) {
    known = new Map();
    endpointChainCache.set(sp, known);
  }
  let name = known.get(ep);
  if (name === undefined) {
    name = flat(`KUBE-SEP-${hash16(sp.name + PROTOCOL_NAMES[sp.protocol] + ep.address)}`);
    known.set(ep, name);
  }
  return name;
}
