/**
 * Jump rules end in upstream's order: upstream prepends each in turn, so `iptables -S` on a
 * node lists them last-ensured first, and an operator comparing a node of ours with one of
 * upstream's sees the same chains. The applier, the dry-run header (its `-I` commands run
 * in order) and the trace must all agree on that order.
 */
import { describe, expect, it } from 'vitest';
import { IptablesApplier } from '../src/modes/iptables/applier.js';
import { jumpCommands } from '../src/modes/iptables/dryrun.js';
import { FakeIptables } from '../src/modes/iptables/fake.js';
import { renderIptables } from '../src/modes/iptables/render.js';
import { restoreChunks } from '../src/modes/iptables/ruleset.js';
import { rulesetTables } from '../src/modes/iptables/tables.js';
import { tokenize } from '../src/modes/iptables/rule.js';

const rs = renderIptables({ family: 'IPv4', servicePorts: [], serviceCIDRs: [] }, { nodeName: 'node-a', zone: null, labels: {}, nodeIPs: ['192.0.2.10'] });

describe('jump rule order', () => {
  it('the applier leaves the built-in chains in upstream order', async () => {
    const fake = new FakeIptables();
    await new IptablesApplier('IPv4', fake.run).ensureJumps(rs.jumps);
    expect(fake.rules('IPv4', 'filter', 'INPUT')).toEqual([
      '-j KUBE-FIREWALL',
      '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
      '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
      '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    ]);
    expect(fake.rules('IPv4', 'filter', 'FORWARD')).toEqual([
      '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
      '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
      '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    ]);
  });

  it('ensuring again changes nothing', async () => {
    const fake = new FakeIptables();
    const applier = new IptablesApplier('IPv4', fake.run);
    await applier.ensureJumps(rs.jumps);
    const once = fake.save('IPv4');
    await applier.ensureJumps(rs.jumps);
    expect(fake.save('IPv4')).toBe(once);
  });

  it("the dry run's commands, run in order, give the same tables", async () => {
    const byApplier = new FakeIptables();
    await new IptablesApplier('IPv4', byApplier.run).ensureJumps(rs.jumps);
    // The restore comes first on a node: the jumps' target chains exist by then.
    const byHeader = new FakeIptables();
    await byHeader.run('iptables-restore', ['--noflush'], restoreChunks(rs));
    await new IptablesApplier('IPv4', byApplier.run).restore({ what: 'ruleset', chunks: restoreChunks(rs), lines: 0 });
    for (const command of jumpCommands(rs)) {
      const [bin, ...args] = tokenize(command);
      expect((await byHeader.run(bin!, args)).status, command).toBe(0);
    }
    expect(byHeader.save('IPv4')).toBe(byApplier.save('IPv4'));
  });

  it('the trace walks the built-in chains in that order', async () => {
    const fake = new FakeIptables();
    await new IptablesApplier('IPv4', fake.run).ensureJumps(rs.jumps);
    const tables = rulesetTables(rs);
    for (const [table, chain] of [
      ['filter', 'INPUT'],
      ['filter', 'FORWARD'],
      ['filter', 'OUTPUT'],
      ['nat', 'PREROUTING'],
      ['nat', 'OUTPUT'],
    ] as const) {
      expect(tables.get(table)!.rules(chain)!.map((r) => r.text)).toEqual(fake.rules('IPv4', table, chain));
    }
  });
});
