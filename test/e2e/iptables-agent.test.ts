/**
 * kube-proxy-ts as a node agent, end to end: two node namespaces on a LAN, pods behind
 * each, one agent per node reading a test API server through client-node, and real TCP
 * and UDP connections through the rules the agents program.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestApiServer } from '../support/apiserver.js';
import { endpointSlice, eventually, node, service } from '../support/objects.js';
import { privilegedTestsCanRun } from '../support/privileges.js';
import { TestCluster, type NsProcess, type ProbeResult } from '../support/topology.js';

const canRun = privilegedTestsCanRun('iptables agent e2e', ['ip', 'iptables', 'iptables-restore', 'curl']);
const MAIN = join(import.meta.dirname, '..', '..', 'dist', 'src', 'main.js');
const NS = 'e2e';

const answered = (rs: ProbeResult[]) => new Set(rs.flatMap((r) => (r.ok ? [r.pod] : [])));

describe.runIf(canRun)('iptables agent in network namespaces', () => {
  let api: TestApiServer;
  let cluster: TestCluster;
  let dir: string;
  let kubeconfig: string;
  const agents = new Map<string, NsProcess>();

  async function startAgent(nodeName: string, extra: string[] = []): Promise<NsProcess> {
    const p = await cluster.spawnIn(
      cluster.node(nodeName),
      process.execPath,
      [
        MAIN,
        '--kubeconfig',
        kubeconfig,
        '--hostname-override',
        nodeName,
        '--cluster-cidr',
        '10.244.0.0/16',
        '--iptables-min-sync-period',
        '0s',
        '--iptables-sync-period',
        '10s',
        ...extra,
      ],
      { ready: /synced proxy rules/, readyTimeoutMs: 20_000 },
    );
    agents.set(nodeName, p);
    return p;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kpt-e2e-'));
    api = await TestApiServer.start({ unixSocket: join(dir, 'api.sock'), bookmarkIntervalMs: 1000 });
    cluster = await TestCluster.create({
      nodes: [
        { name: 'node-a', pods: [{ name: 'web-a1', tcp: [8080], udp: [8080] }, { name: 'client-a', tcp: [8080] }] },
        { name: 'node-b', pods: [{ name: 'web-b1', tcp: [8080], udp: [8080] }, { name: 'client-b', tcp: [8080] }] },
      ],
      external: true,
    });
    const fwd = await cluster.forwardUnixSocket(join(dir, 'api.sock'), 6443);
    kubeconfig = api.writeKubeconfig(join(dir, 'kubeconfig'), fwd.url);
    api.apply(node('node-a', cluster.node('node-a').ip));
    api.apply(node('node-b', cluster.node('node-b').ip));
    await startAgent('node-a');
    await startAgent('node-b');
  });

  afterAll(async () => {
    await cluster?.destroy();
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const web = () => [
    { ip: cluster.pod('web-a1').ip, nodeName: 'node-a' },
    { ip: cluster.pod('web-b1').ip, nodeName: 'node-b' },
  ];

  it('serves a new ClusterIP from every endpoint, and keeps the pod source IP', async () => {
    const created = Date.now();
    api.apply(service(NS, 'web', '10.96.0.10', [{ name: 'http', port: 80, targetPort: 8080 }]));
    api.apply(endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web()));
    const first = await eventually('ClusterIP answers', async () => {
      const r = await cluster.tcp(cluster.pod('client-a'), '10.96.0.10', 80, { timeoutMs: 500 });
      return r.ok ? r : undefined;
    });
    console.log(`ClusterIP served ${Date.now() - created} ms after the Service and its EndpointSlice were created`);
    expect(first.ok && first.client.split(':')[0]).toBe(cluster.pod('client-a').ip);
    const many = await cluster.tcpMany(cluster.pod('client-a'), '10.96.0.10', 80, 40);
    expect(answered(many)).toEqual(new Set(['web-a1', 'web-b1']));
  });

  it('rejects connections to a service without endpoints at once', async () => {
    api.apply(service(NS, 'empty', '10.96.0.11', [{ name: 'http', port: 80 }]));
    const r = await eventually('no-endpoint REJECT', async () => {
      const p = await cluster.tcp(cluster.pod('client-a'), '10.96.0.11', 80, { timeoutMs: 2000 });
      return !p.ok && p.error === 'refused' ? p : undefined;
    });
    expect(r.ok).toBe(false);
  });

  it('follows endpoints added and removed', async () => {
    api.apply(endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)));
    await eventually('only web-a1 answers', async () => {
      const rs = await cluster.tcpMany(cluster.pod('client-b'), '10.96.0.10', 80, 20);
      const seen = answered(rs);
      return seen.size === 1 && seen.has('web-a1') && rs.every((r) => r.ok) ? true : undefined;
    });
    api.apply(endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web()));
    await eventually('both answer again', async () => {
      const seen = answered(await cluster.tcpMany(cluster.pod('client-b'), '10.96.0.10', 80, 30));
      return seen.size === 2 ? true : undefined;
    });
  });
});
