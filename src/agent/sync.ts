/**
 * One sync as the agent runs it, whatever the mode: take what changed from the cluster
 * state, let the mode's syncer program it, delete the conntrack entries the change made
 * stale, and record it for health and metrics.
 */
import type { Logger } from 'pino';
import { staleUdpFlows, type ConntrackDeletion } from '../conntrack/stale.js';
import type { IPFamily } from '../model/types.js';
import type { Syncer } from '../modes/mode.js';
import type { Metrics } from './metrics.js';
import { mergeChanges, oldestChange, type Changes, type ClusterState } from './state.js';

export interface ProxySyncDeps {
  /** Deletes conntrack entries that the new rules made stale; returns failures. */
  deleteFlows: (deletions: ConntrackDeletion[]) => Promise<string[]>;
  log: Logger;
  metrics: Metrics;
  /** Injected for tests. */
  now?: () => number;
}

/** Key of `Changes.seenAt` for a sync that had no change to program, only damage to repair. */
const REPAIR = 'repair';

export class ProxySync {
  /** Last successful sync (ms since epoch), or null before the first. */
  lastUpdated: number | null = null;
  /**
   * Changes taken from the state and not programmed yet: those of a sync in progress, or
   * of a failed one (whose stale flows are still to delete once a sync succeeds).
   */
  private unprogrammed: Changes | null = null;

  constructor(
    private readonly state: ClusterState,
    private readonly syncer: Syncer,
    private readonly deps: ProxySyncDeps,
  ) {}

  /** A sync is running: the dataplane is being changed. */
  busy = false;

  /** When the oldest change not yet in the kernel was seen, or null: what health is judged by. */
  get pendingSince(): number | null {
    const taken = this.unprogrammed ? oldestChange(this.unprogrammed.seenAt) : null;
    const waiting = this.state.pendingSince;
    return taken === null ? waiting : Math.min(taken, waiting ?? Infinity);
  }

  /** One sync; false when it failed (the syncer makes the next one full). */
  async sync(): Promise<boolean> {
    const { log, metrics } = this.deps;
    const clock = this.deps.now ?? Date.now;
    const started = performance.now();
    const taken = this.state.take();
    const changes = this.unprogrammed ? mergeChanges(this.unprogrammed, taken) : taken;
    this.unprogrammed = changes;
    this.busy = true;
    const r = await this.syncer.sync({ model: this.state, services: changes.services, all: changes.all }).finally(() => (this.busy = false));
    if (!r.ok) {
      // A repair (nothing changed, the rules were damaged) that keeps failing is unhealthy too.
      if (changes.seenAt.size === 0) changes.seenAt.set(REPAIR, clock());
      metrics.restoreFailures.inc();
      if (!r.full) metrics.partialRestoreFailures.inc();
      log.error({ err: r.error, full: r.full }, 'sync failed; the next sync is a full one');
      return false;
    }
    // Only once the new rules are in place: a flow deleted earlier would be recreated stale.
    // Both sides restricted to the programmed families: a family this node does not program
    // would otherwise look like every one of its service ports had been removed.
    const families = new Set<IPFamily>(this.syncer.families);
    const programmed = (sp: { family: IPFamily }) => families.has(sp.family);
    const now = [...families].flatMap((f) => this.state.familyModel(f, changes.services).servicePorts);
    const failures = await this.deps.deleteFlows(staleUdpFlows(changes.previous.filter(programmed), now));
    for (const f of failures) log.warn({ err: f }, 'could not delete a stale conntrack entry');
    this.unprogrammed = null;
    this.lastUpdated = clock();
    const seconds = (performance.now() - started) / 1000;
    metrics.syncDuration.observe(seconds);
    (r.full ? metrics.fullSyncDuration : metrics.partialSyncDuration).observe(seconds);
    metrics.lastSync.setToCurrentTime();
    for (const seen of changes.seenAt.values()) metrics.networkProgramming.observe((this.lastUpdated - seen) / 1000);
    log.info({ full: r.full, reason: r.reason ?? undefined, services: r.full ? undefined : changes.services.size, ms: Math.round(seconds * 1000) }, 'synced proxy rules');
    return true;
  }
}
