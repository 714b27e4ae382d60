/**
 * `--dry-run`: the rules the proxy would program for one node, printed for people and
 * for `iptables-restore --test`. Pure: cluster objects and config in, text out.
 */
import type { ClusterObjects } from '../kube/objects.js';
import type { ProxyConfig } from '../config/options.js';
import { buildNodeModel, type BuildResult } from '../model/build.js';
import type { FamilyModel, IPFamily, NodeContext } from '../model/types.js';
import { parseCIDR } from '../net/ip.js';
import { jumpCommands, renderIptables, restoreText, type IptablesOptions } from '../modes/iptables/render.js';
import { explainServicePort } from '../model/explain.js';

export const FAMILY_BANNER: Record<IPFamily, string> = {
  IPv4: '# ==== IPv4: iptables-restore input ====',
  IPv6: '# ==== IPv6: ip6tables-restore input ====',
};

export function iptablesOptions(cfg: ProxyConfig): IptablesOptions {
  return {
    masqueradeBit: cfg.iptables.masqueradeBit,
    masqueradeAll: cfg.iptables.masqueradeAll,
    localhostNodePorts: cfg.iptables.localhostNodePorts,
    clusterCIDRs: cfg.clusterCIDRs,
    nodePortAddresses: cfg.nodePortAddresses,
    randomFully: true,
  };
}

export interface DryRun {
  text: string;
  build: BuildResult;
}

/** `--explain`: written as comments, so that the output stays valid restore input. */
function explainLines(model: FamilyModel, node: NodeContext, opts: IptablesOptions): string[] {
  const podCIDR = opts.clusterCIDRs.map((c) => parseCIDR(c)).find((c) => c?.family === model.family)?.text ?? null;
  const ports = model.servicePorts.flatMap((sp) => ['#', ...explainServicePort(sp, node, podCIDR).map((l) => `#   ${l}`)]);
  return ['# service ports, their endpoints and the sets their rules use:', ...(ports.length > 0 ? ports : ['#   none'])];
}

/** One family's part of a dry run (and of the agent's /debug/rules): banner, jumps, restore input. */
export function familyRulesText(model: FamilyModel, node: NodeContext, opts: IptablesOptions, explain = false): string {
  const rs = renderIptables(model, node, opts);
  return [
    FAMILY_BANNER[model.family],
    `# node ${node.nodeName}, ${rs.services.length} service ports`,
    '# chains and jump rules kube-proxy-ts ensures outside the restore:',
    ...jumpCommands(rs).map((c) => `#   ${c}`),
    ...(explain ? explainLines(model, node, opts) : []),
    restoreText(rs),
  ].join('\n');
}

export function dryRun(objects: ClusterObjects, cfg: ProxyConfig, explain = false): DryRun {
  const build = buildNodeModel(objects, cfg.hostnameOverride);
  const opts = iptablesOptions(cfg);
  const text = (['IPv4', 'IPv6'] as const).map((f) => familyRulesText(build.model.families[f], build.model.node, opts, explain)).join('\n');
  return { text, build };
}

/** Cuts a dry run's text back into the restore input of each family. */
export function splitFamilies(text: string): Record<IPFamily, string> {
  const v6 = text.indexOf(FAMILY_BANNER.IPv6);
  return { IPv4: text.slice(0, v6), IPv6: text.slice(v6) };
}
