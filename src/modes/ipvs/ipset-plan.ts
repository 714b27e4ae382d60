/**
 * The ipset diff: from the sets the kernel holds (`ipset save`) and the wanted ones, an
 * `ipset restore -exist` batch. A set is changed entry by entry, unless most of it
 * changes: then it is rebuilt under a temporary name and swapped in with `ipset swap`,
 * so that iptables rules matching it never see it half-filled. Pure.
 */
import { createOptions, type Ipset } from './ipsets.js';

/** A set as the kernel holds it. */
export interface KernelSet {
  name: string;
  /** `hash:ip,port`, `bitmap:port`, ... */
  type: string;
  entries: Set<string>;
}

export type KernelSets = Map<string, KernelSet>;

/** `ipset save` output into sets. */
export function parseIpsetSave(text: string): KernelSets {
  const sets: KernelSets = new Map();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] === 'create' && words[1]) sets.set(words[1], { name: words[1], type: words[2] ?? '', entries: new Set() });
    else if (words[0] === 'add' && words[1] && words[2]) sets.get(words[1])?.entries.add(words[2]);
  }
  return sets;
}

/** Rebuild rather than edit when more entries change than this share of the set. */
const REBUILD_SHARE = 0.5;
const REBUILD_MIN = 64;

export interface IpsetPlan {
  /** `ipset restore -exist` input; empty when nothing changes. */
  lines: string[];
  /** Sets rebuilt and swapped in. */
  rebuilt: string[];
}

/** `tmp`: names for rebuilt sets, one per set rebuilt in this batch. */
export function planIpsets(current: KernelSets, wanted: readonly Ipset[], tmp: (i: number) => string = (i) => `KUBE-TMP-${i}`): IpsetPlan {
  const lines: string[] = [];
  const rebuilt: string[] = [];
  const create = (name: string, set: Ipset) => lines.push(`create ${name} ${createOptions(set).join(' ')}`);
  for (const want of wanted) {
    const have = current.get(want.name);
    if (!have) {
      create(want.name, want);
      for (const e of want.entries) lines.push(`add ${want.name} ${e}`);
      continue;
    }
    if (have.type !== want.type) {
      throw new Error(`ipset ${want.name} exists as ${have.type}, not ${want.type}: run kube-proxy-ts --cleanup first`);
    }
    const wantEntries = new Set(want.entries);
    const added = want.entries.filter((e) => !have.entries.has(e));
    const removed = [...have.entries].filter((e) => !wantEntries.has(e));
    const changes = added.length + removed.length;
    if (changes === 0) continue;
    if (changes > REBUILD_MIN && changes > REBUILD_SHARE * Math.max(have.entries.size, want.entries.length)) {
      const name = tmp(rebuilt.length);
      create(name, want);
      for (const e of want.entries) lines.push(`add ${name} ${e}`);
      lines.push(`swap ${name} ${want.name}`, `destroy ${name}`);
      rebuilt.push(want.name);
      continue;
    }
    for (const e of removed) lines.push(`del ${want.name} ${e}`);
    for (const e of added) lines.push(`add ${want.name} ${e}`);
  }
  return { lines, rebuilt };
}

/** The kernel's sets after a plan for `wanted` was applied. */
export function appliedSets(current: KernelSets, wanted: readonly Ipset[]): KernelSets {
  const out = new Map(current);
  for (const w of wanted) out.set(w.name, { name: w.name, type: w.type, entries: new Set(w.entries) });
  return out;
}
