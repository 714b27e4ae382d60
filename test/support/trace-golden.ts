/**
 * Traces packets through a golden case in a mode, with the model built from its
 * manifests: through the rules the mode renders for the case's flags, and through the
 * rules exactly as the mode's golden file holds them (iptables: with the jump rules the
 * agent ensures beside them). The two must agree: the text parser reads what the
 * renderer means.
 */
import { existsSync, readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { IptablesDataplane } from '../../src/modes/iptables/dataplane.js';
import { familySections } from '../../src/modes/family-sections.js';
import { FAMILY_BANNER } from '../../src/modes/iptables/dryrun.js';
import { iptablesOptions } from '../../src/modes/iptables/mode.js';
import { renderIptables } from '../../src/modes/iptables/render.js';
import { NftablesDataplane } from '../../src/modes/nftables/dataplane.js';
import { FAMILY_BANNER as NFT_FAMILY_BANNER } from '../../src/modes/nftables/dryrun.js';
import { packetFamily } from '../../src/trace/packet.js';
import type { Packet, TraceResult } from '../../src/trace/types.js';
import { goldenPath, readGoldenCase } from './golden.js';
import { pipeline, type PacketSpec } from './pipeline.js';

export type { PacketSpec };

/** The modes whose traces the golden packets check. */
export const TRACE_MODES = ['iptables', 'nftables'] as const;
export type TraceMode = (typeof TRACE_MODES)[number];

/**
 * A tracer for a golden case in `mode`. Each trace also runs through the rules as the
 * mode's golden file (or, without one, its dry run) writes them, and the two must agree.
 */
export function goldenTracer(name: string, mode: TraceMode = 'iptables'): (p: PacketSpec) => TraceResult {
  const c = readGoldenCase(name);
  const p = pipeline(readFileSync(c.input, 'utf8'), [...c.args, '--proxy-mode', mode], name);
  const node = p.build.model.node;
  const golden = goldenPath(name, `${mode}.txt`);
  // Until a mode has golden files, its dry run is the text to read back.
  const written = existsSync(golden) ? readFileSync(golden, 'utf8') : p.dryRunText();
  const text = familySections(written, mode === 'iptables' ? FAMILY_BANNER : NFT_FAMILY_BANNER);
  return (spec) => {
    const family = packetFamily({ protocol: 'tcp', srcPort: null, from: 'pod', ...spec } as Packet);
    let fromText: TraceResult;
    if (mode === 'iptables') {
      const { jumps } = renderIptables(p.build.model.families[family], node, iptablesOptions(p.config));
      fromText = p.trace(spec, IptablesDataplane.ofRestoreText(text[family], jumps, node.nodeIPs));
    } else fromText = p.trace(spec, NftablesDataplane.ofScript(text[family], node.nodeIPs));
    expect(fromText).toEqual(p.trace(spec));
    return fromText;
  };
}

/** Where a trace sends the packet: DNAT address (or verdict) -> probability, rounded. */
export function distribution(r: TraceResult): Record<string, number> {
  return Object.fromEntries(r.destinations.map((d) => [d.address ?? d.verdict, Number(d.probability.toFixed(9))]));
}
