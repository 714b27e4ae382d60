/**
 * Watches Services, EndpointSlices and this node's Node through client-node informers.
 * Informers relist by themselves after a 410; on any other error client-node 1.4 stops
 * them, so they are restarted here, resuming from the last resourceVersion they saw (a
 * watch that expired meanwhile gets a 410 and a relist, whose diff reports deletions).
 */
import { KubeConfig, ListWatch, Watch, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import fetch from 'node-fetch';
import type { Logger } from 'pino';

export interface ObjectHandlers {
  upsert(obj: unknown): void;
  remove(obj: unknown): void;
}

export interface WatchHandlers {
  services: ObjectHandlers;
  endpointSlices: ObjectHandlers;
  node: ObjectHandlers;
  /** Called after every delivered event. */
  changed(): void;
}

export interface Watches {
  stop(): Promise<void>;
}

export function loadKubeConfig(path: string | null): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromCluster();
  return kc;
}

const RESTART_DELAY_MS = 1000;

/**
 * A list as plain JSON. client-node's typed list calls turn every object into class
 * instances, which at 10,000 Services and EndpointSlices costs ~60 MB more at each
 * (re)list; the proxy validates raw objects anyway. Same connection settings as the watch.
 */
function rawList(kc: KubeConfig, path: string): () => Promise<KubernetesListObject<KubernetesObject>> {
  return async () => {
    const server = kc.getCurrentCluster()?.server;
    if (!server) throw new Error('the kubeconfig has no current cluster');
    const init = await kc.applyToFetchOptions({});
    const res = await fetch(new URL(server + path), { ...init, method: 'GET' });
    const body = await res.text();
    if (!res.ok) throw Object.assign(new Error(`GET ${path}: HTTP ${res.status}: ${body.slice(0, 200)}`), { statusCode: res.status });
    return JSON.parse(body) as KubernetesListObject<KubernetesObject>;
  };
}

/** Starts the three informers; resolves once each has listed (no sync happens before). */
export async function startWatches(kc: KubeConfig, nodeName: string, handlers: WatchHandlers, log: Logger): Promise<Watches> {
  const watch = new Watch(kc);
  const nodeSelector = `metadata.name=${nodeName}`;
  // client-node passes a path's query on to the watch: bookmarks keep the resourceVersion
  // fresh (a restart then resumes without a relist), and a server-side timeout ends a watch
  // that silently stalled, as client-go does with its 5-10 minute watches.
  const watchPath = (path: string) => `${path}?allowWatchBookmarks=true&timeoutSeconds=${300 + Math.floor(Math.random() * 300)}`;
  const informers: { kind: string; lw: ListWatch<KubernetesObject>; h: ObjectHandlers }[] = [
    {
      kind: 'services',
      lw: new ListWatch(watchPath('/api/v1/services'), watch, rawList(kc, '/api/v1/services'), false),
      h: handlers.services,
    },
    {
      kind: 'endpointslices',
      lw: new ListWatch(watchPath('/apis/discovery.k8s.io/v1/endpointslices'), watch, rawList(kc, '/apis/discovery.k8s.io/v1/endpointslices'), false),
      h: handlers.endpointSlices,
    },
    {
      kind: 'node',
      lw: new ListWatch(watchPath('/api/v1/nodes'), watch, rawList(kc, `/api/v1/nodes?fieldSelector=${encodeURIComponent(nodeSelector)}`), false, undefined, nodeSelector),
      h: handlers.node,
    },
  ];

  let stopped = false;
  const timers = new Set<NodeJS.Timeout>();
  for (const { kind, lw, h } of informers) {
    lw.on('add', (o) => (h.upsert(o), handlers.changed()));
    lw.on('update', (o) => (h.upsert(o), handlers.changed()));
    lw.on('delete', (o) => (h.remove(o), handlers.changed()));
    lw.on('error', (err) => {
      if (stopped) return;
      log.warn({ kind, err: (err as Error)?.message ?? String(err) }, 'watch failed; restarting');
      const t = setTimeout(() => {
        timers.delete(t);
        if (!stopped) void lw.start();
      }, RESTART_DELAY_MS);
      timers.add(t);
    });
  }

  // start() returns after the first list, or after reporting its failure (then the error
  // handler restarts it): wait until every informer has a resourceVersion.
  await Promise.all(informers.map(({ lw }) => lw.start()));
  while (!stopped && informers.some(({ lw }) => lw.latestResourceVersion() === '')) {
    await new Promise((r) => setTimeout(r, 100));
  }
  log.info('informers synced');
  return {
    stop: async () => {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      await Promise.all(informers.map(({ lw }) => lw.stop()));
    },
  };
}
