/** Per-endpoint Prometheus metrics of userspace mode, in the agent's registry. */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { EndpointStats } from './stats.js';

export class PromEndpointStats implements EndpointStats {
  private readonly active: Gauge<'listener' | 'endpoint'>;
  private readonly bytesTotal: Counter<'listener' | 'endpoint' | 'direction'>;
  /** Endpoints seen per listener, so a closed listener's series go with it. */
  private readonly seen = new Map<string, Set<string>>();

  constructor(registry: Registry, beforeScrape: () => void) {
    this.active = new Gauge({
      name: 'kubeproxy_ts_userspace_endpoint_active_connections',
      help: 'userspace mode: TCP connections and UDP sessions open to each endpoint, per listener (service port and protocol)',
      labelNames: ['listener', 'endpoint'],
      registers: [registry],
    });
    this.bytesTotal = new Counter({
      name: 'kubeproxy_ts_userspace_endpoint_bytes_total',
      help: 'userspace mode: bytes proxied per endpoint; direction to_endpoint (from clients) or from_endpoint',
      labelNames: ['listener', 'endpoint', 'direction'],
      registers: [registry],
      // Open connections' bytes are added at scrape time.
      collect: beforeScrape,
    });
  }

  private note(listener: string, endpoint: string): void {
    let s = this.seen.get(listener);
    if (!s) this.seen.set(listener, (s = new Set()));
    s.add(endpoint);
  }

  opened(listener: string, endpoint: string): void {
    this.note(listener, endpoint);
    this.active.inc({ listener, endpoint });
  }

  closed(listener: string, endpoint: string): void {
    this.active.dec({ listener, endpoint });
  }

  bytes(listener: string, endpoint: string, toEndpoint: number, fromEndpoint: number): void {
    this.note(listener, endpoint);
    if (toEndpoint > 0) this.bytesTotal.inc({ listener, endpoint, direction: 'to_endpoint' }, toEndpoint);
    if (fromEndpoint > 0) this.bytesTotal.inc({ listener, endpoint, direction: 'from_endpoint' }, fromEndpoint);
  }

  /** A listener closed: its series go. */
  forget(listener: string): void {
    for (const endpoint of this.seen.get(listener) ?? []) {
      this.active.remove({ listener, endpoint });
      for (const direction of ['to_endpoint', 'from_endpoint']) this.bytesTotal.remove({ listener, endpoint, direction });
    }
    this.seen.delete(listener);
  }
}
