/**
 * The IPVS virtual server table as data, and as the text `ipvsadm -Sn` prints and
 * `ipvsadm -R` reads: `-A -t VIP:PORT -s rr [-p SECONDS]` per virtual server, then
 * `-a -t VIP:PORT -r RS:PORT -m -w WEIGHT` per real server (masquerading, as upstream).
 */
import type { IpvsScheduler } from '../../config/options.js';
import { parseHostPort } from '../../trace/packet.js';
import type { TraceProtocol } from '../../trace/types.js';

export interface RealServer {
  /** `IP:PORT`, `[IPv6]:PORT`. */
  address: string;
  weight: number;
}

export interface VirtualServer {
  protocol: TraceProtocol;
  /** `IP:PORT`, `[IPv6]:PORT`. */
  address: string;
  scheduler: IpvsScheduler | string;
  /** ClientIP affinity: the persistence timeout in seconds; null without. */
  persistence: number | null;
  /** Sorted by address. */
  realServers: RealServer[];
}

/** Virtual servers by `key()`. */
export type IpvsTable = Map<string, VirtualServer>;

const PROTOCOL_FLAG: Record<TraceProtocol, string> = { tcp: '-t', udp: '-u', sctp: '--sctp-service' };

/** `-t 10.96.0.1:443`: how ipvsadm names a virtual server, and the table's key. */
export function vsKey(vs: Pick<VirtualServer, 'protocol' | 'address'>): string {
  return `${PROTOCOL_FLAG[vs.protocol]} ${vs.address}`;
}

export function serviceLine(op: '-A' | '-E', vs: VirtualServer): string {
  return `${op} ${vsKey(vs)} -s ${vs.scheduler}${vs.persistence === null ? '' : ` -p ${vs.persistence}`}`;
}

export function realServerLine(op: '-a' | '-e', vs: VirtualServer, rs: RealServer): string {
  return `${op} ${vsKey(vs)} -r ${rs.address} -m -w ${rs.weight}`;
}

/** The table as `ipvsadm -R` reads it into an empty table (and as `ipvsadm -Sn` prints it). */
export function restoreLines(table: Iterable<VirtualServer>): string[] {
  const out: string[] = [];
  for (const vs of table) {
    out.push(serviceLine('-A', vs));
    for (const rs of vs.realServers) out.push(realServerLine('-a', vs, rs));
  }
  return out;
}

export class TableSyntaxError extends Error {}

const FLAG_PROTOCOL: Record<string, TraceProtocol> = { '-t': 'tcp', '--tcp-service': 'tcp', '-u': 'udp', '--udp-service': 'udp', '--sctp-service': 'sctp' };

function address(text: string | undefined, line: string): string {
  const hp = text ? parseHostPort(text) : null;
  if (!hp || hp.port === null) throw new TableSyntaxError(`not IP:PORT in ${JSON.stringify(line)}`);
  return text!;
}

/**
 * `ipvsadm -Sn` output into a table. Firewall-mark services (`-f`) are not ours and are
 * left out; anything else unexpected is an error rather than a guess.
 */
export function parseIpvsadmSave(text: string): IpvsTable {
  const table: IpvsTable = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const words = line.split(/\s+/);
    const [op, flag] = words;
    if (flag === '-f' || flag === '--fwmark-service') continue;
    const protocol = FLAG_PROTOCOL[flag ?? ''];
    if ((op !== '-A' && op !== '-a') || !protocol) throw new TableSyntaxError(`unexpected line ${JSON.stringify(line)}`);
    const key = `${PROTOCOL_FLAG[protocol]} ${address(words[2], line)}`;
    const opts = new Map<string, string | null>();
    for (let i = 3; i < words.length; i++) {
      const w = words[i]!;
      const next = words[i + 1];
      if (next !== undefined && !next.startsWith('-')) {
        opts.set(w, next);
        i++;
      } else opts.set(w, null);
    }
    if (op === '-A') {
      const p = opts.get('-p');
      table.set(key, {
        protocol,
        address: words[2]!,
        scheduler: opts.get('-s') ?? 'wlc',
        // `-p` alone is persistence with ipvsadm's default timeout, 300 s.
        persistence: opts.has('-p') ? (p ? Number(p) : 300) : null,
        realServers: [],
      });
    } else {
      const vs = table.get(key);
      if (!vs) throw new TableSyntaxError(`real server before its virtual server: ${JSON.stringify(line)}`);
      vs.realServers.push({ address: address(opts.get('-r') ?? undefined, line), weight: Number(opts.get('-w') ?? 1) });
    }
  }
  for (const vs of table.values()) vs.realServers.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  return table;
}

/** Active and inactive connections of one real server of one virtual server. */
export interface Connections {
  active: number;
  inactive: number;
}

/** Connection counts by `connectionKey`. */
export type ConnectionCounts = Map<string, Connections>;

export function connectionKey(vsKeyText: string, rsAddress: string): string {
  return `${vsKeyText} -r ${rsAddress}`;
}

const LIST_PROTOCOL: Record<string, TraceProtocol> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

/**
 * `ipvsadm -Ln` (numeric) output: each real server's ActiveConn and InActConn, which
 * decide when a draining real server can go.
 *
 *     TCP  10.96.0.1:443 rr
 *       -> 10.244.1.5:6443            Masq    0      3          1
 */
export function parseIpvsadmList(text: string): ConnectionCounts {
  const out: ConnectionCounts = new Map();
  let current: string | null = null;
  for (const raw of text.split('\n')) {
    const words = raw.trim().split(/\s+/);
    const protocol = LIST_PROTOCOL[words[0] ?? ''];
    if (protocol && words[1]) {
      current = vsKey({ protocol, address: words[1] });
      continue;
    }
    if (words[0] === '->' && current && words.length >= 6 && /^\d+$/.test(words[4]!) && /^\d+$/.test(words[5]!)) {
      out.set(connectionKey(current, words[1]!), { active: Number(words[4]), inactive: Number(words[5]) });
    }
  }
  return out;
}
