/**
 * Service ports in Kubernetes terms: each endpoint's state, why an endpoint set holds
 * what it holds, and which part of the rules serves which traffic. Shared by the trace's
 * "why" and by `--dry-run --explain`, so both tell the same story from the same model.
 */
import { policyView } from './policy.js';
import { parseCIDR } from '../net/ip.js';
import type { Endpoint, EndpointSet, FamilyModel, NodeContext, ServicePort } from './types.js';

/** How a mode names a service port's parts (a chain, a map, a virtual server) in explanations. */
export interface ServicePortLabels {
  /** Balancing over the cluster endpoint set. */
  cluster: string;
  /** Balancing over the endpoints on this node. */
  local: string;
  /** Traffic to node ports, external and load-balancer IPs. */
  external: string;
  /** What lets loadBalancerSourceRanges in. */
  sourceRanges: string;
  /** What drops load-balancer traffic the source ranges do not let in. */
  firewall: string;
}

export function endpointState(e: Endpoint): string {
  if (e.ready) return 'ready';
  if (e.terminating) return e.serving ? 'terminating, serving' : 'terminating, not serving';
  return e.serving ? 'not ready, serving' : 'not ready';
}

export function endpointHints(e: Endpoint): string {
  const hints = [...e.zoneHints.map((z) => `zone ${z}`), ...e.nodeHints.map((n) => `node ${n}`)];
  return hints.length > 0 ? hints.join(', ') : '-';
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** Why a set holds its endpoints, e.g. "the 2 ready endpoints hinted for zone zone-a (of 3 ready)". */
export function describeSet(set: EndpointSet, candidates: Endpoint[], node: NodeContext): string {
  const ready = candidates.filter((e) => e.ready).length;
  const n = set.endpoints.length;
  const notReady = candidates.length - ready;
  switch (set.selection) {
    case 'ready':
      if (n < candidates.length) return `the ${plural(n, 'ready endpoint')} (${notReady} more not ready)`;
      return n === 1 ? '1 endpoint, ready' : `all ${n} endpoints, ready`;
    case 'ready, zone hints':
      return `topology hints: the ${plural(n, 'endpoint')} hinted for zone ${node.zone} (of ${ready} ready)`;
    case 'ready, node hints':
      return `topology hints: the ${plural(n, 'endpoint')} hinted for node ${node.nodeName} (of ${ready} ready)`;
    case 'serving-terminating fallback':
      return `no endpoint is ready, so the ${plural(n, 'endpoint')} still serving while terminating (fallback)`;
    case 'none':
      return candidates.length === 0 ? 'no endpoints' : `none of its ${plural(candidates.length, 'endpoint')} is ready or serving`;
  }
}

/**
 * Everything a node's rules send to a service port, line by line, for `--explain`.
 * `podCIDR`: this family's cluster CIDR, which tells pods from outside clients.
 */
export function explainServicePort(sp: ServicePort, node: NodeContext, podCIDR: string | null, labels: ServicePortLabels): string[] {
  const view = policyView(sp);
  const localCandidates = sp.endpoints.filter((e) => e.isLocal);
  const here = node.nodeName;
  const lines = [`${sp.name} (${sp.protocol})`];
  const internal = !view.hasAnyEndpoints
    ? 'REJECT (no endpoints)'
    : !view.hasInternalEndpoints
      ? `DROP (internalTrafficPolicy Local, no endpoint on ${here})`
      : sp.internalTrafficPolicy === 'Local'
        ? `${labels.local} (internalTrafficPolicy Local)`
        : `${labels.cluster} (internalTrafficPolicy Cluster)`;
  lines.push(`  cluster IP ${sp.clusterIP}:${sp.port} -> ${internal}`);

  if (view.externallyAccessible) {
    const where = [
      ...(sp.nodePort !== 0 ? [`node port ${sp.nodePort}`] : []),
      ...sp.externalIPs.map((ip) => `external IP ${ip}:${sp.port}`),
      ...sp.loadBalancerIPs.map((ip) => `load balancer IP ${ip}:${sp.port}`),
    ].join(', ');
    const insiders = `${podCIDR ? `pods (${podCIDR}) and ` : ''}the node -> ${labels.cluster}`;
    const external = !view.hasAnyEndpoints
      ? 'REJECT (no endpoints)'
      : !view.hasExternalEndpoints
        ? `DROP for outside clients (externalTrafficPolicy Local, no endpoint on ${here}); ${insiders}`
        : sp.externalTrafficPolicy === 'Local'
          ? `${labels.external}: outside clients -> ${labels.local}, source IP kept; ${insiders}`
          : `${labels.external}: masqueraded, then ${labels.cluster} (externalTrafficPolicy Cluster)`;
    lines.push(`  ${where} -> ${external}`);
    if (sp.loadBalancerSourceRanges.length > 0 && sp.loadBalancerIPs.length > 0) {
      lines.push(`  loadBalancerSourceRanges ${sp.loadBalancerSourceRanges.join(', ')}: ${labels.sourceRanges} lets them in, ${labels.firewall} drops the rest`);
    }
  }
  if (sp.healthCheckNodePort !== 0) {
    const n = sp.local.endpoints.length;
    lines.push(`  health check node port ${sp.healthCheckNodePort}: ${n > 0 ? `200, ${plural(n, 'local endpoint')}` : '503, no local endpoint'}`);
  }
  if (sp.sessionAffinity) lines.push(`  sessionAffinity ClientIP, ${sp.sessionAffinity.timeoutSeconds} s`);

  const usesSvc = view.clusterEndpoints.length > 0;
  const usesSvl = view.localEndpoints.length > 0;
  if (usesSvc) lines.push(`  ${labels.cluster} uses the cluster set: ${describeSet(sp.cluster, sp.endpoints, node)}`);
  if (usesSvl) lines.push(`  ${labels.local} uses the local set, endpoints on ${here}: ${describeSet(sp.local, localCandidates, node)}`);
  if (sp.endpoints.length === 0) return [...lines, '  no endpoints'];

  const inCluster = new Set(usesSvc ? sp.cluster.endpoints : []);
  const inLocal = new Set(usesSvl ? sp.local.endpoints : []);
  const rows = sp.endpoints.map((e) => [
    e.address,
    e.nodeName === null ? '-' : e.isLocal ? `${e.nodeName} (here)` : e.nodeName,
    e.zone ?? '-',
    endpointState(e),
    endpointHints(e),
    [...(inCluster.has(e) ? ['cluster'] : []), ...(inLocal.has(e) ? ['local'] : [])].join(', ') || '-',
  ]);
  return [...lines, ...table([['endpoint', 'node', 'zone', 'state', 'hints', 'sets'], ...rows]).map((l) => `    ${l}`)];
}

/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function table(rows: string[][]): string[] {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
}

/**
 * `--explain` for one family, as `#` comment lines so that a mode's output stays valid
 * input for its tools. `clusterCIDRs`: any family; the one of the model's tells pods apart.
 */
export function explainComments(model: FamilyModel, node: NodeContext, clusterCIDRs: string[], labels: (sp: ServicePort) => ServicePortLabels): string[] {
  const podCIDR = clusterCIDRs.map((c) => parseCIDR(c)).find((c) => c?.family === model.family)?.text ?? null;
  const ports = model.servicePorts.flatMap((sp) => ['#', ...explainServicePort(sp, node, podCIDR, labels(sp)).map((l) => `#   ${l}`)]);
  return ['# service ports, their endpoints and the sets their rules use:', ...(ports.length > 0 ? ports : ['#   none'])];
}
