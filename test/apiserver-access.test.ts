/**
 * The test API server as a cluster's: HTTPS with a certificate from a CA made at test
 * time, 401 without a valid token (none, unknown, revoked), and RBAC read from
 * deploy/rbac.yaml: 403 with kube-apiserver's Status for anything the ClusterRole does not
 * grant, discovery for any authenticated user. Also ServiceCIDRs, listed and watched.
 */
import type { ClientRequest } from 'node:http';
import https from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TestApiServer } from './support/apiserver.js';
import { issueServing, makeCA, type CertificateAuthority, type KeyPair } from './support/pki.js';
import { AccessControl, rbacFrom, readManifests } from './support/rbac.js';

const USER = 'system:serviceaccount:kube-system:kube-proxy-ts';

let dir: string;
let ca: CertificateAuthority;
let serving: KeyPair;
let api: TestApiServer;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kpt-access-'));
  ca = makeCA(dir, 'ca');
  serving = issueServing(ca, dir, 'apiserver', { dns: ['kubernetes'], ips: ['127.0.0.1'] });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => api?.stop());

interface Answer {
  status: number;
  body: string;
}

/** One GET, verified against `caCert`; resolves with the status and the body (a watch: its first line, a bookmark at the latest). */
function get(path: string, token?: string, caCert = ca.cert): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${api.url}${path}`, { ca: caCert, headers: token ? { Authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
        if (path.includes('watch=true') && body.includes('\n')) (resolve({ status: res.statusCode!, body }), req.destroy());
      });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
  });
}

async function start(): Promise<TestApiServer> {
  api = await TestApiServer.start({ tls: serving, access: new AccessControl(rbacFrom(readManifests())), bookmarkIntervalMs: 100 });
  return api;
}

describe('the test API server with TLS, tokens and RBAC', () => {
  it('serves HTTPS that verifies against its CA only', async () => {
    await start();
    expect(api.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const token = api.access!.issue();
    expect((await get('/api/v1/services', token)).status).toBe(200);
    await expect(get('/api/v1/services', token, makeCA(dir, 'other').cert)).rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  });

  it('answers 401 without a token, with an unknown one and with a revoked one', async () => {
    await start();
    const token = api.access!.issue();
    for (const t of [undefined, 'not-a-token']) {
      const r = await get('/api/v1/services', t);
      expect(r.status).toBe(401);
      expect(JSON.parse(r.body)).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 });
    }
    expect((await get('/api/v1/services', token)).status).toBe(200);
    api.revokeToken(token);
    expect((await get('/api/v1/services', token)).status).toBe(401);
    expect(api.requests.filter((r) => r.status === 401)).toHaveLength(3);
  });

  it('ends the watches a revoked token opened', async () => {
    await start();
    const [kept, revoked] = [api.access!.issue(), api.access!.issue()];
    const open = (token: string) =>
      new Promise<ClientRequest & { ended: Promise<void> }>((resolve) => {
        const req = https.get(`${api.url}/api/v1/nodes?watch=true`, { ca: ca.cert, headers: { Authorization: `Bearer ${token}` } }, (res) => {
          resolve(Object.assign(req, { ended: new Promise<void>((r) => res.on('end', () => r()).resume()) }));
        });
      });
    const [a, b] = await Promise.all([open(kept), open(revoked)]);
    expect(api.openWatches).toBe(2);
    api.revokeToken(revoked);
    await b.ended;
    expect(api.openWatches).toBe(1);
    a.destroy();
  });

  it("grants what deploy/rbac.yaml's ClusterRole grants to its binding's service account, and answers 403 for the rest", async () => {
    await start();
    const token = api.access!.issue();
    for (const path of ['/api/v1/services', '/api/v1/nodes?fieldSelector=metadata.name%3Dnode-a', '/apis/discovery.k8s.io/v1/endpointslices', '/apis/networking.k8s.io/v1/servicecidrs']) {
      expect((await get(path, token)).status, path).toBe(200);
      expect((await get(`${path}${path.includes('?') ? '&' : '?'}watch=true&allowWatchBookmarks=true`, token)).status, path).toBe(200);
    }
    const cidrs = JSON.parse((await get('/apis/networking.k8s.io/v1/servicecidrs', token)).body) as { kind: string; items: unknown[] };
    expect(cidrs).toMatchObject({ kind: 'ServiceCIDRList', items: [] });
    // Discovery is for every authenticated user.
    expect((await get('/apis', token)).status).toBe(200);

    const refused = await get('/api/v1/namespaces/default/services/web', token);
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.body)).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: `services is forbidden: User "${USER}" cannot get resource "services" in API group "" in the namespace "default"`,
      reason: 'Forbidden',
      details: { group: '', kind: 'services' },
      code: 403,
    });
    const write = await new Promise<number>((resolve, reject) => {
      const req = https.request(`${api.url}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices`, { method: 'POST', ca: ca.cert, headers: { Authorization: `Bearer ${token}` } }, (res) =>
        resolve(res.resume().statusCode!),
      );
      req.on('error', reject);
      req.end('{}');
    });
    expect(write).toBe(403);
    expect(api.list('EndpointSlice')).toEqual([]);
  });

  it('answers 403 to a user the ClusterRoleBinding does not name', async () => {
    await start();
    const stranger = api.access!.issue('system:serviceaccount:default:default');
    const r = await get('/api/v1/services', stranger);
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body).message).toBe('services is forbidden: User "system:serviceaccount:default:default" cannot list resource "services" in API group "" at the cluster scope');
  });
});
