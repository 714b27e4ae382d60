/**
 * The agent's sync around a mode's syncer (agent/sync.ts): the stale UDP flows a change
 * makes must be deleted once the rules are in place, even when the sync that should have
 * programmed the change failed first. The syncer here is a scripted stand-in for a mode;
 * the conntrack deletions are recorded instead of run.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../src/agent/metrics.js';
import { ClusterState } from '../src/agent/state.js';
import { ProxySync } from '../src/agent/sync.js';
import type { ConntrackDeletion } from '../src/conntrack/stale.js';
import type { SyncResult, Syncer } from '../src/modes/mode.js';
import { endpointSlice, node, service } from './support/objects.js';

/** A mode's syncer that answers each sync with the next scripted result. */
class ScriptedSyncer implements Syncer {
  readonly families = ['IPv4' as const];
  constructor(private readonly results: SyncResult[]) {}
  async sync(): Promise<SyncResult> {
    return this.results.shift() ?? { ok: true, full: false, reason: null };
  }
  requireFullSync(): void {}
  async damage(): Promise<string | null> {
    return null;
  }
}

const dns = (ips: string[]) =>
  endpointSlice('kube-system', 'dns', 'dns-1', [{ name: 'dns', port: 53, protocol: 'UDP' }], ips.map((ip) => ({ ip, nodeName: 'node-b' })));

function setup(results: SyncResult[]) {
  const state = new ClusterState('node-a', { problem: () => {} });
  const deleted: ConntrackDeletion[][] = [];
  const sync = new ProxySync(state, new ScriptedSyncer(results), {
    deleteFlows: async (d) => (deleted.push(d), []),
    log: pino({ level: 'silent' }),
    metrics: createMetrics(),
  });
  state.upsertNode(node('node-a', '192.168.0.10'));
  state.upsertService(service('kube-system', 'dns', '10.96.0.10', [{ name: 'dns', port: 53, protocol: 'UDP' }]));
  state.upsertSlice(dns(['10.244.1.5', '10.244.1.6']));
  return { state, sync, deleted };
}

const toGone = (d: ConntrackDeletion[]) => d.filter((x) => x.dnatTo === '10.244.1.6').map((x) => ('origDst' in x ? x.origDst : x.origPortDst));

describe('ProxySync', () => {
  it('deletes the flows of a removed UDP endpoint after the sync that programs it', async () => {
    const { state, sync, deleted } = setup([]);
    expect(await sync.sync()).toBe(true);
    state.upsertSlice(dns(['10.244.1.5']));
    expect(await sync.sync()).toBe(true);
    expect(toGone(deleted.at(-1)!)).toEqual(['10.96.0.10']);
  });

  it('keeps them through a failed sync, and deletes them once a sync succeeds', async () => {
    const { state, sync, deleted } = setup([{ ok: true, full: true, reason: 'required' }, { ok: false, full: false, error: 'restore failed' }]);
    expect(await sync.sync()).toBe(true);
    state.upsertSlice(dns(['10.244.1.5']));
    expect(await sync.sync()).toBe(false);
    expect(deleted).toHaveLength(1);
    expect(toGone(deleted[0]!)).toEqual([]);
    // Nothing new arrives: the retry alone must still delete the gone endpoint's flows.
    expect(await sync.sync()).toBe(true);
    expect(toGone(deleted.at(-1)!)).toEqual(['10.96.0.10']);
    expect(sync.lastUpdated).not.toBeNull();
  });

  it('a change during the failure keeps what the kernel last held as "before"', async () => {
    const { state, sync, deleted } = setup([{ ok: true, full: true, reason: 'required' }, { ok: false, full: false, error: 'restore failed' }]);
    expect(await sync.sync()).toBe(true);
    state.upsertSlice(dns(['10.244.1.5']));
    expect(await sync.sync()).toBe(false);
    // The gone endpoint comes back before any sync succeeds: the kernel never lost it.
    state.upsertSlice(dns(['10.244.1.5', '10.244.1.6']));
    expect(await sync.sync()).toBe(true);
    expect(toGone(deleted.at(-1)!)).toEqual([]);
  });
});
