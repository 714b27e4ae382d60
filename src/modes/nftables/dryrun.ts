/**
 * One family's nftables table as `--dry-run` and /debug/rules print it: a banner, with
 * `--explain` each service port's endpoints and the parts of the table that serve it,
 * then the `nft -f` script. Comments only, besides the script, so the text stays valid
 * `nft -f` input.
 */
import { explainServicePort, type ServicePortLabels } from '../../model/explain.js';
import type { FamilyModel, IPFamily, NodeContext, ServicePort } from '../../model/types.js';
import { parseCIDR } from '../../net/ip.js';
import * as N from './names.js';
import { renderNftables, type NftablesOptions } from './render.js';
import { NFT_FAMILY, scriptText, TABLE_NAME } from './ruleset.js';

export const FAMILY_BANNER: Record<IPFamily, string> = {
  IPv4: `# ==== IPv4: nft -f input (table ip ${TABLE_NAME}) ====`,
  IPv6: `# ==== IPv6: nft -f input (table ip6 ${TABLE_NAME}) ====`,
};

/** Which part of the table serves which traffic of a service port, for explanations. */
export function portLabels(sp: ServicePort): ServicePortLabels {
  const firewall = { sourceRanges: `@${N.FIREWALL_ALLOW}`, firewall: N.FIREWALL_CHECK };
  if (sp.sessionAffinity) {
    const own = N.ownChains(sp);
    return { cluster: own.service, local: own.local, external: own.external, ...firewall };
  }
  const n = (set: { endpoints: unknown[] }) => set.endpoints.length;
  return {
    cluster: `@${N.groupMap('cluster', n(sp.cluster))}`,
    local: `@${N.groupMap('local', n(sp.local))}`,
    external: sp.externalTrafficPolicy === 'Local' ? N.EXTERNAL_LOCAL : N.EXTERNAL,
    ...firewall,
  };
}

function explainLines(model: FamilyModel, node: NodeContext, opts: NftablesOptions): string[] {
  const podCIDR = opts.clusterCIDRs.map((c) => parseCIDR(c)).find((c) => c?.family === model.family)?.text ?? null;
  const ports = model.servicePorts.flatMap((sp) => ['#', ...explainServicePort(sp, node, podCIDR, portLabels(sp)).map((l) => `#   ${l}`)]);
  return ['# service ports, their endpoints and the sets their rules use:', ...(ports.length > 0 ? ports : ['#   none'])];
}

export function familyRulesText(model: FamilyModel, node: NodeContext, opts: NftablesOptions, explain: boolean): string {
  const table = renderNftables(model, node, opts);
  return [
    FAMILY_BANNER[model.family],
    `# node ${node.nodeName}, ${model.servicePorts.length} service ports, table ${NFT_FAMILY[model.family]} ${TABLE_NAME}`,
    ...(explain ? explainLines(model, node, opts) : []),
    scriptText(table),
  ].join('\n');
}

/** Cuts a dry run's text back into the script of each family. */
export function splitFamilies(text: string): Record<IPFamily, string> {
  const v6 = text.indexOf(FAMILY_BANNER.IPv6);
  return { IPv4: text.slice(0, v6), IPv6: text.slice(v6) };
}
