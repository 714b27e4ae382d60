/**
 * The iptables sync: model -> rendered rules -> planned restores -> applier. Decides
 * between a full sync (at start, after a failure, when the fixed chains change, when
 * someone flushed our rules, and periodically) and a partial one (only the services that
 * changed).
 */
import type { Logger } from 'pino';
import { IptablesApplier } from './applier.js';
import type { IptablesVariant } from './variant.js';
import type { FamilyModel, IPFamily } from '../../model/types.js';
import { isLargeCluster, LARGE_CLUSTER_ENDPOINTS, renderIptables, type IptablesOptions, type IptablesRuleset } from './render.js';
import { appliedServices, fixedSignature, fullSyncSteps, partialSyncStep, renderedServices, type AppliedServices } from './plan.js';
import type { ClusterState } from '../../agent/state.js';
import { staleUdpFlows, type ConntrackDeletion } from '../../conntrack/stale.js';
import type { Metrics } from '../../agent/metrics.js';

export interface ProxierOptions {
  /** Deletes conntrack entries that the new rules made stale (UDP); returns failures. */
  deleteFlows: (deletions: ConntrackDeletion[]) => Promise<string[]>;
  render: Omit<IptablesOptions, 'largeClusterMode'>;
  /** Largest restore on the nf_tables backend (lines); see sync/plan.ts. */
  maxRestoreLines: number;
  fullSyncIntervalMs: number;
}

interface FamilyState {
  services: AppliedServices;
  /** Rendered service port keys per Service (ns/name). */
  byService: Map<string, string[]>;
  fixed: string;
  largeCluster: boolean;
}

/** Rendered service port keys per Service (ns/name); the ruleset renders the model in order. */
function portKeysByService(model: FamilyModel, rs: IptablesRuleset): Map<string, string[]> {
  const out = new Map<string, string[]>();
  model.servicePorts.forEach((sp, i) => {
    const k = `${sp.namespace}/${sp.serviceName}`;
    out.set(k, [...(out.get(k) ?? []), rs.services[i]!.key]);
  });
  return out;
}

export class IptablesProxier {
  private readonly applied = new Map<IPFamily, FamilyState>();
  private needFullSync = true;
  private lastFullSync = 0;
  private variant: IptablesVariant | null = null;

  constructor(
    private readonly state: ClusterState,
    private readonly appliers: Map<IPFamily, IptablesApplier>,
    private readonly opts: ProxierOptions,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** Forces the next sync to be a full one (e.g. the canary chain disappeared). */
  requireFullSync(reason: string): void {
    if (!this.needFullSync) this.log.warn({ reason }, 'full resync required');
    this.needFullSync = true;
  }

  /** One sync; false when it failed (the next one will be full). */
  async sync(): Promise<boolean> {
    const started = performance.now();
    const pendingSince = this.state.pendingSince;
    const changes = this.state.take();
    const reason = this.needFullSync
      ? 'required'
      : changes.all
        ? 'node changed'
        : Date.now() - this.lastFullSync > this.opts.fullSyncIntervalMs
          ? 'periodic'
          : null;
    const full = reason !== null;
    try {
      for (const [family, applier] of this.appliers) {
        if (full) await this.fullSync(family, applier);
        else await this.partialSync(family, applier, changes.services);
      }
    } catch (err) {
      this.metrics.restoreFailures.inc();
      if (!full) this.metrics.partialRestoreFailures.inc();
      this.needFullSync = true;
      this.log.error({ err: (err as Error).message, full }, 'sync failed; the next sync is a full one');
      return false;
    }
    if (full) {
      this.needFullSync = false;
      this.lastFullSync = Date.now();
    }
    // Only once the new rules are in place: a flow deleted earlier would be recreated stale.
    // Both sides restricted to the programmed families: a family this node does not program
    // would otherwise look like every one of its service ports had been removed.
    const programmed = (sp: { family: IPFamily }) => this.appliers.has(sp.family);
    const now = [...this.appliers.keys()].flatMap((f) => this.state.familyModel(f, changes.services).servicePorts);
    const failures = await this.opts.deleteFlows(staleUdpFlows(changes.previous.filter(programmed), now));
    for (const f of failures) this.log.warn({ err: f }, 'could not delete a stale conntrack entry');
    this.state.synced();
    const seconds = (performance.now() - started) / 1000;
    this.metrics.syncDuration.observe(seconds);
    (full ? this.metrics.fullSyncDuration : this.metrics.partialSyncDuration).observe(seconds);
    this.metrics.lastSync.setToCurrentTime();
    if (pendingSince !== null) this.metrics.networkProgramming.observe((Date.now() - pendingSince) / 1000);
    this.log.info({ full, reason: reason ?? undefined, services: full ? undefined : changes.services.size, ms: Math.round(seconds * 1000) }, 'synced proxy rules');
    return true;
  }

  private renderOptions(family: IPFamily): IptablesOptions {
    return { ...this.opts.render, largeClusterMode: this.state.endpointCount(family) > LARGE_CLUSTER_ENDPOINTS };
  }

  private async fullSync(family: IPFamily, applier: IptablesApplier): Promise<void> {
    this.variant ??= await applier.variant();
    const model = this.state.familyModel(family);
    const opts = this.renderOptions(family);
    const rs = renderIptables(model, this.state.nodeContext, opts);
    const existing = await applier.chains('nat');
    // Only the nf_tables backend pays more than linearly for big --noflush restores.
    const maxLines = this.variant === 'nf_tables' ? this.opts.maxRestoreLines : Infinity;
    const steps = fullSyncSteps(rs, existing, maxLines);
    for (const step of steps) await applier.restore(step);
    await applier.ensureJumps(rs.jumps);
    this.applied.set(family, {
      services: appliedServices(rs),
      byService: portKeysByService(model, rs),
      fixed: fixedSignature(rs),
      largeCluster: opts.largeClusterMode ?? isLargeCluster(model),
    });
    this.log.debug({ family, restores: steps.length, servicePorts: rs.services.length }, 'full sync applied');
  }

  private async partialSync(family: IPFamily, applier: IptablesApplier, services: Set<string>): Promise<void> {
    const prev = this.applied.get(family);
    const opts = this.renderOptions(family);
    if (!prev || prev.largeCluster !== opts.largeClusterMode) return this.fullSync(family, applier);
    const model = this.state.familyModel(family, services);
    const rs = renderIptables(model, this.state.nodeContext, opts);
    if (fixedSignature(rs) !== prev.fixed) return this.fullSync(family, applier);

    const rendered = renderedServices(rs);
    const next: AppliedServices = new Map(prev.services);
    const nextByService = portKeysByService(model, rs);
    const changedKeys = new Set<string>();
    for (const svc of services) {
      for (const key of prev.byService.get(svc) ?? []) changedKeys.add(key);
      for (const key of nextByService.get(svc) ?? []) changedKeys.add(key);
    }
    for (const key of changedKeys) {
      const r = rendered.get(key);
      if (r) next.set(key, { shared: r.shared, chains: r.chains });
      else next.delete(key);
    }
    const step = partialSyncStep(prev.services, rendered, changedKeys);
    if (step) await applier.restore(step);
    const byService = new Map(prev.byService);
    for (const svc of services) {
      const keys = nextByService.get(svc);
      if (keys) byService.set(svc, keys);
      else byService.delete(svc);
    }
    this.applied.set(family, { ...prev, services: next, byService });
  }
}
