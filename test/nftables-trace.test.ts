/**
 * The nftables trace beyond the golden packets (test/trace-golden.test.ts runs those in
 * both modes): nftables' own defaults, the evaluator's grammar on hand-written scripts,
 * what it refuses to guess, and the CLI and /debug/trace serving it.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { debugTrace } from '../src/agent/debug.js';
import { NftablesDataplane } from '../src/modes/nftables/dataplane.js';
import type { Packet, Step, TraceResult } from '../src/trace/types.js';
import { cli } from './support/cli.js';
import { readGoldenCase } from './support/golden.js';
import { pipeline, type PacketSpec } from './support/pipeline.js';
import { distribution } from './support/trace-golden.js';

function caseInput(name: string, mode: string, drop: string[] = []): ReturnType<typeof pipeline> {
  const c = readGoldenCase(name);
  const args = c.args.filter((a, i) => !drop.includes(a) && !drop.includes(c.args[i - 1] ?? ''));
  return pipeline(readFileSync(c.input, 'utf8'), [...args, '--proxy-mode', mode], name);
}

function* steps(r: TraceResult): Generator<Step> {
  const walk = function* (seg: TraceResult['path']): Generator<Step> {
    yield* seg.steps;
    for (const b of seg.branches) yield* walk(b.path);
  };
  yield* walk(r.path);
}

describe('nftables mode defaults, traced', () => {
  // The node has 192.168.1.10 (its primary InternalIP) and 10.0.5.10.
  const nodePort = (mode: string, dst: string) =>
    caseInput('nodeport-addresses-cidr', mode, ['--nodeport-addresses']).trace({ src: '100.64.0.9', dst, dstPort: 30210, from: 'external' });

  it('node ports only on the primary node IP without --nodeport-addresses; iptables takes every node address', () => {
    expect(distribution(nodePort('nftables', '192.168.1.10'))).toEqual({ '10.244.2.210:8080': 1 });
    const secondary = nodePort('nftables', '10.0.5.10');
    expect(distribution(secondary)).toEqual({ 'no-match': 1 });
    expect(secondary.why.join('\n')).toMatch(/take no node ports on 10\.0\.5\.10/);
    expect(distribution(nodePort('iptables', '10.0.5.10'))).toEqual({ '10.244.2.210:8080': 1 });
  });

  it('--iptables-masquerade-bit sets the mark nftables masquerades by', () => {
    const r = caseInput('masquerade-bit-12', 'nftables').trace({ src: '100.64.0.9', dst: '10.96.210.210', dstPort: 80, from: 'external' });
    expect(r.destinations.map((d) => d.masquerade)).toEqual([true]);
    const details = [...steps(r)].flatMap((s) => (s.kind === 'rule' && s.detail ? [s.detail] : []));
    expect(details).toContain('packet mark 0x0 -> 0x1000');
    expect(r.destinations[0]!.decidedBy).toMatchObject({ chain: 'cluster-endpoints' });
  });
});

const HEAD = `add table ip t
add chain ip t pre { type nat hook prerouting priority -100 ; }
add chain ip t fwd { type filter hook forward priority 0 ; policy drop ; }
`;

function traceScript(script: string, spec: PacketSpec): ReturnType<NftablesDataplane['trace']> {
  const packet: Packet = { protocol: 'tcp', srcPort: null, from: 'pod', ...spec };
  return NftablesDataplane.ofScript(HEAD + script, ['192.168.1.10']).trace(packet);
}

const odds = (t: ReturnType<typeof traceScript>) => t.outcomes.map((o) => [o.verdict, o.dnat, Number(o.probability.toFixed(6))]);

describe('the evaluator on hand-written scripts', () => {
  it('looks up concatenated keys with prefixes and port ranges in an interval set', () => {
    const script = `add set ip t allow { type ipv4_addr . inet_service ; flags interval ; }
add element ip t allow { 10.1.0.0/16 . 8000-8999 , 10.2.0.7 . 443 }
add rule ip t fwd ip saddr . th dport @allow accept
`;
    expect(odds(traceScript(script, { src: '10.1.9.9', dst: '10.9.0.1', dstPort: 8080 }))).toEqual([['accept', null, 1]]);
    expect(odds(traceScript(script, { src: '10.2.0.7', dst: '10.9.0.1', dstPort: 443 }))).toEqual([['accept', null, 1]]);
    const refused = traceScript(script, { src: '10.1.9.9', dst: '10.9.0.1', dstPort: 9000 });
    expect(odds(refused)).toEqual([['drop', null, 1]]);
    expect(refused.outcomes[0]!.decidedBy).toMatchObject({ chain: 'fwd', rule: 0, text: 'policy drop' });
  });

  it('applies the base chain\'s policy to a packet that falls off a chain it went to by goto', () => {
    const script = `add chain ip t side
add rule ip t fwd goto side
add rule ip t side ip saddr 10.1.0.1 accept
`;
    expect(odds(traceScript(script, { src: '10.1.0.1', dst: '10.9.0.1', dstPort: 80 }))).toEqual([['accept', null, 1]]);
    const dropped = traceScript(script, { src: '10.1.0.2', dst: '10.9.0.1', dstPort: 80 });
    expect(dropped.outcomes[0]).toMatchObject({ verdict: 'drop', decidedBy: { chain: 'fwd', rule: 0, text: 'policy drop' } });
  });

  it('forks numgen into every draw, and a draw with no element goes on to the next rule', () => {
    const script = `add map ip t be { typeof ip daddr . numgen random mod 3 : ip daddr . th dport ; }
add element ip t be { 10.9.0.1 . 0 : 10.0.0.1 . 80 , 10.9.0.1 . 2 : 10.0.0.3 . 8080 }
add rule ip t pre dnat ip to ip daddr . numgen random mod 3 map @be
add rule ip t pre dnat to 10.0.0.9:99
add rule ip t fwd accept
`;
    const t = traceScript(script, { src: '10.1.0.1', dst: '10.9.0.1', dstPort: 80 });
    expect(odds(t)).toEqual([
      ['dnat', '10.0.0.1:80', 0.333333],
      ['dnat', '10.0.0.9:99', 0.333333],
      ['dnat', '10.0.0.3:8080', 0.333333],
    ]);
    expect(t.path.branches).toHaveLength(3);
  });

  it('does not fork a numgen rule about other destinations, and hides it', () => {
    const script = `add map ip t be { typeof ip daddr . numgen random mod 2 : ip daddr . th dport ; }
add element ip t be { 10.9.0.1 . 0 : 10.0.0.1 . 80 , 10.9.0.1 . 1 : 10.0.0.2 . 80 }
add rule ip t pre dnat ip to ip daddr . numgen random mod 2 map @be
add rule ip t fwd accept
`;
    const t = traceScript(script, { src: '10.1.0.1', dst: '10.9.0.2', dstPort: 80 });
    expect(t.path.branches).toHaveLength(0);
    expect(t.path.steps).toContainEqual({ kind: 'skipped', table: 'ip t', chain: 'pre', count: 1 });
  });

  it('masks marks, and applies mark statements', () => {
    const script = `add chain ip t post { type nat hook postrouting priority 100 ; }
add rule ip t pre mark set mark or 0x4000
add rule ip t fwd accept
add rule ip t post mark and 0x4000 == 0 return
add rule ip t post meta mark set meta mark xor 0x4000
add rule ip t post masquerade fully-random
`;
    const t = traceScript(script, { src: '10.1.0.1', dst: '10.9.0.2', dstPort: 80 });
    expect(t.outcomes).toHaveLength(1);
    expect(t.outcomes[0]).toMatchObject({ verdict: 'accept', masquerade: true });
  });

  it('reads the commands a sync writes: insert, flush, delete element', () => {
    const script = `add set ip t blocked { type ipv4_addr ; }
add element ip t blocked { 10.1.0.1 , 10.1.0.2 }
delete element ip t blocked { 10.1.0.1 }
add rule ip t fwd drop
flush chain ip t fwd
add rule ip t fwd ip saddr @blocked drop
insert rule ip t fwd ip saddr 10.1.0.3 accept
add rule ip t fwd accept
`;
    expect(odds(traceScript(script, { src: '10.1.0.1', dst: '10.9.0.2', dstPort: 80 }))).toEqual([['accept', null, 1]]);
    expect(odds(traceScript(script, { src: '10.1.0.2', dst: '10.9.0.2', dstPort: 80 }))).toEqual([['drop', null, 1]]);
  });

  it('says what it cannot evaluate instead of guessing', () => {
    const unknown = traceScript('add rule ip t fwd iifname "eth0" accept\n', { src: '10.1.0.1', dst: '10.9.0.2', dstPort: 80 });
    expect(unknown.outcomes[0]).toMatchObject({ verdict: 'not-evaluable', reason: expect.stringContaining('iifname "eth0" is not something the trace can evaluate') });
    const missing = traceScript('add rule ip t fwd goto nowhere\n', { src: '10.1.0.1', dst: '10.9.0.2', dstPort: 80 });
    expect(missing.outcomes[0]).toMatchObject({ verdict: 'not-evaluable', reason: expect.stringContaining('chain nowhere is not in the ruleset') });
    const noSet = traceScript('add rule ip t fwd ip saddr @gone accept\n', { src: '10.1.0.1', dst: '10.9.0.2', dstPort: 80 });
    expect(noSet.outcomes[0]).toMatchObject({ verdict: 'not-evaluable', reason: expect.stringContaining('set @gone is not in the ruleset') });
  });

  it('names the chain and rule of a rule it cannot read', () => {
    expect(() => traceScript('add rule ip t fwd ip saddr { 10.0.0.1 accept\n', { src: '10.1.0.1', dst: '10.9.0.2', dstPort: 80 })).toThrow(/fwd rule 1/);
    expect(() => NftablesDataplane.ofScript('this is not nft\n', [])).toThrow(/line 1: not a command the trace reads/);
  });
});

describe('trace --proxy-mode nftables and /debug/trace', () => {
  const EXAMPLE = readGoldenCase('example-cluster');

  it('the CLI traces through the nftables rules', () => {
    const r = cli(['trace', '--proxy-mode', 'nftables', '--from-file', EXAMPLE.input, ...EXAMPLE.args, '--src', '10.244.0.7', '--dst', '10.96.20.15:80']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^tcp 10\.244\.0\.7 -> 10\.96\.20\.15:80 from a pod, entering node-a \(IPv4, nftables mode\)$/m);
    expect(r.stdout).toContain('one of 3 ways (numgen random):');
    expect(r.stdout).toContain('Verdict: DNAT to one of 3 endpoints, not masqueraded');
    expect(r.stdout).toMatch(/balanced over the cluster set \(@cluster-endpoints-tcp-3\)/);
  });

  it('the agent\'s /debug/trace answers from the nftables mode it runs', () => {
    const p = pipeline(readFileSync(EXAMPLE.input, 'utf8'), [...EXAMPLE.args, '--proxy-mode', 'nftables'], 'example');
    const src = { models: () => p.build.model.families, families: ['IPv4' as const], node: () => p.build.model.node, mode: p.mode, pendingSince: () => null };
    const a = debugTrace(src, new URLSearchParams({ src: '10.244.0.7', dst: '10.96.20.15:80', output: 'json' }));
    expect(a.status).toBe(200);
    const j = JSON.parse(a.body) as TraceResult;
    expect(j.mode).toBe('nftables');
    expect(j).toEqual(JSON.parse(JSON.stringify(p.trace({ src: '10.244.0.7', dst: '10.96.20.15', dstPort: 80 }))));
  });
});
