/**
 * The per-node service model: the project's vocabulary. Built from cluster objects by
 * `build.ts`, consumed by every renderer. Everything here is already validated and
 * canonical (IPs re-printed from bytes, ports integers in range), so renderers never
 * need to re-check input.
 */
import type { Problem, Protocol, TrafficPolicy } from '../kube/objects.js';
import type { IPFamily } from '../net/ip.js';

export type { IPFamily, Problem, Protocol, TrafficPolicy };

/** One backend address of a service port, merged from all of the Service's slices. */
export interface Endpoint {
  ip: string;
  port: number;
  /** `IP:PORT` (`[IP]:PORT` for IPv6): the sort key and the DNAT target. */
  address: string;
  nodeName: string | null;
  zone: string | null;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  zoneHints: string[];
  nodeHints: string[];
  /** Runs on the node this model was built for. */
  isLocal: boolean;
}

/** Why an endpoint set holds what it holds; kept for `--explain` and trace. */
export type EndpointSelection =
  | 'ready'
  | 'ready, zone hints'
  | 'ready, node hints'
  | 'serving-terminating fallback'
  | 'none';

export interface EndpointSet {
  endpoints: Endpoint[];
  selection: EndpointSelection;
}

export interface SessionAffinity {
  timeoutSeconds: number;
}

/** A Service port in one IP family: the unit every proxy mode programs. */
export interface ServicePort {
  /** `NS/NAME:PORTNAME`, or `NS/NAME` when the port is unnamed. */
  name: string;
  namespace: string;
  serviceName: string;
  portName: string;
  protocol: Protocol;
  family: IPFamily;
  clusterIP: string;
  port: number;
  /** 0 when the service has no node port. */
  nodePort: number;
  externalIPs: string[];
  loadBalancerIPs: string[];
  /** Canonical CIDRs of this family; empty means no source filtering. */
  loadBalancerSourceRanges: string[];
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  sessionAffinity: SessionAffinity | null;
  /** 0 unless externalTrafficPolicy is Local on a load balancer. */
  healthCheckNodePort: number;
  /** The Service's userspace max-connection-age annotation as written (unchecked), or null. */
  maxConnectionAge?: string | null;
  /** Every known endpoint of this port in this family, sorted by address. */
  endpoints: Endpoint[];
  /** Endpoints for Cluster-policy traffic (topology and terminating fallback applied). */
  cluster: EndpointSet;
  /** Endpoints on this node (terminating fallback applied, topology ignored). */
  local: EndpointSet;
}

/** What the proxy knows of the node it runs on. */
export interface NodeContext {
  nodeName: string;
  zone: string | null;
  labels: Record<string, string>;
  /** The node's own addresses, used for `--nodeport-addresses` and LB firewalls. */
  nodeIPs: string[];
}

/** The services one node programs for one IP family, sorted by name then protocol. */
export interface FamilyModel {
  family: IPFamily;
  servicePorts: ServicePort[];
  /**
   * This family's service CIDRs, from the cluster's ServiceCIDR objects (canonical,
   * sorted). Modes that drop traffic to unallocated service addresses read them.
   */
  serviceCIDRs: string[];
}

export interface NodeModel {
  node: NodeContext;
  families: Record<IPFamily, FamilyModel>;
}

