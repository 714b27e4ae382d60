/**
 * An `nft -f` script of commands (`add rule ip kube-proxy ...`), as our renderer writes
 * it, into tables of chains, sets and maps for the trace. Rules and elements stay text
 * until a trace reaches them: a traced packet reads a handful of a 10,000-service
 * ruleset's chains and map elements.
 */
import { elementsOf, elementText, type TraceChain, type TraceSet, type TraceTable, type TraceTables } from './tables.js';
import { parseElements, RuleSyntaxError, tokenize } from './expr.js';

const PRIORITY_NAMES: Record<string, number> = { raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100 };

/** `dstnat`, `-110`, `dstnat - 10`, `dstnat+10`: the tokens after `priority`, up to `;`. */
function parsePriority(words: string[]): number | null {
  const text = words.join('');
  const m = /^([a-z]+|-?[0-9]+)(?:([+-])([0-9]+))?$/.exec(text);
  if (!m) return null;
  const base = /^-?[0-9]+$/.test(m[1]!) ? Number(m[1]) : PRIORITY_NAMES[m[1]!];
  if (base === undefined) return null;
  return m[2] === undefined ? base : base + (m[2] === '+' ? 1 : -1) * Number(m[3]);
}

function table(tables: TraceTables, family: string, name: string): TraceTable {
  const key = `${family} ${name}`;
  let t = tables.get(key);
  if (!t) {
    t = { family, name, chains: new Map(), sets: new Map() };
    tables.set(key, t);
  }
  return t;
}

function chain(t: TraceTable, name: string): TraceChain {
  let c = t.chains.get(name);
  if (!c) {
    c = { name, base: null, policy: 'accept', rules: [] };
    t.chains.set(name, c);
  }
  return c;
}

function set(t: TraceTable, name: string): TraceSet {
  let s = t.sets.get(name);
  if (!s) {
    s = { name, dynamic: false, elements: [], unread: [] };
    t.sets.set(name, s);
  }
  return s;
}

/** The `; `-separated declarations inside a chain's or set's braces. */
function declarations(tokens: string[]): string[][] {
  const out: string[][] = [[]];
  for (const t of tokens) {
    if (t === ';') out.push([]);
    else out.at(-1)!.push(t);
  }
  return out.filter((d) => d.length > 0);
}

/** `type nat hook prerouting priority dstnat; policy accept;` */
function declareChain(c: TraceChain, decls: string[][]): void {
  for (const d of decls) {
    if (d[0] === 'type' && d[2] === 'hook' && d[4] === 'priority') {
      const priority = parsePriority(d.slice(5));
      if (priority === null) throw new RuleSyntaxError(`chain ${c.name}: cannot read priority ${d.slice(5).join(' ')}`);
      c.base = { type: d[1]!, hook: d[3]!, priority };
    } else if (d[0] === 'policy') c.policy = d[1] === 'drop' ? 'drop' : 'accept';
  }
}

/** `type ...; flags interval, timeout; timeout 3h; elements = { ... }`. */
function declareSet(s: TraceSet, decls: string[][]): void {
  for (const d of decls) {
    if (d[0] === 'flags' && d.some((w) => w === 'dynamic' || w === 'timeout')) s.dynamic = true;
    else if (d[0] === 'timeout') s.dynamic = true;
    else if (d[0] === 'elements' && d[1] === '=') elementText(s, d.slice(2).join(' '));
  }
}

/** How many more braces a line opens than it closes, outside quotes. */
function braceDepth(line: string): number {
  let depth = 0;
  let quoted = false;
  for (const c of line) {
    if (c === '"') quoted = !quoted;
    else if (!quoted && c === '{') depth++;
    else if (!quoted && c === '}') depth--;
  }
  return depth;
}

/** Where the matching `}` of the `{` at `open` is. */
function closing(tokens: string[], open: number): number {
  let depth = 0;
  for (let i = open; i < tokens.length; i++) {
    if (tokens[i] === '{') depth++;
    else if (tokens[i] === '}' && --depth === 0) return i;
  }
  throw new RuleSyntaxError('unbalanced braces');
}

const VERBS = new Set(['add', 'create', 'insert', 'flush', 'delete', 'destroy']);

/**
 * Reads a script. Later commands act on what earlier ones wrote, as `nft -f` would:
 * `flush chain` empties a chain, `delete table` forgets it.
 */
export function parseNftScript(text: string): TraceTables {
  const tables: TraceTables = new Map();
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    let line = lines[n]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    // A command goes on until its braces close: elements come one a line.
    for (let depth = braceDepth(line); depth > 0 && n + 1 < lines.length; ) {
      const more = lines[++n]!.trim();
      depth += braceDepth(more);
      line = `${line} ${more}`;
    }
    const fail = (why: string): never => {
      throw new RuleSyntaxError(`line ${n + 1}: ${why}: ${line}`);
    };
    // `add rule FAMILY TABLE CHAIN RULE...`: split without tokenizing the rule.
    const m = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)(?:\s+(\S+))?\s*(.*)$/.exec(line);
    const [, verb, what, family, name, object, rest] = m ?? [];
    if (!verb || !VERBS.has(verb) || !what || !family || !name) fail('not a command the trace reads');
    if (what === 'table') {
      if (verb === 'delete' || verb === 'destroy') tables.delete(`${family} ${name}`);
      else if (verb === 'flush') {
        for (const c of tables.get(`${family} ${name}`)?.chains.values() ?? []) c.rules = [];
        for (const s of tables.get(`${family} ${name}`)?.sets.values() ?? []) {
          s.elements = [];
          s.unread = [];
        }
      } else table(tables, family!, name!);
      continue;
    }
    const t = table(tables, family!, name!);
    if (!object) fail(`${what} without a name`);
    const inBraces = (s = '') => {
      const ts = tokenize(s);
      return ts[0] === '{' ? ts.slice(1, closing(ts, 0)) : [];
    };
    switch (what) {
      case 'chain': {
        if (verb === 'delete' || verb === 'destroy') t.chains.delete(object!);
        else if (verb === 'flush') chain(t, object!).rules = [];
        else declareChain(chain(t, object!), declarations(inBraces(rest)));
        break;
      }
      case 'set':
      case 'map': {
        if (verb === 'delete' || verb === 'destroy') t.sets.delete(object!);
        else if (verb === 'flush') Object.assign(set(t, object!), { elements: [], unread: [] });
        else declareSet(set(t, object!), declarations(inBraces(rest)));
        break;
      }
      case 'element': {
        const s = t.sets.get(object!) ?? fail(`no set or map ${object}`);
        if (verb === 'delete' || verb === 'destroy') {
          const gone = new Set(parseElements(rest!).map((e) => e.key.join(' . ')));
          s.elements = elementsOf(s).filter((e) => !gone.has(e.key.join(' . ')));
        } else elementText(s, rest!);
        break;
      }
      case 'rule': {
        const c = t.chains.get(object!) ?? fail(`no chain ${object}`);
        if (verb === 'insert') c.rules.unshift({ text: rest! });
        else if (verb === 'add' || verb === 'create') c.rules.push({ text: rest! });
        else fail(`${verb} rule is not something the trace reads`);
        break;
      }
      default:
        fail(`${what} is not something the trace reads`);
    }
  }
  return tables;
}
