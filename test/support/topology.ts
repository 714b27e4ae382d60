/**
 * A fake cluster made of Linux network namespaces, with real traffic, for end-to-end tests.
 *
 *   lan namespace:      bridge br0, 10.99.0.254/24 and fd00:99::fe/64 (forwarder address)
 *     node i (1-based): eth0 10.99.0.(10+i)/24 and fd00:99::(10+i)/64 on br0;
 *                       bridge cni0 10.244.i.1/24 and fd00:10:244:I::1/64 (I = i in hex);
 *                       ip_forward=1, IPv6 forwarding=1, bridge-nf-call-iptables=1,
 *                       bridge-nf-call-ip6tables=1 (route_localnet is the proxy's to set,
 *                       as kube-proxy does for localhost node ports); routes to every other
 *                       node's pod CIDRs (both families) via that node's LAN IPs
 *       pod j (1-based): eth0 10.244.i.(10+j)/24 and fd00:10:244:I::(10+j)/64 on cni0
 *                       (hairpin on), default routes via 10.244.i.1 and fd00:10:244:I::1,
 *                       runs echo-server.mjs (dual-stack) on its TCP and UDP ports
 *     external:         eth0 10.99.0.200/24 and fd00:99::c8/64 on br0, no route to pod CIDRs
 *
 * IPv6 addresses are added `nodad`, so they are usable at once; both bridges run without
 * multicast snooping, so neighbour discovery never depends on an MLD report having been
 * seen. Echo servers answer `<name> <IPv4>:<port>` to IPv4 clients and
 * `<name> [<IPv6>]:<port>` to IPv6 ones (see clientIP()).
 *
 * Nothing is created or changed in the root namespace: every veth is created inside a
 * test namespace with its peer moved straight into another one. Namespace names carry the
 * pid and a random suffix; destroy() kills every process started here and deletes every
 * namespace, and a process 'exit' handler does the same as a last resort.
 *
 * Probes (tcp, udp, tcpMany) run as short-lived node processes inside the client namespace;
 * everything that spawns is asynchronous so a test may serve HTTP in-process meanwhile.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandResult } from './netns.js';

export type { CommandResult } from './netns.js';

export interface PodSpec {
  name: string;
  tcp?: number[];
  udp?: number[];
}

export interface NodeSpec {
  name: string;
  pods?: PodSpec[];
}

export interface ClusterSpec {
  nodes: NodeSpec[];
  /** Adds the "external" client namespace (10.99.0.200) on the LAN. */
  external?: boolean;
}

export interface PodInfo {
  name: string;
  node: string;
  ns: string;
  ip: string;
  /** IPv6 address (RFC 5952 text), fd00:10:244:I::(10+j). */
  ip6: string;
  tcp: number[];
  udp: number[];
  /** Interface name of the pod's veth inside the node namespace (a cni0 port). */
  hostVeth: string;
}

export interface NodeInfo {
  name: string;
  /** 1-based position in the spec. */
  index: number;
  ns: string;
  /** LAN address (eth0). */
  ip: string;
  /** IPv6 LAN address (eth0), fd00:99::(10+i). */
  ip6: string;
  podCIDR: string;
  /** IPv6 pod CIDR, fd00:10:244:I::/64 (I = index in hex, inside fd00:10:244::/56). */
  podCIDR6: string;
  /** cni0 address, the pods' default gateway. */
  gateway: string;
  /** cni0 IPv6 address, the pods' IPv6 default gateway. */
  gateway6: string;
  pods: PodInfo[];
}

export interface ExternalInfo {
  ns: string;
  ip: string;
  ip6: string;
}

export type ProbeResult =
  | { ok: true; pod: string; client: string; answer: string }
  | { ok: false; error: 'refused' | 'timeout' | 'unreachable' | (string & {}) };

export interface ProbeOptions {
  /** Per connection / datagram; default 2000. */
  timeoutMs?: number;
}

export interface UdpProbeOptions extends ProbeOptions {
  /** Bind the client to this source port (e.g. to hit the same conntrack entry again). */
  sourcePort?: number;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Resolve spawnIn only once stdout or stderr matches this. */
  ready?: string | RegExp;
  /** Default 10000. */
  readyTimeoutMs?: number;
}

/** A namespace given by name, or anything carrying one (NodeInfo, PodInfo, ExternalInfo). */
export type Where = string | { ns: string };

export const LAN_CIDR = '10.99.0.0/24';
export const FORWARDER_IP = '10.99.0.254';
export const EXTERNAL_IP = '10.99.0.200';
export const LAN_CIDR6 = 'fd00:99::/64';
export const FORWARDER_IP6 = 'fd00:99::fe';
export const EXTERNAL_IP6 = 'fd00:99::c8';
/** Every node's IPv6 pod CIDR lies inside this (one /64 per node). */
export const CLUSTER_CIDR6 = 'fd00:10:244::/56';

/**
 * The client address an echo server saw, without its port: `10.0.0.1:5000` -> `10.0.0.1`,
 * `[fd00::1]:5000` -> `fd00::1`. Throws for a failed probe.
 */
export function clientIP(r: ProbeResult): string {
  if (!r.ok) throw new Error(`probe failed: ${r.error}`);
  const m = /^\[([^\]]+)\]:\d+$/.exec(r.client);
  return m ? m[1]! : (r.client.split(':')[0] ?? '');
}

const OUTPUT_CAP = 1 << 20;

function scriptDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // From source (vitest) the scripts sit next to this file; from dist/test/support, tsc does
  // not copy .mjs files, so look back in the source tree.
  for (const dir of [here, resolve(here, '../../../test/support')]) {
    if (existsSync(join(dir, 'echo-server.mjs'))) return dir;
  }
  throw new Error(`topology: cannot find echo-server.mjs near ${here}`);
}

const SCRIPTS = scriptDir();
/** `node ECHO_SERVER_SCRIPT NAME [--tcp PORT]... [--udp PORT]...`; prints READY when listening. */
export const ECHO_SERVER_SCRIPT = join(SCRIPTS, 'echo-server.mjs');
const ECHO_SERVER = ECHO_SERVER_SCRIPT;
const PROBE = join(SCRIPTS, 'probe.mjs');
const FORWARDER = join(SCRIPTS, 'unix-forwarder.mjs');

function nsOf(where: Where): string {
  return typeof where === 'string' ? where : where.ns;
}

function sanitize(name: string): string {
  const s = name.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 40);
  return s || 'x';
}

function runSync(cmd: string, args: string[], input?: string): CommandResult {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function must(cmd: string, args: string[], input?: string): CommandResult {
  const r = runSync(cmd, args, input);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}${input ? `\ninput:\n${input}` : ''}`);
  }
  return r;
}

/** Runs a command asynchronously; never throws for a non-zero status. */
function runAsync(cmd: string, args: string[], input?: string, killAfterMs?: number): Promise<CommandResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(err);
    });
    child.on('close', (status) => {
      if (timer) clearTimeout(timer);
      resolvePromise({ status, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

/** A long-running process inside a namespace, in its own process group. */
export class NsProcess {
  readonly ns: string;
  readonly command: string[];
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit code (or signal name) when the process has exited. */
  readonly exited: Promise<number | string>;
  private out = '';
  private exitedWith: number | string | undefined;
  private listeners = new Set<() => void>();

  constructor(ns: string, cmd: string, args: string[], opts: SpawnOptions = {}) {
    this.ns = ns;
    this.command = [cmd, ...args];
    // `ip netns exec` execs the command in place (no fork), so the pid is the command's.
    this.child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    if (this.child.pid === undefined) throw new Error(`spawn ${cmd} in ${ns} failed`);
    this.pid = this.child.pid;
    const append = (d: string) => {
      this.out += d;
      if (this.out.length > OUTPUT_CAP) this.out = this.out.slice(-OUTPUT_CAP);
      for (const l of this.listeners) l();
    };
    this.child.stdout?.setEncoding('utf8').on('data', append);
    this.child.stderr?.setEncoding('utf8').on('data', append);
    this.exited = new Promise((resolvePromise) => {
      this.child.on('exit', (code, signal) => {
        this.exitedWith = code ?? signal ?? 'unknown';
        for (const l of this.listeners) l();
        resolvePromise(this.exitedWith);
      });
      this.child.on('error', (err) => {
        this.exitedWith = `spawn error: ${err.message}`;
        for (const l of this.listeners) l();
        resolvePromise(this.exitedWith);
      });
    });
  }

  /** Combined stdout and stderr so far (last 1 MiB). */
  get output(): string {
    return this.out;
  }

  get running(): boolean {
    return this.exitedWith === undefined;
  }

  /** Waits until the output matches; rejects on timeout or if the process exits first. */
  waitForOutput(pattern: string | RegExp, timeoutMs = 10_000): Promise<void> {
    const matches = () => (typeof pattern === 'string' ? this.out.includes(pattern) : pattern.test(this.out));
    return new Promise((resolvePromise, reject) => {
      const check = () => {
        if (matches()) {
          done();
          resolvePromise();
        } else if (this.exitedWith !== undefined) {
          done();
          reject(new Error(`${this.describe()} exited (${this.exitedWith}) before printing ${pattern}:\n${this.out}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.describe()} did not print ${pattern} within ${timeoutMs} ms:\n${this.out}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  /** SIGTERM to the process group, SIGKILL after graceMs; resolves once it has exited. */
  async stop(graceMs = 1500): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
    this.signal('SIGKILL'); // stragglers left in the group
  }

  /** Synchronous last resort for the exit handler. */
  killNow(): void {
    this.signal('SIGKILL');
  }

  describe(): string {
    return `[${this.ns}] ${this.command.join(' ')} (pid ${this.pid})`;
  }

  private signal(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, sig);
    } catch {
      // group already gone
    }
  }
}

const live = new Set<TestCluster>();
let exitHandlerInstalled = false;

function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.destroySync();
  });
}

export class TestCluster {
  /** Common prefix of every namespace of this cluster: `kpt-topo-<pid>-<random>`. */
  readonly id: string;
  readonly lan: { ns: string; bridge: string; ip: string; ip6: string };
  readonly nodes: NodeInfo[] = [];
  readonly pods: PodInfo[] = [];
  external: ExternalInfo | undefined;
  /** What `sysctl net.bridge.bridge-nf-call-iptables` read in each node namespace. */
  readonly bridgeNfCallIptables: Record<string, string> = {};
  /** What `sysctl net.bridge.bridge-nf-call-ip6tables` read in each node namespace. */
  readonly bridgeNfCallIp6tables: Record<string, string> = {};

  private readonly namespaces: string[] = [];
  private readonly processes: NsProcess[] = [];
  private forwarders = new Map<number, NsProcess>();
  private destroyed: Promise<void> | undefined;

  private constructor() {
    this.id = `kpt-topo-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.lan = { ns: `${this.id}-lan`, bridge: 'br0', ip: FORWARDER_IP, ip6: FORWARDER_IP6 };
  }

  static async create(spec: ClusterSpec): Promise<TestCluster> {
    const c = new TestCluster();
    installExitHandler();
    live.add(c);
    try {
      c.build(spec);
      await c.startEchoServers();
      return c;
    } catch (err) {
      await c.destroy();
      throw err;
    }
  }

  node(name: string): NodeInfo {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  pod(name: string): PodInfo {
    const p = this.pods.find((x) => x.name === name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  /** Every namespace this cluster created (lan first). */
  get namespaceNames(): string[] {
    return [...this.namespaces];
  }

  // -------------------------------------------------------------------------------------
  // Building
  // -------------------------------------------------------------------------------------

  private addNamespace(name: string): string {
    must('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    return name;
  }

  /** Many `ip` commands in one process: `ip -n NS -batch -`. */
  private ipBatch(ns: string, lines: string[]): void {
    must('ip', ['-n', ns, '-batch', '-'], lines.join('\n') + '\n');
  }

  private sysctl(ns: string, settings: string[]): void {
    must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...settings]);
  }

  private build(spec: ClusterSpec): void {
    if (spec.nodes.length === 0 || spec.nodes.length > 150) throw new Error('topology: 1..150 nodes');
    const seen = new Set<string>();
    for (const n of spec.nodes) {
      for (const name of [n.name, ...(n.pods ?? []).map((p) => p.name)]) {
        if (seen.has(name)) throw new Error(`topology: duplicate name ${name}`);
        seen.add(name);
      }
      if ((n.pods ?? []).length > 200) throw new Error('topology: at most 200 pods per node');
    }

    // LAN
    const lan = this.addNamespace(this.lan.ns);
    this.ipBatch(lan, [
      'link set lo up',
      'link add br0 type bridge mcast_snooping 0',
      'link set br0 up',
      `addr add ${FORWARDER_IP}/24 dev br0`,
      `addr add ${FORWARDER_IP6}/64 dev br0 nodad`,
    ]);

    spec.nodes.forEach((n, k) => {
      const i = k + 1;
      const node: NodeInfo = {
        name: n.name,
        index: i,
        ns: this.addNamespace(`${this.id}-node-${sanitize(n.name)}`),
        ip: `10.99.0.${10 + i}`,
        ip6: `fd00:99::${10 + i}`,
        podCIDR: `10.244.${i}.0/24`,
        podCIDR6: `fd00:10:244:${i.toString(16)}::/64`,
        gateway: `10.244.${i}.1`,
        gateway6: `fd00:10:244:${i.toString(16)}::1`,
        pods: [],
      };
      this.nodes.push(node);
      this.ipBatch(lan, [`link add vn${i} type veth peer name eth0 netns ${node.ns}`, `link set vn${i} master br0 up`]);
    });

    if (spec.external) {
      this.external = { ns: this.addNamespace(`${this.id}-external`), ip: EXTERNAL_IP, ip6: EXTERNAL_IP6 };
      this.ipBatch(lan, [`link add vext type veth peer name eth0 netns ${this.external.ns}`, 'link set vext master br0 up']);
      this.ipBatch(this.external.ns, [
        'link set lo up',
        `addr add ${EXTERNAL_IP}/24 dev eth0`,
        `addr add ${EXTERNAL_IP6}/64 dev eth0 nodad`,
        'link set eth0 up',
      ]);
    }

    spec.nodes.forEach((n, k) => {
      const node = this.nodes[k]!;
      const lines = [
        'link set lo up',
        `addr add ${node.ip}/24 dev eth0`,
        `addr add ${node.ip6}/64 dev eth0 nodad`,
        'link set eth0 up',
        'link add cni0 type bridge mcast_snooping 0',
        'link set cni0 up',
        `addr add ${node.gateway}/24 dev cni0`,
        `addr add ${node.gateway6}/64 dev cni0 nodad`,
      ];
      for (const other of this.nodes) {
        if (other !== node) {
          lines.push(`route add ${other.podCIDR} via ${other.ip} dev eth0`, `route add ${other.podCIDR6} via ${other.ip6} dev eth0`);
        }
      }
      // Real nodes have a default route, so service IPs are routable and reach FORWARD
      // (where a no-endpoint REJECT lives); the LAN's .254 (::fe) forwards nothing further.
      lines.push(`route add default via ${FORWARDER_IP} dev eth0`, `route add default via ${FORWARDER_IP6} dev eth0`);
      (n.pods ?? []).forEach((p, m) => {
        const j = m + 1;
        const pod: PodInfo = {
          name: p.name,
          node: node.name,
          ns: this.addNamespace(`${this.id}-pod-${sanitize(p.name)}`),
          ip: `10.244.${node.index}.${10 + j}`,
          ip6: `fd00:10:244:${node.index.toString(16)}::${10 + j}`,
          tcp: p.tcp ?? [],
          udp: p.udp ?? [],
          hostVeth: `veth${j}`,
        };
        node.pods.push(pod);
        this.pods.push(pod);
        lines.push(
          `link add ${pod.hostVeth} type veth peer name eth0 netns ${pod.ns}`,
          `link set ${pod.hostVeth} master cni0`,
          `link set ${pod.hostVeth} type bridge_slave hairpin on`,
          `link set ${pod.hostVeth} up`,
        );
      });
      this.ipBatch(node.ns, lines);
      // kubelet / CNI settings. bridge-nf-call-iptables is per namespace (kernel >= 5.3).
      this.sysctl(node.ns, [
        'net.ipv4.ip_forward=1',
        'net.ipv6.conf.all.forwarding=1',
        'net.bridge.bridge-nf-call-iptables=1',
        'net.bridge.bridge-nf-call-ip6tables=1',
      ]);
      const seen = (key: string) => {
        const r = runSync('ip', ['netns', 'exec', node.ns, 'sysctl', '-n', key]);
        return r.status === 0 ? r.stdout.trim() : `error: ${r.stderr.trim()}`;
      };
      this.bridgeNfCallIptables[node.name] = seen('net.bridge.bridge-nf-call-iptables');
      this.bridgeNfCallIp6tables[node.name] = seen('net.bridge.bridge-nf-call-ip6tables');

      for (const pod of node.pods) {
        this.ipBatch(pod.ns, [
          'link set lo up',
          `addr add ${pod.ip}/24 dev eth0`,
          `addr add ${pod.ip6}/64 dev eth0 nodad`,
          'link set eth0 up',
          `route add default via ${node.gateway} dev eth0`,
          `route add default via ${node.gateway6} dev eth0`,
        ]);
      }
    });

    // The lan namespace's own sockets (the forwarder) can answer pods too.
    this.ipBatch(
      lan,
      this.nodes.flatMap((n) => [`route add ${n.podCIDR} via ${n.ip} dev br0`, `route add ${n.podCIDR6} via ${n.ip6} dev br0`]),
    );
  }

  private async startEchoServers(): Promise<void> {
    await Promise.all(
      this.pods.filter((p) => p.tcp.length + p.udp.length > 0).map((p) => this.startEchoServer(p.ns, p.name, { tcp: p.tcp, udp: p.udp })),
    );
  }

  /**
   * Starts another echo server (answering `<name> <clientIP>:<clientPort>`, the IP in
   * brackets for IPv6, on both families) inside any
   * namespace, e.g. a hostNetwork server in a node namespace; resolves once it listens.
   */
  startEchoServer(where: Where, name: string, ports: { tcp?: number[]; udp?: number[] }): Promise<NsProcess> {
    const args = [
      ECHO_SERVER,
      name,
      ...(ports.tcp ?? []).flatMap((x) => ['--tcp', String(x)]),
      ...(ports.udp ?? []).flatMap((x) => ['--udp', String(x)]),
    ];
    return this.spawnIn(where, process.execPath, args, { ready: /^READY$/m });
  }

  // -------------------------------------------------------------------------------------
  // Running things
  // -------------------------------------------------------------------------------------

  /** Runs a command inside a namespace; resolves with status/stdout/stderr (never throws on status). */
  exec(where: Where, cmd: string, args: string[], input?: string): Promise<CommandResult> {
    return runAsync('ip', ['netns', 'exec', nsOf(where), cmd, ...args], input);
  }

  /** Synchronous exec; blocks the event loop, so not while the test serves a socket in-process. */
  execSync(where: Where, cmd: string, args: string[], input?: string): CommandResult {
    return runSync('ip', ['netns', 'exec', nsOf(where), cmd, ...args], input);
  }

  /** Starts a long-running process inside a namespace; destroy() kills it. */
  async spawnIn(where: Where, cmd: string, args: string[], opts: SpawnOptions = {}): Promise<NsProcess> {
    if (this.destroyed) throw new Error('cluster destroyed');
    const p = new NsProcess(nsOf(where), cmd, args, opts);
    this.processes.push(p);
    if (opts.ready !== undefined) await p.waitForOutput(opts.ready, opts.readyTimeoutMs ?? 10_000);
    return p;
  }

  /** Every process started by spawnIn (echo servers, forwarders, agents). */
  get spawned(): readonly NsProcess[] {
    return this.processes;
  }

  private async probe(where: Where, args: string[], budgetMs: number): Promise<unknown> {
    // A hung probe is killed well after its own timeouts would have fired.
    const r = await runAsync('ip', ['netns', 'exec', nsOf(where), process.execPath, PROBE, ...args], undefined, budgetMs + 10_000);
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as unknown;
    } catch {
      throw new Error(`probe in ${nsOf(where)} failed (${r.status}): ${r.stdout}${r.stderr}`);
    }
  }

  /** One TCP connection from inside `from` (to an IPv4 or IPv6 address); the answer names the pod and the client it saw. */
  async tcp(from: Where, ip: string, port: number, opts: ProbeOptions = {}): Promise<ProbeResult> {
    const t = opts.timeoutMs ?? 2000;
    return (await this.probe(from, ['tcp', ip, String(port), String(t)], t)) as ProbeResult;
  }

  /** `count` sequential TCP connections from one process inside `from`. */
  async tcpMany(from: Where, ip: string, port: number, count: number, opts: ProbeOptions = {}): Promise<ProbeResult[]> {
    const t = opts.timeoutMs ?? 2000;
    return (await this.probe(from, ['tcp', ip, String(port), String(t), String(Math.max(1, count))], t * count)) as ProbeResult[];
  }

  /** One UDP datagram and its answer, from inside `from`, optionally from a fixed source port. */
  async udp(from: Where, ip: string, port: number, opts: UdpProbeOptions = {}): Promise<ProbeResult> {
    const t = opts.timeoutMs ?? 2000;
    const args = ['udp', ip, String(port), String(t)];
    if (opts.sourcePort !== undefined) args.push(String(opts.sourcePort));
    return (await this.probe(from, args, t)) as ProbeResult;
  }

  /**
   * Serves a Unix socket (e.g. a fake API server in the test process) to the node namespaces:
   * a forwarder inside the lan namespace listens on 10.99.0.254:port.
   */
  async forwardUnixSocket(socketPath: string, port: number): Promise<{ ip: string; port: number; url: string }> {
    if (!this.forwarders.has(port)) {
      const p = await this.spawnIn(this.lan.ns, process.execPath, [FORWARDER, FORWARDER_IP, String(port), resolve(socketPath)], {
        ready: /^READY$/m,
      });
      this.forwarders.set(port, p);
    }
    return { ip: FORWARDER_IP, port, url: `http://${FORWARDER_IP}:${port}` };
  }

  // -------------------------------------------------------------------------------------
  // Teardown
  // -------------------------------------------------------------------------------------

  /** Kills every process and deletes every namespace; safe to call more than once. */
  destroy(): Promise<void> {
    this.destroyed ??= (async () => {
      await Promise.all(this.processes.map((p) => p.stop()));
      await Promise.all(this.namespaces.map((ns) => runAsync('ip', ['netns', 'del', ns])));
      live.delete(this);
    })();
    return this.destroyed;
  }

  /** Synchronous variant for the process 'exit' handler. */
  destroySync(): void {
    for (const p of this.processes) p.killNow();
    for (const ns of this.namespaces) {
      try {
        runSync('ip', ['netns', 'del', ns]);
      } catch {
        // keep going
      }
    }
    live.delete(this);
  }
}
