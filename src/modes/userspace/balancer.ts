/**
 * How a listener picks an endpoint: ClientIP affinity first (the Service's timeout, from
 * the last use, as the kernel modes' `recent` match counts it), else round-robin or least
 * connections over the endpoints that are not excluded (tried and failed for this
 * connection). Active connection counts live here, so least-connections and the metrics
 * agree.
 */
import type { Endpoint } from '../../model/types.js';

export type SchedulerName = 'rr' | 'lc';

export interface Backend {
  /** `IP:PORT` (`[IP]:PORT` for IPv6), as the model writes it. */
  address: string;
  host: string;
  port: number;
  /** Connections (TCP) or sessions (UDP) open to it now. */
  active: number;
}

interface Affinity {
  address: string;
  lastUsed: number;
}

/** Clients remembered per listener at most; the oldest are forgotten first. */
export const MAX_AFFINITY_CLIENTS = 65_536;

export class Balancer {
  private backends: Backend[] = [];
  private next = 0;
  private readonly affinity = new Map<string, Affinity>();

  constructor(
    private readonly scheduler: SchedulerName,
    /** ClientIP affinity timeout; null for none. */
    private affinityMs: number | null,
    private readonly now: () => number = Date.now,
  ) {}

  get endpoints(): readonly Backend[] {
    return this.backends;
  }

  /** New endpoint set: counts carry over for endpoints that stay, affinity to gone ones is dropped. */
  update(endpoints: readonly Endpoint[], affinityMs: number | null): void {
    const old = new Map(this.backends.map((b) => [b.address, b]));
    this.backends = endpoints.map((e) => old.get(e.address) ?? { address: e.address, host: e.ip, port: e.port, active: 0 });
    if (this.next >= this.backends.length) this.next = 0;
    this.affinityMs = affinityMs;
    if (affinityMs === null) this.affinity.clear();
    const present = new Set(this.backends.map((b) => b.address));
    for (const [client, a] of this.affinity) if (!present.has(a.address)) this.affinity.delete(client);
  }

  /** The backend for a new connection from `clientIP`, never one of `exclude`; null when none is left. */
  pick(clientIP: string, exclude: ReadonlySet<string> = new Set()): Backend | null {
    const sticky = this.sticky(clientIP, exclude);
    if (sticky) return sticky;
    const candidates = exclude.size === 0 ? this.backends : this.backends.filter((b) => !exclude.has(b.address));
    if (candidates.length === 0) return null;
    if (this.scheduler === 'lc') {
      // Ties go round-robin, so equal loads still spread.
      const start = this.next++ % candidates.length;
      let best = candidates[start]!;
      for (let i = 1; i < candidates.length; i++) {
        const b = candidates[(start + i) % candidates.length]!;
        if (b.active < best.active) best = b;
      }
      return best;
    }
    const b = candidates[this.next % candidates.length]!;
    this.next = (this.next + 1) % Math.max(1, this.backends.length);
    return b;
  }

  /** A connection to `b` from `clientIP` succeeded: the client sticks to it, when the Service says so. */
  connected(clientIP: string, b: Backend): void {
    if (this.affinityMs === null) return;
    this.affinity.delete(clientIP);
    this.affinity.set(clientIP, { address: b.address, lastUsed: this.now() });
    if (this.affinity.size > MAX_AFFINITY_CLIENTS) this.affinity.delete(this.affinity.keys().next().value!);
  }

  private sticky(clientIP: string, exclude: ReadonlySet<string>): Backend | null {
    if (this.affinityMs === null) return null;
    const a = this.affinity.get(clientIP);
    if (!a) return null;
    if (this.now() - a.lastUsed > this.affinityMs || exclude.has(a.address)) {
      this.affinity.delete(clientIP);
      return null;
    }
    return this.backends.find((b) => b.address === a.address) ?? null;
  }
}
