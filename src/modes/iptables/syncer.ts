/**
 * The iptables sync: model -> rendered rules -> planned restores -> applier. Decides
 * between a full sync (at start, after a failure, when the fixed chains change, when
 * someone flushed our rules, and periodically) and a partial one (only the services that
 * changed).
 */
import type { Logger } from 'pino';
import type { FamilyModel, IPFamily } from '../../model/types.js';
import { fullSyncReason } from '../full-sync.js';
import type { ModelSource, SyncRequest, SyncResult, Syncer } from '../mode.js';
import type { IptablesApplier } from './applier.js';
import { appliedServices, fixedSignature, fullSyncSteps, partialSyncSteps, renderedServices, type AppliedServices, type RestoreStep } from './plan.js';
import { isLargeCluster, LARGE_CLUSTER_ENDPOINTS, renderIptables, type IptablesOptions } from './render.js';
import type { IptablesRuleset, JumpRule } from './ruleset.js';
import type { IptablesVariant } from './variant.js';

/** How often a long full sync says how far it got. */
const PROGRESS_INTERVAL_MS = 2_000;
/**
 * Restores run side by side where the plan allows: iptables-nft-restore spends about half
 * its time parsing in its own process, which a second one overlaps with the kernel's half
 * of the first (the kernel takes one transaction at a time).
 */
const CONCURRENT_RESTORES = 2;

/**
 * Runs `steps` in order, a run of concurrent ones up to CONCURRENT_RESTORES at a time. The
 * first failure stops new steps from starting; it is thrown once the running ones end.
 */
async function runSteps(steps: RestoreStep[], run: (step: RestoreStep) => Promise<void>): Promise<void> {
  for (let i = 0; i < steps.length; ) {
    let end = i + 1;
    if (steps[i]!.concurrent) while (end < steps.length && steps[end]!.concurrent) end++;
    const batch = steps.slice(i, end);
    let next = 0;
    let failed: { err: unknown } | null = null;
    const lane = async () => {
      while (!failed && next < batch.length) {
        const step = batch[next++]!;
        try {
          await run(step);
        } catch (err) {
          failed ??= { err };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENT_RESTORES, batch.length) }, lane));
    if (failed) throw (failed as { err: unknown }).err;
    i = end;
  }
}

export interface SyncerOptions {
  render: Omit<IptablesOptions, 'largeClusterMode'>;
  /** Largest restore on the nf_tables variant (lines); see plan.ts. */
  maxRestoreLines: number;
  fullSyncIntervalMs: number;
  /** Injected for tests: the periodic full sync is due by this clock. */
  now?: () => number;
}

interface FamilyState {
  services: AppliedServices;
  jumps: JumpRule[];
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

export class IptablesSyncer implements Syncer {
  private readonly applied = new Map<IPFamily, FamilyState>();
  private needFullSync = true;
  private lastFullSync = 0;
  private variant: IptablesVariant | null = null;
  /**
   * Whether `applied` is what the kernel holds: then a full sync finds the service chains
   * to delete there, and need not read them back (iptables-save takes seconds at 10,000
   * services). Not at start-up, after a failure, or once someone changed our rules.
   */
  private appliedIsKernel = false;
  private readonly now: () => number;

  constructor(
    private readonly appliers: Map<IPFamily, IptablesApplier>,
    private readonly opts: SyncerOptions,
    private readonly log: Logger,
  ) {
    this.now = opts.now ?? Date.now;
  }

  get families(): IPFamily[] {
    return [...this.appliers.keys()];
  }

  requireFullSync(reason: string): void {
    if (!this.needFullSync) this.log.warn({ reason }, 'full resync required');
    this.needFullSync = true;
    this.appliedIsKernel = false;
  }

  async damage(): Promise<string | null> {
    for (const [family, applier] of this.appliers) {
      if (!(await applier.canaryPresent())) return `${family} canary chain is gone`;
      // Someone deleting a jump rule leaves the canary, and every service, unreachable.
      const gone = await applier.missingJump(this.applied.get(family)?.jumps ?? []);
      if (gone) return `${family} jump rule from ${gone.table} ${gone.chain} to ${gone.args.at(-1)} is gone`;
    }
    return null;
  }

  async sync(req: SyncRequest): Promise<SyncResult> {
    const reason = fullSyncReason({
      required: this.needFullSync,
      all: { changed: req.all, why: 'node changed' },
      msSinceLastFull: this.now() - this.lastFullSync,
      intervalMs: this.opts.fullSyncIntervalMs,
    });
    let full = reason !== null;
    // A family whose partial sync had to become a full one says why.
    let escalated: string | null = null;
    try {
      for (const [family, applier] of this.appliers) {
        if (full) await this.fullSync(req.model, family, applier);
        else escalated = (await this.partialSync(req.model, family, applier, req.services)) ?? escalated;
      }
    } catch (err) {
      this.needFullSync = true;
      this.appliedIsKernel = false;
      return { ok: false, full: full || escalated !== null, error: (err as Error).message };
    }
    if (full) {
      this.needFullSync = false;
      this.appliedIsKernel = true;
      this.lastFullSync = this.now();
    }
    full ||= escalated !== null;
    return { ok: true, full, reason: reason ?? escalated };
  }

  /** Only the nf_tables variant pays more than linearly for big --noflush restores. */
  private maxLines(): number {
    return this.variant === 'nf_tables' ? this.opts.maxRestoreLines : Infinity;
  }

  private renderOptions(model: ModelSource, family: IPFamily): IptablesOptions {
    return { ...this.opts.render, largeClusterMode: model.endpointCount(family) > LARGE_CLUSTER_ENDPOINTS };
  }

  private async fullSync(source: ModelSource, family: IPFamily, applier: IptablesApplier): Promise<void> {
    this.variant ??= (await applier.version()).variant;
    const model = source.familyModel(family);
    const opts = this.renderOptions(source, family);
    const rs = renderIptables(model, source.nodeContext, opts);
    const prev = this.applied.get(family);
    // What the kernel holds is read back only when it may differ from what was written last.
    const saved = this.appliedIsKernel && prev ? null : await applier.save();
    const existing = saved ? saved.chains('nat') : [...prev!.services.values()].flatMap((s) => s.chains);
    const steps = fullSyncSteps(rs, existing, this.maxLines());
    // With the node just read whole, the missing jumps ride in the last restore, after every
    // chain they lead to: no process per check on the way to the first sync.
    const jumps = saved ? await applier.jumpsRestore(rs.jumps, { saved, written: new Set(rs.fixed.map((c) => `${c.table} ${c.name}`)) }) : null;
    if (jumps) {
      const last = steps.at(-1)!;
      steps[steps.length - 1] = { ...last, what: `${last.what}, canary chains and jump rules`, chunks: [...last.chunks, Buffer.from(jumps)] };
    }
    const started = this.now();
    let reported = started;
    let done = 0;
    await runSteps(steps, async (step) => {
      await applier.restore(step);
      done++;
      // A first sync at 10,000 services takes seconds: an operator watching the node come up sees why.
      const now = this.now();
      if (now - reported >= PROGRESS_INTERVAL_MS && done < steps.length) {
        reported = now;
        const leftMs = ((now - started) / done) * (steps.length - done);
        this.log.info({ family, restores: `${done} of ${steps.length}`, step: step.what, secondsLeft: Math.round(leftMs / 100) / 10 }, 'full sync in progress');
      }
    });
    if (!saved) await applier.ensureJumps(rs.jumps);
    this.applied.set(family, {
      services: appliedServices(rs),
      jumps: rs.jumps,
      byService: portKeysByService(model, rs),
      fixed: fixedSignature(rs),
      largeCluster: opts.largeClusterMode ?? isLargeCluster(model),
    });
    this.log.debug({ family, restores: steps.length, servicePorts: rs.services.length }, 'full sync applied');
  }

  /** Null when partial; else why it had to write the whole family. */
  private async partialSync(source: ModelSource, family: IPFamily, applier: IptablesApplier, services: Set<string>): Promise<string | null> {
    const prev = this.applied.get(family);
    const opts = this.renderOptions(source, family);
    const escalate = async (why: string) => (await this.fullSync(source, family, applier), why);
    if (!prev) return escalate(`${family} never synced`);
    if (prev.largeCluster !== opts.largeClusterMode) return escalate('large-cluster mode changed');
    const model = source.familyModel(family, services);
    const rs = renderIptables(model, source.nodeContext, opts);
    if (fixedSignature(rs) !== prev.fixed) return escalate('fixed chains changed');

    const rendered = renderedServices(rs);
    const nextByService = portKeysByService(model, rs);
    const changedKeys = new Set<string>();
    for (const svc of services) {
      for (const key of prev.byService.get(svc) ?? []) changedKeys.add(key);
      for (const key of nextByService.get(svc) ?? []) changedKeys.add(key);
    }
    for (const step of partialSyncSteps(prev.services, rendered, changedKeys, this.maxLines())) await applier.restore(step);
    // Updated in place once the kernel has the change (a failed restore leaves them as
    // they were): copies of these maps of every service port, a megabyte per sync at
    // 10,000 services, piled up until the old generation was next collected.
    for (const key of changedKeys) {
      const r = rendered.get(key);
      if (r) prev.services.set(key, { shared: r.shared, chains: r.chains });
      else prev.services.delete(key);
    }
    for (const svc of services) {
      const keys = nextByService.get(svc);
      if (keys) prev.byService.set(svc, keys);
      else prev.byService.delete(svc);
    }
    return null;
  }
}
