/**
 * The nftables layout's promises, beyond what the goldens show: the common change (an
 * endpoint added, removed or replaced) touches only set and map elements, never a chain
 * or a rule; the number of chains does not grow with services; the full script replaces
 * every rendered set's elements but leaves the data path's affinity state alone; nothing
 * unsafe reaches a comment; node ports default to the primary IPs.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../src/config/options.js';
import type { ClusterObjects } from '../src/kube/objects.js';
import { buildNodeModel } from '../src/model/build.js';
import { nftablesOptions } from '../src/modes/nftables/mode.js';
import { keyedByClaim, renderNftables, renderSharedElements, type NftablesOptions } from '../src/modes/nftables/render.js';
import { comment, scriptText, type NftTable } from '../src/modes/nftables/ruleset.js';
import { endpointSlice, node, service, type EndpointSpec } from './support/objects.js';

const OPTS: Partial<NftablesOptions> = { clusterCIDRs: ['10.244.0.0/16'] };

/** `n` services; service i has `counts[i]` endpoints (default 3), and NodePort/LB for some. */
function cluster(counts: number[], changeIP: (svc: number, ep: number) => string = (s, e) => `10.244.${s}.${e + 1}`): ClusterObjects {
  const objects = { services: [] as unknown[], endpointSlices: [] as unknown[], nodes: [node('node-a', '192.168.1.10')] as unknown[] };
  counts.forEach((n, i) => {
    const spec = i % 3 === 1 ? { type: 'NodePort' } : i % 3 === 2 ? { type: 'LoadBalancer', externalTrafficPolicy: 'Local' } : {};
    const status = i % 3 === 2 ? { status: { loadBalancer: { ingress: [{ ip: `198.51.100.${i}` }] } } } : {};
    objects.services.push(service('ns', `svc-${i}`, `10.96.0.${i + 1}`, [{ name: 'http', port: 80, ...(i % 3 ? { nodePort: 30000 + i } : {}) }], spec, status));
    const eps: EndpointSpec[] = Array.from({ length: n }, (_, e) => ({ ip: changeIP(i, e), nodeName: e === 0 ? 'node-a' : 'node-b' }));
    objects.endpointSlices.push(endpointSlice('ns', `svc-${i}`, `svc-${i}-1`, [{ name: 'http', port: 8080 }], eps));
  });
  return objects as ClusterObjects;
}

function render(objects: ClusterObjects, opts: Partial<NftablesOptions> = OPTS): NftTable {
  const m = buildNodeModel(objects, 'node-a').model;
  return renderNftables(m.families.IPv4, m.node, opts);
}

/** Everything but elements: what a change must leave alone to be element-only. */
function structure(t: NftTable): unknown {
  return { chains: t.chains, sets: t.sets.map((s) => ({ ...s, elements: undefined })) };
}

const elementCount = (t: NftTable) => t.sets.reduce((n, s) => n + s.elements.length, 0);

describe('nftables layout', () => {
  it('an endpoint replaced, added or removed changes elements only', () => {
    const before = render(cluster([3, 3, 3, 2, 4, 4]));
    const replaced = render(cluster([3, 3, 3, 2, 4, 4], (s, e) => (s === 1 && e === 2 ? '10.244.99.9' : `10.244.${s}.${e + 1}`)));
    const added = render(cluster([3, 4, 3, 2, 4, 4]));
    const removed = render(cluster([3, 2, 3, 2, 4, 4]));
    for (const after of [replaced, added, removed]) {
      expect(structure(after)).toEqual(structure(before));
      expect(after.sets).not.toEqual(before.sets);
    }
  });

  it('a service moving to an endpoint count no one has adds a group, unless the applier keeps it', () => {
    const before = render(cluster([3, 3]));
    expect(structure(render(cluster([3, 5])))).not.toEqual(structure(before));
    const keep = { ...OPTS, keepGroups: [5] };
    expect(structure(render(cluster([3, 5]), keep))).toEqual(structure(render(cluster([3, 3]), keep)));
  });

  it('has no chain per service: ten times the services, the same chains', () => {
    const few = render(cluster([2, 3, 4]));
    const many = render(cluster(Array.from({ length: 30 }, (_, i) => 2 + (i % 3))));
    expect(many.chains.map((c) => c.name)).toEqual(few.chains.map((c) => c.name));
    expect(elementCount(many)).toBeGreaterThan(5 * elementCount(few));
  });

  it('gives ClientIP-affinity services upstream chains of their own, with a dynamic set per endpoint', () => {
    const objects = cluster([2]);
    (objects.services[0] as { spec: Record<string, unknown> }).spec.sessionAffinity = 'ClientIP';
    const t = render(objects);
    expect(t.chains.map((c) => c.name).filter((n) => n.includes('ns/svc-0/tcp/http'))).toEqual([
      expect.stringMatching(/^service-[A-Z2-7]{8}-ns\/svc-0\/tcp\/http$/),
      expect.stringMatching(/^endpoint-[A-Z2-7]{8}-ns\/svc-0\/tcp\/http__10\.244\.0\.1\/8080$/),
      expect.stringMatching(/^endpoint-[A-Z2-7]{8}-ns\/svc-0\/tcp\/http__10\.244\.0\.2\/8080$/),
    ]);
    const affinity = t.sets.filter((s) => s.name.startsWith('affinity-'));
    expect(affinity.map((s) => [s.flags, s.timeoutSeconds])).toEqual([
      [['dynamic', 'timeout'], 10800],
      [['dynamic', 'timeout'], 10800],
    ]);
  });

  it('the full script flushes the rendered sets, not the dynamic ones', () => {
    const objects = cluster([2]);
    (objects.services[0] as { spec: Record<string, unknown> }).spec.sessionAffinity = 'ClientIP';
    const lines = scriptText(render(objects)).split('\n');
    expect(lines.slice(0, 2)).toEqual(['add table ip kube-proxy { comment "rules for kube-proxy" ; }', 'flush table ip kube-proxy']);
    expect(lines).toContain('flush map ip kube-proxy service-ips');
    expect(lines).toContain('flush set ip kube-proxy cluster-ips');
    expect(lines.filter((l) => l.startsWith('flush set ip kube-proxy affinity-'))).toEqual([]);
  });

  it('renderSharedElements gives the elements of the sets whose keys are not claimed, as the table holds them', () => {
    const objects = cluster([3, 1, 2, 0, 4]);
    (objects.services[3] as { spec: Record<string, unknown> }).spec.sessionAffinity = 'ClientIP';
    (objects.services[2] as { spec: Record<string, unknown> }).spec.loadBalancerSourceRanges = ['203.0.113.0/24'];
    const m = buildNodeModel(objects, 'node-a').model;
    const elements = renderSharedElements(m.families.IPv4, m.node, OPTS);
    const table = renderNftables(m.families.IPv4, m.node, OPTS);
    expect(table.sets.filter((s) => s.elements.length > 0).map((s) => s.name)).toContain('firewall-allow');
    const filled = table.sets.filter((s) => s.elements.length > 0 && s.name !== 'nodeport-ips' && !keyedByClaim(s.name));
    expect(filled.map((s) => s.name).sort()).toEqual(['cluster-ips', 'hairpin-endpoints']);
    const byName = (a: [string, unknown], b: [string, unknown]) => a[0].localeCompare(b[0]);
    expect([...elements].sort(byName)).toEqual(filled.map((s): [string, unknown] => [s.name, s.elements]).sort(byName));
  });

  it('refuses comments that could leave their quotes', () => {
    expect(comment('ns/svc:http')).toBe('comment "ns/svc:http"');
    for (const bad of ['a"b', 'a\nb', 'a;b', 'a{b', 'é']) expect(() => comment(bad)).toThrow(/unsafe nftables comment/);
  });

  it('serves node ports on the primary node IP unless --nodeport-addresses says otherwise (KEP-3866)', () => {
    expect(nftablesOptions(DEFAULT_CONFIG).nodePortAddresses).toEqual(['primary']);
    expect(nftablesOptions({ ...DEFAULT_CONFIG, nodePortAddresses: ['0.0.0.0/0'] }).nodePortAddresses).toEqual(['0.0.0.0/0']);
    const t = render(cluster([1, 1]), { ...OPTS, nodePortAddresses: ['primary'] });
    expect(t.sets.find((s) => s.name === 'nodeport-ips')?.elements).toEqual([{ key: ['192.168.1.10'] }]);
  });

  it('drops conntrack-INVALID packets in forward unless told not to', () => {
    const rules = (dropInvalid: boolean) => render(cluster([1]), { ...OPTS, dropInvalid }).chains.find((c) => c.name === 'filter-forward')!.rules;
    expect(rules(true)[0]).toEqual({ rule: 'ct state invalid drop' });
    expect(rules(false).some((r) => r.rule.includes('invalid'))).toBe(false);
  });
});

describe('nftables source ranges', () => {
  it('keeps the outermost of overlapping ranges, and the node-allowed LB IP only when no range holds it', () => {
    const objects = cluster([1, 1, 1]);
    const lb = objects.services[2] as { spec: Record<string, unknown> };
    lb.spec.loadBalancerSourceRanges = ['198.51.100.0/24', '10.0.0.0/8', '10.1.0.0/16', '10.0.0.0/8', '192.168.1.0/24'];
    const allow = render(objects).sets.find((s) => s.name === 'firewall-allow')!.elements.map((e) => e.key.at(-1));
    // 198.51.100.2 (the LB IP) is inside 198.51.100.0/24; the node (192.168.1.10) is allowed.
    expect(allow).toEqual(['198.51.100.0/24', '10.0.0.0/8', '192.168.1.0/24']);
    lb.spec.loadBalancerSourceRanges = ['192.168.0.0/16'];
    expect(render(objects).sets.find((s) => s.name === 'firewall-allow')!.elements.map((e) => e.key.at(-1))).toEqual(['192.168.0.0/16', '198.51.100.2']);
  });
});
