/**
 * `kube-proxy-ts trace`: renders the ruleset a node would get, as --dry-run does, and
 * traces one packet through it. Pure: cluster objects, config and the packet in; text or
 * JSON out, or why the packet cannot be traced.
 */
import type { ProxyConfig } from '../config/options.js';
import type { ClusterObjects } from '../kube/objects.js';
import { buildNodeModel, type BuildResult } from '../model/build.js';
import { parseIP } from '../net/ip.js';
import { renderIptables, type IptablesOptions } from '../modes/iptables/render.js';
import type { FamilyModel, IPFamily, NodeContext } from '../model/types.js';
import { formatTrace } from '../trace/format.js';
import { traceIptables } from '../trace/trace.js';
import { TraceError, type Packet } from '../trace/types.js';
import { iptablesOptions } from './dryrun.js';
import type { TraceRequest } from '../cli/program.js';

export type TraceRun = { build: BuildResult; text: string } | { build: BuildResult; error: string };
export type TraceOutput = { text: string } | { error: string };

/** Traces one packet through the rules `models` render to; shared by the CLI and the agent. */
export function tracePacket(models: Record<IPFamily, FamilyModel>, node: NodeContext, opts: IptablesOptions, req: TraceRequest): TraceOutput {
  const family = parseIP(req.dst.ip)!.family;
  // From the node itself, the kernel picks the node's address as the source.
  const src = req.src?.ip ?? node.nodeIPs.find((ip) => parseIP(ip)!.family === family);
  if (src === undefined) {
    return { error: `trace --from node needs --src: node ${node.nodeName} has no ${family} address in the input` };
  }
  const packet: Packet = { protocol: req.protocol, src, srcPort: req.src?.port ?? null, dst: req.dst.ip, dstPort: req.dst.port, from: req.from };
  try {
    const model = models[family];
    const result = traceIptables(renderIptables(model, node, opts), model, node, packet);
    return { text: req.output === 'json' ? `${JSON.stringify(result, null, 2)}\n` : formatTrace(result) };
  } catch (err) {
    if (err instanceof TraceError) return { error: `trace: ${err.message}` };
    throw err;
  }
}

export function runTrace(objects: ClusterObjects, cfg: ProxyConfig, req: TraceRequest): TraceRun {
  const build = buildNodeModel(objects, cfg.hostnameOverride);
  return { build, ...tracePacket(build.model.families, build.model.node, iptablesOptions(cfg), req) };
}
