/**
 * One kube-proxy-ts agent in a node namespace, started as the DaemonSet starts it: the
 * ConfigMap's config file from deploy/, the mode under test, the test API server's
 * kubeconfig; `flags` say only what a suite must differ in (sync periods, cluster CIDRs).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { NsProcess, TestCluster } from '../support/topology.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'src', 'main.js');

export interface AgentStart {
  cluster: TestCluster;
  node: string;
  mode: string;
  kubeconfig: string;
  /** Where the config file is written. */
  dir: string;
  flags: string[];
}

export async function startDaemonSetAgent(s: AgentStart): Promise<NsProcess> {
  const configMap = parse(readFileSync(join(ROOT, 'deploy', 'configmap.yaml'), 'utf8')) as { data: Record<string, string> };
  const config = join(s.dir, 'config.conf');
  writeFileSync(config, configMap.data['config.conf']!);
  const args = [MAIN, '--proxy-mode', s.mode, '--config', config, '--kubeconfig', s.kubeconfig, '--hostname-override', s.node, ...s.flags];
  return s.cluster.spawnIn(s.cluster.node(s.node), process.execPath, args, { ready: /synced proxy rules/, readyTimeoutMs: 20_000 });
}
