/**
 * userspace mode's worker processes on loopback (no privileges; `npx tsc -p .` first: the
 * workers run the built worker.js): connections spread over the workers, ClientIP
 * affinity holds whichever worker accepts, a killed worker is restarted and its
 * connections leave the metrics, a pool without workers fails the sync, and 10,000
 * connections killed mid-way leave the workers' descriptors and heap where they were.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Endpoint } from '../src/model/types.js';
import { TcpListener } from '../src/modes/userspace/tcp.js';
import { addService, freeRange, harness, read, Recorder, server as serve, until, workerPool } from './support/userspace.js';

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

const server = (host: string, port: number, name: string | null) => serve(closers, host, port, name);

const endpoint = (port: number): Endpoint => ({ ip: '127.0.0.1', port, address: `127.0.0.1:${port}`, nodeName: null, zone: null, ready: true, serving: true, terminating: false, zoneHints: [], nodeHints: [], isLocal: true });

/** Opens a connection held open, echoing; resolves once a round trip went through. */
const held = (port: number) =>
  new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    closers.push(() => c.destroy());
    c.once('data', () => resolve(c));
    c.on('error', reject);
    c.on('connect', () => c.write('hi'));
  });

describe('userspace worker processes', () => {
  it('spread connections over the workers', async () => {
    const first = await freeRange(3);
    const h = await harness(first, closers, { workers: 2 });
    addService(h, 'a', '10.96.0.1', await server('127.0.0.1', 0, null), ['127.0.0.1']);
    expect((await h.sync()).ok).toBe(true);
    // Which worker accepts is the kernel's choice: batches until both took some, or 400.
    for (let n = 0; n < 400; n += 20) {
      const conns = await Promise.all(Array.from({ length: 20 }, () => held(first)));
      for (const c of conns) c.destroy();
      if ((await h.pool!.probe()).every((p) => p.accepted > 0)) break;
    }
    const probes = await h.pool!.probe();
    expect(probes).toHaveLength(2);
    for (const p of probes) expect(p.accepted).toBeGreaterThan(0);
  });

  it('keep ClientIP affinity whichever worker accepts, and balance without it', async () => {
    const first = await freeRange(3);
    const h = await harness(first, closers, { workers: 2 });
    const port = await server('127.0.0.1', 0, 'one');
    await server('127.0.0.2', port, 'two');
    addService(h, 'sticky', '10.96.0.1', port, ['127.0.0.1', '127.0.0.2'], { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } });
    addService(h, 'spread', '10.96.0.2', port, ['127.0.0.1', '127.0.0.2']);
    expect((await h.sync()).ok).toBe(true);
    const sticky = h.proxier.held('IPv4').get('ns/sticky:http TCP')!;
    const spread = h.proxier.held('IPv4').get('ns/spread:http TCP')!;
    // The agent itself serves it: one table for every connection of a client.
    expect(h.proxier.listener('IPv4', 'ns/sticky:http TCP')).toBeInstanceOf(TcpListener);
    const answers = async (p: number) => new Set(await Promise.all(Array.from({ length: 30 }, () => read(p))));
    // The first connection makes the client stick (affinity starts once it is connected).
    const stuck = await read(sticky);
    expect(await answers(sticky)).toEqual(new Set([stuck]));
    expect(await answers(spread)).toEqual(new Set(['one', 'two']));
  });

  it('take new endpoints at the next sync', async () => {
    const first = await freeRange(3);
    const h = await harness(first, closers, { workers: 2 });
    const port = await server('127.0.0.1', 0, 'one');
    await server('127.0.0.2', port, 'two');
    addService(h, 'a', '10.96.0.1', port, ['127.0.0.1']);
    expect((await h.sync()).ok).toBe(true);
    const answers = async () => new Set(await Promise.all(Array.from({ length: 20 }, () => read(first))));
    expect(await answers()).toEqual(new Set(['one']));
    addService(h, 'a', '10.96.0.1', port, ['127.0.0.2']);
    expect((await h.sync()).ok).toBe(true);
    // The update is a message to each worker, not a round trip: it lands within moments.
    await until(async () => (await read(first)) === 'two', 2_000);
    expect(await answers()).toEqual(new Set(['two']));
  });

  it('run both families\' listeners of a service port, which share its key', async () => {
    const pool = await workerPool(2);
    closers.push(() => pool.stop());
    const [v4, v6] = [await freeRange(1), await freeRange(1)];
    const endpoints = [endpoint(await server('127.0.0.1', 0, 'one'))];
    const spec = { key: 'ns/dual:http TCP', scheduler: 'rr' as const, maxConnections: 100, maxAgeMs: 0, endpoints };
    await pool.listen({ ...spec, family: 'IPv4', port: v4 });
    await pool.listen({ ...spec, family: 'IPv6', port: v6 });
    expect(await read(v4)).toBe('one');
    expect(await read(v6, '::1')).toBe('one');
    await pool.close({ family: 'IPv6', key: spec.key });
    expect(await read(v4)).toBe('one');
    await expect(read(v6, '::1')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('restart a killed worker: traffic flows, and its connections leave the metrics', async () => {
    const first = await freeRange(3);
    const stats = new Recorder();
    const h = await harness(first, closers, { workers: 2, stats, pool: { backoff: { initialMs: 100, maxMs: 1_000, resetAfterMs: 60_000, jitter: 0 } } });
    addService(h, 'a', '10.96.0.1', await server('127.0.0.1', 0, null), ['127.0.0.1']);
    expect((await h.sync()).ok).toBe(true);
    const conns = await Promise.all(Array.from({ length: 40 }, () => held(first)));
    await until(() => stats.total === 40);
    expect(stats.bytesIn).toBeGreaterThan(0);
    const [victim, survivor] = h.pool!.pids();
    process.kill(victim!, 'SIGKILL');
    await until(() => h.pool!.running === 2 && !h.pool!.pids().includes(victim!));
    expect(h.pool!.pids()).toContain(survivor);
    const alive = () => conns.filter((c) => !c.destroyed && c.readyState === 'open').length;
    // The connections the dead worker carried are reset; the survivor's stay and are still counted.
    await until(() => stats.total === alive());
    expect(alive()).toBeLessThan(40);
    const fresh = await Promise.all(Array.from({ length: 20 }, () => held(first)));
    expect(fresh).toHaveLength(20);
  });

  it('fail the sync while no worker runs, so health says so, and recover', async () => {
    const first = await freeRange(3);
    const h = await harness(first, closers, { workers: 2, pool: { backoff: { initialMs: 2_000, maxMs: 2_000, resetAfterMs: 60_000, jitter: 0 } } });
    addService(h, 'a', '10.96.0.1', await server('127.0.0.1', 0, null), ['127.0.0.1']);
    expect((await h.sync()).ok).toBe(true);
    for (const pid of h.pool!.pids()) process.kill(pid, 'SIGKILL');
    await until(() => h.pool!.running === 0);
    expect(await h.syncer.damage()).toMatch(/none of the 2 userspace workers is running/);
    expect(await h.sync()).toMatchObject({ ok: false });
    await until(() => h.pool!.running === 2);
    expect(await h.syncer.damage()).toBeNull();
    expect((await h.sync()).ok).toBe(true);
    await held(first);
  });

  it('return the workers\' descriptors and heap to their baseline after 10,000 connections killed mid-way', async () => {
    const first = await freeRange(3);
    const h = await harness(first, closers, { workers: 2, maxConnections: 20_000 });
    addService(h, 'a', '10.96.0.1', await server('127.0.0.1', 0, null), ['127.0.0.1']);
    expect((await h.sync()).ok).toBe(true);
    const batch = (n: number) =>
      Promise.all(
        Array.from(
          { length: n },
          () =>
            new Promise<void>((resolve) => {
              const c = net.connect(first, '127.0.0.1');
              c.on('error', () => {});
              c.once('data', () => c.resetAndDestroy());
              // A connection the proxy gave up on (a loaded machine) ends too: no batch waits forever.
              c.once('close', () => resolve());
              c.on('connect', () => c.write('hi'));
            }),
        ),
      );
    const settled = () => until(async () => (await h.pool!.probe()).every((p) => p.connections === 0), 30_000);
    // A first batch warms up whatever is lazily allocated once.
    await batch(200);
    await settled();
    const base = await h.pool!.probe();
    for (let i = 0; i < 20; i++) await batch(500);
    await settled();
    await new Promise((r) => setTimeout(r, 200));
    const after = await h.pool!.probe();
    // Nearly all went through the workers (a loaded machine may make the proxy give up on a few).
    expect(after.reduce((a, p) => a + p.accepted, 0) - base.reduce((a, p) => a + p.accepted, 0)).toBeGreaterThan(9_500);
    for (let i = 0; i < base.length; i++) {
      expect(after[i]!.fds).toBeLessThanOrEqual(base[i]!.fds + 5);
      expect(after[i]!.heapUsed - base[i]!.heapUsed).toBeLessThan(8 << 20);
    }
  }, 180_000);
});
