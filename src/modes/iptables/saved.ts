/**
 * What one `iptables-save` printed, as far as a sync needs it: each table's chains, and the
 * rules of its built-in chains, where the jumps into ours live. Reading the node once at a
 * first sync answers what would otherwise take a process per chain and per jump rule.
 */
import type { JumpRule } from './ruleset.js';
import { formatArgs } from './ruleset.js';

const BUILT_IN = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** Whether a jump rule is in its built-in chain, as far as the saved text can tell. */
export type JumpSeen = 'present' | 'missing' | 'unsure';

export class SavedTables {
  private readonly tableChains = new Map<string, string[]>();
  /** `table chain` -> the rules of that built-in chain, each after `-A CHAIN `. */
  private readonly builtInRules = new Map<string, string[]>();

  constructor(text: string) {
    let table = '';
    let at = 0;
    while (at < text.length) {
      let end = text.indexOf('\n', at);
      if (end === -1) end = text.length;
      const line = text.slice(at, end);
      at = end + 1;
      if (line.startsWith('*')) {
        table = line.slice(1);
        this.tableChains.set(table, []);
      } else if (line.startsWith(':')) {
        this.tableChains.get(table)?.push(line.slice(1, line.indexOf(' ')));
      } else if (line.startsWith('-A ')) {
        const space = line.indexOf(' ', 3);
        const chain = line.slice(3, space);
        if (!BUILT_IN.has(chain)) continue;
        const key = `${table} ${chain}`;
        const rules = this.builtInRules.get(key) ?? [];
        rules.push(line.slice(space + 1));
        this.builtInRules.set(key, rules);
      }
    }
  }

  chains(table: string): string[] {
    return this.tableChains.get(table) ?? [];
  }

  hasChain(table: string, chain: string): boolean {
    return this.chains(table).includes(chain);
  }

  /**
   * A jump rule is present when its built-in chain holds its exact text; missing when no
   * rule there jumps to its target. A rule that jumps to the target with other arguments
   * may be ours printed differently (iptables-save normalises some matches): only
   * `iptables -C` can say, so it is unsure.
   */
  jump(j: JumpRule): JumpSeen {
    const rules = this.builtInRules.get(`${j.table} ${j.chain}`) ?? [];
    if (rules.includes(formatArgs(j.args))) return 'present';
    const target = ` -j ${j.args.at(-1)}`;
    return rules.some((r) => r.endsWith(target) || r.includes(`${target} `) || r === target.slice(1)) ? 'unsure' : 'missing';
  }
}
