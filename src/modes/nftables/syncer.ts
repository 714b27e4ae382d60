/**
 * The nftables sync: model -> rendered table per family -> one transaction -> the kernel.
 * Full (the whole table) at start, after a failure, when someone changed our table, when
 * asked, and periodically; otherwise only what changed since the table last written, which
 * is kept. Every family's change goes into one transaction, so the node never holds an
 * IPv4 table of one sync beside an IPv6 table of another.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { FamilyModel, IPFamily, NodeContext } from '../../model/types.js';
import type { Host, ModelSource, SyncRequest, SyncResult, Syncer } from '../mode.js';
import { GROUP_KINDS, groupMap, type GroupKind } from './names.js';
import { chooseNft, NftError, type Nft } from './nft.js';
import { fullTransaction, NeedsFullSync, partialTransaction, type Transaction } from './plan.js';
import { renderNftables, type NftablesOptions } from './render.js';
import { NFT_FAMILY, TABLE_NAME, type NftTable } from './ruleset.js';

const FULL_SYNC_INTERVAL_MS = 60 * 60 * 1000;

export interface NftSyncerOptions {
  families: IPFamily[];
  /**
   * The table for this model. `written` is the family's table as last written (absent for
   * a full sync): a renderer may keep its shape where that keeps the change small.
   */
  render: (model: FamilyModel, node: NodeContext, written?: NftTable) => NftTable;
  fullSyncIntervalMs: number;
  /** Injected for tests: the periodic full sync is due by this clock. */
  now?: () => number;
}

/** Rule lines of each chain in `nft list chain` output (several chains listed one after another). */
export function listedRuleCounts(listing: string): Map<string, number> {
  const counts = new Map<string, number>();
  let chain: string | null = null;
  for (const raw of listing.split('\n')) {
    const line = raw.trim();
    const m = /^chain (\S+) \{$/.exec(line);
    if (m) {
      chain = m[1]!;
      counts.set(chain, 0);
    } else if (chain !== null && line === '}') chain = null;
    else if (chain !== null && line !== '' && !line.startsWith('type ') && !line.startsWith('comment ')) counts.set(chain, counts.get(chain)! + 1);
  }
  return counts;
}

export class NftablesSyncer implements Syncer {
  /** The table last written per family: what the kernel holds unless someone changed it. */
  private readonly written = new Map<IPFamily, NftTable>();
  private needFullSync = true;
  private lastFullSync = 0;
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
    for (const [family, table] of this.written) {
      const ref = `${table.family} ${table.name}`;
      // One list command per run: nft 1.0.6 fails a second `list chain` in the same batch.
      for (const c of table.chains.filter((x) => x.base)) {
        const r = await this.nft.run(`list chain ${ref} ${c.name}\n`);
        if (!r.ok) return `${family} table ${ref} or its base chain ${c.name} is gone`;
        if ((listedRuleCounts(r.output).get(c.name) ?? 0) < c.rules.length) return `${family} base chain ${c.name} lost its rules`;
      }
    }
    return null;
  }

  async sync(req: SyncRequest): Promise<SyncResult> {
    const reason = this.needFullSync ? 'required' : this.now() - this.lastFullSync > this.opts.fullSyncIntervalMs ? 'periodic' : null;
    const full = reason !== null;
    let escalated: string | null = null;
    const wanted = new Map<IPFamily, NftTable>();
    const txs: Transaction[] = [];
    try {
      for (const family of this.families) {
        const prev = full ? undefined : this.written.get(family);
        const want = this.render(req.model, family, prev);
        wanted.set(family, want);
        if (!prev) {
          txs.push(fullTransaction(want));
          continue;
        }
        try {
          txs.push(partialTransaction(prev, want));
        } catch (err) {
          if (!(err instanceof NeedsFullSync)) throw err;
          escalated ??= err.message;
          txs.push(fullTransaction(want));
        }
      }
      const script = Buffer.concat(txs.map((t) => t.script));
      if (script.length > 0) {
        const r = await this.nft.run(script.toString('latin1'));
        if (!r.ok) throw new NftError(full ? 'full sync' : 'partial sync', r.error.trim());
      }
    } catch (err) {
      // What the kernel holds is unknown now: write it all next time.
      this.needFullSync = true;
      this.written.clear();
      return { ok: false, full: full || escalated !== null, error: (err as Error).message };
    }
    for (const [family, t] of wanted) this.written.set(family, t);
    if (full) {
      this.needFullSync = false;
      this.lastFullSync = this.now();
    }
    const commands = txs.reduce((n, t) => n + t.commands, 0);
    const bytes = txs.reduce((n, t) => n + t.script.length, 0);
    this.log.debug({ full, commands, bytes }, 'nftables transaction applied');
    return { ok: true, full: full || escalated !== null, reason: reason ?? escalated, written: { commands, bytes } };
  }

  private render(source: ModelSource, family: IPFamily, written: NftTable | undefined): NftTable {
    const t = this.opts.render(source.familyModel(family), source.nodeContext, written);
    if (t.family !== NFT_FAMILY[family] || t.name !== TABLE_NAME) throw new Error(`rendered table ${t.family} ${t.name} for ${family}`);
    return t;
  }
}

/**
 * The endpoint-count groups a written table declares, per kind: kept in the next render,
 * so that a service moving to another endpoint count changes elements only, not the
 * table's maps and rules. A full sync renders without them, and drops unused groups.
 */
export function writtenGroups(t: NftTable): Map<GroupKind, number[]> {
  const out = new Map<GroupKind, number[]>(GROUP_KINDS.map((k) => [k, []]));
  const names = new Set(t.sets.map((s) => s.name));
  for (const kind of GROUP_KINDS) {
    const prefix = groupMap(kind, 0).slice(0, -1);
    for (const name of names) {
      const n = Number(name.slice(prefix.length));
      if (name.startsWith(prefix) && Number.isInteger(n) && n > 0 && groupMap(kind, n) === name) out.get(kind)!.push(n);
    }
  }
  return out;
}

/** The syncer on this node: libnftables (or nft), IPv6 where the kernel has it. */
export async function startNftablesSyncer(host: Host, opts: NftablesOptions): Promise<NftablesSyncer> {
  const nft = await chooseNft(host.run, host.log);
  const families: IPFamily[] = existsSync('/proc/sys/net/ipv6') ? ['IPv4', 'IPv6'] : ['IPv4'];
  const render = (model: FamilyModel, node: NodeContext, written?: NftTable) =>
    renderNftables(model, node, written ? { ...opts, keepGroups: writtenGroups(written) } : opts);
  return new NftablesSyncer(nft, { families, render, fullSyncIntervalMs: FULL_SYNC_INTERVAL_MS }, host.log);
}
