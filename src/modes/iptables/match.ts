/**
 * Whether a rule's matches hold for a packet. A traced packet opens a new connection:
 * conntrack sees it as NEW (plus DNAT once rewritten), and no earlier connection of its
 * client is known, so `-m recent --rcheck` never holds for it.
 */
import { cidrContains, type ParsedIP } from '../../net/ip.js';
import type { PacketFields } from '../../trace/walk.js';
import type { Match } from './rule.js';

export type PacketState = PacketFields & {
  /** Came in through a bridge port (`-m physdev --physdev-is-in`): taken as true for pods. */
  bridged?: boolean;
};

export interface MatchContext {
  isLocal(ip: ParsedIP): boolean;
  /** Whether the packet's fields (`flags`: which, in order) are in ipset `name`; null when the set is not known. */
  inSet?(name: string, flags: readonly ('src' | 'dst')[], p: PacketState): boolean | null;
}

export type RuleMatch =
  /** `probability` < 1 only with `-m statistic`; `notes` say what side effects mean. */
  | { result: 'match'; probability: number; notes: string[] }
  /** `hidden`: it failed on destination, port or protocol, so it is about other traffic. */
  | { result: 'no-match'; hidden: boolean; why: string }
  | { result: 'not-evaluable'; why: string };

type One = { ok: true; probability?: number; note?: string } | { ok: false; hidden: boolean; why: string } | { ok: null; why: string };

const hex = (n: number) => `0x${n.toString(16)}`;

function one(m: Match, p: PacketState, ctx: MatchContext): One {
  const flip = (negate: boolean, holds: boolean, why: string, hidden = false): One =>
    holds !== negate ? { ok: true } : { ok: false, hidden, why };
  switch (m.kind) {
    case 'address': {
      const ip = m.field === 'source' ? p.src : p.dst;
      const inside = cidrContains(m.cidr, ip);
      return flip(m.negate, inside, `${m.field} ${ip.text} is ${inside ? '' : 'not '}in ${m.cidr.text}`, m.field === 'destination');
    }
    case 'protocol':
      return flip(m.negate, m.protocol === p.protocol, `protocol is ${p.protocol}`, true);
    case 'dport':
      return flip(m.negate, m.port === p.dport, `destination port is ${p.dport}`, true);
    case 'addrtype': {
      if (m.type !== 'LOCAL') return { ok: null, why: `address type ${m.type} is not known to the trace` };
      const ip = m.field === 'source' ? p.src : p.dst;
      const local = ctx.isLocal(ip);
      return flip(m.negate, local, `${m.field} ${ip.text} is ${local ? 'a' : 'not a'} local address of the node`);
    }
    case 'mark': {
      const holds = (p.mark & m.mask) === m.value;
      return flip(m.negate, holds, `packet mark is ${hex(p.mark)}`);
    }
    case 'statistic':
      return { ok: true, probability: m.probability };
    case 'recent':
      return m.op === 'set'
        ? { ok: true, note: `records the client in ${m.name}: its next connections skip the balancing and return here (session affinity)` }
        : {
            ok: false,
            hidden: false,
            why: `no earlier connection of ${p.src.text} is recorded; affinity pins its next connections${m.seconds === null ? '' : ` for ${m.seconds} s`}`,
          };
    case 'conntrack': {
      const states = p.dnat ? ['NEW', 'DNAT'] : ['NEW'];
      const holds = m.states.some((s) => states.includes(s));
      const why = m.negate
        ? `the connection is ${states.join(',')}`
        : `a traced packet is the first of a new connection (${states.join(',')}): ${m.states.join(',')} does not apply`;
      return flip(m.negate, holds, why);
    }
    case 'comment':
      return { ok: true };
    case 'set': {
      const holds = ctx.inSet?.(m.name, m.flags, p) ?? null;
      if (holds === null) return { ok: null, why: `ipset ${m.name} is not known to the trace` };
      // A set of service addresses and ports answers for other traffic the way -d and --dport do.
      return flip(m.negate, holds, `${m.flags.join(',')} of the packet is ${holds ? '' : 'not '}in ipset ${m.name}`, m.flags[0] === 'dst');
    }
    case 'physdev-is-in': {
      return flip(m.negate, p.bridged === true, `the packet came in ${p.bridged ? 'through' : 'not through'} a bridge port`);
    }
    case 'unsupported':
      return { ok: null, why: `${m.text} is not something the trace can evaluate` };
  }
}

/** All matches of a rule, which hold together or not at all. */
export function matchRule(matches: Match[], p: PacketState, ctx: MatchContext): RuleMatch {
  let probability = 1;
  const notes: string[] = [];
  let unknown: string | null = null;
  let failed: { hidden: boolean; why: string } | null = null;
  for (const m of matches) {
    const r = one(m, p, ctx);
    if (r.ok === false) {
      // One hidden failure is enough to call the rule "about other traffic".
      if (!failed || (r.hidden && !failed.hidden)) failed = r;
    } else if (r.ok === null) unknown ??= r.why;
    else {
      probability *= r.probability ?? 1;
      if (r.note) notes.push(r.note);
    }
  }
  if (failed) return { result: 'no-match', hidden: failed.hidden, why: failed.why };
  if (unknown) return { result: 'not-evaluable', why: unknown };
  return { result: 'match', probability, notes };
}
