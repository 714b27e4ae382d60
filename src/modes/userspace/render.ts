/**
 * The userspace renderer: (model, node, options, the ports listeners hold) -> the
 * listeners the agent runs and the iptables rules that capture service traffic into them.
 * Pure and deterministic. The rules are an iptables ruleset (../iptables/ruleset.ts), so
 * the iptables applier, restore writer and trace read them as they read iptables mode's.
 *
 * One listener per service port and protocol serves its cluster IP and, when both traffic
 * policies pick the same endpoints, its node port, external and load-balancer IPs too;
 * when they differ (one Local, one Cluster), external traffic gets a listener of its own:
 * a REDIRECTed connection no longer says which address it was for.
 */
import { localhostNodePortsOn, nodePortIPs } from '../../model/nodeports.js';
import { externallyAccessible } from '../../model/policy.js';
import type { EndpointSet, FamilyModel, IPFamily, NodeContext, ServicePort } from '../../model/types.js';
import type { Rule, IptablesRuleset, ServicePortRules } from '../iptables/ruleset.js';
import { parseCIDR } from '../../net/ip.js';
import { comment } from '../iptables/render.js';
import { NODEPORT_CONTAINER, NODEPORT_HOST, PORTALS_CONTAINER, PORTALS_HOST, USERSPACE_CHAINS, userspaceJumps } from './chains.js';
import { allocatePorts, type PortRange } from './ports.js';

export type ListenerProtocol = 'TCP' | 'UDP';

/** Which of a service port's traffic a listener takes. */
export type ListenerScope = 'service' | 'external';

export interface UserspaceOptions {
  /** Pod CIDRs, any family: pods reach external addresses as the node does (externalTrafficPolicy Local). */
  clusterCIDRs: string[];
  nodePortAddresses: string[];
  localhostNodePorts: boolean;
  portRange: PortRange;
}

/** One local socket the agent proxies from, and where it may send what it accepts. */
export interface Listener {
  /** `NS/NAME:PORT PROTOCOL`, plus ` external` for a separate external listener; unique in a family. */
  key: string;
  family: IPFamily;
  protocol: ListenerProtocol;
  port: number;
  scope: ListenerScope;
  servicePort: ServicePort;
  /** The endpoint set its traffic policy picks (empty: connections are refused). */
  set: EndpointSet;
  /** What is captured into it, for people: `cluster IP 10.96.0.10:80`, `node port 30080`... */
  captures: string[];
}

/** A service port this mode does not proxy, and why. */
export interface Refusal {
  servicePort: string;
  reason: string;
}

export interface UserspacePlan {
  family: IPFamily;
  listeners: Listener[];
  refused: Refusal[];
  ruleset: IptablesRuleset;
}

interface Want {
  key: string;
  scope: ListenerScope;
  sp: ServicePort;
  set: EndpointSet;
}

function policySet(sp: ServicePort, local: boolean): EndpointSet {
  return local ? sp.local : sp.cluster;
}

/** External traffic has its own listener only when its policy picks other endpoints than the cluster IP's. */
export function splitsExternal(sp: ServicePort): boolean {
  return externallyAccessible(sp) && (sp.externalTrafficPolicy === 'Local') !== (sp.internalTrafficPolicy === 'Local');
}

function wants(sp: ServicePort): Want[] {
  const base = `${sp.name} ${sp.protocol}`;
  const out: Want[] = [{ key: base, scope: 'service', sp, set: policySet(sp, sp.internalTrafficPolicy === 'Local') }];
  if (splitsExternal(sp)) out.push({ key: `${base} external`, scope: 'external', sp, set: policySet(sp, sp.externalTrafficPolicy === 'Local') });
  return out;
}

function refusal(sp: ServicePort): string | null {
  if (sp.protocol === 'SCTP') return 'SCTP is not proxied in userspace mode (Node.js has no SCTP sockets); use --proxy-mode iptables for this Service';
  return null;
}

const PROTO = { TCP: 'tcp', UDP: 'udp' } as const;

interface CaptureContext {
  nodePortDsts: string[] | null;
  noLoopback: boolean;
  /** This family's pod CIDR, or null. */
  podCIDR: string | null;
}

/**
 * `insiders`: under externalTrafficPolicy Local, the port of the service port's own
 * listener (the cluster set), where pods and the node itself go for external addresses
 * and node ports, as in the kernel modes; null otherwise.
 */
function captureRules(l: Listener, ctx: CaptureContext, insiders: number | null): Rule[] {
  const sp = l.servicePort;
  const proto = PROTO[l.protocol];
  const out: Rule[] = [];
  const rule = (chain: string, text: string, match: string, port: number) =>
    out.push({ table: 'nat', chain, rule: `${comment(`${sp.name} ${text}`)} -m ${proto} -p ${proto} ${match} -j REDIRECT --to-ports ${port}` });
  const both = ([container, host]: [string, string], text: string, match: string) => {
    if (insiders === null) {
      rule(container, text, match, l.port);
      rule(host, text, match, l.port);
      return;
    }
    if (ctx.podCIDR !== null && !/(^| )-s /.test(match)) rule(container, `${text} from pods`, `-s ${ctx.podCIDR} ${match}`, insiders);
    rule(container, text, match, l.port);
    rule(host, text, match, insiders);
  };
  const portals: [string, string] = [PORTALS_CONTAINER, PORTALS_HOST];
  const external = l.scope === 'external' || !splitsExternal(sp);
  if (l.scope === 'service') both(portals, 'cluster IP', `-d ${sp.clusterIP} --dport ${sp.port}`);
  if (!external) return out;
  for (const ip of sp.externalIPs) both(portals, 'external IP', `-d ${ip} --dport ${sp.port}`);
  for (const ip of sp.loadBalancerIPs) {
    // Source ranges are enforced by capturing only what they let in; the rest is not the proxy's.
    if (sp.loadBalancerSourceRanges.length === 0) both(portals, 'loadbalancer IP', `-d ${ip} --dport ${sp.port}`);
    for (const range of sp.loadBalancerSourceRanges) both(portals, 'loadbalancer IP', `-s ${range} -d ${ip} --dport ${sp.port}`);
  }
  if (sp.nodePort !== 0) {
    const nodePorts: [string, string] = [NODEPORT_CONTAINER, NODEPORT_HOST];
    if (ctx.nodePortDsts === null) both(nodePorts, 'node port', `${ctx.noLoopback ? '! -d 127.0.0.0/8 ' : ''}--dport ${sp.nodePort}`);
    else for (const ip of ctx.nodePortDsts) both(nodePorts, 'node port', `-d ${ip} --dport ${sp.nodePort}`);
  }
  return out;
}

function captures(l: Listener): string[] {
  const sp = l.servicePort;
  const out: string[] = [];
  if (l.scope === 'service') out.push(`cluster IP ${sp.clusterIP}:${sp.port}`);
  if (l.scope === 'external' || !splitsExternal(sp)) {
    if (sp.nodePort !== 0) out.push(`node port ${sp.nodePort}`);
    for (const ip of sp.externalIPs) out.push(`external IP ${ip}:${sp.port}`);
    for (const ip of sp.loadBalancerIPs) out.push(`load balancer IP ${ip}:${sp.port}${sp.loadBalancerSourceRanges.length > 0 ? ` from ${sp.loadBalancerSourceRanges.join(', ')}` : ''}`);
  }
  return out;
}

/**
 * `held`: the ports the proxier's listeners hold now, by key (empty for a dry run);
 * `unusable`: ports it failed to bind.
 */
export function renderUserspace(
  model: FamilyModel,
  node: NodeContext,
  opts: UserspaceOptions,
  held: ReadonlyMap<string, number> = new Map(),
  unusable: ReadonlySet<number> = new Set(),
): UserspacePlan {
  const refused: Refusal[] = [];
  const all: Want[] = [];
  for (const sp of model.servicePorts) {
    const why = refusal(sp);
    if (why) refused.push({ servicePort: `${sp.name} ${sp.protocol}`, reason: why });
    else all.push(...wants(sp));
  }
  const { ports, unplaced } = allocatePorts(
    all.map((w) => w.key),
    opts.portRange,
    held,
    unusable,
  );
  for (const key of unplaced) refused.push({ servicePort: key, reason: 'no free listener port left in --proxy-port-range' });
  const ctx: CaptureContext = {
    nodePortDsts: nodePortIPs(model.family, node, opts.nodePortAddresses, opts.localhostNodePorts),
    noLoopback: model.family === 'IPv4' && !localhostNodePortsOn(opts.nodePortAddresses, opts.localhostNodePorts),
    podCIDR: opts.clusterCIDRs.map((c) => parseCIDR(c)).find((c) => c?.family === model.family)?.text ?? null,
  };

  const listeners: Listener[] = [];
  const services: ServicePortRules[] = [];
  for (const w of all) {
    const port = ports.get(w.key);
    if (port === undefined) continue;
    const l: Listener = { key: w.key, family: model.family, protocol: w.sp.protocol as ListenerProtocol, port, scope: w.scope, servicePort: w.sp, set: w.set, captures: [] };
    l.captures = captures(l);
    listeners.push(l);
    const insiders = w.scope === 'external' && w.sp.externalTrafficPolicy === 'Local' ? (ports.get(`${w.sp.name} ${w.sp.protocol}`) ?? null) : null;
    services.push({ key: w.key, shared: captureRules(l, ctx, insiders), chains: [], rules: { start: 0, endpoints: 0, end: 0 } });
  }
  return {
    family: model.family,
    listeners,
    refused,
    ruleset: {
      family: model.family,
      jumps: userspaceJumps(),
      fixed: USERSPACE_CHAINS.map((name) => ({ table: 'nat', name, rules: [] })),
      shared: USERSPACE_CHAINS.map((name) => ({ table: 'nat', name })),
      services,
      chainRules: Buffer.alloc(0),
      nodePortsTail: [],
    },
  };
}
