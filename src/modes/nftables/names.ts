/**
 * Names in our `kube-proxy` tables: the fixed chains, sets and maps (upstream's names
 * where upstream has the same object), and upstream's per-service names for the service
 * ports that keep chains of their own (session affinity): a prefix, the first 8
 * characters of base32(sha256(base)), `-`, and base `ns/svc/proto/port` (an endpoint's:
 * `...__IP/PORT`, IPv6 colons as dots).
 */
import type { Endpoint, ServicePort } from '../../model/types.js';
import { hash16, PROTOCOL_NAMES } from '../iptables/names.js';

// Base chains (upstream's).
export const NAT_PREROUTING = 'nat-prerouting';
export const NAT_OUTPUT = 'nat-output';
export const NAT_POSTROUTING = 'nat-postrouting';
export const FILTER_PREROUTING_PRE_DNAT = 'filter-prerouting-pre-dnat';
export const FILTER_OUTPUT_PRE_DNAT = 'filter-output-pre-dnat';
export const FILTER_FORWARD = 'filter-forward';
export const FILTER_INPUT = 'filter-input';
export const FILTER_OUTPUT = 'filter-output';

// Regular chains upstream has too.
export const SERVICES = 'services';
export const MASQUERADING = 'masquerading';
export const MARK_FOR_MASQUERADE = 'mark-for-masquerade';
export const FIREWALL_CHECK = 'firewall-check';
export const SERVICE_ENDPOINTS_CHECK = 'service-endpoints-check';
export const NODEPORT_ENDPOINTS_CHECK = 'nodeport-endpoints-check';
export const CLUSTER_IPS_CHECK = 'cluster-ips-check';
export const REJECT_CHAIN = 'reject-chain';

// Sets and maps upstream has too.
export const CLUSTER_IPS = 'cluster-ips';
export const NODEPORT_IPS = 'nodeport-ips';
export const SERVICE_IPS = 'service-ips';
export const SERVICE_NODEPORTS = 'service-nodeports';
export const NO_ENDPOINT_SERVICES = 'no-endpoint-services';
export const NO_ENDPOINT_NODEPORTS = 'no-endpoint-nodeports';
export const FIREWALL_IPS = 'firewall-ips';

// Ours: the shared load-balancing layout (see render.ts).
export const FIREWALL_ALLOW = 'firewall-allow';
export const HAIRPIN = 'hairpin-endpoints';

/**
 * Which endpoints a balancing group picks from, and how traffic is keyed: by destination
 * address, protocol and port, or (node ports, which arrive on any node address) by
 * protocol and port.
 */
export type GroupKind = 'cluster' | 'local' | 'nodeport-cluster' | 'nodeport-local';

export const GROUP_KINDS: readonly GroupKind[] = ['cluster', 'local', 'nodeport-cluster', 'nodeport-local'];

/** Protocols in nft's spelling; each has its own group maps (see render.ts). */
export type GroupProtocol = (typeof PROTOCOL_NAMES)[keyof typeof PROTOCOL_NAMES];

export const GROUP_PROTOCOLS: readonly GroupProtocol[] = Object.values(PROTOCOL_NAMES);

/** The chain holding one DNAT rule per protocol and endpoint count of this kind. */
export const groupChain = (kind: GroupKind): string => `${kind}-endpoints`;
/** The map of the service ports of this kind and protocol with `n` endpoints: key . index -> endpoint. */
export const groupMap = (kind: GroupKind, proto: GroupProtocol, n: number): string => `${kind}-endpoints-${proto}-${n}`;

/** The endpoint count of a group map's name; null for any other name. */
export function groupCount(name: string): number | null {
  for (const kind of GROUP_KINDS) {
    for (const proto of GROUP_PROTOCOLS) {
      const prefix = groupMap(kind, proto, 0).slice(0, -1);
      const n = Number(name.slice(prefix.length));
      if (name.startsWith(prefix) && Number.isInteger(n) && n > 0 && groupMap(kind, proto, n) === name) return n;
    }
  }
  return null;
}

/** External traffic (external IPs, load-balancer IPs, node ports) with externalTrafficPolicy Cluster / Local. */
export const EXTERNAL = 'external';
export const EXTERNAL_LOCAL = 'external-local';
export const NODEPORT_EXTERNAL = 'nodeport-external';
export const NODEPORT_EXTERNAL_LOCAL = 'nodeport-external-local';

const hash8 = (base: string): string => hash16(base).slice(0, 8);

/** Longest chain or set name nft takes. */
const MAX_NAME = 255;

/** `PREFIX-HASH8-BASE`, the base cut to fit: the hash of the whole base keeps it unique. */
function hashedName(prefix: string, base: string): string {
  const head = `${prefix}-${hash8(base)}-`;
  return head + base.slice(0, MAX_NAME - head.length);
}

export function chainBase(sp: ServicePort): string {
  return `${sp.namespace}/${sp.serviceName}/${PROTOCOL_NAMES[sp.protocol]}/${sp.portName}`;
}

export interface OwnChains {
  service: string;
  local: string;
  external: string;
}

/** The chains of a service port that keeps its own (upstream's names). */
export function ownChains(sp: ServicePort): OwnChains {
  const base = chainBase(sp);
  return { service: hashedName('service', base), local: hashedName('local', base), external: hashedName('external', base) };
}

/** An endpoint's chain and its affinity set (upstream's names). */
export function endpointNames(sp: ServicePort, e: Endpoint): { chain: string; affinity: string } {
  const base = `${chainBase(sp)}__${e.ip.replaceAll(':', '.')}/${e.port}`;
  return { chain: hashedName('endpoint', base), affinity: hashedName('affinity', base) };
}
