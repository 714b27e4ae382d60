/**
 * The DaemonSet's own path to the API server, end to end: agents started as
 * deploy/daemonset.yaml starts its pods (daemonset-agent.ts), reaching a test API server
 * over TLS with their service account token, under the RBAC of deploy/rbac.yaml. A rotated
 * and revoked token, a ClusterRole without one rule, a wrong CA, an expired certificate
 * and a certificate for another name: the agent says why in one line per retry, backs
 * off, stays up and unready, and serves again once the cause is gone. The path does not
 * depend on the proxy mode, so this runs in the first mode of E2E_MODES only.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestApiServer } from '../support/apiserver.js';
import { endpointSlice, eventually, node, service } from '../support/objects.js';
import { issueServing, makeCA, type KeyPair } from '../support/pki.js';
import { privilegedTestsCanRun } from '../support/privileges.js';
import { TestCluster, type NsProcess } from '../support/topology.js';
import { startClusterApi, type ClusterApi } from './cluster-api.js';
import { serviceAccountVolume, startDaemonSetAgent } from './daemonset-agent.js';
import { E2E_MODES } from './modes.js';
import type { ServiceAccountVolume } from './service-account.js';

const NS = 'incluster';
const SERVICE_ACCOUNT = 'system:serviceaccount:kube-system:kube-proxy-ts';
const mode = E2E_MODES[0]!;

interface LogLine {
  msg: string;
  kind?: string;
  reason?: string;
  retryInMs?: number;
}

/** The agent's JSON log lines. */
const logLines = (p: NsProcess): LogLine[] =>
  p.output.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });

const retries = (p: NsProcess, kind?: string) => logLines(p).filter((l) => /again after a backoff/.test(l.msg) && (kind === undefined || l.kind === kind));

const canRun = privilegedTestsCanRun('in-cluster e2e', ['ip', 'curl', 'unshare', 'mount', 'openssl', ...mode.tools]);

describe.runIf(canRun)(`the DaemonSet's path to the API server (${mode.name})`, () => {
  let cluster: TestCluster;
  let clusterApi: ClusterApi;
  let api: TestApiServer;
  let dir: string;
  let agentA: NsProcess;
  let volumeA: ServiceAccountVolume;
  const hostPathsBefore = new Map(['/run/secrets', '/var/lib/kube-proxy'].map((p) => [p, existsSync(p)]));

  const start = (nodeName: string, opts: { serviceAccount?: ServiceAccountVolume; ready?: RegExp } = {}) =>
    startDaemonSetAgent({ cluster, node: nodeName, mode: mode.name, api: clusterApi, dir, flags: ['--iptables-min-sync-period', '0s', '--iptables-sync-period', '5s'], ...opts });

  const healthz = async (nodeName: string) =>
    (await cluster.exec(cluster.node(nodeName), 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', 'http://127.0.0.1:10256/healthz'])).stdout.trim();

  const serves = (ip: string) =>
    eventually(`${ip}:80 answers`, async () => ((await cluster.tcp(cluster.pod('client-a'), ip, 80, { timeoutMs: 500 })).ok ? true : undefined));

  let next = 0;
  /** A new Service with web-a1 behind it, served once node-a's agent has it. */
  async function newService(): Promise<void> {
    const name = `svc-${++next}`;
    const ip = `10.96.7.${next}`;
    api.apply(service(NS, name, ip, [{ name: 'http', port: 80, targetPort: 8080 }]));
    api.apply(endpointSlice(NS, name, `${name}-1`, [{ name: 'http', port: 8080 }], [{ ip: cluster.pod('web-a1').ip, nodeName: 'node-a' }]));
    await serves(ip);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kpt-incluster-e2e-'));
    cluster = await TestCluster.create({
      nodes: [{ name: 'node-a', pods: [{ name: 'web-a1', tcp: [8080] }, { name: 'client-a' }] }, { name: 'node-b' }],
    });
    clusterApi = await startClusterApi(cluster, dir);
    api = clusterApi.api;
    for (const n of cluster.nodes) api.apply(node(n.name, n.ip));
    volumeA = serviceAccountVolume(clusterApi, dir, 'node-a');
    agentA = await start('node-a', { serviceAccount: volumeA });
  });

  afterAll(async () => {
    await cluster?.destroy();
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('reaches the API server as its pod: KUBERNETES_SERVICE_HOST over TLS, the service account token, nothing RBAC refuses', async () => {
    await newService();
    const requests = api.requests.filter((r) => r.kind !== undefined);
    expect(requests.length).toBeGreaterThan(0);
    for (const r of requests) expect({ user: r.user, status: r.status }).toEqual({ user: SERVICE_ACCOUNT, status: 200 });
    // The pod's files were mounted in its own mount namespace: there, not on the host.
    const mounts = readFileSync(`/proc/${agentA.pid}/mountinfo`, 'utf8');
    expect(mounts).toMatch(/ \/run\/secrets\/kubernetes\.io\/serviceaccount /);
    expect(mounts).toMatch(/ \/var\/lib\/kube-proxy /);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toMatch(/serviceaccount/);
    for (const [path, existed] of hostPathsBefore) expect(existsSync(path), path).toBe(existed);
    expect(await healthz('node-a')).toBe('200');
  });

  it('picks up a rotated token without a restart once the old one is revoked, saying so in one line', async () => {
    const old = volumeA.token;
    volumeA.write({ token: api.access!.issue() });
    // Revoking ends the watches the old token opened: the agent must authenticate again.
    api.revokeToken(old);
    await newService();
    await newService();
    const refused = logLines(agentA).filter((l) => /401 Unauthorized/.test(l.msg));
    expect(refused).toHaveLength(1);
    expect(refused[0]!.msg).toBe('the API server answered 401 Unauthorized: it refused the service account token /var/run/secrets/kubernetes.io/serviceaccount/token');
    expect(api.requests.some((r) => r.status === 401)).toBe(true);
    expect(agentA.running).toBe(true);
    expect(await healthz('node-a')).toBe('200');
  });

  /** Starts node-b's agent into `trouble`, checks it says `cause` and stays up unready, then `fix`es it and sees it sync. */
  async function refusedThenFixed(cause: RegExp, kind: string, fix: () => void, serviceAccount?: ServiceAccountVolume): Promise<LogLine[]> {
    const agent = await start('node-b', { serviceAccount, ready: /"msg":"starting"/ });
    try {
      await eventually(`two retries of ${kind} on node-b`, async () => (retries(agent, kind).length >= 2 ? true : undefined), 30_000);
      const lines = retries(agent);
      for (const l of lines) expect(l.reason, JSON.stringify(l)).toMatch(cause);
      expect(agent.running).toBe(true);
      expect(await healthz('node-b')).toBe('503');
      fix();
      await agent.waitForOutput(/synced proxy rules/, 40_000);
      await eventually('node-b ready', async () => ((await healthz('node-b')) === '200' ? true : undefined));
      return lines;
    } finally {
      await agent.stop();
    }
  }

  it('a ClusterRole without the endpointslices rule: refused, said with the resource and verb, unready; the real rule is enough', async () => {
    const rules = api.access!.rbac.rules;
    const removed = rules.filter((r) => r.resources.includes('endpointslices'));
    api.access!.rbac.rules = rules.filter((r) => !removed.includes(r));
    try {
      const lines = await refusedThenFixed(/^403 Forbidden: RBAC does not let us (list|watch) endpointslices\.discovery\.k8s\.io/, 'endpointslices', () => {
        api.access!.rbac.rules = rules;
      });
      expect(lines[0]!.reason).toContain(`User "${SERVICE_ACCOUNT}" cannot list resource "endpointslices" in API group "discovery.k8s.io"`);
      expect(new Set(lines.map((l) => l.kind))).toEqual(new Set(['endpointslices']));
    } finally {
      api.access!.rbac.rules = rules;
    }
  });

  it('SIGTERM while RBAC keeps it from syncing: it stops cleanly, exit code 0', async () => {
    const rules = api.access!.rbac.rules;
    api.access!.rbac.rules = rules.filter((r) => !r.resources.includes('endpointslices'));
    try {
      const agent = await start('node-b', { ready: /"msg":"starting"/ });
      await eventually('a retry of endpointslices', async () => (retries(agent, 'endpointslices').length > 0 ? true : undefined));
      await agent.stop(10_000);
      expect(await agent.exited).toBe(0);
      expect(agent.output).toMatch(/"signal":"SIGTERM".*"msg":"stopping; rules stay in place"/);
    } finally {
      api.access!.rbac.rules = rules;
    }
  });

  it('a ca.crt of another CA: "wrong CA" in each retry, unready; a corrected ca.crt is read without a restart', async () => {
    const volume = serviceAccountVolume(clusterApi, dir, 'node-b', makeCA(join(dir, 'pki'), 'other-ca').cert);
    await refusedThenFixed(/wrong CA/, 'services', () => volume.write({ 'ca.crt': clusterApi.ca.cert }), volume);
  });

  const serving = (name: string, dns: string[], days = 1): KeyPair => issueServing(clusterApi.ca, clusterApi.pkiDir, name, { dns, days });

  it('an expired serving certificate: "has expired" in each retry, unready; serves once renewed', async () => {
    const good = serving('renewed', [clusterApi.host], 1);
    api.useCertificate(serving('expired', [clusterApi.host], -1));
    try {
      await refusedThenFixed(/certificate has expired/, 'services', () => api.useCertificate(good));
    } finally {
      api.useCertificate(good);
    }
  });

  it('a serving certificate for another name: "hostname mismatch" in each retry, unready; serves once it names the host', async () => {
    const good = serving('named', [clusterApi.host], 1);
    api.useCertificate(serving('misnamed', ['kubernetes.default.svc'], 1));
    try {
      await refusedThenFixed(/hostname mismatch.*kind-control-plane/, 'services', () => api.useCertificate(good));
    } finally {
      api.useCertificate(good);
    }
  });

  it("node-a's agent came through all of it and still follows changes", async () => {
    expect(agentA.running).toBe(true);
    await newService();
    expect(await healthz('node-a')).toBe('200');
  });
});
