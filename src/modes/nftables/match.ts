/**
 * Whether a rule's matches and lookups hold for a packet. A traced packet opens a new
 * connection: conntrack sees it as new (and dnat once rewritten), and no earlier
 * connection of its client is known, so a session-affinity set never holds it yet.
 */
import { cidrContains, parseCIDR, parseIP, type ParsedIP } from '../../net/ip.js';
import type { PacketFields } from '../../trace/walk.js';
import { parseNumber, type Element, type Expr, type Selector, type SetRef } from './expr.js';
import { findElement, type TraceSet } from './tables.js';

export interface PacketState extends PacketFields {
  /** The number `numgen random` gave in this branch of the walk. */
  numgen: number | null;
}

export interface MatchContext {
  isLocal(ip: ParsedIP): boolean;
  set(name: string): TraceSet | undefined;
}

type Value = { kind: 'ip'; ip: ParsedIP } | { kind: 'number'; n: number } | { kind: 'word'; w: string };

const PROTOCOL_NUMBERS: Record<string, string> = { '6': 'tcp', '17': 'udp', '132': 'sctp' };
const hex = (n: number) => `0x${n.toString(16)}`;

function show(v: Value): string {
  return v.kind === 'ip' ? v.ip.text : v.kind === 'number' ? String(v.n) : v.w;
}

export const showKey = (vs: Value[]): string => vs.map(show).join(' . ');

/** What a selector reads from the packet; null when the packet has no such field (a port of another protocol). */
function read(s: Selector, p: PacketState, ctx: MatchContext): Value | null {
  switch (s.kind) {
    case 'addr':
      return { kind: 'ip', ip: s.field === 'saddr' ? p.src : p.dst };
    case 'l4proto':
      return { kind: 'word', w: p.protocol };
    case 'dport':
      return s.protocol !== null && s.protocol !== p.protocol ? null : { kind: 'number', n: p.dport };
    case 'mark':
      return { kind: 'number', n: p.mark };
    case 'fib':
      return { kind: 'word', w: ctx.isLocal(s.field === 'saddr' ? p.src : p.dst) ? 'local' : 'unicast' };
    case 'ct-state':
      return { kind: 'word', w: 'new' };
    case 'ct-status':
      return { kind: 'word', w: p.dnat ? 'dnat' : 'none' };
    case 'numgen':
      return p.numgen === null ? null : { kind: 'number', n: p.numgen + s.offset };
  }
}

export function readKey(key: Selector[], p: PacketState, ctx: MatchContext): Value[] | null {
  const out: Value[] = [];
  for (const s of key) {
    const v = read(s, p, ctx);
    if (v === null) return null;
    out.push(v);
  }
  return out;
}

function inRange(text: string, n: number): boolean {
  const [lo, hi] = text.split('-');
  const a = parseNumber(lo);
  const b = hi === undefined ? a : parseNumber(hi);
  return a !== null && b !== null && n >= a && n <= b;
}

function addressIn(text: string, ip: ParsedIP): boolean {
  if (text.includes('/')) {
    const c = parseCIDR(text);
    return c !== null && cidrContains(c, ip);
  }
  const dash = text.indexOf('-');
  if (dash > 0) {
    const [lo, hi] = [parseIP(text.slice(0, dash)), parseIP(text.slice(dash + 1))];
    if (!lo || !hi || lo.family !== ip.family) return false;
    return compareBytes(lo.bytes, ip.bytes) <= 0 && compareBytes(ip.bytes, hi.bytes) <= 0;
  }
  return parseIP(text)?.text === ip.text;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const i = a.findIndex((x, k) => x !== b[k]);
  return i < 0 ? 0 : a[i]! - b[i]!;
}

/** One token of an element or a literal against one value of the key. */
function partHolds(text: string, v: Value, mask: number | null): boolean {
  switch (v.kind) {
    case 'ip':
      return addressIn(text, v.ip);
    case 'number':
      return mask === null ? inRange(text, v.n) : parseNumber(text) === ((v.n & mask) >>> 0);
    case 'word':
      return text.split(',').some((w) => (PROTOCOL_NUMBERS[w] ?? w) === v.w);
  }
}

function elementHolds(e: { key: readonly string[] }, vs: Value[], mask: number | null = null): boolean {
  return e.key.length === vs.length && e.key.every((t, i) => partHolds(t, vs[i]!, mask));
}

type Lookup =
  | { found: Element; set: string | null }
  | { found: null; set: string | null; dynamic: boolean }
  | { missing: string };

export function lookup(ref: SetRef, vs: Value[], ctx: MatchContext, mask: number | null = null): Lookup {
  if (ref.kind === 'anonymous') {
    return { found: ref.elements.find((e) => elementHolds(e, vs, mask)) ?? null, set: null, dynamic: false };
  }
  const s = ctx.set(ref.name);
  if (!s) return { missing: `set @${ref.name} is not in the ruleset` };
  const found = findElement(s, mask === null ? vs.map(show) : null, (key) => elementHolds({ key }, vs, mask));
  return found ? { found, set: ref.name } : { found: null, set: ref.name, dynamic: s.dynamic };
}

type ExprMatch =
  | { ok: true; note?: string }
  /** `hidden`: it failed on destination, port or protocol, so the rule is about other traffic. */
  | { ok: false; hidden: boolean; why: string }
  | { ok: null; why: string };

const ABOUT_DESTINATION = new Set(['addr:daddr', 'l4proto', 'dport']);
const aboutDestination = (key: Selector[]) => key.some((s) => ABOUT_DESTINATION.has(s.kind === 'addr' ? `addr:${s.field}` : s.kind));

function describeSelector(s: Selector): string {
  switch (s.kind) {
    case 'addr':
      return s.field === 'saddr' ? 'source' : 'destination';
    case 'l4proto':
      return 'protocol';
    case 'dport':
      return 'destination port';
    case 'mark':
      return 'packet mark';
    case 'fib':
      return `${s.field === 'saddr' ? 'source' : 'destination'} address type`;
    case 'ct-state':
      return 'connection state';
    case 'ct-status':
      return 'connection status';
    case 'numgen':
      return 'numgen';
  }
}

export const keyName = (key: Selector[]): string => key.map(describeSelector).join(' . ');

/** A `match` expression; lookups of a missing element explain themselves. */
export function matchExpr(e: Extract<Expr, { kind: 'match' }>, p: PacketState, ctx: MatchContext): ExprMatch {
  const vs = readKey(e.key, p, ctx);
  const hidden = aboutDestination(e.key);
  if (vs === null) return { ok: false, hidden, why: `the packet is ${p.protocol}` };
  const shown = e.key.length === 1 && e.key[0]!.kind === 'mark' ? hex(vs[0]!.kind === 'number' ? vs[0]!.n : 0) : showKey(vs);
  const what = `${keyName(e.key)} is ${shown}`;
  if (Array.isArray(e.value)) {
    const holds = elementHolds({ key: e.value }, vs, e.mask);
    return holds !== e.negate ? { ok: true } : { ok: false, hidden, why: what };
  }
  const r = lookup(e.value, vs, ctx, e.mask);
  if ('missing' in r) return { ok: null, why: r.missing };
  const holds = r.found !== null;
  if (holds !== e.negate) return { ok: true };
  if (!holds && 'dynamic' in r && r.dynamic && !e.negate) {
    return { ok: false, hidden: false, why: `no earlier connection of ${p.src.text} is recorded in @${r.set}; affinity pins its next connections` };
  }
  const where = r.set === null ? 'the rule\'s set' : `@${r.set}`;
  return { ok: false, hidden, why: `${what}, ${holds ? '' : 'not '}in ${where}` };
}
