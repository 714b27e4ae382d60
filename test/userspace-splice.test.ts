/**
 * userspace mode's sync with the splice engine carrying TCP (no privileges; `npx tsc -p .`
 * first: the engine's thread runs the built thread.js): Services without affinity go to
 * the engine, those with ClientIP affinity stay on Node's data path, new endpoints land
 * at the next sync, the metrics count the engine's connections and bytes, a service
 * port that goes closes its port and nothing else, and where the engine cannot load,
 * Node's sockets carry TCP after one warning.
 */
import net from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_USERSPACE } from '../src/config/options.js';
import { tcpHost } from '../src/modes/userspace/mode.js';
import { SpliceEngine } from '../src/modes/userspace/splice/engine.js';
import { NO_STATS } from '../src/modes/userspace/stats.js';
import { PooledTcpListener } from '../src/modes/userspace/pooled.js';
import { TcpListener } from '../src/modes/userspace/tcp.js';
import { service } from './support/objects.js';
import { accepts, addService, ENGINE_SCRIPT, freeRange, harness, read, Recorder, server as serve, until } from './support/userspace.js';

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

const server = (host: string, port: number, name: string | null) => serve(closers, host, port, name);

describe('userspace sync with the splice engine', () => {
  it('puts Services without affinity in the engine and keeps ClientIP affinity on Node sockets', async () => {
    const first = await freeRange(3);
    const h = await harness(first, closers, { splice: true });
    const port = await server('127.0.0.1', 0, 'one');
    await server('127.0.0.2', port, 'two');
    addService(h, 'sticky', '10.96.0.1', port, ['127.0.0.1', '127.0.0.2'], { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } });
    addService(h, 'spread', '10.96.0.2', port, ['127.0.0.1', '127.0.0.2']);
    expect((await h.sync()).ok).toBe(true);
    expect(h.proxier.listener('IPv4', 'ns/sticky:http TCP')).toBeInstanceOf(TcpListener);
    expect(h.proxier.listener('IPv4', 'ns/spread:http TCP')).toBeInstanceOf(PooledTcpListener);
    const spread = h.proxier.held('IPv4').get('ns/spread:http TCP')!;
    const answers = new Set(await Promise.all(Array.from({ length: 10 }, () => read(spread))));
    expect(answers).toEqual(new Set(['one', 'two']));
    expect((await h.engine!.probe())!.accepted).toBe(10);
  });

  it('takes new endpoints at the next sync, counts connections and bytes, and closes a gone port only', async () => {
    const first = await freeRange(3);
    const stats = new Recorder();
    const h = await harness(first, closers, { splice: true, stats });
    const port = await server('127.0.0.1', 0, 'one');
    await server('127.0.0.2', port, 'two');
    addService(h, 'a', '10.96.0.1', port, ['127.0.0.1']);
    addService(h, 'echo', '10.96.0.2', await server('127.0.0.1', 0, null), ['127.0.0.1']);
    expect((await h.sync()).ok).toBe(true);
    const a = h.proxier.held('IPv4').get('ns/a:http TCP')!;
    const echo = h.proxier.held('IPv4').get('ns/echo:http TCP')!;
    expect(await read(a)).toBe('one');
    addService(h, 'a', '10.96.0.1', port, ['127.0.0.2']);
    expect((await h.sync()).ok).toBe(true);
    await until(async () => (await read(a)) === 'two', 2_000);

    // A held connection through `echo`: counted open, its bytes reported.
    const c = net.connect(echo, '127.0.0.1');
    closers.push(() => c.destroy());
    await new Promise((r) => c.once('connect', r));
    c.write('12345');
    await new Promise((r) => c.once('data', r));
    await until(() => [...stats.active.values()].includes(1) && stats.bytesIn >= 5 && stats.bytesOut >= 5, 3_000);

    h.state.deleteService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80, targetPort: port }]));
    expect((await h.sync()).ok).toBe(true);
    expect(await accepts(a)).toBe(false);
    const echoed = new Promise<string>((r) => c.once('data', (d) => r(String(d))));
    c.write('still');
    expect(await echoed).toBe('still');
  });
});

describe('where the TCP listeners run', () => {
  const logged = () => {
    const lines: { level: string; msg: string }[] = [];
    const log = pino({ level: 'info', formatters: { level: (level) => ({ level }) } }, { write: (l: string) => lines.push(JSON.parse(l) as { level: string; msg: string }) });
    return { lines, log };
  };

  it('falls back to Node sockets, with one warning, where the engine cannot load', async () => {
    const { lines, log } = logged();
    const host = await tcpHost(DEFAULT_USERSPACE, NO_STATS, log, () => Promise.reject(new Error('koffi: no prebuilt binary')));
    expect(host).toBeNull();
    expect(lines).toMatchObject([{ level: 'warn', msg: expect.stringMatching(/splice engine cannot load; TCP service traffic goes through Node sockets/), err: 'koffi: no prebuilt binary' }]);
  });

  it('starts the engine by default, and nothing with the node data path and no workers', async () => {
    const { lines, log } = logged();
    const engine = await tcpHost(DEFAULT_USERSPACE, NO_STATS, log, (o) => SpliceEngine.start({ ...o, script: ENGINE_SCRIPT }));
    expect(engine).toBeInstanceOf(SpliceEngine);
    closers.push(() => (engine as SpliceEngine).stop());
    expect(lines.map((l) => l.level)).toEqual(['info']);
    expect(await tcpHost({ ...DEFAULT_USERSPACE, dataPath: 'node' }, NO_STATS, log, () => Promise.reject(new Error('not asked')))).toBeNull();
  });
});
