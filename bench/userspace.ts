/**
 * userspace mode's data path against a direct connection and HAProxy (`mode tcp`), side by
 * side on loopback: bulk TCP throughput (1 and 8 streams), new connections per second,
 * and p50/p99 latency of 64-byte requests on kept-alive connections. Endpoint, proxy and
 * load generator are three processes. Then the long-lived connection imbalance scenario:
 * 8 kept-alive clients on 2 endpoints, a 3rd added, per-endpoint shares before and after,
 * with and without a max connection age. Figures on a shared machine are indicative; the
 * proxy's CPU per GB and per 1,000 connections, and how idle the machine was, say what the
 * throughput figures cannot: whether a proxy is short of CPU or of cores.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Endpoint } from '../src/model/types.js';
import { NO_STATS } from '../src/modes/userspace/stats.js';
import { machineTicks } from './machine.js';
import { SpliceEngine } from '../src/modes/userspace/splice/engine.js';
import type { ListenerSpec } from '../src/modes/userspace/workerprotocol.js';

const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Target {
  name: string;
  port: number;
  /** The proxy's process, whose CPU (its threads' and its children's) is counted; null for none. */
  pid: number | null;
}

function start(cmd: string, args: string[]): Promise<{ port: number; pid: number }> {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(p);
  return new Promise((resolve, reject) => {
    p.stdout!.once('data', (d) => resolve({ port: Number(String(d).trim()), pid: p.pid! }));
    p.once('exit', (code) => reject(new Error(`${cmd} exited ${code}`)));
  });
}

const CLOCK_TICKS = 100;

/** CPU seconds used so far by `pid` and its live children (the workers of the `workers` variant). */
function cpuSeconds(pid: number | null): number {
  if (pid === null) return NaN;
  const ticks = (p: number) => {
    const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return [pid, ...kids].reduce((sum, p) => sum + ticks(p), 0) / CLOCK_TICKS;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function haproxy(backend: number, dir: string): Promise<{ port: number; pid: number } | null> {
  if (spawnSync('haproxy', ['-v']).status !== 0) return null;
  const port = await freePort();
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'global',
      '  maxconn 8000',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 60s',
      '  timeout server 60s',
      'frontend fe',
      `  bind 127.0.0.1:${port}`,
      '  default_backend be',
      'backend be',
      `  server s1 127.0.0.1:${backend}`,
      '',
    ].join('\n'),
  );
  const p = spawn('haproxy', ['-f', cfg, '-db'], { stdio: 'ignore' });
  children.push(p);
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('connect', () => (c.destroy(), r(true)));
      c.on('error', () => r(false));
    });
    if (ok) return { port, pid: p.pid! };
    await sleep(50);
  }
  throw new Error('haproxy did not start');
}

const CHUNK = Buffer.alloc(1 << 20, 0x61);

function upload(port: number, bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        sent += CHUNK.length;
        if (!c.write(CHUNK)) return void c.once('drain', pump);
      }
      c.end();
    };
    c.on('connect', () => (c.write('B'), pump()));
    c.on('data', () => {});
    c.on('end', () => (c.end(), resolve()));
    c.on('error', reject);
  });
}

async function bulk(port: number, streams: number, bytesEach: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: streams }, () => upload(port, bytesEach)));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return (streams * bytesEach * 8) / s / 1e9;
}

async function connectionRate(port: number, ms: number, concurrency: number): Promise<number> {
  const end = Date.now() + ms;
  let done = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('connect', () => c.write('C'));
      c.on('data', () => {});
      c.on('close', () => resolve());
      c.on('error', () => {});
    });
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) {
        await one();
        done++;
      }
    }),
  );
  return done / (ms / 1000);
}

async function latency(port: number, ms: number, connections: number): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  const end = Date.now() + ms;
  const REQ = Buffer.alloc(64, 0x71);
  await Promise.all(
    Array.from(
      { length: connections },
      () =>
        new Promise<void>((resolve) => {
          const c = net.connect({ port, host: '127.0.0.1', noDelay: true });
          let t0 = 0n;
          let got = 0;
          const ask = () => {
            if (Date.now() >= end) return void (c.destroy(), resolve());
            t0 = process.hrtime.bigint();
            c.write(REQ);
          };
          c.on('connect', () => (c.write('R'), ask()));
          c.on('data', (d) => {
            got += d.length;
            if (got < 64) return;
            got -= 64;
            samples.push(Number(process.hrtime.bigint() - t0) / 1e3);
            ask();
          });
          c.on('error', () => resolve());
        }),
    ),
  );
  samples.sort((a, b) => a - b);
  const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99) };
}

interface Row {
  name: string;
  bulk1: number;
  bulk8: number;
  cps: number;
  p50: number;
  p99: number;
  /** The proxy's CPU seconds per GB over the 8 streams, and per 1,000 connections over the rate run. */
  cpuPerGB: number;
  cpuPerKConn: number;
  /** Share of the machine's CPU left idle over the 8 streams and the rate run. */
  idle: number;
}

const CONNECTION_RATE_MS = 2_000;

async function measure({ name, port, pid }: Target): Promise<Row> {
  await bulk(port, 1, 64 << 20);
  const bulk1 = await bulk(port, 1, 1 << 30);
  const m0 = machineTicks();
  let c0 = cpuSeconds(pid);
  const bulk8 = await bulk(port, 8, 128 << 20);
  const cpuPerGB = (cpuSeconds(pid) - c0) / ((8 * 128) / 1024);
  c0 = cpuSeconds(pid);
  const cps = await connectionRate(port, CONNECTION_RATE_MS, 32);
  const cpuPerKConn = (cpuSeconds(pid) - c0) / ((cps * CONNECTION_RATE_MS) / 1000 / 1000);
  const m1 = machineTicks();
  const { p50, p99 } = await latency(port, 2_000, 8);
  return { name, bulk1, bulk8, cps, p50, p99, cpuPerGB, cpuPerKConn, idle: (m1.idle - m0.idle) / (m1.total - m0.total) };
}

/** Each client's pause between an answer and its next request: request/response traffic, as in the e2e. */
const THINK_MS = 100;

/** The imbalance scenario, on the data path alone: the splice engine (the default) over 3 in-process keep-alive endpoints. */
async function imbalance(maxAgeMs: number): Promise<{ before: number[]; after: number[] }> {
  const counts = [0, 0, 0];
  const servers = await Promise.all(
    [0, 1, 2].map(async (i) => {
      const s = net.createServer((c) => {
        c.on('error', () => {});
        c.on('data', (d) => {
          for (const byte of d) if (byte === 0x0a) (counts[i]!++, c.write('k\n'));
        });
      });
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      return { s, port: (s.address() as net.AddressInfo).port };
    }),
  );
  const ep = (port: number): Endpoint => ({ ip: '127.0.0.1', port, address: `127.0.0.1:${port}`, nodeName: null, zone: null, ready: true, serving: true, terminating: false, zoneHints: [], nodeHints: [], isLocal: true });
  const engine = await SpliceEngine.start({ stats: NO_STATS, log: pino({ level: 'silent' }) });
  const spec: ListenerSpec = { key: 'imbalance', family: 'IPv4', port: await freePort(), scheduler: 'rr', maxConnections: 100, maxAgeMs, endpoints: servers.slice(0, 2).map((x) => ep(x.port)) };
  await engine.listen(spec);
  const l = { port: spec.port };
  let stop = false;
  const clients: net.Socket[] = [];
  const client = () => {
    const c = net.connect({ port: l.port, host: '127.0.0.1', noDelay: true });
    clients.push(c);
    c.on('connect', () => c.write('q\n'));
    c.on('data', () => setTimeout(() => !stop && !c.destroyed && c.write('q\n'), THINK_MS));
    c.on('error', () => {});
    c.on('close', () => !stop && client());
  };
  for (let i = 0; i < 8; i++) client();
  const window = async () => {
    const start = [...counts];
    await sleep(2_000);
    const d = counts.map((n, i) => n - start[i]!);
    const sum = d.reduce((a, x) => a + x, 0) || 1;
    return d.map((x) => x / sum);
  };
  await sleep(500);
  const before = await window();
  engine.update({ ...spec, endpoints: servers.map((x) => ep(x.port)) });
  await sleep(maxAgeMs > 0 ? maxAgeMs * 1.2 + 500 : 2_000);
  const after = await window();
  stop = true;
  for (const c of clients) c.destroy();
  await engine.stop();
  for (const x of servers) x.s.close();
  return { before, after };
}

const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '-');
const pct = (xs: number[]) => xs.map((x) => `${Math.round(x * 100)}%`.padStart(4)).join(' ');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kpt-bench-us-'));
  try {
    const here = import.meta.dirname;
    const backend = (await start(process.execPath, [join(here, 'userspace-backend.js')])).port;
    const targets: Target[] = [{ name: 'direct', port: backend, pid: null }];
    const hp = await haproxy(backend, dir);
    if (hp !== null) targets.push({ name: 'haproxy (mode tcp)', ...hp });
    else console.log('  haproxy: not installed (apt-get install haproxy), left out');
    const variants: [string, string][] = [
      ['splice', 'userspace, splice engine (default)'],
      ['listener', 'userspace, node data path in the agent'],
      ['workers', `userspace, node data path, ${os.availableParallelism()} workers`],
      ['manual', '  copy variant: manual'],
      ['pipe-256k', '  copy variant: pipe-256k'],
    ];
    // KPT_BENCH_USERSPACE=splice,listener: only those variants (a quicker run).
    const only = process.env.KPT_BENCH_USERSPACE?.split(',');
    for (const [variant, name] of variants.filter(([v]) => !only || only.includes(v))) targets.push({ name, ...(await start(process.execPath, [join(here, 'userspace-proxy.js'), variant, String(backend)])) });
    console.log('userspace mode data path on loopback (endpoint, proxy and load generator in 3 processes; 2 shared cores: indicative)');
    console.log(`  ${'target'.padEnd(36)} ${'1 stream'.padStart(10)} ${'8 streams'.padStart(10)} ${'conn/s'.padStart(8)} ${'p50 us'.padStart(7)} ${'p99 us'.padStart(7)}   vs haproxy (tput1, tput8, conn/s, p99)   proxy CPU s/GB, s/1k conn; machine idle`);
    const rows: Row[] = [];
    for (const t of targets) rows.push(await measure(t));
    const ref = rows.find((r) => r.name.startsWith('haproxy'));
    for (const r of rows) {
      const vs = ref ? `${f(r.bulk1 / ref.bulk1, 2)}x ${f(r.bulk8 / ref.bulk8, 2)}x ${f(r.cps / ref.cps, 2)}x ${f(ref.p99 / r.p99, 2)}x` : '';
      const cpu = `${f(r.cpuPerGB, 2)} ${f(r.cpuPerKConn, 2)}; ${Math.round(r.idle * 100)}%`;
      console.log(`  ${r.name.padEnd(36)} ${f(r.bulk1).padStart(6)} Gb/s ${f(r.bulk8).padStart(6)} Gb/s ${f(r.cps, 0).padStart(8)} ${f(r.p50, 0).padStart(7)} ${f(r.p99, 0).padStart(7)}   ${vs.padEnd(38)}   ${cpu}`);
    }
    console.log('  (vs haproxy: above 1 is better; for p99 it is haproxy p99 / this p99. Proxy CPU over the 8 streams and the');
    console.log('   connection rate run, its workers included; machine idle over both: near 0%, more processes cannot go faster)');

    console.log('long-lived connection imbalance: 8 kept-alive clients (a request every ~100 ms each), 2 endpoints, then a 3rd (shares of requests per endpoint)');
    const pinned = await imbalance(0);
    console.log(`  no max age:      before ${pct(pinned.before)}   after the 3rd endpoint ${pct(pinned.after)}`);
    const spread = await imbalance(2_000);
    console.log(`  max age 2s:      before ${pct(spread.before)}   after the 3rd endpoint ${pct(spread.after)}`);
  } finally {
    for (const c of children) c.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
