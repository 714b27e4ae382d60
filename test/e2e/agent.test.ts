/**
 * kube-proxy-ts as a node agent, end to end, in every mode in E2E_MODES: two node
 * namespaces on a LAN, pods behind each, one agent per node started as the DaemonSet's
 * pod (daemonset-agent.ts: in-cluster config, TLS, its service account token, the RBAC of
 * deploy/rbac.yaml), and real TCP and UDP connections through the rules the agents
 * program. What differs between modes (their tools, how someone wrecks their rules, what
 * /debug/rules shows) is in the mode's entry; every behaviour is asserted the same way.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestApiServer } from '../support/apiserver.js';
import { endpointSlice, eventually, node, service } from '../support/objects.js';
import { privilegedTestsCanRun } from '../support/privileges.js';
import { TestCluster, type NsProcess, type ProbeResult } from '../support/topology.js';
import { startClusterApi, type ClusterApi } from './cluster-api.js';
import { startDaemonSetAgent } from './daemonset-agent.js';
import { E2E_MODES, sourceIP } from './modes.js';

const NS = 'e2e';

const answered = (rs: ProbeResult[]) => new Set(rs.flatMap((r) => (r.ok ? [r.pod] : [])));

for (const mode of E2E_MODES) {
  const canRun = privilegedTestsCanRun(`${mode.name} agent e2e`, ['ip', 'curl', ...mode.tools]);

  describe.runIf(canRun)(`${mode.name} agent in network namespaces`, () => {
    let api: TestApiServer;
    let cluster: TestCluster;
    let dir: string;
    let clusterApi: ClusterApi;
    const agents = new Map<string, NsProcess>();

    async function startAgent(nodeName: string, extra: string[] = []): Promise<NsProcess> {
      const timing = ['--iptables-min-sync-period', '0s', '--iptables-sync-period', '10s'];
      const p = await startDaemonSetAgent({ cluster, node: nodeName, mode: mode.name, api: clusterApi, dir, flags: [...timing, ...extra] });
      agents.set(nodeName, p);
      return p;
    }

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'kpt-e2e-'));
      cluster = await TestCluster.create({
        nodes: [
          { name: 'node-a', pods: [{ name: 'web-a1', tcp: [8080, 8081], udp: [8080] }, { name: 'client-a', tcp: [8080] }] },
          { name: 'node-b', pods: [{ name: 'web-b1', tcp: [8080, 8081], udp: [8080] }, { name: 'client-b', tcp: [8080] }] },
        ],
        external: true,
      });
      clusterApi = await startClusterApi(cluster, dir);
      api = clusterApi.api;
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
      sourceIP(mode, 'the endpoint sees the pod source IP', () => expect(first.ok && first.client.split(':')[0]).toBe(cluster.pod('client-a').ip));
      const many = await cluster.tcpMany(cluster.pod('client-a'), '10.96.0.10', 80, 40);
      expect(answered(many)).toEqual(new Set(['web-a1', 'web-b1']));
    });

    it('rejects connections to a service without endpoints at once', async () => {
      api.apply(service(NS, 'empty', '10.96.0.11', [{ name: 'http', port: 80 }]));
      const r = await eventually('no-endpoint REJECT', async () => {
        const p = await cluster.tcp(cluster.pod('client-a'), '10.96.0.11', 80, { timeoutMs: 2000 });
        return !p.ok && p.error === mode.noEndpoints ? p : undefined;
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

    it('maps named ports per endpoint (multiport), and serves UDP', async () => {
      api.apply(
        service(NS, 'multi', '10.96.0.20', [
          { name: 'http', port: 80, targetPort: 'http' },
          { name: 'alt', port: 81, targetPort: 'alt' },
          { name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP' },
        ]),
      );
      // The named ports map to different numbers on each pod.
      api.apply(endpointSlice(NS, 'multi', 'multi-a', [{ name: 'http', port: 8080 }, { name: 'alt', port: 8081 }], web().slice(0, 1)));
      api.apply(endpointSlice(NS, 'multi', 'multi-b', [{ name: 'http', port: 8081 }, { name: 'alt', port: 8080 }], web().slice(1)));
      api.apply(endpointSlice(NS, 'multi', 'multi-udp', [{ name: 'dns', port: 8080, protocol: 'UDP' }], web()));
      for (const port of [80, 81]) {
        await eventually(`port ${port} reaches both pods`, async () => {
          const seen = answered(await cluster.tcpMany(cluster.pod('client-a'), '10.96.0.20', port, 30));
          return seen.size === 2 ? true : undefined;
        });
      }
      const udp = await eventually('UDP answers', async () => {
        const r = await cluster.udp(cluster.pod('client-b'), '10.96.0.20', 53, { timeoutMs: 500 });
        return r.ok ? r : undefined;
      });
      expect(['web-a1', 'web-b1']).toContain(udp.ok && udp.pod);
    });

    it('moves a UDP client that keeps its source port to the new backend (stale conntrack entries cleared)', async () => {
      const ask = () => cluster.udp(cluster.pod('client-a'), '10.96.0.53', 53, { timeoutMs: 500, sourcePort: 40053 });
      api.apply(service(NS, 'dns', '10.96.0.53', [{ name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP' }]));
      api.apply(endpointSlice(NS, 'dns', 'dns-1', [{ name: 'dns', port: 8080, protocol: 'UDP' }], web().slice(0, 1)));
      const first = await eventually('UDP answers', async () => {
        const r = await ask();
        return r.ok ? r : undefined;
      });
      expect(first.ok && first.pod).toBe('web-a1');
      // web-a1 keeps running: only a deleted conntrack entry sends this client elsewhere.
      api.apply(endpointSlice(NS, 'dns', 'dns-1', [{ name: 'dns', port: 8080, protocol: 'UDP' }], web().slice(1)));
      const moved = await eventually('same client, same source port, new backend', async () => {
        const r = await ask();
        return r.ok && r.pod === 'web-b1' ? r : undefined;
      });
      expect(moved.ok && moved.pod).toBe('web-b1');
    });

    it('serves a NodePort on every node, also from a node without a local endpoint', async () => {
      api.apply(service(NS, 'np', '10.96.0.30', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort' }));
      api.apply(endpointSlice(NS, 'np', 'np-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)));
      for (const nodeName of ['node-a', 'node-b']) {
        const r = await eventually(`external -> ${nodeName}:30080`, async () => {
          const p = await cluster.tcp(cluster.external!, cluster.node(nodeName).ip, 30080, { timeoutMs: 500 });
          return p.ok ? p : undefined;
        });
        expect(r.ok && r.pod).toBe('web-a1');
      }
    });

    it.runIf(mode.localhostNodePorts)('serves a NodePort on 127.0.0.1 from the node itself (localhost node ports)', async () => {
      const nodeB = cluster.node('node-b');
      if (mode.setsRouteLocalnet) expect((await cluster.exec(nodeB, 'cat', ['/proc/sys/net/ipv4/conf/all/route_localnet'])).stdout.trim()).toBe('1');
      const r = await eventually('node-b -> 127.0.0.1:30080', async () => {
        const p = await cluster.tcp(nodeB, '127.0.0.1', 30080, { timeoutMs: 500 });
        return p.ok ? p : undefined;
      });
      expect(r.ok && r.pod).toBe('web-a1');
    });

    it.runIf(!mode.localhostNodePorts)('serves a NodePort on the node IP, never on 127.0.0.1, and leaves route_localnet alone', async () => {
      const nodeB = cluster.node('node-b');
      expect((await cluster.exec(nodeB, 'cat', ['/proc/sys/net/ipv4/conf/all/route_localnet'])).stdout.trim()).toBe('0');
      const r = await eventually(`node-b -> ${nodeB.ip}:30080`, async () => {
        const p = await cluster.tcp(nodeB, nodeB.ip, 30080, { timeoutMs: 500 });
        return p.ok ? p : undefined;
      });
      expect(r.ok && r.pod).toBe('web-a1');
      expect((await cluster.tcp(nodeB, '127.0.0.1', 30080, { timeoutMs: 1000 })).ok).toBe(false);
    });

    it('externalTrafficPolicy Local keeps the client IP, and its health check port says 200/503', async () => {
      api.apply(
        service(NS, 'local', '10.96.0.40', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30090 }], {
          type: 'LoadBalancer',
          externalTrafficPolicy: 'Local',
          healthCheckNodePort: 32090,
        }),
      );
      api.apply(endpointSlice(NS, 'local', 'local-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)));
      const r = await eventually('external -> node-a:30090', async () => {
        const p = await cluster.tcp(cluster.external!, cluster.node('node-a').ip, 30090, { timeoutMs: 500 });
        return p.ok ? p : undefined;
      });
      expect(r.ok && r.pod).toBe('web-a1');
      sourceIP(mode, 'externalTrafficPolicy Local keeps the client IP', () => expect(r.ok && r.client.split(':')[0]).toBe(cluster.external!.ip));
      const b = await cluster.tcp(cluster.external!, cluster.node('node-b').ip, 30090, { timeoutMs: 1000 });
      expect(b.ok).toBe(false);

      const status = async (nodeName: string) => {
        const out = await cluster.exec(cluster.external!, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${cluster.node(nodeName).ip}:32090/`]);
        return out.stdout.trim();
      };
      await eventually('health check 200 on node-a', async () => ((await status('node-a')) === '200' ? true : undefined));
      expect(await status('node-b')).toBe('503');

      api.apply(
        service(NS, 'local', '10.96.0.40', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30090 }], {
          type: 'LoadBalancer',
          externalTrafficPolicy: 'Cluster',
        }),
      );
      await eventually('health check port closes', async () => ((await status('node-a')) === '000' ? true : undefined));
      await eventually('node-b serves once policy is Cluster', async () => {
        const p = await cluster.tcp(cluster.external!, cluster.node('node-b').ip, 30090, { timeoutMs: 500 });
        return p.ok ? p : undefined;
      });
    });

    it('internalTrafficPolicy Local serves only clients on a node with a local endpoint', async () => {
      api.apply(service(NS, 'itp', '10.96.0.50', [{ name: 'http', port: 80, targetPort: 8080 }], { internalTrafficPolicy: 'Local' }));
      api.apply(endpointSlice(NS, 'itp', 'itp-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)));
      const a = await eventually('client-a reaches its local endpoint', async () => {
        const p = await cluster.tcp(cluster.pod('client-a'), '10.96.0.50', 80, { timeoutMs: 500 });
        return p.ok ? p : undefined;
      });
      expect(a.ok && a.pod).toBe('web-a1');
      const b = await cluster.tcp(cluster.pod('client-b'), '10.96.0.50', 80, { timeoutMs: 1000 });
      expect(b.ok).toBe(false);
    });

    it('ClientIP affinity keeps one client on one endpoint', async () => {
      api.apply(service(NS, 'sticky', '10.96.0.60', [{ name: 'http', port: 80, targetPort: 8080 }], { sessionAffinity: 'ClientIP' }));
      api.apply(endpointSlice(NS, 'sticky', 'sticky-1', [{ name: 'http', port: 8080 }], web()));
      await eventually('sticky service answers', async () => ((await cluster.tcp(cluster.pod('client-a'), '10.96.0.60', 80, { timeoutMs: 500 })).ok ? true : undefined));
      const seen = answered(await cluster.tcpMany(cluster.pod('client-a'), '10.96.0.60', 80, 30));
      expect(seen.size).toBe(1);
    });

    it('lets a pod reach itself through its own service (hairpin)', async () => {
      api.apply(service(NS, 'self', '10.96.0.70', [{ name: 'http', port: 80, targetPort: 8080 }]));
      api.apply(endpointSlice(NS, 'self', 'self-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)));
      const r = await eventually('web-a1 -> its own service', async () => {
        const p = await cluster.tcp(cluster.pod('web-a1'), '10.96.0.70', 80, { timeoutMs: 500 });
        return p.ok ? p : undefined;
      });
      expect(r.ok && r.pod).toBe('web-a1');
    });

    it('falls back to serving-and-terminating endpoints when none is ready', async () => {
      api.apply(service(NS, 'term', '10.96.0.80', [{ name: 'http', port: 80, targetPort: 8080 }]));
      api.apply(
        endpointSlice(NS, 'term', 'term-1', [{ name: 'http', port: 8080 }], [
          { ip: cluster.pod('web-a1').ip, nodeName: 'node-a', ready: false, serving: true, terminating: true },
          { ip: cluster.pod('web-b1').ip, nodeName: 'node-b', ready: false, serving: false, terminating: true },
        ]),
      );
      const seen = await eventually('terminating endpoint serves', async () => {
        const rs = await cluster.tcpMany(cluster.pod('client-b'), '10.96.0.80', 80, 10);
        return rs.every((x) => x.ok) ? answered(rs) : undefined;
      });
      expect(seen).toEqual(new Set(['web-a1']));
    });

    it('stops serving a deleted Service, keeps the others, and serves it again when recreated', async () => {
      api.apply(service(NS, 'gone', '10.96.0.90', [{ name: 'http', port: 80, targetPort: 8080 }]));
      api.apply(endpointSlice(NS, 'gone', 'gone-1', [{ name: 'http', port: 8080 }], web()));
      await eventually('service answers', async () => ((await cluster.tcp(cluster.pod('client-a'), '10.96.0.90', 80, { timeoutMs: 500 })).ok ? true : undefined));
      api.remove('Service', NS, 'gone');
      await eventually('deleted service stops answering', async () =>
        (await cluster.tcp(cluster.pod('client-a'), '10.96.0.90', 80, { timeoutMs: 500 })).ok ? undefined : true,
      );
      expect((await cluster.tcp(cluster.pod('client-a'), '10.96.0.10', 80, { timeoutMs: 1000 })).ok).toBe(true);
      api.apply(service(NS, 'gone', '10.96.0.90', [{ name: 'http', port: 80, targetPort: 8080 }]));
      await eventually('recreated service answers', async () => ((await cluster.tcp(cluster.pod('client-a'), '10.96.0.90', 80, { timeoutMs: 500 })).ok ? true : undefined));
    });

    it('restores its rules after someone deletes them', async () => {
      const nodeA = cluster.node('node-a');
      await mode.wreck(cluster, nodeA);
      await eventually('rules come back', async () => ((await mode.present(cluster, nodeA)) ? true : undefined));
      await eventually('service answers again', async () => ((await cluster.tcp(cluster.pod('client-a'), '10.96.0.10', 80, { timeoutMs: 500 })).ok ? true : undefined));
    });

    it('puts back a deleted jump rule within one sync period (10 s here)', async () => {
      const nodeA = cluster.node('node-a');
      await mode.unhook(cluster, nodeA);
      expect(await mode.hooked(cluster, nodeA)).toBe(false);
      const started = Date.now();
      await eventually('jump rule back', async () => ((await mode.hooked(cluster, nodeA)) ? true : undefined), 15_000);
      expect(Date.now() - started).toBeLessThan(12_000);
      await eventually('service answers again', async () => ((await cluster.tcp(cluster.pod('client-a'), '10.96.0.10', 80, { timeoutMs: 500 })).ok ? true : undefined));
    });

    it('converges after an API server restart and after its watches expired (410)', async () => {
      await api.restart(500);
      api.apply(endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web().slice(1)));
      await eventually('update after restart arrives', async () => {
        const seen = answered(await cluster.tcpMany(cluster.pod('client-a'), '10.96.0.10', 80, 20));
        return seen.size === 1 && seen.has('web-b1') ? true : undefined;
      });
      // Changes made while the watches are cut, then history compacted: only a relist sees them.
      api.remove('Service', NS, 'empty');
      api.apply(endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)));
      api.compact();
      await api.restart(500);
      await eventually('relist after 410 converges', async () => {
        const seen = answered(await cluster.tcpMany(cluster.pod('client-a'), '10.96.0.10', 80, 20));
        return seen.size === 1 && seen.has('web-a1') ? true : undefined;
      });
      await eventually('deletion seen by the relist', async () => {
        const r = await cluster.tcp(cluster.pod('client-a'), '10.96.0.11', 80, { timeoutMs: 500 });
        return !r.ok && r.error !== mode.noEndpoints ? true : undefined;
      });
    });

    it('answers on its health and metrics endpoints', async () => {
      const nodeA = cluster.node('node-a');
      const get = async (url: string) => (await cluster.exec(nodeA, 'curl', ['-s', '-w', '\n%{http_code}', '--max-time', '2', url])).stdout;
      const healthz = (await get('http://127.0.0.1:10256/healthz')).split('\n');
      expect(healthz.at(-1)).toBe('200');
      expect(JSON.parse(healthz[0]!)).toHaveProperty('lastUpdated');
      expect((await get('http://127.0.0.1:10249/proxyMode')).split('\n')[0]).toBe(mode.name);
      const metrics = await get('http://127.0.0.1:10249/metrics');
      expect(metrics).toMatch(/^kubeproxy_sync_proxy_rules_duration_seconds_count [1-9]/m);
      expect(metrics).toMatch(/^kubeproxy_network_programming_duration_seconds_count [1-9]/m);
      expect(metrics).toMatch(/^kubeproxy_sync_proxy_rules_endpoint_changes_total [1-9]/m);

      // What it programmed, and where a packet goes, as --dry-run and `trace` would say.
      const rules = await get('http://127.0.0.1:10249/debug/rules');
      expect(rules).toMatch(mode.clusterIPRule);
      const client = cluster.pod('client-a').ip;
      const trace = JSON.parse((await get(`http://127.0.0.1:10249/debug/trace?src=${client}&dst=10.96.0.10:80&output=json`)).split('\n').slice(0, -1).join('\n')) as {
        destinations: { verdict: string; address: string }[];
      };
      const live = await cluster.tcpMany(cluster.pod('client-a'), '10.96.0.10', 80, 20);
      const liveAddresses = new Set(live.flatMap((r) => (r.ok ? [`${cluster.pod(r.pod).ip}:8080`] : [])));
      expect(trace.destinations.every((d) => d.verdict === 'dnat')).toBe(true);
      expect(new Set(trace.destinations.map((d) => d.address))).toEqual(liveAddresses);
      expect((await get('http://127.0.0.1:10249/debug/trace?dst=nonsense')).split('\n').at(-1)).toBe('400');
    });

    it('leaves its rules in place on SIGTERM, and a restarted agent takes over', async () => {
      const agent = agents.get('node-b')!;
      await agent.stop();
      expect(agent.running).toBe(false);
      if (mode.needsAgent === null) expect((await cluster.tcp(cluster.pod('client-b'), '10.96.0.10', 80, { timeoutMs: 1000 })).ok).toBe(true);
      else console.log(`${mode.name}: skipped "traffic flows while the agent is stopped": ${mode.needsAgent}`);
      await startAgent('node-b');
      api.apply(endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web()));
      await eventually('restarted agent follows changes', async () => {
        const seen = answered(await cluster.tcpMany(cluster.pod('client-b'), '10.96.0.10', 80, 30));
        return seen.size === 2 ? true : undefined;
      }).catch((err) => {
        console.log(agents.get('node-b')!.output.slice(-3000));
        throw err;
      });
    });

    it('asked for nothing deploy/rbac.yaml does not grant, always as its service account', () => {
      const asked = api.requests.filter((r) => r.kind !== undefined);
      expect(asked.length).toBeGreaterThan(0);
      expect(asked.filter((r) => r.status === 401 || r.status === 403)).toEqual([]);
      expect(new Set(asked.map((r) => r.user))).toEqual(new Set(['system:serviceaccount:kube-system:kube-proxy-ts']));
    });
  });
}
