/**
 * One family's nftables table as `--dry-run` and /debug/rules print it: a banner, with
 * `--explain` each service port's endpoints and the parts of the table that serve it,
 * then the `nft -f` script. Comments only, besides the script, so the text stays valid
 * `nft -f` input.
 */
import { explainComments, type ServicePortLabels } from '../../model/explain.js';
import type { FamilyModel, IPFamily, NodeContext, ServicePort } from '../../model/types.js';
import { PROTOCOL_NAMES } from '../iptables/names.js';
import * as N from './names.js';
import { renderNftables, type NftablesOptions } from './render.js';
import { NFT_FAMILY, scriptText, TABLE_NAME } from './ruleset.js';

export const FAMILY_BANNER: Record<IPFamily, string> = {
  IPv4: `# ==== IPv4: nft -f input (table ip ${TABLE_NAME}) ====`,
  IPv6: `# ==== IPv6: nft -f input (table ip6 ${TABLE_NAME}) ====`,
};

/** The chains external traffic enters: by address, and (node ports) by port. */
function externalLabel(sp: ServicePort): string {
  const chain = sp.externalTrafficPolicy === 'Local' ? N.EXTERNAL_LOCAL : N.EXTERNAL;
  const byAddress = sp.externalIPs.length + sp.loadBalancerIPs.length > 0 ? [chain] : [];
  const byPort = sp.nodePort !== 0 ? [`nodeport-${chain}`] : [];
  return [...byAddress, ...byPort].join(' / ');
}

/** Which part of the table serves which traffic of a service port, for explanations. */
export function portLabels(sp: ServicePort): ServicePortLabels {
  const firewall = { sourceRanges: `@${N.FIREWALL_ALLOW}`, firewall: N.FIREWALL_CHECK };
  if (sp.sessionAffinity) {
    const own = N.ownChains(sp);
    return { cluster: own.service, local: own.local, external: own.external, ...firewall };
  }
  const group = (kind: N.GroupKind, set: { endpoints: unknown[] }) => `@${N.groupMap(kind, PROTOCOL_NAMES[sp.protocol], set.endpoints.length)}`;
  return {
    cluster: group('cluster', sp.cluster),
    local: group('local', sp.local),
    external: externalLabel(sp),
    ...firewall,
  };
}

export function familyRulesText(model: FamilyModel, node: NodeContext, opts: NftablesOptions, explain: boolean): string {
  const table = renderNftables(model, node, opts);
  return [
    FAMILY_BANNER[model.family],
    `# node ${node.nodeName}, ${model.servicePorts.length} service ports, table ${NFT_FAMILY[model.family]} ${TABLE_NAME}`,
    ...(explain ? explainComments(model, node, opts.clusterCIDRs, portLabels) : []),
    scriptText(table),
  ].join('\n');
}

