import { describe, expect, it } from 'vitest';
import { conntrackArgs } from '../src/conntrack/tool.js';
import { buildNodeModel } from '../src/model/build.js';
import type { ServicePort } from '../src/model/types.js';
import { staleUdpFlows } from '../src/conntrack/stale.js';
import { endpointSlice, service, type EndpointSpec } from './support/objects.js';

function ports(protocol: 'UDP' | 'TCP', endpoints: EndpointSpec[], nodePort = 0): ServicePort[] {
  const svc = service('ns', 'dns', '10.96.0.10', [{ name: 'dns', port: 53, protocol, ...(nodePort ? { nodePort } : {}) }], nodePort ? { type: 'NodePort' } : {});
  const slice = endpointSlice('ns', 'dns', 'dns-1', [{ name: 'dns', port: 5353, protocol }], endpoints);
  return buildNodeModel({ services: [svc], endpointSlices: [slice], nodes: [] }, 'node-a').model.families.IPv4.servicePorts;
}

const a = { ip: '10.244.0.5', nodeName: 'node-a' };
const b = { ip: '10.244.1.5', nodeName: 'node-b' };

describe('staleUdpFlows', () => {
  it('deletes flows DNATed to an endpoint that is gone, on every address the port answers', () => {
    expect(staleUdpFlows(ports('UDP', [a, b], 30053), ports('UDP', [b], 30053))).toEqual([
      { family: 'IPv4', origDst: '10.96.0.10', dnatTo: '10.244.0.5' },
      { family: 'IPv4', origPortDst: 30053, dnatTo: '10.244.0.5' },
    ]);
  });

  it('deletes flows to the service once it has endpoints again, and for a deleted service', () => {
    expect(staleUdpFlows(ports('UDP', []), ports('UDP', [a]))).toEqual([{ family: 'IPv4', origDst: '10.96.0.10', dnatTo: null }]);
    expect(staleUdpFlows(ports('UDP', [a]), [])).toEqual([{ family: 'IPv4', origDst: '10.96.0.10', dnatTo: '10.244.0.5' }]);
  });

  it('leaves TCP alone, and unchanged UDP too', () => {
    expect(staleUdpFlows(ports('TCP', [a]), ports('TCP', []))).toEqual([]);
    expect(staleUdpFlows(ports('UDP', [a, b]), ports('UDP', [a, b]))).toEqual([]);
  });
});

describe('conntrackArgs', () => {
  it('builds conntrack -D filters', () => {
    expect(conntrackArgs({ family: 'IPv4', origDst: '10.96.0.10', dnatTo: '10.244.0.5' })).toEqual([
      '-D', '-f', 'ipv4', '-p', 'udp', '--orig-dst', '10.96.0.10', '--dst-nat', '10.244.0.5',
    ]);
    expect(conntrackArgs({ family: 'IPv6', origPortDst: 30053, dnatTo: null })).toEqual(['-D', '-f', 'ipv6', '-p', 'udp', '--orig-port-dst', '30053']);
  });
});
