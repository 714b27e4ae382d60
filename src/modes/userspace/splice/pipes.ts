/**
 * Pipes for splice: each direction of a connection moves its bytes socket -> pipe ->
 * socket. Making a pipe costs a call and two descriptors, so an empty one goes back to
 * a small pool when its connection ends, for the next connection to take.
 */
import { C, type Libc } from '../../../../native/libc.js';

export interface Pipe {
  readonly r: number;
  readonly w: number;
}

/** A pipe's capacity: Linux's default, 16 pages. */
export const PIPE_BYTES = 65_536;
/**
 * Empty pipes kept for reuse at most (two descriptors each): enough for the connections
 * a busy listener opens at once, few enough that an idle agent holds little.
 */
const KEEP = 64;

export class PipePool {
  private readonly free: Pipe[] = [];

  constructor(private readonly libc: Libc) {}

  /** A pipe, or null when the process has no descriptor left. */
  take(): Pipe | null {
    const p = this.free.pop();
    if (p) return p;
    const fds = this.libc.pipe2(C.O_NONBLOCK | C.O_CLOEXEC);
    return fds ? { r: fds[0], w: fds[1] } : null;
  }

  /** Gives back a pipe; `empty`: nothing is left in it, so it can be reused. */
  give(p: Pipe, empty: boolean): void {
    if (empty && this.free.length < KEEP) {
      this.free.push(p);
      return;
    }
    this.libc.close(p.r);
    this.libc.close(p.w);
  }

  closeAll(): void {
    for (const p of this.free.splice(0)) this.give(p, false);
  }
}
