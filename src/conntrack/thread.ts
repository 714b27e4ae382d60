/**
 * The netlink cleaner in a worker thread (thread-entry.ts), so that its dump, synchronous
 * through koffi and some 0.4 s for 100,000 entries, never holds up the agent's event
 * loop. One request at a time, in order. A worker that dies, or does not answer within
 * 10 s, fails what it was doing (to be tried again at the next sync) and is started again
 * for the next request; one stopped in the middle of a native call cannot free what that
 * call held, a leak taken over a stalled sync. The worker does not keep the process alive
 * while it has nothing to do.
 */
import { Worker } from 'node:worker_threads';
import type { ConntrackCleaner, ConntrackCleanup } from './cleaner.js';
import type { PassFigures } from './native.js';
import type { ConntrackDeletion } from './stale.js';
import { keepV8Flags } from '../v8-flags.js';

type FromWorker =
  | { type: 'ready' }
  | { type: 'error'; message: string }
  | { type: 'done'; id: number; result: ConntrackCleanup; last: PassFigures[] };

const ENTRY = new URL('./thread-entry.js', import.meta.url);
/**
 * Longer than a dump of a full table takes (some 4 s for a million entries), and short
 * enough that a stuck one holds a sync for seconds, not the health timeout.
 */
const ANSWER_WITHIN_MS = 10_000;

/** Starts a worker; resolves once it has loaded the library, rejects with why it could not. */
function startWorker(library: string): Promise<Worker> {
  return new Promise((resolve, reject) => {
    let worker: Worker;
    try {
      // None of the process's own flags: they are for its main script (e.g. --input-type).
      worker = new Worker(ENTRY, { workerData: { library }, execArgv: [] });
      keepV8Flags(worker);
    } catch (err) {
      return reject(err as Error);
    }
    const cleanup = () => {
      worker.off('error', fail);
      worker.off('exit', exited);
      worker.off('message', answered);
    };
    const fail = (err: Error) => {
      cleanup();
      void worker.terminate();
      reject(err);
    };
    const exited = (code: number) => fail(new Error(`the conntrack worker exited (${code}) before it was ready`));
    const answered = (m: FromWorker) => {
      if (m.type !== 'ready') return fail(new Error(m.type === 'error' ? m.message : 'the conntrack worker answered before it was ready'));
      cleanup();
      worker.unref();
      resolve(worker);
    };
    worker.on('error', fail);
    worker.on('exit', exited);
    worker.on('message', answered);
  });
}

export class ThreadedCleaner implements ConntrackCleaner {
  readonly kind = 'netlink';
  /** Figures of the last delete(), one per family. */
  last: PassFigures[] = [];
  private nextId = 0;
  private queue: Promise<unknown> = Promise.resolve();

  private worker: Worker | null = null;

  private constructor(
    private readonly library: string,
    private readonly answerWithinMs: number,
  ) {}

  /** A cleaner whose worker has loaded the library; rejects when it cannot. */
  static async start(library: string, answerWithinMs = ANSWER_WITHIN_MS): Promise<ThreadedCleaner> {
    const cleaner = new ThreadedCleaner(library, answerWithinMs);
    cleaner.adopt(await startWorker(library));
    return cleaner;
  }

  /** Listens for good: a worker that fails or exits while idle is replaced at the next call, not an uncaught error. */
  private adopt(worker: Worker): Worker {
    const forget = () => {
      if (this.worker === worker) this.worker = null;
    };
    worker.on('error', forget);
    worker.on('exit', forget);
    this.worker = worker;
    return worker;
  }

  delete(deletions: readonly ConntrackDeletion[]): Promise<ConntrackCleanup> {
    const run = this.queue.then(() => this.run([...deletions]));
    this.queue = run.catch(() => {});
    return run;
  }

  /** Stops the worker (tests); a later delete() starts another. */
  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    await w?.terminate();
  }

  private async run(deletions: ConntrackDeletion[]): Promise<ConntrackCleanup> {
    if (deletions.length === 0) return { deleted: 0, failed: [], failures: [] };
    const failAll = (why: string): ConntrackCleanup => ({ deleted: 0, failed: deletions, failures: [`conntrack (netlink worker): ${why}`] });
    try {
      this.worker ??= this.adopt(await startWorker(this.library));
    } catch (err) {
      return failAll((err as Error).message);
    }
    const worker = this.worker;
    const id = this.nextId++;
    return new Promise<ConntrackCleanup>((resolve) => {
      const done = (r: ConntrackCleanup) => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        worker.unref();
        resolve(r);
      };
      const onMessage = (m: FromWorker) => {
        if (m.type !== 'done' || m.id !== id) return;
        this.last = m.last;
        done(m.result);
      };
      const onError = (err: Error) => {
        this.worker = null;
        void worker.terminate();
        done(failAll(err.message));
      };
      const onExit = (code: number) => {
        this.worker = null;
        done(failAll(`exited (${code})`));
      };
      const timer = setTimeout(() => {
        this.worker = null;
        worker.off('exit', onExit);
        void worker.terminate();
        done(failAll(`no answer within ${this.answerWithinMs / 1000} s; stopped`));
      }, this.answerWithinMs);
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      // Held while it works: the answer must be waited for.
      worker.ref();
      try {
        worker.postMessage({ id, deletions });
      } catch (err) {
        done(failAll((err as Error).message));
      }
    });
  }
}
