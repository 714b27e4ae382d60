/**
 * The iptables renderer: (model, node, options) -> the chains and rules upstream
 * kube-proxy's iptables mode would program, as iptables-restore lines. Pure and
 * deterministic: same input, same bytes.
 *
 * The result keeps each service port's rules apart from the fixed chains so that an
 * applier can write only what changed; `restoreText` joins everything into one input.
 */
import type { FamilyModel, IPFamily, NodeContext, ServicePort } from '../model/types.js';
import { policyView } from '../model/policy.js';
import { cidrContains, parseCIDR, parseIP } from '../net/ip.js';
import { endpointChain, serviceChains } from './names.js';

export type Table = 'filter' | 'nat';

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
}

export const DEFAULT_IPTABLES_OPTIONS: IptablesOptions = {
  masqueradeBit: 14,
  masqueradeAll: false,
  clusterCIDRs: [],
  nodePortAddresses: [],
  localhostNodePorts: true,
  randomFully: true,
};

/** Above this many endpoints, per-endpoint comments are left out to keep restores small. */
export const LARGE_CLUSTER_ENDPOINTS = 1000;

export interface Chain {
  table: Table;
  name: string;
  /** Complete restore lines (`-A NAME ...`). */
  rules: string[];
}

/** A rule a service port adds to a chain it shares with others (KUBE-SERVICES, ...). */
export interface SharedRule {
  table: Table;
  chain: string;
  line: string;
}

export interface ServicePortRules {
  /** `NS/NAME:PORT` plus protocol: unique within a family. */
  key: string;
  shared: SharedRule[];
  /** The nat chains this service port owns (SVC, SVL, EXT, FW, SEP). */
  chains: Chain[];
}

/** A rule in a built-in chain that sends packets into ours; ensured, not restored. */
export interface JumpRule {
  table: Table;
  chain: string;
  args: string[];
}

export interface IptablesRuleset {
  family: IPFamily;
  jumps: JumpRule[];
  /** Chains with fixed content (masquerade, forward, firewall), plus the shared chains' heads. */
  fixed: Chain[];
  /** Chains whose rules come from every service port, in output order. */
  shared: { table: Table; name: string }[];
  services: ServicePortRules[];
  /** The nat KUBE-SERVICES rules that must stay last: into KUBE-NODEPORTS. */
  nodePortsTail: string[];
}

export const CANARY_CHAIN = 'KUBE-PROXY-CANARY';
const SERVICES = 'KUBE-SERVICES';
const EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
const NODEPORTS = 'KUBE-NODEPORTS';
const POSTROUTING = 'KUBE-POSTROUTING';
const MARK_MASQ = 'KUBE-MARK-MASQ';
const FORWARD = 'KUBE-FORWARD';
const PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
const FIREWALL = 'KUBE-FIREWALL';
const NODEPORTS_TAIL_COMMENT = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain';

// What may appear in a comment: the name grammars plus the fixed words we add. Anything
// else means a bug upstream of the renderer, and is refused rather than written.
const SAFE_COMMENT = /^[A-Za-z0-9 _.:/;\-[\]>]+$/;

function comment(text: string): string {
  if (!SAFE_COMMENT.test(text) || text.length > 255) throw new Error(`unsafe iptables comment: ${JSON.stringify(text)}`);
  return text.includes(' ') ? `-m comment --comment "${text}"` : `-m comment --comment ${text}`;
}

/** Rule arguments for restore text: quoted when they hold spaces, as iptables-save prints. */
export function formatArgs(args: string[]): string {
  return args.map((a) => (a.includes(' ') ? `"${a}"` : a)).join(' ');
}

/**
 * `1/n` with 10 decimals, rounded half-to-even on the exact value, as Go's `%0.10f`
 * prints it, so probabilities match upstream's text byte for byte.
 */
export function probability(n: number): string {
  const scale = 10_000_000_000n;
  const d = BigInt(n);
  let q = scale / d;
  const twiceR = (scale % d) * 2n;
  if (twiceR > d || (twiceR === d && q % 2n === 1n)) q += 1n;
  const digits = q.toString().padStart(11, '0');
  return `${digits.slice(0, -10)}.${digits.slice(-10)}`;
}

function jumpRules(family: IPFamily): JumpRule[] {
  const jump = (table: Table, chain: string, target: string, text: string | null, extra: string[] = []): JumpRule => ({
    table,
    chain,
    args: [...(text === null ? [] : ['-m', 'comment', '--comment', text]), ...extra, '-j', target],
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
  if (family === 'IPv4') {
    rules.push(jump('filter', 'INPUT', FIREWALL, null), jump('filter', 'OUTPUT', FIREWALL, null));
  }
  return rules;
}

function fixedChains(family: IPFamily, opts: IptablesOptions, mark: string): Chain[] {
  const filterFirewall: string[] = [];
  if (family === 'IPv4' && opts.localhostNodePorts) {
    filterFirewall.push(
      `-A ${FIREWALL} ${comment('block incoming localnet connections')} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
    );
  }
  return [
    { table: 'filter', name: NODEPORTS, rules: [] },
    { table: 'filter', name: SERVICES, rules: [] },
    { table: 'filter', name: EXTERNAL_SERVICES, rules: [] },
    { table: 'filter', name: FIREWALL, rules: filterFirewall },
    {
      table: 'filter',
      name: FORWARD,
      rules: [
        `-A ${FORWARD} -m conntrack --ctstate INVALID -j DROP`,
        `-A ${FORWARD} ${comment('kubernetes forwarding rules')} -m mark --mark ${mark}/${mark} -j ACCEPT`,
        `-A ${FORWARD} ${comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      ],
    },
    { table: 'filter', name: PROXY_FIREWALL, rules: [] },
    { table: 'nat', name: NODEPORTS, rules: [] },
    { table: 'nat', name: SERVICES, rules: [] },
    { table: 'nat', name: MARK_MASQ, rules: [`-A ${MARK_MASQ} -j MARK --or-mark ${mark}`] },
    {
      table: 'nat',
      name: POSTROUTING,
      rules: [
        `-A ${POSTROUTING} -m mark ! --mark ${mark}/${mark} -j RETURN`,
        `-A ${POSTROUTING} -j MARK --xor-mark ${mark}`,
        `-A ${POSTROUTING} ${comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE${opts.randomFully ? ' --random-fully' : ''}`,
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
}

function servicePortRules(sp: ServicePort, ctx: RenderContext): ServicePortRules {
  const view = policyView(sp);
  const names = serviceChains(sp);
  const proto = sp.protocol.toLowerCase();
  const match = (dst: string, port: number) => `-m ${proto} -p ${proto} -d ${dst} --dport ${port}`;
  const shared: SharedRule[] = [];
  const add = (table: Table, chain: string, rest: string) => shared.push({ table, chain, line: `-A ${chain} ${rest}` });

  const hasEndpoints = view.reachable.length > 0;
  const internalLocal = sp.internalTrafficPolicy === 'Local';
  const externalLocal = view.externallyAccessible && sp.externalTrafficPolicy === 'Local';
  const internalChain = internalLocal ? names.svl : names.svc;
  const externalPolicyChain = externalLocal ? names.svl : names.svc;
  const usesExt = hasEndpoints && view.externallyAccessible;
  const usesFw = hasEndpoints && sp.loadBalancerIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
  const lbChain = usesFw ? names.fw : names.ext;

  const noEndpoints = `${sp.name} has no endpoints`;
  const noLocal = `${sp.name} has no local endpoints`;
  const internalBlock = !hasEndpoints ? { text: noEndpoints, target: 'REJECT' } : !view.hasInternalEndpoints ? { text: noLocal, target: 'DROP' } : null;
  const externalBlock = !hasEndpoints ? { text: noEndpoints, target: 'REJECT' } : !view.hasExternalEndpoints ? { text: noLocal, target: 'DROP' } : null;

  const clusterIPMatch = `${comment(`${sp.name} cluster IP`)} ${match(sp.clusterIP, sp.port)}`;
  if (internalBlock) add('filter', SERVICES, `${comment(internalBlock.text)} ${match(sp.clusterIP, sp.port)} -j ${internalBlock.target}`);
  else add('nat', SERVICES, `${clusterIPMatch} -j ${internalChain}`);

  for (const ip of sp.externalIPs) {
    if (hasEndpoints) add('nat', SERVICES, `${comment(`${sp.name} external IP`)} ${match(ip, sp.port)} -j ${names.ext}`);
    if (externalBlock) add('filter', EXTERNAL_SERVICES, `${comment(externalBlock.text)} ${match(ip, sp.port)} -j ${externalBlock.target}`);
  }
  for (const ip of sp.loadBalancerIPs) {
    if (hasEndpoints) add('nat', SERVICES, `${comment(`${sp.name} loadbalancer IP`)} ${match(ip, sp.port)} -j ${lbChain}`);
    if (usesFw) {
      add('filter', PROXY_FIREWALL, `${comment(`${sp.name} traffic not accepted by ${names.fw}`)} ${match(ip, sp.port)} -j DROP`);
    }
  }
  if (externalBlock) {
    for (const ip of sp.loadBalancerIPs) {
      add('filter', EXTERNAL_SERVICES, `${comment(externalBlock.text)} ${match(ip, sp.port)} -j ${externalBlock.target}`);
    }
  }
  if (sp.nodePort !== 0) {
    // Node ports are not subject to loadBalancerSourceRanges, as upstream.
    if (hasEndpoints) add('nat', NODEPORTS, `${comment(sp.name)} -m ${proto} -p ${proto} --dport ${sp.nodePort} -j ${names.ext}`);
    if (externalBlock) {
      add(
        'filter',
        EXTERNAL_SERVICES,
        `${comment(externalBlock.text)} -m addrtype --dst-type LOCAL -m ${proto} -p ${proto} --dport ${sp.nodePort} -j ${externalBlock.target}`,
      );
    }
  }
  if (sp.healthCheckNodePort !== 0) {
    // Accepted whether or not this node has local endpoints: the 503 is the answer.
    add('filter', NODEPORTS, `${comment(`${sp.name} health check node port`)} -m tcp -p tcp --dport ${sp.healthCheckNodePort} -j ACCEPT`);
  }

  const chains: Chain[] = [];
  const chain = (name: string): string[] => {
    const rules: string[] = [];
    chains.push({ table: 'nat', name, rules });
    return rules;
  };
  const svcRules = view.clusterEndpoints.length > 0 ? chain(names.svc) : null;
  const svlRules = view.localEndpoints.length > 0 ? chain(names.svl) : null;

  if (!internalBlock) {
    const masq = ctx.masqueradeAll ? '' : ctx.podCIDR ? ` ! -s ${ctx.podCIDR}` : null;
    if (masq !== null) (internalLocal ? svlRules : svcRules)!.push(`-A ${internalChain} ${clusterIPMatch}${masq} -j ${MARK_MASQ}`);
  }

  if (usesExt) {
    const ext = chain(names.ext);
    if (!externalLocal) {
      ext.push(`-A ${names.ext} ${comment(`masquerade traffic for ${sp.name} external destinations`)} -j ${MARK_MASQ}`);
    } else {
      // Pods and the node itself reach external addresses as if through the load
      // balancer: Cluster policy. Only outside clients keep their source IP (Local).
      if (ctx.podCIDR) {
        ext.push(`-A ${names.ext} ${comment(`pod traffic for ${sp.name} external destinations`)} -s ${ctx.podCIDR} -j ${names.svc}`);
      }
      ext.push(`-A ${names.ext} ${comment(`masquerade LOCAL traffic for ${sp.name} external destinations`)} -m addrtype --src-type LOCAL -j ${MARK_MASQ}`);
      ext.push(`-A ${names.ext} ${comment(`route LOCAL traffic for ${sp.name} external destinations`)} -m addrtype --src-type LOCAL -j ${names.svc}`);
    }
    if (view.hasExternalEndpoints) ext.push(`-A ${names.ext} -j ${externalPolicyChain}`);
  }

  if (usesFw) {
    const fw = chain(names.fw);
    for (const range of sp.loadBalancerSourceRanges) {
      fw.push(`-A ${names.fw} ${comment(`${sp.name} loadbalancer IP`)} -s ${range} -j ${names.ext}`);
    }
    fw.push(`-A ${names.fw} ${comment(`other traffic to ${sp.name} will be dropped by KUBE-PROXY-FIREWALL`)}`);
  }

  const sepNames = new Map(view.reachable.map((e) => [e.address, endpointChain(sp, e)]));
  const balance = (rules: string[] | null, chainName: string, endpoints: typeof view.reachable) => {
    if (!rules) return;
    const perEndpoint = (address: string) => (ctx.endpointComments ? `${comment(`${sp.name} -> ${address}`)} ` : '');
    if (sp.sessionAffinity) {
      for (const e of endpoints) {
        const sep = sepNames.get(e.address)!;
        rules.push(`-A ${chainName} ${perEndpoint(e.address)}-m recent --name ${sep} --rcheck --seconds ${sp.sessionAffinity.timeoutSeconds} --reap -j ${sep}`);
      }
    }
    endpoints.forEach((e, i) => {
      const stat = i < endpoints.length - 1 ? `-m statistic --mode random --probability ${probability(endpoints.length - i)} ` : '';
      rules.push(`-A ${chainName} ${perEndpoint(e.address)}${stat}-j ${sepNames.get(e.address)}`);
    });
  };
  balance(svcRules, names.svc, view.clusterEndpoints);
  balance(svlRules, names.svl, view.localEndpoints);

  const sepComment = ctx.endpointComments ? `${comment(sp.name)} ` : '';
  for (const e of view.reachable) {
    const sep = sepNames.get(e.address)!;
    const affinity = sp.sessionAffinity ? `-m recent --name ${sep} --set ` : '';
    chain(sep).push(
      `-A ${sep} ${sepComment}-s ${e.ip} -j ${MARK_MASQ}`,
      `-A ${sep} ${sepComment}${affinity}-m ${proto} -p ${proto} -j DNAT --to-destination ${e.address}`,
    );
  }
  return { key: `${sp.name}/${proto}`, shared, chains };
}

function nodePortsTail(family: IPFamily, node: NodeContext, opts: IptablesOptions): string[] {
  const head = `-A ${SERVICES} ${comment(NODEPORTS_TAIL_COMMENT)}`;
  if (opts.nodePortAddresses.length === 0) {
    const loopback = family === 'IPv6' ? ' ! -d ::1/128' : opts.localhostNodePorts ? '' : ' ! -d 127.0.0.0/8';
    return [`${head} -m addrtype --dst-type LOCAL${loopback} -j ${NODEPORTS}`];
  }
  const cidrs = opts.nodePortAddresses.filter((a) => a !== 'primary').map((a) => parseCIDR(a)!);
  const nodeIPs = node.nodeIPs.map((t) => parseIP(t)!).filter((ip) => ip.family === family);
  const primary = opts.nodePortAddresses.includes('primary') ? nodeIPs[0] : undefined;
  return nodeIPs
    .filter((ip) => ip === primary || cidrs.some((c) => cidrContains(c, ip)))
    .filter((ip) => !(ip.text.startsWith('127.') ? !opts.localhostNodePorts : ip.text === '::1'))
    .map((ip) => `${head} -d ${ip.text} -j ${NODEPORTS}`);
}

export function renderIptables(model: FamilyModel, node: NodeContext, options: Partial<IptablesOptions> = {}): IptablesRuleset {
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
    endpointComments: totalEndpoints <= LARGE_CLUSTER_ENDPOINTS,
  };
  return {
    family: model.family,
    jumps: jumpRules(model.family),
    fixed: fixedChains(model.family, opts, mark),
    shared: [
      { table: 'filter', name: SERVICES },
      { table: 'filter', name: EXTERNAL_SERVICES },
      { table: 'filter', name: NODEPORTS },
      { table: 'filter', name: PROXY_FIREWALL },
      { table: 'nat', name: SERVICES },
      { table: 'nat', name: NODEPORTS },
    ],
    services: model.servicePorts.map((sp) => servicePortRules(sp, ctx)),
    nodePortsTail: nodePortsTail(model.family, node, opts),
  };
}

/** One table's part of the restore input: declarations, then rules grouped by chain. */
function tableText(rs: IptablesRuleset, table: Table): string[] {
  const out = [`*${table}`];
  for (const c of rs.fixed) if (c.table === table) out.push(`:${c.name} - [0:0]`);
  for (const s of rs.services) for (const c of s.chains) if (c.table === table) out.push(`:${c.name} - [0:0]`);
  for (const c of rs.fixed) if (c.table === table) out.push(...c.rules);
  for (const sh of rs.shared) {
    if (sh.table !== table) continue;
    for (const s of rs.services) for (const r of s.shared) if (r.table === table && r.chain === sh.name) out.push(r.line);
    if (table === 'nat' && sh.name === SERVICES) out.push(...rs.nodePortsTail);
  }
  for (const s of rs.services) for (const c of s.chains) if (c.table === table) out.push(...c.rules);
  out.push('COMMIT');
  return out;
}

/** The whole ruleset as one iptables-restore input (filter, then nat). */
export function restoreText(rs: IptablesRuleset): string {
  return [...tableText(rs, 'filter'), ...tableText(rs, 'nat')].join('\n') + '\n';
}

/** The jump rules as the commands that would ensure them, for people reading a dry run. */
export function jumpCommands(rs: IptablesRuleset): string[] {
  const bin = rs.family === 'IPv4' ? 'iptables' : 'ip6tables';
  return [
    ...(['mangle', 'nat', 'filter'] as const).map((t) => `${bin} -t ${t} -N ${CANARY_CHAIN}`),
    ...rs.jumps.map((j) => `${bin} -t ${j.table} -I ${j.chain} ${formatArgs(j.args)}`),
  ];
}
