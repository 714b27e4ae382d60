/** The splice engine's timer heap: due order, cancelling from anywhere in the heap, and the wait it asks for. */
import { describe, expect, it } from 'vitest';
import { TimerHeap, type Timer } from '../src/modes/userspace/splice/timers.js';

describe('TimerHeap', () => {
  it('fires due timers earliest first, never a cancelled one, and leaves nothing behind', () => {
    const h = new TimerHeap();
    const fired: number[] = [];
    const timers: Timer[] = [];
    // A scrambled order, so that cancelled timers sit at the root, the leaves and between.
    for (const at of [50, 10, 90, 30, 70, 20, 80, 40, 60, 0]) timers.push(h.add(at, () => fired.push(at)));
    for (const t of timers.filter((t) => [0, 40, 90, 20].includes(t.at))) h.cancel(t);
    h.cancel(timers[1]!);
    expect(h.size).toBe(5);
    expect(h.wait(0)).toBe(30);
    h.runDue(60);
    expect(fired).toEqual([30, 50, 60]);
    expect(h.wait(60)).toBe(10);
    h.runDue(1_000);
    expect(fired).toEqual([30, 50, 60, 70, 80]);
    expect(h.size).toBe(0);
    expect(h.wait(1_000)).toBe(-1);
  });

  it('runs a timer added by a firing one at the next round', () => {
    const h = new TimerHeap();
    let n = 0;
    const again = () => (n++, h.add(0, again));
    h.add(0, again);
    h.runDue(0);
    expect(n).toBe(1);
    expect(h.size).toBe(1);
  });
});
