/**
 * The nftables syncer against a real kernel in a throwaway namespace (nft run there with
 * `ip netns exec`): the first sync writes the table, later ones only what changed, a
 * table someone deleted or a base chain someone flushed is noticed and written whole
 * again, and a failed transaction makes the next one full. The renderer here is a small
 * stand-in (a verdict map of cluster IPs to per-service chains) so that what a partial
 * transaction holds can be counted exactly.
 */
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ClusterState } from '../src/agent/state.js';
import { runCommand, type Runner } from '../src/exec/command.js';
import type { FamilyModel } from '../src/model/types.js';
import { commandNft } from '../src/modes/nftables/nft.js';
import { renderNftables } from '../src/modes/nftables/render.js';
import type { NftTable } from '../src/modes/nftables/ruleset.js';
import { NftablesSyncer } from '../src/modes/nftables/syncer.js';
import { Netns } from './support/netns.js';
import { endpointSlice, node, service } from './support/objects.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const chainOf = (ns: string, name: string, port: number) => `svc-${ns}-${name}-${port}`;

function render(model: FamilyModel): NftTable {
  const chains: NftTable['chains'] = [
    { name: 'nat-prerouting', base: { type: 'nat', hook: 'prerouting', priority: -100 }, rules: [{ rule: 'ip daddr . th dport vmap @service-ips' }] },
    { name: 'nat-output', base: { type: 'nat', hook: 'output', priority: -100 }, rules: [{ rule: 'ip daddr . th dport vmap @service-ips' }] },
  ];
  const elements: NftTable['sets'][number]['elements'] = [];
  for (const sp of model.servicePorts) {
    const name = chainOf(sp.namespace, sp.serviceName, sp.port);
    const eps = sp.cluster.endpoints;
    chains.push({ name, rules: eps.length === 0 ? [{ rule: 'drop' }] : [{ rule: `dnat to numgen random mod ${eps.length} map { ${eps.map((e, i) => `${i} : ${e.ip}`).join(', ')} }` }] });
    elements.push({ key: [sp.clusterIP!, String(sp.port)], value: [`goto ${name}`] });
  }
  elements.sort((a, b) => a.key.join().localeCompare(b.key.join()));
  return {
    family: 'ip',
    name: 'kube-proxy',
    comment: 'rules for kube-proxy',
    chains,
    sets: [{ kind: 'map', name: 'service-ips', key: { type: ['ipv4_addr', 'inet_service'] }, value: { type: ['verdict'] }, flags: [], elements }],
  };
}

const canRun = privilegedTestsCanRun('nftables syncer in a network namespace', ['ip', 'nft']);

describe.runIf(canRun)('nftables syncer against a real kernel', () => {
  let ns: Netns;
  let state: ClusterState;
  let clock = 0;
  beforeEach(() => {
    ns = new Netns('nftsync');
    state = new ClusterState('node-a', { problem: () => {} });
    state.upsertNode(node('node-a', '192.168.0.10'));
    for (const i of [1, 2, 3]) {
      state.upsertService(service('ns', `s${i}`, `10.96.0.${i}`, [{ name: 'http', port: 80, protocol: 'TCP' }]));
      state.upsertSlice(endpointSlice('ns', `s${i}`, `s${i}-a`, [{ name: 'http', port: 8080, protocol: 'TCP' }], [{ ip: `10.244.1.${i}`, nodeName: 'node-b' }]));
    }
  });
  afterEach(() => ns?.remove());

  const inNs: Runner = (cmd, args, input) => runCommand('ip', ['netns', 'exec', ns.name, cmd, ...args], input);
  const syncer = (run: Runner = inNs) => new NftablesSyncer(commandNft(run), { families: ['IPv4'], render, fullSyncIntervalMs: 3_600_000, now: () => clock }, pino({ level: 'silent' }));
  const listed = () => ns.exec('nft', ['list', 'table', 'ip', 'kube-proxy']).stdout;
  const req = () => {
    const taken = state.take();
    return { model: state, services: taken.services, all: taken.all };
  };

  it('writes the table at first, then only the elements and chains that changed', async () => {
    const s = syncer();
    const first = await s.sync(req());
    expect(first).toMatchObject({ ok: true, full: true, reason: 'required' });
    expect(listed()).toMatch(/10\.96\.0\.2 \. 80 : goto svc-ns-s2-80/);
    expect(listed()).toMatch(/chain svc-ns-s3-80 \{[^}]*dnat to numgen random mod 1 map \{ 0 : 10\.244\.1\.3 \}/);

    // One endpoint added: that service's chain rewritten (flush + one rule), nothing else.
    state.upsertSlice(endpointSlice('ns', 's2', 's2-a', [{ name: 'http', port: 8080, protocol: 'TCP' }], [{ ip: '10.244.1.2', nodeName: 'node-b' }, { ip: '10.244.2.2', nodeName: 'node-c' }]));
    const second = await s.sync(req());
    expect(second).toMatchObject({ ok: true, full: false, written: { commands: 2 } });
    expect(listed()).toMatch(/chain svc-ns-s2-80 \{[^}]*mod 2 map \{ 0 : 10\.244\.1\.2, 1 : 10\.244\.2\.2 \}/);

    // A service removed: its element, then its chain (emptied, deleted), in one transaction.
    state.deleteService(service('ns', 's3', '10.96.0.3', [{ name: 'http', port: 80, protocol: 'TCP' }]));
    expect(await s.sync(req())).toMatchObject({ ok: true, full: false, written: { commands: 3 } });
    expect(listed()).not.toMatch(/s3/);
    expect(await s.damage()).toBeNull();
  });

  it('notices a deleted table or a flushed base chain, and the full sync it asks for writes them again', async () => {
    const s = syncer();
    await s.sync(req());
    expect(ns.exec('nft', ['flush', 'chain', 'ip', 'kube-proxy', 'nat-prerouting']).status).toBe(0);
    expect(await s.damage()).toMatch(/nat-prerouting lost its rules/);
    s.requireFullSync('test');
    expect(await s.sync(req())).toMatchObject({ ok: true, full: true });
    expect(await s.damage()).toBeNull();

    expect(ns.exec('nft', ['flush', 'ruleset']).status).toBe(0);
    expect(await s.damage()).toMatch(/table ip kube-proxy or its base chain nat-prerouting is gone/);
    s.requireFullSync('test');
    expect(await s.sync(req())).toMatchObject({ ok: true, full: true });
    expect(listed()).toMatch(/10\.96\.0\.1 \. 80 : goto svc-ns-s1-80/);
  });

  it('a failed transaction changes nothing, returns nft\'s error, and makes the next sync full', async () => {
    let broken = false;
    // nft refusing what it is given, as a kernel without a needed module would.
    const flaky: Runner = (cmd, args, input) => (broken ? inNs(cmd, args, [Buffer.from('add rule ip kube-proxy no-such-chain accept\n')]) : inNs(cmd, args, input));
    const s = syncer(flaky);
    await s.sync(req());
    const before = listed();
    broken = true;
    state.upsertSlice(endpointSlice('ns', 's1', 's1-a', [{ name: 'http', port: 8080, protocol: 'TCP' }], []));
    const failed = await s.sync(req());
    expect(failed.ok).toBe(false);
    expect(!failed.ok && failed.error).toMatch(/partial sync: .*Error: Could not process rule: No such file or directory/s);
    expect(listed()).toBe(before);
    broken = false;
    expect(await s.sync(req())).toMatchObject({ ok: true, full: true, reason: 'required' });
    expect(listed()).toMatch(/chain svc-ns-s1-80 \{\s*drop/);
  });

  it('writes the whole table again periodically', async () => {
    const s = syncer();
    await s.sync(req());
    clock += 3_600_001;
    expect(await s.sync(req())).toMatchObject({ ok: true, full: true, reason: 'periodic' });
    expect(await s.sync(req())).toMatchObject({ ok: true, full: false, written: { commands: 0, bytes: 0 } });
  });

  describe('a full sync keeps the table', () => {
    // The real renderer: ClientIP affinity gives each endpoint a dynamic set the data path fills.
    const real = (run: Runner = inNs) =>
      new NftablesSyncer(commandNft(run), { families: ['IPv4'], render: (m, n) => renderNftables(m, n), fullSyncIntervalMs: 3_600_000, now: () => clock }, pino({ level: 'silent' }));
    const affinitySet = () => {
      const m = /set (affinity-\S+) \{/.exec(listed());
      if (!m) throw new Error('no affinity set listed');
      return m[1]!;
    };
    beforeEach(() => state.upsertService(service('ns', 's1', '10.96.0.1', [{ name: 'http', port: 80, protocol: 'TCP' }], { sessionAffinity: 'ClientIP' })));

    it('and the clients affinity remembers, through every full sync', async () => {
      const s = real();
      expect(await s.sync(req())).toMatchObject({ ok: true, full: true });
      // A client the data path remembered, as `update @affinity-... { ip saddr }` does.
      const set = affinitySet();
      expect(ns.exec('nft', ['add', 'element', 'ip', 'kube-proxy', set, '{ 10.1.2.3 }']).status).toBe(0);
      s.requireFullSync('test');
      expect(await s.sync(req())).toMatchObject({ ok: true, full: true });
      clock += 3_600_001;
      expect(await s.sync(req())).toMatchObject({ ok: true, full: true, reason: 'periodic' });
      expect(ns.exec('nft', ['list', 'set', 'ip', 'kube-proxy', set]).stdout).toMatch(/elements = \{ 10\.1\.2\.3 (timeout|expires)/);
      expect(await s.damage()).toBeNull();
    });

    it('but nothing else an earlier writer left in it', async () => {
      await real().sync(req());
      for (const cmd of [
        'add chain ip kube-proxy stale-chain',
        'add rule ip kube-proxy stale-chain accept',
        'add rule ip kube-proxy nat-output accept',
        'add map ip kube-proxy stale-map { type ipv4_addr : verdict ; }',
        'add element ip kube-proxy stale-map { 10.9.9.9 : goto stale-chain }',
        'add element ip kube-proxy cluster-ips { 10.96.9.9 }',
      ])
        expect(ns.exec('nft', cmd.split(' ')).status, cmd).toBe(0);
      // A fresh agent: it knows nothing of what the table holds.
      expect(await real().sync(req())).toMatchObject({ ok: true, full: true });
      const after = listed();
      expect(after).not.toMatch(/stale|10\.96\.9\.9|^\s*accept$/m);
      expect(after).toMatch(/10\.96\.0\.1/);
    });

    it('unless nft refuses it: a set declared otherwise makes it replace the table', async () => {
      const s = real();
      await s.sync(req());
      // What an older version might have declared under the same name.
      expect(ns.exec('nft', ['flush', 'table', 'ip', 'kube-proxy']).status).toBe(0);
      expect(ns.exec('nft', ['delete', 'set', 'ip', 'kube-proxy', 'hairpin-endpoints']).status).toBe(0);
      expect(ns.exec('nft', ['add', 'set', 'ip', 'kube-proxy', 'hairpin-endpoints', '{ type ipv4_addr ; }']).status).toBe(0);
      s.requireFullSync('test');
      expect(await s.sync(req())).toMatchObject({ ok: true, full: true });
      expect(listed()).toMatch(/set hairpin-endpoints \{\s*type ipv4_addr \. ipv4_addr/);
    });
  });
});
