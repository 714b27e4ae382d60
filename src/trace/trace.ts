/**
 * Tracing a packet through any mode's dataplane: the dataplane walks its rules, the
 * model says why in Kubernetes terms. Pure, so the CLI and the agent's HTTP endpoint
 * give the same answer.
 */
import type { FamilyModel, NodeContext } from '../model/types.js';
import { parseIP } from '../net/ip.js';
import { packetFamily } from './packet.js';
import { TraceError, type Dataplane, type Packet, type TraceResult } from './types.js';
import { explainTrace } from './why.js';

export function traceThrough(dataplane: Dataplane, model: FamilyModel, node: NodeContext, packet: Packet): TraceResult {
  const family = packetFamily(packet);
  if (model.family !== family) throw new TraceError(`the packet is ${family}, the model ${model.family}`);
  // Canonical addresses, so that the model's (canonical) addresses compare equal.
  const canonical: Packet = { ...packet, src: parseIP(packet.src)!.text, dst: parseIP(packet.dst)!.text };
  const trace = dataplane.trace(canonical);
  const { service, destinations, why } = explainTrace(trace, model, node, dataplane.labels.bind(dataplane));
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
