/**
 * The agent's sync around a mode's syncer (agent/sync.ts): the stale UDP flows a change
 * makes must be deleted once the rules are in place, even when the sync that should have
 * programmed the change failed first. The syncer here is a scripted stand-in for a mode;
 * the conntrack deletions are recorded instead of run.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../src/agent/metrics.js';
import { healthReport } from '../src/agent/servers.js';
import { ClusterState } from '../src/agent/state.js';
import { ProxySync } from '../src/agent/sync.js';
import type { ConntrackDeletion } from '../src/conntrack/stale.js';
import type { SyncResult, Syncer } from '../src/modes/mode.js';
import { endpointSlice, node, service } from './support/objects.js';

const NOTHING_DELETED = { deleted: 0, failed: [], failures: [] };

/** A mode's syncer whose syncs answer as `answer` says. */
class ScriptedSyncer implements Syncer {
  readonly families = ['IPv4' as const];
  constructor(private readonly answer: () => Promise<SyncResult>) {}
  sync(): Promise<SyncResult> {
    return this.answer();
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
  const sync = new ProxySync(state, new ScriptedSyncer(async () => results.shift() ?? { ok: true, full: false, reason: null }), {
    deleteFlows: async (d) => (deleted.push(d), NOTHING_DELETED),
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

  it('records the transaction size a mode reports, and nothing for a mode that reports none', async () => {
    const state = new ClusterState('node-a', { problem: () => {} });
    const metrics = createMetrics();
    const results: SyncResult[] = [{ ok: true, full: true, reason: 'required', written: { commands: 1200, bytes: 90_000 } }, { ok: true, full: false, reason: null }];
    const sync = new ProxySync(state, new ScriptedSyncer(async () => results.shift()!), { deleteFlows: async () => NOTHING_DELETED, log: pino({ level: 'silent' }), metrics });
    expect(await sync.sync()).toBe(true);
    expect(await sync.sync()).toBe(true);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^kubeproxy_sync_proxy_rules_transaction_commands_sum 1200$/m);
    expect(text).toMatch(/^kubeproxy_sync_proxy_rules_transaction_commands_count 1$/m);
    expect(text).toMatch(/^kubeproxy_sync_proxy_rules_transaction_bytes_sum 90000$/m);
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

  it('stays healthy under sustained churn while every sync succeeds, and times each change on its own', async () => {
    // 50 endpoint changes a second on 200 services; each sync takes 57 ms, during which more arrive.
    let t = 0;
    const state = new ClusterState('node-a', { problem: () => {} }, () => t);
    const metrics = createMetrics();
    let n = 0;
    const churn = (until: number) => {
      for (; n * 20 < until; n++) state.upsertSlice(endpointSlice('ns', `svc-${n % 200}`, `s-${n % 200}`, [{ port: 8080 }], [{ ip: `10.244.${n % 200}.${1 + (n % 250)}`, nodeName: 'node-b' }]));
    };
    const timed = new ScriptedSyncer(async () => ((t += 57), churn(t), { ok: true, full: false, reason: null }));
    const sync = new ProxySync(state, timed, { deleteFlows: async () => NOTHING_DELETED, log: pino({ level: 'silent' }), metrics, now: () => t });
    const health = { lastUpdated: () => sync.lastUpdated, pendingSince: () => sync.pendingSince };
    for (const service of Array.from({ length: 200 }, (_, i) => `svc-${i}`)) state.upsertService(service_(service));
    while (t < 120_000) {
      churn(t);
      expect(await sync.sync()).toBe(true);
      expect(healthReport(health, t, 30_000, true).healthy, `at ${t} ms`).toBe(true);
      t += 1000 - 57; // the runner's minimum interval
    }
    const { values } = await metrics.networkProgramming.get();
    const count = values.find((v) => v.metricName?.endsWith('_count'))!.value;
    const sum = values.find((v) => v.metricName?.endsWith('_sum'))!.value;
    expect(count).toBeGreaterThan(100);
    // Each change waits at most one interval plus a sync, never since the churn began.
    expect(sum / count).toBeLessThan(1.1);
  });

  it('turns unhealthy when a sync hangs: taken changes still count as waiting', async () => {
    let t = 0;
    const state = new ClusterState('node-a', { problem: () => {} }, () => t);
    let hang = false;
    const hanging = new ScriptedSyncer(() => (hang ? new Promise<SyncResult>(() => {}) : Promise.resolve({ ok: true, full: true, reason: 'required' })));
    const sync = new ProxySync(state, hanging, { deleteFlows: async () => NOTHING_DELETED, log: pino({ level: 'silent' }), metrics: createMetrics(), now: () => t });
    const health = { lastUpdated: () => sync.lastUpdated, pendingSince: () => sync.pendingSince };
    await sync.sync();
    t = 1000;
    state.upsertService(service_('svc-0'));
    hang = true;
    void sync.sync();
    t = 60_000;
    expect(healthReport(health, t, 30_000, false).healthy).toBe(true);
    t = 61_001;
    expect(healthReport(health, t, 30_000, false).healthy).toBe(false);
  });

  it('a repair that keeps failing turns unhealthy, though no change is waiting', async () => {
    let t = 0;
    const state = new ClusterState('node-a', { problem: () => {} }, () => t);
    let fail = false;
    const syncer = new ScriptedSyncer(async () => (fail ? { ok: false, full: true, error: 'restore failed' } : { ok: true, full: true, reason: 'required' }));
    const sync = new ProxySync(state, syncer, { deleteFlows: async () => NOTHING_DELETED, log: pino({ level: 'silent' }), metrics: createMetrics(), now: () => t });
    const health = { lastUpdated: () => sync.lastUpdated, pendingSince: () => sync.pendingSince };
    await sync.sync();
    // Someone flushed the rules; every full sync that would repair them fails.
    fail = true;
    t = 1000;
    expect(await sync.sync()).toBe(false);
    for (t = 2000; t < 61_000; t += 1000) expect(await sync.sync()).toBe(false);
    expect(healthReport(health, t, 30_000, false).healthy).toBe(true);
    t = 61_001;
    expect(healthReport(health, t, 30_000, false).healthy).toBe(false);
    fail = false;
    expect(await sync.sync()).toBe(true);
    expect(healthReport(health, t, 30_000, false).healthy).toBe(true);
  });
});

function service_(name: string) {
  return service('ns', name, `10.96.${Number(name.slice(4)) >> 8}.${Number(name.slice(4)) & 255}`, [{ port: 80, targetPort: 8080 }]);
}
