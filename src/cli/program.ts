/**
 * Command-line parsing with kube-proxy's own flag names. Produces the effective
 * configuration (defaults < --config file < flags) and what to do with it.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ConfigError, loadKubeProxyConfiguration, splitList, validateConfig } from '../config/kubeproxyconfig.js';
import { parseDuration } from '../config/duration.js';
import { mergeConfig, PROXY_MODES, type ConfigLayer, type ProxyConfig, type ProxyMode } from '../config/options.js';

export interface Invocation {
  config: ProxyConfig;
  dryRun: boolean;
  cleanup: boolean;
  /** Manifest path, `-` for stdin, or null to use the API server. */
  fromFile: string | null;
  verbosity: number;
  warnings: string[];
}

export interface ProgramIO {
  readFile(path: string): string;
}

/** Go-style booleans: `--flag`, `--flag=true`, `--flag=false`. */
function boolValue(v: string | boolean): boolean {
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw new InvalidArgumentError('want true or false');
}

function durationValue(v: string): number {
  const ms = parseDuration(v);
  if (ms === null) throw new InvalidArgumentError('want a duration like 30s, 1m or 500ms');
  return ms;
}

function intValue(v: string): number {
  if (!/^-?[0-9]+$/.test(v)) throw new InvalidArgumentError('want an integer');
  return Number.parseInt(v, 10);
}

export function buildProgram(): Command {
  return new Command('kube-proxy-ts')
    .description('A Kubernetes service proxy you can read, trace and trust.')
    .addOption(new Option('--proxy-mode <mode>', 'which dataplane to program').choices(PROXY_MODES))
    .option('--hostname-override <name>', 'this node\'s name, when it is not the hostname')
    .option('--cluster-cidr <cidrs>', 'pod CIDRs (comma-separated, one per family); traffic from outside them is masqueraded')
    .option('--masquerade-all [bool]', 'SNAT all traffic sent to service IPs', boolValue)
    .option('--nodeport-addresses <cidrs>', 'node addresses that accept node ports: CIDRs or "primary" (comma-separated)')
    .option('--iptables-masquerade-bit <bit>', 'packet mark bit flagging traffic for SNAT (0-31)', intValue)
    .option('--iptables-localhost-nodeports [bool]', 'accept node ports on 127.0.0.0/8 (IPv4)', boolValue)
    .option('--config <file>', 'a KubeProxyConfiguration (v1alpha1) file; flags override it')
    .option('--kubeconfig <file>', 'kubeconfig of the API server (default: in-cluster configuration)')
    .option('--iptables-sync-period <duration>', 'longest time between syncs (default 30s)', durationValue)
    .option('--iptables-min-sync-period <duration>', 'shortest time between syncs; changes are coalesced (default 1s)', durationValue)
    .option('--healthz-bind-address <ip:port>', 'health server address (default 0.0.0.0:10256)')
    .option('--metrics-bind-address <ip:port>', 'metrics server address (default 127.0.0.1:10249)')
    .option('--cleanup', 'remove every rule kube-proxy-ts (or kube-proxy) created, and exit', false)
    .option('--dry-run', 'print what would be programmed, and exit', false)
    .option('--from-file <path>', 'read cluster objects from manifests instead of an API server ("-" for stdin)')
    .option('-v, --v <level>', 'log verbosity', intValue, 0)
    .helpOption('-h, --help', 'show this help')
    .showHelpAfterError(false);
}

function flagLayer(cmd: Command): ConfigLayer {
  const o = cmd.opts();
  const given = (name: string) => cmd.getOptionValueSource(name) === 'cli';
  const layer: ConfigLayer = {};
  const iptables: NonNullable<ConfigLayer['iptables']> = {};
  if (given('proxyMode')) layer.mode = o.proxyMode as ProxyMode;
  if (given('hostnameOverride')) layer.hostnameOverride = o.hostnameOverride as string;
  if (given('clusterCidr')) layer.clusterCIDRs = splitList(o.clusterCidr as string);
  if (given('nodeportAddresses')) layer.nodePortAddresses = splitList(o.nodeportAddresses as string);
  if (given('kubeconfig')) layer.kubeconfig = o.kubeconfig as string;
  if (given('healthzBindAddress')) layer.healthzBindAddress = o.healthzBindAddress as string;
  if (given('metricsBindAddress')) layer.metricsBindAddress = o.metricsBindAddress as string;
  if (given('iptablesSyncPeriod')) iptables.syncPeriodMs = o.iptablesSyncPeriod as number;
  if (given('iptablesMinSyncPeriod')) iptables.minSyncPeriodMs = o.iptablesMinSyncPeriod as number;
  if (given('masqueradeAll')) iptables.masqueradeAll = o.masqueradeAll as boolean;
  if (given('iptablesMasqueradeBit')) iptables.masqueradeBit = o.iptablesMasqueradeBit as number;
  if (given('iptablesLocalhostNodeports')) iptables.localhostNodePorts = o.iptablesLocalhostNodeports as boolean;
  if (Object.keys(iptables).length > 0) layer.iptables = iptables;
  return layer;
}

/**
 * Parses argv (without node and script) into an invocation. Throws CommanderError for
 * bad flags and ConfigError for a bad configuration.
 */
export function parseInvocation(argv: string[], io: ProgramIO, defaultHostname: string): Invocation {
  const cmd = buildProgram().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts();
  const warnings: string[] = [];
  const layers: ConfigLayer[] = [];
  if (typeof o.config === 'string') {
    let text: string;
    try {
      text = io.readFile(o.config);
    } catch (err) {
      throw new ConfigError(`--config ${o.config}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const loaded = loadKubeProxyConfiguration(text, o.config);
    layers.push(loaded.layer);
    warnings.push(...loaded.warnings);
  }
  layers.push(flagLayer(cmd));
  const config = validateConfig(mergeConfig(...layers));
  if (config.hostnameOverride === '') config.hostnameOverride = defaultHostname.toLowerCase();
  return {
    config,
    dryRun: o.dryRun as boolean,
    cleanup: o.cleanup as boolean,
    fromFile: typeof o.fromFile === 'string' ? o.fromFile : null,
    verbosity: o.v as number,
    warnings,
  };
}

export { CommanderError };
