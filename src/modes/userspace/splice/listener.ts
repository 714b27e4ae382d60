/**
 * One TCP listener of the splice engine: a listening socket of its own (bound as tcp.ts
 * binds: every address of the family, SO_REUSEADDR, IPv6 only for IPv6), accepting
 * without blocking up to its connection cap (the kernel's backlog holds the next ones
 * until a connection ends), each accepted socket handed to a Connection.
 */
import { C } from '../../../../native/libc.js';
import { sockaddr } from './sockaddr.js';
import type { Backend, Balancer } from '../balancer.js';
import type { EndpointStats } from '../stats.js';
import type { TcpListenerOptions } from '../tcp.js';
import { Connection, type ConnectionHost } from './connection.js';
import type { Loop } from './loop.js';
import type { PipePool } from './pipes.js';

const BACKLOG = 1_024;
const KEEPALIVE_S = 60;
const SOCKET = C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC;

/** As tcp.ts's, with debug lines sent where the thread can send them. */
export type SpliceListenerOptions = Omit<TcpListenerOptions, 'log'> & {
  debug(msg: string, fields: Record<string, unknown>): void;
};

export class SpliceListener implements ConnectionHost {
  readonly key: string;
  maxAgeMs: number;
  private fd = -1;
  private readonly connections = new Set<Connection>();
  private readonly addresses = new WeakMap<Backend, Buffer>();
  /** Accepting stopped short of EAGAIN (the cap, or no descriptor left): retried when a connection ends. */
  private backlogged = false;
  private closed = false;
  /** Connections accepted since the start. */
  accepted = 0;

  constructor(
    readonly loop: Loop,
    readonly pipes: PipePool,
    readonly balancer: Balancer,
    private readonly opts: SpliceListenerOptions,
  ) {
    this.key = opts.key;
    this.maxAgeMs = opts.maxAgeMs;
  }

  get stats(): EndpointStats {
    return this.opts.stats;
  }

  /** Connections accepted and not yet ended (connecting ones too). */
  get size(): number {
    return this.connections.size;
  }

  /** Binds and listens; throws with the kernel's reason. */
  open(): void {
    const { libc } = this.loop;
    const v6 = this.opts.family === 'IPv6';
    const host = v6 ? '::' : '0.0.0.0';
    const fd = libc.socket(v6 ? C.AF_INET6 : C.AF_INET, SOCKET, 0);
    if (fd < 0) throw new Error(`socket: ${libc.strerror(libc.errno())}`);
    const fail = (what: string) => {
      const why = libc.strerror(libc.errno());
      libc.close(fd);
      throw new Error(`${what} ${host} port ${this.opts.port}: ${why}`);
    };
    if (libc.setInt(fd, C.SOL_SOCKET, C.SO_REUSEADDR, 1) !== 0) fail('SO_REUSEADDR');
    if (v6 && libc.setInt(fd, C.IPPROTO_IPV6, C.IPV6_V6ONLY, 1) !== 0) fail('IPV6_V6ONLY');
    // Accepted sockets inherit these from the listening one.
    if (libc.setInt(fd, C.IPPROTO_TCP, C.TCP_NODELAY, 1) !== 0) fail('TCP_NODELAY');
    if (libc.setInt(fd, C.SOL_SOCKET, C.SO_KEEPALIVE, 1) !== 0 || libc.setInt(fd, C.IPPROTO_TCP, C.TCP_KEEPIDLE, KEEPALIVE_S) !== 0) fail('keepalive');
    if (libc.bind(fd, sockaddr(host, this.opts.port)) !== 0) fail('bind');
    if (libc.listen(fd, BACKLOG) !== 0) fail('listen');
    if (!this.loop.add(fd, this, C.EPOLLIN)) fail('epoll_ctl');
    this.fd = fd;
  }

  onEvent(): void {
    this.accept();
  }

  /** Stops accepting and resets every connection it carries or is connecting. */
  close(): void {
    this.closed = true;
    this.loop.close(this.fd);
    for (const c of [...this.connections]) c.reset();
  }

  reportBytes(): void {
    for (const c of this.connections) c.reportBytes();
  }

  socketFor(b: Backend): number {
    const { libc } = this.loop;
    const fd = libc.socket(b.host.includes(':') ? C.AF_INET6 : C.AF_INET, SOCKET, 0);
    if (fd < 0) return fd;
    libc.setInt(fd, C.IPPROTO_TCP, C.TCP_NODELAY, 1);
    libc.setInt(fd, C.SOL_SOCKET, C.SO_KEEPALIVE, 1);
    libc.setInt(fd, C.IPPROTO_TCP, C.TCP_KEEPIDLE, KEEPALIVE_S);
    return fd;
  }

  addressOf(b: Backend): Buffer {
    let a = this.addresses.get(b);
    if (!a) this.addresses.set(b, (a = sockaddr(b.host, b.port)));
    return a;
  }

  random(): number {
    return (this.opts.random ?? Math.random)();
  }

  ended(c: Connection): void {
    this.connections.delete(c);
    if (this.backlogged && !this.closed) this.accept();
  }

  debug(msg: string, fields: Record<string, unknown>): void {
    this.opts.debug(msg, fields);
  }

  private accept(): void {
    const { libc } = this.loop;
    this.backlogged = false;
    while (!this.closed) {
      if (this.connections.size >= this.opts.maxConnections) {
        this.backlogged = true;
        return;
      }
      const fd = libc.accept4(this.fd, C.SOCK_NONBLOCK | C.SOCK_CLOEXEC);
      if (fd < 0) {
        const e = libc.errno();
        if (e === C.EAGAIN) return;
        // ECONNABORTED and the like concern one connection; out of descriptors, wait for one to end.
        if (e === C.EINTR || e === C.ECONNABORTED || e === C.EPROTO) continue;
        this.backlogged = true;
        return;
      }
      this.accepted++;
      const c = new Connection(this, fd);
      this.connections.add(c);
      c.start();
    }
  }
}
