/**
 * The transaction planner: from the table last written and the table wanted, the one nft
 * script (one atomic transaction) that turns the first into the second. Pure.
 *
 * A full transaction writes the whole table. A partial one writes only what changed:
 * chains added, rewritten (flush + rules) or deleted, sets and maps added or deleted, and
 * set and map elements diffed by key (a changed value is a delete and an add of the same
 * key). Element changes need no chain validation in the kernel, which is what keeps a
 * one-endpoint change cheap at 10,000 services. Nothing outside the table is named.
 */
import { LineWriter } from '../line-writer.js';
import { ContestedElement, type ElementLedger } from './ledger.js';
import { chainSpec, comment, elementKey, elementText, ruleText, setSpec, tableRef, type Chain, type Element, type NftSet, type NftTable } from './ruleset.js';
import type { TableObjects } from './written.js';

export interface Transaction {
  /** The nft script, ASCII; empty when there is nothing to change. */
  script: Buffer;
  /** nft commands in it (one per line): the transaction-size metric. */
  commands: number;
  full: boolean;
}

/** Why a partial transaction cannot express the change; the caller writes a full one instead. */
export class NeedsFullSync extends Error {}

/** Elements per `add element` command: one command per set parses fastest, this bounds a line. */
const ELEMENTS_PER_COMMAND = 1000;

/** Bytes a full transaction's script takes per element, about (48 covers the balancing maps' `addr . proto . port . i : addr . port, `). */
const BYTES_PER_ELEMENT = 48;

class Script {
  private readonly out: LineWriter;
  private commands = 0;
  /** `expectBytes`: what the script will about take; written into one buffer, not grown by doubling from small. */
  constructor(
    readonly ref: string,
    expectBytes = 64 * 1024,
  ) {
    this.out = new LineWriter(expectBytes);
  }

  add(line: string): void {
    this.out.line(line);
    this.commands++;
  }
  chain(c: Chain): void {
    this.add(`add chain ${this.ref} ${c.name}${chainSpec(c)}`);
  }
  rules(c: Chain): void {
    for (const r of c.rules) this.add(`add rule ${this.ref} ${c.name} ${ruleText(r)}`);
  }
  set(s: NftSet): void {
    this.add(`add ${s.kind} ${this.ref} ${s.name} ${setSpec(s)}`);
  }
  /** Whole elements to add, or keys (elementKey) to delete. */
  elements(verb: 'add' | 'delete', s: NftSet, elements: readonly (Element | string)[]): void {
    for (let i = 0; i < elements.length; i += ELEMENTS_PER_COMMAND) {
      const items = elements.slice(i, i + ELEMENTS_PER_COMMAND).map((e) => (typeof e === 'string' ? e : elementText(e, verb === 'delete')));
      this.add(`${verb} element ${this.ref} ${s.name} { ${items.join(', ')} }`);
    }
  }
  done(full: boolean): Transaction {
    // A view, not a copy: a full table's script is ~10 MB at 10,000 services, and lives one sync.
    return { script: this.out.bytes(), commands: this.commands, full };
  }
}

/**
 * The whole table in one transaction. Atomic: packets meet the old table or the new one.
 *
 * With `present` (what the kernel's table holds, listed just before), the table stays:
 * every rule is flushed and written again, every set and map we fill is flushed and
 * filled again, and chains, sets and maps we no longer declare are deleted, so that no
 * rule, element or object of an earlier writer survives but one: the elements of the
 * dynamic sets, which are the data path's memory of ClientIP affinity, not ours. A
 * declaration that changed (a set's type, a base chain's hook) makes nft refuse this;
 * then the caller writes the table without `present`.
 *
 * Without it, the table is created (should it be missing), deleted with everything in
 * it, and written again (`flush table` would keep set elements).
 */
export function fullTransaction(want: NftTable, present?: TableObjects): Transaction {
  const s = new Script(tableRef(want), 64 * 1024 + BYTES_PER_ELEMENT * want.sets.reduce((n, x) => n + x.elements.length, 0));
  if (present) {
    s.add(`add table ${s.ref} { ${comment(want.comment)} ; }`);
    s.add(`flush table ${s.ref}`);
  } else {
    s.add(`add table ${s.ref}`);
    s.add(`delete table ${s.ref}`);
    s.add(`add table ${s.ref} { ${comment(want.comment)} ; }`);
  }
  // Every chain and set first, so that any rule or element can name any of them.
  for (const c of want.chains) s.chain(c);
  for (const set of want.sets) {
    s.set(set);
    if (present?.sets.has(set.name) && !set.flags.includes('dynamic')) s.add(`flush ${set.kind} ${s.ref} ${set.name}`);
  }
  for (const set of want.sets) s.elements('add', set, set.elements);
  for (const c of want.chains) s.rules(c);
  if (present) {
    // Sets and maps before chains: a verdict map's elements may name a stale chain.
    const sets = new Set(want.sets.map((x) => x.name));
    const chains = new Set(want.chains.map((c) => c.name));
    for (const [name, kind] of present.sets) if (!sets.has(name)) s.add(`delete ${kind} ${s.ref} ${name}`);
    for (const name of present.chains) if (!chains.has(name)) s.add(`delete chain ${s.ref} ${name}`);
  }
  return s.done(true);
}

const sameRules = (a: Chain, b: Chain) => a.rules.length === b.rules.length && a.rules.every((r, i) => ruleText(r) === ruleText(b.rules[i]!));

/**
 * Where `want`'s rules hold `old`'s in the same order with others between them: the
 * positions of the others (each in `want`), else null. Such a chain changes by inserting
 * those rules alone: no rule already in the kernel is named again, which matters beyond
 * saving work (nft 1.0.6 cannot re-add a rule that names an existing map declared with a
 * `th` expression in its `typeof`).
 */
function insertions(old: Chain, want: Chain): number[] | null {
  if (want.rules.length <= old.rules.length) return null;
  const added: number[] = [];
  let j = 0;
  want.rules.forEach((r, p) => {
    if (j < old.rules.length && ruleText(r) === ruleText(old.rules[j]!)) j++;
    else added.push(p);
  });
  return j === old.rules.length ? added : null;
}

/** Elements of `a` that `b` lacks, or holds with another value or comment. */
function elementsNotIn(a: NftSet, b: NftSet | undefined): Element[] {
  if (!b) return a.elements;
  const other = new Map(b.elements.map((e) => [elementKey(e), elementText(e)]));
  return a.elements.filter((e) => other.get(elementKey(e)) !== elementText(e));
}

/**
 * Only what changed from `prev` to `want`. Throws NeedsFullSync for what a partial
 * transaction does not change in place (the table's comment, a chain's hook or comment,
 * a set's declaration, an element two services want differently).
 *
 * Without a ledger, `prev` is the kernel's table as last written and `want` the whole new
 * one. With one, both are renders of only the services that changed (before and after,
 * with the same fixed part): their chains and sets are theirs alone, while set and map
 * elements go in and out through the ledger, which knows what other services hold.
 */
export function partialTransaction(prev: NftTable, want: NftTable, ledger?: ElementLedger): Transaction {
  try {
    ledger?.begin();
    return partial(prev, want, ledger);
  } catch (err) {
    ledger?.abort();
    if (err instanceof ContestedElement) throw new NeedsFullSync(err.message);
    throw err;
  }
}

function partial(prev: NftTable, want: NftTable, ledger: ElementLedger | undefined): Transaction {
  if (prev.family !== want.family || prev.name !== want.name || prev.comment !== want.comment) throw new NeedsFullSync('the table itself changed');
  const s = new Script(tableRef(want));
  const prevChains = new Map(prev.chains.map((c) => [c.name, c]));
  const prevSets = new Map(prev.sets.map((x) => [x.name, x]));
  const wantChains = new Set(want.chains.map((c) => c.name));
  const wantSets = new Set(want.sets.map((x) => x.name));

  const rewritten: Chain[] = [];
  const grown: { chain: Chain; at: number[]; old: number }[] = [];
  for (const c of want.chains) {
    const old = prevChains.get(c.name);
    if (old && chainSpec(old) !== chainSpec(c)) throw new NeedsFullSync(`chain ${c.name} changed its hook or comment`);
    if (!old) s.chain(c);
    if (old && sameRules(old, c)) continue;
    const at = old ? insertions(old, c) : null;
    if (at) grown.push({ chain: c, at, old: old!.rules.length });
    else rewritten.push(c);
  }
  for (const set of want.sets) {
    const old = prevSets.get(set.name);
    if (old && (old.kind !== set.kind || setSpec(old) !== setSpec(set))) throw new NeedsFullSync(`${set.kind} ${set.name} changed its declaration`);
    if (!old) s.set(set);
  }
  // Elements out before rules and elements in: a key whose value changed is deleted and
  // added again; a goto to a chain about to be deleted is gone before the chain is.
  for (const set of want.sets) {
    const old = prevSets.get(set.name);
    if (!old) continue;
    const gone = elementsNotIn(old, set);
    s.elements('delete', old, ledger ? ledger.release(old, gone) : gone);
  }
  for (const set of prev.sets) if (!wantSets.has(set.name)) ledger?.release(set, set.elements);
  for (const c of rewritten) {
    if (prevChains.has(c.name)) s.add(`flush chain ${s.ref} ${c.name}`);
    s.rules(c);
  }
  // In ascending order: each insertion sees the ones before it (nft counts them too).
  for (const { chain, at, old } of grown) {
    at.forEach((p, k) => {
      const rule = ruleText(chain.rules[p]!);
      // Rules now in the chain: the old ones and the k inserted so far.
      s.add(p < old + k ? `insert rule ${s.ref} ${chain.name} index ${p} ${rule}` : `add rule ${s.ref} ${chain.name} ${rule}`);
    });
  }
  for (const set of want.sets) {
    const fresh = elementsNotIn(set, prevSets.get(set.name));
    s.elements('add', set, ledger ? ledger.claim(set, fresh) : fresh);
  }
  // Stale chains are emptied first (their rules may name each other and stale sets), then
  // stale sets and maps go (a map's elements may name stale chains), then the chains.
  const staleChains = prev.chains.filter((c) => !wantChains.has(c.name));
  for (const c of staleChains) if (c.rules.length > 0) s.add(`flush chain ${s.ref} ${c.name}`);
  for (const set of prev.sets) if (!wantSets.has(set.name)) s.add(`delete ${set.kind} ${s.ref} ${set.name}`);
  for (const c of staleChains) s.add(`delete chain ${s.ref} ${c.name}`);
  return s.done(false);
}
