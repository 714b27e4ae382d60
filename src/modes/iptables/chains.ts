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

/** Each service port's own chains start with one of these, then a hash of its name. */
export const SERVICE_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'] as const;

export function isServiceChain(name: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((p) => name.startsWith(p));
}
