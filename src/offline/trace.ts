/**
 * `kube-proxy-ts trace`: builds the node's model as --dry-run does, resolves the packet's
 * addresses (a Service or node port by name) and traces it through the rules the mode
 * renders. Pure: cluster objects, the node's name, a configured mode and the query in;
 * text or JSON out, or why it cannot be traced.
 */
import type { ClusterObjects } from '../kube/objects.js';
import { buildNodeModel, type BuildResult } from '../model/build.js';
import type { ConfiguredMode } from '../modes/mode.js';
import { tracePacket, type TraceOutput } from '../trace/request.js';
import type { TraceQuery } from '../trace/types.js';
import { resolveQuery } from './resolve.js';

export type TraceRun = TraceOutput & { build: BuildResult };

export function runTrace(objects: ClusterObjects, nodeName: string, mode: ConfiguredMode, query: TraceQuery): TraceRun {
  // A node port is traced on the node it is addressed to.
  const build = buildNodeModel(objects, query.dst.kind === 'nodePort' ? query.dst.node : nodeName);
  const req = resolveQuery(query, objects, build.model);
  if ('error' in req) return { build, error: req.error };
  return { build, ...tracePacket((m, n, p) => mode.dataplane(m, n, p), build.model.families, build.model.node, req) };
}
