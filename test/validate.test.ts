/**
 * Validation of raw Service / EndpointSlice / Node objects, table by table: each bad field
 * gives a problem of the right kind whose reason starts with that field's path, on one
 * line; good neighbours of bad objects still render.
 */
import { describe, expect, it } from 'vitest';
import { validateEndpointSlice, validateNode, validateService } from '../src/kube/validate.js';
import { buildNodeModel } from '../src/model/build.js';
import type { IPFamily } from '../src/model/types.js';
import { renderIptables } from '../src/modes/iptables/render.js';
import { restoreText } from '../src/modes/iptables/ruleset.js';

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const INJECTION = 'x"\n-A INPUT -j ACCEPT\nCOMMIT';

function service(): Raw {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' } },
    spec: {
      type: 'ClusterIP',
      clusterIP: '172.30.0.10',
      clusterIPs: ['172.30.0.10'],
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    },
  };
}

function slice(): Raw {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['10.1.0.5'], conditions: { ready: true }, nodeName: 'node-a', zone: 'zone-a' }],
  };
}

function node(): Raw {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-a', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    status: { addresses: [{ type: 'InternalIP', address: '192.168.0.10' }, { type: 'Hostname', address: 'node-a' }] },
  };
}

interface Case {
  what: string;
  /** Breaks a fresh valid object (in place, or returns a replacement). */
  mutate: (o: Raw) => unknown;
  /** The reason must start with this field path. */
  field: string;
}

const serviceCases: Case[] = [
  { what: 'clusterIP not an IP (256.1.1.1)', mutate: (o) => ((o.spec.clusterIPs = undefined), (o.spec.clusterIP = '256.1.1.1')), field: 'spec.clusterIP' },
  { what: 'clusterIP with an injected rule', mutate: (o) => (o.spec.clusterIPs = ['1.2.3.4\n-A INPUT -j ACCEPT']), field: 'spec.clusterIPs[0]' },
  { what: 'leading-zero octet that would be octal 255 (0377.0.0.1)', mutate: (o) => (o.spec.clusterIPs = ['0377.0.0.1']), field: 'spec.clusterIPs[0]' },
  { what: 'IPv4-mapped IPv6 clusterIP', mutate: (o) => (o.spec.clusterIPs = ['::ffff:1.2.3.4']), field: 'spec.clusterIPs[0]' },
  { what: 'clusterIP with a zone', mutate: (o) => (o.spec.clusterIPs = ['fe80::1%eth0']), field: 'spec.clusterIPs[0]' },
  { what: 'second clusterIP not an IP', mutate: (o) => (o.spec.clusterIPs = ['172.30.0.10', 'fd00::1::2']), field: 'spec.clusterIPs[1]' },
  { what: 'clusterIP of the wrong type', mutate: (o) => ((o.spec.clusterIPs = undefined), (o.spec.clusterIP = 172300010)), field: 'spec.clusterIP' },
  { what: 'dual-stack clusterIPs of one family (IPv4)', mutate: (o) => (o.spec.clusterIPs = ['172.30.0.10', '172.30.0.11']), field: 'spec.clusterIPs' },
  { what: 'dual-stack clusterIPs of one family (IPv6)', mutate: (o) => (o.spec.clusterIPs = ['fd00::10', 'fd00::11']), field: 'spec.clusterIPs' },
  { what: 'three clusterIPs', mutate: (o) => (o.spec.clusterIPs = ['172.30.0.10', 'fd00::10', '172.30.0.11']), field: 'spec.clusterIPs' },
  { what: 'port 0', mutate: (o) => (o.spec.ports[0].port = 0), field: 'spec.ports[0].port' },
  { what: 'port 70000', mutate: (o) => (o.spec.ports[0].port = 70000), field: 'spec.ports[0].port' },
  { what: 'port "80" (a string)', mutate: (o) => (o.spec.ports[0].port = '80'), field: 'spec.ports[0].port' },
  { what: 'port 1.5', mutate: (o) => (o.spec.ports[0].port = 1.5), field: 'spec.ports[0].port' },
  { what: 'port -1', mutate: (o) => (o.spec.ports[0].port = -1), field: 'spec.ports[0].port' },
  { what: 'port missing', mutate: (o) => delete o.spec.ports[0].port, field: 'spec.ports[0].port' },
  { what: 'second port bad', mutate: (o) => o.spec.ports.push({ name: 'https', port: 65536 }), field: 'spec.ports[1].port' },
  { what: 'nodePort 70000', mutate: (o) => ((o.spec.type = 'NodePort'), (o.spec.ports[0].nodePort = 70000)), field: 'spec.ports[0].nodePort' },
  { what: 'nodePort "30080"', mutate: (o) => ((o.spec.type = 'LoadBalancer'), (o.spec.ports[0].nodePort = '30080')), field: 'spec.ports[0].nodePort' },
  { what: 'unknown protocol ICMP', mutate: (o) => (o.spec.ports[0].protocol = 'ICMP'), field: 'spec.ports[0].protocol' },
  { what: 'lowercase protocol tcp', mutate: (o) => (o.spec.ports[0].protocol = 'tcp'), field: 'spec.ports[0].protocol' },
  { what: 'protocol with an injected rule', mutate: (o) => (o.spec.ports[0].protocol = 'TCP -j ACCEPT'), field: 'spec.ports[0].protocol' },
  { what: 'port name with injection', mutate: (o) => (o.spec.ports[0].name = INJECTION), field: 'spec.ports[0].name' },
  { what: 'port name in upper case', mutate: (o) => (o.spec.ports[0].name = 'HTTP'), field: 'spec.ports[0].name' },
  { what: 'duplicate port name and protocol', mutate: (o) => o.spec.ports.push({ name: 'http', port: 81 }), field: 'spec.ports' },
  { what: 'unknown sessionAffinity', mutate: (o) => (o.spec.sessionAffinity = 'Sticky'), field: 'spec.sessionAffinity' },
  ...[0, -1, 86401, 1.5, '100', true].map((t) => ({
    what: `sessionAffinity timeout ${JSON.stringify(t)}`,
    mutate: (o: Raw) => ((o.spec.sessionAffinity = 'ClientIP'), (o.spec.sessionAffinityConfig = { clientIP: { timeoutSeconds: t } })),
    field: 'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
  })),
  { what: 'externalIP not an IP', mutate: (o) => (o.spec.externalIPs = ['1.2.3.4', '1.2.3.4 -j ACCEPT']), field: 'spec.externalIPs[1]' },
  {
    what: 'load balancer ingress IP not an IP',
    mutate: (o) => ((o.spec.type = 'LoadBalancer'), (o.status = { loadBalancer: { ingress: [{ ip: '256.0.0.1' }] } })),
    field: 'status.loadBalancer.ingress[0].ip',
  },
  {
    what: 'load balancer ingress ipMode unknown',
    mutate: (o) => (o.status = { loadBalancer: { ingress: [{ ip: '203.0.113.1', ipMode: 'Tunnel' }] } }),
    field: 'status.loadBalancer.ingress[0].ipMode',
  },
  { what: 'loadBalancerSourceRanges /33', mutate: (o) => (o.spec.loadBalancerSourceRanges = ['10.0.0.0/33']), field: 'spec.loadBalancerSourceRanges[0]' },
  { what: 'loadBalancerSourceRanges without prefix', mutate: (o) => (o.spec.loadBalancerSourceRanges = ['10.0.0.0/8', '10.0.0.1']), field: 'spec.loadBalancerSourceRanges[1]' },
  {
    what: 'source-ranges annotation with a bad CIDR',
    mutate: (o) => (o.metadata.annotations = { 'service.beta.kubernetes.io/load-balancer-source-ranges': '10.0.0.0/8, nope' }),
    field: 'metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]',
  },
  { what: 'unknown type', mutate: (o) => (o.spec.type = 'Foo'), field: 'spec.type' },
  { what: 'externalTrafficPolicy Lokal', mutate: (o) => (o.spec.externalTrafficPolicy = 'Lokal'), field: 'spec.externalTrafficPolicy' },
  { what: 'internalTrafficPolicy local', mutate: (o) => (o.spec.internalTrafficPolicy = 'local'), field: 'spec.internalTrafficPolicy' },
  { what: 'healthCheckNodePort 70000', mutate: (o) => (o.spec.healthCheckNodePort = 70000), field: 'spec.healthCheckNodePort' },
  { what: 'name with injection', mutate: (o) => (o.metadata.name = INJECTION), field: 'metadata.name' },
  { what: 'name starting with a digit (not DNS-1035)', mutate: (o) => (o.metadata.name = '1web'), field: 'metadata.name' },
  { what: 'name of 64 characters', mutate: (o) => (o.metadata.name = 'a'.repeat(64)), field: 'metadata.name' },
  { what: 'name missing', mutate: (o) => delete o.metadata.name, field: 'metadata.name' },
  { what: 'name not a string', mutate: (o) => (o.metadata.name = 42), field: 'metadata.name' },
  { what: 'namespace with spaces', mutate: (o) => (o.metadata.namespace = 'my shop'), field: 'metadata.namespace' },
  { what: 'label value not a string', mutate: (o) => (o.metadata.labels = { app: 5 }), field: 'metadata.labels' },
  { what: 'label key with a newline, value not a string', mutate: (o) => (o.metadata.labels = { 'a\nkube-proxy-ts: forged': 5 }), field: 'metadata.labels' },
  { what: 'spec not a mapping', mutate: (o) => (o.spec = 'ClusterIP'), field: 'spec' },
  { what: 'ports not a list', mutate: (o) => (o.spec.ports = { port: 80 }), field: 'spec.ports' },
  { what: 'object not a mapping', mutate: () => ['not', 'a', 'service'], field: 'object' },
];

const sliceCases: Case[] = [
  { what: 'no kubernetes.io/service-name label', mutate: (o) => (o.metadata.labels = {}), field: 'metadata.labels[kubernetes.io/service-name]' },
  { what: 'no labels at all', mutate: (o) => delete o.metadata.labels, field: 'metadata.labels[kubernetes.io/service-name]' },
  { what: 'service-name label with injection', mutate: (o) => (o.metadata.labels['kubernetes.io/service-name'] = INJECTION), field: 'metadata.labels[kubernetes.io/service-name]' },
  { what: 'name with injection', mutate: (o) => (o.metadata.name = INJECTION), field: 'metadata.name' },
  { what: 'unknown addressType', mutate: (o) => (o.addressType = 'IPv5'), field: 'addressType' },
  { what: 'addressType missing', mutate: (o) => delete o.addressType, field: 'addressType' },
  { what: 'IPv6 address in an IPv4 slice', mutate: (o) => (o.endpoints[0].addresses = ['fd00::5']), field: 'endpoints[0].addresses[0]' },
  {
    what: 'IPv4 address in an IPv6 slice',
    mutate: (o) => ((o.addressType = 'IPv6'), (o.endpoints = [{ addresses: ['fd00::5'] }, { addresses: ['10.1.0.6'] }])),
    field: 'endpoints[1].addresses[0]',
  },
  { what: 'address 256.1.1.1', mutate: (o) => (o.endpoints[0].addresses = ['256.1.1.1']), field: 'endpoints[0].addresses[0]' },
  { what: 'address with an injected rule', mutate: (o) => (o.endpoints[0].addresses = ['10.1.0.5\n-A INPUT -j ACCEPT']), field: 'endpoints[0].addresses[0]' },
  { what: 'no addresses', mutate: (o) => (o.endpoints[0].addresses = []), field: 'endpoints[0].addresses' },
  { what: 'port 0', mutate: (o) => (o.ports[0].port = 0), field: 'ports[0].port' },
  { what: 'port 70000', mutate: (o) => (o.ports[0].port = 70000), field: 'ports[0].port' },
  { what: 'port "8080"', mutate: (o) => (o.ports[0].port = '8080'), field: 'ports[0].port' },
  { what: 'port 1.5', mutate: (o) => (o.ports[0].port = 1.5), field: 'ports[0].port' },
  { what: 'unknown protocol', mutate: (o) => (o.ports[0].protocol = 'QUIC'), field: 'ports[0].protocol' },
  { what: 'port name with injection', mutate: (o) => (o.ports[0].name = INJECTION), field: 'ports[0].name' },
  { what: 'ready "true" (a string)', mutate: (o) => (o.endpoints[0].conditions.ready = 'true'), field: 'endpoints[0].conditions.ready' },
  { what: 'terminating 1', mutate: (o) => (o.endpoints[0].conditions.terminating = 1), field: 'endpoints[0].conditions.terminating' },
  { what: 'nodeName with injection', mutate: (o) => (o.endpoints[0].nodeName = INJECTION), field: 'endpoints[0].nodeName' },
  { what: 'zone with a space', mutate: (o) => (o.endpoints[0].zone = 'zone a'), field: 'endpoints[0].zone' },
  { what: 'zone hint with injection', mutate: (o) => (o.endpoints[0].hints = { forZones: [{ name: INJECTION }] }), field: 'endpoints[0].hints.forZones[0].name' },
  { what: 'endpoint not a mapping', mutate: (o) => (o.endpoints[1] = 'x'), field: 'endpoints[1]' },
  { what: 'node hint not a name', mutate: (o) => (o.endpoints[0].hints = { forNodes: [{ name: 'Node A' }] }), field: 'endpoints[0].hints.forNodes[0].name' },
  { what: 'endpoints not a list', mutate: (o) => (o.endpoints = 'all'), field: 'endpoints' },
  { what: 'object not a mapping', mutate: () => 'EndpointSlice', field: 'object' },
];

const nodeCases: Case[] = [
  { what: 'name with injection', mutate: (o) => (o.metadata.name = INJECTION), field: 'metadata.name' },
  { what: 'name missing', mutate: (o) => delete o.metadata.name, field: 'metadata.name' },
  { what: 'InternalIP not an IP', mutate: (o) => (o.status.addresses[0].address = '192.168.0.300'), field: 'status.addresses[0].address' },
  { what: 'ExternalIP with injection', mutate: (o) => o.status.addresses.push({ type: 'ExternalIP', address: '1.2.3.4 -j ACCEPT' }), field: 'status.addresses[2].address' },
  { what: 'label value not a string', mutate: (o) => (o.metadata.labels['topology.kubernetes.io/zone'] = ['zone-a']), field: 'metadata.labels' },
  { what: 'addresses not a list', mutate: (o) => (o.status.addresses = '192.168.0.10'), field: 'status.addresses' },
];

const validators = {
  Service: { make: service, validate: validateService, cases: serviceCases },
  EndpointSlice: { make: slice, validate: validateEndpointSlice, cases: sliceCases },
  Node: { make: node, validate: validateNode, cases: nodeCases },
} as const;

for (const [kind, { make, validate, cases }] of Object.entries(validators)) {
  describe(`${kind} validation`, () => {
    it('accepts the unbroken object', () => {
      const r = validate(make());
      expect(r.ok, r.ok ? '' : r.problem.reason).toBe(true);
    });

    for (const c of cases) {
      it(`${c.what}: reason names ${c.field}`, () => {
        const o = make();
        const replaced = c.mutate(o);
        const raw = c.field === 'object' ? replaced : o;
        const r = validate(raw);
        expect(r.ok).toBe(false);
        if (r.ok) return;
        expect(r.problem.kind).toBe(kind);
        expect(r.problem.reason.startsWith(`${c.field}`), r.problem.reason).toBe(true);
        expect(r.problem.reason.length).toBeGreaterThan(c.field.length + 2);
        // Problems are printed one per line: nothing from the input may break the line.
        expect(r.problem.reason, 'reason spans lines').not.toMatch(/[\n\r]/);
        // The problem names the object as far as it can be read.
        if (c.field !== 'object' && typeof o.metadata?.name === 'string') expect(r.problem.name).toBe(o.metadata.name);
        if (c.field === 'object') expect(r.problem.name).toBe('<unnamed>');
      });
    }
  });
}

describe('values that look odd but are valid', () => {
  it('reads a leading-zero IPv4 as decimal, not octal: 010.0.0.1 is 10.0.0.1', () => {
    const s = service();
    s.spec.clusterIPs = ['010.000.000.001'];
    const r = validateService(s);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.value.clusterIPs.map((ip) => ip.text)).toEqual(['10.0.0.1']);

    const sl = slice();
    sl.endpoints[0].addresses = ['010.001.000.017'];
    const rs = validateEndpointSlice(sl);
    expect(rs.ok).toBe(true);
    if (rs.ok) expect(rs.value!.endpoints[0]!.ip).toBe('10.1.0.17');
  });

  it('renders leading-zero and uppercase IPs canonically', () => {
    const s = service();
    s.spec.clusterIPs = ['010.030.000.010', 'FD00:0:0:0:0:0:0:A'];
    const sl = slice();
    sl.endpoints[0].addresses = ['010.001.000.005'];
    const { model, problems } = buildNodeModel({ services: [s], endpointSlices: [sl], nodes: [node()] }, 'node-a');
    expect(problems).toEqual([]);
    const v4 = restoreText(renderIptables(model.families.IPv4, model.node, {}));
    expect(v4).toContain('-d 10.30.0.10 --dport 80 -j KUBE-SVC-');
    expect(v4).toContain('-j DNAT --to-destination 10.1.0.5:8080');
    expect(v4).not.toMatch(/\b0[0-9]+\./);
    const v6 = restoreText(renderIptables(model.families.IPv6, model.node, {}));
    expect(v6).toContain('-d fd00::a --dport 80');
  });

  it('ignores an FQDN slice without a problem, whatever its endpoints hold', () => {
    const sl = slice();
    sl.addressType = 'FQDN';
    sl.endpoints = [{ addresses: ['db.example.com', INJECTION] }];
    const r = validateEndpointSlice(sl);
    expect(r).toEqual({ ok: true, value: null });
    const { model, problems } = buildNodeModel({ services: [service()], endpointSlices: [sl], nodes: [] }, 'node-a');
    expect(problems).toEqual([]);
    expect(model.families.IPv4.servicePorts[0]!.endpoints).toEqual([]);
  });

  it('skips a slice port without a number (all ports) without a problem', () => {
    const sl = slice();
    sl.ports.push({ name: 'all' });
    expect(validateEndpointSlice(sl).ok).toBe(true);
  });

  it('accepts hostile label and annotation values, unknown fields and Hostname addresses', () => {
    const s = service();
    s.metadata.labels.note = INJECTION;
    s.metadata.annotations = { 'x/y': INJECTION };
    s.spec.someFutureField = { nested: INJECTION };
    expect(validateService(s).ok).toBe(true);
    const n = node();
    n.status.addresses.push({ type: 'InternalDNS', address: INJECTION });
    expect(validateNode(n).ok).toBe(true);
  });

  it('takes a missing port name as unnamed and a missing protocol as TCP', () => {
    const s = service();
    delete s.spec.ports[0].name;
    delete s.spec.ports[0].protocol;
    const r = validateService(s);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.value.ports[0]).toMatchObject({ name: '', port: 80, protocol: 'TCP', nodePort: 0 });
  });
});

describe('a cluster mixing bad and good objects', () => {
  const family: IPFamily = 'IPv4';
  const good = service();
  const goodSlice = slice();
  const bad = service();
  bad.metadata.name = 'broken';
  bad.spec.clusterIPs = ['172.30.0.99'];
  bad.spec.ports[0].port = 70000;
  const badSlice = slice();
  badSlice.metadata.name = 'web-bad';
  badSlice.endpoints[0].addresses = ['fd00::1'];
  const other = service();
  other.metadata.name = 'api';
  other.spec.clusterIPs = ['172.30.0.20'];
  const otherSlice = slice();
  otherSlice.metadata = { name: 'api-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'api' } };
  otherSlice.endpoints[0].addresses = ['10.1.0.7'];
  const badNode = node();
  badNode.metadata.name = 'Node A';

  const objects = {
    services: [bad, good, 'garbage', other],
    endpointSlices: [badSlice, goodSlice, otherSlice, { kind: 'EndpointSlice' }],
    nodes: [badNode, node()],
  };
  const { model, problems } = buildNodeModel(objects, 'node-a');
  const text = restoreText(renderIptables(model.families[family], model.node, { clusterCIDRs: ['10.0.0.0/8'] }));

  it('reports exactly the bad objects', () => {
    const got = problems.map((p) => `${p.kind} ${p.namespace}/${p.name} ${p.reason.split(':')[0]}`).sort();
    expect(got).toEqual(
      [
        'EndpointSlice default/<unnamed> metadata.name',
        'EndpointSlice shop/web-bad endpoints[0].addresses[0]',
        'Node default/Node A metadata.name',
        'Service default/<unnamed> object',
        'Service shop/broken spec.ports[0].port',
      ].sort(),
    );
  });

  it('still renders the good Services with their endpoints', () => {
    expect(text).toMatch(/^-A KUBE-SERVICES -m comment --comment "shop\/web:http cluster IP" -m tcp -p tcp -d 172\.30\.0\.10 --dport 80 -j KUBE-SVC-/m);
    expect(text).toMatch(/^-A KUBE-SERVICES -m comment --comment "shop\/api:http cluster IP" -m tcp -p tcp -d 172\.30\.0\.20 --dport 80 -j KUBE-SVC-/m);
    expect(text).toContain('-j DNAT --to-destination 10.1.0.5:8080');
    expect(text).toContain('-j DNAT --to-destination 10.1.0.7:8080');
    // The valid Node was read: its zone and addresses reached the model.
    expect(model.node.zone).toBe('zone-a');
    expect(model.node.nodeIPs).toEqual(['192.168.0.10']);
  });

  it('leaves the bad ones out entirely', () => {
    expect(text).not.toContain('broken');
    expect(text).not.toContain('172.30.0.99');
    expect(text).not.toContain('fd00::1');
    expect(model.families.IPv6.servicePorts).toEqual([]);
  });
});
