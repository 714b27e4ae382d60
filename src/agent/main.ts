/**
 * The node agent: informers feed the cluster state, the bounded-frequency runner drives
 * the proxier, and the servers report health and metrics. SIGTERM stops it and leaves the
 * rules in place, so traffic keeps flowing until the next agent takes over.
 */
import type { Logger } from 'pino';
import { detectVariant, type VariantChoice } from '../modes/iptables/variant.js';
import { IptablesApplier } from '../modes/iptables/applier.js';
import { runCommand } from '../exec/command.js';
import { deleteFlows } from '../conntrack/tool.js';
import type { ProxyConfig } from '../config/options.js';
import { iptablesOptions } from '../offline/dryrun.js';
import type { IPFamily } from '../model/types.js';
import { HealthCheckServers, healthCheckTargets } from './healthcheck.js';
import { createMetrics } from './metrics.js';
import { IptablesProxier } from '../modes/iptables/syncer.js';
import { BoundedFrequencyRunner } from './runner.js';
import { parseBindAddress, startServers } from './servers.js';
import { ClusterState } from './state.js';
import { loadKubeConfig, startWatches } from './watch.js';

/** About 100 services of 10 endpoints: restores this size load in ~0.1 s on nf_tables. */
export const DEFAULT_MAX_RESTORE_LINES = 5_000;
const FULL_SYNC_INTERVAL_MS = 60 * 60 * 1000;

async function families(tables: VariantChoice): Promise<IPFamily[]> {
  const out: IPFamily[] = ['IPv4'];
  const v6 = await runCommand(tables.bin.IPv6.iptables, ['-w', '5', '-t', 'nat', '-S', 'POSTROUTING']).catch(() => null);
  if (v6?.status === 0) out.push('IPv6');
  return out;
}

async function hostVariant(log: Logger): Promise<VariantChoice> {
  const tables = await detectVariant(runCommand);
  log.info({ backend: tables.variant ?? 'as on PATH', reason: tables.reason, iptables: tables.bin.IPv4.iptables }, 'chose the iptables backend');
  return tables;
}

export async function cleanupRules(log: Logger): Promise<number> {
  let failed = false;
  const tables = await hostVariant(log);
  for (const family of await families(tables)) {
    try {
      await new IptablesApplier(family, runCommand, tables.bin[family]).cleanup();
      log.info({ family }, 'removed kube-proxy chains and jumps');
    } catch (err) {
      failed = true;
      log.error({ family, err: (err as Error).message }, 'cleanup failed');
    }
  }
  return failed ? 1 : 0;
}

export async function runAgent(cfg: ProxyConfig, log: Logger, signals: NodeJS.EventEmitter = process): Promise<number> {
  const metrics = createMetrics();
  const state = new ClusterState(cfg.hostnameOverride, {
    problem: (p) => log.warn({ kind: p.kind, namespace: p.namespace, name: p.name, reason: p.reason }, 'skipped invalid object'),
  });
  const tables = await hostVariant(log);
  const appliers = new Map((await families(tables)).map((f) => [f, new IptablesApplier(f, runCommand, tables.bin[f])] as const));
  const proxier = new IptablesProxier(
    state,
    appliers,
    {
      render: iptablesOptions(cfg),
      maxRestoreLines: DEFAULT_MAX_RESTORE_LINES,
      fullSyncIntervalMs: FULL_SYNC_INTERVAL_MS,
      deleteFlows: (d) => deleteFlows(runCommand, d),
    },
    log,
    metrics,
  );
  const healthChecks = new HealthCheckServers('0.0.0.0', log);
  let lastUpdated: number | null = null;
  const runner = new BoundedFrequencyRunner(
    async () => {
      const ok = await proxier.sync();
      if (ok) lastUpdated = Date.now();
      healthChecks.update(healthCheckTargets(state.allServicePorts()));
      return ok;
    },
    { minIntervalMs: cfg.iptables.minSyncPeriodMs, maxIntervalMs: cfg.iptables.syncPeriodMs, retryMs: 1000 },
  );
  const servers = await startServers({
    healthz: parseBindAddress('--healthz-bind-address', cfg.healthzBindAddress),
    metrics: parseBindAddress('--metrics-bind-address', cfg.metricsBindAddress),
    mode: cfg.mode,
    syncPeriodMs: cfg.iptables.syncPeriodMs,
    health: { lastUpdated: () => lastUpdated, pendingSince: () => state.pendingSince },
    metricsRegistry: metrics.registry,
    debug: {
      families: [...appliers.keys()],
      models: () => ({ IPv4: state.familyModel('IPv4'), IPv6: state.familyModel('IPv6') }),
      node: () => state.nodeContext,
      options: iptablesOptions(cfg),
      pendingSince: () => state.pendingSince,
    },
  });

  log.info({ node: cfg.hostnameOverride, mode: cfg.mode, families: [...appliers.keys()] }, 'starting');
  const watches = await startWatches(
    loadKubeConfig(cfg.kubeconfig || null),
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
      changed: () => {
        metrics.lastQueued.setToCurrentTime();
        runner.request();
      },
    },
    log,
  );
  runner.start();

  // Someone flushing our chains (a firewall reload, an admin) removes the canary with them.
  const canary = setInterval(() => {
    if (lastUpdated === null) return;
    void (async () => {
      for (const applier of appliers.values()) {
        if (!(await applier.canaryPresent())) {
          proxier.requireFullSync(`${applier.family} canary chain is gone`);
          runner.request();
          return;
        }
      }
    })();
  }, Math.min(cfg.iptables.syncPeriodMs, 5_000));

  const signal = await new Promise<string>((resolve) => {
    signals.once('SIGTERM', () => resolve('SIGTERM'));
    signals.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'stopping; rules stay in place');
  clearInterval(canary);
  await watches.stop();
  await runner.stop();
  healthChecks.close();
  await servers.close();
  return 0;
}
