/**
 * One measurement in a fresh process, so peak RSS belongs to this work alone.
 * Prints one JSON line: timings in ms and memory in MB.
 */
import type { ClusterObjects } from '../src/kube/objects.js';
import { buildNodeModel } from '../src/model/build.js';
import { renderIptables } from '../src/modes/iptables/render.js';
import { restoreChunks } from '../src/modes/iptables/ruleset.js';
import { syntheticCluster } from './synthetic.js';

const [services, endpoints, iterations] = process.argv.slice(2).map(Number) as [number, number, number];
const gc = (globalThis as { gc?: () => void }).gc;
let objects: ClusterObjects | null = syntheticCluster({ services, endpointsPerService: endpoints });
const opts = { clusterCIDRs: ['10.128.0.0/9'] };

gc?.();
const t0 = performance.now();
const built = buildNodeModel(objects, 'node-0');
const buildMs = performance.now() - t0;
// What the render reads is the model; the raw objects are another component's memory.
objects = null;
gc?.();

const rssBefore = process.memoryUsage().rss;
const renders: number[] = [];
// The first render computes every chain name; later ones (every sync of a running agent)
// find them remembered per model object.
let chunks: Buffer[] = [];
for (let i = 0; i < iterations; i++) {
  const t = performance.now();
  chunks = restoreChunks(renderIptables(built.model.families.IPv4, built.model.node, opts));
  renders.push(performance.now() - t);
}
const bytes = Buffer.concat(chunks);
const peakRss = process.resourceUsage().maxRSS * 1024;
const coldMs = renders.shift()!;
renders.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    buildMs,
    renderColdMs: coldMs,
    renderWarmMsMedian: renders[Math.floor(renders.length / 2)],
    renderPeakMB: (peakRss - rssBefore) / 2 ** 20,
    lines: bytes.filter((b) => b === 10).length,
    textMB: bytes.length / 2 ** 20,
  }),
);
