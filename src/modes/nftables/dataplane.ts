/**
 * The nftables dataplane, simulated: a packet walks the base chains of each hook the
 * kernel takes it through (prerouting or output, routing, input or forward, postrouting),
 * in priority order, rule by rule. `numgen random mod N` forks the walk N ways, so the
 * result is every way the packet can go, each with its probability.
 */
import { joinHostPort, parseIP, type IPFamily, type ParsedIP } from '../../net/ip.js';
import { packetFamily } from '../../trace/packet.js';
import { endOf, newFate, NodeAddresses, outcomeOf, packetFields, type Fate } from '../../trace/walk.js';
import type { Dataplane, DataplaneTrace, Outcome, Packet, PathSegment, RuleRef, RuleResult, RuleRole, Step, Verdict } from '../../trace/types.js';
import { portLabels } from './dryrun.js';
import type { Element, Expr, ParsedRule, Selector, Verdict as NftVerdict } from './expr.js';
import { keyName, lookup, matchExpr, readKey, showKey, type MatchContext, type PacketState } from './match.js';
import { chainRole, elementRole, ruleRole } from './roles.js';
import type { NftTable } from './ruleset.js';
import { parseNftScript } from './script.js';
import { renderedTables, ruleAt, type TraceChain, type TraceTable, type TraceTables } from './tables.js';

/** A hook's name, or `route`: the routing decision between hooks. */
type Hook = string;

interface Frame {
  table: TraceTable;
  chain: TraceChain;
  /** Index of the next rule to evaluate. */
  next: number;
  /** The map element that sent the packet here, when one did. */
  via: RuleRef | null;
}

/** One possible world of the walk; a fork copies it. */
interface Flow extends Fate {
  state: PacketState;
  hooks: Hook[];
  /** The base chains of the current hook still to run, in priority order. */
  bases: { table: TraceTable; chain: TraceChain }[];
  stack: Frame[];
  /** Hidden rules passed since the last recorded step, in the current chain. */
  hidden: number;
  /** A rule whose numgen branch is chosen, to evaluate first when this flow resumes. */
  pending: number | null;
  /** The base chain this walk is in: its policy applies when the packet leaves it, even by a goto's chain. */
  base: { ref: string; chain: TraceChain } | null;
}

function copy(f: Flow): Flow {
  return { ...f, state: { ...f.state }, hooks: [...f.hooks], bases: [...f.bases], stack: f.stack.map((fr) => ({ ...fr })) };
}

const MAX_DEPTH = 64;
const FAMILIES: Record<IPFamily, string[]> = { IPv4: ['ip', 'inet'], IPv6: ['ip6', 'inet'] };
const hex = (n: number) => `0x${n.toString(16)}`;

function markAfter(e: Extract<Expr, { kind: 'mark-set' }>, before: number): number {
  switch (e.op) {
    case 'or':
      return (before | e.value) >>> 0;
    case 'xor':
      return (before ^ e.value) >>> 0;
    case 'and':
      return (before & e.value) >>> 0;
    case 'set':
      return e.value >>> 0;
  }
}

/** The numgen modulus a rule draws from, if it does. */
function numgenOf(rule: ParsedRule): number | null {
  for (const e of rule.exprs) {
    const key = e.kind === 'match' || e.kind === 'vmap' ? e.key : e.kind === 'dnat' && e.to.kind === 'map' ? e.to.key : [];
    const n = key.find((s) => s.kind === 'numgen');
    if (n?.kind === 'numgen') return n.mod;
  }
  return null;
}

const policyRef = (base: NonNullable<Flow['base']>): RuleRef => ({ table: base.ref, chain: base.chain.name, rule: 0, text: 'policy drop', comment: null, role: null });

const showVerdict = (v: NftVerdict) => ('chain' in v ? `${v.kind} ${v.chain}` : v.kind);

/** `IP . PORT` map data or `IP[:PORT]` text as the DNAT target `IP:PORT`; null when unreadable. */
function dnatTarget(parts: string[], dport: number): { ip: ParsedIP; port: number } | null {
  let addr = parts[0]!;
  let port = parts[1] ?? null;
  const joined = parts.length === 1 ? (/^\[([^\]]+)\](?::([0-9]+))?$/.exec(addr) ?? /^([0-9.]+):([0-9]+)$/.exec(addr)) : null;
  if (joined) [addr, port] = [joined[1]!, joined[2] ?? null];
  const ip = parseIP(addr);
  const n = port === null ? dport : Number(port);
  return ip && Number.isInteger(n) && n > 0 && n < 65536 ? { ip, port: n } : null;
}

export class NftablesDataplane implements Dataplane {
  readonly mode = 'nftables';
  readonly labels = portLabels;
  private readonly node: NodeAddresses;

  /** Rendered tables: rules and elements are read as the packet reaches them. */
  static ofRuleset(tables: readonly NftTable[], nodeIPs: string[]): NftablesDataplane {
    return new NftablesDataplane(renderedTables(tables), nodeIPs);
  }

  /** An `nft -f` script: a dry run's. */
  static ofScript(text: string, nodeIPs: string[]): NftablesDataplane {
    return new NftablesDataplane(parseNftScript(text), nodeIPs);
  }

  /** `nodeIPs`: the node's own addresses (any family); loopback is always local. */
  constructor(
    private readonly tables: TraceTables,
    nodeIPs: string[],
  ) {
    this.node = new NodeAddresses(nodeIPs);
  }

  /** The base chains on a hook for a family, in the order the kernel runs them. */
  private basesOn(family: IPFamily, hook: string): Flow['bases'] {
    const out: (Flow['bases'][number] & { priority: number })[] = [];
    for (const t of this.tables.values()) {
      if (!FAMILIES[family].includes(t.family)) continue;
      for (const c of t.chains.values()) if (c.base?.hook === hook) out.push({ table: t, chain: c, priority: c.base.priority });
    }
    return out.sort((a, b) => a.priority - b.priority).map(({ table, chain }) => ({ table, chain }));
  }

  trace(packet: Packet): DataplaneTrace {
    const family = packetFamily(packet);
    const first = packet.from === 'node' ? 'output' : 'prerouting';
    const state: PacketState = { ...packetFields(packet), numgen: null };
    const flow: Flow = { ...newFate(), state, hooks: [first, 'route'], bases: [], stack: [], hidden: 0, pending: null, base: null };
    const outcomes: Outcome[] = [];
    const path = this.walk(flow, packet, family, outcomes);
    const unhooked = this.basesOn(family, first).length === 0;
    return {
      mode: this.mode,
      family,
      packet,
      localAddresses: this.node.of(family),
      path,
      outcomes,
      assumptions: [
        'the packet opens a new connection (ct state new)',
        'no table but kube-proxy\'s drops or rewrites the packet, and base chains accept what falls off their end unless the input declares another policy',
        'the node\'s local addresses (fib type local) are those of its Node object plus loopback; other interface addresses (a CNI bridge, say) are not known',
        ...(unhooked ? [`the input has no base chain on the ${first} hook for ${family}, so no packet reaches the proxy's rules`] : []),
      ],
    };
  }

  private ref(frame: Frame, index: number): RuleRef {
    const rule = ruleAt(frame.chain, index, ruleRole);
    return { table: `${frame.table.family} ${frame.table.name}`, chain: frame.chain.name, rule: index + 1, text: frame.chain.rules[index]!.text, comment: rule.comment, role: rule.role };
  }

  /** Walks one flow to its end; numgen forks walk each of their branches recursively. */
  private walk(flow: Flow, packet: Packet, family: IPFamily, outcomes: Outcome[]): PathSegment {
    const seg: PathSegment = { steps: [], branches: [], outcome: null };
    const ctx: MatchContext = { isLocal: (ip) => this.node.isLocal(ip), set: (name) => flow.stack.at(-1)?.table.sets.get(name) };
    const record = (step: Step) => seg.steps.push(step);
    const flush = () => {
      const top = flow.stack.at(-1);
      if (flow.hidden > 0 && top) record({ kind: 'skipped', table: `${top.table.family} ${top.table.name}`, chain: top.chain.name, count: flow.hidden });
      flow.hidden = 0;
    };
    const finish = (verdict: Verdict, decidedBy: RuleRef | null, reason: string | null = null): PathSegment => {
      flush();
      const outcome = outcomeOf(flow, verdict, decidedBy, reason);
      seg.outcome = outcome;
      outcomes.push(outcome);
      return seg;
    };
    const ruleStep = (frame: Frame, ref: RuleRef, result: RuleResult, detail: string | null): Step => {
      const r = ruleAt(frame.chain, ref.rule - 1, ruleRole);
      return { kind: 'rule', table: ref.table, chain: ref.chain, rule: ref.rule, text: ref.text, body: r.body, comment: ref.comment, role: ref.role, result, detail };
    };
    const enter = (table: TraceTable, chain: TraceChain, entered: 'hook' | 'jump' | 'goto', via: RuleRef | null) => {
      flow.stack.push({ table, chain, next: 0, via });
      record({ kind: 'chain', table: `${table.family} ${table.name}`, chain: chain.name, entered, role: chainRole(chain.name) });
    };
    /** Leaves the current base chain: what is left of the hook runs next. */
    const acceptBase = () => {
      flow.stack = [];
    };

    for (;;) {
      const frame = flow.stack.at(-1);
      if (!frame) {
        const next = flow.bases.shift();
        if (next) {
          flow.base = { ref: `${next.table.family} ${next.table.name}`, chain: next.chain };
          enter(next.table, next.chain, 'hook', null);
          continue;
        }
        const hook = flow.hooks.shift();
        if (!hook) {
          const end = endOf(flow);
          return finish(end.verdict, end.by);
        }
        if (hook === 'route') {
          this.route(flow, packet);
          record({ kind: 'route', dst: joinHostPort(flow.state.dst.text, flow.state.dport), to: flow.delivery! });
          continue;
        }
        flow.bases = this.basesOn(family, hook);
        continue;
      }
      if (frame.next >= frame.chain.rules.length && flow.pending === null) {
        flush();
        flow.stack.pop();
        if (flow.stack.length === 0 && flow.base!.chain.policy === 'drop') return finish('drop', policyRef(flow.base!));
        continue;
      }
      const index = flow.pending ?? frame.next++;
      const forked = flow.pending !== null;
      flow.pending = null;
      const rule = ruleAt(frame.chain, index, ruleRole);
      const mod = numgenOf(rule);
      const base = this.ref(frame, index);
      // A rule drawing from numgen forks only when it holds for some draw: a balancing
      // rule of another endpoint count is about other service ports.
      if (mod !== null && !forked && this.holdsForSomeDraw(rule.exprs, mod, frame, base, flow, ctx)) {
        flush();
        for (let k = 0; k < mod; k++) {
          const branch = copy(flow);
          branch.probability /= mod;
          branch.state.numgen = k;
          branch.pending = index;
          seg.branches.push({ probability: branch.probability, path: this.walk(branch, packet, family, outcomes) });
        }
        return seg;
      }
      const chosen = forked ? `numgen gave ${flow.state.numgen}: chosen with probability 1/${mod} of the packets reaching this rule` : null;
      const r = this.apply(rule.exprs, frame, base, flow, ctx);
      flow.state.numgen = null;
      if (r.kind === 'no-match') {
        // A node-port rule whose address test held is shown: it says the address takes node ports.
        const shown = forked || (base.role?.kind === 'node-ports' && r.inMap);
        if (r.hidden && !shown) {
          flow.hidden++;
          continue;
        }
        flush();
        record(ruleStep(frame, base, 'no-match', [chosen, r.why].filter((x) => x !== null).join('; ')));
        continue;
      }
      flush();
      if (r.kind === 'not-evaluable') {
        record(ruleStep(frame, base, 'not-evaluable', r.why));
        return finish('not-evaluable', base, `${base.table} ${base.chain} rule ${base.rule}: ${r.why}`);
      }
      const ref = r.element ? { ...base, comment: r.element.comment ?? base.comment, role: r.role } : base;
      record(ruleStep(frame, ref, 'match', [chosen, ...r.notes].filter((x) => x !== null).join('; ') || null));
      if (r.marked && !flow.markedBy) {
        // The masquerade reason is the rule that sent the packet to be marked, not the mark rule.
        const caller = flow.stack.at(-2);
        flow.markedBy = chainRole(frame.chain.name) === 'masquerade' && caller ? this.ref(caller, caller.next - 1) : ref;
      }
      const v = r.verdict;
      if (r.dnat) {
        flow.dnat = r.dnat;
        flow.dnatBy = ref;
        acceptBase();
        continue;
      }
      if (r.masquerade) {
        flow.masquerade = true;
        acceptBase();
        continue;
      }
      if (v === null) continue;
      // A verdict with no match of its own, in a chain a map element sent the packet to
      // (reject-chain, say), is that element's decision.
      const decider = frame.via && rule.exprs.every((e) => e.kind === 'verdict') ? frame.via : ref;
      switch (v.kind) {
        case 'jump':
        case 'goto': {
          const target = frame.table.chains.get(v.chain);
          if (!target) return finish('not-evaluable', ref, `${ref.table} ${ref.chain} rule ${ref.rule}: chain ${v.chain} is not in the ruleset`);
          if (flow.stack.length >= MAX_DEPTH) return finish('not-evaluable', ref, `more than ${MAX_DEPTH} nested chains: a jump loop?`);
          if (v.kind === 'goto') flow.stack.pop();
          enter(frame.table, target, v.kind, r.element ? ref : null);
          continue;
        }
        case 'accept':
          if (flow.base!.chain.base?.type === 'filter') flow.acceptedBy = decider;
          acceptBase();
          continue;
        case 'drop':
          return finish('drop', decider);
        case 'reject':
          return finish('reject', decider);
        case 'return': {
          flow.stack.pop();
          if (flow.stack.length === 0 && flow.base!.chain.policy === 'drop') return finish('drop', policyRef(flow.base!));
          continue;
        }
        case 'continue':
          continue;
      }
    }
  }

  private holdsForSomeDraw(exprs: Expr[], mod: number, frame: Frame, ref: RuleRef, flow: Flow, ctx: MatchContext): boolean {
    for (let k = 0; k < mod; k++) {
      const trial = copy(flow);
      trial.state.numgen = k;
      if (this.apply(exprs, frame, ref, trial, ctx).kind !== 'no-match') return true;
    }
    return false;
  }

  /** A rule's expressions in order, as the kernel runs them: matches stop it, statements act. */
  private apply(exprs: Expr[], frame: Frame, ref: RuleRef, flow: Flow, ctx: MatchContext): Applied {
    const out: Extract<Applied, { kind: 'match' }> = { kind: 'match', verdict: null, element: null, role: ref.role, notes: [], dnat: null, masquerade: false, marked: false };
    const p = flow.state;
    for (const e of exprs) {
      switch (e.kind) {
        case 'match': {
          const m = matchExpr(e, p, ctx);
          if (m.ok === false) return { kind: 'no-match', hidden: m.hidden, inMap: false, why: m.why };
          if (m.ok === null) return { kind: 'not-evaluable', why: m.why };
          break;
        }
        case 'vmap': {
          const found = this.mapLookup(e.key, e.map, ctx, p);
          if ('why' in found) return found;
          if (!found.element.value || Array.isArray(found.element.value)) return { kind: 'not-evaluable', why: `${found.where} element ${found.element.key.join(' . ')} holds no verdict` };
          out.verdict = found.element.value;
          out.element = found.element;
          out.role = found.set === null ? ref.role : elementRole(found.set, found.element) ?? ref.role;
          out.notes.push(`${showKey(found.values)} is in ${found.where}: ${showVerdict(found.element.value)}`);
          break;
        }
        case 'verdict':
          out.verdict = e.verdict;
          break;
        case 'dnat': {
          let parts: string[];
          if (e.to.kind === 'literal') parts = [e.to.text];
          else {
            const found = this.mapLookup(e.to.key, e.to.map, ctx, p);
            if ('why' in found) return found;
            if (!Array.isArray(found.element.value)) return { kind: 'not-evaluable', why: `${found.where} element ${found.element.key.join(' . ')} holds no address` };
            parts = found.element.value;
            out.element = found.element;
            out.notes.push(`${showKey(found.values)} is in ${found.where}`);
          }
          const to = dnatTarget(parts, p.dport);
          if (!to) return { kind: 'not-evaluable', why: `cannot read the DNAT target ${parts.join(' . ')}` };
          p.dst = to.ip;
          p.dport = to.port;
          p.dnat = true;
          out.dnat = joinHostPort(to.ip.text, to.port);
          out.notes.push(`destination becomes ${out.dnat}`);
          return out;
        }
        case 'masquerade':
          out.masquerade = true;
          out.notes.push('source becomes the address of the node\'s outgoing interface');
          return out;
        case 'mark-set': {
          const before = p.mark;
          p.mark = markAfter(e, before);
          if (p.mark & ~before) out.marked = true;
          out.notes.push(`packet mark ${hex(before)} -> ${hex(p.mark)}`);
          break;
        }
        case 'set-update':
          flow.sticky = true;
          out.notes.push(`records the client in @${e.set}: its next connections skip the balancing and return here (session affinity)`);
          break;
        case 'unsupported':
          return { kind: 'not-evaluable', why: `${e.text} is not something the trace can evaluate` };
      }
    }
    return out;
  }

  private mapLookup(
    key: Selector[],
    map: Extract<Expr, { kind: 'vmap' }>['map'],
    ctx: MatchContext,
    p: PacketState,
  ): { element: Element; set: string | null; where: string; values: NonNullable<ReturnType<typeof readKey>> } | Extract<Applied, { kind: 'no-match' | 'not-evaluable' }> {
    const values = readKey(key, p, ctx);
    const hidden = key.some((s) => (s.kind === 'addr' && s.field === 'daddr') || s.kind === 'dport' || s.kind === 'l4proto');
    if (!values) return { kind: 'no-match', hidden, inMap: false, why: `the packet is ${p.protocol}` };
    const r = lookup(map, values, ctx);
    if ('missing' in r) return { kind: 'not-evaluable', why: r.missing };
    const where = r.set === null ? 'the rule\'s map' : `@${r.set}`;
    if (!r.found) return { kind: 'no-match', hidden, inMap: true, why: `${keyName(key)} ${showKey(values)} is not in ${where}` };
    return { element: r.found, set: r.set, where, values };
  }

  /** The routing decision after prerouting or output: deliver here, or send on. */
  private route(flow: Flow, packet: Packet): void {
    const local = this.node.isLocal(flow.state.dst);
    if (packet.from === 'node') {
      flow.delivery = local ? 'local' : 'out';
      flow.hooks = ['postrouting', ...(local ? ['input'] : [])];
    } else {
      flow.delivery = local ? 'local' : 'forward';
      flow.hooks = local ? ['input'] : ['forward', 'postrouting'];
    }
  }
}

type Applied =
  | {
      kind: 'match';
      verdict: NftVerdict | null;
      /** The map element that gave the verdict or the DNAT target. */
      element: Element | null;
      role: RuleRole | null;
      notes: string[];
      dnat: string | null;
      masquerade: boolean;
      /** The rule set mark bits that were clear. */
      marked: boolean;
    }
  /** `inMap`: the packet had no element in a map it was looked up in. */
  | { kind: 'no-match'; hidden: boolean; inMap: boolean; why: string }
  | { kind: 'not-evaluable'; why: string };

