/**
 * The nftables sync: model -> rendered table per family -> one transaction -> the kernel.
 * Full (the whole table) at start, after a failure, when someone changed our table, when
 * the node or the service CIDRs changed, and periodically: over the table the kernel
 * holds (listed first), which keeps the affinity sets' elements, or, where nft refuses
 * that, replacing it. Otherwise partial: only the services that changed are rendered, as
 * they were when last written and as they are now, and the difference goes to the
 * kernel, their set elements through the ledger of who holds what. That keeps a
 * one-endpoint change at 10,000 services a few milliseconds of work. Every family's change
 * goes into one transaction, so the node never holds an IPv4 table of one sync beside an
 * IPv6 table of another.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { FULL_SYNC_INTERVAL_MS, fullSyncReason } from '../full-sync.js';
import { compareServicePorts } from '../../model/build.js';
import type { FamilyModel, IPFamily, NodeContext, ServicePort } from '../../model/types.js';
import type { Host, ModelSource, SyncRequest, SyncResult, Syncer } from '../mode.js';
import { ElementLedger } from './ledger.js';
import { chooseNft, NftError, type Nft, type NftResult } from './nft.js';
import { fullTransaction, NeedsFullSync, partialTransaction, type Transaction } from './plan.js';
import { keyedByClaim, renderNftables, renderSharedElements, type NftablesOptions } from './render.js';
import { NFT_FAMILY, TABLE_NAME, type Chain, type Element, type NftTable } from './ruleset.js';
import {
  byService,
  countClaims,
  frameOf,
  LIST_OBJECTS,
  listedObjects,
  listedRuleCounts,
  mergeGroups,
  writtenGroups,
  type Groups,
  type TableObjects,
} from './written.js';

/** Services counted into the ledger between two yields to the event loop. */
const LEDGER_BATCH = 200;

export interface NftSyncerOptions {
  families: IPFamily[];
  /**
   * The table for this model, declaring at least the endpoint-count groups in `keep` (so
   * that a render of a few services has the fixed part the whole table has).
   */
  render: (model: FamilyModel, node: NodeContext, keep?: Groups) => NftTable;
  /**
   * The elements a model's service ports put into the table, by set or map name, as
   * `render` gives them: what the ledger counts, one service at a time. It needs only the
   * sets `keyedByClaim` does not name (render.ts renderSharedElements, many times cheaper
   * than a table per service, which is the default).
   */
  elements?: (model: FamilyModel, node: NodeContext) => ReadonlyMap<string, readonly Element[]>;
  /** The renderer's sets and maps keyed by claimed destinations, which the ledger need not keep (render.ts keyedByClaim). */
  keyedByClaim?: (set: string) => boolean;
  fullSyncIntervalMs: number;
  /** Injected for tests: the periodic full sync is due by this clock. */
  now?: () => number;
}

/** What a family's table holds, as far as a partial sync needs to know. */
interface FamilyState {
  /** Each service's ports as last written (ns/name). */
  ports: Map<string, ServicePort[]>;
  /** Who holds each element; built after a full sync, in the background. */
  ledger: Promise<ElementLedger>;
  groups: Groups;
  /** The table without services (chains, declarations, fixed elements): a change needs a full sync. */
  frame: string;
  /** Base chains as written: what damage() checks. */
  bases: Chain[];
  /** How many service ports claim each destination (claimKeys). */
  claims: Map<string, number>;
}

export class NftablesSyncer implements Syncer {
  private readonly state = new Map<IPFamily, FamilyState>();
  private needFullSync = true;
  private lastFullSync = 0;
  /** Bumped by every full sync: a ledger still being built for an older one is dropped. */
  private generation = 0;
  private readonly now: () => number;

  constructor(
    private readonly nft: Nft,
    private readonly opts: NftSyncerOptions,
    private readonly log: Logger,
  ) {
    this.now = opts.now ?? Date.now;
  }

  get families(): IPFamily[] {
    return this.opts.families;
  }

  requireFullSync(reason: string): void {
    if (!this.needFullSync) this.log.warn({ reason }, 'full resync required');
    this.needFullSync = true;
  }

  /**
   * Whether our tables and their base chains' rules are still there: someone running
   * `nft flush ruleset`, deleting our table or flushing a base chain leaves every service
   * unreachable until a full sync writes it again. Listing only the base chains keeps
   * this cheap at 10,000 services.
   */
  async damage(): Promise<string | null> {
    for (const [family, st] of this.state) {
      const ref = `${NFT_FAMILY[family]} ${TABLE_NAME}`;
      // One list command per run: nft 1.0.6 fails a second `list chain` in the same batch.
      for (const c of st.bases) {
        const r = await this.nft.list(`list chain ${ref} ${c.name}\n`);
        if (!r.ok) return `${family} table ${ref} or its base chain ${c.name} is gone`;
        if ((listedRuleCounts(r.output).get(c.name) ?? 0) < c.rules.length) return `${family} base chain ${c.name} lost its rules`;
      }
    }
    return null;
  }

  async sync(req: SyncRequest): Promise<SyncResult> {
    const reason = fullSyncReason({
      required: this.needFullSync,
      all: { changed: req.all, why: 'node or service CIDRs changed' },
      msSinceLastFull: this.now() - this.lastFullSync,
      intervalMs: this.opts.fullSyncIntervalMs,
    });
    let full = reason !== null;
    let escalated: string | null = null;
    let txs: Transaction[] = [];
    let next = new Map<IPFamily, () => FamilyState>();
    try {
      if (!full) {
        for (const family of this.families) {
          const planned = await this.partial(req, family);
          if (typeof planned === 'string') {
            escalated = planned;
            break;
          }
          txs.push(planned.tx);
          next.set(family, planned.state);
        }
      }
      if (full || escalated !== null) {
        full = true;
        const present = await this.present();
        ({ txs, next } = this.fullPlan(req.model, present));
        let r = await this.apply(txs);
        if (!r.ok && present) {
          this.log.warn({ err: r.error.trim() }, 'nft refused the full sync that keeps the table (a declaration changed?): replacing the table, and with it the affinity memory');
          ({ txs, next } = this.fullPlan(req.model, null));
          r = await this.apply(txs);
        }
        if (!r.ok) throw new NftError('full sync', r.error.trim());
      } else {
        const r = await this.apply(txs);
        if (!r.ok) throw new NftError('partial sync', r.error.trim());
      }
    } catch (err) {
      // What the kernel holds is unknown now: write it all next time.
      this.needFullSync = true;
      this.state.clear();
      return { ok: false, full, error: (err as Error).message };
    }
    for (const [family, state] of next) this.state.set(family, state());
    if (full) {
      this.needFullSync = false;
      this.lastFullSync = this.now();
    }
    const commands = txs.reduce((n, t) => n + t.commands, 0);
    const bytes = txs.reduce((n, t) => n + t.script.length, 0);
    this.log.debug({ full, commands, bytes }, 'nftables transaction applied');
    return { ok: true, full, reason: reason ?? escalated, written: { commands, bytes } };
  }

  private async apply(txs: Transaction[]): Promise<NftResult> {
    const chunks = txs.map((t) => t.script).filter((b) => b.length > 0);
    return chunks.length === 0 ? { ok: true, output: '', error: '' } : this.nft.run(chunks);
  }

  /**
   * What each family's table holds, so that a full sync can keep the table (and the
   * affinity sets' elements); null when that cannot be listed: then it replaces them.
   */
  private async present(): Promise<Map<IPFamily, TableObjects> | null> {
    const r = await this.nft.list(LIST_OBJECTS, true).catch(() => null);
    if (!r?.ok) return null;
    const out = new Map<IPFamily, TableObjects>();
    for (const family of this.families) {
      const objects = listedObjects(r.output, NFT_FAMILY[family]);
      if (!objects) return null;
      out.set(family, objects);
    }
    return out;
  }

  /** Every family's whole table, over what `present` says the kernel holds (or replacing it). */
  private fullPlan(source: ModelSource, present: Map<IPFamily, TableObjects> | null): { txs: Transaction[]; next: Map<IPFamily, () => FamilyState> } {
    const generation = ++this.generation;
    const txs: Transaction[] = [];
    const next = new Map<IPFamily, () => FamilyState>();
    for (const family of this.families) {
      const planned = this.full(source, family, generation, present?.get(family));
      txs.push(planned.tx);
      next.set(family, planned.state);
    }
    return { txs, next };
  }

  private elements(model: FamilyModel, node: NodeContext): ReadonlyMap<string, readonly Element[]> {
    if (this.opts.elements) return this.opts.elements(model, node);
    return new Map(this.render(model, node).sets.map((s) => [s.name, s.elements]));
  }

  private render(model: FamilyModel, node: NodeContext, keep?: Groups): NftTable {
    const t = this.opts.render(model, node, keep);
    if (t.family !== NFT_FAMILY[model.family] || t.name !== TABLE_NAME) throw new Error(`rendered table ${t.family} ${t.name} for ${model.family}`);
    return t;
  }

  /** The whole table; the state to keep once it is applied. */
  private full(source: ModelSource, family: IPFamily, generation: number, present: TableObjects | undefined): { tx: Transaction; state: () => FamilyState } {
    const model = source.familyModel(family);
    const table = this.render(model, source.nodeContext);
    const groups = writtenGroups(table);
    const frame = frameOf(this.render({ ...model, servicePorts: [] }, source.nodeContext, groups));
    const bases = table.chains.filter((c) => c.base);
    const tx = fullTransaction(table, present);
    const ports = byService(model.servicePorts);
    const claims = countClaims(model.servicePorts);
    // Counted while the kernel loads the table (nft works in a thread of its own): ready
    // when the first partial sync needs it. The table itself is not kept: at 10,000
    // services its elements are tens of MB.
    const ledger = this.countLedger(model, source.nodeContext, ports, generation);
    return { tx, state: () => ({ ports, groups, frame, bases, claims, ledger }) };
  }

  /**
   * The ledger of a table just written: each service rendered alone and counted, in model
   * order, a batch at a time so that the event loop stays free. A partial sync waits for it.
   */
  private async countLedger(model: FamilyModel, node: NodeContext, ports: Map<string, ServicePort[]>, generation: number): Promise<ElementLedger> {
    const ledger = new ElementLedger(this.opts.keyedByClaim);
    let i = 0;
    for (const list of ports.values()) {
      if (i++ % LEDGER_BATCH === 0) {
        await new Promise((r) => setImmediate(r));
        if (generation !== this.generation) break;
      }
      ledger.count(this.elements({ ...model, servicePorts: list }, node));
    }
    return ledger;
  }

  /**
   * Only the changed services: their render as last written and as now, diffed through the
   * ledger. A string says why a full sync must do instead.
   */
  private async partial(req: SyncRequest, family: IPFamily): Promise<{ tx: Transaction; state: () => FamilyState } | string> {
    const st = this.state.get(family);
    if (!st) return `${family} never synced`;
    const ledger = await st.ledger;
    const node = req.model.nodeContext;
    const now = req.model.familyModel(family, req.services);
    if (frameOf(this.render({ ...now, servicePorts: [] }, node, st.groups)) !== st.frame) return 'fixed chains changed';
    const before = [...req.services].flatMap((k) => st.ports.get(k) ?? []).sort(compareServicePorts);
    // The claims of the changed services, before and after, against everyone's.
    const touched = countClaims(now.servicePorts, countClaims(before, new Map(), -1));
    for (const [k, delta] of touched) {
      const was = st.claims.get(k) ?? 0;
      if (was > 1 || was + delta > 1) return `two service ports claim ${k}`;
    }
    const prev = this.render({ ...now, servicePorts: before }, node, st.groups);
    const want = this.render(now, node, st.groups);
    let tx: Transaction;
    try {
      tx = partialTransaction(prev, want, ledger);
    } catch (err) {
      if (err instanceof NeedsFullSync) return err.message;
      throw err;
    }
    const state = (): FamilyState => {
      ledger.commit();
      for (const [k, delta] of touched) {
        const n = (st.claims.get(k) ?? 0) + delta;
        if (n > 0) st.claims.set(k, n);
        else st.claims.delete(k);
      }
      const ports = st.ports;
      for (const k of req.services) ports.delete(k);
      for (const [k, list] of byService(now.servicePorts)) ports.set(k, list);
      const groups = mergeGroups(st.groups, writtenGroups(want));
      return { ...st, ports, groups, frame: frameOf(this.render({ ...now, servicePorts: [] }, node, groups)) };
    };
    return { tx, state };
  }
}

/** The syncer on this node: libnftables (or nft), IPv6 where the kernel has it. */
export async function startNftablesSyncer(host: Host, opts: NftablesOptions): Promise<NftablesSyncer> {
  const nft = await chooseNft(host.run, host.log);
  const families: IPFamily[] = existsSync('/proc/sys/net/ipv6') ? ['IPv4', 'IPv6'] : ['IPv4'];
  const render = (model: FamilyModel, node: NodeContext, keep?: Groups) => renderNftables(model, node, keep ? { ...opts, keepGroups: keep } : opts);
  const elements = (model: FamilyModel, node: NodeContext) => renderSharedElements(model, node, opts);
  return new NftablesSyncer(nft, { families, render, elements, keyedByClaim, fullSyncIntervalMs: FULL_SYNC_INTERVAL_MS }, host.log);
}
