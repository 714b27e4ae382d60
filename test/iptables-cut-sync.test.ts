/**
 * A full sync cut into restores, two at a time, against the real iptables-nft in a
 * throwaway namespace: it must leave the same tables as one restore of the same rules.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { syntheticCluster } from '../bench/synthetic.js';
import { ClusterState } from '../src/agent/state.js';
import { runCommand, type Runner } from '../src/exec/command.js';
import { IptablesApplier } from '../src/modes/iptables/applier.js';
import { DEFAULT_IPTABLES_OPTIONS } from '../src/modes/iptables/render.js';
import { IptablesSyncer } from '../src/modes/iptables/syncer.js';
import { binaries } from '../src/modes/iptables/variant.js';
import { Netns } from './support/netns.js';
import { privilegedTestsCanRun } from './support/privileges.js';

const log = pino({ level: 'silent' });

/** nat and filter as iptables-save prints them: table -> chain -> rules (chains sorted by name). */
function tables(ns: Netns): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let table: Record<string, string[]> = {};
  for (const line of ns.exec('iptables-nft-save', []).stdout.split('\n')) {
    if (line.startsWith('*')) out[line.slice(1)] = table = {};
    else if (line.startsWith(':')) table[line.slice(1, line.indexOf(' '))] = [];
    else if (line.startsWith('-A ')) {
      const m = /^-A (\S+) ?(.*)$/.exec(line)!;
      table[m[1]!]!.push(m[2]!);
    }
  }
  return out;
}

describe.runIf(privilegedTestsCanRun('cut full sync on real iptables-nft', ['ip', 'iptables-nft-restore']))('a full sync in restores side by side, on real iptables-nft', () => {
  const spaces: Netns[] = [];
  afterEach(() => {
    for (const ns of spaces.splice(0)) ns.remove();
  });

  async function syncInNamespace(maxRestoreLines: number): Promise<{ ns: Netns; mostAtOnce: number; restores: number }> {
    const ns = new Netns('cutsync');
    spaces.push(ns);
    let running = 0;
    let mostAtOnce = 0;
    let restores = 0;
    const run: Runner = async (cmd, args, input) => {
      const restore = cmd.endsWith('-restore');
      if (restore) (restores++, (mostAtOnce = Math.max(mostAtOnce, ++running)));
      try {
        return await runCommand('ip', ['netns', 'exec', ns.name, cmd, ...args], input);
      } finally {
        if (restore) running--;
      }
    };
    const syncer = new IptablesSyncer(
      new Map([['IPv4', new IptablesApplier('IPv4', run, binaries('IPv4', 'nf_tables'))]]),
      { render: { ...DEFAULT_IPTABLES_OPTIONS, clusterCIDRs: ['10.128.0.0/9'] }, maxRestoreLines, fullSyncIntervalMs: 3_600_000 },
      log,
    );
    const objs = syntheticCluster({ services: 60, endpointsPerService: 4 });
    const state = new ClusterState('node-0', { problem: () => {} });
    for (const o of objs.nodes) state.upsertNode(o);
    for (const o of objs.services) state.upsertService(o);
    for (const o of objs.endpointSlices) state.upsertSlice(o);
    const c = state.take();
    expect(await syncer.sync({ model: state, services: c.services, all: c.all })).toMatchObject({ ok: true, full: true });
    return { ns, mostAtOnce, restores };
  }

  it('ends with the tables one restore writes', async () => {
    const cut = await syncInNamespace(150);
    const whole = await syncInNamespace(Infinity);
    expect(cut.restores).toBeGreaterThan(5);
    expect(cut.mostAtOnce).toBe(2);
    expect(whole.restores).toBe(1);
    expect(tables(cut.ns)).toEqual(tables(whole.ns));
  });
});
