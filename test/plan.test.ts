/**
 * The sync planner, checked against a model of iptables-restore: a full sync cut into
 * bounded restores ends in the same tables as one restore, with no dangling jump after any
 * step; a partial sync takes the tables from one ruleset to the next.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildNodeModel } from '../src/model/build.js';
import { renderIptables } from '../src/modes/iptables/render.js';
import { restoreText, type IptablesRuleset } from '../src/modes/iptables/ruleset.js';
import { appliedServices, fullSyncSteps, partialSyncSteps, renderedServices } from '../src/modes/iptables/plan.js';
import { syntheticCluster } from '../bench/synthetic.js';
import { applyRestore, normalized, type Tables } from './support/restore-sim.js';

const SHARED = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-EXTERNAL-SERVICES', 'KUBE-PROXY-FIREWALL'];
const text = (chunks: Buffer[]) => Buffer.concat(chunks).toString('latin1');

function ruleset(services: number, endpoints: number, mutate?: (objs: ReturnType<typeof syntheticCluster>) => void): IptablesRuleset {
  const objs = syntheticCluster({ services, endpointsPerService: endpoints });
  mutate?.(objs);
  const b = buildNodeModel(objs, 'node-0');
  return renderIptables(b.model.families.IPv4, b.model.node, { clusterCIDRs: ['10.128.0.0/9'] });
}

function loaded(rs: IptablesRuleset): Tables {
  const t: Tables = new Map();
  applyRestore(t, restoreText(rs));
  return t;
}

describe('full sync plan', () => {
  it('is one restore when the ruleset fits', () => {
    const rs = ruleset(5, 3);
    expect(fullSyncSteps(rs, [], 1_000_000)).toHaveLength(1);
  });

  it('cut into bounded restores, reaches the same tables, never dangling', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 6 }), fc.integer({ min: 10, max: 400 }), (n, e, maxLines) => {
        const rs = ruleset(n, e);
        const steps = fullSyncSteps(rs, [], maxLines);
        const tables: Tables = new Map();
        for (const s of steps) applyRestore(tables, text(s.chunks));
        expect(normalized(tables, SHARED)).toEqual(normalized(loaded(rs), SHARED));
        const big = steps.filter((s) => s.what.includes('service chains'));
        for (const s of big) {
          // A slice may exceed the bound only by the one service port that started it.
          expect(s.lines).toBeLessThanOrEqual(maxLines + 200);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('removes chains the kernel has and the ruleset no longer wants', () => {
    const before = ruleset(6, 2);
    const after = ruleset(3, 2);
    const tables = loaded(before);
    const existing = [...tables.get('nat')!.keys()];
    for (const s of fullSyncSteps(after, existing, 50)) applyRestore(tables, text(s.chunks));
    expect(normalized(tables, SHARED)).toEqual(normalized(loaded(after), SHARED));
  });
});

describe('partial sync plan', () => {
  it('takes the tables from one ruleset to the next, touching only the changed services', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 12 }),
        fc.array(fc.record({ svc: fc.nat(), op: fc.constantFrom('endpoints', 'no-endpoints', 'delete', 'nodeport') }), { minLength: 1, maxLength: 4 }),
        (n, changes) => {
          const before = ruleset(n, 3);
          const touched = new Set<number>();
          const after = ruleset(n, 3, (objs) => {
            for (const c of changes) {
              const i = c.svc % n;
              touched.add(i);
              const slice = objs.endpointSlices[i] as { endpoints: unknown[] };
              const svc = objs.services[i] as { spec: { type: string; ports: { nodePort?: number }[] } };
              if (c.op === 'endpoints') slice.endpoints = slice.endpoints.slice(1);
              if (c.op === 'no-endpoints') slice.endpoints = [];
              if (c.op === 'nodeport') {
                svc.spec.type = 'NodePort';
                svc.spec.ports[0]!.nodePort = 31000 + i;
              }
            }
            for (const c of changes) if (c.op === 'delete') objs.services[c.svc % n] = { kind: 'Service', metadata: { name: 'x', namespace: 'ns-gone' }, spec: { clusterIP: 'None', ports: [] } };
          });
          const keys = [...touched].map((i) => `ns-${i % 50}/svc-${i}:http/tcp`);
          const tables = loaded(before);
          for (const step of partialSyncSteps(appliedServices(before), renderedServices(after), keys, Infinity)) applyRestore(tables, text(step.chunks));
          expect(normalized(tables, SHARED)).toEqual(normalized(loaded(after), SHARED));
        },
      ),
      { numRuns: 100 },
    );
  });

  it('writes only the changed service when its shared rules did not change', () => {
    const before = ruleset(50, 3);
    const after = ruleset(50, 3, (objs) => {
      (objs.endpointSlices[7] as { endpoints: unknown[] }).endpoints.pop();
    });
    const steps = partialSyncSteps(appliedServices(before), renderedServices(after), ['ns-7/svc-7:http/tcp'], Infinity);
    expect(steps).toHaveLength(1);
    const step = steps[0]!;
    const t = text(step.chunks);
    expect(t).not.toContain('KUBE-SERVICES');
    expect(t).not.toContain('*filter');
    expect(step.lines).toBeLessThan(20);
  });
});

describe('a service port larger than a restore', () => {
  const big = (endpoints: number, mutate?: Parameters<typeof ruleset>[2]) => ruleset(3, endpoints, mutate);

  it('full sync: its endpoint chains go first in bounded restores, then the chains that jump to them', () => {
    const rs = big(400);
    const steps = fullSyncSteps(rs, [], 300);
    const tables: Tables = new Map();
    for (const s of steps) {
      // A service port's own chain that balances over all its endpoints cannot be cut.
      if (s.what.includes('endpoint chains')) expect(s.lines).toBeLessThanOrEqual(300 + 2);
      applyRestore(tables, text(s.chunks));
    }
    expect(normalized(tables, SHARED)).toEqual(normalized(loaded(rs), SHARED));
    // 3 services of 400 endpoints: 1,200 endpoint chains in restores of 100.
    expect(steps.filter((s) => s.what.includes('endpoint chains'))).toHaveLength(12);
  });

  it('partial sync: the changed large service port is cut the same way, and ends as a full restore would', () => {
    const before = big(400);
    const after = big(400, (objs) => {
      (objs.endpointSlices[1] as { endpoints: unknown[] }).endpoints.splice(0, 50);
    });
    const tables = loaded(before);
    const steps = partialSyncSteps(appliedServices(before), renderedServices(after), ['ns-1/svc-1:http/tcp'], 300);
    // 350 endpoint chains in restores of 100, then the rest.
    expect(steps.map((s) => s.what.replace(/ \d+-\d+ of \d+/, ''))).toEqual([...Array(4).fill('partial sync: ns-1/svc-1:http/tcp: endpoint chains'), 'partial sync: 1 service ports']);
    for (const s of steps) applyRestore(tables, text(s.chunks));
    expect(normalized(tables, SHARED)).toEqual(normalized(loaded(after), SHARED));
  });

  it('partial sync: a large service port deleted has its endpoint chains deleted in bounded restores after the rest', () => {
    // 3 x 300 endpoints and then 2 x 300: both under the large-cluster threshold, so only the deletion differs.
    const before = big(300);
    const after = big(300, (objs) => {
      objs.services[1] = { kind: 'Service', metadata: { name: 'x', namespace: 'ns-gone' }, spec: { clusterIP: 'None', ports: [] } };
    });
    const tables = loaded(before);
    const steps = partialSyncSteps(appliedServices(before), renderedServices(after), ['ns-1/svc-1:http/tcp'], 200);
    // The head (KUBE-SERVICES rule, SVC chain) first, then 300 endpoint chains 100 at a time.
    expect(steps.map((s) => s.what.replace(/ \d+-\d+ of \d+/, ''))).toEqual(['partial sync: 1 service ports', ...Array(3).fill('partial sync: stale endpoint chains removed')]);
    for (const s of steps) {
      expect(s.lines).toBeLessThanOrEqual(200 + 2);
      applyRestore(tables, text(s.chunks));
    }
    expect(normalized(tables, SHARED)).toEqual(normalized(loaded(after), SHARED));
  });

  it('full sync: many stale chains in the kernel (an old kube-proxy\'s) go after, in bounded restores', () => {
    const old = big(400);
    const now = ruleset(2, 1);
    const tables = loaded(old);
    const steps = fullSyncSteps(now, [...tables.get('nat')!.keys()], 300);
    for (const s of steps) applyRestore(tables, text(s.chunks));
    expect(normalized(tables, SHARED)).toEqual(normalized(loaded(now), SHARED));
    expect(steps.filter((s) => s.what.includes('stale endpoint chains')).length).toBeGreaterThan(1);
  });
});
