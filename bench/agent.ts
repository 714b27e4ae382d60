/**
 * The agent at scale, in a network namespace: 10,000 services x 10 endpoints served by the
 * test API server, one kube-proxy-ts agent programming iptables for real. Prints, side by
 * side with bare iptables-restore runs of the same rules measured in this run:
 *   - the first full sync, against one flushing restore of the whole ruleset;
 *   - event-to-rules latency (p50/p99 over 20 changes) for an endpoint change, a service
 *     added and a service removed, against upstream's partial restore (KUBE-SERVICES and
 *     the filter table rewritten with the changed service's chains);
 *   - the agent's memory.
 */
import { buildNodeModel } from '../src/model/build.js';
import { renderIptables } from '../src/modes/iptables/render.js';
import { restoreText } from '../src/modes/iptables/ruleset.js';
import type { Manifest } from '../test/support/apiserver.js';
import { Netns, run } from '../test/support/netns.js';
import { IptablesApplier } from '../src/modes/iptables/applier.js';
import { runCommand } from '../src/exec/command.js';
import { startBenchAgent, type BenchAgent } from './harness.js';
import { syntheticCluster } from './synthetic.js';

const SERVICES = Number(process.env.BENCH_SERVICES ?? 10_000);
const ENDPOINTS = 10;
const CHANGES = 20;
const f = (n: number, d = 2) => n.toFixed(d);

function timeRestore(ns: Netns, args: string[], input: string): number {
  const t = performance.now();
  const r = ns.exec('iptables-restore', ['-w', ...args], input);
  if (r.status !== 0) throw new Error(`iptables-restore failed: ${r.stderr}`);
  return (performance.now() - t) / 1000;
}

/** Upstream's partial sync: all of filter, nat's fixed and shared chains, one service's chains. */
function upstreamPartial(full: string, serviceChains: string[]): string {
  const [filter, nat] = full.split('*nat\n') as [string, string];
  const keep = new Set(['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-MARK-MASQ', 'KUBE-POSTROUTING', ...serviceChains]);
  const lines = nat.split('\n').filter((l) => {
    if (l.startsWith(':')) return keep.has(l.slice(1, l.indexOf(' ')));
    if (l.startsWith('-A ')) return keep.has(l.split(' ')[1]!);
    return l === 'COMMIT';
  });
  return `${filter}*nat\n${lines.join('\n')}\n`;
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;

async function main(): Promise<void> {
  const bareNs = new Netns('bench-bare');
  let bench: BenchAgent | null = null;
  try {
    console.log(`agent at scale: ${SERVICES} services x ${ENDPOINTS} endpoints, iptables ${run('iptables', ['--version']).stdout.trim()}`);
    const objects = syntheticCluster({ services: SERVICES, endpointsPerService: ENDPOINTS });
    const nodeName = 'node-0';
    const cidr = ['--cluster-cidr', '10.128.0.0/9'];

    // Bare restores of the same ruleset, for comparison.
    const built = buildNodeModel(objects, nodeName);
    const full = restoreText(renderIptables(built.model.families.IPv4, built.model.node, { clusterCIDRs: ['10.128.0.0/9'] }));
    const rs = renderIptables(built.model.families.IPv4, built.model.node, { clusterCIDRs: ['10.128.0.0/9'] });
    const flushing = timeRestore(bareNs, [], full);
    // As on a node: the built-in chains jump into ours. Each commit that adds a jump then
    // makes nf_tables re-validate every chain reachable from them, which at this size is
    // most of the cost of any small restore.
    await new IptablesApplier('IPv4', (cmd, args, input) => runCommand('ip', ['netns', 'exec', bareNs.name, cmd, ...args], input)).ensureJumps(rs.jumps);
    const sp = built.model.families.IPv4.servicePorts[0]!;
    const one = renderIptables({ family: 'IPv4', servicePorts: [sp], serviceCIDRs: [] }, built.model.node, { clusterCIDRs: ['10.128.0.0/9'], largeClusterMode: true });
    const svcChains = one.services[0]!.chains;
    const ownChains = `*nat\n${svcChains.map((c) => `:${c} - [0:0]\n`).join('')}${one.chainRules.toString('latin1')}COMMIT\n`;
    const upstreamPartialS = quantile(Array.from({ length: 3 }, () => timeRestore(bareNs, ['--noflush'], upstreamPartial(full, svcChains))), 0.5);
    const ownChainsS = quantile(Array.from({ length: 3 }, () => timeRestore(bareNs, ['--noflush'], ownChains)), 0.5);
    console.log(`  bare: one flushing restore of the whole ruleset (${full.split('\n').length} lines): ${f(flushing)} s`);
    console.log(`  bare, onto it with the jump rules in place:`);
    console.log(`    upstream-style partial restore (filter + KUBE-SERVICES + one service): ${f(upstreamPartialS * 1000, 0)} ms`);
    console.log(`    one service's own chains only (the kernel's floor for a change): ${f(ownChainsS * 1000, 0)} ms`);
    bareNs.remove();

    bench = await startBenchAgent(objects, nodeName, [...cidr, '--iptables-min-sync-period', '0s', '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0']);
    const { api, waitLog, started } = bench;

    const synced = await waitLog((l) => l.msg === 'informers synced');
    const firstSync = await waitLog((l) => l.msg === 'synced proxy rules' && l.full === true);
    const firstSyncS = (firstSync.time - synced.time) / 1000;
    console.log(`  agent: first full sync ${f(firstSyncS)} s after the informers synced (${f((firstSync.time - started) / 1000)} s after start)`);
    console.log(`         = ${f(firstSyncS / flushing)}x the flushing restore (target <= 1.0x)`);

    const latency = async (change: (i: number) => void): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < CHANGES; i++) {
        const t0 = Date.now();
        change(i);
        const l = await waitLog((x) => x.msg === 'synced proxy rules' && x.time >= t0);
        out.push(l.time - t0);
        await new Promise((r) => setTimeout(r, 50));
      }
      return out;
    };
    const report = (what: string, ms: number[]) =>
      console.log(
        `  ${what}: p50 ${quantile(ms, 0.5)} ms, p99 ${quantile(ms, 0.99)} ms (targets 100 / 250 ms; upstream-style restore alone ${f(upstreamPartialS * 1000, 0)} ms = ${f((upstreamPartialS * 1000) / quantile(ms, 0.5), 1)}x our p50; kernel floor ${f(ownChainsS * 1000, 0)} ms)`,
      );

    const slice = (s: number, shift: number) => {
      const base = objects.endpointSlices[s] as Manifest & { endpoints: { addresses: string[] }[] };
      return { ...base, endpoints: base.endpoints.map((e, j) => (j === 0 ? { ...e, addresses: [`10.127.${shift}.${s % 250}`] } : e)) };
    };
    report('endpoint change -> rules', await latency((i) => api!.apply(slice((i * 37) % SERVICES, i + 1))));
    const extra = (i: number) => ({
      kind: 'Service',
      metadata: { name: `added-${i}`, namespace: 'bench' },
      spec: { clusterIP: `10.95.0.${i + 1}`, ports: [{ name: 'http', port: 80 }] },
    });
    for (let i = 0; i < CHANGES; i++) {
      api.apply({
        kind: 'EndpointSlice',
        metadata: { name: `added-${i}-x`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `added-${i}` } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080 }],
        endpoints: [{ addresses: [`10.126.0.${i + 1}`], conditions: { ready: true }, nodeName: 'node-1' }],
      } as Manifest);
    }
    await new Promise((r) => setTimeout(r, 1000));
    report('service added -> rules', await latency((i) => api!.apply(extra(i) as Manifest)));
    report('service removed -> rules', await latency((i) => api!.remove('Service', 'bench', `added-${i}`)));

    const mem = bench.memory();
    console.log(`  agent memory: RSS ${f(mem.rssMB, 0)} MB, peak ${f(mem.peakMB, 0)} MB (target < 300 MB)`);
  } finally {
    await bench?.stop();
    bareNs.remove();
  }
}

await main();
