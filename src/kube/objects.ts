/**
 * The cluster objects the proxy reads, after validation: only the fields it uses, with
 * IPs parsed and defaults applied. Raw API objects come in as `unknown` and pass through
 * `validate.ts` before anything else sees them.
 */
import type { ParsedCIDR, ParsedIP, IPFamily } from '../net/ip.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const SOURCE_RANGES_ANNOTATION = 'service.beta.kubernetes.io/load-balancer-source-ranges';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type TrafficPolicy = 'Cluster' | 'Local';

/** An object that could not be used, and why. The rest of the cluster still renders. */
export interface Problem {
  kind: string;
  namespace: string;
  name: string;
  reason: string;
}

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';

export interface ServicePortSpec {
  name: string;
  protocol: Protocol;
  port: number;
  nodePort: number;
}

export interface ServiceInfo {
  namespace: string;
  name: string;
  type: ServiceType;
  labels: Record<string, string>;
  /** Empty for headless services. */
  clusterIPs: ParsedIP[];
  headless: boolean;
  ports: ServicePortSpec[];
  externalIPs: ParsedIP[];
  /** Ingress IPs whose ipMode is VIP (the default); Proxy-mode IPs are the LB's business. */
  loadBalancerIPs: ParsedIP[];
  loadBalancerSourceRanges: ParsedCIDR[];
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  /** Seconds of ClientIP affinity, or null for None. */
  affinityTimeoutSeconds: number | null;
  healthCheckNodePort: number;
}

export interface SlicePort {
  name: string;
  protocol: Protocol;
  port: number;
}

export interface SliceEndpoint {
  /** Canonical text: 100,000 endpoints need no parsed bytes kept around. */
  ip: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string | null;
  zone: string | null;
  zoneHints: string[];
  nodeHints: string[];
}

export interface EndpointSliceInfo {
  namespace: string;
  name: string;
  serviceName: string;
  addressType: IPFamily;
  ports: SlicePort[];
  endpoints: SliceEndpoint[];
}

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  /** InternalIPs, then ExternalIPs: the first of a family is the node's primary address. */
  addresses: ParsedIP[];
}

/** A ServiceCIDR (networking.k8s.io/v1): address ranges the cluster allocates cluster IPs from. */
export interface ServiceCIDRInfo {
  name: string;
  /** At most one per family. */
  cidrs: ParsedCIDR[];
}

/** Raw API objects grouped by kind, as read from a file or an informer cache. */
export interface ClusterObjects {
  services: unknown[];
  endpointSlices: unknown[];
  nodes: unknown[];
  /** ServiceCIDRs, when the input has them. */
  serviceCIDRs?: unknown[];
  /** Pods, when the input has them: only to name a trace's source. */
  pods?: unknown[];
}

/** A JSON object: what every API object and most of its fields must be before anything reads them. */
export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
