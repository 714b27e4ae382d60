/**
 * The virtual server diff: from the table the kernel holds and the one wanted, only the
 * `ipvsadm -R` lines for what changed. A real server that goes away is drained first, as
 * upstream's graceful termination does: its weight drops to 0 (no new connections),
 * and it is deleted once it has no connections left, or once the grace period is over.
 * UDP and SCTP real servers go at once: they hold no connection state worth draining
 * (with expire_nodest_conn, their flows move on at the next packet). Pure.
 */
import { cidrContains, parseIP, type ParsedCIDR } from '../../net/ip.js';
import { parseHostPort } from '../../trace/packet.js';
import { connectionKey, realServerLine, serviceLine, vsKey, type ConnectionCounts, type IpvsTable, type RealServer, type VirtualServer } from './table.js';

/** Upstream waits for connections without a limit; a real server stuck with one idle client goes after this. */
export const DEFAULT_GRACE_PERIOD_MS = 15 * 60 * 1000;

export interface PlanInput {
  current: IpvsTable;
  wanted: IpvsTable;
  /** Real servers draining (weight 0, to be deleted), by `connectionKey`, with when draining began (ms). */
  draining: ReadonlyMap<string, number>;
  /** Each real server's connections (`ipvsadm -Ln`), or null when not read. */
  connections: ConnectionCounts | null;
  now: number;
  gracePeriodMs: number;
  /** Virtual servers with addresses in these are not ours (`--ipvs-exclude-cidrs`): never deleted. */
  excludeCIDRs: readonly ParsedCIDR[];
}

export interface IpvsPlan {
  /** `ipvsadm -R` input: -A/-E/-D for virtual servers, -a/-e/-d for real servers. */
  lines: string[];
  /** Draining real servers after this plan is applied. */
  draining: Map<string, number>;
  /** The kernel's table once the lines ran: the wanted one, draining real servers at weight 0, virtual servers left alone. */
  after: IpvsTable;
  /** Some real server's fate waits on its connections, which the input did not have. */
  needsConnections: boolean;
}

export function deleteServiceLine(vs: VirtualServer): string {
  return `-D ${vsKey(vs)}`;
}

export function deleteRealServerLine(vs: VirtualServer, address: string): string {
  return `-d ${vsKey(vs)} -r ${address}`;
}

function excluded(vs: VirtualServer, cidrs: readonly ParsedCIDR[]): boolean {
  if (cidrs.length === 0) return false;
  const ip = parseIP(parseHostPort(vs.address)?.ip ?? '');
  return ip !== null && cidrs.some((c) => cidrContains(c, ip));
}

export function planIpvs(input: PlanInput): IpvsPlan {
  const { current, wanted, now } = input;
  const lines: string[] = [];
  const draining = new Map<string, number>();
  let needsConnections = false;

  const after: IpvsTable = new Map();

  /** A real server that is no longer wanted: drained, then deleted. True while it stays. */
  const retire = (vs: VirtualServer, address: string, weight: number): boolean => {
    const key = connectionKey(vsKey(vs), address);
    if (vs.protocol !== 'tcp') {
      lines.push(deleteRealServerLine(vs, address));
      return false;
    }
    const since = input.draining.get(key) ?? now;
    const conns = input.connections?.get(key);
    const idle = conns !== undefined && conns.active + conns.inactive === 0;
    if (idle || now - since >= input.gracePeriodMs) {
      lines.push(deleteRealServerLine(vs, address));
      return false;
    }
    if (!input.connections) needsConnections = true;
    if (weight !== 0) lines.push(realServerLine('-e', vs, { address, weight: 0 }));
    draining.set(key, since);
    return true;
  };

  for (const [key, want] of wanted) {
    const cur = current.get(key);
    after.set(key, want);
    // The renderer hands back the very objects it rendered before for what did not change.
    if (cur === want) continue;
    if (!cur) {
      lines.push(serviceLine('-A', want));
      for (const rs of want.realServers) lines.push(realServerLine('-a', want, rs));
      continue;
    }
    if (cur.scheduler !== want.scheduler || cur.persistence !== want.persistence) lines.push(serviceLine('-E', want));
    const had = new Map(cur.realServers.map((rs) => [rs.address, rs.weight]));
    for (const rs of want.realServers) {
      const weight = had.get(rs.address);
      if (weight === undefined) lines.push(realServerLine('-a', want, rs));
      else if (weight !== rs.weight) lines.push(realServerLine('-e', want, rs));
      had.delete(rs.address);
    }
    const staying: RealServer[] = [];
    for (const [address, weight] of had) if (retire(cur, address, weight)) staying.push({ address, weight: 0 });
    if (staying.length > 0) after.set(key, { ...want, realServers: [...want.realServers, ...staying] });
  }
  for (const [key, cur] of current) {
    if (wanted.has(key)) continue;
    if (excluded(cur, input.excludeCIDRs)) after.set(key, cur);
    else lines.push(deleteServiceLine(cur));
  }
  return { lines, draining, needsConnections, after };
}
