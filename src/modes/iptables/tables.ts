/**
 * iptables-restore text (as the renderer writes it, or as iptables-save prints it) into
 * tables, chains and parsed rules. The jump rules kube-proxy-ts ensures in the built-in
 * chains are not part of a restore: they come as data, the ruleset's `jumps`.
 */
import type { RuleRole } from '../../trace/types.js';
import { ruleRole } from './roles.js';
import { formatArgs, tableLayout, type IptablesRuleset, type JumpRule } from './ruleset.js';
import { parseRule, RuleSyntaxError, tokenize, type ParsedRule } from './rule.js';

export interface IptablesRule extends ParsedRule {
  /** The rule as restore text, without `-A CHAIN`. */
  text: string;
  /** The same without its comment, for people. */
  body: string;
  role: RuleRole | null;
}

const COMMENT = /-m comment --comment ("(?:[^"\\]|\\.)*"|\S+) ?/;

interface RawRule {
  text: string;
  /** Line in the input, for errors; null for rules that came as arguments. */
  line: number | null;
  args?: string[];
}

function parseRaw(r: RawRule, table: string, chain: string): IptablesRule {
  try {
    const parsed = parseRule(r.args ?? tokenize(r.text));
    return { text: r.text, body: r.text.replace(COMMENT, '').trim(), role: ruleRole(table, chain, parsed), ...parsed };
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
  constructor(
    readonly name: string,
    private readonly source: ((chain: string) => { chains: string[]; lines: string[] } | null) | null = null,
  ) {}

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
      rules = this.raw.get(chain)?.map((r) => parseRaw(r, this.name, chain));
      if (rules) this.parsed.set(chain, rules);
    }
    return rules;
  }
}

export type IptablesTables = Map<string, IptablesTable>;

const jumpRule = (j: JumpRule): RawRule => ({ text: formatArgs(j.args), line: null, args: j.args });

function table(tables: IptablesTables, name: string, source: ConstructorParameters<typeof IptablesTable>[1] = null): IptablesTable {
  let t = tables.get(name);
  if (!t) {
    t = new IptablesTable(name, source);
    tables.set(name, t);
  }
  return t;
}

/**
 * Reads restore text; rules are parsed when a trace reaches their chain. `jumps` go first
 * in their built-in chains, each prepended in turn as the applier inserts them.
 */
export function parseIptablesRestore(text: string, jumps: readonly JumpRule[] = []): IptablesTables {
  const tables: IptablesTables = new Map();
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
    if (line === '' || line.startsWith('#')) return;
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
  for (const j of jumps) table(tables, j.table).prepend(j.chain, [jumpRule(j)]);
  return tables;
}

/**
 * A rendered ruleset as tables, in the order its restore text has them, with its jump
 * rules first in the built-in chains, as the applier leaves them. Each service port's own chains stay unread bytes
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
  for (const j of rs.jumps) table(tables, j.table).prepend(j.chain, [jumpRule(j)]);
  for (const t of tableLayout(rs)) {
    const declared = table(tables, t.table);
    for (const c of t.chains) declared.rawRules(c);
    for (const r of t.rules) declared.rawRules(r.chain).push({ text: r.rule, line: null });
  }
  return tables;
}
