/**
 * The modes the netns e2e suites run in, and what differs between them: the tools they
 * need, how someone wrecks their rules, what /debug/rules shows. Every behaviour is
 * asserted the same way for each.
 */
import { expect } from 'vitest';
import type { NodeInfo, TestCluster } from '../support/topology.js';

export interface E2EMode {
  name: string;
  /** The tools the agent and this suite run on a node, besides ip and curl. */
  tools: string[];
  /** Deletes the mode's rules, as an admin or a firewall reload would. */
  wreck(cluster: TestCluster, node: NodeInfo): Promise<void>;
  /** Whether the mode's rules are there. */
  present(cluster: TestCluster, node: NodeInfo): Promise<boolean>;
  /** What /debug/rules shows for the cluster IP 10.96.0.10:80 of e2e/web:http. */
  clusterIPRule: RegExp;
  /** Deletes only what sends pod traffic into the mode's rules (and the canary stays). */
  unhook(cluster: TestCluster, node: NodeInfo): Promise<void>;
  hooked(cluster: TestCluster, node: NodeInfo): Promise<boolean>;
}

const PORTALS = ['PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'];

export const E2E_MODES: E2EMode[] = [
  {
    name: 'iptables',
    tools: ['iptables', 'iptables-restore'],
    async wreck(cluster, node) {
      for (const table of ['nat', 'filter', 'mangle']) {
        expect((await cluster.exec(node, 'iptables', ['-w', '-t', table, '-F'])).status).toBe(0);
        expect((await cluster.exec(node, 'iptables', ['-w', '-t', table, '-X'])).status).toBe(0);
      }
    },
    present: async (cluster, node) => (await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-S', 'KUBE-SERVICES'])).status === 0,
    clusterIPRule: /^-A KUBE-SERVICES -m comment --comment "e2e\/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-/m,
    async unhook(cluster, node) {
      expect((await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-D', ...PORTALS])).status).toBe(0);
    },
    hooked: async (cluster, node) => (await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-C', ...PORTALS])).status === 0,
  },
];

