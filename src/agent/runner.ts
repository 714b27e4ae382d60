/**
 * Runs a sync no more often than `minIntervalMs` and at least every `maxIntervalMs`, one
 * at a time; requests that arrive while it runs or waits are coalesced into one run. This
 * is upstream's bounded-frequency runner, with a retry delay after a failed run.
 */
export interface RunnerOptions {
  minIntervalMs: number;
  maxIntervalMs: number;
  retryMs: number;
}

/** Node hands out Timeout objects; a fake clock can hand out plain numbers. */
export type TimerHandle = NodeJS.Timeout | number;

/** The runner reads time only through this, so tests can drive it without sleeping. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

export class BoundedFrequencyRunner {
  private timer: TimerHandle | null = null;
  private dueAt = Infinity;
  private lastStart = -Infinity;
  private running: Promise<boolean> | null = null;
  /** A run can't be scheduled while one is in progress, so the earliest time asked for waits here. */
  private pendingAt = Infinity;
  /** Nothing runs before start(): the agent starts the runner once its informers synced. */
  private stopped = true;

  constructor(
    private readonly fn: () => Promise<boolean>,
    private readonly opts: RunnerOptions,
    private readonly clock: Clock = realClock,
  ) {}

  /** Starts the periodic schedule with a run as soon as allowed. */
  start(): void {
    this.stopped = false;
    this.scheduleAt(this.clock.now());
  }

  /** Asks for a run as soon as the minimum interval allows. */
  request(): void {
    this.scheduleAt(Math.max(this.clock.now(), this.lastStart + this.opts.minIntervalMs));
  }

  /**
   * Asks for a run no sooner than `ms` from now, for callers that back off on their own
   * after a failure. A run already due earlier still comes first: a retry must never
   * postpone a sync someone asked for.
   */
  retryAfter(ms: number): void {
    this.scheduleAt(Math.max(this.clock.now() + ms, this.lastStart + this.opts.minIntervalMs));
  }

  private scheduleAt(at: number): void {
    if (this.stopped) return;
    if (this.running) {
      this.pendingAt = Math.min(this.pendingAt, at);
      return;
    }
    if (at >= this.dueAt) return;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.dueAt = at;
    this.timer = this.clock.setTimeout(() => void this.tick(), Math.max(0, at - this.clock.now()));
  }

  private async tick(): Promise<void> {
    this.timer = null;
    this.dueAt = Infinity;
    this.lastStart = this.clock.now();
    // fn starts a microtask later so that `running` is already set if it calls back into the runner.
    this.running = Promise.resolve().then(() => this.attempt());
    const ok = await this.running;
    this.running = null;
    if (this.pendingAt < Infinity) {
      const pending = this.pendingAt;
      this.pendingAt = Infinity;
      this.scheduleAt(Math.max(pending, this.lastStart + this.opts.minIntervalMs));
    }
    const next = ok ? this.opts.maxIntervalMs : Math.min(this.opts.retryMs, this.opts.maxIntervalMs);
    this.scheduleAt(this.clock.now() + next);
  }

  /**
   * A throw counts as a failed run: letting it escape would leave `running` set and end the
   * schedule for good. The runner has no logger, so a fn whose errors matter logs them itself.
   */
  private async attempt(): Promise<boolean> {
    try {
      return await this.fn();
    } catch {
      return false;
    }
  }

  /** Stops scheduling and waits for a run in progress to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.dueAt = Infinity;
    await this.running;
  }
}
