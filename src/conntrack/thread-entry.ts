/**
 * The worker thread the netlink cleaner runs in (thread.ts starts it): loads
 * libnetfilter_conntrack, says whether it could, then answers each request with what
 * NetlinkCleaner did. A dump of a large table takes a while, synchronously: here it does
 * not stop the agent's event loop (health, metrics, watches).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { NetlinkCleaner } from './native.js';
import { loadNetfilterConntrack } from '../../native/netfilter-conntrack.js';
import type { ConntrackDeletion } from './stale.js';

export interface CleanRequest {
  id: number;
  deletions: ConntrackDeletion[];
}

const port = parentPort;
if (port === null) throw new Error('thread-entry.js runs as a worker thread');

try {
  const cleaner = new NetlinkCleaner(await loadNetfilterConntrack((workerData as { library: string }).library));
  port.on('message', (req: CleanRequest) => {
    void cleaner.delete(req.deletions).then((result) => port.postMessage({ type: 'done', id: req.id, result, last: cleaner.last }));
  });
  port.postMessage({ type: 'ready' });
} catch (err) {
  port.postMessage({ type: 'error', message: (err as Error).message });
}
