/**
 * The nftables renderer: (model, node, options) -> one `kube-proxy` table for the family,
 * as data (ruleset.ts). Pure and deterministic: same input, same table.
 *
 * Layout, and where it departs from upstream kube-proxy's nftables mode
 * ----------------------------------------------------------------------
 * Same as upstream: the table name, one table per family, the base chains (names, hooks,
 * priorities), dispatch through the `service-ips` / `service-nodeports` verdict maps,
 * `no-endpoint-services` / `no-endpoint-nodeports` (REJECT without endpoints, DROP without
 * local endpoints), `cluster-ips-check` (REJECT to a cluster IP on a port no Service
 * serves, DROP to a service-CIDR address no Service holds), node ports on the primary
 * node IPs by default and never on localhost, the masquerade mark and chains.
 *
 * Different: upstream gives every service port a chain and every endpoint a chain, and
 * balances with `numgen random mod N vmap { i : goto endpoint-chain }`. At 10,000
 * services x 10 endpoints that is 110,000 chains, and loading them took 121 s here
 * (nearly all kernel time validating chains and jumps). We have no per-service chains:
 * service ports are grouped by protocol and endpoint count N, and each group is one map,
 * `cluster-endpoints-PROTO-N`, keyed `daddr . port . index` with the endpoint
 * (`addr . port`) as value, used by one rule in the fixed chain `cluster-endpoints`:
 * `meta l4proto udp dnat ip to ip daddr . th dport . numgen random mod N
 * map @cluster-endpoints-udp-N`.
 * The same table loads in about a second, and an endpoint change (the common event)
 * changes map elements only: no chain or rule, so the kernel validates nothing. The
 * verdict maps point at fixed chains (`cluster-endpoints`, `local-endpoints`, `external`,
 * `external-local` and their `nodeport-` twins, keyed by protocol and port since node
 * ports arrive on any node address), so they change only when a service's addresses or
 * policies do. An endpoint count no service port had adds a map and a rule per kind and
 * protocol (no jump, so no validation either: as cheap as an element; the applier may keep the
 * groups it wrote, `keepGroups`). Policies with their own needs use sets instead of
 * per-service rules: source ranges (`firewall-ips` + `firewall-allow`, an interval set
 * of `daddr . proto . port . saddr`), hairpin masquerade (`hairpin-endpoints`, `saddr .
 * daddr` of the endpoints whose packets can pass this node's rules, in postrouting,
 * instead of a rule in each endpoint chain: this node's pods, so the set is as big as the
 * node, not the cluster; see servicePort),
 * masquerade of off-cluster traffic to cluster IPs (one rule over `cluster-ips`).
 * Service ports with ClientIP session affinity keep upstream's chains (service, local,
 * external, one per endpoint with its dynamic `affinity-` set and timeout): affinity
 * needs a per-endpoint memory, affinity services are few, and their endpoint changes do
 * change chains.
 *
 * Otherwise as iptables mode (the model's endpoint sets already apply topology and
 * terminating fallback), plus upstream nftables' own behaviour above; conntrack-INVALID
 * packets are dropped in forward unless `--conntrack-tcp-be-liberal`, as iptables mode.
 */
import { nodePortIPs } from '../../model/nodeports.js';
import { policyView, type PolicyView } from '../../model/policy.js';
import type { Endpoint, FamilyModel, NodeContext, ServicePort } from '../../model/types.js';
import { cidrContains, parseCIDR, parseIP, type ParsedCIDR, type ParsedIP } from '../../net/ip.js';
import { PROTOCOL_NAMES } from '../iptables/names.js';
import * as N from './names.js';
import { NFT_FAMILY, TABLE_COMMENT, TABLE_NAME, elementKey, type Chain, type Element, type NftSet, type NftTable, type Rule } from './ruleset.js';

export interface NftablesOptions {
  /** Bit of the packet mark that flags traffic for masquerading (upstream default 14). */
  masqueradeBit: number;
  /** Masquerade all traffic to cluster IPs, not only traffic from outside the cluster CIDR. */
  masqueradeAll: boolean;
  /** Pod CIDRs, any family; the one of the rendered family tells pods from other sources. */
  clusterCIDRs: string[];
  /**
   * CIDRs, or `primary`, limiting which node addresses accept node ports; empty = every
   * local address. nftables mode's default is `primary` (mode.ts applies it).
   */
  nodePortAddresses: string[];
  /** Drop conntrack-INVALID packets in forward; off with `--conntrack-tcp-be-liberal`. */
  dropInvalid: boolean;
  /**
   * Endpoint counts whose groups are declared even when no service port has that many
   * endpoints: an applier that keeps the groups it wrote keeps an endpoint change
   * element-only.
   */
  keepGroups?: readonly number[];
}

export const DEFAULT_NFTABLES_OPTIONS: NftablesOptions = {
  masqueradeBit: 14,
  masqueradeAll: false,
  clusterCIDRs: [],
  nodePortAddresses: ['primary'],
  dropInvalid: true,
};

const REJECT = `goto ${N.REJECT_CHAIN}`;
const DROP = 'drop';

/** Elements of one set, unique by key: the first service port to claim a key owns it, as the first matching rule would. */
class Elements {
  readonly list: Element[] = [];
  /** Null where every key starts with a destination `claim` gave one service port: unique already. */
  private readonly keys: Set<string> | null;

  constructor(readonly name: string) {
    this.keys = CLAIMED_SETS.has(name) ? null : new Set();
  }

  add(e: Element): void {
    if (this.keys) {
      const k = elementKey(e);
      if (this.keys.has(k)) return;
      this.keys.add(k);
    }
    this.list.push(e);
  }
}

interface Context {
  ip: 'ip' | 'ip6';
  /** This family's cluster CIDR: tells pods from other sources. */
  podCIDR: string | null;
  primaryNodeIP: ParsedIP | null;
  clusterIPs: Elements;
  serviceIPs: Elements;
  serviceNodePorts: Elements;
  noEndpointServices: Elements;
  noEndpointNodePorts: Elements;
  firewallIPs: Elements;
  firewallAllow: Elements;
  hairpin: Elements;
  /** Keys (`addr . proto . port`, or `proto . port`) a service port already owns. */
  claimed: Set<string>;
  /** Elements of each balancing group's map, by map name. */
  groups: Map<string, Element[]>;
  /** Endpoint counts some group has. */
  counts: Set<number>;
  /** Chains and sets of the service ports that keep their own (affinity). */
  ownChains: Chain[];
  ownSets: NftSet[];
}

/** `key` is the claimed destination, `[addr,] proto, port`; a group's map holds one protocol, so its keys leave that out. */
function addGroup(ctx: Context, kind: N.GroupKind, proto: N.GroupProtocol, key: string[], endpoints: Endpoint[]): void {
  const n = endpoints.length;
  if (n === 0) return;
  ctx.counts.add(n);
  const name = N.groupMap(kind, proto, n);
  let list = ctx.groups.get(name);
  if (!list) ctx.groups.set(name, (list = []));
  const dest = key.filter((_, i) => i !== key.length - 2);
  for (let i = 0; i < n; i++) list.push({ key: [...dest, String(i)], value: [endpoints[i]!.ip, String(endpoints[i]!.port)] });
}

/**
 * Upstream's per-service chains, for a service port with ClientIP affinity: each endpoint
 * remembers its clients in a dynamic set for the affinity timeout.
 */
function affinityChains(sp: ServicePort, ctx: Context): N.OwnChains {
  const view = policyView(sp);
  const names = N.ownChains(sp);
  const timeout = sp.sessionAffinity!.timeoutSeconds;
  const proto = PROTOCOL_NAMES[sp.protocol];
  const balance = (chain: string, endpoints: Endpoint[]) => {
    const rules: Rule[] = endpoints.map((e) => {
      const en = N.endpointNames(sp, e);
      return { rule: `${ctx.ip} saddr @${en.affinity} goto ${en.chain}` };
    });
    const arms = endpoints.map((e, i) => `${i} : goto ${N.endpointNames(sp, e).chain}`).join(' , ');
    rules.push({ rule: `numgen random mod ${endpoints.length} vmap { ${arms} }` });
    ctx.ownChains.push({ name: chain, rules });
  };
  if (view.clusterEndpoints.length > 0) balance(names.service, view.clusterEndpoints);
  if (view.localEndpoints.length > 0) balance(names.local, view.localEndpoints);
  if (view.hasAnyEndpoints && view.externallyAccessible) {
    const rules: Rule[] = [];
    if (sp.externalTrafficPolicy === 'Local') {
      if (ctx.podCIDR) rules.push({ rule: `${ctx.ip} saddr ${ctx.podCIDR} goto ${names.service}`, comment: 'short-circuit pod traffic' });
      rules.push({ rule: `fib saddr type local jump ${N.MARK_FOR_MASQUERADE}`, comment: 'masquerade local traffic' });
      rules.push({ rule: `fib saddr type local goto ${names.service}`, comment: 'short-circuit local traffic' });
      if (view.localEndpoints.length > 0) rules.push({ rule: `goto ${names.local}` });
    } else {
      rules.push({ rule: `jump ${N.MARK_FOR_MASQUERADE}` }, { rule: `goto ${names.service}` });
    }
    ctx.ownChains.push({ name: names.external, rules });
  }
  for (const e of view.reachable) {
    const en = N.endpointNames(sp, e);
    ctx.ownChains.push({
      name: en.chain,
      rules: [{ rule: `update @${en.affinity} { ${ctx.ip} saddr }` }, { rule: `meta l4proto ${proto} dnat to ${e.address}` }],
    });
    ctx.ownSets.push({
      kind: 'set',
      name: en.affinity,
      key: { type: [ctx.ip === 'ip' ? 'ipv4_addr' : 'ipv6_addr'] },
      flags: ['dynamic', 'timeout'],
      timeoutSeconds: timeout,
      elements: [],
    });
  }
  return names;
}

function servicePort(sp: ServicePort, ctx: Context): void {
  const view = policyView(sp);
  const proto = PROTOCOL_NAMES[sp.protocol];
  const port = String(sp.port);
  const hasEndpoints = view.hasAnyEndpoints;
  const internalLocal = sp.internalTrafficPolicy === 'Local';
  const externalLocal = sp.externalTrafficPolicy === 'Local';
  const internalBlock = !hasEndpoints ? REJECT : !view.hasInternalEndpoints ? DROP : null;
  const externalBlock = !hasEndpoints ? REJECT : !view.hasExternalEndpoints ? DROP : null;
  const own = sp.sessionAffinity && hasEndpoints ? affinityChains(sp, ctx) : null;
  const name = sp.name;
  const claim = (key: string[]) => {
    const k = key.join(' . ');
    if (ctx.claimed.has(k)) return false;
    ctx.claimed.add(k);
    return true;
  };

  sharedElements(sp, view, ctx);

  const cip = [sp.clusterIP, proto, port];
  if (claim(cip)) {
    if (internalBlock) ctx.noEndpointServices.add({ key: cip, value: [internalBlock], comment: name });
    else if (own) ctx.serviceIPs.add({ key: cip, value: [`goto ${internalLocal ? own.local : own.service}`], comment: name });
    else {
      const kind = internalLocal ? 'local' : 'cluster';
      ctx.serviceIPs.add({ key: cip, value: [`goto ${N.groupChain(kind)}`], comment: name });
      addGroup(ctx, kind, proto, cip, internalLocal ? view.localEndpoints : view.clusterEndpoints);
    }
  }
  if (!view.externallyAccessible) return;

  const external = (space: 'ip' | 'nodeport', key: string[]) => {
    const verdicts = space === 'ip' ? ctx.serviceIPs : ctx.serviceNodePorts;
    const blocks = space === 'ip' ? ctx.noEndpointServices : ctx.noEndpointNodePorts;
    if (externalBlock) blocks.add({ key, value: [externalBlock], comment: name });
    if (!hasEndpoints) return;
    if (own) {
      verdicts.add({ key, value: [`goto ${own.external}`], comment: name });
      return;
    }
    const prefix = space === 'ip' ? '' : 'nodeport-';
    const chain = externalLocal ? (space === 'ip' ? N.EXTERNAL_LOCAL : N.NODEPORT_EXTERNAL_LOCAL) : space === 'ip' ? N.EXTERNAL : N.NODEPORT_EXTERNAL;
    verdicts.add({ key, value: [`goto ${chain}`], comment: name });
    // Pods and the node itself reach Local-policy addresses with Cluster policy.
    addGroup(ctx, `${prefix}cluster` as N.GroupKind, proto, key, view.clusterEndpoints);
    if (externalLocal) addGroup(ctx, `${prefix}local` as N.GroupKind, proto, key, view.localEndpoints);
  };

  const owned = new Set<string>();
  for (const ip of [...sp.externalIPs, ...sp.loadBalancerIPs]) {
    const key = [ip, proto, port];
    if (!claim(key)) continue;
    owned.add(ip);
    external('ip', key);
  }
  if (sp.nodePort !== 0) {
    // Node ports are not subject to loadBalancerSourceRanges, as upstream.
    const key = [proto, String(sp.nodePort)];
    if (claim(key)) external('nodeport', key);
  }
  if (hasEndpoints && sp.loadBalancerSourceRanges.length > 0) {
    // A node that is itself allowed reaches a VIP bound locally with the VIP as source.
    const ranges = outermost(sp.loadBalancerSourceRanges.map((r) => parseCIDR(r)!));
    const nodeAllowed = ctx.primaryNodeIP !== null && ranges.some((r) => cidrContains(r, ctx.primaryNodeIP!));
    for (const ip of sp.loadBalancerIPs) {
      if (!owned.has(ip)) continue;
      ctx.firewallIPs.add({ key: [ip, proto, port], comment: name });
      for (const range of ranges) ctx.firewallAllow.add({ key: [ip, proto, port, range.text] });
      if (nodeAllowed && !ranges.some((r) => cidrContains(r, parseIP(ip)!))) ctx.firewallAllow.add({ key: [ip, proto, port, ip] });
    }
  }
}

/**
 * What a service port puts into the sets whose keys several service ports may hold
 * (every other set's keys start with a destination `claim` gave to one of them).
 */
function sharedElements(sp: ServicePort, view: PolicyView, ctx: Context): void {
  ctx.clusterIPs.add({ key: [sp.clusterIP] });
  // Only a pod that can send its packets through this node's rules can land on itself
  // here: one on this node, or one elsewhere reaching an external address whose Local
  // policy short-circuits pod traffic to every endpoint (with Cluster policy external
  // traffic is masqueraded anyway). A remote pod's packets to a cluster IP meet its own
  // node's rules. So the set holds this node's pods, not every endpoint of the cluster.
  const remoteHairpin = view.externallyAccessible && sp.externalTrafficPolicy === 'Local' && ctx.podCIDR !== null;
  for (const e of view.reachable) if (e.isLocal || remoteHairpin) ctx.hairpin.add({ key: [e.ip, e.ip] });
}

/**
 * The ranges no other range covers, in their order: an interval set refuses elements
 * that overlap, and two CIDRs overlap only when one holds the other.
 */
function outermost(ranges: ParsedCIDR[]): ParsedCIDR[] {
  const holds = (outer: ParsedCIDR, inner: ParsedCIDR) => outer.prefix <= inner.prefix && cidrContains(outer, { family: inner.family, bytes: inner.network, text: '' });
  return ranges.filter((r, i) => !ranges.some((o, j) => j !== i && holds(o, r) && (o.prefix < r.prefix || j < i)));
}

function groupKey(ip: 'ip' | 'ip6', kind: N.GroupKind): string {
  return kind.startsWith('nodeport-') ? 'th dport' : `${ip} daddr . th dport`;
}

/**
 * The balancing groups: per kind, a chain with one DNAT rule per endpoint count and
 * protocol, and their maps. Every kind and protocol has a group for every count any
 * kind uses, so that a service port whose endpoint count changes finds its new group
 * already there far more often.
 *
 * One map per protocol because nft makes the DNAT rule require the protocol of the
 * map's value (`tcp dport` adds `meta l4proto tcp`), and `th dport` there makes nft
 * 1.0.6 refuse any later rule that names the map. The rule's own `meta l4proto` says so,
 * and the keys leave the protocol out: a tenth less for nft to parse at 10,000 services.
 */
function groupObjects(ctx: Context, keep: NftablesOptions['keepGroups']): { chains: Chain[]; sets: NftSet[] } {
  const chains: Chain[] = [];
  const sets: NftSet[] = [];
  const counts = [...new Set([...ctx.counts, ...(keep ?? [])])].sort((a, b) => a - b);
  for (const kind of N.GROUP_KINDS) {
    const key = groupKey(ctx.ip, kind);
    const rules: Rule[] = [];
    for (const n of counts) {
      const lookup = `${key} . numgen random mod ${n}`;
      for (const proto of N.GROUP_PROTOCOLS) {
        const map = N.groupMap(kind, proto, n);
        rules.push({ rule: `meta l4proto ${proto} dnat ${ctx.ip} to ${lookup} map @${map}` });
        sets.push({
          kind: 'map',
          name: map,
          key: { typeof: lookup },
          value: { typeof: `${ctx.ip} daddr . ${proto} dport` },
          flags: [],
          comment: `${proto} service ports with ${n} ${kind.replace('nodeport-', '')} endpoint${n === 1 ? '' : 's'}`,
          elements: ctx.groups.get(map) ?? [],
        });
      }
    }
    chains.push({ name: N.groupChain(kind), rules });
  }
  return { chains, sets };
}

function familyNodeIPs(node: NodeContext, ip: 'ip' | 'ip6'): ParsedIP[] {
  const family = ip === 'ip' ? 'IPv4' : 'IPv6';
  return node.nodeIPs.map((t) => parseIP(t)!).filter((a) => a.family === family);
}

function newContext(model: FamilyModel, node: NodeContext, opts: NftablesOptions): Context {
  const ip = NFT_FAMILY[model.family];
  return {
    ip,
    podCIDR: opts.clusterCIDRs.map((c) => parseCIDR(c)).find((c) => c?.family === model.family)?.text ?? null,
    primaryNodeIP: familyNodeIPs(node, ip)[0] ?? null,
    clusterIPs: new Elements(N.CLUSTER_IPS),
    serviceIPs: new Elements(N.SERVICE_IPS),
    serviceNodePorts: new Elements(N.SERVICE_NODEPORTS),
    noEndpointServices: new Elements(N.NO_ENDPOINT_SERVICES),
    noEndpointNodePorts: new Elements(N.NO_ENDPOINT_NODEPORTS),
    firewallIPs: new Elements(N.FIREWALL_IPS),
    firewallAllow: new Elements(N.FIREWALL_ALLOW),
    hairpin: new Elements(N.HAIRPIN),
    claimed: new Set(),
    groups: new Map(),
    counts: new Set(),
    ownChains: [],
    ownSets: [],
  };
}

/** What service ports put into sets and maps, by set name; `renderNftables` declares them. */
function serviceElements(ctx: Context): [string, Element[]][] {
  const sets = [ctx.clusterIPs, ctx.serviceIPs, ctx.serviceNodePorts, ctx.noEndpointServices, ctx.noEndpointNodePorts, ctx.firewallIPs, ctx.firewallAllow, ctx.hairpin];
  return [...sets.map((e): [string, Element[]] => [e.name, e.list]), ...ctx.groups];
}

/**
 * The sets and maps whose every key starts with a destination a service port claimed
 * (`claim` in servicePort): a key of theirs no other service port holds, unless two claim
 * one destination. A ledger of shared elements can leave them out.
 */
export function keyedByClaim(set: string): boolean {
  return CLAIMED_SETS.has(set) || N.groupCount(set) !== null;
}

const CLAIMED_SETS = new Set([N.SERVICE_IPS, N.SERVICE_NODEPORTS, N.NO_ENDPOINT_SERVICES, N.NO_ENDPOINT_NODEPORTS, N.FIREWALL_IPS, N.FIREWALL_ALLOW]);

/**
 * The elements `model`'s service ports put into the sets whose keys several of them may
 * hold (those `keyedByClaim` does not name), set by set, without the table: the same
 * elements `renderNftables` gives those sets for the same model. All that a ledger of
 * who holds which element counts, one service at a time, for 10,000 services: it is
 * ready within a tenth of a second of the first sync.
 */
export function renderSharedElements(model: FamilyModel, node: NodeContext, options: Partial<NftablesOptions> = {}): Map<string, Element[]> {
  const ctx = newContext(model, node, { ...DEFAULT_NFTABLES_OPTIONS, ...options });
  for (const sp of model.servicePorts) sharedElements(sp, policyView(sp), ctx);
  return new Map(serviceElements(ctx).filter(([, list]) => list.length > 0));
}

export function renderNftables(model: FamilyModel, node: NodeContext, options: Partial<NftablesOptions> = {}): NftTable {
  const opts = { ...DEFAULT_NFTABLES_OPTIONS, ...options };
  if (!Number.isInteger(opts.masqueradeBit) || opts.masqueradeBit < 0 || opts.masqueradeBit > 31) {
    throw new Error(`masquerade bit ${opts.masqueradeBit} is not in 0-31`);
  }
  const mark = `0x${(2 ** opts.masqueradeBit).toString(16)}`;
  const ip = NFT_FAMILY[model.family];
  const addr = ip === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  const ctx = newContext(model, node, opts);
  const podCIDR = ctx.podCIDR;
  for (const sp of model.servicePorts) servicePort(sp, ctx);

  const dest = `${ip} daddr . meta l4proto . th dport`;
  // Node ports: on the chosen addresses, or (no --nodeport-addresses) on every local one but loopback.
  const npIPs = nodePortIPs(model.family, node, opts.nodePortAddresses, false);
  const loopback = ip === 'ip' ? '127.0.0.0/8' : '::1';
  const npMatch = npIPs === null ? `fib daddr type local ${ip} daddr != ${loopback}` : `${ip} daddr @${N.NODEPORT_IPS}`;

  const base = (name: string, type: 'filter' | 'nat', hook: NonNullable<Chain['base']>['hook'], priority: number, rules: Rule[]): Chain => ({
    name,
    base: { type, hook, priority },
    rules,
  });
  const isNew = 'ct state new';
  const clusterMasq = opts.masqueradeAll ? '' : podCIDR ? ` ${ip} saddr != ${podCIDR}` : null;
  const serviceCIDRs = model.serviceCIDRs;

  const chains: Chain[] = [
    base(N.FILTER_PREROUTING_PRE_DNAT, 'filter', 'prerouting', -110, [{ rule: `${isNew} jump ${N.FIREWALL_CHECK}` }]),
    base(N.FILTER_OUTPUT_PRE_DNAT, 'filter', 'output', -110, [{ rule: `${isNew} jump ${N.FIREWALL_CHECK}` }]),
    base(N.FILTER_FORWARD, 'filter', 'forward', 0, [
      ...(opts.dropInvalid ? [{ rule: 'ct state invalid drop' }] : []),
      { rule: `${isNew} jump ${N.SERVICE_ENDPOINTS_CHECK}` },
      { rule: `${isNew} jump ${N.CLUSTER_IPS_CHECK}` },
    ]),
    base(N.FILTER_INPUT, 'filter', 'input', 0, [{ rule: `${isNew} jump ${N.NODEPORT_ENDPOINTS_CHECK}` }, { rule: `${isNew} jump ${N.SERVICE_ENDPOINTS_CHECK}` }]),
    base(N.FILTER_OUTPUT, 'filter', 'output', 0, [{ rule: `${isNew} jump ${N.SERVICE_ENDPOINTS_CHECK}` }, { rule: `${isNew} jump ${N.CLUSTER_IPS_CHECK}` }]),
    base(N.NAT_PREROUTING, 'nat', 'prerouting', -100, [{ rule: `jump ${N.SERVICES}` }]),
    base(N.NAT_OUTPUT, 'nat', 'output', -100, [{ rule: `jump ${N.SERVICES}` }]),
    base(N.NAT_POSTROUTING, 'nat', 'postrouting', 100, [{ rule: `jump ${N.MASQUERADING}` }]),
    {
      name: N.FIREWALL_CHECK,
      rules: [{ rule: `${dest} @${N.FIREWALL_IPS} ${dest} . ${ip} saddr != @${N.FIREWALL_ALLOW} drop`, comment: 'loadBalancerSourceRanges' }],
    },
    { name: N.SERVICE_ENDPOINTS_CHECK, rules: [{ rule: `${dest} vmap @${N.NO_ENDPOINT_SERVICES}` }] },
    { name: N.NODEPORT_ENDPOINTS_CHECK, rules: [{ rule: `${npMatch} meta l4proto . th dport vmap @${N.NO_ENDPOINT_NODEPORTS}` }] },
    {
      name: N.CLUSTER_IPS_CHECK,
      rules: [
        { rule: `${ip} daddr @${N.CLUSTER_IPS} reject`, comment: 'Reject traffic to invalid ports of ClusterIPs' },
        ...(serviceCIDRs.length > 0 ? [{ rule: `${ip} daddr { ${serviceCIDRs.join(', ')} } drop`, comment: 'Drop traffic to unallocated ClusterIPs' }] : []),
      ],
    },
    { name: N.REJECT_CHAIN, comment: 'helper for @no-endpoint-services / @no-endpoint-nodeports', rules: [{ rule: 'reject' }] },
    {
      name: N.SERVICES,
      rules: [
        ...(clusterMasq === null ? [] : [{ rule: `${ip} daddr @${N.CLUSTER_IPS}${clusterMasq} jump ${N.MARK_FOR_MASQUERADE}`, comment: 'masquerade traffic to cluster IPs from outside the cluster' }]),
        { rule: `${dest} vmap @${N.SERVICE_IPS}` },
        { rule: `${npMatch} meta l4proto . th dport vmap @${N.SERVICE_NODEPORTS}` },
      ],
    },
    { name: N.MARK_FOR_MASQUERADE, rules: [{ rule: `mark set mark or ${mark}` }] },
    {
      name: N.MASQUERADING,
      rules: [
        { rule: `ct status dnat ${ip} saddr . ${ip} daddr @${N.HAIRPIN} jump ${N.MARK_FOR_MASQUERADE}`, comment: 'hairpin: a pod reaching itself through a service' },
        { rule: `mark and ${mark} == 0 return` },
        { rule: `mark set mark xor ${mark}` },
        { rule: 'masquerade fully-random' },
      ],
    },
    ...externalChains('', ip, podCIDR),
    ...externalChains('nodeport-', ip, podCIDR),
  ];
  const groups = groupObjects(ctx, opts.keepGroups);

  const vmap = (key: string[]) => ({ type: key, value: { type: ['verdict'] } });
  const destType = [addr, 'inet_proto', 'inet_service'];
  const portType = ['inet_proto', 'inet_service'];
  const filled = new Map(serviceElements(ctx));
  const set = (name: string, key: string[], comment: string, flags: NftSet['flags'] = [], elements = filled.get(name) ?? []): NftSet => ({
    kind: 'set',
    name,
    key: { type: key },
    flags,
    comment,
    elements,
  });
  const map = (name: string, key: string[], comment: string): NftSet => {
    const v = vmap(key);
    return { kind: 'map', name, key: { type: v.type }, value: v.value, flags: [], comment, elements: filled.get(name) ?? [] };
  };
  const nodePortIPSet = new Elements(N.NODEPORT_IPS);
  for (const a of npIPs ?? []) nodePortIPSet.add({ key: [a] });

  const sets: NftSet[] = [
    set(N.CLUSTER_IPS, [addr], 'Active ClusterIPs'),
    ...(npIPs === null ? [] : [set(N.NODEPORT_IPS, [addr], 'IPs that accept NodePort traffic', [], nodePortIPSet.list)]),
    map(N.SERVICE_IPS, destType, 'ClusterIP, ExternalIP and LoadBalancer IP traffic'),
    map(N.SERVICE_NODEPORTS, portType, 'NodePort traffic'),
    map(N.NO_ENDPOINT_SERVICES, destType, 'vmap to drop or reject packets to services with no endpoints'),
    map(N.NO_ENDPOINT_NODEPORTS, portType, 'vmap to drop or reject packets to service nodeports with no endpoints'),
    set(N.FIREWALL_IPS, destType, 'destinations that are subject to LoadBalancerSourceRanges'),
    set(N.FIREWALL_ALLOW, [...destType, addr], 'sources LoadBalancerSourceRanges let in, per destination', ['interval']),
    set(N.HAIRPIN, [addr, addr], 'endpoint . endpoint: a pod reaching itself through a service'),
    ...groups.sets,
    ...ctx.ownSets,
  ];
  return { family: ip, name: TABLE_NAME, comment: TABLE_COMMENT, chains: [...chains, ...groups.chains, ...ctx.ownChains], sets };
}

/**
 * External traffic of service ports without chains of their own. Cluster policy:
 * masquerade, then any cluster endpoint. Local policy: pods and the node itself use the
 * cluster endpoints (the node masqueraded), outside clients this node's endpoints with
 * their source kept.
 */
function externalChains(prefix: '' | 'nodeport-', ip: 'ip' | 'ip6', podCIDR: string | null): Chain[] {
  const cluster = N.groupChain(`${prefix}cluster` as N.GroupKind);
  const local = N.groupChain(`${prefix}local` as N.GroupKind);
  return [
    { name: `${prefix}${N.EXTERNAL}`, rules: [{ rule: `jump ${N.MARK_FOR_MASQUERADE}` }, { rule: `goto ${cluster}` }] },
    {
      name: `${prefix}${N.EXTERNAL_LOCAL}`,
      rules: [
        ...(podCIDR ? [{ rule: `${ip} saddr ${podCIDR} goto ${cluster}`, comment: 'short-circuit pod traffic' }] : []),
        { rule: `fib saddr type local jump ${N.MARK_FOR_MASQUERADE}`, comment: 'masquerade local traffic' },
        { rule: `fib saddr type local goto ${cluster}`, comment: 'short-circuit local traffic' },
        { rule: `goto ${local}` },
      ],
    },
  ];
}
