/**
 * userspace mode's data path on loopback, in this process: the TCP and UDP listeners
 * against real sockets. No privileges needed (no capture rules: clients connect to the
 * listener's port directly). The TCP behaviour runs against both data paths: Node's
 * (tcp.ts) and the splice engine's thread (splice/; `npx tsc -p .` first: the thread runs
 * the built thread.js).
 */
import dgram from 'node:dgram';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Endpoint } from '../src/model/types.js';
import { Balancer, type SchedulerName } from '../src/modes/userspace/balancer.js';
import { NO_STATS, type EndpointStats } from '../src/modes/userspace/stats.js';
import { SpliceEngine } from '../src/modes/userspace/splice/engine.js';
import { TcpListener } from '../src/modes/userspace/tcp.js';
import { UdpListener } from '../src/modes/userspace/udp.js';

const log = pino({ level: 'silent' });
const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function endpoint(port: number, ip = '127.0.0.1'): Endpoint {
  return { ip, port, address: `${ip}:${port}`, nodeName: null, zone: null, ready: true, serving: true, terminating: false, zoneHints: [], nodeHints: [], isLocal: true };
}

/** A TCP server on a free loopback port; `handle` gets each connection. */
async function server(handle: (s: net.Socket) => void, opts: net.ServerOpts = {}): Promise<{ port: number; server: net.Server }> {
  const srv = net.createServer(opts, (s) => (s.on('error', () => {}), handle(s)));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => srv.close(r)));
  return { port: (srv.address() as net.AddressInfo).port, server: srv };
}

/** Answers each connection with the name it was given. */
const named = (name: string) => server((s) => s.end(name));

async function freePort(): Promise<number> {
  const { port, server: srv } = await server(() => {});
  await new Promise((r) => srv.close(r));
  return port;
}

type DataPath = 'node' | 'splice';

/** The splice engine's thread as built. */
const ENGINE_SCRIPT = join(import.meta.dirname, '..', 'dist', 'src', 'modes', 'userspace', 'splice', 'thread.js');

/** A running TCP listener of either data path, as the tests see it. */
interface Proxy {
  port: number;
  /** Connections it holds (being connected or open). */
  connections(): Promise<number>;
  /** Heap in use by the isolate that runs it, after a full GC. */
  heap(): Promise<number>;
  close(): Promise<void>;
}

/** One engine per test, its stats sent to whatever the test's last proxy asked for. */
let engine: SpliceEngine | null = null;
let engineStats: EndpointStats = NO_STATS;
const forward: EndpointStats = {
  opened: (l, e) => engineStats.opened(l, e),
  closed: (l, e) => engineStats.closed(l, e),
  bytes: (l, e, to, from) => engineStats.bytes(l, e, to, from),
};

interface ProxyOptions {
  scheduler?: SchedulerName;
  affinityMs?: number | null;
  maxAgeMs?: number;
  stats?: EndpointStats;
  maxConnections?: number;
}

let proxies = 0;

async function tcpProxy(path: DataPath, endpoints: Endpoint[], opts: ProxyOptions = {}): Promise<Proxy> {
  // A key of its own: the engine names its listeners by key.
  const spec = { key: `test/svc${++proxies}:p TCP`, family: 'IPv4' as const, port: await freePort(), maxConnections: opts.maxConnections ?? 20_000, maxAgeMs: opts.maxAgeMs ?? 0 };
  if (path === 'splice') {
    if (!engine) {
      const e = (engine = await SpliceEngine.start({ stats: forward, log, script: ENGINE_SCRIPT }));
      closers.unshift(async () => {
        await e.stop();
        engine = null;
      });
    }
    engineStats = opts.stats ?? NO_STATS;
    const e = engine;
    await e.listen({ ...spec, scheduler: opts.scheduler ?? 'rr', endpoints });
    const probe = async () => (await e.probe())!;
    const p: Proxy = { port: spec.port, connections: async () => (await probe()).connections, heap: async () => (await probe()).heapUsed, close: () => e.close(spec) };
    closers.push(() => p.close());
    return p;
  }
  const b = new Balancer(opts.scheduler ?? 'rr', opts.affinityMs ?? null);
  b.update(endpoints, opts.affinityMs ?? null);
  const l = new TcpListener(b, { ...spec, stats: opts.stats ?? NO_STATS, log });
  await l.listen();
  closers.push(() => l.close());
  return { port: l.port, connections: async () => l.connections, heap: async () => heapAfterGC(), close: () => l.close() };
}

function heapAfterGC(): number {
  setFlagsFromString('--expose_gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** Connects, sends `send` (then half-closes), returns all it reads until the end, or the error. */
function exchange(port: number, send = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('end', () => {
      c.end();
      resolve(got);
    });
    c.on('error', reject);
    c.on('connect', () => (send ? c.end(send) : undefined));
  });
}

const until = async (cond: () => boolean | Promise<boolean>, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe.each<DataPath>(['node', 'splice'])('TCP listener (%s data path)', (path) => {
  it('passes a half-close on: the endpoint reads to the end, then answers', async () => {
    const up = await server(
      (s) => {
        let got = '';
        s.on('data', (d) => (got += d));
        s.on('end', () => s.end(`got ${got.length} bytes`));
      },
      { allowHalfOpen: true },
    );
    const l = await tcpProxy(path, [endpoint(up.port)]);
    expect(await exchange(l.port, 'x'.repeat(100_000))).toBe('got 100000 bytes');
    await until(async () => (await l.connections()) === 0);
  });

  it('round-robin spreads new connections; least-connections picks the idle endpoint', async () => {
    const eps = await Promise.all(['a', 'b', 'c'].map(named));
    const rr = await tcpProxy(path, eps.map((e) => endpoint(e.port)));
    const answers = [];
    for (let i = 0; i < 6; i++) answers.push(await exchange(rr.port));
    expect(answers).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);

    // Two endpoints that hold connections open; the one with fewer gets the next.
    const held: net.Socket[] = [];
    const hold = (name: string) => server((s) => (s.write(name), held.push(s)));
    const [x, y] = await Promise.all([hold('x'), hold('y')]);
    closers.push(() => held.forEach((s) => s.destroy()));
    const lc = await tcpProxy(path, [endpoint(x!.port), endpoint(y!.port)], { scheduler: 'lc' });
    const first = (port: number) =>
      new Promise<string>((resolve) => {
        const c = net.connect(port, '127.0.0.1');
        closers.push(() => c.destroy());
        c.once('data', (d) => resolve(String(d)));
      });
    const got = [await first(lc.port), await first(lc.port), await first(lc.port)];
    // After one on each, the third goes to whichever the tie-break chose; the fourth must go to the other.
    const fourth = await first(lc.port);
    expect(new Set(got.slice(0, 2))).toEqual(new Set(['x', 'y']));
    expect(fourth).not.toBe(got[2]);
  });

  // Services with affinity stay on Node's data path (proxier.ts).
  it.skipIf(path === 'splice')('keeps a client on its endpoint under ClientIP affinity', async () => {
    const eps = await Promise.all(['a', 'b', 'c'].map(named));
    const l = await tcpProxy(path, eps.map((e) => endpoint(e.port)), { affinityMs: 60_000 });
    const answers = new Set<string>();
    for (let i = 0; i < 5; i++) answers.add(await exchange(l.port));
    expect(answers.size).toBe(1);
  });

  it('retries the next endpoint when a connect fails', async () => {
    const dead = await freePort();
    const live = await named('live');
    const l = await tcpProxy(path, [endpoint(dead), endpoint(live.port)]);
    for (let i = 0; i < 4; i++) expect(await exchange(l.port)).toBe('live');
  });

  it('resets the client when there is no endpoint, as REJECT does', async () => {
    const l = await tcpProxy(path, []);
    await expect(exchange(l.port)).rejects.toThrow(/ECONNRESET/);
  });

  it('resets the client when the endpoint fails, and the endpoint when the client does', async () => {
    let backendClosed = false;
    const up = await server((s) => {
      s.on('data', () => s.resetAndDestroy());
    });
    const l = await tcpProxy(path, [endpoint(up.port)]);
    await expect(exchange(l.port, 'boom')).rejects.toThrow(/ECONNRESET/);

    const up2 = await server((s) => {
      s.on('error', () => {});
      s.on('close', () => (backendClosed = true));
    });
    const l2 = await tcpProxy(path, [endpoint(up2.port)]);
    const c = net.connect(l2.port, '127.0.0.1');
    await until(async () => (await l2.connections()) === 1);
    c.resetAndDestroy();
    await until(async () => backendClosed && (await l2.connections()) === 0);
  });

  it('holds back a fast client while the endpoint does not read (backpressure)', async () => {
    const sockets: net.Socket[] = [];
    const up = await server((s) => (s.pause(), sockets.push(s)));
    const l = await tcpProxy(path, [endpoint(up.port)]);
    const c = net.connect(l.port, '127.0.0.1');
    closers.push(() => c.destroy());
    await new Promise((r) => c.once('connect', r));
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 48; i++) c.write(chunk);
    await new Promise((r) => setTimeout(r, 500));
    // Kernel buffers on loopback take a few MB; without backpressure the proxy would have read all 48.
    expect(c.writableLength).toBeGreaterThan(24 << 20);
    sockets[0]!.resume();
    await until(() => c.writableLength === 0);
  });

  it('counts bytes per endpoint', async () => {
    const seen: { to: number; from: number; opened: number; closed: number } = { to: 0, from: 0, opened: 0, closed: 0 };
    const stats: EndpointStats = {
      opened: () => seen.opened++,
      closed: () => seen.closed++,
      bytes: (_l, _e, to, from) => ((seen.to += to), (seen.from += from)),
    };
    const up = await server((s) => s.on('data', (d) => s.write(Buffer.concat([d, d]))).on('end', () => s.end()), { allowHalfOpen: true });
    const l = await tcpProxy(path, [endpoint(up.port)], { stats });
    expect((await exchange(l.port, 'abcde')).length).toBe(10);
    await until(() => seen.closed === 1);
    expect(seen).toEqual({ to: 5, from: 10, opened: 1, closed: 1 });
  });

  it('ends a connection past its max age once it is quiet, so the client reconnects elsewhere', async () => {
    const up = await server((s) => s.on('data', (d) => s.write(d)));
    const l = await tcpProxy(path, [endpoint(up.port)], { maxAgeMs: 300 });
    const c = net.connect(l.port, '127.0.0.1');
    let ended = false;
    c.on('end', () => (ended = true));
    c.on('data', () => {});
    const opened = Date.now();
    // Busy for a while past the age (echoes every 10 ms), then quiet: ended only once quiet.
    const busy = setInterval(() => c.write('ping'), 10);
    await new Promise((r) => setTimeout(r, 600));
    expect(ended).toBe(false);
    clearInterval(busy);
    await until(() => ended, 2_000);
    expect(Date.now() - opened).toBeGreaterThanOrEqual(600);
    c.destroy();
  });

  // Node's net.Server closes what comes past its cap; the engine leaves it in the kernel's backlog.
  it.skipIf(path === 'node')('holds connections past the cap in the backlog, and serves them as others end', async () => {
    const up = await server((s) => s.on('data', (d) => s.write(d)));
    const l = await tcpProxy(path, [endpoint(up.port)], { maxConnections: 2 });
    const echo = (c: net.Socket, text: string) =>
      new Promise<string>((resolve) => {
        c.once('data', (d) => resolve(String(d)));
        c.write(text);
      });
    const open = () => {
      const c = net.connect(l.port, '127.0.0.1');
      c.on('error', () => {});
      closers.push(() => c.destroy());
      return c;
    };
    const [a, b] = [open(), open()];
    expect(await echo(a, 'a')).toBe('a');
    expect(await echo(b, 'b')).toBe('b');
    const third = open();
    let answered = false;
    const thirdEcho = echo(third, 'c').then((t) => ((answered = true), t));
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    expect(await l.connections()).toBe(2);
    a.destroy();
    expect(await thirdEcho).toBe('c');
  });

  it('closing a listener resets its connections and leaves another listener\'s alone', async () => {
    const up = await server((s) => s.on('data', (d) => s.write(d)));
    const [a, b] = [await tcpProxy(path, [endpoint(up.port)]), await tcpProxy(path, [endpoint(up.port)])];
    const open = (port: number) =>
      new Promise<net.Socket>((resolve, reject) => {
        const c = net.connect(port, '127.0.0.1');
        closers.push(() => c.destroy());
        c.on('error', () => {});
        c.once('data', () => resolve(c));
        c.once('error', reject);
        c.on('connect', () => c.write('hi'));
      });
    const [ca, cb] = [await open(a.port), await open(b.port)];
    const bClosed = new Promise<void>((r) => cb.once('close', () => r()));
    await b.close();
    await bClosed;
    await expect(open(b.port)).rejects.toThrow(/ECONNREFUSED/);
    const echoed = new Promise<string>((r) => ca.once('data', (d) => r(String(d))));
    ca.write('still here');
    expect(await echoed).toBe('still here');
    expect(await a.connections()).toBe(1);
  });

  it('returns descriptors and heap to their baseline after 10,000 connections killed mid-way', async () => {
    const up = await server((s) => {
      s.on('error', () => {});
      s.on('data', (d) => s.write(d));
    });
    const l = await tcpProxy(path, [endpoint(up.port)]);
    const fds = () => readdirSync('/proc/self/fd').length;
    // A first batch warms up whatever is lazily allocated once.
    const batch = async (n: number) => {
      await Promise.all(
        Array.from(
          { length: n },
          () =>
            new Promise<void>((resolve) => {
              const c = net.connect(l.port, '127.0.0.1');
              c.on('error', () => {});
              c.once('data', () => {
                c.resetAndDestroy();
                resolve();
              });
              c.on('connect', () => c.write('hi'));
            }),
        ),
      );
    };
    await batch(200);
    await until(async () => (await l.connections()) === 0);
    const baseFds = fds();
    const baseHeap = await l.heap();
    for (let i = 0; i < 20; i++) await batch(500);
    await until(async () => (await l.connections()) === 0, 30_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(fds()).toBeLessThanOrEqual(baseFds + 5);
    expect((await l.heap()) - baseHeap).toBeLessThan(8 << 20);
  }, 120_000);
});

describe('UDP listener', () => {
  async function echo(name: string): Promise<number> {
    const s = dgram.createSocket('udp4');
    s.on('message', (m, r) => s.send(`${name}:${m}`, r.port, r.address));
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    closers.push(() => s.close());
    return s.address().port;
  }

  async function udpProxy(endpoints: Endpoint[], opts: { idleMs?: number; max?: number } = {}): Promise<UdpListener> {
    const b = new Balancer('rr', null);
    b.update(endpoints, null);
    const port = await freePort();
    const l = new UdpListener(b, { key: 'test/dns:dns UDP', family: 'IPv4', port, idleTimeoutMs: opts.idleMs ?? 250, maxSessions: opts.max ?? 100, stats: NO_STATS, log });
    await l.listen(['127.0.0.1']);
    closers.push(() => l.close());
    return l;
  }

  function client(): { ask(port: number, msg: string): Promise<string | null>; close(): void } {
    const s = dgram.createSocket('udp4');
    closers.push(() => s.close());
    return {
      ask: (port, msg) =>
        new Promise((resolve) => {
          const t = setTimeout(() => resolve(null), 300);
          s.once('message', (m) => (clearTimeout(t), resolve(String(m))));
          s.send(msg, port, '127.0.0.1');
        }),
      close: () => s.close(),
    };
  }

  it('keeps a client on one endpoint for its session, spreads clients, and ends idle sessions', async () => {
    const [a, b] = [await echo('a'), await echo('b')];
    const l = await udpProxy([endpoint(a), endpoint(b)], { idleMs: 200 });
    const c1 = client();
    const c2 = client();
    const r1 = [await c1.ask(l.port, 'q1'), await c1.ask(l.port, 'q2')];
    expect(r1[0]!.split(':')[0]).toBe(r1[1]!.split(':')[0]);
    expect(r1[1]).toMatch(/:q2$/);
    const r2 = await c2.ask(l.port, 'q');
    expect(r2!.split(':')[0]).not.toBe(r1[0]!.split(':')[0]);
    expect(l.connections).toBe(2);
    await until(() => l.connections === 0, 2_000);
  });

  it('drops new clients at the session cap, and serves them once a session ends', async () => {
    const a = await echo('a');
    const l = await udpProxy([endpoint(a)], { max: 1, idleMs: 200 });
    const c1 = client();
    const c2 = client();
    expect(await c1.ask(l.port, 'x')).toBe('a:x');
    expect(await c2.ask(l.port, 'y')).toBeNull();
    await until(() => l.connections === 0, 2_000);
    expect(await c2.ask(l.port, 'z')).toBe('a:z');
  });
});
