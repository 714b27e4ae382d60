/**
 * The splice engine as the agent sees it (`--userspace-data-path splice`): a thread
 * (thread.ts) that carries the TCP listeners of Services without ClientIP affinity on
 * the kernel's own calls. Each message goes over a MessagePort, then a write to the
 * eventfd wakes the thread's epoll loop. The thread reports per-endpoint counts; the
 * connections it holds when it stops leave the metrics.
 *
 * Started once: a thread that stops on its own (a bug) leaves the engine with a
 * problem, which fails the sync and health until the agent restarts.
 */
import { closeSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import type { Logger } from 'pino';
import { C, loadLibc } from '../../../../native/libc.js';
import type { IPFamily } from '../../../model/types.js';
import { applyDeltas, closeAll, type OpenCounts } from '../deltas.js';
import type { EndpointStats } from '../stats.js';
import { listenerRef, type ListenerSpec, type Probe } from '../workerprotocol.js';
import type { EngineData, FromEngine, ToEngine } from './protocol.js';

/** How long the thread gets to answer; past it the request counts as unanswered. */
const ANSWER_MS = 5_000;
const WAKE = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

export interface SpliceEngineOptions {
  stats: EndpointStats;
  log: Logger;
  /** The thread's entry point: thread.js beside this module unless given. */
  script?: string;
}

type Answer = (FromEngine & { type: 'done' | 'probe' }) | null;

export class SpliceEngine {
  private readonly specs = new Map<string, ListenerSpec>();
  private readonly waiting = new Map<number, (a: Answer) => void>();
  /** Connections the metrics count as open, by listener and endpoint. */
  private readonly open: OpenCounts = new Map();
  private nextId = 1;
  private stopped: string | null = null;
  /** Closed once the thread is gone: its number may then belong to anything. */
  private eventfdOpen = true;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly opts: SpliceEngineOptions,
    private readonly eventfd: number,
    private readonly port: MessagePort,
    private readonly worker: Worker,
  ) {
    port.on('message', (m: FromEngine) => this.received(m));
    worker.on('error', (err) => opts.log.error({ err: err.stack ?? err.message }, 'splice engine failed'));
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    void this.exited.then(() => this.gone());
  }

  /** Loads the C library here first, so that a platform without it fails now, not in the thread. */
  static async start(opts: SpliceEngineOptions): Promise<SpliceEngine> {
    const libc = await loadLibc();
    const eventfd = libc.eventfd(0, C.EFD_NONBLOCK | C.EFD_CLOEXEC);
    if (eventfd < 0) throw new Error(`eventfd: ${libc.strerror(libc.errno())}`);
    const { port1, port2 } = new MessageChannel();
    const data: EngineData = { eventfd, port: port2, debug: opts.log.isLevelEnabled('debug') };
    const worker = new Worker(opts.script ?? fileURLToPath(new URL('./thread.js', import.meta.url)), { workerData: data, transferList: [port2], name: 'splice-engine' });
    // Neither keeps the process alive: the agent's connections end with it, as Node's would.
    worker.unref();
    port1.unref();
    return new SpliceEngine(opts, eventfd, port1, worker);
  }

  /** Why the engine cannot carry connections, or null. */
  problem(): string | null {
    return this.stopped;
  }

  async listen(spec: ListenerSpec): Promise<void> {
    if (this.stopped) throw new Error(this.stopped);
    const a = await this.ask((id) => ({ type: 'listen', id, spec }));
    if (a === null) throw new Error('the splice engine did not answer');
    if (a.type === 'done' && a.error !== null) throw new Error(a.error);
    this.specs.set(listenerRef(spec), spec);
  }

  /** New endpoints or max age: lands with the thread's next wakeup. */
  update(spec: ListenerSpec): void {
    const ref = listenerRef(spec);
    if (!this.specs.has(ref)) return;
    this.specs.set(ref, spec);
    this.post({ type: 'update', ref, endpoints: spec.endpoints, maxAgeMs: spec.maxAgeMs });
  }

  async close(l: { family: IPFamily; key: string }): Promise<void> {
    this.specs.delete(listenerRef(l));
    await this.ask((id) => ({ type: 'close', id, ref: listenerRef(l) }));
    // The metrics name a listener by key alone, as both families' listeners of a service port share it.
    if (!this.counted(l.key)) for (const [k, o] of this.open) if (o.listener === l.key) this.open.delete(k);
  }

  async probe(): Promise<Probe | null> {
    const a = await this.ask((id) => ({ type: 'probe', id }));
    return a?.type === 'probe' ? a.probe : null;
  }

  /** Stops the thread: its listeners close and their connections are reset. */
  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = 'the splice engine was stopped';
      this.post({ type: 'stop' });
    }
    await this.exited;
  }

  private post(m: ToEngine): void {
    if (!this.eventfdOpen) return;
    this.port.postMessage(m);
    writeSync(this.eventfd, WAKE);
  }

  private ask(message: (id: number) => ToEngine): Promise<Answer> {
    if (this.stopped) return Promise.resolve(null);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.opts.log.warn('the splice engine did not answer');
        settle(null);
      }, ANSWER_MS);
      const settle = (a: Answer) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(a);
      };
      this.waiting.set(id, settle);
      this.post(message(id));
    });
  }

  private received(m: FromEngine): void {
    switch (m.type) {
      case 'stats':
        return applyDeltas(this.opts.stats, this.open, m.deltas, (l) => this.counted(l));
      case 'log':
        return this.opts.log[m.level](m.fields, m.msg);
      default:
        return this.waiting.get(m.id)?.(m);
    }
  }

  private counted(key: string): boolean {
    for (const spec of this.specs.values()) if (spec.key === key) return true;
    return false;
  }

  /** The thread exited: whatever it still counted as open is closed. */
  private gone(): void {
    // Its last report arrives before the exit; what is left it could not report.
    closeAll(this.opts.stats, this.open);
    if (!this.stopped) {
      this.stopped = 'the splice engine stopped';
      this.opts.log.error('the splice engine stopped; TCP service traffic is not carried until the agent restarts');
    }
    for (const answer of [...this.waiting.values()]) answer(null);
    this.port.close();
    this.eventfdOpen = false;
    closeSync(this.eventfd);
  }
}
