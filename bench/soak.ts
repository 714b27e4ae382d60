/**
 * The agent under sustained churn, in a network namespace: 1,000 services x 10 endpoints,
 * then 50 endpoint changes a second for BENCH_SOAK_SECONDS (default 300). Prints, every
 * 30 s and at the end, the agent's memory (RSS, flat is the target), its sync times
 * (p50/p99 of what it logs) and whether /livez stayed 200 throughout.
 */
import type { Manifest } from '../test/support/apiserver.js';
import { startBenchAgent } from './harness.js';
import { syntheticCluster } from './synthetic.js';

const SERVICES = 1_000;
const ENDPOINTS = 10;
const RATE = 50;
const SECONDS = Number(process.env.BENCH_SOAK_SECONDS ?? 300);
const f = (n: number, d = 0) => n.toFixed(d);
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;

/** /livez as the kubelet's liveness probe sees it, from inside the node's namespace. */
async function livez(ns: { exec(cmd: string, args: string[]): { stdout: string } }): Promise<string> {
  return ns.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', 'http://127.0.0.1:10256/livez']).stdout;
}
async function main(): Promise<void> {
  const objects = syntheticCluster({ services: SERVICES, endpointsPerService: ENDPOINTS });
  const bench = await startBenchAgent(objects, 'node-0', ['--cluster-cidr', '10.128.0.0/9', '--iptables-min-sync-period', '1s', '--metrics-bind-address', '127.0.0.1:0']);
  try {
    console.log(`agent soak: ${SERVICES} services x ${ENDPOINTS} endpoints, ${RATE} endpoint changes/s for ${SECONDS} s`);
    await bench.waitLog((l) => l.msg === 'synced proxy rules' && l.full === true);
    const baseline = bench.memory();
    console.log(`  after the first sync: RSS ${f(baseline.rssMB)} MB`);
    const syncs0 = bench.logs.length;
    const rss: number[] = [];
    let unhealthy = 0;
    let checks = 0;
    let n = 0;
    const started = Date.now();
    const churn = setInterval(() => {
      for (let k = 0; k < RATE / 10; k++, n++) {
        const s = n % SERVICES;
        const base = objects.endpointSlices[s] as Manifest & { endpoints: { addresses: string[] }[] };
        bench.api.apply({ ...base, endpoints: base.endpoints.map((e, j) => (j === 0 ? { ...e, addresses: [`10.127.${(n >> 8) & 255}.${n & 255}`] } : e)) });
      }
    }, 100);
    while (Date.now() - started < SECONDS * 1000) {
      await new Promise((r) => setTimeout(r, 10_000));
      rss.push(bench.memory().rssMB);
      checks++;
      if ((await livez(bench.ns)) !== '200') unhealthy++;
      const elapsed = Math.round((Date.now() - started) / 1000);
      if (elapsed % 30 < 10) {
        const ms = bench.logs.slice(syncs0).flatMap((l) => (l.msg === 'synced proxy rules' && typeof l.ms === 'number' ? [l.ms] : []));
        console.log(`  ${elapsed} s: ${n} changes, ${ms.length} syncs (p50 ${quantile(ms, 0.5)} ms, p99 ${quantile(ms, 0.99)} ms), RSS ${f(rss.at(-1)!)} MB`);
      }
    }
    clearInterval(churn);
    const ms = bench.logs.slice(syncs0).flatMap((l) => (l.msg === 'synced proxy rules' && typeof l.ms === 'number' ? [l.ms] : []));
    const half = rss.slice(Math.floor(rss.length / 2));
    console.log(`  ${n} changes in ${SECONDS} s, ${ms.length} syncs: p50 ${quantile(ms, 0.5)} ms, p99 ${quantile(ms, 0.99)} ms, max ${Math.max(...ms)} ms`);
    console.log(`  RSS: after first sync ${f(baseline.rssMB)} MB, min ${f(Math.min(...rss))} / max ${f(Math.max(...rss))} MB; second half ${f(Math.min(...half))}-${f(Math.max(...half))} MB (flat is the target); peak ${f(bench.memory().peakMB)} MB`);
    console.log(`  /livez: ${checks - unhealthy} of ${checks} checks answered 200 during the churn`);
  } finally {
    await bench.stop();
  }
}

await main();
