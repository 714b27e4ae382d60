/**
 * Who holds each set and map element in the kernel: for every element key, how many
 * services contribute it, and the element as written. A partial sync renders only the
 * services that changed, before and after; the ledger says which of their elements the
 * kernel must lose or gain. An element two services share (a pod behind two services in
 * `hairpin-endpoints`) stays until the last one lets go of it. Two services wanting one
 * key with different elements (two Services claiming one external IP and port) is
 * settled by a full render, where the first in model order wins: the ledger asks for one
 * whenever such a key is touched. Pure.
 *
 * Kept lean, as it holds a 10,000-service table's elements: per key only the element's
 * text (the key itself where they are the same), with counts and contested keys on the
 * side, where they are rare. Sets whose keys start with a destination a service port
 * claims (`keyedByClaim`) are not kept at all: such a key has one holder, since the
 * syncer makes any change to a destination two service ports claim a full sync. That is
 * more than half of the elements (the balancing maps).
 */
import { elementKey, elementText, type Element, type NftSet } from './ruleset.js';

export class ContestedElement extends Error {}

interface SetEntries {
  /** Key -> the element as written (elementText). */
  text: Map<string, string>;
  /** Keys more than one service holds, and how many. */
  shared: Map<string, number>;
  /** Keys whose holders disagree on the element. */
  contested: Set<string>;
}

/** A key's state as a transaction being planned sees it; null: not in the kernel. */
type Held = { text: string; n: number; contested: boolean } | null;

export class ElementLedger {
  private readonly sets = new Map<string, SetEntries>();
  /** Changes of the transaction being planned: kept apart until it is applied. */
  private pending: Map<string, Map<string, Held>> | null = null;

  /** `keyedByClaim`: the sets and maps whose every key has one holder. */
  constructor(private readonly keyedByClaim: (set: string) => boolean = () => false) {}

  private entries(set: string): SetEntries {
    let e = this.sets.get(set);
    if (!e) this.sets.set(set, (e = { text: new Map(), shared: new Map(), contested: new Set() }));
    return e;
  }

  /** Counts one service's elements in, by set name (a full sync, service by service, in model order). */
  count(sets: ReadonlyMap<string, readonly Element[]>): void {
    for (const [name, elements] of sets) {
      if (elements.length === 0 || this.keyedByClaim(name)) continue;
      const e = this.entries(name);
      for (const el of elements) {
        const k = elementKey(el);
        const text = elementText(el);
        const had = e.text.get(k);
        if (had === undefined) e.text.set(k, text === k ? k : text);
        else {
          e.shared.set(k, (e.shared.get(k) ?? 1) + 1);
          if (had !== text) e.contested.add(k);
        }
      }
    }
  }

  private held(set: string, key: string): Held {
    const p = this.pending?.get(set);
    if (p?.has(key)) return p.get(key)!;
    const e = this.sets.get(set);
    const text = e?.text.get(key);
    return text === undefined ? null : { text, n: e!.shared.get(key) ?? 1, contested: e!.contested.has(key) };
  }

  private put(set: string, key: string, held: Held): void {
    let p = this.pending!.get(set);
    if (!p) this.pending!.set(set, (p = new Map()));
    p.set(key, held);
  }

  /** Starts planning a transaction; nothing changes until `commit`. */
  begin(): void {
    this.pending = new Map();
  }

  /**
   * One service lets go of `gone` in `set`: the keys the kernel must lose (no one else
   * holds them). Throws ContestedElement where only a full render can say.
   */
  release(set: NftSet, gone: readonly Element[]): string[] {
    if (this.keyedByClaim(set.name)) return gone.map(elementKey);
    const out: string[] = [];
    for (const el of gone) {
      const k = elementKey(el);
      const h = this.held(set.name, k);
      // Never written (a service that failed to claim it): nothing to take back.
      if (!h) continue;
      if (h.contested) throw new ContestedElement(`${set.name} { ${k} } is wanted differently by two services`);
      if (h.n === 1) {
        this.put(set.name, k, null);
        out.push(k);
      } else this.put(set.name, k, { ...h, n: h.n - 1 });
    }
    return out;
  }

  /** The elements of `fresh` the kernel must gain; throws ContestedElement on a disagreement. */
  claim(set: NftSet, fresh: readonly Element[]): Element[] {
    if (this.keyedByClaim(set.name)) return [...fresh];
    const out: Element[] = [];
    for (const el of fresh) {
      const k = elementKey(el);
      const text = elementText(el);
      const h = this.held(set.name, k);
      if (!h) {
        this.put(set.name, k, { text, n: 1, contested: false });
        out.push(el);
      } else if (h.text === text) this.put(set.name, k, { ...h, n: h.n + 1 });
      else throw new ContestedElement(`${set.name} { ${k} } is wanted differently by two services`);
    }
    return out;
  }

  /** The planned transaction was applied: its changes are what the kernel holds. */
  commit(): void {
    for (const [set, changes] of this.pending ?? []) {
      const e = this.entries(set);
      for (const [k, h] of changes) {
        if (!h) {
          e.text.delete(k);
          e.shared.delete(k);
          e.contested.delete(k);
          continue;
        }
        e.text.set(k, h.text === k ? k : h.text);
        if (h.n > 1) e.shared.set(k, h.n);
        else e.shared.delete(k);
      }
      if (e.text.size === 0) this.sets.delete(set);
    }
    this.pending = null;
  }

  abort(): void {
    this.pending = null;
  }
}
