/**
 * Traces packets through a golden case's expected output (the restore text exactly as the
 * golden file holds it, jump comments included), with the model built from its manifests.
 * Each trace is also run through the ruleset the renderer returns for the case's flags,
 * and the two must agree: the text parser reads what the renderer means.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { parse } from 'yaml';
import { iptablesOptions, splitFamilies } from '../../src/offline/dryrun.js';
import { parseInvocation } from '../../src/cli/program.js';
import { parseManifests } from '../../src/kube/manifests.js';
import { buildNodeModel } from '../../src/model/build.js';
import { renderIptables } from '../../src/modes/iptables/render.js';
import { packetFamily } from '../../src/trace/packet.js';
import { traceIptables } from '../../src/trace/trace.js';
import type { Packet, TraceResult } from '../../src/trace/types.js';

export const GOLDEN_ROOT = join(import.meta.dirname, '..', 'golden', 'iptables');

export type PacketSpec = Partial<Packet> & Pick<Packet, 'src' | 'dst' | 'dstPort'>;

export function goldenTracer(name: string): (p: PacketSpec) => TraceResult {
  const dir = join(GOLDEN_ROOT, name);
  const args = ((parse(readFileSync(join(dir, 'case.yaml'), 'utf8')) as { args?: unknown[] }).args ?? []).map(String);
  const config = parseInvocation(['--dry-run', '--from-file', 'cluster.yaml', ...args], { readFile: () => '' }, 'test-host').config;
  const build = buildNodeModel(parseManifests(readFileSync(join(dir, 'cluster.yaml'), 'utf8'), name).objects, config.hostnameOverride);
  const text = splitFamilies(readFileSync(join(dir, 'expected.txt'), 'utf8'));
  const node = build.model.node;
  return (spec) => {
    const packet: Packet = { protocol: 'tcp', srcPort: null, from: 'pod', ...spec };
    const model = build.model.families[packetFamily(packet)];
    const fromText = traceIptables(text[model.family], model, node, packet);
    const fromRuleset = traceIptables(renderIptables(model, node, iptablesOptions(config)), model, node, packet);
    expect(fromText).toEqual(fromRuleset);
    return fromText;
  };
}

/** Where a trace sends the packet: DNAT address (or verdict) -> probability, rounded. */
export function distribution(r: TraceResult): Record<string, number> {
  return Object.fromEntries(r.destinations.map((d) => [d.address ?? d.verdict, Number(d.probability.toFixed(9))]));
}
