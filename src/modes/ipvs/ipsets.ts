/**
 * Upstream ipvs mode's ipsets: their names, types and the comments of the iptables rules
 * that match them, and `ipset restore` text. IPv6 sets are named `KUBE-6-...`, as
 * upstream names them, so both families' sets live side by side.
 */
import type { IPFamily } from '../../model/types.js';

export type IpsetType = 'hash:ip' | 'hash:ip,port' | 'hash:ip,port,ip' | 'hash:ip,port,net' | 'bitmap:port';

export interface IpsetDef {
  /** The IPv4 name; IPv6 replaces `KUBE-` with `KUBE-6-`. */
  base: string;
  type: IpsetType;
  /** What the set is for: the comment of the iptables rules that match it. */
  comment: string;
}

const def = (base: string, type: IpsetType, comment: string): IpsetDef => ({ base, type, comment });

/** Every set upstream creates, in upstream's order. */
export const SETS = {
  loopBack: def('KUBE-LOOP-BACK', 'hash:ip,port,ip', 'Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose'),
  clusterIP: def('KUBE-CLUSTER-IP', 'hash:ip,port', 'Kubernetes service cluster ip + port for masquerade purpose'),
  externalIP: def('KUBE-EXTERNAL-IP', 'hash:ip,port', 'Kubernetes service external ip + port for masquerade and filter purpose'),
  externalIPLocal: def('KUBE-EXTERNAL-IP-LOCAL', 'hash:ip,port', 'Kubernetes service external ip + port with externalTrafficPolicy=local'),
  loadBalancer: def('KUBE-LOAD-BALANCER', 'hash:ip,port', 'Kubernetes service lb portal'),
  loadBalancerFW: def('KUBE-LOAD-BALANCER-FW', 'hash:ip,port', 'Kubernetes service load balancer ip + port for load balancer with sourceRange'),
  loadBalancerLocal: def('KUBE-LOAD-BALANCER-LOCAL', 'hash:ip,port', 'Kubernetes service load balancer ip + port with externalTrafficPolicy=local'),
  loadBalancerSourceIP: def('KUBE-LOAD-BALANCER-SOURCE-IP', 'hash:ip,port,ip', 'Kubernetes service load balancer ip + port + source IP for packet filter purpose'),
  loadBalancerSourceCIDR: def('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'hash:ip,port,net', 'Kubernetes service load balancer ip + port + source cidr for packet filter purpose'),
  nodePortTCP: def('KUBE-NODE-PORT-TCP', 'bitmap:port', 'Kubernetes nodeport TCP port for masquerade purpose'),
  nodePortLocalTCP: def('KUBE-NODE-PORT-LOCAL-TCP', 'bitmap:port', 'Kubernetes nodeport TCP port with externalTrafficPolicy=local'),
  nodePortUDP: def('KUBE-NODE-PORT-UDP', 'bitmap:port', 'Kubernetes nodeport UDP port for masquerade purpose'),
  nodePortLocalUDP: def('KUBE-NODE-PORT-LOCAL-UDP', 'bitmap:port', 'Kubernetes nodeport UDP port with externalTrafficPolicy=local'),
  nodePortSCTP: def('KUBE-NODE-PORT-SCTP-HASH', 'hash:ip,port', "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
  nodePortLocalSCTP: def('KUBE-NODE-PORT-LOCAL-SCTP-HASH', 'hash:ip,port', "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"),
  healthCheckNodePort: def('KUBE-HEALTH-CHECK-NODE-PORT', 'bitmap:port', 'Kubernetes health check node port'),
  ipvsIPs: def('KUBE-IPVS-IPS', 'hash:ip', 'Addresses on the ipvs interface'),
} as const;

export type SetKey = keyof typeof SETS;
export const SET_KEYS = Object.keys(SETS) as SetKey[];

/** ipset names are at most 31 characters. */
const MAX_NAME = 31;

export function setName(key: SetKey, family: IPFamily): string {
  const base = SETS[key].base;
  return family === 'IPv4' ? base : base.replace(/^KUBE-/, 'KUBE-6-').slice(0, MAX_NAME);
}

/** Whether a set of this name is one kube-proxy (ours or upstream's) creates, in either family. */
export function isOwnedSet(name: string): boolean {
  return SET_KEYS.some((k) => setName(k, 'IPv4') === name || setName(k, 'IPv6') === name);
}

export interface Ipset {
  key: SetKey;
  name: string;
  type: IpsetType;
  family: IPFamily;
  /** Entries as `ipset add` takes them, in model order. */
  entries: ReadonlySet<string>;
}

/** `create` arguments (after the name) as upstream creates each type. */
export function createOptions(set: Pick<Ipset, 'type' | 'family'>): string[] {
  if (set.type === 'bitmap:port') return [set.type, 'range', '0-65535'];
  return [set.type, 'family', set.family === 'IPv4' ? 'inet' : 'inet6', 'hashsize', '1024', 'maxelem', '65536'];
}

/** The whole of a family's sets as `ipset restore` input for a node that has none yet. */
export function ipsetRestoreText(sets: readonly Ipset[]): string {
  const lines: string[] = [];
  for (const s of sets) {
    lines.push(`create ${s.name} ${createOptions(s).join(' ')}`);
    for (const e of s.entries) lines.push(`add ${s.name} ${e}`);
  }
  return lines.join('\n') + '\n';
}
