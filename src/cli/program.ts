/**
 * Command-line parsing with kube-proxy's own flag names. Produces the effective
 * configuration (defaults < --config file < flags) and what to do with it.
 */
import { Command, CommanderError, InvalidArgumentError, Option, type OptionValues } from 'commander';
import {
  ConfigError,
  formatKubeProxyConfiguration,
  loadKubeProxyConfiguration,
  splitList,
  validateConfig,
} from '../config/kubeproxyconfig.js';
import { parseDuration } from '../config/duration.js';
import { IPVS_SCHEDULERS, mergeConfig, PROXY_MODES, USERSPACE_DATA_PATHS, type ConfigLayer, type IpvsScheduler, type ProxyConfig, type ProxyModeName, type UserspaceDataPath } from '../config/options.js';
import { MAX_CONNECTION_AGE_ANNOTATION } from '../kube/objects.js';
import { formatPortRange, parsePortRange } from '../config/portrange.js';
import { parseHostPort, type HostPort } from '../trace/packet.js';
import type { DestinationSpec, Origin, SourceSpec, TraceProtocol, TraceQuery } from '../trace/types.js';

export interface Invocation {
  config: ProxyConfig;
  dryRun: boolean;
  cleanup: boolean;
  /** Manifest path, `-` for stdin, or null to use the API server. */
  fromFile: string | null;
  verbosity: number;
  /** `--write-config-to`: where (`-` for stdout) and what, in place of anything else. */
  writeConfig: { path: string; text: string } | null;
  warnings: string[];
  /** `--explain`: with --dry-run, each service port's endpoints and the sets its rules use. */
  explain: boolean;
  /** The `trace` subcommand's packet, or null for the proxy itself. */
  trace: TraceQuery | null;
  /** Whether the node's name was given (flag or file), not taken from the host name. */
  hostnameGiven: boolean;
  /** `--version` was asked for. */
  version: boolean;
}

/** `--help` was asked for: the help of the command it was given to. */
export class HelpRequested extends Error {
  constructor(readonly text: string) {
    super('help requested');
  }
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

function portRangeValue(v: string): string {
  const r = parsePortRange(v);
  if (r === null) throw new InvalidArgumentError('want FIRST-LAST, FIRST+COUNT or PORT, within 1-65535');
  return formatPortRange(r);
}

function intValue(v: string): number {
  if (!/^-?[0-9]+$/.test(v)) throw new InvalidArgumentError('want an integer');
  return Number.parseInt(v, 10);
}

function hostPortValue(v: string): HostPort {
  const hp = parseHostPort(v);
  if (!hp) throw new InvalidArgumentError('want IP, IP:PORT or [IPv6]:PORT');
  return hp;
}

const DNS_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const SERVICE_DESTINATION = new RegExp(`^(${DNS_LABEL})/(${DNS_LABEL}):([A-Za-z0-9][-A-Za-z0-9]*)$`);
const NODE_PORT_DESTINATION = /^nodeport:([^:]+):([0-9]{1,5})$/;
const POD_SOURCE = new RegExp(`^(${DNS_LABEL})/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$`);

function destinationValue(v: string): DestinationSpec {
  const np = NODE_PORT_DESTINATION.exec(v);
  if (np) {
    const port = Number(np[2]);
    if (port < 1 || port > 65535) throw new InvalidArgumentError(`${np[2]} is not a port`);
    return { kind: 'nodePort', node: np[1]!, port };
  }
  const hp = parseHostPort(v);
  if (hp && hp.port !== null) return { kind: 'address', ip: hp.ip, port: hp.port };
  const svc = SERVICE_DESTINATION.exec(v);
  if (svc) return { kind: 'service', namespace: svc[1]!, name: svc[3]!, port: svc[5]! };
  throw new InvalidArgumentError('want IP:PORT, [IPv6]:PORT, NAMESPACE/SERVICE:PORT (number or name) or nodeport:NODE:PORT');
}

function sourceValue(v: string): SourceSpec {
  const hp = parseHostPort(v);
  if (hp) return { kind: 'address', ip: hp.ip, port: hp.port };
  const pod = POD_SOURCE.exec(v);
  if (pod) return { kind: 'pod', namespace: pod[1]!, name: pod[3]! };
  throw new InvalidArgumentError('want IP, IP:PORT, [IPv6]:PORT or NAMESPACE/POD');
}

// The flags that shape the rendered rules and say where the cluster is: trace takes them too.
const RENDER_FLAGS = [
  '--proxy-mode',
  '--hostname-override',
  '--cluster-cidr',
  '--masquerade-all',
  '--nodeport-addresses',
  '--iptables-masquerade-bit',
  '--iptables-localhost-nodeports',
  '--conntrack-tcp-be-liberal',
  '--proxy-port-range',
  '--userspace-scheduler',
  '--userspace-max-connection-age',
  '--userspace-workers',
  '--userspace-data-path',
  '--ipvs-scheduler',
  '--config',
  '--from-file',
  '--kubeconfig',
];

function traceCommand(program: Command): Command {
  const trace = new Command('trace')
    .description('show where a packet goes through the rules this node would program, and why')
    .requiredOption('--dst <where>', 'destination: IP:PORT, NAMESPACE/SERVICE:PORT (number or name), or nodeport:NODE:PORT', destinationValue)
    .option('--src <from>', 'source: IP[:PORT], or NAMESPACE/POD when the input has Pods (default with --from node: the node\'s own address)', sourceValue)
    .addOption(new Option('--protocol <protocol>', 'transport protocol (default tcp, or the protocol of the service port named)').choices(['tcp', 'udp', 'sctp']).default('tcp'))
    .addOption(new Option('--from <where>', 'where the packet enters the node from').choices(['pod', 'node', 'external']).default('pod'))
    .addOption(new Option('--output <format>', 'text for people, json for tools').choices(['text', 'json']).default('text'));
  for (const o of program.options) if (o.long && RENDER_FLAGS.includes(o.long)) trace.addOption(o);
  return trace.helpOption('-h, --help', 'show this help').showHelpAfterError(false);
}

const GROUP = {
  common: 'Proxy:',
  iptables: 'iptables mode:',
  ipvs: 'ipvs mode:',
  conntrack: 'Conntrack (set by the node agent at start-up):',
  userspace: 'userspace mode:',
  agent: 'Node agent:',
  offline: 'Offline (--dry-run, trace):',
  other: 'Other:',
};

export function buildProgram(): Command {
  const group = (heading: string, option: Option) => option.helpGroup(heading);
  const program = new Command('kube-proxy-ts')
    .description('A Kubernetes service proxy you can read, trace and trust.')
    .addOption(group(GROUP.common, new Option('--proxy-mode <mode>', 'which dataplane to program').choices(PROXY_MODES)))
    .addOption(group(GROUP.common, new Option('--hostname-override <name>', 'this node\'s name, when it is not the hostname')))
    .addOption(group(GROUP.common, new Option('--cluster-cidr <cidrs>', 'pod CIDRs (comma-separated, one per family); traffic from outside them is masqueraded')))
    .addOption(group(GROUP.common, new Option('--masquerade-all [bool]', 'SNAT all traffic sent to service IPs').argParser(boolValue)))
    .addOption(group(GROUP.common, new Option('--nodeport-addresses <cidrs>', 'node addresses that accept node ports: CIDRs or "primary" (comma-separated)')))
    .addOption(group(GROUP.common, new Option('--config <file>', 'a KubeProxyConfiguration (v1alpha1) file; flags override it')))
    .addOption(group(GROUP.iptables, new Option('--iptables-masquerade-bit <bit>', 'packet mark bit flagging traffic for SNAT (0-31)').argParser(intValue)))
    .addOption(group(GROUP.iptables, new Option('--iptables-localhost-nodeports [bool]', 'accept node ports on 127.0.0.0/8 (IPv4)').argParser(boolValue)))
    .addOption(group(GROUP.iptables, new Option('--iptables-sync-period <duration>', 'longest time between syncs (default 30s)').argParser(durationValue)))
    .addOption(group(GROUP.iptables, new Option('--iptables-min-sync-period <duration>', 'shortest time between syncs; changes are coalesced (default 1s)').argParser(durationValue)))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-scheduler <name>', `virtual server scheduler: ${IPVS_SCHEDULERS.join(', ')} (default rr)`)))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-strict-arp [bool]', 'set arp_ignore=1 and arp_announce=2: the node answers no ARP for kube-ipvs0\'s addresses on its other links').argParser(boolValue)))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-exclude-cidrs <cidrs>', 'virtual servers in these CIDRs (comma-separated) are not ours: never deleted')))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-sync-period <duration>', 'longest time between syncs in ipvs mode (default: --iptables-sync-period)').argParser(durationValue)))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-min-sync-period <duration>', 'shortest time between syncs in ipvs mode (default: --iptables-min-sync-period)').argParser(durationValue)))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-tcp-timeout <duration>', 'idle timeout of IPVS TCP connections; 0 leaves it as it is').argParser(durationValue)))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-tcpfin-timeout <duration>', 'timeout of IPVS TCP connections after a FIN; 0 leaves it as it is').argParser(durationValue)))
    .addOption(group(GROUP.ipvs, new Option('--ipvs-udp-timeout <duration>', 'timeout of IPVS UDP flows; 0 leaves it as it is').argParser(durationValue)))
    .addOption(group(GROUP.userspace, new Option('--userspace-scheduler <name>', 'how a listener picks an endpoint: rr (round-robin) or lc (least connections) (default rr)').choices(['rr', 'lc'])))
    .addOption(
      group(
        GROUP.userspace,
        new Option('--userspace-max-connection-age <duration>', `end TCP connections older than this at a safe point, so clients reconnect and spread over all endpoints; 0 never (default 0; per Service: annotation ${MAX_CONNECTION_AGE_ANNOTATION})`).argParser(durationValue),
      ),
    )
    .addOption(group(GROUP.userspace, new Option('--userspace-data-path <path>', 'what carries TCP service traffic: splice (epoll and splice in a thread of the agent) or node (Node sockets) (default splice)').choices(USERSPACE_DATA_PATHS)))
    .addOption(group(GROUP.userspace, new Option('--userspace-workers <n>', 'worker processes carrying TCP service traffic with the node data path (e.g. one per core); 0 or 1: the agent itself (default 0)').argParser(intValue)))
    .addOption(group(GROUP.userspace, new Option('--udp-timeout <duration>', 'how long an idle UDP client session is kept (default 250ms)').argParser(durationValue)))
    .addOption(group(GROUP.userspace, new Option('--proxy-port-range <range>', 'local ports the listeners take: FIRST-LAST, FIRST+COUNT or PORT (default 28000-29999)').argParser(portRangeValue)))
    .addOption(group(GROUP.conntrack, new Option('--conntrack-max-per-core <n>', 'nf_conntrack_max per CPU; 0 leaves nf_conntrack_max as it is and ignores --conntrack-min (default 32768)').argParser(intValue)))
    .addOption(group(GROUP.conntrack, new Option('--conntrack-min <n>', 'nf_conntrack_max at least this, whatever the CPUs (default 131072)').argParser(intValue)))
    .addOption(group(GROUP.conntrack, new Option('--conntrack-tcp-timeout-established <duration>', 'idle timeout of established TCP connections; 0 leaves it as it is (default 24h)').argParser(durationValue)))
    .addOption(group(GROUP.conntrack, new Option('--conntrack-tcp-timeout-close-wait <duration>', 'timeout of TCP connections in CLOSE_WAIT; 0 leaves it as it is (default 1h)').argParser(durationValue)))
    .addOption(group(GROUP.conntrack, new Option('--conntrack-tcp-be-liberal [bool]', 'set nf_conntrack_tcp_be_liberal to 1: out-of-window TCP packets are tracked, not INVALID').argParser(boolValue)))
    .addOption(group(GROUP.conntrack, new Option('--conntrack-udp-timeout <duration>', 'idle timeout of UDP flows without a reply (default 0: leave it as it is)').argParser(durationValue)))
    .addOption(group(GROUP.conntrack, new Option('--conntrack-udp-timeout-stream <duration>', 'idle timeout of UDP flows that saw a reply (default 0: leave it as it is)').argParser(durationValue)))
    .addOption(group(GROUP.agent, new Option('--kubeconfig <file>', 'kubeconfig of the API server (default: in-cluster configuration)')))
    .addOption(group(GROUP.agent, new Option('--healthz-bind-address <ip:port>', 'health server address (default 0.0.0.0:10256)')))
    .addOption(group(GROUP.agent, new Option('--metrics-bind-address <ip:port>', 'metrics server address (default 127.0.0.1:10249)')))
    .addOption(group(GROUP.agent, new Option('--cleanup', 'remove every rule kube-proxy-ts (or kube-proxy) created, and exit').default(false)))
    .addOption(group(GROUP.agent, new Option('-v, --v <level>', 'log verbosity').argParser(intValue).default(0)))
    .addOption(group(GROUP.offline, new Option('--dry-run', 'print what would be programmed, and exit').default(false)))
    .addOption(group(GROUP.offline, new Option('--explain', 'with --dry-run: per service port, its endpoints and which rules use which').default(false)))
    .addOption(
      group(
        GROUP.offline,
        new Option('--from-file <path>', 'read cluster objects from manifests ("-" for stdin) instead of the API server of --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster'),
      ),
    )
    .addOption(group(GROUP.other, new Option('--write-config-to <file>', 'write the effective configuration as a KubeProxyConfiguration ("-" for stdout), and exit')))
    .addOption(group(GROUP.other, new Option('--version', 'print the version and exit').default(false)))
    .helpOption('-h, --help', 'show this help')
    .showHelpAfterError(false);
  program.options.find((o) => o.long === '--help')?.helpGroup(GROUP.other);
  // Without an action of its own, a program with subcommands would answer plain flags with help.
  return program.enablePositionalOptions().action(() => {}).addCommand(traceCommand(program));
}

function flagLayer(cmd: Command): ConfigLayer {
  const o = cmd.opts();
  const given = (name: string) => cmd.getOptionValueSource(name) === 'cli';
  const layer: ConfigLayer = {};
  const iptables: NonNullable<ConfigLayer['iptables']> = {};
  if (given('proxyMode')) layer.mode = o.proxyMode as ProxyModeName;
  if (given('hostnameOverride')) layer.hostnameOverride = o.hostnameOverride as string;
  if (given('clusterCidr')) layer.clusterCIDRs = splitList(o.clusterCidr as string);
  if (given('nodeportAddresses')) layer.nodePortAddresses = splitList(o.nodeportAddresses as string);
  if (given('kubeconfig')) layer.kubeconfig = o.kubeconfig as string;
  if (given('healthzBindAddress')) layer.healthzBindAddress = o.healthzBindAddress as string;
  if (given('metricsBindAddress')) layer.metricsBindAddress = o.metricsBindAddress as string;
  if (given('v')) layer.verbosity = o.v as number;
  if (given('iptablesSyncPeriod')) layer.syncPeriodMs = o.iptablesSyncPeriod as number;
  if (given('iptablesMinSyncPeriod')) layer.minSyncPeriodMs = o.iptablesMinSyncPeriod as number;
  if (given('masqueradeAll')) iptables.masqueradeAll = o.masqueradeAll as boolean;
  if (given('iptablesMasqueradeBit')) iptables.masqueradeBit = o.iptablesMasqueradeBit as number;
  if (given('iptablesLocalhostNodeports')) iptables.localhostNodePorts = o.iptablesLocalhostNodeports as boolean;
  if (Object.keys(iptables).length > 0) layer.iptables = iptables;
  const conntrack: NonNullable<ConfigLayer['conntrack']> = {};
  if (given('conntrackMaxPerCore')) conntrack.maxPerCore = o.conntrackMaxPerCore as number;
  if (given('conntrackMin')) conntrack.min = o.conntrackMin as number;
  if (given('conntrackTcpTimeoutEstablished')) conntrack.tcpEstablishedTimeoutMs = o.conntrackTcpTimeoutEstablished as number;
  if (given('conntrackTcpTimeoutCloseWait')) conntrack.tcpCloseWaitTimeoutMs = o.conntrackTcpTimeoutCloseWait as number;
  if (given('conntrackTcpBeLiberal')) conntrack.tcpBeLiberal = o.conntrackTcpBeLiberal as boolean;
  if (given('conntrackUdpTimeout')) conntrack.udpTimeoutMs = o.conntrackUdpTimeout as number;
  if (given('conntrackUdpTimeoutStream')) conntrack.udpStreamTimeoutMs = o.conntrackUdpTimeoutStream as number;
  if (Object.keys(conntrack).length > 0) layer.conntrack = conntrack;
  const userspace: NonNullable<ConfigLayer['userspace']> = {};
  if (given('userspaceScheduler')) userspace.scheduler = o.userspaceScheduler as 'rr' | 'lc';
  if (given('userspaceMaxConnectionAge')) userspace.maxConnectionAgeMs = o.userspaceMaxConnectionAge as number;
  if (given('userspaceWorkers')) userspace.workers = o.userspaceWorkers as number;
  if (given('userspaceDataPath')) userspace.dataPath = o.userspaceDataPath as UserspaceDataPath;
  if (given('udpTimeout')) userspace.udpIdleTimeoutMs = o.udpTimeout as number;
  if (given('proxyPortRange')) userspace.portRange = o.proxyPortRange as string;
  if (Object.keys(userspace).length > 0) layer.userspace = userspace;
  const ipvs: NonNullable<ConfigLayer['ipvs']> = {};
  if (given('ipvsScheduler')) ipvs.scheduler = o.ipvsScheduler as IpvsScheduler;
  if (given('ipvsStrictArp')) ipvs.strictARP = o.ipvsStrictArp as boolean;
  if (given('ipvsExcludeCidrs')) ipvs.excludeCIDRs = splitList(o.ipvsExcludeCidrs as string);
  if (given('ipvsSyncPeriod')) ipvs.syncPeriodMs = o.ipvsSyncPeriod as number;
  if (given('ipvsMinSyncPeriod')) ipvs.minSyncPeriodMs = o.ipvsMinSyncPeriod as number;
  if (given('ipvsTcpTimeout')) ipvs.tcpTimeoutMs = o.ipvsTcpTimeout as number;
  if (given('ipvsTcpfinTimeout')) ipvs.tcpFinTimeoutMs = o.ipvsTcpfinTimeout as number;
  if (given('ipvsUdpTimeout')) ipvs.udpTimeoutMs = o.ipvsUdpTimeout as number;
  if (Object.keys(ipvs).length > 0) layer.ipvs = ipvs;
  return layer;
}

/**
 * Parses argv (without node and script) into an invocation. Throws CommanderError for
 * bad flags and ConfigError for a bad configuration.
 */
export function parseInvocation(argv: string[], io: ProgramIO, defaultHostname: string): Invocation {
  const cmd = buildProgram();
  let help = '';
  const ran: { sub: Command | null } = { sub: null };
  cmd.hook('preSubcommand', (_program, sub) => {
    ran.sub = sub;
  });
  for (const c of [cmd, ...cmd.commands]) {
    c.exitOverride().configureOutput({ writeErr: () => {}, writeOut: (t) => (help += t) });
  }
  try {
    cmd.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && err.code === 'commander.helpDisplayed') throw new HelpRequested(help);
    throw err;
  }
  const o = cmd.opts();
  // A subcommand's flags follow its name: the renderer's come from it, the proxy's own from the root.
  const flags = ran.sub ?? cmd;
  const f = flags.opts();
  const warnings: string[] = [];
  const layers: ConfigLayer[] = [];
  if (typeof f.config === 'string') {
    let text: string;
    try {
      text = io.readFile(f.config);
    } catch (err) {
      throw new ConfigError(`--config ${f.config}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const loaded = loadKubeProxyConfiguration(text, f.config);
    layers.push(loaded.layer);
    warnings.push(...loaded.warnings);
  }
  layers.push(flagLayer(flags));
  const config = validateConfig(mergeConfig(...layers));
  // Written before the host name fills in: one file serves every node, as upstream's does.
  const writeConfig = typeof o.writeConfigTo === 'string' ? { path: o.writeConfigTo, text: formatKubeProxyConfiguration(config) } : null;
  const hostnameGiven = config.hostnameOverride !== '';
  if (!hostnameGiven) config.hostnameOverride = defaultHostname.toLowerCase();
  return {
    config,
    dryRun: o.dryRun as boolean,
    cleanup: o.cleanup as boolean,
    fromFile: typeof f.fromFile === 'string' ? f.fromFile : null,
    verbosity: config.verbosity,
    writeConfig,
    warnings,
    explain: o.explain as boolean,
    trace: ran.sub ? traceQuery(ran.sub) : null,
    hostnameGiven,
    version: o.version as boolean,
  };
}

function traceQuery(cmd: Command): TraceQuery {
  const o = cmd.opts();
  const from = o.from as Origin;
  if (o.src === undefined && from !== 'node') throw new InvalidArgumentError(`trace --from ${from} needs --src`);
  return {
    src: (o.src as SourceSpec | undefined) ?? null,
    dst: o.dst as DestinationSpec,
    protocol: cmd.getOptionValueSource('protocol') === 'cli' ? (o.protocol as TraceProtocol) : null,
    from,
    output: o.output as TraceQuery['output'],
  };
}

export { CommanderError };
