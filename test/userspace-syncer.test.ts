/**
 * userspace mode's syncer against the fake iptables (no root) and real listeners on
 * loopback: listeners open before the rules point at them, keep their ports across syncs,
 * close once their service goes; a port someone else holds is given up for another.
 */
import net from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ClusterState } from '../src/agent/state.js';
import { IptablesApplier } from '../src/modes/iptables/applier.js';
import { FakeIptables } from '../src/modes/iptables/fake.js';
import { binaries } from '../src/modes/iptables/variant.js';
import { Proxier } from '../src/modes/userspace/proxier.js';
import { NO_STATS } from '../src/modes/userspace/stats.js';
import { userspaceMode } from '../src/modes/userspace/mode.js';
import { UserspaceSyncer } from '../src/modes/userspace/syncer.js';
import { endpointSlice, service } from './support/objects.js';

const log = pino({ level: 'silent' });
const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function freeRange(n: number): Promise<number> {
  // A run of free ports: taken together, then released.
  for (let first = 41_000 + Math.floor(Math.random() * 10_000); ; first += n) {
    const held: net.Server[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const s = net.createServer();
        await new Promise<void>((resolve, reject) => (s.once('error', reject), s.listen(first + i, '0.0.0.0', resolve)));
        held.push(s);
      }
      return first;
    } catch {
      continue;
    } finally {
      for (const s of held) await new Promise((r) => s.close(r));
    }
  }
}

async function harness(first: number) {
  const fake = new FakeIptables({ variant: 'nf_tables' });
  const state = new ClusterState('node-a', {
    problem: (p) => {
      throw new Error(`invalid test object: ${JSON.stringify(p)}`);
    },
  });
  const proxier = new Proxier({ scheduler: 'rr', maxConnectionAgeMs: 0, udpIdleTimeoutMs: 250, maxConnections: 100, stats: NO_STATS, log, localAddresses: () => ['127.0.0.1'] });
  closers.push(() => proxier.closeAll());
  const appliers = new Map([['IPv4' as const, new IptablesApplier('IPv4', fake.run, binaries('IPv4', 'nf_tables'))]]);
  const syncer = new UserspaceSyncer(appliers, proxier, { clusterCIDRs: [], nodePortAddresses: [], localhostNodePorts: true, portRange: { first, last: first + 2 }, maxConnectionAgeMs: 0 }, log);
  const sync = async () => {
    const changes = state.take();
    return syncer.sync({ model: state, services: changes.services, all: changes.all });
  };
  const portals = () => fake.rules('IPv4', 'nat', 'KUBE-PORTALS-CONTAINER') ?? [];
  return { fake, state, proxier, syncer, sync, portals };
}

/** Whether something listens on the port: a listener without endpoints accepts, then resets. */
const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.on('connect', () => (c.destroy(), resolve(true)));
    c.on('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'ECONNREFUSED'));
  });

describe('userspace syncer', () => {
  it('opens listeners before the rules point at them, keeps their ports, and closes them with their service', async () => {
    const first = await freeRange(3);
    const h = await harness(first);
    h.state.upsertService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    h.state.upsertSlice(endpointSlice('ns', 'b', 'b-1', [{ name: 'http', port: 8080 }], [{ ip: '10.244.0.5', nodeName: 'node-a' }]));
    expect(await h.sync()).toEqual({ ok: true, full: true, reason: 'required' });
    expect(h.portals()).toEqual([`-m comment --comment "ns/b:http cluster IP" -m tcp -p tcp -d 10.96.0.2 --dport 80 -j REDIRECT --to-ports ${first}`]);
    expect(await accepts(first)).toBe(true);
    expect(h.fake.rules('IPv4', 'nat', 'PREROUTING')!.some((r) => r.includes('KUBE-PORTALS-CONTAINER'))).toBe(true);

    // A service that sorts first arrives: ns/b keeps its port, ns/a takes the next free one.
    h.state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    expect(await h.sync()).toEqual({ ok: true, full: false, reason: null });
    expect(h.portals()).toContain(`-m comment --comment "ns/b:http cluster IP" -m tcp -p tcp -d 10.96.0.2 --dport 80 -j REDIRECT --to-ports ${first}`);
    expect(h.portals()).toContain(`-m comment --comment "ns/a:http cluster IP" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j REDIRECT --to-ports ${first + 1}`);

    h.state.deleteService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    await h.sync();
    expect(h.portals()).toHaveLength(1);
    expect(await accepts(first)).toBe(false);
    expect(await accepts(first + 1)).toBe(true);
  });

  it('gives a service port another port when its own is taken, and captures nothing it cannot serve', async () => {
    const first = await freeRange(3);
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(first, '0.0.0.0', r));
    closers.push(() => new Promise((r) => squatter.close(r)));
    const h = await harness(first);
    h.state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    expect((await h.sync()).ok).toBe(true);
    expect(h.portals()).toEqual([`-m comment --comment "ns/a:http cluster IP" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j REDIRECT --to-ports ${first + 1}`]);
    // Three services, two usable ports: the one left over gets no rule.
    h.state.upsertService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    h.state.upsertService(service('ns', 'c', '10.96.0.3', [{ name: 'http', port: 80 }]));
    expect((await h.sync()).ok).toBe(true);
    expect(h.portals()).toHaveLength(2);
    expect(h.portals().join('\n')).not.toContain(`--to-ports ${first}\n`);
  });

  it('--cleanup removes its chains and the jumps to them, and leaves everything else', async () => {
    const first = await freeRange(3);
    const h = await harness(first);
    h.state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    expect((await h.sync()).ok).toBe(true);
    // Someone else's rule in the same built-in chain stays.
    await h.fake.run('iptables', ['-w', '5', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '2222', '-j', 'ACCEPT']);
    expect(await userspaceMode.cleanup({ run: h.fake.run, log, sysctl: { ensure: async () => {} } })).toBe(true);
    const nat = h.fake.chains('IPv4', 'nat');
    for (const c of ['KUBE-PORTALS-CONTAINER', 'KUBE-PORTALS-HOST', 'KUBE-NODEPORT-CONTAINER', 'KUBE-NODEPORT-HOST']) expect(nat).not.toContain(c);
    expect(h.fake.rules('IPv4', 'nat', 'PREROUTING')).toEqual(['-p tcp --dport 2222 -j ACCEPT']);
    expect(h.fake.rules('IPv4', 'nat', 'OUTPUT')).toEqual([]);
  });

  it('keeps a service\'s open connections while other services come and go', async () => {
    const first = await freeRange(3);
    const h = await harness(first);
    const echo = net.createServer((c) => (c.on('error', () => {}), c.pipe(c)));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => echo.close(r)));
    const port = (echo.address() as net.AddressInfo).port;
    h.state.upsertService(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80, targetPort: port }]));
    h.state.upsertSlice(endpointSlice('ns', 'a', 'a-1', [{ name: 'http', port }], [{ ip: '127.0.0.1', nodeName: 'node-a' }]));
    expect((await h.sync()).ok).toBe(true);
    const c = net.connect(first, '127.0.0.1');
    closers.push(() => c.destroy());
    let closed = false;
    c.on('close', () => (closed = true));
    const roundTrip = (text: string) => new Promise<string>((resolve) => (c.once('data', (d) => resolve(String(d))), c.write(text)));
    expect(await roundTrip('one')).toBe('one');
    h.state.upsertService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    await h.sync();
    h.state.deleteService(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    await h.sync();
    expect(closed).toBe(false);
    expect(await roundTrip('two')).toBe('two');
  });
});
