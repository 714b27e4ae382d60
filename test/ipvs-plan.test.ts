/**
 * The ipvs diff planners on recorded states: `ipvsadm -Sn` and `ipvsadm -Ln` output
 * (test/fixtures/ipvsadm) for the virtual servers, `ipset save` for the sets. Each plan
 * is also run through the in-memory ipvsadm, which refuses what the real one refuses,
 * and must leave the wanted table.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCIDR } from '../src/net/ip.js';
import { FakeIpvsHost } from '../src/modes/ipvs/fake.js';
import { parseIpsetSave, planIpsets } from '../src/modes/ipvs/ipset-plan.js';
import type { Ipset } from '../src/modes/ipvs/ipsets.js';
import { planIpvs, type PlanInput } from '../src/modes/ipvs/plan.js';
import { connectionKey, parseIpvsadmList, parseIpvsadmSave, restoreLines, type IpvsTable } from '../src/modes/ipvs/table.js';

const fixture = (name: string) => readFileSync(join(import.meta.dirname, 'fixtures', 'ipvsadm', name), 'utf8');
const BEFORE = fixture('before.sn');
const WEB = '-t 10.96.45.12:80';
const GOING = '10.244.2.9:8080';

/** A copy of the recorded table to change into the wanted one. */
const table = (): IpvsTable => parseIpvsadmSave(BEFORE);

function plan(wanted: IpvsTable, over: Partial<PlanInput> = {}) {
  return planIpvs({ current: table(), wanted, draining: new Map(), connections: null, now: 1_000_000, gracePeriodMs: 60_000, excludeCIDRs: [], ...over });
}

/** Runs plan lines through `ipvsadm -R` of the in-memory ipvsadm holding the recorded table; returns what it then holds. */
async function applied(lines: string[]): Promise<string> {
  const host = new FakeIpvsHost();
  for (const [k, vs] of table()) host.table.set(k, vs);
  const r = await host.run('ipvsadm', ['-R'], [Buffer.from(lines.map((l) => `${l}\n`).join(''))]);
  expect(r.stderr).toBe('');
  return host.saved();
}

describe('parsing ipvsadm output', () => {
  it('reads -Sn into virtual servers with their real servers, leaving out firewall-mark services', () => {
    const t = table();
    expect([...t.keys()]).toEqual(['-t 10.96.0.1:443', '-t 10.96.0.10:53', '-u 10.96.0.10:53', WEB, '-t 192.168.1.10:30080', '-t [fd00:10:96::aa]:80']);
    expect(t.get(WEB)).toEqual({
      protocol: 'tcp',
      address: '10.96.45.12:80',
      scheduler: 'rr',
      persistence: null,
      realServers: [
        { address: '10.244.1.7:8080', weight: 1 },
        { address: GOING, weight: 1 },
        { address: '10.244.3.4:8080', weight: 1 },
      ],
    });
  });

  it('prints a table back as the lines it was read from', () => {
    const own = BEFORE.split('\n').filter((l) => l !== '' && !l.includes(' -f '));
    expect(restoreLines(table().values())).toEqual(own);
  });

  it('reads persistence, with ipvsadm\'s default timeout when -p has none', () => {
    const t = parseIpvsadmSave('-A -t 10.0.0.1:80 -s sh -p 600\n-A -u 10.0.0.1:53 -s rr -p\n');
    expect(t.get('-t 10.0.0.1:80')?.persistence).toBe(600);
    expect(t.get('-t 10.0.0.1:80')?.scheduler).toBe('sh');
    expect(t.get('-u 10.0.0.1:53')?.persistence).toBe(300);
  });

  it('refuses what it cannot read rather than guessing', () => {
    expect(() => parseIpvsadmSave('-a -t 10.0.0.1:80 -r 10.1.1.1:80 -m -w 1\n')).toThrow(/before its virtual server/);
    expect(() => parseIpvsadmSave('-X -t 10.0.0.1:80\n')).toThrow(/unexpected line/);
    expect(() => parseIpvsadmSave('-A -t 10.0.0.1 -s rr\n')).toThrow(/not IP:PORT/);
  });

  it('reads -Ln into connection counts per real server', () => {
    const c = parseIpvsadmList(fixture('list-draining.ln'));
    expect(c.get(connectionKey(WEB, GOING))).toEqual({ active: 3, inactive: 1 });
    expect(c.get(connectionKey('-u 10.96.0.10:53', '10.244.0.2:53'))).toEqual({ active: 0, inactive: 4 });
    expect(c.get(connectionKey('-t [fd00:10:96::aa]:80', '[fd00:10:244:1::aa]:8080'))).toEqual({ active: 0, inactive: 0 });
  });
});

describe('planIpvs', () => {
  it('emits nothing when the tables agree', () => {
    expect(plan(table()).lines).toEqual([]);
  });

  it('adds a new virtual server with its real servers', async () => {
    const wanted = table();
    wanted.set('-t 10.96.7.7:8443', { protocol: 'tcp', address: '10.96.7.7:8443', scheduler: 'rr', persistence: null, realServers: [{ address: '10.244.4.4:8443', weight: 1 }] });
    const p = plan(wanted);
    expect(p.lines).toEqual(['-A -t 10.96.7.7:8443 -s rr', '-a -t 10.96.7.7:8443 -r 10.244.4.4:8443 -m -w 1']);
    expect(await applied(p.lines)).toBe(restoreLines(wanted.values()).join('\n'));
  });

  it('deletes a virtual server that is no longer wanted, with one line', async () => {
    const wanted = table();
    wanted.delete('-u 10.96.0.10:53');
    const p = plan(wanted);
    expect(p.lines).toEqual(['-D -u 10.96.0.10:53']);
    expect(await applied(p.lines)).toBe(restoreLines(wanted.values()).join('\n'));
  });

  it('keeps virtual servers inside --ipvs-exclude-cidrs', () => {
    const wanted = table();
    wanted.delete('-t 192.168.1.10:30080');
    expect(plan(wanted, { excludeCIDRs: [parseCIDR('192.168.1.0/24')!] }).lines).toEqual([]);
    expect(plan(wanted).lines).toEqual(['-D -t 192.168.1.10:30080']);
  });

  it('edits a changed weight in place', async () => {
    const wanted = table();
    wanted.get(WEB)!.realServers[0]!.weight = 3;
    const p = plan(wanted);
    expect(p.lines).toEqual([`-e ${WEB} -r 10.244.1.7:8080 -m -w 3`]);
    expect(await applied(p.lines)).toBe(restoreLines(wanted.values()).join('\n'));
  });

  it('edits the scheduler of a virtual server without touching its real servers', () => {
    const wanted = table();
    wanted.get(WEB)!.scheduler = 'lc';
    expect(plan(wanted).lines).toEqual([`-E ${WEB} -s lc`]);
  });

  it('edits persistence on and off (ClientIP affinity and its timeout)', async () => {
    const on = table();
    on.get(WEB)!.persistence = 10800;
    const p = plan(on);
    expect(p.lines).toEqual([`-E ${WEB} -s rr -p 10800`]);
    expect(await applied(p.lines)).toBe(restoreLines(on.values()).join('\n'));
    const off = table();
    const current = table();
    current.get(WEB)!.persistence = 10800;
    expect(plan(off, { current }).lines).toEqual([`-E ${WEB} -s rr`]);
  });

  it('adds a real server, and changes an IPv6 virtual server in its own notation', () => {
    const wanted = table();
    wanted.get('-t [fd00:10:96::aa]:80')!.realServers.push({ address: '[fd00:10:244:2::aa]:8080', weight: 1 });
    expect(plan(wanted).lines).toEqual(['-a -t [fd00:10:96::aa]:80 -r [fd00:10:244:2::aa]:8080 -m -w 1']);
  });

  describe('graceful removal of a TCP real server', () => {
    const withoutGoing = () => {
      const wanted = table();
      const vs = wanted.get(WEB)!;
      vs.realServers = vs.realServers.filter((rs) => rs.address !== GOING);
      return wanted;
    };
    const key = connectionKey(WEB, GOING);

    it('first drains it: weight 0, and asks for connection counts', () => {
      const p = plan(withoutGoing());
      expect(p.lines).toEqual([`-e ${WEB} -r ${GOING} -m -w 0`]);
      expect(p.needsConnections).toBe(true);
      expect(p.draining.get(key)).toBe(1_000_000);
      // The kernel keeps it at weight 0 meanwhile.
      expect(p.after.get(WEB)!.realServers).toContainEqual({ address: GOING, weight: 0 });
    });

    it('deletes it at once when it has no connections', () => {
      const connections = parseIpvsadmList(fixture('list-draining.ln'));
      connections.set(key, { active: 0, inactive: 0 });
      const p = plan(withoutGoing(), { connections });
      expect(p.lines).toEqual([`-d ${WEB} -r ${GOING}`]);
      expect(p.draining.size).toBe(0);
    });

    it('keeps it at weight 0 while it has connections, without repeating the edit', () => {
      const connections = parseIpvsadmList(fixture('list-draining.ln'));
      const current = table();
      current.get(WEB)!.realServers.find((rs) => rs.address === GOING)!.weight = 0;
      const p = plan(withoutGoing(), { current, connections, draining: new Map([[key, 990_000]]) });
      expect(p.lines).toEqual([]);
      expect(p.draining.get(key)).toBe(990_000);
    });

    it('deletes it once the grace period is over, connections or not', () => {
      const connections = parseIpvsadmList(fixture('list-draining.ln'));
      const p = plan(withoutGoing(), { connections, draining: new Map([[key, 1_000_000 - 60_000]]) });
      expect(p.lines).toEqual([`-d ${WEB} -r ${GOING}`]);
    });

    it('puts it back at full weight when it is wanted again while draining', () => {
      const current = table();
      current.get(WEB)!.realServers.find((rs) => rs.address === GOING)!.weight = 0;
      const p = plan(table(), { current, draining: new Map([[key, 990_000]]) });
      expect(p.lines).toEqual([`-e ${WEB} -r ${GOING} -m -w 1`]);
      expect(p.draining.size).toBe(0);
    });

    it('deletes UDP real servers at once: nothing to drain', () => {
      const wanted = table();
      wanted.get('-u 10.96.0.10:53')!.realServers.pop();
      expect(plan(wanted).lines).toEqual(['-d -u 10.96.0.10:53 -r 10.244.0.3:53']);
    });
  });
});

describe('planIpsets', () => {
  const set = (name: string, entries: string[], type: Ipset['type'] = 'hash:ip,port'): Ipset => ({ key: 'clusterIP', name, type, family: 'IPv4', entries: new Set(entries) });
  const saved = parseIpsetSave(
    [
      'create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1f2e3d4c',
      'add KUBE-CLUSTER-IP 10.96.0.1,tcp:443',
      'add KUBE-CLUSTER-IP 10.96.0.10,udp:53',
      'create KUBE-NODE-PORT-TCP bitmap:port range 0-65535',
      'add KUBE-NODE-PORT-TCP 30080',
    ].join('\n'),
  );

  it('creates missing sets and edits the others entry by entry', () => {
    const p = planIpsets(saved, [set('KUBE-CLUSTER-IP', ['10.96.0.1,tcp:443', '10.96.0.11,tcp:80']), set('KUBE-NODE-PORT-TCP', ['30080'], 'bitmap:port'), set('KUBE-IPVS-IPS', ['10.96.0.1'], 'hash:ip')]);
    expect(p.lines).toEqual([
      'del KUBE-CLUSTER-IP 10.96.0.10,udp:53',
      'add KUBE-CLUSTER-IP 10.96.0.11,tcp:80',
      'create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536',
      'add KUBE-IPVS-IPS 10.96.0.1',
    ]);
    expect(p.rebuilt).toEqual([]);
  });

  it('rebuilds a set most of which changes, and swaps it in whole', () => {
    const many = Array.from({ length: 200 }, (_, i) => `10.96.1.${i},tcp:80`);
    const p = planIpsets(saved, [set('KUBE-CLUSTER-IP', many)]);
    expect(p.rebuilt).toEqual(['KUBE-CLUSTER-IP']);
    expect(p.lines[0]).toBe('create KUBE-TMP-0 hash:ip,port family inet hashsize 1024 maxelem 65536');
    expect(p.lines.slice(-2)).toEqual(['swap KUBE-TMP-0 KUBE-CLUSTER-IP', 'destroy KUBE-TMP-0']);
    expect(p.lines.filter((l) => l.startsWith('add KUBE-TMP-0 '))).toHaveLength(200);
  });

  it('refuses a set of ours that exists with another type', () => {
    expect(() => planIpsets(saved, [set('KUBE-NODE-PORT-TCP', ['30080'])])).toThrow(/exists as bitmap:port, not hash:ip,port/);
  });
});
