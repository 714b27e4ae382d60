/**
 * `kube-proxy-ts trace`: builds the node's model as --dry-run does and traces one packet
 * through the rules the mode renders for it. Pure: cluster objects, the node's name, a
 * configured mode and the packet in; text or JSON out, or why it cannot be traced.
 */
import type { ClusterObjects } from '../kube/objects.js';
import { buildNodeModel, type BuildResult } from '../model/build.js';
import type { ConfiguredMode } from '../modes/mode.js';
import { tracePacket, type TraceOutput } from '../trace/request.js';
import type { TraceRequest } from '../trace/types.js';

export type TraceRun = TraceOutput & { build: BuildResult };

export function runTrace(objects: ClusterObjects, nodeName: string, mode: ConfiguredMode, req: TraceRequest): TraceRun {
  const build = buildNodeModel(objects, nodeName);
  return { build, ...tracePacket((m, n, p) => mode.dataplane(m, n, p), build.model.families, build.model.node, req) };
}
