/**
 * The iptables rules upstream's ipvs mode keeps: masquerade, node ports, load balancer
 * source ranges and the filter that closes kube-ipvs0's addresses to everything but the
 * virtual servers. Per-service state lives in the ipsets, so these rules are fixed; a
 * rule matching a set is written only while the set has entries, as upstream does.
 * The result is an iptables ruleset of fixed chains only: the iptables mode's writer,
 * applier and trace evaluator take it as they take their own.
 */
import type { IPFamily } from '../../model/types.js';
import { parseCIDR } from '../../net/ip.js';
import type { Table } from '../iptables/chains.js';
import type { Chain, IptablesRuleset, JumpRule } from '../iptables/ruleset.js';
import { SETS, type Ipset, type SetKey } from './ipsets.js';
import type { IpvsOptions } from './options.js';

export const SERVICES = 'KUBE-SERVICES';
export const POSTROUTING = 'KUBE-POSTROUTING';
export const MARK_MASQ = 'KUBE-MARK-MASQ';
export const NODE_PORT = 'KUBE-NODE-PORT';
export const LOAD_BALANCER = 'KUBE-LOAD-BALANCER';
export const FORWARD = 'KUBE-FORWARD';
export const PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
export const SOURCE_RANGES_FIREWALL = 'KUBE-SOURCE-RANGES-FIREWALL';
export const IPVS_FILTER = 'KUBE-IPVS-FILTER';

const LOOPBACK: Record<IPFamily, string> = { IPv4: '127.0.0.0/8', IPv6: '::1/128' };

function jumps(): JumpRule[] {
  const jump = (table: Table, chain: string, target: string, comment: string): JumpRule => ({
    table,
    chain,
    args: ['-m', 'comment', '--comment', comment, '-j', target],
  });
  return [
    jump('nat', 'OUTPUT', SERVICES, 'kubernetes service portals'),
    jump('nat', 'PREROUTING', SERVICES, 'kubernetes service portals'),
    jump('nat', 'POSTROUTING', POSTROUTING, 'kubernetes postrouting rules'),
    jump('filter', 'FORWARD', FORWARD, 'kubernetes forwarding rules'),
    jump('filter', 'INPUT', NODE_PORT, 'kubernetes health check rules'),
    jump('filter', 'INPUT', PROXY_FIREWALL, 'kube-proxy firewall rules'),
    jump('filter', 'FORWARD', PROXY_FIREWALL, 'kube-proxy firewall rules'),
    jump('filter', 'INPUT', IPVS_FILTER, 'kubernetes ipvs access filter'),
  ];
}

export function renderIpvsIptables(family: IPFamily, sets: readonly Ipset[], opts: IpvsOptions): IptablesRuleset {
  const byKey = new Map(sets.map((s) => [s.key, s]));
  const set = (key: SetKey) => byKey.get(key)!;
  const filled = (key: SetKey) => set(key).entries.size > 0;
  const match = (key: SetKey, flags: string) => `-m set --match-set ${set(key).name} ${flags}`;
  const commented = (key: SetKey, flags: string) => `-m comment --comment "${SETS[key].comment}" ${match(key, flags)}`;
  const mark = `0x${(2 ** opts.masqueradeBit).toString(16)}`;
  const podCIDR = opts.clusterCIDRs.map((c) => parseCIDR(c)).find((c) => c?.family === family)?.text ?? null;

  const services: string[] = [`-s ${LOOPBACK[family]} -j RETURN`];
  if (filled('loadBalancer')) services.push(`${commented('loadBalancer', 'dst,dst')} -j ${LOAD_BALANCER}`);
  if (filled('clusterIP')) {
    // Without a pod CIDR, pod traffic cannot be told apart: masquerade what the node itself sends from a VIP.
    if (opts.masqueradeAll) services.push(`${commented('clusterIP', 'dst,dst')} -j ${MARK_MASQ}`);
    else if (podCIDR) services.push(`! -s ${podCIDR} ${commented('clusterIP', 'dst,dst')} -j ${MARK_MASQ}`);
    else services.push(`${commented('clusterIP', 'src,dst')} -j ${MARK_MASQ}`);
  }
  const externalRules = (key: SetKey) => [
    // Off-node clients only (not from a bridge port, not from the node), and addresses the node holds itself.
    `${commented(key, 'dst,dst')} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT`,
    `${commented(key, 'dst,dst')} -m addrtype --dst-type LOCAL -j ACCEPT`,
  ];
  if (filled('externalIP')) services.push(`${commented('externalIP', 'dst,dst')} -j ${MARK_MASQ}`, ...externalRules('externalIP'));
  if (filled('externalIPLocal')) services.push(...externalRules('externalIPLocal'));
  services.push(`-m addrtype --dst-type LOCAL -j ${NODE_PORT}`);
  // Last: accept what IPVS takes, whatever other rules the node has.
  for (const key of ['clusterIP', 'loadBalancer', 'externalIP'] as const) if (filled(key)) services.push(`${match(key, 'dst,dst')} -j ACCEPT`);

  const natNodePort: string[] = [];
  for (const [local, all, proto, flags] of [
    ['nodePortLocalTCP', 'nodePortTCP', 'tcp', 'dst'],
    ['nodePortLocalUDP', 'nodePortUDP', 'udp', 'dst'],
    ['nodePortLocalSCTP', 'nodePortSCTP', 'sctp', 'dst,dst'],
  ] as const) {
    if (filled(local)) natNodePort.push(`-p ${proto} ${commented(local, flags)} -j RETURN`);
    if (filled(all)) natNodePort.push(`-p ${proto} ${commented(all, flags)} -j ${MARK_MASQ}`);
  }
  const loadBalancer = [...(filled('loadBalancerLocal') ? [`${commented('loadBalancerLocal', 'dst,dst')} -j RETURN`] : []), `-j ${MARK_MASQ}`];

  const sourceRanges = [
    ...(filled('loadBalancerSourceCIDR') ? [`${commented('loadBalancerSourceCIDR', 'dst,dst,src')} -j RETURN`] : []),
    ...(filled('loadBalancerSourceIP') ? [`${commented('loadBalancerSourceIP', 'dst,dst,src')} -j RETURN`] : []),
    '-j DROP',
  ];
  const fixed: Chain[] = [
    {
      table: 'filter',
      name: FORWARD,
      rules: [
        ...(opts.dropInvalid ? ['-m conntrack --ctstate INVALID -j DROP'] : []),
        `-m comment --comment "kubernetes forwarding rules" -m mark --mark ${mark}/${mark} -j ACCEPT`,
        '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      ],
    },
    { table: 'filter', name: NODE_PORT, rules: [`${commented('healthCheckNodePort', 'dst')} -j ACCEPT`] },
    { table: 'filter', name: PROXY_FIREWALL, rules: filled('loadBalancerFW') ? [`${commented('loadBalancerFW', 'dst,dst')} -j ${SOURCE_RANGES_FIREWALL}`] : [] },
    { table: 'filter', name: SOURCE_RANGES_FIREWALL, rules: sourceRanges },
    {
      table: 'filter',
      name: IPVS_FILTER,
      rules: [
        // Addresses on kube-ipvs0 take only the virtual servers' ports: nothing else on the node is reachable through them.
        `${match('loadBalancer', 'dst,dst')} -j RETURN`,
        `${match('clusterIP', 'dst,dst')} -j RETURN`,
        `${match('externalIP', 'dst,dst')} -j RETURN`,
        `${match('externalIPLocal', 'dst,dst')} -j RETURN`,
        `${match('healthCheckNodePort', 'dst')} -j RETURN`,
        `-m conntrack --ctstate NEW ${match('ipvsIPs', 'dst')} -j REJECT`,
      ],
    },
    { table: 'nat', name: SERVICES, rules: services },
    { table: 'nat', name: POSTROUTING, rules: [
      ...(filled('loopBack') ? [`${commented('loopBack', 'dst,dst,src')} -j MASQUERADE`] : []),
      `-m mark ! --mark ${mark}/${mark} -j RETURN`,
      `-j MARK --xor-mark ${mark}`,
      `-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE${opts.randomFully ? ' --random-fully' : ''}`,
    ] },
    { table: 'nat', name: NODE_PORT, rules: natNodePort },
    { table: 'nat', name: LOAD_BALANCER, rules: loadBalancer },
    { table: 'nat', name: MARK_MASQ, rules: [`-j MARK --or-mark ${mark}`] },
  ];
  return { family, jumps: jumps(), fixed, shared: [], services: [], chainRules: Buffer.alloc(0), nodePortsTail: [] };
}
