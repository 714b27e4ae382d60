/**
 * userspace mode's syncer against the fake iptables (no root) and real listeners on
 * loopback: listeners open before the rules point at them, keep their ports across syncs,
 * close once their service goes; a port someone else holds is given up for another. Each
 * case runs with the listeners in this process and in worker processes.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { userspaceMode } from '../src/modes/userspace/mode.js';
import { endpointSlice, service } from './support/objects.js';
import { accepts, freeRange, harness as harnessOf, log } from './support/userspace.js';

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

// 0: listeners in this process; 2: in worker processes (the default on a multi-core node).
describe.each([0, 2])('userspace syncer, %s worker processes', (workers) => {
  const harness = (first: number) => harnessOf(first, closers, { workers });

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
