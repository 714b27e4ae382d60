/**
 * Dual-stack, proven by packets, in every mode in E2E_MODES: two dual-stack node
 * namespaces on a LAN, pods with an IPv4 and an IPv6 address behind each, an external
 * client with both, one agent per node started with an IPv4 and an IPv6 cluster CIDR, and
 * real IPv6 connections through the rules the agents program: cluster IPs, node ports,
 * REJECT without endpoints, externalTrafficPolicy Local, masquerading, session affinity,
 * hairpin, dual-stack Services, endpoint changes, the debug endpoints and a flushed
 * ip6tables. Every assertion is on what the packets did: which pod answered, and which
 * client address it saw.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestApiServer } from '../support/apiserver.js';
import { dualStackService, endpointSlice, endpointSlice6, eventually, node, service6, type EndpointSpec } from '../support/objects.js';
import { privilegedTestsCanRun } from '../support/privileges.js';
import { clientIP, TestCluster, type NsProcess, type ProbeResult, type Where } from '../support/topology.js';
import { startClusterApi, type ClusterApi } from './cluster-api.js';
import { startDaemonSetAgent } from './daemonset-agent.js';
import { E2E_MODES, sourceIP } from './modes.js';

const NS = 'e2e6';
const CLUSTER_CIDRS = '10.244.0.0/16,fd00:10:244::/56';
const HTTP = [{ name: 'http', port: 80, targetPort: 8080 }];
const SLICE_PORTS = [{ name: 'http', port: 8080 }];

const answered = (rs: ProbeResult[]) => new Set(rs.flatMap((r) => (r.ok ? [r.pod] : [])));
const clients = (rs: ProbeResult[]) => new Set(rs.flatMap((r) => (r.ok ? [clientIP(r)] : [])));

for (const mode of E2E_MODES) {
  const canRun = privilegedTestsCanRun(`${mode.name} dual-stack e2e`, ['ip', 'curl', 'conntrack', ...mode.tools, ...mode.tools6]);

  describe.runIf(canRun)(`${mode.name} agent, dual-stack, over IPv6`, () => {
    let api: TestApiServer;
    let cluster: TestCluster;
    let dir: string;
    let clusterApi: ClusterApi;
    const agents = new Map<string, NsProcess>();

    async function startAgent(nodeName: string): Promise<NsProcess> {
      // Both cluster CIDRs, and quick syncs.
      const flags = ['--cluster-cidr', CLUSTER_CIDRS, '--iptables-min-sync-period', '0s', '--iptables-sync-period', '3s'];
      const p = await startDaemonSetAgent({ cluster, node: nodeName, mode: mode.name, api: clusterApi, dir, flags });
      agents.set(nodeName, p);
      return p;
    }

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'kpt-e2e6-'));
      cluster = await TestCluster.create({
        nodes: [
          { name: 'node-a', pods: [{ name: 'web-a1', tcp: [8080], udp: [8080] }, { name: 'client-a', tcp: [8080] }] },
          { name: 'node-b', pods: [{ name: 'web-b1', tcp: [8080], udp: [8080] }, { name: 'client-b', tcp: [8080] }] },
        ],
        external: true,
      });
      clusterApi = await startClusterApi(cluster, dir);
      api = clusterApi.api;
      for (const n of cluster.nodes) api.apply(node(n.name, [n.ip, n.ip6]));
      await Promise.all([startAgent('node-a'), startAgent('node-b')]);
    });

    afterAll(async () => {
      await cluster?.destroy();
      await api?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const web6 = (...names: string[]): EndpointSpec[] => names.map((n) => ({ ip: cluster.pod(n).ip6, nodeName: cluster.pod(n).node }));
    const web4 = (...names: string[]): EndpointSpec[] => names.map((n) => ({ ip: cluster.pod(n).ip, nodeName: cluster.pod(n).node }));
    /** The first answer from `from` to [ip]:port, once the rules for it are in. */
    const firstAnswer = (what: string, from: Where, ip: string, port: number) =>
      eventually(what, async () => {
        const r = await cluster.tcp(from, ip, port, { timeoutMs: 500 });
        return r.ok ? r : undefined;
      });

    it('programs both families, and serves an IPv6 ClusterIP from every endpoint keeping the pod source IP', async () => {
      for (const agent of agents.values()) expect(agent.output).toMatch(/"families":\["IPv4","IPv6"\]/);
      api.apply(service6(NS, 'web6', 'fd00:10:96::10', HTTP));
      api.apply(endpointSlice6(NS, 'web6', 'web6-1', SLICE_PORTS, web6('web-a1', 'web-b1')));
      const client = cluster.pod('client-a');
      const first = await firstAnswer('IPv6 ClusterIP answers', client, 'fd00:10:96::10', 80);
      expect(first.ok && first.client).toMatch(/^\[.*\]:\d+$/);
      sourceIP(mode, 'the endpoint sees the IPv6 pod source IP', () => expect(clientIP(first)).toBe(client.ip6));
      const many = await cluster.tcpMany(client, 'fd00:10:96::10', 80, 40);
      expect(many.every((r) => r.ok)).toBe(true);
      expect(answered(many)).toEqual(new Set(['web-a1', 'web-b1']));
      sourceIP(mode, 'every endpoint sees the IPv6 pod source IP', () => expect(clients(many)).toEqual(new Set([client.ip6])));
      // And from the other node's pod, which reaches web-a1 across the LAN.
      const fromB = await cluster.tcpMany(cluster.pod('client-b'), 'fd00:10:96::10', 80, 30);
      expect(answered(fromB)).toEqual(new Set(['web-a1', 'web-b1']));
      sourceIP(mode, 'the other node\'s pod keeps its IPv6 source IP', () => expect(clients(fromB)).toEqual(new Set([cluster.pod('client-b').ip6])));
    });

    it('rejects IPv6 connections to a service without endpoints at once', async () => {
      api.apply(service6(NS, 'empty6', 'fd00:10:96::11', HTTP));
      api.apply(endpointSlice6(NS, 'empty6', 'empty6-1', SLICE_PORTS, []));
      // In this one-host topology the client's TCP takes no notice of the ICMPv6 error for its
      // first SYN (it arrives while connect() apparently still holds the socket) and reports
      // the one for the SYN sent again after 1 s; IPv4 reports at once. Hence 2 s, not 500 ms.
      await eventually('no-endpoint REJECT over IPv6', async () => {
        const p = await cluster.tcp(cluster.pod('client-a'), 'fd00:10:96::11', 80, { timeoutMs: 2000 });
        return !p.ok && p.error === mode.noEndpoints ? p : undefined;
      });
      // Refused, not dropped: the answer comes well before the probe would time out (5 s).
      const started = Date.now();
      const r = await cluster.tcp(cluster.pod('client-b'), 'fd00:10:96::11', 80, { timeoutMs: 5000 });
      expect(r).toEqual({ ok: false, error: mode.noEndpoints });
      expect(Date.now() - started).toBeLessThan(2500);
    });

    it('serves an IPv6 NodePort from the other node and from outside the cluster', async () => {
      api.apply(service6(NS, 'np6', 'fd00:10:96::30', [{ ...HTTP[0]!, nodePort: 30080 }], { type: 'NodePort' }));
      api.apply(endpointSlice6(NS, 'np6', 'np6-1', SLICE_PORTS, web6('web-a1')));
      const nodeA = cluster.node('node-a');
      for (const from of [cluster.node('node-b'), cluster.pod('client-b'), cluster.external!]) {
        const r = await firstAnswer(`${from.ns} -> [${nodeA.ip6}]:30080`, from, nodeA.ip6, 30080);
        expect(r.ok && r.pod).toBe('web-a1');
      }
      // The node without a local endpoint forwards to the one with it.
      const viaB = await firstAnswer('external -> node-b IPv6:30080', cluster.external!, cluster.node('node-b').ip6, 30080);
      expect(viaB.ok && viaB.pod).toBe('web-a1');
    });

    it('masquerades IPv6 clients from outside the cluster CIDR, and not pods', async () => {
      api.apply(service6(NS, 'masq6', 'fd00:10:96::31', [{ ...HTTP[0]!, nodePort: 30081 }], { type: 'NodePort' }));
      api.apply(endpointSlice6(NS, 'masq6', 'masq6-1', SLICE_PORTS, web6('web-b1')));
      const nodeA = cluster.node('node-a');
      const ext = await firstAnswer('external -> node-a IPv6:30081', cluster.external!, nodeA.ip6, 30081);
      expect(ext.ok && ext.pod).toBe('web-b1');
      // The pod on node-b sees node-a's address: its reply must go back through node-a.
      expect(clientIP(ext)).toBe(nodeA.ip6);
      expect(clientIP(ext)).not.toBe(cluster.external!.ip6);
      // A pod, inside fd00:10:244::/56, keeps its own address through the cluster IP.
      const pod = await firstAnswer('client-a -> masq6 cluster IP', cluster.pod('client-a'), 'fd00:10:96::31', 80);
      expect(pod.ok && pod.pod).toBe('web-b1');
      sourceIP(mode, 'a pod keeps its IPv6 address through the cluster IP', () => expect(clientIP(pod)).toBe(cluster.pod('client-a').ip6));
      // node-b itself is outside it: its connection to the cluster IP leaves with node-b's
      // LAN address, and reaches web-b1 masqueraded to the bridge's address.
      const nodeB = cluster.node('node-b');
      const host = await firstAnswer('node-b -> masq6 cluster IP', nodeB, 'fd00:10:96::31', 80);
      expect(host.ok && host.pod).toBe('web-b1');
      expect(clientIP(host)).toBe(nodeB.gateway6);
    });

    it('externalTrafficPolicy Local keeps the external client IPv6 address, and answers its health check over IPv6', async () => {
      api.apply(
        service6(NS, 'local6', 'fd00:10:96::40', [{ ...HTTP[0]!, nodePort: 30090 }], {
          type: 'LoadBalancer',
          externalTrafficPolicy: 'Local',
          healthCheckNodePort: 32090,
        }),
      );
      api.apply(endpointSlice6(NS, 'local6', 'local6-1', SLICE_PORTS, web6('web-a1')));
      const ext = cluster.external!;
      const r = await firstAnswer('external -> node-a IPv6:30090', ext, cluster.node('node-a').ip6, 30090);
      expect(r.ok && r.pod).toBe('web-a1');
      sourceIP(mode, 'externalTrafficPolicy Local keeps the external IPv6 client address', () => expect(clientIP(r)).toBe(ext.ip6));
      const many = await cluster.tcpMany(ext, cluster.node('node-a').ip6, 30090, 10);
      sourceIP(mode, 'externalTrafficPolicy Local keeps it on every connection', () => expect(clients(many)).toEqual(new Set([ext.ip6])));
      // node-b has no local endpoint: it drops rather than forwards.
      const b = await cluster.tcp(ext, cluster.node('node-b').ip6, 30090, { timeoutMs: 1000 });
      expect(b.ok).toBe(false);
      // A pod (inside the IPv6 cluster CIDR) is served as under Cluster policy, even there.
      const pod = await firstAnswer('client-b -> node-b IPv6:30090', cluster.pod('client-b'), cluster.node('node-b').ip6, 30090);
      expect(pod.ok && pod.pod).toBe('web-a1');

      const status = async (nodeName: string) => {
        const url = `http://[${cluster.node(nodeName).ip6}]:32090/`;
        return (await cluster.exec(ext, 'curl', ['-g', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', url])).stdout.trim();
      };
      await eventually('IPv6 health check 200 on node-a', async () => ((await status('node-a')) === '200' ? true : undefined));
      expect(await status('node-b')).toBe('503');
    });

    it('ClientIP affinity keeps one IPv6 client on one endpoint', async () => {
      api.apply(service6(NS, 'sticky6', 'fd00:10:96::60', HTTP, { sessionAffinity: 'ClientIP' }));
      api.apply(endpointSlice6(NS, 'sticky6', 'sticky6-1', SLICE_PORTS, web6('web-a1', 'web-b1')));
      for (const name of ['client-a', 'client-b']) {
        const client = cluster.pod(name);
        await firstAnswer(`${name} -> sticky6`, client, 'fd00:10:96::60', 80);
        const rs = await cluster.tcpMany(client, 'fd00:10:96::60', 80, 30);
        expect(rs.every((r) => r.ok)).toBe(true);
        // Without affinity, 30 connections would land on one of two endpoints with p = 2^-29.
        expect(answered(rs).size).toBe(1);
        sourceIP(mode, 'the sticky endpoint sees the IPv6 client address', () => expect(clients(rs)).toEqual(new Set([client.ip6])));
      }
    });

    it('lets a pod reach itself through its own IPv6 service (hairpin)', async () => {
      api.apply(service6(NS, 'self6', 'fd00:10:96::70', HTTP));
      api.apply(endpointSlice6(NS, 'self6', 'self6-1', SLICE_PORTS, web6('web-a1')));
      const r = await firstAnswer('web-a1 -> its own IPv6 service', cluster.pod('web-a1'), 'fd00:10:96::70', 80);
      expect(r.ok && r.pod).toBe('web-a1');
      // Masqueraded to the bridge's address: unmasqueraded, its own reply would never return.
      expect(clientIP(r)).toBe(cluster.node('node-a').gateway6);
    });

    it('serves a dual-stack Service on both cluster IPs, each family on its own endpoints', async () => {
      // The IPv4 endpoint is web-a1 only and the IPv6 one web-b1 only: who answers tells the families apart.
      const cases = [
        { name: 'dual', ips: ['10.96.0.100', 'fd00:10:96::100'] as [string, string], policy: 'PreferDualStack' as const },
        { name: 'dual6first', ips: ['fd00:10:96::101', '10.96.0.101'] as [string, string], policy: 'RequireDualStack' as const },
      ];
      for (const c of cases) {
        api.apply(dualStackService(NS, c.name, c.ips, HTTP, {}, {}, c.policy));
        api.apply(endpointSlice(NS, c.name, `${c.name}-v4`, SLICE_PORTS, web4('web-a1')));
        api.apply(endpointSlice6(NS, c.name, `${c.name}-v6`, SLICE_PORTS, web6('web-b1')));
      }
      const client = cluster.pod('client-a');
      for (const c of cases) {
        for (const ip of c.ips) {
          const v6 = ip.includes(':');
          await firstAnswer(`${c.name} answers on ${ip}`, client, ip, 80);
          const rs = await cluster.tcpMany(client, ip, 80, 20);
          expect(rs.every((r) => r.ok)).toBe(true);
          expect(answered(rs)).toEqual(new Set([v6 ? 'web-b1' : 'web-a1']));
          sourceIP(mode, `${c.name} on ${ip} keeps the pod source address`, () => expect(clients(rs)).toEqual(new Set([v6 ? client.ip6 : client.ip])));
        }
      }
    });

    it('moves an IPv6 UDP client that keeps its source port to the new backend (stale conntrack entries cleared)', async () => {
      const ask = () => cluster.udp(cluster.pod('client-a'), 'fd00:10:96::53', 53, { timeoutMs: 500, sourcePort: 40053 });
      api.apply(service6(NS, 'dns6', 'fd00:10:96::53', [{ name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP' }]));
      api.apply(endpointSlice6(NS, 'dns6', 'dns6-1', [{ name: 'dns', port: 8080, protocol: 'UDP' }], web6('web-a1')));
      const first = await eventually('IPv6 UDP answers', async () => {
        const r = await ask();
        return r.ok ? r : undefined;
      });
      expect(first.ok && first.pod).toBe('web-a1');
      sourceIP(mode, 'the endpoint sees the IPv6 UDP client address and port', () => expect(first.ok && first.client).toBe(`[${cluster.pod('client-a').ip6}]:40053`));
      // web-a1 keeps running: only a deleted conntrack entry sends this client elsewhere.
      api.apply(endpointSlice6(NS, 'dns6', 'dns6-1', [{ name: 'dns', port: 8080, protocol: 'UDP' }], web6('web-b1')));
      const moved = await eventually('same client, same source port, new backend', async () => {
        const r = await ask();
        return r.ok && r.pod === 'web-b1' ? r : undefined;
      });
      expect(moved.ok && moved.pod).toBe('web-b1');
    });

    it('stops reaching a removed IPv6 endpoint, and reaches it again once it is back', async () => {
      api.apply(endpointSlice6(NS, 'web6', 'web6-1', SLICE_PORTS, web6('web-a1')));
      await eventually('only web-a1 answers', async () => {
        const rs = await cluster.tcpMany(cluster.pod('client-b'), 'fd00:10:96::10', 80, 20);
        return rs.every((r) => r.ok) && answered(rs).size === 1 && answered(rs).has('web-a1') ? true : undefined;
      });
      const after = await cluster.tcpMany(cluster.pod('client-a'), 'fd00:10:96::10', 80, 30);
      expect(after.every((r) => r.ok)).toBe(true);
      expect(answered(after)).toEqual(new Set(['web-a1']));
      api.apply(endpointSlice6(NS, 'web6', 'web6-1', SLICE_PORTS, web6('web-a1', 'web-b1')));
      await eventually('both answer again', async () => {
        const seen = answered(await cluster.tcpMany(cluster.pod('client-b'), 'fd00:10:96::10', 80, 30));
        return seen.size === 2 ? true : undefined;
      });
    });

    it('shows its IPv6 rules on /debug/rules, and /debug/trace names the endpoints IPv6 connections reach', async () => {
      const nodeA = cluster.node('node-a');
      const get = async (url: string) => (await cluster.exec(nodeA, 'curl', ['-s', '-w', '\n%{http_code}', '--max-time', '2', url])).stdout;
      const body = (answer: string) => answer.split('\n').slice(0, -1).join('\n');

      const rulesAnswer = await get('http://127.0.0.1:10249/debug/rules');
      expect(rulesAnswer.split('\n').at(-1)).toBe('200');
      const rules = body(rulesAnswer);
      const v6 = mode.familyRules(rules, 'IPv6');
      const v4 = mode.familyRules(rules, 'IPv4');
      expect(v6).toMatch(mode.clusterIPRuleOf(`${NS}/web6:http`, 'fd00:10:96::10', 80));
      for (const pod of ['web-a1', 'web-b1']) expect(v6).toContain(mode.endpointText(cluster.pod(pod).ip6, 8080));
      expect(v4).not.toContain('fd00:10:96::10');
      // The dual-stack Service is in both, each family with its own cluster IP.
      expect(v4).toMatch(mode.clusterIPRuleOf(`${NS}/dual:http`, '10.96.0.100', 80));
      expect(v6).toMatch(mode.clusterIPRuleOf(`${NS}/dual:http`, 'fd00:10:96::100', 80));

      const client = cluster.pod('client-a');
      const query = new URLSearchParams({ src: client.ip6, dst: '[fd00:10:96::10]:80', output: 'json' });
      const traceAnswer = await get(`http://127.0.0.1:10249/debug/trace?${query.toString()}`);
      expect(traceAnswer.split('\n').at(-1)).toBe('200');
      const trace = JSON.parse(body(traceAnswer)) as { destinations: { verdict: string; address: string }[] };
      const live = await cluster.tcpMany(client, 'fd00:10:96::10', 80, 30);
      const liveAddresses = new Set(live.flatMap((r) => (r.ok ? [`[${cluster.pod(r.pod).ip6}]:8080`] : [])));
      expect(liveAddresses.size).toBe(2);
      expect(trace.destinations.every((d) => d.verdict === 'dnat')).toBe(true);
      expect(new Set(trace.destinations.map((d) => d.address))).toEqual(liveAddresses);
    });

    it('restores its IPv6 rules after someone flushes ip6tables, leaving IPv4 alone', async () => {
      const nodeA = cluster.node('node-a');
      const agent = agents.get('node-a')!;
      await mode.wreck6(cluster, nodeA);
      // Only IPv6 was wrecked.
      expect(await mode.present(cluster, nodeA)).toBe(true);
      await eventually('agent sees the IPv6 damage', async () => (mode.damage6.test(agent.output) ? true : undefined));
      await eventually('IPv6 rules come back', async () => ((await mode.present6(cluster, nodeA)) ? true : undefined));
      await eventually('IPv6 service answers again from both endpoints', async () => {
        const seen = answered(await cluster.tcpMany(cluster.pod('client-a'), 'fd00:10:96::10', 80, 20));
        return seen.size === 2 ? true : undefined;
      });
      const np = await firstAnswer('IPv6 NodePort answers again', cluster.external!, nodeA.ip6, 30080);
      expect(np.ok && np.pod).toBe('web-a1');
      expect(agent.running).toBe(true);
    });
  });
}
