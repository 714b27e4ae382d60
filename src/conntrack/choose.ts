/**
 * Which cleaner deletes stale conntrack entries, chosen once at start-up: the netlink one
 * (in a worker thread) when libnetfilter_conntrack loads there, else the `conntrack`
 * command, with one warning saying why.
 */
import type { Logger } from 'pino';
import type { Runner } from '../exec/command.js';
import type { ConntrackCleaner } from './cleaner.js';
import { NetlinkCleaner } from './native.js';
import { loadNetfilterConntrack, LIBRARY } from '../../native/netfilter-conntrack.js';
import { ThreadedCleaner } from './thread.js';
import { CommandCleaner } from './tool.js';

export interface CleanerOptions {
  /** The library to load (a soname or a path); default libnetfilter_conntrack.so.3. */
  library?: string;
  /**
   * Whether the netlink cleaner runs in a worker thread (default), or on the caller's
   * (tests that run from the TypeScript sources, where there is no worker script).
   */
  worker?: boolean;
}

/** The netlink cleaner when libnetfilter_conntrack loads, else the command one (with one warning). */
export async function chooseConntrackCleaner(run: Runner, log: Logger, opts: CleanerOptions = {}): Promise<ConntrackCleaner> {
  const library = opts.library ?? LIBRARY;
  try {
    const cleaner = opts.worker === false ? new NetlinkCleaner(await loadNetfilterConntrack(library)) : await ThreadedCleaner.start(library);
    log.info({ library }, 'deleting stale conntrack entries through libnetfilter_conntrack');
    return cleaner;
  } catch (err) {
    log.warn({ library, err: (err as Error).message }, 'libnetfilter_conntrack did not load; deleting stale conntrack entries with the conntrack command instead');
    return new CommandCleaner(run);
  }
}
