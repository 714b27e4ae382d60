/**
 * What the agent and the splice engine's thread tell each other: the worker processes'
 * messages (workerprotocol.ts) over a MessagePort, each one the agent sends followed by
 * a write to an eventfd the engine's epoll loop watches, as the loop never runs Node's.
 */
import type { MessagePort } from 'node:worker_threads';
import type { FromWorker, ToWorker } from '../workerprotocol.js';

export type ToEngine = ToWorker | { type: 'stop' };

export type LogLevel = 'debug' | 'warn' | 'error';

export type FromEngine = Exclude<FromWorker, { type: 'ready' }> | { type: 'log'; level: LogLevel; msg: string; fields: Record<string, unknown> };

/** The thread's workerData. */
export interface EngineData {
  /** Written (8 bytes, as eventfd reads) after each message. */
  eventfd: number;
  port: MessagePort;
  /** Whether debug lines are wanted: they cross the thread boundary only then. */
  debug: boolean;
}
