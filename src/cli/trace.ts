/**
 * `kube-proxy-ts trace`: renders the ruleset a node would get, as --dry-run does, and
 * traces one packet through it. Pure: cluster objects, config and the packet in; text or
 * JSON out, or why the packet cannot be traced.
 */
import type { ProxyConfig } from '../config/options.js';
import type { ClusterObjects } from '../kube/objects.js';
import { buildNodeModel, type BuildResult } from '../model/build.js';
import { parseIP } from '../net/ip.js';
import { renderIptables } from '../render/iptables.js';
import { formatTrace } from '../trace/format.js';
import { traceIptables } from '../trace/trace.js';
import { TraceError, type Packet } from '../trace/types.js';
import { iptablesOptions } from './dryrun.js';
import type { TraceRequest } from './program.js';

export type TraceRun = { build: BuildResult; text: string } | { build: BuildResult; error: string };

export function runTrace(objects: ClusterObjects, cfg: ProxyConfig, req: TraceRequest): TraceRun {
  const build = buildNodeModel(objects, cfg.hostnameOverride);
  const node = build.model.node;
  const family = parseIP(req.dst.ip)!.family;
  // From the node itself, the kernel picks the node's address as the source.
  const src = req.src?.ip ?? node.nodeIPs.find((ip) => parseIP(ip)!.family === family);
  if (src === undefined) {
    return { build, error: `trace --from node needs --src: node ${node.nodeName} has no ${family} address in the input` };
  }
  const packet: Packet = { protocol: req.protocol, src, srcPort: req.src?.port ?? null, dst: req.dst.ip, dstPort: req.dst.port, from: req.from };
  try {
    const model = build.model.families[family];
    const result = traceIptables(renderIptables(model, node, iptablesOptions(cfg)), model, node, packet);
    return { build, text: req.output === 'json' ? `${JSON.stringify(result, null, 2)}\n` : formatTrace(result) };
  } catch (err) {
    if (err instanceof TraceError) return { build, error: `trace: ${err.message}` };
    throw err;
  }
}
