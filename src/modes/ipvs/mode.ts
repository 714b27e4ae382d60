/**
 * ipvs mode: upstream kube-proxy's ipvs layout (kube-ipvs0, the KUBE-* ipsets, one
 * virtual server per service address and port, and the iptables rules that match the
 * sets), rendered purely and applied as diffs. Start-up refuses a kernel without IPVS
 * or dummy interfaces in one line, before anything on the node is changed.
 */
import { access } from 'node:fs/promises';
import { release } from 'node:os';
import type { ProxyConfig } from '../../config/options.js';
import { parseCIDR, type ParsedCIDR } from '../../net/ip.js';
import { appliers, iptablesMode, iptablesOptions, randomFully } from '../iptables/mode.js';
import type { ConfiguredMode, Host, ProxyMode } from '../mode.js';
import { IpvsApplier } from './applier.js';
import { IpvsDataplane } from './dataplane.js';
import { DUMMY_DEVICE, familyRulesText } from './dryrun.js';
import { isOwnedSet } from './ipsets.js';
import { requireKernelSupport, IPVS_PROC, type KernelProbe } from './kernel.js';
import { DEFAULT_GRACE_PERIOD_MS, deleteServiceLine } from './plan.js';
import type { IpvsOptions } from './options.js';
import { IpvsSyncer } from './syncer.js';
import { parseIpvsadmSave } from './table.js';
import { parseHostPort } from '../../trace/packet.js';

/** The iptables mode's reading of the shared settings, and the scheduler. */
export function ipvsOptions(cfg: ProxyConfig): IpvsOptions {
  const { masqueradeBit, masqueradeAll, clusterCIDRs, nodePortAddresses, randomFully, dropInvalid } = iptablesOptions(cfg);
  return { scheduler: cfg.ipvs.scheduler, masqueradeBit, masqueradeAll, clusterCIDRs, nodePortAddresses, randomFully, dropInvalid };
}

const exists = (path: string) => access(path).then(
  () => true,
  () => false,
);

/** conn_reuse_mode=0 works around a bug that kernel 5.9 fixed; from 5.9 on, upstream leaves it. */
function needsConnReuseWorkaround(kernel: string): boolean {
  const [major = 0, minor = 0] = kernel.split(/[.-]/).map(Number);
  return major < 5 || (major === 5 && minor < 9);
}

/** The sysctls upstream's ipvs mode sets. */
export function ipvsSysctls(cfg: ProxyConfig, kernel: string): [string, number][] {
  return [
    ['net/ipv4/vs/conntrack', 1],
    ...(needsConnReuseWorkaround(kernel) ? ([['net/ipv4/vs/conn_reuse_mode', 0]] as [string, number][]) : []),
    ['net/ipv4/vs/expire_nodest_conn', 1],
    ['net/ipv4/vs/expire_quiescent_template', 1],
    ['net/ipv4/ip_forward', 1],
    ...(cfg.ipvs.strictARP
      ? ([
          ['net/ipv4/conf/all/arp_ignore', 1],
          ['net/ipv4/conf/all/arp_announce', 2],
        ] as [string, number][])
      : []),
  ];
}

const seconds = (ms: number) => Math.round(ms / 1000);

/**
 * Start-up: the kernel check (before anything changes), upstream's sysctls, the
 * iptables variant, the IPVS timeouts; then the syncer. `now`: injected for tests.
 */
export async function startIpvs(cfg: ProxyConfig, host: Host, probe: KernelProbe, opts: IpvsOptions, now?: () => number): Promise<IpvsSyncer> {
  await requireKernelSupport(probe);
  for (const [name, value] of ipvsSysctls(cfg, probe.release)) await host.sysctl.ensure(name, value);
  const byFamily = await appliers(host);
  const render = { ...opts, randomFully: await randomFully(host, byFamily.get('IPv4')!) };
  const applier = new IpvsApplier(host.run, byFamily);
  await applier.setTimeouts([seconds(cfg.ipvs.tcpTimeoutMs), seconds(cfg.ipvs.tcpFinTimeoutMs), seconds(cfg.ipvs.udpTimeoutMs)]);
  const excludeCIDRs = cfg.ipvs.excludeCIDRs.map((c) => parseCIDR(c)).filter((c): c is ParsedCIDR => c !== null);
  return new IpvsSyncer([...byFamily.keys()], applier, { render, excludeCIDRs, gracePeriodMs: DEFAULT_GRACE_PERIOD_MS, now }, host.log);
}

export const ipvsMode: ProxyMode = {
  name: 'ipvs',
  sharesRulesWith: ['iptables'],

  configure(cfg: ProxyConfig): ConfiguredMode {
    let opts = ipvsOptions(cfg);
    return {
      name: 'ipvs',
      rulesText: (model, node, explain) => familyRulesText(model, node, opts, explain),
      dataplane: (model, node) => new IpvsDataplane(model, node, opts),
      syncer: async (host) => {
        const syncer = await startIpvs(cfg, host, { exists, run: host.run, release: release() }, opts);
        opts = syncer.options;
        return syncer;
      },
    };
  },

  async cleanup(host: Host): Promise<boolean> {
    return cleanupIpvs(host);
  },
};

/**
 * Removes kube-ipvs0, the virtual servers on its addresses (and node port ones, on the
 * node's other addresses in the default node port range), the iptables part and the
 * KUBE-* ipsets. A kernel without IPVS has no virtual servers to remove.
 */
export async function cleanupIpvs(host: Host, pathExists: (path: string) => Promise<boolean> = exists): Promise<boolean> {
  let clean = true;
  const fail = (what: string, err: unknown) => {
    clean = false;
    host.log.error({ err: (err as Error).message }, `cleanup of ${what} failed`);
  };
  const run = async (cmd: string, args: string[], input?: Buffer[]) => {
    const r = await host.run(cmd, args, input);
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`);
    return r.stdout;
  };
  const device = (await host.run('ip', ['-o', 'addr', 'show', 'dev', DUMMY_DEVICE]).catch(() => null)) ?? null;
  const bound = new Set<string>();
  if (device?.status === 0) {
    for (const line of device.stdout.split('\n')) {
      const words = line.trim().split(/\s+/);
      const i = words.findIndex((w) => w === 'inet' || w === 'inet6');
      if (i >= 0) bound.add(words[i + 1]!.split('/')[0]!);
    }
  }
  if (await pathExists(IPVS_PROC)) {
    try {
      const table = parseIpvsadmSave(await run('ipvsadm', ['-Sn']));
      const ours = [...table.values()].filter((vs) => {
        const hp = parseHostPort(vs.address);
        return hp !== null && (bound.has(hp.ip) || (hp.port! >= 30000 && hp.port! <= 32767));
      });
      if (ours.length > 0) await run('ipvsadm', ['-R'], [Buffer.from(ours.map((vs) => `${deleteServiceLine(vs)}\n`).join(''))]);
      host.log.info({ virtualServers: ours.length }, 'removed kube-proxy virtual servers');
    } catch (err) {
      fail('virtual servers', err);
    }
  }
  if (device?.status === 0) {
    try {
      await run('ip', ['link', 'del', DUMMY_DEVICE]);
      host.log.info(`removed ${DUMMY_DEVICE}`);
    } catch (err) {
      fail(DUMMY_DEVICE, err);
    }
  }
  // The iptables rules match the sets: they go first, or the sets cannot be destroyed.
  if (!(await iptablesMode.cleanup(host))) clean = false;
  try {
    const listed = await host.run('ipset', ['list', '-n']).catch(() => null);
    const sets = listed?.status === 0 ? listed.stdout.split('\n').filter(isOwnedSet) : [];
    for (const name of sets) await run('ipset', ['destroy', name]);
    if (sets.length > 0) host.log.info({ ipsets: sets.length }, 'removed kube-proxy ipsets');
  } catch (err) {
    fail('ipsets', err);
  }
  return clean;
}
