/**
 * nftables mode's partial syncs against the kernel, with the real renderer: random
 * sequences of changes to a small cluster (endpoints moving between services, so pods
 * behind several services share hairpin elements; services deleted and recreated with
 * node ports, external IPs two services claim at once, ClientIP affinity, Local traffic
 * policy, UDP) go through the syncer one sync at a time, and after every sync the
 * namespace's table must list exactly as a full render of the current cluster loaded
 * into a fresh table does. Partial syncs render only the changed services, so this is
 * what proves that their elements, chains and the ledger of shared elements add up.
 */
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterState } from '../src/agent/state.js';
import { runCommand, type Runner } from '../src/exec/command.js';
import { groupCount } from '../src/modes/nftables/names.js';
import { commandNft } from '../src/modes/nftables/nft.js';
import { fullTransaction } from '../src/modes/nftables/plan.js';
import { keyedByClaim, renderNftables, renderSharedElements } from '../src/modes/nftables/render.js';
import { NftablesSyncer } from '../src/modes/nftables/syncer.js';
import type { Groups } from '../src/modes/nftables/written.js';
import { Netns } from './support/netns.js';
import { endpointSlice, node, service } from './support/objects.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const OPTS = { clusterCIDRs: ['10.244.0.0/16'], nodePortAddresses: ['primary'] };
const PODS = ['10.244.1.1', '10.244.1.2', '10.244.2.1', '10.244.2.2', '10.244.2.3'];
const SERVICES = 5;

type Change =
  | { kind: 'endpoints'; svc: number; pods: boolean[] }
  | { kind: 'delete'; svc: number }
  | { kind: 'service'; svc: number; nodePort: boolean; externalIP: number | null; affinity: boolean; local: boolean; udp: boolean };

const arbChange: fc.Arbitrary<Change> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('endpoints' as const), svc: fc.nat(SERVICES - 1), pods: fc.array(fc.boolean(), { minLength: PODS.length, maxLength: PODS.length }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), svc: fc.nat(SERVICES - 1) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('service' as const),
      svc: fc.nat(SERVICES - 1),
      nodePort: fc.boolean(),
      externalIP: fc.option(fc.nat(1), { nil: null }),
      affinity: fc.boolean(),
      local: fc.boolean(),
      udp: fc.boolean(),
    }),
  },
);

function apply(state: ClusterState, c: Change): void {
  const name = `s${c.svc}`;
  const ports = (udp: boolean) => [{ name: 'p', port: 80, targetPort: 8080, protocol: udp ? ('UDP' as const) : ('TCP' as const) }];
  if (c.kind === 'delete') state.deleteService(service('ns', name, `10.96.0.${c.svc + 1}`, ports(false)));
  else if (c.kind === 'endpoints') {
    const eps = PODS.flatMap((ip, i) => (c.pods[i] ? [{ ip, nodeName: ip.startsWith('10.244.1.') ? 'node-a' : 'node-b' }] : []));
    // Both protocols' ports, so that the slice fits whichever the Service has now.
    state.upsertSlice(endpointSlice('ns', name, `${name}-1`, [{ name: 'p', port: 8080, protocol: 'TCP' }], eps));
    state.upsertSlice(endpointSlice('ns', name, `${name}-u`, [{ name: 'p', port: 8080, protocol: 'UDP' }], eps));
  } else {
    const spec: Record<string, unknown> = {};
    if (c.nodePort || c.local) Object.assign(spec, { type: c.local ? 'LoadBalancer' : 'NodePort' });
    if (c.local) Object.assign(spec, { externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 + c.svc });
    if (c.externalIP !== null) spec.externalIPs = [`192.0.2.${c.externalIP + 1}`];
    if (c.affinity) spec.sessionAffinity = 'ClientIP';
    const p = ports(c.udp).map((x) => (c.nodePort || c.local ? { ...x, nodePort: 30000 + c.svc } : x));
    state.upsertService(service('ns', name, `10.96.0.${c.svc + 1}`, p, spec));
  }
}

/** `nft list table` output with chains, sets and elements in a canonical order. */
function canonical(listing: string): string[] {
  return listing
    .split(/\n(?=\t(?:chain|set|map) )/)
    .slice(1)
    .map((b) =>
      b
        .replace(/elements = \{([^}]*)\}/s, (_, items: string) => `elements = { ${items.split(/,\s*/).map((x) => x.trim()).filter((x) => x !== '').sort().join(', ')} }`)
        .replace(/\n}\s*$/, '')
        .trim(),
    )
    .sort();
}

/** The endpoint-count groups a listing declares: a full render must declare them too to compare. */
function listedGroups(listing: string): Groups {
  const out = new Set<number>();
  for (const m of listing.matchAll(/\tmap (\S+) \{/g)) {
    const n = groupCount(m[1]!);
    if (n !== null) out.add(n);
  }
  return [...out].sort((a, b) => a - b);
}

const canRun = privilegedTestsCanRun('nftables partial syncs in a network namespace', ['ip', 'nft']);

describe.runIf(canRun)('nftables partial syncs add up to the full table', () => {
  let synced: Netns;
  let fresh: Netns;
  beforeAll(() => {
    synced = new Netns('nftinc');
    fresh = new Netns('nftfull');
  });
  afterAll(() => {
    synced?.remove();
    fresh?.remove();
  });

  const list = (ns: Netns) => {
    const r = ns.exec('nft', ['list', 'table', 'ip', 'kube-proxy']);
    if (r.status !== 0) throw new Error(`nft list: ${r.stderr}`);
    return r.stdout;
  };

  it('after every sync of random change sequences', async () => {
    const inNs: Runner = (cmd, args, input) => runCommand('ip', ['netns', 'exec', synced.name, cmd, ...args], input);
    let partials = 0;
    const sequences = fc.sample(fc.array(arbChange, { minLength: 8, maxLength: 14 }), { numRuns: 6, seed: 42 });
    for (const changes of sequences) {
      const state = new ClusterState('node-a', { problem: () => {} });
      state.upsertNode(node('node-a', '192.168.0.10'));
      const syncer = new NftablesSyncer(
        commandNft(inNs),
        {
          families: ['IPv4'],
          render: (m, n, keep) => renderNftables(m, n, keep ? { ...OPTS, keepGroups: keep } : OPTS),
          elements: (m, n) => renderSharedElements(m, n, OPTS),
          keyedByClaim,
          fullSyncIntervalMs: 3_600_000,
        },
        pino({ level: 'silent' }),
      );
      for (const [i, c] of changes.entries()) {
        apply(state, c);
        const taken = state.take();
        const r = await syncer.sync({ model: state, services: taken.services, all: taken.all });
        expect(r, JSON.stringify(c)).toMatchObject({ ok: true });
        if (!r.full) partials++;
        const got = list(synced);
        const want = renderNftables(state.familyModel('IPv4'), state.nodeContext, { ...OPTS, keepGroups: listedGroups(got) });
        const loaded = fresh.exec('nft', ['-f', '-'], fullTransaction(want).script.toString());
        expect(loaded.status, loaded.stderr).toBe(0);
        expect(canonical(got), `after change ${i}: ${JSON.stringify(c)}`).toEqual(canonical(list(fresh)));
      }
    }
    expect(partials).toBeGreaterThan(30);
  });
});
