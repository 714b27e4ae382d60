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

export type NftFamily = 'ip' | 'ip6';

export interface TableChain {
  name: string;
  /** A base chain's hook, e.g. `type nat hook prerouting priority dstnat; policy accept;`; null for a regular chain. */
  base: string | null;
  /** Rules, as `add rule <table> <chain>` takes them. */
  rules: readonly string[];
}

export interface TableSet {
  name: string;
  kind: 'set' | 'map';
  /** The declaration between the braces, e.g. `type ipv4_addr . inet_service : verdict;`. */
  spec: string;
  /**
   * Elements by key: the value of a map element, null for a set's. A set whose elements
   * the kernel adds itself (`update @set`, ClientIP affinity) has none here, and keeps its
   * own across every transaction but the one that creates or replaces it.
   */
  elements: ReadonlyMap<string, string | null>;
}

/** One `kube-proxy` table as the planner sees it: what the renderer wants, or what was last written. */
export interface TableState {
  family: NftFamily;
  name: string;
  comment: string;
  chains: ReadonlyMap<string, TableChain>;
  sets: ReadonlyMap<string, TableSet>;
}

export interface Transaction {
  script: string;
  /** nft commands in it (one per line): what the transaction-size metric counts. */
  commands: number;
  full: boolean;
}

/** Why a partial transaction cannot express the change; the caller writes a full one instead. */
export class NeedsFullSync extends Error {}

const escapeComment = (s: string) => s.replace(/["\\\n]/g, '');

class Script {
  private readonly lines: string[] = [];
  constructor(private readonly table: string) {}
  add(line: string): void {
    this.lines.push(line);
  }
  chain(c: TableChain): void {
    this.add(c.base ? `add chain ${this.table} ${c.name} { ${c.base} }` : `add chain ${this.table} ${c.name}`);
  }
  rules(c: TableChain): void {
    for (const r of c.rules) this.add(`add rule ${this.table} ${c.name} ${r}`);
  }
  set(s: TableSet): void {
    this.add(`add ${s.kind} ${this.table} ${s.name} { ${s.spec} }`);
  }
  elements(verb: 'add' | 'delete', s: TableSet, keys: Iterable<string>, withValues: boolean): void {
    const items: string[] = [];
    for (const k of keys) {
      const v = s.elements.get(k);
      items.push(withValues && s.kind === 'map' && v != null ? `${k} : ${v}` : k);
    }
    if (items.length > 0) this.add(`${verb} element ${this.table} ${s.name} { ${items.join(', ')} }`);
  }
  done(full: boolean): Transaction {
    return { script: this.lines.length > 0 ? `${this.lines.join('\n')}\n` : '', commands: this.lines.length, full };
  }
}

const tableRef = (t: TableState) => `${t.family} ${t.name}`;

/**
 * The whole table in one transaction, whatever the kernel holds: the table is created
 * (should it be missing), deleted with everything in it, and written again, so no chain,
 * set or rule of an earlier writer survives. Atomic: packets see the old table or the new.
 */
export function fullTransaction(want: TableState): Transaction {
  const ref = tableRef(want);
  const s = new Script(ref);
  s.add(`add table ${ref}`);
  s.add(`delete table ${ref}`);
  s.add(`add table ${ref} { comment "${escapeComment(want.comment)}"; }`);
  // Every chain and set first, so that any rule or element can name any of them.
  for (const c of want.chains.values()) s.chain(c);
  for (const set of want.sets.values()) s.set(set);
  for (const set of want.sets.values()) s.elements('add', set, set.elements.keys(), true);
  for (const c of want.chains.values()) s.rules(c);
  return s.done(true);
}

const sameRules = (a: TableChain, b: TableChain) => a.rules.length === b.rules.length && a.rules.every((r, i) => r === b.rules[i]);

/**
 * Only what changed from `prev` (the kernel's table, as last written) to `want`. Throws
 * NeedsFullSync for what a partial transaction does not change in place (another table,
 * a base chain's hook, a set's declaration).
 */
export function partialTransaction(prev: TableState, want: TableState): Transaction {
  if (prev.family !== want.family || prev.name !== want.name || prev.comment !== want.comment) throw new NeedsFullSync('the table itself changed');
  const s = new Script(tableRef(want));
  const rewritten: TableChain[] = [];
  for (const c of want.chains.values()) {
    const old = prev.chains.get(c.name);
    if (old && old.base !== c.base) throw new NeedsFullSync(`base chain ${c.name} changed`);
    if (!old) s.chain(c);
    if (!old || !sameRules(old, c)) rewritten.push(c);
  }
  for (const set of want.sets.values()) {
    const old = prev.sets.get(set.name);
    if (old && (old.kind !== set.kind || old.spec !== set.spec)) throw new NeedsFullSync(`${set.kind} ${set.name} changed its declaration`);
    if (!old) s.set(set);
  }
  // Elements out before rules and elements in: a key whose value changed is deleted and
  // added again; a goto to a chain about to be deleted is gone before the chain is.
  for (const set of want.sets.values()) {
    const old = prev.sets.get(set.name);
    if (!old) continue;
    const gone = [...old.elements.keys()].filter((k) => !set.elements.has(k) || set.elements.get(k) !== old.elements.get(k));
    s.elements('delete', old, gone, false);
  }
  for (const c of rewritten) {
    if (prev.chains.has(c.name)) s.add(`flush chain ${tableRef(want)} ${c.name}`);
    s.rules(c);
  }
  for (const set of want.sets.values()) {
    const old = prev.sets.get(set.name);
    const added = old ? [...set.elements.keys()].filter((k) => !old.elements.has(k) || old.elements.get(k) !== set.elements.get(k)) : [...set.elements.keys()];
    s.elements('add', set, added, true);
  }
  // Stale chains are emptied first (their rules may name each other and stale sets), then
  // stale sets and maps go (a map's elements may name stale chains), then the chains.
  const staleChains = [...prev.chains.values()].filter((c) => !want.chains.has(c.name));
  for (const c of staleChains) if (c.rules.length > 0) s.add(`flush chain ${tableRef(want)} ${c.name}`);
  for (const set of prev.sets.values()) if (!want.sets.has(set.name)) s.add(`delete ${set.kind} ${tableRef(want)} ${set.name}`);
  for (const c of staleChains) s.add(`delete chain ${tableRef(want)} ${c.name}`);
  return s.done(false);
}
