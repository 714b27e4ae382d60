/**
 * Watches Services, EndpointSlices and this node's Node through client-node informers,
 * guarded against what the API path can send. client-node's watch handler is async and
 * dereferences every event, so a line that is JSON but no object (`{"type":"ADDED"}`,
 * `[1,2,3]`) would end the process with an unhandled rejection: every event is checked
 * here first, and one that is not a valid object is logged, counted and ends that watch
 * with a relist, since a stream that sent it cannot be trusted. A list body that is not a
 * list is refused the same way. Relists and re-watches after a failure back off as
 * client-go's reflector does (backoff.ts), so a storm of 410s or 500s never becomes a storm
 * of full lists, and each retry is logged with its reason. Informers relist by themselves
 * after a 410; on any other error client-node 1.4 stops them, so they are restarted here.
 * The retry's line names the cause (explainApiError: TLS, 401, 403); a 401 also tells the
 * connection, which reads the service account token again and says so once.
 */
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '../kube/client.js';
import type { Logger } from 'pino';
import { getList, LIST_TIMEOUT_MS } from '../kube/api.js';
import { explainApiError, statusCodeOf, type ApiRequest } from '../kube/api-errors.js';
import type { ApiConnection } from '../kube/connection.js';
import { isRecord } from '../kube/objects.js';
import { Backoff, REFLECTOR_BACKOFF, type BackoffOptions } from '../backoff.js';

export interface ObjectHandlers {
  upsert(obj: unknown): void;
  remove(obj: unknown): void;
}

export interface WatchHandlers {
  services: ObjectHandlers;
  endpointSlices: ObjectHandlers;
  node: ObjectHandlers;
  /** Only for modes that read service CIDRs: ServiceCIDRs are then watched too. */
  serviceCIDRs?: ObjectHandlers;
  /** Called after every delivered event. */
  changed(): void;
  /** Objects or events from the API that were not valid, skipped (`count` of them). */
  rejected(kind: string, why: string, count: number): void;
}

export interface Watches {
  stop(): Promise<void>;
}

/** A watch that ends sooner than this did not really work: the next one waits its turn. */
const SHORT_WATCH_MS = 1000;

/**
 * How long the informers' requests may take. Each watch asks the server to end it after a
 * random 5-10 minutes, as client-go's do; one that outlives that by `watchGraceMs` sits on
 * a connection that died without a word (a half-open TCP path) and is ended here, to be
 * followed by a new watch from the last resourceVersion.
 */
export interface RequestTimeouts {
  listMs: number;
  watchSeconds: { min: number; max: number };
  watchGraceMs: number;
}

export const REQUEST_TIMEOUTS: RequestTimeouts = { listMs: LIST_TIMEOUT_MS, watchSeconds: { min: 300, max: 600 }, watchGraceMs: 30_000 };

const WATCH_TYPES = new Set(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

/** Why a watch event cannot be given to the informer, or null when it can. */
export function malformedEvent(data: unknown): string | null {
  if (!isRecord(data)) return `not an object: ${JSON.stringify(data)?.slice(0, 80)}`;
  const { type, object } = data;
  if (typeof type !== 'string' || !WATCH_TYPES.has(type)) return `unknown event type ${JSON.stringify(type)}`;
  if (!isRecord(object)) return `${type} event without an object`;
  if (type === 'ERROR') return null;
  const meta = object.metadata;
  if (!isRecord(meta) || typeof meta.resourceVersion !== 'string') return `${type} event whose object has no metadata.resourceVersion`;
  if (type !== 'BOOKMARK' && typeof meta.name !== 'string') return `${type} event whose object has no metadata.name`;
  return null;
}

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * Drops what the proxy never reads and the informer cache would otherwise hold for every
 * object: managedFields (often larger than the rest of an EndpointSlice) and kubectl's
 * copy of the last applied manifest. Upstream kube-proxy's informers strip the same.
 */
export function slim(obj: Record<string, unknown>): void {
  const meta = obj.metadata;
  if (!isRecord(meta)) return;
  delete meta.managedFields;
  if (isRecord(meta.annotations)) delete meta.annotations[LAST_APPLIED];
}

const named = (o: unknown): o is KubernetesObject => isRecord(o) && isRecord(o.metadata) && typeof o.metadata.name === 'string';

/** An error that makes client-node relist: the same status a watch too old for the server gets. */
function relist(why: string): Error {
  return Object.assign(new Error(why), { statusCode: 410 });
}

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * One informer's pacing: all lists but the first wait a backoff step, and so does a watch
 * that follows one that failed or ended at once; a watch right after its list goes ahead.
 */
class Pacer {
  private lists = 0;
  private watchEnd: { failed: boolean; lasted: number } | null = null;
  private listedSinceWatch = false;
  private readonly backoff: Backoff;

  /** Why the last list or watch failed, for the retry's log line. */
  reason = 'start';

  constructor(
    private readonly kind: string,
    private readonly resource: string,
    private readonly log: Logger,
    readonly stopping: AbortSignal,
    backoff: BackoffOptions,
    readonly credentials: Pick<ApiConnection, 'generation'> & { unauthorized(generation: number): void },
  ) {
    this.backoff = new Backoff(backoff);
  }

  /** A list or watch sent at credentials `generation` failed: the reason the retry's line gives. */
  failed(verb: ApiRequest['verb'], err: unknown, generation: number): void {
    this.reason = explainApiError(err, { verb, resource: this.resource });
    if (statusCodeOf(err) === 401) this.credentials.unauthorized(generation);
  }

  private async wait(what: string): Promise<void> {
    const ms = this.backoff.next();
    this.log.warn({ kind: this.kind, reason: this.reason, retryInMs: ms }, `${what} again after a backoff`);
    await new Promise<void>((resolve) => {
      const stop = () => (clearTimeout(t), resolve());
      const t = setTimeout(() => (this.stopping.removeEventListener('abort', stop), resolve()), ms);
      this.stopping.addEventListener('abort', stop, { once: true });
    });
  }

  async beforeList(): Promise<void> {
    if (this.lists++ > 0) await this.wait('listing');
    this.listedSinceWatch = true;
  }

  async beforeWatch(): Promise<void> {
    const end = this.watchEnd;
    if (!this.listedSinceWatch && end && (end.failed || end.lasted < SHORT_WATCH_MS)) await this.wait('watching');
    this.listedSinceWatch = false;
  }

  watchEnded(startedAt: number, generation: number, err: unknown): void {
    const now = Date.now();
    this.watchEnd = { failed: err !== null && err !== undefined, lasted: now - startedAt };
    if (err) this.failed('watch', err, generation);
  }
}

/**
 * The list an informer starts from, as plain JSON (see kube/api.ts). Objects without a
 * name are dropped here (client-node would fail on them), and reported.
 */
function rawList(kc: ApiConnection['kc'], path: string, kind: string, pacer: Pacer, rejected: WatchHandlers['rejected'], timeoutMs: number) {
  return async (): Promise<KubernetesListObject<KubernetesObject>> => {
    await pacer.beforeList();
    if (pacer.stopping.aborted) throw new Error('stopped');
    const generation = pacer.credentials.generation();
    try {
      const list = await getList(kc, path, timeoutMs);
      const items = list.items.filter(named);
      for (const o of items) slim(o as unknown as Record<string, unknown>);
      if (items.length < list.items.length) rejected(kind, 'listed objects without metadata.name', list.items.length - items.length);
      return { ...(list as KubernetesListObject<KubernetesObject>), items: items as KubernetesObject[] };
    } catch (err) {
      const malformed = (err as { malformed?: string }).malformed;
      if (malformed) rejected(kind, malformed, 1);
      pacer.failed('list', err, generation);
      throw err;
    }
  };
}

type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => unknown;

/**
 * A Watch whose request goes through an HTTP agent of its own, handed to `use`: destroying
 * the agent ends the request, also one still waiting for the server's answer, which
 * client-node's Watch gives no other way to end.
 */
function watchWithOwnAgent(kc: KubeConfig, use: (agent: { destroy(): void }) => void): Watch {
  const config = Object.create(kc) as KubeConfig;
  config.applyToFetchOptions = async (opts) => {
    const init = await kc.applyToFetchOptions(opts);
    if (init.agent && typeof init.agent === 'object') use(init.agent);
    return init;
  };
  return new Watch(config);
}

/**
 * client-node's Watch, as ListWatch calls it, with every event checked before the
 * informer sees it, `done` called once, a re-watch paced after a failed one, and a watch
 * that outlives `lifetimeMs` ended and followed by a new one.
 */
function guardedWatch(kc: KubeConfig, kind: string, pacer: Pacer, log: Logger, rejected: WatchHandlers['rejected'], restart: () => void, lifetimeMs: number): Watch {
  const guarded = new Watch(kc);
  guarded.watch = async (path, queryParams, callback, done) => {
    await pacer.beforeWatch();
    const startedAt = Date.now();
    const generation = pacer.credentials.generation();
    let finished = false;
    let controller: AbortController | undefined;
    let agent: { destroy(): void } | undefined;
    // A watch ended for outliving its timeout is no failure: the next one resumes from the
    // last resourceVersion, without a relist.
    let outlived = false;
    // ListWatch watches after a list even once stopped: end such a watch before it starts.
    if (pacer.stopping.aborted) {
      done(null);
      return new AbortController();
    }
    const stalled = setTimeout(() => {
      log.warn({ kind, lastedMs: Date.now() - startedAt }, 'watch outlived the timeout it asked the server for; ending it and watching again');
      outlived = true;
      if (agent) agent.destroy();
      else finish(null);
    }, lifetimeMs).unref();
    // stop() aborts only a watch that got its answer: one still waiting goes with its agent.
    const onStop = () => agent?.destroy();
    pacer.stopping.addEventListener('abort', onStop, { once: true });
    const finish = (failure: unknown) => {
      if (finished) return;
      finished = true;
      clearTimeout(stalled);
      pacer.stopping.removeEventListener('abort', onStop);
      controller?.abort();
      const err = outlived ? null : failure;
      pacer.watchEnded(startedAt, generation, err);
      // ListWatch's done handler relists and re-watches, asynchronously: a failure there is ours to catch.
      Promise.resolve((done as (e: unknown) => unknown)(err)).catch((e: unknown) => {
        log.error({ kind, err: errorText(e) }, 'informer failed after its watch ended; restarting it');
        restart();
      });
    };
    const onEvent: WatchCallback = (phase, apiObj, watchObj) => {
      if (finished) return;
      const bad = malformedEvent(watchObj);
      if (bad) {
        rejected(kind, bad, 1);
        finish(relist(`malformed watch event: ${bad}`));
        return;
      }
      slim((watchObj as { object: Record<string, unknown> }).object);
      // The informer's handler is async: a failure in it must not become an unhandled rejection.
      Promise.resolve((callback as WatchCallback)(phase, apiObj, watchObj)).catch((err: unknown) => {
        log.error({ kind, err: errorText(err) }, 'watch event handler failed; relisting');
        finish(relist(`event handler failed: ${errorText(err)}`));
      });
    };
    try {
      const watch = watchWithOwnAgent(kc, (a) => (agent = a));
      controller = await watch.watch(path, queryParams, onEvent as Parameters<Watch['watch']>[2], finish);
    } catch (err) {
      finish(err);
    }
    // Stopped while the request was on its way: this watch must not outlive stop().
    if (pacer.stopping.aborted) finish(null);
    if (finished) controller?.abort();
    return controller ?? new AbortController();
  };
  return guarded;
}

const SERVICE_CIDRS_PATH = '/apis/networking.k8s.io/v1/servicecidrs';

/**
 * Whether the API serves ServiceCIDRs (GA in Kubernetes 1.33). An older cluster answers
 * 404: it then has no ServiceCIDR objects to wait for, and its watch would fail forever.
 */
async function servesServiceCIDRs(kc: ApiConnection['kc'], log: Logger, listMs: number): Promise<boolean> {
  try {
    await getList(kc, `${SERVICE_CIDRS_PATH}?limit=1`, listMs);
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 404) return true;
    log.warn('the API server does not serve ServiceCIDRs (networking.k8s.io/v1): addresses in the service range that no Service holds are not dropped');
    return false;
  }
}

/**
 * Starts the informers; resolves once each has listed (no sync happens before), or
 * with null once `cancel` aborts a start that has not got that far (say, RBAC refuses a
 * list), the informers stopped.
 */
export async function startWatches(
  api: ApiConnection,
  nodeName: string,
  handlers: WatchHandlers,
  log: Logger,
  backoff: BackoffOptions = REFLECTOR_BACKOFF,
  cancel?: AbortSignal,
  timeouts: RequestTimeouts = REQUEST_TIMEOUTS,
): Promise<Watches | null> {
  const { kc } = api;
  const unauthorized = (generation: number) => {
    if (api.refused(generation)) log.warn({ credentials: api.credentials }, `the API server answered 401 Unauthorized: it refused ${api.credentials}`);
  };
  const nodeSelector = `metadata.name=${nodeName}`;
  // client-node passes a path's query on to the watch: bookmarks keep the resourceVersion
  // fresh (a restart then resumes without a relist), and a server-side timeout ends a watch
  // that silently stalled, as client-go does with its 5-10 minute watches.
  const { min, max } = timeouts.watchSeconds;
  const watchSeconds = () => min + Math.floor(Math.random() * (max - min + 1));
  const stopping = new AbortController();
  const cancelled = () => stopping.abort();
  if (cancel?.aborted) stopping.abort();
  cancel?.addEventListener('abort', cancelled, { once: true });
  // The pacer makes a restarted informer's list or watch wait its backoff.
  const start = (kind: string, lw: ListWatch<KubernetesObject>): Promise<void> =>
    stopping.signal.aborted
      ? Promise.resolve()
      : lw.start().catch((err: unknown) => {
          log.error({ kind, err: errorText(err) }, 'informer failed to start; restarting it');
          void start(kind, lw);
        });
  const informer = (kind: string, resource: string, path: string, listPath: string, h: ObjectHandlers, fieldSelector?: string) => {
    const pacer = new Pacer(kind, resource, log, stopping.signal, backoff, { generation: () => api.generation(), unauthorized });
    const seconds = watchSeconds();
    const lw: ListWatch<KubernetesObject> = new ListWatch(
      `${path}?allowWatchBookmarks=true&timeoutSeconds=${seconds}`,
      guardedWatch(kc, kind, pacer, log, handlers.rejected, () => void start(kind, lw), seconds * 1000 + timeouts.watchGraceMs),
      rawList(kc, listPath, kind, pacer, handlers.rejected, timeouts.listMs),
      false,
      undefined,
      fieldSelector,
    );
    return { kind, lw, h, pacer };
  };
  const informers = [
    informer('services', 'services', '/api/v1/services', '/api/v1/services', handlers.services),
    informer('endpointslices', 'endpointslices.discovery.k8s.io', '/apis/discovery.k8s.io/v1/endpointslices', '/apis/discovery.k8s.io/v1/endpointslices', handlers.endpointSlices),
    informer('node', 'nodes', '/api/v1/nodes', `/api/v1/nodes?fieldSelector=${encodeURIComponent(nodeSelector)}`, handlers.node, nodeSelector),
  ];
  if (handlers.serviceCIDRs && (await servesServiceCIDRs(kc, log, timeouts.listMs))) {
    informers.push(informer('servicecidrs', 'servicecidrs.networking.k8s.io', SERVICE_CIDRS_PATH, SERVICE_CIDRS_PATH, handlers.serviceCIDRs));
  }

  for (const { kind, lw, h } of informers) {
    lw.on('add', (o) => (h.upsert(o), handlers.changed()));
    lw.on('update', (o) => (h.upsert(o), handlers.changed()));
    lw.on('delete', (o) => (h.remove(o), handlers.changed()));
    lw.on('error', () => void start(kind, lw));
  }

  // start() returns after the first list, or after reporting its failure (then the error
  // handler restarts it): wait until every informer has a resourceVersion.
  await Promise.all(informers.map(({ kind, lw }) => start(kind, lw)));
  while (!stopping.signal.aborted && informers.some(({ lw }) => lw.latestResourceVersion() === '')) {
    await new Promise((r) => setTimeout(r, 100));
  }
  cancel?.removeEventListener('abort', cancelled);
  if (stopping.signal.aborted) {
    await Promise.all(informers.map(({ lw }) => lw.stop()));
    return null;
  }
  log.info('informers synced');
  return {
    stop: async () => {
      stopping.abort();
      await Promise.all(informers.map(({ lw }) => lw.stop()));
    },
  };
}
