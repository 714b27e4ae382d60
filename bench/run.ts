/**
 * `npm run bench`: figures and ratios, measured side by side in this one run.
 *
 * Render: 10,000 services x 10 endpoints through the iptables renderer (targets:
 * < 300 ms, < 150 MB above the process's footprint before rendering).
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

// The agent at scale needs root and network namespaces; say so rather than fail.
if (process.getuid?.() === 0) {
  for (const script of ['agent.js', 'soak.js', 'conntrack.js']) {
    const r = spawnSync(process.execPath, [join(import.meta.dirname, script)], { stdio: 'inherit' });
    if (r.status !== 0) process.exitCode = r.status ?? 1;
  }
} else {
  console.log('agent at scale: skipped (needs root for network namespaces and iptables)');
}
