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
  entries: ReadonlySet<string>;
}

export type KernelSets = Map<string, KernelSet>;

/** `ipset save` output into sets. */
export function parseIpsetSave(text: string): KernelSets {
  const entries = new Map<string, { name: string; type: string; entries: Set<string> }>();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] === 'create' && words[1]) entries.set(words[1], { name: words[1], type: words[2] ?? '', entries: new Set() });
    else if (words[0] === 'add' && words[1] && words[2]) entries.get(words[1])?.entries.add(words[2]);
  }
  return entries;
}

/** Rebuild rather than edit when more entries change than this share of the set. */
const REBUILD_SHARE = 0.5;
const REBUILD_MIN = 64;

export interface IpsetPlan {
  /** `ipset restore -exist` input; empty when nothing changes. */
  lines: string[];
  /** Sets rebuilt and swapped in. */
  rebuilt: string[];
  /** The kernel's sets once the lines ran. */
  after: KernelSets;
}

/** `tmp`: names for rebuilt sets, one per set rebuilt in this batch. */
export function planIpsets(current: KernelSets, wanted: readonly Ipset[], tmp: (i: number) => string = (i) => `KUBE-TMP-${i}`): IpsetPlan {
  const lines: string[] = [];
  const rebuilt: string[] = [];
  const after: KernelSets = new Map(current);
  const create = (name: string, set: Ipset) => lines.push(`create ${name} ${createOptions(set).join(' ')}`);
  for (const want of wanted) {
    const have = current.get(want.name);
    if (!have) {
      create(want.name, want);
      for (const e of want.entries) lines.push(`add ${want.name} ${e}`);
      after.set(want.name, { name: want.name, type: want.type, entries: want.entries });
      continue;
    }
    if (have.type !== want.type) {
      throw new Error(`ipset ${want.name} exists as ${have.type}, not ${want.type}: run kube-proxy-ts --cleanup first`);
    }
    const added: string[] = [];
    for (const e of want.entries) if (!have.entries.has(e)) added.push(e);
    // The kernel holds more than the wanted entries it already has only when some must go.
    const removed: string[] = [];
    if (have.entries.size > want.entries.size - added.length) for (const e of have.entries) if (!want.entries.has(e)) removed.push(e);
    const changes = added.length + removed.length;
    if (changes === 0) continue;
    after.set(want.name, { name: want.name, type: want.type, entries: want.entries });
    if (changes > REBUILD_MIN && changes > REBUILD_SHARE * Math.max(have.entries.size, want.entries.size)) {
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
  return { lines, rebuilt, after };
}
