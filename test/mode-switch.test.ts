/**
 * A node moving between modes with a restart, in a throwaway namespace holding both modes'
 * rules for the example cluster beside a user's own iptables chains and nftables table:
 * nftables mode starting removes iptables mode's chains and jumps (through iptables mode's
 * own cleanup) and keeps its table; iptables mode starting removes the `kube-proxy`
 * nftables tables of both families and keeps its chains; iptables and ipvs modes leave
 * the chains they share alone; `--cleanup` removes both. The
 * user's rules survive all of it. The start-up step runs from the compiled agent
 * (`npx tsc -p .` first) in a child under `ip netns exec`.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand, type Runner } from '../src/exec/command.js';
import { nftablesOptions } from '../src/modes/nftables/mode.js';
import { fullTransaction } from '../src/modes/nftables/plan.js';
import { renderNftables } from '../src/modes/nftables/render.js';
import { modeByName, otherModes } from '../src/modes/registry.js';
import { exampleCluster, loadExampleIptables } from './support/example-rules.js';
import { Netns } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const DIST = join(import.meta.dirname, '..', 'dist', 'src');
const MAIN = join(DIST, 'main.js');

/** Run inside the namespace: what the agent does at start-up before its mode programs anything. */
const START_CHILD = `
import { pathToFileURL } from 'node:url';
const [dist, mode] = process.argv.slice(1);
const { removeOtherModes } = await import(pathToFileURL(dist + '/agent/main.js').href);
const { modeByName } = await import(pathToFileURL(dist + '/modes/registry.js').href);
const { createLogger } = await import(pathToFileURL(dist + '/log.js').href);
await removeOtherModes(modeByName(mode), createLogger(0));
`;

const TOOLS = ['ip', 'nft', 'iptables', 'ip6tables', 'iptables-save', 'ip6tables-save', 'iptables-restore'];

describe.runIf(privilegedTestsCanRun('switching modes in a namespace', TOOLS))('switching modes in a namespace', () => {
  let ns: Netns;
  const inNs: Runner = (cmd, args, input) => runCommand('ip', ['netns', 'exec', ns.name, cmd, ...args], input);
  // Chains and rules of kube-proxy and of the user; iptables-nft leaves empty built-in tables behind.
  const save = () =>
    ['iptables-save', 'ip6tables-save']
      .flatMap((bin) => ns.exec(bin, []).stdout.split('\n'))
      .filter((l) => /KUBE-|MY-/.test(l))
      .join('\n');
  // nftables tables but those iptables-nft keeps its chains in.
  const tables = () =>
    ns
      .exec('nft', ['list', 'tables'])
      .stdout.trim()
      .split('\n')
      .filter((t) => !/^table ip6? (filter|nat|mangle)$/.test(t))
      .sort();
  const must = (cmd: string, args: string[], input?: string) => {
    const r = ns.exec(cmd, args, input);
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  };
  const start = (mode: string) => {
    const r = ns.exec(process.execPath, ['--input-type=module', '-e', START_CHILD, DIST, mode]);
    if (r.status !== 0) throw new Error(`start-up cleanup failed (${r.status}): ${r.stderr}`);
  };

  const p = exampleCluster();
  const loadIptables = () => loadExampleIptables(inNs);
  const loadNftables = () => {
    for (const family of ['IPv4', 'IPv6'] as const) {
      const t = renderNftables(p.build.model.families[family], p.build.model.node, nftablesOptions(p.config));
      must('nft', ['-f', '-'], fullTransaction(t).script.toString());
    }
  };
  let userIptables: string;
  let userTables: string[];

  beforeAll(() => {
    ns = new Netns('switch');
    must('iptables', ['-w', '-t', 'filter', '-N', 'MY-INPUT']);
    must('iptables', ['-w', '-t', 'filter', '-A', 'INPUT', '-j', 'MY-INPUT']);
    must('nft', ['-f', '-'], 'add table inet user\nadd chain inet user input { type filter hook input priority 10 ; }\nadd rule inet user input tcp dport 22 accept\n');
    userIptables = save();
    userTables = tables();
  });
  afterAll(() => ns?.remove());

  it('nftables mode starting removes the iptables chains and jumps, and keeps its table and the user rules', async () => {
    await loadIptables();
    loadNftables();
    expect(save()).toMatch(/^-A KUBE-SERVICES .* -j KUBE-SVC-/m);
    start('nftables');
    expect(save()).toBe(userIptables);
    expect(tables()).toEqual([...userTables, 'table ip kube-proxy', 'table ip6 kube-proxy'].sort());
  });

  it('iptables mode starting removes the nftables tables of both families, and keeps its chains and the user rules', async () => {
    await loadIptables();
    start('iptables');
    expect(tables()).toEqual(userTables);
    expect(save()).toMatch(/^-A KUBE-SERVICES .* -j KUBE-SVC-/m);
    expect(save()).toMatch(/^-A INPUT -j MY-INPUT$/m);
  });

  it.each(['iptables', 'ipvs'])('%s mode starting leaves the chains it shares with the other to its first full sync: a restart cuts no traffic', async (mode) => {
    await loadIptables();
    const before = save();
    start(mode);
    expect(save()).toBe(before);
  });

  it('--cleanup removes both, and only them', async () => {
    loadNftables();
    const r = ns.exec(process.execPath, [MAIN, '--cleanup']);
    expect(r.status, r.stderr).toBe(0);
    expect(save()).toBe(userIptables);
    expect(tables()).toEqual(userTables);
  });
});

describe('which modes a starting mode cleans up after', () => {
  it.each([
    ['iptables', ['nftables', 'userspace']],
    ['ipvs', ['nftables', 'userspace']],
    ['nftables', ['iptables', 'ipvs', 'userspace']],
    ['userspace', ['iptables', 'nftables', 'ipvs']],
  ] as const)('%s: %j', (mode, others) => {
    expect(otherModes(modeByName(mode)).map((m) => m.name)).toEqual(others);
  });
});
