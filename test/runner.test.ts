import { afterEach, describe, expect, it } from 'vitest';
import { BoundedFrequencyRunner, type Clock, type RunnerOptions, type TimerHandle } from '../src/agent/runner.js';

/** Lets every promise chain that is ready run to its end; no timer is involved. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** Time moves only in advance(), so every run time below is exact. */
class FakeClock implements Clock {
  private t = 0;
  private nextId = 1;
  private timers: { id: number; at: number; fn: () => void }[] = [];

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++;
    this.timers.push({ id, at: this.t + Math.max(0, ms), fn });
    // Equal times fire in the order they were set, as real timers do.
    this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers = this.timers.filter((x) => x.id !== handle);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((r) => this.setTimeout(r, ms));
  }

  /** Fires due timers one at a time, letting the async work each one starts finish before the next. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (;;) {
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await settle();
    }
    this.t = end;
  }
}

type Outcome = 'ok' | 'fail' | 'reject' | 'throw';

/**
 * A fn that takes `workMs` of fake time and then does what `outcomes` says, in order
 * ('ok' once they run out), recording when each run started and ended.
 */
function recorder(clock: FakeClock, workMs: number, outcomes: Outcome[] = []) {
  const starts: number[] = [];
  const ends: number[] = [];
  let active = 0;
  let maxActive = 0;
  let during: (() => void) | null = null;
  const fn = (): Promise<boolean> => {
    const outcome = outcomes.shift() ?? 'ok';
    starts.push(clock.now());
    if (outcome === 'throw') {
      ends.push(clock.now());
      throw new Error('sync threw');
    }
    active++;
    maxActive = Math.max(maxActive, active);
    const hook = during;
    during = null;
    hook?.();
    return (async () => {
      await clock.sleep(workMs);
      active--;
      ends.push(clock.now());
      if (outcome === 'reject') throw new Error('sync rejected');
      return outcome === 'ok';
    })();
  };
  return {
    fn,
    starts,
    ends,
    maxActive: () => maxActive,
    /** Runs `f` inside the next run, as a fn calling back into the runner would. */
    duringNextRun: (f: () => void) => {
      during = f;
    },
  };
}

const OPTS: RunnerOptions = { minIntervalMs: 1_000, maxIntervalMs: 60_000, retryMs: 5_000 };

describe('BoundedFrequencyRunner', () => {
  let current: { runner: BoundedFrequencyRunner; clock: FakeClock } | null = null;
  // A test may end mid-run; fake time must move for that run, and so stop(), to finish.
  afterEach(async () => {
    if (!current) return;
    const stopping = current.runner.stop();
    await current.clock.advance(60_000);
    await stopping;
    current = null;
  });

  function setup(workMs: number, opts: Partial<RunnerOptions> = {}, outcomes: Outcome[] = []) {
    const clock = new FakeClock();
    const rec = recorder(clock, workMs, outcomes);
    const runner = new BoundedFrequencyRunner(rec.fn, { ...OPTS, ...opts }, clock);
    current = { runner, clock };
    return { clock, rec, runner };
  }

  it('does not run before start(), even when asked', async () => {
    const { clock, rec, runner } = setup(0);
    runner.request();
    runner.retryAfter(0);
    await clock.advance(120_000);
    expect(rec.starts).toEqual([]);
  });

  it('runs at once on start()', async () => {
    const { clock, rec, runner } = setup(0);
    await clock.advance(7_000);
    runner.start();
    await clock.advance(0);
    expect(rec.starts).toEqual([7_000]);
  });

  it('coalesces requests within the minimum interval into one run at lastStart + minInterval', async () => {
    const { clock, rec, runner } = setup(0);
    runner.start();
    await clock.advance(100);
    runner.request();
    await clock.advance(300);
    runner.request();
    runner.request();
    await clock.advance(599);
    expect(rec.starts).toEqual([0]);
    await clock.advance(1);
    expect(rec.starts).toEqual([0, 1_000]);
    await clock.advance(10_000);
    expect(rec.starts).toEqual([0, 1_000]);
  });

  it('runs every maxInterval, counted from the end of the last run, when nobody asks', async () => {
    const { clock, rec, runner } = setup(10);
    runner.start();
    await clock.advance(180_100);
    expect(rec.starts).toEqual([0, 60_010, 120_020, 180_030]);
  });

  it('retries a failed run after retryMs, then goes back to maxInterval', async () => {
    const { clock, rec, runner } = setup(0, {}, ['fail', 'fail', 'ok']);
    runner.start();
    await clock.advance(80_000);
    expect(rec.starts).toEqual([0, 5_000, 10_000, 70_000]);
  });

  it('retries a failed run no later than maxInterval', async () => {
    const { clock, rec, runner } = setup(0, { maxIntervalMs: 3_000, retryMs: 5_000 }, ['fail']);
    runner.start();
    await clock.advance(4_000);
    expect(rec.starts).toEqual([0, 3_000]);
  });

  it('counts a rejected or throwing fn as a failed run and keeps going', async () => {
    const { clock, rec, runner } = setup(10, {}, ['reject', 'throw', 'ok']);
    runner.start();
    await clock.advance(71_000);
    expect(rec.starts).toEqual([0, 5_010, 10_010, 70_020]);
    expect(rec.ends).toEqual([10, 5_010, 10_020, 70_030]);
    // A request is still honoured, so the runner is not stuck thinking a run is in progress.
    runner.request();
    await clock.advance(1_000);
    expect(rec.starts).toEqual([0, 5_010, 10_010, 70_020, 71_020]);
  });

  it('never runs twice at once: requests during a run make exactly one more run after it', async () => {
    const { clock, rec, runner } = setup(300, { minIntervalMs: 500 });
    runner.start();
    await clock.advance(50);
    for (let i = 0; i < 5; i++) runner.request();
    runner.start();
    await clock.advance(250);
    expect(rec.ends).toEqual([300]);
    // The run ended at 300; the minimum interval holds the next one to 500.
    await clock.advance(199);
    expect(rec.starts).toEqual([0]);
    await clock.advance(1);
    expect(rec.starts).toEqual([0, 500]);
    await clock.advance(10_000);
    expect(rec.starts).toEqual([0, 500]);
    expect(rec.ends).toEqual([300, 800]);
    expect(rec.maxActive()).toBe(1);
  });

  it('a fn asking for a run from inside itself gets one after it, not alongside it', async () => {
    const { clock, rec, runner } = setup(300, { minIntervalMs: 0 });
    rec.duringNextRun(() => runner.request());
    runner.start();
    await clock.advance(10_000);
    expect(rec.starts).toEqual([0, 300]);
    expect(rec.maxActive()).toBe(1);
  });

  it('retryAfter(ms) brings the next run to now + ms, not sooner', async () => {
    const { clock, rec, runner } = setup(0);
    runner.start();
    await clock.advance(2_000);
    runner.retryAfter(3_000);
    await clock.advance(2_999);
    expect(rec.starts).toEqual([0]);
    await clock.advance(1);
    expect(rec.starts).toEqual([0, 5_000]);
    // The periodic schedule resumes from there.
    await clock.advance(60_000);
    expect(rec.starts).toEqual([0, 5_000, 65_000]);
  });

  it('retryAfter does not postpone a run already scheduled earlier', async () => {
    const { clock, rec, runner } = setup(0, { minIntervalMs: 5_000 });
    runner.start();
    await clock.advance(1_000);
    runner.request();
    runner.retryAfter(10_000);
    await clock.advance(20_000);
    expect(rec.starts).toEqual([0, 5_000]);
  });

  it('retryAfter respects the minimum interval', async () => {
    const { clock, rec, runner } = setup(0, { minIntervalMs: 5_000 });
    runner.start();
    await clock.advance(1_000);
    runner.retryAfter(1_000);
    await clock.advance(3_999);
    expect(rec.starts).toEqual([0]);
    await clock.advance(1);
    expect(rec.starts).toEqual([0, 5_000]);
  });

  it('retryAfter from inside a run schedules the next run at call time + ms', async () => {
    const { clock, rec, runner } = setup(200, { minIntervalMs: 100 });
    rec.duringNextRun(() => runner.retryAfter(3_000));
    runner.start();
    await clock.advance(2_999);
    expect(rec.starts).toEqual([0]);
    await clock.advance(1);
    expect(rec.starts).toEqual([0, 3_000]);
  });

  it('stop() waits for the run in progress, and nothing runs after it', async () => {
    const { clock, rec, runner } = setup(500);
    runner.start();
    await clock.advance(100);
    runner.request();
    let stopped = false;
    const stopping = runner.stop().then(() => {
      stopped = true;
    });
    await clock.advance(399);
    expect(stopped).toBe(false);
    await clock.advance(1);
    await stopping;
    expect(rec.ends).toEqual([500]);
    runner.request();
    runner.retryAfter(0);
    await clock.advance(300_000);
    expect(rec.starts).toEqual([0]);
  });

  it('stop() between runs cancels the one scheduled', async () => {
    const { clock, rec, runner } = setup(0);
    runner.start();
    await clock.advance(100);
    runner.request();
    await runner.stop();
    await clock.advance(300_000);
    expect(rec.starts).toEqual([0]);
  });

  it('stop() resolves even when the run in progress rejects', async () => {
    const { clock, rec, runner } = setup(500, {}, ['reject']);
    runner.start();
    await clock.advance(100);
    const stopping = runner.stop();
    await clock.advance(400);
    await expect(stopping).resolves.toBeUndefined();
    await clock.advance(300_000);
    expect(rec.starts).toEqual([0]);
  });
});
