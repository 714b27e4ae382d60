/**
 * A dataplane trace told in Kubernetes terms: which service port the packet is for, and
 * why it ends where it does (traffic policy, endpoint selection, source ranges,
 * affinity, masquerade). The rules say what happens; the model says why.
 */
import { describeSet, endpointState, type ServicePortLabels } from '../model/explain.js';
import type { FamilyModel, NodeContext, ServicePort } from '../model/types.js';
import { cidrContains, joinHostPort, parseCIDR, parseIP } from '../net/ip.js';
import type { ChainRole, DataplaneTrace, Destination, Outcome, PathSegment, RuleRole, ServiceTarget, Step } from './types.js';

export interface Explanation {
  service: ServiceTarget | null;
  destinations: Destination[];
  why: string[];
}

function* stepsOf(seg: PathSegment): Generator<Step> {
  yield* seg.steps;
  for (const b of seg.branches) yield* stepsOf(b.path);
}

function findTarget(t: DataplaneTrace, model: FamilyModel, isLocal: boolean): { sp: ServicePort; role: ServiceTarget['role'] } | null {
  const p = t.packet;
  const ports = model.servicePorts.filter((sp) => sp.protocol.toLowerCase() === p.protocol);
  for (const sp of ports) {
    if (sp.port !== p.dstPort) continue;
    if (sp.clusterIP === p.dst) return { sp, role: 'cluster IP' };
    if (sp.externalIPs.includes(p.dst)) return { sp, role: 'external IP' };
    if (sp.loadBalancerIPs.includes(p.dst)) return { sp, role: 'load balancer IP' };
  }
  if (!isLocal) return null;
  const np = ports.find((sp) => sp.nodePort === p.dstPort);
  if (np) return { sp: np, role: 'node port' };
  const hc = model.servicePorts.find((sp) => p.protocol === 'tcp' && sp.healthCheckNodePort === p.dstPort);
  return hc ? { sp: hc, role: 'health check node port' } : null;
}

/** Outcomes that end alike, merged in path order. */
function destinations(outcomes: Outcome[], sp: ServicePort | null): Destination[] {
  const out = new Map<string, Destination>();
  for (const o of outcomes) {
    const key = JSON.stringify([o.verdict, o.dnat, o.masquerade, o.reason]);
    const seen = out.get(key);
    if (seen) {
      seen.probability += o.probability;
      continue;
    }
    const e = sp?.endpoints.find((x) => x.address === o.dnat);
    out.set(key, {
      verdict: o.verdict,
      address: o.dnat,
      probability: o.probability,
      masquerade: o.masquerade,
      sticky: o.sticky,
      endpoint: e ? { node: e.nodeName, zone: e.zone, local: e.isLocal, state: endpointState(e) } : null,
      decidedBy: o.decidedBy,
      reason: o.reason,
    });
  }
  return [...out.values()];
}

/** When a mode takes node ports on loopback addresses. */
const LOOPBACK_NODE_PORTS: Record<string, string> = {
  iptables: 'never for IPv6; not with --iptables-localhost-nodeports=false',
  nftables: 'never in nftables mode, as upstream',
};

const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;

export function explainTrace(t: DataplaneTrace, model: FamilyModel, node: NodeContext, labelsOf: (sp: ServicePort) => ServicePortLabels): Explanation {
  const p = t.packet;
  const here = node.nodeName;
  const dstIP = parseIP(p.dst)!;
  const isLocal = t.localAddresses.some((a) => cidrContains(parseCIDR(a.includes('/') ? a : `${a}/${dstIP.bytes.length * 8}`)!, dstIP));
  const found = findTarget(t, model, isLocal);
  const address = `${joinHostPort(p.dst, p.dstPort)}/${p.protocol.toUpperCase()}`;
  if (!found) {
    const why = [`${address} is not an address of any service port known on ${here}: the proxy leaves it alone.`];
    if (isLocal) why.push(`${p.dst} is an address of ${here}, but no service has node port ${p.dstPort}/${p.protocol.toUpperCase()}.`);
    return { service: null, destinations: destinations(t.outcomes, null), why };
  }

  const { sp, role } = found;
  const names = labelsOf(sp);
  const steps = [...stepsOf(t.path)];
  const entered = new Set(steps.flatMap((s): ChainRole[] => (s.kind === 'chain' ? [s.role] : [])));
  const decided = (kind: RuleRole['kind']) => t.outcomes.some((o) => o.decidedBy?.role?.kind === kind);
  const dnats = t.outcomes.filter((o) => o.verdict === 'dnat');
  const localCandidates = sp.endpoints.filter((e) => e.isLocal);
  const clusterSet = `the cluster set (${names.cluster}): ${describeSet(sp.cluster, sp.endpoints, node)}`;
  const localSet = `endpoints on ${here} (${names.local}): ${describeSet(sp.local, localCandidates, node)}`;
  const why: string[] = [];

  why.push(
    role === 'node port' || role === 'health check node port'
      ? `${p.protocol.toUpperCase()} port ${p.dstPort} on ${here} is the ${role} of service port ${sp.name}.`
      : `${address} is the ${role} of service port ${sp.name}.`,
  );

  if (role === 'health check node port') {
    const n = sp.local.endpoints.length;
    why.push(
      `The proxy's own health check server answers it: 200 with the count of local endpoints, 503 with none or while the proxy's own rules are stale (${here} has ${plural(n, 'local endpoint')}). Load balancers use it to send externalTrafficPolicy Local traffic only to nodes that can serve it.`,
    );
    return { service: { servicePort: sp.name, protocol: sp.protocol, role }, destinations: destinations(t.outcomes, sp), why };
  }

  const nodePortsHere = entered.has('node-port-dispatch') || steps.some((s) => s.kind === 'rule' && s.role?.kind === 'node-ports');
  if (role === 'node port' && !nodePortsHere) {
    why.push(
      `But the rules take no node ports on ${p.dst}: --nodeport-addresses leaves it out, or it is a loopback address (${LOOPBACK_NODE_PORTS[t.mode] ?? 'never'}). The proxy leaves the packet alone.`,
    );
  }
  const guarded = sp.loadBalancerSourceRanges.length > 0 && sp.loadBalancerIPs.length > 0;
  const src = parseIP(p.src)!;
  const allowedBy = sp.loadBalancerSourceRanges.find((r) => cidrContains(parseCIDR(r)!, src));
  // iptables mode's firewall also drops what its source ranges let in but nothing DNATed
  // (externalTrafficPolicy Local without a local endpoint): that drop is not the ranges'.
  const refusedByRanges = decided('source-ranges') && !allowedBy;
  const noLocalEndpoints = decided('no-local-endpoints') || (decided('source-ranges') && allowedBy !== undefined);
  if (guarded) {
    const ranges = sp.loadBalancerSourceRanges.join(', ');
    if (role === 'load balancer IP') {
      why.push(
        refusedByRanges
          ? `loadBalancerSourceRanges (${ranges}) do not include ${p.src}: ${names.sourceRanges} does not let it in, and ${names.firewall} drops it.`
          : `loadBalancerSourceRanges (${ranges}): ${p.src} ${allowedBy ? `is in ${allowedBy}` : `is the load balancer IP itself (this node reaching its own VIP)`}, so ${names.sourceRanges} lets it in.`,
      );
    } else if (role === 'node port') {
      why.push(`loadBalancerSourceRanges (${ranges}) guard the load balancer IPs only, not node ports.`);
    }
  }

  // A balancing chain some service ports share (nftables) may be passed through without a pick.
  const usedSvc = entered.has('cluster-endpoints') && dnats.length > 0;
  const usedSvl = entered.has('local-endpoints') && dnats.length > 0;
  if (decided('no-endpoints')) {
    why.push(`No endpoint can serve ${sp.name} (${describeSet(sp.cluster, sp.endpoints, node)}): connections are rejected at once, so clients fail fast.`);
  } else if (role === 'cluster IP') {
    if (sp.internalTrafficPolicy === 'Local') {
      why.push(
        decided('no-local-endpoints')
          ? `internalTrafficPolicy Local, and no endpoint of ${sp.name} runs on ${here} (${plural(sp.endpoints.length, 'endpoint')} elsewhere): dropped here rather than sent to another node.`
          : `internalTrafficPolicy Local: only ${localSet}.`,
      );
    } else {
      why.push(`internalTrafficPolicy Cluster: balanced over ${clusterSet}.`);
    }
  } else if (sp.externalTrafficPolicy === 'Cluster') {
    if (usedSvc) why.push(`externalTrafficPolicy Cluster: balanced over ${clusterSet}.`);
  } else {
    const client = p.from === 'node' ? `${here} itself` : p.from === 'pod' ? 'a pod' : 'an outside client';
    if (usedSvl) why.push(`externalTrafficPolicy Local: ${client} is served by ${localSet}; the client's source IP is kept.`);
    if (usedSvc) why.push(`externalTrafficPolicy Local applies to outside clients only: ${client} is served as if through the load balancer, by ${clusterSet}.`);
    if (noLocalEndpoints) {
      const hc = sp.healthCheckNodePort !== 0 ? ` Its health check node port ${sp.healthCheckNodePort} answers 503 here, so load balancers leave ${here} out.` : '';
      why.push(`externalTrafficPolicy Local, and no endpoint of ${sp.name} runs on ${here}: ${client} is dropped here rather than sent to another node.${hc}`);
    }
  }
  if (sp.sessionAffinity && dnats.length > 0) {
    why.push(
      `sessionAffinity ClientIP: as far as the trace knows this is ${p.src}'s first connection, balanced as shown; its next connections within ${sp.sessionAffinity.timeoutSeconds} s go to the endpoint it got.`,
    );
  }

  const masq: MasqueradeContext = { src: p.src, role, steps, here };
  const reasons = new Map<string, string[]>();
  for (const o of dnats) {
    const line = masquerade(o, masq);
    reasons.set(line, [...(reasons.get(line) ?? []), o.dnat!]);
  }
  // Reasons that differ by endpoint name the endpoints they are about.
  for (const [line, to] of reasons) {
    why.push(reasons.size === 1 || to.some((a) => line.includes(a)) ? line : line.replace(/\.$/, ` (to ${to.join(', ')}).`));
  }
  for (const o of dnats) {
    if (!sp.endpoints.some((e) => e.address === o.dnat)) {
      why.push(`The rules send it to ${o.dnat}, which is not an endpoint of ${sp.name} in the model: were the rules written from older state?`);
    }
  }
  return { service: { servicePort: sp.name, protocol: sp.protocol, role }, destinations: destinations(t.outcomes, sp), why };
}

interface MasqueradeContext {
  src: string;
  role: ServiceTarget['role'];
  steps: Step[];
  here: string;
}

const clusterCIDROf = (r: RuleRole | null) => (r?.kind === 'masquerade' && r.because === 'outside-cluster-cidr' ? r.clusterCIDR : null);

function masquerade(o: Outcome, c: MasqueradeContext): string {
  const why = o.markedBy?.role;
  if (why?.kind === 'proxied') {
    return `Proxied: the agent's listener ${why.port} (${why.listener}) opens its own connection to the endpoint, so the endpoint sees ${c.here}'s address, not ${c.src}.`;
  }
  if (o.markedBy) {
    if (why?.kind !== 'masquerade') return `Masqueraded: marked by ${o.markedBy.table} ${o.markedBy.chain} rule ${o.markedBy.rule}.`;
    switch (why.because) {
      case 'hairpin':
        return `Hairpin: to ${o.dnat} the client is the endpoint itself, so it is masqueraded and the reply comes back through ${c.here}.`;
      case 'outside-cluster-cidr':
        return `Masqueraded: ${c.src} is outside the cluster CIDR ${why.clusterCIDR}, so replies must come back through ${c.here}.`;
      case 'all':
        return 'Masqueraded: --masquerade-all SNATs all traffic to service IPs.';
      case 'node-to-external':
        return `Masqueraded: traffic from ${c.here} itself to an external address is SNATed, so the reply finds its way back.`;
      case 'external':
        return `Masqueraded: externalTrafficPolicy Cluster SNATs traffic from outside so replies come back through ${c.here}; the endpoint does not see the client's IP.`;
    }
  }
  if (o.delivery === 'local') return `Not masqueraded: the endpoint is on ${c.here} itself, where no source NAT happens.`;
  if (c.role !== 'cluster IP') {
    return c.steps.some((s) => s.kind === 'chain' && s.role === 'local-endpoints')
      ? 'Not masqueraded: the endpoint sees the client\'s own address.'
      : 'Not masqueraded: pods reach external addresses with their own source address.';
  }
  // A cluster IP packet always meets the masquerade rule, if there is one: it matches its destination.
  const cidr = c.steps.map((s) => (s.kind === 'rule' ? clusterCIDROf(s.role) : null)).find((x) => x !== null) ?? null;
  if (cidr === null) return 'Not masqueraded: without --cluster-cidr the proxy cannot tell pods from other clients, so it masquerades none of them by source.';
  return `Not masqueraded: ${c.src} is inside the cluster CIDR ${cidr}, so the endpoint sees the client's own address.`;
}
