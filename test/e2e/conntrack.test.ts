/**
 * Stale conntrack entries deleted by the agent, end to end, in every mode in E2E_MODES: a
 * UDP client in a pod keeps sending a datagram every 100 ms from one source port, to a
 * ClusterIP and to a NodePort, so that each of its flows stays on the conntrack entry its
 * first packet made. When the backend changes, only the agent deleting those entries moves
 * the client: the new backend must answer within 2 s of the change. Three ways to get
 * there: the backend pod replaced (the old one keeps running and answering), a Service that
 * started without an endpoint, and one whose first endpoint started unready. In the last
 * two the client sends before the Service exists, as one does while a Service rolls out,
 * so its entries were made without any DNAT (the test checks they were) and stay so until
 * deleted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestApiServer } from '../support/apiserver.js';
import { endpointSlice, eventually, node, service, type EndpointSpec } from '../support/objects.js';
import { privilegedTestsCanRun } from '../support/privileges.js';
import { TestCluster, type NsProcess } from '../support/topology.js';
import { E2E_MODES } from './modes.js';

const MAIN = join(import.meta.dirname, '..', '..', 'dist', 'src', 'main.js');
const NS = 'ct';
/** How long the new backend may take to answer the client, from the change in the API. */
const MOVE_WITHIN_MS = 2000;

/**
 * The client: for each target, one socket bound to its source port, sending every 100 ms
 * (unconnected, so that an ICMP error stops nothing), printing one JSON line per answer.
 */
const CLIENT = `
import dgram from 'node:dgram';
for (const t of JSON.parse(process.argv[1])) {
  const sock = dgram.createSocket('udp4');
  sock.on('error', (err) => console.log(JSON.stringify({ target: t.name, t: Date.now(), error: err.code })));
  sock.on('message', (msg) => console.log(JSON.stringify({ target: t.name, t: Date.now(), answer: msg.toString().trim() })));
  sock.bind(t.sourcePort, () => setInterval(() => sock.send('probe\\n', t.port, t.ip), 100));
}
console.log('READY');
`;

interface Answer {
  target: string;
  t: number;
  answer?: string;
}

function answers(client: NsProcess): Answer[] {
  return client.output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Answer);
}

for (const mode of E2E_MODES) {
  const canRun = privilegedTestsCanRun(`${mode.name} conntrack e2e`, ['ip', 'curl', 'conntrack', ...mode.tools]);

  describe.runIf(canRun)(`${mode.name}: a UDP client that keeps its source port follows its backends`, () => {
    let api: TestApiServer;
    let cluster: TestCluster;
    let dir: string;
    let agent: NsProcess;

    const nodeA = () => cluster.node('node-a');
    const ep = (pod: string, extra: Partial<EndpointSpec> = {}): EndpointSpec => ({ ip: cluster.pod(pod).ip, nodeName: 'node-a', ...extra });
    const dnsService = (name: string, ip: string, nodePort: number) =>
      service(NS, name, ip, [{ name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP', nodePort }], { type: 'NodePort' });
    const slice = (name: string, endpoints: EndpointSpec[]) => endpointSlice(NS, name, `${name}-1`, [{ name: 'dns', port: 8080, protocol: 'UDP' }], endpoints);

    /** Starts the client in the client pod, sending to the service's cluster IP and to node-a's node port (from sourcePort and the next). */
    async function startClient(ip: string, nodePort: number, sourcePort: number): Promise<NsProcess> {
      const targets = [
        { name: 'clusterIP', ip, port: 53, sourcePort },
        { name: 'nodePort', ip: nodeA().ip, port: nodePort, sourcePort: sourcePort + 1 },
      ];
      return cluster.spawnIn(cluster.pod('client'), process.execPath, ['--input-type=module', '-e', CLIENT, JSON.stringify(targets)], { ready: /^READY$/m });
    }

    /** When each target first heard from `pod` at or after `since` (ms since epoch), waiting up to `timeoutMs`. */
    async function heardFrom(client: NsProcess, pod: string, since: number, timeoutMs = 20_000): Promise<Record<string, number>> {
      return eventually(
        `both targets answered by ${pod}`,
        async () => {
          const first: Record<string, number> = {};
          for (const a of answers(client)) {
            if (a.t >= since && a.answer?.startsWith(`${pod} `) && first[a.target] === undefined) first[a.target] = a.t;
          }
          return first.clusterIP !== undefined && first.nodePort !== undefined ? first : undefined;
        },
        timeoutMs,
        50,
      );
    }

    /** The node's UDP entries to a destination, as `conntrack -L` prints them. */
    async function entries(dst: string, port: number): Promise<string[]> {
      const r = await cluster.exec(nodeA(), 'conntrack', ['-L', '-p', 'udp', '--orig-dst', dst, '--orig-port-dst', String(port)]);
      return r.stdout.split('\n').filter((l) => l.startsWith('udp'));
    }

    /** Entries whose reply comes from their original destination: made without a DNAT. */
    const undnatted = (lines: string[], dst: string) => lines.filter((l) => l.split(/\s+/).filter((w) => w.startsWith('src='))[1] === `src=${dst}`);

    /** Waits until the agent has programmed the service port (it shows in /debug/rules, whatever the mode). */
    async function programmed(servicePort: string): Promise<void> {
      await eventually(`${servicePort} programmed`, async () => {
        const r = await cluster.exec(nodeA(), 'curl', ['-s', '--max-time', '2', 'http://127.0.0.1:10249/debug/rules']);
        return r.stdout.includes(servicePort) ? true : undefined;
      });
    }

    async function deletedEntries(): Promise<number> {
      const r = await cluster.exec(nodeA(), 'curl', ['-s', '--max-time', '2', 'http://127.0.0.1:10249/metrics']);
      const m = /^kubeproxy_conntrack_reconciler_deleted_entries_total\{ip_family="IPv4"\} (\d+)$/m.exec(r.stdout);
      return m ? Number(m[1]) : 0;
    }

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'kpt-ct-e2e-'));
      api = await TestApiServer.start({ unixSocket: join(dir, 'api.sock'), bookmarkIntervalMs: 1000 });
      cluster = await TestCluster.create({
        nodes: [{ name: 'node-a', pods: [{ name: 'client' }, { name: 'web-1', udp: [8080] }, { name: 'web-2', udp: [8080] }] }],
      });
      const fwd = await cluster.forwardUnixSocket(join(dir, 'api.sock'), 6443);
      const kubeconfig = api.writeKubeconfig(join(dir, 'kubeconfig'), fwd.url);
      api.apply(node('node-a', nodeA().ip));
      const args = ['--proxy-mode', mode.name, '--kubeconfig', kubeconfig, '--hostname-override', 'node-a', '--cluster-cidr', '10.244.0.0/16'];
      const timing = ['--iptables-min-sync-period', '0s', '--iptables-sync-period', '10s'];
      agent = await cluster.spawnIn(nodeA(), process.execPath, [MAIN, ...args, ...timing], { ready: /synced proxy rules/, readyTimeoutMs: 20_000 });
    });

    afterAll(async () => {
      await cluster?.destroy();
      await api?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('deletes entries through libnetfilter_conntrack, where it loads, loaded once the first sync is done', async () => {
      // Not before: the first sync has no stale flows, and the worker's memory would add to its peak.
      await agent.waitForOutput(/deleting stale conntrack entries through libnetfilter_conntrack/);
      expect(agent.output.indexOf('through libnetfilter_conntrack')).toBeGreaterThan(agent.output.indexOf('synced proxy rules'));
    });

    it('the backend pod replaced: the new one answers within 2 s, on the ClusterIP and on the NodePort', async () => {
      api.apply(dnsService('moved', '10.96.0.53', 30053));
      api.apply(slice('moved', [ep('web-1')]));
      const client = await startClient('10.96.0.53', 30053, 41000);
      await heardFrom(client, 'web-1', 0);
      const before = await deletedEntries();
      // web-1 keeps running and answering: only deleted entries send the client elsewhere.
      const changed = Date.now();
      api.apply(slice('moved', [ep('web-2')]));
      const first = await heardFrom(client, 'web-2', changed);
      console.log(`UDP client moved to the new backend after ${first.clusterIP! - changed} ms (ClusterIP), ${first.nodePort! - changed} ms (NodePort)`);
      expect(first.clusterIP! - changed).toBeLessThan(MOVE_WITHIN_MS);
      expect(first.nodePort! - changed).toBeLessThan(MOVE_WITHIN_MS);
      // And stays there.
      await new Promise((r) => setTimeout(r, 500));
      const late = answers(client).filter((a) => a.answer && a.t > Math.max(first.clusterIP!, first.nodePort!) + 200);
      expect(late.length).toBeGreaterThan(0);
      expect(late.every((a) => a.answer!.startsWith('web-2 '))).toBe(true);
      if (mode.udpMovesBy === 'conntrack') expect(await deletedEntries()).toBeGreaterThanOrEqual(before + 2);
      else console.log(`${mode.name}: skipped "stale conntrack entries deleted": the agent ends the client's session to the old backend instead`);
    });

    it('a Service that started without an endpoint: its first endpoint answers within 2 s', async () => {
      const client = await startClient('10.96.0.54', 30054, 42000);
      // The client's flows exist, and no DNAT made them: left alone, they never reach a pod.
      await eventually('un-DNATed entries', async () =>
        undnatted(await entries('10.96.0.54', 53), '10.96.0.54').length > 0 && undnatted(await entries(nodeA().ip, 30054), nodeA().ip).length > 0 ? true : undefined,
      );
      api.apply(dnsService('empty', '10.96.0.54', 30054));
      api.apply(slice('empty', []));
      await programmed(`${NS}/empty:dns`);
      expect(answers(client).filter((a) => a.answer)).toEqual([]);
      const changed = Date.now();
      api.apply(slice('empty', [ep('web-1')]));
      const first = await heardFrom(client, 'web-1', changed);
      console.log(`UDP client reached the first endpoint after ${first.clusterIP! - changed} ms (ClusterIP), ${first.nodePort! - changed} ms (NodePort)`);
      expect(first.clusterIP! - changed).toBeLessThan(MOVE_WITHIN_MS);
      expect(first.nodePort! - changed).toBeLessThan(MOVE_WITHIN_MS);
    });

    it('a Service whose first endpoint started unready: it answers within 2 s of turning ready', async () => {
      const client = await startClient('10.96.0.55', 30055, 43000);
      await eventually('un-DNATed entries', async () =>
        undnatted(await entries('10.96.0.55', 53), '10.96.0.55').length > 0 && undnatted(await entries(nodeA().ip, 30055), nodeA().ip).length > 0 ? true : undefined,
      );
      api.apply(dnsService('unready', '10.96.0.55', 30055));
      api.apply(slice('unready', [ep('web-2', { ready: false })]));
      await programmed(`${NS}/unready:dns`);
      await new Promise((r) => setTimeout(r, 300));
      expect(answers(client).filter((a) => a.answer)).toEqual([]);
      const changed = Date.now();
      api.apply(slice('unready', [ep('web-2')]));
      const first = await heardFrom(client, 'web-2', changed);
      console.log(`UDP client reached the endpoint turned ready after ${first.clusterIP! - changed} ms (ClusterIP), ${first.nodePort! - changed} ms (NodePort)`);
      expect(first.clusterIP! - changed).toBeLessThan(MOVE_WITHIN_MS);
      expect(first.nodePort! - changed).toBeLessThan(MOVE_WITHIN_MS);
    });
  });
}
