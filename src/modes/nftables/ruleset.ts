/**
 * An nftables ruleset as data, in the shape of knftables' objects: one table per family
 * holding chains (base chains carry their hook), rules, sets and maps, and the sets' and
 * maps' elements as key/value data. This is the contract between the renderer (which
 * builds it), the applier (which diffs two of them and writes only what changed: rules
 * chain by chain, elements one by one) and the trace (which walks it).
 *
 * Every string here is nft syntax the renderer built from validated model values and
 * fixed words; nothing from a cluster object reaches a script unchecked (see `comment`).
 */
import type { IPFamily } from '../../model/types.js';
import { LineWriter } from '../line-writer.js';

/** The nft family of a table: one `ip` table for IPv4 and one `ip6` table for IPv6, as upstream. */
export type NftFamily = 'ip' | 'ip6';

export const NFT_FAMILY: Record<IPFamily, NftFamily> = { IPv4: 'ip', IPv6: 'ip6' };

/** Upstream's table name: tools and people that know upstream's `nft list table` find ours. */
export const TABLE_NAME = 'kube-proxy';
export const TABLE_COMMENT = 'rules for kube-proxy';

export type Hook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

/** What makes a chain a base chain: the kernel calls it from `hook`. */
export interface BaseChain {
  type: 'filter' | 'nat';
  hook: Hook;
  /** Numeric, as nft 1.0.6 refuses named priorities (`dstnat`) on some hooks: dstnat -100, srcnat 100, filter 0. */
  priority: number;
}

export interface Rule {
  /** The rule as `nft add rule FAMILY TABLE CHAIN` takes it, without its comment. */
  rule: string;
  /** Written as `comment "..."`; checked by `comment()`. */
  comment?: string;
}

export interface Chain {
  name: string;
  /** Absent for regular chains (reached only by jump, goto or a verdict map). */
  base?: BaseChain;
  comment?: string;
  rules: Rule[];
}

/**
 * The type of a set's keys or a map's values: nft data types joined by ` . `
 * (`{ type: ['ipv4_addr', 'inet_proto', 'inet_service'] }`, or `['verdict']` for a
 * verdict map's values), or a `typeof` expression (needed when a key holds `numgen`).
 * A map's key and value are both `type` or both `typeof`, as nft requires.
 */
export type DataSpec = { type: string[] } | { typeof: string };

export type SetFlag = 'interval' | 'dynamic' | 'timeout';

/**
 * One element. `key` holds one value per part of a concatenated key, `value` one per part
 * of a map's value (`['goto cluster']` in a verdict map). Two elements of one set are the
 * same element when their keys are equal: `elementKey` is the identity a diff uses.
 */
export interface Element {
  key: string[];
  /** Maps only. */
  value?: string[];
  comment?: string;
}

export interface NftSet {
  /** `set` holds keys only; `map` maps keys to values (a verdict map when the value type is `verdict`). */
  kind: 'set' | 'map';
  name: string;
  key: DataSpec;
  /** Maps only. */
  value?: DataSpec;
  flags: SetFlag[];
  /** Default lifetime of an element, for sets the data path fills (`flags dynamic,timeout`). */
  timeoutSeconds?: number;
  comment?: string;
  /**
   * The elements the renderer decided, sorted by `elementKey` and unique by it. Dynamic
   * sets have none: the data path adds theirs, and a diff must leave those alone.
   */
  elements: Element[];
}

export interface NftTable {
  family: NftFamily;
  name: typeof TABLE_NAME;
  comment: string;
  /** In declaration order: base chains first, then the rest. Names are unique per table. */
  chains: Chain[];
  /** Sets and maps (one namespace in nft), in declaration order. */
  sets: NftSet[];
}

/** What identifies an element within its set: its key parts as nft prints them. */
export function elementKey(e: Element): string {
  return e.key.join(' . ');
}

// Comments carry Kubernetes names (DNS labels and subdomains, `/`, `:`) and fixed words.
// Anything else means a bug upstream of the renderer, and is refused rather than written.
const SAFE_COMMENT = /^[A-Za-z0-9 _.:/,()@\-]+$/;

/** nft refuses longer comments; a Service port's name can reach 191 characters. */
export const MAX_COMMENT = 128;

/** `comment "TEXT"` (cut to MAX_COMMENT), or an error when TEXT could break out of its quotes. */
export function comment(text: string): string {
  if (!SAFE_COMMENT.test(text)) throw new Error(`unsafe nftables comment: ${JSON.stringify(text)}`);
  return `comment "${text.slice(0, MAX_COMMENT)}"`;
}

function dataSpec(d: DataSpec): string {
  return 'type' in d ? d.type.join(' . ') : d.typeof;
}

/** The `{ ... }` body of `add set` / `add map`. */
export function setSpec(s: NftSet): string {
  let kv: string;
  if (s.kind === 'map') {
    if (!s.value) throw new Error(`map ${s.name} has no value type`);
    if ('type' in s.key !== 'type' in s.value) throw new Error(`map ${s.name}: key and value must both be "type" or both "typeof"`);
    kv = `${'type' in s.key ? 'type' : 'typeof'} ${dataSpec(s.key)} : ${dataSpec(s.value)}`;
  } else {
    kv = `${'type' in s.key ? 'type' : 'typeof'} ${dataSpec(s.key)}`;
  }
  const parts = [kv];
  if (s.flags.length > 0) parts.push(`flags ${s.flags.join(',')}`);
  if (s.timeoutSeconds !== undefined) parts.push(`timeout ${s.timeoutSeconds}s`);
  if (s.comment !== undefined) parts.push(comment(s.comment));
  return `{ ${parts.join(' ; ')} ; }`;
}

/** The `{ ... }` body of `add chain`, or '' for a regular chain without comment. */
export function chainSpec(c: Chain): string {
  const parts: string[] = [];
  if (c.base) parts.push(`type ${c.base.type} hook ${c.base.hook} priority ${c.base.priority}`);
  if (c.comment !== undefined) parts.push(comment(c.comment));
  return parts.length === 0 ? '' : ` { ${parts.join(' ; ')} ; }`;
}

/** A rule's text as `add rule ... CHAIN` takes it, comment included. */
export function ruleText(r: Rule): string {
  return r.comment === undefined ? r.rule : `${r.rule} ${comment(r.comment)}`;
}

/** An element as it goes between `{ }` of `add element` / `delete element` (`delete` takes keys only). */
export function elementText(e: Element, keyOnly = false): string {
  const k = elementKey(e);
  const c = e.comment === undefined || keyOnly ? '' : ` ${comment(e.comment)}`;
  return e.value === undefined || keyOnly ? `${k}${c}` : `${k}${c} : ${e.value.join(' . ')}`;
}

/** `ip kube-proxy`: what follows `add chain`, `add rule`, ... in every command. */
export function tableRef(t: Pick<NftTable, 'family' | 'name'>): string {
  return `${t.family} ${t.name}`;
}

/** Where script lines go: a LineWriter, or anything else that takes lines. */
export interface ScriptSink {
  line(text: string): void;
}

/**
 * Writes the commands that declare `t` and fill it, in the order nft needs: chains and
 * sets before the rules and elements that name them. Into an existing table, this adds
 * to what is there (see `writeScript` for a replacement).
 */
export function writeDefinitions(t: NftTable, out: ScriptSink): void {
  const ref = tableRef(t);
  for (const c of t.chains) out.line(`add chain ${ref} ${c.name}${chainSpec(c)}`);
  for (const s of t.sets) out.line(`add ${s.kind} ${ref} ${s.name} ${setSpec(s)}`);
  writeContents(t, out);
}

/** Every chain's rules and every set's elements. */
function writeContents(t: NftTable, out: ScriptSink): void {
  const ref = tableRef(t);
  for (const c of t.chains) for (const r of c.rules) out.line(`add rule ${ref} ${c.name} ${ruleText(r)}`);
  for (const s of t.sets) writeElements(`add element ${ref} ${s.name}`, s.elements, out);
}

/**
 * One command for all of a set's elements, an element a line: nft parses and sends a
 * command per line otherwise, which at 10,000 x 10 costs more than the load itself.
 */
export function writeElements(command: string, elements: readonly Element[], out: ScriptSink, keyOnly = false): void {
  if (elements.length === 0) return;
  out.line(`${command} {`);
  const last = elements.length - 1;
  for (let i = 0; i < last; i++) out.line(`\t${elementText(elements[i]!, keyOnly)},`);
  out.line(`\t${elementText(elements[last]!, keyOnly)}`);
  out.line('}');
}

/**
 * The whole table as one `nft -f` script: creates the table if missing, flushes its rules
 * (`flush table`) and the elements of every set it declares (`flush table` leaves
 * elements alone: a changed value would then collide with the old one), then defines
 * everything. Dynamic sets are not flushed: they hold the data path's state (affinity),
 * not ours. nft applies a script as one transaction, so the table is replaced atomically
 * and nothing outside it is touched. Chains and sets the table held but this one does not
 * declare stay, empty of rules, unreferenced; an applier deletes them.
 */
export function writeScript(t: NftTable, out: ScriptSink): void {
  const ref = tableRef(t);
  out.line(`add table ${ref} { ${comment(t.comment)} ; }`);
  out.line(`flush table ${ref}`);
  for (const c of t.chains) out.line(`add chain ${ref} ${c.name}${chainSpec(c)}`);
  for (const s of t.sets) {
    out.line(`add ${s.kind} ${ref} ${s.name} ${setSpec(s)}`);
    if (!s.flags.includes('dynamic')) out.line(`flush ${s.kind} ${ref} ${s.name}`);
  }
  writeContents(t, out);
}

export function scriptText(t: NftTable): string {
  const out = new LineWriter(1024 * 1024);
  writeScript(t, out);
  return out.bytes().toString('latin1');
}
