/**
 * userspace mode: the agent itself proxies service traffic. iptables rules (upstream's
 * old userspace chains) REDIRECT each service address and node port to a local listener
 * of the agent, which connects to an endpoint it picks. Slower than the kernel modes, and
 * the backend sees the node's address; in exchange, the proxy balances what the kernel
 * cannot: it can end long-lived connections so that clients spread over new pods.
 */
import type { Logger } from 'pino';
import { userspaceConfig, type ProxyConfig, type UserspaceConfig } from '../../config/options.js';
import type { ConfiguredMode, Host, ProxyMode } from '../mode.js';
import { userspaceRulesText, type UserspaceTextOptions } from './dryrun.js';
import { appliers, removeChains } from '../iptables/mode.js';
import type { FamilyModel, NodeContext } from '../../model/types.js';
import { USERSPACE_CHAINS } from './chains.js';
import { UserspaceDataplane } from './dataplane.js';
import { renderUserspace } from './render.js';
import { PromEndpointStats } from './metrics.js';
import { parsePortRange } from '../../config/portrange.js';
import { Proxier } from './proxier.js';
import { WorkerPool } from './pool.js';
import type { ListenerHost } from './pooled.js';
import { SpliceEngine } from './splice/engine.js';
import { NO_STATS, type EndpointStats } from './stats.js';
import { UserspaceSyncer } from './syncer.js';

/** TCP connections one listener carries at once; the kernel's backlog holds the next ones. */
const MAX_CONNECTIONS_PER_LISTENER = 16_384;

export function userspaceOptions(cfg: ProxyConfig): UserspaceTextOptions {
  const u = userspaceConfig(cfg);
  const portRange = parsePortRange(u.portRange);
  if (portRange === null) throw new Error(`--proxy-port-range: ${JSON.stringify(u.portRange)} is not FIRST-LAST`);
  return {
    clusterCIDRs: cfg.clusterCIDRs,
    nodePortAddresses: cfg.nodePortAddresses,
    localhostNodePorts: cfg.iptables.localhostNodePorts,
    portRange,
    scheduler: u.scheduler,
    maxConnectionAgeMs: u.maxConnectionAgeMs,
  };
}

export const userspaceMode: ProxyMode = {
  name: 'userspace',

  configure(cfg: ProxyConfig): ConfiguredMode {
    const opts = userspaceOptions(cfg);
    // Once the agent runs listeners, /debug/rules and its traces show their ports.
    let live: Proxier | null = null;
    const plan = (model: FamilyModel, node: NodeContext) => renderUserspace(model, node, opts, live?.held(model.family), live?.unusable(model.family));
    return {
      name: 'userspace',
      rulesText: (model, node, explain) => userspaceRulesText(model, node, opts, explain, plan(model, node)),
      dataplane: (model, node) => new UserspaceDataplane(plan(model, node), node, opts.scheduler),
      syncer: async (host) => {
        const u = userspaceConfig(cfg);
        const stats = host.metrics ? new PromEndpointStats(host.metrics, () => proxier.reportBytes()) : NO_STATS;
        const pool = await tcpHost(u, stats, host.log);
        const proxier = new Proxier({
          scheduler: u.scheduler,
          maxConnectionAgeMs: u.maxConnectionAgeMs,
          udpIdleTimeoutMs: u.udpIdleTimeoutMs,
          maxConnections: MAX_CONNECTIONS_PER_LISTENER,
          stats,
          log: host.log,
          pool,
        });
        live = proxier;
        return new UserspaceSyncer(await appliers(host), proxier, opts, host.log);
      },
    };
  },

  cleanup: (host: Host) => removeChains(host, 'the userspace chains and jumps', (table, name) => table === 'nat' && (USERSPACE_CHAINS as readonly string[]).includes(name)),
};

/**
 * Where TCP listeners run: the splice engine by default (faster than Node's sockets on
 * every bench figure: README, userspace), or, with `--userspace-data-path node`, this
 * thread or worker processes. Where the engine cannot load (no koffi binary, no glibc),
 * Node's data path carries TCP, with one warning. `startEngine` is injected for tests.
 */
export async function tcpHost(u: UserspaceConfig, stats: EndpointStats, log: Logger, startEngine = SpliceEngine.start): Promise<ListenerHost | null> {
  if (u.dataPath === 'node') {
    // In the agent by default: on 2 cores shared with the traffic's ends, workers measured
    // no faster and cost more CPU per connection (README, userspace).
    if (u.workers <= 1) return null;
    const pool = new WorkerPool({ size: u.workers, stats, log });
    await pool.start();
    return pool;
  }
  try {
    const engine = await startEngine({ stats, log });
    log.info('userspace TCP data path: the splice engine');
    return engine;
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'the splice engine cannot load; TCP service traffic goes through Node sockets (--userspace-data-path node)');
    return null;
  }
}
