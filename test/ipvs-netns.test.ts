/**
 * The ipvs golden outputs loaded for real, one throwaway network namespace per case:
 * both families' `ipset restore` sections, then their iptables sections restored (their
 * rules name the sets, so the sets must be there) and read back with iptables-save,
 * which must hold every rendered rule. kube-ipvs0 and the virtual servers need the dummy
 * and ip_vs modules, which this kernel lacks: the in-memory tests cover those.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCommand, type Runner } from '../src/exec/command.js';
import type { IPFamily } from '../src/model/types.js';
import { IptablesApplier } from '../src/modes/iptables/applier.js';
import { detectVariant } from '../src/modes/iptables/variant.js';
import { splitSections } from '../src/modes/ipvs/dryrun.js';
import { renderIpvs } from '../src/modes/ipvs/render.js';
import { ipvsOptions } from '../src/modes/ipvs/mode.js';
import { goldenCaseNames, goldenPath, readGoldenCase } from './support/golden.js';
import { Netns } from './support/netns.js';
import { pipeline } from './support/pipeline.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const canRun = privilegedTestsCanRun('ipvs goldens loaded in a namespace', ['ip', 'ipset', 'iptables-restore', 'ip6tables-restore', 'iptables-save']);
const BIN: Record<IPFamily, { restore: string; save: string }> = {
  IPv4: { restore: 'iptables-restore', save: 'iptables-save' },
  IPv6: { restore: 'ip6tables-restore', save: 'ip6tables-save' },
};

/**
 * `-A` lines of our chains in iptables-save's words: it names REJECT's default answer,
 * and prints the MARK shorthands as --set-xmark.
 */
function ruleLines(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('-A KUBE-'))
    .map((l) =>
      l
        .replace(/ --reject-with icmp6?-port-unreachable$/, '')
        .replace(/-j MARK --or-mark (\S+)$/, '-j MARK --set-xmark $1/$1')
        .replace(/-j MARK --xor-mark (\S+)$/, '-j MARK --set-xmark $1/0x0'),
    );
}

describe('ipvs goldens in a network namespace', () => {
  let ns: Netns | undefined;
  afterEach(() => {
    ns?.remove();
    ns = undefined;
  });

  for (const name of goldenCaseNames()) {
    it.runIf(canRun)(name, () => {
      const sections = splitSections(readFileSync(goldenPath(name, 'ipvs.txt'), 'utf8'));
      ns = new Netns(`ipvs-${name}`.slice(0, 15));
      for (const family of ['IPv4', 'IPv6'] as const) {
        const s = sections[family];
        const sets = ns.exec('ipset', ['restore'], s.ipset);
        expect(sets.stderr, `${family} ipset restore`).toBe('');
        expect(sets.status).toBe(0);
        const created = s.ipset.split('\n').filter((l) => l.startsWith('create ')).length;
        const saved = ns.exec('ipset', ['save']).stdout;
        expect(saved.split('\n').filter((l) => l.startsWith('add ')).length).toBe(s.ipset.split('\n').filter((l) => l.startsWith('add ')).length + (family === 'IPv6' ? sections.IPv4.ipset.split('\n').filter((l) => l.startsWith('add ')).length : 0));
        expect(created).toBe(17);

        const restore = ns.exec(BIN[family].restore, ['-w'], s.iptables);
        expect(restore.stderr, `${family} iptables restore`).toBe('');
        expect(restore.status).toBe(0);
        const back = ruleLines(ns.exec(BIN[family].save, []).stdout);
        for (const rule of ruleLines(s.iptables)) expect(back, `${family}: ${rule}`).toContain(rule);
      }
    });
  }
});

describe('--cleanup after ipvs mode, in a network namespace', () => {
  let ns: Netns | undefined;
  afterEach(() => {
    ns?.remove();
    ns = undefined;
  });

  it.runIf(canRun)('removes the KUBE-* sets, the chains and their jump rules, leaves the rest, and does not fail on a kernel without IPVS', async () => {
    ns = new Netns('ipvs-cleanup');
    const inNs: Runner = (cmd, args, input) => runCommand('ip', ['netns', 'exec', ns!.name, cmd, ...args], input);
    const c = readGoldenCase('example-cluster');
    const p = pipeline(readFileSync(c.input, 'utf8'), ['--proxy-mode', 'ipvs', ...c.args], c.name);
    const choice = await detectVariant(inNs);
    expect(ns.exec('ipset', ['create', 'user-set', 'hash:ip']).status).toBe(0);
    const sections = splitSections(p.dryRunText());
    for (const family of ['IPv4', 'IPv6'] as const) {
      const r = renderIpvs(p.build.model.families[family], p.build.model.node, ipvsOptions(p.config));
      expect(ns.exec('ipset', ['restore'], sections[family].ipset).status).toBe(0);
      const applier = new IptablesApplier(family, inNs, choice.bin[family]);
      await applier.restore({ what: 'ipvs iptables part', chunks: [Buffer.from(sections[family].iptables)], lines: 0 });
      await applier.ensureJumps(r.iptables.jumps);
    }
    expect(ns.exec('iptables-save', []).stdout).toMatch(/^-A INPUT .* -j KUBE-IPVS-FILTER$/m);

    const run = ns.exec(process.execPath, [join(import.meta.dirname, '..', 'dist', 'src', 'main.js'), '--cleanup']);
    expect(run.status, run.stderr).toBe(0);
    expect(ns.exec('ipset', ['list', '-n']).stdout.trim()).toBe('user-set');
    for (const save of ['iptables-save', 'ip6tables-save']) expect(ns.exec(save, []).stdout).not.toContain('KUBE-');
  });
});
