/**
 * The agent's view of the cluster: validated objects as the informers deliver them, and
 * the per-node model kept up to date one Service at a time. No I/O: the informers call
 * in, the sync loop reads out.
 */
import type { EndpointSliceInfo, NodeInfo, ServiceCIDRInfo, ServiceInfo } from '../kube/objects.js';
import { validateEndpointSlice, validateNode, validateService, validateServiceCIDR } from '../kube/validate.js';
import { buildServicePorts, compareServicePorts, familyCIDRs, nodeContext, skipReason } from '../model/build.js';
import type { FamilyModel, IPFamily, NodeContext, Problem, ServicePort } from '../model/types.js';

export interface ObjectRef {
  namespace?: string;
  name?: string;
}

export interface StateEvents {
  problem(p: Problem): void;
}

const key = (namespace: string, name: string) => `${namespace}/${name}`;

function refOf(obj: unknown): { namespace: string; name: string } | null {
  const meta = (obj as { metadata?: ObjectRef } | null)?.metadata;
  if (!meta || typeof meta.name !== 'string') return null;
  return { namespace: typeof meta.namespace === 'string' ? meta.namespace : 'default', name: meta.name };
}

/** What changed since the last `take()`: service keys (ns/name), or everything. */
export interface Changes {
  all: boolean;
  services: Set<string>;
  /** The service ports the changed services had before, to find what stopped being served. */
  previous: ServicePort[];
  /**
   * When each change was first seen (ms since epoch): per service, and for everything
   * (start-up, a Node change) under `all`. Health and network programming latency follow
   * each change from here to the sync that programs it.
   */
  seenAt: Map<string, number>;
}

/** Key of `Changes.seenAt` for a change to everything. */
export const ALL = '*';

/** The oldest time in `seenAt`, or null. */
export function oldestChange(seenAt: Map<string, number>): number | null {
  let oldest: number | null = null;
  for (const t of seenAt.values()) if (oldest === null || t < oldest) oldest = t;
  return oldest;
}

const portKey = (sp: ServicePort) => `${sp.family}|${sp.name}|${sp.protocol}`;

/**
 * Changes not yet programmed (`older`, from a failed sync) with those taken since. A
 * service port's `previous` stays the oldest: it is what the kernel still holds.
 */
export function mergeChanges(older: Changes, newer: Changes): Changes {
  const seen = new Set(older.previous.map(portKey));
  const seenAt = new Map(newer.seenAt);
  for (const [k, t] of older.seenAt) seenAt.set(k, Math.min(t, seenAt.get(k) ?? t));
  return {
    all: older.all || newer.all,
    services: new Set([...older.services, ...newer.services]),
    previous: [...older.previous, ...newer.previous.filter((sp) => !seen.has(portKey(sp)))],
    seenAt,
  };
}

export class ClusterState {
  private readonly services = new Map<string, ServiceInfo>();
  /**
   * Slices as the informer holds them (shared, not copied), with the Service they belong
   * to. They are validated again when their Service is rebuilt: keeping validated copies of
   * 100,000 endpoints would double what the informer cache already costs.
   */
  private readonly slices = new Map<string, { raw: unknown; serviceKey: string }>();
  private readonly slicesByService = new Map<string, Set<string>>();
  private node: NodeContext;
  private readonly serviceCIDRs = new Map<string, ServiceCIDRInfo>();
  /** Each family's service CIDRs as of the last take(). */
  private takenCIDRs: Record<IPFamily, string[]> = { IPv4: [], IPv6: [] };
  private readonly ports = new Map<string, ServicePort[]>();
  /** Services changed since the last take(), with when each first changed. */
  private dirty = new Map<string, number>();
  /** When everything became dirty (start-up, a Node change), or null. */
  private allDirtySince: number | null;

  constructor(
    readonly nodeName: string,
    private readonly events: StateEvents,
    private readonly now: () => number = Date.now,
  ) {
    this.node = nodeContext(nodeName, []);
    // Everything is pending until the first sync: a proxy that never gets there is unhealthy.
    this.allDirtySince = now();
  }

  /** When the oldest change not yet taken arrived (ms since epoch), or null. */
  get pendingSince(): number | null {
    const oldest = oldestChange(this.dirty);
    return this.allDirtySince === null ? oldest : Math.min(this.allDirtySince, oldest ?? Infinity);
  }

  private touch(serviceKey: string): void {
    if (!this.dirty.has(serviceKey)) this.dirty.set(serviceKey, this.now());
  }

  upsertService(obj: unknown): void {
    const ref = refOf(obj);
    const r = validateService(obj);
    if (!r.ok) {
      this.events.problem(r.problem);
      // A Service that turned invalid stops being proxied rather than keeping stale rules.
      if (ref) this.deleteService(obj);
      return;
    }
    const k = key(r.value.namespace, r.value.name);
    this.services.set(k, r.value);
    this.touch(k);
  }

  deleteService(obj: unknown): void {
    const ref = refOf(obj);
    if (!ref) return;
    const k = key(ref.namespace, ref.name);
    this.services.delete(k);
    this.touch(k);
  }

  upsertSlice(obj: unknown): void {
    const ref = refOf(obj);
    const r = validateEndpointSlice(obj);
    if (!r.ok) {
      this.events.problem(r.problem);
      if (ref) this.deleteSlice(obj);
      return;
    }
    if (r.value === null) return;
    const sliceKey = key(r.value.namespace, r.value.name);
    const previous = this.slices.get(sliceKey);
    if (previous) this.unindexSlice(sliceKey, previous.serviceKey);
    const svcKey = key(r.value.namespace, r.value.serviceName);
    this.slices.set(sliceKey, { raw: obj, serviceKey: svcKey });
    let set = this.slicesByService.get(svcKey);
    if (!set) this.slicesByService.set(svcKey, (set = new Set()));
    set.add(sliceKey);
    this.touch(svcKey);
  }

  deleteSlice(obj: unknown): void {
    const ref = refOf(obj);
    if (!ref) return;
    const sliceKey = key(ref.namespace, ref.name);
    const previous = this.slices.get(sliceKey);
    if (!previous) return;
    this.slices.delete(sliceKey);
    this.unindexSlice(sliceKey, previous.serviceKey);
  }

  private unindexSlice(sliceKey: string, svcKey: string): void {
    const set = this.slicesByService.get(svcKey);
    set?.delete(sliceKey);
    if (set?.size === 0) this.slicesByService.delete(svcKey);
    this.touch(svcKey);
  }

  /** Node changes can move topology and node addresses for every service: all are rebuilt. */
  upsertNode(obj: unknown): void {
    const r = validateNode(obj);
    if (!r.ok) {
      this.events.problem(r.problem);
      return;
    }
    if (r.value.name !== this.nodeName) return;
    const next = nodeContext(this.nodeName, [r.value as NodeInfo]);
    if (JSON.stringify(next) === JSON.stringify(this.node)) return;
    this.node = next;
    this.allDirtySince ??= this.now();
  }

  /** The service CIDRs feed every family's model as a whole: a change rebuilds all. */
  upsertServiceCIDR(obj: unknown): void {
    const r = validateServiceCIDR(obj);
    if (!r.ok) {
      this.events.problem(r.problem);
      // A ServiceCIDR that turned invalid no longer counts, rather than keeping a stale range.
      this.deleteServiceCIDR(obj);
      return;
    }
    this.setServiceCIDRs(() => this.serviceCIDRs.set(r.value.name, r.value));
  }

  deleteServiceCIDR(obj: unknown): void {
    const ref = refOf(obj);
    if (ref) this.setServiceCIDRs(() => this.serviceCIDRs.delete(ref.name));
  }

  private setServiceCIDRs(change: () => void): void {
    const before = this.currentCIDRs();
    change();
    if (JSON.stringify(before) !== JSON.stringify(this.currentCIDRs())) this.allDirtySince ??= this.now();
  }

  private currentCIDRs(): Record<IPFamily, string[]> {
    const all = [...this.serviceCIDRs.values()];
    return { IPv4: familyCIDRs(all, 'IPv4'), IPv6: familyCIDRs(all, 'IPv6') };
  }

  get nodeContext(): NodeContext {
    return this.node;
  }

  /**
   * Rebuilds the model for what changed and returns which services that was. The model
   * objects of unchanged services are kept as they are (renderers memoize on them).
   */
  take(): Changes {
    const all = this.allDirtySince !== null;
    const seenAt = new Map(this.dirty);
    if (this.allDirtySince !== null) seenAt.set(ALL, this.allDirtySince);
    const changed = all ? new Set([...this.ports.keys(), ...this.services.keys()]) : new Set(this.dirty.keys());
    if (all) this.takenCIDRs = this.currentCIDRs();
    const previous: ServicePort[] = [];
    for (const k of changed) {
      previous.push(...(this.ports.get(k) ?? []));
      const svc = this.services.get(k);
      if (!svc || skipReason(svc) !== null) {
        this.ports.delete(k);
        continue;
      }
      const slices: EndpointSliceInfo[] = [];
      for (const s of this.slicesByService.get(k) ?? []) {
        const r = validateEndpointSlice(this.slices.get(s)!.raw);
        // Valid when stored (invalid ones are never kept), and the informer never mutates its objects.
        if (r.ok && r.value) slices.push(r.value);
      }
      this.ports.set(k, buildServicePorts(svc, slices, this.node));
    }
    this.dirty = new Map();
    this.allDirtySince = null;
    return { all, services: changed, previous, seenAt };
  }

  /** Every service port, both families, in no particular order: for whole-model scans. */
  *allServicePorts(): Iterable<ServicePort> {
    for (const sps of this.ports.values()) yield* sps;
  }

  /** Service ports of the given services (or all), one family, in model order. */
  familyModel(family: IPFamily, services?: Iterable<string>): FamilyModel {
    const out: ServicePort[] = [];
    const keys = services ?? this.ports.keys();
    for (const k of keys) for (const sp of this.ports.get(k) ?? []) if (sp.family === family) out.push(sp);
    out.sort(compareServicePorts);
    return { family, servicePorts: out, serviceCIDRs: this.takenCIDRs[family] };
  }

  /** Endpoints known in a family: above 1,000 the renderer drops per-endpoint comments. */
  endpointCount(family: IPFamily): number {
    let n = 0;
    for (const sps of this.ports.values()) for (const sp of sps) if (sp.family === family) n += sp.endpoints.length;
    return n;
  }
}
