/**
 * Exponential backoff with jitter, as client-go's reflector uses between relists and
 * re-watches: 800 ms doubling to 30 s, each delay stretched by up to 100% at random so that
 * 5,000 nodes that lost the API server together do not come back together, and back to
 * the start once a stretch of two minutes passed without a retry.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** Quiet time after which the next retry starts from `initialMs` again. */
  resetAfterMs: number;
  /** Each delay is stretched by a random fraction of itself, up to this. */
  jitter: number;
}

export const REFLECTOR_BACKOFF: BackoffOptions = { initialMs: 800, maxMs: 30_000, resetAfterMs: 120_000, jitter: 1 };

export class Backoff {
  private step = 0;
  private last = -Infinity;

  constructor(
    private readonly opts: BackoffOptions = REFLECTOR_BACKOFF,
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next retry. */
  next(): number {
    const now = this.now();
    if (now - this.last > this.opts.resetAfterMs) this.step = 0;
    this.last = now;
    const base = Math.min(this.opts.maxMs, this.opts.initialMs * 2 ** this.step);
    if (base < this.opts.maxMs) this.step++;
    return Math.round(base * (1 + this.opts.jitter * this.random()));
  }
}
