/**
 * userspace mode's dataplane, for the trace: which capture rule takes the packet (the
 * portal chains, then the node port chains for local destinations, as the jumps order
 * them), which listener that is, and where the listener's scheduler can send the
 * connection. Rules are read from the rendered ruleset, not re-derived from the model.
 */
import type { ServicePortLabels } from '../../model/explain.js';
import type { NodeContext, ServicePort } from '../../model/types.js';
import { cidrContains, parseCIDR, parseIP } from '../../net/ip.js';
import type { Dataplane, DataplaneTrace, Outcome, Packet, PathSegment, RuleRef, Step } from '../../trace/types.js';
import { tableLayout } from '../iptables/ruleset.js';
import { NODEPORT_CONTAINER, NODEPORT_HOST, PORTALS_CONTAINER, PORTALS_HOST } from './chains.js';
import { SCHEDULER_NAMES, SOURCE_IP_NOTE } from './dryrun.js';
import type { Listener, UserspacePlan } from './render.js';

interface Capture {
  proto: string;
  src: string | null;
  dst: string | null;
  negateDst: boolean;
  dport: number;
  port: number;
}

const CAPTURE = /-m (tcp|udp) -p \w+ (?:-s (\S+) )?(?:(!) )?(?:-d (\S+) )?--dport (\d+) -j REDIRECT --to-ports (\d+)$/;
const COMMENT = /^-m comment --comment (?:"([^"]*)"|(\S+)) /;

function parseCapture(rule: string): Capture | null {
  const m = CAPTURE.exec(rule);
  if (!m) return null;
  return { proto: m[1]!, src: m[2] ?? null, negateDst: m[3] === '!', dst: m[4] ?? null, dport: Number(m[5]), port: Number(m[6]) };
}

function inNet(ip: string, net: string): boolean {
  const c = parseCIDR(net.includes('/') ? net : `${net}/${net.includes(':') ? 128 : 32}`);
  const a = parseIP(ip);
  return c !== null && a !== null && cidrContains(c, a);
}

function matches(c: Capture, p: Packet): boolean {
  if (c.proto !== p.protocol || c.dport !== p.dstPort) return false;
  if (c.src && !inNet(p.src, c.src)) return false;
  if (c.dst && inNet(p.dst, c.dst) === c.negateDst) return false;
  return true;
}

export class UserspaceDataplane implements Dataplane {
  readonly mode = 'userspace';

  constructor(
    private readonly plan: UserspacePlan,
    private readonly node: NodeContext,
    private readonly scheduler: 'rr' | 'lc',
  ) {}

  labels(sp: ServicePort): ServicePortLabels {
    const of = (scope: string) => {
      const l = this.plan.listeners.find((x) => x.servicePort === sp && x.scope === scope) ?? this.plan.listeners.find((x) => x.servicePort === sp);
      return l ? `listener ${l.port}` : 'no listener';
    };
    return { cluster: of('service'), local: of('service'), external: of('external'), sourceRanges: 'the capture rules\' -s matches', firewall: 'no capture (not proxied)' };
  }

  private localAddresses(): string[] {
    return [...this.node.nodeIPs.filter((ip) => parseIP(ip)?.family === this.plan.family), this.plan.family === 'IPv4' ? '127.0.0.1' : '::1'];
  }

  trace(p: Packet): DataplaneTrace {
    const local = this.localAddresses();
    const isLocal = local.includes(p.dst) || (this.plan.family === 'IPv4' && p.dst.startsWith('127.'));
    const fromNode = p.from === 'node';
    const hook = fromNode ? 'OUTPUT' : 'PREROUTING';
    const chains = fromNode ? [PORTALS_HOST, ...(isLocal ? [NODEPORT_HOST] : [])] : [PORTALS_CONTAINER, ...(isLocal ? [NODEPORT_CONTAINER] : [])];
    const nat = tableLayout(this.plan.ruleset).find((t) => t.table === 'nat')!;
    const steps: Step[] = [{ kind: 'chain', table: 'nat', chain: hook, entered: 'hook', role: 'other' }];
    let found: { ref: RuleRef; listener: Listener } | null = null;
    for (const chain of chains) {
      if (found) break;
      steps.push({ kind: 'chain', table: 'nat', chain, entered: 'jump', role: chain.includes('NODEPORT') ? 'node-port-dispatch' : 'service-dispatch' });
      const rules = nat.rules.filter((r) => r.chain === chain);
      let skipped = 0;
      for (const [i, r] of rules.entries()) {
        const c = parseCapture(r.rule);
        if (!c || !matches(c, p)) {
          skipped++;
          continue;
        }
        const listener = this.plan.listeners.find((l) => l.port === c.port);
        if (!listener) continue;
        if (skipped > 0) steps.push({ kind: 'skipped', table: 'nat', chain, count: skipped });
        const cm = COMMENT.exec(r.rule);
        const comment = cm ? (cm[1] ?? cm[2]!) : null;
        const ref: RuleRef = { table: 'nat', chain, rule: i + 1, text: r.rule, comment, role: { kind: 'proxied', listener: listener.key, port: listener.port } };
        steps.push({
          kind: 'rule',
          table: 'nat',
          chain,
          rule: i + 1,
          text: r.rule,
          body: cm ? r.rule.slice(cm[0].length) : r.rule,
          comment,
          role: ref.role,
          result: 'match',
          detail: `redirected to the agent's listener on port ${listener.port} (${listener.key})`,
        });
        found = { ref, listener };
        break;
      }
      if (!found && skipped > 0) steps.push({ kind: 'skipped', table: 'nat', chain, count: skipped });
    }
    const path: PathSegment = { steps, branches: [], outcome: null, chooser: `the listener's scheduler: ${SCHEDULER_NAMES[this.scheduler]}` };
    const outcomes: Outcome[] = [];
    const base = { masquerade: false, delivery: null, markedBy: null, sticky: false, reason: null } as const;
    if (!found) {
      path.outcome = { ...base, probability: 1, verdict: 'no-match', dnat: null, decidedBy: null, reason: 'no capture rule matches: not service traffic this node proxies' };
      outcomes.push(path.outcome);
    } else if (found.listener.set.endpoints.length === 0) {
      path.outcome = { ...base, probability: 1, verdict: 'reject', dnat: null, decidedBy: found.ref, delivery: 'local', reason: 'the listener has no endpoints: it resets the connection' };
      outcomes.push(path.outcome);
    } else {
      const eps = found.listener.set.endpoints;
      for (const e of eps) {
        const o: Outcome = { probability: 1 / eps.length, verdict: 'dnat', dnat: e.address, masquerade: true, delivery: 'local', decidedBy: found.ref, markedBy: found.ref, sticky: found.listener.servicePort.sessionAffinity !== null, reason: null };
        outcomes.push(o);
        path.branches.push({ probability: o.probability, path: { steps: [], branches: [], outcome: o } });
      }
    }
    return {
      mode: this.mode,
      family: this.plan.family,
      packet: p,
      localAddresses: local,
      path,
      outcomes,
      assumptions: [
        `the listener's scheduler (${SCHEDULER_NAMES[this.scheduler]}) picks per connection (per client session for UDP); the shares shown are what it gives over many connections, not a random draw`,
        'a failed connect is retried on the next endpoint, so a down endpoint that is still listed gets no traffic',
        SOURCE_IP_NOTE.join(' '),
      ],
    };
  }
}
