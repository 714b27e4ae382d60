/**
 * The rules the iptables agent programs for node-a of the example cluster (golden case
 * `example-cluster`), jump rules included, loaded for real through `run` (a namespace's
 * tools): what the cleanup and mode-switching tests start from.
 */
import { readFileSync } from 'node:fs';
import type { Runner } from '../../src/exec/command.js';
import { IptablesApplier } from '../../src/modes/iptables/applier.js';
import { iptablesOptions } from '../../src/modes/iptables/mode.js';
import { renderIptables } from '../../src/modes/iptables/render.js';
import { restoreChunks } from '../../src/modes/iptables/ruleset.js';
import { detectVariant } from '../../src/modes/iptables/variant.js';
import { readGoldenCase } from './golden.js';
import { pipeline } from './pipeline.js';

export function exampleCluster() {
  const c = readGoldenCase('example-cluster');
  return pipeline(readFileSync(c.input, 'utf8'), c.args, c.name);
}

export async function loadExampleIptables(run: Runner): Promise<void> {
  const p = exampleCluster();
  const choice = await detectVariant(run);
  for (const family of ['IPv4', 'IPv6'] as const) {
    const rs = renderIptables(p.build.model.families[family], p.build.model.node, iptablesOptions(p.config));
    const applier = new IptablesApplier(family, run, choice.bin[family]);
    await applier.restore({ what: 'example cluster', chunks: restoreChunks(rs), lines: 0 });
    await applier.ensureJumps(rs.jumps);
  }
}
