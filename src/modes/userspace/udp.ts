/**
 * One UDP listener of userspace mode. Each client (address and port) gets a session: a
 * socket of its own connected to the endpoint the balancer picked, whose replies go back
 * to the client from the socket the client wrote to. Sessions end after the idle timeout
 * (`--udp-timeout`); at the cap, datagrams of new clients are dropped until one ends.
 *
 * The listener binds each local address on its own, not the wildcard: a reply must leave
 * from the address the capture rule redirected to (127.0.0.1 for the node's own traffic)
 * or conntrack cannot map it back to the service address the client wrote to.
 */
import dgram from 'node:dgram';
import type { Logger } from 'pino';
import type { IPFamily } from '../../model/types.js';
import type { Backend, Balancer } from './balancer.js';
import type { EndpointStats } from './stats.js';

export const MAX_UDP_SESSIONS = 16_384;
const MAX_DATAGRAM = 65_535;

export interface UdpListenerOptions {
  key: string;
  family: IPFamily;
  port: number;
  idleTimeoutMs: number;
  maxSessions: number;
  stats: EndpointStats;
  log: Logger;
}

interface Session {
  upstream: dgram.Socket;
  endpoint: Backend;
  lastSeen: number;
  counted: { in: number; out: number };
  bytes: { in: number; out: number };
}

export class UdpListener {
  private readonly sockets = new Map<string, dgram.Socket>();
  private readonly sessions = new Map<string, Session>();
  private readonly sweep: NodeJS.Timeout;
  private dropped = 0;

  constructor(
    readonly balancer: Balancer,
    private readonly opts: UdpListenerOptions,
  ) {
    this.sweep = setInterval(() => this.expire(), Math.max(10, Math.min(opts.idleTimeoutMs / 2, 1_000)));
    this.sweep.unref();
  }

  get port(): number {
    return this.opts.port;
  }

  get connections(): number {
    return this.sessions.size;
  }

  /** Binds every one of `addresses` not bound yet and closes the sockets of addresses gone; fails when none binds. */
  async listen(addresses: readonly string[]): Promise<void> {
    const wanted = new Set(addresses);
    for (const [addr, s] of this.sockets) {
      if (wanted.has(addr)) continue;
      s.close();
      this.sockets.delete(addr);
    }
    const errors: string[] = [];
    for (const addr of wanted) {
      if (this.sockets.has(addr)) continue;
      try {
        this.sockets.set(addr, await this.bind(addr));
      } catch (err) {
        errors.push(`${addr}: ${(err as Error).message}`);
      }
    }
    if (this.sockets.size === 0) throw new Error(`cannot bind UDP port ${this.opts.port} (${errors.join('; ') || 'no local address'})`);
    if (errors.length > 0) this.opts.log.warn({ listener: this.opts.key, errors }, 'UDP listener could not bind some local addresses');
  }

  private bind(address: string): Promise<dgram.Socket> {
    const s = dgram.createSocket({ type: this.opts.family === 'IPv4' ? 'udp4' : 'udp6', ipv6Only: this.opts.family === 'IPv6' });
    return new Promise((resolve, reject) => {
      s.once('error', (err) => {
        s.close();
        reject(err);
      });
      s.bind({ address, port: this.opts.port, exclusive: true }, () => {
        s.removeAllListeners('error');
        s.on('error', (err) => this.opts.log.warn({ listener: this.opts.key, err: err.message }, 'UDP listener error'));
        s.on('message', (msg, rinfo) => this.receive(s, msg, rinfo));
        resolve(s);
      });
    });
  }

  close(): void {
    clearInterval(this.sweep);
    for (const key of [...this.sessions.keys()]) this.endSession(key);
    for (const s of this.sockets.values()) s.close();
    this.sockets.clear();
  }

  /** Ends the sessions to endpoints the balancer no longer has, as the kernel modes delete their UDP flows. */
  endpointsChanged(): void {
    const present = new Set(this.balancer.endpoints.map((b) => b.address));
    for (const [key, s] of this.sessions) if (!present.has(s.endpoint.address)) this.endSession(key);
  }

  reportBytes(): void {
    for (const s of this.sessions.values()) this.count(s);
  }

  private count(s: Session): void {
    const inb = s.bytes.in - s.counted.in;
    const outb = s.bytes.out - s.counted.out;
    if (inb === 0 && outb === 0) return;
    s.counted.in = s.bytes.in;
    s.counted.out = s.bytes.out;
    this.opts.stats.bytes(this.opts.key, s.endpoint.address, inb, outb);
  }

  private receive(local: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const key = `${rinfo.address} ${rinfo.port} ${local.address().address}`;
    let s = this.sessions.get(key);
    if (!s) {
      if (this.sessions.size >= this.opts.maxSessions) {
        if (this.dropped++ % 1000 === 0) this.opts.log.warn({ listener: this.opts.key, sessions: this.sessions.size, dropped: this.dropped }, 'UDP session cap reached; dropping datagrams of new clients');
        return;
      }
      const created = this.open(key, local, rinfo);
      if (!created) return;
      s = created;
    }
    s.lastSeen = Date.now();
    s.bytes.in += msg.length;
    s.upstream.send(msg, s.endpoint.port, s.endpoint.host);
  }

  private open(key: string, local: dgram.Socket, client: dgram.RemoteInfo): Session | null {
    const endpoint = this.balancer.pick(client.address);
    if (!endpoint) return null;
    const upstream = dgram.createSocket({ type: this.opts.family === 'IPv4' ? 'udp4' : 'udp6', recvBufferSize: MAX_DATAGRAM * 4 });
    const s: Session = { upstream, endpoint, lastSeen: Date.now(), counted: { in: 0, out: 0 }, bytes: { in: 0, out: 0 } };
    upstream.on('message', (reply, from) => {
      // The session's socket is not connected (a send must not wait for connect): only the endpoint's replies count.
      if (from.port !== endpoint.port || from.address !== endpoint.host) return;
      s.lastSeen = Date.now();
      s.bytes.out += reply.length;
      local.send(reply, client.port, client.address);
    });
    upstream.on('error', (err) => {
      this.opts.log.debug({ listener: this.opts.key, endpoint: endpoint.address, err: err.message }, 'UDP session error; ending it');
      this.endSession(key);
    });
    endpoint.active++;
    this.balancer.connected(client.address, endpoint);
    this.sessions.set(key, s);
    this.opts.stats.opened(this.opts.key, endpoint.address);
    return s;
  }

  private endSession(key: string): void {
    const s = this.sessions.get(key);
    if (!s) return;
    this.sessions.delete(key);
    this.count(s);
    s.endpoint.active--;
    this.opts.stats.closed(this.opts.key, s.endpoint.address);
    s.upstream.close();
  }

  private expire(): void {
    const cutoff = Date.now() - this.opts.idleTimeoutMs;
    for (const [key, s] of this.sessions) if (s.lastSeen <= cutoff) this.endSession(key);
  }
}
