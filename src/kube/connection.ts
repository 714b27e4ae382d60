/**
 * How the agent reaches the API server: through --kubeconfig, or, without one, as a pod:
 * KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT over TLS verified against the service
 * account's ca.crt, with its token (token.ts) as the bearer token. The CA file is read for
 * every request (client-node builds an agent per request), so a rotated CA is used at once.
 */
import { isIPv6 } from 'node:net';
import { join } from 'node:path';
import { KubeConfig } from './client.js';
import { ServiceAccountToken } from './token.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface ApiConnection {
  kc: KubeConfig;
  /** Where the credentials come from, for log lines. */
  credentials: string;
  /** The API server answered 401 Unauthorized: true when this refusal is news (log it). */
  refused(): boolean;
}

/** client-node picks the authenticator of a user by this provider name. */
const TOKEN_PROVIDER = 'kube-proxy-ts-service-account-token';

type Authenticator = Parameters<KubeConfig['addAuthenticator']>[0];

function tokenAuthenticator(token: ServiceAccountToken): Authenticator {
  return {
    isAuthProvider: (user) => user.authProvider?.name === TOKEN_PROVIDER,
    applyAuthentication: async (_user, opts) => {
      opts.headers = { ...(opts.headers as Record<string, string> | undefined), Authorization: `Bearer ${token.current()}` };
    },
  };
}

/** The pod's own configuration; throws when the environment is not a pod's. */
export function inClusterConnection(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): ApiConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new Error('no --kubeconfig, and KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not running in a pod');
  }
  const token = new ServiceAccountToken(join(dir, 'token'));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'in-cluster', server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`, caFile: join(dir, 'ca.crt'), skipTLSVerify: false }],
    users: [{ name: 'service-account', authProvider: { name: TOKEN_PROVIDER, config: {} } }],
    contexts: [{ name: 'in-cluster', cluster: 'in-cluster', user: 'service-account' }],
    currentContext: 'in-cluster',
  });
  kc.addAuthenticator(tokenAuthenticator(token));
  return { kc, credentials: `the service account token ${token.path}`, refused: () => token.refused() };
}

/** --kubeconfig's cluster and user: its credentials cannot change under us, so a 401 is news once. */
export function kubeconfigConnection(path: string): ApiConnection {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  let reported = false;
  return { kc, credentials: `the user of ${path}`, refused: () => !reported && (reported = true) };
}

export function connect(kubeconfig: string | null): ApiConnection {
  return kubeconfig ? kubeconfigConnection(kubeconfig) : inClusterConnection();
}
