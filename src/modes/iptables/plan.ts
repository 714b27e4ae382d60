/**
 * What to hand iptables-restore, and in how many pieces. Pure: rulesets in, restore
 * inputs out; the applier only runs them.
 *
 * On the nf_tables variant the cost of one `--noflush` restore grows much faster than its
 * size (a 10k-service ruleset in one restore takes over 15 minutes, 100 services take
 * 0.1 s), so a full sync is cut into restores of a bounded number of lines, ordered so that
 * no restore ever jumps to a chain that does not exist yet:
 *   1. KUBE-MARK-MASQ, which every service chain may jump to;
 *   2. the service chains, a slice of service ports at a time (each slice complete in
 *      itself: SVC -> SEP, EXT -> SVC/SVL, FW -> EXT), so that slices may be restored
 *      side by side;
 *   3. the fixed and shared chains (KUBE-SERVICES, KUBE-NODEPORTS, filter), which point
 *      into the service chains, then stale chains flushed and deleted.
 * Live traffic never sees a gap: service chains are replaced atomically one restore at a
 * time, and KUBE-SERVICES is rewritten in one piece at the end.
 *
 * A partial sync touches only the service ports that changed: their own chains, plus
 * `-D`/`-I` of the few shared rules that differ. An endpoint change is one small restore.
 *
 * One service port can be larger than a restore should be (10,000 endpoints: 40,000
 * lines, which iptables-nft-restore takes 4.5 s to read where four quarters take 0.7 s).
 * Its endpoint chains, which jump only to KUBE-MARK-MASQ, then go first in restores of
 * their own, and its other chains, which jump to them, after, in full or partial syncs.
 */
import { ENDPOINT_CHAIN_PREFIX, isServiceChain, MARK_MASQ, SERVICES } from './chains.js';
import { restoreLine, writeRestore, type IptablesRuleset, type Rule, type ServicePortRules } from './ruleset.js';

export interface RestoreStep {
  /** For logs: what this restore does. */
  what: string;
  /**
   * Whether it may run beside the steps next to it that may too: it only writes chains
   * of its own, and jumps only to chains that steps before those wrote.
   */
  concurrent?: boolean;
  /** The restore input, to be written in order. */
  chunks: Buffer[];
  lines: number;
}

/**
 * A service port as last written to the kernel: what a later partial sync must undo or
 * keep. Its rule bytes are not kept: holding them would pin the whole first render.
 */
export interface AppliedServicePort {
  shared: Rule[];
  chains: string[];
}

/** A service port just rendered: what it is, and the rules of its chains to write. */
export interface RenderedServicePort extends AppliedServicePort {
  rules: Buffer;
  /** Where in `rules` its endpoint chains' rules begin. */
  endpointsAt: number;
}

export type AppliedServices = Map<string, AppliedServicePort>;

export function renderedServices(rs: IptablesRuleset): Map<string, RenderedServicePort> {
  const out = new Map<string, RenderedServicePort>();
  for (const s of rs.services) out.set(s.key, renderedServicePort(rs, s));
  return out;
}

function renderedServicePort(rs: IptablesRuleset, s: ServicePortRules): RenderedServicePort {
  return { shared: s.shared, chains: s.chains, rules: rs.chainRules.subarray(s.rules.start, s.rules.end), endpointsAt: s.rules.endpoints - s.rules.start };
}

/** What the kernel holds once a ruleset is applied. */
export function appliedServices(rs: IptablesRuleset): AppliedServices {
  const out: AppliedServices = new Map();
  for (const s of rs.services) out.set(s.key, { shared: s.shared, chains: s.chains });
  return out;
}

const ruleKey = (r: Rule) => `${r.table} ${r.chain} ${r.rule}`;

/** The fixed part of a ruleset; when it changes between syncs, only a full sync will do. */
export function fixedSignature(rs: IptablesRuleset): string {
  return JSON.stringify([rs.fixed, rs.nodePortsTail, rs.jumps]);
}

class StepWriter {
  private readonly chunks: Buffer[] = [];
  private text: string[] = [];
  lines = 0;

  line(s: string): void {
    this.text.push(s);
    this.lines++;
  }

  bytes(b: Buffer): void {
    this.flushText();
    this.chunks.push(b);
    this.lines += countLines(b);
  }

  private flushText(): void {
    if (this.text.length > 0) this.chunks.push(Buffer.from(this.text.join('\n') + '\n', 'latin1'));
    this.text = [];
  }

  step(what: string): RestoreStep {
    this.flushText();
    return { what, chunks: this.chunks, lines: this.lines };
  }
}

/** The offset just past the `n`th line of `b` from `from`. */
function afterLines(b: Buffer, from: number, n: number): number {
  let at = from;
  for (let i = 0; i < n; i++) at = b.indexOf(10, at) + 1;
  return at;
}

/** Lines a service port's chains take in a restore: declarations and rules. */
const portLines = (p: RenderedServicePort) => p.chains.length + countLines(p.rules);

/**
 * A large service port's endpoint chains in restores of about `maxLines` lines each, and
 * what is left of it (the chains that jump to them) for a later restore.
 */
function endpointChainSteps(p: RenderedServicePort, maxLines: number, what: string): { steps: RestoreStep[]; head: { chains: string[]; rules: Buffer } } {
  const endpointChains = p.chains.filter((c) => c.startsWith(ENDPOINT_CHAIN_PREFIX));
  const perStep = Math.max(1, Math.floor(maxLines / 3));
  const steps: RestoreStep[] = [];
  let at = p.endpointsAt;
  for (let i = 0; i < endpointChains.length; i += perStep) {
    const batch = endpointChains.slice(i, i + perStep);
    const end = afterLines(p.rules, at, 2 * batch.length);
    const w = new StepWriter();
    w.line('*nat');
    for (const c of batch) w.line(`:${c} - [0:0]`);
    w.bytes(p.rules.subarray(at, end));
    w.line('COMMIT');
    steps.push(w.step(`${what}: endpoint chains ${i + 1}-${i + batch.length} of ${endpointChains.length}`));
    at = end;
  }
  return { steps, head: { chains: p.chains.filter((c) => !c.startsWith(ENDPOINT_CHAIN_PREFIX)), rules: p.rules.subarray(0, p.endpointsAt) } };
}

/**
 * Stale chains too many for one restore: endpoint chains, which nothing refers to once the
 * chains that jumped to them are rewritten or gone, are deleted after, a batch at a time.
 */
function splitStale(stale: string[], maxLines: number): { now: string[]; later: string[] } {
  if (stale.length * 2 <= maxLines) return { now: stale, later: [] };
  return { now: stale.filter((c) => !c.startsWith(ENDPOINT_CHAIN_PREFIX)), later: stale.filter((c) => c.startsWith(ENDPOINT_CHAIN_PREFIX)) };
}

function staleChainSteps(stale: string[], maxLines: number, what: string): RestoreStep[] {
  const perStep = Math.max(1, Math.floor(maxLines / 2));
  const steps: RestoreStep[] = [];
  for (let i = 0; i < stale.length; i += perStep) {
    const batch = stale.slice(i, i + perStep);
    const w = new StepWriter();
    w.line('*nat');
    for (const c of batch) w.line(`:${c} - [0:0]`);
    for (const c of batch) w.line(`-X ${c}`);
    w.line('COMMIT');
    steps.push(w.step(`${what}: stale endpoint chains ${i + 1}-${i + batch.length} of ${stale.length} removed`));
  }
  return steps;
}

function countLines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
}

/**
 * A full sync as restores of at most about `maxLines` lines each (one restore when the
 * ruleset fits). `existingChains` are the service chains now in the kernel's nat table;
 * those the ruleset no longer has are deleted.
 */
export function fullSyncSteps(rs: IptablesRuleset, existingChains: Iterable<string>, maxLines: number): RestoreStep[] {
  const wanted = new Set<string>();
  for (const s of rs.services) for (const c of s.chains) wanted.add(c);
  const stale = splitStale([...existingChains].filter((c) => isServiceChain(c) && !wanted.has(c)).sort(), maxLines);
  const chainLines = countLines(rs.chainRules);

  if (chainLines + wanted.size <= maxLines) {
    const w = new StepWriter();
    writeRestore(rs, w, { serviceChains: true, stale: stale.now });
    return [w.step(`full sync: ${rs.services.length} service ports in one restore`), ...staleChainSteps(stale.later, maxLines, 'full sync')];
  }

  const steps: RestoreStep[] = [];
  const markMasq = rs.fixed.find((c) => c.table === 'nat' && c.name === MARK_MASQ);
  if (markMasq) {
    const w = new StepWriter();
    w.line('*nat');
    w.line(`:${markMasq.name} - [0:0]`);
    for (const rule of markMasq.rules) w.line(restoreLine({ table: 'nat', chain: markMasq.name, rule }));
    w.line('COMMIT');
    steps.push(w.step('full sync: KUBE-MARK-MASQ'));
  }
  let i = 0;
  while (i < rs.services.length) {
    const first = i;
    const w = new StepWriter();
    w.line('*nat');
    let lines = 0;
    while (i < rs.services.length && (i === first || lines < maxLines)) {
      const port = renderedServicePort(rs, rs.services[i]!);
      let write: { chains: string[]; rules: Buffer } = port;
      if (portLines(port) > maxLines) {
        // A slice is closed before a large service port, whose head then has one of its own.
        if (i > first) break;
        const cut = endpointChainSteps(port, maxLines, `full sync: service port ${i + 1}`);
        steps.push(...cut.steps);
        write = cut.head;
        lines = maxLines;
      }
      for (const c of write.chains) w.line(`:${c} - [0:0]`);
      w.bytes(write.rules);
      lines += write.chains.length + countLines(write.rules);
      i++;
    }
    w.line('COMMIT');
    steps.push({ ...w.step(`full sync: service chains ${first + 1}-${i} of ${rs.services.length}`), concurrent: true });
  }
  const w = new StepWriter();
  writeRestore(rs, w, { serviceChains: false, stale: stale.now });
  steps.push(w.step(`full sync: fixed and shared chains, ${stale.now.length} stale chains removed`));
  steps.push(...staleChainSteps(stale.later, maxLines, 'full sync'));
  return steps;
}

/**
 * The restores that bring the kernel from `prev` to `next` for the service ports in
 * `changed` (added, updated or removed): one, or none when none of them is known before
 * or after; more when a changed service port, or what is left of a removed one, is larger
 * than `maxLines` (see above).
 */
export function partialSyncSteps(
  prev: AppliedServices,
  next: Map<string, RenderedServicePort>,
  changed: Iterable<string>,
  maxLines: number,
): RestoreStep[] {
  const steps: RestoreStep[] = [];
  const deleted: Rule[] = [];
  const added: Rule[] = [];
  const declared: string[] = [];
  const stale: string[] = [];
  const bodies: Buffer[] = [];
  let count = 0;
  for (const key of changed) {
    const before = prev.get(key);
    const after = next.get(key);
    if (!before && !after) continue;
    count++;
    const beforeRules = new Set(before?.shared.map(ruleKey));
    const afterRules = new Set(after?.shared.map(ruleKey));
    for (const r of before?.shared ?? []) if (!afterRules.has(ruleKey(r))) deleted.push(r);
    for (const r of after?.shared ?? []) if (!beforeRules.has(ruleKey(r))) added.push(r);
    const keep = new Set(after?.chains);
    for (const c of before?.chains ?? []) if (!keep.has(c)) stale.push(c);
    if (!after) continue;
    let write: { chains: string[]; rules: Buffer } = after;
    if (portLines(after) > maxLines) {
      const cut = endpointChainSteps(after, maxLines, `partial sync: ${key}`);
      steps.push(...cut.steps);
      write = cut.head;
    }
    declared.push(...write.chains);
    bodies.push(write.rules);
  }
  if (count === 0) return steps;
  const { now: staleNow, later: staleLater } = splitStale(stale, maxLines);

  const w = new StepWriter();
  const del = (r: Rule) => w.line(`-D ${r.chain} ${r.rule}`);
  // nat KUBE-SERVICES ends with the node-ports rule, which must stay last: insert at the top.
  const add = (r: Rule) => w.line(r.table === 'nat' && r.chain === SERVICES ? `-I ${SERVICES} 1 ${r.rule}` : restoreLine(r));

  const filterDeleted = deleted.filter((r) => r.table === 'filter');
  const filterAdded = added.filter((r) => r.table === 'filter');
  if (filterDeleted.length + filterAdded.length > 0) {
    w.line('*filter');
    filterDeleted.forEach(del);
    filterAdded.forEach(add);
    w.line('COMMIT');
  }
  w.line('*nat');
  for (const c of [...declared, ...staleNow]) w.line(`:${c} - [0:0]`);
  deleted.filter((r) => r.table === 'nat').forEach(del);
  added.filter((r) => r.table === 'nat').forEach(add);
  for (const b of bodies) w.bytes(b);
  for (const c of staleNow) w.line(`-X ${c}`);
  w.line('COMMIT');
  steps.push(w.step(`partial sync: ${count} service ports`));
  steps.push(...staleChainSteps(staleLater, maxLines, 'partial sync'));
  return steps;
}
