/**
 * Which iptables variant (legacy or nf_tables) to drive. Rules written through
 * iptables-legacy and through iptables-nft land in two different kernel subsystems, and a
 * packet passes both: rules in the variant the rest of the node (kubelet, the CNI plugin, the firewall) does not use
 * still apply, but their order relative to everyone else's is lost. So, like upstream's
 * image (kubernetes-sigs/iptables-wrappers), use the variant the host already uses.
 */
import type { IPFamily } from '../../model/types.js';
import type { Runner } from '../../exec/command.js';

/** Which kernel subsystem an iptables binary drives: `iptables --version` says `(nf_tables)` or `(legacy)`. */
export type IptablesVariant = 'nf_tables' | 'legacy';

/** What `iptables --version` says of its binary: `iptables v1.8.9 (nf_tables)`. */
export interface IptablesVersion {
  variant: IptablesVariant;
  /** [major, minor, patch], or null when the text names none. */
  version: [number, number, number] | null;
}

export function parseVersion(text: string): IptablesVersion {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(text);
  return { variant: /nf_tables/.test(text) ? 'nf_tables' : 'legacy', version: m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null };
}

/** MASQUERADE --random-fully came with iptables 1.6.2, the version upstream checks for. */
export function supportsRandomFully(v: IptablesVersion): boolean {
  if (v.version === null) return false;
  const [major, minor, patch] = v.version;
  return major > 1 || (major === 1 && (minor > 6 || (minor === 6 && patch >= 2)));
}

export interface IptablesBinaries {
  iptables: string;
  restore: string;
  save: string;
}

/** What one variant's save commands showed, IPv4 and IPv6 together. */
export interface VariantRules {
  rules: number;
  /** Whether kubelet's chains (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY) are there. */
  kubeletChains: boolean;
}

export interface VariantDecision {
  /** null when neither variant's tools run: the plain `iptables` names are used as they are. */
  variant: IptablesVariant | null;
  reason: string;
}

export interface VariantChoice extends VariantDecision {
  bin: Record<IPFamily, IptablesBinaries>;
}

const VARIANT: Record<IptablesVariant, string> = { legacy: 'legacy', nf_tables: 'nft' };

/** The tools for a family: `iptables-nft-restore` and so on, or the plain names for null. */
export function binaries(family: IPFamily, variant: IptablesVariant | null): IptablesBinaries {
  const base = family === 'IPv6' ? 'ip6tables' : 'iptables';
  const v = variant === null ? '' : `-${VARIANT[variant]}`;
  return { iptables: `${base}${v}`, restore: `${base}${v}-restore`, save: `${base}${v}-save` };
}

/**
 * Picks the variant from what each one holds; a variant is null when its tools are missing
 * or fail. kubelet's own chains decide first, since kubelet already made this choice (what
 * iptables-wrappers does now); otherwise the variant with more rules wins (what it did
 * before kubelet made those chains), and nf_tables, the default of current
 * distributions, on a tie.
 */
export function chooseVariant(seen: Record<IptablesVariant, VariantRules | null>): VariantDecision {
  const { legacy, nf_tables: nft } = seen;
  if (!legacy && !nft) return { variant: null, reason: 'iptables-legacy-save and iptables-nft-save are missing or failed; using iptables from PATH' };
  if (!legacy) return { variant: 'nf_tables', reason: 'iptables-legacy-save is missing or failed' };
  if (!nft) return { variant: 'legacy', reason: 'iptables-nft-save is missing or failed' };
  if (legacy.kubeletChains !== nft.kubeletChains) {
    const variant: IptablesVariant = legacy.kubeletChains ? 'legacy' : 'nf_tables';
    return { variant, reason: `kubelet's chains are in ${variant}` };
  }
  const counts = `${legacy.rules} legacy rules, ${nft.rules} nf_tables rules`;
  if (legacy.rules > nft.rules) return { variant: 'legacy', reason: counts };
  return { variant: 'nf_tables', reason: legacy.rules === nft.rules ? `${counts}; nf_tables is the default` : counts };
}

const KUBELET_CHAIN = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) /m;

/** Summarises `iptables-save` output; the second argument adds IPv6's, if it ran. */
export function summarise(v4: string, v6: string): VariantRules {
  const rules = (s: string) => s.split('\n').filter((l) => l.startsWith('-')).length;
  return { rules: rules(v4) + rules(v6), kubeletChains: KUBELET_CHAIN.test(v4) || KUBELET_CHAIN.test(v6) };
}

/**
 * Reads both variants' rules (all tables: naming one would make iptables-legacy-save
 * create it) and chooses. Read-only: nothing is changed on the host.
 */
export async function detectVariant(run: Runner): Promise<VariantChoice> {
  const save = async (cmd: string): Promise<string | null> => {
    const r = await run(cmd, []).catch(() => null);
    return r?.status === 0 ? r.stdout : null;
  };
  const look = async (variant: IptablesVariant): Promise<VariantRules | null> => {
    const [v4, v6] = await Promise.all([save(binaries('IPv4', variant).save), save(binaries('IPv6', variant).save)]);
    return v4 === null ? null : summarise(v4, v6 ?? '');
  };
  const [legacy, nft] = await Promise.all([look('legacy'), look('nf_tables')]);
  const decision = chooseVariant({ legacy, nf_tables: nft });
  return { ...decision, bin: { IPv4: binaries('IPv4', decision.variant), IPv6: binaries('IPv6', decision.variant) } };
}
