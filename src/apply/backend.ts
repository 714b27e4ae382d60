/**
 * Which iptables backend to drive. Rules written through iptables-legacy and through
 * iptables-nft land in two different kernel subsystems, and a packet passes both: rules in
 * the backend the rest of the node (kubelet, the CNI plugin, the firewall) does not use
 * still apply, but their order relative to everyone else's is lost. So, like upstream's
 * image (kubernetes-sigs/iptables-wrappers), use the backend the host already uses.
 */
import type { IPFamily } from '../model/types.js';
import type { Backend } from './iptables.js';
import type { Runner } from './command.js';

export interface IptablesBinaries {
  iptables: string;
  restore: string;
  save: string;
}

/** What one backend's save commands showed, IPv4 and IPv6 together. */
export interface BackendRules {
  rules: number;
  /** Whether kubelet's chains (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY) are there. */
  kubeletChains: boolean;
}

export interface BackendDecision {
  /** null when neither backend's tools run: the plain `iptables` names are used as they are. */
  backend: Backend | null;
  reason: string;
}

export interface BackendChoice extends BackendDecision {
  bin: Record<IPFamily, IptablesBinaries>;
}

const VARIANT: Record<Backend, string> = { legacy: 'legacy', nf_tables: 'nft' };

/** The tools for a family: `iptables-nft-restore` and so on, or the plain names for null. */
export function binaries(family: IPFamily, backend: Backend | null): IptablesBinaries {
  const base = family === 'IPv6' ? 'ip6tables' : 'iptables';
  const v = backend === null ? '' : `-${VARIANT[backend]}`;
  return { iptables: `${base}${v}`, restore: `${base}${v}-restore`, save: `${base}${v}-save` };
}

/**
 * Picks the backend from what each one holds; a backend is null when its tools are missing
 * or fail. kubelet's own chains decide first, since kubelet already made this choice (what
 * iptables-wrappers does now); otherwise the backend with more rules wins (what it did
 * before kubelet made those chains), and nf_tables, the default of current
 * distributions, on a tie.
 */
export function chooseBackend(seen: Record<Backend, BackendRules | null>): BackendDecision {
  const { legacy, nf_tables: nft } = seen;
  if (!legacy && !nft) return { backend: null, reason: 'iptables-legacy-save and iptables-nft-save are missing or failed; using iptables from PATH' };
  if (!legacy) return { backend: 'nf_tables', reason: 'iptables-legacy-save is missing or failed' };
  if (!nft) return { backend: 'legacy', reason: 'iptables-nft-save is missing or failed' };
  if (legacy.kubeletChains !== nft.kubeletChains) {
    const backend: Backend = legacy.kubeletChains ? 'legacy' : 'nf_tables';
    return { backend, reason: `kubelet's chains are in ${backend}` };
  }
  const counts = `${legacy.rules} legacy rules, ${nft.rules} nf_tables rules`;
  if (legacy.rules > nft.rules) return { backend: 'legacy', reason: counts };
  return { backend: 'nf_tables', reason: legacy.rules === nft.rules ? `${counts}; nf_tables is the default` : counts };
}

const KUBELET_CHAIN = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) /m;

/** Summarises `iptables-save` output; the second argument adds IPv6's, if it ran. */
export function summarise(v4: string, v6: string): BackendRules {
  const rules = (s: string) => s.split('\n').filter((l) => l.startsWith('-')).length;
  return { rules: rules(v4) + rules(v6), kubeletChains: KUBELET_CHAIN.test(v4) || KUBELET_CHAIN.test(v6) };
}

/**
 * Reads both backends' rules (all tables: naming one would make iptables-legacy-save
 * create it) and chooses. Read-only: nothing is changed on the host.
 */
export async function detectBackend(run: Runner): Promise<BackendChoice> {
  const save = async (cmd: string): Promise<string | null> => {
    const r = await run(cmd, []).catch(() => null);
    return r?.status === 0 ? r.stdout : null;
  };
  const look = async (backend: Backend): Promise<BackendRules | null> => {
    const [v4, v6] = await Promise.all([save(binaries('IPv4', backend).save), save(binaries('IPv6', backend).save)]);
    return v4 === null ? null : summarise(v4, v6 ?? '');
  };
  const [legacy, nft] = await Promise.all([look('legacy'), look('nf_tables')]);
  const decision = chooseBackend({ legacy, nf_tables: nft });
  return { ...decision, bin: { IPv4: binaries('IPv4', decision.backend), IPv6: binaries('IPv6', decision.backend) } };
}
