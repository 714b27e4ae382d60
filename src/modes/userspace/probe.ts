/** A data path's look at itself for tests and the leak check: descriptors and heap after a full GC. */
import { readdirSync } from 'node:fs';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Probe } from './workerprotocol.js';

export function probeSelf(connections: number, accepted: number): Probe {
  setFlagsFromString('--expose_gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  // This isolate's heap: a worker thread's own, not the process's main one.
  return { fds: readdirSync('/proc/self/fd').length, heapUsed: getHeapStatistics().used_heap_size, connections, accepted };
}
