/**
 * The trace evaluator's parts: restore-text parsing, each match and target kind, and the
 * walk through hooks and chains on small hand-written rulesets, where every expected
 * verdict can be worked out by reading the rules.
 */
import { describe, expect, it } from 'vitest';
import { parseIP } from '../src/net/ip.js';
import { IptablesDataplane } from '../src/modes/iptables/dataplane.js';
import { matchRule, type PacketState } from '../src/modes/iptables/match.js';
import { parseHostPort } from '../src/trace/packet.js';
import { parseIptablesRestore, rulesetTables } from '../src/modes/iptables/tables.js';
import { parseRule, RuleSyntaxError, tokenize, type Match } from '../src/modes/iptables/rule.js';
import type { DataplaneTrace, Packet, PathSegment, Step } from '../src/trace/types.js';
import { TraceError } from '../src/trace/types.js';
import { renderIptables } from '../src/modes/iptables/render.js';
import type { JumpRule } from '../src/modes/iptables/ruleset.js';

const args = (text: string) => tokenize(text);
const matchesOf = (text: string) => parseRule(args(text)).matches;

describe('tokenize', () => {
  it('groups double-quoted words and unescapes inside quotes', () => {
    expect(tokenize('-m comment --comment "ns/svc:p cluster IP" -j X')).toEqual(['-m', 'comment', '--comment', 'ns/svc:p cluster IP', '-j', 'X']);
    expect(tokenize('--comment "say \\"hi\\""  -j  X')).toEqual(['--comment', 'say "hi"', '-j', 'X']);
  });

  it('refuses an unterminated quote', () => {
    expect(() => tokenize('--comment "open')).toThrow(RuleSyntaxError);
  });
});

describe('parseRule', () => {
  it('reads addresses as CIDRs, with and without negation, in both families', () => {
    const [s, d, v6] = matchesOf('! -s 10.244.0.0/16 -d 172.30.0.41 -s fd00::/8') as Extract<Match, { kind: 'address' }>[];
    expect([s!.field, s!.negate, s!.cidr.text]).toEqual(['source', true, '10.244.0.0/16']);
    expect([d!.field, d!.negate, d!.cidr.text]).toEqual(['destination', false, '172.30.0.41/32']);
    expect(v6!.cidr.text).toBe('fd00::/8');
  });

  it('reads protocol and --dport of the tcp, udp and sctp modules; -m tcp alone adds no match', () => {
    expect(matchesOf('-m tcp -p tcp -d 1.2.3.4 --dport 80')).toEqual([
      { kind: 'protocol', negate: false, protocol: 'tcp' },
      expect.objectContaining({ kind: 'address' }),
      { kind: 'dport', negate: false, port: 80 },
    ]);
    expect(matchesOf('-m sctp -p sctp ! --dport 36412')).toContainEqual({ kind: 'dport', negate: true, port: 36412 });
  });

  it('reads addrtype, mark, statistic, recent, conntrack and comment', () => {
    expect(matchesOf('-m addrtype --src-type LOCAL')).toEqual([{ kind: 'addrtype', field: 'source', negate: false, type: 'LOCAL' }]);
    expect(matchesOf('-m addrtype ! --dst-type LOCAL')).toEqual([{ kind: 'addrtype', field: 'destination', negate: true, type: 'LOCAL' }]);
    expect(matchesOf('-m mark ! --mark 0x4000/0x4000')).toEqual([{ kind: 'mark', negate: true, value: 0x4000, mask: 0x4000 }]);
    expect(matchesOf('-m mark --mark 0x10')).toEqual([{ kind: 'mark', negate: false, value: 0x10, mask: 0xffffffff }]);
    expect(matchesOf('-m statistic --mode random --probability 0.3333333333')).toEqual([{ kind: 'statistic', probability: 0.3333333333 }]);
    expect(matchesOf('-m recent --name KUBE-SEP-X --rcheck --seconds 600 --reap')).toEqual([{ kind: 'recent', op: 'rcheck', name: 'KUBE-SEP-X', seconds: 600 }]);
    expect(matchesOf('-m recent --name KUBE-SEP-X --set')).toEqual([{ kind: 'recent', op: 'set', name: 'KUBE-SEP-X', seconds: null }]);
    expect(matchesOf('-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT')).toEqual([
      { kind: 'conntrack', negate: true, states: ['RELATED', 'ESTABLISHED', 'DNAT'] },
    ]);
    expect(parseRule(args('-m comment --comment "a b" -j ACCEPT')).comment).toBe('a b');
  });

  it('keeps what it does not understand as unsupported, naming it', () => {
    const texts = (text: string) => matchesOf(text).flatMap((m) => (m.kind === 'unsupported' ? [m.text] : []));
    expect(texts('-i eth0 -j ACCEPT')).toEqual(['-i eth0']);
    expect(texts('! -o cni0 -j ACCEPT')).toEqual(['! -o cni0']);
    expect(texts('-m set --match-set allowed src --return-nomatch -j ACCEPT')).toEqual(['-m set --match-set allowed src --return-nomatch']);
    expect(texts('-m statistic --mode nth --every 2 --packet 0 -j X')).toEqual(['-m statistic --mode nth --every 2 --packet 0']);
    expect(texts('-m statistic --mode random ! --probability 0.5 -j X')).toEqual(['-m statistic --mode random ! --probability 0.5']);
    expect(texts('-m statistic --mode random -j X')).toEqual(['-m statistic --mode random']);
    expect(texts('-m addrtype --dst-type LOCAL --limit-iface-in')).toHaveLength(1);
    expect(texts('-m tcp -p tcp --sport 1000')).toEqual(['-m tcp --sport 1000']);
  });

  it('reads every target kube-proxy writes, and no target at all', () => {
    const target = (text: string) => parseRule(args(text)).target;
    expect(target('-j KUBE-SVC-X')).toEqual({ kind: 'chain', chain: 'KUBE-SVC-X', goto: false });
    expect(target('-g KUBE-SVC-X')).toEqual({ kind: 'chain', chain: 'KUBE-SVC-X', goto: true });
    for (const t of ['ACCEPT', 'DROP', 'RETURN'] as const) expect(target(`-j ${t}`)).toEqual({ kind: t });
    expect(target('-j REJECT --reject-with icmp-port-unreachable')).toEqual({ kind: 'REJECT' });
    expect(target('-m tcp -p tcp -j DNAT --to-destination [fd00::1]:8080')).toEqual({ kind: 'DNAT', to: '[fd00::1]:8080', ip: 'fd00::1', port: 8080 });
    expect(target('-j DNAT --to-destination 10.1.0.1')).toEqual({ kind: 'unsupported', text: '-j DNAT --to-destination 10.1.0.1' });
    expect(target('-j MARK --or-mark 0x4000')).toEqual({ kind: 'MARK', op: 'or', value: 0x4000, mask: 0xffffffff });
    expect(target('-j MARK --xor-mark 0x4000')).toEqual({ kind: 'MARK', op: 'xor', value: 0x4000, mask: 0xffffffff });
    expect(target('-j MARK --set-xmark 0x4000/0x4000')).toEqual({ kind: 'MARK', op: 'set-xmark', value: 0x4000, mask: 0x4000 });
    expect(target('-j MASQUERADE --random-fully')).toEqual({ kind: 'MASQUERADE' });
    expect(target('-j LOG --log-prefix x')).toEqual({ kind: 'unsupported', text: '-j LOG --log-prefix x' });
    expect(target('-j SNAT --to-source 1.2.3.4')).toEqual({ kind: 'unsupported', text: '-j SNAT --to-source 1.2.3.4' });
    expect(target('-m comment --comment "other traffic will be dropped"')).toBeNull();
  });

  it('refuses addresses that are not addresses and options without values', () => {
    expect(() => parseRule(args('-s 10.0.0.0/33'))).toThrow(RuleSyntaxError);
    expect(() => parseRule(args('-d'))).toThrow(RuleSyntaxError);
  });
});

describe('parseIptablesRestore', () => {
  const text = [
    '# ==== IPv4: iptables-restore input ====',
    '#   iptables -t nat -I PREROUTING -m comment --comment "a comment is not a rule" -j KUBE-SERVICES',
    '*filter',
    ':INPUT DROP [0:0]',
    ':KUBE-FORWARD - [0:0]',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    'COMMIT',
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':KUBE-SERVICES - [0:0]',
    '-A PREROUTING -j OTHER-SOFTWARE',
    '-A KUBE-SERVICES -m comment --comment "ns/svc:p cluster IP" -m tcp -p tcp -d 10.96.0.1 --dport 443 -j KUBE-SVC-X',
    'COMMIT',
  ].join('\n');

  it('reads tables, chains, policies and rules; the jump rules given go first, each prepended in turn', () => {
    const jump = (c: string): JumpRule => ({ table: 'nat', chain: 'PREROUTING', args: ['-m', 'comment', '--comment', c, '-j', 'KUBE-SERVICES'] });
    const t = parseIptablesRestore(text, [jump('first'), jump('second')]);
    expect([...t.keys()]).toEqual(['filter', 'nat']);
    expect(t.get('filter')!.policies.get('INPUT')).toBe('DROP');
    expect(t.get('filter')!.policies.has('KUBE-FORWARD')).toBe(false);
    expect(t.get('nat')!.rules('PREROUTING')!.map((r) => r.comment ?? r.text)).toEqual(['second', 'first', '-j OTHER-SOFTWARE']);
    const svc = t.get('nat')!.rules('KUBE-SERVICES')![0]!;
    expect(svc.text).toBe('-m comment --comment "ns/svc:p cluster IP" -m tcp -p tcp -d 10.96.0.1 --dport 443 -j KUBE-SVC-X');
    expect(svc.comment).toBe('ns/svc:p cluster IP');
    expect(svc.target).toEqual({ kind: 'chain', chain: 'KUBE-SVC-X', goto: false });
  });

  it('names the line of what it cannot read; a rule, once its chain is read', () => {
    expect(() => parseIptablesRestore('*nat\n-D KUBE-SERVICES -j X\n')).toThrow(/line 2: not a declaration or an -A rule/);
    expect(() => parseIptablesRestore('-A KUBE-SERVICES -j X\n')).toThrow(/line 1: outside a table/);
    const broken = parseIptablesRestore('*nat\n-A X -j ACCEPT\n-A Y -m comment --comment "open\n-A Z -j\n').get('nat')!;
    expect(broken.rules('X')).toHaveLength(1);
    expect(() => broken.rules('Y')).toThrow(/line 3: unterminated quote: -m comment --comment "open/);
    expect(() => broken.rules('Z')).toThrow(TraceError);
  });

  it('puts a rendered ruleset\'s jump rules first in their built-in chains, in the applier\'s order', () => {
    const node = { nodeName: 'node-a', zone: null, labels: {}, nodeIPs: [] };
    const rs = renderIptables({ family: 'IPv4', servicePorts: [], serviceCIDRs: [] }, node, {});
    const tables = rulesetTables(rs);
    const forward = tables.get('filter')!.rules('FORWARD')!.map((r) => (/-j (\S+)$/.exec(r.text) ?? [])[1]);
    // Each prepended in turn: the last ensured comes first, as on an upstream node.
    expect(forward).toEqual(rs.jumps.filter((j) => j.table === 'filter' && j.chain === 'FORWARD').map((j) => j.args.at(-1)).reverse());
    expect(forward).toEqual(['KUBE-PROXY-FIREWALL', 'KUBE-FORWARD', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES']);
  });
});

describe('parseHostPort', () => {
  it.each([
    ['10.96.0.1:443', { ip: '10.96.0.1', port: 443 }],
    ['10.96.0.1', { ip: '10.96.0.1', port: null }],
    ['[fd00:10:96::1]:80', { ip: 'fd00:10:96::1', port: 80 }],
    ['fd00:10:96::1', { ip: 'fd00:10:96::1', port: null }],
    ['010.096.000.001:80', { ip: '10.96.0.1', port: 80 }],
  ])('%s', (text, want) => expect(parseHostPort(text)).toEqual(want));

  it.each(['10.96.0.1:0', '10.96.0.1:65536', 'fd00::1:80:', 'host:80', '[10.0.0.1]x', ''])('refuses %j', (text) => {
    expect(parseHostPort(text)).toBeNull();
  });
});

describe('matchRule', () => {
  const packet = (over: Partial<PacketState> = {}): PacketState => ({
    protocol: 'tcp',
    src: parseIP('10.244.1.5')!,
    dst: parseIP('10.96.0.10')!,
    dport: 80,
    mark: 0,
    dnat: false,
    ...over,
  });
  const local = new Set(['192.168.1.10', '127.0.0.1']);
  const ctx = { isLocal: (ip: { text: string }) => local.has(ip.text) };
  const m = (text: string, over: Partial<PacketState> = {}) => matchRule(matchesOf(text), packet(over), ctx);

  it('addresses: CIDR containment, negation; only destination misses are hidden', () => {
    expect(m('-s 10.244.0.0/16').result).toBe('match');
    expect(m('! -s 10.244.0.0/16')).toEqual({ result: 'no-match', hidden: false, why: 'source 10.244.1.5 is in 10.244.0.0/16' });
    expect(m('-d 10.96.0.11')).toEqual({ result: 'no-match', hidden: true, why: 'destination 10.96.0.10 is not in 10.96.0.11/32' });
    expect(m('-s 10.244.0.0/16', { src: parseIP('fd00:10:244::5')! }).result).toBe('no-match');
    expect(m('! -d ::1/128', { dst: parseIP('fd00::1')! }).result).toBe('match');
  });

  it('protocol and port misses are hidden: they are about other traffic', () => {
    expect(m('-m udp -p udp --dport 80')).toMatchObject({ result: 'no-match', hidden: true });
    expect(m('-m tcp -p tcp --dport 81')).toMatchObject({ result: 'no-match', hidden: true, why: 'destination port is 80' });
    expect(m('-m tcp -p tcp ! --dport 81').result).toBe('match');
  });

  it('addrtype LOCAL asks the node\'s addresses; other types cannot be evaluated', () => {
    expect(m('-m addrtype --dst-type LOCAL', { dst: parseIP('192.168.1.10')! }).result).toBe('match');
    expect(m('-m addrtype --src-type LOCAL')).toMatchObject({ result: 'no-match', hidden: false, why: 'source 10.244.1.5 is not a local address of the node' });
    expect(m('-m addrtype ! --src-type LOCAL').result).toBe('match');
    expect(m('-m addrtype --dst-type UNICAST').result).toBe('not-evaluable');
  });

  it('mark: value under mask, negated', () => {
    expect(m('-m mark --mark 0x4000/0x4000', { mark: 0x4001 }).result).toBe('match');
    expect(m('-m mark --mark 0x4000/0x4000', { mark: 0x1 })).toMatchObject({ result: 'no-match', why: 'packet mark is 0x1' });
    expect(m('-m mark ! --mark 0x4000/0x4000').result).toBe('match');
  });

  it('statistic matches with its probability, and multiplies with others', () => {
    expect(m('-m statistic --mode random --probability 0.2500000000')).toEqual({ result: 'match', probability: 0.25, notes: [] });
    expect(m('-m statistic --mode random --probability 0.5 -d 10.96.0.11').result).toBe('no-match');
  });

  it('recent: --rcheck never holds for a traced (first) connection, --set holds and says so', () => {
    const rcheck = m('-m recent --name KUBE-SEP-X --rcheck --seconds 600 --reap');
    expect(rcheck).toMatchObject({ result: 'no-match', hidden: false });
    expect(rcheck.result === 'no-match' && rcheck.why).toMatch(/no earlier connection of 10\.244\.1\.5.*600 s/);
    const set = m('-m recent --name KUBE-SEP-X --set');
    expect(set.result === 'match' && set.notes[0]).toMatch(/session affinity/);
  });

  it('conntrack: a traced packet is NEW, and DNAT once rewritten; INVALID and RELATED,ESTABLISHED do not apply', () => {
    expect(m('-m conntrack --ctstate NEW').result).toBe('match');
    const invalid = m('-m conntrack --ctstate INVALID');
    expect(invalid).toMatchObject({ result: 'no-match', hidden: false });
    expect(invalid.result === 'no-match' && invalid.why).toMatch(/new connection.*INVALID does not apply/);
    expect(m('-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT').result).toBe('match');
    expect(m('-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT', { dnat: true }).result).toBe('no-match');
  });

  it('unsupported matches make the rule not evaluable, unless another match already fails', () => {
    expect(m('-i eth0')).toEqual({ result: 'not-evaluable', why: '-i eth0 is not something the trace can evaluate' });
    expect(m('-i eth0 -d 10.96.0.11').result).toBe('no-match');
  });
});

/** Every step of a path, depth first. */
function steps(seg: PathSegment): Step[] {
  return [...seg.steps, ...seg.branches.flatMap((b) => steps(b.path))];
}

describe('IptablesDataplane', () => {
  const trace = (rules: string, p: Partial<Packet> = {}, nodeIPs = ['192.168.1.10']): DataplaneTrace =>
    new IptablesDataplane(parseIptablesRestore(rules), nodeIPs).trace({
      protocol: 'tcp',
      src: '10.244.1.5',
      srcPort: null,
      dst: '10.96.0.10',
      dstPort: 80,
      from: 'pod',
      ...p,
    });
  const verdicts = (t: DataplaneTrace) => t.outcomes.map((o) => [o.verdict, o.dnat, Number(o.probability.toFixed(6))]);

  const balanced = `*nat
-A PREROUTING -j SVC
-A SVC -m statistic --mode random --probability 0.3333333333 -j A
-A SVC -m statistic --mode random --probability 0.5000000000 -j B
-A SVC -j C
-A A -j DNAT --to-destination 10.1.0.1:80
-A B -j DNAT --to-destination 10.1.0.2:80
-A C -j DNAT --to-destination 10.1.0.3:80
COMMIT
`;

  it('forks at statistic rules into sibling branches whose probabilities are absolute', () => {
    const t = trace(balanced);
    expect(verdicts(t)).toEqual([
      ['dnat', '10.1.0.1:80', 0.333333],
      ['dnat', '10.1.0.2:80', 0.333333],
      ['dnat', '10.1.0.3:80', 0.333333],
    ]);
    expect(t.path.branches).toHaveLength(3);
    expect(t.path.branches.map((b) => b.path.steps[0])).toMatchObject([{ rule: 1 }, { rule: 2 }, { rule: 3 }]);
    expect(t.path.branches.reduce((s, b) => s + b.probability, 0)).toBeCloseTo(1, 9);
  });

  it('routes after nat: a local destination goes to INPUT, others to FORWARD and POSTROUTING', () => {
    const toNode = trace('*nat\n-A PREROUTING -j DNAT --to-destination 192.168.1.10:6443\nCOMMIT\n');
    expect(toNode.outcomes[0]!.delivery).toBe('local');
    expect(steps(toNode.path).filter((s) => s.kind === 'chain').map((s) => s.kind === 'chain' && `${s.table} ${s.chain}`)).toEqual([
      'nat PREROUTING',
      'filter INPUT',
    ]);
    const onward = trace('*nat\n-A PREROUTING -j DNAT --to-destination 10.1.0.1:80\nCOMMIT\n');
    expect(onward.outcomes[0]!.delivery).toBe('forward');
    expect(steps(onward.path).filter((s) => s.kind === 'chain').map((s) => s.kind === 'chain' && s.chain)).toEqual(['PREROUTING', 'FORWARD', 'POSTROUTING']);
    const fromNode = trace('*nat\nCOMMIT\n', { from: 'node', src: '192.168.1.10' });
    expect(steps(fromNode.path).filter((s) => s.kind === 'chain').map((s) => s.kind === 'chain' && s.chain)).toEqual(['OUTPUT', 'OUTPUT', 'POSTROUTING']);
    expect(fromNode.outcomes).toMatchObject([{ verdict: 'no-match', delivery: 'out' }]);
  });

  it('marks, then masquerades in POSTROUTING, naming the rule that sent the packet to be marked', () => {
    const t = trace(`*nat
-A PREROUTING -j SVC
-A SVC -m comment --comment "outside" ! -s 10.244.0.0/16 -j MARK-MASQ
-A SVC -j DNAT --to-destination 10.1.0.1:80
-A MARK-MASQ -j MARK --or-mark 0x4000
-A POSTROUTING -j POST
-A POST -m mark ! --mark 0x4000/0x4000 -j RETURN
-A POST -j MARK --xor-mark 0x4000
-A POST -j MASQUERADE
COMMIT
`, { src: '192.0.2.1', from: 'external' });
    expect(t.outcomes).toMatchObject([{ verdict: 'dnat', masquerade: true, markedBy: { chain: 'SVC', rule: 1, comment: 'outside' } }]);
    expect(trace(t.packet.src && '*nat\n-A PREROUTING -j DNAT --to-destination 10.1.0.1:80\nCOMMIT\n').outcomes[0]!.masquerade).toBe(false);
  });

  it('ACCEPT in filter decides; DROP and REJECT end the walk; RETURN and goto go back to the right chain', () => {
    expect(trace('*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n', { dst: '10.1.0.1' }).outcomes).toMatchObject([{ verdict: 'accept', decidedBy: { chain: 'FORWARD', rule: 1 } }]);
    expect(trace('*filter\n-A FORWARD -j X\n-A X -j REJECT\nCOMMIT\n').outcomes).toMatchObject([{ verdict: 'reject', decidedBy: { chain: 'X', rule: 1 } }]);
    const returned = trace('*filter\n-A FORWARD -j X\n-A FORWARD -j DROP\n-A X -j RETURN\n-A X -j ACCEPT\nCOMMIT\n');
    expect(returned.outcomes).toMatchObject([{ verdict: 'drop', decidedBy: { chain: 'FORWARD', rule: 2 } }]);
    // After a goto, the end of Y returns to the chain that jumped to X: X's ACCEPT is skipped.
    const chains = (how: string) => `*filter\n-A FORWARD -j X\n-A FORWARD -j DROP\n-A X ${how} Y\n-A X -j ACCEPT\n:Y - [0:0]\nCOMMIT\n`;
    expect(trace(chains('-g')).outcomes).toMatchObject([{ verdict: 'drop', decidedBy: { chain: 'FORWARD', rule: 2 } }]);
    expect(trace(chains('-j')).outcomes).toMatchObject([{ verdict: 'accept', decidedBy: { chain: 'X', rule: 2 } }]);
  });

  it('a built-in chain\'s declared policy applies when a packet falls off its end', () => {
    const t = trace('*filter\n:FORWARD DROP [0:0]\n-A FORWARD -s 1.1.1.1 -j ACCEPT\nCOMMIT\n');
    expect(t.outcomes).toMatchObject([{ verdict: 'drop', decidedBy: { chain: 'FORWARD', rule: 0, text: 'policy DROP' } }]);
  });

  it('stops at what it cannot evaluate and says what it was, never guessing past it', () => {
    const t = trace('*filter\n-A FORWARD -i cni0 -j DROP\n-A FORWARD -j ACCEPT\nCOMMIT\n');
    expect(t.outcomes).toMatchObject([{ verdict: 'not-evaluable', reason: 'filter FORWARD rule 1: -i cni0 is not something the trace can evaluate' }]);
    expect(trace('*nat\n-A PREROUTING -j NOWHERE\nCOMMIT\n').outcomes[0]!.reason).toMatch(/chain NOWHERE is not in the ruleset/);
    expect(trace('*nat\n-A PREROUTING -j LOG --log-prefix x\nCOMMIT\n').outcomes[0]!.reason).toMatch(/target -j LOG --log-prefix x/);
    expect(trace('*nat\n:LOOP - [0:0]\n-A PREROUTING -j LOOP\n-A LOOP -j LOOP\nCOMMIT\n').outcomes[0]!.reason).toMatch(/nested chains/);
    expect(trace('*nat\n-A PREROUTING -j DNAT --to-destination 10.1.0.1-10.1.0.9:80\nCOMMIT\n').outcomes[0]!.verdict).toBe('not-evaluable');
  });

  it('passes over rules about other traffic as one counted step, and shows the ones that failed for this packet', () => {
    const t = trace('*nat\n-A PREROUTING -d 10.96.0.1 -j X\n-A PREROUTING -d 10.96.0.2 -j X\n-A PREROUTING -s 192.168.0.0/16 -j X\n-A PREROUTING -p udp -j X\nCOMMIT\n');
    expect(t.path.steps.slice(0, 4)).toMatchObject([
      { kind: 'chain', chain: 'PREROUTING' },
      { kind: 'skipped', chain: 'PREROUTING', count: 2 },
      { kind: 'rule', rule: 3, result: 'no-match', detail: 'source 10.244.1.5 is not in 192.168.0.0/16' },
      { kind: 'skipped', count: 1 },
    ]);
  });

  it('lists the node\'s addresses of the packet\'s family, and loopback, as local', () => {
    expect(trace('*nat\nCOMMIT\n', {}, ['192.168.1.10', 'fd00::10']).localAddresses).toEqual(['192.168.1.10', '127.0.0.0/8']);
    expect(trace('*nat\nCOMMIT\n', { src: 'fd00:10:244::5', dst: 'fd00:10:96::a' }, ['192.168.1.10', 'fd00::10']).localAddresses).toEqual(['fd00::10', '::1/128']);
  });

  it('says so when the input has no jump rules into the proxy\'s chains', () => {
    expect(trace('*nat\n-A KUBE-SERVICES -j ACCEPT\nCOMMIT\n').assumptions.at(-1)).toMatch(/no rule in nat PREROUTING.*jump rules are missing/);
    expect(trace(balanced).assumptions.join('\n')).not.toMatch(/jump rules are missing/);
  });

  it('refuses a packet whose addresses are of different families', () => {
    expect(() => trace('*nat\nCOMMIT\n', { dst: 'fd00::1' })).toThrow(/different IP families/);
  });
});
