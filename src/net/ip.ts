/**
 * IP addresses and CIDRs as the proxy reads them from cluster objects and flags.
 *
 * Everything that reaches a rule is re-printed from parsed bytes, never copied from input
 * text, so a value that parses cannot smuggle anything else into a ruleset.
 */

export type IPFamily = 'IPv4' | 'IPv6';

export interface ParsedIP {
  family: IPFamily;
  bytes: Uint8Array;
  /** Canonical text: dotted decimal, or RFC 5952 for IPv6. */
  text: string;
}

export interface ParsedCIDR {
  family: IPFamily;
  network: Uint8Array;
  prefix: number;
  /** Canonical text of the masked network, e.g. `10.0.0.0/8`. */
  text: string;
}

/**
 * Parses IPv4 like Kubernetes' legacy parser: octets with leading zeros are decimal
 * (`010.0.0.1` is 10.0.0.1), never octal. One pass over the characters: the agent parses
 * every endpoint address of the cluster at start-up (100,000 at 10,000 services).
 */
function parseIPv4(s: string): Uint8Array | null {
  const out = new Uint8Array(4);
  let part = 0;
  let digits = 0;
  let v = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++digits > 3) return null;
      v = v * 10 + (c - 48);
    } else if (c === 46 && digits > 0 && part < 3) {
      if (v > 255) return null;
      out[part++] = v;
      digits = 0;
      v = 0;
    } else return null;
  }
  if (part !== 3 || digits === 0 || v > 255) return null;
  out[3] = v;
  return out;
}

function parseIPv6(s: string): Uint8Array | null {
  if (!/^[0-9a-fA-F:]+$/.test(s) || s.length > 39) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  const total = head.length + tail.length;
  if (halves.length === 2 ? total > 7 : total !== 8) return null;
  const all = [...head, ...new Array<number>(8 - total).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

function formatIPv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[2 * i]! << 8) | b[2 * i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

export function formatIP(family: IPFamily, bytes: Uint8Array): string {
  return family === 'IPv4' ? `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}` : formatIPv6(bytes);
}

export function parseIP(input: string): ParsedIP | null {
  if (typeof input !== 'string') return null;
  const s = input;
  if (s.includes(':')) {
    const bytes = parseIPv6(s);
    return bytes ? { family: 'IPv6', bytes, text: formatIPv6(bytes) } : null;
  }
  const bytes = parseIPv4(s);
  return bytes ? { family: 'IPv4', bytes, text: formatIP('IPv4', bytes) } : null;
}

/** Surrounding whitespace is allowed, as in `loadBalancerSourceRanges` lists. */
export function parseCIDR(input: string): ParsedCIDR | null {
  if (typeof input !== 'string') return null;
  const [addr, len, ...rest] = input.trim().split('/');
  if (rest.length > 0 || addr === undefined || len === undefined || !/^[0-9]{1,3}$/.test(len)) {
    return null;
  }
  const ip = parseIP(addr);
  if (!ip) return null;
  const prefix = Number.parseInt(len, 10);
  if (prefix > ip.bytes.length * 8) return null;
  const network = ip.bytes.slice();
  for (let bit = prefix; bit < network.length * 8; bit++) {
    network[bit >> 3]! &= ~(0x80 >> (bit & 7));
  }
  return { family: ip.family, network, prefix, text: `${formatIP(ip.family, network)}/${prefix}` };
}

export function cidrContains(cidr: ParsedCIDR, ip: ParsedIP): boolean {
  if (cidr.family !== ip.family) return false;
  for (let bit = 0; bit < cidr.prefix; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((cidr.network[bit >> 3]! & mask) !== (ip.bytes[bit >> 3]! & mask)) return false;
  }
  return true;
}

/** `IP:PORT`, with brackets for IPv6, as Kubernetes prints an endpoint. */
export function joinHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
