/**
 * The userspace worker processes (`--userspace-workers N`): N TCP data paths beside the agent's.
 * node:cluster with SCHED_NONE: when a worker listens, the agent binds the socket and
 * hands it over, and every worker accepts from its one queue; the agent holds the
 * socket for as long as a worker listens on it, so a restarted worker takes the same
 * socket, and closing a listener in every worker closes the port and nothing else.
 *
 * Each worker runs every listener the pool holds, with its own balancer: round-robin
 * and least connections count per worker (a shared count would cost a round trip to the
 * agent per connection, the cost workers are here to avoid), and so does a listener's
 * connection cap (each worker takes that many). A worker that dies is
 * restarted with backoff, its listeners replayed; the connections it carried are gone,
 * and the metrics say so.
 */
import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { Backoff, type BackoffOptions } from '../../backoff.js';
import { applyDeltas, closeAll, type OpenCounts } from './deltas.js';
import type { EndpointStats } from './stats.js';
import type { IPFamily } from '../../model/types.js';
import { listenerRef, type FromWorker, type ListenerSpec, type Probe, type ToWorker } from './workerprotocol.js';

export const WORKER_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, resetAfterMs: 60_000, jitter: 0.5 };
/** How long a worker gets to answer; past it the request counts as unanswered and the caller goes on. */
const ANSWER_MS = 5_000;

export interface WorkerPoolOptions {
  size: number;
  stats: EndpointStats;
  log: Logger;
  /** The worker's entry point: worker.js beside this module unless given. */
  script?: string;
  backoff?: BackoffOptions;
}

interface Slot {
  worker: Worker | null;
  /** Its message handler is up: what it is sent now arrives (anything before is lost). */
  hears: boolean;
  /** Listeners replayed: it takes part in the data path. */
  ready: boolean;
  /** Connections the metrics count as open through this worker, by listener and endpoint. */
  open: OpenCounts;
  backoff: Backoff;
  restart: NodeJS.Timeout | null;
}

type Answer = (FromWorker & { type: 'done' | 'probe' }) | null;

export class WorkerPool {
  private readonly slots: Slot[];
  private readonly specs = new Map<string, ListenerSpec>();
  private readonly waiting = new Map<number, { slot: Slot; answer: (a: Answer) => void }>();
  private nextId = 1;
  private stopped = false;

  constructor(private readonly opts: WorkerPoolOptions) {
    this.slots = Array.from({ length: opts.size }, () => ({ worker: null, hears: false, ready: false, open: new Map(), backoff: new Backoff(opts.backoff ?? WORKER_BACKOFF), restart: null }));
  }

  async start(): Promise<void> {
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: this.opts.script ?? fileURLToPath(new URL('./worker.js', import.meta.url)), args: [] });
    await Promise.all(this.slots.map((s) => this.spawn(s)));
    this.opts.log.info({ workers: this.running, pids: this.pids() }, 'userspace workers started');
  }

  /** Workers taking part in the data path. */
  get running(): number {
    return this.slots.filter((s) => s.ready).length;
  }

  /** Why the pool cannot carry connections, or null. */
  problem(): string | null {
    return this.running === 0 ? `none of the ${this.slots.length} userspace workers is running` : null;
  }

  /** Process ids of the running workers. */
  pids(): number[] {
    return this.slots.flatMap((s) => (s.ready && s.worker?.process.pid ? [s.worker.process.pid] : []));
  }

  /** Opens the listener in every worker; fails (closed again everywhere) when one cannot. */
  async listen(spec: ListenerSpec): Promise<void> {
    const problem = this.problem();
    if (problem) throw new Error(problem);
    this.specs.set(listenerRef(spec), spec);
    const answers = await Promise.all(this.live().map((s) => this.ask(s, (id) => ({ type: 'listen', id, spec }))));
    const failed = answers.find((a) => a?.type === 'done' && a.error !== null);
    if (failed?.type === 'done') {
      await this.close(spec);
      throw new Error(failed.error!);
    }
  }

  /** New endpoints or max age for a listener every worker runs. */
  update(spec: ListenerSpec): void {
    const ref = listenerRef(spec);
    if (!this.specs.has(ref)) return;
    this.specs.set(ref, spec);
    for (const s of this.live()) this.post(s, { type: 'update', ref, endpoints: spec.endpoints, maxAgeMs: spec.maxAgeMs });
  }

  /** Closes the listener in every worker: the port closes with the last. */
  async close(l: { family: IPFamily; key: string }): Promise<void> {
    const ref = listenerRef(l);
    this.specs.delete(ref);
    // The metrics name a listener by key alone, as both families' listeners of a service port share it.
    if (!this.counted(l.key)) for (const s of this.slots) for (const [k, o] of s.open) if (o.listener === l.key) s.open.delete(k);
    await Promise.all(this.live().map((s) => this.ask(s, (id) => ({ type: 'close', id, ref }))));
  }

  async probe(): Promise<Probe[]> {
    const answers = await Promise.all(this.slots.filter((s) => s.ready).map((s) => this.ask(s, (id) => ({ type: 'probe', id }))));
    return answers.flatMap((a) => (a?.type === 'probe' ? [a.probe] : []));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(
      this.slots.map((s) => {
        if (s.restart) clearTimeout(s.restart);
        const w = s.worker;
        if (!w || w.isDead()) return;
        return new Promise<void>((resolve) => {
          w.once('exit', () => resolve());
          // Not Worker.kill: it disconnects first, and a worker's disconnect waits for its connections.
          w.process.kill('SIGKILL');
        });
      }),
    );
  }

  /** Workers replayed or being replayed: what they are sent now arrives after the replay. */
  private live(): Slot[] {
    return this.slots.filter((s) => s.hears && s.worker?.isConnected());
  }

  private async spawn(slot: Slot): Promise<void> {
    slot.restart = null;
    const w = cluster.fork({ KPT_LOG_LEVEL: this.opts.log.level });
    slot.worker = w;
    w.on('message', (m: FromWorker) => this.received(slot, m));
    // An IPC error ends in an exit, handled there.
    w.on('error', (err: Error) => this.opts.log.warn({ worker: w.process.pid, err: err.message }, 'userspace worker channel error'));
    w.once('exit', (code, signal) => this.exited(slot, w, code, signal));
    const online = await new Promise<boolean>((resolve) => {
      w.on('message', (m: FromWorker) => m.type === 'ready' && resolve(true));
      w.once('exit', () => resolve(false));
    });
    if (!online) return;
    slot.hears = true;
    const answers = await Promise.all([...this.specs.values()].map((spec) => this.ask(slot, (id) => ({ type: 'listen', id, spec }))));
    if (slot.worker !== w) return;
    for (const a of answers) if (a?.type === 'done' && a.error) this.opts.log.error({ worker: w.process.pid, err: a.error }, 'userspace worker could not take a listener');
    slot.ready = true;
  }

  private exited(slot: Slot, w: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== w) return;
    slot.worker = null;
    slot.hears = false;
    slot.ready = false;
    for (const q of [...this.waiting.values()]) if (q.slot === slot) q.answer(null);
    closeAll(this.opts.stats, slot.open);
    if (this.stopped) return;
    const delay = slot.backoff.next();
    this.opts.log.error({ worker: w.process.pid, code, signal, restartInMs: delay, running: this.running }, 'userspace worker exited; restarting it');
    slot.restart = setTimeout(() => void this.spawn(slot), delay);
    slot.restart.unref();
  }

  private received(slot: Slot, m: FromWorker): void {
    if (m.type === 'ready') return;
    if (m.type === 'stats') return applyDeltas(this.opts.stats, slot.open, m.deltas, (l) => this.counted(l));
    this.waiting.get(m.id)?.answer(m);
  }

  /** Whether a listener the pool runs reports under this metrics name. */
  private counted(key: string): boolean {
    for (const spec of this.specs.values()) if (spec.key === key) return true;
    return false;
  }

  /** False when the worker is gone (a full channel still queues the message). */
  private post(slot: Slot, m: ToWorker): boolean {
    const w = slot.worker;
    if (!w?.isConnected()) return false;
    try {
      w.send(m);
      return true;
    } catch {
      return false;
    }
  }

  private ask(slot: Slot, message: (id: number) => ToWorker): Promise<Answer> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const settle = (a: Answer) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(a);
      };
      const timer = setTimeout(() => {
        this.opts.log.warn({ worker: slot.worker?.process.pid }, 'userspace worker did not answer');
        settle(null);
      }, ANSWER_MS);
      this.waiting.set(id, { slot, answer: settle });
      if (!this.post(slot, message(id))) settle(null);
    });
  }
}
