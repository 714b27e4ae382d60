/**
 * The e2e cluster's API server as a pod in deploy/ reaches it: HTTPS with a serving
 * certificate from a cluster CA made at test time, bearer tokens, and RBAC from
 * deploy/rbac.yaml. It listens on a Unix socket that the topology forwards to
 * 10.99.0.254 at the DaemonSet's KUBERNETES_SERVICE_PORT, and its certificate is for the
 * DaemonSet's KUBERNETES_SERVICE_HOST, which the pods resolve to that address.
 */
import { join } from 'node:path';
import { TestApiServer } from '../support/apiserver.js';
import { issueServing, makeCA, type CertificateAuthority, type ServingOptions } from '../support/pki.js';
import { AccessControl, rbacFrom, readManifests, type Rbac } from '../support/rbac.js';
import type { TestCluster } from '../support/topology.js';
import { daemonSetApiServer } from './daemonset-agent.js';

export interface ClusterApi {
  api: TestApiServer;
  ca: CertificateAuthority;
  /** Where the API server is in the node namespaces. */
  ip: string;
  /** The name KUBERNETES_SERVICE_HOST gives it. */
  host: string;
  /** Makes (more) certificates, e.g. broken ones, in the test's directory. */
  pkiDir: string;
}

export interface ClusterApiOptions {
  /** RBAC to enforce; default: deploy/rbac.yaml as it is. */
  rbac?: Rbac;
  /** The serving certificate's names and validity; default: the DaemonSet's host, for a day. */
  serving?: (host: string, ip: string) => ServingOptions;
}

export async function startClusterApi(cluster: TestCluster, dir: string, opts: ClusterApiOptions = {}): Promise<ClusterApi> {
  const { host, port } = daemonSetApiServer();
  const pkiDir = join(dir, 'pki');
  const ca = makeCA(pkiDir, 'cluster-ca');
  const socket = join(dir, 'api.sock');
  // The forwarder's address, as kubeadm puts the control plane's name and address in its certificate.
  const ip = (await cluster.forwardUnixSocket(socket, port)).ip;
  const serving = opts.serving?.(host, ip) ?? { dns: [host, 'kubernetes', 'kubernetes.default.svc'], ips: [ip] };
  const api = await TestApiServer.start({
    unixSocket: socket,
    bookmarkIntervalMs: 1000,
    tls: issueServing(ca, pkiDir, 'apiserver', serving),
    access: new AccessControl(opts.rbac ?? rbacFrom(readManifests())),
  });
  return { api, ca, ip, host, pkiDir };
}
