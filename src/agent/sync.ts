/**
 * One sync as the agent runs it, whatever the mode: take what changed from the cluster
 * state, let the mode's syncer program it, delete the conntrack entries the change made
 * stale (and those a previous sync failed to delete), and record it for health and metrics.
 */
import type { Logger } from 'pino';
import type { ConntrackCleanup } from '../conntrack/cleaner.js';
import { deletionKey, staleFlows, stillStale, uniqueDeletions, type ConntrackDeletion } from '../conntrack/stale.js';
import type { IPFamily } from '../model/types.js';
import type { Syncer } from '../modes/mode.js';
import type { Metrics } from './metrics.js';
import { mergeChanges, oldestChange, type Changes, type ClusterState } from './state.js';

export interface ProxySyncDeps {
  /**
   * Deletes conntrack entries that the new rules made stale (one family at a time): what
   * it deleted, and the deletions that failed, which the next sync tries again.
   */
  deleteFlows: (deletions: ConntrackDeletion[]) => Promise<ConntrackCleanup>;
  log: Logger;
  metrics: Metrics;
  /** Injected for tests. */
  now?: () => number;
}

/** Key of `Changes.seenAt` for a sync that had no change to program, only damage to repair. */
const REPAIR = 'repair';
/** Failed conntrack deletions kept for the next sync, at most: beyond, the oldest are given up. */
const MAX_RETRIED_DELETIONS = 10_000;
const MAX_ATTEMPTS = 5;
/** Failure lines logged per family and sync; the rest are counted. */
const MAX_LOGGED_FAILURES = 10;

export class ProxySync {
  /** Last successful sync (ms since epoch), or null before the first. */
  lastUpdated: number | null = null;
  /**
   * Changes taken from the state and not programmed yet: those of a sync in progress, or
   * of a failed one (whose stale flows are still to delete once a sync succeeds).
   */
  private unprogrammed: Changes | null = null;
  /** Conntrack deletions that failed: tried again, before the new ones, at the next sync that succeeds. */
  private retryDeletions: ConntrackDeletion[] = [];
  /** How often each of them has failed. */
  private attempts = new Map<string, number>();

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
    const retries = stillStale(this.retryDeletions, this.state.allServicePorts());
    await this.deleteStale(uniqueDeletions([...retries, ...staleFlows(changes.previous.filter(programmed), now)]));
    this.unprogrammed = null;
    this.lastUpdated = clock();
    const seconds = (performance.now() - started) / 1000;
    metrics.syncDuration.observe(seconds);
    (r.full ? metrics.fullSyncDuration : metrics.partialSyncDuration).observe(seconds);
    metrics.lastSync.setToCurrentTime();
    if (r.written) {
      metrics.transactionCommands.observe(r.written.commands);
      metrics.transactionBytes.observe(r.written.bytes);
    }
    for (const seen of changes.seenAt.values()) metrics.networkProgramming.observe((this.lastUpdated - seen) / 1000);
    log.info({ full: r.full, reason: r.reason ?? undefined, services: r.full ? undefined : changes.services.size, ms: Math.round(seconds * 1000) }, 'synced proxy rules');
    return true;
  }

  /** Deletes them family by family; keeps what failed for the next sync. Never throws. */
  private async deleteStale(deletions: ConntrackDeletion[]): Promise<void> {
    const { log, metrics } = this.deps;
    const retry: ConntrackDeletion[] = [];
    for (const family of new Set(deletions.map((d) => d.family))) {
      const list = deletions.filter((d) => d.family === family);
      const started = performance.now();
      const result = await this.deps.deleteFlows(list).catch((err: Error): ConntrackCleanup => ({ deleted: 0, failed: list, failures: [err.message] }));
      metrics.conntrackDuration.observe({ ip_family: family }, (performance.now() - started) / 1000);
      if (result.deleted > 0) metrics.conntrackDeleted.inc({ ip_family: family }, result.deleted);
      if (result.failed.length > 0) metrics.conntrackFailures.inc({ ip_family: family }, result.failed.length);
      retry.push(...result.failed);
      for (const f of result.failures.slice(0, MAX_LOGGED_FAILURES)) log.warn({ err: f, family }, 'could not delete a stale conntrack entry');
      if (result.failures.length > MAX_LOGGED_FAILURES) log.warn({ more: result.failures.length - MAX_LOGGED_FAILURES, family }, 'more conntrack deletions failed');
      if (result.deleted > 0 || result.failed.length > 0) log.info({ family, deleted: result.deleted, failed: result.failed.length, filters: list.length }, 'deleted stale conntrack entries');
    }
    // A deletion is tried at most MAX_ATTEMPTS times: one that keeps failing (no conntrack
    // tool, no library) must not cost every later sync as much again.
    const attempts = new Map<string, number>();
    for (const d of retry) {
      const k = deletionKey(d);
      attempts.set(k, (this.attempts.get(k) ?? 0) + 1);
    }
    const kept = [...new Map(retry.map((d) => [deletionKey(d), d])).values()].filter((d) => attempts.get(deletionKey(d))! < MAX_ATTEMPTS);
    const givenUp = attempts.size - kept.length + Math.max(0, kept.length - MAX_RETRIED_DELETIONS);
    if (givenUp > 0) log.warn({ givenUp }, 'conntrack deletions that keep failing are not tried again');
    this.retryDeletions = kept.slice(0, MAX_RETRIED_DELETIONS);
    this.attempts = new Map(this.retryDeletions.map((d) => [deletionKey(d), attempts.get(deletionKey(d))!]));
  }
}
