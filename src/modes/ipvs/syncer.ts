/**
 * The ipvs sync: model -> rendering (both families) -> diffs against what the kernel
 * holds -> applier. The kernel's state is read back at a full sync (start, after a
 * failure, after damage) and otherwise kept from the last sync, so a change costs one
 * render and small batches: ipsets, then iptables (whose rules name the sets), then
 * kube-ipvs0's new addresses, the virtual servers, and last the addresses no longer used.
 */
import type { Logger } from 'pino';
import type { IPFamily } from '../../model/types.js';
import type { ParsedCIDR } from '../../net/ip.js';
import type { ModelSource, SyncRequest, SyncResult, Syncer } from '../mode.js';
import { restoreText, type JumpRule } from '../iptables/ruleset.js';
import type { IpvsApplier } from './applier.js';
import { DUMMY_DEVICE } from './dryrun.js';
import { planIpsets, type KernelSets } from './ipset-plan.js';
import { planIpvs } from './plan.js';
import type { IpvsOptions } from './options.js';
import { renderIpvs, type IpvsRendering } from './render.js';
import type { IpvsTable } from './table.js';

export interface IpvsSyncerOptions {
  render: IpvsOptions;
  excludeCIDRs: readonly ParsedCIDR[];
  gracePeriodMs: number;
  /** Injected for tests. */
  now?: () => number;
}

interface KernelState {
  table: IpvsTable;
  sets: KernelSets;
  addresses: Set<string>;
  draining: Map<string, number>;
  /** Each family's iptables restore text as last written. */
  iptables: Map<IPFamily, string>;
}

const PREFIX: Record<IPFamily, number> = { IPv4: 32, IPv6: 128 };

/** One table of both families' virtual servers (ipvsadm holds them together); a family alone is taken as it is. */
function wantedTable(renderings: readonly IpvsRendering[]): IpvsTable {
  const used = renderings.filter((r) => r.table.size > 0);
  if (used.length <= 1) return used[0]?.table ?? new Map();
  const out: IpvsTable = new Map();
  for (const r of used) for (const [k, vs] of r.table) if (!out.has(k)) out.set(k, vs);
  return out;
}

export class IpvsSyncer implements Syncer {
  private state: KernelState | null = null;
  /** Each family's jump rules as last ensured. */
  private readonly jumps = new Map<IPFamily, JumpRule[]>();
  private readonly now: () => number;

  constructor(
    readonly families: IPFamily[],
    private readonly applier: IpvsApplier,
    private readonly opts: IpvsSyncerOptions,
    private readonly log: Logger,
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** What it renders with, as the host's tools allow (`--random-fully`): the dry run and trace show the same. */
  get options(): IpvsOptions {
    return this.opts.render;
  }

  requireFullSync(reason: string): void {
    if (this.state) this.log.warn({ reason }, 'full resync required');
    this.state = null;
  }

  async damage(): Promise<string | null> {
    if (!(await this.applier.deviceExists())) return `${DUMMY_DEVICE} is gone`;
    for (const [family, iptables] of this.applier.iptables) {
      if (!(await iptables.canaryPresent())) return `${family} canary chain is gone`;
      // Someone deleting a jump rule leaves the canary, and every service, unreachable.
      const gone = await iptables.missingJump(this.jumps.get(family) ?? []);
      if (gone) return `${family} jump rule from ${gone.table} ${gone.chain} to ${gone.args.at(-1)} is gone`;
    }
    return null;
  }

  private async readKernel(): Promise<KernelState> {
    await this.applier.ensureDevice();
    const [addresses, sets, table] = await Promise.all([this.applier.addresses(), this.applier.ipsets(), this.applier.table()]);
    return { table, sets, addresses, draining: new Map(), iptables: new Map() };
  }

  async sync(req: SyncRequest): Promise<SyncResult> {
    const full = this.state === null || req.all;
    const reason = this.state === null ? 'required' : req.all ? 'node changed' : null;
    try {
      const state = full ? await this.readKernel() : this.state!;
      const renderings = this.families.map((f) => this.render(req.model, f));
      const next = await this.apply(state, renderings, full);
      this.state = next;
      return { ok: true, full, reason };
    } catch (err) {
      this.state = null;
      return { ok: false, full, error: (err as Error).message };
    }
  }

  private render(model: ModelSource, family: IPFamily): IpvsRendering {
    return renderIpvs(model.familyModel(family), model.nodeContext, this.opts.render);
  }

  private async apply(state: KernelState, renderings: IpvsRendering[], full: boolean): Promise<KernelState> {
    const setPlan = planIpsets(state.sets, renderings.flatMap((r) => r.sets));
    await this.applier.restoreIpsets(setPlan.lines);

    const iptables = new Map(state.iptables);
    for (const r of renderings) {
      const text = restoreText(r.iptables);
      if (full || iptables.get(r.family) !== text) await this.applier.restoreIptables(r.iptables);
      iptables.set(r.family, text);
      this.jumps.set(r.family, r.iptables.jumps);
    }

    const wantedAddresses = new Set(renderings.flatMap((r) => r.addresses.map((a) => `${a}/${PREFIX[r.family]}`)));
    const bind = [...wantedAddresses].filter((a) => !state.addresses.has(a));
    await this.applier.ipBatch(bind.map((a) => `address add ${a} dev ${DUMMY_DEVICE}`));

    const wanted = wantedTable(renderings);
    const input = {
      current: state.table,
      wanted,
      draining: state.draining,
      connections: null,
      now: this.now(),
      gracePeriodMs: this.opts.gracePeriodMs,
      excludeCIDRs: this.opts.excludeCIDRs,
    };
    let plan = planIpvs(input);
    if (plan.needsConnections) plan = planIpvs({ ...input, connections: await this.applier.connections() });
    await this.applier.restoreTable(plan.lines);

    const unbind = [...state.addresses].filter((a) => !wantedAddresses.has(a));
    await this.applier.ipBatch(unbind.map((a) => `address del ${a} dev ${DUMMY_DEVICE}`));
    if (plan.lines.length > 0) this.log.debug({ ipvsadm: plan.lines.length, draining: plan.draining.size }, 'virtual servers changed');
    return { table: plan.after, sets: setPlan.after, addresses: wantedAddresses, draining: plan.draining, iptables };
  }
}
