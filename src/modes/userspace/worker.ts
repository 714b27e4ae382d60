/**
 * A userspace worker process (forked by pool.ts through node:cluster): runs the TCP
 * listeners the agent tells it to, on the listening sockets the agent bound (cluster's
 * SCHED_NONE: every worker accepts from the one shared queue), and reports per-endpoint
 * counts back every STATS_INTERVAL_MS. It exits when the agent goes (the IPC channel
 * closes), so no worker outlives its agent.
 */
import { readdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { Balancer } from './balancer.js';
import type { EndpointStats } from './stats.js';
import { TcpListener } from './tcp.js';
import { listenerRef, type FromWorker, type ListenerSpec, type Probe, type StatsDelta, type ToWorker } from './workerprotocol.js';

export const STATS_INTERVAL_MS = 1_000;

const log = pino({ level: process.env.KPT_LOG_LEVEL ?? 'info', base: { worker: process.pid } });

/** Counts kept between reports. */
class Deltas {
  private pending = new Map<string, StatsDelta>();
  /** Connections opened since the start. */
  accepted = 0;

  readonly sink: EndpointStats = {
    opened: (l, e) => {
      this.accepted++;
      this.at(l, e).opened++;
    },
    closed: (l, e) => void this.at(l, e).closed++,
    bytes: (l, e, to, from) => {
      const d = this.at(l, e);
      d.toEndpoint += to;
      d.fromEndpoint += from;
    },
  };

  take(): StatsDelta[] {
    const out = [...this.pending.values()];
    this.pending = new Map();
    return out;
  }

  private at(listener: string, endpoint: string): StatsDelta {
    const k = `${listener}\0${endpoint}`;
    let d = this.pending.get(k);
    if (!d) this.pending.set(k, (d = { listener, endpoint, opened: 0, closed: 0, toEndpoint: 0, fromEndpoint: 0 }));
    return d;
  }
}

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
  setFlagsFromString('--expose_gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  let connections = 0;
  for (const l of listeners.values()) connections += l.connections;
  return { fds: readdirSync('/proc/self/fd').length, heapUsed: process.memoryUsage().heapUsed, connections, accepted: deltas.accepted };
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
