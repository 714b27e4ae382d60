/**
 * One kube-proxy-ts agent in a node namespace, started as deploy/daemonset.yaml starts its
 * pod: the container's env (NODE_NAME through the downward API, KUBERNETES_SERVICE_HOST
 * and _PORT as written), its args with $(VAR) substituted, its volume mounts (the
 * ConfigMap's files at /var/lib/kube-proxy, the host's xtables lock) and the service
 * account volume at /var/run/secrets/kubernetes.io/serviceaccount, in a private mount
 * namespace per agent (pod-mounts.ts). No --kubeconfig: the agent finds the API server
 * as a pod does. The node resolves KUBERNETES_SERVICE_HOST to the API server's address
 * (as kind's nodes do through Docker's DNS). `flags` say only what a suite must differ in.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { NsProcess, TestCluster } from '../support/topology.js';
import type { ClusterApi } from './cluster-api.js';
import { podMountArgs, type PodMount } from './pod-mounts.js';
import { ServiceAccountVolume } from './service-account.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'src', 'main.js');
const SERVICE_ACCOUNT_PATH = '/var/run/secrets/kubernetes.io/serviceaccount';

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath?: string } };
}

interface DaemonSet {
  metadata: { namespace: string };
  spec: {
    template: {
      spec: {
        containers: Array<{ args?: string[]; env?: EnvVar[]; volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }> }>;
        volumes?: Array<{ name: string; configMap?: { name: string }; hostPath?: { path: string; type?: string } }>;
      };
    };
  };
}

const readYaml = <T>(file: string) => parse(readFileSync(join(ROOT, 'deploy', file), 'utf8')) as T;
const daemonSet = readYaml<DaemonSet>('daemonset.yaml');
const configMap = readYaml<{ metadata: { name: string }; data: Record<string, string> }>('configmap.yaml');
const pod = daemonSet.spec.template.spec;
const container = pod.containers[0]!;

/** The container's env on `nodeName`; fieldRef spec.nodeName is the only downward API it uses. */
export function daemonSetEnv(nodeName: string): Record<string, string> {
  return Object.fromEntries(
    (container.env ?? []).map((e) => {
      if (e.value !== undefined) return [e.name, e.value];
      if (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') return [e.name, nodeName];
      throw new Error(`daemonset-agent: env ${e.name} comes from something this test does not emulate`);
    }),
  );
}

/** Where the pods look for the API server: KUBERNETES_SERVICE_HOST and _PORT as the manifest sets them. */
export function daemonSetApiServer(): { host: string; port: number } {
  const env = daemonSetEnv('');
  const [host, port] = [env.KUBERNETES_SERVICE_HOST, Number(env.KUBERNETES_SERVICE_PORT)];
  if (!host || !Number.isInteger(port)) throw new Error('daemonset-agent: the DaemonSet sets no KUBERNETES_SERVICE_HOST and _PORT');
  return { host, port };
}

/** The container's args with $(VAR) replaced from its env, as kubelet does. */
export function daemonSetArgs(env: Record<string, string>): string[] {
  return (container.args ?? []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string) => env[name] ?? m));
}

/** A service account volume for a pod on `node`, with a token of its own. */
export function serviceAccountVolume(api: ClusterApi, dir: string, node: string, caCert = api.ca.cert): ServiceAccountVolume {
  const token = api.api.access!.issue();
  return new ServiceAccountVolume(join(dir, `sa-${node}-${token.slice(0, 8)}`), { token, 'ca.crt': caCert, namespace: daemonSet.metadata.namespace });
}

export interface AgentStart {
  cluster: TestCluster;
  node: string;
  mode: string;
  api: ClusterApi;
  /** Where the pod's files are written. */
  dir: string;
  flags: string[];
  /** The pod's service account volume; default: a new one, with a new token. */
  serviceAccount?: ServiceAccountVolume;
  /** Resolve once the agent's output matches this; default: its first sync. */
  ready?: RegExp;
}

let pods = 0;

/** The container's volume mounts: ConfigMap files written under `podDir`, host paths as they are. */
function volumeMounts(podDir: string): PodMount[] {
  return (container.volumeMounts ?? []).flatMap((m) => {
    const volume = pod.volumes?.find((v) => v.name === m.name);
    if (volume?.configMap) {
      if (volume.configMap.name !== configMap.metadata.name) throw new Error(`daemonset-agent: no ConfigMap ${volume.configMap.name} in deploy/`);
      const source = join(podDir, m.name);
      mkdirSync(source);
      for (const [file, text] of Object.entries(configMap.data)) writeFileSync(join(source, file), text);
      return [{ path: m.mountPath, source, readOnly: m.readOnly ?? false }];
    }
    if (volume?.hostPath) {
      const { path, type } = volume.hostPath;
      // FileOrCreate, as kubelet does (iptables creates the same lock file itself); a
      // missing path of another type is not made on the host, and not mounted.
      if (!existsSync(path) && type === 'FileOrCreate') writeFileSync(path, '', { flag: 'a' });
      return existsSync(path) ? [{ path: m.mountPath, source: path, readOnly: m.readOnly ?? false }] : [];
    }
    throw new Error(`daemonset-agent: volume ${m.name} is of a kind this test does not emulate`);
  });
}

export async function startDaemonSetAgent(s: AgentStart): Promise<NsProcess> {
  const env = daemonSetEnv(s.node);
  const podDir = join(s.dir, `pod-${s.node}-${++pods}`);
  mkdirSync(join(podDir, 'scratch'), { recursive: true });
  const serviceAccount = s.serviceAccount ?? serviceAccountVolume(s.api, s.dir, s.node);
  const hosts = join(podDir, 'hosts');
  writeFileSync(hosts, `127.0.0.1 localhost\n::1 localhost\n${s.api.ip} ${env.KUBERNETES_SERVICE_HOST}\n`);
  const mounts: PodMount[] = [
    ...volumeMounts(podDir),
    { path: SERVICE_ACCOUNT_PATH, source: serviceAccount.dir, readOnly: true },
    { path: '/etc/hosts', source: hosts, readOnly: true },
  ];
  const command = [...podMountArgs(mounts, join(podDir, 'scratch')), process.execPath, MAIN, ...daemonSetArgs(env), '--proxy-mode', s.mode, ...s.flags];
  return s.cluster.spawnIn(s.cluster.node(s.node), 'unshare', ['--mount', '--propagation', 'private', '--', ...command], {
    env: { PATH: process.env.PATH, ...env },
    ready: s.ready ?? /synced proxy rules/,
    readyTimeoutMs: 20_000,
  });
}
