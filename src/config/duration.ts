/** Go duration strings, as kube-proxy's flags and config take them: `30s`, `1m0s`, `500ms`, `0`. */
const UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(s: string): number | null {
  if (s === '0') return 0;
  const re = /([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  return matched === s.length && s.length > 0 ? total : null;
}

/** `digits` scaled down by 10^places, without trailing zeros: (1500, 3) is `1.5`. */
function decimal(digits: bigint, places: number): string {
  const s = digits.toString().padStart(places + 1, '0');
  const frac = s.slice(s.length - places).replace(/0+$/, '');
  return frac ? `${s.slice(0, s.length - places)}.${frac}` : s.slice(0, s.length - places);
}

/**
 * Milliseconds as Go's Duration.String() prints them (`1m30s`, `500ms`, `1h0m0s`), so that a
 * written configuration reads like upstream's and parses back to the same value.
 */
export function formatDuration(ms: number): string {
  const ns = BigInt(Math.round(ms * 1e6));
  if (ns === 0n) return '0s';
  if (ns < 1_000n) return `${ns}ns`;
  if (ns < 1_000_000n) return `${decimal(ns, 3)}µs`;
  if (ns < 1_000_000_000n) return `${decimal(ns, 6)}ms`;
  const hours = ns / 3_600_000_000_000n;
  const minutes = (ns / 60_000_000_000n) % 60n;
  const seconds = decimal(ns % 60_000_000_000n, 9);
  if (hours > 0n) return `${hours}h${minutes}m${seconds}s`;
  if (minutes > 0n) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}
