/**
 * The max connection age a service port's listener applies: the Service's annotation
 * when it holds a duration (`0` turns rebalancing off for it), else the flag's.
 */
import { formatDuration, parseDuration } from '../../config/duration.js';
import { MAX_CONNECTION_AGE_ANNOTATION } from '../../kube/objects.js';
import type { ServicePort } from '../../model/types.js';

/** Node's timers hold at most this; a longer age would fire at once. */
const MAX_AGE_MS = 2 ** 31 - 1;

export interface ConnectionAge {
  /** 0: never ended for its age. */
  ms: number;
  /** Why the annotation was not used, for the log and the dry run. */
  problem: string | null;
}

export function connectionAge(sp: ServicePort, flagMs: number): ConnectionAge {
  const raw = sp.maxConnectionAge;
  if (raw === null || raw === undefined) return { ms: flagMs, problem: null };
  const ms = parseDuration(raw.trim());
  if (ms !== null && ms <= MAX_AGE_MS) return { ms, problem: null };
  // The value is the Service author's text: shown quoted and cut, never as it is.
  const shown = JSON.stringify(raw.length > 40 ? `${raw.slice(0, 40)}...` : raw);
  return { ms: flagMs, problem: `annotation ${MAX_CONNECTION_AGE_ANNOTATION} ${shown} is not a duration up to 24.8 days; using ${flagMs === 0 ? 'none' : formatDuration(flagMs)}` };
}

export function describeAge(ms: number): string {
  return ms === 0 ? 'connections kept for as long as they last' : `connections ended at a safe point after ${formatDuration(ms)}`;
}
