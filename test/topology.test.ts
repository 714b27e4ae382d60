/**
 * The namespace topology used by the end-to-end tests carries real traffic: pod to pod on
 * one node and across nodes without NAT, node to pod, UDP with a fixed source port, refused
 * versus timed-out versus unreachable, the external client reaching a node's LAN address,
 * the Unix-socket forwarder, hand-written DNAT seen by bridged pod traffic (the property
 * the proxy depends on), hairpin, the same over IPv6 for the dual-stack suites, and a
 * teardown that leaves no namespace behind.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';
import { clientIP as clientAddress, TestCluster, type ProbeResult } from './support/topology.js';

function namespaces(): string[] {
  return run('ip', ['netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

function clientIp(r: ProbeResult): string {
  if (!r.ok) throw new Error(`probe failed: ${r.error}`);
  return r.client.split(':')[0] ?? '';
}

describe('namespace test cluster', () => {
  const canRun = privilegedTestsCanRun('namespace test cluster', ['ip', 'bridge', 'iptables', 'ip6tables', 'sysctl']);
  let cluster: TestCluster;
  let tmp: string | undefined;
  let server: Server | undefined;

  beforeAll(async () => {
    if (!canRun) return;
    const started = Date.now();
    cluster = await TestCluster.create({
      nodes: [
        {
          name: 'node-a',
          pods: [
            { name: 'web-a1', tcp: [8080], udp: [8080] },
            { name: 'web-a2', tcp: [8080], udp: [8080] },
          ],
        },
        {
          name: 'node-b',
          pods: [
            { name: 'web-b1', tcp: [8080], udp: [8080] },
            { name: 'web-b2', tcp: [8080], udp: [8080] },
          ],
        },
      ],
      external: true,
    });
    console.log(`TestCluster.create (2 nodes x 2 pods + external): ${Date.now() - started} ms`);
  });

  afterAll(async () => {
    await cluster?.destroy();
    server?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it.runIf(canRun)('lays out addresses and sees bridge-nf-call-iptables=1 in every node namespace', () => {
    expect(cluster.node('node-a').ip).toBe('10.99.0.11');
    expect(cluster.node('node-b').ip).toBe('10.99.0.12');
    expect(cluster.pod('web-a1').ip).toBe('10.244.1.11');
    expect(cluster.pod('web-b2').ip).toBe('10.244.2.12');
    expect(cluster.external?.ip).toBe('10.99.0.200');
    expect(cluster.bridgeNfCallIptables).toEqual({ 'node-a': '1', 'node-b': '1' });
    const hairpin = cluster.execSync(cluster.node('node-a'), 'bridge', ['-d', 'link', 'show', 'dev', 'veth1']);
    expect(hairpin.stdout).toMatch(/hairpin on/);
  });

  it.runIf(canRun)('pod to pod on the same node and across nodes, with the real source IP', async () => {
    const a1 = cluster.pod('web-a1');
    const same = await cluster.tcp(a1, cluster.pod('web-a2').ip, 8080);
    expect(same).toMatchObject({ ok: true, pod: 'web-a2' });
    expect(clientIp(same)).toBe(a1.ip);

    const across = await cluster.tcp(a1, cluster.pod('web-b1').ip, 8080);
    expect(across).toMatchObject({ ok: true, pod: 'web-b1' });
    expect(clientIp(across)).toBe(a1.ip);

    const back = await cluster.tcp(cluster.pod('web-b2'), a1.ip, 8080);
    expect(back).toMatchObject({ ok: true, pod: 'web-a1' });
    expect(clientIp(back)).toBe(cluster.pod('web-b2').ip);
  });

  it.runIf(canRun)('node to pod, local and remote', async () => {
    const nodeA = cluster.node('node-a');
    const local = await cluster.tcp(nodeA, cluster.pod('web-a2').ip, 8080);
    expect(local).toMatchObject({ ok: true, pod: 'web-a2' });
    expect(clientIp(local)).toBe(nodeA.gateway);
    const remote = await cluster.tcp(nodeA, cluster.pod('web-b1').ip, 8080);
    expect(remote).toMatchObject({ ok: true, pod: 'web-b1' });
    expect(clientIp(remote)).toBe(nodeA.ip);
  });

  it.runIf(canRun)('UDP answers, keeping a fixed source port', async () => {
    const a2 = cluster.pod('web-a2');
    for (let i = 0; i < 2; i++) {
      const r = await cluster.udp(a2, cluster.pod('web-b2').ip, 8080, { sourcePort: 40_000 });
      expect(r).toMatchObject({ ok: true, pod: 'web-b2', client: `${a2.ip}:40000` });
    }
    const any = await cluster.udp(cluster.node('node-b'), a2.ip, 8080);
    expect(any).toMatchObject({ ok: true, pod: 'web-a2' });
  });

  it.runIf(canRun)('tells refused, timeout and unreachable apart', async () => {
    const nodeA = cluster.node('node-a');
    const a1 = cluster.pod('web-a1');
    expect(await cluster.tcp(a1, cluster.pod('web-b1').ip, 9)).toEqual({ ok: false, error: 'refused' });
    expect(await cluster.udp(a1, cluster.pod('web-b1').ip, 9)).toEqual({ ok: false, error: 'refused' });

    const route = (args: string[]) => cluster.execSync(nodeA, 'ip', ['route', 'add', ...args]);
    expect(route(['blackhole', '10.123.0.0/16']).status).toBe(0);
    expect(route(['unreachable', '10.124.0.0/16']).status).toBe(0);
    const t0 = Date.now();
    expect(await cluster.tcp(a1, '10.123.0.1', 80, { timeoutMs: 300 })).toEqual({ ok: false, error: 'timeout' });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await cluster.udp(a1, '10.123.0.1', 53, { timeoutMs: 300 })).toEqual({ ok: false, error: 'timeout' });
    expect(await cluster.tcp(a1, '10.124.0.1', 80, { timeoutMs: 1000 })).toEqual({ ok: false, error: 'unreachable' });
  });

  it.runIf(canRun)('tcpMany makes sequential connections in one process', async () => {
    const rs = await cluster.tcpMany(cluster.pod('web-b1'), cluster.pod('web-a1').ip, 8080, 20);
    expect(rs).toHaveLength(20);
    expect(rs.every((r) => r.ok && r.pod === 'web-a1')).toBe(true);
    expect(new Set(rs.map((r) => (r.ok ? r.client : r.error))).size).toBe(20);
  });

  it.runIf(canRun)('the external client reaches node LAN addresses but has no route to pods', async () => {
    const ext = cluster.external!;
    const nodeB = cluster.node('node-b');
    await cluster.startEchoServer(nodeB, 'node-b-host', { tcp: [30080], udp: [30080] });
    const r = await cluster.tcp(ext, nodeB.ip, 30080);
    expect(r).toMatchObject({ ok: true, pod: 'node-b-host' });
    expect(clientIp(r)).toBe(ext.ip);
    expect(await cluster.udp(ext, nodeB.ip, 30080)).toMatchObject({ ok: true, pod: 'node-b-host' });
    expect(await cluster.tcp(ext, cluster.pod('web-b1').ip, 8080, { timeoutMs: 500 })).toEqual({
      ok: false,
      error: 'unreachable',
    });
  });

  it.runIf(canRun)('forwards 10.99.0.254:PORT in the lan namespace to a Unix socket served by the test', async () => {
    tmp = mkdtempSync(join(tmpdir(), 'kpt-topo-'));
    const socketPath = join(tmp, 'api.sock');
    server = createServer((req, res) => res.end(`hello ${req.method} ${req.url}`));
    await new Promise<void>((done) => server!.listen(socketPath, done));
    const fwd = await cluster.forwardUnixSocket(socketPath, 6443);
    expect(fwd.url).toBe('http://10.99.0.254:6443');
    for (const from of [cluster.node('node-a'), cluster.node('node-b'), cluster.pod('web-b2')]) {
      const r = await cluster.exec(from, 'curl', ['-sS', '--max-time', '5', `${fwd.url}/api/v1/nodes`]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('hello GET /api/v1/nodes');
    }
  });

  it.runIf(canRun)('bridged pod traffic passes the node nat PREROUTING (DNAT to a same-node pod, hairpin)', async () => {
    const nodeA = cluster.node('node-a');
    const a1 = cluster.pod('web-a1');
    const a2 = cluster.pod('web-a2');
    const ipt = (args: string[]) => {
      const r = cluster.execSync(nodeA, 'iptables', ['-w', '-t', 'nat', ...args]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    };
    // A ClusterIP-like rule: pod -> 10.96.0.10:80 -> another pod on the same node. The
    // reply a2 -> a1 crosses cni0 purely bridged; it is un-DNATed only if br_netfilter
    // hands it to conntrack.
    ipt(['-A', 'PREROUTING', '-d', '10.96.0.10/32', '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${a2.ip}:8080`]);
    ipt(['-A', 'PREROUTING', '-d', '10.96.0.10/32', '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', `${a2.ip}:8080`]);
    const svc = await cluster.tcp(a1, '10.96.0.10', 80);
    expect(svc).toMatchObject({ ok: true, pod: 'web-a2' });
    expect(clientIp(svc)).toBe(a1.ip);
    expect(await cluster.udp(a1, '10.96.0.10', 53)).toMatchObject({ ok: true, pod: 'web-a2' });

    // A frame addressed at L2 to a pod on the same bridge (never routed): only
    // br_netfilter lets the nat table see it.
    ipt(['-A', 'PREROUTING', '-d', `${a2.ip}/32`, '-p', 'tcp', '--dport', '9999', '-j', 'DNAT', '--to-destination', `${a2.ip}:8080`]);
    expect(await cluster.tcp(a1, a2.ip, 9999)).toMatchObject({ ok: true, pod: 'web-a2' });

    // Hairpin: a pod reaching itself through a service address, masqueraded as kube-proxy does.
    ipt(['-A', 'PREROUTING', '-d', '10.96.0.11/32', '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${a1.ip}:8080`]);
    ipt(['-A', 'POSTROUTING', '-s', `${a1.ip}/32`, '-d', `${a1.ip}/32`, '-j', 'MASQUERADE']);
    const self = await cluster.tcp(a1, '10.96.0.11', 80);
    expect(self).toMatchObject({ ok: true, pod: 'web-a1' });
    expect(clientIp(self)).toBe(nodeA.gateway);

    const counters = cluster.execSync(nodeA, 'iptables', ['-w', '-t', 'nat', '-L', 'PREROUTING', '-n', '-v', '-x']).stdout;
    console.log(`node-a nat PREROUTING after the probes:\n${counters}`);
  });

  it.runIf(canRun)('lays out IPv6 addresses, with IPv6 forwarding and bridge-nf-call-ip6tables=1 on every node', () => {
    expect(cluster.node('node-a').ip6).toBe('fd00:99::11');
    expect(cluster.node('node-b').ip6).toBe('fd00:99::12');
    expect(cluster.node('node-b').podCIDR6).toBe('fd00:10:244:2::/64');
    expect(cluster.node('node-b').gateway6).toBe('fd00:10:244:2::1');
    expect(cluster.pod('web-a1').ip6).toBe('fd00:10:244:1::11');
    expect(cluster.pod('web-b2').ip6).toBe('fd00:10:244:2::12');
    expect(cluster.external?.ip6).toBe('fd00:99::c8');
    expect(cluster.bridgeNfCallIp6tables).toEqual({ 'node-a': '1', 'node-b': '1' });
    for (const n of cluster.nodes) {
      expect(cluster.execSync(n, 'sysctl', ['-n', 'net.ipv6.conf.all.forwarding']).stdout.trim()).toBe('1');
      // Still the proxy's to set (IPv4 only; there is no IPv6 route_localnet).
      expect(cluster.execSync(n, 'sysctl', ['-n', 'net.ipv4.conf.all.route_localnet']).stdout.trim()).toBe('0');
    }
  });

  it.runIf(canRun)('IPv6: pod to pod on the same node and across nodes, node to pod, UDP, refused', async () => {
    const a1 = cluster.pod('web-a1');
    const same = await cluster.tcp(a1, cluster.pod('web-a2').ip6, 8080);
    expect(same).toMatchObject({ ok: true, pod: 'web-a2', client: expect.stringMatching(/^\[fd00:10:244:1::11\]:\d+$/) });
    expect(clientAddress(same)).toBe(a1.ip6);
    const across = await cluster.tcp(a1, cluster.pod('web-b1').ip6, 8080);
    expect(across).toMatchObject({ ok: true, pod: 'web-b1' });
    expect(clientAddress(across)).toBe(a1.ip6);
    const nodeA = cluster.node('node-a');
    expect(clientAddress(await cluster.tcp(nodeA, cluster.pod('web-a2').ip6, 8080))).toBe(nodeA.gateway6);
    expect(clientAddress(await cluster.tcp(nodeA, cluster.pod('web-b1').ip6, 8080))).toBe(nodeA.ip6);
    // Brackets are accepted too.
    expect(await cluster.tcp(a1, `[${cluster.pod('web-b2').ip6}]`, 8080)).toMatchObject({ ok: true, pod: 'web-b2' });
    const a2 = cluster.pod('web-a2');
    const udp = await cluster.udp(a2, cluster.pod('web-b2').ip6, 8080, { sourcePort: 40_001 });
    expect(udp).toMatchObject({ ok: true, pod: 'web-b2', client: `[${a2.ip6}]:40001` });
    expect(await cluster.tcp(a1, cluster.pod('web-b1').ip6, 9)).toEqual({ ok: false, error: 'refused' });
    expect(await cluster.udp(a1, cluster.pod('web-b1').ip6, 9)).toEqual({ ok: false, error: 'refused' });
    // IPv4 answers keep their plain form.
    const v4 = await cluster.tcp(a1, cluster.pod('web-b1').ip, 8080);
    expect(v4).toMatchObject({ ok: true, client: expect.stringMatching(/^10\.244\.1\.11:\d+$/) });
    expect(clientAddress(v4)).toBe(a1.ip);
  });

  it.runIf(canRun)('IPv6: the external client reaches node LAN addresses but has no route to pods', async () => {
    const ext = cluster.external!;
    const nodeA = cluster.node('node-a');
    await cluster.startEchoServer(nodeA, 'node-a-host', { tcp: [30081] });
    const r = await cluster.tcp(ext, nodeA.ip6, 30081);
    expect(r).toMatchObject({ ok: true, pod: 'node-a-host' });
    expect(clientAddress(r)).toBe(ext.ip6);
    expect(await cluster.tcp(ext, cluster.pod('web-a1').ip6, 8080, { timeoutMs: 500 })).toEqual({ ok: false, error: 'unreachable' });
  });

  it.runIf(canRun)('IPv6: bridged pod traffic passes the node ip6tables nat PREROUTING (DNAT to a same-node pod, hairpin)', async () => {
    const nodeB = cluster.node('node-b');
    const b1 = cluster.pod('web-b1');
    const b2 = cluster.pod('web-b2');
    const ipt = (args: string[]) => {
      const r = cluster.execSync(nodeB, 'ip6tables', ['-w', '-t', 'nat', ...args]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    };
    ipt(['-A', 'PREROUTING', '-d', 'fd00:10:96::10/128', '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `[${b2.ip6}]:8080`]);
    const svc = await cluster.tcp(b1, 'fd00:10:96::10', 80);
    expect(svc).toMatchObject({ ok: true, pod: 'web-b2' });
    expect(clientAddress(svc)).toBe(b1.ip6);
    ipt(['-A', 'PREROUTING', '-d', 'fd00:10:96::11/128', '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `[${b1.ip6}]:8080`]);
    ipt(['-A', 'POSTROUTING', '-s', `${b1.ip6}/128`, '-d', `${b1.ip6}/128`, '-j', 'MASQUERADE']);
    const self = await cluster.tcp(b1, 'fd00:10:96::11', 80);
    expect(self).toMatchObject({ ok: true, pod: 'web-b1' });
    expect(clientAddress(self)).toBe(nodeB.gateway6);
  });

  it.runIf(canRun)('destroy() kills every process and removes every namespace, twice', async () => {
    const names = cluster.namespaceNames;
    expect(names.length).toBe(8); // lan, 2 nodes, 4 pods, external
    expect(namespaces()).toEqual(expect.arrayContaining(names));
    const procs = [...cluster.spawned];
    expect(procs.length).toBeGreaterThanOrEqual(6);
    await cluster.destroy();
    await cluster.destroy();
    const left = namespaces();
    expect(left.filter((n) => n.startsWith(cluster.id))).toEqual([]);
    expect(procs.every((p) => !p.running)).toBe(true);
  });
});
