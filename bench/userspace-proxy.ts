/**
 * The proxy side of the userspace bench, in a process of its own: `node userspace-proxy.js
 * VARIANT BACKEND_PORT` listens on a free port (printed) and forwards to 127.0.0.1:BACKEND_PORT.
 * VARIANT `splice` is userspace mode's splice engine (a thread running epoll and splice,
 * the agent's default); `listener` is its Node data path's TcpListener (pipe()); the others are bare
 * copies to compare copy paths: `manual` (write, pause on a full buffer, resume on drain)
 * and `pipe-256k` (pipe() with 256 KiB stream buffers). `workers` is userspace mode's worker
 * pool, one process per core (the agent's default), this process as the agent.
 */
import net from 'node:net';
import os from 'node:os';
import { pino } from 'pino';
import type { Endpoint } from '../src/model/types.js';
import { Balancer } from '../src/modes/userspace/balancer.js';
import { WorkerPool } from '../src/modes/userspace/pool.js';
import { SpliceEngine } from '../src/modes/userspace/splice/engine.js';
import { NO_STATS } from '../src/modes/userspace/stats.js';
import { TcpListener } from '../src/modes/userspace/tcp.js';

const [variant, backendText] = process.argv.slice(2);
const backend = Number(backendText);

function manual(a: net.Socket, b: net.Socket): void {
  a.on('data', (d) => {
    if (!b.write(d)) a.pause();
  });
  b.on('drain', () => a.resume());
  a.on('end', () => b.end());
}

async function bare(copy: 'manual' | 'pipe-256k'): Promise<number> {
  const hwm = copy === 'pipe-256k' ? 256 * 1024 : undefined;
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true, highWaterMark: hwm }, (c) => {
    const up = net.connect({ host: '127.0.0.1', port: backend, allowHalfOpen: true, noDelay: true, highWaterMark: hwm } as net.NetConnectOpts);
    const fail = () => (c.destroy(), up.destroy());
    c.on('error', fail);
    up.on('error', fail);
    up.on('connect', () => {
      if (copy === 'manual') {
        manual(c, up);
        manual(up, c);
        c.resume();
      } else {
        c.pipe(up);
        up.pipe(c);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));
  return port;
}

const endpoints: Endpoint[] = [{ ip: '127.0.0.1', port: backend, address: `127.0.0.1:${backend}`, nodeName: null, zone: null, ready: true, serving: true, terminating: false, zoneHints: [], nodeHints: [], isLocal: true }];
const log = pino({ level: 'silent' });

async function listener(): Promise<number> {
  const port = await freePort();
  const b = new Balancer('rr', null);
  b.update(endpoints, null);
  const l = new TcpListener(b, { key: 'bench', family: 'IPv4', port, maxConnections: 20_000, maxAgeMs: 0, stats: NO_STATS, log });
  await l.listen();
  return port;
}

async function workers(): Promise<number> {
  const port = await freePort();
  const pool = new WorkerPool({ size: os.availableParallelism(), stats: NO_STATS, log });
  await pool.start();
  await pool.listen({ key: 'bench', family: 'IPv4', port, scheduler: 'rr', maxConnections: 20_000, maxAgeMs: 0, endpoints });
  return port;
}

async function splice(): Promise<number> {
  const port = await freePort();
  const engine = await SpliceEngine.start({ stats: NO_STATS, log });
  await engine.listen({ key: 'bench', family: 'IPv4', port, scheduler: 'rr', maxConnections: 20_000, maxAgeMs: 0, endpoints });
  return port;
}

const variants: Record<string, () => Promise<number>> = { splice, listener, workers, manual: () => bare('manual'), 'pipe-256k': () => bare('pipe-256k') };
process.stdout.write(`${await variants[variant!]!()}\n`);
