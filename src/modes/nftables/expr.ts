/**
 * One nftables rule, from its text to the expressions and statements the trace evaluates.
 * Only the grammar our renderer writes is understood (payload and meta matches, fib, ct,
 * numgen, set and map lookups, verdicts, NAT and mark statements); anything else is kept
 * as `unsupported`, so the evaluator says what it could not evaluate instead of guessing.
 */
import { TraceError } from '../../trace/types.js';

/** What a part of a lookup key or a match reads from the packet. */
export type Selector =
  | { kind: 'addr'; field: 'saddr' | 'daddr' }
  | { kind: 'l4proto' }
  /** `th dport`; `tcp dport` also requires its protocol. */
  | { kind: 'dport'; protocol: string | null }
  | { kind: 'mark' }
  | { kind: 'fib'; field: 'saddr' | 'daddr' }
  | { kind: 'ct-state' }
  | { kind: 'ct-status' }
  | { kind: 'numgen'; mod: number; offset: number };

/** A set or map element: one token (`10.0.0.0/8`, `80-90`, `tcp`) per key part. */
export interface Element {
  key: string[];
  /** A map element's value: a verdict, or data tokens (`10.1.0.5 . 8080`). */
  value: Verdict | string[] | null;
  comment: string | null;
}

/** A named set or map (`@name`), or one written inline. */
export type SetRef = { kind: 'named'; name: string } | { kind: 'anonymous'; elements: Element[] };

export type Verdict =
  | { kind: 'accept' | 'drop' | 'reject' | 'return' | 'continue' }
  | { kind: 'jump' | 'goto'; chain: string };

export type Expr =
  /** `KEY [and MASK] [==|!=] VALUE`, or a set lookup `KEY [!=] @set` / `KEY { ... }`. */
  | { kind: 'match'; key: Selector[]; mask: number | null; negate: boolean; value: SetRef | string[] }
  /** `KEY vmap @map`: the element's verdict applies; no element, the rule does not match. */
  | { kind: 'vmap'; key: Selector[]; map: SetRef }
  | { kind: 'verdict'; verdict: Verdict }
  /** `dnat to ADDR[:PORT]`, or `dnat to KEY map @map` whose data is `ADDR . PORT`. */
  | { kind: 'dnat'; to: { kind: 'literal'; text: string } | { kind: 'map'; key: Selector[]; map: SetRef } }
  | { kind: 'masquerade' }
  | { kind: 'mark-set'; op: 'or' | 'xor' | 'and' | 'set'; value: number }
  /** `update @set { KEY }` / `add @set { KEY }`: records the packet in a dynamic set. */
  | { kind: 'set-update'; set: string; key: Selector[] }
  | { kind: 'unsupported'; text: string };

export interface ParsedRule {
  exprs: Expr[];
  comment: string | null;
}

export class RuleSyntaxError extends TraceError {}

const PUNCT = new Set(['{', '}', ',', ';']);

/** Splits nft text into tokens: words, quoted strings (kept with their quotes), braces, commas. */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === ' ' || c === '\t' || c === '\n') {
      i++;
    } else if (PUNCT.has(c)) {
      out.push(c);
      i++;
    } else if (c === '"') {
      const end = text.indexOf('"', i + 1);
      if (end < 0) throw new RuleSyntaxError('unterminated quote');
      out.push(text.slice(i, end + 1));
      i = end + 1;
    } else {
      let j = i;
      while (j < text.length && !' \t\n"'.includes(text[j]!) && !PUNCT.has(text[j]!)) j++;
      out.push(text.slice(i, j));
      i = j;
    }
  }
  return out;
}

const unquote = (t: string): string => (t.startsWith('"') ? t.slice(1, -1) : t);

export function parseNumber(t: string | undefined): number | null {
  if (t === undefined || !/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(t)) return null;
  return Number(t);
}

/** A cursor over a rule's tokens. */
class Tokens {
  i = 0;
  constructor(readonly t: string[]) {}
  peek(n = 0): string | undefined {
    return this.t[this.i + n];
  }
  next(): string {
    const t = this.t[this.i++];
    if (t === undefined) throw new RuleSyntaxError('unexpected end of rule');
    return t;
  }
  eat(...words: string[]): boolean {
    if (!words.every((w, k) => this.peek(k) === w)) return false;
    this.i += words.length;
    return true;
  }
  expect(word: string): void {
    if (!this.eat(word)) throw new RuleSyntaxError(`expected ${word}, found ${this.peek() ?? 'the end of the rule'}`);
  }
  get done(): boolean {
    return this.i >= this.t.length;
  }
}

const PORT_PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);

/** One selector at the cursor, or null when the tokens there are not one. */
function selector(ts: Tokens): Selector | null {
  const [a, b] = [ts.peek(), ts.peek(1)];
  if ((a === 'ip' || a === 'ip6') && (b === 'saddr' || b === 'daddr')) {
    ts.i += 2;
    return { kind: 'addr', field: b };
  }
  if (ts.eat('ip', 'protocol') || ts.eat('ip6', 'nexthdr') || ts.eat('meta', 'l4proto')) return { kind: 'l4proto' };
  if (b === 'dport' && (a === 'th' || PORT_PROTOCOLS.has(a ?? ''))) {
    ts.i += 2;
    return { kind: 'dport', protocol: a === 'th' ? null : a! };
  }
  if (ts.eat('meta', 'mark') || (a === 'mark' && b !== 'set' && ts.eat('mark'))) return { kind: 'mark' };
  if (a === 'fib' && (b === 'saddr' || b === 'daddr') && ts.peek(2) === 'type') {
    ts.i += 3;
    return { kind: 'fib', field: b };
  }
  if (ts.eat('ct', 'state')) return { kind: 'ct-state' };
  if (ts.eat('ct', 'status')) return { kind: 'ct-status' };
  if (ts.eat('numgen', 'random', 'mod')) {
    const mod = parseNumber(ts.next());
    if (mod === null || mod < 1) throw new RuleSyntaxError('numgen needs a modulus of 1 or more');
    const offset = ts.eat('offset') ? parseNumber(ts.next()) : 0;
    if (offset === null) throw new RuleSyntaxError('numgen offset is not a number');
    return { kind: 'numgen', mod, offset };
  }
  return null;
}

/** `SEL [. SEL ...]`: a concatenation. */
function key(ts: Tokens): Selector[] | null {
  const first = selector(ts);
  if (!first) return null;
  const out = [first];
  while (ts.peek() === '.') {
    ts.next();
    const s = selector(ts);
    if (!s) throw new RuleSyntaxError(`not a key part after "." : ${ts.peek() ?? 'end of rule'}`);
    out.push(s);
  }
  return out;
}

/** `VALUE [. VALUE ...]`: one token per part of a concatenation. */
function concat(ts: Tokens): string[] {
  const out = [ts.next()];
  while (ts.peek() === '.') {
    ts.next();
    out.push(ts.next());
  }
  return out;
}

const VERDICT_WORDS = new Set(['accept', 'drop', 'reject', 'return', 'continue']);

function verdictAt(ts: Tokens): Verdict | null {
  const w = ts.peek();
  if (w === 'jump' || w === 'goto') {
    ts.next();
    return { kind: w, chain: unquote(ts.next()) };
  }
  if (!w || !VERDICT_WORDS.has(w)) return null;
  ts.next();
  // `reject with icmp type port-unreachable` and the like only choose the reply.
  if (w === 'reject' && ts.eat('with')) while (!ts.done && !PUNCT.has(ts.peek()!) && ts.peek() !== 'comment') ts.next();
  return { kind: w as 'accept' };
}

/** `{ KEY [: VALUE] [comment "..."] , ... }` at the cursor (after `{`) up to its `}`. */
function elements(ts: Tokens): Element[] {
  const out: Element[] = [];
  while (!ts.eat('}')) {
    if (ts.eat(',')) continue;
    const k = concat(ts);
    let value: Element['value'] = null;
    let comment: string | null = null;
    for (;;) {
      if (ts.eat(':')) value = verdictAt(ts) ?? concat(ts);
      else if (ts.eat('comment')) comment = unquote(ts.next());
      else if (ts.peek() === 'timeout' || ts.peek() === 'expires') ts.i += 2;
      else if (ts.eat('counter')) {
        if (ts.eat('packets')) ts.i += 3;
      } else break;
    }
    out.push({ key: k, value, comment });
    if (ts.peek() !== '}' && !ts.eat(',')) throw new RuleSyntaxError(`expected , or } in a set, found ${ts.peek() ?? 'the end'}`);
  }
  return out;
}

function setRef(ts: Tokens): SetRef {
  const t = ts.next();
  if (t.startsWith('@')) return { kind: 'named', name: t.slice(1) };
  if (t === '{') return { kind: 'anonymous', elements: elements(ts) };
  throw new RuleSyntaxError(`expected @set or { ... }, found ${t}`);
}

/** `mark set mark or 0x4000`, `meta mark set meta mark xor 0x4000`, `mark set 0x1`. */
function markSet(ts: Tokens): Expr {
  if (!ts.eat('mark', 'set') && !ts.eat('meta', 'mark', 'set')) throw new RuleSyntaxError('expected mark set');
  if (ts.eat('mark') || ts.eat('meta', 'mark')) {
    const op = ts.next();
    const v = parseNumber(ts.next());
    if ((op !== 'or' && op !== 'xor' && op !== 'and') || v === null) throw new RuleSyntaxError(`mark set: cannot read "${op}"`);
    return { kind: 'mark-set', op, value: v };
  }
  const v = parseNumber(ts.next());
  if (v === null) throw new RuleSyntaxError('mark set: not a number');
  return { kind: 'mark-set', op: 'set', value: v };
}

function dnat(ts: Tokens): Expr {
  ts.eat('ip') || ts.eat('ip6');
  ts.eat('addr', '.', 'port');
  ts.expect('to');
  const k = key(ts);
  if (!k) return { kind: 'dnat', to: { kind: 'literal', text: ts.next() } };
  ts.expect('map');
  return { kind: 'dnat', to: { kind: 'map', key: k, map: setRef(ts) } };
}

function statement(ts: Tokens): Expr | null {
  const start = ts.i;
  const v = verdictAt(ts);
  if (v) return { kind: 'verdict', verdict: v };
  if (ts.eat('dnat')) return dnat(ts);
  if (ts.eat('masquerade')) {
    while (ts.peek() === 'fully-random' || ts.peek() === 'random' || ts.peek() === 'persistent' || ts.peek() === ',') ts.next();
    return { kind: 'masquerade' };
  }
  if ((ts.peek() === 'mark' && ts.peek(1) === 'set') || (ts.peek() === 'meta' && ts.peek(1) === 'mark' && ts.peek(2) === 'set')) return markSet(ts);
  if (ts.peek() === 'update' || ts.peek() === 'add') {
    ts.next();
    const name = ts.next();
    if (!name.startsWith('@')) throw new RuleSyntaxError(`expected @set after update, found ${name}`);
    ts.expect('{');
    const k = key(ts);
    if (!k) throw new RuleSyntaxError(`cannot read the key recorded in ${name}`);
    while (ts.peek() === 'timeout') ts.i += 2;
    ts.expect('}');
    return { kind: 'set-update', set: name.slice(1), key: k };
  }
  ts.i = start;
  return null;
}

/** A match or lookup on `key`, already read. */
function onKey(ts: Tokens, k: Selector[]): Expr {
  let mask: number | null = null;
  if (ts.eat('and') || ts.eat('&')) {
    mask = parseNumber(ts.next());
    if (mask === null) throw new RuleSyntaxError('mask is not a number');
  }
  if (ts.eat('vmap')) return { kind: 'vmap', key: k, map: setRef(ts) };
  let negate = false;
  if (ts.eat('!=') || ts.eat('ne')) negate = true;
  else ts.eat('==') || ts.eat('eq');
  const t = ts.peek();
  if (t === '{' || t?.startsWith('@')) return { kind: 'match', key: k, mask, negate, value: setRef(ts) };
  return { kind: 'match', key: k, mask, negate, value: concat(ts) };
}

/** `{ ELEMENT, ... }`: what follows `add element FAMILY TABLE SET` or `elements =`. */
export function parseElements(text: string): Element[] {
  const ts = new Tokens(tokenize(text));
  ts.expect('{');
  return elements(ts);
}

/** Parses a rule as the renderer writes it after `add rule FAMILY TABLE CHAIN`. */
export function parseRule(text: string): ParsedRule {
  const ts = new Tokens(tokenize(text));
  const exprs: Expr[] = [];
  let comment: string | null = null;
  while (!ts.done) {
    if (ts.eat('counter')) {
      if (ts.eat('packets')) ts.i += 3;
      continue;
    }
    if (ts.eat('comment')) {
      comment = unquote(ts.next());
      continue;
    }
    const st = statement(ts);
    if (st) {
      exprs.push(st);
      continue;
    }
    const k = key(ts);
    if (k) {
      exprs.push(onKey(ts, k));
      continue;
    }
    // Unknown words up to the next one we know: said whole, as one thing not understood.
    const from = ts.i;
    ts.next();
    while (!ts.done && !['counter', 'comment', 'jump', 'goto', 'accept', 'drop', 'reject', 'return'].includes(ts.peek()!)) ts.next();
    exprs.push({ kind: 'unsupported', text: ts.t.slice(from, ts.i).join(' ') });
  }
  return { exprs, comment };
}
