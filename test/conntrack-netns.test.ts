/**
 * The conntrack cleaners against a real conntrack table, in a throwaway network namespace:
 * entries of several services made with `conntrack -I`, the cleaner run (in the namespace,
 * from the compiled agent: `npx tsc -p .` first) with the deletions the agent would compute,
 * and the table read back. Exactly the stale entries must be gone, every other one left, for
 * the netlink cleaner (libnetfilter_conntrack, in its worker thread, as the agent runs it)
 * and for the `conntrack` command it falls back to. Then the conntrack settings, applied in a namespace: its own timeouts are set, and
 * what only the host's namespace may change is skipped with a reason.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONNTRACK, type ProxyConfig, DEFAULT_CONFIG } from '../src/config/options.js';
import { staleFlows, type ConntrackDeletion } from '../src/conntrack/stale.js';
import { buildNodeModel } from '../src/model/build.js';
import type { ServicePort } from '../src/model/types.js';
import { Netns, run } from './support/netns.js';
import { endpointSlice, service, type EndpointSpec } from './support/objects.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const DIST = join(import.meta.dirname, '..', 'dist', 'src');
const NO_LIBRARY = '/nonexistent/libnetfilter_conntrack.so.3';

/** Run inside the namespace: choose a cleaner (the library given, or the default), delete, print what happened. */
const CLEANER_CHILD = `
import { pathToFileURL } from 'node:url';
const [dist, spec] = process.argv.slice(1);
const load = (p) => import(pathToFileURL(dist + p).href);
const { chooseConntrackCleaner } = await load('/conntrack/choose.js');
const { runCommand } = await load('/exec/command.js');
const { library, deletions, restart } = JSON.parse(spec);
const logs = [];
const log = { info: (o, msg) => logs.push({ level: 'info', msg, ...o }), warn: (o, msg) => logs.push({ level: 'warn', msg, ...o }) };
const cleaner = await chooseConntrackCleaner(runCommand, log, library ? { library } : {});
// The netlink cleaner's worker stopped (as if it had died): the next request starts another.
if (restart && cleaner.close) await cleaner.close();
const result = await cleaner.delete(deletions);
process.stdout.write(JSON.stringify({ kind: cleaner.kind, result, logs }) + '\\n');
`;

/** Run inside the namespace: apply the conntrack settings of a config, print the log. */
const SETTINGS_CHILD = `
import { pathToFileURL } from 'node:url';
const [dist, spec] = process.argv.slice(1);
const load = (p) => import(pathToFileURL(dist + p).href);
const { applyConntrackSettings } = await load('/conntrack/settings.js');
const { procSysctls } = await load('/exec/sysctl.js');
const logs = [];
const log = { info: (o, msg) => logs.push({ level: 'info', msg, ...o }), warn: (o, msg) => logs.push({ level: 'warn', msg, ...o }) };
await applyConntrackSettings(JSON.parse(spec), { sysctl: procSysctls, log, cpus: 2 });
process.stdout.write(JSON.stringify({ logs }) + '\\n');
`;

interface Log {
  level: string;
  msg: string;
  [k: string]: unknown;
}

function child<T>(ns: Netns, code: string, spec: unknown): T {
  const r = ns.exec(process.execPath, ['--input-type=module', '-e', code, DIST, JSON.stringify(spec)]);
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as T;
}

/** One `conntrack -I`: a flow from `src` to `dst`, answered by `replySrc` (the DNAT target, or `dst` itself). */
function insert(ns: Netns, proto: 'udp' | 'tcp' | 'sctp', src: string, sport: number, dst: string, dport: number, replySrc: string): void {
  const extra = proto === 'tcp' ? ['--state', 'ESTABLISHED'] : proto === 'sctp' ? ['--state', 'ESTABLISHED', '--orig-vtag', '1', '--reply-vtag', '2'] : [];
  const args = ['-I', '-p', proto, '-s', src, '-d', dst, '--sport', String(sport), '--dport', String(dport)];
  args.push('--reply-src', replySrc, '--reply-dst', src, '--reply-port-src', String(dport), '--reply-port-dst', String(sport), '--timeout', '300', ...extra);
  const r = ns.exec('conntrack', args);
  if (r.status !== 0) throw new Error(`conntrack ${args.join(' ')}: ${r.stderr}`);
}

/** The table, one `proto src:sport > dst:dport reply-src` per entry, sorted. */
function table(ns: Netns): string[] {
  const out: string[] = [];
  for (const family of ['ipv4', 'ipv6']) {
    const r = ns.exec('conntrack', ['-L', '-f', family]);
    if (r.status !== 0) throw new Error(`conntrack -L: ${r.stderr}`);
    for (const line of r.stdout.split('\n').filter((l) => l.trim() !== '')) {
      const words = line.trim().split(/\s+/);
      const v = (k: string) => words.filter((w) => w.startsWith(`${k}=`)).map((w) => w.slice(k.length + 1));
      out.push(`${words[0]} ${v('src')[0]}:${v('sport')[0]} > ${v('dst')[0]}:${v('dport')[0]} reply ${v('src')[1]}`);
    }
  }
  return out.sort();
}

type Flow = readonly ['udp' | 'tcp' | 'sctp', string, number, string, number, string];

const flow = (proto: string, src: string, sport: number, dst: string, dport: number, replySrc: string) => `${proto} ${src}:${sport} > ${dst}:${dport} reply ${replySrc}`;

function dnsPorts(endpoints: EndpointSpec[]): ServicePort[] {
  const svc = service('ns', 'dns', '10.96.0.10', [{ name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 }], { type: 'NodePort' });
  const slice = endpointSlice('ns', 'dns', 'dns-1', [{ name: 'dns', port: 53, protocol: 'UDP' }], endpoints);
  return buildNodeModel({ services: [svc], endpointSlices: [slice], nodes: [] }, 'node-a').model.families.IPv4.servicePorts;
}

const canRun = privilegedTestsCanRun('conntrack cleaners in a network namespace', ['ip', 'conntrack']);
const libraryLoads = canRun && spawnSync(process.execPath, ['-e', "require('koffi').load('libnetfilter_conntrack.so.3')"], { cwd: join(import.meta.dirname, '..') }).status === 0;
if (canRun && !libraryLoads) {
  if (process.env.KPT_REQUIRE_PRIVILEGED === '1') throw new Error('conntrack cleaners: libnetfilter_conntrack.so.3 (or koffi) does not load');
  console.warn('SKIP netlink cleaner in a network namespace: libnetfilter_conntrack.so.3 (or koffi) does not load');
}

const CLEANERS = [
  { name: 'netlink (libnetfilter_conntrack)', library: null, kind: 'netlink', runs: libraryLoads },
  { name: 'conntrack command (the fallback)', library: NO_LIBRARY, kind: 'conntrack', runs: true },
] as const;

describe.runIf(canRun)('conntrack cleaners against a real table', () => {
  let ns: Netns;
  beforeEach(() => {
    ns = new Netns('ct');
  });
  afterEach(() => ns?.remove());

  for (const c of CLEANERS) {
    const clean = (deletions: ConntrackDeletion[], restart = false) => {
      const r = child<{ kind: string; result: { deleted: number; failed: unknown[]; failures: string[] }; logs: Log[] }>(ns, CLEANER_CHILD, { library: c.library, deletions, restart });
      expect(r.kind).toBe(c.kind);
      // The fallback says why, once; the library says nothing alarming.
      expect(r.logs.filter((l) => l.level === 'warn')).toHaveLength(c.kind === 'conntrack' ? 1 : 0);
      expect(r.result.failures).toEqual([]);
      expect(r.result.failed).toEqual([]);
      return r.result;
    };

    it.runIf(c.runs)(`${c.name}: a removed endpoint: exactly its entries of that service go, every other stays`, () => {
      const [gone, kept] = ['10.244.2.7', '10.244.2.8'];
      const deletions = staleFlows(dnsPorts([{ ip: gone, nodeName: 'node-b' }, { ip: kept, nodeName: 'node-b' }]), dnsPorts([{ ip: kept, nodeName: 'node-b' }]));
      expect(deletions).toHaveLength(2);
      const stale: Flow[] = [
        ['udp', '10.244.1.5', 40000, '10.96.0.10', 53, gone],
        ['udp', '10.244.1.6', 40001, '10.96.0.10', 53, gone],
        ['udp', '10.99.0.200', 5000, '10.99.0.11', 30053, gone],
        ['udp', '127.0.0.1', 5001, '127.0.0.1', 30053, gone],
      ];
      const others: Flow[] = [
        ['udp', '10.244.1.7', 40002, '10.96.0.10', 53, kept],
        ['udp', '10.99.0.200', 5002, '10.99.0.11', 30053, kept],
        // The same pod behind another service, another port of this address, TCP.
        ['udp', '10.244.1.5', 40003, '10.96.0.20', 53, gone],
        ['udp', '10.244.1.5', 40004, '10.96.0.10', 5353, gone],
        ['tcp', '10.244.1.5', 40005, '10.96.0.10', 53, gone],
        // No DNAT at all (it met no rule): not this endpoint's.
        ['udp', '10.244.1.8', 40006, '10.96.0.10', 53, '10.96.0.10'],
      ];
      for (const e of [...stale, ...others]) insert(ns, ...e);
      expect(table(ns)).toHaveLength(stale.length + others.length);
      const r = clean(deletions);
      expect(r.deleted).toBe(stale.length);
      expect(table(ns)).toEqual(others.map((e) => flow(...e)).sort());
    });

    it.runIf(c.runs)(`${c.name}: a service port that gets endpoints: flows that met none go, flows to its endpoints stay (SCTP, IPv6)`, () => {
      const deletions: ConntrackDeletion[] = [
        { family: 'IPv4', protocol: 'SCTP', origDst: '10.96.0.30', origPortDst: 9000, dnatTo: null, keep: ['10.244.3.3'] },
        { family: 'IPv6', protocol: 'UDP', origDst: 'fd00:10:96::40', origPortDst: 53, dnatTo: null, keep: ['fd00:10:244:3::3'] },
        { family: 'IPv6', protocol: 'UDP', origPortDst: 30054, dnatTo: null, keep: ['fd00:10:244:3::3'] },
        { family: 'IPv6', protocol: 'UDP', origDst: 'fd00:10:96::10', origPortDst: 53, dnatTo: 'fd00:10:244:2::7' },
      ];
      const stale: Flow[] = [
        ['sctp', '10.244.1.5', 40010, '10.96.0.30', 9000, '10.96.0.30'],
        ['udp', 'fd00:10:244:1::5', 40011, 'fd00:10:96::40', 53, 'fd00:10:96::40'],
        ['udp', 'fd00:99::c8', 40012, 'fd00:99::11', 30054, 'fd00:99::11'],
        ['udp', 'fd00:10:244:1::5', 40013, 'fd00:10:96::10', 53, 'fd00:10:244:2::7'],
      ];
      const others: Flow[] = [
        ['sctp', '10.244.1.6', 40020, '10.96.0.30', 9000, '10.244.3.3'],
        ['udp', '10.244.1.6', 40021, '10.96.0.30', 9000, '10.96.0.30'],
        ['udp', 'fd00:10:244:1::6', 40022, 'fd00:10:96::40', 53, 'fd00:10:244:3::3'],
        ['udp', 'fd00:99::c8', 40023, 'fd00:99::11', 30054, 'fd00:10:244:3::3'],
        ['udp', 'fd00:10:244:1::6', 40024, 'fd00:10:96::10', 53, 'fd00:10:244:2::8'],
      ];
      for (const e of [...stale, ...others]) insert(ns, ...e);
      expect(table(ns)).toHaveLength(stale.length + others.length);
      // The netlink cleaner from a worker started again.
      const r = clean(deletions, true);
      expect(r.deleted).toBe(stale.length);
      expect(table(ns)).toEqual(others.map((e) => flow(...e)).sort());
    });
  }

  it('applies the conntrack settings a namespace owns, and skips with a reason what only the host may change', () => {
    // Loads nf_conntrack (through ctnetlink), should nothing have yet: its sysctls come with it.
    expect(ns.exec('conntrack', ['-C']).status).toBe(0);
    const sysctl = (where: Netns | null, name: string) =>
      (where ? where.exec('cat', [`/proc/sys/net/netfilter/${name}`]) : run('cat', [`/proc/sys/net/netfilter/${name}`])).stdout.trim();
    const hostMax = sysctl(null, 'nf_conntrack_max');
    const hostHashsize = readFileSync('/sys/module/nf_conntrack/parameters/hashsize', 'utf8').trim();
    const hostEstablished = sysctl(null, 'nf_conntrack_tcp_timeout_established');
    // A table size the host does not have, so that a write is needed (and refused here).
    const cfg: ProxyConfig = {
      ...DEFAULT_CONFIG,
      conntrack: {
        ...DEFAULT_CONNTRACK,
        maxPerCore: 1,
        min: Number(hostMax) + 4,
        tcpEstablishedTimeoutMs: 2 * 3_600_000,
        tcpCloseWaitTimeoutMs: 1_800_000,
        tcpBeLiberal: true,
        udpTimeoutMs: 45_000,
        udpStreamTimeoutMs: 150_000,
      },
    };
    const { logs } = child<{ logs: Log[] }>(ns, SETTINGS_CHILD, cfg);
    expect(sysctl(ns, 'nf_conntrack_tcp_timeout_established')).toBe('7200');
    expect(sysctl(ns, 'nf_conntrack_tcp_timeout_close_wait')).toBe('1800');
    expect(sysctl(ns, 'nf_conntrack_tcp_be_liberal')).toBe('1');
    expect(sysctl(ns, 'nf_conntrack_udp_timeout')).toBe('45');
    expect(sysctl(ns, 'nf_conntrack_udp_timeout_stream')).toBe('150');
    const warnings = logs.filter((l) => l.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ sysctl: 'net/netfilter/nf_conntrack_max', value: Number(hostMax) + 4 });
    expect(String(warnings[0]!.reason)).toMatch(/read-only/);
    // The host is as it was.
    expect(sysctl(null, 'nf_conntrack_max')).toBe(hostMax);
    expect(readFileSync('/sys/module/nf_conntrack/parameters/hashsize', 'utf8').trim()).toBe(hostHashsize);
    expect(sysctl(null, 'nf_conntrack_tcp_timeout_established')).toBe(hostEstablished);
  });
});
