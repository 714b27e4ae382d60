/**
 * Health check node port servers, on real sockets over loopback: upstream's status codes,
 * headers and body; 503 while the proxy itself is unhealthy; only the node port addresses
 * listen; a port that cannot be bound is retried at the next update.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { healthCheckAddresses, HealthCheckServers, type HealthCheckTarget } from '../src/agent/healthcheck.js';

const node = { nodeName: 'node-a', zone: null, labels: {}, nodeIPs: ['192.168.1.10', '10.0.5.10', 'fd00::10'] };

describe('healthCheckAddresses', () => {
  it('every address of both families without --nodeport-addresses', () => {
    expect(healthCheckAddresses(node, [], ['IPv4', 'IPv6'])).toEqual([{ ipv6Only: false }]);
  });
  it('the matching node addresses of a family with CIDRs; every IPv6 address when IPv6 has none', () => {
    expect(healthCheckAddresses(node, ['192.168.1.0/24'], ['IPv4', 'IPv6'])).toEqual([
      { host: '192.168.1.10', ipv6Only: false },
      { host: '::', ipv6Only: true },
    ]);
  });
  it('primary: the first address of each family; loopback when a CIDR holds it', () => {
    expect(healthCheckAddresses(node, ['primary'], ['IPv4', 'IPv6']).map((a) => a.host)).toEqual(['192.168.1.10', 'fd00::10']);
    expect(healthCheckAddresses(node, ['127.0.0.0/8', 'fd00::/64'], ['IPv4', 'IPv6']).map((a) => a.host)).toEqual(['127.0.0.1', 'fd00::10']);
  });
  it('no IPv6 address on a node that does not program IPv6 (its kernel may have none)', () => {
    expect(healthCheckAddresses(node, ['192.168.1.0/24'], ['IPv4']).map((a) => a.host)).toEqual(['192.168.1.10']);
    expect(healthCheckAddresses(node, [], ['IPv4'])).toEqual([{ ipv6Only: false }]);
  });
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

function get(host: string, port: number): Promise<{ status: number; headers: Record<string, unknown>; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: '/', timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.end();
  });
}

/** Lets servers finish listening or failing to. */
const settle = () => new Promise((r) => setTimeout(r, 50));

describe('HealthCheckServers', () => {
  const logs: { msg: string; port?: number }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line) as { msg: string }) });
  let healthy = true;
  let servers: HealthCheckServers;
  const blockers: Server[] = [];
  const target = (localEndpoints: number): HealthCheckTarget => ({ namespace: 'shop', name: 'web', localEndpoints });
  const loopback = [{ host: '127.0.0.1', ipv6Only: false }];

  afterEach(async () => {
    servers?.close();
    for (const b of blockers.splice(0)) await new Promise((r) => b.close(r));
    logs.length = 0;
    healthy = true;
  });

  it("answers as upstream: 200, the weight header and upstream's tab-indented body", async () => {
    servers = new HealthCheckServers(log, () => healthy);
    const port = await freePort();
    servers.update(new Map([[port, target(2)]]), loopback);
    await settle();
    const r = await get('127.0.0.1', port);
    expect(r).toMatchObject({ status: 200, headers: { 'content-type': 'application/json', 'x-content-type-options': 'nosniff', 'x-load-balancing-endpoint-weight': '2' } });
    expect('body' in r && r.body).toBe('{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}');
  });

  it('503 without a local endpoint, and 503 with endpoints while the proxy is unhealthy', async () => {
    servers = new HealthCheckServers(log, () => healthy);
    const [a, b] = [await freePort(), await freePort()];
    servers.update(
      new Map([
        [a, target(0)],
        [b, target(3)],
      ]),
      loopback,
    );
    await settle();
    expect(await get('127.0.0.1', a)).toMatchObject({ status: 503 });
    expect(await get('127.0.0.1', b)).toMatchObject({ status: 200 });
    healthy = false;
    const r = await get('127.0.0.1', b);
    expect(r).toMatchObject({ status: 503 });
    expect('body' in r && JSON.parse(r.body)).toEqual({ service: { namespace: 'shop', name: 'web' }, localEndpoints: 3, serviceProxyHealthy: false });
  });

  it('listens only on the addresses given', async () => {
    servers = new HealthCheckServers(log, () => healthy);
    const port = await freePort();
    servers.update(new Map([[port, target(1)]]), loopback);
    await settle();
    expect(await get('127.0.0.1', port)).toMatchObject({ status: 200 });
    expect(await get('127.0.0.2', port)).toEqual({ error: 'ECONNREFUSED' });
  });

  it('a port in use is logged, and taken at the next update once it is free', async () => {
    servers = new HealthCheckServers(log, () => healthy);
    const port = await freePort();
    const blocker = createServer((_q, s) => s.end('someone else'));
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    blockers.push(blocker);
    const targets = new Map([[port, target(1)]]);
    servers.update(targets, loopback);
    await settle();
    expect(logs.some((l) => l.port === port && /cannot listen/.test(l.msg))).toBe(true);
    await new Promise((r) => blocker.close(r));
    blockers.pop();
    servers.update(targets, loopback);
    await settle();
    expect(await get('127.0.0.1', port)).toMatchObject({ status: 200 });
  });

  it('closes the servers of ports no longer wanted', async () => {
    servers = new HealthCheckServers(log, () => healthy);
    const port = await freePort();
    servers.update(new Map([[port, target(1)]]), loopback);
    await settle();
    servers.update(new Map(), loopback);
    await settle();
    expect(await get('127.0.0.1', port)).toEqual({ error: 'ECONNREFUSED' });
  });
});
