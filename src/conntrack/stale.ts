/**
 * Which conntrack entries go stale when service ports change. UDP (and SCTP, as upstream
 * cleared it too) has no connection to end: a client that keeps its source port keeps
 * hitting the entry conntrack made for its first packet, to a backend that is gone, or to
 * nothing at all. Those entries must be deleted after the rules change. Pure: old and new
 * service ports in, deletions out; a cleaner (cleaner.ts) matches them against the table.
 *
 * Two kinds, as upstream's reconciler finds them (pkg/proxy/conntrack/cleanup.go: an entry
 * to a service address or node port whose reply source is not a serving endpoint):
 * - an endpoint removed: entries to each address (and the node port) DNATed to it, whose
 *   reply source is that endpoint. One that still serves while terminating is not removed:
 *   new flows no longer go to it, and its existing ones drain, as upstream lets them;
 * - a service port that had no endpoint and now has some (or was not programmed yet, as
 *   after a restart): entries to it that go to none of its endpoints (not DNATed at all:
 *   they met no rule, or a REJECT), so that live flows to its endpoints are kept.
 * An endpoint that turns ready while others already served adds no stale entry: nothing
 * that reached the others is wrong.
 */
import { policyView } from '../model/policy.js';
import type { IPFamily, ServicePort } from '../model/types.js';

/** The transport protocols whose entries outlive a change of backends. */
export type ConntrackProtocol = 'UDP' | 'SCTP';
export const CONNTRACK_PROTOCOLS: readonly ConntrackProtocol[] = ['UDP', 'SCTP'];

/**
 * One set of entries to delete: by protocol, original destination (an address and port,
 * or a node port on any address), and reply source. Never the whole table: a port is
 * always named, and a `keep` deletion exists only for a service port that has endpoints.
 */
export interface ConntrackDeletion {
  family: IPFamily;
  protocol: ConntrackProtocol;
  /** A cluster, external or load-balancer IP; absent for a node port (any node address). */
  origDst?: string;
  /** The service port with `origDst`; the node port without. */
  origPortDst: number;
  /** Only entries DNATed to this endpoint (their reply source is it); null: see `keep`. */
  dnatTo: string | null;
  /** With `dnatTo` null: every entry except those DNATed to one of these (the current endpoints). */
  keep?: string[];
}

function key(sp: ServicePort): string {
  return `${sp.family}|${sp.name}|${sp.protocol}`;
}

/** Destinations a service port answers on: its cluster, external and load-balancer IPs. */
function addresses(sp: ServicePort): string[] {
  return [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs];
}

/** Endpoints whose entries are live: those the rules send to, and any still serving. */
function alive(sp: ServicePort): string[] {
  return [...new Set([...policyView(sp).reachable, ...sp.endpoints.filter((e) => e.serving)].map((e) => e.ip))].sort();
}

/**
 * Deletions that failed, made safe to try again now: endpoints may have come back (or
 * their IPs been reused) since. One DNATed to an endpoint that is alive now is dropped, and
 * one that spares a service's endpoints spares every endpoint alive now as well.
 */
export function stillStale(retries: ConntrackDeletion[], now: Iterable<ServicePort>): ConntrackDeletion[] {
  // Nearly every sync has nothing to retry: it must not scan every service port for that.
  if (retries.length === 0) return [];
  const live = new Set<string>();
  for (const sp of now) for (const ip of alive(sp)) live.add(ip);
  return retries.flatMap((d) => {
    if (d.dnatTo !== null) return live.has(d.dnatTo) ? [] : [d];
    return [{ ...d, keep: [...new Set([...(d.keep ?? []), ...live])].sort() }];
  });
}

function tracked(sp: ServicePort): sp is ServicePort & { protocol: ConntrackProtocol } {
  return (CONNTRACK_PROTOCOLS as readonly string[]).includes(sp.protocol);
}

/** Removes repeats (same filter), keeping the first; `keep` lists compare sorted. */
export function uniqueDeletions(deletions: Iterable<ConntrackDeletion>): ConntrackDeletion[] {
  const seen = new Set<string>();
  const out: ConntrackDeletion[] = [];
  for (const d of deletions) {
    const k = deletionKey(d);
    if (!seen.has(k)) (seen.add(k), out.push(d));
  }
  return out;
}

export function deletionKey(d: ConntrackDeletion): string {
  return JSON.stringify([d.family, d.protocol, d.origDst ?? null, d.origPortDst, d.dnatTo, d.dnatTo === null ? [...(d.keep ?? [])].sort() : null]);
}

export function staleFlows(before: ServicePort[], after: ServicePort[]): ConntrackDeletion[] {
  const now = new Map(after.filter(tracked).map((sp) => [key(sp), sp]));
  const out: ConntrackDeletion[] = [];
  for (const old of before) {
    if (!tracked(old)) continue;
    const next = now.get(key(old));
    const kept = new Set(next ? alive(next) : []);
    const { family, protocol } = old;
    for (const ip of alive(old)) {
      if (kept.has(ip)) continue;
      for (const dst of addresses(old)) out.push({ family, protocol, origDst: dst, origPortDst: old.port, dnatTo: ip });
      if (old.nodePort !== 0) out.push({ family, protocol, origPortDst: old.nodePort, dnatTo: ip });
    }
  }
  // Flows that met "no endpoints" (or nothing yet) stay stuck there once endpoints appear.
  const had = new Map(before.filter(tracked).map((sp) => [key(sp), policyView(sp).reachable.length > 0]));
  for (const sp of now.values()) {
    if (had.get(key(sp)) || policyView(sp).reachable.length === 0) continue;
    const { family, protocol } = sp;
    const keep = alive(sp);
    for (const ip of addresses(sp)) out.push({ family, protocol, origDst: ip, origPortDst: sp.port, dnatTo: null, keep });
    if (sp.nodePort !== 0) out.push({ family, protocol, origPortDst: sp.nodePort, dnatTo: null, keep });
  }
  return uniqueDeletions(out);
}
