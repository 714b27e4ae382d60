/**
 * One proxied TCP connection in the splice engine, from the accepted client socket to
 * its end: a non-blocking connect to the endpoint the balancer picks (the next one, with
 * a longer timeout, when it fails), then each direction moved socket -> pipe -> socket
 * by splice. Backpressure: a side is read only while its pipe has room, and the pipe
 * drains only while the other side takes it. Half-close: EOF from one side becomes a
 * shutdown(SHUT_WR) of the other once the pipe is empty. An error on either side resets
 * both. Past the max age, it ends at a safe point, as tcp.ts does.
 */
import { C, type Libc } from '../../../../native/libc.js';
import type { Backend, Balancer } from '../balancer.js';
import { reportMoved, type Counted, type EndpointStats } from '../stats.js';
import { CONNECT_TIMEOUTS_MS, DRAIN_GRACE_MS, LINGER_MS, QUIET_MS } from '../tcp.js';
import type { Loop } from './loop.js';
import { PIPE_BYTES, type Pipe, type PipePool } from './pipes.js';
import type { Timer } from './timers.js';

/** What a connection needs from its listener. */
export interface ConnectionHost {
  readonly key: string;
  readonly loop: Loop;
  readonly pipes: PipePool;
  readonly balancer: Balancer;
  readonly stats: EndpointStats;
  /** 0: kept as long as it lasts; read when the connection is made. */
  readonly maxAgeMs: number;
  /** A connect attempt's socket: non-blocking, options set; -1 (errno set) when none can be had. */
  socketFor(b: Backend): number;
  /** The endpoint's socket address, for connect. */
  addressOf(b: Backend): Buffer;
  random(): number;
  /** The connection is over: both descriptors closed. */
  ended(c: Connection): void;
  debug(msg: string, fields: Record<string, unknown>): void;
}

const EVENTS = C.EPOLLIN | C.EPOLLOUT | C.EPOLLRDHUP;
const SPLICE = C.SPLICE_F_MOVE | C.SPLICE_F_NONBLOCK;
/** Where the bytes a closing connection still gets are read to, and dropped. */
const DISCARD = Buffer.alloc(65_536);

interface Side {
  fd: number;
  /** What the last events and calls say: whether a read or write may make progress. */
  readable: boolean;
  writable: boolean;
  /** Read its EOF. */
  eof: boolean;
  /** Sent it our FIN. */
  shut: boolean;
}

/** One direction: `from`'s bytes through `pipe` to `to`. */
interface Flow {
  from: Side;
  to: Side;
  pipe: Pipe | null;
  /** Bytes in the pipe now. */
  held: number;
  /**
   * The last read found no room: a pipe holds 16 buffers however small, so it can be
   * full with less than PIPE_BYTES in it. Reads wait for the pipe to drain.
   */
  full: boolean;
  /** Bytes read from `from` since the start. */
  moved: number;
}

type State = 'connecting' | 'open' | 'ending' | 'closed';

export class Connection {
  private state: State = 'connecting';
  private readonly client: Side;
  private backend: Side | null = null;
  private endpoint: Backend | null = null;
  private readonly tried = new Set<string>();
  private attempt = 0;
  private up: Flow | null = null;
  private down: Flow | null = null;
  private timer: Timer | null = null;
  private lastActivity = 0;
  private drainStarted = 0;
  private readonly counted: Counted = { in: 0, out: 0 };

  constructor(
    private readonly host: ConnectionHost,
    clientFd: number,
  ) {
    this.client = { fd: clientFd, readable: false, writable: false, eof: false, shut: false };
  }

  /** Watches the client and makes the first connect attempt. */
  start(): void {
    if (!this.host.loop.add(this.client.fd, this, EVENTS)) {
      this.host.loop.close(this.client.fd, true);
      this.state = 'closed';
      this.host.ended(this);
      return;
    }
    this.connectNext();
  }

  onEvent(fd: number, events: number): void {
    const side = fd === this.client.fd ? this.client : this.backend;
    if (!side || this.state === 'closed') return;
    if (this.state === 'connecting') {
      if (side === this.backend) return this.connectAnswered(events);
      if (events & (C.EPOLLERR | C.EPOLLHUP)) return this.reset();
      if (events & (C.EPOLLIN | C.EPOLLRDHUP)) side.readable = true;
      if (events & C.EPOLLOUT) side.writable = true;
      return;
    }
    if (events & C.EPOLLERR) return this.reset();
    if (events & (C.EPOLLIN | C.EPOLLRDHUP | C.EPOLLHUP)) side.readable = true;
    if (events & (C.EPOLLOUT | C.EPOLLHUP)) side.writable = true;
    if (this.state === 'ending') return this.discard();
    this.pumpBoth();
  }

  abort(): void {
    this.reset();
  }

  /** Resets both sides (the listener closes, or one side failed). */
  reset(): void {
    if (this.state === 'closed') return;
    this.host.loop.close(this.client.fd, true);
    if (this.backend) this.host.loop.close(this.backend.fd, true);
    this.finish(false);
  }

  /** Adds the bytes carried since the last report to the stats. */
  reportBytes(): void {
    if (!this.endpoint || !this.up || !this.down || (this.state !== 'open' && this.state !== 'ending')) return;
    reportMoved(this.host.stats, this.host.key, this.endpoint.address, this.counted, this.up.moved, this.down.moved);
  }

  private connectNext(): void {
    const { host } = this;
    const b = this.attempt < CONNECT_TIMEOUTS_MS.length ? host.balancer.pick('', this.tried) : null;
    // As the kernel modes' REJECT: the client learns at once there is nowhere to go.
    if (b === null) return this.reset();
    b.active++;
    this.endpoint = b;
    const fd = host.socketFor(b);
    if (fd < 0) return this.connectFailed(`socket: ${host.loop.libc.strerror(host.loop.libc.errno())}`);
    this.backend = { fd, readable: false, writable: false, eof: false, shut: false };
    const libc = host.loop.libc;
    if (libc.connect(fd, host.addressOf(b)) !== 0 && libc.errno() !== C.EINPROGRESS) return this.connectFailed(`connect: ${libc.strerror(libc.errno())}`);
    if (!host.loop.add(fd, this, EVENTS)) return this.connectFailed(`epoll_ctl: ${libc.strerror(libc.errno())}`);
    this.timer = host.loop.after(CONNECT_TIMEOUTS_MS[this.attempt]!, () => this.connectFailed('connect timeout'));
  }

  private connectAnswered(events: number): void {
    // SO_ERROR says whether the connect failed, and is read only when the events hint it
    // may have (writable alone is connected). A hangup without an error is a connection
    // the endpoint already answered and closed: connected, and the pump reads its end.
    if (events & (C.EPOLLERR | C.EPOLLHUP)) {
      const libc = this.host.loop.libc;
      const err = libc.getInt(this.backend!.fd, C.SOL_SOCKET, C.SO_ERROR);
      if (err !== 0) return this.connectFailed(err > 0 ? libc.strerror(err) : 'getsockopt SO_ERROR failed');
    }
    if (events & (C.EPOLLOUT | C.EPOLLERR | C.EPOLLHUP)) this.connected();
  }

  private connectFailed(why: string): void {
    const b = this.endpoint!;
    this.host.loop.timers.cancel(this.timer);
    this.timer = null;
    b.active--;
    this.endpoint = null;
    if (this.backend) this.host.loop.close(this.backend.fd);
    this.backend = null;
    this.host.debug('connect failed; trying the next endpoint', { listener: this.host.key, endpoint: b.address, err: why });
    this.tried.add(b.address);
    this.attempt++;
    this.connectNext();
  }

  private connected(): void {
    const { host } = this;
    host.loop.timers.cancel(this.timer);
    this.timer = null;
    const backend = this.backend!;
    backend.writable = true;
    this.state = 'open';
    this.up = { from: this.client, to: backend, pipe: null, held: 0, full: false, moved: 0 };
    this.down = { from: backend, to: this.client, pipe: null, held: 0, full: false, moved: 0 };
    this.lastActivity = host.loop.now;
    host.stats.opened(host.key, this.endpoint!.address);
    if (host.maxAgeMs > 0) {
      // Jittered, so connections opened together (after a restart, say) do not all end together.
      this.timer = host.loop.after(host.maxAgeMs * (0.9 + 0.2 * host.random()), () => this.startDrain());
    }
    // The client may have sent (or half-closed) while the connect was under way.
    this.client.readable = true;
    this.client.writable = true;
    backend.readable = true;
    this.pumpBoth();
  }

  private pumpBoth(): void {
    if (!this.pump(this.up!) || !this.pump(this.down!)) return;
    if (this.client.shut && this.backend!.shut) this.close();
  }

  /** Moves what it can one way; false when it reset the connection. */
  private pump(f: Flow): boolean {
    const libc = this.host.loop.libc;
    const { from, to } = f;
    for (;;) {
      let progress = false;
      if (f.held > 0 && to.writable) {
        const n = libc.splice(f.pipe!.r, to.fd, f.held, SPLICE);
        if (n > 0) {
          f.held -= n;
          f.full = false;
          progress = true;
        } else if (libc.errno() === C.EAGAIN) to.writable = false;
        else if (libc.errno() !== C.EINTR) return this.failed();
      }
      if (from.readable && !from.eof && !f.full && f.held < PIPE_BYTES) {
        f.pipe ??= this.host.pipes.take();
        if (!f.pipe) return this.failed();
        const n = libc.splice(from.fd, f.pipe.w, PIPE_BYTES - f.held, SPLICE);
        if (n > 0) {
          f.held += n;
          f.moved += n;
          this.lastActivity = this.host.loop.now;
          progress = true;
        } else if (n === 0) {
          from.eof = true;
          progress = true;
        } else if (libc.errno() === C.EAGAIN) {
          // With an empty pipe, the socket is empty; else the pipe may be full.
          if (f.held === 0) from.readable = false;
          else f.full = true;
        } else if (libc.errno() !== C.EINTR) return this.failed();
      }
      if (!progress) break;
    }
    if (from.eof && f.held === 0 && !to.shut) {
      to.shut = true;
      if (libc.shutdown(to.fd, C.SHUT_WR) !== 0) return this.failed();
    }
    return true;
  }

  private failed(): false {
    this.reset();
    return false;
  }

  /**
   * Past its age: ends once neither side sent anything for QUIET_MS and the pipes are
   * empty (between a response and the next request, for request/response protocols),
   * or after DRAIN_GRACE_MS whatever it carries.
   */
  private startDrain(): void {
    this.timer = null;
    if (this.state !== 'open') return;
    this.drainStarted = this.host.loop.now;
    this.checkDrain();
  }

  private checkDrain(): void {
    const now = this.host.loop.now;
    const quiet = now - this.lastActivity >= QUIET_MS && this.up!.held === 0 && this.down!.held === 0;
    if (quiet || now - this.drainStarted >= DRAIN_GRACE_MS) return this.end();
    this.timer = this.host.loop.after(QUIET_MS / 2, () => this.checkDrain());
  }

  /** Each side gets a FIN; whatever still arrives is dropped; a side that lingers is reset. */
  private end(): void {
    this.state = 'ending';
    const libc = this.host.loop.libc;
    for (const s of [this.client, this.backend!]) {
      if (!s.shut) libc.shutdown(s.fd, C.SHUT_WR);
      s.shut = true;
      s.readable = true;
    }
    this.timer = this.host.loop.after(LINGER_MS, () => this.reset());
    this.discard();
  }

  private discard(): void {
    const libc = this.host.loop.libc;
    for (const s of [this.client, this.backend!]) {
      while (s.readable && !s.eof) {
        const n = libc.read(s.fd, DISCARD, DISCARD.length);
        if (n === 0) s.eof = true;
        else if (n < 0 && libc.errno() === C.EAGAIN) s.readable = false;
        else if (n < 0 && libc.errno() !== C.EINTR) return this.reset();
      }
    }
    if (this.client.eof && this.backend!.eof) this.close();
  }

  /** Both directions are done: a normal close. */
  private close(): void {
    this.host.loop.close(this.client.fd);
    this.host.loop.close(this.backend!.fd);
    this.finish(true);
  }

  private finish(clean: boolean): void {
    const wasOpen = this.state === 'open' || this.state === 'ending';
    const { host } = this;
    if (wasOpen) this.reportBytes();
    this.state = 'closed';
    host.loop.timers.cancel(this.timer);
    this.timer = null;
    for (const f of [this.up, this.down]) if (f?.pipe) host.pipes.give(f.pipe, clean && f.held === 0);
    if (this.endpoint) {
      this.endpoint.active--;
      if (wasOpen) host.stats.closed(host.key, this.endpoint.address);
    }
    host.ended(this);
  }
}
