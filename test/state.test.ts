import { describe, expect, it } from 'vitest';
import { ClusterState } from '../src/agent/state.js';
import type { Problem } from '../src/model/types.js';
import { endpointSlice, node, service } from './support/objects.js';

function fresh(now = () => 1000) {
  const problems: Problem[] = [];
  const state = new ClusterState('node-a', { problem: (p) => problems.push(p) }, now);
  return { state, problems };
}

const names = (state: ClusterState) => state.familyModel('IPv4').servicePorts.map((sp) => `${sp.name} ${sp.endpoints.map((e) => e.address).join(',')}`);

describe('ClusterState', () => {
  it('builds the model from informer events and reports only what changed', () => {
    const { state } = fresh();
    state.upsertNode(node('node-a', '192.168.0.10'));
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    state.upsertService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    state.upsertSlice(endpointSlice('ns', 'a', 'a-1', [{ name: 'http', port: 8080 }], [{ ip: '10.244.0.5', nodeName: 'node-a' }]));
    expect(state.take().all).toBe(true);
    expect(names(state)).toEqual(['ns/a:http 10.244.0.5:8080', 'ns/b:http ']);

    const before = state.familyModel('IPv4').servicePorts;
    state.upsertSlice(endpointSlice('ns', 'b', 'b-1', [{ name: 'http', port: 8080 }], [{ ip: '10.244.1.5', nodeName: 'node-b' }]));
    const changes = state.take();
    expect(changes.all).toBe(false);
    expect([...changes.services]).toEqual(['ns/b']);
    const after = state.familyModel('IPv4').servicePorts;
    // Unchanged services keep their model objects: renderers memoize on them.
    expect(after[0]).toBe(before[0]);
    expect(after[1]).not.toBe(before[1]);
    expect(names(state)).toEqual(['ns/a:http 10.244.0.5:8080', 'ns/b:http 10.244.1.5:8080']);
  });

  it('builds a Service from slices stored before it, updated or deleted between takes', () => {
    const { state } = fresh();
    const slice = (ip: string) => endpointSlice('ns', 'a', 'a-1', [{ name: 'http', port: 8080 }], [{ ip, nodeName: 'node-a' }]);
    state.upsertSlice(slice('10.244.0.5'));
    state.upsertSlice(slice('10.244.0.6'));
    state.upsertSlice(endpointSlice('ns', 'a', 'a-2', [{ name: 'http', port: 8080 }], [{ ip: '10.244.0.7', nodeName: 'node-a' }]));
    state.deleteSlice(endpointSlice('ns', 'a', 'a-2', [], []));
    state.take();
    expect(names(state)).toEqual([]);
    // The Service arrives after a take: its slice, stored before, is read again.
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    state.take();
    expect(names(state)).toEqual(['ns/a:http 10.244.0.6:8080']);
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 81 }]));
    state.take();
    expect(state.familyModel('IPv4').servicePorts.map((sp) => `${sp.port} ${sp.endpoints.map((e) => e.address).join(',')}`)).toEqual(['81 10.244.0.6:8080']);
  });

  it('drops a Service whose update turns invalid, and says why', () => {
    const { state, problems } = fresh();
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    state.take();
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 70000 }]));
    expect([...state.take().services]).toEqual(['ns/a']);
    expect(names(state)).toEqual([]);
    expect(problems).toHaveLength(1);
    expect(problems[0]!.reason).toMatch(/spec.ports\[0\].port/);
  });

  it('moves a slice between services when its service-name label changes', () => {
    const { state } = fresh();
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    state.upsertService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    state.upsertSlice(endpointSlice('ns', 'a', 'shared', [{ name: 'http', port: 8080 }], [{ ip: '10.244.0.5', nodeName: 'node-a' }]));
    state.take();
    state.upsertSlice(endpointSlice('ns', 'b', 'shared', [{ name: 'http', port: 8080 }], [{ ip: '10.244.0.5', nodeName: 'node-a' }]));
    expect(new Set(state.take().services)).toEqual(new Set(['ns/a', 'ns/b']));
    expect(names(state)).toEqual(['ns/a:http ', 'ns/b:http 10.244.0.5:8080']);
    state.deleteSlice(endpointSlice('ns', 'b', 'shared', [], []));
    state.take();
    expect(names(state)).toEqual(['ns/a:http ', 'ns/b:http ']);
  });

  it('rebuilds everything when its own Node changes, and ignores other nodes', () => {
    const { state } = fresh();
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    state.take();
    state.upsertNode(node('node-b', '192.168.0.11', 'zone-b'));
    expect(state.take().all).toBe(false);
    state.upsertNode(node('node-a', '192.168.0.10', 'zone-b'));
    expect(state.take().all).toBe(true);
    expect(state.nodeContext.zone).toBe('zone-b');
  });

  it('tracks when each change not yet taken arrived; take() hands those times over', () => {
    let now = 1000;
    const { state } = fresh(() => now);
    expect(state.pendingSince).toBe(1000);
    expect(state.take().seenAt).toEqual(new Map([['*', 1000]]));
    expect(state.pendingSince).toBeNull();
    now = 2000;
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    now = 3000;
    state.upsertService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 81 }]));
    expect(state.pendingSince).toBe(2000);
    // A service changed twice waits since its first change.
    expect(state.take().seenAt).toEqual(new Map([['ns/a', 2000], ['ns/b', 3000]]));
    expect(state.pendingSince).toBeNull();
  });
});
