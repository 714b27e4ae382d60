/** Small builders for the API objects e2e tests create: readable test bodies, real shapes. */
import type { Manifest } from './apiserver.js';

export interface PortSpec {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  nodePort?: number;
}

export function service(namespace: string, name: string, clusterIP: string, ports: PortSpec[], spec: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace, name },
    spec: { type: 'ClusterIP', clusterIP, clusterIPs: [clusterIP], ports: ports.map((p) => ({ protocol: 'TCP', ...p })), ...spec },
    ...extra,
  };
}

export type IPFamily = 'IPv4' | 'IPv6';
export type IPFamilyPolicy = 'SingleStack' | 'PreferDualStack' | 'RequireDualStack';

/** An address's family, as the API server decides a cluster IP's (a colon means IPv6). */
export function familyOf(ip: string): IPFamily {
  return ip.includes(':') ? 'IPv6' : 'IPv4';
}

/**
 * A single-stack IPv6 Service, as the API server stores one: `ipFamilies: [IPv6]`,
 * `ipFamilyPolicy: SingleStack`, the one IPv6 cluster IP in `clusterIP` and `clusterIPs`.
 */
export function service6(namespace: string, name: string, clusterIP6: string, ports: PortSpec[], spec: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Manifest {
  if (familyOf(clusterIP6) !== 'IPv6') throw new Error(`service6: ${clusterIP6} is not IPv6`);
  return service(namespace, name, clusterIP6, ports, { ipFamilyPolicy: 'SingleStack', ipFamilies: ['IPv6'], ...spec }, extra);
}

/**
 * A dual-stack Service: one cluster IP per family, the first one primary (`clusterIP`),
 * `ipFamilies` in the same order, `ipFamilyPolicy` PreferDualStack unless told otherwise.
 */
export function dualStackService(
  namespace: string,
  name: string,
  clusterIPs: [string, string],
  ports: PortSpec[],
  spec: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
  policy: Exclude<IPFamilyPolicy, 'SingleStack'> = 'PreferDualStack',
): Manifest {
  const families = clusterIPs.map(familyOf);
  if (families[0] === families[1]) throw new Error(`dualStackService: ${clusterIPs.join(', ')} are of one family`);
  return service(namespace, name, clusterIPs[0], ports, { clusterIPs: [...clusterIPs], ipFamilyPolicy: policy, ipFamilies: families, ...spec }, extra);
}

export interface EndpointSpec {
  ip: string;
  nodeName: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  zone?: string;
}

/**
 * An EndpointSlice; `addressType` is IPv6 when told so, or when its endpoints are IPv6
 * addresses, IPv4 otherwise (a slice holds one family, as the validator requires).
 */
export function endpointSlice(
  namespace: string,
  serviceName: string,
  sliceName: string,
  ports: { name?: string; port: number; protocol?: 'TCP' | 'UDP' | 'SCTP' }[],
  endpoints: EndpointSpec[],
  addressType: IPFamily = endpoints.length > 0 && endpoints.every((e) => familyOf(e.ip) === 'IPv6') ? 'IPv6' : 'IPv4',
): Manifest {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace, name: sliceName, labels: { 'kubernetes.io/service-name': serviceName } },
    addressType,
    ports: ports.map((p) => ({ protocol: 'TCP', name: p.name ?? '', ...p })),
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      nodeName: e.nodeName,
      ...(e.zone ? { zone: e.zone } : {}),
      conditions: { ready: e.ready ?? true, serving: e.serving ?? e.ready ?? true, terminating: e.terminating ?? false },
    })),
  };
}

/** An EndpointSlice of addressType IPv6 (also when it has no endpoints yet). */
export function endpointSlice6(
  namespace: string,
  serviceName: string,
  sliceName: string,
  ports: { name?: string; port: number; protocol?: 'TCP' | 'UDP' | 'SCTP' }[],
  endpoints: EndpointSpec[],
): Manifest {
  return endpointSlice(namespace, serviceName, sliceName, ports, endpoints, 'IPv6');
}

/** A Node with one InternalIP, or one per family for a dual-stack node (`[ipv4, ipv6]`, primary first). */
export function node(name: string, ip: string | string[], zone = 'zone-a'): Manifest {
  const ips = typeof ip === 'string' ? [ip] : ip;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, 'topology.kubernetes.io/zone': zone } },
    status: { addresses: [...ips.map((address) => ({ type: 'InternalIP', address })), { type: 'Hostname', address: name }] },
  };
}

/** Polls until `check` returns a value that is not undefined, or fails with the last reason. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
