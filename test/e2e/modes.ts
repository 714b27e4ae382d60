/**
 * The modes the netns e2e suites run in, and what differs between them: the tools they
 * need, how someone wrecks their rules (IPv4 and IPv6), what /debug/rules shows. Every
 * behaviour is asserted the same way for each.
 */
import { expect } from 'vitest';
import { familySections } from '../../src/modes/family-sections.js';
import { FAMILY_BANNER as IPTABLES_BANNER } from '../../src/modes/iptables/dryrun.js';
import { FAMILY_BANNER as NFT_BANNER } from '../../src/modes/nftables/dryrun.js';
import type { NodeInfo, TestCluster } from '../support/topology.js';

export type Family = 'IPv4' | 'IPv6';

export interface E2EMode {
  name: string;
  /** The tools the agent and this suite run on a node, besides ip and curl. */
  tools: string[];
  /** The tools the dual-stack suite needs on top (IPv6 rules). */
  tools6: string[];
  /** Deletes the mode's rules, as an admin or a firewall reload would. */
  wreck(cluster: TestCluster, node: NodeInfo): Promise<void>;
  /** Whether the mode's rules are there. */
  present(cluster: TestCluster, node: NodeInfo): Promise<boolean>;
  /** What /debug/rules shows for the cluster IP 10.96.0.10:80 of e2e/web:http. */
  clusterIPRule: RegExp;
  /** Deletes only what sends pod traffic into the mode's rules (and the canary stays). */
  unhook(cluster: TestCluster, node: NodeInfo): Promise<void>;
  hooked(cluster: TestCluster, node: NodeInfo): Promise<boolean>;
  /** Deletes the mode's IPv6 rules only, as wreck does for IPv4. */
  wreck6(cluster: TestCluster, node: NodeInfo): Promise<void>;
  /** Whether the mode's IPv6 rules are there. */
  present6(cluster: TestCluster, node: NodeInfo): Promise<boolean>;
  /** The part of a /debug/rules answer about one family. */
  familyRules(text: string, family: Family): string;
  /** What /debug/rules shows for the cluster IP of a service port (`ns/name:port`), either family. */
  clusterIPRuleOf(servicePort: string, ip: string, port: number): RegExp;
  /** Why endpoints never see the client's own address in this mode; null when they do. */
  hidesSourceIP: string | null;
  /** What a client sees connecting to a service without endpoints. */
  noEndpoints: 'refused' | 'reset';
  /** Why service traffic stops while no agent runs on the node; null when the rules carry it alone. */
  needsAgent: string | null;
  /** Whether the mode sets route_localnet for node ports on 127.0.0.1. */
  setsRouteLocalnet: boolean;
  /** How a UDP client that keeps its source port reaches a new backend: its stale conntrack entries deleted, or its proxy session ended. */
  udpMovesBy: 'conntrack' | 'sessions';
  /**
   * Whether the node serves node ports on 127.0.0.1 by default: iptables mode does
   * (route_localnet), nftables mode, as upstream's, does not.
   */
  localhostNodePorts: boolean;
  /** How /debug/rules writes an endpoint (the DNAT target) of either family. */
  endpointText(ip: string, port: number): string;
  /** What the agent logs when it finds its IPv6 rules wrecked (wreck6). */
  damage6: RegExp;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Flushes and deletes every chain of nat, filter and mangle with `bin` (iptables or ip6tables). */
async function flushTables(bin: string, cluster: TestCluster, node: NodeInfo): Promise<void> {
  for (const table of ['nat', 'filter', 'mangle']) {
    expect((await cluster.exec(node, bin, ['-w', '-t', table, '-F'])).status).toBe(0);
    expect((await cluster.exec(node, bin, ['-w', '-t', table, '-X'])).status).toBe(0);
  }
}

const iptablesFamilyRules = (text: string, family: Family): string => familySections(text, IPTABLES_BANNER)[family];

const USERSPACE_PORTALS = ['PREROUTING', '-m', 'comment', '--comment', 'handle ClusterIPs; NOTE: this must be before the NodePort rules', '-j', 'KUBE-PORTALS-CONTAINER'];

const NFT_TABLE = 'kube-proxy';
async function deleteTable(family: 'ip' | 'ip6', cluster: TestCluster, node: NodeInfo): Promise<void> {
  expect((await cluster.exec(node, 'nft', ['delete', 'table', family, NFT_TABLE])).status).toBe(0);
}

async function tablePresent(family: 'ip' | 'ip6', cluster: TestCluster, node: NodeInfo): Promise<boolean> {
  return (await cluster.exec(node, 'nft', ['list', 'chain', family, NFT_TABLE, 'nat-prerouting'])).status === 0;
}

/** The service-ips element of a TCP service port's cluster IP, in the nft script /debug/rules shows (an element a line). */
function nftClusterIPRule(servicePort: string, ip: string, port: number): RegExp {
  return new RegExp(`^\\t${escape(ip)} \\. tcp \\. ${port} comment "${escape(servicePort)}" : goto `, 'm');
}

const PORTALS = ['PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'];

export const E2E_MODES: E2EMode[] = [
  {
    name: 'iptables',
    tools: ['iptables', 'iptables-restore'],
    tools6: ['ip6tables', 'ip6tables-restore', 'ip6tables-save'],
    wreck: (cluster, node) => flushTables('iptables', cluster, node),
    present: async (cluster, node) => (await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-S', 'KUBE-SERVICES'])).status === 0,
    clusterIPRule: /^-A KUBE-SERVICES -m comment --comment "e2e\/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-/m,
    async unhook(cluster, node) {
      expect((await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-D', ...PORTALS])).status).toBe(0);
    },
    hooked: async (cluster, node) => (await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-C', ...PORTALS])).status === 0,
    wreck6: (cluster, node) => flushTables('ip6tables', cluster, node),
    present6: async (cluster, node) => (await cluster.exec(node, 'ip6tables', ['-w', '-t', 'nat', '-S', 'KUBE-SERVICES'])).status === 0,
    familyRules: iptablesFamilyRules,
    clusterIPRuleOf: (servicePort, ip, port) =>
      new RegExp(
        `^-A KUBE-SERVICES -m comment --comment "${escape(servicePort)} cluster IP" -m tcp -p tcp -d ${escape(ip)} --dport ${port} -j KUBE-SVC-`,
        'm',
      ),
    hidesSourceIP: null,
    noEndpoints: 'refused',
    needsAgent: null,
    setsRouteLocalnet: true,
    udpMovesBy: 'conntrack',
    localhostNodePorts: true,
    endpointText: (ip, port) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`),
    damage6: /IPv6 canary chain is gone/,
  },
  {
    name: 'userspace',
    tools: ['iptables', 'iptables-restore'],
    tools6: ['ip6tables', 'ip6tables-restore', 'ip6tables-save'],
    wreck: (cluster, node) => flushTables('iptables', cluster, node),
    present: async (cluster, node) => (await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-S', 'KUBE-PORTALS-CONTAINER'])).status === 0,
    clusterIPRule: /^-A KUBE-PORTALS-CONTAINER -m comment --comment "e2e\/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j REDIRECT --to-ports \d+$/m,
    async unhook(cluster, node) {
      expect((await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-D', ...USERSPACE_PORTALS])).status).toBe(0);
    },
    hooked: async (cluster, node) => (await cluster.exec(node, 'iptables', ['-w', '-t', 'nat', '-C', ...USERSPACE_PORTALS])).status === 0,
    wreck6: (cluster, node) => flushTables('ip6tables', cluster, node),
    present6: async (cluster, node) => (await cluster.exec(node, 'ip6tables', ['-w', '-t', 'nat', '-S', 'KUBE-PORTALS-CONTAINER'])).status === 0,
    familyRules: iptablesFamilyRules,
    clusterIPRuleOf: (servicePort, ip, port) =>
      new RegExp(`^-A KUBE-PORTALS-CONTAINER -m comment --comment "${escape(servicePort)} cluster IP" -m tcp -p tcp -d ${escape(ip)} --dport ${port} -j REDIRECT --to-ports \\d+$`, 'm'),
    hidesSourceIP: 'userspace mode proxies through the agent: endpoints see the node\'s address, never the client\'s',
    noEndpoints: 'reset',
    needsAgent: 'userspace mode proxies through the agent: with no agent running, nothing listens behind the capture rules',
    setsRouteLocalnet: false,
    udpMovesBy: 'sessions',
    localhostNodePorts: true,
    endpointText: (ip, port) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`),
    damage6: /IPv6 canary chain is gone/,
  },
  {
    name: 'nftables',
    tools: ['nft'],
    tools6: ['nft'],
    wreck: (cluster, node) => deleteTable('ip', cluster, node),
    present: (cluster, node) => tablePresent('ip', cluster, node),
    clusterIPRule: nftClusterIPRule('e2e/web:http', '10.96.0.10', 80),
    // What sends pod traffic in: the jump from the nat prerouting base chain; the table stays.
    async unhook(cluster, node) {
      expect((await cluster.exec(node, 'nft', ['flush', 'chain', 'ip', NFT_TABLE, 'nat-prerouting'])).status).toBe(0);
    },
    hooked: async (cluster, node) => /\bjump services\b/.test((await cluster.exec(node, 'nft', ['list', 'chain', 'ip', NFT_TABLE, 'nat-prerouting'])).stdout),
    wreck6: (cluster, node) => deleteTable('ip6', cluster, node),
    present6: (cluster, node) => tablePresent('ip6', cluster, node),
    familyRules: (text, family) => familySections(text, NFT_BANNER)[family],
    clusterIPRuleOf: nftClusterIPRule,
    localhostNodePorts: false,
    endpointText: (ip, port) => `${ip} . ${port}`,
    damage6: /IPv6 table ip6 kube-proxy or its base chain \S+ is gone/,
    hidesSourceIP: null,
    noEndpoints: 'refused',
    needsAgent: null,
    setsRouteLocalnet: false,
    udpMovesBy: 'conntrack',
  },
];


/** Asserts what only modes that keep the client's address can; says why it is skipped otherwise. */
export function sourceIP(mode: E2EMode, what: string, check: () => void): void {
  if (mode.hidesSourceIP === null) check();
  else console.log(`${mode.name}: skipped "${what}": ${mode.hidesSourceIP}`);
}
