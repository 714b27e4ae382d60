/**
 * Which local port listens for which service port. A pure function of the listeners
 * wanted, the range, and what the proxier already holds: a listener keeps its port for as
 * long as it exists (the capture rules and open connections point at it), and new ones
 * take the lowest free ports of the range in key order. With nothing held (a dry run),
 * the same model always gets the same ports.
 */

import type { PortRange } from '../../config/portrange.js';

export type { PortRange };

export interface PortAllocation {
  ports: Map<string, number>;
  /** Listeners the range had no room for. */
  unplaced: string[];
}

/**
 * `held`: the ports listeners have now (kept when still wanted); `unusable`: ports the
 * proxier could not bind, skipped.
 */
export function allocatePorts(keys: readonly string[], range: PortRange, held: ReadonlyMap<string, number> = new Map(), unusable: ReadonlySet<number> = new Set()): PortAllocation {
  const ports = new Map<string, number>();
  const taken = new Set<number>();
  const wanted = [...new Set(keys)].sort();
  for (const k of wanted) {
    const p = held.get(k);
    if (p !== undefined && p >= range.first && p <= range.last && !unusable.has(p) && !taken.has(p)) {
      ports.set(k, p);
      taken.add(p);
    }
  }
  const unplaced: string[] = [];
  let next = range.first;
  for (const k of wanted) {
    if (ports.has(k)) continue;
    while (next <= range.last && (taken.has(next) || unusable.has(next))) next++;
    if (next > range.last) {
      unplaced.push(k);
      continue;
    }
    ports.set(k, next);
    taken.add(next++);
  }
  return { ports, unplaced };
}
