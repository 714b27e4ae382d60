/**
 * The cluster shapes test/e2e/agent.test.ts proves with real packets, traced on
 * paper: the same nodes, pods, Services and slices, the same agent flags. Each test names
 * the e2e test that observes the behaviour; the two must tell the same story.
 */
import { describe, expect, it } from 'vitest';
import type { TraceResult } from '../src/trace/types.js';
import type { Manifest } from './support/apiserver.js';
import { endpointSlice, node, service } from './support/objects.js';
import { EXTERNAL_IP } from './support/topology.js';
import { pipeline, type PacketSpec } from './support/pipeline.js';
import { distribution } from './support/trace-golden.js';

const NS = 'e2e';
// The e2e topology: node i at 10.99.0.(10+i), its pod j at 10.244.i.(10+j).
const NODE_IP = { 'node-a': '10.99.0.11', 'node-b': '10.99.0.12' } as const;
const POD = { 'web-a1': '10.244.1.11', 'client-a': '10.244.1.12', 'web-b1': '10.244.2.11', 'client-b': '10.244.2.12' } as const;
const web = () => [
  { ip: POD['web-a1'], nodeName: 'node-a' },
  { ip: POD['web-b1'], nodeName: 'node-b' },
];

type NodeName = keyof typeof NODE_IP;

/** Traces on `nodeName` as the e2e agents render: `--cluster-cidr 10.244.0.0/16`. */
function traceOn(nodeName: NodeName, objects: Manifest[], packet: PacketSpec): TraceResult {
  const all = [node('node-a', NODE_IP['node-a']), node('node-b', NODE_IP['node-b']), ...objects];
  const p = pipeline(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: all }), ['--hostname-override', nodeName, '--cluster-cidr', '10.244.0.0/16'], 'e2e-shape');
  expect(p.problems).toEqual([]);
  return p.trace(packet);
}

describe('traces of the e2e cluster shapes', () => {
  const webService = [
    service(NS, 'web', '10.96.0.10', [{ name: 'http', port: 80, targetPort: 8080 }]),
    endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web()),
  ];

  // e2e: 'serves a new ClusterIP from every endpoint, and keeps the pod source IP'
  it('a ClusterIP reaches both pods, and the pod keeps its source IP', () => {
    const r = traceOn('node-a', webService, { src: POD['client-a'], dst: '10.96.0.10', dstPort: 80 });
    expect(distribution(r)).toEqual({ '10.244.1.11:8080': 0.5, '10.244.2.11:8080': 0.5 });
    expect(r.destinations.every((d) => !d.masquerade)).toBe(true);
  });

  // e2e: 'rejects connections to a service without endpoints at once'
  it('a service without endpoints is rejected (the client sees "refused")', () => {
    const r = traceOn('node-a', [service(NS, 'empty', '10.96.0.11', [{ name: 'http', port: 80 }])], { src: POD['client-a'], dst: '10.96.0.11', dstPort: 80 });
    expect(r.destinations).toMatchObject([{ verdict: 'reject', probability: 1 }]);
  });

  // e2e: 'follows endpoints added and removed'
  it('with one endpoint left, every connection goes to it', () => {
    const objects = [webService[0]!, endpointSlice(NS, 'web', 'web-1', [{ name: 'http', port: 8080 }], web().slice(0, 1))];
    expect(distribution(traceOn('node-b', objects, { src: POD['client-b'], dst: '10.96.0.10', dstPort: 80 }))).toEqual({ '10.244.1.11:8080': 1 });
  });

  // e2e: 'maps named ports per endpoint (multiport), and serves UDP'
  it('named ports map per endpoint, and UDP is served', () => {
    const objects = [
      service(NS, 'multi', '10.96.0.20', [
        { name: 'http', port: 80, targetPort: 'http' },
        { name: 'alt', port: 81, targetPort: 'alt' },
        { name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP' },
      ]),
      endpointSlice(NS, 'multi', 'multi-a', [{ name: 'http', port: 8080 }, { name: 'alt', port: 8081 }], web().slice(0, 1)),
      endpointSlice(NS, 'multi', 'multi-b', [{ name: 'http', port: 8081 }, { name: 'alt', port: 8080 }], web().slice(1)),
      endpointSlice(NS, 'multi', 'multi-udp', [{ name: 'dns', port: 8080, protocol: 'UDP' }], web()),
    ];
    const from = { src: POD['client-a'], dst: '10.96.0.20' };
    expect(distribution(traceOn('node-a', objects, { ...from, dstPort: 80 }))).toEqual({ '10.244.1.11:8080': 0.5, '10.244.2.11:8081': 0.5 });
    expect(distribution(traceOn('node-a', objects, { ...from, dstPort: 81 }))).toEqual({ '10.244.1.11:8081': 0.5, '10.244.2.11:8080': 0.5 });
    const udp = traceOn('node-b', objects, { src: POD['client-b'], dst: '10.96.0.20', dstPort: 53, protocol: 'udp' });
    expect(distribution(udp)).toEqual({ '10.244.1.11:8080': 0.5, '10.244.2.11:8080': 0.5 });
  });

  // e2e: 'serves a NodePort on every node, also from a node without a local endpoint'
  it('a NodePort on either node reaches the only endpoint, masqueraded', () => {
    const objects = [
      service(NS, 'np', '10.96.0.30', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort' }),
      endpointSlice(NS, 'np', 'np-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)),
    ];
    for (const n of ['node-a', 'node-b'] as const) {
      const r = traceOn(n, objects, { src: EXTERNAL_IP, dst: NODE_IP[n], dstPort: 30080, from: 'external' });
      expect(r.destinations, n).toMatchObject([{ verdict: 'dnat', address: '10.244.1.11:8080', probability: 1, masquerade: true }]);
    }
  });

  // e2e: 'externalTrafficPolicy Local keeps the client IP, and its health check port says 200/503'
  it('externalTrafficPolicy Local: the node with the endpoint keeps the client IP, the other drops; health check answers', () => {
    const objects = [
      service(NS, 'local', '10.96.0.40', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30090 }], {
        type: 'LoadBalancer',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 32090,
      }),
      endpointSlice(NS, 'local', 'local-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)),
    ];
    const onA = traceOn('node-a', objects, { src: EXTERNAL_IP, dst: NODE_IP['node-a'], dstPort: 30090, from: 'external' });
    expect(onA.destinations).toMatchObject([{ verdict: 'dnat', address: '10.244.1.11:8080', masquerade: false }]);
    const onB = traceOn('node-b', objects, { src: EXTERNAL_IP, dst: NODE_IP['node-b'], dstPort: 30090, from: 'external' });
    expect(onB.destinations).toMatchObject([{ verdict: 'drop', decidedBy: { comment: 'e2e/local:http has no local endpoints' } }]);
    const health = (n: NodeName) => traceOn(n, objects, { src: EXTERNAL_IP, dst: NODE_IP[n], dstPort: 32090, from: 'external' });
    expect(health('node-a').destinations).toMatchObject([{ verdict: 'accept' }]);
    expect(health('node-a').why.join('\n')).toMatch(/node-a has 1 local endpoint\b/);
    expect(health('node-b').destinations).toMatchObject([{ verdict: 'accept' }]);
    expect(health('node-b').why.join('\n')).toMatch(/node-b has 0 local endpoints/);
  });

  // e2e: 'internalTrafficPolicy Local serves only clients on a node with a local endpoint'
  it('internalTrafficPolicy Local: served on node-a, dropped on node-b', () => {
    const objects = [
      service(NS, 'itp', '10.96.0.50', [{ name: 'http', port: 80, targetPort: 8080 }], { internalTrafficPolicy: 'Local' }),
      endpointSlice(NS, 'itp', 'itp-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)),
    ];
    expect(distribution(traceOn('node-a', objects, { src: POD['client-a'], dst: '10.96.0.50', dstPort: 80 }))).toEqual({ '10.244.1.11:8080': 1 });
    expect(distribution(traceOn('node-b', objects, { src: POD['client-b'], dst: '10.96.0.50', dstPort: 80 }))).toEqual({ drop: 1 });
  });

  // e2e: 'ClientIP affinity keeps one client on one endpoint'
  it('ClientIP affinity: the first connection is balanced, and later ones stick', () => {
    const objects = [
      service(NS, 'sticky', '10.96.0.60', [{ name: 'http', port: 80, targetPort: 8080 }], { sessionAffinity: 'ClientIP' }),
      endpointSlice(NS, 'sticky', 'sticky-1', [{ name: 'http', port: 8080 }], web()),
    ];
    const r = traceOn('node-a', objects, { src: POD['client-a'], dst: '10.96.0.60', dstPort: 80 });
    expect(r.destinations.map((d) => [d.address, d.sticky])).toEqual([
      ['10.244.1.11:8080', true],
      ['10.244.2.11:8080', true],
    ]);
    expect(r.why.join('\n')).toMatch(/its next connections within 10800 s go to the endpoint it got/);
  });

  // e2e: 'lets a pod reach itself through its own service (hairpin)'
  it('hairpin: a pod reaching itself through its service is masqueraded', () => {
    const objects = [
      service(NS, 'self', '10.96.0.70', [{ name: 'http', port: 80, targetPort: 8080 }]),
      endpointSlice(NS, 'self', 'self-1', [{ name: 'http', port: 8080 }], web().slice(0, 1)),
    ];
    const r = traceOn('node-a', objects, { src: POD['web-a1'], dst: '10.96.0.70', dstPort: 80 });
    expect(r.destinations).toMatchObject([{ verdict: 'dnat', address: '10.244.1.11:8080', masquerade: true }]);
    expect(r.outcomes[0]!.markedBy?.chain).toMatch(/^KUBE-SEP-/);
  });

  // e2e: 'falls back to serving-and-terminating endpoints when none is ready'
  it('no ready endpoint: the serving, terminating one serves; the non-serving one never', () => {
    const objects = [
      service(NS, 'term', '10.96.0.80', [{ name: 'http', port: 80, targetPort: 8080 }]),
      endpointSlice(NS, 'term', 'term-1', [{ name: 'http', port: 8080 }], [
        { ip: POD['web-a1'], nodeName: 'node-a', ready: false, serving: true, terminating: true },
        { ip: POD['web-b1'], nodeName: 'node-b', ready: false, serving: false, terminating: true },
      ]),
    ];
    const r = traceOn('node-b', objects, { src: POD['client-b'], dst: '10.96.0.80', dstPort: 80 });
    expect(distribution(r)).toEqual({ '10.244.1.11:8080': 1 });
    expect(r.why.join('\n')).toMatch(/serving while terminating \(fallback\)/);
  });

  // e2e: 'stops serving a deleted Service, keeps the others, and serves it again when recreated'
  it('a deleted Service has no rules: its cluster IP goes nowhere, the others still work', () => {
    const r = traceOn('node-a', webService, { src: POD['client-a'], dst: '10.96.0.90', dstPort: 80 });
    expect(r.destinations).toMatchObject([{ verdict: 'no-match' }]);
    expect(r.service).toBeNull();
  });
});
