/**
 * The agent's informers (agent/watch.ts) against the test API server with faults: what
 * the API sends that is not a valid object is skipped, counted and followed by a relist,
 * never a crash; a storm of 410s or 500s is met with backed-off relists, not a loop.
 * Vitest fails a run on any unhandled rejection, so "no crash" is checked for free.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { REFLECTOR_BACKOFF } from '../src/backoff.js';
import { malformedEvent, REQUEST_TIMEOUTS, startWatches, type Watches } from '../src/agent/watch.js';
import { kubeconfigConnection } from '../src/kube/connection.js';
import { malformedList } from '../src/kube/api.js';
import { TestApiServer, type FaultHook } from './support/apiserver.js';
import { eventually, node, service } from './support/objects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('malformedEvent and malformedList', () => {
  it.each([
    [{ type: 'ADDED' }, /ADDED event without an object/],
    [{ type: 'ADDED', object: null }, /ADDED event without an object/],
    [{ type: 'DELETED', object: {} }, /no metadata.resourceVersion/],
    [{ type: 'MODIFIED', object: { metadata: { resourceVersion: '5' } } }, /no metadata.name/],
    [{ type: 'SURPRISE', object: {} }, /unknown event type/],
    [[1, 2, 3], /not an object/],
    ['x', /not an object/],
    [12345, /not an object/],
    [null, /not an object/],
  ])('%j: %s', (event, why) => expect(malformedEvent(event)).toMatch(why));

  it('lets valid events through', () => {
    expect(malformedEvent({ type: 'ADDED', object: { metadata: { name: 'a', resourceVersion: '1' } } })).toBeNull();
    expect(malformedEvent({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } })).toBeNull();
    expect(malformedEvent({ type: 'ERROR', object: { code: 410 } })).toBeNull();
  });

  it('refuses a list that is not one', () => {
    expect(malformedList({})).toMatch(/no items/);
    expect(malformedList([])).toMatch(/not an object/);
    expect(malformedList({ items: [], metadata: {} })).toMatch(/resourceVersion/);
    expect(malformedList({ items: [], metadata: { resourceVersion: '1' } })).toBeNull();
  });
});

describe('informers against a faulty API server', () => {
  let api: TestApiServer;
  let watches: Watches | undefined;
  let dir: string;
  afterEach(async () => {
    await watches?.stop();
    watches = undefined;
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Quick backoff for the tests that only need it to happen; the storm tests use the real one. */
  const QUICK = { initialMs: 50, maxMs: 400, resetAfterMs: 120_000, jitter: 1 };

  async function start(backoff = QUICK, timeouts = REQUEST_TIMEOUTS, faults: FaultHook | null = null) {
    dir = mkdtempSync(join(tmpdir(), 'kpt-watch-'));
    api = await TestApiServer.start({ bookmarkIntervalMs: 200 });
    api.faults = faults;
    api.apply(node('node-a', '192.168.0.10'));
    api.apply(service('ns', 'a', '10.96.0.1', [{ name: 'http', port: 80 }]));
    const seen = new Map<string, unknown>();
    const rejected: { kind: string; why: string; count: number }[] = [];
    const handlers = {
      upsert: (o: unknown) => seen.set((o as { metadata: { name: string } }).metadata.name, o),
      remove: (o: unknown) => seen.delete((o as { metadata: { name: string } }).metadata.name),
    };
    watches = (await startWatches(
      kubeconfigConnection(api.writeKubeconfig(join(dir, 'kubeconfig'))),
      'node-a',
      { services: handlers, endpointSlices: handlers, node: { upsert: () => {}, remove: () => {} }, changed: () => {}, rejected: (kind, why, count) => rejected.push({ kind, why, count }) },
      pino({ level: 'silent' }),
      backoff,
      undefined,
      timeouts,
    )) ?? undefined;
    return { seen, rejected };
  }

  const MALFORMED = ['{"type":"ADDED"}', '{"type":"ADDED","object":null}', '{"type":"DELETED","object":{}}', '[1,2,3]', '"x"', '12345'];

  it.each(MALFORMED)('a watch line %s is counted and skipped, and the informer relists and converges', async (line) => {
    const { seen, rejected } = await start();
    expect([...seen.keys()]).toEqual(['a']);
    // The next services watch sends the bad line; every other request is served.
    let sent = false;
    api.faults = (r) => (r.verb === 'watch' && r.kind === 'Service' && !sent ? ((sent = true), { watchLines: [line], then: 'hang' }) : undefined);
    const lists = api.count('list', 'Service');
    // End the current watches so the informer opens the faulty one.
    await api.restart(0);
    await eventually('the bad line was reported', async () => (rejected.some((r) => r.kind === 'services') ? true : undefined));
    api.apply(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    await eventually('converged after the relist', async () => (seen.has('b') ? true : undefined));
    expect(api.count('list', 'Service')).toBeGreaterThan(lists);
  });

  it('a list the server takes and never answers is given up after its timeout, and listed again', async () => {
    let silenced = 0;
    const silentOnce: FaultHook = (r) => (r.verb === 'list' && r.kind === 'Service' && silenced++ === 0 ? { silence: true } : undefined);
    const { seen } = await start(QUICK, { ...REQUEST_TIMEOUTS, listMs: 300 }, silentOnce);
    expect([...seen.keys()]).toEqual(['a']);
    expect(api.count('list', 'Service')).toBe(2);
  });

  it('a watch that outlives the timeout it asked for is ended, and a new one picks up what changed', async () => {
    // Every watch after the first lists is silent past its own timeoutSeconds, as on a dead path.
    let silent = false;
    const { seen } = await start(QUICK, { ...REQUEST_TIMEOUTS, watchSeconds: { min: 1, max: 1 }, watchGraceMs: 200 }, (r) => (silent && r.verb === 'watch' && r.kind === 'Service' ? { silence: true } : undefined));
    silent = true;
    const watches = api.count('watch', 'Service');
    await api.restart(0);
    api.apply(service('ns', 'b', '10.96.0.2', [{ name: 'http', port: 80 }]));
    // The watch after the restart hears nothing; once it has outlived 1 s + 200 ms, the next one is served.
    await eventually('a stalled watch was ended', async () => (api.count('watch', 'Service') > watches + 1 ? true : undefined));
    silent = false;
    await eventually('the change arrives by the next watch', async () => (seen.has('b') ? true : undefined));
  });

  it('a list answered with {} is reported and retried, and the informer recovers', async () => {
    const { seen, rejected } = await start();
    // One 410 makes the informer relist; that list and the next are answered {}.
    let expired = false;
    let bad = 2;
    api.faults = (r) =>
      r.verb === 'watch' && r.kind === 'Service' && !expired ? ((expired = true), { status: 410 }) : r.verb === 'list' && r.kind === 'Service' && bad-- > 0 ? { listBody: '{}' } : undefined;
    await api.restart(0);
    api.apply(service('ns', 'c', '10.96.0.3', [{ name: 'http', port: 80 }]));
    await eventually('converged', async () => (seen.has('c') ? true : undefined));
    expect(rejected.filter((r) => r.why === 'the list has no items')).toHaveLength(2);
  });

  it('keeps neither managedFields nor the last-applied manifest, from lists or watches, and keeps other annotations', async () => {
    const heavy = (name: string) => {
      const svc = service('ns', name, '10.96.0.9', [{ name: 'http', port: 80 }]);
      svc.metadata.managedFields = [{ manager: 'kubectl', operation: 'Apply', fieldsV1: { 'f:spec': {} } }];
      svc.metadata.annotations = { 'kubectl.kubernetes.io/last-applied-configuration': '{"big":true}', 'example.com/keep': 'yes' };
      return svc;
    };
    const { seen } = await start();
    const slimmed = (name: string) => {
      const meta = (seen.get(name) as { metadata: Record<string, unknown> }).metadata;
      return { managedFields: meta.managedFields, annotations: meta.annotations };
    };
    api.apply(heavy('watched'));
    await eventually('the watched Service arrives', async () => (seen.has('watched') ? true : undefined));
    expect(slimmed('watched')).toEqual({ managedFields: undefined, annotations: { 'example.com/keep': 'yes' } });

    // Every Service watch now fails: the next one arrives by a list.
    api.faults = (r) => (r.verb === 'watch' && r.kind === 'Service' ? { status: 410 } : undefined);
    const lists = api.count('list', 'Service');
    await api.restart(0);
    api.apply(heavy('listed'));
    await eventually('relisted', async () => (api.count('list', 'Service') > lists && seen.has('listed') ? true : undefined));
    api.faults = null;
    expect(slimmed('listed')).toEqual({ managedFields: undefined, annotations: { 'example.com/keep': 'yes' } });
  });

  it.each([
    ['every watch answered 410', (r: { verb: string }) => (r.verb === 'watch' ? { status: 410 } : undefined)],
    ['every list answered 500', (r: { verb: string }) => (r.verb === 'list' ? { status: 500 } : r.verb === 'watch' ? { status: 410 } : undefined)],
  ] as const)('%s for 8 s: the informers back off instead of relisting in a loop', async (_what, fault) => {
    await start(REFLECTOR_BACKOFF);
    const before = api.count('list');
    api.faults = fault;
    await api.restart(0);
    await sleep(8000);
    // Three informers; without backoff this is hundreds of lists a second.
    const lists = api.count('list') - before;
    expect(lists).toBeGreaterThan(2);
    expect(lists).toBeLessThanOrEqual(3 * 6);
    api.faults = null;
  });
});
