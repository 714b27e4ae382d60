/**
 * The agent against a hostile network, in a node namespace, in every mode: floods of
 * debug requests, half-sent requests and more connections than it has descriptors. It
 * must stay alive, keep programming rule changes promptly, keep /healthz answering, and
 * converge once the flood stops. For the exhaustion test its descriptor limit is lowered,
 * once it runs, under what its connection caps allow.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestApiServer } from '../support/apiserver.js';
import { endpointSlice, eventually, node, service } from '../support/objects.js';
import { privilegedTestsCanRun } from '../support/privileges.js';
import { TestCluster, type NsProcess } from '../support/topology.js';
import { E2E_MODES } from './modes.js';

const MAIN = join(import.meta.dirname, '..', '..', 'dist', 'src', 'main.js');
const FLOOD = join(import.meta.dirname, '..', 'support', 'flood.mjs');
const NS = 'hard';
const HEALTH_CHECK_PORT = 32100;

interface FloodResult {
  opened: number;
  closedByServer: number;
  errors: Record<string, number>;
  statuses: Record<string, number>;
}

for (const mode of E2E_MODES) {
  const canRun = privilegedTestsCanRun(`${mode.name} agent hardening e2e`, ['ip', 'curl', 'prlimit', ...mode.tools]);

  describe.runIf(canRun)(`${mode.name} agent under a hostile network`, () => {
    let api: TestApiServer;
    let cluster: TestCluster;
    let dir: string;
    let agent: NsProcess;
    let next = 0;

    const nodeA = () => cluster.node('node-a');
    const flood = async (args: string[]): Promise<FloodResult> => {
      const r = await cluster.exec(nodeA(), process.execPath, [FLOOD, ...args]);
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as FloodResult;
    };
    /** Seconds /healthz took to answer, or Infinity when it did not. */
    const healthzSeconds = async (): Promise<number> => {
      const r = await cluster.exec(nodeA(), 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{time_total}', '--max-time', '3', 'http://127.0.0.1:10256/healthz']);
      const [code, time] = r.stdout.split(' ');
      return code === '200' ? Number(time) : Infinity;
    };
    /** Adds a new service and returns ms until a pod's connection to it gets through. */
    const ruleChangeMs = async (): Promise<number> => {
      const n = ++next;
      const ip = `10.96.1.${n}`;
      const started = Date.now();
      api.apply(service(NS, `new-${n}`, ip, [{ name: 'http', port: 80, targetPort: 8080 }]));
      api.apply(endpointSlice(NS, `new-${n}`, `new-${n}-1`, [{ name: 'http', port: 8080 }], [{ ip: cluster.pod('web-a1').ip, nodeName: 'node-a' }]));
      await eventually(`service ${ip} answers`, async () => ((await cluster.tcp(cluster.pod('client-a'), ip, 80, { timeoutMs: 300 })).ok ? true : undefined), 20_000, 50);
      return Date.now() - started;
    };

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'kpt-hard-'));
      api = await TestApiServer.start({ unixSocket: join(dir, 'api.sock'), bookmarkIntervalMs: 1000 });
      cluster = await TestCluster.create({ nodes: [{ name: 'node-a', pods: [{ name: 'web-a1', tcp: [8080] }, { name: 'client-a', tcp: [8080] }] }] });
      const fwd = await cluster.forwardUnixSocket(join(dir, 'api.sock'), 6443);
      const kubeconfig = api.writeKubeconfig(join(dir, 'kubeconfig'), fwd.url);
      api.apply(node('node-a', nodeA().ip));
      api.apply(
        service(NS, 'lb', '10.96.0.60', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30060 }], {
          type: 'LoadBalancer',
          externalTrafficPolicy: 'Local',
          healthCheckNodePort: HEALTH_CHECK_PORT,
        }),
      );
      api.apply(endpointSlice(NS, 'lb', 'lb-1', [{ name: 'http', port: 8080 }], [{ ip: cluster.pod('web-a1').ip, nodeName: 'node-a' }]));
      const args = ['--proxy-mode', mode.name, '--kubeconfig', kubeconfig, '--hostname-override', 'node-a', '--cluster-cidr', '10.244.0.0/16'];
      const timing = ['--iptables-min-sync-period', '0s', '--iptables-sync-period', '5s'];
      agent = await cluster.spawnIn(nodeA(), 'prlimit', ['--nofile=1024:1024', process.execPath, MAIN, ...args, ...timing], {
        ready: /synced proxy rules/,
        readyTimeoutMs: 20_000,
      });
      await eventually('health check port answers', async () => {
        const r = await cluster.exec(nodeA(), 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${nodeA().ip}:${HEALTH_CHECK_PORT}/`]);
        return r.stdout === '200' ? true : undefined;
      });
    });

    afterAll(async () => {
      await cluster?.destroy();
      await api?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('a flood of 300 concurrent /debug/trace requests leaves a rule change under 2 s and /healthz under 1 s', async () => {
      const trace = `get:/debug/trace?src=${cluster.pod('client-a').ip}&dst=10.96.0.60:80`;
      const flooding = flood(['127.0.0.1', '10249', '300', trace, '6000']);
      await new Promise((r) => setTimeout(r, 1000));
      const change = await ruleChangeMs();
      const health = await healthzSeconds();
      const result = await flooding;
      expect(change).toBeLessThan(2000);
      expect(health).toBeLessThan(1);
      // Some answers, and the rest told to come back later.
      expect(result.statuses['200']).toBeGreaterThan(0);
      expect(result.statuses['429']).toBeGreaterThan(0);
      expect(agent.running).toBe(true);
    });

    it('closes connections that never finish their request', async () => {
      // Headers must arrive within 5 s; half-sent requests are checked every second.
      const result = await flood(['127.0.0.1', '10256', '200', 'half', '8000']);
      expect(result.opened).toBe(200);
      expect(result.closedByServer).toBe(200);
      expect(await healthzSeconds()).toBeLessThan(1);
    });

    it('survives more connections than it has descriptors, and converges after', async () => {
      // Its connection caps alone keep it under 1,024: lower the limit under what they allow.
      expect((await cluster.exec(nodeA(), 'prlimit', ['--pid', String(agent.pid), '--nofile=200:200'])).status).toBe(0);
      const flooding = Promise.all([
        flood(['127.0.0.1', '10256', '2500', 'half', '6000']),
        flood([nodeA().ip, String(HEALTH_CHECK_PORT), '2500', 'half', '6000']),
      ]);
      await new Promise((r) => setTimeout(r, 1500));
      // The flood does exhaust it: every descriptor it may have is open. (Whether accept()
      // then reports EMFILE, which the agent logs, depends on libuv's reserve descriptor:
      // the count is what says it for sure.)
      const open = await cluster.exec(nodeA(), 'sh', ['-c', `ls /proc/${agent.pid}/fd | wc -l`]);
      expect(Number(open.stdout.trim())).toBeGreaterThanOrEqual(200);
      // A change during the flood: its sync may fail for want of descriptors, and is retried.
      const n = ++next;
      api.apply(service(NS, `during-${n}`, `10.96.2.${n}`, [{ name: 'http', port: 80, targetPort: 8080 }]));
      api.apply(endpointSlice(NS, `during-${n}`, `during-${n}-1`, [{ name: 'http', port: 8080 }], [{ ip: cluster.pod('web-a1').ip, nodeName: 'node-a' }]));
      await flooding;
      expect(agent.running, agent.output.slice(-2000)).toBe(true);
      await eventually('the change made during the flood is served', async () =>
        (await cluster.tcp(cluster.pod('client-a'), `10.96.2.${n}`, 80, { timeoutMs: 300 })).ok ? true : undefined,
      );
      expect(await ruleChangeMs()).toBeLessThan(2000);
      expect(await healthzSeconds()).toBeLessThan(1);
      const hc = await cluster.exec(nodeA(), 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${nodeA().ip}:${HEALTH_CHECK_PORT}/`]);
      expect(hc.stdout).toBe('200');
    });
  });
}
