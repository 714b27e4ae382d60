/**
 * Reading the Kubernetes API as plain JSON, with a kubeconfig's server and credentials:
 * the informers' lists and the offline tools' live reads. client-node's typed calls turn
 * every object into class instances, which at 10,000 Services and EndpointSlices costs
 * ~60 MB more per list; the proxy validates raw objects anyway.
 */
import type { KubeConfig } from './client.js';
import fetch from 'node-fetch';
import { StringDecoder } from 'node:string_decoder';
import { isRecord } from './objects.js';

export interface RawList {
  items: unknown[];
  metadata: { resourceVersion: string };
}

/** Why a list answer cannot be used, or null when it can. Items are checked one by one later. */
export function malformedList(body: unknown): string | null {
  if (!isRecord(body)) return 'the list is not an object';
  if (!Array.isArray(body.items)) return 'the list has no items';
  if (!isRecord(body.metadata) || typeof body.metadata.resourceVersion !== 'string') return 'the list has no metadata.resourceVersion';
  return null;
}

/** The message of a Kubernetes Status body, whole (a 403's names the user, verb and resource). */
function statusMessage(text: string): string | undefined {
  try {
    const body = JSON.parse(text) as unknown;
    return isRecord(body) && body.kind === 'Status' && typeof body.message === 'string' ? body.message : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A response body as text, decoded as it arrives. fetch's own text() keeps every chunk
 * until the last, then copies them into one buffer: at 10,000 EndpointSlices that is two
 * copies of a 13 MB list held until the old generation is next collected, while a chunk
 * decoded at once is freed by the next scavenge.
 */
async function bodyText(body: NodeJS.ReadableStream): Promise<string> {
  const decoder = new StringDecoder('utf8');
  let text = '';
  for await (const chunk of body) text += decoder.write(chunk as Buffer);
  return text + decoder.end();
}

/**
 * How long a list may take, answer and body: a server or a path that accepted the request
 * and went silent would otherwise hold the agent's start, or an informer, for good. A
 * 10,000-object list takes a second or two; a busy API server, many more.
 */
export const LIST_TIMEOUT_MS = 60_000;

/** GET of a path as JSON; an HTTP error keeps its status as `statusCode`, as client-node's do. */
export async function getJson(kc: KubeConfig, path: string, timeoutMs = LIST_TIMEOUT_MS): Promise<unknown> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('the kubeconfig has no current cluster');
  const init = await kc.applyToFetchOptions({});
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let res: Awaited<ReturnType<typeof fetch>>;
  let text: string;
  try {
    res = await fetch(new URL(server + path), { ...init, method: 'GET', signal: abort.signal });
    text = await bodyText(res.body);
  } catch (err) {
    if (abort.signal.aborted) throw new Error(`GET ${path}: no whole answer within ${timeoutMs / 1000} s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok) throw Object.assign(new Error(`GET ${path}: HTTP ${res.status}: ${statusMessage(text) ?? text.slice(0, 200)}`), { statusCode: res.status });
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new Error(`GET ${path}: the answer is not JSON`);
  }
}

/** A list, refused with the reason when it is not one. */
export async function getList(kc: KubeConfig, path: string, timeoutMs = LIST_TIMEOUT_MS): Promise<RawList> {
  const body = await getJson(kc, path, timeoutMs);
  const bad = malformedList(body);
  if (bad) throw Object.assign(new Error(`GET ${path}: ${bad}`), { malformed: bad });
  return body as RawList;
}
