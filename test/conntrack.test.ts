/**
 * Stale conntrack entries, without a kernel: which deletions a change makes (stale.ts),
 * how an entry is matched against them (match.ts), what the command cleaner runs, what the
 * netlink cleaner does with a scripted library (every kept entry freed, failures kept for
 * the next sync), and the sync that retries them. The same cleaners against a real table
 * are in conntrack-netns.test.ts.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../src/agent/metrics.js';
import { ClusterState } from '../src/agent/state.js';
import { ProxySync } from '../src/agent/sync.js';
import type { ConntrackCleanup } from '../src/conntrack/cleaner.js';
import { chooseConntrackCleaner } from '../src/conntrack/choose.js';
import { addressKey, DeletionIndex, ipv4Raw } from '../src/conntrack/match.js';
import { NetlinkCleaner } from '../src/conntrack/native.js';
import {
  ATTR_GRP_ORIG_ADDR_DST,
  ATTR_GRP_REPL_ADDR_SRC,
  ATTR_ORIG_L3PROTO,
  ATTR_ORIG_IPV4_DST,
  ATTR_ORIG_L4PROTO,
  ATTR_ORIG_PORT_DST,
  ATTR_REPL_IPV4_SRC,
  NFCT_CB_STOLEN,
  type NetfilterConntrack,
  type Pointer,
} from '../native/netfilter-conntrack.js';
import { staleFlows, type ConntrackDeletion } from '../src/conntrack/stale.js';
import { CommandCleaner, conntrackArgs, parseListLine } from '../src/conntrack/tool.js';
import type { CommandResult } from '../src/exec/command.js';
import { buildNodeModel } from '../src/model/build.js';
import type { ServicePort } from '../src/model/types.js';
import { parseIP } from '../src/net/ip.js';
import type { SyncResult, Syncer } from '../src/modes/mode.js';
import { endpointSlice, node, service, type EndpointSpec } from './support/objects.js';

type Proto = 'UDP' | 'TCP' | 'SCTP';

function ports(protocol: Proto, endpoints: EndpointSpec[], nodePort = 0, spec: Record<string, unknown> = {}): ServicePort[] {
  const svc = service('ns', 'dns', '10.96.0.10', [{ name: 'dns', port: 53, protocol, ...(nodePort ? { nodePort } : {}) }], { ...(nodePort ? { type: 'NodePort' } : {}), ...spec });
  const slice = endpointSlice('ns', 'dns', 'dns-1', [{ name: 'dns', port: 5353, protocol }], endpoints);
  return buildNodeModel({ services: [svc], endpointSlices: [slice], nodes: [] }, 'node-a').model.families.IPv4.servicePorts;
}

const a = { ip: '10.244.0.5', nodeName: 'node-a' };
const b = { ip: '10.244.1.5', nodeName: 'node-b' };
const silent = pino({ level: 'silent' });

describe('staleFlows', () => {
  it('deletes flows DNATed to an endpoint that is gone, on every address and port the service port answers', () => {
    expect(staleFlows(ports('UDP', [a, b], 30053, { externalIPs: ['192.0.2.1'] }), ports('UDP', [b], 30053, { externalIPs: ['192.0.2.1'] }))).toEqual([
      { family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' },
      { family: 'IPv4', protocol: 'UDP', origDst: '192.0.2.1', origPortDst: 53, dnatTo: '10.244.0.5' },
      { family: 'IPv4', protocol: 'UDP', origPortDst: 30053, dnatTo: '10.244.0.5' },
    ]);
  });

  it('deletes the flows that reached no endpoint once the service port has some, keeping those to its endpoints', () => {
    expect(staleFlows(ports('UDP', []), ports('UDP', [a, b], 30053))).toEqual([
      { family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: null, keep: ['10.244.0.5', '10.244.1.5'] },
      { family: 'IPv4', protocol: 'UDP', origPortDst: 30053, dnatTo: null, keep: ['10.244.0.5', '10.244.1.5'] },
    ]);
    // Not programmed before (a restart): the same, so that flows to its endpoints survive it.
    expect(staleFlows([], ports('UDP', [a]))).toEqual([{ family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: null, keep: ['10.244.0.5'] }]);
  });

  it('an endpoint turning ready: nothing when others served, the no-endpoint deletion when none did', () => {
    expect(staleFlows(ports('UDP', [a, { ...b, ready: false }]), ports('UDP', [a, b]))).toEqual([]);
    expect(staleFlows(ports('UDP', [{ ...a, ready: false }]), ports('UDP', [a]))).toEqual([
      { family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: null, keep: ['10.244.0.5'] },
    ]);
  });

  it('lets a terminating endpoint that still serves drain, and deletes its flows once it is gone', () => {
    const terminating = { ...a, ready: false, serving: true, terminating: true };
    expect(staleFlows(ports('UDP', [a, b]), ports('UDP', [terminating, b]))).toEqual([]);
    expect(staleFlows(ports('UDP', [terminating, b]), ports('UDP', [b]))).toEqual([{ family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' }]);
    // Unready and not serving: its flows go.
    expect(staleFlows(ports('UDP', [a, b]), ports('UDP', [{ ...a, ready: false }, b]))).toHaveLength(1);
  });

  it('deletes the flows of a deleted service', () => {
    expect(staleFlows(ports('UDP', [a]), [])).toEqual([{ family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' }]);
  });

  it('covers SCTP as UDP, leaves TCP alone, and unchanged ports too', () => {
    expect(staleFlows(ports('SCTP', [a, b]), ports('SCTP', [b]))).toEqual([{ family: 'IPv4', protocol: 'SCTP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' }]);
    expect(staleFlows(ports('TCP', [a]), ports('TCP', []))).toEqual([]);
    expect(staleFlows(ports('TCP', []), ports('TCP', [a]))).toEqual([]);
    expect(staleFlows(ports('UDP', [a, b]), ports('UDP', [a, b]))).toEqual([]);
  });
});

const hex = (ip: string) => Buffer.from(parseIP(ip)!.bytes).toString('hex');
const entry = (origDst: string, port: number, replySrc: string, protocol = 17) => ({ protocol, origDst: hex(origDst), origPortDst: port, replySrc: hex(replySrc) });

describe('DeletionIndex', () => {
  const deletions: ConntrackDeletion[] = [
    { family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' },
    { family: 'IPv4', protocol: 'UDP', origPortDst: 30053, dnatTo: '10.244.0.5' },
    { family: 'IPv4', protocol: 'SCTP', origDst: '10.96.0.30', origPortDst: 9000, dnatTo: null, keep: ['10.244.3.3'] },
  ];
  const index = new DeletionIndex('IPv4', deletions);

  it('matches by protocol, original destination and port, and reply source', () => {
    expect(index.match(entry('10.96.0.10', 53, '10.244.0.5'))).toEqual([0]);
    expect(index.match(entry('10.96.0.10', 53, '10.244.1.5'))).toEqual([]);
    expect(index.match(entry('10.96.0.10', 54, '10.244.0.5'))).toEqual([]);
    expect(index.match(entry('10.96.0.11', 53, '10.244.0.5'))).toEqual([]);
    expect(index.match(entry('10.96.0.10', 53, '10.244.0.5', 6))).toEqual([]);
    // A node port on any address.
    expect(index.match(entry('192.168.1.1', 30053, '10.244.0.5'))).toEqual([1]);
    expect(index.match(entry('192.168.1.1', 30053, '10.244.9.9'))).toEqual([]);
    // keep: everything but the current endpoints, un-DNATed entries first of all.
    expect(index.match(entry('10.96.0.30', 9000, '10.96.0.30', 132))).toEqual([2]);
    expect(index.match(entry('10.96.0.30', 9000, '10.244.3.3', 132))).toEqual([]);
    expect(index.match(entry('10.96.0.30', 9000, '10.96.0.30', 17))).toEqual([]);
  });

  it('asks for the port first, and compares addresses as bytes', () => {
    expect(index.wantsPort(53)).toBe(true);
    expect(index.wantsPort(54)).toBe(false);
    expect(index.forPort(17, 9000)).toBeUndefined();
    expect(index.forPort(132, 9000)).toBeDefined();
    expect(DeletionIndex.wantsDst(index.forPort(17, 53)!, hex('10.96.0.10'))).toBe(true);
    expect(DeletionIndex.wantsDst(index.forPort(17, 53)!, hex('10.96.0.11'))).toBe(false);
    expect(DeletionIndex.wantsDst(index.forPort(17, 30053)!, hex('10.96.0.11'))).toBe(true);
    // The netlink cleaner's IPv4 keys: the library's u32, bytes in network order.
    const raw = new DeletionIndex<number>('IPv4', deletions.slice(0, 1), ipv4Raw);
    expect(raw.match({ protocol: 17, origDst: Buffer.from([10, 96, 0, 10]).readUInt32LE(0), origPortDst: 53, replySrc: Buffer.from([10, 244, 0, 5]).readUInt32LE(0) })).toEqual([0]);
    const v6 = new DeletionIndex('IPv6', [{ family: 'IPv6', protocol: 'UDP', origDst: 'fd00:10:96:0:0::10', origPortDst: 53, dnatTo: 'FD00:10:244:2::7' }]);
    expect(v6.match(entry('fd00:10:96::10', 53, 'fd00:10:244:2::7'))).toEqual([0]);
    expect(addressKey('10.96.0.10')).toBe('0a60000a');
    expect(addressKey('nonsense')).toBeNull();
    expect(new DeletionIndex('IPv4', [{ family: 'IPv4', protocol: 'UDP', origDst: 'x', origPortDst: 53, dnatTo: null, keep: [] }]).invalid).toEqual([0]);
  });
});

describe('the conntrack command', () => {
  it('builds conntrack -D filters: protocol, original destination and port, reply source', () => {
    expect(conntrackArgs({ family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' })).toEqual([
      '-D', '-f', 'ipv4', '-p', 'udp', '--orig-dst', '10.96.0.10', '--orig-port-dst', '53', '--reply-src', '10.244.0.5',
    ]);
    expect(conntrackArgs({ family: 'IPv6', protocol: 'SCTP', origPortDst: 30053, dnatTo: 'fd00::5' })).toEqual([
      '-D', '-f', 'ipv6', '-p', 'sctp', '--orig-port-dst', '30053', '--reply-src', 'fd00::5',
    ]);
  });

  it('reads conntrack -L lines', () => {
    expect(parseListLine('udp      17 99 src=10.244.1.5 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] src=10.244.2.7 dst=10.244.1.5 sport=53 dport=40000 mark=0 use=1')).toEqual({
      ...entry('10.96.0.10', 53, '10.244.2.7'),
      replySrcText: '10.244.2.7',
    });
    expect(parseListLine('sctp     132 99 ESTABLISHED src=fd00::1 dst=fd00::10 sport=1 dport=9000 src=fd00::7 dst=fd00::1 sport=9000 dport=1 mark=0 use=1')).toMatchObject({
      protocol: 132,
      origPortDst: 9000,
      replySrcText: 'fd00::7',
    });
    expect(parseListLine('conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.')).toBeNull();
  });

  /** A runner that answers as `answer` says, and records what ran. */
  function fakeRunner(answer: (args: string[]) => Partial<CommandResult>) {
    const ran: string[][] = [];
    const run = async (_cmd: string, args: string[]) => (ran.push(args), { status: 0, stdout: '', stderr: '', ...answer(args) });
    return { ran, run };
  }

  it('deletes an endpoint with one filter; "0 flow entries" is success', async () => {
    const { ran, run } = fakeRunner(() => ({ status: 1, stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n' }));
    const d: ConntrackDeletion = { family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' };
    expect(await new CommandCleaner(run).delete([d])).toEqual({ deleted: 0, failed: [], failures: [] });
    expect(ran).toEqual([conntrackArgs(d)]);
  });

  it('a keep deletion lists the table once and deletes each stale reply source by its own filter', async () => {
    const list = [
      'udp 17 29 src=10.244.1.5 dst=10.96.0.40 sport=4000 dport=53 [UNREPLIED] src=10.96.0.40 dst=10.244.1.5 sport=53 dport=4000 mark=0 use=1',
      'udp 17 29 src=10.244.1.6 dst=10.96.0.40 sport=4001 dport=53 src=10.244.3.3 dst=10.244.1.6 sport=53 dport=4001 mark=0 use=1',
      'udp 17 29 src=10.244.1.7 dst=10.96.0.40 sport=4002 dport=53 src=10.244.4.4 dst=10.244.1.7 sport=53 dport=4002 mark=0 use=1',
      'udp 17 29 src=10.244.1.8 dst=10.96.0.40 sport=4003 dport=53 [UNREPLIED] src=10.96.0.40 dst=10.244.1.8 sport=53 dport=4003 mark=0 use=1',
    ].join('\n');
    const { ran, run } = fakeRunner((args) =>
      args[0] === '-L' ? { stdout: list } : { stderr: `conntrack v1.4.7 (conntrack-tools): ${args.includes('10.96.0.40') && args.at(-1) === '10.96.0.40' ? 2 : 1} flow entries have been deleted.\n` },
    );
    const d: ConntrackDeletion = { family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.40', origPortDst: 53, dnatTo: null, keep: ['10.244.3.3'] };
    expect(await new CommandCleaner(run).delete([d])).toEqual({ deleted: 3, failed: [], failures: [] });
    expect(ran).toEqual([['-L', '-f', 'ipv4', '-p', 'udp'], conntrackArgs(d, '10.96.0.40'), conntrackArgs(d, '10.244.4.4')]);
  });

  it('returns what failed, to be tried again, with why', async () => {
    const { run } = fakeRunner(() => ({ status: 1, stderr: 'conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n' }));
    const d: ConntrackDeletion = { family: 'IPv4', protocol: 'UDP', origPortDst: 30053, dnatTo: '10.244.0.5' };
    const r = await new CommandCleaner(run).delete([d]);
    expect(r.failed).toEqual([d]);
    expect(r.failures).toEqual([`conntrack ${conntrackArgs(d).join(' ')}: conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted`]);
    const missing = await new CommandCleaner(async () => {
      throw Object.assign(new Error('spawn conntrack ENOENT'), { code: 'ENOENT' });
    }).delete([d]);
    expect(missing.failed).toEqual([d]);
    expect(missing.failures[0]).toContain('ENOENT');
  });
});

interface FakeEntry {
  proto: number;
  l3: number;
  dst: string;
  port: number;
  replySrc: string;
}

/** libnetfilter_conntrack as a script: a table of entries, and a record of what was opened, kept and freed. */
function fakeLibrary(table: FakeEntry[], opts: { destroyErrno?: (e: FakeEntry) => number; dumpFails?: boolean } = {}) {
  const state = { open: 0, kept: new Set<FakeEntry>(), freed: 0, destroyed: [] as FakeEntry[], errno: 0 };
  const ct = (p: Pointer) => p as unknown as FakeEntry;
  const nf: NetfilterConntrack = {
    library: 'fake',
    open: () => (state.open++, {}),
    close: () => void state.open--,
    dump(_h, family, onEntry) {
      for (const e of table) {
        if (e.l3 !== family) continue;
        if (onEntry(e as unknown as Pointer) === NFCT_CB_STOLEN) state.kept.add(e);
      }
      if (opts.dumpFails) state.errno = 105; // ENOBUFS
      return opts.dumpFails ? -1 : 0;
    },
    destroyEntry(_h, p) {
      const errno = opts.destroyErrno?.(ct(p)) ?? 0;
      state.errno = errno;
      if (errno === 0) state.destroyed.push(ct(p));
      return errno === 0 ? 0 : -1;
    },
    free(p) {
      if (!state.kept.delete(ct(p))) throw new Error('freed an entry it did not own');
      state.freed++;
    },
    getU8: (p, attr) => (attr === ATTR_ORIG_L4PROTO ? ct(p).proto : attr === ATTR_ORIG_L3PROTO ? ct(p).l3 : 0),
    getU16: (p, attr) => (attr === ATTR_ORIG_PORT_DST ? ((ct(p).port & 0xff) << 8) | (ct(p).port >> 8) : 0),
    getU32: (p, attr) => (attr === ATTR_ORIG_IPV4_DST ? ipv4Raw(ct(p).dst) : attr === ATTR_REPL_IPV4_SRC ? ipv4Raw(ct(p).replySrc) : null) ?? 0,
    getGroup(p, group, out) {
      const ip = group === ATTR_GRP_ORIG_ADDR_DST ? ct(p).dst : group === ATTR_GRP_REPL_ADDR_SRC ? ct(p).replySrc : null;
      if (ip === null) return -1;
      out.fill(0).set(parseIP(ip)!.bytes);
      return 0;
    },
    errno: () => state.errno,
  };
  return { nf, state };
}

describe('NetlinkCleaner (scripted library)', () => {
  const v4 = (dst: string, port: number, replySrc: string, proto = 17): FakeEntry => ({ proto, l3: 2, dst, port, replySrc });
  const table = [
    v4('10.96.0.10', 53, '10.244.0.5'),
    v4('10.96.0.10', 53, '10.244.1.5'),
    v4('10.96.0.10', 53, '10.244.0.5', 6),
    v4('10.99.0.11', 30053, '10.244.0.5'),
    v4('10.96.0.20', 53, '10.244.0.5'),
    { proto: 17, l3: 10, dst: 'fd00::10', port: 53, replySrc: 'fd00::5' },
  ];
  const gone: ConntrackDeletion[] = [
    { family: 'IPv4', protocol: 'UDP', origDst: '10.96.0.10', origPortDst: 53, dnatTo: '10.244.0.5' },
    { family: 'IPv4', protocol: 'UDP', origPortDst: 30053, dnatTo: '10.244.0.5' },
    { family: 'IPv6', protocol: 'UDP', origDst: 'fd00::10', origPortDst: 53, dnatTo: 'fd00::5' },
  ];

  it('dumps each family once, destroys exactly the matching entries, and frees every one it kept', async () => {
    const { nf, state } = fakeLibrary(table);
    const cleaner = new NetlinkCleaner(nf);
    expect(await cleaner.delete(gone)).toEqual({ deleted: 3, failed: [], failures: [] });
    expect(state.destroyed).toEqual([table[0], table[3], table[5]]);
    expect(cleaner.last).toEqual([
      { family: 'IPv4', entries: 5, matched: 2, deleted: 2 },
      { family: 'IPv6', entries: 1, matched: 1, deleted: 1 },
    ]);
    expect(state.kept.size).toBe(0);
    expect(state.freed).toBe(3);
    expect(state.open).toBe(0);
  });

  it('an entry gone meanwhile is no failure; another error fails the deletions it matched', async () => {
    const { nf, state } = fakeLibrary(table, { destroyErrno: (e) => (e.port === 30053 ? 1 /* EPERM */ : e.l3 === 10 ? 2 /* ENOENT */ : 0) });
    const r = await new NetlinkCleaner(nf).delete(gone);
    expect(r.deleted).toBe(1);
    expect(r.failed).toEqual([gone[1]]);
    expect(r.failures).toEqual(['conntrack (netlink, IPv4): 1 entry not destroyed: EPERM']);
    expect(state.kept.size).toBe(0);
    expect(state.open).toBe(0);
  });

  it('a dump cut short fails every deletion of its family (tried again), but destroys what it found', async () => {
    const { nf, state } = fakeLibrary(table, { dumpFails: true });
    const r = await new NetlinkCleaner(nf).delete(gone.slice(0, 2));
    expect(r.deleted).toBe(2);
    expect(r.failed).toEqual(gone.slice(0, 2));
    expect(r.failures).toEqual(['conntrack (netlink, IPv4): dump: ENOBUFS']);
    expect(state.freed).toBe(2);
  });

  it('a library that cannot open a handle fails everything, and throws nothing', async () => {
    const { nf } = fakeLibrary(table);
    const r = await new NetlinkCleaner({ ...nf, open: () => null, errno: () => 93 /* EPROTONOSUPPORT */ }).delete(gone);
    expect(r.failed).toEqual(gone);
    expect(r.failures).toEqual(['conntrack (netlink, IPv4): nfct_open: EPROTONOSUPPORT', 'conntrack (netlink, IPv6): nfct_open: EPROTONOSUPPORT']);
  });
});

describe('chooseConntrackCleaner', () => {
  function recordingLog() {
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
    return { log, lines };
  }

  it('falls back to the conntrack command, with one warning, when the library does not load', async () => {
    const { log, lines } = recordingLog();
    const cleaner = await chooseConntrackCleaner(async () => ({ status: 0, stdout: '', stderr: '' }), log, { library: '/nonexistent/libnetfilter_conntrack.so.3', worker: false });
    expect(cleaner.kind).toBe('conntrack');
    expect(lines.filter((l) => l.level === 40)).toHaveLength(1);
    expect(lines[0]!.msg).toMatch(/conntrack command/);
  });

  it('takes the library when it loads', async () => {
    const { log, lines } = recordingLog();
    // On this thread: from the TypeScript sources there is no worker script (the netns tests run it).
    const cleaner = await chooseConntrackCleaner(async () => ({ status: 0, stdout: '', stderr: '' }), log, { worker: false });
    // Where the library is not installed, that is the fallback above: say so, not fail.
    if (cleaner.kind === 'conntrack') return void console.warn('SKIP netlink cleaner choice: libnetfilter_conntrack.so.3 does not load here');
    expect(cleaner.kind).toBe('netlink');
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
  });
});

/** A mode's syncer that always succeeds. */
class OkSyncer implements Syncer {
  readonly families = ['IPv4' as const];
  async sync(): Promise<SyncResult> {
    return { ok: true, full: false, reason: null };
  }
  requireFullSync(): void {}
  async damage(): Promise<string | null> {
    return null;
  }
}

describe('ProxySync and conntrack', () => {
  const dns = (ips: string[]) => endpointSlice('kube-system', 'dns', 'dns-1', [{ name: 'dns', port: 53, protocol: 'UDP' }], ips.map((ip) => ({ ip, nodeName: 'node-b' })));

  function setup(answers: ((d: ConntrackDeletion[]) => ConntrackCleanup)[]) {
    const state = new ClusterState('node-a', { problem: () => {} });
    const calls: ConntrackDeletion[][] = [];
    const metrics = createMetrics();
    const sync = new ProxySync(state, new OkSyncer(), {
      deleteFlows: async (d) => (calls.push(d), (answers.shift() ?? ((): ConntrackCleanup => ({ deleted: 0, failed: [], failures: [] })))(d)),
      log: silent,
      metrics,
    });
    state.upsertNode(node('node-a', '192.168.0.10'));
    state.upsertService(service('kube-system', 'dns', '10.96.0.10', [{ name: 'dns', port: 53, protocol: 'UDP' }]));
    state.upsertSlice(dns(['10.244.1.5', '10.244.1.6']));
    return { state, sync, calls, metrics };
  }

  it('tries a failed deletion again at the next sync, and counts deleted entries and failures', async () => {
    const removal = (d: ConntrackDeletion[]) => d.filter((x) => x.dnatTo === '10.244.1.6');
    const { state, sync, calls, metrics } = setup([
      () => ({ deleted: 0, failed: [], failures: [] }),
      (d) => ({ deleted: 2, failed: removal(d), failures: ['conntrack: EPERM'] }),
      () => ({ deleted: 5, failed: [], failures: [] }),
    ]);
    expect(await sync.sync()).toBe(true);
    state.upsertSlice(dns(['10.244.1.5']));
    expect(await sync.sync()).toBe(true);
    expect(removal(calls[1]!)).toHaveLength(1);
    // Nothing changed since: only the failed deletion, again.
    expect(await sync.sync()).toBe(true);
    expect(calls[2]).toEqual(removal(calls[1]!));
    // Done now: nothing left to try.
    expect(await sync.sync()).toBe(true);
    expect(calls).toHaveLength(3);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^kubeproxy_conntrack_reconciler_deleted_entries_total\{ip_family="IPv4"\} 7$/m);
    expect(text).toMatch(/^kubeproxy_ts_conntrack_deletion_failures_total\{ip_family="IPv4"\} 1$/m);
    expect(text).toMatch(/^kubeproxy_conntrack_reconciler_sync_duration_seconds_count\{ip_family="IPv4"\} 3$/m);
  });

  it('a cleaner that throws fails its deletions, which are tried again; the sync still succeeds', async () => {
    const { state, sync, calls } = setup([]);
    expect(await sync.sync()).toBe(true);
    state.upsertSlice(dns(['10.244.1.5']));
    const throwing = new ProxySync(state, new OkSyncer(), {
      deleteFlows: async (d) => {
        calls.push(d);
        if (calls.length === 2) throw new Error('boom');
        return { deleted: 0, failed: [], failures: [] };
      },
      log: silent,
      metrics: createMetrics(),
    });
    expect(await throwing.sync()).toBe(true);
    expect(await throwing.sync()).toBe(true);
    expect(calls[2]).toEqual(calls[1]);
  });

  it('a failed deletion for an endpoint that is back is not tried again: its flows are live', async () => {
    const removal = (d: ConntrackDeletion[]) => d.filter((x) => x.dnatTo === '10.244.1.6');
    const { state, sync, calls } = setup([() => ({ deleted: 0, failed: [], failures: [] }), (d) => ({ deleted: 0, failed: removal(d), failures: ['EPERM'] })]);
    expect(await sync.sync()).toBe(true);
    state.upsertSlice(dns(['10.244.1.5']));
    expect(await sync.sync()).toBe(true);
    expect(removal(calls[1]!)).toHaveLength(1);
    state.upsertSlice(dns(['10.244.1.5', '10.244.1.6']));
    expect(await sync.sync()).toBe(true);
    expect(calls.slice(2).flat().filter((d) => d.dnatTo === '10.244.1.6')).toEqual([]);
  });

  it('a deletion that keeps failing is given up after 5 attempts', async () => {
    const failing = (d: ConntrackDeletion[]): ConntrackCleanup => ({ deleted: 0, failed: d, failures: ['no conntrack'] });
    const { state, sync, calls } = setup([() => ({ deleted: 0, failed: [], failures: [] }), ...Array(20).fill(failing)]);
    expect(await sync.sync()).toBe(true);
    state.upsertSlice(dns(['10.244.1.5']));
    for (let i = 0; i < 10; i++) expect(await sync.sync()).toBe(true);
    // The first sync had nothing to delete; then 5 attempts, then none.
    expect(calls).toHaveLength(6);
  });
});
