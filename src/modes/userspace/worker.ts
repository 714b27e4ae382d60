/**
 * A userspace worker process (forked by pool.ts through node:cluster): runs the TCP
 * listeners the agent tells it to, on the listening sockets the agent bound (cluster's
 * SCHED_NONE: every worker accepts from the one shared queue), and reports per-endpoint
 * counts back every STATS_INTERVAL_MS. It exits when the agent goes (the IPC channel
 * closes), so no worker outlives its agent.
 */
import { pino } from 'pino';
import { Balancer } from './balancer.js';
import { Deltas, STATS_INTERVAL_MS } from './deltas.js';
import { probeSelf } from './probe.js';
import { TcpListener } from './tcp.js';
import { listenerRef, type FromWorker, type ListenerSpec, type Probe, type ToWorker } from './workerprotocol.js';

const log = pino({ level: process.env.KPT_LOG_LEVEL ?? 'info', base: { worker: process.pid } });

const deltas = new Deltas();
const listeners = new Map<string, TcpListener>();

function send(m: FromWorker): void {
  if (process.connected) process.send!(m);
}

async function listen(spec: ListenerSpec): Promise<void> {
  await listeners.get(listenerRef(spec))?.close();
  const balancer = new Balancer(spec.scheduler, null);
  balancer.update(spec.endpoints, null);
  const l = new TcpListener(balancer, { key: spec.key, family: spec.family, port: spec.port, maxConnections: spec.maxConnections, maxAgeMs: spec.maxAgeMs, stats: deltas.sink, log });
  await l.listen();
  listeners.set(listenerRef(spec), l);
}

function probe(): Probe {
  let connections = 0;
  for (const l of listeners.values()) connections += l.connections;
  return probeSelf(connections, deltas.accepted);
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'listen': {
      const error = await listen(m.spec).then(
        () => null,
        (err: Error) => err.message,
      );
      return send({ type: 'done', id: m.id, error });
    }
    case 'update': {
      const l = listeners.get(m.ref);
      l?.balancer.update(m.endpoints, null);
      l?.setMaxAge(m.maxAgeMs);
      return;
    }
    case 'close': {
      const l = listeners.get(m.ref);
      listeners.delete(m.ref);
      await l?.close();
      return send({ type: 'done', id: m.id, error: null });
    }
    case 'probe':
      return send({ type: 'probe', id: m.id, probe: probe() });
  }
}

// One message at a time, in order: a close must find the listener a listen before it opened.
let queue = Promise.resolve();
process.on('message', (m: ToWorker) => {
  queue = queue.then(() => handle(m)).catch((err: Error) => log.error({ err: err.message }, 'userspace worker message failed'));
});

setInterval(() => {
  for (const l of listeners.values()) l.reportBytes();
  const d = deltas.take();
  if (d.length > 0) send({ type: 'stats', deltas: d });
}, STATS_INTERVAL_MS).unref();

// Messages that come before a listener are lost: the agent waits for this one.
send({ type: 'ready' });

// The agent's end: whatever this worker carries goes with it (as an in-process listener's would).
process.on('disconnect', () => process.exit(0));
