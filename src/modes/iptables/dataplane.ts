/**
 * The iptables dataplane, simulated: a packet walks the hooks the kernel would take it
 * through (nat PREROUTING or OUTPUT, routing, filter FORWARD/INPUT/OUTPUT, nat
 * POSTROUTING), chain by chain and rule by rule. `-m statistic` forks the walk, so the
 * result is every way the packet can go, each with its probability.
 */
import { joinHostPort, parseIP, type IPFamily } from '../../net/ip.js';
import { packetFamily } from '../../trace/packet.js';
import { endOf, newFate, NodeAddresses, outcomeOf, packetFields, type Fate } from '../../trace/walk.js';
import { TraceError, type ChainRole, type Dataplane, type DataplaneTrace, type Outcome, type Packet, type PathSegment, type RuleRef, type RuleResult, type Step, type Verdict } from '../../trace/types.js';
import { matchRule, type MatchContext, type PacketState } from './match.js';
import { chainRole, portLabels } from './roles.js';
import type { Target } from './rule.js';
import type { IptablesRuleset, JumpRule } from './ruleset.js';
import { parseIptablesRestore, rulesetTables, type IptablesRule, type IptablesTables } from './tables.js';

type Hook = { table: string; chain: string } | 'route';

interface Frame {
  chain: string;
  /** Index of the next rule to evaluate. */
  next: number;
}

/** One possible world of the walk; a fork copies it. */
interface Flow extends Fate {
  state: PacketState;
  hooks: Hook[];
  table: string;
  stack: Frame[];
  probability: number;
  /** Hidden rules passed since the last recorded step, in the current chain. */
  hidden: number;
  /** A rule that matched in a fork, to apply first when this flow resumes. */
  pending: { rule: IptablesRule; ref: RuleRef; detail: string | null } | null;
}

function copy(f: Flow): Flow {
  return { ...f, state: { ...f.state }, hooks: [...f.hooks], stack: f.stack.map((fr) => ({ ...fr })) };
}

const MAX_DEPTH = 64;

const hex = (n: number) => `0x${n.toString(16)}`;

function markAfter(t: Extract<Target, { kind: 'MARK' }>, before: number): number {
  const v = t.value >>> 0;
  return (t.op === 'or' ? before | v : t.op === 'xor' ? before ^ v : (before & ~t.mask) ^ v) >>> 0;
}

/** What a matched rule's target does to the packet, in words; null when it only decides. */
function effectOf(t: Target, state: PacketState): string | null {
  switch (t.kind) {
    case 'DNAT':
      return `destination becomes ${t.to}`;
    case 'MARK':
      return `packet mark ${hex(state.mark)} -> ${hex(markAfter(t, state.mark))}`;
    case 'MASQUERADE':
      return 'source becomes the address of the node\'s outgoing interface';
    default:
      return null;
  }
}

/** A rule as a step of the path: where it stands, what it says, and what it did here. */
function ruleStep(ref: RuleRef, rule: IptablesRule, result: RuleResult, detail: string | null): Step {
  return { kind: 'rule', table: ref.table, chain: ref.chain, rule: ref.rule, text: rule.text, body: rule.body, comment: rule.comment, role: rule.role, result, detail };
}

function ruleRef(table: string, chain: string, index: number, rule: IptablesRule): RuleRef {
  return { table, chain, rule: index + 1, text: rule.text, comment: rule.comment, role: rule.role };
}

/**
 * What another mode built on these rules adds (ipvs mode): ipset lookups, its own chain
 * roles, and a table `ipvs` whose chain `LOCAL_IN` runs after filter INPUT for packets
 * delivered locally, as IPVS does; a DNAT there sends the packet on through nat POSTROUTING.
 */
export interface DataplaneExtras {
  inSet?: MatchContext['inSet'];
  roles?: (table: string, chain: string) => ChainRole | null;
}

/** The table of the IPVS hook: a virtual server's choice of real server, written as rules. */
export const IPVS_TABLE = 'ipvs';
export const IPVS_HOOK = 'LOCAL_IN';

export class IptablesDataplane implements Dataplane {
  readonly mode = 'iptables';
  readonly labels = portLabels;
  private readonly node: NodeAddresses;
  private readonly ctx: MatchContext;

  /** A rendered ruleset, with its jump rules; service chains are read as the packet reaches them. */
  static ofRuleset(rs: IptablesRuleset, nodeIPs: string[]): IptablesDataplane {
    return new IptablesDataplane(rulesetTables(rs), nodeIPs, rs.family);
  }

  /**
   * Restore text (a dry run's, or iptables-save's) and the jump rules the agent ensures
   * outside it, which a dry run only shows as comments.
   */
  static ofRestoreText(text: string, jumps: readonly JumpRule[], nodeIPs: string[]): IptablesDataplane {
    return new IptablesDataplane(parseIptablesRestore(text, jumps), nodeIPs, null);
  }

  /** `nodeIPs`: the node's own addresses (any family); loopback is always local. `family`: of the rules, when known. */
  constructor(
    private readonly tables: IptablesTables,
    nodeIPs: string[],
    private readonly family: IPFamily | null = null,
    private readonly extras: DataplaneExtras = {},
  ) {
    this.node = new NodeAddresses(nodeIPs);
    this.ctx = { isLocal: (ip) => this.node.isLocal(ip), inSet: extras.inSet };
  }

  trace(packet: Packet): DataplaneTrace {
    const family = packetFamily(packet);
    if (this.family !== null && this.family !== family) throw new TraceError(`the packet is ${family}, the ruleset ${this.family}`);
    const state: PacketState = { ...packetFields(packet), bridged: packet.from === 'pod' };
    const first: Hook = packet.from === 'node' ? { table: 'nat', chain: 'OUTPUT' } : { table: 'nat', chain: 'PREROUTING' };
    const flow: Flow = { ...newFate(), state, hooks: [first, 'route'], table: 'nat', stack: [], hidden: 0, pending: null };
    const outcomes: Outcome[] = [];
    const path = this.walk(flow, packet, outcomes);
    const unhooked = (this.rules(first.table, first.chain) ?? []).length === 0;
    return {
      mode: this.mode,
      family,
      packet,
      localAddresses: this.node.of(family),
      path,
      outcomes,
      assumptions: [
        'the packet opens a new connection (conntrack state NEW)',
        'built-in chains hold only the jump rules kube-proxy-ts ensures, and accept what falls off their end unless the input declares another policy',
        'the node\'s local addresses are those of its Node object plus loopback; other interface addresses (a CNI bridge, say) are not known',
        ...(unhooked ? [`the input has no rule in ${first.table} ${first.chain}, so no packet reaches the proxy's chains: the jump rules are missing (the dry run lists them as comments)`] : []),
      ],
    };
  }

  private role(table: string, chain: string): ChainRole {
    return this.extras.roles?.(table, chain) ?? chainRole(table, chain);
  }

  private rules(table: string, chain: string): IptablesRule[] | undefined {
    return this.tables.get(table)?.rules(chain);
  }

  /** Walks one flow to its end; forks walk their taken side recursively. */
  private walk(flow: Flow, packet: Packet, outcomes: Outcome[]): PathSegment {
    const root: PathSegment = { steps: [], branches: [], outcome: null };
    let seg = root;
    // After a fork, `seg` is the not-taken continuation, attached to `host` only once it
    // records a step: consecutive forks then read as sibling branches, not a nested ladder.
    let host: PathSegment | null = null;
    const record = (step: Step) => {
      if (host) {
        host.branches.push({ probability: flow.probability, path: seg });
        host = null;
      }
      seg.steps.push(step);
    };
    const flush = () => {
      const top = flow.stack.at(-1);
      if (flow.hidden > 0 && top) record({ kind: 'skipped', table: flow.table, chain: top.chain, count: flow.hidden });
      flow.hidden = 0;
    };
    const finish = (verdict: Verdict, decidedBy: RuleRef | null, reason: string | null = null): PathSegment => {
      flush();
      const outcome = outcomeOf(flow, verdict, decidedBy, reason);
      if (host) host.branches.push({ probability: flow.probability, path: seg });
      seg.outcome = outcome;
      outcomes.push(outcome);
      return root;
    };
    /** Leaves a built-in chain: its policy decides whether the packet goes on. */
    const endHook = (chain: string): boolean => {
      const policy = this.tables.get(flow.table)?.policies.get(chain) ?? 'ACCEPT';
      flow.stack = [];
      return policy === 'ACCEPT';
    };

    for (;;) {
      let applying = flow.pending;
      flow.pending = null;
      const frame = flow.stack.at(-1);
      if (!applying && !frame) {
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
        flow.table = hook.table;
        flow.stack.push({ chain: hook.chain, next: 0 });
        record({ kind: 'chain', table: hook.table, chain: hook.chain, entered: 'hook', role: this.role(hook.table, hook.chain) });
        continue;
      }
      if (!applying) {
        const rules = this.rules(flow.table, frame!.chain) ?? [];
        if (frame!.next >= rules.length) {
          flush();
          flow.stack.pop();
          if (flow.stack.length === 0 && !endHook(frame!.chain)) {
            const policy = this.tables.get(flow.table)!.policies.get(frame!.chain)!;
            return finish('drop', { table: flow.table, chain: frame!.chain, rule: 0, text: `policy ${policy}`, comment: null, role: null });
          }
          continue;
        }
        const index = frame!.next++;
        const rule = rules[index]!;
        const ref = ruleRef(flow.table, frame!.chain, index, rule);
        const m = matchRule(rule.matches, flow.state, this.ctx);
        if (m.result === 'no-match' && m.hidden) {
          flow.hidden++;
          continue;
        }
        flush();
        const step = (result: 'no-match' | 'not-evaluable', detail: string): Step => ruleStep(ref, rule, result, detail);
        if (m.result === 'no-match' || (m.result === 'match' && m.probability === 0)) {
          record(step('no-match', m.result === 'no-match' ? m.why : 'probability 0'));
          continue;
        }
        if (m.result === 'not-evaluable') {
          record(step('not-evaluable', m.why));
          return finish('not-evaluable', ref, `${ref.table} ${ref.chain} rule ${ref.rule}: ${m.why}`);
        }
        const detail = m.notes.length > 0 ? m.notes.join('; ') : null;
        if (m.probability < 1) {
          const taken = copy(flow);
          taken.probability *= m.probability;
          taken.pending = { rule, ref, detail: `chosen with probability ${m.probability} of the packets reaching this rule` };
          (host ?? seg).branches.push({ probability: taken.probability, path: this.walk(taken, packet, outcomes) });
          flow.probability *= 1 - m.probability;
          if (!host) host = seg;
          seg = { steps: [], branches: [], outcome: null };
          continue;
        }
        applying = { rule, ref, detail };
      }

      const { rule, ref, detail } = applying;
      const target = rule.target;
      const matched = (effect: string | null) =>
        record(ruleStep(ref, rule, 'match', [detail, effect].filter((x) => x !== null).join('; ') || null));
      if (rule.matches.some((x) => x.kind === 'recent' && x.op === 'set')) flow.sticky = true;
      matched(target ? effectOf(target, flow.state) : null);
      if (target === null) continue;
      switch (target.kind) {
        case 'chain':
          if (!this.rules(flow.table, target.chain)) {
            return finish('not-evaluable', ref, `${ref.table} ${ref.chain} rule ${ref.rule}: chain ${target.chain} is not in the ruleset`);
          }
          if (flow.stack.length >= MAX_DEPTH) return finish('not-evaluable', ref, `more than ${MAX_DEPTH} nested chains: a jump loop?`);
          if (target.goto) flow.stack.pop();
          flow.stack.push({ chain: target.chain, next: 0 });
          record({ kind: 'chain', table: flow.table, chain: target.chain, entered: target.goto ? 'goto' : 'jump', role: this.role(flow.table, target.chain) });
          continue;
        case 'ACCEPT':
          if (flow.table === 'filter') flow.acceptedBy = ref;
          flow.stack = [];
          continue;
        case 'DROP':
          return finish('drop', ref);
        case 'REJECT':
          return finish('reject', ref);
        case 'RETURN': {
          const left = flow.stack.pop()!;
          if (flow.stack.length === 0 && !endHook(left.chain)) return finish('drop', ref);
          continue;
        }
        case 'DNAT':
          flow.state.dst = parseIP(target.ip)!;
          flow.state.dport = target.port;
          flow.state.dnat = true;
          flow.dnat = target.to;
          flow.dnatBy = ref;
          flow.stack = [];
          if (flow.table === IPVS_TABLE) {
            // IPVS sends the packet on to the real server itself, as the node sends its own: filter OUTPUT, nat POSTROUTING.
            flow.delivery = packet.from === 'node' ? 'out' : 'forward';
            flow.hooks = [
              { table: 'filter', chain: 'OUTPUT' },
              { table: 'nat', chain: 'POSTROUTING' },
            ];
            record({ kind: 'route', dst: target.to, to: 'out' });
          }
          continue;
        case 'MARK': {
          const before = flow.state.mark;
          flow.state.mark = markAfter(target, before);
          // The masquerade reason is the rule that sent the packet here, not the MARK rule.
          const caller = flow.stack.at(-2);
          if (flow.state.mark & ~before && !flow.markedBy && caller) {
            const callerRule = this.rules(flow.table, caller.chain)![caller.next - 1]!;
            flow.markedBy = ruleRef(flow.table, caller.chain, caller.next - 1, callerRule);
          }
          continue;
        }
        case 'MASQUERADE':
          flow.masquerade = true;
          // A MASQUERADE no mark led to (ipvs mode's hairpin set) is its own reason.
          flow.markedBy ??= ref;
          flow.stack = [];
          continue;
        case 'unsupported':
          return finish('not-evaluable', ref, `${ref.table} ${ref.chain} rule ${ref.rule}: target ${target.text} is not something the trace can evaluate`);
      }
    }
  }

  /** The routing decision after PREROUTING or OUTPUT: deliver here, or send on. */
  private route(flow: Flow, packet: Packet): void {
    const local = this.ctx.isLocal(flow.state.dst);
    const filter = (chain: string): Hook => ({ table: 'filter', chain });
    const postrouting: Hook = { table: 'nat', chain: 'POSTROUTING' };
    const ipvs: Hook[] = local && this.tables.has(IPVS_TABLE) ? [{ table: IPVS_TABLE, chain: IPVS_HOOK }] : [];
    if (packet.from === 'node') {
      flow.delivery = local ? 'local' : 'out';
      flow.hooks = [filter('OUTPUT'), postrouting, ...(local ? [filter('INPUT'), ...ipvs] : [])];
    } else {
      flow.delivery = local ? 'local' : 'forward';
      flow.hooks = local ? [filter('INPUT'), ...ipvs] : [filter('FORWARD'), postrouting];
    }
  }
}
