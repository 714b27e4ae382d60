/**
 * Which node addresses accept node ports, as `--nodeport-addresses` and
 * `--iptables-localhost-nodeports` decide, for every mode and for the health check
 * servers. Upstream's rules: a family the flag names no CIDR of (or a zero CIDR) accepts
 * node ports on every local address; `primary` is the node's first address of each family;
 * localhost node ports (IPv4 only) are on only while the addresses include 127.0.0.1.
 */
import { cidrContains, parseCIDR, parseIP, type IPFamily, type ParsedCIDR } from '../net/ip.js';
import type { NodeContext } from './types.js';

const IPV4_LOOPBACK = parseIP('127.0.0.1')!;
const IPV6_LOOPBACK = '::1';

interface FamilySelection {
  /** Every local address of the family. */
  all: boolean;
  cidrs: ParsedCIDR[];
  primary: boolean;
}

function selection(family: IPFamily, nodePortAddresses: readonly string[]): FamilySelection {
  const cidrs = nodePortAddresses
    .filter((a) => a !== 'primary')
    .map((a) => parseCIDR(a)!)
    .filter((c) => c.family === family);
  const primary = nodePortAddresses.includes('primary');
  return { all: (cidrs.length === 0 && !primary) || cidrs.some((c) => c.prefix === 0), cidrs, primary };
}

/** Whether node ports are accepted on 127.0.0.1: asked for, and the addresses include it. */
export function localhostNodePortsOn(nodePortAddresses: readonly string[], requested: boolean): boolean {
  const s = selection('IPv4', nodePortAddresses);
  return requested && (s.all || s.cidrs.some((c) => cidrContains(c, IPV4_LOOPBACK)));
}

/**
 * The node's addresses of `family` that accept node ports, or null for every local
 * address. Never IPv6 loopback, and 127.0.0.1 only while localhost node ports are on.
 */
export function nodePortIPs(family: IPFamily, node: NodeContext, nodePortAddresses: readonly string[], localhostNodePorts: boolean): string[] | null {
  const s = selection(family, nodePortAddresses);
  if (s.all) return null;
  const localhost = family === 'IPv4' && localhostNodePortsOn(nodePortAddresses, localhostNodePorts);
  const own = node.nodeIPs.map((t) => parseIP(t)!).filter((ip) => ip.family === family);
  const out = own
    .filter((ip, i) => (s.primary && i === 0) || s.cidrs.some((c) => cidrContains(c, ip)))
    .map((ip) => ip.text)
    .filter((ip) => (family === 'IPv6' ? ip !== IPV6_LOOPBACK : localhost || !ip.startsWith('127.')));
  // Loopback is an address of every node, though no Node object lists it.
  if (localhost && !out.includes(IPV4_LOOPBACK.text)) out.push(IPV4_LOOPBACK.text);
  return out;
}
