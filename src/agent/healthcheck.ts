/**
 * Health check node ports: for every Service with externalTrafficPolicy Local and a
 * healthCheckNodePort, an HTTP server that tells the load balancer whether this node has a
 * ready local endpoint (200, with the count) or not (503). Terminating endpoints do not
 * count: a node whose pods are all going away should be drained.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { ServicePort } from '../model/types.js';

export interface HealthCheckTarget {
  namespace: string;
  name: string;
  localEndpoints: number;
}

/** Health check node port -> its service and ready local endpoint count, over both families. Pure. */
export function healthCheckTargets(servicePorts: Iterable<ServicePort>): Map<number, HealthCheckTarget> {
  const out = new Map<number, HealthCheckTarget & { ips: Set<string> }>();
  for (const sp of servicePorts) {
    if (sp.healthCheckNodePort === 0) continue;
    let t = out.get(sp.healthCheckNodePort);
    if (!t) out.set(sp.healthCheckNodePort, (t = { namespace: sp.namespace, name: sp.serviceName, localEndpoints: 0, ips: new Set() }));
    for (const e of sp.endpoints) if (e.isLocal && e.ready) t.ips.add(e.ip);
    t.localEndpoints = t.ips.size;
  }
  return new Map([...out].map(([port, { ips: _ips, ...t }]) => [port, t]));
}

export class HealthCheckServers {
  private readonly servers = new Map<number, { server: Server; target: HealthCheckTarget }>();

  constructor(
    private readonly host: string,
    private readonly log: Logger,
  ) {}

  /** Opens, updates and closes servers to match `targets`. */
  update(targets: Map<number, HealthCheckTarget>): void {
    for (const [port, entry] of this.servers) {
      if (!targets.has(port)) {
        entry.server.close();
        this.servers.delete(port);
      }
    }
    for (const [port, target] of targets) {
      const existing = this.servers.get(port);
      if (existing) {
        existing.target = target;
        continue;
      }
      const entry = { server: createServer(), target };
      entry.server.on('request', (_req, res) => {
        const t = entry.target;
        res.writeHead(t.localEndpoints > 0 ? 200 : 503, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
        res.end(JSON.stringify({ service: { namespace: t.namespace, name: t.name }, localEndpoints: t.localEndpoints, serviceProxyHealthy: true }));
      });
      entry.server.on('error', (err) => this.log.error({ port, err: err.message }, 'health check node port server failed'));
      entry.server.listen(port, this.host);
      this.servers.set(port, entry);
    }
  }

  close(): void {
    for (const { server } of this.servers.values()) server.close();
    this.servers.clear();
  }
}
