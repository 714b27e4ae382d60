/**
 * The userspace sync: render each family's plan with the ports the listeners hold, open
 * the new listeners, restore the capture rules (the iptables applier, as iptables mode),
 * then close the listeners nothing points at any more. Every sync restores all capture
 * rules (one or two per address of each service port, small next to iptables mode's);
 * a full one also ensures the jumps and canary chains.
 */
import type { Logger } from 'pino';
import type { IPFamily } from '../../model/types.js';
import type { IptablesApplier } from '../iptables/applier.js';
import { restoreChunks, type JumpRule } from '../iptables/ruleset.js';
import type { SyncRequest, SyncResult, Syncer } from '../mode.js';
import { connectionAge } from './age.js';
import type { Proxier } from './proxier.js';
import { renderUserspace, type UserspaceOptions, type UserspacePlan } from './render.js';

/** Renders after bind failures, each giving the failed listeners other ports. */
const MAX_BIND_RETRIES = 3;

export class UserspaceSyncer implements Syncer {
  private needFull = true;
  /** Problems already logged, so each is said once, not at every sync. */
  private readonly reported = new Set<string>();

  constructor(
    private readonly appliers: Map<IPFamily, IptablesApplier>,
    private readonly proxier: Proxier,
    private readonly opts: UserspaceOptions & { maxConnectionAgeMs: number },
    private readonly log: Logger,
  ) {}

  get families(): IPFamily[] {
    return [...this.appliers.keys()];
  }

  requireFullSync(reason: string): void {
    if (!this.needFull) this.log.warn({ reason }, 'full resync required');
    this.needFull = true;
    this.applied.clear();
  }

  private lastJumps: JumpRule[] = [];
  /** The restore input last applied per family. */
  private readonly applied = new Map<IPFamily, Buffer>();

  async damage(): Promise<string | null> {
    // Not damage to the rules, but a data path that cannot serve: the sync that follows fails, and health says so.
    const problem = this.proxier.problem();
    if (problem) return problem;
    for (const [family, applier] of this.appliers) {
      if (!(await applier.canaryPresent())) return `${family} canary chain is gone`;
      const gone = await applier.missingJump(this.lastJumps);
      if (gone) return `${family} jump rule from ${gone.table} ${gone.chain} to ${gone.args.at(-1)} is gone`;
    }
    return null;
  }

  async sync(req: SyncRequest): Promise<SyncResult> {
    const reason = this.needFull ? 'required' : req.all ? 'node changed' : null;
    try {
      const problem = this.proxier.problem();
      if (problem) throw new Error(problem);
      for (const [family, applier] of this.appliers) {
        const model = req.model.familyModel(family);
        let plan = renderUserspace(model, req.model.nodeContext, this.opts, this.proxier.held(family), this.proxier.unusable(family));
        let failed = await this.proxier.open(plan);
        for (let i = 0; failed.length > 0 && i < MAX_BIND_RETRIES; i++) {
          plan = renderUserspace(model, req.model.nodeContext, this.opts, this.proxier.held(family), this.proxier.unusable(family));
          failed = await this.proxier.open(plan);
        }
        // What still has no listener gets no rule: its traffic is not captured, not black-holed.
        const open = new Set(plan.listeners.filter((l) => !failed.includes(l.key)).map((l) => l.key));
        const ruleset = { ...plan.ruleset, services: plan.ruleset.services.filter((s) => open.has(s.key)) };
        this.report(plan, failed);
        // Unchanged rules are not written again: a restore at every periodic sync would only
        // race whoever else edits the nat table, for nothing.
        const text = Buffer.concat(restoreChunks(ruleset));
        if (this.needFull || !this.applied.get(family)?.equals(text)) {
          this.applied.delete(family);
          await applier.restore({ what: `${family} userspace capture rules`, chunks: [text], lines: 0 });
          this.applied.set(family, text);
        }
        // As iptables mode: jumps and canaries are checked on full syncs only, so that damage
        // is found (and said) by the damage check rather than silently patched.
        if (this.needFull) await applier.ensureJumps(ruleset.jumps);
        this.lastJumps = ruleset.jumps;
        await this.proxier.retire({ ...plan, listeners: plan.listeners.filter((l) => open.has(l.key)) });
      }
    } catch (err) {
      this.needFull = true;
      return { ok: false, full: true, error: (err as Error).message };
    }
    const full = this.needFull;
    this.needFull = false;
    return { ok: true, full, reason };
  }

  private report(plan: UserspacePlan, failed: string[]): void {
    const current = new Set<string>();
    const say = (key: string, msg: object, text: string) => {
      current.add(key);
      if (!this.reported.has(key)) this.log.warn(msg, text);
      this.reported.add(key);
    };
    for (const r of plan.refused) say(`${plan.family} refused ${r.servicePort}`, { servicePort: r.servicePort, family: plan.family, reason: r.reason }, 'service port not proxied');
    for (const key of failed) this.log.error({ listener: key, family: plan.family }, 'no port could be bound for this service port; its traffic is not captured');
    for (const l of plan.listeners) {
      const problem = connectionAge(l.servicePort, this.opts.maxConnectionAgeMs).problem;
      if (problem) say(`${plan.family} age ${l.servicePort.name} ${problem}`, { servicePort: l.servicePort.name }, problem);
    }
    // Forget what is no longer so, per family: a problem that comes back is said again.
    for (const key of this.reported) if (key.startsWith(`${plan.family} `) && !current.has(key)) this.reported.delete(key);
  }
}
