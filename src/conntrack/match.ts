/**
 * Deletions matched against conntrack entries, in JS: the netlink cleaner runs it on each
 * entry of its dump, the command cleaner on each line `conntrack -L` prints. An entry is
 * read as its protocol, original destination address and port, and reply source (the
 * endpoint a DNAT sent it to; the original destination itself when nothing did).
 *
 * Addresses compare as keys made from their bytes, never as text: hex for the command
 * cleaner and for IPv6, and for IPv4 in the netlink cleaner the 32-bit number the library
 * hands over (`ipv4Raw`), so that most entries are dismissed without making a string.
 */
import { endianness } from 'node:os';
import { parseIP } from '../net/ip.js';
import type { IPFamily } from '../model/types.js';
import type { ConntrackDeletion, ConntrackProtocol } from './stale.js';

/** IANA protocol numbers, as conntrack reports them. */
export const PROTOCOL_NUMBER: Record<ConntrackProtocol, number> = { UDP: 17, SCTP: 132 };

/** An address as hex of its bytes (8 digits for IPv4, 32 for IPv6), or null if it is not one. */
export function addressKey(ip: string): string | null {
  const p = parseIP(ip);
  return p ? Buffer.from(p.bytes).toString('hex') : null;
}

/**
 * An IPv4 address as libnetfilter_conntrack's u32 getters return it on this machine: the
 * address's bytes in network order, read as a native-endian uint32. Null if not IPv4.
 */
export function ipv4Raw(ip: string): number | null {
  const p = parseIP(ip);
  if (!p || p.family !== 'IPv4') return null;
  const b = Buffer.from(p.bytes);
  return LITTLE_ENDIAN ? b.readUInt32LE(0) : b.readUInt32BE(0);
}
const LITTLE_ENDIAN = endianness() === 'LE';

export interface FlowEntry<K> {
  protocol: number;
  origDst: K;
  origPortDst: number;
  replySrc: K;
}

interface Compiled<K> {
  index: number;
  dnatTo: K | null;
  keep: Set<K>;
}

/** Deletions naming one protocol and destination port: by service address, and node ports. */
export interface PortDeletions<K> {
  byDst: Map<K, Compiled<K>[]>;
  nodePort: Compiled<K>[];
}

/** The deletions of one family, indexed by what an entry is checked on first: its port. */
export class DeletionIndex<K = string> {
  /** destination port -> protocol -> its deletions (the cheap first tests). */
  private readonly ports = new Map<number, Map<number, PortDeletions<K>>>();
  /** Deletions whose addresses did not parse: they match nothing, and say so. */
  readonly invalid: number[] = [];

  constructor(
    readonly family: IPFamily,
    readonly deletions: readonly ConntrackDeletion[],
    key: (ip: string) => K | null = addressKey as (ip: string) => K | null,
  ) {
    deletions.forEach((d, index) => {
      const dnatTo = d.dnatTo === null ? null : key(d.dnatTo);
      const dst = d.origDst === undefined ? null : key(d.origDst);
      const keep = (d.keep ?? []).map(key);
      if (d.family !== family || (d.dnatTo !== null && dnatTo === null) || (d.origDst !== undefined && dst === null) || keep.includes(null)) {
        this.invalid.push(index);
        return;
      }
      const c: Compiled<K> = { index, dnatTo, keep: new Set(keep as K[]) };
      let byProto = this.ports.get(d.origPortDst);
      if (!byProto) this.ports.set(d.origPortDst, (byProto = new Map()));
      const proto = PROTOCOL_NUMBER[d.protocol];
      let p = byProto.get(proto);
      if (!p) byProto.set(proto, (p = { byDst: new Map(), nodePort: [] }));
      if (dst === null) p.nodePort.push(c);
      else {
        const list = p.byDst.get(dst);
        if (list) list.push(c);
        else p.byDst.set(dst, [c]);
      }
    });
  }

  /** Whether any deletion names this destination port (any protocol): most entries stop here. */
  wantsPort(origPortDst: number): boolean {
    return this.ports.has(origPortDst);
  }

  /** The deletions for this protocol and destination port, if any. */
  forPort(protocol: number, origPortDst: number): PortDeletions<K> | undefined {
    return this.ports.get(origPortDst)?.get(protocol);
  }

  /** Whether an entry to this address could match: a deletion names it, or the port is a node port. */
  static wantsDst<K>(p: PortDeletions<K>, origDst: K): boolean {
    return p.nodePort.length > 0 || p.byDst.has(origDst);
  }

  /** The indices (into `deletions`) of the deletions this entry falls under; empty for most. */
  match(e: FlowEntry<K>): number[] {
    const p = this.forPort(e.protocol, e.origPortDst);
    if (!p) return [];
    const out: number[] = [];
    const check = (list: Compiled<K>[] | undefined) => {
      for (const c of list ?? []) {
        if (c.dnatTo !== null ? e.replySrc === c.dnatTo : !c.keep.has(e.replySrc)) out.push(c.index);
      }
    };
    check(p.byDst.get(e.origDst));
    check(p.nodePort);
    return out;
  }
}

/** Deletions grouped by family, each group in the order given. */
export function byFamily(deletions: readonly ConntrackDeletion[]): Map<IPFamily, ConntrackDeletion[]> {
  const out = new Map<IPFamily, ConntrackDeletion[]>();
  for (const d of deletions) {
    const list = out.get(d.family);
    if (list) list.push(d);
    else out.set(d.family, [d]);
  }
  return out;
}
