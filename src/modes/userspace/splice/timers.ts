/**
 * The splice engine's timers: a binary min-heap by due time that knows each timer's
 * place, so cancelling one (every connection cancels its connect timeout, most their
 * max age) costs O(log n) and leaves nothing behind.
 */

export interface Timer {
  readonly at: number;
  readonly fire: () => void;
  /** Its place in the heap; -1 once fired or cancelled. */
  index: number;
}

export class TimerHeap {
  private readonly heap: Timer[] = [];

  get size(): number {
    return this.heap.length;
  }

  add(at: number, fire: () => void): Timer {
    const t: Timer = { at, fire, index: this.heap.length };
    this.heap.push(t);
    this.up(t.index);
    return t;
  }

  cancel(t: Timer | null): void {
    if (!t || t.index < 0) return;
    const i = t.index;
    const last = this.heap.pop()!;
    t.index = -1;
    if (last === t) return;
    this.heap[i] = last;
    last.index = i;
    this.down(i);
    this.up(last.index);
  }

  /** Milliseconds until the first is due (0 when one is), or -1 when there is none. */
  wait(now: number): number {
    const first = this.heap[0];
    return first ? Math.max(0, Math.ceil(first.at - now)) : -1;
  }

  /** Fires every timer due at `now`, earliest first; one a firing adds runs next round. */
  runDue(now: number): void {
    for (let n = this.heap.length; n > 0; n--) {
      const first = this.heap[0];
      if (!first || first.at > now) return;
      this.cancel(first);
      first.fire();
    }
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.at <= h[i]!.at) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let least = i;
      if (l < h.length && h[l]!.at < h[least]!.at) least = l;
      if (r < h.length && h[r]!.at < h[least]!.at) least = r;
      if (least === i) return;
      this.swap(i, least);
      i = least;
    }
  }

  private swap(a: number, b: number): void {
    const h = this.heap;
    const x = h[a]!;
    h[a] = h[b]!;
    h[b] = x;
    x.index = b;
    h[a]!.index = a;
  }
}
