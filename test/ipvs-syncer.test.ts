/**
 * The ipvs start-up and syncer against the in-memory node (FakeIpvsHost): the real
 * renderer, planners, applier and syncer, driven as the agent drives them, checked on
 * the commands they run and on what the fake kernel holds afterwards. No root. The
 * last test starts the real agent on this machine, whose kernel has no IPVS.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ClusterState } from '../src/agent/state.js';
import { mergeConfig, type ProxyConfig } from '../src/config/options.js';
import type { FakeCall } from '../src/modes/iptables/fake.js';
import { FakeIpvsHost } from '../src/modes/ipvs/fake.js';
import { cleanupIpvs, ipvsOptions, ipvsSysctls, startIpvs } from '../src/modes/ipvs/mode.js';
import { connectionKey } from '../src/modes/ipvs/table.js';
import type { Host } from '../src/modes/mode.js';
import { endpointSlice, node, service } from './support/objects.js';

const log = pino({ level: 'silent' });
const NODE = 'node-a';
const ROOT = join(import.meta.dirname, '..');

function config(over: Parameters<typeof mergeConfig>[0] = {}): ProxyConfig {
  return mergeConfig({ mode: 'ipvs', hostnameOverride: NODE, clusterCIDRs: ['10.244.0.0/16'], ...over });
}

const web = service('default', 'web', '10.96.45.12', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort' });
const webSlice = (ips: string[]) =>
  endpointSlice(
    'default',
    'web',
    'web-1',
    [{ name: 'http', port: 8080 }],
    ips.map((ip, i) => ({ ip, nodeName: i === 0 ? NODE : 'node-b' })),
  );

class Harness {
  readonly fake: FakeIpvsHost;
  readonly state = new ClusterState(NODE, {
    problem: (p) => {
      throw new Error(`invalid test object: ${JSON.stringify(p)}`);
    },
  });
  readonly sysctls: [string, number][] = [];
  clock = 1_000_000;
  lastCalls: FakeCall[] = [];

  constructor(opts: { ipvs?: boolean; dummy?: boolean } = {}) {
    this.fake = new FakeIpvsHost(opts);
  }

  get host(): Host {
    return { run: this.fake.run, sysctl: { ensure: async (n, v) => void this.sysctls.push([n, v]) }, log };
  }

  async start(cfg = config()) {
    return startIpvs(cfg, this.host, { exists: this.fake.exists, run: this.fake.run, release: '6.1.0-18-amd64' }, ipvsOptions(cfg), () => this.clock);
  }

  apply(...objects: unknown[]): this {
    for (const o of objects) {
      const kind = (o as { kind?: string }).kind;
      if (kind === 'Service') this.state.upsertService(o);
      else if (kind === 'EndpointSlice') this.state.upsertSlice(o);
      else if (kind === 'Node') this.state.upsertNode(o);
    }
    return this;
  }

  async sync(syncer: Awaited<ReturnType<Harness['start']>>) {
    const first = this.fake.calls.length;
    const changes = this.state.take();
    const r = await syncer.sync({ model: this.state, services: changes.services, all: changes.all });
    this.lastCalls = this.fake.calls.slice(first);
    return r;
  }

  /** The ipvs-side commands of the last sync, as `cmd args...` (iptables ones by tool name only). */
  commands(): string[] {
    return this.lastCalls.map((c) => (['ip', 'ipset', 'ipvsadm'].includes(c.cmd) ? [c.cmd, ...c.args].join(' ') : c.cmd));
  }
}

describe('ipvs start-up', () => {
  it('refuses a kernel without IPVS and dummy interfaces in one message, having changed nothing', async () => {
    const h = new Harness({ ipvs: false, dummy: false });
    const err = await h.start().then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/^--proxy-mode ipvs: this kernel lacks IPVS \(.*\) and dummy interfaces for kube-ipvs0 \(.*\); load the modules or use --proxy-mode iptables$/);
    expect(err?.message).not.toContain('\n');
    // Only the attempts to load the modules ran: no sysctl, no iptables, no ip.
    expect(h.fake.calls.map((c) => `${c.cmd} ${c.args.join(' ')}`)).toEqual(['modprobe -- ip_vs', 'modprobe -- dummy']);
    expect(h.sysctls).toEqual([]);
  });

  it('names only what is missing', async () => {
    const err = await new Harness({ ipvs: true, dummy: false }).start().catch((e: Error) => e);
    expect((err as Error).message).toContain('lacks dummy interfaces');
    expect((err as Error).message).not.toContain('IPVS (');
  });

  it('sets upstream\'s sysctls (strict ARP when asked) and the IPVS timeouts', async () => {
    const h = new Harness();
    await h.start(config({ ipvs: { strictARP: true, tcpTimeoutMs: 900_000, udpTimeoutMs: 300_000 } }));
    expect(h.sysctls).toEqual([
      ['net/ipv4/vs/conntrack', 1],
      ['net/ipv4/vs/expire_nodest_conn', 1],
      ['net/ipv4/vs/expire_quiescent_template', 1],
      ['net/ipv4/ip_forward', 1],
      ['net/ipv4/conf/all/arp_ignore', 1],
      ['net/ipv4/conf/all/arp_announce', 2],
    ]);
    expect(h.fake.timeouts).toEqual(['900', '0', '300']);
    // Kernels before 5.9 need the conn_reuse_mode workaround.
    expect(ipvsSysctls(config(), '5.4.0-150-generic')).toContainEqual(['net/ipv4/vs/conn_reuse_mode', 0]);
  });
});

describe('ipvs syncer', () => {
  it('programs a fresh node: kube-ipvs0, sets, iptables, addresses, virtual servers, in that order', async () => {
    const h = new Harness().apply(node(NODE, '192.168.1.10'), web, webSlice(['10.244.1.7', '10.244.2.9']));
    const syncer = await h.start();
    expect(await h.sync(syncer)).toEqual({ ok: true, full: true, reason: 'required' });
    const cmds = h.commands();
    const at = (prefix: string) => cmds.findIndex((c) => c.startsWith(prefix));
    expect(cmds.slice(0, 5)).toEqual(['ip link show dev kube-ipvs0', 'ip link add kube-ipvs0 type dummy', 'ip -o addr show dev kube-ipvs0', 'ipset save', 'ipvsadm -Sn']);
    expect(at('ipset restore -exist')).toBeLessThan(at('iptables-nft-restore'));
    expect(at('iptables-nft-restore')).toBeLessThan(at('ip -batch -'));
    expect(at('ip -batch -')).toBeLessThan(at('ipvsadm -R'));

    expect(h.fake.saved()).toBe(
      [
        '-A -t 10.96.45.12:80 -s rr',
        '-a -t 10.96.45.12:80 -r 10.244.1.7:8080 -m -w 1',
        '-a -t 10.96.45.12:80 -r 10.244.2.9:8080 -m -w 1',
        '-A -t 192.168.1.10:30080 -s rr',
        '-a -t 192.168.1.10:30080 -r 10.244.1.7:8080 -m -w 1',
        '-a -t 192.168.1.10:30080 -r 10.244.2.9:8080 -m -w 1',
      ].join('\n'),
    );
    expect([...h.fake.device!]).toEqual(['10.96.45.12/32']);
    expect([...h.fake.sets.get('KUBE-CLUSTER-IP')!.entries]).toEqual(['10.96.45.12,tcp:80']);
    expect([...h.fake.sets.get('KUBE-NODE-PORT-TCP')!.entries]).toEqual(['30080']);
    expect(h.fake.iptables.rules('IPv4', 'nat', 'KUBE-SERVICES')).toContain('-m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT');
    expect(h.fake.iptables.rules('IPv4', 'filter', 'INPUT')?.[0]).toContain('-j KUBE-IPVS-FILTER');
  });

  it('turns one endpoint change into a few ipvsadm lines, without reading the kernel or rewriting iptables', async () => {
    const h = new Harness().apply(node(NODE, '192.168.1.10'), web, webSlice(['10.244.1.7', '10.244.2.9']));
    const syncer = await h.start();
    await h.sync(syncer);
    // Clients are connected through the endpoint about to go.
    const clusterIP = connectionKey('-t 10.96.45.12:80', '10.244.2.9:8080');
    const nodePort = connectionKey('-t 192.168.1.10:30080', '10.244.2.9:8080');
    h.fake.connections.set(clusterIP, { active: 1, inactive: 0 });
    h.fake.connections.set(nodePort, { active: 0, inactive: 2 });
    h.apply(webSlice(['10.244.1.7', '10.244.3.4']));
    expect(await h.sync(syncer)).toEqual({ ok: true, full: false, reason: null });
    const restore = h.lastCalls.find((c) => c.cmd === 'ipvsadm' && c.args[0] === '-R')!;
    // The new endpoint is added; the old one drains at weight 0 while it has connections.
    expect(restore.input!.trim().split('\n')).toEqual([
      '-a -t 10.96.45.12:80 -r 10.244.3.4:8080 -m -w 1',
      '-e -t 10.96.45.12:80 -r 10.244.2.9:8080 -m -w 0',
      '-a -t 192.168.1.10:30080 -r 10.244.3.4:8080 -m -w 1',
      '-e -t 192.168.1.10:30080 -r 10.244.2.9:8080 -m -w 0',
    ]);
    expect(h.commands()).toEqual(['ipvsadm -Ln', 'ipvsadm -R']);

    // Later: the node port's connections are over, it goes; the cluster IP's one is still open.
    h.fake.connections.delete(nodePort);
    h.clock += 30_000;
    await h.sync(syncer);
    expect(h.lastCalls.find((c) => c.args[0] === '-R')!.input!.trim()).toBe('-d -t 192.168.1.10:30080 -r 10.244.2.9:8080');
    h.fake.connections.clear();
    h.clock += 30_000;
    await h.sync(syncer);
    expect(h.lastCalls.find((c) => c.args[0] === '-R')!.input!.trim()).toBe('-d -t 10.96.45.12:80 -r 10.244.2.9:8080');
    expect(h.fake.saved()).not.toContain('10.244.2.9');
    // Nothing left to do: no command at all.
    await h.sync(syncer);
    expect(h.commands()).toEqual([]);
  });

  it('removes a deleted service: its virtual servers, set entries and address', async () => {
    const other = service('default', 'api', '10.96.0.20', [{ port: 443, targetPort: 8443 }]);
    const otherSlice = endpointSlice('default', 'api', 'api-1', [{ port: 8443 }], [{ ip: '10.244.1.20', nodeName: NODE }]);
    const h = new Harness().apply(node(NODE, '192.168.1.10'), web, webSlice(['10.244.1.7']), other, otherSlice);
    const syncer = await h.start();
    await h.sync(syncer);
    h.state.deleteService(other);
    await h.sync(syncer);
    expect(h.lastCalls.find((c) => c.args[0] === '-R')!.input).toBe('-D -t 10.96.0.20:443\n');
    expect(h.lastCalls.find((c) => c.cmd === 'ipset')!.input).toContain('del KUBE-CLUSTER-IP 10.96.0.20,tcp:443\n');
    expect(h.commands().at(-1)).toBe('ip -batch -');
    expect(h.lastCalls.at(-1)!.input).toBe('address del 10.96.0.20/32 dev kube-ipvs0\n');
    expect([...h.fake.device!]).toEqual(['10.96.45.12/32']);
  });

  it('rebuilds a set that mostly changes and swaps it in, leaving no temporary set', async () => {
    const h = new Harness().apply(node(NODE, '192.168.1.10'), web, webSlice(['10.244.1.7']));
    const syncer = await h.start();
    await h.sync(syncer);
    for (let i = 0; i < 100; i++) h.apply(service('bulk', `s${i}`, `10.96.200.${i}`, [{ port: 80, targetPort: 8080 }]));
    expect((await h.sync(syncer)).ok).toBe(true);
    const batch = h.lastCalls.find((c) => c.cmd === 'ipset')!.input!;
    expect(batch).toContain('swap KUBE-TMP-0 KUBE-CLUSTER-IP\ndestroy KUBE-TMP-0\n');
    expect(h.fake.sets.get('KUBE-CLUSTER-IP')!.entries.size).toBe(101);
    expect([...h.fake.sets.keys()].filter((n) => n.startsWith('KUBE-TMP'))).toEqual([]);
  });

  it('after a failed sync, reads the kernel again and converges', async () => {
    const h = new Harness().apply(node(NODE, '192.168.1.10'), web, webSlice(['10.244.1.7']));
    const syncer = await h.start();
    await h.sync(syncer);
    // Someone deletes our virtual server behind our back, and the next restore fails.
    h.fake.table.delete('-t 10.96.45.12:80');
    h.apply(webSlice(['10.244.1.7', '10.244.2.9']));
    const r = await h.sync(syncer);
    expect(r.ok).toBe(false);
    expect(r).toMatchObject({ error: expect.stringMatching(/ipvsadm -R: Service not defined/) });
    expect(await h.sync(syncer)).toEqual({ ok: true, full: true, reason: 'required' });
    expect(h.commands()).toContain('ipvsadm -Sn');
    expect(h.fake.saved()).toContain('-a -t 10.96.45.12:80 -r 10.244.2.9:8080 -m -w 1');
  });

  it('reports a deleted jump rule or kube-ipvs0 as damage', async () => {
    const h = new Harness().apply(web, webSlice(['10.244.1.7']));
    const syncer = await h.start();
    await h.sync(syncer);
    expect(await syncer.damage()).toBeNull();
    await h.fake.run('iptables', ['-t', 'filter', '-D', 'INPUT', '-m', 'comment', '--comment', 'kubernetes ipvs access filter', '-j', 'KUBE-IPVS-FILTER']);
    expect(await syncer.damage()).toBe('IPv4 jump rule from filter INPUT to KUBE-IPVS-FILTER is gone');
    h.fake.device = null;
    expect(await syncer.damage()).toBe('kube-ipvs0 is gone');
  });
});

describe('ipvs --cleanup', () => {
  it('removes kube-ipvs0, our virtual servers, the iptables part and the KUBE-* sets, and nothing else', async () => {
    const h = new Harness().apply(node(NODE, '192.168.1.10'), web, webSlice(['10.244.1.7']));
    const syncer = await h.start();
    await h.sync(syncer);
    h.fake.table.set('-t 192.168.1.10:8080', { protocol: 'tcp', address: '192.168.1.10:8080', scheduler: 'wlc', persistence: null, realServers: [] });
    h.fake.sets.set('user-set', { type: 'hash:ip', family: 'inet', entries: new Set() });
    expect(await cleanupIpvs(h.host, h.fake.exists)).toBe(true);
    expect(h.fake.device).toBeNull();
    expect(h.fake.saved()).toBe('-A -t 192.168.1.10:8080 -s wlc');
    expect([...h.fake.sets.keys()]).toEqual(['user-set']);
    expect(h.fake.iptables.chains('IPv4', 'nat')).not.toContain('KUBE-SERVICES');
    expect(h.fake.iptables.chains('IPv4', 'filter')).not.toContain('KUBE-IPVS-FILTER');
  });

  it('does not fail on a kernel without IPVS or kube-ipvs0', async () => {
    const h = new Harness({ ipvs: false, dummy: false });
    expect(await cleanupIpvs(h.host, h.fake.exists)).toBe(true);
    expect(h.fake.calls.some((c) => c.cmd === 'ipvsadm')).toBe(false);
  });
});

describe('the agent on this machine', () => {
  const kernelHasIpvs = existsSync('/proc/net/ip_vs') && existsSync('/sys/module/dummy');
  const main = join(ROOT, 'dist', 'src', 'main.js');
  it.skipIf(kernelHasIpvs || !existsSync(main))('exits at start-up with one line naming what the kernel lacks', () => {
    const r = spawnSync(process.execPath, [main, '--proxy-mode', 'ipvs', '--hostname-override', NODE, '--kubeconfig', '/nonexistent'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^kube-proxy-ts: --proxy-mode ipvs: this kernel lacks IPVS .*and dummy interfaces/);
  });
  if (kernelHasIpvs) it('(skipped: this kernel has IPVS and dummy interfaces)', () => {});
});
