/** userspace mode's pure parts: listener port allocation, which listeners a model asks for, the annotation. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseInvocation } from '../src/cli/program.js';
import { userspaceConfig } from '../src/config/options.js';
import { connectionAge } from '../src/modes/userspace/age.js';
import { parsePortRange } from '../src/config/portrange.js';
import { allocatePorts } from '../src/modes/userspace/ports.js';
import { renderUserspace } from '../src/modes/userspace/render.js';
import { cli } from './support/cli.js';
import { pipeline } from './support/pipeline.js';

const RANGE = { first: 100, last: 102 };

describe('listener ports', () => {
  it('gives new listeners the lowest free ports in key order, the same every time', () => {
    const a = allocatePorts(['b', 'a', 'c'], RANGE);
    expect([...a.ports]).toEqual([
      ['a', 100],
      ['b', 101],
      ['c', 102],
    ]);
    expect(a.unplaced).toEqual([]);
  });

  it('keeps the ports listeners hold, and fills the gaps around them', () => {
    const a = allocatePorts(['a', 'z', 'm'], RANGE, new Map([['z', 100]]));
    expect(a.ports.get('z')).toBe(100);
    expect(a.ports.get('a')).toBe(101);
    expect(a.ports.get('m')).toBe(102);
  });

  it('skips ports it could not bind, and says who found no room', () => {
    const a = allocatePorts(['a', 'b', 'c'], RANGE, new Map([['a', 101]]), new Set([101]));
    expect(a.ports.get('a')).toBe(100);
    expect(a.ports.get('b')).toBe(102);
    expect(a.unplaced).toEqual(['c']);
  });

  it('parses --proxy-port-range as upstream wrote it', () => {
    expect(parsePortRange('28000-29999')).toEqual({ first: 28000, last: 29999 });
    expect(parsePortRange('28000+9')).toEqual({ first: 28000, last: 28009 });
    expect(parsePortRange('28000')).toEqual({ first: 28000, last: 28000 });
    expect(parsePortRange('2-1')).toBeNull();
    expect(parsePortRange('1-70000')).toBeNull();
    expect(parsePortRange('a-b')).toBeNull();
  });
});

const CLUSTER = `
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 192.168.1.10}]}
---
apiVersion: v1
kind: Service
metadata:
  namespace: shop
  name: web
  annotations: {userspace.kube-proxy-ts.io/max-connection-age: "soon"}
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {namespace: telco, name: sig}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: s, port: 36412, protocol: SCTP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: shop, name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.0.5], nodeName: node-a, conditions: {ready: true}}
- {addresses: [10.244.1.5], nodeName: node-b, conditions: {ready: true}}
`;

describe('userspace listeners', () => {
  const p = pipeline(CLUSTER, ['--proxy-mode', 'userspace', '--hostname-override', 'node-a']);
  const model = p.build.model.families.IPv4;
  const plan = renderUserspace(model, p.build.model.node, { clusterCIDRs: ['10.244.0.0/16'], nodePortAddresses: [], localhostNodePorts: true, portRange: { first: 28000, last: 28009 } });

  it('gives external traffic a listener of its own when its policy picks other endpoints', () => {
    const byKey = new Map(plan.listeners.map((l) => [l.key, l]));
    expect(byKey.get('shop/web:http TCP')!.set.endpoints.map((e) => e.address)).toEqual(['10.244.0.5:8080', '10.244.1.5:8080']);
    expect(byKey.get('shop/web:http TCP external')!.set.endpoints.map((e) => e.address)).toEqual(['10.244.0.5:8080']);
    const rules = plan.ruleset.services.flatMap((s) => s.shared.map((r) => `${r.chain} ${r.rule}`));
    expect(rules).toContain('KUBE-NODEPORT-CONTAINER -m comment --comment "shop/web:http node port" -m tcp -p tcp --dport 30080 -j REDIRECT --to-ports 28001');
    // Pods and the node itself are served by the cluster set, as the kernel modes short-circuit them.
    expect(rules).toContain('KUBE-NODEPORT-CONTAINER -m comment --comment "shop/web:http node port from pods" -m tcp -p tcp -s 10.244.0.0/16 --dport 30080 -j REDIRECT --to-ports 28000');
    expect(rules).toContain('KUBE-NODEPORT-HOST -m comment --comment "shop/web:http node port" -m tcp -p tcp --dport 30080 -j REDIRECT --to-ports 28000');
    expect(rules).toContain('KUBE-PORTALS-HOST -m comment --comment "shop/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j REDIRECT --to-ports 28000');
  });

  it('says in --explain that the backend sees the node\'s address, and what keeps the client\'s', () => {
    const text = p.dryRunText(true);
    expect(text).toMatch(/# source IP: the agent opens its own connection to the endpoint, so the backend sees this\n# node's address, never the client's/);
    expect(text).toMatch(/--proxy-mode iptables/);
    expect(text).toMatch(/#   28000\/tcp shop\/web:http TCP: cluster IP 10.96.0.20:80 -> 10.244.0.5:8080, 10.244.1.5:8080/);
  });

  it('refuses SCTP by name, and proxies the rest', () => {
    expect(plan.refused).toEqual([{ servicePort: 'telco/sig:s SCTP', reason: expect.stringMatching(/SCTP is not proxied in userspace mode/) }]);
    expect(plan.listeners).toHaveLength(2);
  });

  it('uses the flag when the annotation is not a duration, and says so', () => {
    const web = model.servicePorts.find((sp) => sp.serviceName === 'web')!;
    expect(connectionAge(web, 60_000)).toEqual({ ms: 60_000, problem: expect.stringMatching(/"soon" is not a duration/) });
    expect(connectionAge({ ...web, maxConnectionAge: '0' }, 60_000)).toEqual({ ms: 0, problem: null });
    expect(connectionAge({ ...web, maxConnectionAge: '2m' }, 0)).toEqual({ ms: 120_000, problem: null });
  });
});

describe('userspace trace', () => {
  const p = pipeline(CLUSTER, ['--proxy-mode', 'userspace', '--hostname-override', 'node-a']);

  it('names the capture rule and listener, and the endpoints its scheduler picks from', () => {
    const t = p.trace({ src: '10.244.0.9', dst: '10.96.0.20', dstPort: 80 });
    const rule = t.path.steps.find((s) => s.kind === 'rule');
    expect(rule).toMatchObject({ chain: 'KUBE-PORTALS-CONTAINER', result: 'match', role: { kind: 'proxied', listener: 'shop/web:http TCP' } });
    expect(t.destinations.map((d) => [d.verdict, d.address, d.probability])).toEqual([
      ['dnat', '10.244.0.5:8080', 0.5],
      ['dnat', '10.244.1.5:8080', 0.5],
    ]);
    expect(t.why.join('\n')).toMatch(/endpoint sees node-a's address, not 10.244.0.9/);
  });

  it('sends node port traffic from outside to the external listener, local endpoints only', () => {
    const t = p.trace({ src: '203.0.113.5', dst: '192.168.1.10', dstPort: 30080, from: 'external' });
    const rule = t.path.steps.find((s) => s.kind === 'rule');
    expect(rule).toMatchObject({ chain: 'KUBE-NODEPORT-CONTAINER', role: { kind: 'proxied', listener: 'shop/web:http TCP external' } });
    expect(t.destinations.map((d) => d.address)).toEqual(['10.244.0.5:8080']);
  });

  it('captures nothing that is not a service of this node', () => {
    const t = p.trace({ src: '10.244.0.9', dst: '10.96.0.99', dstPort: 80 });
    expect(t.destinations.map((d) => d.verdict)).toEqual(['no-match']);
  });
});

describe('userspace flags and configuration', () => {
  it('takes the flags, and upstream\'s portRange and udpIdleTimeout from a KubeProxyConfiguration', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kpt-us-cfg-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nportRange: "30000+99"\nudpIdleTimeout: 1s\n');
    const r = cli(['--config', file, '--userspace-scheduler', 'lc', '--userspace-max-connection-age', '5m', '--write-config-to', '-']);
    rmSync(dir, { recursive: true, force: true });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('portRange: 30000-30099');
    expect(r.stdout).toContain('udpIdleTimeout: 1s');
    expect(r.stderr).toBe('');
  });

  it('takes --userspace-data-path (splice when absent) and --userspace-workers (the agent itself when absent), and refuses a negative count', () => {
    const io = { readFile: (p: string) => readFileSync(p, 'utf8') };
    expect(userspaceConfig(parseInvocation([], io, 'h').config).dataPath).toBe('splice');
    expect(userspaceConfig(parseInvocation(['--userspace-data-path', 'node'], io, 'h').config).dataPath).toBe('node');
    expect(() => parseInvocation(['--userspace-data-path', 'copy'], io, 'h')).toThrow(/copy/);
    expect(userspaceConfig(parseInvocation([], io, 'h').config).workers).toBe(0);
    expect(userspaceConfig(parseInvocation(['--userspace-workers', '0'], io, 'h').config).workers).toBe(0);
    expect(userspaceConfig(parseInvocation(['--userspace-workers', '4', '--userspace-data-path', 'node'], io, 'h').config).workers).toBe(4);
    // Workers run Node's data path: with the splice engine (the default) they are refused, not ignored.
    expect(() => parseInvocation(['--userspace-workers', '4'], io, 'h')).toThrow(/add --userspace-data-path node/);
    const bad = cli(['--dry-run', '--proxy-mode', 'userspace', '--userspace-workers', '-1', '--from-file', '-'], '');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--userspace-workers: must be 0 to 256/);
  });

  it('refuses a malformed --proxy-port-range and a zero --udp-timeout with a clear error', () => {
    const bad = cli(['--dry-run', '--proxy-mode', 'userspace', '--proxy-port-range', '9-1', '--from-file', '-'], '');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--proxy-port-range.*FIRST-LAST/);
    const zero = cli(['--dry-run', '--proxy-mode', 'userspace', '--udp-timeout', '0', '--from-file', '-'], '');
    expect(zero.code).not.toBe(0);
    expect(zero.stderr).toMatch(/--udp-timeout: must be greater than 0/);
  });
});
