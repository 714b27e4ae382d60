/**
 * iptables-restore text (as the renderer writes it, or as iptables-save prints it) into
 * tables, chains and parsed rules. The jump rules kube-proxy-ts ensures in the built-in
 * chains are not part of a restore; they come from the dry run's comment lines
 * (`#   iptables -t nat -I PREROUTING ...`) or, for a rendered ruleset, its `jumps`.
 */
import { formatArgs, restoreText, type IptablesRuleset } from '../render/iptables.js';
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

  declare(chain: string): void {
    if (!this.raw.has(chain)) this.raw.set(chain, []);
  }

  append(chain: string, rule: RawRule): void {
    this.declare(chain);
    this.raw.get(chain)!.push(rule);
  }

  prepend(chain: string, rules: RawRule[]): void {
    this.raw.set(chain, [...rules, ...(this.raw.get(chain) ?? [])]);
  }

  /**
   * A chain's rules, parsed when first asked for: a trace reads a handful of the chains
   * of a large ruleset (10,000 services: 430,000 rules), and parsing them all takes seconds.
   */
  rules(chain: string): IptablesRule[] | undefined {
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
const APPEND = /^-A\s+(\S+)\s*(.*)$/;

function table(tables: IptablesTables, name: string): IptablesTable {
  let t = tables.get(name);
  if (!t) {
    t = new IptablesTable();
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
  text.split('\n').forEach((raw, n) => {
    const line = raw.trim();
    const fail = (why: string): never => {
      throw new RuleSyntaxError(`line ${n + 1}: ${why}: ${line}`);
    };
    const jump = JUMP_COMMENT.exec(line);
    const append = APPEND.exec(line);
    if (jump) {
      const [, t, chain, rest] = jump as unknown as [string, string, string, string];
      const key = `${t} ${chain}`;
      if (!jumps.has(key)) jumps.set(key, { table: t, chain, rules: [] });
      jumps.get(key)!.rules.push({ text: rest, line: n + 1 });
    } else if (line === '' || line.startsWith('#')) return;
    else if (line.startsWith('*')) current = table(tables, line.slice(1));
    else if (line === 'COMMIT') current = null;
    else if (!current) fail('outside a table');
    else if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(' ') as [string, string | undefined];
      current.declare(name);
      if (policy && policy !== '-') current.policies.set(name, policy);
    } else if (append) current.append(append[1]!, { text: append[2]!, line: n + 1 });
    else fail('not a declaration or an -A rule');
  });
  for (const j of jumps.values()) table(tables, j.table).prepend(j.chain, j.rules);
  return tables;
}

/** A rendered ruleset as tables: its restore text plus its jump rules. */
export function rulesetTables(rs: IptablesRuleset): IptablesTables {
  const tables = parseIptablesRestore(restoreText(rs));
  const byChain = new Map<string, { table: string; chain: string; rules: RawRule[] }>();
  for (const j of rs.jumps) {
    const key = `${j.table} ${j.chain}`;
    if (!byChain.has(key)) byChain.set(key, { table: j.table, chain: j.chain, rules: [] });
    byChain.get(key)!.rules.push({ text: formatArgs(j.args), line: null, args: j.args });
  }
  for (const j of byChain.values()) table(tables, j.table).prepend(j.chain, j.rules);
  return tables;
}
