/**
 * The chain names of upstream kube-proxy's iptables mode, which ours writes too: the
 * renderer, the planner, the applier, cleanup and the trace all name chains from here.
 */

export type Table = 'filter' | 'nat';

/** Tables in the order a restore writes them: filter's rules may name nothing in nat. */
export const TABLES: readonly Table[] = ['filter', 'nat'];

export const SERVICES = 'KUBE-SERVICES';
export const EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
export const NODEPORTS = 'KUBE-NODEPORTS';
export const POSTROUTING = 'KUBE-POSTROUTING';
export const MARK_MASQ = 'KUBE-MARK-MASQ';
export const FORWARD = 'KUBE-FORWARD';
export const PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
export const FIREWALL = 'KUBE-FIREWALL';

/** Created in mangle, nat and filter; when it is gone, someone flushed our rules. */
export const CANARY_CHAIN = 'KUBE-PROXY-CANARY';
export const CANARY_TABLES = ['mangle', 'nat', 'filter'] as const;

/** An endpoint's chain: DNAT to it, and masquerade when it reaches itself. */
export const ENDPOINT_CHAIN_PREFIX = 'KUBE-SEP-';

/**
 * Each service port's own chains start with one of these, then a hash of its name.
 * KUBE-XLB- chains are upstream's from before KUBE-EXT-: never written here, always stale.
 */
export const SERVICE_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-', 'KUBE-XLB-'] as const;

export function isServiceChain(name: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((p) => name.startsWith(p));
}

/** Chains only upstream's ipvs mode (and ours) creates: a node switching modes is cleaned of them too. */
const IPVS_NAT_CHAINS = ['KUBE-NODE-PORT', 'KUBE-LOAD-BALANCER'];
const IPVS_FILTER_CHAINS = ['KUBE-NODE-PORT', 'KUBE-SOURCE-RANGES-FIREWALL', 'KUBE-IPVS-FILTER', 'KUBE-IPVS-OUT-FILTER'];

/**
 * The fixed chains kube-proxy creates in each table, whether ours or upstream's: with the
 * service chains, exactly what --cleanup removes. kubelet's chains (KUBE-KUBELET-CANARY,
 * KUBE-IPTABLES-HINT, KUBE-MARK-DROP) are not ours and stay.
 */
export const OWNED_CHAINS = {
  nat: [SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ, CANARY_CHAIN, ...IPVS_NAT_CHAINS],
  filter: [SERVICES, EXTERNAL_SERVICES, FORWARD, NODEPORTS, PROXY_FIREWALL, FIREWALL, CANARY_CHAIN, ...IPVS_FILTER_CHAINS],
  mangle: [CANARY_CHAIN],
} as const;

export type CleanupTable = keyof typeof OWNED_CHAINS;

export function isOwnedChain(table: CleanupTable, name: string): boolean {
  if ((OWNED_CHAINS[table] as readonly string[]).includes(name)) return true;
  return table === 'nat' && isServiceChain(name);
}
