/**
 * The command line's edges, run in-process: unreadable input and configuration fail with
 * exit 2 and one `kube-proxy-ts:` line naming what is wrong; warnings name each ignored
 * field; flags override the config file; stdin works; help answers.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, type CliResult } from './support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'kpt-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(text: string, name = `f${n++}.yaml`): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const CLUSTER = `apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  clusterIP: 172.30.0.41
  ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-abc, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
ports: [{name: p80, port: 80, protocol: TCP}]
endpoints:
- addresses: [10.180.0.1]
  nodeName: node-a
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 192.168.0.10}]}
`;
const cluster = file(CLUSTER, 'cluster.yaml');
const base = ['--dry-run', '--hostname-override', 'node-a', '--from-file', cluster];

const CLUSTER_IP_RULE = '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O';

function lines(s: string): string[] {
  return s.split('\n').filter((l) => l !== '');
}

/** Exit 2, nothing on stdout, exactly one stderr line starting `kube-proxy-ts:`. */
function expectOneLineFailure(r: CliResult): string {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr.endsWith('\n')).toBe(true);
  const ls = lines(r.stderr);
  expect(ls, r.stderr).toHaveLength(1);
  expect(ls[0]).toMatch(/^kube-proxy-ts: \S/);
  return ls[0]!;
}

function config(body: string): string {
  return file(`apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n${body}`);
}

describe('manifests that cannot be read', () => {
  it('works on the good cluster (the baseline the failures differ from)', () => {
    const r = cli(base);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(CLUSTER_IP_RULE);
  });

  it.each([
    ['broken flow syntax', '{{{ :\n'],
    ['unclosed quote', 'kind: "Service\nmetadata: {}\n'],
    ['bad indentation', 'kind: Service\n  metadata:\n name: x\n'],
    ['tab indentation', 'kind: Service\nmetadata:\n\tname: x\n'],
    ['a plain scalar document', 'hello world\n'],
    ['a number document', '42\n'],
    ['a list document', '- kind: Service\n- kind: Node\n'],
    ['a scalar after a good document', `${CLUSTER}---\njust text\n`],
  ])('%s: exit 2 with one line', (_what, text) => {
    const path = file(text);
    const line = expectOneLineFailure(cli(['--dry-run', '--from-file', path]));
    expect(line).toContain(path);
  });

  it('a missing file: exit 2 with one line naming it', () => {
    const path = join(dir, 'does-not-exist.yaml');
    const line = expectOneLineFailure(cli(['--dry-run', '--from-file', path]));
    expect(line).toContain(path);
    expect(line).toContain('ENOENT');
  });

  it('a directory: exit 2 with one line', () => {
    expectOneLineFailure(cli(['--dry-run', '--from-file', dir]));
  });

  it('an empty file is an empty cluster, not an error', () => {
    const r = cli(['--dry-run', '--hostname-override', 'node-a', '--from-file', file('')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('*nat');
  });

  it('JSON: a cut-off dump says what JSON.parse said too; a bare array of objects is read like a List', () => {
    const line = expectOneLineFailure(cli(['--dry-run', '--hostname-override', 'node-a', '--from-file', file('{"kind": "List", "items": [')]));
    expect(line).toMatch(/\(nor JSON: Unexpected end of JSON input\)$/);
    const svc = { apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'n' }, spec: { clusterIP: '10.96.0.9', ports: [{ port: 80 }] } };
    const r = cli(['--dry-run', '--hostname-override', 'node-a', '--from-file', file(JSON.stringify([svc]))]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('"n/s has no endpoints"');
  });

  // YAML aliases let a small file expand into a huge or self-referencing object. Either
  // is input the CLI must answer like any other unreadable input, not crash on.
  it('an alias bomb (billion laughs): exit 2 with one line, no crash', () => {
    let text = 'a0: &a0 [x, x, x, x, x, x, x, x, x]\n';
    for (let i = 1; i <= 12; i++) text += `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(', ')}]\n`;
    text += 'kind: Service\n';
    const path = file(text);
    let r: CliResult | undefined;
    expect(() => (r = cli(['--dry-run', '--from-file', path]))).not.toThrow();
    expectOneLineFailure(r!);
  });

  it('a self-referencing object: no crash; exit 2, or the object reported as a problem', () => {
    const path = file('apiVersion: v1\nkind: Service\nmetadata: {name: loop}\nspec:\n  clusterIP: &x [*x]\n  ports: [{port: 80}]\n');
    let r: CliResult | undefined;
    expect(() => (r = cli(['--dry-run', '--hostname-override', 'node-a', '--from-file', path]))).not.toThrow();
    expect([0, 2]).toContain(r!.code);
    for (const l of lines(r!.stderr)) expect(l).toMatch(/^kube-proxy-ts: /);
    if (r!.code === 0) expect(r!.stderr).toMatch(/^kube-proxy-ts: skipped Service default\/loop: spec\.clusterIP/m);
  });
});

describe('problems in the cluster', () => {
  it('reports each bad object on one line and still renders the rest', () => {
    const bad = `${CLUSTER}---
apiVersion: v1
kind: Service
metadata:
  name: "evil\\nkube-proxy-ts: forged line"
spec: {clusterIP: 172.30.0.50, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata:
  name: labels
  labels: {"k\\nkube-proxy-ts: forged too": 5}
spec: {clusterIP: 172.30.0.51, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: badport}
spec: {clusterIP: 172.30.0.52, ports: [{port: 70000}]}
`;
    const r = cli([...base.slice(0, -1), file(bad)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(CLUSTER_IP_RULE);
    const ls = lines(r.stderr);
    expect(ls, r.stderr).toHaveLength(3);
    for (const l of ls) expect(l).toMatch(/^kube-proxy-ts: skipped Service /);
    expect(ls.some((l) => l.includes('metadata.name'))).toBe(true);
    expect(ls.some((l) => l.includes('metadata.labels'))).toBe(true);
    expect(ls.some((l) => l.includes('default/badport: spec.ports[0].port'))).toBe(true);
    expect(r.stdout).not.toContain('172.30.0.5');
  });
});

describe('--config', () => {
  it.each([
    ['wrong kind', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n', 'kind'],
    ['wrong apiVersion', 'apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n', 'apiVersion'],
    ['masqueradeBit 40', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeBit: 40}\n', 'iptables.masqueradeBit'],
    ['masqueradeBit -1', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeBit: -1}\n', 'iptables.masqueradeBit'],
    ['masqueradeBit "x"', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeBit: "x"}\n', 'iptables.masqueradeBit'],
    ['masqueradeBit 1.5', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeBit: 1.5}\n', 'iptables.masqueradeBit'],
    ['masqueradeAll "yes"', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeAll: "yes"}\n', 'iptables.masqueradeAll'],
    ['clusterCIDR not a CIDR', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.0.0.0/33\n', 'clusterCIDR'],
    ['nodePortAddresses not a list', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nnodePortAddresses: 10.0.0.0/8\n', 'nodePortAddresses'],
    ['iptables not a mapping', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: [1]\n', 'iptables'],
  ])('%s: exit 2 with one line naming %s', (_what, text, field) => {
    const line = expectOneLineFailure(cli([...base, '--config', file(text)]));
    expect(line).toContain(field);
  });

  it.each([
    ['broken flow syntax', '{{{ :\n'],
    ['a plain scalar', 'iptables\n'],
    ['a list', '- kind: KubeProxyConfiguration\n'],
  ])('not a configuration (%s): exit 2 with one line naming the file', (_what, text) => {
    const path = file(text);
    const line = expectOneLineFailure(cli([...base, '--config', path]));
    expect(line).toContain(path);
  });

  it('a missing config file: exit 2 with one line naming it', () => {
    const path = join(dir, 'no-config.yaml');
    const line = expectOneLineFailure(cli([...base, '--config', path]));
    expect(line).toContain(path);
  });

  it('warns about each unknown and unsupported field, and still runs', () => {
    const path = config('frobnicate: 1\nconntrack: {maxPerCore: 0, turbo: true}\nipvs: {scheduler: rr}\niptables: {masqueradeBit: 10, turbo: true}\nclientConnection: {qps: 5}\n');
    const r = cli([...base, '--config', path]);
    expect(r.code, r.stderr).toBe(0);
    const warnings = lines(r.stderr);
    for (const field of ['frobnicate', 'conntrack.turbo', 'ipvs', 'iptables.turbo', 'clientConnection.qps']) {
      const hits = warnings.filter((w) => w.includes(field));
      expect(hits, `one warning for ${field} in:\n${r.stderr}`).toHaveLength(1);
      expect(hits[0]).toMatch(/^kube-proxy-ts: warning: /);
      expect(hits[0]).toContain(path);
    }
    expect(warnings).toHaveLength(5);
    // The known field in the same file applied.
    expect(r.stdout).toContain('-A KUBE-MARK-MASQ -j MARK --or-mark 0x400\n');
    expect(r.stdout).toContain(CLUSTER_IP_RULE);
  });

  it('applies its values: masqueradeBit 10 is 0x400', () => {
    const r = cli([...base, '--config', config('iptables: {masqueradeBit: 10}\n')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('-A KUBE-MARK-MASQ -j MARK --or-mark 0x400\n');
    expect(r.stdout).toContain('-A KUBE-POSTROUTING -m mark ! --mark 0x400/0x400 -j RETURN');
    expect(r.stdout).not.toContain('0x4000');
  });

  it('is overridden by flags: config bit 10 and --iptables-masquerade-bit 12 give 0x1000', () => {
    const path = config('iptables: {masqueradeBit: 10}\n');
    for (const flag of [['--iptables-masquerade-bit', '12'], ['--iptables-masquerade-bit=12']]) {
      const r = cli([...base, '--config', path, ...flag]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('-A KUBE-MARK-MASQ -j MARK --or-mark 0x1000\n');
      expect(r.stdout).toContain('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x1000/0x1000 -j ACCEPT');
      expect(r.stdout).not.toContain('0x400\n');
    }
  });

  it('is overridden by flags in either order of --config and the flag', () => {
    const path = config('iptables: {masqueradeBit: 10}\nclusterCIDR: 10.0.0.0/8\n');
    const r = cli(['--iptables-masquerade-bit', '12', '--cluster-cidr', '10.128.0.0/9', ...base, '--config', path]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('--or-mark 0x1000\n');
    expect(r.stdout).toContain('! -s 10.128.0.0/9 -j KUBE-MARK-MASQ');
    expect(r.stdout).not.toContain('! -s 10.0.0.0/8');
  });

  it('masqueradeAll true in the file, --masquerade-all=false on the command line: false wins', () => {
    const path = config('iptables: {masqueradeAll: true}\nclusterCIDR: 10.0.0.0/8\n');
    const fromFile = cli([...base, '--config', path]);
    expect(fromFile.stdout).toMatch(/--dport 80 -j KUBE-MARK-MASQ$/m);
    const overridden = cli([...base, '--config', path, '--masquerade-all=false']);
    expect(overridden.code, overridden.stderr).toBe(0);
    expect(overridden.stdout).toContain('--dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ');
    expect(overridden.stdout).not.toMatch(/--dport 80 -j KUBE-MARK-MASQ$/m);
  });
});

describe('flags', () => {
  const withCidr = [...base, '--cluster-cidr', '10.0.0.0/8'];
  const masqAll = /^-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1\/svc1:p80 cluster IP" -m tcp -p tcp -d 172\.30\.0\.41 --dport 80 -j KUBE-MARK-MASQ$/m;
  const masqOutside = '--dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ';

  it.each([
    [[], false],
    [['--masquerade-all'], true],
    [['--masquerade-all=true'], true],
    [['--masquerade-all=false'], false],
    [['--masquerade-all', 'false'], false],
  ])('%j: masquerade all = %s', (flags, all) => {
    const r = cli([...withCidr, ...flags]);
    expect(r.code, r.stderr).toBe(0);
    if (all) {
      expect(r.stdout).toMatch(masqAll);
      expect(r.stdout).not.toContain(masqOutside);
    } else {
      expect(r.stdout).toContain(masqOutside);
      expect(r.stdout).not.toMatch(masqAll);
    }
  });

  it.each([
    [['--masquerade-all=maybe'], 'masquerade-all'],
    [['--iptables-masquerade-bit', '32'], 'masqueradeBit'],
    [['--iptables-masquerade-bit', 'ten'], 'iptables-masquerade-bit'],
    [['--cluster-cidr', '10.0.0.0/8,10.1.0.0/16'], 'clusterCIDR'],
    [['--nodeport-addresses', 'everywhere'], 'nodePortAddresses'],
    [['--proxy-mode', 'bogus'], 'proxy-mode'],
    [['--no-such-flag'], 'no-such-flag'],
    // Node timers overflow above 2^31-1 ms and would fire at once, every time.
    [['--iptables-sync-period', '999h'], 'iptables.syncPeriod: 999h0m0s is longer than 596h31m23.647s'],
    [['--iptables-min-sync-period', '600h', '--iptables-sync-period', '596h'], 'iptables.minSyncPeriod: 600h0m0s is longer'],
    [['--iptables-sync-period', '0s'], 'iptables.syncPeriod: must be greater than 0'],
  ])('%j: exit 2 with one line naming %s', (flags, name) => {
    const line = expectOneLineFailure(cli([...base, ...flags]));
    expect(line).toContain(name);
  });

  it('--conntrack-tcp-be-liberal: no rule drops conntrack-INVALID packets, as upstream', () => {
    const invalid = /^-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP$/m;
    expect(cli(base).stdout).toMatch(invalid);
    const liberal = cli([...base, '--conntrack-tcp-be-liberal']);
    expect(liberal.code, liberal.stderr).toBe(0);
    expect(liberal.stdout).not.toMatch(/INVALID/);
  });

  it('--proxy-mode ipvs: a clear not-implemented error', () => {
    const line = expectOneLineFailure(cli([...base, '--proxy-mode', 'ipvs']));
    expect(line).toMatch(/ipvs/);
    expect(line).toMatch(/not implemented/);
  });

  it('mode ipvs in the config file: the same error', () => {
    const line = expectOneLineFailure(cli([...base, '--config', config('mode: ipvs\n')]));
    expect(line).toMatch(/ipvs.*not implemented/);
  });

  it('mode nftables in the config file: the nft script, as --proxy-mode nftables prints it', () => {
    const r = cli([...base, '--config', config('mode: nftables\n')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('add table ip kube-proxy');
    expect(r.stdout).toBe(cli([...base, '--proxy-mode', 'nftables']).stdout);
  });

  it('--from-file - reads the cluster from stdin', () => {
    const r = cli(['--dry-run', '--hostname-override', 'node-a', '--from-file', '-'], CLUSTER);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(CLUSTER_IP_RULE);
    expect(r.stdout).toBe(cli(base).stdout);
  });

  it('--from-file - with garbage on stdin: exit 2, one line naming <stdin>', () => {
    const line = expectOneLineFailure(cli(['--dry-run', '--from-file', '-'], '{{{ :'));
    expect(line).toContain('<stdin>');
  });

  it.each([['--help'], ['-h']])('%s: exit 0 and the flags on stdout', (flag) => {
    const r = cli([flag]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    for (const f of [
      '--proxy-mode',
      '--hostname-override',
      '--cluster-cidr',
      '--masquerade-all',
      '--nodeport-addresses',
      '--iptables-masquerade-bit',
      '--iptables-localhost-nodeports',
      '--config',
      '--dry-run',
      '--from-file',
      '--help',
    ]) {
      expect(r.stdout).toContain(f);
    }
  });

  it('--version: the version and Node.js\'s, exit 0', () => {
    const r = cli(['--version']);
    expect(r.code).toBe(0);
    const { version } = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { version: string };
    expect(r.stdout).toBe(`kube-proxy-ts ${version} (Node.js ${process.version})\n`);
  });

  it('--help groups the flags by what they are for', () => {
    const headings = cli(['--help']).stdout.split('\n').filter((l) => /^\S.*:$/.test(l));
    expect(headings).toEqual(['Proxy:', 'iptables mode:', 'Conntrack (set by the node agent at start-up):', 'Node agent:', 'Offline (--dry-run, trace):', 'Other:', 'Options:', 'Commands:']);
  });

  it('--help wins over other flags and does not read files', () => {
    const r = cli(['--dry-run', '--from-file', join(dir, 'missing.yaml'), '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--from-file');
    expect(r.stderr).toBe('');
  });
});
