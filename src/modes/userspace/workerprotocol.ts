/** What the agent and its userspace worker processes tell each other over the IPC channel. */
import type { Endpoint, IPFamily } from '../../model/types.js';
import type { SchedulerName } from './balancer.js';

/** One TCP listener as every worker runs it. */
export interface ListenerSpec {
  key: string;
  family: IPFamily;
  port: number;
  scheduler: SchedulerName;
  maxConnections: number;
  maxAgeMs: number;
  endpoints: Endpoint[];
}

/** Names a listener between agent and workers: a key is unique only within a family. */
export function listenerRef(l: { family: IPFamily; key: string }): string {
  return `${l.family} ${l.key}`;
}

export type ToWorker =
  | { type: 'listen'; id: number; spec: ListenerSpec }
  | { type: 'update'; ref: string; endpoints: Endpoint[]; maxAgeMs: number }
  | { type: 'close'; id: number; ref: string }
  | { type: 'probe'; id: number };

/** Counts since the last report, per listener and endpoint. */
export interface StatsDelta {
  listener: string;
  endpoint: string;
  opened: number;
  closed: number;
  toEndpoint: number;
  fromEndpoint: number;
}

/** A worker's own view of itself, for tests and the leak check. */
export interface Probe {
  fds: number;
  heapUsed: number;
  /** Connections open now and accepted since the start, over all listeners. */
  connections: number;
  accepted: number;
}

export type FromWorker =
  | { type: 'ready' }
  | { type: 'done'; id: number; error: string | null }
  | { type: 'probe'; id: number; probe: Probe }
  | { type: 'stats'; deltas: StatsDelta[] };
