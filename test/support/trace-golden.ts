/**
 * Traces packets through a golden case's expected iptables output (the restore text
 * exactly as the golden file holds it, with the jump rules the agent ensures beside it),
 * with the model built from its manifests. Each trace is also run through the rules the
 * mode renders for the case's flags, and the two must agree: the text parser reads what
 * the renderer means.
 */
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { IptablesDataplane } from '../../src/modes/iptables/dataplane.js';
import { splitFamilies } from '../../src/modes/iptables/dryrun.js';
import { iptablesOptions } from '../../src/modes/iptables/mode.js';
import { renderIptables } from '../../src/modes/iptables/render.js';
import { packetFamily } from '../../src/trace/packet.js';
import type { Packet, TraceResult } from '../../src/trace/types.js';
import { goldenPath, readGoldenCase } from './golden.js';
import { pipeline, type PacketSpec } from './pipeline.js';

export type { PacketSpec };

export function goldenTracer(name: string): (p: PacketSpec) => TraceResult {
  const c = readGoldenCase(name);
  const p = pipeline(readFileSync(c.input, 'utf8'), c.args, name);
  const text = splitFamilies(readFileSync(goldenPath(name, 'iptables.txt'), 'utf8'));
  const node = p.build.model.node;
  return (spec) => {
    const family = packetFamily({ protocol: 'tcp', srcPort: null, from: 'pod', ...spec } as Packet);
    const { jumps } = renderIptables(p.build.model.families[family], node, iptablesOptions(p.config));
    const fromText = p.trace(spec, IptablesDataplane.ofRestoreText(text[family], jumps, node.nodeIPs));
    expect(fromText).toEqual(p.trace(spec));
    return fromText;
  };
}

/** Where a trace sends the packet: DNAT address (or verdict) -> probability, rounded. */
export function distribution(r: TraceResult): Record<string, number> {
  return Object.fromEntries(r.destinations.map((d) => [d.address ?? d.verdict, Number(d.probability.toFixed(9))]));
}
