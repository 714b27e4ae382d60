/**
 * What our chains, rules and map elements mean, for the trace: the nftables mode knows
 * its names and rule shapes, and tells the mode-neutral explanation only their roles.
 */
import type { ChainRole, RuleRole } from '../../trace/types.js';
import type { Element, Expr, ParsedRule } from './expr.js';
import * as N from './names.js';

const FIXED_ROLES: Record<string, ChainRole> = {
  [N.SERVICES]: 'service-dispatch',
  [N.MARK_FOR_MASQUERADE]: 'masquerade',
  [N.MASQUERADING]: 'masquerade',
  [N.FIREWALL_CHECK]: 'firewall',
  [N.groupChain('cluster')]: 'cluster-endpoints',
  [N.groupChain('nodeport-cluster')]: 'cluster-endpoints',
  [N.groupChain('local')]: 'local-endpoints',
  [N.groupChain('nodeport-local')]: 'local-endpoints',
  [N.EXTERNAL]: 'external-policy',
  [N.EXTERNAL_LOCAL]: 'external-policy',
  [N.NODEPORT_EXTERNAL]: 'external-policy',
  [N.NODEPORT_EXTERNAL_LOCAL]: 'external-policy',
};

// The chains of service ports that keep their own: upstream's names, prefix-HASH8-base.
const OWN_ROLES: Record<string, ChainRole> = { service: 'cluster-endpoints', local: 'local-endpoints', external: 'external-policy', endpoint: 'endpoint' };
const OWN_CHAIN = /^(service|local|external|endpoint)-[A-Z2-7]{8}-/;

export function chainRole(chain: string): ChainRole {
  const own = OWN_CHAIN.exec(chain);
  return FIXED_ROLES[chain] ?? (own ? OWN_ROLES[own[1]!]! : 'other');
}

/** The named sets and maps a rule looks up. */
function setsOf(rule: ParsedRule): string[] {
  return rule.exprs.flatMap((e) => {
    const ref = e.kind === 'match' && !Array.isArray(e.value) ? e.value : e.kind === 'vmap' ? e.map : e.kind === 'dnat' && e.to.kind === 'map' ? e.to.map : null;
    return ref?.kind === 'named' ? [ref.name] : [];
  });
}

const lookupOf = (rule: ParsedRule, set: string) => setsOf(rule).includes(set);

const verdictOf = (rule: ParsedRule) => rule.exprs.find((e): e is Extract<Expr, { kind: 'verdict' }> => e.kind === 'verdict')?.verdict ?? null;

function masqueradeRole(chain: string, rule: ParsedRule): RuleRole | null {
  if (chain === N.MASQUERADING && lookupOf(rule, N.HAIRPIN)) return { kind: 'masquerade', because: 'hairpin' };
  if (chain === N.SERVICES) {
    const notFrom = rule.exprs.find((e) => e.kind === 'match' && e.negate && e.key.length === 1 && e.key[0]!.kind === 'addr' && e.key[0]!.field === 'saddr');
    return notFrom?.kind === 'match' && Array.isArray(notFrom.value)
      ? { kind: 'masquerade', because: 'outside-cluster-cidr', clusterCIDR: notFrom.value[0]! }
      : { kind: 'masquerade', because: 'all' };
  }
  if (chainRole(chain) === 'external-policy') {
    const fromNode = rule.exprs.some((e) => e.kind === 'match' && !e.negate && e.key[0]?.kind === 'fib' && e.key[0].field === 'saddr');
    return { kind: 'masquerade', because: fromNode ? 'node-to-external' : 'external' };
  }
  return null;
}

/** The node-port dispatch rules: a packet that gets past their address test is on an address that takes node ports. */
const nodePortRule = (rule: ParsedRule) => lookupOf(rule, N.SERVICE_NODEPORTS) || lookupOf(rule, N.NO_ENDPOINT_NODEPORTS);

export function ruleRole(chain: string, rule: ParsedRule): RuleRole | null {
  const v = verdictOf(rule);
  if (v && 'chain' in v && v.chain === N.MARK_FOR_MASQUERADE) return masqueradeRole(chain, rule);
  if (chain === N.FIREWALL_CHECK && v?.kind === 'drop') return { kind: 'source-ranges' };
  if (nodePortRule(rule)) return { kind: 'node-ports' };
  return null;
}

/** The no-endpoint maps' verdicts: reject without endpoints, drop without local ones. */
export function elementRole(set: string, e: Element): RuleRole | null {
  if (set !== N.NO_ENDPOINT_SERVICES && set !== N.NO_ENDPOINT_NODEPORTS) return null;
  const v = e.value;
  if (v === null || Array.isArray(v)) return null;
  if (v.kind === 'drop') return { kind: 'no-local-endpoints' };
  if (v.kind === 'reject' || ('chain' in v && v.chain === N.REJECT_CHAIN)) return { kind: 'no-endpoints' };
  return null;
}
