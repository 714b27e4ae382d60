/**
 * The splice engine's thread (started by engine.ts): one synchronous epoll loop that
 * runs the TCP listeners the agent asks for, takes the agent's messages when the
 * eventfd says some came (receiveMessageOnPort: the loop never returns to Node's event
 * loop), and reports per-endpoint counts every STATS_INTERVAL_MS. When it stops, or
 * fails, it closes every descriptor it holds.
 */
import { receiveMessageOnPort, workerData } from 'node:worker_threads';
import { C, loadLibc } from '../../../../native/libc.js';
import { Balancer } from '../balancer.js';
import { Deltas, STATS_INTERVAL_MS } from '../deltas.js';
import { probeSelf } from '../probe.js';
import { listenerRef } from '../workerprotocol.js';
import { SpliceListener } from './listener.js';
import { Loop } from './loop.js';
import { PipePool } from './pipes.js';
import type { EngineData, FromEngine, LogLevel, ToEngine } from './protocol.js';

const { eventfd, port, debug } = workerData as EngineData;
const libc = await loadLibc();
const send = (m: FromEngine) => port.postMessage(m);
const log = (level: LogLevel, msg: string, fields: Record<string, unknown>) => send({ type: 'log', level, msg, fields });

const loop = new Loop(libc, (err) => log('error', 'splice engine handler failed', { err: (err as Error).stack ?? String(err) }));
const pipes = new PipePool(libc);
const deltas = new Deltas();
const listeners = new Map<string, SpliceListener>();
const counter = Buffer.alloc(8);

function handle(m: ToEngine): void {
  switch (m.type) {
    case 'listen': {
      const ref = listenerRef(m.spec);
      listeners.get(ref)?.close();
      listeners.delete(ref);
      const balancer = new Balancer(m.spec.scheduler, null);
      balancer.update(m.spec.endpoints, null);
      const l = new SpliceListener(loop, pipes, balancer, {
        ...m.spec,
        stats: deltas.sink,
        debug: (msg, fields) => debug && log('debug', msg, fields),
      });
      try {
        l.open();
        listeners.set(ref, l);
        return send({ type: 'done', id: m.id, error: null });
      } catch (err) {
        return send({ type: 'done', id: m.id, error: (err as Error).message });
      }
    }
    case 'update': {
      const l = listeners.get(m.ref);
      l?.balancer.update(m.endpoints, null);
      if (l) l.maxAgeMs = m.maxAgeMs;
      return;
    }
    case 'close': {
      listeners.get(m.ref)?.close();
      listeners.delete(m.ref);
      return send({ type: 'done', id: m.id, error: null });
    }
    case 'probe': {
      let connections = 0;
      let accepted = 0;
      for (const l of listeners.values()) (connections += l.size), (accepted += l.accepted);
      return send({ type: 'probe', id: m.id, probe: probeSelf(connections, accepted) });
    }
    case 'stop':
      return loop.stop();
  }
}

const control = {
  onEvent(): void {
    libc.read(eventfd, counter, 8);
    for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) handle(m.message as ToEngine);
  },
};

const report = () => {
  for (const l of listeners.values()) l.reportBytes();
  const d = deltas.take();
  if (d.length > 0) send({ type: 'stats', deltas: d });
  loop.after(STATS_INTERVAL_MS, report);
};

try {
  if (!loop.add(eventfd, control, C.EPOLLIN, false)) throw new Error(`epoll_ctl: ${libc.strerror(libc.errno())}`);
  loop.after(STATS_INTERVAL_MS, report);
  loop.run();
} finally {
  for (const l of listeners.values()) l.close();
  report();
  pipes.closeAll();
  port.close();
}
