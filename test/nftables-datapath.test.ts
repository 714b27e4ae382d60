/**
 * The nftables renderer's table carries real traffic: rendered from manifests, loaded with
 * `nft -f` into a node of a network-namespace cluster (no agent: the applier and syncer
 * have their own suite), and probed with real connections. It checks what this layout does
 * differently from upstream's chains (shared numgen maps, the hairpin set, nodeport groups)
 * and upstream nftables' own behaviours (unserved ports REJECTed, unallocated service-CIDR
 * addresses DROPped).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { familySections } from '../src/modes/family-sections.js';
import { FAMILY_BANNER } from '../src/modes/nftables/dryrun.js';
import { endpointSlice, endpointSlice6, node, service, service6 } from './support/objects.js';
import { pipeline } from './support/pipeline.js';
import { privilegedTestsCanRun } from './support/privileges.js';
import { clientIP, CLUSTER_CIDR6, EXTERNAL_IP, TestCluster } from './support/topology.js';

const canRun = privilegedTestsCanRun('nftables datapath', ['ip', 'nft', 'conntrack']);

describe.runIf(canRun)('nftables table in a network-namespace node', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await TestCluster.create({
      nodes: [
        { name: 'node-a', pods: [{ name: 'a1', tcp: [8080], udp: [8080] }, { name: 'a2', tcp: [8080] }] },
        { name: 'node-b', pods: [{ name: 'b1', tcp: [8080], udp: [8080] }] },
      ],
      external: true,
    });
    const [a, b] = [cluster.node('node-a'), cluster.node('node-b')];
    const [a1, a2, b1] = [cluster.pod('a1'), cluster.pod('a2'), cluster.pod('b1')];
    const items = [
      node('node-a', [a.ip, a.ip6]),
      node('node-b', [b.ip, b.ip6]),
      { apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs: ['10.96.0.0/16'] } },
      service('e2e', 'web', '10.96.0.20', [{ name: 'http', port: 80 }]),
      endpointSlice('e2e', 'web', 'web-1', [{ name: 'http', port: 8080 }], [
        { ip: a1.ip, nodeName: 'node-a' },
        { ip: b1.ip, nodeName: 'node-b' },
      ]),
      service('e2e', 'dns', '10.96.0.25', [{ name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP', nodePort: 30053 }], { type: 'NodePort' }),
      endpointSlice('e2e', 'dns', 'dns-1', [{ name: 'dns', port: 8080, protocol: 'UDP' }], [
        { ip: a1.ip, nodeName: 'node-a' },
        { ip: b1.ip, nodeName: 'node-b' },
      ]),
      service('e2e', 'empty', '10.96.0.21', [{ name: 'http', port: 80 }]),
      service('e2e', 'local', '10.96.0.22', [{ name: 'http', port: 80, nodePort: 30080 }], { type: 'NodePort', externalTrafficPolicy: 'Local' }),
      endpointSlice('e2e', 'local', 'local-1', [{ name: 'http', port: 8080 }], [
        { ip: a2.ip, nodeName: 'node-a' },
        { ip: b1.ip, nodeName: 'node-b' },
      ]),
      ...[
        ['open', '10.96.0.23', '192.0.2.50', '10.99.0.0/24'],
        ['closed', '10.96.0.24', '192.0.2.51', '203.0.113.0/24'],
      ].flatMap(([name, clusterIP, lbIP, range]) => [
        service('e2e', name!, clusterIP!, [{ name: 'http', port: 80, nodePort: name === 'open' ? 30081 : 30082 }], { type: 'LoadBalancer', loadBalancerSourceRanges: [range] }, {
          status: { loadBalancer: { ingress: [{ ip: lbIP }] } },
        }),
        endpointSlice('e2e', name!, `${name}-1`, [{ name: 'http', port: 8080 }], [{ ip: b1.ip, nodeName: 'node-b' }]),
      ]),
    ];
    items.push(
      { apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'v6' }, spec: { cidrs: ['fd00:10:96::/112'] } },
      service6('e2e', 'web6', 'fd00:10:96::20', [{ name: 'http', port: 80 }]),
      endpointSlice6('e2e', 'web6', 'web6-1', [{ name: 'http', port: 8080 }], [
        { ip: a1.ip6, nodeName: 'node-a' },
        { ip: b1.ip6, nodeName: 'node-b' },
      ]),
    );
    for (const lb of ['192.0.2.50', '192.0.2.51']) await cluster.exec(cluster.external!, 'ip', ['route', 'add', lb, 'via', a.ip]);
    const text = pipeline(JSON.stringify({ apiVersion: 'v1', kind: 'List', items }), ['--proxy-mode', 'nftables', '--hostname-override', 'node-a', '--cluster-cidr', `10.244.0.0/16,${CLUSTER_CIDR6}`]).dryRunText();
    for (const script of Object.values(familySections(text, FAMILY_BANNER))) {
      const r = await cluster.exec(a, 'nft', ['-f', '-'], script);
      expect(r.status, r.stderr).toBe(0);
    }
  }, 60_000);

  afterAll(async () => {
    await cluster?.destroy();
  });

  it('balances a cluster IP over both endpoints, and masquerades only a pod that lands on itself (hairpin)', async () => {
    const a1 = cluster.pod('a1');
    const results = await cluster.tcpMany(a1, '10.96.0.20', 80, 40);
    const byPod = new Map<string, string[]>();
    for (const r of results) {
      expect(r.ok, JSON.stringify(r)).toBe(true);
      if (r.ok) byPod.set(r.pod, [...(byPod.get(r.pod) ?? []), clientIP(r)]);
    }
    expect([...byPod.keys()].sort()).toEqual(['a1', 'b1']);
    expect(new Set(byPod.get('b1'))).toEqual(new Set([a1.ip]));
    expect(new Set(byPod.get('a1'))).toEqual(new Set([cluster.node('node-a').gateway]));
  });

  it('does the same in IPv6: balancing, hairpin, unserved port, unallocated address', async () => {
    const a1 = cluster.pod('a1');
    // IPv6 neighbour discovery across the LAN can cost the very first connection: warm it up.
    for (let i = 0; i < 5 && !(await cluster.tcp(a1, cluster.pod('b1').ip6, 8080)).ok; i++);
    const results = await cluster.tcpMany(a1, 'fd00:10:96::20', 80, 30);
    const byPod = new Map<string, Set<string>>();
    for (const r of results) if (r.ok) byPod.set(r.pod, (byPod.get(r.pod) ?? new Set()).add(clientIP(r)));
    expect(results.every((r) => r.ok), JSON.stringify(results)).toBe(true);
    expect(byPod.get('b1')).toEqual(new Set([a1.ip6]));
    expect(byPod.get('a1')).toEqual(new Set([cluster.node('node-a').gateway6]));
    expect(await cluster.tcp(a1, 'fd00:10:96::20', 81)).toEqual({ ok: false, error: 'refused' });
    expect(await cluster.tcp(a1, 'fd00:10:96::99', 80, { timeoutMs: 700 })).toEqual({ ok: false, error: 'timeout' });
  });

  // Each group map holds one protocol: nft makes the DNAT rule of a map whose value is
  // `tcp dport` match TCP only, so UDP needs its own map and rule.
  it('balances UDP to a cluster IP and a node port over both endpoints', async () => {
    const answered = async (from: { ns: string }, ip: string, port: number) => {
      const seen = new Set<string>();
      for (let i = 0; i < 20; i++) {
        const r = await cluster.udp(from, ip, port, { timeoutMs: 1000 });
        expect(r.ok, JSON.stringify(r)).toBe(true);
        if (r.ok) seen.add(r.pod);
      }
      return [...seen].sort();
    };
    expect(await answered(cluster.pod('a2'), '10.96.0.25', 53)).toEqual(['a1', 'b1']);
    expect(await answered({ ns: cluster.external!.ns }, cluster.node('node-a').ip, 30053)).toEqual(['a1', 'b1']);
  });

  it('REJECTs a port of a cluster IP that the Service does not serve', async () => {
    expect(await cluster.tcp(cluster.pod('a1'), '10.96.0.20', 81)).toEqual({ ok: false, error: 'refused' });
  });

  it('REJECTs a Service without endpoints, and DROPs an unallocated address of the service CIDR', async () => {
    expect(await cluster.tcp(cluster.pod('a1'), '10.96.0.21', 80)).toEqual({ ok: false, error: 'refused' });
    // Both time out (no host has these addresses); only the dropped one never gets a
    // conntrack entry on the node, which a forwarded packet would.
    const tracked = async (ip: string) => (await cluster.exec(cluster.node('node-a'), 'conntrack', ['-L', '-d', ip])).stdout.includes(`dst=${ip}`);
    expect(await cluster.tcp(cluster.pod('a1'), '10.96.0.99', 80, { timeoutMs: 700 })).toEqual({ ok: false, error: 'timeout' });
    expect(await cluster.tcp(cluster.pod('a1'), '10.97.0.99', 80, { timeoutMs: 700 })).toEqual({ ok: false, error: 'timeout' });
    expect(await tracked('10.96.0.99')).toBe(false);
    expect(await tracked('10.97.0.99')).toBe(true);
  });

  it('lets a load-balancer IP in from its source ranges only, masqueraded to an endpoint on another node', async () => {
    const ext = { ns: cluster.external!.ns };
    const open = await cluster.tcp(ext, '192.0.2.50', 80);
    expect(open.ok && open.pod, JSON.stringify(open)).toBe('b1');
    expect(clientIP(open)).toBe(cluster.node('node-a').ip);
    expect(await cluster.tcp(ext, '192.0.2.51', 80, { timeoutMs: 700 })).toEqual({ ok: false, error: 'timeout' });
  });

  it('serves a Local-policy node port from the local endpoint only, with the client IP kept', async () => {
    const results = await cluster.tcpMany({ ns: cluster.external!.ns }, cluster.node('node-a').ip, 30080, 10);
    for (const r of results) {
      expect(r.ok && r.pod, JSON.stringify(r)).toBe('a2');
      expect(clientIP(r)).toBe(EXTERNAL_IP);
    }
  });
});
