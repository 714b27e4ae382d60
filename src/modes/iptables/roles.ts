/**
 * What our chains and rules mean, for the trace: the iptables mode knows its chain names
 * and rule shapes, and tells the mode-neutral explanation only their roles.
 */
import type { ServicePortLabels } from '../../model/explain.js';
import type { ServicePort } from '../../model/types.js';
import type { ChainRole, RuleRole } from '../../trace/types.js';
import { EXTERNAL_SERVICES, MARK_MASQ, NODEPORTS, POSTROUTING, PROXY_FIREWALL, SERVICES } from './chains.js';
import { serviceChains } from './names.js';
import type { ParsedRule } from './rule.js';

// filter has chains of the same names (KUBE-SERVICES, KUBE-NODEPORTS) with other jobs.
const FIXED_ROLES: Record<string, ChainRole> = {
  [`nat ${SERVICES}`]: 'service-dispatch',
  [`nat ${NODEPORTS}`]: 'node-port-dispatch',
  [`nat ${MARK_MASQ}`]: 'masquerade',
  [`nat ${POSTROUTING}`]: 'masquerade',
  [`filter ${PROXY_FIREWALL}`]: 'firewall',
};

const PREFIX_ROLES: [string, ChainRole][] = [
  ['KUBE-SVC-', 'cluster-endpoints'],
  ['KUBE-SVL-', 'local-endpoints'],
  ['KUBE-EXT-', 'external-policy'],
  ['KUBE-FW-', 'source-ranges'],
  ['KUBE-SEP-', 'endpoint'],
];

/** ipvs mode's nat chains for node ports and load balancers: what they mark is external traffic. */
const IPVS_EXTERNAL_CHAINS = new Set(['KUBE-NODE-PORT', 'KUBE-LOAD-BALANCER']);
/** ipvs mode's filter chain that drops what loadBalancerSourceRanges do not let in. */
const IPVS_SOURCE_RANGES = 'KUBE-SOURCE-RANGES-FIREWALL';

export function chainRole(table: string, chain: string): ChainRole {
  const fixed = FIXED_ROLES[`${table} ${chain}`];
  if (fixed) return fixed;
  return (table === 'nat' && PREFIX_ROLES.find(([prefix]) => chain.startsWith(prefix))?.[1]) || 'other';
}

function masqueradeRole(chain: ChainRole, rule: ParsedRule): RuleRole | null {
  switch (chain) {
    case 'endpoint':
      return { kind: 'masquerade', because: 'hairpin' };
    case 'cluster-endpoints':
    case 'local-endpoints': {
      const notFrom = rule.matches.find((m) => m.kind === 'address' && m.field === 'source' && m.negate);
      return notFrom?.kind === 'address' ? { kind: 'masquerade', because: 'outside-cluster-cidr', clusterCIDR: notFrom.cidr.text } : { kind: 'masquerade', because: 'all' };
    }
    // Only ipvs mode marks in nat KUBE-SERVICES, matching ipsets of service addresses.
    case 'service-dispatch': {
      const set = rule.matches.find((m) => m.kind === 'set');
      const notFrom = rule.matches.find((m) => m.kind === 'address' && m.field === 'source' && m.negate);
      if (set?.kind === 'set' && set.name.includes('EXTERNAL-IP')) return { kind: 'masquerade', because: 'external' };
      if (notFrom?.kind === 'address') return { kind: 'masquerade', because: 'outside-cluster-cidr', clusterCIDR: notFrom.cidr.text };
      return set?.kind === 'set' && set.flags[0] === 'dst' ? { kind: 'masquerade', because: 'all' } : null;
    }
    case 'external-policy': {
      const fromNode = rule.matches.some((m) => m.kind === 'addrtype' && m.field === 'source' && !m.negate && m.type === 'LOCAL');
      return { kind: 'masquerade', because: fromNode ? 'node-to-external' : 'external' };
    }
    default:
      return null;
  }
}

/** The role of a rule in `table chain`, where an explanation needs one. */
export function ruleRole(table: string, chain: string, rule: ParsedRule): RuleRole | null {
  const t = rule.target;
  if (table === 'nat' && IPVS_EXTERNAL_CHAINS.has(chain) && t?.kind === 'chain' && t.chain === MARK_MASQ) return { kind: 'masquerade', because: 'external' };
  // ipvs mode's KUBE-LOOP-BACK set: an endpoint reaching itself through its service.
  if (table === 'nat' && t?.kind === 'MASQUERADE' && rule.matches.some((m) => m.kind === 'set' && m.flags.length === 3)) return { kind: 'masquerade', because: 'hairpin' };
  if (t?.kind === 'chain' && t.chain === MARK_MASQ) return masqueradeRole(chainRole(table, chain), rule);
  if (table !== 'filter') return null;
  const dispatch = chain === SERVICES || chain === EXTERNAL_SERVICES;
  if (t?.kind === 'REJECT' && dispatch) return { kind: 'no-endpoints' };
  if (t?.kind === 'DROP' && dispatch) return { kind: 'no-local-endpoints' };
  if (t?.kind === 'DROP' && (chain === PROXY_FIREWALL || chain === IPVS_SOURCE_RANGES)) return { kind: 'source-ranges' };
  return null;
}

export function portLabels(sp: ServicePort): ServicePortLabels {
  const names = serviceChains(sp);
  return { cluster: names.svc, local: names.svl, external: names.ext, sourceRanges: names.fw, firewall: PROXY_FIREWALL };
}
