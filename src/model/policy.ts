/**
 * Traffic-policy facts about a service port that every proxy mode needs, derived once
 * from the model so the modes agree on which endpoints serve which traffic.
 */
import type { Endpoint, ServicePort } from './types.js';

export function externallyAccessible(sp: ServicePort): boolean {
  return sp.nodePort !== 0 || sp.loadBalancerIPs.length > 0 || sp.externalIPs.length > 0;
}

export interface PolicyView {
  externallyAccessible: boolean;
  /** Endpoints reached with Cluster policy; empty when no traffic uses that policy. */
  clusterEndpoints: Endpoint[];
  /** Endpoints reached with Local policy; empty when no traffic uses that policy. */
  localEndpoints: Endpoint[];
  /** Union of the two, sorted by address: every endpoint this node may DNAT to. */
  reachable: Endpoint[];
  /**
   * Whether any node has a usable endpoint (ready, or serving and terminating). Decides
   * between "no endpoints" (REJECT) and "no local endpoints" (DROP).
   */
  hasAnyEndpoints: boolean;
  /** Whether traffic to the cluster IP has somewhere to go. */
  hasInternalEndpoints: boolean;
  /** Whether external traffic from outside the cluster has somewhere to go. */
  hasExternalEndpoints: boolean;
}

/** Union of two address-sorted endpoint lists, still sorted. */
function union(a: Endpoint[], b: Endpoint[]): Endpoint[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  const out: Endpoint[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = a[i];
    const y = b[j];
    if (y === undefined || (x !== undefined && x.address < y.address)) {
      out.push(x!);
      i++;
    } else if (x === undefined || y.address < x.address) {
      out.push(y);
      j++;
    } else {
      out.push(x);
      i++;
      j++;
    }
  }
  return out;
}

export function policyView(sp: ServicePort): PolicyView {
  const external = externallyAccessible(sp);
  const internalLocal = sp.internalTrafficPolicy === 'Local';
  const externalLocal = external && sp.externalTrafficPolicy === 'Local';
  // Cluster endpoints are needed even under an external Local policy: traffic from pods
  // and from the node itself to external addresses is short-circuited to them.
  const usesCluster = !internalLocal || external;
  const usesLocal = internalLocal || externalLocal;
  const clusterEndpoints = usesCluster ? sp.cluster.endpoints : [];
  const localEndpoints = usesLocal ? sp.local.endpoints : [];
  const reachable = union(clusterEndpoints, localEndpoints);
  const hasEndpoints = sp.endpoints.some((e) => e.ready || (e.serving && e.terminating));
  return {
    externallyAccessible: external,
    clusterEndpoints,
    localEndpoints,
    reachable,
    hasAnyEndpoints: hasEndpoints,
    hasInternalEndpoints: hasEndpoints && (internalLocal ? localEndpoints.length > 0 : clusterEndpoints.length > 0),
    hasExternalEndpoints: hasEndpoints && (externalLocal ? localEndpoints.length > 0 : clusterEndpoints.length > 0),
  };
}
