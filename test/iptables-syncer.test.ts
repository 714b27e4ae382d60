/**
 * The iptables syncer and --cleanup against the in-memory iptables tools (FakeIptables):
 * the real syncer, applier, planner and renderer, driven the way the agent drives them,
 * checked on the tables the fake ends with and on the commands it was given. No root.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { syntheticCluster } from '../bench/synthetic.js';
import { ClusterState } from '../src/agent/state.js';
import type { IPFamily } from '../src/model/types.js';
import type { SyncResult } from '../src/modes/mode.js';
import { IptablesApplier } from '../src/modes/iptables/applier.js';
import { isServiceChain } from '../src/modes/iptables/chains.js';
import { FakeIptables, type FakeCall } from '../src/modes/iptables/fake.js';
import { iptablesMode } from '../src/modes/iptables/mode.js';
import { DEFAULT_IPTABLES_OPTIONS } from '../src/modes/iptables/render.js';
import { IptablesSyncer, type SyncerOptions } from '../src/modes/iptables/syncer.js';
import { binaries, type IptablesVariant } from '../src/modes/iptables/variant.js';
import { endpointSlice, node, service } from './support/objects.js';

const log = pino({ level: 'silent' });
const NODE = 'node-a';
const FAMILIES: IPFamily[] = ['IPv4', 'IPv6'];

/** Chains every service port writes rules into: their order differs between partial and full syncs. */
const SHARED = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-EXTERNAL-SERVICES', 'KUBE-PROXY-FIREWALL'];
const SERVICE_CHAIN = /KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z0-9]+/g;

type Options = {
  variant?: IptablesVariant;
  render?: Partial<SyncerOptions['render']>;
} & Partial<Omit<SyncerOptions, 'render'>>;

type Op = { kind: 'apply' | 'remove'; objects: unknown[] };

/**
 * One node: the fake tools, the agent's cluster state, one applier per family on the
 * variant's tools (`iptables-nft-restore`, ...) and the syncer under test. Every change
 * is kept so that `fullSyncedCopy` can build the same final state from scratch.
 */
class Harness {
  readonly fake: FakeIptables;
  readonly state = new ClusterState(NODE, {
    // A fixture the validator refuses is a broken test, not a case to sync.
    problem: (p) => {
      throw new Error(`invalid test object: ${JSON.stringify(p)}`);
    },
  });
  readonly syncer: IptablesSyncer;
  /** The commands the last `sync()` ran. */
  lastCalls: FakeCall[] = [];
  private readonly ops: Op[] = [];

  constructor(readonly opts: Options = {}) {
    const variant = opts.variant ?? 'nf_tables';
    this.fake = new FakeIptables({ variant });
    const appliers = new Map(FAMILIES.map((f) => [f, new IptablesApplier(f, this.fake.run, binaries(f, variant))] as const));
    this.syncer = new IptablesSyncer(
      appliers,
      {
        render: { ...DEFAULT_IPTABLES_OPTIONS, clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/48'], ...opts.render },
        maxRestoreLines: opts.maxRestoreLines ?? Infinity,
        fullSyncIntervalMs: opts.fullSyncIntervalMs ?? 60 * 60 * 1000,
        ...(opts.now ? { now: opts.now } : {}),
      },
      log,
    );
  }

  /** What the informers would deliver: upserts, by kind. */
  apply(...objects: unknown[]): this {
    this.ops.push({ kind: 'apply', objects });
    for (const o of objects) {
      const kind = (o as { kind?: string }).kind;
      if (kind === 'Service') this.state.upsertService(o);
      else if (kind === 'EndpointSlice') this.state.upsertSlice(o);
      else if (kind === 'Node') this.state.upsertNode(o);
      else throw new Error(`unknown kind ${kind}`);
    }
    return this;
  }

  remove(...objects: unknown[]): this {
    this.ops.push({ kind: 'remove', objects });
    for (const o of objects) {
      const kind = (o as { kind?: string }).kind;
      if (kind === 'Service') this.state.deleteService(o);
      else if (kind === 'EndpointSlice') this.state.deleteSlice(o);
      else throw new Error(`cannot remove kind ${kind}`);
    }
    return this;
  }

  /** One sync, as the agent's loop runs it. */
  async sync(): Promise<SyncResult> {
    const first = this.fake.calls.length;
    const changes = this.state.take();
    const r = await this.syncer.sync({ model: this.state, services: changes.services, all: changes.all });
    this.lastCalls = this.fake.calls.slice(first);
    return r;
  }

  /** Another node, same options, that got the final state of this one in a single (first, so full) sync. */
  async fullSyncedCopy(opts: Options = this.opts): Promise<Harness> {
    const copy = new Harness(opts);
    for (const op of this.ops) {
      if (op.kind === 'apply') copy.apply(...op.objects);
      else copy.remove(...op.objects);
    }
    expect(await copy.sync()).toEqual({ ok: true, full: true, reason: 'required' });
    return copy;
  }
}

/** A restore that only ensures the canary chains and the jump rules from the built-in chains. */
const ENSURE_LINE = /^(\*\w+|COMMIT|:KUBE-[A-Z-]+ - \[0:0\]|-I (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) 1 .*)?$/;
const ensuresJumps = (c: FakeCall) => (c.input ?? '-').split('\n').every((l) => ENSURE_LINE.test(l));

/** The restores among `calls` (all families, or one tool) that write the ruleset. */
function restores(calls: FakeCall[], cmd?: string): FakeCall[] {
  return calls.filter((c) => (cmd === undefined ? c.cmd.endsWith('-restore') : c.cmd === cmd) && !ensuresJumps(c));
}

/**
 * The fake's tables as `iptables-save` prints them: table -> chain -> rules. With
 * `sortShared`, the rules of the shared chains are sorted: a partial sync inserts at the
 * top of KUBE-SERVICES what a full sync writes in model order, and the order among
 * service ports does not matter there (their matches are disjoint).
 */
function tables(fake: FakeIptables, family: IPFamily, sortShared: boolean): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let table: Record<string, string[]> = {};
  for (const line of fake.save(family).split('\n')) {
    if (line.startsWith('*')) out[line.slice(1)] = table = {};
    else if (line.startsWith(':')) table[line.slice(1, line.indexOf(' '))] = [];
    else if (line.startsWith('-A ')) {
      const m = /^-A (\S+) ?(.*)$/.exec(line)!;
      table[m[1]!]!.push(m[2]!);
    }
  }
  if (sortShared) for (const t of Object.values(out)) for (const c of SHARED) t[c]?.sort();
  return out;
}

/** Checks that `h` ended in the tables a fresh node full-synced to the same state has. */
async function expectSameAsFullSync(h: Harness): Promise<void> {
  const want = await h.fullSyncedCopy();
  for (const f of FAMILIES) expect(tables(h.fake, f, true), `${f} tables`).toEqual(tables(want.fake, f, true));
  // Sorting hid the order of KUBE-SERVICES; its one constraint is that the node-ports rule stays last.
  expect(h.fake.rules('IPv4', 'nat', 'KUBE-SERVICES')!.at(-1)).toMatch(/this must be the last rule in this chain.* -j KUBE-NODEPORTS$/);
}

const target = (rule: string) => /-j (\S+)/.exec(rule)?.[1];

/**
 * The nat chains a service port owns, found in the fake's tables: from the shared rules
 * that name it, every service chain reachable by jumps (SVC/SVL/EXT/FW and the SEPs).
 */
function ownedChains(fake: FakeIptables, family: IPFamily, portName: string): Set<string> {
  const names = new RegExp(`--comment "?${portName.replace(/[/.]/g, '\\$&')}[ "]`);
  const todo = ['KUBE-SERVICES', 'KUBE-NODEPORTS']
    .flatMap((c) => fake.rules(family, 'nat', c) ?? [])
    .filter((r) => names.test(r))
    .map(target);
  const seen = new Set<string>();
  while (todo.length > 0) {
    const c = todo.pop();
    if (c === undefined || seen.has(c) || !isServiceChain(c)) continue;
    seen.add(c);
    todo.push(...(fake.rules(family, 'nat', c) ?? []).map(target));
  }
  return seen;
}

// A small cluster: two single-stack services with endpoints (one a NodePort), a dual-stack
// one with endpoints in both families, and one without endpoints (filtered, not DNATed).
const http = [{ name: 'http', port: 8080 }];
const svcA = service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]);
const sliceA = endpointSlice('ns', 'a', 'a-1', http, [
  { ip: '10.244.0.5', nodeName: NODE },
  { ip: '10.244.1.5', nodeName: 'node-b' },
]);
const svcB = service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80, nodePort: 30080 }], { type: 'NodePort' });
const sliceB = endpointSlice('ns', 'b', 'b-1', http, [{ ip: '10.244.0.6', nodeName: NODE }]);
const svcC = service('ns', 'c', '10.96.0.3', [{ name: 'http', port: 80 }], {
  clusterIPs: ['10.96.0.3', 'fd00:96::3'],
  ipFamilies: ['IPv4', 'IPv6'],
  ipFamilyPolicy: 'RequireDualStack',
});
const sliceC4 = endpointSlice('ns', 'c', 'c-4', http, [{ ip: '10.244.0.7', nodeName: NODE }]);
const sliceC6 = { ...endpointSlice('ns', 'c', 'c-6', http, [{ ip: 'fd00:10:244::7', nodeName: NODE }]), addressType: 'IPv6' };
const svcD = service('ns', 'd', '10.96.0.4', [{ name: 'http', port: 80 }]);
const CLUSTER = [node(NODE, '192.168.0.10'), svcA, sliceA, svcB, sliceB, svcC, sliceC4, sliceC6, svcD];

async function synced(opts: Options = {}): Promise<Harness> {
  const h = new Harness(opts).apply(...CLUSTER);
  expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'required' });
  return h;
}

describe('IptablesSyncer against the fake iptables tools', () => {
  it('first sync is full and writes the service, jump and canary chains in both families', async () => {
    const h = new Harness().apply(...CLUSTER);
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'required' });
    expect(h.syncer.families).toEqual(['IPv4', 'IPv6']);
    // One restore per family, through the nf_tables variant's tools.
    expect(restores(h.lastCalls).map((c) => c.cmd)).toEqual(['iptables-nft-restore', 'ip6tables-nft-restore']);

    const { fake } = h;
    const services = fake.rules('IPv4', 'nat', 'KUBE-SERVICES')!;
    for (const [name, ip] of [
      ['ns/a:http', '10.96.0.1'],
      ['ns/b:http', '10.96.0.2'],
      ['ns/c:http', '10.96.0.3'],
    ]) {
      expect(services.filter((r) => r.includes(`"${name} cluster IP"`) && r.includes(`-d ${ip} --dport 80 -j KUBE-SVC-`)), name).toHaveLength(1);
    }
    // Three services with endpoints, then the node-ports rule; d has none: rejected in filter instead.
    expect(services).toHaveLength(4);
    expect(services[3]).toMatch(/-j KUBE-NODEPORTS$/);
    expect(fake.rules('IPv4', 'filter', 'KUBE-SERVICES')).toEqual([
      '-m comment --comment "ns/d:http has no endpoints" -m tcp -p tcp -d 10.96.0.4 --dport 80 -j REJECT',
    ]);
    expect(fake.rules('IPv4', 'nat', 'KUBE-NODEPORTS')).toEqual([expect.stringMatching(/--dport 30080 -j KUBE-EXT-/)]);

    // Each service's chains: a's SVC and its two SEPs; b's EXT, SVC and SEP.
    const a = [...ownedChains(fake, 'IPv4', 'ns/a:http')];
    expect(a.filter((c) => c.startsWith('KUBE-SVC-'))).toHaveLength(1);
    expect(a.filter((c) => c.startsWith('KUBE-SEP-'))).toHaveLength(2);
    expect([...ownedChains(fake, 'IPv4', 'ns/b:http')].map((c) => c.slice(0, 9)).sort()).toEqual(['KUBE-EXT-', 'KUBE-SEP-', 'KUBE-SVC-']);
    const sep = a.find((c) => c.startsWith('KUBE-SEP-'))!;
    expect(fake.rules('IPv4', 'nat', sep)!.at(-1)).toMatch(/-j DNAT --to-destination 10\.244\.[01]\.5:8080$/);
    for (const c of ownedChains(fake, 'IPv4', 'ns/c:http')) expect(fake.chains('IPv4', 'nat')).toContain(c);

    // Jump rules from the built-in chains. Which ones, not their order: that follows upstream's
    // and is another test's concern (work on it was in progress when this was written).
    const portals = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES';
    expect(fake.rules('IPv4', 'nat', 'PREROUTING')).toEqual([portals]);
    expect(fake.rules('IPv4', 'nat', 'OUTPUT')).toEqual([portals]);
    expect(fake.rules('IPv4', 'nat', 'POSTROUTING')).toEqual(['-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']);
    expect(fake.rules('IPv4', 'filter', 'INPUT')!.map(target).sort()).toEqual(['KUBE-EXTERNAL-SERVICES', 'KUBE-FIREWALL', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL']);
    // localhostNodePorts (the default) guards 127.0.0.0/8 with KUBE-FIREWALL; a bare jump.
    expect(fake.rules('IPv4', 'filter', 'OUTPUT')).toContain('-j KUBE-FIREWALL');

    for (const table of ['mangle', 'nat', 'filter']) {
      expect(fake.chains('IPv4', table), table).toContain('KUBE-PROXY-CANARY');
      expect(fake.chains('IPv6', table), table).toContain('KUBE-PROXY-CANARY');
    }

    // IPv6: only the dual-stack service, with its IPv6 cluster IP and endpoint; no KUBE-FIREWALL.
    const six = fake.rules('IPv6', 'nat', 'KUBE-SERVICES')!;
    expect(six).toHaveLength(2);
    expect(six[0]).toMatch(/"ns\/c:http cluster IP" -m tcp -p tcp -d fd00:96::3 --dport 80 -j KUBE-SVC-/);
    const sixChains = ownedChains(fake, 'IPv6', 'ns/c:http');
    expect(sixChains.size).toBe(2);
    const sixSep = [...sixChains].find((c) => c.startsWith('KUBE-SEP-'))!;
    expect(fake.rules('IPv6', 'nat', sixSep)!.at(-1)).toMatch(/-j DNAT --to-destination \[fd00:10:244::7\]:8080$/);
    expect(fake.rules('IPv6', 'nat', 'PREROUTING')).toEqual([portals]);
    expect(fake.chains('IPv6', 'filter')).not.toContain('KUBE-FIREWALL');
    expect(fake.rules('IPv6', 'filter', 'INPUT')!.map(target).sort()).toEqual(['KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL']);
    expect(await h.syncer.damage()).toBeNull();
  });

  it('an endpoint change is one partial restore of that service, ending as a full sync would', async () => {
    const h = await synced();
    const before = ownedChains(h.fake, 'IPv4', 'ns/b:http');
    const others = new Set([...ownedChains(h.fake, 'IPv4', 'ns/a:http'), ...ownedChains(h.fake, 'IPv4', 'ns/c:http')]);

    // b's endpoint moves: one SEP chain goes, another comes.
    h.apply(endpointSlice('ns', 'b', 'b-1', http, [{ ip: '10.244.0.9', nodeName: NODE }]));
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });

    // One restore, IPv4 only (b has no IPv6 ports), and nothing but restores: no save, no jump checks.
    expect(h.lastCalls.map((c) => c.cmd)).toEqual(['iptables-nft-restore']);
    const input = h.lastCalls[0]!.input!;
    const after = ownedChains(h.fake, 'IPv4', 'ns/b:http');
    const mentioned = new Set(input.match(SERVICE_CHAIN));
    expect(mentioned.size).toBeGreaterThan(0);
    for (const c of mentioned) expect(before.has(c) || after.has(c), `${c} is b's`).toBe(true);
    for (const c of others) expect(input).not.toContain(c);
    // b's shared rules did not change: KUBE-SERVICES and filter are left alone.
    expect(input).not.toContain('KUBE-SERVICES');
    expect(input).not.toContain('*filter');

    // The old endpoint's chain is deleted, the new one is there.
    const gone = [...before].filter((c) => !after.has(c));
    expect(gone).toHaveLength(1);
    expect(h.fake.chains('IPv4', 'nat')).not.toContain(gone[0]);
    expect(input).toContain(`-X ${gone[0]}`);
    await expectSameAsFullSync(h);
  });

  it('partial syncs in a row build on what the one before wrote', async () => {
    const h = await synced();
    // b's endpoint moves, then b gains a rule in KUBE-SERVICES (an external IP), then b goes:
    // each sync must undo what the one before wrote, not what the first sync did.
    h.apply(endpointSlice('ns', 'b', 'b-1', http, [{ ip: '10.244.0.9', nodeName: NODE }]));
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    const moved = ownedChains(h.fake, 'IPv4', 'ns/b:http');
    h.apply(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80, nodePort: 30080 }], { type: 'NodePort', externalIPs: ['192.0.2.2'] }));
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    expect(h.fake.rules('IPv4', 'nat', 'KUBE-SERVICES')!.join('\n')).toContain('ns/b:http external IP');
    h.remove(svcB, sliceB);
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    for (const c of moved) expect(h.fake.chains('IPv4', 'nat')).not.toContain(c);
    expect(h.fake.rules('IPv4', 'nat', 'KUBE-SERVICES')!.join('\n')).not.toContain('ns/b:http');
    await expectSameAsFullSync(h);
  });

  it('a service that gains endpoints is inserted at the top of KUBE-SERVICES, below nothing that must stay last', async () => {
    const h = await synced();
    h.apply(endpointSlice('ns', 'd', 'd-1', http, [{ ip: '10.244.0.8', nodeName: NODE }]));
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    expect(restores(h.lastCalls)).toHaveLength(1);
    // The REJECT goes from filter, the DNAT path appears in nat.
    expect(h.fake.rules('IPv4', 'filter', 'KUBE-SERVICES')).toEqual([]);
    expect(h.fake.rules('IPv4', 'nat', 'KUBE-SERVICES')![0]).toContain('"ns/d:http cluster IP"');
    await expectSameAsFullSync(h);
  });

  it('deleting a service removes its chains in a partial sync', async () => {
    const h = await synced();
    const a = ownedChains(h.fake, 'IPv4', 'ns/a:http');
    expect(a.size).toBe(3);

    h.remove(svcA, sliceA);
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    expect(restores(h.lastCalls).map((c) => c.cmd)).toEqual(['iptables-nft-restore']);
    const nat = h.fake.chains('IPv4', 'nat');
    for (const c of a) expect(nat).not.toContain(c);
    expect(h.fake.rules('IPv4', 'nat', 'KUBE-SERVICES')!.join('\n')).not.toContain('ns/a:http');
    // The others keep theirs.
    for (const c of ownedChains(h.fake, 'IPv4', 'ns/b:http')) expect(nat).toContain(c);
    expect(ownedChains(h.fake, 'IPv4', 'ns/b:http').size).toBe(3);
    await expectSameAsFullSync(h);
  });

  it('deleting a dual-stack service removes its chains in both families', async () => {
    const h = await synced();
    const c4 = ownedChains(h.fake, 'IPv4', 'ns/c:http');
    const c6 = ownedChains(h.fake, 'IPv6', 'ns/c:http');
    h.remove(svcC, sliceC4, sliceC6);
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    expect(restores(h.lastCalls).map((c) => c.cmd)).toEqual(['iptables-nft-restore', 'ip6tables-nft-restore']);
    for (const c of c4) expect(h.fake.chains('IPv4', 'nat')).not.toContain(c);
    for (const c of c6) expect(h.fake.chains('IPv6', 'nat')).not.toContain(c);
    expect(h.fake.chains('IPv6', 'nat').filter(isServiceChain)).toEqual([]);
    await expectSameAsFullSync(h);
  });

  it('a failed restore fails the sync, and the next sync is full and repairs the tables', async () => {
    const h = await synced();
    h.apply(endpointSlice('ns', 'a', 'a-1', http, [{ ip: '10.244.0.5', nodeName: NODE }]));
    h.fake.failNext((cmd) => cmd.endsWith('-restore'), { stderr: 'iptables-nft-restore: line 3 failed\n' });
    const failed = await h.sync();
    expect(failed).toMatchObject({ ok: false, full: false });
    expect(failed.ok || failed.error).toContain('line 3 failed');
    // The change was taken from the state and never applied: a's removed endpoint is still there.
    expect(ownedChains(h.fake, 'IPv4', 'ns/a:http').size).toBe(3);

    // Nothing changed since, yet the next sync must be full to catch up.
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'required' });
    expect(ownedChains(h.fake, 'IPv4', 'ns/a:http').size).toBe(2);
    await expectSameAsFullSync(h);
    // ... and after that, partial again.
    h.apply(svcD, endpointSlice('ns', 'd', 'd-1', http, [{ ip: '10.244.0.8', nodeName: NODE }]));
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
  });

  it('a full sync that fails halfway through its restores is repaired by the next', async () => {
    const h = new Harness({ maxRestoreLines: 10 });
    const objs = syntheticCluster({ services: 6, endpointsPerService: 2 });
    h.apply(...objs.nodes, ...objs.services, ...objs.endpointSlices);
    // Let the first two restores through, fail the third: some service chains are in, KUBE-SERVICES is not.
    let n = 0;
    h.fake.failNext((cmd) => cmd.endsWith('-restore') && ++n === 3);
    expect(await h.sync()).toMatchObject({ ok: false, full: true });
    // The slice restored beside the failed one ends; none starts after the failure.
    expect(restores(h.lastCalls)).toHaveLength(4);
    expect(h.fake.rules('IPv4', 'nat', 'KUBE-SERVICES')).toBeUndefined();

    const r = await h.sync();
    expect(r).toEqual({ ok: true, full: true, reason: 'required' });
    await expectSameAsFullSync(h);
  });

  it('requireFullSync makes the next sync full', async () => {
    const h = await synced();
    // Nothing changed: a partial sync with nothing to write.
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    expect(restores(h.lastCalls)).toEqual([]);

    h.syncer.requireFullSync('x');
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'required' });
    // A full sync reads the tables once and rewrites everything, each family.
    expect(h.lastCalls.filter((c) => c.cmd === 'iptables-nft-save')).toEqual([{ cmd: 'iptables-nft-save', args: [] }]);
    const [v4, v6] = restores(h.lastCalls);
    expect(v4!.input).toContain('"ns/a:http cluster IP"');
    expect(v4!.input).toContain('"ns/b:http cluster IP"');
    expect(v6!.cmd).toBe('ip6tables-nft-restore');
    // Once only.
    expect(await h.sync()).toMatchObject({ full: false });
  });

  it('damage() names the canary someone deleted, until a full sync puts it back', async () => {
    const h = await synced();
    expect(await h.syncer.damage()).toBeNull();

    expect((await h.fake.run('iptables-nft', ['-t', 'nat', '-X', 'KUBE-PROXY-CANARY'])).status).toBe(0);
    expect(await h.syncer.damage()).toMatch(/IPv4 canary chain is gone/);
    // A partial sync does not look: the damage stays.
    await h.sync();
    expect(await h.syncer.damage()).not.toBeNull();

    h.syncer.requireFullSync('canary gone');
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'required' });
    expect(await h.syncer.damage()).toBeNull();
    expect(h.fake.chains('IPv4', 'nat')).toContain('KUBE-PROXY-CANARY');
  });

  it('damage() names a deleted jump rule, the canary still there, until a full sync puts it back', async () => {
    const h = await synced();
    const portals = ['-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'];
    expect((await h.fake.run('iptables-nft', portals)).status).toBe(0);
    expect(await h.syncer.damage()).toBe('IPv4 jump rule from nat PREROUTING to KUBE-SERVICES is gone');
    h.syncer.requireFullSync('test');
    expect(await h.sync()).toMatchObject({ ok: true, full: true });
    expect(await h.syncer.damage()).toBeNull();
  });

  it('damage() does not take a check it could not make (the xtables lock busy) for damage', async () => {
    const h = await synced();
    h.fake.failNext((_cmd, args) => args.includes('-C'), { status: 4, stderr: 'Another app is currently holding the xtables lock.' });
    await expect(h.syncer.damage()).rejects.toThrow(/xtables lock/);
    expect(await h.syncer.damage()).toBeNull();
  });

  it('after someone flushes the whole nat table, damage() says so and a full sync rebuilds it', async () => {
    const h = await synced();
    // iptables-restore without --noflush replaces the table: every rule and user chain goes.
    expect((await h.fake.run('ip6tables-nft-restore', ['-w', '5'], [Buffer.from('*nat\nCOMMIT\n')])).status).toBe(0);
    expect(h.fake.chains('IPv6', 'nat')).toEqual(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING']);
    expect(await h.syncer.damage()).toMatch(/IPv6 canary chain is gone/);

    h.syncer.requireFullSync('canary gone');
    expect(await h.sync()).toMatchObject({ ok: true, full: true });
    expect(await h.syncer.damage()).toBeNull();
    expect(h.fake.rules('IPv6', 'nat', 'PREROUTING')).toEqual(['-m comment --comment "kubernetes service portals" -j KUBE-SERVICES']);
    await expectSameAsFullSync(h);
  });

  it('runs a periodic full sync once the interval has passed', async () => {
    let t = 0;
    const h = new Harness({ fullSyncIntervalMs: 1000, now: () => t }).apply(...CLUSTER);
    expect(await h.sync()).toMatchObject({ full: true, reason: 'required' });
    t = 1000;
    // Not past the interval yet.
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    t = 1001;
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'periodic' });
    expect(restores(h.lastCalls)).toHaveLength(2);
    expect(restores(h.lastCalls)[0]!.input).toContain(':KUBE-SERVICES - [0:0]');
    // The interval counts from the last full sync.
    t = 2000;
    expect(await h.sync()).toMatchObject({ full: false });
    t = 2002;
    expect(await h.sync()).toMatchObject({ full: true, reason: 'periodic' });
  });

  it('a partial sync that must write everything (large-cluster mode flips) says it was full, and why', async () => {
    // 100 x 10 = 1,000 endpoints: one more crosses into large-cluster mode (no per-endpoint comments).
    const objs = syntheticCluster({ services: 100, endpointsPerService: 10 });
    const h = new Harness().apply(...objs.nodes, ...objs.services, ...objs.endpointSlices);
    expect(await h.sync()).toMatchObject({ ok: true, full: true });
    const slice = structuredClone(objs.endpointSlices[0]) as { endpoints: { addresses: string[] }[] };
    slice.endpoints.push({ ...slice.endpoints[0]!, addresses: ['10.255.0.1'] });
    h.apply(slice);
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'large-cluster mode changed' });
    expect(restores(h.lastCalls, 'iptables-nft-restore')[0]!.input).toContain(':KUBE-SERVICES - [0:0]');
  });

  it('a first sync asks nothing chain by chain: one save and one restore per family, the jumps in it', async () => {
    const h = new Harness().apply(...CLUSTER);
    expect(await h.sync()).toMatchObject({ ok: true, full: true });
    expect(h.lastCalls.map((c) => c.cmd)).toEqual(['iptables-nft', 'iptables-nft-save', 'iptables-nft-restore', 'ip6tables-nft-save', 'ip6tables-nft-restore']);
    expect(h.lastCalls[0]!.args).toEqual(['--version']);
    const restore = h.lastCalls.find((c) => c.cmd === 'iptables-nft-restore')!.input!;
    // The jumps come after the chains they lead to are written.
    expect(restore.indexOf('-I PREROUTING 1 ')).toBeGreaterThan(restore.lastIndexOf(':KUBE-SERVICES '));
    expect(h.fake.rules('IPv4', 'mangle', 'PREROUTING')).toEqual([]);
    expect(h.fake.chains('IPv4', 'mangle')).toContain('KUBE-PROXY-CANARY');
  });

  it('a restarted agent finds its jumps in the save and adds none twice, nor flushes what it wrote', async () => {
    const h = await synced();
    const before = { v4: tables(h.fake, 'IPv4', false), v6: tables(h.fake, 'IPv6', false) };
    const restarted = new IptablesSyncer(
      new Map(FAMILIES.map((f) => [f, new IptablesApplier(f, h.fake.run, binaries(f, 'nf_tables'))] as const)),
      { render: { ...DEFAULT_IPTABLES_OPTIONS, clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/48'] }, maxRestoreLines: Infinity, fullSyncIntervalMs: 3_600_000 },
      log,
    );
    const first = h.fake.calls.length;
    expect(await restarted.sync({ model: h.state, services: new Set(), all: true })).toMatchObject({ ok: true, full: true });
    expect(h.fake.calls.slice(first).filter((c) => c.args.includes('-C') || c.args.includes('-S'))).toEqual([]);
    expect(tables(h.fake, 'IPv4', false)).toEqual(before.v4);
    expect(tables(h.fake, 'IPv6', false)).toEqual(before.v6);
  });

  it('a jump to our chain that the save prints otherwise is asked about with -C, and added when -C says no', async () => {
    const h = new Harness().apply(...CLUSTER);
    // Someone else's rule into KUBE-SERVICES, with arguments that are not ours.
    for (const args of [['-N', 'KUBE-SERVICES'], ['-A', 'PREROUTING', '-s', '192.0.2.1', '-j', 'KUBE-SERVICES']]) {
      expect((await h.fake.run('iptables-nft', ['-t', 'nat', ...args])).status).toBe(0);
    }
    expect(await h.sync()).toMatchObject({ ok: true, full: true });
    const checks = h.lastCalls.filter((c) => c.cmd === 'iptables-nft' && c.args.includes('-C'));
    expect(checks.map((c) => c.args.slice(c.args.indexOf('-C') + 1, c.args.indexOf('-C') + 2))).toEqual([['PREROUTING']]);
    expect(h.fake.rules('IPv4', 'nat', 'PREROUTING')).toEqual(['-m comment --comment "kubernetes service portals" -j KUBE-SERVICES', '-s 192.0.2.1 -j KUBE-SERVICES']);
  });

  it('reads the kernel\'s chains back only when it cannot trust what it wrote', async () => {
    let t = 0;
    const h = new Harness({ fullSyncIntervalMs: 1000, now: () => t }).apply(...CLUSTER);
    const saves = () => h.lastCalls.filter((c) => c.cmd.endsWith('-save'));
    expect(await h.sync()).toMatchObject({ full: true, reason: 'required' });
    expect(saves().length).toBeGreaterThan(0);
    // Hourly: the chains it wrote are the kernel's; a deleted service's chains still go.
    const gone = ownedChains(h.fake, 'IPv4', 'ns/a:http');
    expect(gone.size).toBe(3);
    h.remove(svcA, sliceA);
    t = 1001;
    expect(await h.sync()).toMatchObject({ full: true, reason: 'periodic' });
    expect(saves()).toEqual([]);
    for (const c of gone) expect(h.fake.chains('IPv4', 'nat')).not.toContain(c);
    // After a failure, what it wrote may not be what the kernel has.
    h.fake.failNext((cmd) => cmd.endsWith('-restore'));
    h.syncer.requireFullSync('test');
    expect(await h.sync()).toMatchObject({ ok: false });
    expect(await h.sync()).toMatchObject({ ok: true, full: true });
    expect(saves().length).toBeGreaterThan(0);
  });

  it('a full sync of many restores logs its progress every 2 s of its own clock', async () => {
    const lines: { msg: string; restores?: string; secondsLeft?: number }[] = [];
    let t = 0;
    const objs = syntheticCluster({ services: 20, endpointsPerService: 3 });
    const fake = new FakeIptables();
    // Each restore takes a second of the injected clock.
    const slow: typeof fake.run = async (cmd, args, input) => (cmd.endsWith('-restore') && (t += 1000), fake.run(cmd, args, input));
    const syncer = new IptablesSyncer(
      new Map([['IPv4', new IptablesApplier('IPv4', slow, binaries('IPv4', 'nf_tables'))]]),
      { render: { ...DEFAULT_IPTABLES_OPTIONS }, maxRestoreLines: 50, fullSyncIntervalMs: 3_600_000, now: () => t },
      pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l) as { msg: string }) }),
    );
    const state = new ClusterState(NODE, { problem: () => {} });
    for (const o of objs.nodes) state.upsertNode(o);
    for (const o of objs.services) state.upsertService(o);
    for (const o of objs.endpointSlices) state.upsertSlice(o);
    const c = state.take();
    expect(await syncer.sync({ model: state, services: c.services, all: c.all })).toMatchObject({ ok: true, full: true });
    const progress = lines.filter((l) => l.msg === 'full sync in progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress[0]).toMatchObject({ restores: expect.stringMatching(/^2 of \d+$/) });
    expect(progress.at(-1)!.secondsLeft).toBeGreaterThan(0);
  });

  it('cuts a large full sync into bounded restores on nf_tables, ending as one restore would', async () => {
    const objs = syntheticCluster({ services: 20, endpointsPerService: 3 });
    const cluster = [...objs.nodes, ...objs.services, ...objs.endpointSlices];
    const h = new Harness({ maxRestoreLines: 50 }).apply(...cluster);
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'required' });

    const cut = restores(h.lastCalls, 'iptables-nft-restore');
    expect(cut.length).toBeGreaterThan(3);
    // KUBE-MARK-MASQ first (every service chain jumps to it), KUBE-SERVICES last (it jumps to them all).
    expect(cut[0]!.input).toMatch(/^\*nat\n:KUBE-MARK-MASQ - \[0:0\]\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\nCOMMIT\n$/);
    expect(cut.at(-1)!.input).toContain(':KUBE-SERVICES - [0:0]');
    for (const c of cut.slice(0, -1)) expect(c.input).not.toContain('KUBE-SERVICES');
    // A slice of service chains stops once it reaches the bound, so it passes it by at most one
    // service port (here at most 17 lines: a NodePort's EXT, SVC and 3 SEPs) plus *nat and COMMIT.
    for (const c of cut.slice(1, -1)) expect(c.input!.trimEnd().split('\n').length).toBeLessThanOrEqual(50 + 17 + 2);

    // The same state in one restore, and on legacy (which is never cut), give the same tables.
    const one = await h.fullSyncedCopy({ maxRestoreLines: Infinity });
    expect(restores(one.lastCalls, 'iptables-nft-restore')).toHaveLength(1);
    const legacy = await h.fullSyncedCopy({ maxRestoreLines: 50, variant: 'legacy' });
    expect(restores(legacy.lastCalls, 'iptables-legacy-restore')).toHaveLength(1);
    expect(tables(h.fake, 'IPv4', false)).toEqual(tables(one.fake, 'IPv4', false));
    expect(tables(legacy.fake, 'IPv4', false)).toEqual(tables(one.fake, 'IPv4', false));

    // A later cut full sync also removes the chains of services that went away.
    const gone = ownedChains(h.fake, 'IPv4', 'ns-3/svc-3:http');
    expect(gone.size).toBe(4);
    h.remove(objs.services[3], objs.endpointSlices[3]);
    h.syncer.requireFullSync('test');
    expect(await h.sync()).toMatchObject({ ok: true, full: true });
    expect(restores(h.lastCalls).length).toBeGreaterThan(3);
    for (const c of gone) expect(h.fake.chains('IPv4', 'nat')).not.toContain(c);
    expect(tables(h.fake, 'IPv4', false)).toEqual(tables((await h.fullSyncedCopy({ maxRestoreLines: Infinity })).fake, 'IPv4', false));
  });
});

describe.each(['nf_tables', 'legacy'] as const)('iptables --cleanup on the %s variant', (variant) => {
  const tool = variant === 'nf_tables' ? 'nft' : 'legacy';
  /** kubelet's chains: KUBE- named, but not kube-proxy's, so --cleanup must leave them. */
  const KUBELET: [string, string][] = [
    ['mangle', 'KUBE-IPTABLES-HINT'],
    ['mangle', 'KUBE-KUBELET-CANARY'],
    ['nat', 'KUBE-KUBELET-CANARY'],
    ['filter', 'KUBE-KUBELET-CANARY'],
  ];

  /** A node after a full sync, plus kubelet's chains and another program's chain hooked into filter INPUT. */
  async function nodeWithRules(render: Options['render']): Promise<FakeIptables> {
    const h = await synced({ variant, render });
    const run = (...args: string[]) => h.fake.run(`iptables-${tool}`, ['-w', '5', ...args]);
    for (const [table, chain] of KUBELET) expect((await run('-t', table, '-N', chain)).status).toBe(0);
    expect((await run('-N', 'MY-CHAIN')).status).toBe(0);
    expect((await run('-A', 'MY-CHAIN', '-s', '10.0.0.0/8', '-j', 'ACCEPT')).status).toBe(0);
    expect((await run('-A', 'INPUT', '-j', 'MY-CHAIN')).status).toBe(0);
    return h.fake;
  }

  /**
   * The node as a mode sees it. Cleanup has no kernel setting to change: `sysctl` (which
   * Host is gaining in work in progress) is a stub that changes nothing. Built apart from
   * the call so that it type-checks whether Host has that member yet or not.
   */
  function hostOf(fake: FakeIptables) {
    const host = { run: fake.run, log, sysctl: { ensure: async () => {} } };
    return host;
  }

  async function expectCleaned(fake: FakeIptables): Promise<void> {
    const first = fake.calls.length;
    expect(await iptablesMode.cleanup(hostOf(fake))).toBe(true);
    const calls = fake.calls.slice(first);
    // It found the variant the rules are in (the other one's tools are "not found"), and
    // both families (ip6tables answered its probe).
    expect(restores(calls).map((c) => c.cmd)).toEqual(expect.arrayContaining([`iptables-${tool}-restore`, `ip6tables-${tool}-restore`]));
    expect(restores(calls).every((c) => c.cmd.includes(`-${tool}-`))).toBe(true);

    for (const family of FAMILIES) {
      for (const table of ['mangle', 'filter', 'nat']) {
        const kubelet = family === 'IPv4' ? KUBELET.filter(([t]) => t === table).map(([, c]) => c) : [];
        expect(fake.chains(family, table).filter((c) => c.startsWith('KUBE-')), `${family} ${table}`).toEqual(kubelet.sort());
        for (const chain of fake.chains(family, table)) {
          expect(fake.rules(family, table, chain)!.filter((r) => r.includes('KUBE-')), `${family} ${table} ${chain}`).toEqual([]);
        }
      }
    }
    // The other program's chain and its jump stay.
    expect(fake.chains('IPv4', 'filter')).toEqual(['INPUT', 'FORWARD', 'OUTPUT', 'KUBE-KUBELET-CANARY', 'MY-CHAIN']);
    expect(fake.rules('IPv4', 'filter', 'INPUT')).toEqual(['-j MY-CHAIN']);
    expect(fake.rules('IPv4', 'filter', 'MY-CHAIN')).toEqual(['-s 10.0.0.0/8 -j ACCEPT']);

    // Cleaning a clean node succeeds and changes nothing.
    const before = FAMILIES.map((f) => fake.save(f));
    expect(await iptablesMode.cleanup(hostOf(fake))).toBe(true);
    expect(FAMILIES.map((f) => fake.save(f))).toEqual(before);
  }

  it('removes every kube-proxy chain and jump, and leaves other chains (localhostNodePorts off)', async () => {
    const fake = await nodeWithRules({ localhostNodePorts: false });
    expect(fake.chains('IPv4', 'filter')).not.toContain('KUBE-FIREWALL');
    await expectCleaned(fake);
  });

  // issue 9: bare jump rules are not removed. Fixed by a739c20 ("--cleanup removes exactly
  // kube-proxy's chains and every jump to them"), which landed while this test was written,
  // so it is a plain `it` now: before that commit it failed with CHAIN_DEL busy on KUBE-FIREWALL.
  it('removes every kube-proxy chain and jump, and leaves other chains (defaults: bare -j KUBE-FIREWALL jumps)', async () => {
    const fake = await nodeWithRules({});
    // What makes this case: jumps with no match at all.
    expect(fake.rules('IPv4', 'filter', 'INPUT')).toContain('-j KUBE-FIREWALL');
    expect(fake.rules('IPv4', 'filter', 'OUTPUT')).toContain('-j KUBE-FIREWALL');
    await expectCleaned(fake);
  });
});
