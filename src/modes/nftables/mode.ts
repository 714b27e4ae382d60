/**
 * nftables mode: one `kube-proxy` table per family (render.ts explains the layout).
 * The options it renders with, and the seam's parts wired: the dry-run text, the trace's
 * dataplane, the syncer, and cleanup.
 */
import { conntrackConfig, type ProxyConfig } from '../../config/options.js';
import type { ConfiguredMode, Host, ProxyMode } from '../mode.js';
import { NftablesDataplane } from './dataplane.js';
import { familyRulesText } from './dryrun.js';
import { renderNftables, type NftablesOptions } from './render.js';
import { TABLE_NAME } from './ruleset.js';
import { startNftablesSyncer } from './syncer.js';

export function nftablesOptions(cfg: ProxyConfig): NftablesOptions {
  return {
    masqueradeBit: cfg.iptables.masqueradeBit,
    masqueradeAll: cfg.iptables.masqueradeAll,
    clusterCIDRs: cfg.clusterCIDRs,
    // KEP-3866: nftables mode serves node ports on the node's primary IPs unless told otherwise.
    nodePortAddresses: cfg.nodePortAddresses.length > 0 ? cfg.nodePortAddresses : ['primary'],
    dropInvalid: !conntrackConfig(cfg).tcpBeLiberal,
  };
}

export const nftablesMode: ProxyMode = {
  name: 'nftables',

  configure(cfg: ProxyConfig): ConfiguredMode {
    const opts = nftablesOptions(cfg);
    return {
      name: 'nftables',
      usesServiceCIDRs: true,
      rulesText: (model, node, explain) => familyRulesText(model, node, opts, explain),
      dataplane: (model, node) => NftablesDataplane.ofRuleset([renderNftables(model, node, opts)], node.nodeIPs),
      syncer: (host) => startNftablesSyncer(host, opts),
    };
  },

  /** Deletes our tables; `--cleanup` on a node without nft has nothing of ours to remove. */
  async cleanup(host: Host): Promise<boolean> {
    let clean = true;
    for (const family of ['ip', 'ip6'] as const) {
      const listed = await host.run('nft', ['list', 'table', family, TABLE_NAME]).catch(() => null);
      if (listed?.status !== 0) continue;
      const r = await host.run('nft', ['delete', 'table', family, TABLE_NAME]);
      if (r.status === 0) host.log.info({ table: `${family} ${TABLE_NAME}` }, 'removed the nftables table');
      else {
        clean = false;
        host.log.error({ table: `${family} ${TABLE_NAME}`, err: r.stderr.trim() }, 'cleanup failed');
      }
    }
    return clean;
  },
};
