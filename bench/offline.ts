/**
 * The offline tools as a user runs them, whole process from start to exit: --dry-run and
 * trace of a 10,000-service x 10-endpoint cluster dumped as a JSON List (what
 * `kubectl get services,endpointslices,nodes -A -o json` prints), beside the kernel tool
 * reading the same rules (`iptables-restore --test`, as root in a throwaway namespace), and
 * --dry-run of the small example cluster.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from './synthetic.js';

const root = join(import.meta.dirname, '..', '..');
const MAIN = join(root, 'dist', 'src', 'main.js');
// Reports the process's peak memory on its way out, whichever way it exits.
const PEAK = `data:text/javascript,process.on('exit',()=>process.stderr.write('peak-kb '+process.resourceUsage().maxRSS+'\\n'))`;
const f = (n: number, d = 2) => n.toFixed(d);

interface Run {
  seconds: number;
  peakMB: number;
  stdout: string;
}

function run(args: string[]): Run {
  const t = performance.now();
  const r = spawnSync(process.execPath, ['--import', PEAK, MAIN, ...args], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const seconds = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`kube-proxy-ts ${args.join(' ')} failed: ${r.stderr}`);
  const kb = Number(/peak-kb (\d+)/.exec(r.stderr)?.[1] ?? NaN);
  return { seconds, peakMB: kb / 1024, stdout: r.stdout };
}

const best = (args: string[], n: number): Run => Array.from({ length: n }, () => run(args)).sort((a, b) => a.seconds - b.seconds)[0]!;

const dir = mkdtempSync(join(tmpdir(), 'kpt-offline-'));
try {
  const objects = syntheticCluster({ services: 10_000, endpointsPerService: 10 });
  const items = [...objects.nodes, ...objects.services, ...objects.endpointSlices].map((o) => ({
    apiVersion: (o as { kind: string }).kind === 'EndpointSlice' ? 'discovery.k8s.io/v1' : 'v1',
    ...(o as object),
  }));
  const dump = join(dir, 'cluster.json');
  writeFileSync(dump, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 2));
  const flags = ['--from-file', dump, '--hostname-override', 'node-0', '--cluster-cidr', '10.128.0.0/9'];

  console.log('offline tools, whole process, 10,000 services x 10 endpoints from a JSON List');
  const dry = best(['--dry-run', ...flags], 3);
  const trace = best(['trace', ...flags, '--src', '10.128.0.5', '--dst', 'ns-7/svc-7:http'], 3);
  const example = best(['--dry-run', '--from-file', join(root, 'examples', 'cluster.yaml'), '--hostname-override', 'node-a'], 5);
  let kernel = '';
  if (process.getuid?.() === 0) {
    const ns = new Netns('bench-offline');
    try {
      const v4 = dry.stdout.slice(0, dry.stdout.indexOf('# ==== IPv6'));
      const t = performance.now();
      const r = ns.exec('iptables-restore', ['--test', '-w'], v4);
      if (r.status !== 0) throw new Error(`iptables-restore --test: ${r.stderr}`);
      const s = (performance.now() - t) / 1000;
      kernel = `; iptables-restore --test of its output: ${f(s)} s, so --dry-run takes ${f(dry.seconds / s)}x the kernel tool's parse (target <= 0.4x)`;
    } finally {
      ns.remove();
    }
  }
  console.log(`  --dry-run: ${f(dry.seconds)} s, peak ${f(dry.peakMB, 0)} MB (targets 3 s, 600 MB)${kernel}`);
  console.log(`  trace of one packet: ${f(trace.seconds)} s, peak ${f(trace.peakMB, 0)} MB (targets 1.5 s, 500 MB)`);
  console.log(`  --dry-run of examples/cluster.yaml: ${f(example.seconds * 1000, 0)} ms (target 300 ms)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
