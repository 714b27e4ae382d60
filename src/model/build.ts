/**
 * Cluster objects -> the per-node model. Pure: the same objects and node always give the
 * same model. Objects that fail validation become problems and are left out.
 */
import { joinHostPort, type IPFamily } from '../net/ip.js';
import {
  HEADLESS_LABEL,
  SERVICE_PROXY_NAME_LABEL,
  ZONE_LABEL,
  type ClusterObjects,
  type EndpointSliceInfo,
  type NodeInfo,
  type ServiceCIDRInfo,
  type ServiceInfo,
} from '../kube/objects.js';
import { validateEndpointSlice, validateNode, validateService, validateServiceCIDR } from '../kube/validate.js';
import { clusterEndpoints, localEndpoints } from './endpoints.js';
import { flat } from './flat.js';
import type { Endpoint, FamilyModel, NodeContext, NodeModel, Problem, ServicePort } from './types.js';

const FAMILIES: readonly IPFamily[] = ['IPv4', 'IPv6'];

/** Why a valid Service is not proxied, or null when it is. */
export function skipReason(svc: ServiceInfo): string | null {
  if (svc.type === 'ExternalName') return 'ExternalName service';
  if (svc.headless) return 'headless service (clusterIP: None)';
  if (svc.clusterIPs.length === 0) return 'no cluster IP assigned';
  if (svc.labels[SERVICE_PROXY_NAME_LABEL] !== undefined) {
    return `label ${SERVICE_PROXY_NAME_LABEL} hands it to another proxy`;
  }
  if (svc.labels[HEADLESS_LABEL] !== undefined) return `label ${HEADLESS_LABEL}`;
  return null;
}

export interface SkippedService {
  namespace: string;
  name: string;
  reason: string;
}

export interface BuildResult {
  model: NodeModel;
  /** Whether this node's own Node object was among the input. */
  nodeKnown: boolean;
  problems: Problem[];
  skipped: SkippedService[];
}

/** The node's own view of itself: from its Node object when there is one. */
export function nodeContext(nodeName: string, nodes: NodeInfo[]): NodeContext {
  const node = nodes.find((n) => n.name === nodeName);
  const labels = node?.labels ?? {};
  return {
    nodeName,
    zone: labels[ZONE_LABEL] || null,
    labels,
    nodeIPs: (node?.addresses ?? []).map((a) => a.text),
  };
}

/** One family's ranges of the given ServiceCIDRs: canonical, sorted, each once. */
export function familyCIDRs(serviceCIDRs: Iterable<ServiceCIDRInfo>, family: IPFamily): string[] {
  const out = new Set<string>();
  for (const sc of serviceCIDRs) for (const c of sc.cidrs) if (c.family === family) out.add(c.text);
  return [...out].sort();
}

function validateAll<T>(raw: unknown[], check: (o: unknown) => { ok: true; value: T } | { ok: false; problem: Problem }, problems: Problem[]): T[] {
  const out: T[] = [];
  for (const o of raw) {
    const r = check(o);
    if (r.ok) out.push(r.value);
    else problems.push(r.problem);
  }
  return out;
}

/**
 * All endpoints of one service port in one family, merged across slices: ports are
 * mapped by name per slice (so a named targetPort may differ per endpoint), and an
 * IP:PORT seen twice is kept once, preferring the copy on this node.
 */
function mergeEndpoints(
  slices: EndpointSliceInfo[],
  portName: string,
  protocol: ServicePort['protocol'],
  nodeName: string,
): Endpoint[] {
  const byAddress = new Map<string, Endpoint>();
  for (const slice of slices) {
    const sp = slice.ports.find((p) => p.name === portName && p.protocol === protocol);
    if (!sp) continue;
    for (const e of slice.endpoints) {
      const address = flat(joinHostPort(e.ip, sp.port));
      const isLocal = e.nodeName === nodeName;
      const existing = byAddress.get(address);
      if (existing && (existing.isLocal || !isLocal)) continue;
      byAddress.set(address, {
        ip: e.ip,
        port: sp.port,
        address,
        nodeName: e.nodeName,
        zone: e.zone,
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        zoneHints: e.zoneHints,
        nodeHints: e.nodeHints,
        isLocal,
      });
    }
  }
  return [...byAddress.values()].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

function servicePorts(svc: ServiceInfo, family: IPFamily, slices: EndpointSliceInfo[], node: NodeContext): ServicePort[] {
  const clusterIP = svc.clusterIPs.find((ip) => ip.family === family);
  if (!clusterIP) return [];
  const ofFamily = <T extends { family: IPFamily; text: string }>(xs: T[]) =>
    [...new Set(xs.filter((x) => x.family === family).map((x) => x.text))];
  const externallyAccessible = (nodePort: number, lbIPs: string[], extIPs: string[]) =>
    nodePort !== 0 || lbIPs.length > 0 || extIPs.length > 0;

  return svc.ports.map((p) => {
    const endpoints = mergeEndpoints(slices, p.name, p.protocol, node.nodeName);
    const externalIPs = ofFamily(svc.externalIPs);
    const loadBalancerIPs = ofFamily(svc.loadBalancerIPs);
    const external = externallyAccessible(p.nodePort, loadBalancerIPs, externalIPs);
    const externalTrafficPolicy = external ? svc.externalTrafficPolicy : 'Cluster';
    return {
      name: flat(p.name ? `${svc.namespace}/${svc.name}:${p.name}` : `${svc.namespace}/${svc.name}`),
      namespace: svc.namespace,
      serviceName: svc.name,
      portName: p.name,
      protocol: p.protocol,
      family,
      clusterIP: clusterIP.text,
      port: p.port,
      nodePort: p.nodePort,
      externalIPs,
      loadBalancerIPs,
      loadBalancerSourceRanges: loadBalancerIPs.length > 0 ? ofFamily(svc.loadBalancerSourceRanges) : [],
      externalTrafficPolicy,
      internalTrafficPolicy: svc.internalTrafficPolicy,
      sessionAffinity: svc.affinityTimeoutSeconds === null ? null : { timeoutSeconds: svc.affinityTimeoutSeconds },
      healthCheckNodePort: externalTrafficPolicy === 'Local' ? svc.healthCheckNodePort : 0,
      endpoints,
      cluster: clusterEndpoints(endpoints, node),
      local: localEndpoints(endpoints),
    };
  });
}

/**
 * Every service port of one valid, proxied Service, both families, from its slices.
 * The unit of incremental work: an agent rebuilds only the Services whose objects changed.
 */
export function buildServicePorts(svc: ServiceInfo, slices: EndpointSliceInfo[], node: NodeContext): ServicePort[] {
  const ordered = [...slices].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return FAMILIES.flatMap((family) =>
    servicePorts(
      svc,
      family,
      ordered.filter((s) => s.addressType === family),
      node,
    ),
  );
}

/** Model order: by service port name, then protocol. */
export function compareServicePorts(a: ServicePort, b: ServicePort): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0;
}

export function buildNodeModel(objects: ClusterObjects, nodeName: string): BuildResult {
  const problems: Problem[] = [];
  const skipped: SkippedService[] = [];
  const services = validateAll(objects.services, validateService, problems);
  const slices = validateAll(objects.endpointSlices, validateEndpointSlice, problems).filter(
    (s): s is EndpointSliceInfo => s !== null,
  );
  const nodes = validateAll(objects.nodes, validateNode, problems);
  const node = nodeContext(nodeName, nodes);
  const serviceCIDRs = validateAll(objects.serviceCIDRs ?? [], validateServiceCIDR, problems);

  const slicesByService = new Map<string, EndpointSliceInfo[]>();
  for (const s of slices) {
    const key = `${s.namespace}/${s.serviceName}`;
    const group = slicesByService.get(key) ?? [];
    group.push(s);
    slicesByService.set(key, group);
  }

  const families = Object.fromEntries(FAMILIES.map((f) => [f, { family: f, servicePorts: [] as ServicePort[], serviceCIDRs: familyCIDRs(serviceCIDRs, f) }])) as Record<
    IPFamily,
    FamilyModel
  >;
  const seen = new Set<string>();
  for (const svc of services) {
    const key = `${svc.namespace}/${svc.name}`;
    if (seen.has(key)) {
      problems.push({ kind: 'Service', namespace: svc.namespace, name: svc.name, reason: 'duplicate Service; the first one is used' });
      continue;
    }
    seen.add(key);
    const reason = skipReason(svc);
    if (reason) {
      skipped.push({ namespace: svc.namespace, name: svc.name, reason });
      continue;
    }
    for (const sp of buildServicePorts(svc, slicesByService.get(key) ?? [], node)) families[sp.family].servicePorts.push(sp);
  }
  for (const f of FAMILIES) families[f].servicePorts.sort(compareServicePorts);
  return { model: { node, families }, nodeKnown: nodes.some((n) => n.name === nodeName), problems, skipped };
}
