/**
 * What every mode's rule walk keeps of a packet: its fields as rules rewrite them, what
 * has been done to it so far (its fate), and which addresses are the node's own. Each
 * mode walks its own rules; these are the parts that end in the same Outcome.
 */
import { cidrContains, parseCIDR, parseIP, type IPFamily, type ParsedIP } from '../net/ip.js';
import type { Outcome, Packet, RuleRef, Verdict } from './types.js';

/** The packet as the rules see it: destination NAT rewrites it, marks are set on it. */
export interface PacketFields {
  protocol: string;
  src: ParsedIP;
  dst: ParsedIP;
  dport: number;
  mark: number;
  /** Rewritten by destination NAT (conntrack status DNAT). */
  dnat: boolean;
}

export function packetFields(p: Packet): PacketFields {
  return { protocol: p.protocol, src: parseIP(p.src)!, dst: parseIP(p.dst)!, dport: p.dstPort, mark: 0, dnat: false };
}

/** What the rules have done to the packet on one way through them. */
export interface Fate {
  probability: number;
  dnat: string | null;
  dnatBy: RuleRef | null;
  acceptedBy: RuleRef | null;
  markedBy: RuleRef | null;
  masquerade: boolean;
  sticky: boolean;
  delivery: Outcome['delivery'];
}

export const newFate = (): Fate => ({
  probability: 1,
  dnat: null,
  dnatBy: null,
  acceptedBy: null,
  markedBy: null,
  masquerade: false,
  sticky: false,
  delivery: null,
});

export function outcomeOf(f: Fate, verdict: Verdict, decidedBy: RuleRef | null, reason: string | null): Outcome {
  return {
    probability: f.probability,
    verdict,
    dnat: f.dnat,
    masquerade: f.masquerade,
    delivery: f.delivery,
    decidedBy,
    markedBy: f.masquerade ? f.markedBy : null,
    sticky: f.sticky,
    reason,
  };
}

/** How a walk ends when no rule stopped the packet. */
export const endOf = (f: Fate): { verdict: Verdict; by: RuleRef | null } =>
  f.dnat ? { verdict: 'dnat', by: f.dnatBy } : f.acceptedBy ? { verdict: 'accept', by: f.acceptedBy } : { verdict: 'no-match', by: null };

const LOOPBACK: Record<IPFamily, string> = { IPv4: '127.0.0.0/8', IPv6: '::1/128' };

/** The node's own addresses, as a trace takes them: its Node object's, plus loopback. */
export class NodeAddresses {
  private readonly ips: ParsedIP[];

  constructor(nodeIPs: string[]) {
    this.ips = nodeIPs.map((t) => parseIP(t)).filter((ip): ip is ParsedIP => ip !== null);
  }

  isLocal(ip: ParsedIP): boolean {
    return cidrContains(parseCIDR(LOOPBACK[ip.family])!, ip) || this.ips.some((l) => l.text === ip.text);
  }

  /** For DataplaneTrace.localAddresses. */
  of(family: IPFamily): string[] {
    return [...this.ips.filter((ip) => ip.family === family).map((ip) => ip.text), LOOPBACK[family]];
  }
}
