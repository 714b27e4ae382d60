/**
 * Packets traced through every feature of the golden cases: each verdict is worked out
 * from the case's description and checked against the rules as the golden file holds them.
 */
import { describe, expect, it } from 'vitest';
import type { Destination, TraceResult } from '../src/trace/types.js';
import { goldenCaseNames } from './support/golden.js';
import { distribution, goldenTracer, TRACE_MODES, type PacketSpec, type TraceMode } from './support/trace-golden.js';

const OUTSIDE = '100.64.0.9';

interface Expect {
  /** DNAT address (or verdict) -> probability. */
  dist: Record<string, number>;
  /** Masquerade for every destination, or per DNAT address. */
  masq?: boolean | Record<string, boolean>;
  /** The rule that decided a DROP, REJECT or ACCEPT: chain and comment. */
  by?: { chain: string; comment?: string | null };
  service?: string | null;
  sticky?: boolean;
  why?: RegExp[];
}

interface Case {
  golden: string;
  what: string;
  packet: PacketSpec;
  want: Expect;
  /** nftables mode, where it differs by design (upstream's nftables mode does) or names the deciding rule. */
  nftables?: Partial<Expect>;
}

const third = 1 / 3;

const cases: Case[] = [
  {
    golden: 'clusterip-basic',
    what: 'pod -> cluster IP: 1/2 to each endpoint, pod source kept',
    packet: { src: '10.1.2.3', dst: '172.30.0.41', dstPort: 80 },
    want: { dist: { '10.180.0.1:80': 0.5, '10.180.0.2:80': 0.5 }, masq: false, service: 'ns1/svc1:p80', why: [/cluster IP of service port ns1\/svc1:p80/, /inside the cluster CIDR 10\.0\.0\.0\/8/] },
  },
  {
    golden: 'clusterip-basic',
    what: 'outside the cluster CIDR -> cluster IP: masqueraded',
    packet: { src: OUTSIDE, dst: '172.30.0.41', dstPort: 80, from: 'external' },
    want: { dist: { '10.180.0.1:80': 0.5, '10.180.0.2:80': 0.5 }, masq: true, why: [/100\.64\.0\.9 is outside the cluster CIDR 10\.0\.0\.0\/8/] },
  },
  {
    golden: 'clusterip-basic',
    what: 'hairpin: an endpoint reaching its own service is masqueraded only when it lands on itself',
    packet: { src: '10.180.0.1', dst: '172.30.0.41', dstPort: 80 },
    want: { dist: { '10.180.0.1:80': 0.5, '10.180.0.2:80': 0.5 }, masq: { '10.180.0.1:80': true, '10.180.0.2:80': false }, why: [/Hairpin: to 10\.180\.0\.1:80/] },
  },
  {
    golden: 'clusterip-basic',
    what: 'UDP to a TCP-only service port: no proxy rule applies',
    packet: { src: '10.1.2.3', dst: '172.30.0.41', dstPort: 80, protocol: 'udp' },
    want: { dist: { 'no-match': 1 }, service: null, why: [/not an address of any service port/] },
    nftables: { dist: { reject: 1 }, by: { chain: 'cluster-ips-check', comment: 'Reject traffic to invalid ports of ClusterIPs' } },
  },
  {
    golden: 'clusterip-three-endpoints',
    what: 'three endpoints: 1/3 each, in IP:PORT string order',
    packet: { src: '10.244.1.5', dst: '10.96.10.10', dstPort: 80 },
    want: { dist: { '10.180.0.10:8080': third, '10.180.0.2:8080': third, '10.180.0.3:8080': third }, masq: false },
  },
  {
    golden: 'example-cluster',
    what: "hairpin from an endpoint on another node: iptables checks every endpoint, nftables only this node's (that packet meets its own node's rules)",
    packet: { src: '10.244.2.90', dst: '10.96.50.9', dstPort: 9090 },
    want: { dist: { '10.244.2.90:9090': 1 }, masq: true },
    nftables: { masq: false },
  },
  {
    golden: 'dual-stack',
    what: 'IPv4 half of a dual-stack service',
    packet: { src: '10.244.1.5', dst: '10.96.170.170', dstPort: 80 },
    want: { dist: { '10.244.1.170:8080': 0.5, '10.244.2.170:8080': 0.5 }, masq: false },
  },
  {
    golden: 'dual-stack',
    what: 'IPv6 half, from a pod: its own cluster CIDR keeps it unmasqueraded',
    packet: { src: 'fd00:10:244:1::5', dst: 'fd00:10:96::aa', dstPort: 80 },
    want: { dist: { '[fd00:10:244:1::aa]:8080': 0.5, '[fd00:10:244:2::aa]:8080': 0.5 }, masq: false, why: [/\[fd00:10:96::aa\]:80\/TCP is the cluster IP/] },
  },
  {
    golden: 'dual-stack',
    what: 'IPv6 from outside fd00:10:244::/56: masqueraded',
    packet: { src: '2001:db8::1', dst: 'fd00:10:96::aa', dstPort: 80, from: 'external' },
    want: { dist: { '[fd00:10:244:1::aa]:8080': 0.5, '[fd00:10:244:2::aa]:8080': 0.5 }, masq: true },
  },
  {
    golden: 'etp-local-no-local-endpoint',
    what: 'external -> LB IP, ETP Local, no endpoint here: DROP',
    packet: { src: OUTSIDE, dst: '192.0.2.71', dstPort: 80, from: 'external' },
    want: {
      dist: { drop: 1 },
      by: { chain: 'KUBE-EXTERNAL-SERVICES', comment: 'shop/ingress:http has no local endpoints' },
      why: [/externalTrafficPolicy Local, and no endpoint of shop\/ingress:http runs on node-a/, /health check node port 32001 answers 503/],
    },
  },
  {
    golden: 'etp-local-no-local-endpoint',
    what: 'external -> external IP, same policy: DROP',
    packet: { src: OUTSIDE, dst: '203.0.113.71', dstPort: 80, from: 'external' },
    want: { dist: { drop: 1 }, by: { chain: 'KUBE-EXTERNAL-SERVICES', comment: 'shop/ingress:http has no local endpoints' } },
  },
  {
    golden: 'etp-local-no-local-endpoint',
    what: 'pod -> LB IP: pods are short-circuited to the cluster set, unmasqueraded',
    packet: { src: '10.244.1.5', dst: '192.0.2.71', dstPort: 80 },
    want: { dist: { '10.244.2.71:8080': 0.5, '10.244.3.71:8080': 0.5 }, masq: false, why: [/applies to outside clients only: a pod/] },
  },
  {
    golden: 'etp-local-no-local-endpoint',
    what: 'pod -> cluster IP still works (internal policy Cluster)',
    packet: { src: '10.244.1.5', dst: '10.96.70.71', dstPort: 80 },
    want: { dist: { '10.244.2.71:8080': 0.5, '10.244.3.71:8080': 0.5 }, masq: false },
  },
  {
    golden: 'etp-local-with-local-endpoint',
    what: 'external -> LB IP, ETP Local with a local endpoint: only it, client IP kept',
    packet: { src: OUTSIDE, dst: '192.0.2.70', dstPort: 80, from: 'external' },
    want: { dist: { '10.244.1.70:8080': 1 }, masq: false, why: [/externalTrafficPolicy Local: an outside client is served by endpoints on node-a/, /source IP is kept/] },
  },
  {
    golden: 'externalips',
    what: 'external -> external IP: ETP Cluster masquerades',
    packet: { src: OUTSIDE, dst: '203.0.113.10', dstPort: 80, from: 'external' },
    want: { dist: { '10.244.2.9:8080': 1 }, masq: true, why: [/external IP of service port shop\/legacy:http/, /externalTrafficPolicy Cluster SNATs/] },
  },
  {
    golden: 'externalips',
    what: 'pod -> external IP: ETP Cluster masquerades pods too',
    packet: { src: '10.244.1.5', dst: '203.0.113.11', dstPort: 80 },
    want: { dist: { '10.244.2.9:8080': 1 }, masq: true },
  },
  {
    golden: 'ipv6-only',
    what: 'IPv6 cluster IP from a pod',
    packet: { src: 'fd00:10:244:1::9', dst: 'fd00:10:96::a0', dstPort: 80 },
    want: { dist: { '[fd00:10:244:1::a0]:8080': 0.5, '[fd00:10:244:2::a0]:8080': 0.5 }, masq: false },
  },
  {
    golden: 'ipv6-only',
    what: 'node port on ::1: never accepted for IPv6',
    packet: { src: '::1', dst: '::1', dstPort: 30160, from: 'node' },
    want: { dist: { 'no-match': 1 }, why: [/node port of service port shop\/web6:http/, /take no node ports on ::1/] },
  },
  {
    golden: 'itp-local-no-local-endpoint',
    what: 'ITP Local, no endpoint here: DROP, not REJECT',
    packet: { src: '10.244.1.5', dst: '10.96.80.81', dstPort: 4317 },
    want: { dist: { drop: 1 }, by: { chain: 'KUBE-SERVICES', comment: 'monitoring/agent:otlp has no local endpoints' }, why: [/internalTrafficPolicy Local, and no endpoint of monitoring\/agent:otlp runs on node-a \(1 endpoint elsewhere\)/] },
  },
  {
    golden: 'itp-local-with-local-endpoint',
    what: 'ITP Local: only the local endpoint',
    packet: { src: '10.244.1.5', dst: '10.96.80.80', dstPort: 4317 },
    want: { dist: { '10.244.1.80:4317': 1 }, masq: false, why: [/internalTrafficPolicy Local: only endpoints on node-a \(KUBE-SVL-/] },
  },
  {
    golden: 'leading-zero-ips',
    what: 'external IP written 203.000.113.010 is 203.0.113.10',
    packet: { src: OUTSIDE, dst: '203.0.113.10', dstPort: 443, from: 'external' },
    want: { dist: { '10.244.1.9:6443': 1 }, masq: true },
  },
  {
    golden: 'loadbalancer-ingress',
    what: 'external -> second LB ingress IP',
    packet: { src: OUTSIDE, dst: '198.51.100.21', dstPort: 443, from: 'external' },
    want: { dist: { '10.244.1.20:8443': 0.5, '10.244.2.20:8443': 0.5 }, masq: true, why: [/load balancer IP of service port shop\/front:https/] },
  },
  {
    golden: 'loadbalancer-ipmode-proxy',
    what: 'LB IP with ipMode Proxy gets no rule',
    packet: { src: OUTSIDE, dst: '192.0.2.140', dstPort: 80, from: 'external' },
    want: { dist: { 'no-match': 1 }, service: null },
  },
  {
    golden: 'loadbalancer-ipmode-proxy',
    what: 'the VIP-mode IP of the same service does',
    packet: { src: OUTSIDE, dst: '192.0.2.141', dstPort: 80, from: 'external' },
    want: { dist: { '10.244.2.140:8080': 1 }, masq: true },
  },
  {
    golden: 'loadbalancer-source-ranges',
    what: 'source in 203.0.113.0/25: let in',
    packet: { src: '203.0.113.5', dst: '192.0.2.60', dstPort: 443, from: 'external' },
    want: { dist: { '10.244.2.60:8443': 1 }, masq: true, why: [/203\.0\.113\.5 is in 203\.0\.113\.0\/25, so KUBE-FW-/] },
  },
  {
    golden: 'loadbalancer-source-ranges',
    what: 'source 198.51.100.7/32: let in',
    packet: { src: '198.51.100.7', dst: '192.0.2.60', dstPort: 443, from: 'external' },
    want: { dist: { '10.244.2.60:8443': 1 }, masq: true },
  },
  {
    golden: 'loadbalancer-source-ranges',
    what: 'source outside the ranges: DROP by KUBE-PROXY-FIREWALL',
    packet: { src: '203.0.113.200', dst: '192.0.2.60', dstPort: 443, from: 'external' },
    want: { dist: { drop: 1 }, by: { chain: 'KUBE-PROXY-FIREWALL' }, why: [/do not include 203\.0\.113\.200/] },
  },
  {
    golden: 'loadbalancer-source-ranges',
    what: 'the same source on the node port: not filtered',
    packet: { src: '203.0.113.200', dst: '192.168.1.10', dstPort: 32443, from: 'external' },
    want: { dist: { '10.244.2.60:8443': 1 }, masq: true, why: [/guard the load balancer IPs only, not node ports/] },
  },
  {
    golden: 'loadbalancer-source-ranges-allow-node',
    what: 'the node itself, inside the ranges, reaches the LB IP',
    packet: { src: '192.168.1.10', dst: '192.0.2.61', dstPort: 443, from: 'node' },
    want: { dist: { '10.244.2.61:8443': 1 }, masq: true },
  },
  {
    golden: 'localhost-nodeports-false',
    what: 'node port on 127.0.0.1 is refused with --iptables-localhost-nodeports=false',
    packet: { src: '127.0.0.1', dst: '127.0.0.1', dstPort: 30210, from: 'node' },
    want: { dist: { 'no-match': 1 } },
  },
  {
    golden: 'masquerade-bit-12',
    what: 'localhost node port (allowed by default), masqueraded with mark bit 12',
    packet: { src: '127.0.0.1', dst: '127.0.0.1', dstPort: 30210, from: 'node' },
    want: { dist: { '10.244.2.210:8080': 1 }, masq: true },
    nftables: { dist: { 'no-match': 1 }, masq: undefined, why: [/node port of service port/, /loopback address \(never in nftables mode/] },
  },
  {
    golden: 'masquerade-all',
    what: '--masquerade-all: even pod traffic is masqueraded',
    packet: { src: '10.244.1.5', dst: '10.96.190.190', dstPort: 80 },
    want: { dist: { '10.244.1.190:8080': 0.5, '10.244.2.190:8080': 0.5 }, masq: true, why: [/--masquerade-all SNATs all traffic/] },
  },
  {
    golden: 'multiport-named-targetport',
    what: 'named targetPort: each endpoint DNATs to its own slice\'s number',
    packet: { src: '10.244.1.9', dst: '10.96.20.20', dstPort: 80 },
    want: { dist: { '10.244.1.5:8080': 0.5, '10.244.2.7:8081': 0.5 }, service: 'shop/api:http' },
  },
  {
    golden: 'multiport-named-targetport',
    what: 'the other port of the same service',
    packet: { src: '10.244.1.9', dst: '10.96.20.20', dstPort: 9100 },
    want: { dist: { '10.244.1.5:9100': 0.5, '10.244.2.7:9100': 0.5 }, service: 'shop/api:metrics' },
  },
  {
    golden: 'no-cluster-cidr',
    what: 'without --cluster-cidr, outside traffic to a cluster IP is not masqueraded',
    packet: { src: OUTSIDE, dst: '10.96.200.200', dstPort: 80, from: 'external' },
    want: { dist: { '10.244.1.200:8080': 0.5, '10.244.2.200:8080': 0.5 }, masq: false, why: [/without --cluster-cidr/] },
  },
  {
    golden: 'no-endpoints',
    what: 'service without any endpoint: REJECT at once',
    packet: { src: '10.244.1.5', dst: '10.96.100.100', dstPort: 80 },
    want: { dist: { reject: 1 }, by: { chain: 'KUBE-SERVICES', comment: 'shop/empty:http has no endpoints' }, why: [/No endpoint can serve shop\/empty:http \(no endpoints\)/] },
  },
  {
    golden: 'no-endpoints',
    what: 'external IP of a service whose only endpoint is not ready: REJECT',
    packet: { src: OUTSIDE, dst: '203.0.113.101', dstPort: 80, from: 'external' },
    want: { dist: { reject: 1 }, by: { chain: 'KUBE-EXTERNAL-SERVICES', comment: 'shop/down:http has no endpoints' }, why: [/none of its 1 endpoint is ready or serving/] },
  },
  {
    golden: 'no-endpoints',
    what: 'LB IP of the same: REJECT',
    packet: { src: OUTSIDE, dst: '192.0.2.101', dstPort: 80, from: 'external' },
    want: { dist: { reject: 1 }, by: { chain: 'KUBE-EXTERNAL-SERVICES' } },
  },
  {
    golden: 'nodeport-addresses-cidr',
    what: 'node port on the address inside --nodeport-addresses',
    packet: { src: OUTSIDE, dst: '192.168.1.10', dstPort: 30210, from: 'external' },
    want: { dist: { '10.244.2.210:8080': 1 }, masq: true },
  },
  {
    golden: 'nodeport-addresses-cidr',
    what: 'node port on the address outside it: left alone',
    packet: { src: OUTSIDE, dst: '10.0.5.10', dstPort: 30210, from: 'external' },
    want: { dist: { 'no-match': 1 }, why: [/--nodeport-addresses leaves it out/] },
  },
  {
    golden: 'nodeport-addresses-cidr',
    what: 'node port on 127.0.0.1: outside --nodeport-addresses, so localhost node ports are off',
    packet: { src: '127.0.0.1', dst: '127.0.0.1', dstPort: 30210, from: 'node' },
    want: { dist: { 'no-match': 1 } },
  },
  {
    golden: 'nodeport-addresses-localhost',
    what: 'node port on 127.0.0.1, which --nodeport-addresses includes: served, masqueraded',
    packet: { src: '127.0.0.1', dst: '127.0.0.1', dstPort: 30210, from: 'node' },
    want: { dist: { '10.244.2.210:8080': 1 }, masq: true },
    nftables: { dist: { 'no-match': 1 }, masq: undefined, why: [/take no node ports on 127\.0\.0\.1/] },
  },
  {
    golden: 'nodeport-addresses-localhost',
    what: 'node port on a node address outside --nodeport-addresses: left alone',
    packet: { src: OUTSIDE, dst: '10.0.5.10', dstPort: 30210, from: 'external' },
    want: { dist: { 'no-match': 1 }, why: [/--nodeport-addresses leaves it out/] },
  },
  {
    golden: 'nodeport-addresses-primary',
    what: 'primary: the ExternalIP listed first is not the primary address',
    packet: { src: OUTSIDE, dst: '203.0.113.50', dstPort: 30210, from: 'external' },
    want: { dist: { 'no-match': 1 } },
  },
  {
    golden: 'nodeport-addresses-zero-cidr',
    what: '0.0.0.0/0 takes node ports on every address',
    packet: { src: OUTSIDE, dst: '10.0.5.10', dstPort: 30210, from: 'external' },
    want: { dist: { '10.244.2.210:8080': 1 }, masq: true },
  },
  {
    golden: 'nodeport-cluster-policy',
    what: 'external -> node port, ETP Cluster: masqueraded, every endpoint',
    packet: { src: OUTSIDE, dst: '192.168.1.10', dstPort: 30080, from: 'external' },
    want: { dist: { '10.244.1.5:8080': 0.5, '10.244.2.5:8080': 0.5 }, masq: true, why: [/TCP port 30080 on node-a is the node port/] },
  },
  {
    golden: 'session-affinity-custom-timeout',
    what: 'ClientIP affinity: first connection balanced 1/3 each, sticky for 600 s after',
    packet: { src: '10.244.1.5', dst: '10.96.90.91', dstPort: 80 },
    want: { dist: { '10.244.1.91:8080': third, '10.244.2.91:8080': third, '10.244.3.91:8080': third }, sticky: true, why: [/sessionAffinity ClientIP.*within 600 s/] },
  },
  {
    golden: 'session-affinity-default-timeout',
    what: 'affinity with the default timeout',
    packet: { src: '10.244.1.5', dst: '10.96.90.90', dstPort: 80 },
    want: { dist: { '10.244.1.90:8080': 0.5, '10.244.2.90:8080': 0.5 }, sticky: true, why: [/within 10800 s/] },
  },
  {
    golden: 'affinity-local-policy',
    what: 'pod -> cluster IP of the sticky service: 1/2 each, sticky',
    packet: { src: '10.244.0.5', dst: '10.96.0.30', dstPort: 443 },
    want: { dist: { '10.244.0.30:8443': 0.5, '10.244.1.30:8443': 0.5 }, sticky: true, masq: false },
  },
  {
    golden: 'duplicate-service-addresses',
    what: 'external IP two Services claim: the first one serves it',
    packet: { src: OUTSIDE, dst: '192.0.2.40', dstPort: 80, from: 'external' },
    want: { dist: { '10.244.0.40:8080': 1 }, masq: true, service: 'app/first:http' },
  },
  {
    golden: 'slice-merge-dedup',
    what: 'deduplicated endpoints: 3, not 5',
    packet: { src: '10.244.1.5', dst: '10.96.130.130', dstPort: 80 },
    want: { dist: { '10.244.1.130:8080': third, '10.244.1.131:8080': third, '10.244.2.130:8080': third } },
  },
  {
    golden: 'slice-merge-dedup',
    what: 'node itself -> its node port, ETP Local: masqueraded to the cluster set',
    packet: { src: '127.0.0.1', dst: '127.0.0.1', dstPort: 30130, from: 'node' },
    want: { dist: { '10.244.1.130:8080': third, '10.244.1.131:8080': third, '10.244.2.130:8080': third }, masq: true, why: [/traffic from node-a itself to an external address/] },
    nftables: { dist: { 'no-match': 1 }, masq: undefined, why: [/take no node ports on 127\.0\.0\.1/] },
  },
  {
    golden: 'terminating-fallback',
    what: 'no endpoint ready: the serving-terminating ones, never the non-serving',
    packet: { src: '10.244.1.5', dst: '10.96.110.110', dstPort: 80 },
    want: { dist: { '10.244.1.110:8080': 0.5, '10.244.2.110:8080': 0.5 }, why: [/no endpoint is ready, so the 2 endpoints still serving while terminating \(fallback\)/] },
  },
  {
    golden: 'terminating-fallback',
    what: 'a ready endpoint exists: the terminating one is not used',
    packet: { src: '10.244.1.5', dst: '10.96.110.111', dstPort: 80 },
    want: { dist: { '10.244.2.111:8080': 1 }, why: [/the 1 ready endpoint \(1 more not ready\)/] },
  },
  {
    golden: 'terminating-serving-unset',
    what: 'serving unset counts as serving',
    packet: { src: '10.244.1.5', dst: '10.96.110.112', dstPort: 80 },
    want: { dist: { '10.244.1.112:8080': 1 } },
  },
  {
    golden: 'topology-node-hints',
    what: 'node hints win: only the endpoint hinted for node-a',
    packet: { src: '10.244.1.5', dst: '10.96.120.122', dstPort: 6379 },
    want: { dist: { '10.244.1.122:6379': 1 }, why: [/hinted for node node-a \(of 3 ready\)/] },
  },
  {
    golden: 'topology-zone-hints',
    what: 'zone hints: the two endpoints hinted for zone-a',
    packet: { src: '10.244.1.5', dst: '10.96.120.120', dstPort: 80 },
    want: { dist: { '10.244.1.120:8080': 0.5, '10.244.4.120:8080': 0.5 }, why: [/hinted for zone zone-a \(of 3 ready\)/] },
  },
  {
    golden: 'topology-zone-hints-incomplete',
    what: 'incomplete hints are ignored: all three',
    packet: { src: '10.244.1.5', dst: '10.96.120.121', dstPort: 80 },
    want: { dist: { '10.244.1.121:8080': third, '10.244.2.121:8080': third, '10.244.4.121:8080': third }, why: [/all 3 endpoints, ready/] },
  },
  {
    golden: 'udp-sctp-protocols',
    what: 'UDP to the DNS port',
    packet: { src: '10.244.1.5', dst: '10.96.0.10', dstPort: 53, protocol: 'udp' },
    want: { dist: { '10.244.1.53:53': 1 }, service: 'kube-system/dns:dns' },
  },
  {
    golden: 'udp-sctp-protocols',
    what: 'TCP to the same IP and port is the other service port',
    packet: { src: '10.244.1.5', dst: '10.96.0.10', dstPort: 53 },
    want: { dist: { '10.244.1.53:53': 1 }, service: 'kube-system/dns:dns-tcp' },
  },
  {
    golden: 'udp-sctp-protocols',
    what: 'SCTP',
    packet: { src: '10.244.1.5', dst: '10.96.220.220', dstPort: 36412, protocol: 'sctp' },
    want: { dist: { '10.244.2.220:36412': 1 }, service: 'telco/signal:s1ap' },
  },
  {
    golden: 'skipped-services',
    what: 'a Service handed to another proxy gets no rule',
    packet: { src: '10.244.1.5', dst: '10.96.180.181', dstPort: 80 },
    want: { dist: { 'no-match': 1 }, service: null },
  },
  {
    golden: 'invalid-objects',
    what: 'the valid service renders from its valid slice; the invalid ones get no rule',
    packet: { src: '10.244.1.5', dst: '10.96.150.150', dstPort: 80 },
    want: { dist: { '10.244.1.150:8080': 1 }, service: 'shop/good:http' },
  },
  {
    golden: 'affinity-local-policy',
    what: 'affinity, ETP Local, source ranges: an allowed client gets the local endpoint, sticky, its address kept',
    packet: { src: '203.0.113.9', dst: '198.51.100.30', dstPort: 443, from: 'external' },
    want: { dist: { '10.244.0.30:8443': 1 }, masq: false, sticky: true, why: [/sessionAffinity ClientIP.*within 900 s/, /source IP is kept/] },
  },
  {
    golden: 'affinity-local-policy',
    what: 'affinity, source ranges: a client outside them is dropped before any balancing',
    packet: { src: '100.64.0.9', dst: '198.51.100.30', dstPort: 443, from: 'external' },
    want: { dist: { drop: 1 }, why: [/do not include 100\.64\.0\.9/] },
    nftables: { by: { chain: 'firewall-check', comment: 'loadBalancerSourceRanges' } },
  },
  {
    golden: 'affinity-local-policy',
    what: 'affinity, hairpin: the endpoint reaching its own cluster IP is masqueraded only when it lands on itself',
    packet: { src: '10.244.0.30', dst: '10.96.0.30', dstPort: 443 },
    want: { dist: { '10.244.0.30:8443': 0.5, '10.244.1.30:8443': 0.5 }, masq: { '10.244.0.30:8443': true, '10.244.1.30:8443': false }, sticky: true, why: [/Hairpin: to 10\.244\.0\.30:8443/] },
  },
  {
    golden: 'affinity-local-policy',
    what: 'affinity, node port from outside: not subject to source ranges, local endpoint only',
    packet: { src: '100.64.0.9', dst: '192.168.1.10', dstPort: 30443, from: 'external' },
    want: { dist: { '10.244.0.30:8443': 1 }, masq: false, sticky: true, why: [/guard the load balancer IPs only, not node ports/] },
  },
  {
    golden: 'affinity-local-policy',
    what: 'no affinity beside it, UDP, ETP Local: an outside client gets the local endpoint',
    packet: { src: '100.64.0.9', dst: '198.51.100.31', dstPort: 80, from: 'external', protocol: 'udp' },
    want: { dist: { '10.244.0.31:8080': 1 }, masq: false, sticky: false, service: 'app/plain:http' },
  },
  {
    golden: 'affinity-local-policy',
    what: 'no affinity, a pod to the LB IP: the cluster set, 1/3 each',
    packet: { src: '10.244.3.5', dst: '198.51.100.31', dstPort: 80, protocol: 'udp' },
    want: { dist: { '10.244.0.31:8080': third, '10.244.1.31:8080': third, '10.244.2.31:8080': third }, masq: false },
  },
  {
    golden: 'duplicate-service-addresses',
    what: 'an external IP two Services claim: the first by name serves it',
    packet: { src: '10.244.3.5', dst: '192.0.2.40', dstPort: 80 },
    want: { dist: { '10.244.0.40:8080': 1 }, service: 'app/first:http' },
  },
  {
    golden: 'duplicate-service-addresses',
    what: 'a node port two Services claim: the first by name serves it',
    packet: { src: '100.64.0.9', dst: '192.168.1.10', dstPort: 30040, from: 'external' },
    want: { dist: { '10.244.0.40:8080': 1 }, masq: true, service: 'app/first:http' },
  },
  {
    golden: 'duplicate-service-addresses',
    what: 'the other Service keeps its cluster IP',
    packet: { src: '10.244.3.5', dst: '10.96.0.41', dstPort: 80 },
    want: { dist: { '10.244.0.41:8080': 0.5, '10.244.1.41:8080': 0.5 }, service: 'app/second:http' },
  },
  {
    golden: 'service-cidrs-unserved-ports',
    what: 'a served cluster-IP port inside the service CIDRs',
    packet: { src: '10.244.3.5', dst: '10.96.0.20', dstPort: 80 },
    want: { dist: { '10.244.0.10:8080': 0.5, '10.244.1.10:8080': 0.5 }, service: 'app/web:http' },
  },
  {
    golden: 'service-cidrs-unserved-ports',
    what: 'a cluster IP on a port its Service does not serve: iptables leaves it alone, nftables rejects it',
    packet: { src: '10.244.3.5', dst: '10.96.0.20', dstPort: 443 },
    want: { dist: { 'no-match': 1 }, service: null },
    nftables: { dist: { reject: 1 }, by: { chain: 'cluster-ips-check', comment: 'Reject traffic to invalid ports of ClusterIPs' } },
  },
  {
    golden: 'service-cidrs-unserved-ports',
    what: 'an address of the service CIDRs no Service holds: iptables leaves it alone, nftables drops it',
    packet: { src: '10.244.3.5', dst: '10.97.0.99', dstPort: 80 },
    want: { dist: { 'no-match': 1 }, service: null },
    nftables: { dist: { drop: 1 }, by: { chain: 'cluster-ips-check', comment: 'Drop traffic to unallocated ClusterIPs' } },
  },
  {
    golden: 'service-cidrs-unserved-ports',
    what: 'the same in IPv6',
    packet: { src: 'fd00:10:244:1::5', dst: 'fd00:10:96::99', dstPort: 80 },
    want: { dist: { 'no-match': 1 }, service: null },
    nftables: { dist: { drop: 1 }, by: { chain: 'cluster-ips-check', comment: 'Drop traffic to unallocated ClusterIPs' } },
  },
  {
    golden: 'service-cidrs-unserved-ports',
    what: 'an address outside every service CIDR: left alone in both modes',
    packet: { src: '10.244.3.5', dst: '10.98.0.1', dstPort: 80 },
    want: { dist: { 'no-match': 1 }, service: null },
  },
  {
    golden: 'service-cidrs-unserved-ports',
    what: 'a service without endpoints inside the second ServiceCIDR: REJECT in both modes',
    packet: { src: '10.244.3.5', dst: '10.97.0.5', dstPort: 8080 },
    want: { dist: { reject: 1 }, why: [/No endpoint can serve app\/empty:http/] },
    nftables: { by: { chain: 'service-endpoints-check', comment: 'app/empty:http' } },
  },
  {
    golden: 'example-cluster',
    what: 'node -> its own LB IP, ETP Local: masqueraded, cluster set',
    packet: { src: '192.168.10.11', dst: '192.0.2.10', dstPort: 443, from: 'node' },
    want: { dist: { '10.244.0.20:8443': 0.5, '10.244.1.20:8443': 0.5 }, masq: true, why: [/node-a itself is served as if through the load balancer/] },
  },
  {
    golden: 'example-cluster',
    what: 'health check node port: accepted, answered by the proxy',
    packet: { src: OUTSIDE, dst: '192.168.10.11', dstPort: 32123, from: 'external' },
    want: {
      dist: { accept: 1 },
      by: { chain: 'KUBE-NODEPORTS', comment: 'shop/frontend:https health check node port' },
      why: [/health check node port of service port shop\/frontend:https/, /node-a has 1 local endpoint/],
    },
    nftables: { dist: { 'no-match': 1 }, why: [/health check node port of service port shop\/frontend:https/] },
  },
  {
    golden: 'example-cluster',
    what: 'kubernetes service: the host-network endpoint on this node is delivered locally',
    packet: { src: '10.244.0.7', dst: '10.96.0.1', dstPort: 443 },
    want: {
      dist: { '192.168.10.11:6443': third, '192.168.10.12:6443': third, '192.168.10.13:6443': third },
      masq: false,
      why: [/the endpoint is on node-a itself, where no source NAT happens \(to 192\.168\.10\.11:6443\)/],
    },
  },
  {
    golden: 'example-cluster',
    what: 'DNS over UDP with zone hints: the endpoint in zone-a',
    packet: { src: '10.244.0.7', dst: '10.96.0.10', dstPort: 53, protocol: 'udp' },
    want: { dist: { '10.244.0.5:53': 1 }, why: [/hinted for zone zone-a/] },
  },
];

/**
 * What a case expects in `mode`. The verdict, endpoints, masquerade and reasons are the
 * same in both modes unless the case says nftables differs by design; the deciding rule
 * is named in each mode's own terms, so iptables' chain names are not asked of nftables.
 */
function wanted(c: Case, mode: TraceMode): Expect {
  if (mode === 'iptables') return c.want;
  const ownNames = (re: RegExp) => !re.source.includes('KUBE-');
  return { ...c.want, by: undefined, why: c.want.why?.filter(ownNames), ...c.nftables };
}

function masqOf(ds: Destination[]): Record<string, boolean> {
  return Object.fromEntries(ds.filter((d) => d.verdict === 'dnat').map((d) => [d.address!, d.masquerade]));
}

function check(r: TraceResult, want: Expect): void {
  const why = r.why.join('\n');
  expect(Object.keys(distribution(r))).toEqual(Object.keys(want.dist));
  for (const [k, p] of Object.entries(want.dist)) expect(distribution(r)[k], k).toBeCloseTo(p, 8);
  if (want.masq !== undefined) {
    const got = masqOf(r.destinations);
    expect(got).toEqual(typeof want.masq === 'boolean' ? Object.fromEntries(Object.keys(got).map((k) => [k, want.masq])) : want.masq);
  }
  if (want.by) expect(r.destinations[0]!.decidedBy).toMatchObject(want.by);
  if (want.service !== undefined) expect(r.service?.servicePort ?? null).toBe(want.service);
  if (want.sticky !== undefined) expect(r.destinations.every((d) => d.sticky === want.sticky)).toBe(true);
  for (const re of want.why ?? []) expect(why).toMatch(re);
}

describe('traces through the golden cases', () => {
  it('cover at least 30 packets and every golden case', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
    const large = ['large-cluster-mode', 'large-cluster-threshold'];
    const goldens = goldenCaseNames().filter((d) => !large.includes(d));
    expect(new Set(cases.map((c) => c.golden))).toEqual(new Set(goldens));
  });

  for (const mode of TRACE_MODES) {
    describe(mode, () => {
      for (const c of cases) {
        it(`${c.golden}: ${c.what}`, () => check(goldenTracer(c.golden, mode)(c.packet), wanted(c, mode)));
      }
    });
  }

  describe.each(TRACE_MODES)('%s', (mode) => {
    it.each([
      ['large-cluster-mode', false],
      ['large-cluster-threshold', true],
    ])('%s: one branch per endpoint at 1/n; per-endpoint comments (iptables): %s', (golden, comments) => {
      const r = goldenTracer(golden, mode)({ src: '10.244.1.5', dst: '10.96.230.230', dstPort: 80 });
      const ps = Object.values(distribution(r));
      expect(ps.length).toBeGreaterThan(1);
      for (const p of ps) expect(p).toBeCloseTo(1 / ps.length, 8);
      const branches = r.path.branches;
      if (mode === 'iptables') {
        expect(branches.map((b) => b.path.steps[0]?.kind === 'rule' && b.path.steps[0].comment !== null)).toEqual(ps.map(() => comments));
      } else {
        // One numgen draw, one branch per endpoint, each starting with the DNAT it chose.
        expect(branches.map((b) => b.path.steps[0])).toEqual(ps.map(() => expect.objectContaining({ kind: 'rule', result: 'match', detail: expect.stringMatching(/^numgen gave \d+: .*destination becomes /) })));
      }
    });
  });
});
