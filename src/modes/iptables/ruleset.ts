/**
 * An iptables ruleset as data. A rule carries its table and chain apart from its
 * arguments (as knftables' Rule does), and one layout orders tables and chains for the
 * restore text, the sync planner and the trace alike. Each service port's own chains stay
 * one byte buffer for the whole ruleset: at 10,000 services they are 430,000 rules, and
 * holding each as an object costs hundreds of MB.
 */
import type { IPFamily } from '../../model/types.js';
import { SERVICES, TABLES, type Table } from './chains.js';
import { LineWriter } from '../line-writer.js';

export type { Table };

/** A rule in one of our chains; `rule` is what follows `-A CHAIN` in restore text. */
export interface Rule {
  table: Table;
  chain: string;
  rule: string;
}

export interface Chain {
  table: Table;
  name: string;
  /** What follows `-A NAME` of each rule, in order. */
  rules: string[];
}

export interface ServicePortRules {
  /** `NS/NAME:PORT` plus protocol: unique within a family. */
  key: string;
  /** Its rules in the chains every service port shares (KUBE-SERVICES, ...). */
  shared: Rule[];
  /** The nat chains this service port owns (SVC, SVL, EXT, FW, SEP), in output order. */
  chains: string[];
  /**
   * Where this service port's chain rules lie in the ruleset's `chainRules`: its endpoint
   * (KUBE-SEP-) chains, two rules each, last, from `endpoints` on.
   */
  rules: { start: number; endpoints: number; end: number };
}

/** A rule in a built-in chain that sends packets into ours; ensured, not restored. */
export interface JumpRule {
  table: Table;
  chain: string;
  args: string[];
}

export interface IptablesRuleset {
  family: IPFamily;
  jumps: JumpRule[];
  /** Chains with fixed content (masquerade, forward, firewall), plus the shared chains' heads. */
  fixed: Chain[];
  /** Chains whose rules come from every service port, in output order. */
  shared: { table: Table; name: string }[];
  services: ServicePortRules[];
  /** The `-A` lines of every service port's own nat chains, service port by service port. */
  chainRules: Buffer;
  /** The nat KUBE-SERVICES rules that must stay last: into KUBE-NODEPORTS. */
  nodePortsTail: Rule[];
}

/** Rule arguments for restore text: quoted when they hold spaces, as iptables-save prints. */
export function formatArgs(args: string[]): string {
  return args.map((a) => (a.includes(' ') ? `"${a}"` : a)).join(' ');
}

export function restoreLine(r: Rule): string {
  return `-A ${r.chain} ${r.rule}`;
}

export interface TableLayout {
  table: Table;
  /** The fixed and shared chains, declared (so flushed) by a restore that writes the table. */
  chains: string[];
  /** Their rules in order: the fixed rules, then each shared chain's rules, service port by service port. */
  rules: Rule[];
  /** Whether the service ports' own chains belong to this table. */
  serviceChains: boolean;
}

/** The ruleset's tables in restore order, each with its chains and rules in order. */
export function tableLayout(rs: IptablesRuleset): TableLayout[] {
  const sharedRules = new Map<string, Rule[]>();
  for (const s of rs.services) {
    for (const r of s.shared) {
      const k = `${r.table} ${r.chain}`;
      const list = sharedRules.get(k);
      if (list) list.push(r);
      else sharedRules.set(k, [r]);
    }
  }
  return TABLES.map((table) => {
    const fixed = rs.fixed.filter((c) => c.table === table);
    const rules: Rule[] = [];
    for (const c of fixed) for (const rule of c.rules) rules.push({ table, chain: c.name, rule });
    for (const sh of rs.shared) {
      if (sh.table !== table) continue;
      rules.push(...(sharedRules.get(`${table} ${sh.name}`) ?? []));
      if (table === 'nat' && sh.name === SERVICES) rules.push(...rs.nodePortsTail);
    }
    return { table, chains: fixed.map((c) => c.name), rules, serviceChains: table === 'nat' };
  });
}

/** Where restore input goes: lines of text, and the service chains' rules as they are. */
export interface RestoreSink {
  line(text: string): void;
  bytes(b: Buffer): void;
}

/**
 * Every table's fixed and shared chains as one restore writes them. With `serviceChains`,
 * the service ports' own chains are declared and written too; `stale` chains are declared
 * (so flushed) and deleted after everything that could jump to them is rewritten.
 */
export function writeRestore(rs: IptablesRuleset, sink: RestoreSink, opts: { serviceChains: boolean; stale: readonly string[] }): void {
  for (const t of tableLayout(rs)) {
    sink.line(`*${t.table}`);
    for (const c of t.chains) sink.line(`:${c} - [0:0]`);
    if (t.serviceChains) {
      if (opts.serviceChains) for (const s of rs.services) for (const c of s.chains) sink.line(`:${c} - [0:0]`);
      for (const c of opts.stale) sink.line(`:${c} - [0:0]`);
    }
    for (const r of t.rules) sink.line(restoreLine(r));
    if (t.serviceChains) {
      if (opts.serviceChains) sink.bytes(rs.chainRules);
      for (const c of opts.stale) sink.line(`-X ${c}`);
    }
    sink.line('COMMIT');
  }
}

/**
 * The whole ruleset as one iptables-restore input, in pieces to write one after the
 * other: the service chains' rules are passed on as they are, not copied.
 */
export function restoreChunks(rs: IptablesRuleset): Buffer[] {
  const chunks: Buffer[] = [];
  let text = new LineWriter(1024 * 1024);
  writeRestore(
    rs,
    {
      line: (l) => text.line(l),
      bytes: (b) => {
        chunks.push(text.bytes(), b);
        text = new LineWriter();
      },
    },
    { serviceChains: true, stale: [] },
  );
  chunks.push(text.bytes());
  return chunks;
}

export function restoreText(rs: IptablesRuleset): string {
  return Buffer.concat(restoreChunks(rs)).toString('latin1');
}
