/**
 * The seam between the proxy core and its dataplanes. The agent loop, health, metrics,
 * conntrack cleanup, the debug endpoints and the offline tools speak only these types;
 * everything a mode knows (its rules, chain names, tools, how it applies a change and how
 * a packet walks its rules) stays in its folder under `modes/`. A new mode implements
 * `ProxyMode` and is added to `registry.ts`.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { ProxyConfig, ProxyModeName } from '../config/options.js';
import type { Runner } from '../exec/command.js';
import type { Sysctls } from '../exec/sysctl.js';
import type { FamilyModel, IPFamily, NodeContext } from '../model/types.js';
import type { Dataplane, Packet } from '../trace/types.js';

/** What a mode may do to the node: run its tools, set kernel settings, and say what it did. */
export interface Host {
  run: Runner;
  sysctl: Sysctls;
  log: Logger;
  /** Where a mode registers metrics of its own (the agent's registry); absent outside the agent. */
  metrics?: Registry;
}

export interface ProxyMode {
  readonly name: ProxyModeName;
  /**
   * Modes whose rules share chains with this one's (iptables and ipvs: KUBE-SERVICES,
   * KUBE-MARK-MASQ, ...). Starting this mode leaves theirs to its own first full sync,
   * which rewrites them, instead of deleting chains that may be carrying traffic.
   */
  readonly sharesRulesWith?: readonly ProxyModeName[];
  /** Binds the mode to a configuration: what it renders depends on nothing else. */
  configure(cfg: ProxyConfig): ConfiguredMode;
  /**
   * Removes what this mode leaves on a node, whether kube-proxy-ts or upstream kube-proxy
   * wrote it, and nothing else; true when the node is clean of it afterwards.
   */
  cleanup(host: Host): Promise<boolean>;
}

/** A mode with its options: pure rendering and tracing, and the syncer that applies them. */
export interface ConfiguredMode {
  readonly name: ProxyModeName;
  /** The mode reads `FamilyModel.serviceCIDRs`: the agent then watches ServiceCIDR objects. */
  readonly usesServiceCIDRs?: boolean;
  /**
   * One family's part of `--dry-run` (and of the agent's /debug/rules): what the mode
   * would program for this model, as text its own tools accept. `explain` adds each
   * service port's endpoints and the rules that use them, as comments.
   */
  rulesText(model: FamilyModel, node: NodeContext, explain: boolean): string;
  /**
   * The rules this model renders to, as a dataplane a packet can be traced through. With
   * `focus`, only what that packet can reach needs to be there.
   */
  dataplane(model: FamilyModel, node: NodeContext, focus?: Packet): Dataplane;
  /** Finds what the node's kernel offers this mode and returns the syncer that programs it. */
  syncer(host: Host): Promise<Syncer>;
}

/** The agent's model as a syncer reads it: kept current by the informers, never changed by the syncer. */
export interface ModelSource {
  readonly nodeContext: NodeContext;
  /** Service ports of the given services (ns/name), or of all, in model order. */
  familyModel(family: IPFamily, services?: Iterable<string>): FamilyModel;
  endpointCount(family: IPFamily): number;
}

export interface SyncRequest {
  model: ModelSource;
  /** Services (ns/name) whose service ports changed since the last sync. */
  services: Set<string>;
  /** The node changed: every service port may render differently. */
  all: boolean;
}

/** What one sync sent the kernel, for modes that apply a transaction (nftables): its nft commands and script bytes. */
export interface Written {
  commands: number;
  bytes: number;
}

export type SyncResult = { ok: true; full: boolean; reason: string | null; written?: Written } | { ok: false; full: boolean; error: string };

/** Applies the model to the node's dataplane: whole, or only what changed since the last sync. */
export interface Syncer {
  /** The IP families this node can program. */
  readonly families: IPFamily[];
  /** One sync. A failed one leaves the next one full. */
  sync(req: SyncRequest): Promise<SyncResult>;
  /** Forces the next sync to be full (someone changed our rules behind our back). */
  requireFullSync(reason: string): void;
  /** What is missing from the dataplane since the last sync (someone flushed it), or null. */
  damage(): Promise<string | null>;
}
