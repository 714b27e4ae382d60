/**
 * userspace mode: the agent itself proxies service traffic. iptables rules (upstream's
 * old userspace chains) REDIRECT each service address and node port to a local listener
 * of the agent, which connects to an endpoint it picks. Slower than the kernel modes, and
 * the backend sees the node's address; in exchange, the proxy balances what the kernel
 * cannot: it can end long-lived connections so that clients spread over new pods.
 */
import { userspaceConfig, type ProxyConfig } from '../../config/options.js';
import type { ConfiguredMode, Host, ProxyMode } from '../mode.js';
import { userspaceRulesText, type UserspaceTextOptions } from './dryrun.js';
import { parsePortRange } from './ports.js';

export function userspaceOptions(cfg: ProxyConfig): UserspaceTextOptions {
  const u = userspaceConfig(cfg);
  const portRange = parsePortRange(u.portRange);
  if (portRange === null) throw new Error(`--proxy-port-range: ${JSON.stringify(u.portRange)} is not FIRST-LAST`);
  return {
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
    return {
      name: 'userspace',
      rulesText: (model, node, explain) => userspaceRulesText(model, node, opts, explain),
      dataplane: () => {
        throw new Error('trace is not available in userspace mode yet');
      },
      syncer: async () => {
        throw new Error('the userspace proxier is not in this build yet');
      },
    };
  },

  async cleanup(_host: Host): Promise<boolean> {
    return true;
  },
};
