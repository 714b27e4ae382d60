/**
 * ServiceCIDR objects (networking.k8s.io/v1) reach the model as each family's service
 * CIDRs: from manifests, from the agent's informers (only for a mode that reads them),
 * and not at all from a cluster that does not serve the API.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ClusterState } from '../src/agent/state.js';
import { startWatches, type ObjectHandlers, type Watches } from '../src/agent/watch.js';
import { kubeconfigConnection } from '../src/kube/connection.js';
import { parseManifests } from '../src/kube/manifests.js';
import { validateServiceCIDR } from '../src/kube/validate.js';
import { buildNodeModel } from '../src/model/build.js';
import type { Problem } from '../src/model/types.js';
import { TestApiServer } from './support/apiserver.js';
import { eventually, node } from './support/objects.js';

const serviceCIDR = (name: string, ...cidrs: unknown[]) => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'ServiceCIDR' as const,
  metadata: { name },
  spec: { cidrs },
});

describe('validateServiceCIDR', () => {
  it('reads one range per family, canonical', () => {
    const r = validateServiceCIDR(serviceCIDR('kubernetes', '10.96.0.7/12', 'FD00:10:96::/112'));
    expect(r.ok && r.value.cidrs.map((c) => c.text)).toEqual(['10.96.0.0/12', 'fd00:10:96::/112']);
  });

  it.each([
    [serviceCIDR('a', 'not-a-cidr'), 'spec.cidrs[0]: "not-a-cidr" is not a CIDR'],
    [serviceCIDR('a', '10.0.0.0/8', '10.1.0.0/16'), 'spec.cidrs: holds two ranges of the same IP family'],
    [serviceCIDR('a', '10.0.0.0/8', 'fd00::/64', '10.1.0.0/16'), 'spec.cidrs: has 3 entries; at most 2 (one per IP family)'],
    [serviceCIDR('A B', '10.0.0.0/8'), 'metadata.name: "A B" is not a valid name'],
    [{ kind: 'ServiceCIDR', metadata: { name: 'a' }, spec: { cidrs: '10.0.0.0/8' } }, 'spec.cidrs: must be a list'],
  ])('refuses %j: %s', (obj, reason) => {
    const r = validateServiceCIDR(obj);
    expect(r.ok ? null : r.problem.reason).toBe(reason);
  });
});

describe('service CIDRs in the model', () => {
  it('come from manifests per family, each range once, a bad object reported and skipped', () => {
    const { objects } = parseManifests(
      JSON.stringify({
        kind: 'List',
        items: [serviceCIDR('kubernetes', '10.96.0.0/16', 'fd00::/108'), serviceCIDR('extra', '10.97.0.0/16'), serviceCIDR('dup', '10.96.0.0/16'), serviceCIDR('bad', '10.0.0.0/33')],
      }),
      'test',
    );
    const { model, problems } = buildNodeModel(objects, 'node-a');
    expect(model.families.IPv4.serviceCIDRs).toEqual(['10.96.0.0/16', '10.97.0.0/16']);
    expect(model.families.IPv6.serviceCIDRs).toEqual(['fd00::/108']);
    expect(problems.map((p) => `${p.kind} ${p.name}`)).toEqual(['ServiceCIDR bad']);
  });

  it('follow the informers: a changed range rebuilds everything at the next take, a no-op does not', () => {
    const problems: Problem[] = [];
    const state = new ClusterState('node-a', { problem: (p) => problems.push(p) }, () => 1000);
    state.upsertServiceCIDR(serviceCIDR('kubernetes', '10.96.0.0/16'));
    expect(state.familyModel('IPv4').serviceCIDRs).toEqual([]);
    expect(state.take().all).toBe(true);
    expect(state.familyModel('IPv4').serviceCIDRs).toEqual(['10.96.0.0/16']);

    state.upsertServiceCIDR(serviceCIDR('copy', '10.96.0.0/16'));
    expect(state.take().all).toBe(false);

    state.upsertServiceCIDR(serviceCIDR('kubernetes', '10.100.0.0/16'));
    expect(state.take().all).toBe(true);
    expect(state.familyModel('IPv4').serviceCIDRs).toEqual(['10.100.0.0/16', '10.96.0.0/16']);

    // Turning invalid drops the range rather than keeping a stale one.
    state.upsertServiceCIDR(serviceCIDR('copy', 'bogus'));
    expect(problems.map((p) => p.name)).toEqual(['copy']);
    state.deleteServiceCIDR(serviceCIDR('kubernetes'));
    expect(state.take().all).toBe(true);
    expect(state.familyModel('IPv4').serviceCIDRs).toEqual([]);
  });
});

describe('the ServiceCIDR informer', () => {
  let api: TestApiServer;
  let watches: Watches | null | undefined;
  let dir: string;
  afterEach(async () => {
    await watches?.stop();
    watches = undefined;
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function start(serviceCIDRs: ObjectHandlers | undefined, served = true) {
    dir = mkdtempSync(join(tmpdir(), 'kpt-servicecidr-'));
    api = await TestApiServer.start({ bookmarkIntervalMs: 200 });
    api.apply(node('node-a', '192.168.0.10'));
    api.apply(serviceCIDR('kubernetes', '10.96.0.0/16'));
    if (!served) api.faults = (r) => (r.kind === 'ServiceCIDR' ? { status: 404 } : undefined);
    const ignore = { upsert: () => {}, remove: () => {} };
    watches = await startWatches(
      kubeconfigConnection(api.writeKubeconfig(join(dir, 'kubeconfig'))),
      'node-a',
      { services: ignore, endpointSlices: ignore, node: ignore, ...(serviceCIDRs ? { serviceCIDRs } : {}), changed: () => {}, rejected: () => {} },
      pino({ level: 'silent' }),
    );
  }

  const named = () => {
    const seen = new Set<string>();
    const name = (o: unknown) => (o as { metadata: { name: string } }).metadata.name;
    return { seen, handlers: { upsert: (o: unknown) => seen.add(name(o)), remove: (o: unknown) => seen.delete(name(o)) } };
  };

  it('lists and watches ServiceCIDRs for a mode that reads them', async () => {
    const { seen, handlers } = named();
    await start(handlers);
    expect([...seen]).toEqual(['kubernetes']);
    api.apply(serviceCIDR('extra', '10.97.0.0/16'));
    await eventually('the added ServiceCIDR arrives', async () => (seen.has('extra') ? true : undefined));
    api.remove('ServiceCIDR', undefined, 'kubernetes');
    await eventually('the deleted ServiceCIDR goes', async () => (seen.has('kubernetes') ? undefined : true));
  });

  it('never asks for them otherwise', async () => {
    await start(undefined);
    expect(api.count('list', 'ServiceCIDR') + api.count('watch', 'ServiceCIDR')).toBe(0);
  });

  it('starts without them when the API server does not serve them (before 1.33)', async () => {
    const { seen, handlers } = named();
    await start(handlers, false);
    expect(seen.size).toBe(0);
    expect(api.count('list', 'ServiceCIDR')).toBe(1);
    expect(api.count('watch', 'ServiceCIDR')).toBe(0);
  });
});
