/**
 * The node's ipvs tools in memory, for tests: `ip` (kube-ipvs0 and its addresses),
 * `ipset`, `ipvsadm` and `modprobe`, refusing what the real tools refuse (adding a
 * virtual server that exists, a real server twice, a set that exists with another
 * type...). iptables commands go to a FakeIptables. Every command is recorded.
 */
import type { CommandResult, Runner } from '../../exec/command.js';
import { FakeIptables, type FakeCall } from '../iptables/fake.js';
import { DUMMY_DEVICE } from './dryrun.js';
import type { Connections, IpvsTable, VirtualServer } from './table.js';
import { connectionKey, restoreLines, vsKey } from './table.js';

const ok = (stdout = ''): CommandResult => ({ status: 0, stdout, stderr: '' });
const fail = (stderr: string, status = 1): CommandResult => ({ status, stdout: '', stderr: `${stderr}\n` });

interface FakeSet {
  type: string;
  family: string;
  entries: Set<string>;
}

const PROTOCOLS: Record<string, VirtualServer['protocol']> = { '-t': 'tcp', '-u': 'udp', '--sctp-service': 'sctp' };

export class FakeIpvsHost {
  readonly iptables = new FakeIptables();
  readonly calls: FakeCall[] = [];
  /** Whether the kernel has IPVS and dummy interfaces. */
  ipvsKernel: boolean;
  dummyKernel: boolean;
  device: Set<string> | null = null;
  readonly sets = new Map<string, FakeSet>();
  readonly table: IpvsTable = new Map();
  /** Connections per real server (`connectionKey`); absent means none. */
  readonly connections = new Map<string, Connections>();
  timeouts: string[] | null = null;

  constructor(opts: { ipvs?: boolean; dummy?: boolean } = {}) {
    this.ipvsKernel = opts.ipvs ?? true;
    this.dummyKernel = opts.dummy ?? true;
  }

  readonly run: Runner = async (cmd, args, input) => {
    const text = Buffer.concat(input ?? []).toString('latin1');
    switch (cmd) {
      case 'ip':
        this.calls.push(input ? { cmd, args: [...args], input: text } : { cmd, args: [...args] });
        return this.ip(args, text);
      case 'ipset':
        this.calls.push(input ? { cmd, args: [...args], input: text } : { cmd, args: [...args] });
        return this.ipset(args, text);
      case 'ipvsadm':
        this.calls.push(input ? { cmd, args: [...args], input: text } : { cmd, args: [...args] });
        if (!this.ipvsKernel) return fail("Can't initialize ipvs: Protocol not available", 2);
        return this.ipvsadm(args, text);
      case 'modprobe':
        this.calls.push({ cmd, args: [...args] });
        return fail(`modprobe: FATAL: Module ${args.at(-1)} not found in directory /lib/modules/6.1.0`);
      default: {
        const r = await this.iptables.run(cmd, args, input);
        this.calls.push(this.iptables.calls.at(-1)!);
        return r;
      }
    }
  };

  /** What a probe of /proc and /sys finds. */
  exists = async (path: string): Promise<boolean> => (path.includes('ip_vs') ? this.ipvsKernel : path.includes('dummy') ? this.dummyKernel : false);

  private ip(args: string[], input: string): CommandResult {
    const line = args.join(' ');
    if (line === `link show dev ${DUMMY_DEVICE}`) return this.device ? ok(`9: ${DUMMY_DEVICE}: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN\n`) : fail(`Device "${DUMMY_DEVICE}" does not exist.`);
    if (line === `-o addr show dev ${DUMMY_DEVICE}`) {
      if (!this.device) return fail(`Device "${DUMMY_DEVICE}" does not exist.`);
      return ok([...this.device].map((a) => `9: ${DUMMY_DEVICE}    ${a.includes(':') ? 'inet6' : 'inet'} ${a} scope global ${DUMMY_DEVICE}\\       valid_lft forever preferred_lft forever\n`).join(''));
    }
    if (line === '-batch -') {
      for (const [n, l] of input.split('\n').filter((x) => x !== '').entries()) {
        const r = this.ip(l.split(' '), '');
        if (r.status !== 0) return fail(`Command failed -:${n + 1}\n${r.stderr.trim()}`);
      }
      return ok();
    }
    if (line === `link add ${DUMMY_DEVICE} type dummy`) {
      if (!this.dummyKernel) return fail('Error: Unknown device type.', 2);
      if (this.device) return fail('RTNETLINK answers: File exists', 2);
      this.device = new Set();
      return ok();
    }
    if (line === `link del ${DUMMY_DEVICE}`) {
      if (!this.device) return fail('Cannot find device "kube-ipvs0"');
      this.device = null;
      return ok();
    }
    const m = /^address (add|del) (\S+) dev kube-ipvs0$/.exec(line);
    if (m && this.device) {
      const [, op, addr] = m;
      if (op === 'add' && this.device.has(addr!)) return fail('RTNETLINK answers: File exists', 2);
      if (op === 'del' && !this.device.has(addr!)) return fail('RTNETLINK answers: Cannot assign requested address', 2);
      if (op === 'add') this.device.add(addr!);
      else this.device.delete(addr!);
      return ok();
    }
    return fail(`fake ip: unsupported ${line}`);
  }

  private ipset(args: string[], input: string): CommandResult {
    if (args[0] === 'save') {
      const out: string[] = [];
      for (const [name, s] of this.sets) {
        out.push(`create ${name} ${s.type}${s.family ? ` family ${s.family}` : ''} ${s.type.startsWith('bitmap') ? 'range 0-65535' : 'hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5d1e7a3c'}`);
        for (const e of s.entries) out.push(`add ${name} ${e}`);
      }
      return ok(out.map((l) => `${l}\n`).join(''));
    }
    if (args[0] === 'list' && args[1] === '-n') return ok([...this.sets.keys()].map((n) => `${n}\n`).join(''));
    if (args[0] === 'destroy') return this.ipsetCommand(['destroy', args[1]!], false);
    if (args[0] === 'restore') {
      const exist = args.includes('-exist');
      for (const [n, l] of input.split('\n').filter((x) => x !== '').entries()) {
        const r = this.ipsetCommand(l.split(' '), exist);
        if (r.status !== 0) return fail(`ipset v7.17: Error in line ${n + 1}: ${r.stderr.trim()}`);
      }
      return ok();
    }
    return fail(`fake ipset: unsupported ${args.join(' ')}`);
  }

  private ipsetCommand(words: string[], exist: boolean): CommandResult {
    const [op, name, ...rest] = words;
    const set = this.sets.get(name ?? '');
    switch (op) {
      case 'create': {
        const type = rest[0]!;
        const family = rest.includes('family') ? (rest[rest.indexOf('family') + 1] ?? '') : '';
        if (set && (!exist || set.type !== type)) return fail('Set cannot be created: set with the same name already exists');
        if (!set) this.sets.set(name!, { type, family, entries: new Set() });
        return ok();
      }
      case 'add':
      case 'del': {
        if (!set) return fail('The set with the given name does not exist');
        const entry = rest[0]!;
        if (op === 'add' && set.entries.has(entry) && !exist) return fail("Element cannot be added to the set: it's already added");
        if (op === 'del' && !set.entries.has(entry) && !exist) return fail("Element cannot be deleted from the set: it's not added");
        if (op === 'add') set.entries.add(entry);
        else set.entries.delete(entry);
        return ok();
      }
      case 'swap': {
        const other = this.sets.get(rest[0] ?? '');
        if (!set || !other) return fail('The set with the given name does not exist');
        if (set.type !== other.type) return fail('The sets cannot be swapped: their type does not match');
        this.sets.set(name!, other);
        this.sets.set(rest[0]!, set);
        return ok();
      }
      case 'destroy':
        if (!set) return fail('The set with the given name does not exist');
        this.sets.delete(name!);
        return ok();
      default:
        return fail(`fake ipset: unsupported ${words.join(' ')}`);
    }
  }

  private ipvsadm(args: string[], input: string): CommandResult {
    if (args[0] === '-Sn') return ok(restoreLines(this.table.values()).map((l) => `${l}\n`).join(''));
    if (args[0] === '--set') {
      this.timeouts = args.slice(1);
      return ok();
    }
    if (args[0] === '-Ln') {
      const out = ['IP Virtual Server version 1.2.1 (size=4096)', 'Prot LocalAddress:Port Scheduler Flags', '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn'];
      for (const vs of this.table.values()) {
        out.push(`${vs.protocol.toUpperCase()}  ${vs.address} ${vs.scheduler}${vs.persistence === null ? '' : ` persistent ${vs.persistence}`}`);
        for (const rs of vs.realServers) {
          const c = this.connections.get(connectionKey(vsKey(vs), rs.address)) ?? { active: 0, inactive: 0 };
          out.push(`  -> ${rs.address.padEnd(28)} Masq    ${rs.weight}      ${c.active}          ${c.inactive}`);
        }
      }
      return ok(out.map((l) => `${l}\n`).join(''));
    }
    if (args[0] === '-R') {
      for (const [n, l] of input.split('\n').filter((x) => x !== '').entries()) {
        const why = this.ipvsadmLine(l.split(' '));
        if (why) return fail(`${why} (line ${n + 1}: ${l})`);
      }
      return ok();
    }
    return fail(`fake ipvsadm: unsupported ${args.join(' ')}`);
  }

  /** One restore line; the error ipvsadm would print, or null. */
  private ipvsadmLine(w: string[]): string | null {
    const [op, flag, address] = w;
    const protocol = PROTOCOLS[flag ?? ''];
    if (!protocol || !address) return 'Illegal parameter';
    const key = vsKey({ protocol, address });
    const vs = this.table.get(key);
    const opt = (name: string) => {
      const i = w.indexOf(name);
      return i < 0 ? null : (w[i + 1] ?? null);
    };
    switch (op) {
      case '-A':
      case '-E': {
        if (op === '-A' && vs) return 'Service already exists';
        if (op === '-E' && !vs) return 'No such service';
        const p = opt('-p');
        const next: VirtualServer = { protocol, address, scheduler: opt('-s') ?? 'wlc', persistence: w.includes('-p') ? Number(p ?? 300) : null, realServers: vs?.realServers ?? [] };
        this.table.set(key, next);
        return null;
      }
      case '-D':
        if (!vs) return 'No such service';
        this.table.delete(key);
        return null;
      case '-a':
      case '-e':
      case '-d': {
        if (!vs) return 'Service not defined';
        const rs = opt('-r')!;
        const i = vs.realServers.findIndex((r) => r.address === rs);
        if (op === '-a' && i >= 0) return 'Destination already exists';
        if (op !== '-a' && i < 0) return 'No such destination';
        if (op === '-d') vs.realServers.splice(i, 1);
        else {
          const entry = { address: rs, weight: Number(opt('-w') ?? 1) };
          if (op === '-a') vs.realServers.push(entry);
          else vs.realServers[i] = entry;
          vs.realServers.sort((a, b) => (a.address < b.address ? -1 : 1));
        }
        return null;
      }
      default:
        return 'Illegal parameter';
    }
  }

  /** The table as `ipvsadm -Sn` prints it. */
  saved(): string {
    return restoreLines(this.table.values()).join('\n');
  }
}
