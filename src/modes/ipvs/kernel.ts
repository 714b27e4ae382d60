/**
 * What ipvs mode needs of the kernel, checked before anything is changed: IPVS itself
 * (`/proc/net/ip_vs` once ip_vs is loaded) and dummy interfaces (for kube-ipvs0). A
 * kernel without them gets one error naming what is missing, not a sync that fails
 * half-way every few seconds.
 */
import type { Runner } from '../../exec/command.js';

export interface KernelProbe {
  /** Whether a path exists (`/proc/net/ip_vs`, `/sys/module/dummy`). */
  exists(path: string): Promise<boolean>;
  run: Runner;
  /** The kernel's release (`uname -r`). */
  release: string;
}

export const IPVS_PROC = '/proc/net/ip_vs';
const DUMMY_SYS = '/sys/module/dummy';

/** Loads a module if it can; the kernel may have it built in or not at all. */
async function modprobe(run: Runner, module: string): Promise<string | null> {
  const r = await run('modprobe', ['--', module]).catch((err: Error) => ({ status: 127, stdout: '', stderr: err.message }));
  return r.status === 0 ? null : r.stderr.trim().split('\n')[0] || `exit ${r.status}`;
}

/** The missing kernel features, described for one line; empty when ipvs mode can run. */
export async function missingKernelFeatures(probe: KernelProbe): Promise<string[]> {
  const missing: string[] = [];
  if (!(await probe.exists(IPVS_PROC))) {
    const why = await modprobe(probe.run, 'ip_vs');
    if (why !== null || !(await probe.exists(IPVS_PROC))) missing.push(`IPVS (no ${IPVS_PROC}; modprobe ip_vs: ${why ?? 'loaded, still no ' + IPVS_PROC})`);
  }
  if (!(await probe.exists(DUMMY_SYS))) {
    const why = await modprobe(probe.run, 'dummy');
    if (why !== null || !(await probe.exists(DUMMY_SYS))) missing.push(`dummy interfaces for kube-ipvs0 (no ${DUMMY_SYS}; modprobe dummy: ${why ?? 'loaded, still no ' + DUMMY_SYS})`);
  }
  return missing;
}

export class KernelSupportError extends Error {}

export async function requireKernelSupport(probe: KernelProbe): Promise<void> {
  const missing = await missingKernelFeatures(probe);
  if (missing.length > 0) throw new KernelSupportError(`--proxy-mode ipvs: this kernel lacks ${missing.join(' and ')}; load the modules or use --proxy-mode iptables`);
}
