/**
 * A stand-in kube-apiserver for tests: plain HTTP by default, in-memory store, the real wire format
 * for v1 Services, discovery.k8s.io/v1 EndpointSlices, v1 Nodes and networking.k8s.io/v1
 * ServiceCIDRs. Lists, gets, writes
 * with optimistic concurrency, and chunked watches with replay from a resourceVersion,
 * bookmarks and 410 Expired after `compact()`. Enough for @kubernetes/client-node
 * informers and clients to run against it unchanged.
 *
 * Like kube-apiserver (and unlike a bare "from now"), a watch with resourceVersion "" or
 * "0" starts with synthetic ADDED events for the matching objects, and a MODIFIED that
 * moves an object into or out of a watch's selectors reaches it as ADDED or DELETED.
 * Every write, even a no-op, bumps the global resourceVersion.
 *
 * Opt-in, as a cluster's API server is: HTTPS with a given serving certificate (`tls`), and
 * bearer tokens with RBAC (`access`, see rbac.ts): 401 without a valid token, 403 with a
 * Status body naming what was refused. A revoked token's open watches are ended, so a
 * client must authenticate again (stricter than kube-apiserver, which lets them run out).
 */
import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { stringify as toYaml } from 'yaml';
import { forbiddenMessage, type AccessControl } from './rbac.js';
import { parseFieldSelector, parseLabelSelector, SelectorError, type Predicate } from './selectors.js';

export type Kind = 'Service' | 'EndpointSlice' | 'Node' | 'ServiceCIDR';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  [key: string]: unknown;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

/** What `apply` accepts: a manifest whose kind is one of ours; apiVersion may be left out. */
export interface Manifest {
  apiVersion?: string;
  kind: Kind;
  metadata: { name: string; namespace?: string; [key: string]: unknown };
  [key: string]: unknown;
}

export interface StartOptions {
  host?: string;
  /** 0 (default) picks a free port; restart() keeps whichever port was chosen. */
  port?: number;
  /** Also listen on this Unix socket path. */
  unixSocket?: string;
  /** How often watches that asked for bookmarks get one. Default 1000. */
  bookmarkIntervalMs?: number;
  /** Serve HTTPS with this serving certificate and key (PEM). */
  tls?: { cert: string; key: string };
  /** Require a bearer token and authorize each request against RBAC. */
  access?: AccessControl;
}

export type Verb = 'list' | 'watch' | 'get' | 'create' | 'update' | 'delete' | 'discovery' | 'unknown';

/**
 * What a broken or hostile API path answers instead of the real thing, for one list or
 * watch request: an error status (a Kubernetes Status body), a raw body for a list, raw
 * lines for a watch stream (then closed, or left open like a stalled stream), or silence:
 * the request taken and never answered, as behind a dead TCP path.
 */
export type Fault = { status: number } | { listBody: string } | { watchLines: string[]; then: 'close' | 'hang' } | { silence: true };

/** Decides, per request, whether it meets a fault; undefined lets it through. */
export type FaultHook = (r: RequestRecord) => Fault | undefined;

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  verb: Verb;
  kind?: Kind;
  /** HTTP status; for a watch, set once the stream starts. */
  status: number;
  /** For watches: the stream began with a 410 Expired ERROR event. */
  expired?: boolean;
  /** With `access`: who asked. */
  user?: string;
}

interface Resource {
  kind: Kind;
  apiVersion: string;
  plural: string;
  namespaced: boolean;
}

const RESOURCES: readonly Resource[] = [
  { kind: 'Service', apiVersion: 'v1', plural: 'services', namespaced: true },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', plural: 'endpointslices', namespaced: true },
  { kind: 'Node', apiVersion: 'v1', plural: 'nodes', namespaced: false },
  { kind: 'ServiceCIDR', apiVersion: 'networking.k8s.io/v1', plural: 'servicecidrs', namespaced: false },
];
const VERBS = ['create', 'delete', 'get', 'list', 'update', 'watch'];

function resourceOf(kind: string): Resource {
  const r = RESOURCES.find((x) => x.kind === kind);
  if (!r) throw new Error(`TestApiServer does not serve kind ${kind}`);
  return r;
}

/** An error the API reports as a Status object. */
class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

function status(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

const groupOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[0]! : '');

function notFound(r: Resource, name: string): ApiError {
  const group = groupOf(r.apiVersion);
  const details = { name, group, kind: r.plural };
  return new ApiError(404, 'NotFound', `${r.plural}${group ? '.' + group : ''} "${name}" not found`, details);
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface StoredEvent {
  rv: number;
  type: EventType;
  resource: Resource;
  object: KubeObject;
  /** The state before a MODIFIED, for selector transitions. */
  previous?: KubeObject;
}

interface Watcher {
  resource: Resource;
  matches: (o: KubeObject) => boolean;
  res: http.ServerResponse;
  timers: NodeJS.Timeout[];
  /** The bearer token it was opened with, under `access`. */
  token?: string;
}

/** What one watcher sees of an event: selector transitions become ADDED or DELETED. */
function project(ev: StoredEvent, w: Watcher): { type: EventType; object: KubeObject } | undefined {
  if (ev.resource !== w.resource) return undefined;
  const now = w.matches(ev.object);
  if (ev.type !== 'MODIFIED') return now ? { type: ev.type, object: ev.object } : undefined;
  const before = ev.previous !== undefined && w.matches(ev.previous);
  if (now) return { type: before ? 'MODIFIED' : 'ADDED', object: ev.object };
  if (before && ev.previous) {
    return { type: 'DELETED', object: { ...ev.previous, metadata: { ...ev.previous.metadata, resourceVersion: String(ev.rv) } } };
  }
  return undefined;
}

const key = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;

export class TestApiServer {
  /** Every request, in arrival order. */
  readonly requests: RequestRecord[] = [];
  private rv = 1;
  /** Watches from a resourceVersion below this get 410 Expired. */
  private oldestRv = 1;
  private history: StoredEvent[] = [];
  private readonly store = new Map<Kind, Map<string, KubeObject>>(RESOURCES.map((r) => [r.kind, new Map()]));
  private readonly watchers = new Set<Watcher>();
  private servers: http.Server[] = [];
  /** Every socket accepted, HTTP or not yet (a TLS handshake): closeAllConnections() knows only the former. */
  private readonly sockets = new Set<Socket>();
  private port: number;
  private readonly host: string;
  private readonly unixSocket: string | undefined;
  private readonly bookmarkIntervalMs: number;
  private tls: StartOptions['tls'];
  readonly access: AccessControl | undefined;

  private constructor(opts: StartOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port ?? 0;
    this.unixSocket = opts.unixSocket;
    this.bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 1000;
    this.tls = opts.tls;
    this.access = opts.access;
  }

  static async start(opts: StartOptions = {}): Promise<TestApiServer> {
    const s = new TestApiServer(opts);
    await s.listen();
    return s;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /** The current global resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  /** Writes a kubeconfig for client-node (which refuses http:// without insecure-skip-tls-verify). */
  writeKubeconfig(path: string, serverUrl = this.url): string {
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: { server: serverUrl, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'test', user: { token: 'test-token' } }],
      contexts: [{ name: 'test', context: { cluster: 'test', user: 'test', namespace: 'default' } }],
      'current-context': 'test',
    };
    writeFileSync(path, toYaml(config), { mode: 0o600 });
    return path;
  }

  /** Create or update, ignoring any resourceVersion in the manifest. Returns the stored object. */
  apply(manifest: Manifest): KubeObject {
    const r = resourceOf(manifest.kind);
    const obj = this.normalize(r, manifest);
    const existing = this.store.get(r.kind)?.has(key(obj.metadata.namespace, obj.metadata.name));
    return structuredClone(existing ? this.update(r, obj, false) : this.create(r, obj));
  }

  /** Deletes; returns the last state, or undefined if there was no such object. */
  remove(kind: Kind, namespace: string | undefined, name: string): KubeObject | undefined {
    const r = resourceOf(kind);
    const ns = r.namespaced ? (namespace ?? 'default') : undefined;
    return this.store.get(kind)!.has(key(ns, name)) ? structuredClone(this.delete(r, ns, name)) : undefined;
  }

  /** A copy of one object; namespaced kinds default to namespace "default". */
  get(kind: Kind, namespace: string | undefined, name: string): KubeObject | undefined {
    const obj = this.store.get(kind)!.get(key(resourceOf(kind).namespaced ? (namespace ?? 'default') : undefined, name));
    return obj && structuredClone(obj);
  }

  list(kind: Kind): KubeObject[] {
    return [...(this.store.get(kind)?.values() ?? [])].map((o) => structuredClone(o));
  }

  /** Serves another certificate from the next TLS handshake on (a fixed or a broken one). */
  useCertificate(tls: { cert: string; key: string }): void {
    if (!this.tls) throw new Error('TestApiServer: started without TLS');
    this.tls = tls;
    for (const s of this.servers) (s as https.Server).setSecureContext(tls);
  }

  /** Revokes a token (see `access`) and ends the watches it opened. */
  revokeToken(token: string): void {
    this.access?.revoke(token);
    for (const w of this.watchers) if (w.token === token) w.res.end();
  }

  /** Forget the event history: watches from any resourceVersion before now get 410 Expired. */
  compact(): void {
    this.history = [];
    this.oldestRv = this.rv;
  }

  /** Counts logged requests by verb (and kind). */
  count(verb: Verb, kind?: Kind): number {
    return this.requests.filter((r) => r.verb === verb && (kind === undefined || r.kind === kind)).length;
  }

  /** Drops every connection and open watch, then listens again on the same port and socket. */
  async restart(downtimeMs = 0): Promise<void> {
    await this.close();
    if (downtimeMs > 0) await new Promise((r) => setTimeout(r, downtimeMs));
    await this.listen();
  }

  async stop(): Promise<void> {
    await this.close();
  }

  // ---- store -------------------------------------------------------------------------

  private normalize(r: Resource, input: unknown, pathNamespace?: string): KubeObject {
    if (!isRecord(input)) throw new ApiError(400, 'BadRequest', 'the body must be a JSON object');
    if (input.kind !== undefined && input.kind !== r.kind) {
      throw new ApiError(400, 'BadRequest', `the kind ${String(input.kind)} does not match ${r.plural}`);
    }
    const meta: Record<string, unknown> = isRecord(input.metadata) ? { ...input.metadata } : {};
    if (typeof meta.name !== 'string' || meta.name === '') {
      throw new ApiError(422, 'Invalid', `${r.kind} is invalid: metadata.name: Required value: name is required`);
    }
    if (r.namespaced) {
      if (pathNamespace !== undefined && meta.namespace !== undefined && meta.namespace !== pathNamespace) {
        throw new ApiError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = (meta.namespace as string | undefined) ?? pathNamespace ?? 'default';
    } else {
      delete meta.namespace;
    }
    // A JSON round trip, as over the wire: Dates become strings, undefined fields vanish.
    const copy = JSON.parse(JSON.stringify({ ...input, metadata: meta })) as KubeObject;
    return { ...copy, apiVersion: r.apiVersion, kind: r.kind };
  }

  private commit(type: EventType, r: Resource, obj: KubeObject, previous?: KubeObject): KubeObject {
    this.rv += 1;
    obj.metadata.resourceVersion = String(this.rv);
    const objects = this.store.get(r.kind)!;
    const k = key(obj.metadata.namespace, obj.metadata.name);
    if (type === 'DELETED') objects.delete(k);
    else objects.set(k, obj);
    const ev: StoredEvent = { rv: this.rv, type, resource: r, object: obj, previous };
    this.history.push(ev);
    for (const w of this.watchers) this.send(w, project(ev, w));
    return obj;
  }

  private create(r: Resource, obj: KubeObject): KubeObject {
    const { namespace, name } = obj.metadata;
    if (this.store.get(r.kind)!.has(key(namespace, name))) {
      throw new ApiError(409, 'AlreadyExists', `${r.plural} "${name}" already exists`, { name, kind: r.plural });
    }
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    return this.commit('ADDED', r, obj);
  }

  private update(r: Resource, obj: KubeObject, checkVersion: boolean): KubeObject {
    const { namespace, name, resourceVersion } = obj.metadata;
    const current = this.store.get(r.kind)!.get(key(namespace, name));
    if (!current) throw notFound(r, name);
    if (checkVersion && resourceVersion !== undefined && resourceVersion !== current.metadata.resourceVersion) {
      const message = `Operation cannot be fulfilled on ${r.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`;
      throw new ApiError(409, 'Conflict', message, { name, kind: r.plural });
    }
    obj.metadata.uid = current.metadata.uid;
    obj.metadata.creationTimestamp = current.metadata.creationTimestamp;
    return this.commit('MODIFIED', r, obj, current);
  }

  private delete(r: Resource, namespace: string | undefined, name: string): KubeObject {
    const current = this.store.get(r.kind)!.get(key(namespace, name));
    if (!current) throw notFound(r, name);
    return this.commit('DELETED', r, structuredClone(current));
  }

  // ---- HTTP --------------------------------------------------------------------------

  private async listen(): Promise<void> {
    const listen = (at: { host: string; port: number } | { path: string }) => {
      const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
      const server = this.tls ? https.createServer({ cert: this.tls.cert, key: this.tls.key }, handler) : http.createServer(handler);
      server.on('connection', (socket: Socket) => {
        this.sockets.add(socket);
        socket.once('close', () => this.sockets.delete(socket));
      });
      this.servers.push(server);
      return new Promise<http.Server>((resolve, reject) => {
        server.once('error', reject);
        server.listen(at, () => resolve(server));
      });
    };
    const tcp = await listen({ host: this.host, port: this.port });
    this.port = (tcp.address() as AddressInfo).port;
    if (this.unixSocket !== undefined) {
      rmSync(this.unixSocket, { force: true }); // a stale socket file from before a restart
      await listen({ path: this.unixSocket });
    }
  }

  private async close(): Promise<void> {
    for (const w of this.watchers) w.res.destroy();
    const servers = this.servers;
    this.servers = [];
    const closing = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    servers.forEach((s) => s.closeAllConnections());
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(closing);
  }

  private discovery(path: string): unknown {
    const resources = (apiVersion: string) => ({
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: apiVersion,
      resources: RESOURCES.filter((r) => r.apiVersion === apiVersion).map((r) => ({
        name: r.plural,
        singularName: r.kind.toLowerCase(),
        namespaced: r.namespaced,
        kind: r.kind,
        verbs: VERBS,
      })),
    });
    const group = (apiVersion: string) => ({
      name: groupOf(apiVersion),
      versions: [{ groupVersion: apiVersion, version: apiVersion.split('/')[1] }],
      preferredVersion: { groupVersion: apiVersion, version: apiVersion.split('/')[1] },
    });
    const groupVersions = [...new Set(RESOURCES.map((r) => r.apiVersion).filter((v) => v.includes('/')))];
    const named = groupVersions.find((v) => path === `/apis/${groupOf(v)}`);
    if (named) return { kind: 'APIGroup', apiVersion: 'v1', ...group(named) };
    if (groupVersions.some((v) => path === `/apis/${v}`)) return resources(path.slice('/apis/'.length));
    switch (path) {
      case '/api':
        return {
          kind: 'APIVersions',
          versions: ['v1'],
          serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${this.host}:${this.port}` }],
        };
      case '/apis':
        return { kind: 'APIGroupList', apiVersion: 'v1', groups: groupVersions.map(group) };
      case '/api/v1':
        return resources('v1');
      case '/version':
        return { major: '1', minor: '31', gitVersion: 'v1.31.0-test', goVersion: 'go1.22', platform: 'linux/amd64' };
      default:
        return undefined;
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://apiserver');
    const method = req.method ?? 'GET';
    const record: RequestRecord = { method, path: url.pathname, query: Object.fromEntries(url.searchParams), verb: 'unknown', status: 0 };
    this.requests.push(record);
    try {
      const token = this.authenticate(req, record);
      await this.route(req, res, url, record, token);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(500, 'InternalError', String(err));
      if (!res.headersSent) sendJson(res, e.code, status(e.code, e.reason, e.message, e.details));
      else res.destroy();
    }
    record.status = res.statusCode;
  }

  /** Under `access`: who is asking (or 401), as kube-apiserver's authentication says. */
  private authenticate(req: http.IncomingMessage, record: RequestRecord): string | undefined {
    if (!this.access) return undefined;
    const who = this.access.authenticate(req.headers.authorization);
    if (!who) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
    record.user = who.user;
    return who.token;
  }

  /** Under `access`: 403 unless RBAC lets the user do `verb` to the resource. */
  private authorize(record: RequestRecord, r: Resource, verb: Verb, namespace: string | undefined): void {
    if (!this.access || record.user === undefined) return;
    const attributes = { verb, apiGroup: groupOf(r.apiVersion), resource: r.plural, namespace };
    if (this.access.authorize(record.user, attributes)) return;
    const details = { group: attributes.apiGroup, kind: r.plural };
    throw new ApiError(403, 'Forbidden', forbiddenMessage(record.user, attributes), details);
  }

  /** Faults to inject into lists and watches (see Fault); null: none. */
  faults: FaultHook | null = null;

  /** Answers `record`'s request with a fault, if the hook has one for it; true when it did. */
  private fault(res: http.ServerResponse, record: RequestRecord): boolean {
    const f = this.faults?.(record);
    if (!f) return false;
    if ('status' in f) {
      sendJson(res, f.status, status(f.status, f.status === 410 ? 'Expired' : 'InternalError', `injected fault ${f.status}`));
    } else if ('listBody' in f) {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(f.listBody);
    } else if ('silence' in f) {
      return true;
    } else {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      for (const line of f.watchLines) res.write(`${line}\n`);
      if (f.then === 'close') res.end();
    }
    record.status = res.statusCode;
    return true;
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse, url: URL, record: RequestRecord, token: string | undefined): Promise<void> {
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = record.method;
    if (method === 'GET' && ['/healthz', '/livez', '/readyz'].includes(path)) {
      record.verb = 'discovery';
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
      return;
    }
    const doc = method === 'GET' ? this.discovery(path) : undefined;
    if (doc !== undefined) {
      record.verb = 'discovery';
      return sendJson(res, 200, doc);
    }
    const route = parseResourcePath(path);
    if (!route) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const { resource: r, namespace, name } = route;
    record.kind = r.kind;
    const q = url.searchParams;
    record.verb = verbOf(method, name, q);
    this.authorize(record, r, record.verb, namespace);
    if (record.verb === 'watch') {
      if (this.fault(res, record)) return;
      return this.watch(r, namespace, q, res, record, token);
    }
    if (record.verb === 'list') {
      if (this.fault(res, record)) return;
      const matches = matcher(namespace, q);
      // As in kube-apiserver's JSON, list items carry no apiVersion/kind of their own.
      const items = [...this.store.get(r.kind)!.values()]
        .filter(matches)
        .sort(byKey)
        .map(({ apiVersion: _v, kind: _k, ...rest }) => rest);
      return sendJson(res, 200, {
        apiVersion: r.apiVersion,
        kind: `${r.kind}List`,
        metadata: { resourceVersion: String(this.rv) },
        items,
      });
    }
    if (record.verb === 'create') {
      if (r.namespaced && namespace === undefined) throw new ApiError(405, 'MethodNotAllowed', 'create needs a namespace path');
      return sendJson(res, 201, this.create(r, this.normalize(r, await readJson(req), namespace)));
    }
    if (name !== undefined && (namespace !== undefined || !r.namespaced)) {
      const ns = r.namespaced ? namespace : undefined;
      if (record.verb === 'get') {
        const obj = this.store.get(r.kind)!.get(key(ns, name));
        if (!obj) throw notFound(r, name);
        return sendJson(res, 200, obj);
      }
      if (record.verb === 'update') {
        const obj = this.normalize(r, await readJson(req), ns);
        if (obj.metadata.name !== name) {
          throw new ApiError(400, 'BadRequest', 'the name of the object does not match the name on the URL');
        }
        return sendJson(res, 200, this.update(r, obj, true));
      }
      if (record.verb === 'delete') {
        return sendJson(res, 200, this.delete(r, ns, name));
      }
    }
    throw new ApiError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
  }

  private watch(r: Resource, namespace: string | undefined, q: URLSearchParams, res: http.ServerResponse, record: RequestRecord, token: string | undefined) {
    const matches = matcher(namespace, q);
    const rvParam = q.get('resourceVersion') ?? '';
    const fromNow = rvParam === '' || rvParam === '0';
    const from = fromNow ? this.rv : Number(rvParam);
    if (!Number.isSafeInteger(from) || from < 0) {
      throw new ApiError(400, 'BadRequest', `invalid resource version: ${rvParam}`);
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    record.status = 200;
    const w: Watcher = { resource: r, matches, res, timers: [], token };
    if (from < this.oldestRv) {
      record.expired = true;
      const message = `too old resource version: ${from} (${this.oldestRv})`;
      this.send(w, { type: 'ERROR', object: status(410, 'Expired', message) });
      res.end();
      return;
    }
    if (fromNow) {
      // Like kube-apiserver: a watch without a resourceVersion starts with synthetic ADDED events.
      const current = [...this.store.get(r.kind)!.values()].filter(matches).sort(byKey);
      for (const object of current) this.send(w, { type: 'ADDED', object });
    } else {
      for (const ev of this.history) if (ev.rv > from) this.send(w, project(ev, w));
    }
    this.watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    if (timeout > 0) w.timers.push(setTimeout(() => res.end(), timeout * 1000));
    if (q.get('allowWatchBookmarks') === 'true') {
      const bookmark = () =>
        this.send(w, { type: 'BOOKMARK', object: { apiVersion: r.apiVersion, kind: r.kind, metadata: { resourceVersion: String(this.rv) } } });
      w.timers.push(setInterval(bookmark, this.bookmarkIntervalMs));
    }
    res.once('close', () => {
      w.timers.forEach((t) => clearTimeout(t));
      this.watchers.delete(w);
    });
  }

  private send(w: Watcher, event: { type: string; object: unknown } | undefined): void {
    if (event && !w.res.writableEnded && !w.res.destroyed) w.res.write(JSON.stringify(event) + '\n');
  }
}

/** What a request to a resource path does, as kube-apiserver's RequestInfo names it. */
function verbOf(method: string, name: string | undefined, q: URLSearchParams): Verb {
  const watch = q.get('watch');
  if (name === undefined && method === 'GET') return watch === 'true' || watch === '1' ? 'watch' : 'list';
  if (name === undefined) return method === 'POST' ? 'create' : 'unknown';
  return ({ GET: 'get', PUT: 'update', DELETE: 'delete' } as Record<string, Verb>)[method] ?? 'unknown';
}

function parseResourcePath(path: string): { resource: Resource; namespace?: string; name?: string } | undefined {
  const parts = path.split('/').filter((p) => p !== '').map(decodeURIComponent);
  let apiVersion: string;
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') [apiVersion, rest] = ['v1', parts.slice(2)];
  else if (parts[0] === 'apis' && parts.length >= 3) [apiVersion, rest] = [`${parts[1]}/${parts[2]}`, parts.slice(3)];
  else return undefined;
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) [namespace, rest] = [rest[1], rest.slice(2)];
  const [plural, name, ...extra] = rest;
  const resource = RESOURCES.find((r) => r.apiVersion === apiVersion && r.plural === plural);
  if (!resource || extra.length > 0 || (namespace !== undefined && !resource.namespaced)) return undefined;
  return { resource, namespace, name };
}

function matcher(namespace: string | undefined, q: URLSearchParams): (o: KubeObject) => boolean {
  let labels: Predicate, fields: Predicate;
  try {
    labels = parseLabelSelector(q.get('labelSelector') ?? '');
    fields = parseFieldSelector(q.get('fieldSelector') ?? '');
  } catch (err) {
    if (err instanceof SelectorError) throw new ApiError(400, 'BadRequest', err.message);
    throw err;
  }
  return (o) => (namespace === undefined || o.metadata.namespace === namespace) && labels(o.metadata) && fields(o.metadata);
}

function byKey(a: KubeObject, b: KubeObject): number {
  return key(a.metadata.namespace, a.metadata.name).localeCompare(key(b.metadata.namespace, b.metadata.name));
}

function sendJson(res: http.ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new ApiError(400, 'BadRequest', 'the request body is not valid JSON');
  }
}
