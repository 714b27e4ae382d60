/**
 * One family's iptables rules as `--dry-run` and /debug/rules print them: a banner, the
 * chains and jump rules ensured outside the restore (as the commands that would ensure
 * them), then the restore input itself. Comments only, besides the restore input, so the
 * text stays valid `iptables-restore` input.
 */
import { explainComments } from '../../model/explain.js';
import type { FamilyModel, IPFamily, NodeContext } from '../../model/types.js';
import { CANARY_CHAIN, CANARY_TABLES } from './chains.js';
import { renderIptables, type IptablesOptions } from './render.js';
import { portLabels } from './roles.js';
import { formatArgs, restoreText, type IptablesRuleset } from './ruleset.js';

export const FAMILY_BANNER: Record<IPFamily, string> = {
  IPv4: '# ==== IPv4: iptables-restore input ====',
  IPv6: '# ==== IPv6: ip6tables-restore input ====',
};

/** The jump rules as the commands that would ensure them, for people reading a dry run. */
export function jumpCommands(rs: IptablesRuleset): string[] {
  const bin = rs.family === 'IPv4' ? 'iptables' : 'ip6tables';
  return [...CANARY_TABLES.map((t) => `${bin} -t ${t} -N ${CANARY_CHAIN}`), ...rs.jumps.map((j) => `${bin} -t ${j.table} -I ${j.chain} ${formatArgs(j.args)}`)];
}

export function familyRulesText(model: FamilyModel, node: NodeContext, opts: IptablesOptions, explain: boolean): string {
  const rs = renderIptables(model, node, opts);
  return [
    FAMILY_BANNER[model.family],
    `# node ${node.nodeName}, ${rs.services.length} service ports`,
    '# chains and jump rules kube-proxy-ts ensures outside the restore:',
    ...jumpCommands(rs).map((c) => `#   ${c}`),
    ...(explain ? explainComments(model, node, opts.clusterCIDRs, portLabels) : []),
    restoreText(rs),
  ].join('\n');
}

