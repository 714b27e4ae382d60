/**
 * The program keeps V8's young generation small (src/v8-flags.ts),
 * also once a worker thread has started, which sets V8's flags back. Each case runs in a
 * node process of its own: V8's flags and heap are the process's. The same workload
 * without the flags grows the young generation, so each assertion can fail.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const MB = 1024 * 1024;
/** V8 still takes its young generation from the initial 1 MB to its minimum, 2 MB; unchecked, up to 32 MB. */
const SMALL = 2 * MB;
const FLAGS = pathToFileURL(join(import.meta.dirname, '..', 'dist', 'src', 'v8-flags.js')).href;

/** The young generation's size (bytes) after a workload most of which survives. */
function youngGeneration(opts: { flags: boolean; worker: 'none' | 'kept' | 'unkept' }): { after: number } {
  const script = `
    const v8 = await import('node:v8');
    const { Worker } = await import('node:worker_threads');
    const young = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
    const flags = ${opts.flags} ? await import(${JSON.stringify(FLAGS)}) : null;
    if (${JSON.stringify(opts.worker)} !== 'none') {
      const w = new Worker('setTimeout(() => {}, 200)', { eval: true, execArgv: [] });
      if (${JSON.stringify(opts.worker)} === 'kept') flags.keepV8Flags(w);
      await new Promise((r) => w.once('online', () => setImmediate(r)));
    }
    const kept = [];
    for (let i = 0; i < 3e6; i++) {
      const o = { i, s: 'x' + i };
      if (i % 2 === 0) kept.push(o);
    }
    process.stdout.write(JSON.stringify({ after: young(), n: kept.length }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as { after: number };
}

describe('V8 flags', () => {
  it('without them, a workload that mostly survives grows the young generation', () => {
    const { after } = youngGeneration({ flags: false, worker: 'none' });
    expect(after).toBeGreaterThanOrEqual(16 * MB);
  });

  it('with them, the young generation stays small', () => {
    const { after } = youngGeneration({ flags: true, worker: 'none' });
    expect(after).toBeLessThanOrEqual(SMALL);
  });

  it('a worker thread started sets them back, unless they are set again once it runs', () => {
    const unkept = youngGeneration({ flags: true, worker: 'unkept' });
    expect(unkept.after).toBeGreaterThanOrEqual(16 * MB);
    const kept = youngGeneration({ flags: true, worker: 'kept' });
    expect(kept.after).toBeLessThanOrEqual(SMALL);
  });
});
