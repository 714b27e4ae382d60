/**
 * The trace entry point for iptables mode: a ruleset (restore text, or what the renderer
 * returned), the model it was rendered from, the node and a packet in; the path, the
 * outcomes and their reasons out. Pure, so the CLI and the agent's HTTP endpoint share it.
 */
import type { FamilyModel, NodeContext } from '../model/types.js';
import { parseIP } from '../net/ip.js';
import type { IptablesRuleset } from '../modes/iptables/render.js';
import { IptablesDataplane } from '../modes/iptables/dataplane.js';
import { packetFamily } from './packet.js';
import { parseIptablesRestore, rulesetTables } from '../modes/iptables/tables.js';
import { TraceError, type Packet, type TraceResult } from './types.js';
import { explainTrace } from './why.js';

/**
 * Restore text must carry the jump rules from the built-in chains, as the dry run's
 * comment lines or an iptables-save's `-A` rules; a rendered ruleset has them already.
 */
export function traceIptables(ruleset: string | IptablesRuleset, model: FamilyModel, node: NodeContext, packet: Packet): TraceResult {
  const family = packetFamily(packet);
  if (model.family !== family) throw new TraceError(`the packet is ${family}, the model ${model.family}`);
  if (typeof ruleset !== 'string' && ruleset.family !== family) throw new TraceError(`the packet is ${family}, the ruleset ${ruleset.family}`);
  // Canonical addresses, so that the model's (canonical) addresses compare equal.
  const canonical: Packet = { ...packet, src: parseIP(packet.src)!.text, dst: parseIP(packet.dst)!.text };
  const tables = typeof ruleset === 'string' ? parseIptablesRestore(ruleset) : rulesetTables(ruleset);
  const trace = new IptablesDataplane(tables, node.nodeIPs).trace(canonical);
  const { service, destinations, why } = explainTrace(trace, model, node);
  return {
    schema: 'kube-proxy-ts/trace/v1',
    mode: trace.mode,
    node: node.nodeName,
    family: trace.family,
    packet: trace.packet,
    service,
    destinations,
    why,
    localAddresses: trace.localAddresses,
    assumptions: trace.assumptions,
    outcomes: trace.outcomes,
    path: trace.path,
  };
}
