/**
 * A TCP listener run off the agent's thread, by the worker processes (pool.ts) or the
 * splice engine (splice/engine.ts), as the proxier sees it.
 */
import type { Endpoint, IPFamily } from '../../model/types.js';
import type { ListenerSpec } from './workerprotocol.js';

/** What runs such listeners. */
export interface ListenerHost {
  listen(spec: ListenerSpec): Promise<void>;
  update(spec: ListenerSpec): void;
  close(l: { family: IPFamily; key: string }): Promise<void>;
  /** Why it cannot carry connections, or null. */
  problem(): string | null;
}

export class PooledTcpListener {
  constructor(
    private readonly pool: ListenerHost,
    private spec: ListenerSpec,
  ) {}

  get port(): number {
    return this.spec.port;
  }

  listen(): Promise<void> {
    return this.pool.listen(this.spec);
  }

  update(endpoints: Endpoint[], maxAgeMs: number): void {
    this.spec = { ...this.spec, endpoints, maxAgeMs };
    this.pool.update(this.spec);
  }

  close(): Promise<void> {
    return this.pool.close(this.spec);
  }

  /** The host reports bytes itself, every STATS_INTERVAL_MS. */
  reportBytes(): void {}
}
