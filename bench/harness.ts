/**
 * One kube-proxy-ts agent in a fresh network namespace, reading a test API server that
 * holds `objects`, with its JSON log lines at hand: what the agent benchmarks share.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ClusterObjects } from '../src/kube/objects.js';
import { TestApiServer, type Manifest } from '../test/support/apiserver.js';
import { Netns } from '../test/support/netns.js';

const root = join(import.meta.dirname, '..', '..');

export interface LogLine {
  time: number;
  msg: string;
  full?: boolean;
  ms?: number;
}

export interface BenchAgent {
  api: TestApiServer;
  ns: Netns;
  agent: ChildProcess;
  /** When the agent process was started (ms since epoch). */
  started: number;
  logs: LogLine[];
  /** The first log line (already seen or to come) that `pred` accepts; throws if the agent exits. */
  waitLog(pred: (l: LogLine) => boolean): Promise<LogLine>;
  /** The agent's memory now and at its peak (MB). */
  memory(): { rssMB: number; peakMB: number };
  stop(): Promise<void>;
}

export async function startBenchAgent(objects: ClusterObjects, nodeName: string, args: string[]): Promise<BenchAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'kpt-bench-'));
  const ns = new Netns('bench-node');
  ns.exec('ip', ['link', 'set', 'lo', 'up']);
  const api = await TestApiServer.start({ unixSocket: join(dir, 'api.sock') });
  for (const o of [...objects.nodes, ...objects.services, ...objects.endpointSlices]) api.apply(o as Manifest);
  const forwarder = spawn('ip', ['netns', 'exec', ns.name, process.execPath, join(root, 'test', 'support', 'unix-forwarder.mjs'), '127.0.0.1', '6443', join(dir, 'api.sock')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((r) => forwarder.stdout!.once('data', r));
  const kubeconfig = api.writeKubeconfig(join(dir, 'kubeconfig'), 'http://127.0.0.1:6443');

  const logs: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  const started = Date.now();
  // BENCH_AGENT_NODE_ARGS: node's own flags for the agent (`--cpu-prof --cpu-prof-dir=/tmp/prof`).
  const nodeArgs = (process.env.BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const agent = spawn('ip', ['netns', 'exec', ns.name, process.execPath, ...nodeArgs, join(root, 'dist', 'src', 'main.js'), '--kubeconfig', kubeconfig, '--hostname-override', nodeName, ...args], {
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  createInterface({ input: agent.stderr! }).on('line', (text) => {
    let l: LogLine;
    try {
      l = JSON.parse(text) as LogLine;
    } catch {
      process.stderr.write(`${text}\n`);
      return;
    }
    logs.push(l);
    if (process.env.BENCH_VERBOSE) process.stderr.write(`${text}\n`);
    for (const w of [...waiters]) if (w.pred(l)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(l));
  });
  let exited: string | null = null;
  agent.on('exit', (code) => {
    exited = `agent exited (${code}): ${logs.slice(-3).map((l) => JSON.stringify(l)).join(' ')}`;
    for (const w of waiters.splice(0)) w.resolve({ time: 0, msg: exited });
  });
  return {
    api,
    ns,
    agent,
    started,
    logs,
    async waitLog(pred) {
      const l = await new Promise<LogLine>((resolve) => {
        const seen = logs.find(pred);
        if (seen || exited) resolve(seen ?? { time: 0, msg: exited! });
        else waiters.push({ pred, resolve });
      });
      if (exited) throw new Error(exited);
      return l;
    },
    memory() {
      const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
      const mb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN) / 1024;
      return { rssMB: mb('VmRSS'), peakMB: mb('VmHWM') };
    },
    async stop() {
      agent.kill('SIGTERM');
      forwarder.kill('SIGTERM');
      await api.stop();
      ns.remove();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
