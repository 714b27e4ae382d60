/**
 * --cleanup removes exactly what kube-proxy (ours or upstream's) creates: its fixed
 * chains, its service chains and every jump to them whatever the jump's arguments, in
 * both families, and leaves kubelet's and a user's chains and rules as they were. First on
 * iptables-save text (pure), then for real: a namespace holding the example cluster's
 * rules, the jump rules the agent ensures, kubelet's chains and a user's, cleaned twice by
 * the CLI.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand, type Runner } from '../src/exec/command.js';
import type { IPFamily } from '../src/model/types.js';
import { cleanupRestore } from '../src/modes/iptables/cleanup.js';
import { loadExampleIptables } from './support/example-rules.js';
import { Netns } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const MAIN = join(import.meta.dirname, '..', 'dist', 'src', 'main.js');

describe('cleanupRestore', () => {
  const saved = [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':KUBE-FIREWALL - [0:0]',
    ':KUBE-KUBELET-CANARY - [0:0]',
    ':KUBE-PROXY-FIREWALL - [0:0]',
    ':MY-CHAIN - [0:0]',
    '-A INPUT -j KUBE-FIREWALL',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A INPUT -j MY-CHAIN',
    '-A FORWARD -g KUBE-PROXY-FIREWALL',
    '-A MY-CHAIN -s 192.0.2.1/32 -j DROP',
    '-A MY-CHAIN -j KUBE-FIREWALL',
    '-A KUBE-FIREWALL -d 127.0.0.0/8 -j DROP',
    'COMMIT',
  ].join('\n');

  it('deletes every jump into our chains, bare, commented or goto, and from a user chain too, then our chains', () => {
    expect(cleanupRestore('filter', saved)!.split('\n')).toEqual([
      '*filter',
      '-D INPUT -j KUBE-FIREWALL',
      '-D INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
      '-D FORWARD -g KUBE-PROXY-FIREWALL',
      '-D MY-CHAIN -j KUBE-FIREWALL',
      ':KUBE-FIREWALL - [0:0]',
      ':KUBE-PROXY-FIREWALL - [0:0]',
      '-X KUBE-FIREWALL',
      '-X KUBE-PROXY-FIREWALL',
      'COMMIT',
      '',
    ]);
  });

  it("leaves kubelet's chains, which share our prefix; a clean table needs no restore", () => {
    const kubelet = ['*mangle', ':KUBE-IPTABLES-HINT - [0:0]', ':KUBE-KUBELET-CANARY - [0:0]', 'COMMIT'].join('\n');
    expect(cleanupRestore('mangle', kubelet)).toBeNull();
    expect(cleanupRestore('nat', '*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-MARK-DROP - [0:0]\nCOMMIT\n')).toBeNull();
  });

  it('service chains are ours in nat only, upstream KUBE-XLB- chains included', () => {
    const nat = ['*nat', ':KUBE-SVC-AAAA - [0:0]', ':KUBE-XLB-BBBB - [0:0]', ':KUBE-OTHER - [0:0]', 'COMMIT'].join('\n');
    expect(cleanupRestore('nat', nat)).toContain('-X KUBE-XLB-BBBB');
    expect(cleanupRestore('nat', nat)).not.toContain('KUBE-OTHER');
    expect(cleanupRestore('filter', nat.replace('*nat', '*filter'))).toBeNull();
  });
});

const TOOLS = ['ip', 'iptables', 'ip6tables', 'iptables-save', 'ip6tables-save', 'iptables-restore'];

describe.runIf(privilegedTestsCanRun('--cleanup in a namespace', TOOLS))('--cleanup in a namespace', () => {
  let ns: Netns;
  const inNs: Runner = (cmd, args, input) => runCommand('ip', ['netns', 'exec', ns.name, cmd, ...args], input);
  const save = (bin: string) => ns.exec(bin, []).stdout.split('\n').filter((l) => !l.startsWith('#')).join('\n');
  const saveAll = () => ({ IPv4: save('iptables-save'), IPv6: save('ip6tables-save') });
  const must = (cmd: string, args: string[]) => {
    const r = ns.exec(cmd, ['-w', ...args]);
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  };
  let before: Record<IPFamily, string>;

  beforeAll(async () => {
    ns = new Netns('cleanup');
    for (const [bin, addr] of [['iptables', '192.0.2.1'], ['ip6tables', '2001:db8::1']] as const) {
      // kubelet's chains, which detection reads and cleanup must leave.
      must(bin, ['-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
      for (const t of ['mangle', 'nat', 'filter']) must(bin, ['-t', t, '-N', 'KUBE-KUBELET-CANARY']);
      // A user's own chains, hooked into the built-in chains kube-proxy also hooks.
      must(bin, ['-t', 'filter', '-N', 'MY-INPUT']);
      must(bin, ['-t', 'filter', '-A', 'MY-INPUT', '-s', addr, '-j', 'DROP']);
      must(bin, ['-t', 'filter', '-A', 'INPUT', '-j', 'MY-INPUT']);
      must(bin, ['-t', 'nat', '-N', 'MY-NAT']);
      must(bin, ['-t', 'nat', '-A', 'PREROUTING', '-d', addr, '-j', 'MY-NAT']);
    }
    before = saveAll();

    await loadExampleIptables(inNs);
  });
  afterAll(() => ns?.remove());

  it('holds a full ruleset to begin with, bare jump rules included', () => {
    const now = saveAll();
    expect(now.IPv4).toMatch(/^-A INPUT -j KUBE-FIREWALL$/m);
    expect(now.IPv4).toMatch(/^-A KUBE-SERVICES .* -j KUBE-SVC-/m);
    expect(now.IPv6).toMatch(/^-A KUBE-SERVICES .* -j KUBE-SVC-/m);
  });

  it("exits 0 twice in a row and leaves exactly kubelet's and the user's rules", () => {
    for (const round of [1, 2]) {
      const r = ns.exec(process.execPath, [MAIN, '--cleanup']);
      expect(r.status, `round ${round}: ${r.stderr}`).toBe(0);
      expect(saveAll()).toEqual(before);
    }
  });
});
