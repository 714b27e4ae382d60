/**
 * The agent's own HTTP endpoints, under upstream's paths and ports: health on
 * --healthz-bind-address (/healthz, /livez), metrics on --metrics-bind-address (/metrics,
 * /proxyMode, /healthz).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.js';
import { debugRules, debugTrace, type DebugAnswer, type DebugSource } from './debug.js';
import { createAgentServer, DutyCycleGate } from './http.js';

export interface HealthSource {
  /** Last successful sync (ms since epoch), or null before the first. */
  lastUpdated(): number | null;
  /** When the oldest change not yet programmed arrived, or null. */
  pendingSince(): number | null;
}

export interface HealthReport {
  healthy: boolean;
  body: { lastUpdated: string; currentTime: string };
}

/**
 * Unhealthy while an update has waited more than twice the sync period (/livez), and, for
 * readiness (/healthz), also until the first sync has programmed the rules. Pure.
 */
export function healthReport(src: HealthSource, now: number, syncPeriodMs: number, needSynced: boolean): HealthReport {
  const pending = src.pendingSince();
  const last = src.lastUpdated();
  return {
    healthy: (pending === null || now - pending <= 2 * syncPeriodMs) && (!needSynced || last !== null),
    body: { lastUpdated: new Date(last ?? 0).toISOString(), currentTime: new Date(now).toISOString() },
  };
}

export function parseBindAddress(flag: string, value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]*)):([0-9]+)$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`${flag}: ${JSON.stringify(value)} is not HOST:PORT`);
  }
  return { host: m[1] || m[2] || '0.0.0.0', port };
}

function listen(server: Server, addr: { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

type AsyncHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

function route(name: string, maxConnections: number, log: Logger, routes: Record<string, AsyncHandler>): Server {
  return createAgentServer(name, maxConnections, log, (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const handler = routes[path];
    if (!handler) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('404 page not found\n');
      return;
    }
    // A handler that throws at once is answered like one that rejects: never a crash.
    new Promise<void>((resolve) => resolve(handler(req, res))).catch((err: Error) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`${err.message}\n`);
    });
  });
}

/** Kubelet, load balancers and Prometheus each keep a few connections; more is a flood. */
const HEALTHZ_MAX_CONNECTIONS = 256;
const METRICS_MAX_CONNECTIONS = 64;

export interface AgentServers {
  close(): Promise<void>;
}

export async function startServers(opts: {
  healthz: { host: string; port: number };
  metrics: { host: string; port: number };
  mode: string;
  syncPeriodMs: number;
  health: HealthSource;
  metricsRegistry: Metrics['registry'];
  debug: DebugSource;
  log: Logger;
}): Promise<AgentServers> {
  const gate = new DutyCycleGate();
  const answer =
    (fn: (req: IncomingMessage) => DebugAnswer): AsyncHandler =>
    (req, res) => {
      const r = gate.run(() => fn(req));
      if (!r.ok) {
        res.writeHead(429, { 'Content-Type': 'text/plain', 'Retry-After': String(Math.max(1, Math.ceil(r.retryAfterMs / 1000))) });
        res.end('busy: debug answers take turns with the sync loop; try again\n');
        return;
      }
      res.writeHead(r.value.status, { 'Content-Type': r.value.contentType });
      res.end(r.value.body);
    };
  const health =
    (needSynced: boolean): AsyncHandler =>
    (_req, res) => {
      const r = healthReport(opts.health, Date.now(), opts.syncPeriodMs, needSynced);
      res.writeHead(r.healthy ? 200 : 503, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
      res.end(JSON.stringify(r.body));
    };
  const healthz = route('healthz', HEALTHZ_MAX_CONNECTIONS, opts.log, { '/healthz': health(true), '/livez': health(false) });
  const metrics = route('metrics', METRICS_MAX_CONNECTIONS, opts.log, {
    '/metrics': async (_req, res) => {
      const text = await opts.metricsRegistry.metrics();
      res.writeHead(200, { 'Content-Type': opts.metricsRegistry.contentType });
      res.end(text);
    },
    '/proxyMode': (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(opts.mode);
    },
    '/healthz': health(true),
    '/debug/rules': answer(() => debugRules(opts.debug)),
    '/debug/trace': answer((req) => debugTrace(opts.debug, new URL(req.url ?? '/', 'http://agent').searchParams)),
  });
  await listen(healthz, opts.healthz);
  await listen(metrics, opts.metrics);
  const close = (s: Server) => new Promise<void>((resolve) => s.close(() => resolve()));
  return {
    close: async () => {
      healthz.closeAllConnections();
      metrics.closeAllConnections();
      await Promise.all([close(healthz), close(metrics)]);
    },
  };
}
