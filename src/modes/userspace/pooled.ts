/** A TCP listener the worker processes run (pool.ts), as the proxier sees it. */
import type { Endpoint } from '../../model/types.js';
import type { WorkerPool } from './pool.js';
import type { ListenerSpec } from './workerprotocol.js';

export class PooledTcpListener {
  constructor(
    private readonly pool: WorkerPool,
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

  /** Workers report their bytes themselves, every STATS_INTERVAL_MS. */
  reportBytes(): void {}
}
