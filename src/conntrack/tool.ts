/**
 * Deletes stale conntrack entries with the `conntrack` command (argument arrays only): the
 * fallback when libnetfilter_conntrack does not load. One `conntrack -D` per deletion,
 * filtered as the netlink cleaner matches: protocol, original destination address and
 * port (or the node port alone), reply source. A `keep` deletion (every entry but those to
 * the current endpoints) cannot be one filter: the family's table is listed once
 * (`conntrack -L`), matched in JS, and each stale reply source deleted by its own filter.
 */
import type { Runner } from '../exec/command.js';
import type { IPFamily } from '../model/types.js';
import type { ConntrackCleaner, ConntrackCleanup } from './cleaner.js';
import { addressKey, byFamily, DeletionIndex, PROTOCOL_NUMBER, type FlowEntry } from './match.js';
import type { ConntrackDeletion, ConntrackProtocol } from './stale.js';

const FAMILY_ARG: Record<IPFamily, string> = { IPv4: 'ipv4', IPv6: 'ipv6' };

/** `conntrack -D` for a deletion, limited to entries whose reply source is `replySrc` (default: its `dnatTo`). */
export function conntrackArgs(d: ConntrackDeletion, replySrc: string | null = d.dnatTo): string[] {
  const args = ['-D', '-f', FAMILY_ARG[d.family], '-p', d.protocol.toLowerCase()];
  if (d.origDst !== undefined) args.push('--orig-dst', d.origDst);
  args.push('--orig-port-dst', String(d.origPortDst));
  if (replySrc !== null) args.push('--reply-src', replySrc);
  return args;
}

/** `conntrack -L` of one family and protocol. */
export function listArgs(family: IPFamily, protocol: ConntrackProtocol): string[] {
  return ['-L', '-f', FAMILY_ARG[family], '-p', protocol.toLowerCase()];
}

/**
 * One line of `conntrack -L`, as its entry: `udp 17 29 src=A dst=B sport=P dport=Q
 * [UNREPLIED] src=C dst=D sport=R dport=S mark=0 use=1` (the first src/dst/ports are the
 * original direction, the second the reply). Null for what is not an entry.
 */
export function parseListLine(line: string): (FlowEntry<string> & { replySrcText: string }) | null {
  const words = line.trim().split(/\s+/);
  const protocol = Number(words[1]);
  if (!Number.isInteger(protocol)) return null;
  const values = (name: string) => words.filter((w) => w.startsWith(`${name}=`)).map((w) => w.slice(name.length + 1));
  const [origDst] = values('dst');
  const [origPortDst] = values('dport');
  const [, replySrc] = values('src');
  if (origDst === undefined || origPortDst === undefined || replySrc === undefined) return null;
  const dst = addressKey(origDst);
  const src = addressKey(replySrc);
  if (dst === null || src === null) return null;
  return { protocol, origDst: dst, origPortDst: Number(origPortDst), replySrc: src, replySrcText: replySrc };
}

/** "N flow entries have been deleted." */
function deletedCount(stderr: string): number {
  const m = /(\d+) flow entries have been deleted/.exec(stderr);
  return m ? Number(m[1]) : 0;
}

export class CommandCleaner implements ConntrackCleaner {
  readonly kind = 'conntrack';

  constructor(private readonly run: Runner) {}

  async delete(deletions: readonly ConntrackDeletion[]): Promise<ConntrackCleanup> {
    const out: ConntrackCleanup = { deleted: 0, failed: [], failures: [] };
    const fail = (d: ConntrackDeletion, why: string) => {
      if (!out.failed.includes(d)) out.failed.push(d);
      out.failures.push(why);
    };
    /** Runs one `conntrack -D`; "0 flow entries" (exit 1) is success. */
    const remove = async (d: ConntrackDeletion, replySrc: string | null) => {
      const args = conntrackArgs(d, replySrc);
      const r = await this.run('conntrack', args).catch((err: Error) => ({ status: -1, stdout: '', stderr: err.message }));
      if (r.status !== 0 && !/ 0 flow entries/.test(r.stderr)) fail(d, `conntrack ${args.join(' ')}: ${r.stderr.trim()}`);
      else out.deleted += deletedCount(r.stderr);
    };

    const listed: ConntrackDeletion[] = [];
    for (const d of deletions) {
      // An endpoint's entries, or a service port with no endpoint to keep: one filter says it.
      if (d.dnatTo !== null || (d.keep ?? []).length === 0) await remove(d, d.dnatTo);
      else listed.push(d);
    }
    for (const [family, list] of byFamily(listed)) {
      const index = new DeletionIndex(family, list);
      for (const i of index.invalid) fail(list[i]!, `conntrack: not an address in ${JSON.stringify(list[i])}`);
      for (const protocol of new Set(list.map((d) => d.protocol))) {
        const args = listArgs(family, protocol);
        const r = await this.run('conntrack', args).catch((err: Error) => ({ status: -1, stdout: '', stderr: err.message }));
        const forProtocol = list.filter((d) => d.protocol === protocol);
        if (r.status !== 0) {
          for (const d of forProtocol) fail(d, `conntrack ${args.join(' ')}: ${r.stderr.trim()}`);
          continue;
        }
        // Each (deletion, reply source) once: one filter deletes every entry it names.
        const stale = new Map<ConntrackDeletion, Set<string>>();
        for (const line of r.stdout.split('\n')) {
          const e = parseListLine(line);
          if (e === null || e.protocol !== PROTOCOL_NUMBER[protocol]) continue;
          for (const i of index.match(e)) {
            const d = list[i]!;
            let srcs = stale.get(d);
            if (!srcs) stale.set(d, (srcs = new Set()));
            srcs.add(e.replySrcText);
          }
        }
        for (const [d, srcs] of stale) for (const src of srcs) await remove(d, src);
      }
    }
    return out;
  }
}
