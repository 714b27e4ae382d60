/**
 * Synthetic clusters for benchmarks: N ClusterIP/NodePort services with M ready
 * endpoints each, spread over a few nodes, as raw API objects. Node ports are unique (up
 * to 27,680 services), as the API server makes them.
 */
import type { ClusterObjects } from '../src/kube/objects.js';

export interface SyntheticSpec {
  services: number;
  endpointsPerService: number;
  nodes?: number;
}

export function syntheticCluster({ services, endpointsPerService, nodes = 3 }: SyntheticSpec): ClusterObjects {
  const out: ClusterObjects = { services: [], endpointSlices: [], nodes: [] };
  for (let n = 0; n < nodes; n++) {
    out.nodes.push({
      kind: 'Node',
      metadata: { name: `node-${n}`, labels: { 'topology.kubernetes.io/zone': `zone-${n % 2}` } },
      status: { addresses: [{ type: 'InternalIP', address: `192.168.0.${n + 10}` }] },
    });
  }
  for (let s = 0; s < services; s++) {
    const name = `svc-${s}`;
    const namespace = `ns-${s % 50}`;
    out.services.push({
      kind: 'Service',
      metadata: { name, namespace },
      spec: {
        type: s % 10 === 0 ? 'NodePort' : 'ClusterIP',
        clusterIP: `10.96.${(s >> 8) & 255}.${s & 255}`,
        ports: [{ name: 'http', port: 80, protocol: 'TCP', ...(s % 10 === 0 ? { nodePort: 30000 + ((s / 10) % 2768) } : {}) }],
      },
    });
    out.endpointSlices.push({
      kind: 'EndpointSlice',
      metadata: { name: `${name}-abcde`, namespace, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: Array.from({ length: endpointsPerService }, (_, e) => {
        const i = s * endpointsPerService + e;
        return {
          addresses: [`10.${128 + ((i >> 16) & 127)}.${(i >> 8) & 255}.${i & 255}`],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: `node-${i % nodes}`,
        };
      }),
    });
  }
  return out;
}
