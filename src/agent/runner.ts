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

export class BoundedFrequencyRunner {
  private timer: NodeJS.Timeout | null = null;
  private dueAt = Infinity;
  private lastStart = -Infinity;
  private running: Promise<void> | null = null;
  private again = false;
  /** Nothing runs before start(): the agent starts the runner once its informers synced. */
  private stopped = true;

  constructor(
    private readonly fn: () => Promise<boolean>,
    private readonly opts: RunnerOptions,
  ) {}

  /** Starts the periodic schedule with a run as soon as allowed. */
  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Asks for a run as soon as the minimum interval allows. */
  request(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.schedule(Math.max(0, this.lastStart + this.opts.minIntervalMs - Date.now()));
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    const at = Date.now() + delayMs;
    if (at >= this.dueAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.dueAt = at;
    this.timer = setTimeout(() => void this.tick(), delayMs);
  }

  private async tick(): Promise<void> {
    this.timer = null;
    this.dueAt = Infinity;
    this.lastStart = Date.now();
    let ok = false;
    this.running = (async () => {
      ok = await this.fn();
    })();
    await this.running;
    this.running = null;
    if (this.again) {
      this.again = false;
      this.request();
    }
    this.schedule(ok ? this.opts.maxIntervalMs : Math.min(this.opts.retryMs, this.opts.maxIntervalMs));
  }

  /** Stops scheduling and waits for a run in progress to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }
}
