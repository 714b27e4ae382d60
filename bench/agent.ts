/**
 * The agent at scale, in a network namespace: 10,000 services x 10 endpoints served by the
 * test API server, one kube-proxy-ts agent per mode (iptables, then nftables) programming
 * the kernel for real. Prints, per mode and side by side with bare runs of the same rules
 * measured in this run (iptables-restore; nft -f):
 *   - the first full sync, against one bare load of the whole ruleset;
 *   - event-to-rules latency (p50/p99 over 20 changes) for an endpoint change, a service
 *     added and a service removed (iptables: against upstream's partial restore,
 *     KUBE-SERVICES and the filter table rewritten with the changed service's chains);
 *   - the agent's memory.
 */
import { buildNodeModel } from '../src/model/build.js';
import { renderIptables } from '../src/modes/iptables/render.js';
import { restoreText } from '../src/modes/iptables/ruleset.js';
import type { Manifest } from '../test/support/apiserver.js';
import { Netns, run } from '../test/support/netns.js';
import { settle } from './machine.js';
import { IptablesApplier } from '../src/modes/iptables/applier.js';
import { fullTransaction, partialTransaction } from '../src/modes/nftables/plan.js';
import { renderNftables } from '../src/modes/nftables/render.js';
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

function timeNft(ns: Netns, script: Buffer): number {
  const t = performance.now();
  const r = ns.exec('nft', ['-f', '-'], script.toString('latin1'));
  if (r.status !== 0) throw new Error(`nft -f failed: ${r.stderr}`);
  return (performance.now() - t) / 1000;
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;

interface ModeTargets {
  fullSyncS: number | null;
  p50: number;
  p99: number;
}

const TARGETS: Record<'iptables' | 'nftables', ModeTargets> = {
  iptables: { fullSyncS: null, p50: 100, p99: 250 },
  nftables: { fullSyncS: 2, p50: 20, p99: 50 },
};

interface ModeFigures {
  firstSyncS: number;
  fromStartS: number;
  firstSyncRssMB: number;
  endpoint: number[];
  added: number[];
  removed: number[];
  rssMB: number;
  peakMB: number;
}

/** Bare iptables-restore runs of the iptables ruleset; seconds. */
async function bareIptables(objects: ReturnType<typeof syntheticCluster>, nodeName: string): Promise<{ full: number; partial: number; floor: number }> {
  const bareNs = new Netns('bench-bare');
  try {
    const built = buildNodeModel(objects, nodeName);
    const rs = renderIptables(built.model.families.IPv4, built.model.node, { clusterCIDRs: ['10.128.0.0/9'] });
    const full = restoreText(rs);
    const flushing = timeRestore(bareNs, [], full);
    // As on a node: the built-in chains jump into ours. Each commit that adds a jump then
    // makes nf_tables re-validate every chain reachable from them, which at this size is
    // most of the cost of any small restore.
    await new IptablesApplier('IPv4', (cmd, args, input) => runCommand('ip', ['netns', 'exec', bareNs.name, cmd, ...args], input)).ensureJumps(rs.jumps);
    const sp = built.model.families.IPv4.servicePorts[0]!;
    const one = renderIptables({ family: 'IPv4', servicePorts: [sp], serviceCIDRs: [] }, built.model.node, { clusterCIDRs: ['10.128.0.0/9'], largeClusterMode: true });
    const svcChains = one.services[0]!.chains;
    const ownChains = `*nat\n${svcChains.map((c) => `:${c} - [0:0]\n`).join('')}${one.chainRules.toString('latin1')}COMMIT\n`;
    const partial = quantile(Array.from({ length: 3 }, () => timeRestore(bareNs, ['--noflush'], upstreamPartial(full, svcChains))), 0.5);
    const floor = quantile(Array.from({ length: 3 }, () => timeRestore(bareNs, ['--noflush'], ownChains)), 0.5);
    console.log(`  bare iptables: one flushing restore of the whole ruleset (${full.split('\n').length} lines): ${f(flushing)} s`);
    console.log(`    onto it, with the jump rules in place: upstream-style partial restore (filter + KUBE-SERVICES + one service) ${f(partial * 1000, 0)} ms;`);
    console.log(`    one service's own chains only (the kernel's floor for a change) ${f(floor * 1000, 0)} ms`);
    return { full: flushing, partial, floor };
  } finally {
    bareNs.remove();
  }
}

/** Bare nft -f runs of the nftables table (base chains hooked, as on a node); seconds. */
function bareNftables(objects: ReturnType<typeof syntheticCluster>, nodeName: string): { full: number; endpoint: number } {
  const bareNs = new Netns('bench-bare-nft');
  try {
    const built = buildNodeModel(objects, nodeName);
    const opts = { clusterCIDRs: ['10.128.0.0/9'] };
    const table = renderNftables(built.model.families.IPv4, built.model.node, opts);
    const full = fullTransaction(table);
    const fullS = timeNft(bareNs, full.script);
    // One endpoint of the first service replaced: the transaction the agent writes for it.
    const moved = { ...objects, endpointSlices: objects.endpointSlices.map((s, i) => (i === 0 ? slice(objects, 0, 1) : s)) };
    const changed = buildNodeModel(moved, nodeName);
    const tx = partialTransaction(table, renderNftables(changed.model.families.IPv4, changed.model.node, opts));
    const endpointS = timeNft(bareNs, tx.script);
    console.log(`  bare nft: the whole table in one transaction (${full.commands} commands, ${f(full.script.length / 1e6, 1)} MB): ${f(fullS)} s`);
    console.log(`    onto it: one endpoint replaced (${tx.commands} commands): ${f(endpointS * 1000, 0)} ms`);
    return { full: fullS, endpoint: endpointS };
  } finally {
    bareNs.remove();
  }
}

/** The synthetic slice of service `s` with its first endpoint moved to another address. */
function slice(objects: ReturnType<typeof syntheticCluster>, s: number, shift: number): Manifest {
  const base = objects.endpointSlices[s] as Manifest & { endpoints: { addresses: string[] }[] };
  return { ...base, endpoints: base.endpoints.map((e, j) => (j === 0 ? { ...e, addresses: [`10.127.${shift}.${s % 250}`] } : e)) };
}

async function agentFigures(mode: 'iptables' | 'nftables', objects: ReturnType<typeof syntheticCluster>, nodeName: string): Promise<ModeFigures> {
  let bench: BenchAgent | null = null;
  try {
    bench = await startBenchAgent(objects, nodeName, [
      '--proxy-mode',
      mode,
      '--cluster-cidr',
      '10.128.0.0/9',
      '--iptables-min-sync-period',
      '0s',
      '--metrics-bind-address',
      '127.0.0.1:0',
      '--healthz-bind-address',
      '127.0.0.1:0',
    ]);
    const { api, waitLog } = bench;
    const synced = await waitLog((l) => l.msg === 'informers synced');
    const firstSync = await waitLog((l) => l.msg === 'synced proxy rules' && l.full === true);
    const firstSyncS = (firstSync.time - synced.time) / 1000;
    // What a node restart waits for: from the moment the agent process was started.
    const fromStartS = (firstSync.time - bench.started) / 1000;
    const afterFirstSync = bench.memory();

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
    const endpoint = await latency((i) => api.apply(slice(objects, (i * 37) % SERVICES, i + 1)));
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
    const added = await latency((i) => api.apply(extra(i) as Manifest));
    const removed = await latency((i) => api.remove('Service', 'bench', `added-${i}`));
    const mem = bench.memory();
    return { firstSyncS, fromStartS, firstSyncRssMB: afterFirstSync.rssMB, endpoint, added, removed, rssMB: mem.rssMB, peakMB: mem.peakMB };
  } finally {
    await bench?.stop();
  }
}

async function main(): Promise<void> {
  console.log(`agent at scale: ${SERVICES} services x ${ENDPOINTS} endpoints, ${run('iptables', ['--version']).stdout.trim()}, ${run('nft', ['--version']).stdout.trim()}`);
  const objects = syntheticCluster({ services: SERVICES, endpointsPerService: ENDPOINTS });
  const nodeName = 'node-0';
  // BENCH_MODES=nftables (or iptables) measures one mode alone, when only it changed.
  const modes = (['iptables', 'nftables'] as const).filter((m) => (process.env.BENCH_MODES ?? 'iptables,nftables').split(',').includes(m));
  // Each timed phase starts on a quiet machine: the kernel cleans up a deleted namespace's
  // rules in the background, which would otherwise land on the next phase.
  const bareIpt = modes.includes('iptables') ? (await settle('the bare iptables load'), await bareIptables(objects, nodeName)) : { full: NaN, partial: NaN, floor: NaN };
  const bareNft = modes.includes('nftables') ? (await settle('the bare nft load'), bareNftables(objects, nodeName)) : { full: NaN, endpoint: NaN };
  const bare = { iptables: bareIpt, nftables: bareNft };
  const figures = new Map<(typeof modes)[number], ModeFigures>();
  for (const mode of modes) {
    await settle(`the ${mode} agent`);
    figures.set(mode, await agentFigures(mode, objects, nodeName));
  }

  const pq = (ms: number[], t: ModeTargets) => `p50 ${quantile(ms, 0.5)} ms, p99 ${quantile(ms, 0.99)} ms (targets ${t.p50} / ${t.p99})`;
  for (const mode of modes) {
    const m = figures.get(mode)!;
    const t = TARGETS[mode];
    console.log(`  ${mode} agent:`);
    console.log(
      `    first full sync ${f(m.firstSyncS)} s after the informers synced = ${f(m.firstSyncS / bare[mode].full)}x the bare load${t.fullSyncS === null ? '' : ` (target <= ${t.fullSyncS} s)`}`,
    );
    console.log(`    from process start to the first sync done: ${f(m.fromStartS)} s = ${f(m.fromStartS / bare[mode].full)}x the bare load (target <= 1.0x)`);
    console.log(`    endpoint change -> rules: ${pq(m.endpoint, t)}`);
    console.log(`    service added -> rules:   ${pq(m.added, t)}`);
    console.log(`    service removed -> rules: ${pq(m.removed, t)}`);
    console.log(`    memory: RSS ${f(m.firstSyncRssMB, 0)} MB after the first sync, ${f(m.rssMB, 0)} MB after the changes, peak ${f(m.peakMB, 0)} MB (target < 300 MB)`);
  }
  const ipt = figures.get('iptables');
  const nft = figures.get('nftables');
  if (!ipt || !nft) return;
  console.log(
    `  nftables vs iptables: first sync ${f(ipt.firstSyncS / nft.firstSyncS, 1)}x faster, endpoint change p50 ${f(quantile(ipt.endpoint, 0.5) / Math.max(1, quantile(nft.endpoint, 0.5)), 1)}x faster, peak memory ${f(nft.peakMB / ipt.peakMB, 2)}x`,
  );
}

await main();
