/**
 * The machine as a benchmark sees it: how much of its CPU was idle, and a wait for it to
 * be quiet before a timed phase. Deleting a network namespace that held 400,000 rules
 * leaves the kernel seconds of cleanup in the background; a phase timed during it pays
 * for the one before.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** The machine's idle and total jiffies so far. */
export function machineTicks(): { idle: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3]! + f[4]!, total: f.reduce((a, b) => a + b, 0) };
}

/**
 * Waits until the machine was at least `share` idle over a `windowMs` window, at most
 * `maxMs`; returns how long it waited, or null if it never got there.
 */
export async function untilQuiet(share = 0.9, windowMs = 300, maxMs = 30_000): Promise<number | null> {
  const start = performance.now();
  while (performance.now() - start < maxMs) {
    const a = machineTicks();
    await sleep(windowMs);
    const b = machineTicks();
    if (b.total > a.total && (b.idle - a.idle) / (b.total - a.total) >= share) return performance.now() - start;
  }
  return null;
}

/** A line for the log when the wait was long enough to matter. */
export async function settle(what: string): Promise<void> {
  const waited = await untilQuiet();
  if (waited === null) console.log(`    (the machine did not get quiet before ${what}: its figures include other work)`);
  else if (waited > 500) console.log(`    (waited ${(waited / 1000).toFixed(1)} s for the machine to get quiet before ${what})`);
}
