/**
 * userspace mode's cure for long-lived connection imbalance, end to end: 8 clients on
 * long-lived connections against 2 pods, then a 3rd pod added. Kernel modes (and this mode
 * without a max age) balance per connection, so the new pod gets nothing until clients
 * reconnect; with a max connection age (here the Service annotation, 2 s) the agent ends
 * connections at a quiet point and the reconnecting clients spread over all 3 pods.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestApiServer } from '../support/apiserver.js';
import { endpointSlice, eventually, node, service, type EndpointSpec } from '../support/objects.js';
import { privilegedTestsCanRun } from '../support/privileges.js';
import { TestCluster, type NsProcess } from '../support/topology.js';
import { startClusterApi } from './cluster-api.js';
import { startDaemonSetAgent } from './daemonset-agent.js';

const NS = 'e2e';
const SUPPORT = join(import.meta.dirname, '..', 'support');
const PODS = ['web-1', 'web-2', 'web-3'];
const CLIENTS = 8;
const AGE = '2s';

interface Sample {
  t: number;
  counts: Record<string, number>;
  reconnects: number;
}

const samples = (p: NsProcess): Sample[] =>
  p.output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Sample);

/** Each pod's share of the answers in `ss`. */
function shares(ss: Sample[]): Record<string, number> {
  const total: Record<string, number> = Object.fromEntries(PODS.map((p) => [p, 0]));
  for (const s of ss) for (const [pod, n] of Object.entries(s.counts)) total[pod] = (total[pod] ?? 0) + n;
  const sum = Object.values(total).reduce((a, b) => a + b, 0);
  return Object.fromEntries(Object.entries(total).map(([pod, n]) => [pod, sum === 0 ? 0 : n / sum]));
}

const show = (s: Record<string, number>) => PODS.map((p) => `${p} ${Math.round((s[p] ?? 0) * 100)}%`).join(', ');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const canRun = privilegedTestsCanRun('userspace rebalancing e2e', ['ip', 'iptables', 'iptables-restore']);

describe.runIf(canRun)('userspace mode rebalances long-lived connections onto a new pod', () => {
  let api: TestApiServer;
  let cluster: TestCluster;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kpt-rebalance-'));
    cluster = await TestCluster.create({ nodes: [{ name: 'node-a', pods: [{ name: 'client' }, ...PODS.map((name) => ({ name }))] }] });
    const clusterApi = await startClusterApi(cluster, dir);
    api = clusterApi.api;
    api.apply(node('node-a', cluster.node('node-a').ip));
    for (const pod of PODS) await cluster.spawnIn(cluster.pod(pod), process.execPath, [join(SUPPORT, 'keepalive-server.mjs'), pod, '9000'], { ready: /^READY$/m });
    await startDaemonSetAgent({ cluster, node: 'node-a', mode: 'userspace', api: clusterApi, dir, flags: ['--iptables-min-sync-period', '0s', '--iptables-sync-period', '10s'] });
  }, 60_000);

  afterAll(async () => {
    await cluster?.destroy();
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const pods = (...names: string[]): EndpointSpec[] => names.map((n) => ({ ip: cluster.pod(n).ip, nodeName: 'node-a' }));

  it('spreads 8 long-lived clients over all 3 pods within the max age, and only with it', async () => {
    // Same pods, two Services: one with the age annotation, one without (the flag's 0: never).
    api.apply(service(NS, 'rebalanced', '10.96.1.10', [{ name: 'app', port: 80, targetPort: 9000 }], {}, { metadata: { namespace: NS, name: 'rebalanced', annotations: { 'userspace.kube-proxy-ts.io/max-connection-age': AGE } } }));
    api.apply(service(NS, 'pinned', '10.96.1.11', [{ name: 'app', port: 80, targetPort: 9000 }]));
    for (const svc of ['rebalanced', 'pinned']) api.apply(endpointSlice(NS, svc, `${svc}-1`, [{ name: 'app', port: 9000 }], pods('web-1', 'web-2')));
    await eventually('both services answer', async () => {
      // Connected, and no answer without a request: the keep-alive servers are behind both.
      const probes = await Promise.all(['10.96.1.10', '10.96.1.11'].map((ip) => cluster.tcp(cluster.pod('client'), ip, 80, { timeoutMs: 500 })));
      const ok = probes.map((r) => !r.ok && r.error === 'no-answer');
      return ok.every(Boolean) ? true : undefined;
    });
    const script = join(SUPPORT, 'keepalive-clients.mjs');
    const clients = {
      rebalanced: await cluster.spawnIn(cluster.pod('client'), process.execPath, [script, '10.96.1.10', '80', String(CLIENTS), '100']),
      pinned: await cluster.spawnIn(cluster.pod('client'), process.execPath, [script, '10.96.1.11', '80', String(CLIENTS), '100']),
    };
    await sleep(3_000);
    const before = { rebalanced: samples(clients.rebalanced).length, pinned: samples(clients.pinned).length };
    for (const svc of ['rebalanced', 'pinned']) api.apply(endpointSlice(NS, svc, `${svc}-1`, [{ name: 'app', port: 9000 }], pods(...PODS)));
    // One age (2 s, +-10%) and the quiet point after it, plus time for the sync: then measure 3 s.
    await sleep(3_500);
    const start = { rebalanced: samples(clients.rebalanced).length, pinned: samples(clients.pinned).length };
    await sleep(3_000);
    const result = Object.fromEntries(
      (['rebalanced', 'pinned'] as const).map((svc) => {
        const all = samples(clients[svc]);
        return [svc, { before: shares(all.slice(Math.max(0, before[svc] - 4), before[svc])), after: shares(all.slice(start[svc])), reconnects: all.at(-1)?.reconnects ?? 0 }];
      }),
    );
    for (const [svc, r] of Object.entries(result)) console.log(`${svc}: before the 3rd pod: ${show(r.before)}; after: ${show(r.after)}; reconnects ${r.reconnects}`);
    expect(result.rebalanced!.before['web-3']).toBe(0);
    for (const pod of PODS) expect(result.rebalanced!.after[pod]).toBeGreaterThan(0.15);
    // Without a max age nothing moves: the new pod gets no traffic from the clients already connected.
    expect(result.pinned!.after['web-3']).toBe(0);
    expect(result.pinned!.reconnects).toBe(0);

    // The agent's metrics say the same per endpoint: connections open to the new pod, bytes to and from it.
    const metrics = (await cluster.exec(cluster.node('node-a'), 'curl', ['-s', '--max-time', '2', 'http://127.0.0.1:10249/metrics'])).stdout;
    const web3 = `${cluster.pod('web-3').ip}:9000`;
    const value = (name: string, labels: string) => Number(new RegExp(`^${name}\\{${labels.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    expect(value('kubeproxy_ts_userspace_endpoint_active_connections', `listener="${NS}/rebalanced:app TCP",endpoint="${web3}"`)).toBeGreaterThan(0);
    expect(value('kubeproxy_ts_userspace_endpoint_active_connections', `listener="${NS}/pinned:app TCP",endpoint="${web3}"`)).toBeNaN();
    expect(value('kubeproxy_ts_userspace_endpoint_bytes_total', `listener="${NS}/rebalanced:app TCP",endpoint="${web3}",direction="from_endpoint"`)).toBeGreaterThan(0);
  }, 60_000);
});
