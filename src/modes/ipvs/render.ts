/**
 * The ipvs renderer: (model, node, options) -> what upstream kube-proxy's ipvs mode
 * programs for one family: the virtual server table, the KUBE-* ipsets, the addresses
 * of kube-ipvs0 and the iptables rules that match the sets. Pure and deterministic.
 */
import { nodePortIPs } from '../../model/nodeports.js';
import type { Endpoint, FamilyModel, IPFamily, NodeContext, ServicePort } from '../../model/types.js';
import { cidrContains, joinHostPort, parseCIDR, parseIP } from '../../net/ip.js';
import type { IptablesRuleset } from '../iptables/ruleset.js';
import { PROTOCOL_NAMES } from '../iptables/names.js';
import { renderIpvsIptables } from './iptables.js';
import { DEFAULT_IPVS_OPTIONS, type IpvsOptions } from './options.js';
import { SET_KEYS, SETS, setName, type Ipset, type SetKey } from './ipsets.js';
import { vsKey, type IpvsTable, type VirtualServer } from './table.js';

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
  sets: Ipset[];
  /** The addresses bound to kube-ipvs0, sorted. */
  addresses: string[];
  iptables: IptablesRuleset;
}

/** The rendered virtual servers by key, as the planner compares tables. */
export function tableOf(r: IpvsRendering): IpvsTable {
  return new Map(r.virtualServers.map((vs) => [vsKey(vs), vs]));
}

/** `IP,proto:PORT` as hash:ip,port sets take it. */
const ipPort = (ip: string, proto: string, port: number) => `${ip},${proto}:${port}`;

function realServers(endpoints: Endpoint[]) {
  return endpoints.map((e) => ({ address: e.address, weight: 1 }));
}

interface Collector {
  entries: Map<SetKey, Set<string>>;
  add(key: SetKey, entry: string): void;
}

function collector(): Collector {
  const entries = new Map<SetKey, Set<string>>(SET_KEYS.map((k) => [k, new Set()]));
  return { entries, add: (key, entry) => entries.get(key)!.add(entry) };
}

function familyIPs(node: NodeContext, family: IPFamily): string[] {
  return node.nodeIPs.filter((t) => parseIP(t)?.family === family);
}

/** Node port virtual servers go on these addresses: `--nodeport-addresses`, or every node address; never loopback. */
function nodePortAddresses(family: IPFamily, node: NodeContext, opts: IpvsOptions): string[] {
  const ips = nodePortIPs(family, node, opts.nodePortAddresses, false) ?? familyIPs(node, family);
  return ips.filter((ip) => !ip.startsWith('127.') && ip !== '::1');
}

export function renderIpvs(model: FamilyModel, node: NodeContext, options: Partial<IpvsOptions> = {}): IpvsRendering {
  const opts: IpvsOptions = { ...DEFAULT_IPVS_OPTIONS, ...options };
  const family = model.family;
  const sets = collector();
  const addresses = new Set<string>();
  const virtualServers: RenderedVirtualServer[] = [];
  const claimed = new Set<string>();
  const primary = parseIP(familyIPs(node, family)[0] ?? '');
  const npAddresses = nodePortAddresses(family, node, opts);

  const addServer = (sp: ServicePort, ip: string, port: number, role: VirtualServerRole, localOnly: boolean) => {
    const vs: RenderedVirtualServer = {
      protocol: PROTOCOL_NAMES[sp.protocol],
      address: joinHostPort(ip, port),
      scheduler: opts.scheduler,
      persistence: sp.sessionAffinity?.timeoutSeconds ?? null,
      realServers: realServers(localOnly ? sp.local.endpoints : sp.cluster.endpoints),
      servicePort: sp.name,
      role,
      localOnly,
    };
    const key = vsKey(vs);
    if (claimed.has(key)) return;
    claimed.add(key);
    virtualServers.push(vs);
  };

  for (const sp of model.servicePorts) {
    const proto = PROTOCOL_NAMES[sp.protocol];
    const internalLocal = sp.internalTrafficPolicy === 'Local';
    const externalLocal = sp.externalTrafficPolicy === 'Local';
    for (const e of sp.endpoints) if (e.isLocal) sets.add('loopBack', `${e.ip},${proto}:${e.port},${e.ip}`);

    sets.add('clusterIP', ipPort(sp.clusterIP, proto, sp.port));
    addresses.add(sp.clusterIP);
    addServer(sp, sp.clusterIP, sp.port, 'cluster IP', internalLocal);

    for (const ip of sp.externalIPs) {
      sets.add(externalLocal ? 'externalIPLocal' : 'externalIP', ipPort(ip, proto, sp.port));
      addresses.add(ip);
      addServer(sp, ip, sp.port, 'external IP', externalLocal);
    }
    for (const ip of sp.loadBalancerIPs) {
      const entry = ipPort(ip, proto, sp.port);
      sets.add('loadBalancer', entry);
      if (externalLocal) sets.add('loadBalancerLocal', entry);
      if (sp.loadBalancerSourceRanges.length > 0) {
        sets.add('loadBalancerFW', entry);
        for (const range of sp.loadBalancerSourceRanges) sets.add('loadBalancerSourceCIDR', `${entry},${range}`);
        // The node reaches a VIP bound on kube-ipvs0 with the VIP as source: let it in when the node itself is allowed.
        if (primary && sp.loadBalancerSourceRanges.some((r) => cidrContains(parseCIDR(r)!, primary))) sets.add('loadBalancerSourceIP', `${entry},${ip}`);
      }
      addresses.add(ip);
      addServer(sp, ip, sp.port, 'load balancer IP', externalLocal);
    }
    if (sp.nodePort !== 0) {
      if (sp.protocol === 'SCTP') {
        for (const ip of npAddresses) {
          sets.add('nodePortSCTP', ipPort(ip, proto, sp.nodePort));
          if (externalLocal) sets.add('nodePortLocalSCTP', ipPort(ip, proto, sp.nodePort));
        }
      } else {
        const [all, local] = sp.protocol === 'TCP' ? (['nodePortTCP', 'nodePortLocalTCP'] as const) : (['nodePortUDP', 'nodePortLocalUDP'] as const);
        sets.add(all, String(sp.nodePort));
        if (externalLocal) sets.add(local, String(sp.nodePort));
      }
      for (const ip of npAddresses) addServer(sp, ip, sp.nodePort, 'node port', externalLocal);
    }
    if (sp.healthCheckNodePort !== 0) sets.add('healthCheckNodePort', String(sp.healthCheckNodePort));
  }
  const bound = [...addresses].sort();
  for (const ip of bound) sets.add('ipvsIPs', ip);

  const rendered: Ipset[] = SET_KEYS.map((key) => ({
    key,
    name: setName(key, family),
    type: SETS[key].type,
    family,
    entries: [...sets.entries.get(key)!].sort(),
  }));
  return { family, virtualServers, sets: rendered, addresses: bound, iptables: renderIpvsIptables(family, rendered, opts) };
}

