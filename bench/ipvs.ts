/**
 * ipvs mode at 10,000 services x 10 endpoints: one endpoint of one ClusterIP service
 * moves; the render of the whole family plus the diffs against the table and sets as
 * applied before must come to a handful of ipvsadm lines (target: under 100 ms). The
 * model builds are not counted: the agent keeps its model up to date object by object.
 */
import { buildNodeModel } from '../src/model/build.js';
import { planIpsets } from '../src/modes/ipvs/ipset-plan.js';
import { planIpvs } from '../src/modes/ipvs/plan.js';
import { renderIpvs } from '../src/modes/ipvs/render.js';
import { syntheticCluster } from './synthetic.js';

const SERVICES = 10_000;
const ENDPOINTS = 10;
const TARGET_MS = 100;
const ITERATIONS = 5;
const opts = { clusterCIDRs: ['10.128.0.0/9'] };
const f = (n: number, d = 1) => n.toFixed(d);

const objects = syntheticCluster({ services: SERVICES, endpointsPerService: ENDPOINTS });
const before = buildNodeModel(objects, 'node-0').model;
const applied = renderIpvs(before.families.IPv4, before.node, opts);
const appliedTable = applied.table;
const sets = planIpsets(new Map(), applied.sets).after;

// svc-1 (ClusterIP): its first endpoint gets a new address. As in the agent, the other
// service ports stay the same objects: only the changed one is new.
const slice = objects.endpointSlices[1] as { endpoints: { addresses: string[] }[] };
slice.endpoints[0]!.addresses = ['10.255.255.1'];
const rebuilt = buildNodeModel(objects, 'node-0').model.families.IPv4.servicePorts;
const changed = rebuilt.findIndex((sp) => sp.serviceName === 'svc-1');
const servicePorts = before.families.IPv4.servicePorts.map((sp, i) => (i === changed ? rebuilt[i]! : sp));
const after = { ...before, families: { ...before.families, IPv4: { ...before.families.IPv4, servicePorts } } };

// CPU time besides wall time: on a shared machine the wall clock also counts waiting for a core.
const cpuMs = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
const runs: { render: number; diff: number; cpu: number; ipvsadm: number; ipset: number }[] = [];
for (let i = 0; i < ITERATIONS; i++) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const wanted = renderIpvs(after.families.IPv4, after.node, opts);
  const t1 = performance.now();
  const plan = planIpvs({ current: appliedTable, wanted: wanted.table, draining: new Map(), connections: new Map(), now: 0, gracePeriodMs: 60_000, excludeCIDRs: [] });
  const setPlan = planIpsets(sets, wanted.sets);
  const t2 = performance.now();
  runs.push({ render: t1 - t0, diff: t2 - t1, cpu: cpuMs(process.cpuUsage(c0)), ipvsadm: plan.lines.length, ipset: setPlan.lines.length });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const render = median(runs.map((r) => r.render));
const diff = median(runs.map((r) => r.diff));
console.log(`ipvs render + diff, ${SERVICES.toLocaleString('en')} services x ${ENDPOINTS} endpoints (IPv4), one endpoint changed`);
console.log(`  virtual servers: ${appliedTable.size}, real servers: ${[...appliedTable.values()].reduce((n, vs) => n + vs.realServers.length, 0)}`);
console.log(`  render: median ${f(render)} ms; diff (virtual servers and ipsets): median ${f(diff)} ms`);
console.log(`  render + diff: ${f(render + diff)} ms  (target ${TARGET_MS} ms: ${f((render + diff) / TARGET_MS, 2)}x of budget); CPU time: median ${f(median(runs.map((r) => r.cpu)))} ms`);
console.log(`  ipvsadm lines: ${runs[0]!.ipvsadm}, ipset lines: ${runs[0]!.ipset}`);
