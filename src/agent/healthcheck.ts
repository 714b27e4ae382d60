/**
 * Health check node ports: for every Service with externalTrafficPolicy Local and a
 * healthCheckNodePort, an HTTP server that tells the load balancer whether this node can
 * serve it: 200 with the count of ready local endpoints, 503 with none, and 503 whatever
 * the count while the proxy itself is not healthy (its rules may be stale). Terminating
 * endpoints do not count: a node whose pods are all going away should be drained. As
 * upstream, the servers listen on the addresses that accept node ports.
 */
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { nodePortIPs } from '../model/nodeports.js';
import type { IPFamily, NodeContext, ServicePort } from '../model/types.js';
import { createAgentServer } from './http.js';

/** A load balancer's probers keep a few connections each. */
const HEALTH_CHECK_MAX_CONNECTIONS = 64;

export interface HealthCheckTarget {
  namespace: string;
  name: string;
  localEndpoints: number;
}

/**
 * Where a health check server listens. No host: every address, of both families where the
 * node has IPv6 (Node listens on `::`, or on `0.0.0.0` where IPv6 is off).
 */
export interface BindAddress {
  host?: string;
  ipv6Only: boolean;
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

/**
 * The node addresses `--nodeport-addresses` selects, as listen addresses (127.0.0.1 when
 * a CIDR holds it, as upstream, whether or not localhost node ports are on). Pure.
 */
export function healthCheckAddresses(node: NodeContext, nodePortAddresses: readonly string[], families: readonly IPFamily[]): BindAddress[] {
  const v4 = nodePortIPs('IPv4', node, nodePortAddresses, true);
  // A node that programs no IPv6 may have it off in the kernel: then `::` cannot be bound.
  const v6 = families.includes('IPv6') ? nodePortIPs('IPv6', node, nodePortAddresses, true) : [];
  if (v4 === null && (v6 === null || !families.includes('IPv6'))) return [{ ipv6Only: false }];
  const one = (host: string): BindAddress => ({ host, ipv6Only: false });
  return [...(v4 === null ? [one('0.0.0.0')] : v4.map(one)), ...(v6 === null ? [{ host: '::', ipv6Only: true }] : v6.map(one))];
}

/** Upstream's body, tab-indented as its template prints it. */
function body(t: HealthCheckTarget, proxyHealthy: boolean): string {
  return JSON.stringify({ service: { namespace: t.namespace, name: t.name }, localEndpoints: t.localEndpoints, serviceProxyHealthy: proxyHealthy }, null, '\t');
}

interface Entry {
  server: Server;
  target: HealthCheckTarget;
}

export class HealthCheckServers {
  private readonly servers = new Map<string, Entry>();

  /** `proxyHealthy`: whether the proxy's own rules are current (its /healthz). */
  constructor(
    private readonly log: Logger,
    private readonly proxyHealthy: () => boolean,
  ) {}

  /**
   * Opens, updates and closes servers to match `targets` on `addresses`. A server that
   * could not listen (its port in use, its address gone) is dropped and tried again at the
   * next update.
   */
  update(targets: Map<number, HealthCheckTarget>, addresses: BindAddress[]): void {
    const wanted = new Map<string, { port: number; address: BindAddress; target: HealthCheckTarget }>();
    for (const [port, target] of targets) for (const address of addresses) wanted.set(`${address.host ?? '*'} ${address.ipv6Only} ${port}`, { port, address, target });
    for (const [key, entry] of this.servers) {
      if (wanted.has(key)) continue;
      entry.server.close();
      this.servers.delete(key);
    }
    for (const [key, { port, address, target }] of wanted) {
      const existing = this.servers.get(key);
      if (existing) {
        existing.target = target;
        continue;
      }
      const entry: Entry = { server: createAgentServer(`health check node port ${port}`, HEALTH_CHECK_MAX_CONNECTIONS, this.log), target };
      entry.server.on('request', (_req, res) => {
        const t = entry.target;
        const healthy = this.proxyHealthy();
        res.writeHead(t.localEndpoints > 0 && healthy ? 200 : 503, {
          'Content-Type': 'application/json',
          'X-Content-Type-Options': 'nosniff',
          'X-Load-Balancing-Endpoint-Weight': String(t.localEndpoints),
        });
        res.end(body(t, healthy));
      });
      // Until it listens, an error means it cannot: drop it, and the next update tries again.
      const cannotListen = (err: Error) => {
        this.log.error({ host: address.host ?? 'every address', port, err: err.message }, 'health check node port server cannot listen; trying again at the next sync');
        entry.server.close();
        if (this.servers.get(key) === entry) this.servers.delete(key);
      };
      entry.server.once('error', cannotListen);
      entry.server.once('listening', () => entry.server.off('error', cannotListen));
      entry.server.listen({ port, host: address.host, ipv6Only: address.ipv6Only });
      this.servers.set(key, entry);
    }
  }

  close(): void {
    for (const { server } of this.servers.values()) server.close();
    this.servers.clear();
  }
}
