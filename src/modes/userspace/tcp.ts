/**
 * One TCP listener of userspace mode: accepts what the capture rules REDIRECT to its
 * port, connects to an endpoint the balancer picks (the next one, with a longer timeout,
 * when a connect fails), then copies both ways with `pipe()`: backpressure both ways,
 * half-close passed on (both sockets allow half-open), an error on either side resets
 * both. Past the max age, a connection is ended at a safe point so its client reconnects
 * and is balanced again.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { IPFamily } from '../../model/types.js';
import type { Backend, Balancer } from './balancer.js';
import { reportMoved, type Counted, type EndpointStats } from './stats.js';

/** Connect timeouts of the attempts for one connection, each to the next endpoint. */
export const CONNECT_TIMEOUTS_MS = [250, 500, 1_000, 2_000];
/** A draining connection ends once both directions were quiet this long... */
export const QUIET_MS = 50;
/** ...or this long after it began draining, whatever it carries. */
export const DRAIN_GRACE_MS = 10_000;
/** After ending both sides, how long the peers get to close theirs. */
export const LINGER_MS = 5_000;
const KEEPALIVE_MS = 60_000;

const ignore = () => {};

export interface TcpListenerOptions {
  key: string;
  family: IPFamily;
  port: number;
  /** Connections at once; more are refused by the kernel backlog, then reset. */
  maxConnections: number;
  /** 0: connections live as long as they last. */
  maxAgeMs: number;
  stats: EndpointStats;
  log: Logger;
  /** Jitter source for the max age, in [0, 1). */
  random?: () => number;
}

interface Pair {
  client: net.Socket;
  backend: net.Socket;
  endpoint: Backend;
  counted: Counted;
  ageTimer: NodeJS.Timeout | null;
  drain: NodeJS.Timeout | null;
  draining: boolean;
}

export class TcpListener {
  private readonly server: net.Server;
  private readonly pairs = new Set<Pair>();
  /** Clients whose endpoint connection is still being made. */
  private readonly pending = new Set<net.Socket>();
  private closed = false;
  private maxAgeMs: number;

  constructor(
    readonly balancer: Balancer,
    private readonly opts: TcpListenerOptions,
  ) {
    this.maxAgeMs = opts.maxAgeMs;
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (c) => this.accept(c));
    this.server.maxConnections = opts.maxConnections;
    this.server.on('error', (err) => opts.log.warn({ listener: opts.key, err: err.message }, 'listener error'));
  }

  get port(): number {
    return this.opts.port;
  }

  /** Open connections (both sides connected). */
  get connections(): number {
    return this.pairs.size;
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const host = this.opts.family === 'IPv4' ? '0.0.0.0' : '::';
      this.server.once('error', reject);
      this.server.listen({ host, port: this.opts.port, ipv6Only: this.opts.family === 'IPv6', backlog: 1024 }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  setMaxAge(ms: number): void {
    this.maxAgeMs = ms;
  }

  /** Stops accepting and resets every connection it carries or is connecting. */
  close(): Promise<void> {
    this.closed = true;
    for (const c of this.pending) c.resetAndDestroy();
    for (const p of this.pairs) {
      p.client.resetAndDestroy();
      p.backend.resetAndDestroy();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** Adds the bytes carried since the last report to the stats (open connections). */
  reportBytes(): void {
    for (const p of this.pairs) this.count(p);
  }

  private count(p: Pair): void {
    reportMoved(this.opts.stats, this.opts.key, p.endpoint.address, p.counted, p.client.bytesRead, p.backend.bytesRead);
  }

  private accept(client: net.Socket): void {
    // Until the pair is joined, a client error only destroys the client (and a pending connect with it).
    client.on('error', ignore);
    client.setKeepAlive(true, KEEPALIVE_MS);
    this.pending.add(client);
    client.once('close', () => this.pending.delete(client));
    this.connect(client, client.remoteAddress ?? '', new Set(), 0);
  }

  private connect(client: net.Socket, clientIP: string, tried: Set<string>, attempt: number): void {
    if (client.destroyed) return;
    const b = this.closed ? null : this.balancer.pick(clientIP, tried);
    if (b === null || attempt >= CONNECT_TIMEOUTS_MS.length) {
      // As the kernel modes' REJECT: the client learns at once there is nowhere to go.
      client.resetAndDestroy();
      return;
    }
    b.active++;
    const backend = net.connect({ host: b.host, port: b.port, allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_MS });
    const timer = setTimeout(() => backend.destroy(new Error('connect timeout')), CONNECT_TIMEOUTS_MS[attempt]);
    // Through `failed`, so the endpoint's count and the timer are undone.
    const clientGone = () => backend.destroy(new Error('client gone'));
    const failed = (err: Error) => {
      clearTimeout(timer);
      client.off('close', clientGone);
      b.active--;
      backend.destroy();
      if (client.destroyed) return;
      this.opts.log.debug({ listener: this.opts.key, endpoint: b.address, err: err.message }, 'connect failed; trying the next endpoint');
      tried.add(b.address);
      this.connect(client, clientIP, tried, attempt + 1);
    };
    client.once('close', clientGone);
    backend.once('error', failed);
    backend.once('connect', () => {
      clearTimeout(timer);
      client.off('close', clientGone);
      backend.off('error', failed);
      this.pending.delete(client);
      if (this.closed) {
        b.active--;
        client.resetAndDestroy();
        backend.resetAndDestroy();
        return;
      }
      this.balancer.connected(clientIP, b);
      this.join(client, backend, b);
    });
  }

  private join(client: net.Socket, backend: net.Socket, endpoint: Backend): void {
    const p: Pair = { client, backend, endpoint, counted: { in: 0, out: 0 }, ageTimer: null, drain: null, draining: false };
    this.pairs.add(p);
    this.opts.stats.opened(this.opts.key, endpoint.address);
    const fail = () => {
      client.resetAndDestroy();
      backend.resetAndDestroy();
    };
    backend.on('error', fail);
    client.off('error', ignore);
    client.on('error', fail);
    let open = 2;
    const closed = () => {
      if (--open > 0) return;
      this.pairs.delete(p);
      if (p.ageTimer) clearTimeout(p.ageTimer);
      if (p.drain) clearInterval(p.drain);
      endpoint.active--;
      this.count(p);
      this.opts.stats.closed(this.opts.key, endpoint.address);
    };
    client.once('close', closed);
    backend.once('close', closed);
    client.pipe(backend);
    backend.pipe(client);
    if (this.maxAgeMs > 0) {
      // Jittered, so connections opened together (after a restart, say) do not all end together.
      const age = this.maxAgeMs * (0.9 + 0.2 * (this.opts.random ?? Math.random)());
      p.ageTimer = setTimeout(() => this.startDrain(p), age);
      p.ageTimer.unref();
    }
  }

  /**
   * Past its age: end the connection once neither side sent anything for QUIET_MS and
   * nothing waits to be written (between a response and the next request, for
   * request/response protocols), or after DRAIN_GRACE_MS whatever it carries. A client
   * that half-closed is left to finish: the endpoint's answer ends it.
   */
  private startDrain(p: Pair): void {
    p.ageTimer = null;
    if (p.draining || p.client.destroyed) return;
    p.draining = true;
    const started = Date.now();
    let last = started;
    const touch = () => (last = Date.now());
    p.client.on('data', touch);
    p.backend.on('data', touch);
    p.drain = setInterval(() => {
      const now = Date.now();
      const quiet = now - last >= QUIET_MS && p.client.writableLength === 0 && p.backend.writableLength === 0;
      if (quiet || now - started >= DRAIN_GRACE_MS) this.end(p);
    }, QUIET_MS / 2);
    p.drain.unref();
  }

  private end(p: Pair): void {
    if (p.drain) clearInterval(p.drain);
    p.drain = null;
    p.client.unpipe(p.backend);
    p.backend.unpipe(p.client);
    // Whatever still arrives is dropped; each side gets a FIN, then a reset if it lingers.
    p.client.resume();
    p.backend.resume();
    p.client.end();
    p.backend.end();
    const linger = setTimeout(() => {
      p.client.destroy();
      p.backend.destroy();
    }, LINGER_MS);
    linger.unref();
    p.client.once('close', () => clearTimeout(linger));
  }
}
