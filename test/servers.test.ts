/**
 * The agent's HTTP servers answer whatever a handler does: a debug answer whose mode
 * throws (a trace the mode cannot walk, a bug) is a 500 with the reason, and the process
 * and its health endpoint carry on.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../src/agent/metrics.js';
import { startServers } from '../src/agent/servers.js';
import type { ConfiguredMode } from '../src/modes/mode.js';

const NODE = { nodeName: 'node-a', zone: null, labels: {}, nodeIPs: ['192.168.0.10'] };

describe('agent HTTP servers', () => {
  it('answers 500 when a debug handler throws, and keeps serving', async () => {
    const mode: ConfiguredMode = {
      name: 'nftables',
      rulesText: () => '',
      dataplane: () => {
        throw new Error('no dataplane here');
      },
      syncer: () => Promise.reject(new Error('unused')),
    };
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const servers = await startServers({
      healthz: { host: '127.0.0.1', port },
      metrics: { host: '127.0.0.1', port: port + 1 },
      mode: 'nftables',
      syncPeriodMs: 30_000,
      health: { lastUpdated: () => Date.now(), pendingSince: () => null },
      metricsRegistry: createMetrics().registry,
      log: pino({ level: 'silent' }),
      debug: {
        models: () => ({ IPv4: { family: 'IPv4', servicePorts: [], serviceCIDRs: [] }, IPv6: { family: 'IPv6', servicePorts: [], serviceCIDRs: [] } }),
        families: ['IPv4'],
        node: () => NODE,
        mode,
        pendingSince: () => null,
      },
    });
    try {
      const trace = await fetch(`http://127.0.0.1:${port + 1}/debug/trace?dst=10.96.0.1:80`);
      expect(trace.status).toBe(500);
      expect(await trace.text()).toContain('no dataplane here');
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${port + 1}/proxyMode`)).status).toBe(200);
    } finally {
      await servers.close();
    }
  });
});
