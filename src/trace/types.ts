/**
 * The vocabulary of a trace: a packet in, the path it takes through a dataplane's rules
 * and the outcomes it can end in out. Mode-neutral, so that an nftables or ipvs evaluator
 * answers in the same shape as the iptables one. This is also the `--output json` shape
 * (`schema` names its version); fields are only ever added to it.
 */
import type { ServicePortLabels } from '../model/explain.js';
import type { IPFamily, ServicePort } from '../model/types.js';

export type TraceProtocol = 'tcp' | 'udp' | 'sctp';

/** Where a packet enters the node from: a pod on it, the node itself, or the network. */
export type Origin = 'pod' | 'node' | 'external';

/** Where a packet to trace goes, as people name it; resolved against the cluster. */
export type DestinationSpec =
  | { kind: 'address'; ip: string; port: number }
  /** `NAMESPACE/NAME:PORT`: a Service's cluster IP, the port by number or name. */
  | { kind: 'service'; namespace: string; name: string; port: string }
  /** `nodeport:NODE:PORT`: a node's address. */
  | { kind: 'nodePort'; node: string; port: number };

/** Where it comes from: an address, or a Pod (`NAMESPACE/POD`) of the input. */
export type SourceSpec = { kind: 'address'; ip: string; port: number | null } | { kind: 'pod'; namespace: string; name: string };

/** What the command line asks to trace, before the cluster says which addresses that is. */
export interface TraceQuery {
  /** Null: the node's own address (only with `from: 'node'`). */
  src: SourceSpec | null;
  dst: DestinationSpec;
  /** Null: TCP, or the protocol of the Service port named. */
  protocol: TraceProtocol | null;
  from: Origin;
  output: 'text' | 'json';
}

/** A packet to trace as people give it: the source may be left to the node, ports are optional. */
export interface TraceRequest {
  /** Null: the node's own address (only with `from: 'node'`). */
  src: { ip: string; port: number | null } | null;
  dst: { ip: string; port: number };
  protocol: TraceProtocol;
  from: Origin;
  output: 'text' | 'json';
}

export interface Packet {
  protocol: TraceProtocol;
  src: string;
  srcPort: number | null;
  dst: string;
  dstPort: number;
  from: Origin;
}

/**
 * What a chain is for, as the mode that wrote it knows: explanations read these roles and
 * the model, never chain names. `other`: nothing the proxy explains (a built-in chain, say).
 */
export type ChainRole =
  /** Picks the service port by destination address and port. */
  | 'service-dispatch'
  /** Picks the service port by node port. */
  | 'node-port-dispatch'
  /** Balances over the cluster endpoint set. */
  | 'cluster-endpoints'
  /** Balances over the endpoints on this node. */
  | 'local-endpoints'
  /** Applies externalTrafficPolicy to traffic for node ports, external and LB IPs. */
  | 'external-policy'
  /** Lets in what loadBalancerSourceRanges allow. */
  | 'source-ranges'
  /** Sends the packet to one endpoint. */
  | 'endpoint'
  /** Drops load-balancer traffic the source ranges did not let in. */
  | 'firewall'
  /** Marks or rewrites the source for masquerade. */
  | 'masquerade'
  | 'other';

/** What a rule means, where an explanation needs more than its verdict. */
export type RuleRole =
  /** Masquerade what does not come from the cluster CIDR. */
  | { kind: 'masquerade'; because: 'outside-cluster-cidr'; clusterCIDR: string }
  /**
   * Masquerade everything (--masquerade-all); an endpoint reaching itself (hairpin);
   * outside traffic under externalTrafficPolicy Cluster; the node reaching an external address.
   */
  | { kind: 'masquerade'; because: 'all' | 'hairpin' | 'external' | 'node-to-external' }
  /** Refuse: the service port has no endpoint at all. */
  | { kind: 'no-endpoints' }
  /** Drop: a Local traffic policy and no endpoint on this node. */
  | { kind: 'no-local-endpoints' }
  /** Drop: the source is outside loadBalancerSourceRanges. */
  | { kind: 'source-ranges' }
  /** Captured into a proxy's listener (userspace mode), which connects to the endpoint itself. */
  | { kind: 'proxied'; listener: string; port: number }
  /**
   * Dispatches node ports, where the mode has no chain for that: a step of this rule is
   * on the path only when the destination is an address that takes node ports.
   */
  | { kind: 'node-ports' };

/** A rule by its place: 1-based index in its chain, as `iptables -L --line-numbers` counts. */
export interface RuleRef {
  table: string;
  chain: string;
  /** 0 for the chain's policy. */
  rule: number;
  /** The rule as restore text, without `-A CHAIN`; the policy's name for a policy. */
  text: string;
  comment: string | null;
  role: RuleRole | null;
}

export type RuleResult = 'match' | 'no-match' | 'not-evaluable';

export type Step =
  /** The packet enters a chain: from a hook (a built-in chain), or by a jump or goto. */
  | { kind: 'chain'; table: string; chain: string; entered: 'hook' | 'jump' | 'goto'; role: ChainRole }
  | {
      kind: 'rule';
      table: string;
      chain: string;
      rule: number;
      /** The rule as restore text, without `-A CHAIN`. */
      text: string;
      /** The rule without its comment, for people. */
      body: string;
      comment: string | null;
      role: RuleRole | null;
      result: RuleResult;
      /** Why it did not match, what it did, or what could not be evaluated. */
      detail: string | null;
    }
  /** Rules passed over because they are about other destinations, ports or protocols. */
  | { kind: 'skipped'; table: string; chain: string; count: number }
  /** The routing decision after destination NAT. */
  | { kind: 'route'; dst: string; to: 'local' | 'forward' | 'out' };

export type Verdict = 'dnat' | 'accept' | 'drop' | 'reject' | 'no-match' | 'not-evaluable';

/** One way the packet's journey can end, with its probability. */
export interface Outcome {
  probability: number;
  /**
   * dnat: accepted after destination NAT; accept: accepted by a proxy rule without NAT;
   * no-match: no proxy rule decided anything (the built-in chains' policy applies).
   */
  verdict: Verdict;
  /** The new destination, `IP:PORT` as the DNAT rule writes it. */
  dnat: string | null;
  /** Source NAT to the node's address on the way out. */
  masquerade: boolean;
  /** Where the routing decision sent it: null when it was stopped before. */
  delivery: 'local' | 'forward' | 'out' | null;
  /** The rule that accepted, dropped, rejected or rewrote the packet. */
  decidedBy: RuleRef | null;
  /** The rule that sent the packet to be marked for masquerade. */
  markedBy: RuleRef | null;
  /** Passed a session-affinity recorder: later connections stick to this outcome. */
  sticky: boolean;
  /** What could not be evaluated (not-evaluable only). */
  reason: string | null;
}

/**
 * The path as a tree. A segment's steps are shared by every outcome below it; it ends
 * either in one outcome or in branches, one per probabilistic choice (`-m statistic`),
 * whose probabilities are absolute (they sum to the segment's own).
 */
export interface PathSegment {
  steps: Step[];
  branches: Branch[];
  /** What picks among the branches, when not a rule's `-m statistic` (a proxy's scheduler, say). */
  chooser?: string;
  outcome: Outcome | null;
}

export interface Branch {
  probability: number;
  path: PathSegment;
}

/** What a dataplane evaluator finds, before Kubernetes-level explanation. */
export interface DataplaneTrace {
  mode: string;
  family: IPFamily;
  packet: Packet;
  /** Addresses taken as the node's own (`-m addrtype LOCAL`). */
  localAddresses: string[];
  path: PathSegment;
  /** Every leaf of the path, in path order. */
  outcomes: Outcome[];
  /** What the evaluation took as given, which a real node may contradict. */
  assumptions: string[];
}

/** A dataplane whose rules can be evaluated for a packet: one per proxy mode. */
export interface Dataplane {
  readonly mode: string;
  trace(packet: Packet): DataplaneTrace;
  /** How this dataplane names a service port's parts, for explanations. */
  labels(sp: ServicePort): ServicePortLabels;
}

/** The service port a packet is addressed to, and as what. */
export interface ServiceTarget {
  servicePort: string;
  protocol: string;
  role: 'cluster IP' | 'external IP' | 'load balancer IP' | 'node port' | 'health check node port';
}

/** Outcomes that end alike, merged: where the packet goes, and how likely. */
export interface Destination {
  verdict: Verdict;
  /** The DNAT target, `IP:PORT`; null without DNAT. */
  address: string | null;
  probability: number;
  masquerade: boolean;
  sticky: boolean;
  /** The endpoint behind `address`, as the model knows it. */
  endpoint: { node: string | null; zone: string | null; local: boolean; state: string } | null;
  decidedBy: RuleRef | null;
  reason: string | null;
}

export interface TraceResult extends DataplaneTrace {
  schema: 'kube-proxy-ts/trace/v1';
  node: string;
  service: ServiceTarget | null;
  destinations: Destination[];
  /** The outcomes in Kubernetes terms: policy, endpoint selection, affinity, masquerade. */
  why: string[];
}

/** A packet or ruleset that cannot be traced; the message says why. */
export class TraceError extends Error {}
