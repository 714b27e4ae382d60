/**
 * V8 settings for every run of the program, made from inside it so that every way of
 * starting it (the image's entrypoint, `npx`, the tests and benchmarks) gets the same.
 * main.ts imports this module first: V8 reads them as the heap grows.
 *
 * V8 doubles the young generation (up to two 16 MB semi-spaces) whenever most of what it
 * allocates survives a scavenge, as the informers' lists and a first full sync's model
 * and render do. Once grown it stays grown, and what is promoted through it leaves the
 * old generation's next collection further away: at 10,000 services that cost the agent
 * some 100 MB of peak RSS for no gain in sync time. The young generation stays at V8's
 * minimum (two 1 MB semi-spaces) instead.
 */
import { setFlagsFromString } from 'node:v8';
import type { Worker } from 'node:worker_threads';

export function applyV8Flags(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

/**
 * Starting a worker thread sets V8's flags back to the command line's, for the whole
 * process: they are set again once it runs.
 */
export function keepV8Flags(worker: Worker): void {
  worker.once('online', applyV8Flags);
}

applyV8Flags();
