/**
 * `kube-proxy-ts trace` and `--dry-run --explain` from the command line: output shapes,
 * one-line failures, and the README's example being real output.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, cliAsync, type CliResult } from './support/cli.js';
import type { TraceResult } from '../src/trace/types.js';

const EXAMPLE = join(import.meta.dirname, '..', 'examples', 'cluster.yaml');
const base = ['trace', '--from-file', EXAMPLE, '--hostname-override', 'node-a', '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56'];

function oneLineFailure(r: CliResult): string {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^kube-proxy-ts: \S/);
  return lines[0]!;
}

describe('kube-proxy-ts trace', () => {
  it('prints the path, the verdict with each endpoint\'s share, and why', () => {
    const r = cli([...base, '--src', '10.244.0.7', '--dst', '10.96.20.15:80']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^tcp 10\.244\.0\.7 -> 10\.96\.20\.15:80 from a pod, entering node-a \(IPv4, iptables mode\)$/m);
    expect(r.stdout).toContain('   11 ✓ "shop/catalog:http cluster IP"');
    expect(r.stdout).toContain('Verdict: DNAT to one of 3 endpoints, not masqueraded');
    expect(r.stdout).toMatch(/^ {3}33\.3% {2}10\.244\.1\.31:8081 {2}node-b +zone-b {2}ready$/m);
    expect(r.stdout).toContain('internalTrafficPolicy Cluster: balanced over the cluster set (KUBE-SVC-ITBI3OHKD3FRXPDK)');
  });

  it('--output json: the documented shape, parseable', () => {
    const r = cli([...base, '--src', '203.0.113.9:40000', '--dst', '192.0.2.11:80', '--from', 'external', '--output', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as TraceResult;
    expect(j.schema).toBe('kube-proxy-ts/trace/v1');
    expect(j.packet).toEqual({ protocol: 'tcp', src: '203.0.113.9', srcPort: 40000, dst: '192.0.2.11', dstPort: 80, from: 'external' });
    expect(j.service).toEqual({ servicePort: 'shop/admin:http', protocol: 'TCP', role: 'load balancer IP' });
    expect(j.destinations).toMatchObject([{ verdict: 'dnat', address: '10.244.2.30:8080', probability: 1, masquerade: true, endpoint: { node: 'node-c' } }]);
    expect(Object.keys(j.path)).toEqual(['steps', 'branches', 'outcome']);
  });

  it('--from node takes the node\'s own address as the source', () => {
    const r = cli([...base, '--from', 'node', '--dst', '10.96.45.10:80', '--output', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as TraceResult;
    expect(j.packet.src).toBe('192.168.10.11');
    // The node is outside the pod CIDR: its traffic to a cluster IP is masqueraded.
    expect(j.destinations.every((d) => d.masquerade)).toBe(true);
  });

  it('traces IPv6 against the IPv6 rules, and UDP', () => {
    const v6 = cli([...base, '--src', 'fd00:10:244::7', '--dst', '[fd00:10:96::450a]:80', '--output', 'json']);
    expect(v6.code, v6.stderr).toBe(0);
    expect((JSON.parse(v6.stdout) as TraceResult).destinations.map((d) => d.address)).toEqual(['[fd00:10:244:1::50]:8080', '[fd00:10:244::50]:8080']);
    const udp = cli([...base, '--src', '10.244.0.7', '--dst', '10.96.0.10:53', '--protocol', 'udp']);
    expect(udp.stdout).toContain('Verdict: DNAT to 10.244.0.5:53, not masqueraded');
  });

  it('reads the cluster from stdin', () => {
    const args = ['trace', '--from-file', '-', '--hostname-override', 'node-a', '--src', '10.244.0.7', '--dst', '10.96.20.15:80'];
    const r = cli(args, readFileSync(EXAMPLE, 'utf8'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('shop/catalog:http (TCP), cluster IP');
  });

  it.each([
    [['--dst', '10.96.20.15:80'], 'trace --from pod needs --src'],
    [['--src', '10.244.0.7'], '--dst'],
    [['--src', '10.244.0.7', '--dst', '10.96.20.15'], '--dst'],
    [['--src', '10.244.0.7', '--dst', 'service:80'], '--dst'],
    [['--src', 'nowhere', '--dst', '10.96.20.15:80'], '--src'],
    [['--src', '10.244.0.7', '--dst', '10.96.20.15:80', '--protocol', 'icmp'], '--protocol'],
    [['--src', '10.244.0.7', '--dst', '10.96.20.15:80', '--from', 'moon'], '--from'],
    [['--src', '10.244.0.7', '--dst', '[fd00::1]:80'], 'different IP families'],
    [['--src', '10.244.0.7', '--dst', '10.96.20.15:80', '--proxy-mode', 'nftables'], 'trace is not available for nftables yet'],
  ])('%j: exit 2, one line naming %s', (flags, what) => {
    expect(oneLineFailure(cli([...base, ...flags]))).toContain(what);
  });

  it('without --from-file, reads the API server; one it cannot reach is one line and exit 2', async () => {
    const r = await cliAsync(['trace', '--kubeconfig', join(import.meta.dirname, 'no-such-kubeconfig'), '--src', '10.244.0.7', '--dst', '10.96.20.15:80']);
    expect(oneLineFailure(r)).toMatch(/^kube-proxy-ts: trace: reading the cluster: /);
  });

  describe('--dst and --src by name', () => {
    const trace = (...flags: string[]) => cli([...base, ...flags]);
    it('a Service by port name or number: its cluster IP and port, and the port\'s protocol', () => {
      const byName = trace('--src', '10.244.0.7', '--dst', 'shop/catalog:http');
      expect(byName.code, byName.stderr).toBe(0);
      expect(byName.stdout).toBe(trace('--src', '10.244.0.7', '--dst', '10.96.20.15:80').stdout);
      expect(trace('--src', '10.244.0.7', '--dst', 'shop/catalog:80').stdout).toBe(byName.stdout);
      const dns = trace('--src', '10.244.0.7', '--dst', 'kube-system/kube-dns:dns');
      expect(dns.code, dns.stderr).toBe(0);
      expect(dns.stdout).toMatch(/^udp 10\.244\.0\.7 -> 10\.96\.0\.10:53 /);
    });

    it('a dual-stack Service: the cluster IP of the source\'s family', () => {
      const v6 = trace('--src', 'fd00:10:244::7', '--dst', 'shop/storefront:http');
      expect(v6.code, v6.stderr).toBe(0);
      expect(v6.stdout).toMatch(/^tcp fd00:10:244::7 -> \[fd00:10:96::450a\]:80 /);
      expect(trace('--src', '10.244.0.7', '--dst', 'shop/storefront:http').stdout).toMatch(/^tcp 10\.244\.0\.7 -> 10\.96\.45\.10:80 /);
    });

    it('a node port by node: traced on that node', () => {
      const r = trace('--src', '192.0.2.7', '--from', 'external', '--dst', 'nodeport:node-b:30443');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^tcp 192\.0\.2\.7 -> \S+:30443 from outside the cluster, entering node-b /);
      expect(r.stdout).toContain('shop/frontend:https (TCP), node port');
    });

    it.each([
      [['--dst', 'shop/nope:80'], 'trace: no Service shop/nope with a cluster IP in the input (Services in shop: admin, cart, catalog, frontend, legacy-gateway, storefront)'],
      [['--dst', 'shop/catalog:grpcc'], 'trace: Service shop/catalog has no port grpcc; its ports: grpc 9090/TCP, http 80/TCP'],
      [['--dst', 'shop/catalog:http', '--protocol', 'udp'], 'trace: Service shop/catalog has no port http over UDP; its ports: grpc 9090/TCP, http 80/TCP'],
      [['--dst', 'nodeport:node-z:30443'], 'trace: no Node node-z in the input (nodes: node-a, node-b, node-c)'],
    ])('%j: one line naming what is missing and what there is', (flags, line) => {
      expect(oneLineFailure(trace('--src', '10.244.0.7', ...flags))).toBe(`kube-proxy-ts: ${line}`);
    });

    it('--src NAMESPACE/POD: the pod\'s IP, when the input has Pods', () => {
      const pods = `${readFileSync(EXAMPLE, 'utf8')}\n---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: shop, name: client}\nstatus: {podIP: 10.244.0.7}\n`;
      const r = cli(['trace', '--from-file', '-', '--hostname-override', 'node-a', '--cluster-cidr', '10.244.0.0/16', '--src', 'shop/client', '--dst', '10.96.20.15:80'], pods);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(trace('--src', '10.244.0.7', '--dst', '10.96.20.15:80').stdout);
      expect(oneLineFailure(cli(['trace', '--from-file', '-', '--hostname-override', 'node-a', '--src', 'shop/other', '--dst', '10.96.20.15:80'], pods))).toBe(
        'kube-proxy-ts: trace: no Pod shop/other in the input (Pods in shop: client)',
      );
      expect(oneLineFailure(trace('--src', 'shop/client', '--dst', '10.96.20.15:80'))).toMatch(/the input has no Pods/);
    });
  });

  it('--from node on a node the input does not know: asks for --src', () => {
    const r = cli(['trace', '--from-file', EXAMPLE, '--hostname-override', 'node-z', '--from', 'node', '--dst', '10.96.20.15:80']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^kube-proxy-ts: trace --from node needs --src: node node-z has no IPv4 address in the input$/m);
  });

  it('trace --help shows the trace flags; the program\'s help lists the subcommand', () => {
    const sub = cli(['trace', '--help']);
    expect(sub.code).toBe(0);
    for (const f of ['--dst', '--src', '--protocol', '--from <where>', '--output', '--cluster-cidr', '--from-file']) expect(sub.stdout).toContain(f);
    expect(sub.stdout).not.toContain('--metrics-bind-address');
    const top = cli(['--help']);
    expect(top.stdout).toMatch(/^ {2}trace \[options\] +show where a packet goes/m);
    expect(top.stdout).toContain('--explain');
  });

  it('the README example is real output', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Trace a packet'));
    const command = /```sh\nnpx kube-proxy-ts (.*)\n```/.exec(section)![1]!;
    const output = /```text\n([\s\S]*?)```/.exec(section)![1]!;
    const r = cli(command.split(' '));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(output);
  });
});

describe('--dry-run --explain', () => {
  const dry = ['--dry-run', '--from-file', EXAMPLE, '--hostname-override', 'node-a', '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56'];

  it('only adds comment lines: without them the output is the plain dry run, byte for byte', () => {
    const plain = cli(dry);
    const explained = cli([...dry, '--explain']);
    expect(explained.code, explained.stderr).toBe(0);
    const added = explained.stdout.split('\n').filter((l) => !plain.stdout.split('\n').includes(l));
    expect(added.length).toBeGreaterThan(50);
    for (const l of added) expect(l).toMatch(/^#/);
    const kept = explained.stdout.split('\n').filter((l) => !added.includes(l)).join('\n');
    expect(kept).toBe(plain.stdout);
  });

  it('names each endpoint\'s state, zone and hints, and the set each chain uses', () => {
    const out = cli([...dry, '--explain']).stdout;
    expect(out).toContain('#     KUBE-SVC-D4LVFIRJ4ZSSG6YW uses the cluster set: all 2 endpoints, ready');
    expect(out).toContain('#     KUBE-SVL-D4LVFIRJ4ZSSG6YW uses the local set, endpoints on node-a: 1 endpoint, ready');
    expect(out).toMatch(/^#       10\.244\.0\.20:8443 +node-a \(here\) +zone-a +ready +- +cluster, local$/m);
    expect(out).toMatch(/^#       10\.244\.1\.32:8080 +node-b +zone-b +terminating, serving +- +-$/m);
    expect(out).toMatch(/^#       10\.244\.1\.4:53 +node-b +zone-b +ready +zone zone-b +-$/m);
    expect(out).toContain('topology hints: the 1 endpoint hinted for zone zone-a (of 3 ready)');
    expect(out).toContain('#     cluster IP 10.96.50.5:4317 -> KUBE-SVL-BEXPJIHNQ7KUZUPJ (internalTrafficPolicy Local)');
    expect(out).toContain('loadBalancerSourceRanges 203.0.113.0/24: KUBE-FW-TLEJTH2VCYBKUDCH lets them in, KUBE-PROXY-FIREWALL drops the rest');
  });

  it('without --dry-run: refused', () => {
    expect(oneLineFailure(cli(['--explain', '--hostname-override', 'node-a']))).toContain('--explain goes with --dry-run');
  });
});
