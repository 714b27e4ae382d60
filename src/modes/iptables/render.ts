/**
 * The iptables renderer: (model, node, options) -> the chains and rules upstream
 * kube-proxy's iptables mode would program, as iptables-restore lines. Pure and
 * deterministic: same input, same bytes.
 *
 * The result keeps each service port's rules apart from the fixed chains so that an
 * applier can write only what changed; `restoreText` (ruleset.ts) joins everything.
 */
import type { FamilyModel, IPFamily, NodeContext, ServicePort } from '../../model/types.js';
import { localhostNodePortsOn, nodePortIPs } from '../../model/nodeports.js';
import { policyView } from '../../model/policy.js';
import { cidrContains, parseCIDR, parseIP, type ParsedIP } from '../../net/ip.js';
import { LineWriter } from '../line-writer.js';
import {
  EXTERNAL_SERVICES,
  FIREWALL,
  FORWARD,
  MARK_MASQ,
  NODEPORTS,
  POSTROUTING,
  PROXY_FIREWALL,
  SERVICES,
  type Table,
} from './chains.js';
import { endpointChain, PROTOCOL_NAMES, serviceChains } from './names.js';
import type { Chain, IptablesRuleset, JumpRule, Rule, ServicePortRules } from './ruleset.js';

export interface IptablesOptions {
  /** Bit of the packet mark that flags traffic for SNAT (upstream default 14). */
  masqueradeBit: number;
  /** SNAT all traffic to service IPs, not only traffic from outside the cluster CIDR. */
  masqueradeAll: boolean;
  /** Pod CIDRs, any family; the one of the rendered family detects pod traffic. */
  clusterCIDRs: string[];
  /** CIDRs, or `primary`, limiting which node addresses accept node ports; empty = all. */
  nodePortAddresses: string[];
  /** Allow node ports on 127.0.0.0/8 (IPv4; needs route_localnet). */
  localhostNodePorts: boolean;
  /** Use MASQUERADE --random-fully. */
  randomFully: boolean;
  /**
   * Drop conntrack-INVALID packets in KUBE-FORWARD. Off, as upstream, when conntrack is
   * told to be liberal with TCP windows (`--conntrack-tcp-be-liberal`).
   */
  dropInvalid: boolean;
  /**
   * Leave out per-endpoint comments. Decided from the model when unset; an agent that
   * renders a few services at a time passes what the whole cluster calls for.
   */
  largeClusterMode?: boolean;
}

export const DEFAULT_IPTABLES_OPTIONS: IptablesOptions = {
  masqueradeBit: 14,
  masqueradeAll: false,
  clusterCIDRs: [],
  nodePortAddresses: [],
  localhostNodePorts: true,
  randomFully: true,
  dropInvalid: true,
};

/** Above this many endpoints, per-endpoint comments are left out to keep restores small. */
export const LARGE_CLUSTER_ENDPOINTS = 1000;

const NODEPORTS_TAIL_COMMENT = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain';

// What may appear in a comment: the name grammars plus the fixed words we add. Anything
// else means a bug upstream of the renderer, and is refused rather than written.
const SAFE_COMMENT = /^[A-Za-z0-9 _.:/;\-[\]>]+$/;

export function comment(text: string): string {
  if (!SAFE_COMMENT.test(text) || text.length > 255) throw new Error(`unsafe iptables comment: ${JSON.stringify(text)}`);
  return text.includes(' ') ? `-m comment --comment "${text}"` : `-m comment --comment ${text}`;
}

/**
 * `1/n` with 10 decimals, rounded half-to-even on the exact value, as Go's `%0.10f`
 * prints it, so probabilities match upstream's text byte for byte.
 */
const probabilities = new Map<number, string>();

export function probability(n: number): string {
  let p = probabilities.get(n);
  if (p === undefined) {
    p = formatReciprocal(n);
    probabilities.set(n, p);
  }
  return p;
}

function formatReciprocal(n: number): string {
  const scale = 10_000_000_000n;
  const d = BigInt(n);
  let q = scale / d;
  const twiceR = (scale % d) * 2n;
  if (twiceR > d || (twiceR === d && q % 2n === 1n)) q += 1n;
  const digits = q.toString().padStart(11, '0');
  return `${digits.slice(0, -10)}.${digits.slice(-10)}`;
}

/**
 * Localhost node ports need route_localnet, which would also let other hosts reach
 * 127.0.0.0/8; KUBE-FIREWALL closes that again. Only then is the chain ours to write.
 */
function blocksLocalnetTraffic(family: IPFamily, opts: IptablesOptions): boolean {
  return family === 'IPv4' && localhostNodePortsOn(opts.nodePortAddresses, opts.localhostNodePorts);
}

function jumpRules(blocksLocalnet: boolean): JumpRule[] {
  const jump = (table: Table, chain: string, target: string, text: string | null, extra: string[] = []): JumpRule => ({
    table,
    chain,
    args: [...extra, ...(text === null ? [] : ['-m', 'comment', '--comment', text]), '-j', target],
  });
  const isNew = ['-m', 'conntrack', '--ctstate', 'NEW'];
  const rules = [
    jump('filter', 'INPUT', EXTERNAL_SERVICES, 'kubernetes externally-visible service portals', isNew),
    jump('filter', 'FORWARD', EXTERNAL_SERVICES, 'kubernetes externally-visible service portals', isNew),
    jump('filter', 'INPUT', NODEPORTS, 'kubernetes health check service ports'),
    jump('filter', 'FORWARD', SERVICES, 'kubernetes service portals', isNew),
    jump('filter', 'OUTPUT', SERVICES, 'kubernetes service portals', isNew),
    jump('filter', 'FORWARD', FORWARD, 'kubernetes forwarding rules'),
    jump('filter', 'INPUT', PROXY_FIREWALL, 'kubernetes load balancer firewall', isNew),
    jump('filter', 'OUTPUT', PROXY_FIREWALL, 'kubernetes load balancer firewall', isNew),
    jump('filter', 'FORWARD', PROXY_FIREWALL, 'kubernetes load balancer firewall', isNew),
    jump('nat', 'OUTPUT', SERVICES, 'kubernetes service portals'),
    jump('nat', 'PREROUTING', SERVICES, 'kubernetes service portals'),
    jump('nat', 'POSTROUTING', POSTROUTING, 'kubernetes postrouting rules'),
  ];
  if (blocksLocalnet) {
    rules.push(jump('filter', 'INPUT', FIREWALL, null), jump('filter', 'OUTPUT', FIREWALL, null));
  }
  return rules;
}

function fixedChains(blocksLocalnet: boolean, opts: IptablesOptions, mark: string): Chain[] {
  const firewall: Chain[] = blocksLocalnet
    ? [
        {
          table: 'filter',
          name: FIREWALL,
          rules: [
            `${comment('block incoming localnet connections')} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
          ],
        },
      ]
    : [];
  return [
    { table: 'filter', name: NODEPORTS, rules: [] },
    { table: 'filter', name: SERVICES, rules: [] },
    { table: 'filter', name: EXTERNAL_SERVICES, rules: [] },
    ...firewall,
    {
      table: 'filter',
      name: FORWARD,
      rules: [
        ...(opts.dropInvalid ? ['-m conntrack --ctstate INVALID -j DROP'] : []),
        `${comment('kubernetes forwarding rules')} -m mark --mark ${mark}/${mark} -j ACCEPT`,
        `${comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      ],
    },
    { table: 'filter', name: PROXY_FIREWALL, rules: [] },
    { table: 'nat', name: NODEPORTS, rules: [] },
    { table: 'nat', name: SERVICES, rules: [] },
    { table: 'nat', name: MARK_MASQ, rules: [`-j MARK --or-mark ${mark}`] },
    {
      table: 'nat',
      name: POSTROUTING,
      rules: [
        `-m mark ! --mark ${mark}/${mark} -j RETURN`,
        `-j MARK --xor-mark ${mark}`,
        `${comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE${opts.randomFully ? ' --random-fully' : ''}`,
      ],
    },
  ];
}

interface RenderContext {
  family: IPFamily;
  /** `-s CIDR` of pod traffic, or null when no cluster CIDR of this family is known. */
  podCIDR: string | null;
  masqueradeAll: boolean;
  endpointComments: boolean;
  /** The node's first address of this family (InternalIP before ExternalIP). */
  primaryNodeIP: ParsedIP | null;
  out: LineWriter;
  /** Whether a service port's own chains are written (all, unless a trace needs only some). */
  ownChains: (sp: ServicePort) => boolean;
}

/** Appends a service port's chain rules to `ctx.out`; returns its shared rules and chain names. */
function servicePortRules(sp: ServicePort, ctx: RenderContext): ServicePortRules {
  // Every comment below is built from the service port name; checking it once covers them.
  comment(sp.name);
  const view = policyView(sp);
  const names = serviceChains(sp);
  const proto = PROTOCOL_NAMES[sp.protocol];
  const protoMatch = `-m ${proto} -p ${proto}`;
  const match = (dst: string, port: number) => `${protoMatch} -d ${dst} --dport ${port}`;
  const quoted = (suffix: string) => `-m comment --comment "${sp.name} ${suffix}"`;
  const shared: Rule[] = [];
  const add = (table: Table, chain: string, rule: string) => shared.push({ table, chain, rule });

  const hasEndpoints = view.hasAnyEndpoints;
  const internalLocal = sp.internalTrafficPolicy === 'Local';
  const externalLocal = view.externallyAccessible && sp.externalTrafficPolicy === 'Local';
  const internalChain = internalLocal ? names.svl : names.svc;
  const externalPolicyChain = externalLocal ? names.svl : names.svc;
  const usesExt = hasEndpoints && view.externallyAccessible;
  const usesFw = hasEndpoints && sp.loadBalancerIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
  const lbChain = usesFw ? names.fw : names.ext;

  const noEndpoints = { comment: quoted('has no endpoints'), target: 'REJECT' };
  const noLocal = { comment: quoted('has no local endpoints'), target: 'DROP' };
  const internalBlock = !hasEndpoints ? noEndpoints : !view.hasInternalEndpoints ? noLocal : null;
  const externalBlock = !hasEndpoints ? noEndpoints : !view.hasExternalEndpoints ? noLocal : null;

  const clusterIPMatch = `${quoted('cluster IP')} ${match(sp.clusterIP, sp.port)}`;
  if (internalBlock) add('filter', SERVICES, `${internalBlock.comment} ${match(sp.clusterIP, sp.port)} -j ${internalBlock.target}`);
  else add('nat', SERVICES, `${clusterIPMatch} -j ${internalChain}`);

  for (const ip of sp.externalIPs) {
    if (hasEndpoints) add('nat', SERVICES, `${quoted('external IP')} ${match(ip, sp.port)} -j ${names.ext}`);
    if (externalBlock) add('filter', EXTERNAL_SERVICES, `${externalBlock.comment} ${match(ip, sp.port)} -j ${externalBlock.target}`);
  }
  for (const ip of sp.loadBalancerIPs) {
    if (hasEndpoints) add('nat', SERVICES, `${quoted('loadbalancer IP')} ${match(ip, sp.port)} -j ${lbChain}`);
    if (usesFw) add('filter', PROXY_FIREWALL, `${quoted(`traffic not accepted by ${names.fw}`)} ${match(ip, sp.port)} -j DROP`);
  }
  if (externalBlock) {
    for (const ip of sp.loadBalancerIPs) {
      add('filter', EXTERNAL_SERVICES, `${externalBlock.comment} ${match(ip, sp.port)} -j ${externalBlock.target}`);
    }
  }
  if (sp.nodePort !== 0) {
    // Node ports are not subject to loadBalancerSourceRanges, as upstream.
    if (hasEndpoints) add('nat', NODEPORTS, `-m comment --comment ${sp.name} ${protoMatch} --dport ${sp.nodePort} -j ${names.ext}`);
    if (externalBlock) {
      add(
        'filter',
        EXTERNAL_SERVICES,
        `${externalBlock.comment} -m addrtype --dst-type LOCAL ${protoMatch} --dport ${sp.nodePort} -j ${externalBlock.target}`,
      );
    }
  }
  if (sp.healthCheckNodePort !== 0) {
    // Accepted whether or not this node has local endpoints: the 503 is the answer.
    add('filter', NODEPORTS, `${quoted('health check node port')} -m tcp -p tcp --dport ${sp.healthCheckNodePort} -j ACCEPT`);
  }

  const out = ctx.out;
  const start = out.offset;
  const key = `${sp.name}/${PROTOCOL_NAMES[sp.protocol]}`;
  if (!ctx.ownChains(sp)) return { key, shared, chains: [], rules: { start, endpoints: start, end: start } };
  const chains: string[] = [];
  const usesSvc = view.clusterEndpoints.length > 0;
  const usesSvl = view.localEndpoints.length > 0;
  const masq = internalBlock ? null : ctx.masqueradeAll ? '' : ctx.podCIDR ? ` ! -s ${ctx.podCIDR}` : null;

  const balance = (chainName: string, endpoints: typeof view.reachable) => {
    chains.push(chainName);
    if (masq !== null && chainName === internalChain) out.line(`-A ${chainName} ${clusterIPMatch}${masq} -j ${MARK_MASQ}`);
    const perEndpoint = (address: string) => (ctx.endpointComments ? `-m comment --comment "${sp.name} -> ${address}" ` : '');
    if (sp.sessionAffinity) {
      for (const e of endpoints) {
        const sep = endpointChain(sp, e);
        out.line(`-A ${chainName} ${perEndpoint(e.address)}-m recent --name ${sep} --rcheck --seconds ${sp.sessionAffinity.timeoutSeconds} --reap -j ${sep}`);
      }
    }
    const last = endpoints.length - 1;
    for (let i = 0; i <= last; i++) {
      const e = endpoints[i]!;
      const stat = i < last ? `-m statistic --mode random --probability ${probability(last + 1 - i)} ` : '';
      out.line(`-A ${chainName} ${perEndpoint(e.address)}${stat}-j ${endpointChain(sp, e)}`);
    }
  };
  if (usesSvc) balance(names.svc, view.clusterEndpoints);
  if (usesSvl) balance(names.svl, view.localEndpoints);

  if (usesExt) {
    const ext = names.ext;
    chains.push(ext);
    if (!externalLocal) {
      out.line(`-A ${ext} -m comment --comment "masquerade traffic for ${sp.name} external destinations" -j ${MARK_MASQ}`);
    } else {
      // Pods and the node itself reach external addresses as if through the load
      // balancer: Cluster policy. Only outside clients keep their source IP (Local).
      if (ctx.podCIDR) {
        out.line(`-A ${ext} -m comment --comment "pod traffic for ${sp.name} external destinations" -s ${ctx.podCIDR} -j ${names.svc}`);
      }
      out.line(`-A ${ext} -m comment --comment "masquerade LOCAL traffic for ${sp.name} external destinations" -m addrtype --src-type LOCAL -j ${MARK_MASQ}`);
      out.line(`-A ${ext} -m comment --comment "route LOCAL traffic for ${sp.name} external destinations" -m addrtype --src-type LOCAL -j ${names.svc}`);
    }
    if (view.hasExternalEndpoints) out.line(`-A ${ext} -j ${externalPolicyChain}`);
  }

  if (usesFw) {
    const fw = names.fw;
    chains.push(fw);
    for (const range of sp.loadBalancerSourceRanges) out.line(`-A ${fw} ${quoted('loadbalancer IP')} -s ${range} -j ${names.ext}`);
    // A node that is itself allowed reaches a VIP bound locally with the VIP as source.
    if (ctx.primaryNodeIP && sp.loadBalancerSourceRanges.some((r) => cidrContains(parseCIDR(r)!, ctx.primaryNodeIP!))) {
      for (const ip of sp.loadBalancerIPs) out.line(`-A ${fw} ${quoted('loadbalancer IP')} -s ${ip} -j ${names.ext}`);
    }
    out.line(`-A ${fw} -m comment --comment "other traffic to ${sp.name} will be dropped by KUBE-PROXY-FIREWALL"`);
  }

  const endpoints = out.offset;
  const sepComment = ctx.endpointComments ? `-m comment --comment ${sp.name} ` : '';
  const affinity = sp.sessionAffinity !== null;
  for (const e of view.reachable) {
    const sep = endpointChain(sp, e);
    chains.push(sep);
    out.line(`-A ${sep} ${sepComment}-s ${e.ip} -j ${MARK_MASQ}`);
    out.line(`-A ${sep} ${sepComment}${affinity ? `-m recent --name ${sep} --set ` : ''}${protoMatch} -j DNAT --to-destination ${e.address}`);
  }
  return { key, shared, chains, rules: { start, endpoints, end: out.offset } };
}

function familyNodeIPs(node: NodeContext, family: IPFamily): ParsedIP[] {
  return node.nodeIPs.map((t) => parseIP(t)!).filter((ip) => ip.family === family);
}

/**
 * The last rules of nat KUBE-SERVICES: into KUBE-NODEPORTS for the addresses that accept
 * node ports (model/nodeports.ts), or for every local one.
 */
function nodePortsTail(family: IPFamily, node: NodeContext, opts: IptablesOptions): Rule[] {
  const tail = (rule: string): Rule => ({ table: 'nat', chain: SERVICES, rule: `${comment(NODEPORTS_TAIL_COMMENT)} ${rule}` });
  const ips = nodePortIPs(family, node, opts.nodePortAddresses, opts.localhostNodePorts);
  if (ips === null) {
    const loopback = family === 'IPv6' ? ' ! -d ::1/128' : opts.localhostNodePorts ? '' : ' ! -d 127.0.0.0/8';
    return [tail(`-m addrtype --dst-type LOCAL${loopback} -j ${NODEPORTS}`)];
  }
  return ips.map((ip) => tail(`-d ${ip} -j ${NODEPORTS}`));
}

export function isLargeCluster(model: FamilyModel): boolean {
  let total = 0;
  for (const sp of model.servicePorts) total += sp.endpoints.length;
  return total > LARGE_CLUSTER_ENDPOINTS;
}

/**
 * `ownChains`: which service ports get their own chains written. A trace reaches only the
 * chains of the service ports its packet is addressed to; at 10,000 services, leaving out
 * the others' saves most of a render. Their rules in the shared chains are always written.
 */
export function renderIptables(
  model: FamilyModel,
  node: NodeContext,
  options: Partial<IptablesOptions> = {},
  ownChains: (sp: ServicePort) => boolean = () => true,
): IptablesRuleset {
  const opts = { ...DEFAULT_IPTABLES_OPTIONS, ...options };
  if (!Number.isInteger(opts.masqueradeBit) || opts.masqueradeBit < 0 || opts.masqueradeBit > 31) {
    throw new Error(`masquerade bit ${opts.masqueradeBit} is not in 0-31`);
  }
  const mark = `0x${(2 ** opts.masqueradeBit).toString(16)}`;
  const podCIDR = opts.clusterCIDRs.map((c) => parseCIDR(c)).find((c) => c?.family === model.family)?.text ?? null;
  const totalEndpoints = model.servicePorts.reduce((n, sp) => n + sp.endpoints.length, 0);
  const ctx: RenderContext = {
    family: model.family,
    podCIDR,
    masqueradeAll: opts.masqueradeAll,
    endpointComments: !(opts.largeClusterMode ?? isLargeCluster(model)),
    primaryNodeIP: familyNodeIPs(node, model.family)[0] ?? null,
    // About 80 bytes a line and 4 lines an endpoint: one allocation for the common case.
    out: new LineWriter(Math.max(64 * 1024, totalEndpoints * 400)),
    ownChains,
  };
  const services = model.servicePorts.map((sp) => servicePortRules(sp, ctx));
  return {
    family: model.family,
    jumps: jumpRules(blocksLocalnetTraffic(model.family, opts)),
    fixed: fixedChains(blocksLocalnetTraffic(model.family, opts), opts, mark),
    shared: [
      { table: 'filter', name: SERVICES },
      { table: 'filter', name: EXTERNAL_SERVICES },
      { table: 'filter', name: NODEPORTS },
      { table: 'filter', name: PROXY_FIREWALL },
      { table: 'nat', name: SERVICES },
      { table: 'nat', name: NODEPORTS },
    ],
    services,
    chainRules: ctx.out.bytes(),
    nodePortsTail: nodePortsTail(model.family, node, opts),
  };
}
