/**
 * The listeners the agent runs, kept to what the rendered plans ask for: a listener that
 * stays keeps its port, socket and connections and only takes the new endpoint set; new
 * ones are opened before the capture rules point at them, and gone ones closed after
 * the rules stop pointing at them. Other listeners' connections are never touched.
 *
 * With a listener host (the splice engine's thread, or a worker pool), TCP listeners run
 * there, except those of Services with ClientIP affinity: those stay on this thread, so
 * that one affinity table decides for every connection of a client however the kernel
 * spreads them over workers (a table shared between processes would cost a round trip per
 * connection; the engine has none, to stay small). UDP stays here too: a session is a
 * client's datagrams in order to one endpoint, and a socket shared by processes would hand
 * one client's datagrams to several of them.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import type { IPFamily } from '../../model/types.js';
import { connectionAge } from './age.js';
import { Balancer, type SchedulerName } from './balancer.js';
import { PooledTcpListener, type ListenerHost } from './pooled.js';
import type { Listener, UserspacePlan } from './render.js';
import type { EndpointStats } from './stats.js';
import { TcpListener } from './tcp.js';
import { MAX_UDP_SESSIONS, UdpListener } from './udp.js';

export interface ProxierOptions {
  scheduler: SchedulerName;
  maxConnectionAgeMs: number;
  udpIdleTimeoutMs: number;
  /** TCP connections at once, per listener. */
  maxConnections: number;
  stats: EndpointStats & { forget?(listener: string): void };
  log: Logger;
  /** The node's addresses of a family, for UDP listeners (see udp.ts); the host's by default. */
  localAddresses?: (family: IPFamily) => string[];
  /** Where TCP listeners run (see above); on this thread without. */
  pool?: ListenerHost | null;
}

type Running = TcpListener | UdpListener | PooledTcpListener;

interface Entry {
  protocol: 'TCP' | 'UDP';
  port: number;
  listener: Running;
}

export function hostAddresses(family: IPFamily): string[] {
  const out: string[] = [];
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.family !== family) continue;
      // Link-local addresses need a scope to bind; service traffic never arrives on them.
      if (family === 'IPv6' && a.address.toLowerCase().startsWith('fe80:')) continue;
      out.push(a.address);
    }
  }
  return out;
}

export class Proxier {
  private readonly running = new Map<IPFamily, Map<string, Entry>>([
    ['IPv4', new Map()],
    ['IPv6', new Map()],
  ]);
  private readonly unusablePorts = new Map<IPFamily, Set<number>>([
    ['IPv4', new Set()],
    ['IPv6', new Set()],
  ]);

  constructor(private readonly opts: ProxierOptions) {}

  /** Ports the running listeners hold, by key: the renderer keeps them. */
  held(family: IPFamily): Map<string, number> {
    return new Map([...this.running.get(family)!].map(([k, e]) => [k, e.port]));
  }

  unusable(family: IPFamily): ReadonlySet<number> {
    return this.unusablePorts.get(family)!;
  }

  listener(family: IPFamily, key: string): Running | null {
    return this.running.get(family)!.get(key)?.listener ?? null;
  }

  /** Why the data path cannot carry connections, or null. */
  problem(): string | null {
    return this.opts.pool?.problem() ?? null;
  }

  /**
   * Opens the plan's new listeners and hands every kept one its new endpoints. Returns
   * the keys that could not be opened; their ports are marked unusable for the next render.
   */
  async open(plan: UserspacePlan): Promise<string[]> {
    const running = this.running.get(plan.family)!;
    const failed: string[] = [];
    for (const l of plan.listeners) {
      const have = running.get(l.key);
      // A Service that gains or loses affinity moves between the workers and this process.
      if (have && (have.port !== l.port || have.protocol !== l.protocol || have.listener instanceof PooledTcpListener !== this.pooled(l))) {
        await this.stop(plan.family, l.key);
      } else if (have) {
        this.refresh(have.listener, l);
        if (have.listener instanceof UdpListener) await have.listener.listen(this.addresses(plan.family)).catch(() => {});
        continue;
      }
      const created = this.create(l);
      try {
        if (created instanceof UdpListener) await created.listen(this.addresses(plan.family));
        else await created.listen();
      } catch (err) {
        if (created instanceof UdpListener) created.close();
        this.unusablePorts.get(plan.family)!.add(l.port);
        this.opts.log.warn({ listener: l.key, port: l.port, err: (err as Error).message }, 'cannot listen; the service port gets another port at the next sync');
        failed.push(l.key);
        continue;
      }
      running.set(l.key, { protocol: l.protocol, port: l.port, listener: created });
    }
    return failed;
  }

  /** Closes the listeners the plan no longer has (call once the rules stopped pointing at them). */
  async retire(plan: UserspacePlan): Promise<void> {
    const wanted = new Set(plan.listeners.map((l) => l.key));
    for (const key of [...this.running.get(plan.family)!.keys()]) if (!wanted.has(key)) await this.stop(plan.family, key);
  }

  /** Adds open connections' bytes to the stats. */
  reportBytes(): void {
    for (const byKey of this.running.values()) for (const e of byKey.values()) e.listener.reportBytes();
  }

  async closeAll(): Promise<void> {
    for (const family of this.running.keys()) for (const key of [...this.running.get(family)!.keys()]) await this.stop(family, key);
  }

  private addresses(family: IPFamily): string[] {
    return (this.opts.localAddresses ?? hostAddresses)(family);
  }

  private async stop(family: IPFamily, key: string): Promise<void> {
    const e = this.running.get(family)!.get(key);
    if (!e) return;
    this.running.get(family)!.delete(key);
    await e.listener.close();
    this.opts.stats.forget?.(key);
  }

  private affinityMs(l: Listener): number | null {
    const a = l.servicePort.sessionAffinity;
    return a ? a.timeoutSeconds * 1000 : null;
  }

  private pooled(l: Listener): boolean {
    return !!this.opts.pool && l.protocol === 'TCP' && this.affinityMs(l) === null;
  }

  private refresh(r: Running, l: Listener): void {
    if (r instanceof PooledTcpListener) return r.update(l.set.endpoints, this.maxAge(l));
    r.balancer.update(l.set.endpoints, this.affinityMs(l));
    if (r instanceof TcpListener) r.setMaxAge(this.maxAge(l));
    else r.endpointsChanged();
  }

  private maxAge(l: Listener): number {
    return connectionAge(l.servicePort, this.opts.maxConnectionAgeMs).ms;
  }

  private create(l: Listener): Running {
    if (this.opts.pool && this.pooled(l)) {
      return new PooledTcpListener(this.opts.pool, { key: l.key, family: l.family, port: l.port, scheduler: this.opts.scheduler, maxConnections: this.opts.maxConnections, maxAgeMs: this.maxAge(l), endpoints: l.set.endpoints });
    }
    const balancer = new Balancer(this.opts.scheduler, this.affinityMs(l));
    balancer.update(l.set.endpoints, this.affinityMs(l));
    const common = { key: l.key, family: l.family, port: l.port, stats: this.opts.stats, log: this.opts.log };
    if (l.protocol === 'TCP') return new TcpListener(balancer, { ...common, maxConnections: this.opts.maxConnections, maxAgeMs: this.maxAge(l) });
    return new UdpListener(balancer, { ...common, idleTimeoutMs: this.opts.udpIdleTimeoutMs, maxSessions: MAX_UDP_SESSIONS });
  }
}
