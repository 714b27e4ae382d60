import { describe, expect, it } from 'vitest';
import { BoundedFrequencyRunner } from '../src/agent/runner.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function recorder(workMs: number, ok = true) {
  const runs: { start: number; end: number }[] = [];
  let active = 0;
  let maxActive = 0;
  const fn = async () => {
    active++;
    maxActive = Math.max(maxActive, active);
    const start = Date.now();
    await sleep(workMs);
    runs.push({ start, end: Date.now() });
    active--;
    return ok;
  };
  return { fn, runs, maxActive: () => maxActive };
}

describe('BoundedFrequencyRunner', () => {
  it('does not run before start(), even when asked', async () => {
    const r = recorder(1);
    const runner = new BoundedFrequencyRunner(r.fn, { minIntervalMs: 0, maxIntervalMs: 10_000, retryMs: 100 });
    runner.request();
    await sleep(50);
    expect(r.runs).toHaveLength(0);
    runner.start();
    await sleep(50);
    expect(r.runs).toHaveLength(1);
    await runner.stop();
  });

  it('never runs twice at once, and coalesces requests made during a run into one more run', async () => {
    const r = recorder(60);
    const runner = new BoundedFrequencyRunner(r.fn, { minIntervalMs: 0, maxIntervalMs: 10_000, retryMs: 100 });
    runner.start();
    await sleep(10);
    for (let i = 0; i < 5; i++) runner.request();
    runner.start();
    await sleep(250);
    expect(r.maxActive()).toBe(1);
    expect(r.runs).toHaveLength(2);
    await runner.stop();
  });

  it('keeps the minimum interval between runs, and runs at least every maximum interval', async () => {
    const r = recorder(1);
    const runner = new BoundedFrequencyRunner(r.fn, { minIntervalMs: 100, maxIntervalMs: 150, retryMs: 100 });
    runner.start();
    await sleep(20);
    // Asked for at once, but the last run started less than minIntervalMs ago.
    runner.request();
    await sleep(700);
    await runner.stop();
    const gaps = r.runs.slice(1).map((x, i) => x.start - r.runs[i]!.start);
    // Unasked, the periodic runs still come.
    expect(r.runs.length).toBeGreaterThanOrEqual(3);
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(90);
  });
});
