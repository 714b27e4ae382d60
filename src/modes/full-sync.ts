/** When a syncer writes its whole dataplane rather than only what changed: the same for every mode. */

/** A full sync at least this often repairs what no damage check sees. */
export const FULL_SYNC_INTERVAL_MS = 60 * 60 * 1000;

export interface FullSyncState {
  /** A failure, start-up or damage asked for one. */
  required: boolean;
  /** The request says everything may render differently; `why` names what changed. */
  all: { changed: boolean; why: string };
  msSinceLastFull: number;
  intervalMs: number;
}

/** Why this sync must be full, or null when a partial one will do. */
export function fullSyncReason(s: FullSyncState): string | null {
  if (s.required) return 'required';
  if (s.all.changed) return s.all.why;
  return s.msSinceLastFull > s.intervalMs ? 'periodic' : null;
}
