/**
 * nftables tables as the trace reads them: chains with their hooks and rules, sets and
 * maps with their elements, from the rendered ruleset or from an `nft -f` script. Rules
 * are parsed, and elements read, when a trace first needs them: a traced packet reads a
 * handful of a 10,000-service ruleset's chains and elements.
 */
import { parseIP } from '../../net/ip.js';
import type { RuleRole } from '../../trace/types.js';
import { parseElements, parseNumber, parseRule, RuleSyntaxError, tokenize, type Element, type ParsedRule, type Verdict } from './expr.js';
import { ruleText, tableRef, type Element as RenderedElement, type NftSet, type NftTable } from './ruleset.js';

interface TraceRule {
  /** The rule as `add rule ... CHAIN` takes it, comment included. */
  text: string;
  parsed?: ParsedRule & { body: string; role: RuleRole | null };
}

export interface TraceChain {
  name: string;
  /** Set for a base chain: where the kernel calls it, and in which order among others there. */
  base: { type: string; hook: string; priority: number } | null;
  policy: 'accept' | 'drop';
  rules: TraceRule[];
}

export interface TraceSet {
  name: string;
  /** Filled by the data path at run time (`update @set`), with timeouts: session affinity. */
  dynamic: boolean;
  elements: Element[];
  /** Element lists not read yet. */
  unread: (() => Element[])[];
  /** Elements by their exact key, and those with a prefix or range in theirs: built on first lookup. */
  index?: { exact: Map<string, Element>; ranged: Element[] };
  /**
   * A rendered set's elements, left as the renderer wrote them: their keys are what the
   * trace prints for packet values (canonical addresses, decimal numbers, protocol
   * names), so they are compared as they are, and only the element found is converted.
   */
  rendered?: { elements: readonly RenderedElement[]; convert: (e: RenderedElement) => Element };
}

export interface TraceTable {
  family: string;
  name: string;
  chains: Map<string, TraceChain>;
  sets: Map<string, TraceSet>;
}

/** By `FAMILY NAME`. */
export type TraceTables = Map<string, TraceTable>;

function rethrow(where: string, err: unknown): never {
  if (err instanceof RuleSyntaxError) throw new RuleSyntaxError(`${where}: ${err.message}`);
  throw err;
}

/** A set's elements, reading what is still unread. */
export function elementsOf(s: TraceSet): Element[] {
  for (const read of s.unread) {
    try {
      s.elements.push(...read());
    } catch (err) {
      rethrow(`elements of ${s.name}`, err);
    }
  }
  s.unread = [];
  return s.elements;
}

/** The canonical text of an element's key part, when it is one value (no prefix or range). */
function exactPart(t: string): string | null {
  if (t.includes('/') || /^[^:]*-/.test(t)) return null;
  const ip = parseIP(t);
  if (ip) return ip.text;
  const n = parseNumber(t);
  if (n !== null) return String(n);
  return t;
}

/**
 * A set's elements indexed: a 10,000-service map has 100,000 elements, and a trace
 * looks up a few keys, some once per numgen branch.
 */
function indexOf(s: TraceSet): NonNullable<TraceSet['index']> {
  if (s.unread.length > 0 || !s.index) {
    const exact = new Map<string, Element>();
    const ranged: Element[] = [];
    for (const e of elementsOf(s)) {
      const parts = e.key.map(exactPart);
      if (parts.some((p) => p === null)) ranged.push(e);
      else {
        const k = parts.join(' . ');
        if (!exact.has(k)) exact.set(k, e);
      }
    }
    s.index = { exact, ranged };
  }
  return s.index;
}

const ranged = (t: string) => t.includes('/') || t.includes('-');

/**
 * The element whose key is `exact` (the packet's values as the trace prints them; null
 * when a mask makes them no key), or else the first whose prefixes and ranges `holds`.
 */
export function findElement(s: TraceSet, exact: string[] | null, holds: (key: readonly string[]) => boolean): Element | null {
  if (s.rendered) {
    const all = s.rendered.elements;
    const hit =
      (exact && all.find((e) => e.key.length === exact.length && e.key.every((t, i) => t === exact[i]))) ||
      all.find((e) => (exact === null || e.key.some(ranged)) && holds(e.key));
    return hit ? s.rendered.convert(hit) : null;
  }
  const index = indexOf(s);
  const hit = exact ? index.exact.get(exact.map((t) => exactPart(t) ?? t).join(' . ')) : undefined;
  return hit ?? (exact ? index.ranged : elementsOf(s)).find((e) => holds(e.key)) ?? null;
}

/** Elements of `add element ... { ... }`, read when first looked up. */
export function elementText(s: TraceSet, text: string): void {
  s.unread.push(() => parseElements(text));
}

const COMMENT = /\s*comment "[^"]*"/;

/** A chain's rule, parsed on first use; `role` says what it means for explanations. */
export function ruleAt(chain: TraceChain, index: number, roleOf: (chain: string, rule: ParsedRule) => RuleRole | null): NonNullable<TraceRule['parsed']> {
  const r = chain.rules[index]!;
  if (!r.parsed) {
    try {
      const parsed = parseRule(r.text);
      r.parsed = { ...parsed, body: r.text.replace(COMMENT, '').trim(), role: roleOf(chain.name, parsed) };
    } catch (err) {
      rethrow(`chain ${chain.name} rule ${index + 1}: ${r.text}`, err);
    }
  }
  return r.parsed!;
}

/** `goto cluster`, `drop`: a verdict map's value. */
function verdictValue(text: string): Verdict {
  const [word, chain] = tokenize(text);
  if ((word === 'jump' || word === 'goto') && chain) return { kind: word, chain };
  if (word === 'accept' || word === 'drop' || word === 'reject' || word === 'return' || word === 'continue') return { kind: word };
  throw new RuleSyntaxError(`not a verdict: ${text}`);
}

function renderedSet(s: NftSet): TraceSet {
  const verdicts = s.value !== undefined && 'type' in s.value && s.value.type.length === 1 && s.value.type[0] === 'verdict';
  const convert = (e: RenderedElement): Element => ({
    key: e.key,
    value: e.value === undefined ? null : verdicts ? verdictValue(e.value.join(' ')) : e.value,
    comment: e.comment ?? null,
  });
  return {
    name: s.name,
    dynamic: s.flags.includes('dynamic') || s.flags.includes('timeout'),
    elements: [],
    unread: [() => s.elements.map(convert)],
    rendered: { elements: s.elements, convert },
  };
}

/** The rendered tables, as the trace reads them; rules and elements are shared, not copied. */
export function renderedTables(tables: readonly NftTable[]): TraceTables {
  const out: TraceTables = new Map();
  for (const t of tables) {
    out.set(tableRef(t), {
      family: t.family,
      name: t.name,
      chains: new Map(
        t.chains.map((c) => [
          c.name,
          {
            name: c.name,
            base: c.base ?? null,
            policy: 'accept',
            rules: c.rules.map((r) => ({ text: ruleText(r) })),
          },
        ]),
      ),
      sets: new Map(
        t.sets.map((s) => [s.name, renderedSet(s)]),
      ),
    });
  }
  return out;
}
