/**
 * userspace mode's sync on loopback without privileges: a real Proxier (in this process
 * or with worker processes), the iptables applier over the fake iptables, and the model.
 */
import net from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { ClusterState } from '../../src/agent/state.js';
import { IptablesApplier } from '../../src/modes/iptables/applier.js';
import { FakeIptables } from '../../src/modes/iptables/fake.js';
import { binaries } from '../../src/modes/iptables/variant.js';
import { WorkerPool, type WorkerPoolOptions } from '../../src/modes/userspace/pool.js';
import { Proxier } from '../../src/modes/userspace/proxier.js';
import { SpliceEngine } from '../../src/modes/userspace/splice/engine.js';
import { NO_STATS, type EndpointStats } from '../../src/modes/userspace/stats.js';
import { endpointSlice, service } from './objects.js';
import { UserspaceSyncer } from '../../src/modes/userspace/syncer.js';

export const log = pino({ level: 'silent' });

/** The worker entry as built: a worker process runs JavaScript (`npx tsc -p .` first). */
export const WORKER_SCRIPT = join(import.meta.dirname, '..', '..', 'dist', 'src', 'modes', 'userspace', 'worker.js');
/** The splice engine's thread as built, likewise. */
export const ENGINE_SCRIPT = join(import.meta.dirname, '..', '..', 'dist', 'src', 'modes', 'userspace', 'splice', 'thread.js');

export async function freeRange(n: number): Promise<number> {
  // A run of free ports: taken together, then released.
  for (let first = 41_000 + Math.floor(Math.random() * 10_000); ; first += n) {
    const held: net.Server[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const s = net.createServer();
        await new Promise<void>((resolve, reject) => (s.once('error', reject), s.listen(first + i, '0.0.0.0', resolve)));
        held.push(s);
      }
      return first;
    } catch {
      continue;
    } finally {
      for (const s of held) await new Promise((r) => s.close(r));
    }
  }
}

export async function workerPool(size: number, opts: Partial<WorkerPoolOptions> = {}): Promise<WorkerPool> {
  const pool = new WorkerPool({ size, stats: NO_STATS, log, script: WORKER_SCRIPT, ...opts });
  await pool.start();
  return pool;
}

export interface HarnessOptions {
  /** Worker processes; 0: the listeners run in this process. */
  workers?: number;
  /** TCP listeners in the splice engine (instead of workers). */
  splice?: boolean;
  stats?: EndpointStats;
  /** TCP connections per listener (per worker); 100 unless given. */
  maxConnections?: number;
  pool?: Partial<WorkerPoolOptions>;
}

/** `closers` gets what to undo, in order. */
export async function harness(first: number, closers: (() => unknown)[], opts: HarnessOptions = {}) {
  const fake = new FakeIptables({ variant: 'nf_tables' });
  const state = new ClusterState('node-a', {
    problem: (p) => {
      throw new Error(`invalid test object: ${JSON.stringify(p)}`);
    },
  });
  const stats = opts.stats ?? NO_STATS;
  const pool = opts.workers ? await workerPool(opts.workers, { stats, ...opts.pool }) : null;
  if (pool) closers.push(() => pool.stop());
  const engine = opts.splice ? await SpliceEngine.start({ stats, log, script: ENGINE_SCRIPT }) : null;
  if (engine) closers.push(() => engine.stop());
  const proxier = new Proxier({ scheduler: 'rr', maxConnectionAgeMs: 0, udpIdleTimeoutMs: 250, maxConnections: opts.maxConnections ?? 100, stats, log, localAddresses: () => ['127.0.0.1'], pool: engine ?? pool });
  closers.push(() => proxier.closeAll());
  const appliers = new Map([['IPv4' as const, new IptablesApplier('IPv4', fake.run, binaries('IPv4', 'nf_tables'))]]);
  const syncer = new UserspaceSyncer(appliers, proxier, { clusterCIDRs: [], nodePortAddresses: [], localhostNodePorts: true, portRange: { first, last: first + 2 }, maxConnectionAgeMs: 0 }, log);
  const sync = async () => {
    const changes = state.take();
    return syncer.sync({ model: state, services: changes.services, all: changes.all });
  };
  const portals = () => fake.rules('IPv4', 'nat', 'KUBE-PORTALS-CONTAINER') ?? [];
  return { fake, state, proxier, syncer, sync, portals, pool, engine };
}

/** Whether something listens on the port: a listener without endpoints accepts, then resets. */
export const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.on('connect', () => (c.destroy(), resolve(true)));
    c.on('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'ECONNREFUSED'));
  });

export const until = async (cond: () => boolean | Promise<boolean>, ms = 15_000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** Open connections and bytes per endpoint, as the agent's metrics count them. */
export class Recorder implements EndpointStats {
  readonly active = new Map<string, number>();
  bytesIn = 0;
  bytesOut = 0;
  opened(_l: string, e: string): void {
    this.active.set(e, (this.active.get(e) ?? 0) + 1);
  }
  closed(_l: string, e: string): void {
    this.active.set(e, (this.active.get(e) ?? 0) - 1);
  }
  bytes(_l: string, _e: string, toEndpoint: number, fromEndpoint: number): void {
    this.bytesIn += toEndpoint;
    this.bytesOut += fromEndpoint;
  }
  get total(): number {
    return [...this.active.values()].reduce((a, b) => a + b, 0);
  }
}

/** A TCP server on `host` (a free port unless given): echoes, or answers `name` and ends. */
export async function server(closers: (() => unknown)[], host: string, port: number, name: string | null): Promise<number> {
  const srv = net.createServer((s) => {
    s.on('error', () => {});
    if (name === null) s.pipe(s);
    else s.end(name);
  });
  await new Promise<void>((resolve, reject) => (srv.once('error', reject), srv.listen(port, host, resolve)));
  closers.push(() => new Promise((r) => srv.close(r)));
  return (srv.address() as net.AddressInfo).port;
}

/** One service ns/NAME:http on port 80 of `ip`, to `endpoints` on `port`. */
export function addService(h: Awaited<ReturnType<typeof harness>>, name: string, ip: string, port: number, endpoints: string[], spec: Record<string, unknown> = {}): void {
  h.state.upsertService(service('ns', name, ip, [{ name: 'http', port: 80, targetPort: port }], spec));
  h.state.upsertSlice(endpointSlice('ns', name, `${name}-1`, [{ name: 'http', port }], endpoints.map((e) => ({ ip: e, nodeName: 'node-a' }))));
}

/** Connects to the listener on `port`, returns what it reads to the end. */
export const read = (port: number, host = '127.0.0.1') =>
  new Promise<string>((resolve, reject) => {
    const c = net.connect(port, host);
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('end', () => resolve(got));
    c.on('error', reject);
  });
