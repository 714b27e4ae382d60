/**
 * The ipvs dataplane, simulated with the iptables evaluator: the rendered iptables part
 * with its ipset lookups, kube-ipvs0's addresses local to the node, and IPVS itself as a
 * table `ipvs` whose LOCAL_IN chain picks the virtual server by address, port and
 * protocol. Each virtual server's chain holds one DNAT rule per real server with the
 * odds its scheduler gives: by weight for rr, wrr, lc and the like (which also depend on
 * order and load, so the odds are the long-run share), and per client address for the
 * hashing schedulers (sh, mh, dh), which the trace says rather than computes.
 */
import type { ServicePortLabels } from '../../model/explain.js';
import type { FamilyModel, NodeContext, ServicePort } from '../../model/types.js';
import { cidrContains, parseCIDR, type ParsedIP } from '../../net/ip.js';
import type { ChainRole, Dataplane, DataplaneTrace, Packet } from '../../trace/types.js';
import { IPVS_HOOK, IPVS_TABLE, IptablesDataplane } from '../iptables/dataplane.js';
import type { PacketState } from '../iptables/match.js';
import { IptablesTable, rulesetTables } from '../iptables/tables.js';
import { PROXY_FIREWALL, SOURCE_RANGES_FIREWALL } from './iptables.js';
import type { Ipset } from './ipsets.js';
import type { IpvsOptions } from './options.js';
import { renderIpvs, type RenderedVirtualServer } from './render.js';

const HASHING = new Set(['sh', 'mh', 'dh']);

/** The chain standing for one virtual server (no spaces: a jump target). */
export function virtualServerChain(vs: Pick<RenderedVirtualServer, 'protocol' | 'address'>): string {
  return `VS:${vs.protocol}:${vs.address}`;
}

function schedulerNote(vs: RenderedVirtualServer, n: number): string {
  if (HASHING.has(vs.scheduler)) {
    const by = vs.scheduler === 'dh' ? 'destination address' : 'source address';
    return `${vs.scheduler}: the client's ${by} hash picks one real server, always the same one; which is not computed here (1 in ${n} over many clients)`;
  }
  const weighted = vs.realServers.some((rs) => rs.weight !== vs.realServers[0]!.weight);
  return `${vs.scheduler}: ${weighted ? 'in proportion to the weights' : `1 in ${n}`} over many connections`;
}

/** Rules of a virtual server's chain: the real servers it can pick, each with its odds. */
export function virtualServerRules(vs: RenderedVirtualServer): string[] {
  const live = vs.realServers.filter((rs) => rs.weight > 0);
  if (live.length === 0) return ['-m comment --comment "no real servers: IPVS answers ICMP port unreachable" -j REJECT'];
  const sticky = vs.persistence === null ? '' : ` -m recent --set --name ${virtualServerChain(vs)}`;
  const note = `-m comment --comment "${schedulerNote(vs, live.length)}"`;
  let left = live.reduce((n, rs) => n + rs.weight, 0);
  return live.map((rs, i) => {
    const p = rs.weight / left;
    left -= rs.weight;
    const stat = i < live.length - 1 ? ` -m statistic --mode random --probability ${Number(p.toFixed(10))}` : '';
    return `${note}${stat}${sticky} -j DNAT --to-destination ${rs.address}`;
  });
}

/** Node port virtual servers are reached through this chain, entered only for addresses that have them. */
const NODE_PORTS = 'NODE-PORTS';

function ipvsTable(servers: readonly RenderedVirtualServer[]): IptablesTable {
  const t = new IptablesTable(IPVS_TABLE);
  const hook = t.rawRules(IPVS_HOOK);
  const nodePorts = t.rawRules(NODE_PORTS);
  const nodePortAddresses = new Set<string>();
  for (const vs of servers) {
    const chain = virtualServerChain(vs);
    const { ip, port } = splitAddress(vs.address);
    const rule = { text: `-m comment --comment "${vs.servicePort} ${vs.role}" -d ${ip} -p ${vs.protocol} -m ${vs.protocol} --dport ${port} -j ${chain}`, line: null };
    if (vs.role === 'node port') {
      nodePorts.push(rule);
      nodePortAddresses.add(ip);
    } else hook.push(rule);
    t.rawRules(chain).push(...virtualServerRules(vs).map((text) => ({ text, line: null })));
  }
  for (const ip of nodePortAddresses) hook.push({ text: `-m comment --comment "node ports" -d ${ip} -j ${NODE_PORTS}`, line: null });
  return t;
}

function splitAddress(address: string): { ip: string; port: number } {
  const i = address.lastIndexOf(':');
  return { ip: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}

/** ipset lookups: the packet's fields, as each set's type and the match's flags say, in the rendered sets. */
function setLookup(sets: readonly Ipset[]) {
  const byName = new Map(sets.map((s) => [s.name, { set: s, entries: s.entries }]));
  return (name: string, flags: readonly ('src' | 'dst')[], p: PacketState): boolean | null => {
    const found = byName.get(name);
    if (!found) return null;
    const dims = found.set.type.split(':')[1]!.split(',');
    const ipOf = (f: 'src' | 'dst'): ParsedIP => (f === 'src' ? p.src : p.dst);
    if (found.set.type === 'bitmap:port') return flags[0] === 'dst' ? found.entries.has(String(p.dport)) : null;
    const parts: string[] = [];
    for (let i = 0; i < dims.length; i++) {
      const flag = flags[i] ?? flags.at(-1)!;
      if (dims[i] === 'ip') parts.push(ipOf(flag).text);
      else if (dims[i] === 'port') {
        if (flag !== 'dst') return null;
        parts.push(`${p.protocol}:${p.dport}`);
      } else if (dims[i] === 'net') {
        const prefix = `${parts.join(',')},`;
        const ip = ipOf(flag);
        return [...found.entries].some((e) => e.startsWith(prefix) && cidrContains(parseCIDR(e.slice(prefix.length))!, ip));
      }
    }
    return found.entries.has(parts.join(','));
  };
}

/** Roles of the chains standing for IPVS: dispatch, and each virtual server by the endpoint set it balances over. */
function roles(servers: readonly RenderedVirtualServer[]): (table: string, chain: string) => ChainRole | null {
  const balancing = new Map(servers.map((vs): [string, ChainRole] => [virtualServerChain(vs), vs.localOnly ? 'local-endpoints' : 'cluster-endpoints']));
  return (table, chain) => {
    if (table === IPVS_TABLE) return chain === IPVS_HOOK ? 'service-dispatch' : chain === NODE_PORTS ? 'node-port-dispatch' : (balancing.get(chain) ?? null);
    if (table === 'filter' && chain === PROXY_FIREWALL) return 'firewall';
    if (table === 'filter' && chain === SOURCE_RANGES_FIREWALL) return 'source-ranges';
    return null;
  };
}

export function ipvsLabels(_sp: ServicePort): ServicePortLabels {
  return { cluster: 'the virtual server', local: 'the virtual server, local endpoints only', external: 'the virtual server', sourceRanges: 'the set KUBE-LOAD-BALANCER-SOURCE-CIDR', firewall: 'KUBE-SOURCE-RANGES-FIREWALL' };
}

export class IpvsDataplane implements Dataplane {
  readonly mode = 'ipvs';
  readonly labels = ipvsLabels;
  private readonly inner: IptablesDataplane;

  constructor(model: FamilyModel, node: NodeContext, opts: IpvsOptions) {
    const r = renderIpvs(model, node, opts);
    const tables = rulesetTables(r.iptables);
    tables.set(IPVS_TABLE, ipvsTable(r.virtualServers));
    // Addresses on kube-ipvs0 are the node's own: the kernel delivers packets for them locally, where IPVS takes them.
    this.inner = new IptablesDataplane(tables, [...node.nodeIPs, ...r.addresses], r.family, { inSet: setLookup(r.sets), roles: roles(r.virtualServers) });
  }

  trace(packet: Packet): DataplaneTrace {
    const t = this.inner.trace(packet);
    return {
      ...t,
      mode: this.mode,
      assumptions: [
        ...t.assumptions,
        'IPVS is shown as table ipvs: chain LOCAL_IN picks the virtual server, one chain per virtual server picks the real server',
        'pods reach the node through a bridge port (-m physdev --physdev-is-in); other sources do not',
      ],
    };
  }
}
