/**
 * One family's ipvs programming as `--dry-run` prints it: four sections, each headed by a
 * `# ----` banner and each valid input to its own tool: `ip -batch` for kube-ipvs0,
 * `ipset restore`, `ipvsadm -R`, and `iptables-restore` (with the jump rules the agent
 * ensures outside it as comments). `splitSections` cuts the text back into those inputs.
 */
import type { FamilyModel, IPFamily, NodeContext } from '../../model/types.js';
import { jumpCommands } from '../iptables/dryrun.js';
import { restoreText } from '../iptables/ruleset.js';
import { ipsetRestoreText } from './ipsets.js';
import type { IpvsOptions } from './options.js';
import { renderIpvs, type IpvsRendering } from './render.js';
import { restoreLines, vsKey } from './table.js';

export const DUMMY_DEVICE = 'kube-ipvs0';

export const SECTIONS = ['kube-ipvs0', 'ipset', 'ipvsadm', 'iptables'] as const;
export type Section = (typeof SECTIONS)[number];

const SECTION_TITLE: Record<Section, string> = {
  'kube-ipvs0': `${DUMMY_DEVICE} and its addresses: ip -batch input`,
  ipset: 'ipsets: ipset restore input',
  ipvsadm: 'virtual servers: ipvsadm -R input',
  iptables: 'iptables: iptables-restore input',
};

const FAMILY_TITLE: Record<IPFamily, string> = { IPv4: 'IPv4', IPv6: 'IPv6' };

function banner(family: IPFamily, section: Section): string {
  const title = family === 'IPv6' && section === 'iptables' ? 'iptables: ip6tables-restore input' : SECTION_TITLE[section];
  return `# ---- ${FAMILY_TITLE[family]} ${title} ----`;
}

const familyBanner = (family: IPFamily) => `# ==== ${family}: ipvs mode ====`;

/** `ip -batch` lines that create kube-ipvs0 and bind the service addresses to it. */
export function addressLines(r: Pick<IpvsRendering, 'family' | 'addresses'>): string[] {
  const prefix = r.family === 'IPv4' ? 32 : 128;
  return [`link add ${DUMMY_DEVICE} type dummy`, ...r.addresses.map((a) => `address add ${a}/${prefix} dev ${DUMMY_DEVICE}`)];
}

/** `--explain`: what each virtual server serves and which endpoint set it balances over. */
function explainLines(r: IpvsRendering): string[] {
  if (r.virtualServers.length === 0) return ['# virtual servers: none'];
  return [
    '# virtual servers, what they serve and their real servers:',
    ...r.virtualServers.map(
      (vs) =>
        `#   ${vsKey(vs)}  ${vs.servicePort} ${vs.role}, ${vs.localOnly ? 'local' : 'cluster'} set: ${vs.realServers.length === 0 ? 'no real servers' : vs.realServers.map((rs) => rs.address).join(' ')}`,
    ),
  ];
}

export function familyRulesText(model: FamilyModel, node: NodeContext, opts: IpvsOptions, explain: boolean): string {
  const r = renderIpvs(model, node, opts);
  return [
    familyBanner(model.family),
    `# node ${node.nodeName}, ${model.servicePorts.length} service ports, ${r.virtualServers.length} virtual servers, scheduler ${opts.scheduler}`,
    banner(model.family, 'kube-ipvs0'),
    ...addressLines(r),
    banner(model.family, 'ipset'),
    ipsetRestoreText(r.sets).trimEnd(),
    banner(model.family, 'ipvsadm'),
    ...(explain ? explainLines(r) : []),
    ...restoreLines(r.virtualServers),
    banner(model.family, 'iptables'),
    '# chains and jump rules kube-proxy-ts ensures outside the restore:',
    ...jumpCommands(r.iptables).map((c) => `#   ${c}`),
    restoreText(r.iptables),
  ].join('\n');
}

/** A dry run's text cut back into each family's sections, as each tool takes them (comments dropped). */
export function splitSections(text: string): Record<IPFamily, Record<Section, string>> {
  const out = { IPv4: {}, IPv6: {} } as Record<IPFamily, Record<Section, string>>;
  let family: IPFamily | null = null;
  let section: Section | null = null;
  const lines = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const f = (['IPv4', 'IPv6'] as const).find((x) => line === familyBanner(x));
    if (f) {
      family = f;
      section = null;
      continue;
    }
    const s = family ? SECTIONS.find((x) => line === banner(family!, x)) : undefined;
    if (s) {
      section = s;
      continue;
    }
    if (!family || !section || line.startsWith('#') || line === '') continue;
    const k = `${family} ${section}`;
    const list = lines.get(k);
    if (list) list.push(line);
    else lines.set(k, [line]);
  }
  for (const f of ['IPv4', 'IPv6'] as const) for (const s of SECTIONS) out[f][s] = (lines.get(`${f} ${s}`) ?? []).map((l) => `${l}\n`).join('');
  return out;
}
