/**
 * The proxy's effective configuration: defaults, overridden by a KubeProxyConfiguration
 * file, overridden by flags. Field names follow KubeProxyConfiguration.
 */

export const PROXY_MODES = ['iptables', 'nftables', 'ipvs', 'userspace'] as const;
export type ProxyModeName = (typeof PROXY_MODES)[number];

export interface ProxyConfig {
  mode: ProxyModeName;
  hostnameOverride: string;
  /** Pod CIDRs, at most one per family. */
  clusterCIDRs: string[];
  /** CIDRs, or `primary`; empty accepts node ports on every local address. */
  nodePortAddresses: string[];
  /** Path of a kubeconfig; empty means in-cluster configuration. */
  kubeconfig: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  /** Log verbosity (`logging.verbosity` in the file, `-v` on the command line). */
  verbosity: number;
  /**
   * Longest time between syncs (ms), whatever the mode: v1alpha1 files and flags name it
   * per mode (`iptables.syncPeriod`, `--iptables-sync-period`).
   */
  syncPeriodMs: number;
  /** Shortest time between syncs (ms); changes arriving faster are coalesced. */
  minSyncPeriodMs: number;
  iptables: {
    masqueradeAll: boolean;
    masqueradeBit: number;
    localhostNodePorts: boolean;
  };
}

export const DEFAULT_CONFIG: ProxyConfig = {
  mode: 'iptables',
  hostnameOverride: '',
  clusterCIDRs: [],
  nodePortAddresses: [],
  kubeconfig: '',
  healthzBindAddress: '0.0.0.0:10256',
  metricsBindAddress: '127.0.0.1:10249',
  verbosity: 0,
  syncPeriodMs: 30_000,
  minSyncPeriodMs: 1_000,
  iptables: { masqueradeAll: false, masqueradeBit: 14, localhostNodePorts: true },
};

/** A partial configuration from one source (file or flags). */
export type ConfigLayer = Partial<Omit<ProxyConfig, 'iptables'>> & { iptables?: Partial<ProxyConfig['iptables']> };

export function mergeConfig(...layers: ConfigLayer[]): ProxyConfig {
  let out: ProxyConfig = structuredClone(DEFAULT_CONFIG);
  for (const l of layers) {
    const { iptables, ...rest } = l;
    out = { ...out, ...rest, iptables: { ...out.iptables, ...iptables } };
  }
  return out;
}
