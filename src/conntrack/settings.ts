/**
 * The conntrack settings kube-proxy owns, applied once at start-up as upstream does
 * (cmd/kube-proxy/app/conntrack.go): the table size, from --conntrack-max-per-core times
 * the CPUs but at least --conntrack-min, with the hash table grown to a quarter of it; the
 * TCP established and CLOSE_WAIT timeouts; liberal TCP tracking; the UDP timeouts. A 0 (or
 * false) leaves the node's value as it is. Each is read first and written only when it
 * differs (src/exec/sysctl.ts).
 *
 * Unlike upstream, which stops the proxy, a setting the node does not allow is skipped
 * with a warning saying why: in a network namespace other than the host's,
 * nf_conntrack_max is read-only and the hash size cannot be changed at all, while the
 * timeouts are the namespace's own.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { conntrackConfig, type ConntrackConfig, type ProxyConfig } from '../config/options.js';
import { formatDuration } from '../config/duration.js';
import type { Sysctls } from '../exec/sysctl.js';

export const CONNTRACK_MAX = 'net/netfilter/nf_conntrack_max';
export const HASHSIZE = '/sys/module/nf_conntrack/parameters/hashsize';

/** The hash table size (a module parameter under /sys, not a sysctl). */
export interface Hashsize {
  read(): Promise<number>;
  write(value: number): Promise<void>;
}

export const sysHashsize: Hashsize = {
  read: async () => Number.parseInt((await readFile(HASHSIZE, 'utf8')).trim(), 10),
  write: (value) => writeFile(HASHSIZE, `${value}\n`),
};

export interface ConntrackHost {
  sysctl: Sysctls;
  log: Logger;
  /** Default: the CPUs this process may run on. */
  cpus?: number;
  hashsize?: Hashsize;
}

/** nf_conntrack_max for these settings, or 0 to leave it as it is (upstream's getConntrackMax). */
export function conntrackMax(c: ConntrackConfig, cpus: number): number {
  if (c.maxPerCore <= 0) return 0;
  return Math.max(c.maxPerCore * cpus, c.min);
}

/** What each sysctl is set to, in order; seconds for the timeouts. */
export function conntrackSysctls(c: ConntrackConfig): { name: string; value: number; what: string }[] {
  const out: { name: string; value: number; what: string }[] = [];
  const timeout = (name: string, ms: number, what: string) => {
    if (ms > 0) out.push({ name: `net/netfilter/${name}`, value: Math.floor(ms / 1000), what: `${what} ${formatDuration(ms)}` });
  };
  timeout('nf_conntrack_tcp_timeout_established', c.tcpEstablishedTimeoutMs, 'conntrack.tcpEstablishedTimeout');
  timeout('nf_conntrack_tcp_timeout_close_wait', c.tcpCloseWaitTimeoutMs, 'conntrack.tcpCloseWaitTimeout');
  if (c.tcpBeLiberal) out.push({ name: 'net/netfilter/nf_conntrack_tcp_be_liberal', value: 1, what: 'conntrack.tcpBeLiberal' });
  timeout('nf_conntrack_udp_timeout', c.udpTimeoutMs, 'conntrack.udpTimeout');
  timeout('nf_conntrack_udp_timeout_stream', c.udpStreamTimeoutMs, 'conntrack.udpStreamTimeout');
  return out;
}

/** Why a write was refused, in the node's terms. */
function reason(err: unknown, name: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `${name} does not exist (is nf_conntrack loaded?)`;
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return `${name} is read-only here (${code}: a network namespace other than the host's, or a read-only /proc or /sys)`;
  if (code === 'EOPNOTSUPP') return `${name} cannot be changed here (EOPNOTSUPP: only from the host's network namespace)`;
  return `${name}: ${(err as Error).message}`;
}

/** Applies the settings; what the node does not allow is logged and skipped. Never throws. */
export async function applyConntrackSettings(cfg: ProxyConfig, host: ConntrackHost): Promise<void> {
  const c = conntrackConfig(cfg);
  const { sysctl, log } = host;
  const cpus = host.cpus ?? availableParallelism();
  const max = conntrackMax(c, cpus);
  const applied: Record<string, number> = {};
  if (max > 0) {
    try {
      await sysctl.ensure(CONNTRACK_MAX, max);
      applied[CONNTRACK_MAX] = max;
      await growHashsize(max, host.hashsize ?? sysHashsize, log, applied);
    } catch (err) {
      log.warn({ sysctl: CONNTRACK_MAX, value: max, reason: reason(err, CONNTRACK_MAX) }, 'left nf_conntrack_max as it is');
    }
  }
  for (const s of conntrackSysctls(c)) {
    try {
      await sysctl.ensure(s.name, s.value);
      applied[s.name] = s.value;
    } catch (err) {
      log.warn({ sysctl: s.name, value: s.value, setting: s.what, reason: reason(err, s.name) }, `left ${s.name.split('/').pop()} as it is`);
    }
  }
  log.info({ cpus, settings: applied }, 'conntrack settings in place');
}

/** Upstream grows the hash table to max/4 when it is smaller; only the host's network namespace may. */
async function growHashsize(max: number, hashsize: Hashsize, log: Logger, applied: Record<string, number>): Promise<void> {
  const want = Math.floor(max / 4);
  try {
    const now = await hashsize.read();
    if (Number.isInteger(now) && now >= want) return;
    await hashsize.write(want);
    applied[HASHSIZE] = want;
  } catch (err) {
    log.warn({ path: HASHSIZE, value: want, reason: reason(err, HASHSIZE) }, 'left the conntrack hash size as it is');
  }
}
