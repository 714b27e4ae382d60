/**
 * deploy/: every manifest parses and validates against the Kubernetes schemas (types and
 * required fields through kubernetes-models, unknown fields through client-node's models);
 * the DaemonSet's arguments are accepted by our own parser with the ConfigMap's config,
 * which loads without a warning; RBAC grants exactly what the agent needs. Then
 * --write-config-to, whose output must load back to the same configuration.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole, type IClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding, type IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { ConfigMap, type IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { ServiceAccount, type IServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { parseInvocation, type Invocation } from '../src/cli/program.js';
import { loadKubeProxyConfiguration } from '../src/config/kubeproxyconfig.js';
import { DEFAULT_CONFIG, type ProxyConfig } from '../src/config/options.js';
import { cli } from './support/cli.js';

const DEPLOY = join(import.meta.dirname, '..', 'deploy');
const dir = mkdtempSync(join(tmpdir(), 'kpt-deploy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function yamlFiles(d: string): string[] {
  return readdirSync(d, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? yamlFiles(join(d, e.name)) : /\.ya?ml$/.test(e.name) ? [join(d, e.name)] : [],
  );
}

function documents(path: string): unknown[] {
  return parseAllDocuments(readFileSync(path, 'utf8')).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${path}: ${doc.errors[0]!.message}`);
    return doc.toJS() as unknown;
  });
}

const kustomization = parse(readFileSync(join(DEPLOY, 'kustomization.yaml'), 'utf8')) as { resources?: unknown };
const resources = (kustomization.resources ?? []) as string[];
const objects = resources.flatMap((r) => documents(join(DEPLOY, r))) as Array<Record<string, unknown>>;

function only<T>(kind: string): T {
  const found = objects.filter((o) => o.kind === kind);
  if (found.length !== 1) throw new Error(`want one ${kind} in the kustomization, found ${found.length}`);
  return found[0] as T;
}

/** kubernetes-models' class, and client-node's model name, for each kind deploy/ uses. */
type Validating = new (data: never) => { validate(): void };
const SCHEMAS: Record<string, { model: Validating; fields: string }> = {
  'v1/ServiceAccount': { model: ServiceAccount, fields: 'V1ServiceAccount' },
  'v1/ConfigMap': { model: ConfigMap, fields: 'V1ConfigMap' },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: ClusterRole, fields: 'V1ClusterRole' },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: ClusterRoleBinding, fields: 'V1ClusterRoleBinding' },
  'apps/v1/DaemonSet': { model: DaemonSet, fields: 'V1DaemonSet' },
};

type AttributeTypeMap = Array<{ baseName: string; type: string }>;
const clientModels = k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttributeTypeMap } | undefined>;

/**
 * Fields the API does not know, by path: what `kubectl apply --validate=strict` rejects and
 * kubernetes-models' schemas let through (they allow additional properties).
 */
function unknownFields(value: unknown, type: string, path: string): string[] {
  const list = /^Array<(.+)>$/.exec(type);
  if (list) return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, list[1]!, `${path}[${i}]`)) : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return isRecord(value) ? Object.entries(value).flatMap(([k, v]) => unknownFields(v, map[1]!, `${path}.${k}`)) : [];
  const attributes = clientModels[type]?.getAttributeTypeMap?.();
  if (!attributes || !isRecord(value)) return [];
  const fieldType = new Map(attributes.map((a) => [a.baseName, a.type]));
  return Object.entries(value).flatMap(([k, v]) => {
    const t = fieldType.get(k);
    return t === undefined ? [`${path}.${k}`] : unknownFields(v, t, `${path}.${k}`);
  });
}

/** A copy of `obj` with the value at `path` replaced, or removed for undefined. */
function mutated(obj: object, path: Array<string | number>, value: unknown): Record<string, unknown> {
  const copy = structuredClone(obj) as Record<string, unknown>;
  let at: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (value === undefined) delete at[last];
  else at[last] = value;
  return copy;
}

/** Throws what is wrong with one object, against the schema of its apiVersion and kind. */
function validate(obj: Record<string, unknown>): void {
  const key = `${String(obj.apiVersion)}/${String(obj.kind)}`;
  const schema = SCHEMAS[key];
  if (!schema) throw new Error(`${key}: no schema registered in this test`);
  new schema.model(obj as never).validate();
  if (!clientModels[schema.fields]?.getAttributeTypeMap) throw new Error(`${schema.fields}: not a client-node model`);
  const unknown = unknownFields(obj, schema.fields, '');
  if (unknown.length > 0) throw new Error(`${key}: unknown fields ${unknown.join(', ')}`);
}

const daemonSet = only<IDaemonSet>('DaemonSet');
const configMap = only<IConfigMap>('ConfigMap');
const clusterRole = only<IClusterRole>('ClusterRole');
const binding = only<IClusterRoleBinding>('ClusterRoleBinding');
const serviceAccount = only<IServiceAccount>('ServiceAccount');
const podSpec = daemonSet.spec!.template.spec!;
const container = podSpec.containers[0]!;
const configText = configMap.data?.['config.conf'] ?? '';

describe('deploy/ manifests', () => {
  it('are all YAML, and each is the kustomization, the kind cluster or one of its resources', () => {
    const files = yamlFiles(DEPLOY).map((f) => f.slice(DEPLOY.length + 1));
    expect(files).toContain('kustomization.yaml');
    expect(files).toContain('kind-cluster.yaml');
    for (const f of files) expect(() => documents(join(DEPLOY, f)), f).not.toThrow();
    expect(files.filter((f) => f !== 'kustomization.yaml' && f !== 'kind-cluster.yaml').sort()).toEqual([...resources].sort());
  });

  it('is one ServiceAccount, ConfigMap, ClusterRole, ClusterRoleBinding and DaemonSet', () => {
    expect(objects.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'ServiceAccount']);
  });

  it.each(objects.map((o) => [`${String(o.kind)} ${String((o.metadata as { name?: string } | undefined)?.name)}`, o] as const))(
    '%s validates against the Kubernetes schema',
    (_name, obj) => {
      expect(() => validate(obj)).not.toThrow();
    },
  );

  it('the validation rejects a wrong type, an unknown field and a missing one (so the passes above mean something)', () => {
    expect(() => validate(mutated(daemonSet, ['spec', 'template', 'spec', 'hostNetwork'], 'yes'))).toThrow(/hostNetwork/);
    expect(() => validate(mutated(daemonSet, ['spec', 'template', 'spec', 'containers', 0, 'securityContex'], { privileged: true }))).toThrow(
      '.spec.template.spec.containers[0].securityContex',
    );
    expect(() => validate(mutated(binding, ['roleRef'], undefined))).toThrow(/roleRef/);
  });

  it.runIf(spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0)(
    'kubectl kustomize builds exactly these objects',
    () => {
      const r = spawnSync('kubectl', ['kustomize', DEPLOY], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const built = parseAllDocuments(r.stdout).map((d) => d.toJS() as unknown);
      const key = (o: unknown) => JSON.stringify([(o as { kind: string }).kind, (o as { metadata: { name: string } }).metadata.name]);
      expect(new Map(built.map((o) => [key(o), o]))).toEqual(new Map(objects.map((o) => [key(o), o])));
    },
  );
});

describe('the ConfigMap', () => {
  it('holds a config.conf that loads without a warning', () => {
    const loaded = loadKubeProxyConfiguration(configText, 'config.conf');
    expect(loaded.warnings).toEqual([]);
    expect(loaded.layer).toMatchObject({
      mode: 'iptables',
      clusterCIDRs: ['10.244.0.0/16'],
      healthzBindAddress: '0.0.0.0:10256',
      metricsBindAddress: '127.0.0.1:10249',
      syncPeriodMs: 30_000,
      minSyncPeriodMs: 1_000,
      iptables: { masqueradeBit: 14 },
    });
  });

  it("names kind's pod subnet as clusterCIDR, for a cluster created without kube-proxy", () => {
    const kind = parse(readFileSync(join(DEPLOY, 'kind-cluster.yaml'), 'utf8')) as { networking: { podSubnet: string; kubeProxyMode: string } };
    expect(kind.networking.kubeProxyMode).toBe('none');
    expect(loadKubeProxyConfiguration(configText, 'config.conf').layer.clusterCIDRs).toEqual([kind.networking.podSubnet]);
  });
});

describe('the DaemonSet', () => {
  /** The args as kubelet runs them: $(VAR) from the container's env, here NODE_NAME. */
  function expandedArgs(nodeName: string): string[] {
    const env = new Map((container.env ?? []).map((e) => [e.name, e.value]));
    env.set('NODE_NAME', nodeName);
    return (container.args ?? []).map((a) =>
      a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string) => {
        const v = env.get(name);
        if (v === undefined) throw new Error(`${a}: $(${name}) is not in the container's env`);
        return v;
      }),
    );
  }

  /** The config file's path in the container, served from the ConfigMap written to a temp file. */
  function parseArgs(nodeName: string): Invocation {
    const inPod = (container.args ?? []).find((a) => a.startsWith('--config='))!.slice('--config='.length);
    const onDisk = join(dir, 'config.conf');
    writeFileSync(onDisk, configText);
    return parseInvocation(expandedArgs(nodeName), { readFile: (p) => readFileSync(p === inPod ? onDisk : p, 'utf8') }, 'not-the-node');
  }

  it("has args the agent's own parser accepts, running the agent with the ConfigMap's config and the node's name", () => {
    const inv = parseArgs('kind-worker');
    expect(inv.warnings).toEqual([]);
    expect(inv).toMatchObject({ dryRun: false, cleanup: false, fromFile: null, writeConfig: null });
    const fromFile = loadKubeProxyConfiguration(configText, 'config.conf').layer;
    expect(inv.config).toEqual({ ...DEFAULT_CONFIG, ...fromFile, iptables: { ...DEFAULT_CONFIG.iptables, ...fromFile.iptables }, hostnameOverride: 'kind-worker' });
    expect(parseArgs('kind-control-plane').config.hostnameOverride).toBe('kind-control-plane');
  });

  it('gets NODE_NAME from the pod spec, and the config file from the ConfigMap', () => {
    expect(container.args).toEqual(['--config=/var/lib/kube-proxy/config.conf', '--hostname-override=$(NODE_NAME)']);
    expect(container.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    const mount = container.volumeMounts!.find((m) => m.mountPath === dirname('/var/lib/kube-proxy/config.conf'))!;
    expect(podSpec.volumes!.find((v) => v.name === mount.name)?.configMap?.name).toBe(configMap.metadata!.name);
    expect(Object.keys(configMap.data ?? {})).toContain(basename('/var/lib/kube-proxy/config.conf'));
    expect(configMap.metadata?.namespace).toBe(daemonSet.metadata?.namespace);
  });

  it('reaches the API server at the control plane, not through the kubernetes ClusterIP', () => {
    const env = new Map((container.env ?? []).map((e) => [e.name, e.value]));
    const kind = parse(readFileSync(join(DEPLOY, 'kind-cluster.yaml'), 'utf8')) as { name?: string };
    expect(env.get('KUBERNETES_SERVICE_HOST')).toBe(`${kind.name ?? 'kind'}-control-plane`);
    expect(env.get('KUBERNETES_SERVICE_PORT')).toBe('6443');
    expect(podSpec.dnsPolicy).toBe('Default');
  });

  it('replaces kube-proxy on every node: kube-system, k8s-app: kube-proxy, host network, privileged, critical, tolerating all', () => {
    expect(daemonSet.metadata?.namespace).toBe('kube-system');
    expect(daemonSet.metadata?.labels?.['k8s-app']).toBe('kube-proxy');
    expect(daemonSet.spec?.template.metadata?.labels?.['k8s-app']).toBe('kube-proxy');
    expect(daemonSet.spec?.selector.matchLabels).toEqual({ 'k8s-app': 'kube-proxy' });
    expect(podSpec.hostNetwork).toBe(true);
    expect(container.securityContext?.privileged).toBe(true);
    expect(podSpec.priorityClassName).toBe('system-node-critical');
    expect(podSpec.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(daemonSet.spec?.updateStrategy?.type).toBe('RollingUpdate');
    expect(podSpec.serviceAccountName).toBe(serviceAccount.metadata?.name);
    expect(serviceAccount.metadata?.namespace).toBe('kube-system');
  });

  it('probes /livez and /healthz on the port of healthzBindAddress', () => {
    const port = Number(/:(\d+)$/.exec(parseArgs('kind-worker').config.healthzBindAddress)![1]);
    expect(port).toBe(10256);
    expect(container.livenessProbe?.httpGet).toEqual({ path: '/livez', port });
    expect(container.readinessProbe?.httpGet).toEqual({ path: '/healthz', port });
  });

  it('mounts the host xtables lock (created if missing) and /lib/modules read-only', () => {
    const hostPath = (mountPath: string) => {
      const m = container.volumeMounts!.find((v) => v.mountPath === mountPath);
      return { readOnly: m?.readOnly ?? false, hostPath: podSpec.volumes!.find((v) => v.name === m?.name)?.hostPath };
    };
    expect(hostPath('/run/xtables.lock')).toEqual({ readOnly: false, hostPath: { path: '/run/xtables.lock', type: 'FileOrCreate' } });
    expect(hostPath('/lib/modules')).toMatchObject({ readOnly: true, hostPath: { path: '/lib/modules' } });
  });
});

describe('RBAC', () => {
  it('grants exactly list/watch of services, nodes, endpointslices and servicecidrs, and no get or write', () => {
    const grants = (clusterRole.rules ?? []).flatMap((r) => {
      expect(r.resourceNames ?? []).toEqual([]);
      expect(r.nonResourceURLs ?? []).toEqual([]);
      return (r.apiGroups ?? []).flatMap((g) => (r.resources ?? []).flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}`)));
    });
    const resources = ['/services', '/nodes', 'discovery.k8s.io/endpointslices', 'networking.k8s.io/servicecidrs'];
    expect(grants.sort()).toEqual(['list', 'watch'].flatMap((v) => resources.map((r) => `${r}:${v}`)).sort());
  });

  it("binds that role to the DaemonSet's service account", () => {
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole.metadata?.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: podSpec.serviceAccountName, namespace: daemonSet.metadata?.namespace }]);
  });
});

describe('--write-config-to', () => {
  const io = { readFile: (p: string) => readFileSync(p, 'utf8') };
  let n = 0;

  /** Writes the effective config of `flags`, loads it back alone; returns both configs. */
  function roundTrip(flags: string[]): { written: ProxyConfig; reloaded: ProxyConfig; warnings: string[]; text: string } {
    const first = parseInvocation([...flags, '--write-config-to', '-'], io, 'host-a');
    const text = first.writeConfig!.text;
    const path = join(dir, `written-${n++}.conf`);
    writeFileSync(path, text);
    const second = parseInvocation(['--config', path], io, 'host-a');
    return { written: first.config, reloaded: second.config, warnings: second.warnings, text };
  }

  const EVERY_FIELD = [
    '--proxy-mode', 'ipvs',
    '--hostname-override', 'node-x',
    '--cluster-cidr', '10.0.0.0/8,fd00:10::/48',
    '--masquerade-all',
    '--nodeport-addresses', 'primary,192.168.0.0/16',
    '--iptables-masquerade-bit', '9',
    '--iptables-localhost-nodeports=false',
    '--kubeconfig', '/etc/kubernetes/proxy.conf',
    '--iptables-sync-period', '1m30.5s',
    '--iptables-min-sync-period', '250us',
    '--healthz-bind-address', '127.0.0.1:1234',
    '--metrics-bind-address', '[::1]:9999',
    '-v', '4',
  ];

  it('covers every field: flags that change each one load back to the same config, without warnings', () => {
    const { written, reloaded, warnings } = roundTrip(EVERY_FIELD);
    for (const [k, v] of Object.entries(DEFAULT_CONFIG)) {
      if (k !== 'iptables') expect(written[k as keyof ProxyConfig], `${k} differs from its default`).not.toEqual(v);
    }
    for (const [k, v] of Object.entries(DEFAULT_CONFIG.iptables)) {
      expect(written.iptables[k as keyof ProxyConfig['iptables']], `iptables.${k} differs from its default`).not.toEqual(v);
    }
    expect(warnings).toEqual([]);
    expect(reloaded).toEqual(written);
  });

  it.each([
    ['no flags', []],
    ['the defaults spelt out', ['--iptables-sync-period', '30s', '--iptables-min-sync-period', '0s', '--masquerade-all=false']],
    ['an hour and a fraction of a millisecond', ['--iptables-sync-period', '1h0m0.0005s', '--iptables-min-sync-period', '1.5ms']],
  ])('%s: loads back to the same config', (_what, flags) => {
    const { written, reloaded, warnings } = roundTrip(flags);
    expect(warnings).toEqual([]);
    expect(reloaded).toEqual(written);
  });

  it("keeps the host's name out unless it was given, so one file serves every node", () => {
    expect(roundTrip([]).text).toMatch(/^hostnameOverride: ""$/m);
    expect(roundTrip(['--hostname-override', 'node-x']).text).toMatch(/^hostnameOverride: node-x$/m);
  });

  it("the ConfigMap's config, passed through, is the same configuration", () => {
    const path = join(dir, 'configmap.conf');
    writeFileSync(path, configText);
    const { written, reloaded } = roundTrip(['--config', path]);
    expect(reloaded).toEqual(written);
    expect(written.clusterCIDRs).toEqual(['10.244.0.0/16']);
  });

  it('writes the file and exits 0, also for a mode not implemented yet; "-" is stdout', () => {
    const path = join(dir, 'out.conf');
    const r = cli(['--proxy-mode', 'nftables', '--cluster-cidr', '10.244.0.0/16', '--write-config-to', path]);
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    const text = readFileSync(path, 'utf8');
    expect(text).toMatch(/^kind: KubeProxyConfiguration$/m);
    expect(text).toMatch(/^mode: nftables$/m);
    expect(text).toMatch(/^clusterCIDR: 10\.244\.0\.0\/16$/m);
    const stdout = cli(['--proxy-mode', 'nftables', '--cluster-cidr', '10.244.0.0/16', '--write-config-to', '-']);
    expect(stdout).toEqual({ code: 0, stdout: text, stderr: '' });
  });

  it('an unwritable path: exit 2 with one line naming it', () => {
    const path = join(dir, 'no-such-dir', 'out.conf');
    const r = cli(['--write-config-to', path]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`kube-proxy-ts: --write-config-to ${path}: ENOENT\n`);
  });
});
