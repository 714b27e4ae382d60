/**
 * The iptables applier: the only code that changes the kernel's iptables state. It
 * executes restore steps planned elsewhere, ensures the jump rules and canary chains,
 * and can remove everything kube-proxy (ours or upstream's) created.
 */
import type { IPFamily } from '../../model/types.js';
import { CANARY_CHAIN, CANARY_TABLES, type CleanupTable } from './chains.js';
import { cleanupRestore } from './cleanup.js';
import { formatArgs, type JumpRule } from './ruleset.js';
import type { RestoreStep } from './plan.js';
import { SavedTables } from './saved.js';
import { binaries, parseVersion, type IptablesBinaries, type IptablesVersion } from './variant.js';
import type { Runner } from '../../exec/command.js';

export class RestoreError extends Error {
  constructor(
    readonly step: string,
    readonly detail: string,
  ) {
    super(`${step}: ${detail}`);
  }
}

const CLEANUP_TABLES: readonly CleanupTable[] = ['nat', 'filter', 'mangle'];

export class IptablesApplier {
  /** `bin`: the tools of the host's iptables variant (see detectVariant); by default whatever PATH has. */
  constructor(
    readonly family: IPFamily,
    private readonly run: Runner,
    private readonly bin: IptablesBinaries = binaries(family, null),
  ) {}

  /** Which variant the iptables it runs drives (the `(nf_tables)` or `(legacy)` in its version), and its version. */
  async version(): Promise<IptablesVersion> {
    const r = await this.run(this.bin.iptables, ['--version']);
    return parseVersion(r.stdout);
  }

  async restore(step: RestoreStep): Promise<void> {
    const r = await this.run(this.bin.restore, ['--noflush', '--counters', '-w', '5'], step.chunks);
    if (r.status !== 0) throw new RestoreError(step.what, r.stderr.trim() || `exit ${r.status}`);
  }

  private async iptables(table: string, args: string[]): Promise<boolean> {
    const r = await this.run(this.bin.iptables, ['-w', '5', '-t', table, ...args]);
    return r.status === 0;
  }

  /** Creates the canary chains and inserts any missing jump rule from the built-in chains. */
  async ensureJumps(jumps: JumpRule[]): Promise<void> {
    const text = await this.jumpsRestore(jumps);
    if (text !== '') await this.restore({ what: 'ensure canary chains and jump rules', chunks: [Buffer.from(text)], lines: 0 });
  }

  /**
   * The restore input that creates whichever canary chains, jump targets and jump rules are
   * missing ('' when none is). `known`: an iptables-save just read, and the chains (`table
   * chain`) that restores run before this one write; what they tell is not asked again. The
   * rest is asked all at once, a process per chain or rule.
   */
  async jumpsRestore(jumps: JumpRule[], known?: { saved: SavedTables; written: ReadonlySet<string> }): Promise<string> {
    const targets = [...new Map(jumps.map((j) => [`${j.table} ${j.args.at(-1)}`, { table: j.table, chain: j.args.at(-1)! }])).values()];
    const chainThere = (table: string, chain: string) =>
      known ? known.written.has(`${table} ${chain}`) || known.saved.hasChain(table, chain) : this.present(table, ['-S', chain]);
    const [canaries, targetsThere] = await Promise.all([
      Promise.all(CANARY_TABLES.map((table) => chainThere(table, CANARY_CHAIN))),
      Promise.all(targets.map((t) => chainThere(t.table, t.chain))),
    ]);
    // iptables -C of a jump to a chain that does not exist is an error (exit 2), not "no":
    // such a jump is missing, and not asked about.
    const missingTarget = new Set(targets.filter((_, i) => !targetsThere[i]).map((t) => `${t.table} ${t.chain}`));
    const jumpThere = (j: JumpRule) => {
      if (missingTarget.has(`${j.table} ${j.args.at(-1)}`)) return false;
      const seen = known?.saved.jump(j) ?? 'unsure';
      return seen === 'unsure' ? this.present(j.table, ['-C', j.chain, ...j.args]) : seen === 'present';
    };
    const jumpsThere = await Promise.all(jumps.map(jumpThere));
    const lines = new Map<string, string[]>(CANARY_TABLES.map((t) => [t, []]));
    const add = (table: string, line: string) => lines.get(table)!.push(line);
    CANARY_TABLES.forEach((table, i) => canaries[i] || add(table, `:${CANARY_CHAIN} - [0:0]`));
    targets.forEach((t, i) => targetsThere[i] || add(t.table, `:${t.chain} - [0:0]`));
    // Each prepended in turn, as upstream does: `iptables -S` then shows upstream's order.
    jumps.forEach((j, i) => jumpsThere[i] || add(j.table, `-I ${j.chain} 1 ${formatArgs(j.args)}`));
    const text = [...lines].flatMap(([table, ls]) => (ls.length > 0 ? [`*${table}`, ...ls, 'COMMIT'] : [])).join('\n');
    return text === '' ? '' : `${text}\n`;
  }

  /**
   * Whether a rule or chain is there: iptables says no with exit status 1; anything else
   * (the xtables lock not taken in time, say) is no answer, and throws.
   */
  private async present(table: string, args: string[]): Promise<boolean> {
    const r = await this.run(this.bin.iptables, ['-w', '5', '-t', table, ...args]);
    if (r.status === 0 || r.status === 1) return r.status === 0;
    throw new RestoreError(`${this.bin.iptables} -t ${table} ${args.join(' ')}`, r.stderr.trim() || `exit ${r.status}`);
  }

  /** The first of `jumps` that is not in its built-in chain, or null when all are. */
  async missingJump(jumps: JumpRule[]): Promise<JumpRule | null> {
    for (const j of jumps) if (!(await this.present(j.table, ['-C', j.chain, ...j.args]))) return j;
    return null;
  }

  /** False once someone flushed or deleted our chains: time for a full resync. */
  async canaryPresent(): Promise<boolean> {
    for (const table of CANARY_TABLES) if (!(await this.present(table, ['-S', CANARY_CHAIN]))) return false;
    return true;
  }

  /** Every table as one iptables-save prints it. */
  async save(): Promise<SavedTables> {
    const r = await this.run(this.bin.save, []);
    if (r.status !== 0) throw new RestoreError(this.bin.save, r.stderr.trim());
    return new SavedTables(r.stdout);
  }

  /**
   * Removes the chains kube-proxy owns (ours or upstream's) in nat, filter and mangle and
   * every rule that jumps to them, leaving everything else; nothing to do on a clean node.
   */
  /** True when there was something to remove. */
  async cleanup(isOwned?: (table: CleanupTable, name: string) => boolean): Promise<boolean> {
    let removed = false;
    for (const table of CLEANUP_TABLES) {
      const r = await this.run(this.bin.save, ['-t', table]);
      // A table the kernel does not have holds nothing of ours.
      if (r.status !== 0) continue;
      const input = cleanupRestore(table, r.stdout, isOwned && ((name) => isOwned(table, name)));
      if (input === null) continue;
      await this.restore({ what: `cleanup ${table}`, chunks: [Buffer.from(input)], lines: input.split('\n').length });
      removed = true;
    }
    return removed;
  }
}
