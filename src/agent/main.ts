/**
 * The node agent: informers feed the cluster state, the bounded-frequency runner drives
 * the mode's syncer, and the servers report health and metrics. SIGTERM stops it and
 * leaves the rules in place, so traffic keeps flowing until the next agent takes over.
 */
import type { Logger } from 'pino';
import type { ProxyConfig } from '../config/options.js';
import type { ConntrackCleaner } from '../conntrack/cleaner.js';
import { chooseConntrackCleaner } from '../conntrack/choose.js';
import { applyConntrackSettings } from '../conntrack/settings.js';
import { runCommand } from '../exec/command.js';
import { procSysctls } from '../exec/sysctl.js';
import type { ProxyMode } from '../modes/mode.js';
import { otherModes } from '../modes/registry.js';
import { healthCheckAddresses, HealthCheckServers, healthCheckTargets } from './healthcheck.js';
import { createMetrics } from './metrics.js';
import { BoundedFrequencyRunner } from './runner.js';
import { healthReport, parseBindAddress, startServers } from './servers.js';
import { ClusterState } from './state.js';
import { ProxySync } from './sync.js';
import { connect } from '../kube/connection.js';
import { REFLECTOR_BACKOFF } from '../backoff.js';
import { startWatches } from './watch.js';

/** Removes what every given mode left on the node; exit code 0 when all of it is gone. */
export async function cleanupModes(modes: readonly ProxyMode[], log: Logger): Promise<number> {
  let clean = true;
  for (const m of modes) if (!(await m.cleanup({ run: runCommand, sysctl: procSysctls, log }))) clean = false;
  return clean ? 0 : 1;
}

/**
 * What the other modes left (a node moving between modes with a restart): removed before
 * this mode programs, as upstream does, so no two modes' rules handle the same packets.
 * Chains this mode shares with another (iptables and ipvs) are left to its first full
 * sync, which rewrites them: a restart must not cut the traffic they carry. A failure is
 * logged, not fatal: the mode's own rules still work beside the leftovers.
 */
export async function removeOtherModes(mode: ProxyMode, log: Logger): Promise<void> {
  for (const other of otherModes(mode)) {
    const clean = await other.cleanup({ run: runCommand, sysctl: procSysctls, log }).catch((err: Error) => (log.warn({ mode: other.name, err: err.message }, 'could not look for leftovers'), false));
    if (!clean) log.warn({ mode: other.name }, "some of another mode's rules may remain on this node; `--cleanup` removes them");
  }
}

export async function runAgent(cfg: ProxyConfig, mode: ProxyMode, log: Logger, signals: NodeJS.EventEmitter = process): Promise<number> {
  const metrics = createMetrics();
  const state = new ClusterState(cfg.hostnameOverride, {
    problem: (p) => log.warn({ kind: p.kind, namespace: p.namespace, name: p.name, reason: p.reason }, 'skipped invalid object'),
  });
  const configured = mode.configure(cfg);
  // A node whose kernel cannot run the mode fails here, before anything changes on it and
  // before the API hears from it.
  const syncer = await configured.syncer({ run: runCommand, sysctl: procSysctls, log, metrics: metrics.registry });
  // Then the way to the API server: without one there is nothing to proxy.
  const api = connect(cfg.kubeconfig || null);
  // Then the lists go out at once: the API's answers, the other modes' leftovers and the
  // servers are waited for together.
  let runner: BoundedFrequencyRunner | null = null;
  const stopSignal = new Promise<string>((resolve) => {
    signals.once('SIGTERM', () => resolve('SIGTERM'));
    signals.once('SIGINT', () => resolve('SIGINT'));
  });
  // A start that never syncs (RBAC or TLS refusing us) still stops cleanly.
  const stopRequested = new AbortController();
  void stopSignal.then(() => stopRequested.abort());
  const watching = startWatches(
    api,
    cfg.hostnameOverride,
    {
      services: {
        upsert: (o) => (metrics.serviceChanges.inc(), state.upsertService(o)),
        remove: (o) => (metrics.serviceChanges.inc(), state.deleteService(o)),
      },
      endpointSlices: {
        upsert: (o) => (metrics.endpointChanges.inc(), state.upsertSlice(o)),
        remove: (o) => (metrics.endpointChanges.inc(), state.deleteSlice(o)),
      },
      node: { upsert: (o) => state.upsertNode(o), remove: () => {} },
      ...(configured.usesServiceCIDRs ? { serviceCIDRs: { upsert: (o) => state.upsertServiceCIDR(o), remove: (o) => state.deleteServiceCIDR(o) } } : {}),
      changed: () => {
        metrics.lastQueued.setToCurrentTime();
        // Before the runner starts, changes wait in the state: the first sync takes them all.
        runner?.request();
      },
      rejected: (kind, why, count) => {
        metrics.rejectedFromApi.inc({ kind }, count);
        log.warn({ kind, why, count }, 'skipped what the API server sent');
      },
    },
    log,
    REFLECTOR_BACKOFF,
    stopRequested.signal,
  );
  // The first sync waits for these; the lists take longer.
  const leftovers = removeOtherModes(mode, log);
  // The first sync is when the agent holds the most memory: the conntrack cleaner's worker
  // thread (some 15 MB) starts once it is done, or earlier only if it has stale flows to
  // delete (after a restart, say).
  let conntrack: Promise<ConntrackCleaner> | null = null;
  const cleaner = () => (conntrack ??= chooseConntrackCleaner(runCommand, log));
  await applyConntrackSettings(cfg, { sysctl: procSysctls, log });
  const proxy = new ProxySync(state, syncer, { deleteFlows: async (d) => (await cleaner()).delete(d), log, metrics });
  const health = { lastUpdated: () => proxy.lastUpdated, pendingSince: () => proxy.pendingSince };
  const healthChecks = new HealthCheckServers(log, () => healthReport(health, Date.now(), cfg.syncPeriodMs, true).healthy);
  runner = new BoundedFrequencyRunner(
    async () => {
      const ok = await proxy.sync().catch((err: Error) => {
        log.error({ err: err.message }, 'sync failed unexpectedly; retrying');
        return false;
      });
      healthChecks.update(healthCheckTargets(state.allServicePorts()), healthCheckAddresses(state.nodeContext, cfg.nodePortAddresses, syncer.families));
      if (ok) void cleaner();
      return ok;
    },
    { minIntervalMs: cfg.minSyncPeriodMs, maxIntervalMs: cfg.syncPeriodMs, retryMs: 1000 },
  );
  const servers = await startServers({
    healthz: parseBindAddress('--healthz-bind-address', cfg.healthzBindAddress),
    metrics: parseBindAddress('--metrics-bind-address', cfg.metricsBindAddress),
    mode: cfg.mode,
    syncPeriodMs: cfg.syncPeriodMs,
    health,
    metricsRegistry: metrics.registry,
    log,
    debug: {
      families: syncer.families,
      models: () => ({ IPv4: state.familyModel('IPv4'), IPv6: state.familyModel('IPv6') }),
      node: () => state.nodeContext,
      mode: configured,
      pendingSince: () => proxy.pendingSince,
    },
  });

  log.info({ node: cfg.hostnameOverride, mode: cfg.mode, families: syncer.families }, 'starting');
  const watches = await watching;
  await leftovers;
  // Without the informers' objects a sync would remove every service's rules: none then.
  if (watches) runner.start();

  // Someone flushing our rules or deleting a jump to them (a firewall reload, an admin) is
  // found once per sync period, and repaired by the full sync that follows at once.
  const damageCheck = setInterval(() => {
    // Mid-sync, our rules are legitimately being rewritten: check between syncs only.
    if (proxy.lastUpdated === null || proxy.busy) return;
    void syncer.damage().then(
      (damage) => {
        if (damage === null) return;
        syncer.requireFullSync(damage);
        runner.request();
      },
      (err: Error) => log.warn({ err: err.message }, 'could not check the dataplane for damage'),
    );
  }, cfg.syncPeriodMs);

  const signal = await stopSignal;
  log.info({ signal }, 'stopping; rules stay in place');
  clearInterval(damageCheck);
  await watches?.stop();
  await runner.stop();
  healthChecks.close();
  await servers.close();
  return 0;
}
