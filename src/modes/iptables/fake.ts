/**
 * An in-memory stand-in for the iptables tools, in the spirit of knftables' Fake: it is a
 * Runner, so the applier, the syncer and --cleanup run against it unchanged, without root.
 * `iptables*` drive one IPv4 dataplane and `ip6tables*` one IPv6 dataplane; the plain names
 * and those of the configured variant (`iptables-nft-restore` for nf_tables) reach them,
 * the other variant's tools answer "command not found", and any other command is rejected
 * as spawn rejects a missing binary.
 *
 * Checked as the kernel checks: a rule may only jump (-j) or go (-g) to a target extension
 * or to a user chain of its table, at the line that adds it; a commit that leaves a jump
 * to a deleted chain is refused; a restore commits table by table, and an error discards
 * the open table and stops.
 *
 * Where it differs from the real tools:
 * - a rule is kept as the text of its arguments (joined by spaces, one holding a space in
 *   double quotes) and rules are compared by that text; real iptables-save reorders
 *   matches, adds `/32` to addresses, quotes every comment, and -C/-D compare parsed rules;
 * - no match, target or address is parsed or checked beyond the jump target, nor tables
 *   against targets (DNAT outside nat) or families against addresses, nor loops of jumps;
 * - -X checks references when the table is committed, not at the line (in a restore,
 *   `-X A` before the `-D` of the last jump to A passes here, not on a host);
 * - counters are not kept (always [0:0]; `[x:y]` prefixes on rule lines are refused) and
 *   saves carry no date; commands only in their short form (-A, not --append), global
 *   options (-t, -w, -W) only before the command, `-S` of whole chains only;
 * - errors are worded after iptables-nft's whichever the variant (legacy says `Too many
 *   links` for a chain in use), -X of a built-in gets the CHAIN_DEL busy error, and a
 *   refused restore line reports `<tool>: line N failed` after the reason;
 * - tables are raw (made when first named, --test included), mangle, filter and nat only;
 * - user chains are listed sorted by name (as iptables 1.8.8+ lists them, both variants),
 *   tables in iptables-nft-save's order: raw, mangle, filter, nat.
 */
import { posix } from 'node:path';
import type { CommandResult, Runner } from '../../exec/command.js';
import type { IPFamily } from '../../model/types.js';
import type { IptablesVariant } from './variant.js';


const TABLES = ['raw', 'mangle', 'filter', 'nat'] as const;
type TableName = (typeof TABLES)[number];

const isTableName = (name: string): name is TableName => (TABLES as readonly string[]).includes(name);

/** Built-in chains in the order the kernel lists them. */
const BUILTIN: Record<TableName, readonly string[]> = {
  raw: ['PREROUTING', 'OUTPUT'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
};

/** The tables a fresh host has; raw appears once something names it. */
const INITIAL_TABLES: readonly TableName[] = ['mangle', 'filter', 'nat'];

/** Targets that are extensions: a jump to any other name needs a user chain of that name. */
const TARGETS = new Set([
  'ACCEPT', 'DROP', 'REJECT', 'RETURN', 'QUEUE', 'NFQUEUE', 'DNAT', 'SNAT', 'MASQUERADE', 'REDIRECT',
  'MARK', 'CONNMARK', 'LOG', 'NFLOG', 'NOTRACK', 'CT', 'TCPMSS', 'TPROXY', 'CLASSIFY', 'DSCP', 'TOS',
  'TTL', 'HL', 'CHECKSUM', 'AUDIT', 'SET', 'TRACE',
]);

const JUMP_OPTIONS = new Set(['-j', '--jump', '-g', '--goto']);

/** iptables refuses longer chain names (XT_EXTENSION_MAXNAMELEN). */
const MAX_CHAIN_NAME = 28;

const TOOL = /^(ip6?tables)(?:-(nft|legacy))?(?:-(save|restore))?$/;
const SUFFIX_VARIANT: Record<string, IptablesVariant> = { nft: 'nf_tables', legacy: 'legacy' };

export interface FakeCall {
  cmd: string;
  args: string[];
  /** The input buffers as one string, when the command was given any. */
  input?: string;
}

export type FailureMatch = (cmd: string, args: string[], input: string) => boolean;

/** A refusal worded as the tools word it: `iptables: text`, or with `versioned` `iptables v1.8.9 (nf_tables): text`. */
class Failure extends Error {
  constructor(
    readonly text: string,
    readonly status = 1,
    readonly versioned = false,
  ) {
    super(text);
  }
}

const noChain = () => new Failure('No chain/target/match by that name.');
const badRule = () => new Failure('Bad rule (does a matching rule exist in that chain?).');
const busy = (chain: string) => new Failure(`CHAIN_DEL failed (Device or resource busy): chain ${chain}`, 1, true);

interface Rule {
  text: string;
  target: string | undefined;
}

interface Chain {
  /** null for a user chain: only built-ins have a policy. */
  policy: string | null;
  rules: Rule[];
}

/** A rule as iptables-save prints it, and as rules are compared here. */
function ruleText(args: readonly string[]): string {
  return args.map((a) => (a.includes(' ') ? `"${a}"` : a)).join(' ');
}

function jumpTarget(args: readonly string[]): string | undefined {
  const i = args.findIndex((a) => JUMP_OPTIONS.has(a));
  return i < 0 ? undefined : args[i + 1];
}

const lines = (ls: string[]) => ls.map((l) => `${l}\n`).join('');

const appendLine = (chain: string, rule: Rule) => (rule.text === '' ? `-A ${chain}` : `-A ${chain} ${rule.text}`);

/** Splits a restore line into arguments as iptables-restore does: a double-quoted run is one argument. */
function tokenize(line: string): string[] {
  if ((line.match(/"/g) ?? []).length % 2 !== 0) throw new Failure('unterminated quote', 2, true);
  return [...line.matchAll(/"([^"]*)"|[^\s"]+/g)].map((m) => m[1] ?? m[0]);
}

function checkChainName(name: string): void {
  if (name.length > MAX_CHAIN_NAME) {
    throw new Failure(`chain name \`${name}' too long (must be under ${MAX_CHAIN_NAME + 1} chars)`, 2, true);
  }
}

class Table {
  private constructor(
    readonly name: TableName,
    private readonly chains: Map<string, Chain>,
  ) {}

  static empty(name: TableName): Table {
    return new Table(name, new Map(BUILTIN[name].map((c) => [c, { policy: 'ACCEPT', rules: [] }])));
  }

  /** A copy to edit: a transaction is kept only if the whole of it succeeds. */
  clone(): Table {
    return new Table(this.name, new Map([...this.chains].map(([n, c]) => [n, { policy: c.policy, rules: [...c.rules] }])));
  }

  chainNames(): string[] {
    return [...BUILTIN[this.name], ...this.userChains()];
  }

  ruleTexts(chain: string): string[] | undefined {
    return this.chains.get(chain)?.rules.map((r) => r.text);
  }

  append(chain: string, args: string[]): void {
    this.chain(chain).rules.push(this.rule(args));
  }

  insert(chain: string, position: number, args: string[]): void {
    const c = this.chain(chain);
    const rule = this.rule(args);
    if (position < 1 || position > c.rules.length + 1) throw new Failure('Index of insertion too big.');
    c.rules.splice(position - 1, 0, rule);
  }

  /** `args` is a rule to delete, or a single rule number. */
  delete(chain: string, args: string[]): void {
    const c = this.chain(chain);
    if (args.length === 1 && /^\d+$/.test(args[0]!)) {
      const n = Number(args[0]);
      if (n < 1 || n > c.rules.length) throw new Failure('Index of deletion too big.');
      c.rules.splice(n - 1, 1);
      return;
    }
    const i = c.rules.findIndex((r) => r.text === ruleText(args));
    if (i < 0) throw badRule();
    c.rules.splice(i, 1);
  }

  has(chain: string, args: string[]): boolean {
    const text = ruleText(args);
    return this.chain(chain).rules.some((r) => r.text === text);
  }

  newChain(name: string): void {
    checkChainName(name);
    if (this.chains.has(name)) throw new Failure('Chain already exists.');
    this.chains.set(name, { policy: null, rules: [] });
  }

  /** A restore's `:NAME POLICY`: sets a built-in's policy (`-` keeps it), creates or flushes a user chain. */
  declare(name: string, policy: string): void {
    const c = this.chains.get(name);
    if (c && c.policy !== null) {
      if (policy === '-') return;
      if (policy !== 'ACCEPT' && policy !== 'DROP') throw new Failure(`Bad policy name \`${policy}'`, 2, true);
      c.policy = policy;
    } else if (policy !== '-') {
      throw new Failure(`Can't set policy \`${policy}' on \`${name}'`);
    } else if (c) {
      c.rules = [];
    } else {
      checkChainName(name);
      this.chains.set(name, { policy: null, rules: [] });
    }
  }

  /** Deletes an empty user chain; the references to it are checked at commit (checkJumps). */
  deleteChain(name: string): void {
    const c = this.chain(name);
    if (c.policy !== null || c.rules.length > 0) throw busy(name);
    this.chains.delete(name);
  }

  deleteUserChains(): void {
    for (const name of this.userChains()) this.deleteChain(name);
  }

  flush(chain?: string): void {
    for (const c of chain === undefined ? this.chains.values() : [this.chain(chain)]) c.rules = [];
  }

  /** What iptables-restore without --noflush does on entering a table. */
  reset(): void {
    this.flush();
    this.deleteUserChains();
  }

  /** The kernel refuses a commit that would leave a rule jumping to a chain that is gone. */
  checkJumps(): void {
    for (const c of this.chains.values()) {
      for (const r of c.rules) if (!this.resolves(r.target)) throw busy(r.target!);
    }
  }

  /** `iptables -S [CHAIN]`: policies or declarations first, then the rules. */
  listRules(chain?: string): string {
    const names = chain === undefined ? this.chainNames() : [chain];
    const heads = names.map((n) => {
      const { policy } = this.chain(n);
      return policy === null ? `-N ${n}` : `-P ${n} ${policy}`;
    });
    const rules = names.flatMap((n) => this.chain(n).rules.map((r) => appendLine(n, r)));
    return lines([...heads, ...rules]);
  }

  save(generator: string): string {
    const names = this.chainNames();
    return lines([
      `# Generated by ${generator}`,
      `*${this.name}`,
      ...names.map((n) => `:${n} ${this.chain(n).policy ?? '-'} [0:0]`),
      ...names.flatMap((n) => this.chain(n).rules.map((r) => appendLine(n, r))),
      'COMMIT',
      '# Completed',
    ]);
  }

  private userChains(): string[] {
    return [...this.chains].filter(([, c]) => c.policy === null).map(([n]) => n).sort();
  }

  private chain(name: string): Chain {
    const c = this.chains.get(name);
    if (!c) throw noChain();
    return c;
  }

  private resolves(target: string | undefined): boolean {
    return target === undefined || TARGETS.has(target) || this.chains.get(target)?.policy === null;
  }

  private rule(args: string[]): Rule {
    const target = jumpTarget(args);
    if (!this.resolves(target)) throw noChain();
    return { text: ruleText(args), target };
  }
}

/** One family's tables. */
class Dataplane {
  private readonly tables = new Map<string, Table>(INITIAL_TABLES.map((n) => [n, Table.empty(n)]));

  /** A table to work on; naming raw makes it, as naming it loads its module. */
  table(name: string): Table {
    let t = this.tables.get(name);
    if (!t) {
      if (!isTableName(name)) throw new Failure(`table '${name}' does not exist`, 3, true);
      t = Table.empty(name);
      this.tables.set(name, t);
    }
    return t;
  }

  /** A table for inspection: never makes one. */
  peek(name: string): Table | undefined {
    return this.tables.get(name);
  }

  commit(t: Table): void {
    this.tables.set(t.name, t);
  }

  existing(): Table[] {
    return TABLES.flatMap((n) => this.tables.get(n) ?? []);
  }
}

/** The program a command runs as: what its messages are signed with, and the dataplane it drives. */
interface Tool {
  prog: string;
  /** As `--version` prints it: `v1.8.9`. */
  version: string;
  variant: IptablesVariant;
  plane: Dataplane;
}

const ok = (stdout = ''): CommandResult => ({ status: 0, stdout, stderr: '' });

function say(t: Tool, f: Failure): string {
  return f.versioned ? `${t.prog} ${t.version} (${t.variant}): ${f.text}` : `${t.prog}: ${f.text}`;
}

/** How many arguments a lock-wait option at `i` takes up (0: it is not one); there is no lock to wait for. */
function waitOption(args: string[], i: number): number {
  const a = args[i];
  if (a === '-w') return /^\d+(\.\d+)?$/.test(args[i + 1] ?? '') ? 2 : 1;
  return a === '-W' ? 2 : 0;
}

function need(option: string, value: string | undefined): string {
  if (value === undefined) throw new Failure(`option "${option}" requires an argument`, 2, true);
  return value;
}

/** The commands that change a table: iptables runs one, iptables-restore one per line. */
function edit(t: Table, op: string, args: string[]): void {
  const [chain, ...spec] = args;
  switch (op) {
    case '-A':
      return t.append(need(op, chain), spec);
    case '-I': {
      const numbered = /^\d+$/.test(spec[0] ?? '');
      return t.insert(need(op, chain), numbered ? Number(spec[0]) : 1, numbered ? spec.slice(1) : spec);
    }
    case '-D':
      return t.delete(need(op, chain), spec);
    case '-N':
      return t.newChain(need(op, chain));
    case '-X':
      return chain === undefined ? t.deleteUserChains() : t.deleteChain(chain);
    case '-F':
      return t.flush(chain);
    default:
      throw new Failure(`unknown option "${op}"`, 2, true);
  }
}

/** `iptables [-w [N]] [-W N] [-t TABLE] COMMAND ...`: returns what it prints. */
function iptables(tool: Tool, args: string[]): string {
  if (args.includes('--version') || args.includes('-V')) return `${tool.prog} ${tool.version} (${tool.variant})\n`;
  let table = 'filter';
  let i = 0;
  for (;;) {
    const skip = waitOption(args, i);
    if (skip > 0) i += skip;
    else if (args[i] === '-t') {
      table = need('-t', args[i + 1]);
      i += 2;
    } else break;
  }
  const op = args[i];
  if (op === undefined) throw new Failure('no command specified', 2, true);
  const [chain, ...spec] = args.slice(i + 1);
  const current = tool.plane.table(table);
  if (op === '-S') {
    if (spec.length > 0) throw new Failure('the fake lists whole chains only', 2, true);
    return current.listRules(chain);
  }
  if (op === '-C') {
    if (!current.has(need(op, chain), spec)) throw badRule();
    return '';
  }
  const work = current.clone();
  edit(work, op, args.slice(i + 1));
  work.checkJumps();
  tool.plane.commit(work);
  return '';
}

interface RestoreOptions {
  noflush: boolean;
  test: boolean;
}

function restoreOptions(args: string[]): RestoreOptions {
  const opts = { noflush: false, test: false };
  for (let i = 0; i < args.length; i++) {
    const skip = waitOption(args, i);
    const a = args[i]!;
    if (skip > 0) i += skip - 1;
    else if (a === '--noflush' || a === '-n') opts.noflush = true;
    else if (a === '--test' || a === '-t') opts.test = true;
    else if (a !== '--counters' && a !== '-c') throw new Failure(`unknown option "${a}"`, 2, true);
  }
  return opts;
}

/** One restore line against the open table (null between tables); returns the table left open. */
function restoreLine(plane: Dataplane, open: Table | null, line: string, opts: RestoreOptions): Table | null {
  if (line.trim() === '' || line.startsWith('#')) return open;
  if (line.startsWith('*')) {
    if (open) throw new Failure(`COMMIT expected before ${line}`);
    const work = plane.table(line.slice(1).trim()).clone();
    if (!opts.noflush) work.reset();
    return work;
  }
  if (!open) throw new Failure('no table specified');
  if (line.trim() === 'COMMIT') {
    open.checkJumps();
    if (!opts.test) plane.commit(open);
    return null;
  }
  if (line.startsWith(':')) {
    const m = /^:(\S+)\s+(\S+)(?:\s+\[\d+:\d+\])?\s*$/.exec(line);
    if (!m) throw new Failure(`bad chain declaration: ${line}`, 2, true);
    open.declare(m[1]!, m[2]!);
    return open;
  }
  const [op = '', ...args] = tokenize(line);
  edit(open, op, args);
  return open;
}

/** `iptables-restore`: tables committed before an error stay, as on a host. */
function restore(tool: Tool, args: string[], input: string): CommandResult {
  const opts = restoreOptions(args);
  const text = input.split('\n');
  let open: Table | null = null;
  for (const [i, line] of text.entries()) {
    try {
      open = restoreLine(tool.plane, open, line, opts);
    } catch (e) {
      if (!(e instanceof Failure)) throw e;
      return { status: 1, stdout: '', stderr: `${say(tool, e)}\n${tool.prog}: line ${i + 1} failed\n` };
    }
  }
  if (open) return { status: 1, stdout: '', stderr: `${tool.prog}: COMMIT expected at line ${text.length}\n` };
  return ok();
}

/** `iptables-save [-c] [-t TABLE]`: every table there is, or the one named. */
function save(tool: Tool, args: string[]): string {
  let table: string | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-t') table = need('-t', args[++i]);
    else if (args[i] !== '-c' && args[i] !== '--counters') throw new Failure(`unknown option "${args[i]}"`, 2, true);
  }
  const tables = table === undefined ? tool.plane.existing() : [tool.plane.table(table)];
  return tables.map((t) => t.save(`${tool.prog} ${tool.version} (${tool.variant})`)).join('');
}

/** What spawn reports for a binary that is not there, so callers take the path they take on a host without it. */
function enoent(cmd: string, args: string[]): NodeJS.ErrnoException {
  return Object.assign(new Error(`spawn ${cmd} ENOENT`), { code: 'ENOENT', errno: -2, syscall: `spawn ${cmd}`, path: cmd, spawnargs: args });
}

export class FakeIptables {
  readonly variant: IptablesVariant;
  /** Every command run, in order, injected failures included. */
  readonly calls: FakeCall[] = [];
  private readonly planes: Record<IPFamily, Dataplane> = { IPv4: new Dataplane(), IPv6: new Dataplane() };
  private readonly failures: { match: FailureMatch; result: CommandResult }[] = [];

  readonly version: string;

  /**
   * `variant`: what `--version` reports and which suffixed tools exist (default
   * nf_tables); `version`: the version it reports (default v1.8.9).
   */
  constructor(opts: { variant?: IptablesVariant; version?: string } = {}) {
    this.variant = opts.variant ?? 'nf_tables';
    this.version = opts.version ?? 'v1.8.9';
  }

  readonly run: Runner = async (cmd, args, input) => {
    const text = Buffer.concat(input ?? []).toString('latin1');
    this.calls.push(input ? { cmd, args: [...args], input: text } : { cmd, args: [...args] });
    const injected = this.takeFailure(cmd, args, text);
    if (injected) return injected;
    const m = TOOL.exec(posix.basename(cmd));
    if (!m) throw enoent(cmd, args);
    const [, base, suffix, kind] = m;
    if (suffix !== undefined && SUFFIX_VARIANT[suffix] !== this.variant) {
      return { status: 1, stdout: '', stderr: `${cmd}: command not found\n` };
    }
    const tool: Tool = {
      prog: kind === undefined ? base! : `${base}-${kind}`,
      version: this.version,
      variant: this.variant,
      plane: this.planes[base === 'ip6tables' ? 'IPv6' : 'IPv4'],
    };
    try {
      if (kind === 'restore') return restore(tool, args, text);
      return ok(kind === 'save' ? save(tool, args) : iptables(tool, args));
    } catch (e) {
      if (!(e instanceof Failure)) throw e;
      return { status: e.status, stdout: '', stderr: `${say(tool, e)}\n` };
    }
  };

  /**
   * Makes the next command `match` accepts answer `result` (by default exit 1, "injected
   * failure") without touching the tables. Failures queue: each is used once.
   */
  failNext(match: FailureMatch, result: Partial<CommandResult> = {}): void {
    this.failures.push({ match, result: { status: 1, stdout: '', stderr: 'injected failure\n', ...result } });
  }

  /** A table's chains: built-ins in kernel order, then user chains by name; [] for a table not there. */
  chains(family: IPFamily, table: string): string[] {
    return this.planes[family].peek(table)?.chainNames() ?? [];
  }

  /** A chain's rules as iptables-save prints them after `-A CHAIN `; undefined if there is no such chain. */
  rules(family: IPFamily, table: string, chain: string): string[] | undefined {
    return this.planes[family].peek(table)?.ruleTexts(chain);
  }

  /** What `iptables-save` (`ip6tables-save`) prints for the family. */
  save(family: IPFamily): string {
    const prog = family === 'IPv6' ? 'ip6tables-save' : 'iptables-save';
    return save({ prog, version: this.version, variant: this.variant, plane: this.planes[family] }, []);
  }

  private takeFailure(cmd: string, args: string[], input: string): CommandResult | undefined {
    const i = this.failures.findIndex((f) => f.match(cmd, args, input));
    return i < 0 ? undefined : this.failures.splice(i, 1)[0]!.result;
  }
}
