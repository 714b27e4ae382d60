/**
 * The test apiserver, driven the way the agent will drive a real one: KubeConfig from a
 * file, generated CoreV1Api/DiscoveryV1Api list functions, client-node 1.4 informers.
 * Raw HTTP checks pin down the wire format (Status objects, watch streams, 410 Expired).
 */
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ApiException,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  VersionApi,
  Watch,
  makeInformer,
  type Informer,
  type KubernetesObject,
  type V1Node,
  type V1Service,
} from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TestApiServer, type Manifest, type StartOptions } from './support/apiserver.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir = '';
let kubeconfigs = 0;
const cleanups: Array<() => unknown> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kpt-apiserver-'));
});
afterEach(async () => {
  // Newest first, and every one of them even if another throws.
  const errors: unknown[] = [];
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function startServer(opts: StartOptions = {}): Promise<TestApiServer> {
  const s = await TestApiServer.start(opts);
  cleanups.push(() => s.stop());
  return s;
}

function kubeConfigFor(s: TestApiServer): KubeConfig {
  const path = s.writeKubeconfig(join(dir, `kubeconfig-${++kubeconfigs}.yaml`));
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

/** Stops the informer (or watch) after the test, whatever happens. */
function track<T extends { stop(): Promise<void> }>(informer: T): T {
  cleanups.push(() => informer.stop());
  return informer;
}

interface Recorder {
  events: string[];
  errors: unknown[];
  connects: number;
}

/** Logs `add|update|delete ns/name` for every informer callback. */
function record<T extends KubernetesObject>(inf: Informer<T>): Recorder {
  const r: Recorder = { events: [], errors: [], connects: 0 };
  for (const verb of ['add', 'update', 'delete'] as const) {
    inf.on(verb, (o) => r.events.push(`${verb} ${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`));
  }
  inf.on('error', (err) => r.errors.push(err));
  inf.on('connect', () => r.connects++);
  return r;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const service = (namespace: string, name: string, port = 80, labels: Record<string, string> = {}): Manifest => ({
  kind: 'Service',
  apiVersion: 'v1',
  metadata: { namespace, name, labels },
  spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', ports: [{ name: 'http', port, protocol: 'TCP' }] },
});

const slice = (namespace: string, name: string, svc: string, labels: Record<string, string> = {}): Manifest => ({
  kind: 'EndpointSlice',
  metadata: { namespace, name, labels: { 'kubernetes.io/service-name': svc, ...labels } },
  addressType: 'IPv4',
  endpoints: [{ addresses: ['10.244.1.5'], conditions: { ready: true } }],
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});

const node = (name: string, labels: Record<string, string> = {}): Manifest => ({
  kind: 'Node',
  metadata: { name, labels },
  spec: { podCIDR: '10.244.0.0/24' },
});

interface WatchLine {
  type: string;
  object: { kind?: string; code?: number; reason?: string; metadata?: Record<string, unknown> } & Record<string, unknown>;
}

/**
 * A raw watch (or any GET) over TCP or a Unix socket. Resolves when the server ends the
 * response, or when `enough` is satisfied (then the client hangs up), or after maxMs.
 */
function rawGet(
  target: { url: string } | { socketPath: string; path: string },
  enough: (lines: WatchLine[]) => boolean = () => false,
  maxMs = 5000,
): Promise<{ status: number; body: string; lines: WatchLine[]; ended: boolean }> {
  return new Promise((resolve, reject) => {
    // No agent: a pooled keep-alive socket would outlive a server restart (EPIPE on reuse).
    const options = 'url' in target ? { agent: false } : { agent: false, socketPath: target.socketPath, path: target.path };
    const req = http.get('url' in target ? target.url : 'http://localhost', options, (res) => {
      let body = '';
      const lines: WatchLine[] = [];
      const finish = (ended: boolean) => {
        clearTimeout(timer);
        req.destroy();
        resolve({ status: res.statusCode ?? 0, body, lines, ended });
      };
      const timer = setTimeout(() => finish(false), maxMs);
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
        const complete = body.split('\n').slice(0, -1);
        lines.splice(0, lines.length, ...complete.filter((l) => l !== '').map((l) => JSON.parse(l) as WatchLine));
        if (enough(lines)) finish(false);
      });
      res.on('end', () => finish(true));
    });
    req.on('error', reject);
  });
}

async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** ApiException bodies are the raw response text in client-node 1.4. */
function statusOf(err: unknown): { code?: number; reason?: string; kind?: string; status?: string } {
  expect(err).toBeInstanceOf(ApiException);
  const body = (err as ApiException<unknown>).body;
  return typeof body === 'string' ? JSON.parse(body) : (body as object);
}

describe('TestApiServer: discovery, CRUD and Status errors', () => {
  it('serves discovery documents, /version and /healthz, and 404 Status for unknown paths', async () => {
    const s = await startServer();
    const api = await getJson(`${s.url}/api`);
    expect(api.body).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    const apis = await getJson(`${s.url}/apis`);
    expect(apis.body).toMatchObject({ kind: 'APIGroupList', groups: [{ name: 'discovery.k8s.io' }, { name: 'networking.k8s.io' }] });
    const networking = await getJson(`${s.url}/apis/networking.k8s.io`);
    expect(networking.body).toMatchObject({ kind: 'APIGroup', name: 'networking.k8s.io', preferredVersion: { groupVersion: 'networking.k8s.io/v1', version: 'v1' } });
    const serviceCIDRs = await getJson(`${s.url}/apis/networking.k8s.io/v1`);
    expect(serviceCIDRs.body).toMatchObject({ groupVersion: 'networking.k8s.io/v1', resources: [{ name: 'servicecidrs', kind: 'ServiceCIDR', namespaced: false }] });
    const v1 = await getJson(`${s.url}/api/v1`);
    expect(v1.body).toMatchObject({
      kind: 'APIResourceList',
      groupVersion: 'v1',
      resources: [
        { name: 'services', kind: 'Service', namespaced: true, verbs: expect.arrayContaining(['list', 'watch']) },
        { name: 'nodes', kind: 'Node', namespaced: false, verbs: expect.arrayContaining(['list', 'watch']) },
      ],
    });
    const discovery = await getJson(`${s.url}/apis/discovery.k8s.io/v1`);
    expect(discovery.body).toMatchObject({
      groupVersion: 'discovery.k8s.io/v1',
      resources: [{ name: 'endpointslices', kind: 'EndpointSlice', namespaced: true }],
    });
    expect(await (await fetch(`${s.url}/healthz`)).text()).toBe('ok');
    const version = await kubeConfigFor(s).makeApiClient(VersionApi).getCode();
    expect(version.major).toBe('1');

    for (const path of ['/api/v1/pods', '/api/v1/namespaces/default/nodes', '/apis/apps/v1', '/api/v1/services/x/y/z']) {
      const res = await getJson(`${s.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(res.body, path).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 });
    }
    expect(s.count('discovery')).toBe(8);
  });

  it('creates, reads, updates and deletes through CoreV1Api, with 409 and 404 Status errors', async () => {
    const s = await startServer();
    const core = kubeConfigFor(s).makeApiClient(CoreV1Api);
    const body: V1Service = { metadata: { name: 'web' }, spec: { ports: [{ port: 80 }] } };

    const created = await core.createNamespacedService({ namespace: 'default', body });
    expect(created.kind).toBe('Service');
    expect(created.metadata?.namespace).toBe('default');
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.metadata?.creationTimestamp).toBeInstanceOf(Date);
    const rv1 = Number(created.metadata?.resourceVersion);
    expect(rv1).toBeGreaterThan(0);

    const dup = await core.createNamespacedService({ namespace: 'default', body }).catch((e: unknown) => e);
    expect((dup as ApiException<unknown>).code).toBe(409);
    expect(statusOf(dup)).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'AlreadyExists', code: 409 });

    const updated = await core.replaceNamespacedService({
      name: 'web',
      namespace: 'default',
      body: { ...created, spec: { ports: [{ port: 8080 }] } },
    });
    expect(Number(updated.metadata?.resourceVersion)).toBeGreaterThan(rv1);
    expect(updated.metadata?.uid).toBe(created.metadata?.uid);

    // The same write again carries rv1, which is now stale.
    const stale = await core
      .replaceNamespacedService({ name: 'web', namespace: 'default', body: { ...created, spec: { ports: [{ port: 9090 }] } } })
      .catch((e: unknown) => e);
    expect(statusOf(stale)).toMatchObject({ reason: 'Conflict', code: 409 });
    expect(s.get('Service', 'default', 'web')?.spec).toEqual({ ports: [{ port: 8080 }] });

    const read = await core.readNamespacedService({ name: 'web', namespace: 'default' });
    expect(read.metadata?.resourceVersion).toBe(updated.metadata?.resourceVersion);

    await core.deleteNamespacedService({ name: 'web', namespace: 'default' });
    const gone = await core.readNamespacedService({ name: 'web', namespace: 'default' }).catch((e: unknown) => e);
    expect(statusOf(gone)).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });
    const missingDelete = await core.deleteNamespacedService({ name: 'web', namespace: 'default' }).catch((e: unknown) => e);
    expect(statusOf(missingDelete)).toMatchObject({ reason: 'NotFound', code: 404 });
    expect(s.list('Service')).toEqual([]);
    expect([s.count('create', 'Service'), s.count('update', 'Service'), s.count('delete', 'Service')]).toEqual([2, 2, 2]);
  });

  it('filters lists by namespace, labelSelector and fieldSelector, and rejects bad selectors', async () => {
    const s = await startServer();
    s.apply(service('default', 'a', 80, { app: 'web', tier: 'front' }));
    s.apply(service('default', 'b', 80, { app: 'db', 'service.kubernetes.io/headless': '' }));
    s.apply(service('kube-system', 'c', 80, { app: 'web' }));
    const names = async (query: string, path = '/api/v1/services') => {
      const res = await getJson(`${s.url}${path}?${query}`);
      expect(res.status, query).toBe(200);
      expect(res.body).toMatchObject({ apiVersion: 'v1', kind: 'ServiceList', metadata: { resourceVersion: s.resourceVersion } });
      const items = res.body.items as Array<{ metadata: { namespace: string; name: string }; kind?: string }>;
      expect(items.every((i) => i.kind === undefined)).toBe(true);
      return items.map((i) => `${i.metadata.namespace}/${i.metadata.name}`);
    };
    expect(await names('')).toEqual(['default/a', 'default/b', 'kube-system/c']);
    expect(await names('', '/api/v1/namespaces/kube-system/services')).toEqual(['kube-system/c']);
    expect(await names('labelSelector=app%3Dweb')).toEqual(['default/a', 'kube-system/c']);
    expect(await names('labelSelector=app!%3Dweb')).toEqual(['default/b']);
    expect(await names('labelSelector=tier')).toEqual(['default/a']);
    expect(await names('labelSelector=!service.kubernetes.io%2Fheadless,app')).toEqual(['default/a', 'kube-system/c']);
    expect(await names('labelSelector=app+in+(db,cache)')).toEqual(['default/b']);
    expect(await names('fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Db')).toEqual(['default/b']);
    expect(await names('fieldSelector=metadata.name!%3Da')).toEqual(['default/b', 'kube-system/c']);

    for (const bad of ['labelSelector=a%3D%3D%3Db', 'fieldSelector=spec.clusterIP%3D1.2.3.4']) {
      const res = await getJson(`${s.url}/api/v1/services?${bad}`);
      expect(res.status, bad).toBe(400);
      expect(res.body).toMatchObject({ kind: 'Status', reason: 'BadRequest', code: 400 });
    }
  });

  it('answers a list on the Unix socket as well as on TCP', async () => {
    const socketPath = join(dir, 'apiserver.sock');
    const s = await startServer({ unixSocket: socketPath });
    s.apply(node('node-a'));
    const res = await rawGet({ socketPath, path: '/api/v1/nodes' });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ kind: 'NodeList', items: [{ metadata: { name: 'node-a' } }] });
    // Still there after a restart.
    await s.restart();
    s.apply(node('node-b'));
    const again = JSON.parse((await rawGet({ socketPath, path: '/api/v1/nodes' })).body) as { items: unknown[] };
    expect(again.items).toHaveLength(2);
  });
});

describe('TestApiServer: watch streams', () => {
  it('replays history after a resourceVersion, then streams live events; DELETED carries the last state', async () => {
    const s = await startServer();
    const from = s.resourceVersion;
    s.apply(service('default', 'a', 80));
    s.apply(service('default', 'a', 81));
    s.apply(node('node-a')); // another kind: not in this stream
    const pending = rawGet({ url: `${s.url}/api/v1/services?watch=true&resourceVersion=${from}` }, (l) => l.length >= 4);
    await waitFor('the watch to open', () => s.openWatches === 1);
    s.apply(service('kube-system', 'b', 80));
    const deleted = s.remove('Service', 'default', 'a');
    const { status, lines } = await pending;
    expect(status).toBe(200);
    expect(lines.map((l) => `${l.type} ${String(l.object.metadata?.name)}`)).toEqual(['ADDED a', 'MODIFIED a', 'ADDED b', 'DELETED a']);
    const last = lines[3]!.object;
    expect(last).toMatchObject({ kind: 'Service', apiVersion: 'v1', spec: { ports: [{ port: 81 }] } });
    expect(Number(last.metadata?.resourceVersion)).toBeGreaterThan(Number(lines[1]!.object.metadata?.resourceVersion));
    expect(last.metadata?.resourceVersion).toBe(deleted?.metadata.resourceVersion);
  });

  it('turns label changes into ADDED/DELETED for a selector, and starts with synthetic ADDED when resourceVersion is unset', async () => {
    const s = await startServer();
    s.apply(slice('default', 'web-1', 'web'));
    const url = `${s.url}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=1&labelSelector=!service.kubernetes.io%2Fheadless`;
    const pending = rawGet({ url }, (l) => l.length >= 4);
    await waitFor('the watch to open', () => s.openWatches === 1);
    s.apply(slice('default', 'web-1', 'web', { 'service.kubernetes.io/headless': '' }));
    s.apply(slice('default', 'web-1', 'web'));
    s.apply(slice('other', 'web-2', 'web')); // other namespace
    s.apply(slice('default', 'db-1', 'db', { 'service.kubernetes.io/headless': '' })); // does not match
    s.apply(slice('default', 'web-3', 'web'));
    const { lines } = await pending;
    expect(lines.map((l) => `${l.type} ${String(l.object.metadata?.name)}`)).toEqual([
      'ADDED web-1',
      'DELETED web-1',
      'ADDED web-1',
      'ADDED web-3',
    ]);
    expect(lines[0]!.object.kind).toBe('EndpointSlice');
  });

  it('sends a 410 Expired ERROR event and ends the stream for a compacted resourceVersion', async () => {
    const s = await startServer();
    const old = s.resourceVersion;
    s.apply(node('node-a'));
    s.apply(node('node-a', { changed: 'yes' }));
    s.compact();
    const expired = await rawGet({ url: `${s.url}/api/v1/nodes?watch=true&resourceVersion=${old}` });
    expect(expired.status).toBe(200);
    expect(expired.ended).toBe(true);
    expect(expired.lines).toHaveLength(1);
    expect(expired.lines[0]).toMatchObject({
      type: 'ERROR',
      object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410 },
    });
    expect(s.requests.at(-1)).toMatchObject({ verb: 'watch', kind: 'Node', status: 200, expired: true });

    // The current resourceVersion is still fine.
    const current = rawGet({ url: `${s.url}/api/v1/nodes?watch=true&resourceVersion=${s.resourceVersion}` }, (l) => l.length >= 1);
    await waitFor('the watch to open', () => s.openWatches === 1);
    s.remove('Node', undefined, 'node-a');
    expect((await current).lines.map((l) => l.type)).toEqual(['DELETED']);

    // client-node's Watch sees the same: ERROR with code 410, then done(null).
    const seen: Array<[string, number | undefined]> = [];
    const done = new Promise<unknown>((resolve) => {
      void new Watch(kubeConfigFor(s)).watch(
        '/api/v1/nodes',
        { resourceVersion: old },
        (phase, obj: { code?: number }) => seen.push([phase, obj.code]),
        resolve,
      );
    });
    expect(await done).toBeNull();
    expect(seen).toEqual([['ERROR', 410]]);
  });

  it('sends bookmarks only to watches that allow them, and ends watches at timeoutSeconds', async () => {
    const s = await startServer({ bookmarkIntervalMs: 100 });
    s.apply(node('node-a'));
    const rv = s.resourceVersion;
    const started = Date.now();
    const withBookmarks = rawGet(
      { url: `${s.url}/api/v1/nodes?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true&timeoutSeconds=1` },
      () => false,
      5000,
    );
    const without = rawGet({ url: `${s.url}/api/v1/nodes?watch=true&resourceVersion=${rv}&timeoutSeconds=1` });
    await sleep(250);
    s.apply(service('default', 'unrelated', 80)); // moves the global resourceVersion
    const [a, b] = await Promise.all([withBookmarks, without]);
    expect(a.ended && b.ended).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(b.lines).toEqual([]);
    expect(a.lines.length).toBeGreaterThanOrEqual(3);
    for (const l of a.lines) {
      expect(l).toEqual({ type: 'BOOKMARK', object: { apiVersion: 'v1', kind: 'Node', metadata: { resourceVersion: expect.any(String) } } });
    }
    expect(a.lines.at(-1)!.object.metadata?.resourceVersion).toBe(s.resourceVersion);

    // And through client-node's Watch, which passes the flag on when asked.
    const phases: string[] = [];
    const w = new Watch(kubeConfigFor(s));
    const controller = await w.watch('/api/v1/nodes', { resourceVersion: rv, allowWatchBookmarks: true }, (phase) => phases.push(phase), () => {});
    cleanups.push(() => controller.abort());
    await waitFor('a bookmark through client-node', () => phases.includes('BOOKMARK'));
  });
});

describe('client-node 1.4 informers against TestApiServer', () => {
  it('fills the cache from the initial list, then sees add, update and delete', async () => {
    const s = await startServer();
    s.apply(service('default', 'a'));
    s.apply(service('kube-system', 'dns', 53));
    const kc = kubeConfigFor(s);
    const core = kc.makeApiClient(CoreV1Api);
    const inf = track(makeInformer(kc, '/api/v1/services', () => core.listServiceForAllNamespaces()));
    const rec = record(inf);
    const listedAt = s.resourceVersion;
    await inf.start();
    // start() resolves after the list: the cache is already full.
    expect(inf.list().map((o) => o.metadata?.name).sort()).toEqual(['a', 'dns']);
    expect(inf.get('dns', 'kube-system')?.spec?.ports?.[0]?.port).toBe(53);
    expect(rec.events.sort()).toEqual(['add default/a', 'add kube-system/dns']);
    rec.events.length = 0;

    s.apply(service('default', 'b'));
    s.apply(service('default', 'a', 8080));
    s.remove('Service', 'kube-system', 'dns');
    await waitFor('three events', () => rec.events.length >= 3);
    expect(rec.events).toEqual(['add default/b', 'update default/a', 'delete kube-system/dns']);
    expect(inf.get('a', 'default')?.spec?.ports?.[0]?.port).toBe(8080);
    expect(inf.get('dns', 'kube-system')).toBeUndefined();
    expect((inf as ListWatch<V1Service>).latestResourceVersion()).toBe(s.resourceVersion);
    expect([s.count('list', 'Service'), s.count('watch', 'Service'), rec.connects, rec.errors.length]).toEqual([1, 1, 1, 0]);
    // The watch resumed exactly where the list left off.
    expect(s.requests.find((r) => r.verb === 'watch')?.query.resourceVersion).toBe(listedAt);
  });

  it('passes an EndpointSlice labelSelector to both list and watch', async () => {
    const s = await startServer();
    const selector = '!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name';
    s.apply(slice('default', 'web-1', 'web'));
    s.apply(slice('default', 'db-1', 'db', { 'service.kubernetes.io/headless': '' }));
    const kc = kubeConfigFor(s);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const inf = track(
      makeInformer(
        kc,
        '/apis/discovery.k8s.io/v1/endpointslices',
        () => discovery.listEndpointSliceForAllNamespaces({ labelSelector: selector }),
        selector,
      ),
    );
    const rec = record(inf);
    await inf.start();
    expect(inf.list().map((o) => o.metadata?.name)).toEqual(['web-1']);
    s.apply(slice('default', 'web-1', 'web', { 'service.kubernetes.io/service-proxy-name': 'other' }));
    s.apply(slice('default', 'db-1', 'db'));
    await waitFor('delete and add', () => rec.events.length >= 3);
    expect(rec.events).toEqual(['add default/web-1', 'delete default/web-1', 'add default/db-1']);
    expect(s.requests.filter((r) => r.kind === 'EndpointSlice').map((r) => r.query.labelSelector)).toEqual([selector, selector]);
  });

  it('a Node informer with fieldSelector metadata.name=node-a sees only node-a', async () => {
    const s = await startServer();
    s.apply(node('node-a'));
    s.apply(node('node-b'));
    const kc = kubeConfigFor(s);
    const core = kc.makeApiClient(CoreV1Api);
    const fieldSelector = 'metadata.name=node-a';
    // makeInformer() has no fieldSelector parameter in 1.4; ListWatch's sixth argument does.
    const inf = track(new ListWatch<V1Node>('/api/v1/nodes', new Watch(kc), () => core.listNode({ fieldSelector }), false, undefined, fieldSelector));
    const rec = record(inf);
    await inf.start();
    expect(inf.list().map((n) => n.metadata?.name)).toEqual(['node-a']);
    s.apply(node('node-b', { zone: 'z1' }));
    s.apply(node('node-c'));
    s.remove('Node', undefined, 'node-b');
    s.apply(node('node-a', { zone: 'z2' }));
    await waitFor('the node-a update', () => rec.events.includes('update /node-a'));
    expect(rec.events).toEqual(['add /node-a', 'update /node-a']);
    expect(inf.get('node-a')?.metadata?.labels).toEqual({ zone: 'z2' });
    expect(s.requests.filter((r) => r.kind === 'Node').map((r) => [r.verb, r.query.fieldSelector])).toEqual([
      ['list', fieldSelector],
      ['watch', fieldSelector],
    ]);
  });

  it('re-watches by itself, without relisting, when the server ends a watch cleanly', async () => {
    const s = await startServer();
    s.apply(node('node-a'));
    const kc = kubeConfigFor(s);
    const core = kc.makeApiClient(CoreV1Api);
    // The informer's path may carry extra watch parameters; here the server ends each watch after 1 s.
    const inf = track(makeInformer(kc, '/api/v1/nodes?timeoutSeconds=1', () => core.listNode()));
    const rec = record(inf);
    await inf.start();
    await waitFor('a second watch', () => s.count('watch', 'Node') >= 2, 4000);
    s.apply(node('node-b'));
    await waitFor('node-b', () => inf.get('node-b') !== undefined);
    expect([s.count('list', 'Node'), rec.connects >= 2, rec.errors]).toEqual([1, true, []]);
  });

  it('follows bookmarks when its path asks for them, so a restart after compact() needs no relist', async () => {
    const s = await startServer({ bookmarkIntervalMs: 100 });
    s.apply(node('node-a'));
    const kc = kubeConfigFor(s);
    const core = kc.makeApiClient(CoreV1Api);
    // ListWatch never sets allowWatchBookmarks itself; a query string on the path gets it to the watch.
    const inf = track(makeInformer(kc, '/api/v1/nodes?allowWatchBookmarks=true', () => core.listNode()));
    const rec = record(inf);
    await inf.start();
    s.apply(service('default', 'unrelated')); // moves the resourceVersion, not the Node stream
    const target = s.resourceVersion;
    await waitFor('a bookmark', () => (inf as ListWatch<V1Node>).latestResourceVersion() === target);
    s.compact();
    await s.restart();
    await waitFor('the informer to notice', () => rec.errors.length >= 1);
    await inf.start();
    s.apply(node('node-b'));
    await waitFor('node-b', () => inf.get('node-b') !== undefined);
    expect(s.requests.some((r) => r.expired)).toBe(false);
    expect(s.count('list', 'Node')).toBe(1);
  });

  it('after compact() and a restart, an informer restarted on error relists and loses no update', async () => {
    const s = await startServer();
    s.apply(service('default', 'a', 80));
    s.apply(service('default', 'gone', 80));
    const kc = kubeConfigFor(s);
    const core = kc.makeApiClient(CoreV1Api);
    const inf = track(makeInformer(kc, '/api/v1/services', () => core.listServiceForAllNamespaces()));
    const rec = record(inf);
    // What the agent will do: client-node 1.4 informers stop on any non-410 error.
    let restarts = 0;
    let timer: NodeJS.Timeout | undefined;
    let finished = false;
    cleanups.push(() => {
      finished = true;
      clearTimeout(timer);
    });
    inf.on('error', () => {
      if (finished) return;
      timer = setTimeout(() => {
        restarts++;
        void inf.start();
      }, 200);
    });
    await inf.start();
    rec.events.length = 0;

    // While the informer is cut off: writes it never sees as events, then compaction.
    await s.stop();
    await waitFor('the informer to notice', () => rec.errors.length >= 1);
    s.apply(service('default', 'a', 8080));
    s.apply(service('default', 'new', 80));
    s.remove('Service', 'default', 'gone');
    s.compact();
    await s.restart();

    await waitFor('convergence', () => inf.get('new', 'default') !== undefined && inf.get('gone', 'default') === undefined);
    expect(inf.get('a', 'default')?.spec?.ports?.[0]?.port).toBe(8080);
    expect(rec.events.sort()).toEqual(['add default/new', 'delete default/gone', 'update default/a']);
    expect(restarts).toBeGreaterThanOrEqual(1);
    // The first watch after the restart resumed from the old resourceVersion, got 410, and the informer relisted.
    expect(s.requests.some((r) => r.verb === 'watch' && r.expired)).toBe(true);
    expect(s.count('list', 'Service')).toBe(2);
    const relistedAt = s.resourceVersion;
    await waitFor('a watch from the relisted resourceVersion', () =>
      s.requests.some((r) => r.verb === 'watch' && r.query.resourceVersion === relistedAt),
    );

    // And it is live again.
    s.apply(service('default', 'after', 80));
    await waitFor('a live event after recovery', () => inf.get('after', 'default') !== undefined);
  });
});
