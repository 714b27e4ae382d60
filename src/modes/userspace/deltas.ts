/**
 * Per-endpoint counts a data path off the agent's thread keeps between reports (a
 * worker process, or the splice engine's thread), sent to the agent every
 * STATS_INTERVAL_MS as StatsDeltas.
 */
import type { EndpointStats } from './stats.js';
import type { StatsDelta } from './workerprotocol.js';

export const STATS_INTERVAL_MS = 1_000;

export class Deltas {
  private pending = new Map<string, StatsDelta>();
  /** Connections opened since the start. */
  accepted = 0;

  readonly sink: EndpointStats = {
    opened: (l, e) => {
      this.accepted++;
      this.at(l, e).opened++;
    },
    closed: (l, e) => void this.at(l, e).closed++,
    bytes: (l, e, to, from) => {
      const d = this.at(l, e);
      d.toEndpoint += to;
      d.fromEndpoint += from;
    },
  };

  take(): StatsDelta[] {
    const out = [...this.pending.values()];
    this.pending = new Map();
    return out;
  }

  private at(listener: string, endpoint: string): StatsDelta {
    const k = `${listener}\0${endpoint}`;
    let d = this.pending.get(k);
    if (!d) this.pending.set(k, (d = { listener, endpoint, opened: 0, closed: 0, toEndpoint: 0, fromEndpoint: 0 }));
    return d;
  }
}

/** Connections the agent's metrics count as open through one data path, by listener and endpoint. */
export type OpenCounts = Map<string, { listener: string; endpoint: string; n: number }>;

/** Passes a report on to the agent's stats; `counted` says which listeners still report (a closed one's late counts would bring back its series). */
export function applyDeltas(stats: EndpointStats, open: OpenCounts, deltas: StatsDelta[], counted: (listener: string) => boolean): void {
  for (const d of deltas) {
    if (!counted(d.listener)) continue;
    const k = `${d.listener}\0${d.endpoint}`;
    const o = open.get(k) ?? { listener: d.listener, endpoint: d.endpoint, n: 0 };
    for (let i = 0; i < d.opened; i++) stats.opened(d.listener, d.endpoint);
    for (let i = 0; i < d.closed; i++) stats.closed(d.listener, d.endpoint);
    o.n += d.opened - d.closed;
    if (o.n === 0) open.delete(k);
    else open.set(k, o);
    stats.bytes(d.listener, d.endpoint, d.toEndpoint, d.fromEndpoint);
  }
}

/** The data path is gone: every connection it counted as open is closed. */
export function closeAll(stats: EndpointStats, open: OpenCounts): void {
  for (const o of open.values()) for (let i = 0; i < o.n; i++) stats.closed(o.listener, o.endpoint);
  open.clear();
}
