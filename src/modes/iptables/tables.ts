/**
 * iptables-restore text (as the renderer writes it, or as iptables-save prints it) into
 * tables, chains and parsed rules. The jump rules kube-proxy-ts ensures in the built-in
 * chains are not part of a restore; they come from the dry run's comment lines
 * (`#   iptables -t nat -I PREROUTING ...`) or, for a rendered ruleset, its `jumps`.
 */
import { formatArgs, type IptablesRuleset } from './render.js';
import { parseRule, RuleSyntaxError, tokenize, type ParsedRule } from './rule.js';

export interface IptablesRule extends ParsedRule {
  /** The rule as restore text, without `-A CHAIN`. */
  text: string;
}

interface RawRule {
  text: string;
  /** Line in the input, for errors; null for rules that came as arguments. */
  line: number | null;
  args?: string[];
}

function parseRaw(r: RawRule): IptablesRule {
  try {
    return { text: r.text, ...parseRule(r.args ?? tokenize(r.text)) };
  } catch (err) {
    if (err instanceof RuleSyntaxError && r.line !== null) throw new RuleSyntaxError(`line ${r.line}: ${err.message}: ${r.text}`);
    throw err;
  }
}

export class IptablesTable {
  /** Policies of the built-in chains the text declares (`:INPUT DROP [0:0]`). */
  readonly policies = new Map<string, string>();
  private readonly raw = new Map<string, RawRule[]>();
  private readonly parsed = new Map<string, IptablesRule[]>();

  /**
   * `source`: where a chain missing here is read from on first use: the `-A` lines of
   * the chains stored with it (a service port's), all declared at once.
   */
  constructor(private readonly source: ((chain: string) => { chains: string[]; lines: string[] } | null) | null = null) {}

  /** The chain's unparsed rules, for the parser to append to; declares the chain. */
  rawRules(chain: string): RawRule[] {
    let rules = this.raw.get(chain);
    if (!rules) {
      rules = [];
      this.raw.set(chain, rules);
    }
    return rules;
  }

  prepend(chain: string, rules: RawRule[]): void {
    this.raw.set(chain, [...rules, ...(this.raw.get(chain) ?? [])]);
  }

  /**
   * A chain's rules, parsed when first asked for: a trace reads a handful of the chains
   * of a large ruleset (10,000 services: 430,000 rules), and reading them all takes seconds.
   */
  rules(chain: string): IptablesRule[] | undefined {
    const loaded = this.raw.has(chain) ? null : this.source?.(chain);
    for (const c of loaded?.chains ?? []) this.rawRules(c);
    for (const line of loaded?.lines ?? []) {
      const end = line.indexOf(' ', 3);
      this.rawRules(line.slice(3, end)).push({ text: line.slice(end + 1), line: null });
    }
    let rules = this.parsed.get(chain);
    if (!rules) {
      rules = this.raw.get(chain)?.map(parseRaw);
      if (rules) this.parsed.set(chain, rules);
    }
    return rules;
  }
}

export type IptablesTables = Map<string, IptablesTable>;

const JUMP_COMMENT = /^#\s+ip6?tables -t (\S+) -I (\S+) (.*)$/;

function table(tables: IptablesTables, name: string, source: ConstructorParameters<typeof IptablesTable>[0] = null): IptablesTable {
  let t = tables.get(name);
  if (!t) {
    t = new IptablesTable(source);
    tables.set(name, t);
  }
  return t;
}

/**
 * Reads restore text; rules are parsed when a trace reaches their chain. Jump rules from
 * dry-run comments go first in their built-in chain, in the order listed: the order the
 * applier leaves them in.
 */
export function parseIptablesRestore(text: string): IptablesTables {
  const tables: IptablesTables = new Map();
  const jumps = new Map<string, { table: string; chain: string; rules: RawRule[] }>();
  let current: IptablesTable | null = null;
  // Consecutive rules are nearly always of one chain: no map lookup for each.
  let appendTo: { chain: string; rules: RawRule[] } | null = null;
  text.split('\n').forEach((raw, n) => {
    const line = raw.trim();
    const fail = (why: string): never => {
      throw new RuleSyntaxError(`line ${n + 1}: ${why}: ${line}`);
    };
    // Rules first and without a regular expression: they are nearly every line.
    if (line.startsWith('-A ')) {
      if (!current) fail('outside a table');
      const end = line.indexOf(' ', 3);
      const chain = end < 0 ? line.slice(3) : line.slice(3, end);
      if (appendTo?.chain !== chain) appendTo = { chain, rules: current!.rawRules(chain) };
      appendTo.rules.push({ text: end < 0 ? '' : line.slice(end + 1), line: n + 1 });
      return;
    }
    const jump = line.startsWith('#') ? JUMP_COMMENT.exec(line) : null;
    if (jump) {
      const [, t, chain, rest] = jump as unknown as [string, string, string, string];
      const key = `${t} ${chain}`;
      if (!jumps.has(key)) jumps.set(key, { table: t, chain, rules: [] });
      jumps.get(key)!.rules.push({ text: rest, line: n + 1 });
    } else if (line === '' || line.startsWith('#')) return;
    else if (line.startsWith('*')) {
      current = table(tables, line.slice(1));
      appendTo = null;
    } else if (line === 'COMMIT') current = null;
    else if (!current) fail('outside a table');
    else if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(' ') as [string, string | undefined];
      current.rawRules(name);
      if (policy && policy !== '-') current.policies.set(name, policy);
    } else fail('not a declaration or an -A rule');
  });
  for (const j of jumps.values()) table(tables, j.table).prepend(j.chain, j.rules);
  return tables;
}

/**
 * A rendered ruleset as tables, in the order its restore text has them, with its jump
 * rules first in the built-in chains. Each service port's own chains stay unread bytes
 * until the trace reaches one of them.
 */
export function rulesetTables(rs: IptablesRuleset): IptablesTables {
  const tables: IptablesTables = new Map();
  // A scan per chain first reached, not an index of every chain: a trace reaches a few.
  const serviceChains = (chain: string) => {
    const s = rs.services.find((x) => x.chains.includes(chain));
    if (!s) return null;
    return { chains: s.chains, lines: rs.chainRules.toString('latin1', s.rules.start, s.rules.end).split('\n').filter((l) => l !== '') };
  };
  table(tables, 'nat', serviceChains);
  const chain = (t: string, name: string) => table(tables, t).rawRules(name);
  const add = (rules: RawRule[], name: string, line: string) => rules.push({ text: line.slice(name.length + 4), line: null });
  for (const j of rs.jumps) chain(j.table, j.chain).push({ text: formatArgs(j.args), line: null, args: j.args });
  for (const c of rs.fixed) {
    const rules = chain(c.table, c.name);
    for (const line of c.rules) add(rules, c.name, line);
  }
  for (const sh of rs.shared) {
    const rules = chain(sh.table, sh.name);
    for (const s of rs.services) for (const r of s.shared) if (r.table === sh.table && r.chain === sh.name) add(rules, sh.name, r.line);
    if (sh.table === 'nat' && sh.name === 'KUBE-SERVICES') for (const line of rs.nodePortsTail) add(rules, sh.name, line);
  }
  return tables;
}
