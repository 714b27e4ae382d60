/**
 * Which conntrack entries go stale when service ports change. UDP has no connection to
 * end: a client that keeps its source port keeps hitting the entry conntrack made for its
 * first packet, to a backend that is gone, or to nothing at all. Those entries must be
 * deleted after the rules change. Pure: old and new service ports in, deletions out.
 */
import { policyView } from '../model/policy.js';
import type { IPFamily, ServicePort } from '../model/types.js';

/** One `conntrack -D` (UDP): by original destination IP or port, optionally only flows DNATed to one endpoint. */
export type ConntrackDeletion =
  | { family: IPFamily; origDst: string; dnatTo: string | null }
  | { family: IPFamily; origPortDst: number; dnatTo: string | null };

function key(sp: ServicePort): string {
  return `${sp.family}|${sp.name}|${sp.protocol}`;
}

/** Destinations a service port answers on: its cluster, external and load-balancer IPs. */
function addresses(sp: ServicePort): string[] {
  return [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs];
}

export function staleUdpFlows(before: ServicePort[], after: ServicePort[]): ConntrackDeletion[] {
  const now = new Map(after.filter((sp) => sp.protocol === 'UDP').map((sp) => [key(sp), sp]));
  const out: ConntrackDeletion[] = [];
  const seen = new Set<string>();
  const add = (d: ConntrackDeletion) => {
    const k = JSON.stringify(d);
    if (!seen.has(k)) (seen.add(k), out.push(d));
  };
  for (const old of before) {
    if (old.protocol !== 'UDP') continue;
    const next = now.get(key(old));
    const kept = new Set(next ? policyView(next).reachable.map((e) => e.ip) : []);
    for (const e of policyView(old).reachable) {
      if (kept.has(e.ip)) continue;
      for (const ip of addresses(old)) add({ family: old.family, origDst: ip, dnatTo: e.ip });
      if (old.nodePort !== 0) add({ family: old.family, origPortDst: old.nodePort, dnatTo: e.ip });
    }
  }
  // Flows that met "no endpoints" (or nothing yet) stay stuck there once endpoints appear.
  const had = new Map(before.filter((sp) => sp.protocol === 'UDP').map((sp) => [key(sp), policyView(sp).reachable.length > 0]));
  for (const sp of now.values()) {
    if (had.get(key(sp)) || policyView(sp).reachable.length === 0) continue;
    for (const ip of addresses(sp)) add({ family: sp.family, origDst: ip, dnatTo: null });
    if (sp.nodePort !== 0) add({ family: sp.family, origPortDst: sp.nodePort, dnatTo: null });
  }
  return out;
}
