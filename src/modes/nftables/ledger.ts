/**
 * Who holds each set and map element in the kernel: for every element key, how many
 * services contribute it, and the element as written. A partial sync renders only the
 * services that changed, before and after; the ledger says which of their elements the
 * kernel must lose or gain. An element two services share (a pod behind two services in
 * `hairpin-endpoints`) stays until the last one lets go of it. Two services wanting one
 * key with different elements (two Services claiming one external IP and port) is
 * settled by a full render, where the first in model order wins: the ledger asks for one
 * whenever such a key is touched. Pure.
 */
import { elementKey, elementText, type Element, type NftSet } from './ruleset.js';

interface Entry {
  /** Services contributing this key. */
  n: number;
  /** The element as in the kernel (elementText). */
  text: string;
  element: Element;
  /** Contributors disagree on the element: only a full render decides. */
  contested: boolean;
}

export class ContestedElement extends Error {}

export class ElementLedger {
  private readonly sets = new Map<string, Map<string, Entry>>();
  /** Changes of the transaction being planned: kept apart until it is applied. */
  private pending: Map<string, Map<string, Entry | null>> | null = null;

  /** Counts one service's elements in (a full sync, service by service, in model order). */
  count(sets: readonly NftSet[]): void {
    for (const s of sets) {
      if (s.elements.length === 0) continue;
      let m = this.sets.get(s.name);
      if (!m) this.sets.set(s.name, (m = new Map()));
      for (const e of s.elements) {
        const k = elementKey(e);
        const text = elementText(e);
        const entry = m.get(k);
        if (!entry) m.set(k, { n: 1, text, element: e, contested: false });
        else {
          entry.n++;
          if (entry.text !== text) entry.contested = true;
        }
      }
    }
  }

  private get(set: string, key: string): Entry | undefined {
    const p = this.pending?.get(set);
    if (p?.has(key)) return p.get(key) ?? undefined;
    return this.sets.get(set)?.get(key);
  }

  private put(set: string, key: string, entry: Entry | null): void {
    let p = this.pending!.get(set);
    if (!p) this.pending!.set(set, (p = new Map()));
    p.set(key, entry);
  }

  /** Starts planning a transaction; nothing changes until `commit`. */
  begin(): void {
    this.pending = new Map();
  }

  /**
   * One service set of changes lets go of `gone` in `set`: the elements the kernel must
   * lose (no one else holds them). Throws ContestedElement where only a full render can say.
   */
  release(set: NftSet, gone: readonly Element[]): Element[] {
    const out: Element[] = [];
    for (const e of gone) {
      const k = elementKey(e);
      const entry = this.get(set.name, k);
      // Never written (a service that failed to claim it): nothing to take back.
      if (!entry) continue;
      if (entry.contested) throw new ContestedElement(`${set.name} { ${k} } is wanted differently by two services`);
      if (entry.n === 1) {
        this.put(set.name, k, null);
        out.push(entry.element);
      } else this.put(set.name, k, { ...entry, n: entry.n - 1 });
    }
    return out;
  }

  /** The elements of `fresh` the kernel must gain; throws ContestedElement on a disagreement. */
  claim(set: NftSet, fresh: readonly Element[]): Element[] {
    const out: Element[] = [];
    for (const e of fresh) {
      const k = elementKey(e);
      const text = elementText(e);
      const entry = this.get(set.name, k);
      if (!entry) {
        this.put(set.name, k, { n: 1, text, element: e, contested: false });
        out.push(e);
      } else if (entry.text === text) this.put(set.name, k, { ...entry, n: entry.n + 1 });
      else throw new ContestedElement(`${set.name} { ${k} } is wanted differently by two services`);
    }
    return out;
  }

  /** The planned transaction was applied: its changes are what the kernel holds. */
  commit(): void {
    for (const [set, changes] of this.pending ?? []) {
      let m = this.sets.get(set);
      if (!m) this.sets.set(set, (m = new Map()));
      for (const [k, entry] of changes) {
        if (entry) m.set(k, entry);
        else m.delete(k);
      }
      if (m.size === 0) this.sets.delete(set);
    }
    this.pending = null;
  }

  abort(): void {
    this.pending = null;
  }
}
