/** `--proxy-port-range` (upstream's flag): the local ports userspace mode's listeners take. */

export interface PortRange {
  first: number;
  last: number;
}

/** `--proxy-port-range`: `FIRST-LAST`, `FIRST+COUNT` or one port; null when malformed. */
export function parsePortRange(text: string): PortRange | null {
  const m = /^(\d{1,5})(?:([-+])(\d{1,5}))?$/.exec(text.trim());
  if (!m) return null;
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : m[2] === '-' ? Number(m[3]) : first + Number(m[3]);
  if (first < 1 || last > 65_535 || last < first) return null;
  return { first, last };
}

export function formatPortRange(r: PortRange): string {
  return r.first === r.last ? `${r.first}` : `${r.first}-${r.last}`;
}
