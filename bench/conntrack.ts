/**
 * Stale conntrack entries deleted at scale, in a throwaway network namespace: 100,000 UDP
 * entries of 1,000 services x 10 endpoints (100 clients each; service 0 is also a NodePort),
 * loaded in one `conntrack -R` batch. Then the deletions the agent computes for one removed
 * endpoint, and for 20 endpoints removed in one sync, carried out by the netlink cleaner
 * (libnetfilter_conntrack: one dump, matched in JS) and by the `conntrack` command (a
 * process per deletion, each of which dumps the table), on the same table: the stale
 * entries are put back between runs. Checks that each run deletes exactly the stale ones.
 *
 * Run as root; it re-runs itself inside the namespace (`--in-namespace`).
 */
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LIBRARY } from '../native/netfilter-conntrack.js';
import { ThreadedCleaner } from '../src/conntrack/thread.js';
import { staleFlows, type ConntrackDeletion } from '../src/conntrack/stale.js';
import { CommandCleaner } from '../src/conntrack/tool.js';
import type { ConntrackCleaner } from '../src/conntrack/cleaner.js';
import { runCommand } from '../src/exec/command.js';
import { buildNodeModel } from '../src/model/build.js';
import type { ServicePort } from '../src/model/types.js';
import { endpointSlice, service } from '../test/support/objects.js';
import { Netns, run } from '../test/support/netns.js';

const SERVICES = 1_000;
const ENDPOINTS = 10;
const CLIENTS = 100;
const NODE_IP = '10.99.0.11';
const NODE_PORT = 30000;

const clusterIP = (s: number) => `10.96.${Math.floor(s / 250)}.${(s % 250) + 1}`;
const endpointIP = (s: number, j: number) => `10.244.${Math.floor(s / 25)}.${(s % 25) * 10 + j + 1}`;
const clientIP = (s: number) => `10.200.${Math.floor(s / 250)}.${(s % 250) + 1}`;

interface Entry {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  replySrc: string;
}

/** Service s's entries: client c goes to endpoint c % 10; service 0 takes half its clients through the node port. */
function entries(): Entry[] {
  const out: Entry[] = [];
  for (let s = 0; s < SERVICES; s++) {
    for (let c = 0; c < CLIENTS; c++) {
      const viaNodePort = s === 0 && c % 2 === 1;
      out.push({ src: clientIP(s), sport: 10_000 + c, dst: viaNodePort ? NODE_IP : clusterIP(s), dport: viaNodePort ? NODE_PORT : 53, replySrc: endpointIP(s, c % ENDPOINTS) });
    }
  }
  return out;
}

const line = (e: Entry) =>
  `-I -p udp -s ${e.src} -d ${e.dst} --sport ${e.sport} --dport ${e.dport} --reply-src ${e.replySrc} --reply-dst ${e.src} --reply-port-src ${e.dport} --reply-port-dst ${e.sport} --timeout 3600`;

/** Service s's port as the agent's model has it, with the given endpoints (indices). */
function servicePort(s: number, endpoints: number[]): ServicePort {
  const svc = service('bench', `svc-${s}`, clusterIP(s), [{ name: 'dns', port: 53, protocol: 'UDP', ...(s === 0 ? { nodePort: NODE_PORT } : {}) }], s === 0 ? { type: 'NodePort' } : {});
  const slice = endpointSlice('bench', `svc-${s}`, `svc-${s}-1`, [{ name: 'dns', port: 53, protocol: 'UDP' }], endpoints.map((j) => ({ ip: endpointIP(s, j), nodeName: 'node-b' })));
  return buildNodeModel({ services: [svc], endpointSlices: [slice], nodes: [] }, 'node-a').model.families.IPv4.servicePorts[0]!;
}

/** The deletions for endpoint 0 of services 0..n-1 removed in one sync. */
function removal(n: number): ConntrackDeletion[] {
  const all = [...Array(ENDPOINTS).keys()];
  const before = [...Array(n).keys()].map((s) => servicePort(s, all));
  const after = [...Array(n).keys()].map((s) => servicePort(s, all.slice(1)));
  return staleFlows(before, after);
}

/** Entries DNATed to a removed endpoint: endpoint 0 of services 0..n-1. */
function isStale(n: number): (e: Entry) => boolean {
  const removed = new Set([...Array(n).keys()].map((s) => endpointIP(s, 0)));
  return (e) => removed.has(e.replySrc);
}

function load(path: string, es: Entry[]): number {
  writeFileSync(path, es.map(line).join('\n') + '\n');
  const t = performance.now();
  const r = run('conntrack', ['-R', path]);
  if (r.status !== 0) throw new Error(`conntrack -R: ${r.stderr}`);
  return performance.now() - t;
}

function count(): number {
  const r = run('conntrack', ['-C']);
  return Number(r.stdout.trim());
}

interface RunFigures {
  ms: number;
  /** The longest the event loop waited for its turn meanwhile (a 5 ms timer's lateness). */
  lagMs: number;
  deleted: number;
  left: number;
  failures: string[];
}

async function timeCleaner(cleaner: ConntrackCleaner, deletions: ConntrackDeletion[]): Promise<RunFigures> {
  let lagMs = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    lagMs = Math.max(lagMs, now - last - 5);
    last = now;
  }, 5);
  const t = performance.now();
  const r = await cleaner.delete(deletions);
  const ms = performance.now() - t;
  clearInterval(timer);
  return { ms, lagMs, deleted: r.deleted, left: count(), failures: r.failures };
}

/** Inside the namespace: load, then each scenario with each cleaner; prints the figures as JSON. */
async function inNamespace(): Promise<void> {
  const all = entries();
  const file = join(tmpdir(), `kpt-bench-conntrack-${process.pid}.txt`);
  try {
    await scenarios(file, all);
  } finally {
    rmSync(file, { force: true });
  }
}

async function scenarios(file: string, all: Entry[]): Promise<void> {
  const loadMs = load(file, all);
  if (count() !== all.length) throw new Error(`loaded ${count()} entries, want ${all.length}`);
  // As the agent runs it: in a worker thread.
  const netlink = await ThreadedCleaner.start(LIBRARY);
  const command = new CommandCleaner(runCommand);
  const scenarios = [];
  for (const n of [1, 20]) {
    const deletions = removal(n);
    const stale = all.filter(isStale(n));
    const results: Record<string, RunFigures> = {};
    for (const [name, cleaner] of [['netlink', netlink], ['command', command]] as const) {
      results[name] = await timeCleaner(cleaner, deletions);
      if (results[name].deleted !== stale.length || results[name].left !== all.length - stale.length) {
        throw new Error(`${name}: deleted ${results[name].deleted} (${results[name].left} left), want ${stale.length} (${all.length - stale.length} left): ${results[name].failures.join('; ')}`);
      }
      load(file, stale); // the same table for the next run
    }
    scenarios.push({ endpoints: n, deletions: deletions.length, stale: stale.length, ...results, entriesSeen: netlink.last[0]?.entries ?? 0 });
  }
  await netlink.close();
  console.log(JSON.stringify({ entries: all.length, loadMs, scenarios }));
}

async function main(): Promise<void> {
  const ns = new Netns('bench-ct');
  try {
    const r = ns.exec(process.execPath, [import.meta.filename, '--in-namespace']);
    if (r.status !== 0) throw new Error(`bench child failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      entries: number;
      loadMs: number;
      scenarios: { endpoints: number; deletions: number; stale: number; netlink: RunFigures; command: RunFigures; entriesSeen: number }[];
    };
    const f = (n: number, d = 0) => n.toFixed(d);
    console.log(`conntrack cleanup: ${out.entries.toLocaleString('en')} UDP entries in a network namespace (loaded by conntrack -R in ${f(out.loadMs)} ms)`);
    for (const s of out.scenarios) {
      console.log(`  ${s.endpoints === 1 ? 'one endpoint removed' : `${s.endpoints} endpoints removed in one sync`}: ${s.deletions} deletions, ${s.stale} stale entries`);
      console.log(`    netlink (libnetfilter_conntrack): ${f(s.netlink.ms, 1)} ms  (one dump of ${s.entriesSeen.toLocaleString('en')} entries, matched in JS, in a worker thread; event loop lag at most ${f(s.netlink.lagMs, 1)} ms)`);
      console.log(`    conntrack command:                ${f(s.command.ms, 1)} ms  (${s.deletions} processes; ${f(s.command.ms / s.netlink.ms, 1)}x the netlink time)`);
    }
  } finally {
    ns.remove();
  }
}

if (process.argv[2] === '--in-namespace') {
  await inNamespace();
} else if (process.getuid?.() !== 0) {
  console.log('conntrack cleanup at scale: skipped (needs root for a network namespace)');
} else {
  await main();
}
