/**
 * `npm run bench`: figures and ratios, measured side by side in this one run.
 *
 * Render: 10,000 services x 10 endpoints through the iptables renderer (targets:
 * < 300 ms, < 150 MB above the process's footprint before rendering).
 * ipvs: render + diff at the same size with one endpoint changed (target: a handful of
 * ipvsadm lines, < 100 ms).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

interface RenderFigures {
  buildMs: number;
  renderColdMs: number;
  renderWarmMsMedian: number;
  renderPeakMB: number;
  lines: number;
  textMB: number;
}

function measure(services: number, endpoints: number, iterations: number): RenderFigures {
  const child = join(import.meta.dirname, 'render-child.js');
  const r = spawnSync(process.execPath, ['--expose-gc', child, String(services), String(endpoints), String(iterations)], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`bench child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as RenderFigures;
}

const TARGET_MS = 300;
const TARGET_MB = 150;
const f = (n: number, d = 1) => n.toFixed(d);

console.log('iptables render, 10,000 services x 10 endpoints (IPv4)');
const small = measure(1_000, 10, 5);
const big = measure(10_000, 10, 5);
console.log(`  lines: ${big.lines} (${f(big.textMB)} MB of restore text)`);
console.log(`  model build: ${f(big.buildMs)} ms`);
console.log(`  render, first (names hashed): ${f(big.renderColdMs)} ms  (target ${TARGET_MS} ms: ${f(big.renderColdMs / TARGET_MS, 2)}x of budget)`);
console.log(`  render, again (names remembered): median ${f(big.renderWarmMsMedian)} ms  (${f(big.renderWarmMsMedian / TARGET_MS, 2)}x of budget)`);
console.log(`  render peak memory: ${f(big.renderPeakMB)} MB  (target ${TARGET_MB} MB: ${f(big.renderPeakMB / TARGET_MB, 2)}x of budget)`);
console.log(`  scaling: 1,000 services render in ${f(small.renderWarmMsMedian)} ms; 10x the services costs ${f(big.renderWarmMsMedian / small.renderWarmMsMedian)}x the time`);

for (const script of ['offline.js', 'nftables.js']) {
  const r = spawnSync(process.execPath, [join(import.meta.dirname, script)], { stdio: 'inherit' });
  if (r.status !== 0) process.exitCode = r.status ?? 1;
}

const ipvs = spawnSync(process.execPath, [join(import.meta.dirname, 'ipvs.js')], { stdio: 'inherit' });
if (ipvs.status !== 0) process.exitCode = ipvs.status ?? 1;

// userspace mode's data path against a direct connection and HAProxy, on loopback.
const userspace = spawnSync(process.execPath, [join(import.meta.dirname, 'userspace.js')], { stdio: 'inherit' });
if (userspace.status !== 0) process.exitCode = userspace.status ?? 1;

// The agent at scale needs root and network namespaces; say so rather than fail.
if (process.getuid?.() === 0) {
  // The agent from process start at a common size and at 10,000 services, then the soak and conntrack.
  const runs: [string, Record<string, string>][] = [
    ['agent.js', { BENCH_SERVICES: '1000' }],
    ['agent.js', { BENCH_SERVICES: '10000' }],
    ['soak.js', {}],
    ['conntrack.js', {}],
  ];
  for (const [script, env] of runs) {
    const r = spawnSync(process.execPath, [join(import.meta.dirname, script)], { stdio: 'inherit', env: { ...process.env, ...env } });
    if (r.status !== 0) process.exitCode = r.status ?? 1;
  }
} else {
  console.log('agent at scale: skipped (needs root for network namespaces and iptables)');
}
