/**
 * Deleting stale conntrack entries, whatever does it: libnetfilter_conntrack over netlink
 * (native.ts: one dump per family, every deletion matched in JS, each match destroyed) or
 * the `conntrack` command (tool.ts). choose.ts picks one at start-up.
 */
import type { ConntrackDeletion } from './stale.js';

export interface ConntrackCleanup {
  /** Entries deleted. */
  deleted: number;
  /** Deletions that could not be carried out (all or part): to be tried again. */
  failed: ConntrackDeletion[];
  /** Why, one line each. */
  failures: string[];
}

export interface ConntrackCleaner {
  /** What deletes: `netlink` (libnetfilter_conntrack) or `conntrack` (the command). */
  readonly kind: 'netlink' | 'conntrack';
  /** Deletes the entries the deletions name, in this process's network namespace; never rejects. */
  delete(deletions: readonly ConntrackDeletion[]): Promise<ConntrackCleanup>;
}
