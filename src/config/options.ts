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
  ipvs: IpvsConfig;
  /**
   * The conntrack settings kube-proxy owns (`conntrack` in the file, `--conntrack-*`
   * flags). Absent when neither names one: then upstream's defaults apply (read it
   * through `conntrackConfig`), and `--write-config-to` writes no `conntrack` block.
   */
  conntrack?: ConntrackConfig;
  /** userspace mode's settings (flags only); absent means `DEFAULT_USERSPACE`. */
  userspace?: UserspaceConfig;
}

/** How userspace mode proxies. Durations in ms. */
export interface UserspaceConfig {
  /** `rr` round-robin, `lc` least connections (`--userspace-scheduler`). */
  scheduler: 'rr' | 'lc';
  /** Past this age a TCP connection is ended at a safe point, so clients spread again; 0 never (`--userspace-max-connection-age`). */
  maxConnectionAgeMs: number;
  /** An idle UDP client session is closed after this (`--udp-timeout`, as upstream). */
  udpIdleTimeoutMs: number;
  /** Local ports the listeners take (`--proxy-port-range`, as upstream): `FIRST-LAST`. */
  portRange: string;
  /** Worker processes carrying TCP (`--userspace-workers`); 0 or 1: the agent itself. Node's data path only. */
  workers: number;
  /** What carries TCP (`--userspace-data-path`): the splice engine, or Node's sockets. */
  dataPath: UserspaceDataPath;
}

export const USERSPACE_DATA_PATHS = ['splice', 'node'] as const;
export type UserspaceDataPath = (typeof USERSPACE_DATA_PATHS)[number];

export const DEFAULT_USERSPACE: UserspaceConfig = { scheduler: 'rr', maxConnectionAgeMs: 0, udpIdleTimeoutMs: 250, portRange: '28000-29999', workers: 0, dataPath: 'splice' };

export function userspaceConfig(cfg: ProxyConfig): UserspaceConfig {
  return cfg.userspace ?? DEFAULT_USERSPACE;
}

/** The schedulers upstream's `ipvs.scheduler` validation accepts (`mh` since kernels 4.18). */
export const IPVS_SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'sh', 'dh', 'sed', 'nq', 'mh'] as const;
export type IpvsScheduler = (typeof IPVS_SCHEDULERS)[number];

/** KubeProxyIPVSConfiguration, durations in ms. */
export interface IpvsConfig {
  scheduler: IpvsScheduler;
  /** Sets arp_ignore=1 and arp_announce=2: the node answers no ARP for kube-ipvs0's addresses on its other links. */
  strictARP: boolean;
  /** Virtual servers inside these CIDRs are someone else's: never deleted. */
  excludeCIDRs: string[];
  /** Null: the iptables sync periods apply; set, these apply in ipvs mode (upstream keeps one pair per mode). */
  syncPeriodMs: number | null;
  minSyncPeriodMs: number | null;
  /** IPVS connection timeouts (`ipvsadm --set`); 0 leaves the kernel's value. */
  tcpTimeoutMs: number;
  tcpFinTimeoutMs: number;
  udpTimeoutMs: number;
}

export const DEFAULT_IPVS: IpvsConfig = {
  scheduler: 'rr',
  strictARP: false,
  excludeCIDRs: [],
  syncPeriodMs: null,
  minSyncPeriodMs: null,
  tcpTimeoutMs: 0,
  tcpFinTimeoutMs: 0,
  udpTimeoutMs: 0,
};

/** KubeProxyConntrackConfiguration, durations in ms. A 0 (or false) leaves the node's value as it is. */
export interface ConntrackConfig {
  /** nf_conntrack_max is this times the CPUs, at least `min`; 0 leaves it as it is (and `min` with it). */
  maxPerCore: number;
  min: number;
  /** nf_conntrack_tcp_timeout_established. */
  tcpEstablishedTimeoutMs: number;
  /** nf_conntrack_tcp_timeout_close_wait. */
  tcpCloseWaitTimeoutMs: number;
  /** Sets nf_conntrack_tcp_be_liberal to 1; upstream then also leaves out its DROP of conntrack-INVALID packets. */
  tcpBeLiberal: boolean;
  /** nf_conntrack_udp_timeout (flows without a reply yet). */
  udpTimeoutMs: number;
  /** nf_conntrack_udp_timeout_stream (flows that saw a reply). */
  udpStreamTimeoutMs: number;
}

/** Upstream's v1alpha1 defaults. */
export const DEFAULT_CONNTRACK: ConntrackConfig = {
  maxPerCore: 32_768,
  min: 131_072,
  tcpEstablishedTimeoutMs: 24 * 3_600_000,
  tcpCloseWaitTimeoutMs: 3_600_000,
  tcpBeLiberal: false,
  udpTimeoutMs: 0,
  udpStreamTimeoutMs: 0,
};

/** The conntrack settings in effect: the configured ones, or upstream's defaults. */
export function conntrackConfig(cfg: ProxyConfig): ConntrackConfig {
  return cfg.conntrack ?? DEFAULT_CONNTRACK;
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
  ipvs: DEFAULT_IPVS,
};

/** A partial configuration from one source (file or flags). */
export type ConfigLayer = Partial<Omit<ProxyConfig, 'iptables' | 'ipvs' | 'conntrack' | 'userspace'>> & {
  iptables?: Partial<ProxyConfig['iptables']>;
  ipvs?: Partial<IpvsConfig>;
  conntrack?: Partial<ConntrackConfig>;
  userspace?: Partial<UserspaceConfig>;
};

export function mergeConfig(...layers: ConfigLayer[]): ProxyConfig {
  let out: ProxyConfig = structuredClone(DEFAULT_CONFIG);
  for (const l of layers) {
    const { iptables, ipvs, conntrack, userspace, ...rest } = l;
    out = { ...out, ...rest, iptables: { ...out.iptables, ...iptables }, ipvs: { ...out.ipvs, ...ipvs } };
    if (conntrack) out.conntrack = { ...conntrackConfig(out), ...conntrack };
    if (userspace) out.userspace = { ...userspaceConfig(out), ...userspace };
  }
  // The running mode's sync periods are the ones the agent uses.
  if (out.mode === 'ipvs') {
    out.syncPeriodMs = out.ipvs.syncPeriodMs ?? out.syncPeriodMs;
    out.minSyncPeriodMs = out.ipvs.minSyncPeriodMs ?? out.minSyncPeriodMs;
  }
  return out;
}
