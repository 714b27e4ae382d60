/**
 * One iptables rule, from restore-text arguments to matches and a target. Only the
 * matches and targets kube-proxy programs are understood; anything else is kept as
 * `unsupported`, so the evaluator can say what it could not evaluate instead of guessing.
 */
import { parseCIDR, type ParsedCIDR } from '../../net/ip.js';
import { parseHostPort } from '../../trace/packet.js';
import { TraceError } from '../../trace/types.js';

export type Match =
  | { kind: 'address'; field: 'source' | 'destination'; negate: boolean; cidr: ParsedCIDR }
  | { kind: 'protocol'; negate: boolean; protocol: string }
  | { kind: 'dport'; negate: boolean; port: number }
  | { kind: 'addrtype'; field: 'source' | 'destination'; negate: boolean; type: string }
  | { kind: 'mark'; negate: boolean; value: number; mask: number }
  | { kind: 'statistic'; probability: number }
  | { kind: 'recent'; op: 'rcheck' | 'set'; name: string; seconds: number | null }
  | { kind: 'conntrack'; negate: boolean; states: string[] }
  | { kind: 'comment'; text: string }
  /** `-m set --match-set NAME dst,dst,src`: the packet's fields, in order, looked up in an ipset. */
  | { kind: 'set'; negate: boolean; name: string; flags: ('src' | 'dst')[] }
  /** `-m physdev --physdev-is-in`: the packet came in through a bridge port. */
  | { kind: 'physdev-is-in'; negate: boolean }
  | { kind: 'unsupported'; text: string };

export type Target =
  | { kind: 'chain'; chain: string; goto: boolean }
  | { kind: 'ACCEPT' | 'DROP' | 'RETURN' | 'REJECT' }
  | { kind: 'DNAT'; to: string; ip: string; port: number }
  | { kind: 'MARK'; op: 'or' | 'xor' | 'set-xmark'; value: number; mask: number }
  | { kind: 'MASQUERADE' }
  | { kind: 'unsupported'; text: string };

export interface ParsedRule {
  matches: Match[];
  /** Null for a rule without `-j`: it only counts packets. */
  target: Target | null;
  comment: string | null;
}

export class RuleSyntaxError extends TraceError {}

/** Splits restore text into arguments: double quotes group, backslash escapes inside them. */
export function tokenize(line: string): string[] {
  // Nearly every rule has no quotes, and a large ruleset has hundreds of thousands.
  if (!line.includes('"')) return line.split(/[ \t]+/).filter((t) => t !== '');
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    if (line[i] === ' ' || line[i] === '\t') {
      i++;
      continue;
    }
    let tok = '';
    while (i < line.length && line[i] !== ' ' && line[i] !== '\t') {
      if (line[i] !== '"') {
        tok += line[i++];
        continue;
      }
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++;
        tok += line[i++];
      }
      if (i >= line.length) throw new RuleSyntaxError('unterminated quote');
      i++;
    }
    out.push(tok);
  }
  return out;
}

// Options known to take one value, whatever it looks like (a comment may start with "-").
// Others take the words up to the next option: none for flags like --rcheck.
const VALUED = new Set([
  '--dport',
  '--destination-port',
  '--src-type',
  '--dst-type',
  '--mark',
  '--mode',
  '--probability',
  '--name',
  '--seconds',
  '--ctstate',
  '--comment',
  '--to-destination',
  '--or-mark',
  '--xor-mark',
  '--set-xmark',
  '--reject-with',
]);
const BUILTIN_TARGETS = new Set(['ACCEPT', 'DROP', 'RETURN', 'REJECT', 'DNAT', 'MARK', 'MASQUERADE']);
const PORT_MODULES = new Set(['tcp', 'udp', 'sctp']);

interface Option {
  name: string;
  value: string | null;
  negate: boolean;
}

/** `-m NAME` and the options that follow it. */
interface ModuleUse {
  name: string;
  options: Option[];
}

function showOption(o: Option): string {
  return `${o.negate ? '! ' : ''}${o.name}${o.value === null ? '' : ` ${o.value}`}`;
}

function showModule(m: ModuleUse): string {
  return [`-m ${m.name}`, ...m.options.map(showOption)].join(' ');
}

function number(text: string | null): number | null {
  if (text === null || !/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(text)) return null;
  return Number(text);
}

/** `VALUE[/MASK]` as the mark match and MARK target write it. */
function markValue(text: string | null): { value: number; mask: number } | null {
  const [v, m, ...rest] = (text ?? '').split('/');
  const value = number(v ?? null);
  const mask = m === undefined ? 0xffffffff : number(m);
  return value === null || mask === null || rest.length > 0 ? null : { value, mask };
}

/** The matches one module contributes, or one unsupported match naming it whole. */
function moduleMatches(m: ModuleUse): Match[] {
  const unsupported: Match[] = [{ kind: 'unsupported', text: showModule(m) }];
  const opt = (name: string) => m.options.find((o) => o.name === name);
  const only = (...names: string[]) => m.options.every((o) => names.includes(o.name));
  switch (m.name) {
    case 'tcp':
    case 'udp':
    case 'sctp': {
      if (!only('--dport', '--destination-port')) return unsupported;
      return m.options.flatMap((o): Match[] => {
        const port = number(o.value);
        return port === null ? unsupported : [{ kind: 'dport', negate: o.negate, port }];
      });
    }
    case 'addrtype': {
      if (!only('--src-type', '--dst-type')) return unsupported;
      return m.options.map((o) => ({
        kind: 'addrtype',
        field: o.name === '--src-type' ? 'source' : 'destination',
        negate: o.negate,
        type: o.value ?? '',
      }));
    }
    case 'mark': {
      const mark = markValue(opt('--mark')?.value ?? null);
      if (!only('--mark') || !mark) return unsupported;
      return [{ kind: 'mark', negate: opt('--mark')!.negate, ...mark }];
    }
    case 'statistic': {
      const p = Number(opt('--probability')?.value);
      if (!only('--mode', '--probability') || opt('--mode')?.value !== 'random' || opt('--probability')?.negate || !(p >= 0 && p <= 1)) {
        return unsupported;
      }
      return [{ kind: 'statistic', probability: p }];
    }
    case 'recent': {
      const name = opt('--name')?.value;
      const op = opt('--rcheck') ? 'rcheck' : opt('--set') ? 'set' : null;
      const seconds = opt('--seconds') ? number(opt('--seconds')!.value) : null;
      if (!only('--name', '--rcheck', '--set', '--seconds', '--reap') || !name || !op || m.options.some((o) => o.negate)) return unsupported;
      return [{ kind: 'recent', op, name, seconds }];
    }
    case 'conntrack': {
      const st = opt('--ctstate');
      if (!only('--ctstate') || !st?.value) return unsupported;
      return [{ kind: 'conntrack', negate: st.negate, states: st.value.split(',') }];
    }
    case 'set': {
      const [name, flags, ...rest] = (opt('--match-set')?.value ?? '').split(' ');
      const fields = (flags ?? '').split(',');
      if (!only('--match-set') || !name || rest.length > 0 || !fields.every((f) => f === 'src' || f === 'dst')) return unsupported;
      return [{ kind: 'set', negate: opt('--match-set')!.negate, name, flags: fields as ('src' | 'dst')[] }];
    }
    case 'physdev': {
      const o = opt('--physdev-is-in');
      return only('--physdev-is-in') && o && o.value === null ? [{ kind: 'physdev-is-in', negate: o.negate }] : unsupported;
    }
    case 'comment': {
      const c = opt('--comment');
      return only('--comment') && c?.value != null ? [{ kind: 'comment', text: c.value }] : unsupported;
    }
    default:
      return unsupported;
  }
}

function parseTarget(name: string, options: Option[], goto: boolean): Target {
  const text = [goto ? `-g ${name}` : `-j ${name}`, ...options.map(showOption)].join(' ');
  const unsupported: Target = { kind: 'unsupported', text };
  if (!BUILTIN_TARGETS.has(name)) return options.length === 0 ? { kind: 'chain', chain: name, goto } : unsupported;
  if (goto) return unsupported;
  const only = (...names: string[]) => options.every((o) => names.includes(o.name) && !o.negate);
  switch (name) {
    case 'ACCEPT':
    case 'DROP':
    case 'RETURN':
      return options.length === 0 ? { kind: name } : unsupported;
    case 'REJECT':
      return only('--reject-with') ? { kind: 'REJECT' } : unsupported;
    case 'DNAT': {
      const to = options.length === 1 ? options.find((o) => o.name === '--to-destination')?.value : undefined;
      const hp = to ? parseHostPort(to) : null;
      return to && hp?.port ? { kind: 'DNAT', to, ip: hp.ip, port: hp.port } : unsupported;
    }
    case 'MASQUERADE':
      return only('--random-fully', '--random') ? { kind: 'MASQUERADE' } : unsupported;
    case 'MARK': {
      const [o] = options;
      const op = o?.name === '--or-mark' ? 'or' : o?.name === '--xor-mark' ? 'xor' : o?.name === '--set-xmark' ? 'set-xmark' : null;
      const mark = markValue(o?.value ?? null);
      return options.length === 1 && op && mark ? { kind: 'MARK', op, ...mark } : unsupported;
    }
    default:
      return unsupported;
  }
}

/** Parses the arguments of one rule (what follows `-A CHAIN`). */
export function parseRule(args: string[]): ParsedRule {
  const matches: Match[] = [];
  const modules: ModuleUse[] = [];
  let target: Target | null = null;
  let negate = false;
  let i = 0;
  const value = (flag: string): string => {
    const v = args[++i];
    if (v === undefined) throw new RuleSyntaxError(`${flag} needs a value`);
    return v;
  };
  const optionValue = (flag: string): string | null => {
    if (VALUED.has(flag)) return value(flag);
    const words: string[] = [];
    while (args[i + 1] !== undefined && !/^(-|!$)/.test(args[i + 1]!)) words.push(args[++i]!);
    return words.length > 0 ? words.join(' ') : null;
  };
  while (i < args.length) {
    const a = args[i]!;
    if (a === '!') {
      negate = true;
      i++;
      continue;
    }
    if (a === '-s' || a === '--source' || a === '-d' || a === '--destination') {
      const text = value(a);
      const cidr = parseCIDR(text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`);
      if (!cidr) throw new RuleSyntaxError(`${a} ${text}: not an address`);
      matches.push({ kind: 'address', field: a === '-s' || a === '--source' ? 'source' : 'destination', negate, cidr });
    } else if (a === '-p' || a === '--protocol') {
      matches.push({ kind: 'protocol', negate, protocol: value(a).toLowerCase() });
    } else if (a === '-m' || a === '--match') {
      modules.push({ name: value(a), options: [] });
    } else if (a === '-j' || a === '--jump' || a === '-g' || a === '--goto') {
      const name = value(a);
      const options: Option[] = [];
      for (i++; i < args.length; i++) options.push({ name: args[i]!, value: optionValue(args[i]!), negate: false });
      target = parseTarget(name, options, a === '-g' || a === '--goto');
      break;
    } else if (a.startsWith('--')) {
      const option = { name: a, value: optionValue(a), negate };
      const owner = modules.at(-1);
      if (owner) owner.options.push(option);
      else matches.push({ kind: 'unsupported', text: showOption(option) });
    } else if (a.startsWith('-')) {
      // Interfaces, fragments and the like: not part of a traced packet.
      matches.push({ kind: 'unsupported', text: showOption({ name: a, value: optionValue(a), negate }) });
    } else {
      throw new RuleSyntaxError(`unexpected argument ${JSON.stringify(a)}`);
    }
    negate = false;
    i++;
  }
  for (const m of modules) {
    // `-m tcp` alone only loads the module `--dport` needs.
    if (!(PORT_MODULES.has(m.name) && m.options.length === 0)) matches.push(...moduleMatches(m));
  }
  const comment = matches.find((m): m is Extract<Match, { kind: 'comment' }> => m.kind === 'comment')?.text ?? null;
  return { matches, target, comment };
}
