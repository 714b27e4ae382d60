/**
 * --dry-run and trace on a live cluster: the test API server holds the example cluster,
 * the CLI reads it through a kubeconfig (one list per kind, no watch), and the output is
 * byte for byte what --from-file gives on the same objects. The node must be named and
 * known; the errors list the cluster's nodes.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseManifests } from '../src/kube/manifests.js';
import { TestApiServer, type Manifest } from './support/apiserver.js';
import { cli, cliAsync } from './support/cli.js';

const EXAMPLE = join(import.meta.dirname, '..', 'examples', 'cluster.yaml');
const FLAGS = ['--hostname-override', 'node-a', '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56'];

describe('--dry-run and trace on a live cluster', () => {
  let api: TestApiServer;
  let dir: string;
  let kubeconfig: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kpt-live-'));
    api = await TestApiServer.start();
    const { objects } = parseManifests(readFileSync(EXAMPLE, 'utf8'), 'example');
    for (const o of [...objects.nodes, ...objects.services, ...objects.endpointSlices]) api.apply(o as Manifest);
    kubeconfig = api.writeKubeconfig(join(dir, 'kubeconfig'));
  });
  afterAll(async () => {
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('--dry-run prints exactly what --from-file prints for the same objects, after one list of each kind', async () => {
    const lists = api.count('list');
    const live = await cliAsync(['--dry-run', '--kubeconfig', kubeconfig, ...FLAGS]);
    expect(live.code, live.stderr).toBe(0);
    expect(live.stdout).toBe(cli(['--dry-run', '--from-file', EXAMPLE, ...FLAGS]).stdout);
    expect(api.count('list') - lists).toBe(4);
    expect(api.count('watch')).toBe(0);
  });

  it('trace answers exactly as with --from-file, a Service named', async () => {
    const args = ['--src', '10.244.0.7', '--dst', 'shop/catalog:http'];
    const live = await cliAsync(['trace', '--kubeconfig', kubeconfig, ...FLAGS, ...args]);
    expect(live.code, live.stderr).toBe(0);
    expect(live.stdout).toBe(cli(['trace', '--from-file', EXAMPLE, ...FLAGS, ...args]).stdout);
    expect(live.stdout).toContain('shop/catalog:http (TCP), cluster IP');
  });

  it('reads a cluster that does not serve ServiceCIDRs (before 1.33) as one without them', async () => {
    api.faults = (r) => (r.kind === 'ServiceCIDR' ? { status: 404 } : undefined);
    try {
      const live = await cliAsync(['--dry-run', '--kubeconfig', kubeconfig, ...FLAGS]);
      expect(live.code, live.stderr).toBe(0);
      expect(live.stdout).toBe(cli(['--dry-run', '--from-file', EXAMPLE, ...FLAGS]).stdout);
      api.faults = (r) => (r.kind === 'ServiceCIDR' ? { status: 500 } : undefined);
      const broken = await cliAsync(['--dry-run', '--kubeconfig', kubeconfig, ...FLAGS]);
      expect(broken.code).not.toBe(0);
      expect(broken.stderr).toContain('servicecidrs: HTTP 500');
    } finally {
      api.faults = null;
    }
  });

  it('$KUBECONFIG is read when --kubeconfig is not given', async () => {
    const before = process.env.KUBECONFIG;
    process.env.KUBECONFIG = kubeconfig;
    try {
      const live = await cliAsync(['--dry-run', ...FLAGS]);
      expect(live.code, live.stderr).toBe(0);
      expect(live.stdout).toContain('# node node-a,');
    } finally {
      if (before === undefined) delete process.env.KUBECONFIG;
      else process.env.KUBECONFIG = before;
    }
  });

  it.each([
    [['--dry-run'], 'kube-proxy-ts: --dry-run on a live cluster needs --hostname-override NODE (its nodes: node-a, node-b, node-c)'],
    [['--dry-run', '--hostname-override', 'node-z'], 'kube-proxy-ts: --dry-run: no Node node-z in the cluster (its nodes: node-a, node-b, node-c)'],
    [['trace', '--hostname-override', 'node-z', '--src', '10.244.0.7', '--dst', '10.96.20.15:80'], 'kube-proxy-ts: trace: no Node node-z in the cluster (its nodes: node-a, node-b, node-c)'],
  ])('%j: one line listing the nodes', async (args, line) => {
    const r = await cliAsync([...args, '--kubeconfig', kubeconfig]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${line}\n`);
  });
});
