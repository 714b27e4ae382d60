/**
 * The agent's informers reaching the API server as a pod does (kube/connection.ts): over
 * TLS verified against the service account's ca.crt, with its token, against a test API
 * server that enforces deploy/rbac.yaml. A rotated and revoked token is read again after
 * one 401, reported once; a wrong CA, an expired certificate, a hostname mismatch and a
 * missing permission each give retry lines naming the cause, backed off, and the
 * informers recover once the cause is fixed. The end-to-end checks through the
 * DaemonSet's own start are in e2e/incluster.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { startWatches, type Watches } from '../src/agent/watch.js';
import { explainApiError } from '../src/kube/api-errors.js';
import { inClusterConnection } from '../src/kube/connection.js';
import { ServiceAccountToken, TOKEN_MAX_AGE_MS } from '../src/kube/token.js';
import { ServiceAccountVolume } from './e2e/service-account.js';
import { TestApiServer } from './support/apiserver.js';
import { eventually, node, service } from './support/objects.js';
import { issueServing, makeCA, type CertificateAuthority, type KeyPair } from './support/pki.js';
import { AccessControl, rbacFrom, readManifests, type Rbac } from './support/rbac.js';

const QUICK = { initialMs: 50, maxMs: 400, resetAfterMs: 120_000, jitter: 1 };
const SERVICE_ACCOUNT = 'system:serviceaccount:kube-system:kube-proxy-ts';

interface LogLine {
  level: number;
  msg: string;
  kind?: string;
  reason?: string;
  retryInMs?: number;
}

let dir: string;
let ca: CertificateAuthority;
let good: KeyPair;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kpt-incluster-'));
  ca = makeCA(join(dir, 'pki'), 'cluster-ca');
  good = issueServing(ca, join(dir, 'pki'), 'good', { dns: ['kubernetes'], ips: ['127.0.0.1'] });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the in-cluster connection', () => {
  let api: TestApiServer | undefined;
  let watches: Watches | null | undefined;
  let pending: Promise<Watches | null> | undefined;
  let cancel = new AbortController();
  afterEach(async () => {
    // A start that a failed test left unsynced is cancelled, not waited for.
    cancel.abort();
    await api?.stop();
    await (watches ?? (await pending))?.stop();
    api = watches = pending = undefined;
    cancel = new AbortController();
  });

  async function start(opts: { tls?: KeyPair; rbac?: Rbac; caCert?: string } = {}) {
    api = await TestApiServer.start({ tls: opts.tls ?? good, access: new AccessControl(opts.rbac ?? rbacFrom(readManifests())), bookmarkIntervalMs: 200 });
    api.apply(node('node-a', '192.168.0.10'));
    api.apply(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    const token = api.access!.issue();
    const volume = new ServiceAccountVolume(join(dir, `sa-${++n}`), { token, 'ca.crt': opts.caCert ?? ca.cert, namespace: 'kube-system' });
    const port = new URL(api.url).port;
    const conn = inClusterConnection({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, volume.dir);
    const seen = new Set<string>();
    const lines: LogLine[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
    const h = { upsert: (o: unknown) => seen.add((o as { metadata: { name: string } }).metadata.name), remove: () => {} };
    pending = startWatches(conn, 'node-a', { services: h, endpointSlices: h, node: h, changed: () => {}, rejected: () => {} }, log, QUICK, cancel.signal);
    return { api, volume, seen, lines, token };
  }

  const retries = (lines: LogLine[]) => lines.filter((l) => /again after a backoff/.test(l.msg));

  it('lists and watches over TLS with the token, as the service account, within what RBAC grants', async () => {
    const { api, seen } = await start();
    watches = await pending;
    expect([...seen]).toEqual(expect.arrayContaining(['a', 'node-a']));
    const resourceRequests = api.requests.filter((r) => r.kind !== undefined);
    expect(resourceRequests.length).toBeGreaterThanOrEqual(6);
    for (const r of resourceRequests) expect({ user: r.user, verb: r.verb, status: r.status }).toMatchObject({ user: SERVICE_ACCOUNT, status: 200 });
    expect(new Set(resourceRequests.map((r) => r.verb))).toEqual(new Set(['list', 'watch']));
  });

  it('is not made outside a pod, and puts an IPv6 KUBERNETES_SERVICE_HOST in brackets', () => {
    expect(() => inClusterConnection({}, dir)).toThrow(/KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set/);
    const server = (host: string) => inClusterConnection({ KUBERNETES_SERVICE_HOST: host, KUBERNETES_SERVICE_PORT: '6443' }, dir).kc.getCurrentCluster()?.server;
    expect(server('fd00:99::fe')).toBe('https://[fd00:99::fe]:6443');
    expect(server('10.99.0.254')).toBe('https://10.99.0.254:6443');
    expect(server('kind-control-plane')).toBe('https://kind-control-plane:6443');
  });

  it('reads a rotated token after the old one is refused, says so once, and keeps syncing', async () => {
    const { api, volume, seen, lines, token } = await start();
    watches = await pending;
    const rotated = api.access!.issue();
    volume.write({ token: rotated });
    // The old token is revoked: its watches end, and the next requests still carry it (cached).
    api.revokeToken(token);
    api.apply(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    await eventually('the change arrives with the new token', async () => (seen.has('b') ? true : undefined));
    const refused = lines.filter((l) => /answered 401 Unauthorized/.test(l.msg));
    expect(refused).toHaveLength(1);
    expect(refused[0]!.msg).toContain(`the service account token ${join(volume.dir, 'token')}`);
    expect(api.requests.some((r) => r.status === 401)).toBe(true);
    const afterRefusal = api.requests.slice(api.requests.findIndex((r) => r.status === 401));
    expect(afterRefusal.some((r) => r.kind === 'Service' && r.status === 200)).toBe(true);
  });

  const otherCA = () => makeCA(join(dir, 'pki'), `other-ca-${++n}`);
  const TLS_CASES: Array<[string, RegExp, () => { tls?: KeyPair; caCert?: string }]> = [
    ['a ca.crt that did not sign the certificate', /not signed by the cluster CA we trust \(wrong CA\)/, () => ({ caCert: otherCA().cert })],
    ['an expired certificate', /certificate has expired/, () => ({ tls: issueServing(ca, join(dir, 'pki'), `expired-${++n}`, { dns: ['kubernetes'], ips: ['127.0.0.1'], days: -1 }) })],
    ['a certificate for another name', /not for the name or address we reached it at \(hostname mismatch\)/, () => ({ tls: issueServing(ca, join(dir, 'pki'), `other-${++n}`, { dns: ['kubernetes'] }) })],
  ];

  it.each(TLS_CASES)('%s: each retry names the cause, backs off, and the informers recover once fixed', async (_name, cause, broken) => {
    const b = broken();
    const { api, volume, lines } = await start(b);
    await eventually('three retries of the services informer', async () => (retries(lines).filter((l) => l.kind === 'services').length >= 3 ? true : undefined));
    const tries = retries(lines);
    for (const l of tries) expect(l.reason).toMatch(cause);
    expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    // Backed off: the first delay of 50-100 ms grows to at least 200 ms by the third.
    const services = tries.filter((l) => l.kind === 'services').map((l) => l.retryInMs!);
    expect(services[2]).toBeGreaterThanOrEqual(200);
    if (b.caCert) volume.write({ 'ca.crt': ca.cert });
    else api.useCertificate(good);
    watches = await pending;
  });

  it('a permission RBAC does not grant: the retries say which, nothing else is refused, and granting it is enough', async () => {
    const rbac = rbacFrom(readManifests());
    const removed = rbac.rules.filter((r) => r.resources.includes('endpointslices'));
    rbac.rules = rbac.rules.filter((r) => !removed.includes(r));
    const { api, lines } = await start({ rbac });
    await eventually('two retries of the endpointslices informer', async () => (retries(lines).filter((l) => l.kind === 'endpointslices').length >= 2 ? true : undefined));
    const refused = retries(lines).filter((l) => l.kind === 'endpointslices');
    expect(refused[0]!.reason, JSON.stringify(lines)).toBe(
      `403 Forbidden: RBAC does not let us list endpointslices.discovery.k8s.io: GET /apis/discovery.k8s.io/v1/endpointslices: HTTP 403: endpointslices.discovery.k8s.io is forbidden: User "${SERVICE_ACCOUNT}" cannot list resource "endpointslices" in API group "discovery.k8s.io" at the cluster scope`,
    );
    expect(retries(lines).filter((l) => l.kind !== 'endpointslices')).toEqual([]);
    expect(api.requests.filter((r) => r.status === 403).map((r) => r.kind)).toEqual(expect.arrayContaining(['EndpointSlice']));
    expect(api.requests.filter((r) => r.status === 403 && r.kind !== 'EndpointSlice')).toEqual([]);
    rbac.rules.push(...removed);
    watches = await pending;
    expect(watches).not.toBeNull();
  });

  it('a start that never synced, cancelled: resolves null and asks nothing more', async () => {
    const rbac = rbacFrom(readManifests());
    rbac.rules = rbac.rules.filter((r) => !r.resources.includes('endpointslices'));
    const { api, lines } = await start({ rbac });
    await eventually('a retry of the endpointslices informer', async () => (retries(lines).some((l) => l.kind === 'endpointslices') ? true : undefined));
    cancel.abort();
    expect(await pending).toBeNull();
    const asked = api.requests.length;
    await new Promise((r) => setTimeout(r, 1000));
    expect(api.requests.length).toBe(asked);
  });
});

describe('the service account token', () => {
  it('is read at most a minute old, trimmed, and again at once after a refusal, reported once per token', () => {
    const d = mkdtempSync(join(dir, 'token-'));
    const volume = new ServiceAccountVolume(d, { token: 'one\n', 'ca.crt': '', namespace: 'kube-system' });
    let now = 0;
    const token = new ServiceAccountToken(join(d, 'token'), () => now);
    expect(token.current()).toBe('one');
    volume.write({ token: 'two' });
    expect(token.current()).toBe('one');
    now += TOKEN_MAX_AGE_MS + 1;
    expect(token.current()).toBe('two');
    volume.write({ token: 'three' });
    expect(token.refused()).toBe(true);
    expect(token.refused()).toBe(false);
    expect(token.current()).toBe('three');
    volume.write({ token: '' });
    expect(token.refused()).toBe(true);
    expect(() => token.current()).toThrow(/is empty/);
    expect(() => new ServiceAccountToken(join(d, 'missing')).current()).toThrow(/cannot read the service account token .*ENOENT/);
  });
});

describe('explainApiError', () => {
  const list = { verb: 'list', resource: 'services' } as const;
  it('names TLS causes by their code, and says what 401 and 403 refused', () => {
    const tls = (code: string) => explainApiError(Object.assign(new Error('request failed'), { code }), list);
    expect(tls('CERT_HAS_EXPIRED')).toBe("TLS: the API server's certificate has expired: request failed");
    expect(tls('SELF_SIGNED_CERT_IN_CHAIN')).toMatch(/wrong CA/);
    expect(tls('ERR_TLS_CERT_ALTNAME_INVALID')).toMatch(/hostname mismatch/);
    expect(explainApiError(Object.assign(new Error('Unauthorized'), { statusCode: 401 }), list)).toBe(
      '401 Unauthorized: the API server refused our credentials to list services',
    );
    expect(explainApiError(Object.assign(new Error('Forbidden'), { statusCode: 403 }), { verb: 'watch', resource: 'nodes' })).toBe(
      '403 Forbidden: RBAC does not let us watch nodes: Forbidden',
    );
    expect(explainApiError(new Error('ECONNREFUSED'), list)).toBe('ECONNREFUSED');
  });
});
