/**
 * iptables mode: upstream kube-proxy's chains, written with iptables-restore through the
 * iptables variant (legacy or nf_tables) the node already uses.
 */
import { conntrackConfig, type ProxyConfig } from '../../config/options.js';
import { localhostNodePortsOn } from '../../model/nodeports.js';
import type { IPFamily, ServicePort } from '../../model/types.js';
import type { Packet } from '../../trace/types.js';
import { FULL_SYNC_INTERVAL_MS } from '../full-sync.js';
import type { ConfiguredMode, Host, ProxyMode } from '../mode.js';
import { IptablesApplier } from './applier.js';
import type { CleanupTable } from './chains.js';
import { IptablesDataplane } from './dataplane.js';
import { familyRulesText } from './dryrun.js';
import { renderIptables, type IptablesOptions } from './render.js';
import { IptablesSyncer } from './syncer.js';
import { detectVariant, supportsRandomFully, type VariantChoice } from './variant.js';

/** About 100 services of 10 endpoints: restores this size load in ~0.1 s on nf_tables. */
export const DEFAULT_MAX_RESTORE_LINES = 5_000;

export function iptablesOptions(cfg: ProxyConfig): IptablesOptions {
  return {
    masqueradeBit: cfg.iptables.masqueradeBit,
    masqueradeAll: cfg.iptables.masqueradeAll,
    localhostNodePorts: cfg.iptables.localhostNodePorts,
    clusterCIDRs: cfg.clusterCIDRs,
    nodePortAddresses: cfg.nodePortAddresses,
    randomFully: true,
    dropInvalid: !conntrackConfig(cfg).tcpBeLiberal,
  };
}

async function hostVariant(host: Host): Promise<VariantChoice> {
  const choice = await detectVariant(host.run);
  host.log.info({ variant: choice.variant ?? 'as on PATH', reason: choice.reason, iptables: choice.bin.IPv4.iptables }, 'chose the iptables variant');
  return choice;
}

/** IPv4 always; IPv6 where ip6tables works (a kernel without IPv6 has no ip6tables nat). */
async function families(host: Host, choice: VariantChoice): Promise<IPFamily[]> {
  const out: IPFamily[] = ['IPv4'];
  const v6 = await host.run(choice.bin.IPv6.iptables, ['-w', '5', '-t', 'nat', '-S', 'POSTROUTING']).catch(() => null);
  if (v6?.status === 0) out.push('IPv6');
  return out;
}

export async function appliers(host: Host): Promise<Map<IPFamily, IptablesApplier>> {
  const choice = await hostVariant(host);
  return new Map((await families(host, choice)).map((f) => [f, new IptablesApplier(f, host.run, choice.bin[f])] as const));
}

/** Whether the host's iptables takes MASQUERADE --random-fully; older ones refuse every restore that has it. */
export async function randomFully(host: Host, applier: IptablesApplier): Promise<boolean> {
  const v = await applier.version();
  const ok = supportsRandomFully(v);
  if (!ok) host.log.warn({ version: v.version?.join('.') ?? 'unknown' }, 'this iptables has no MASQUERADE --random-fully (1.6.2 or later); masquerading without it');
  return ok;
}

const ROUTE_LOCALNET = 'net/ipv4/conf/all/route_localnet';

/** Packets to 127.0.0.1 DNATed to a pod must be routed off the node: the kernel refuses that unless route_localnet is set. */
async function allowLocalhostNodePorts(host: Host): Promise<void> {
  try {
    await host.sysctl.ensure(ROUTE_LOCALNET, 1);
  } catch (err) {
    throw new Error(
      `cannot set ${ROUTE_LOCALNET.replaceAll('/', '.')}=1 for node ports on localhost (${(err as Error).message}); set --iptables-localhost-nodeports=false, or --nodeport-addresses without 127.0.0.0/8`,
    );
  }
  host.log.info('set route_localnet=1 to accept node ports on localhost; --iptables-localhost-nodeports=false or --nodeport-addresses without loopback turn this off');
}

/** The service ports a packet may be for: whose chains a trace of it can enter. */
function addressedTo(p: Packet): (sp: ServicePort) => boolean {
  return (sp) =>
    sp.clusterIP === p.dst || sp.externalIPs.includes(p.dst) || sp.loadBalancerIPs.includes(p.dst) || sp.nodePort === p.dstPort || sp.healthCheckNodePort === p.dstPort;
}

export const iptablesMode: ProxyMode = {
  name: 'iptables',
  sharesRulesWith: ['ipvs'],

  configure(cfg: ProxyConfig): ConfiguredMode {
    // What the host's iptables can do (--random-fully) is known once the syncer looked:
    // from then on, the dry-run text and the trace show what this node programs.
    let opts = iptablesOptions(cfg);
    return {
      name: 'iptables',
      rulesText: (model, node, explain) => familyRulesText(model, node, opts, explain),
      dataplane: (model, node, focus) => IptablesDataplane.ofRuleset(renderIptables(model, node, opts, focus ? addressedTo(focus) : undefined), node.nodeIPs),
      syncer: async (host) => {
        if (localhostNodePortsOn(opts.nodePortAddresses, opts.localhostNodePorts)) await allowLocalhostNodePorts(host);
        const byFamily = await appliers(host);
        opts = { ...opts, randomFully: await randomFully(host, byFamily.get('IPv4')!) };
        return new IptablesSyncer(byFamily, { render: opts, maxRestoreLines: DEFAULT_MAX_RESTORE_LINES, fullSyncIntervalMs: FULL_SYNC_INTERVAL_MS }, host.log);
      },
    };
  },

  cleanup: (host: Host) => removeChains(host, 'kube-proxy chains and jumps'),
};

/**
 * Removes the chains `isOwned` names (by default kube-proxy's, whichever mode wrote them)
 * and every rule that jumps to them, in both families; says so only when there were any.
 * True when none is left.
 */
export async function removeChains(host: Host, what: string, isOwned?: (table: CleanupTable, name: string) => boolean): Promise<boolean> {
  let clean = true;
  for (const [family, applier] of await appliers(host)) {
    try {
      if (await applier.cleanup(isOwned)) host.log.info({ family }, `removed ${what}`);
    } catch (err) {
      clean = false;
      host.log.error({ family, err: (err as Error).message }, 'cleanup failed');
    }
  }
  return clean;
}
