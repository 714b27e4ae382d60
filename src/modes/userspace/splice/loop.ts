/**
 * The splice engine's event loop: one epoll set, edge-triggered for sockets (each
 * handler keeps what it learned, so no epoll_ctl is needed after a socket is added),
 * and a timer heap whose first due time bounds each wait. Synchronous: it runs on a
 * thread of its own and never returns to Node's event loop until stopped.
 */
import { C, EPOLL_EVENT_SIZE, type Libc } from '../../../../native/libc.js';
import { TimerHeap, type Timer } from './timers.js';

export interface Handler {
  /** `events`: the EPOLL* bits the kernel reported for `fd`. */
  onEvent(fd: number, events: number): void;
  /** onEvent threw (a bug): give up what it holds, so that nothing is left half-done. */
  abort?(): void;
}

/** Events one wait takes at most. */
const MAX_EVENTS = 256;

export class Loop {
  readonly timers = new TimerHeap();
  /** Monotonic milliseconds, as of the last wakeup. */
  now = performance.now();
  private readonly epfd: number;
  private readonly events = Buffer.alloc(MAX_EVENTS * EPOLL_EVENT_SIZE);
  private readonly event = Buffer.alloc(EPOLL_EVENT_SIZE);
  private readonly handlers: (Handler | undefined)[] = [];
  /**
   * Descriptors closed while a batch of events is handled: the batch's later events
   * for them are stale, and must not reach whatever reuses the number.
   */
  private readonly closedInBatch = new Set<number>();
  private stopped = false;

  constructor(
    readonly libc: Libc,
    /** Told about a handler that threw; the loop goes on. */
    private readonly failed: (err: unknown) => void,
  ) {
    this.epfd = libc.epollCreate1(C.EPOLL_CLOEXEC);
    if (this.epfd < 0) throw new Error(`epoll_create1: ${libc.strerror(libc.errno())}`);
  }

  /** Watches `fd`; `edge`: edge-triggered (sockets), else level-triggered. Returns false (errno set) when the kernel refuses. */
  add(fd: number, handler: Handler, events: number, edge = true): boolean {
    this.event.writeUInt32LE((edge ? events | C.EPOLLET : events) >>> 0, 0);
    this.event.writeUInt32LE(fd, 4);
    this.event.writeUInt32LE(0, 8);
    if (this.libc.epollCtl(this.epfd, C.EPOLL_CTL_ADD, fd, this.event) !== 0) return false;
    this.handlers[fd] = handler;
    return true;
  }

  /** Closes `fd` (the kernel drops it from the set); `reset`: with a reset rather than a FIN. */
  close(fd: number, reset = false): void {
    if (fd < 0) return;
    this.handlers[fd] = undefined;
    this.closedInBatch.add(fd);
    if (reset) this.libc.lingerZero(fd);
    this.libc.close(fd);
  }

  after(ms: number, fire: () => void): Timer {
    return this.timers.add(this.now + ms, fire);
  }

  stop(): void {
    this.stopped = true;
  }

  private abort(h: Handler): void {
    try {
      h.abort?.();
    } catch (err) {
      this.failed(err);
    }
  }

  /** Runs until stop(); then closes the epoll set. */
  run(): void {
    const { libc, events } = this;
    try {
      while (!this.stopped) {
        const n = libc.epollWait(this.epfd, events, MAX_EVENTS, this.timers.wait(performance.now()));
        this.now = performance.now();
        if (n < 0 && libc.errno() !== C.EINTR) throw new Error(`epoll_wait: ${libc.strerror(libc.errno())}`);
        for (let i = 0; i < n; i++) {
          const at = i * EPOLL_EVENT_SIZE;
          const fd = events.readUInt32LE(at + 4);
          if (this.closedInBatch.has(fd)) continue;
          const h = this.handlers[fd];
          if (!h) continue;
          try {
            h.onEvent(fd, events.readUInt32LE(at));
          } catch (err) {
            this.failed(err);
            this.abort(h);
          }
        }
        this.closedInBatch.clear();
        try {
          this.timers.runDue(this.now);
        } catch (err) {
          this.failed(err);
        }
        this.closedInBatch.clear();
      }
    } finally {
      libc.close(this.epfd);
    }
  }
}
