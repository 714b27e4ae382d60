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
  if (t?.kind === 'chain' && t.chain === MARK_MASQ) return masqueradeRole(chainRole(table, chain), rule);
  if (table !== 'filter') return null;
  const dispatch = chain === SERVICES || chain === EXTERNAL_SERVICES;
  if (t?.kind === 'REJECT' && dispatch) return { kind: 'no-endpoints' };
  if (t?.kind === 'DROP' && dispatch) return { kind: 'no-local-endpoints' };
  if (t?.kind === 'DROP' && chain === PROXY_FIREWALL) return { kind: 'source-ranges' };
  return null;
}

export function portLabels(sp: ServicePort): ServicePortLabels {
  const names = serviceChains(sp);
  return { cluster: names.svc, local: names.svl, external: names.ext, sourceRanges: names.fw, firewall: PROXY_FIREWALL };
}
