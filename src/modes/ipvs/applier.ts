/**
 * The ipvs applier: the only code of this mode that changes the kernel. It reads and
 * writes kube-ipvs0's addresses (`ip`), the ipsets (`ipset save`/`restore`), the virtual
 * server table (`ipvsadm -Sn`/`-R`/`-Ln`) and, through the iptables mode's applier, the
 * iptables part. Batches go in on stdin; every command is an argument array.
 */
import type { Runner } from '../../exec/command.js';
import type { IPFamily } from '../../model/types.js';
import type { IptablesApplier } from '../iptables/applier.js';
import { restoreChunks, type IptablesRuleset } from '../iptables/ruleset.js';
import { DUMMY_DEVICE } from './dryrun.js';
import { parseIpsetSave, type KernelSets } from './ipset-plan.js';
import { parseIpvsadmList, parseIpvsadmSave, type ConnectionCounts, type IpvsTable } from './table.js';

export class IpvsCommandError extends Error {}

const lines = (ls: readonly string[]) => [Buffer.from(ls.map((l) => `${l}\n`).join(''))];

export class IpvsApplier {
  constructor(
    private readonly run: Runner,
    readonly iptables: Map<IPFamily, IptablesApplier>,
  ) {}

  private async ok(cmd: string, args: string[], input?: Buffer[]): Promise<string> {
    const r = await this.run(cmd, args, input);
    if (r.status !== 0) throw new IpvsCommandError(`${cmd} ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`);
    return r.stdout;
  }

  async deviceExists(): Promise<boolean> {
    return (await this.run('ip', ['link', 'show', 'dev', DUMMY_DEVICE])).status === 0;
  }

  /** Creates kube-ipvs0 unless it is there. Left down, as upstream leaves it: its addresses are local all the same. */
  async ensureDevice(): Promise<void> {
    if (!(await this.deviceExists())) await this.ok('ip', ['link', 'add', DUMMY_DEVICE, 'type', 'dummy']);
  }

  /** kube-ipvs0's addresses with their prefix (`10.96.0.1/32`). */
  async addresses(): Promise<Set<string>> {
    const out = await this.ok('ip', ['-o', 'addr', 'show', 'dev', DUMMY_DEVICE]);
    const found = new Set<string>();
    for (const line of out.split('\n')) {
      const words = line.trim().split(/\s+/);
      const i = words.findIndex((w) => w === 'inet' || w === 'inet6');
      if (i >= 0 && words[i + 1]) found.add(words[i + 1]!);
    }
    return found;
  }

  /** `ip -batch` lines (`address add 10.96.0.1/32 dev kube-ipvs0`), in one process. */
  async ipBatch(batch: readonly string[]): Promise<void> {
    if (batch.length > 0) await this.ok('ip', ['-batch', '-'], lines(batch));
  }

  async ipsets(): Promise<KernelSets> {
    return parseIpsetSave(await this.ok('ipset', ['save']));
  }

  async restoreIpsets(batch: readonly string[]): Promise<void> {
    if (batch.length > 0) await this.ok('ipset', ['restore', '-exist'], lines(batch));
  }

  async table(): Promise<IpvsTable> {
    return parseIpvsadmSave(await this.ok('ipvsadm', ['-Sn']));
  }

  async connections(): Promise<ConnectionCounts> {
    return parseIpvsadmList(await this.ok('ipvsadm', ['-Ln']));
  }

  async restoreTable(batch: readonly string[]): Promise<void> {
    if (batch.length > 0) await this.ok('ipvsadm', ['-R'], lines(batch));
  }

  /** `ipvsadm --set TCP TCPFIN UDP` (seconds; 0 leaves one as it is). */
  async setTimeouts(seconds: [number, number, number]): Promise<void> {
    if (seconds.some((s) => s > 0)) await this.ok('ipvsadm', ['--set', ...seconds.map(String)]);
  }

  /** Writes the iptables part of one family and ensures its jump rules. */
  async restoreIptables(rs: IptablesRuleset): Promise<void> {
    const applier = this.iptables.get(rs.family);
    if (!applier) throw new IpvsCommandError(`no iptables for ${rs.family}`);
    const chunks = restoreChunks(rs);
    await applier.restore({ what: `${rs.family} ipvs mode's iptables rules`, chunks, lines: 0 });
    await applier.ensureJumps(rs.jumps);
  }
}
