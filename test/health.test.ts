import { describe, expect, it } from 'vitest';
import { healthCheckTargets } from '../src/agent/healthcheck.js';
import { healthReport, parseBindAddress } from '../src/agent/servers.js';
import { buildNodeModel } from '../src/model/build.js';
import { endpointSlice, node, service } from './support/objects.js';

describe('healthReport', () => {
  const src = (last: number | null, pending: number | null) => ({ lastUpdated: () => last, pendingSince: () => pending });
  it('is healthy with nothing pending, or a change younger than twice the sync period', () => {
    expect(healthReport(src(1000, null), 100_000, 30_000, true).healthy).toBe(true);
    expect(healthReport(src(1000, 50_000), 100_000, 30_000, true).healthy).toBe(true);
    expect(healthReport(src(1000, 30_000), 100_000, 30_000, false).healthy).toBe(false);
  });
  it('is not ready before the first sync, though alive', () => {
    expect(healthReport(src(null, 90_000), 100_000, 30_000, true).healthy).toBe(false);
    expect(healthReport(src(null, 90_000), 100_000, 30_000, false).healthy).toBe(true);
  });
  it('reports times as RFC 3339', () => {
    const r = healthReport(src(0, null), Date.UTC(2026, 10, 27), 30_000, true);
    expect(r.body.currentTime).toBe('2026-11-27T00:00:00.000Z');
  });
});

describe('parseBindAddress', () => {
  it.each([
    ['0.0.0.0:10256', { host: '0.0.0.0', port: 10256 }],
    ['[::1]:10249', { host: '::1', port: 10249 }],
    [':10249', { host: '0.0.0.0', port: 10249 }],
  ])('%s', (text, want) => expect(parseBindAddress('--x', text)).toEqual(want));
  it.each(['localhost:80', '1.2.3.4', '1.2.3.4:99999'])('rejects %s', (text) => expect(() => parseBindAddress('--x', text)).toThrow(/--x/));
});

describe('healthCheckTargets', () => {
  it('counts ready local endpoints per health check node port; terminating ones do not count', () => {
    const svc = (name: string, hc: number) =>
      service('ns', name, `10.96.0.${hc % 250}`, [{ name: 'http', port: 80, nodePort: 30000 + (hc % 1000) }], {
        type: 'LoadBalancer',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: hc,
      });
    const b = buildNodeModel(
      {
        services: [svc('ready', 32001), svc('draining', 32002)],
        endpointSlices: [
          endpointSlice('ns', 'ready', 'r', [{ name: 'http', port: 8080 }], [
            { ip: '10.244.0.5', nodeName: 'node-a' },
            { ip: '10.244.0.6', nodeName: 'node-a' },
            { ip: '10.244.1.5', nodeName: 'node-b' },
          ]),
          endpointSlice('ns', 'draining', 'd', [{ name: 'http', port: 8080 }], [
            { ip: '10.244.0.7', nodeName: 'node-a', ready: false, serving: true, terminating: true },
          ]),
        ],
        nodes: [node('node-a', '192.168.0.10')],
      },
      'node-a',
    );
    const t = healthCheckTargets([...b.model.families.IPv4.servicePorts, ...b.model.families.IPv6.servicePorts]);
    expect(t.get(32001)).toEqual({ namespace: 'ns', name: 'ready', localEndpoints: 2 });
    expect(t.get(32002)).toEqual({ namespace: 'ns', name: 'draining', localEndpoints: 0 });
  });
});
