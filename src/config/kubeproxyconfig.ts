/**
 * `--config`: a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1). Fields we
 * implement become a config layer; upstream fields we do not implement yet, and fields
 * nobody knows, are named in warnings so an operator never wonders whether one applied.
 * `--write-config-to` goes the other way: the effective configuration as such a file.
 */
import { isRecord } from '../kube/objects.js';
import { yaml } from '../kube/yaml.js';
import { parseCIDR } from '../net/ip.js';
import { formatDuration, parseDuration } from './duration.js';
import { formatPortRange, parsePortRange } from './portrange.js';
import { DEFAULT_IPVS, IPVS_SCHEDULERS, PROXY_MODES, type ConfigLayer, type ConntrackConfig, type IpvsConfig, type IpvsScheduler, type ProxyConfig, type ProxyModeName, type UserspaceConfig } from './options.js';

export class ConfigError extends Error {}

const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_INT32 = 2 ** 31 - 1;
/** More worker processes than this is a typo, not a machine. */
const MAX_USERSPACE_WORKERS = 256;
/**
 * The longest conntrack timeout a sysctl takes: the kernel holds them as int jiffies, and
 * at HZ=1000 (the highest) 2^31-1 jiffies is 596h31m23s.
 */
const MAX_CONNTRACK_TIMEOUT_MS = Math.floor(MAX_INT32 / 1000) * 1000;

export const CONFIG_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const CONFIG_KIND = 'KubeProxyConfiguration';

/** Upstream v1alpha1 fields this version does not act on yet (warned, not fatal). */
const UPSTREAM_FIELDS = new Set([
  'featureGates',
  'bindAddress',
  'bindAddressHardFail',
  'enableProfiling',
  'showHiddenMetricsForVersion',
  'nftables',
  'winkernel',
  'detectLocal',
  'oomScoreAdj',
  'configSyncPeriod',
  'windowsRunAsService',
]);
const UPSTREAM_IPTABLES_FIELDS = new Set(['snatNodeInternalIP']);
const IPVS_TIMEOUT_FIELDS = { tcpTimeout: 'tcpTimeoutMs', tcpFinTimeout: 'tcpFinTimeoutMs', udpTimeout: 'udpTimeoutMs' } as const;

export interface LoadedConfig {
  layer: ConfigLayer;
  warnings: string[];
}

/** Local traffic is what comes from clusterCIDR: upstream's default detectLocalMode. */
const DETECT_LOCAL_MODE = 'ClusterCIDR';

function duration(v: unknown, field: string): number {
  const ms = typeof v === 'string' ? parseDuration(v) : null;
  if (ms === null) throw new ConfigError(`${field}: ${JSON.stringify(v)} is not a duration (like 30s or 1m)`);
  return ms;
}

function expect<T>(ok: boolean, value: unknown, field: string, want: string): T {
  if (!ok) throw new ConfigError(`${field}: ${JSON.stringify(value)} is not ${want}`);
  return value as T;
}

/** Checks values that flags and files share; returns the config unchanged or throws. */
export function validateConfig(cfg: ProxyConfig): ProxyConfig {
  if (!(PROXY_MODES as readonly string[]).includes(cfg.mode)) {
    throw new ConfigError(`mode: ${JSON.stringify(cfg.mode)} is not one of ${PROXY_MODES.join(', ')}`);
  }
  const families = new Set<string>();
  for (const c of cfg.clusterCIDRs) {
    const parsed = parseCIDR(c);
    if (!parsed) throw new ConfigError(`clusterCIDR: ${JSON.stringify(c)} is not a CIDR`);
    if (families.has(parsed.family)) throw new ConfigError(`clusterCIDR: more than one ${parsed.family} CIDR`);
    families.add(parsed.family);
  }
  for (const a of cfg.nodePortAddresses) {
    if (a !== 'primary' && !parseCIDR(a)) {
      throw new ConfigError(`nodePortAddresses: ${JSON.stringify(a)} is not a CIDR or "primary"`);
    }
  }
  for (const [field, value] of [
    ['healthzBindAddress', cfg.healthzBindAddress],
    ['metricsBindAddress', cfg.metricsBindAddress],
  ] as const) {
    if (value !== '' && !/^(\[[0-9a-fA-F:.]+\]|[0-9.]*):[0-9]{1,5}$/.test(value)) {
      throw new ConfigError(`${field}: ${JSON.stringify(value)} is not IP:PORT`);
    }
  }
  // Node's timers hold at most 2^31-1 ms (24.8 days); a longer one fires at once, every time.
  for (const [field, ms] of [
    ['iptables.syncPeriod', cfg.syncPeriodMs],
    ['iptables.minSyncPeriod', cfg.minSyncPeriodMs],
  ] as const) {
    if (ms > MAX_TIMER_MS) throw new ConfigError(`${field}: ${formatDuration(ms)} is longer than ${formatDuration(MAX_TIMER_MS)}, the longest a timer can wait`);
  }
  if (cfg.syncPeriodMs <= 0) throw new ConfigError('iptables.syncPeriod: must be greater than 0');
  if (cfg.minSyncPeriodMs > cfg.syncPeriodMs) {
    throw new ConfigError('iptables.minSyncPeriod: longer than iptables.syncPeriod');
  }
  const bit = cfg.iptables.masqueradeBit;
  if (!Number.isInteger(bit) || bit < 0 || bit > 31) {
    throw new ConfigError(`iptables.masqueradeBit: ${JSON.stringify(bit)} is not an integer in 0-31`);
  }
  if (!Number.isInteger(cfg.verbosity) || cfg.verbosity < 0) {
    throw new ConfigError(`logging.verbosity: ${JSON.stringify(cfg.verbosity)} is not a non-negative integer`);
  }
  if (cfg.conntrack) validateConntrack(cfg.conntrack);
  validateIpvs(cfg.ipvs);
  if (cfg.userspace) validateUserspace(cfg.userspace);
  if (cfg.hostnameOverride !== '' && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(cfg.hostnameOverride)) {
    throw new ConfigError(`hostnameOverride: ${JSON.stringify(cfg.hostnameOverride)} is not a valid node name`);
  }
  return cfg;
}

function validateUserspace(u: UserspaceConfig): void {
  if (u.workers < 0 || u.workers > MAX_USERSPACE_WORKERS) throw new ConfigError(`--userspace-workers: must be 0 to ${MAX_USERSPACE_WORKERS}`);
  if (u.workers > 1 && u.dataPath !== 'node') throw new ConfigError('--userspace-workers: worker processes run the node data path; add --userspace-data-path node');
  if (u.udpIdleTimeoutMs <= 0) throw new ConfigError('--udp-timeout: must be greater than 0');
  for (const [field, ms] of [
    ['--udp-timeout', u.udpIdleTimeoutMs],
    ['--userspace-max-connection-age', u.maxConnectionAgeMs],
  ] as const) {
    if (ms > MAX_TIMER_MS) throw new ConfigError(`${field}: ${formatDuration(ms)} is longer than ${formatDuration(MAX_TIMER_MS)}, the longest a timer can wait`);
  }
}

/** The conntrack section: counts within int32, timeouts 0 (leave as is) or whole seconds a sysctl takes. */
function validateConntrack(c: ConntrackConfig): void {
  for (const [field, n] of [
    ['conntrack.maxPerCore', c.maxPerCore],
    ['conntrack.min', c.min],
  ] as const) {
    if (!Number.isInteger(n) || n < 0 || n > MAX_INT32) throw new ConfigError(`${field}: ${JSON.stringify(n)} is not an integer in 0-${MAX_INT32}`);
  }
  for (const [field, ms] of [
    ['conntrack.tcpEstablishedTimeout', c.tcpEstablishedTimeoutMs],
    ['conntrack.tcpCloseWaitTimeout', c.tcpCloseWaitTimeoutMs],
    ['conntrack.udpTimeout', c.udpTimeoutMs],
    ['conntrack.udpStreamTimeout', c.udpStreamTimeoutMs],
  ] as const) {
    // The sysctls count whole seconds: 0.5s would be written as 0.
    if (ms !== 0 && ms < 1000) throw new ConfigError(`${field}: ${formatDuration(ms)} is shorter than 1s (0 leaves the node's value as it is)`);
    if (ms > MAX_CONNTRACK_TIMEOUT_MS) throw new ConfigError(`${field}: ${formatDuration(ms)} is longer than ${formatDuration(MAX_CONNTRACK_TIMEOUT_MS)}, the longest the kernel takes`);
  }
}

/** The ipvs section: a scheduler the kernel has, CIDRs, whole-second timeouts. */
function validateIpvs(c: IpvsConfig): void {
  if (!(IPVS_SCHEDULERS as readonly string[]).includes(c.scheduler)) {
    throw new ConfigError(`ipvs.scheduler: ${JSON.stringify(c.scheduler)} is not one of ${IPVS_SCHEDULERS.join(', ')}`);
  }
  for (const cidr of c.excludeCIDRs) if (!parseCIDR(cidr)) throw new ConfigError(`ipvs.excludeCIDRs: ${JSON.stringify(cidr)} is not a CIDR`);
  for (const [field, ms] of [
    ['ipvs.syncPeriod', c.syncPeriodMs],
    ['ipvs.minSyncPeriod', c.minSyncPeriodMs],
  ] as const) {
    if (ms !== null && ms > MAX_TIMER_MS) throw new ConfigError(`${field}: ${formatDuration(ms)} is longer than ${formatDuration(MAX_TIMER_MS)}, the longest a timer can wait`);
  }
  if (c.syncPeriodMs !== null && c.syncPeriodMs <= 0) throw new ConfigError('ipvs.syncPeriod: must be greater than 0');
  for (const [name, key] of Object.entries(IPVS_TIMEOUT_FIELDS)) {
    const ms = c[key];
    // ipvsadm --set takes whole seconds; 0 leaves the kernel's value.
    if (ms !== 0 && (ms < 1000 || ms % 1000 !== 0)) throw new ConfigError(`ipvs.${name}: ${formatDuration(ms)} is not a whole number of seconds (0 leaves the kernel's value)`);
    if (ms > MAX_CONNTRACK_TIMEOUT_MS) throw new ConfigError(`ipvs.${name}: ${formatDuration(ms)} is too long`);
  }
}

/** Splits a comma-separated list as upstream flags and fields take it. */
export function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

export function loadKubeProxyConfiguration(text: string, source: string): LoadedConfig {
  let doc: unknown;
  try {
    doc = yaml().parse(text);
  } catch (err) {
    throw new ConfigError(`${source}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!isRecord(doc)) throw new ConfigError(`${source}: not a ${CONFIG_KIND} (want a YAML mapping)`);
  if (doc.kind !== CONFIG_KIND) throw new ConfigError(`${source}: kind is ${JSON.stringify(doc.kind)}, want ${CONFIG_KIND}`);
  if (doc.apiVersion !== CONFIG_API_VERSION) {
    throw new ConfigError(`${source}: apiVersion is ${JSON.stringify(doc.apiVersion)}, want ${CONFIG_API_VERSION}`);
  }
  const warnings: string[] = [];
  const layer: ConfigLayer = {};
  const iptables: NonNullable<ConfigLayer['iptables']> = {};
  const conntrack: NonNullable<ConfigLayer['conntrack']> = {};
  const userspace: NonNullable<ConfigLayer['userspace']> = {};
  const ipvs: NonNullable<ConfigLayer['ipvs']> = {};

  for (const [key, value] of Object.entries(doc)) {
    if (value === null || value === undefined) continue;
    switch (key) {
      case 'apiVersion':
      case 'kind':
        break;
      case 'mode':
        // Upstream treats an empty mode as the platform default.
        if (value !== '') layer.mode = expect<ProxyModeName>(typeof value === 'string', value, key, 'a string');
        break;
      case 'hostnameOverride':
        layer.hostnameOverride = expect<string>(typeof value === 'string', value, key, 'a string');
        break;
      case 'clusterCIDR':
        layer.clusterCIDRs = splitList(expect<string>(typeof value === 'string', value, key, 'a string'));
        break;
      case 'nodePortAddresses':
        layer.nodePortAddresses = expect<unknown[]>(Array.isArray(value), value, key, 'a list').map((v, i) =>
          expect<string>(typeof v === 'string', v, `${key}[${i}]`, 'a string'),
        );
        break;
      case 'healthzBindAddress':
      case 'metricsBindAddress':
        layer[key] = expect<string>(typeof value === 'string', value, key, 'a string');
        break;
      case 'portRange': {
        // Upstream's userspace-era fields; an empty range is upstream's "any port".
        const text = expect<string>(typeof value === 'string', value, key, 'a string');
        if (text === '') break;
        const range = parsePortRange(text);
        if (range === null) throw new ConfigError(`${key}: ${JSON.stringify(text)} is not FIRST-LAST, FIRST+COUNT or PORT`);
        userspace.portRange = formatPortRange(range);
        break;
      }
      case 'udpIdleTimeout':
        userspace.udpIdleTimeoutMs = duration(value, key);
        break;
      case 'detectLocalMode':
        if (value !== '' && value !== DETECT_LOCAL_MODE) {
          warnings.push(`${source}: ${key} ${JSON.stringify(value)} is not supported yet and is ignored; local traffic is traffic from clusterCIDR`);
        }
        break;
      case 'logging':
        for (const [k, v] of Object.entries(expect<Record<string, unknown>>(isRecord(value), value, key, 'a mapping'))) {
          if (v === null || v === undefined) continue;
          if (k === 'verbosity') layer.verbosity = expect<number>(Number.isInteger(v), v, `${key}.${k}`, 'an integer');
          else warnings.push(`${source}: ${key}.${k} is not supported yet and is ignored`);
        }
        break;
      case 'clientConnection':
        for (const [k, v] of Object.entries(expect<Record<string, unknown>>(isRecord(value), value, key, 'a mapping'))) {
          if (v === null || v === undefined) continue;
          if (k === 'kubeconfig') layer.kubeconfig = expect<string>(typeof v === 'string', v, `${key}.${k}`, 'a string');
          else warnings.push(`${source}: ${key}.${k} is not supported yet and is ignored`);
        }
        break;
      case 'iptables':
        for (const [k, v] of Object.entries(expect<Record<string, unknown>>(isRecord(value), value, key, 'a mapping'))) {
          if (v === null || v === undefined) continue;
          const field = `iptables.${k}`;
          if (k === 'masqueradeAll') iptables.masqueradeAll = expect<boolean>(typeof v === 'boolean', v, field, 'a boolean');
          else if (k === 'masqueradeBit') iptables.masqueradeBit = expect<number>(Number.isInteger(v), v, field, 'an integer');
          else if (k === 'localhostNodePorts') iptables.localhostNodePorts = expect<boolean>(typeof v === 'boolean', v, field, 'a boolean');
          else if (k === 'syncPeriod') layer.syncPeriodMs = duration(v, field);
          else if (k === 'minSyncPeriod') layer.minSyncPeriodMs = duration(v, field);
          else if (UPSTREAM_IPTABLES_FIELDS.has(k)) warnings.push(`${source}: ${field} is not supported yet and is ignored`);
          else warnings.push(`${source}: unknown field ${field} is ignored`);
        }
        break;
      case 'conntrack':
        for (const [k, v] of Object.entries(expect<Record<string, unknown>>(isRecord(value), value, key, 'a mapping'))) {
          // Upstream's pointer fields: null is "not set", as an absent field.
          if (v === null || v === undefined) continue;
          const field = `conntrack.${k}`;
          if (k === 'maxPerCore') conntrack.maxPerCore = expect<number>(Number.isInteger(v), v, field, 'an integer');
          else if (k === 'min') conntrack.min = expect<number>(Number.isInteger(v), v, field, 'an integer');
          else if (k === 'tcpEstablishedTimeout') conntrack.tcpEstablishedTimeoutMs = duration(v, field);
          else if (k === 'tcpCloseWaitTimeout') conntrack.tcpCloseWaitTimeoutMs = duration(v, field);
          else if (k === 'tcpBeLiberal') conntrack.tcpBeLiberal = expect<boolean>(typeof v === 'boolean', v, field, 'a boolean');
          else if (k === 'udpTimeout') conntrack.udpTimeoutMs = duration(v, field);
          else if (k === 'udpStreamTimeout') conntrack.udpStreamTimeoutMs = duration(v, field);
          else warnings.push(`${source}: unknown field ${field} is ignored`);
        }
        break;
      case 'ipvs':
        for (const [k, v] of Object.entries(expect<Record<string, unknown>>(isRecord(value), value, key, 'a mapping'))) {
          if (v === null || v === undefined) continue;
          const field = `ipvs.${k}`;
          if (k === 'scheduler') {
            // Upstream treats an empty scheduler as rr.
            const name = expect<string>(typeof v === 'string', v, field, 'a string');
            if (name !== '') ipvs.scheduler = name as IpvsScheduler;
          } else if (k === 'strictARP') ipvs.strictARP = expect<boolean>(typeof v === 'boolean', v, field, 'a boolean');
          else if (k === 'excludeCIDRs') {
            ipvs.excludeCIDRs = expect<unknown[]>(Array.isArray(v), v, field, 'a list').map((c, i) => expect<string>(typeof c === 'string', c, `${field}[${i}]`, 'a string'));
          } else if (k === 'syncPeriod') ipvs.syncPeriodMs = duration(v, field);
          else if (k === 'minSyncPeriod') ipvs.minSyncPeriodMs = duration(v, field);
          else if (k in IPVS_TIMEOUT_FIELDS) ipvs[IPVS_TIMEOUT_FIELDS[k as keyof typeof IPVS_TIMEOUT_FIELDS]] = duration(v, field);
          else warnings.push(`${source}: unknown field ${field} is ignored`);
        }
        break;
      default:
        if (UPSTREAM_FIELDS.has(key)) warnings.push(`${source}: ${key} is not supported yet and is ignored`);
        else warnings.push(`${source}: unknown field ${key} is ignored`);
    }
  }
  if (Object.keys(iptables).length > 0) layer.iptables = iptables;
  if (Object.keys(conntrack).length > 0) layer.conntrack = conntrack;
  if (Object.keys(userspace).length > 0) layer.userspace = userspace;
  if (Object.keys(ipvs).length > 0) layer.ipvs = ipvs;
  return { layer, warnings };
}

/**
 * The configuration as a KubeProxyConfiguration that loads back, without warnings, to the
 * same configuration: every field this version acts on, and none it does not.
 */
export function formatKubeProxyConfiguration(cfg: ProxyConfig): string {
  return yaml().stringify({
    apiVersion: CONFIG_API_VERSION,
    kind: CONFIG_KIND,
    mode: cfg.mode,
    hostnameOverride: cfg.hostnameOverride,
    clientConnection: { kubeconfig: cfg.kubeconfig },
    clusterCIDR: cfg.clusterCIDRs.join(','),
    detectLocalMode: DETECT_LOCAL_MODE,
    nodePortAddresses: cfg.nodePortAddresses,
    healthzBindAddress: cfg.healthzBindAddress,
    metricsBindAddress: cfg.metricsBindAddress,
    iptables: {
      masqueradeAll: cfg.iptables.masqueradeAll,
      masqueradeBit: cfg.iptables.masqueradeBit,
      localhostNodePorts: cfg.iptables.localhostNodePorts,
      syncPeriod: formatDuration(cfg.syncPeriodMs),
      minSyncPeriod: formatDuration(cfg.minSyncPeriodMs),
    },
    // Only when set: without it, upstream's defaults apply, as they do when this loads back.
    ...(cfg.conntrack
      ? {
          conntrack: {
            maxPerCore: cfg.conntrack.maxPerCore,
            min: cfg.conntrack.min,
            tcpEstablishedTimeout: formatDuration(cfg.conntrack.tcpEstablishedTimeoutMs),
            tcpCloseWaitTimeout: formatDuration(cfg.conntrack.tcpCloseWaitTimeoutMs),
            tcpBeLiberal: cfg.conntrack.tcpBeLiberal,
            udpTimeout: formatDuration(cfg.conntrack.udpTimeoutMs),
            udpStreamTimeout: formatDuration(cfg.conntrack.udpStreamTimeoutMs),
          },
        }
      : {}),
    // userspace mode's upstream fields, only when set; its scheduler and max age are flags only.
    ...(cfg.userspace ? { portRange: cfg.userspace.portRange, udpIdleTimeout: formatDuration(cfg.userspace.udpIdleTimeoutMs) } : {}),
    // Only when it says something: a configuration of another mode loads back the same without it.
    ...(cfg.mode === 'ipvs' || JSON.stringify(cfg.ipvs) !== JSON.stringify(DEFAULT_IPVS)
      ? {
          ipvs: {
            scheduler: cfg.ipvs.scheduler,
            strictARP: cfg.ipvs.strictARP,
            excludeCIDRs: cfg.ipvs.excludeCIDRs,
            ...(cfg.ipvs.syncPeriodMs === null ? {} : { syncPeriod: formatDuration(cfg.ipvs.syncPeriodMs) }),
            ...(cfg.ipvs.minSyncPeriodMs === null ? {} : { minSyncPeriod: formatDuration(cfg.ipvs.minSyncPeriodMs) }),
            tcpTimeout: formatDuration(cfg.ipvs.tcpTimeoutMs),
            tcpFinTimeout: formatDuration(cfg.ipvs.tcpFinTimeoutMs),
            udpTimeout: formatDuration(cfg.ipvs.udpTimeoutMs),
          },
        }
      : {}),
    logging: { verbosity: cfg.verbosity },
  });
}
