/**
 * Stale conntrack entries deleted over netlink, through libnetfilter_conntrack: per
 * family, one dump of the table (the kernel sends only that family), every deletion
 * matched against each entry in JS, and each matching entry destroyed by its tuple on a
 * second handle once the dump is over. What the deletions name is never flushed whole:
 * only entries that matched are destroyed.
 *
 * Memory: the library allocates each dumped entry and frees it after the callback, except
 * the matching ones, which the callback keeps (NFCT_CB_STOLEN) until they are destroyed
 * and freed here, on every path but a worker stopped mid-call (see thread.ts). The
 * callback itself is registered for one dump only.
 */
import { constants } from 'node:os';
import type { IPFamily } from '../model/types.js';
import type { ConntrackCleaner, ConntrackCleanup } from './cleaner.js';
import { byFamily, DeletionIndex, ipv4Raw } from './match.js';
import {
  ADDR_GRP_SIZE,
  AF_INET,
  AF_INET6,
  ATTR_GRP_ORIG_ADDR_DST,
  ATTR_GRP_REPL_ADDR_SRC,
  ATTR_ORIG_L3PROTO,
  ATTR_ORIG_IPV4_DST,
  ATTR_ORIG_L4PROTO,
  ATTR_ORIG_PORT_DST,
  ATTR_REPL_IPV4_SRC,
  NFCT_CB_CONTINUE,
  NFCT_CB_STOLEN,
  NFCT_CB_STOP,
  type NetfilterConntrack,
  type Pointer,
} from '../../native/netfilter-conntrack.js';
import type { ConntrackDeletion } from './stale.js';

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));
const errnoName = (n: number) => ERRNO_NAMES.get(n) ?? `errno ${n}`;

/** What one family's pass saw, for tests and the bench. */
export interface PassFigures {
  family: IPFamily;
  /** Entries the dump returned. */
  entries: number;
  /** Entries that matched a deletion. */
  matched: number;
  deleted: number;
}

export class NetlinkCleaner implements ConntrackCleaner {
  readonly kind = 'netlink';
  /** Figures of the last delete(), one per family. */
  last: PassFigures[] = [];

  constructor(private readonly nf: NetfilterConntrack) {}

  async delete(deletions: readonly ConntrackDeletion[]): Promise<ConntrackCleanup> {
    const out: ConntrackCleanup = { deleted: 0, failed: [], failures: [] };
    this.last = [];
    for (const [family, list] of byFamily(deletions)) {
      let r: ConntrackCleanup;
      try {
        r = this.deleteFamily(family, list);
      } catch (err) {
        r = { deleted: 0, failed: list, failures: [`conntrack (netlink, ${family}): ${(err as Error).message}`] };
      }
      out.deleted += r.deleted;
      out.failed.push(...r.failed);
      out.failures.push(...r.failures);
    }
    return out;
  }

  private deleteFamily(family: IPFamily, deletions: ConntrackDeletion[]): ConntrackCleanup {
    const nf = this.nf;
    const v4 = family === 'IPv4';
    // IPv4 addresses as the numbers the library's u32 getters return; IPv6 as hex of their bytes.
    const index = v4 ? new DeletionIndex<number | string>(family, deletions, ipv4Raw) : new DeletionIndex<number | string>(family, deletions);
    const failures: string[] = index.invalid.map((i) => `conntrack (netlink): not an address in ${JSON.stringify(deletions[i])}`);
    const failed = new Set<number>();
    const figures: PassFigures = { family, entries: 0, matched: 0, deleted: 0 };
    this.last.push(figures);
    const af = v4 ? AF_INET : AF_INET6;
    const fail = (why: string, which: Iterable<number>) => {
      failures.push(`conntrack (netlink, ${family}): ${why}`);
      for (const i of which) failed.add(i);
    };
    const everything = deletions.map((_, i) => i);
    const buf = Buffer.alloc(ADDR_GRP_SIZE);
    const address = (ct: Pointer, attr: number, group: number): number | string | null => {
      if (v4) return nf.getU32(ct, attr);
      return nf.getGroup(ct, group, buf) < 0 ? null : buf.toString('hex', 0, 16);
    };

    const dumpHandle = nf.open();
    if (dumpHandle === null) {
      fail(`nfct_open: ${errnoName(nf.errno())}`, everything);
      return { deleted: 0, failed: deletions, failures };
    }
    const kept: { ct: Pointer; matched: number[] }[] = [];
    try {
      let thrown: Error | null = null;
      const rc = nf.dump(dumpHandle, af, (ct) => {
        try {
          figures.entries++;
          // Cheapest first, one call each: most entries are to a port no deletion names, or
          // (TCP, another address) fall out at the next test.
          const raw = nf.getU16(ct, ATTR_ORIG_PORT_DST);
          const port = ((raw & 0xff) << 8) | (raw >> 8);
          if (!index.wantsPort(port)) return NFCT_CB_CONTINUE;
          const proto = nf.getU8(ct, ATTR_ORIG_L4PROTO);
          const forPort = index.forPort(proto, port);
          if (!forPort) return NFCT_CB_CONTINUE;
          const origDst = address(ct, ATTR_ORIG_IPV4_DST, ATTR_GRP_ORIG_ADDR_DST);
          if (origDst === null || !DeletionIndex.wantsDst(forPort, origDst)) return NFCT_CB_CONTINUE;
          // The kernel dumps the family asked for; checked anyway before an address is trusted.
          if (nf.getU8(ct, ATTR_ORIG_L3PROTO) !== af) return NFCT_CB_CONTINUE;
          const replySrc = address(ct, ATTR_REPL_IPV4_SRC, ATTR_GRP_REPL_ADDR_SRC);
          if (replySrc === null) return NFCT_CB_CONTINUE;
          const matched = index.match({ protocol: proto, origDst, origPortDst: port, replySrc });
          if (matched.length === 0) return NFCT_CB_CONTINUE;
          kept.push({ ct, matched });
          return NFCT_CB_STOLEN;
        } catch (err) {
          // Never let an exception unwind through C: stop the dump and say why.
          thrown = err as Error;
          return NFCT_CB_STOP;
        }
      });
      figures.matched = kept.length;
      if (thrown !== null) fail(`reading the dump: ${(thrown as Error).message}`, everything);
      // A dump cut short may have missed matches: every deletion is tried again next time.
      else if (rc !== 0) fail(`dump: ${errnoName(nf.errno())}`, everything);
      if (kept.length > 0) {
        const destroyHandle = nf.open();
        if (destroyHandle === null) {
          fail(`nfct_open: ${errnoName(nf.errno())}`, everything);
        } else {
          try {
            const errors = new Map<string, number>();
            for (const { ct, matched } of kept) {
              if (nf.destroyEntry(destroyHandle, ct) === 0) {
                figures.deleted++;
                continue;
              }
              const errno = nf.errno();
              // Gone meanwhile (its timeout, or someone else): what we wanted.
              if (errno === constants.errno.ENOENT) continue;
              errors.set(errnoName(errno), (errors.get(errnoName(errno)) ?? 0) + 1);
              for (const i of matched) failed.add(i);
            }
            for (const [name, n] of errors) failures.push(`conntrack (netlink, ${family}): ${n} entr${n === 1 ? 'y' : 'ies'} not destroyed: ${name}`);
          } finally {
            nf.close(destroyHandle);
          }
        }
      }
    } finally {
      for (const { ct } of kept) nf.free(ct);
      nf.close(dumpHandle);
    }
    return { deleted: figures.deleted, failed: deletions.filter((_, i) => failed.has(i)), failures };
  }
}
