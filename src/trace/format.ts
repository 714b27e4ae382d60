/**
 * A trace as text for people: the path chain by chain and rule by rule (comment first,
 * then the rule), the probabilistic branches as a tree, then the verdict, the reasons and
 * what was assumed. Branches that only differ in their endpoint are folded into one line.
 */
import { joinHostPort } from '../net/ip.js';
import { table } from '../model/explain.js';
import type { Destination, Outcome, PathSegment, Step, TraceResult } from './types.js';

const FROM = { pod: 'a pod', node: 'the node itself', external: 'outside the cluster' } as const;

function percent(p: number): string {
  const text = (p * 100).toFixed(1);
  return `${text.endsWith('.0') ? text.slice(0, -2) : text}%`;
}

function ruleLines(s: Extract<Step, { kind: 'rule' }>, indent: string): string[] {
  const mark = s.result === 'match' ? '✓' : s.result === 'no-match' ? '✗' : '?';
  const rule = s.body;
  const head = `${indent}${String(s.rule).padStart(3)} ${mark} `;
  const pad = indent + ' '.repeat(head.length - indent.length);
  // A rule may be nothing but its comment: a note for readers of iptables-save.
  const lines = s.comment === null ? [`${head}${rule}`] : [`${head}"${s.comment}"`, ...(rule ? [`${pad}${rule}`] : [])];
  if (s.detail) lines.push(`${pad}${s.result === 'no-match' ? 'no match: ' : s.result === 'not-evaluable' ? 'cannot evaluate: ' : ''}${s.detail}`);
  return lines;
}

/** Where each mode's packets go after routing, and what draws their random choices. */
const VOCABULARY: Record<string, { local: string; forward: string; out: string; random: string }> = {
  iptables: { local: 'filter INPUT', forward: 'filter FORWARD, nat POSTROUTING', out: 'filter OUTPUT, nat POSTROUTING', random: '-m statistic' },
  nftables: { local: 'input hook', forward: 'forward and postrouting hooks', out: 'postrouting hook', random: 'numgen random' },
};

function routeLine(s: Extract<Step, { kind: 'route' }>, words: (typeof VOCABULARY)[string]): string {
  if (s.to === 'local') return `routing: ${s.dst} is on this node -> ${words.local}`;
  if (s.to === 'forward') return `routing: ${s.dst} is elsewhere -> ${words.forward}`;
  return `routing: ${s.dst} -> ${words.out}`;
}

function outcomeText(o: Pick<Outcome, 'verdict' | 'dnat' | 'masquerade' | 'reason' | 'decidedBy'>): string {
  const by = o.decidedBy ? ` by ${o.decidedBy.table} ${o.decidedBy.chain} ${o.decidedBy.rule === 0 ? o.decidedBy.text : `rule ${o.decidedBy.rule}`}` : '';
  switch (o.verdict) {
    case 'dnat':
      return `DNAT to ${o.dnat}, ${o.masquerade ? 'masqueraded' : 'not masqueraded'}`;
    case 'accept':
      return `ACCEPT${by}`;
    case 'drop':
      return `DROP${by}`;
    case 'reject':
      return `REJECT${by}`;
    case 'no-match':
      return 'NO MATCH: no proxy rule applies, the packet goes on unchanged';
    case 'not-evaluable':
      return `NOT EVALUABLE: ${o.reason}`;
  }
}

/** What tells branches apart besides their endpoint: rules, results and how they end. */
function shape(seg: PathSegment): string {
  const endpointChains = new Set(seg.steps.flatMap((s) => (s.kind === 'chain' && s.role === 'endpoint' ? [s.chain] : [])));
  const steps = seg.steps.slice(1).map((s) => {
    if (s.kind === 'route') return `route ${s.to}`;
    const chain = endpointChains.has(s.chain) ? 'endpoint' : s.chain;
    return s.kind === 'rule' ? `${s.table} ${chain} ${s.rule} ${s.result}` : `${s.kind} ${s.table} ${chain}`;
  });
  const o = seg.outcome;
  return JSON.stringify([steps, seg.branches.length, o && [o.verdict, o.masquerade, o.delivery]]);
}

/** `table chain` of a step; null for the routing decision, which is in no chain. */
function chainOf(s: Step): string | null {
  return s.kind === 'route' ? null : `${s.table} ${s.chain}`;
}

class PathPrinter {
  readonly lines: string[] = [];
  private chain = '';

  constructor(private readonly words: (typeof VOCABULARY)[string]) {}

  segment(seg: PathSegment, indent: string): void {
    for (let i = 0; i < seg.steps.length; i++) {
      const s = seg.steps[i]!;
      const next = seg.steps[i + 1];
      const hidden = s.kind === 'chain' && next?.kind === 'skipped' && next.chain === s.chain ? next.count : 0;
      const after = seg.steps[i + (hidden > 0 ? 2 : 1)];
      // A chain entered and left without a rule for this packet: one line under the jump.
      if (s.kind === 'chain' && s.entered !== 'hook' && after !== undefined && chainOf(after) !== chainOf(s)) {
        const rules = hidden > 0 ? `${hidden} rule${hidden === 1 ? '' : 's'}, none for this packet` : 'nothing for this packet';
        this.lines.push(`${indent}        -> ${s.chain}: ${rules}`);
        if (hidden > 0) i++;
        continue;
      }
      this.step(s, indent);
    }
    if (seg.outcome) this.lines.push(`${indent}=> ${outcomeText(seg.outcome)}`);
    if (seg.branches.length === 0) return;
    this.lines.push(`${indent}one of ${seg.branches.length} ways (${seg.chooser ?? this.words.random}):`);
    const first = seg.branches[0]!;
    const chain = this.chain;
    seg.branches.forEach((b, i) => {
      const last = i === seg.branches.length - 1;
      const [fork, rest] = last ? ['└─', '   '] : ['├─', '│  '];
      const pct = percent(b.probability);
      const head = b.path.steps[0];
      if (i > 0 && head?.kind === 'rule' && b.path.outcome && shape(b.path) === shape(first.path)) {
        const entered = b.path.steps[1];
        const target = entered?.kind === 'chain' ? ` -> ${entered.chain}` : '';
        this.lines.push(`${indent}${fork} ${pct.padStart(6)}  rule ${head.rule}${target} => ${outcomeText(b.path.outcome)} (otherwise as the first way)`);
        return;
      }
      this.lines.push(`${indent}${fork} ${pct.padStart(6)}`);
      this.chain = chain;
      this.segment(b.path, indent + rest);
    });
  }

  private step(s: Step, indent: string): void {
    if (s.kind === 'route') {
      this.chain = '';
      this.lines.push(`${indent}${routeLine(s, this.words)}`);
      return;
    }
    const chain = chainOf(s)!;
    if (s.kind === 'chain' || chain !== this.chain) {
      this.lines.push(`${indent}${chain}`);
      this.chain = chain;
    }
    if (s.kind === 'skipped') this.lines.push(`${indent}      ... ${s.count} rule${s.count === 1 ? '' : 's'} for other traffic`);
    else if (s.kind === 'rule') this.lines.push(...ruleLines(s, indent));
  }
}

function headline(ds: Destination[], sticky: boolean): string {
  const first = ds[0]!;
  const affinity = sticky ? ' (first connection; later ones stick to the endpoint chosen)' : '';
  if (ds.every((d) => d.verdict === 'dnat')) {
    const masq = ds.every((d) => d.masquerade) ? ', masqueraded' : ds.every((d) => !d.masquerade) ? ', not masqueraded' : '';
    return `DNAT to ${ds.length === 1 ? first.address : `one of ${ds.length} endpoints`}${masq}${affinity}`;
  }
  if (ds.length === 1) {
    const comment = first.decidedBy?.comment ? ` ("${first.decidedBy.comment}")` : '';
    return `${outcomeText({ ...first, dnat: first.address })}${comment}`;
  }
  return `${ds.length} possible outcomes${affinity}`;
}

function destinationRows(ds: Destination[]): string[] {
  const mixedMasq = ds.some((d) => d.masquerade) && ds.some((d) => !d.masquerade && d.verdict === 'dnat');
  const allDnat = ds.every((d) => d.verdict === 'dnat');
  const rows = ds.map((d) => {
    const e = d.endpoint;
    const where = e ? [e.node === null ? 'no node' : e.local ? `${e.node} (this node)` : e.node, e.zone ?? '-', e.state] : ['', '', ''];
    const what = d.verdict !== 'dnat' ? outcomeText({ ...d, dnat: d.address }) : allDnat ? d.address! : `DNAT to ${d.address}`;
    return [percent(d.probability).padStart(6), what, ...where, mixedMasq && d.masquerade ? 'masqueraded' : ''];
  });
  return table(rows).map((l) => `  ${l.trimEnd()}`);
}

export function formatTrace(r: TraceResult): string {
  const p = r.packet;
  const src = p.srcPort === null ? p.src : joinHostPort(p.src, p.srcPort);
  const out = [`${p.protocol} ${src} -> ${joinHostPort(p.dst, p.dstPort)} from ${FROM[p.from]}, entering ${r.node} (${r.family}, ${r.mode} mode)`];
  if (r.service) out.push(`${r.service.servicePort} (${r.service.protocol}), ${r.service.role}`);
  const printer = new PathPrinter(VOCABULARY[r.mode] ?? VOCABULARY.iptables!);
  printer.segment(r.path, '  ');
  out.push('', 'Path', ...printer.lines);
  const ds = r.destinations;
  out.push('', `Verdict: ${headline(ds, ds.some((d) => d.sticky))}`);
  if (ds.length > 1 || ds[0]?.endpoint) out.push(...destinationRows(ds));
  out.push('', 'Why', ...r.why.map((w) => `  - ${w}`));
  out.push('', 'Assumed', ...r.assumptions.map((a) => `  - ${a}`));
  return `${out.join('\n')}\n`;
}
