/**
 * The ipvs renderer: (model, node, options) -> what upstream kube-proxy's ipvs mode
 * programs for one family: the virtual server table, the KUBE-* ipsets, the addresses
 * of kube-ipvs0 and the iptables rules that match the sets. Pure and deterministic.
 */
import { nodePortIPs } from '../../model/nodeports.js';
import type { FamilyModel, IPFamily, NodeContext, ServicePort } from '../../model/types.js';
import { cidrContains, joinHostPort, parseCIDR, parseIP, type ParsedIP } from '../../net/ip.js';
import type { IptablesRuleset } from '../iptables/ruleset.js';
import { PROTOCOL_NAMES } from '../iptables/names.js';
import { renderIpvsIptables } from './iptables.js';
import { DEFAULT_IPVS_OPTIONS, type IpvsOptions } from './options.js';
import { SET_KEYS, SETS, setName, type Ipset, type SetKey } from './ipsets.js';
import { vsKey, type VirtualServer } from './table.js';

export type VirtualServerRole = 'cluster IP' | 'external IP' | 'load balancer IP' | 'node port';

/** A virtual server with what it serves, for dry-run comments and the trace. */
export interface RenderedVirtualServer extends VirtualServer {
  servicePort: string;
  role: VirtualServerRole;
  /** Whether its real servers are this node's only (a Local traffic policy). */
  localOnly: boolean;
}

export interface IpvsRendering {
  family: IPFamily;
  /** Virtual servers in model order; one per key (the first service port claiming it). */
  virtualServers: RenderedVirtualServer[];
  /** The same by key, as the planner compares tables. */
  table: Map<string, RenderedVirtualServer>;
  /** Every set upstream creates, entries in model order. */
  sets: Ipset[];
  /** The addresses bound to kube-ipvs0, in model order. */
  addresses: string[];
  iptables: IptablesRuleset;
}


/** `IP,proto:PORT` as hash:ip,port sets take it. */
const ipPort = (ip: string, proto: string, port: number) => `${ip},${proto}:${port}`;

function familyIPs(node: NodeContext, family: IPFamily): string[] {
  return node.nodeIPs.filter((t) => parseIP(t)?.family === family);
}

/** Node port virtual servers go on these addresses: `--nodeport-addresses`, or every node address; never loopback. */
function nodePortAddresses(family: IPFamily, node: NodeContext, opts: IpvsOptions): string[] {
  const ips = nodePortIPs(family, node, opts.nodePortAddresses, false) ?? familyIPs(node, family);
  return ips.filter((ip) => !ip.startsWith('127.') && ip !== '::1');
}

/** What one service port contributes: its virtual servers (with their keys), set entries and kube-ipvs0 addresses. */
interface Piece {
  servers: [string, RenderedVirtualServer][];
  entries: [SetKey, string][];
  addresses: string[];
}

interface NodeFacts {
  opts: IpvsOptions;
  primary: ParsedIP | null;
  npAddresses: string[];
}

function servicePortPiece(sp: ServicePort, facts: NodeFacts): Piece {
  const { opts, primary, npAddresses } = facts;
  const piece: Piece = { servers: [], entries: [], addresses: [] };
  const add = (key: SetKey, entry: string) => piece.entries.push([key, entry]);
  const proto = PROTOCOL_NAMES[sp.protocol];
  const internalLocal = sp.internalTrafficPolicy === 'Local';
  const externalLocal = sp.externalTrafficPolicy === 'Local';
  const serve = (ip: string, port: number, role: VirtualServerRole, localOnly: boolean) => {
    const vs: RenderedVirtualServer = {
      protocol: proto,
      address: joinHostPort(ip, port),
      scheduler: opts.scheduler,
      persistence: sp.sessionAffinity?.timeoutSeconds ?? null,
      realServers: (localOnly ? sp.local.endpoints : sp.cluster.endpoints).map((e) => ({ address: e.address, weight: 1 })),
      servicePort: sp.name,
      role,
      localOnly,
    };
    piece.servers.push([vsKey(vs), vs]);
  };

  for (const e of sp.endpoints) if (e.isLocal) add('loopBack', `${e.ip},${proto}:${e.port},${e.ip}`);
  add('clusterIP', ipPort(sp.clusterIP, proto, sp.port));
  piece.addresses.push(sp.clusterIP);
  serve(sp.clusterIP, sp.port, 'cluster IP', internalLocal);

  for (const ip of sp.externalIPs) {
    add(externalLocal ? 'externalIPLocal' : 'externalIP', ipPort(ip, proto, sp.port));
    piece.addresses.push(ip);
    serve(ip, sp.port, 'external IP', externalLocal);
  }
  for (const ip of sp.loadBalancerIPs) {
    const entry = ipPort(ip, proto, sp.port);
    add('loadBalancer', entry);
    if (externalLocal) add('loadBalancerLocal', entry);
    if (sp.loadBalancerSourceRanges.length > 0) {
      add('loadBalancerFW', entry);
      for (const range of sp.loadBalancerSourceRanges) add('loadBalancerSourceCIDR', `${entry},${range}`);
      // The node reaches a VIP bound on kube-ipvs0 with the VIP as source: let it in when the node itself is allowed.
      if (primary && sp.loadBalancerSourceRanges.some((r) => cidrContains(parseCIDR(r)!, primary))) add('loadBalancerSourceIP', `${entry},${ip}`);
    }
    piece.addresses.push(ip);
    serve(ip, sp.port, 'load balancer IP', externalLocal);
  }
  if (sp.nodePort !== 0) {
    if (sp.protocol === 'SCTP') {
      for (const ip of npAddresses) {
        add('nodePortSCTP', ipPort(ip, proto, sp.nodePort));
        if (externalLocal) add('nodePortLocalSCTP', ipPort(ip, proto, sp.nodePort));
      }
    } else {
      const [all, local] = sp.protocol === 'TCP' ? (['nodePortTCP', 'nodePortLocalTCP'] as const) : (['nodePortUDP', 'nodePortLocalUDP'] as const);
      add(all, String(sp.nodePort));
      if (externalLocal) add(local, String(sp.nodePort));
    }
    for (const ip of npAddresses) serve(ip, sp.nodePort, 'node port', externalLocal);
  }
  if (sp.healthCheckNodePort !== 0) add('healthCheckNodePort', String(sp.healthCheckNodePort));
  return piece;
}

// Model objects are immutable and an agent renders the same ones on every sync: each
// service port's piece is kept, so a sync renders only what changed, and hands the
// planner the same virtual server objects, which it then need not compare.
const pieces = new WeakMap<ServicePort, { facts: NodeFacts; piece: Piece }>();
const nodeFacts = new WeakMap<IpvsOptions, WeakMap<NodeContext, Record<IPFamily, NodeFacts>>>();

function factsFor(options: IpvsOptions, node: NodeContext, family: IPFamily): NodeFacts {
  let byNode = nodeFacts.get(options);
  if (!byNode) nodeFacts.set(options, (byNode = new WeakMap()));
  let facts = byNode.get(node);
  if (!facts) {
    const of = (f: IPFamily): NodeFacts => ({ opts: options, primary: parseIP(familyIPs(node, f)[0] ?? ''), npAddresses: nodePortAddresses(f, node, options) });
    facts = { IPv4: of('IPv4'), IPv6: of('IPv6') };
    byNode.set(node, facts);
  }
  return facts[family];
}

const DEFAULTED = new WeakMap<Partial<IpvsOptions>, IpvsOptions>();

/**
 * Set entries and addresses come in model order (the model is sorted), each once;
 * a virtual server claimed by two service ports goes to the first.
 */
export function renderIpvs(model: FamilyModel, node: NodeContext, options: Partial<IpvsOptions> = DEFAULT_IPVS_OPTIONS): IpvsRendering {
  let opts = DEFAULTED.get(options);
  if (!opts) DEFAULTED.set(options, (opts = { ...DEFAULT_IPVS_OPTIONS, ...options }));
  const family = model.family;
  const facts = factsFor(opts, node, family);
  const entries = new Map<SetKey, Set<string>>(SET_KEYS.map((k) => [k, new Set()]));
  const addresses = new Set<string>();
  const table = new Map<string, RenderedVirtualServer>();
  for (const sp of model.servicePorts) {
    let known = pieces.get(sp);
    if (known?.facts !== facts) pieces.set(sp, (known = { facts, piece: servicePortPiece(sp, facts) }));
    const { piece } = known;
    for (const [key, entry] of piece.entries) entries.get(key)!.add(entry);
    for (const a of piece.addresses) addresses.add(a);
    for (const [key, vs] of piece.servers) if (!table.has(key)) table.set(key, vs);
  }
  for (const ip of addresses) entries.get('ipvsIPs')!.add(ip);
  const sets: Ipset[] = SET_KEYS.map((key) => ({ key, name: setName(key, family), type: SETS[key].type, family, entries: entries.get(key)! }));
  return { family, virtualServers: [...table.values()], table, sets, addresses: [...addresses], iptables: renderIpvsIptables(family, sets, opts) };
}
