/**
 * `trace --proxy-mode ipvs`: packets through the rendered ipvs dataplane (the iptables
 * part with its ipset lookups, then IPVS as virtual server and real server choices),
 * checked on where they end, with what odds, and on what the explanation says.
 */
import { describe, expect, it } from 'vitest';
import type { Step, TraceResult } from '../src/trace/types.js';
import { pipeline, type PacketSpec } from './support/pipeline.js';

const CLUSTER = `
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}
status: {addresses: [{type: InternalIP, address: 192.168.1.10}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: ClusterIP
  clusterIP: 10.96.10.10
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.2], nodeName: node-a, conditions: {ready: true}}
- {addresses: [10.244.2.2], nodeName: node-b, conditions: {ready: true}}
- {addresses: [10.244.3.2], nodeName: node-c, conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: ingress, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.20.20
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.20}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ingress-1, namespace: shop, labels: {kubernetes.io/service-name: ingress}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.20], nodeName: node-a, conditions: {ready: true}}
- {addresses: [10.244.2.20], nodeName: node-b, conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  type: ClusterIP
  clusterIP: 10.96.30.30
  ports: [{port: 80, protocol: TCP, targetPort: 8080}]
`;

const base = ['--proxy-mode', 'ipvs', '--hostname-override', 'node-a', '--cluster-cidr', '10.244.0.0/16'];

function trace(spec: PacketSpec, args: string[] = []): TraceResult {
  return pipeline(CLUSTER, [...base, ...args]).trace(spec);
}

/** Every step of every branch, in path order. */
function steps(t: TraceResult): Step[] {
  const out: Step[] = [];
  const walk = (seg: TraceResult['path']) => {
    out.push(...seg.steps);
    for (const b of seg.branches) walk(b.path);
  };
  walk(t.path);
  return out;
}

const odds = (t: TraceResult) => Object.fromEntries(t.destinations.map((d) => [d.address ?? d.verdict, Math.round(d.probability * 1000) / 1000]));

describe('trace --proxy-mode ipvs', () => {
  it('takes a pod\'s packet to a cluster IP through the ipsets to the virtual server, 1 in 3 per real server under rr', () => {
    const t = trace({ src: '10.244.1.5', dst: '10.96.10.10', dstPort: 80 });
    expect(t.mode).toBe('ipvs');
    expect(odds(t)).toEqual({ '10.244.1.2:8080': 0.333, '10.244.2.2:8080': 0.333, '10.244.3.2:8080': 0.333 });
    expect(t.destinations.every((d) => d.verdict === 'dnat' && !d.masquerade && d.sticky)).toBe(true);
    const s = steps(t);
    expect(s).toContainEqual(expect.objectContaining({ kind: 'rule', chain: 'KUBE-SERVICES', text: '-m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT', result: 'match' }));
    expect(s).toContainEqual(expect.objectContaining({ kind: 'chain', table: 'ipvs', chain: 'VS:tcp:10.96.10.10:80', role: 'cluster-endpoints' }));
    expect(s.some((x) => x.kind === 'rule' && x.comment?.startsWith('rr: 1 in 3'))).toBe(true);
    expect(t.why.join('\n')).toContain('sessionAffinity ClientIP');
  });

  it('says that sh picks by the client\'s source address', () => {
    const t = trace({ src: '10.244.1.5', dst: '10.96.10.10', dstPort: 80 }, ['--ipvs-scheduler', 'sh']);
    expect(steps(t).some((x) => x.kind === 'rule' && x.comment?.startsWith("sh: the client's source address hash picks one real server"))).toBe(true);
  });

  it('masquerades outside clients of a cluster IP, and an endpoint reaching itself (KUBE-LOOP-BACK)', () => {
    const outside = trace({ src: '192.168.7.7', dst: '10.96.10.10', dstPort: 80, from: 'external' });
    expect(outside.destinations.every((d) => d.masquerade)).toBe(true);
    expect(outside.why.join('\n')).toContain('outside the cluster CIDR 10.244.0.0/16');
    const self = trace({ src: '10.244.1.2', dst: '10.96.10.10', dstPort: 80 });
    const hairpin = self.destinations.find((d) => d.address === '10.244.1.2:8080')!;
    expect(hairpin.masquerade).toBe(true);
    expect(self.destinations.find((d) => d.address === '10.244.2.2:8080')!.masquerade).toBe(false);
    expect(self.why.join('\n')).toContain('Hairpin');
  });

  it('rejects a port the cluster IP does not serve in KUBE-IPVS-FILTER', () => {
    const t = trace({ src: '10.244.1.5', dst: '10.96.10.10', dstPort: 22 });
    expect(t.destinations).toHaveLength(1);
    expect(t.destinations[0]).toMatchObject({ verdict: 'reject', decidedBy: { table: 'filter', chain: 'KUBE-IPVS-FILTER' } });
  });

  it('answers a virtual server without real servers with port unreachable', () => {
    const t = trace({ src: '10.244.1.5', dst: '10.96.30.30', dstPort: 80 });
    expect(t.destinations[0]).toMatchObject({ verdict: 'reject', decidedBy: { table: 'ipvs', chain: 'VS:tcp:10.96.30.30:80' } });
  });

  it('applies loadBalancerSourceRanges in KUBE-SOURCE-RANGES-FIREWALL', () => {
    const denied = trace({ src: '198.51.100.1', dst: '192.0.2.20', dstPort: 80, from: 'external' });
    expect(denied.destinations[0]).toMatchObject({ verdict: 'drop', decidedBy: { chain: 'KUBE-SOURCE-RANGES-FIREWALL' } });
    expect(denied.why.join('\n')).toContain('do not include 198.51.100.1');
    const allowed = trace({ src: '203.0.113.9', dst: '192.0.2.20', dstPort: 80, from: 'external' });
    // externalTrafficPolicy Local: the local endpoint only, and the client's address kept (KUBE-LOAD-BALANCER-LOCAL returns before the mark).
    expect(allowed.destinations).toEqual([expect.objectContaining({ verdict: 'dnat', address: '10.244.1.20:8080', masquerade: false, probability: 1 })]);
  });

  it('serves node ports on the node\'s address through the node port virtual server', () => {
    const t = trace({ src: '198.51.100.1', dst: '192.168.1.10', dstPort: 30080, from: 'external' });
    expect(t.destinations).toEqual([expect.objectContaining({ verdict: 'dnat', address: '10.244.1.20:8080', masquerade: false })]);
    expect(steps(t)).toContainEqual(expect.objectContaining({ kind: 'chain', table: 'ipvs', chain: 'NODE-PORTS', role: 'node-port-dispatch' }));
    expect(steps(t)).toContainEqual(expect.objectContaining({ kind: 'chain', chain: 'VS:tcp:192.168.1.10:30080', role: 'local-endpoints' }));
  });

  it('balances by weight: odds follow the weights, a draining real server at weight 0 gets nothing', async () => {
    const { virtualServerRules } = await import('../src/modes/ipvs/dataplane.js');
    const rules = virtualServerRules({
      protocol: 'tcp',
      address: '10.96.1.1:80',
      scheduler: 'wrr',
      persistence: null,
      servicePort: 'ns/svc',
      role: 'cluster IP',
      localOnly: false,
      realServers: [
        { address: '10.244.1.1:80', weight: 3 },
        { address: '10.244.1.2:80', weight: 0 },
        { address: '10.244.1.3:80', weight: 1 },
      ],
    });
    expect(rules).toEqual([
      '-m comment --comment "wrr: in proportion to the weights over many connections" -m statistic --mode random --probability 0.75 -j DNAT --to-destination 10.244.1.1:80',
      '-m comment --comment "wrr: in proportion to the weights over many connections" -j DNAT --to-destination 10.244.1.3:80',
    ]);
  });
});
