/**
 * A trace request (from the command line or the agent's /debug/trace) answered on a
 * node's model through a mode's dataplane: text or JSON, or why it cannot be traced.
 */
import type { FamilyModel, IPFamily, NodeContext } from '../model/types.js';
import { parseIP } from '../net/ip.js';
import { formatTrace } from './format.js';
import { traceThrough } from './trace.js';
import { TraceError, type Dataplane, type Packet, type TraceRequest } from './types.js';

export type TraceOutput = { text: string } | { error: string };

/** `dataplane`: the rules a mode renders for a family's model (ConfiguredMode.dataplane). */
export function tracePacket(
  dataplane: (model: FamilyModel, node: NodeContext, focus: Packet) => Dataplane,
  models: Record<IPFamily, FamilyModel>,
  node: NodeContext,
  req: TraceRequest,
): TraceOutput {
  const family = parseIP(req.dst.ip)!.family;
  // From the node itself, the kernel picks the node's address as the source.
  const src = req.src?.ip ?? node.nodeIPs.find((ip) => parseIP(ip)!.family === family);
  if (src === undefined) {
    return { error: `trace --from node needs --src: node ${node.nodeName} has no ${family} address in the input` };
  }
  const packet: Packet = { protocol: req.protocol, src, srcPort: req.src?.port ?? null, dst: req.dst.ip, dstPort: req.dst.port, from: req.from };
  try {
    const model = models[family];
    const result = traceThrough(dataplane(model, node, packet), model, node, packet);
    return { text: req.output === 'json' ? `${JSON.stringify(result, null, 2)}\n` : formatTrace(result) };
  } catch (err) {
    if (err instanceof TraceError) return { error: `trace: ${err.message}` };
    throw err;
  }
}
